"""Self-distillation with early exits (BYOT, Zhang et al. ICCV 2019; FastBERT, Liu et al. ACL 2020).

One model teaches itself: classifiers ("exits", ``models/exits.py``) on its intermediate layers learn
from the labels and from the model's own last layer, so that at inference an easy example can stop at
a lower exit (early exit, ``textdistill evaluate --exit-threshold``). With exits on layers
``l < N`` (``exits.layers``; the last layer ``N``'s exit is the model's own head), final logits
``z_N`` and exit logits ``z_l``, one step minimises::

    L = CE(y, z_N) + sum_{l < N} [ hard_weight * CE(y, z_l) + sum_{logit terms} w * term(z_l, sg(z_N)) ]
                   + sum_{other terms} w * term(h_s, sg(h_N))     over the term's pairs [[s, N]]

``sg`` stops the gradient: the last layer's prediction is the target of each exit, it is not pulled
towards the exits (BYOT's "deepest classifier teaches the shallow ones"). With the recipe's ``kd_kl``
term at temperature T that is ``T^2 * KL(softmax(z_N / T) || softmax(z_l / T))``. Non-logit terms
(``cls``, ``mean``, ``hidden`` taps; BYOT's feature hints) compare lower layers with the last one,
given as explicit ``pairs: [[l, N], ...]``. Attention and embedding taps are not supported.

Differences from the papers: FastBERT fine-tunes the backbone first, then trains the exits with the
backbone frozen, and its exit classifiers have their own self-attention layer; BYOT's exits have
bottleneck blocks. Here everything trains jointly in one stage (BYOT-style), and each exit is a small
MLP on the layer's pooled states (Linear-Tanh-Dropout-Linear). The model is saved as a plain Hugging
Face folder (``<out>/model``) and the exits beside it (``<out>/exits.safetensors``).
"""
from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

from .. import TextDistillError
from ..data.batching import eval_loader
from ..evaluate import compute_metrics, model_inputs
from ..knowledge.terms import build_terms, check_term, term_where
from ..models.exits import EXITS_FILE, ExitHeads, parse_exit_layers, predict_exits
from ..models.loading import _hub_error, count_parameters, resolve_model_path
from ..models.student import parse_layer_spec
from .base import (SCHEMES, Scheme, build_model, reject, save_model, save_state, task_loss, transformer_only,
                   warn_flat_cls)

log = logging.getLogger("textdistill")


@SCHEMES.register("self")
class SelfDistill(Scheme):
    def check(self) -> None:
        from transformers import AutoConfig

        r = self.recipe
        for key in ("teacher", "teachers"):
            if getattr(r, key):
                raise TextDistillError(f"{key}: scheme self: the model teaches itself; remove '{key}'")
        reject(r, {"peers": bool(r.peers), "teacher_cache": bool(r.teacher_cache.dir),
                   "combine": "combine" in r.model_fields_set,
                   "transfer.adversarial": r.transfer.adversarial is not None,
                   "student.quantize": r.student.quantize is not None, **transformer_only(r)}, "self")
        if not r.student.init:
            raise TextDistillError("student.init: name the pre-trained model that learns with exits "
                                   "(a folder, a hub id or an alias)")
        self.init = r.student.init
        try:
            config = AutoConfig.from_pretrained(resolve_model_path(self.init))
        except (OSError, ValueError) as e:
            raise _hub_error(self.init, e) from e
        n = len(parse_layer_spec(r.student.layers, config.num_hidden_layers))
        self.exit_layers = parse_exit_layers(r.exits.layers, n)
        if len(self.exit_layers) < 2:
            raise TextDistillError(f"exits.layers: no exit below the last layer ({n}); give lower layers too "
                                   f"(e.g. all)")
        for i, term in enumerate(r.terms):
            where = term_where(i, term)
            check_term(term, where)
            if term.tap in ("attention", "embeddings"):
                raise TextDistillError(f"{where}.tap: scheme self compares logits and cls/mean/hidden states, "
                                       f"not '{term.tap}'")
            if term.teacher is not None:
                raise TextDistillError(f"{where}.teacher: scheme self has no teachers; remove it")
            if term.tap == "logits":
                continue
            if term.map:
                raise TextDistillError(f"{where}.map: scheme self takes explicit pairs [[layer, {n}]] (a lower "
                                       f"layer and the last one), not a map")
            for s, t in term.pairs:
                if t != n or not 1 <= s < n:
                    raise TextDistillError(f"{where}.pairs: [{s}, {t}]: scheme self pairs a lower layer 1..{n - 1} "
                                           f"with the last layer {n}")

    def setup(self, seed_fn) -> None:
        r, task = self.recipe, self.task
        seed_fn()
        self.model, self.mapping = build_model(self.init, r.student.layers, task, what="model")
        self.tokenizer = self.load_tokenizer(self.init)
        self.train_set, self.dev_set = self.encode(self.tokenizer, self.train_ex), self.encode(self.tokenizer, self.dev_ex)
        log.info("task %s: %d train rows (%s), %d dev rows (%s); exits on layers %s (pool %s)", task.name,
                 len(self.train_ex), self.train_ex.source, len(self.dev_ex), self.dev_ex.source, self.exit_layers,
                 r.exits.pool)
        warn_flat_cls(self.model, self.train_set, self.tokenizer, self.init, r.student.layers)
        config = self.model.config
        self.heads = ExitHeads.for_model(config, self.exit_layers, r.exits.pool)
        self.terms = build_terms(r.terms, teacher_config=config, student_config=config,
                                 regression=task.is_regression, seed=self.cfg.seed)

    def modules(self):
        return {"model": self.model, "exits": self.heads, "terms": self.terms}

    def bind(self, prepared) -> None:
        self.model, self.heads, self.terms = prepared["model"], prepared["exits"], prepared["terms"]

    def loss_parts(self, batch):
        r, task = self.recipe, self.task
        inputs = model_inputs(batch)
        mask, labels = inputs["attention_mask"], batch["labels"]
        out = self.model(**inputs, output_hidden_states=True)
        # the last layer teaches: its logits and hidden states, without gradient
        target = SimpleNamespace(logits=out.logits.detach(), hidden_states=tuple(h.detach() for h in out.hidden_states))
        parts = {"task": (1.0, task_loss(task, out.logits, labels))}
        for layer, logits in zip(self.exit_layers, self.heads(out.hidden_states, mask)):
            if r.hard_weight > 0:
                parts[f"task@{layer}"] = (r.hard_weight, task_loss(task, logits, labels))
            for term in self.terms:
                if term.tap == "logits":
                    parts[f"{term.name}@{layer}"] = (term.weight, term(SimpleNamespace(logits=logits), target, mask))
        for term in self.terms:
            if term.tap != "logits":
                parts[term.name] = (term.weight, term(out, target, mask))
        return parts

    def evaluate(self) -> dict:
        logits = predict_exits(self.model, self.heads, eval_loader(self.dev_set, self.tokenizer,
                                                                   self.cfg.eval_batch_size))
        exits = {str(layer): compute_metrics(self.task, logits[:, i], self.dev_ex.labels)
                 for i, layer in enumerate(self.exit_layers)}
        self.dev_logits["."] = logits[:, -1]  # (the saved model's own output: its last exit)
        return {"dev": exits[str(self.exit_layers[-1])], "exits": exits}

    def save(self, folder: Path, unwrap) -> dict:
        model, heads, terms = unwrap(self.model), unwrap(self.heads), unwrap(self.terms)
        save_model(model, self.tokenizer, folder, self.init, self.mapping)
        save_state(heads, folder / EXITS_FILE, heads.metadata())
        save_state(terms, folder / "projections.safetensors", {"terms": [t.describe() for t in terms]})
        # (the per-exit dev metrics are the loop's "exits" field, from evaluate())
        return {"teacher": None, "student_init": self.init, "student_layers": len(self.mapping),
                "student_from_teacher_layers": {str(s): t for s, t in self.mapping.items()},
                "terms": [t.describe() for t in terms], "params_teacher": None,
                "params_student": count_parameters(model), "params_exits": count_parameters(heads),
                "exit_layers": self.exit_layers, "exit_pool": heads.pool}
