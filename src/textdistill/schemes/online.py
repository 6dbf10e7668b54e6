"""Online distillation: deep mutual learning (Zhang et al., CVPR 2018).

Two or more peers learn together from scratch on the task (none is fine-tuned beforehand); every
step each peer k minimises its task loss plus the recipe's logit terms against the *other* peers::

    L_k = hard_weight * CE(y, z_k) + sum_terms weight * term(z_k, target_k)

with ``target_k`` built from the other peers' logits, detached (each peer treats the others as fixed
teachers for its own update; all peers are updated every step by one optimizer, which is the same as
updating them one after the other on the same batch since no loss reaches two peers):

* for ``kd_kl`` / ``soft_ce`` at temperature T: the mean of the others' softened distributions,
  ``p = mean_j softmax(z_j / T)``, passed as the logits ``T * log p`` (whose softmax at T is p), so
  the term is ``T^2 * KL(p || softmax(z_k / T))``;
* for other logit losses (``mse``, regression): the mean of the others' logits.

With 2 peers this is the paper's loss exactly. With more, the paper's main form (its Eq. 10) averages
the KL to each other peer; the mean of the others' distributions is its ensemble variant (DML_e).

Only logit terms apply (peers have no frozen teacher whose layers could be read). Peers must share
one tokenizer. Each peer is saved as its own Hugging Face folder ``<out>/<peer>/model`` with its dev
metrics; the run's main ``dev`` metrics are those of the *last* peer listed (list the one to deploy last).
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from types import SimpleNamespace

import torch

from .. import TextDistillError
from ..evaluate import model_inputs
from ..knowledge.terms import build_terms, check_term, term_where
from ..models.loading import count_parameters
from .base import SCHEMES, Scheme, build_model, reject, require_loss, save_model, task_loss, warn_flat_cls
from .teachers import same_vocabulary

log = logging.getLogger("textdistill")
SOFT = ("kd_kl", "soft_ce")


def peer_target(others: list[torch.Tensor], loss: str, temperature: float = 1.0) -> torch.Tensor:
    """The logits a peer learns from: ``T * log(mean_j softmax(z_j / T))`` for the KL-type losses (the
    others' mean distribution at T), the mean of the logits otherwise."""
    stacked = torch.stack([o.detach().float() for o in others])
    if loss not in SOFT:
        return stacked.mean(0)
    log_p = torch.logsumexp(torch.log_softmax(stacked / temperature, dim=-1), dim=0) - math.log(len(others))
    return temperature * log_p


@SCHEMES.register("online")
class Online(Scheme):
    def check(self) -> None:
        r = self.recipe
        reject(r, {"teacher": bool(r.teacher), "teachers": bool(r.teachers), "exits": "exits" in r.model_fields_set,
                   "student": "student" in r.model_fields_set, "teacher_cache": bool(r.teacher_cache.dir),
                   "combine": "combine" in r.model_fields_set,
                   "transfer.adversarial": r.transfer.adversarial is not None}, "online")
        require_loss(r)
        if len(r.peers) < 2:
            raise TextDistillError(f"peers: online (mutual) learning needs at least 2 peers, the recipe has "
                                   f"{len(r.peers)}")
        self.names = [p.name or f"p{i + 1}" for i, p in enumerate(r.peers)]
        for i, name in enumerate(self.names):
            if name in self.names[:i]:
                raise TextDistillError(f"peers[{i}].name: duplicate peer name '{name}'")
        for i, term in enumerate(r.terms):
            where = term_where(i, term)
            check_term(term, where)
            if term.tap != "logits":
                raise TextDistillError(f"{where}.tap: online learning compares the peers' logits only, "
                                       f"not '{term.tap}'")
            if term.teacher is not None:
                raise TextDistillError(f"{where}.teacher: online learning has no teachers (each peer learns from "
                                       f"the others); remove it")

    def setup(self, seed_fn) -> None:
        r, task = self.recipe, self.task
        seed_fn()
        self.peers, self.mappings, self.inits = {}, {}, {}
        for i, (name, p) in enumerate(zip(self.names, r.peers)):
            self.peers[name], self.mappings[name] = build_model(p.init, p.layers, task, what=f"peer {name}")
            self.inits[name] = p.init
            tok = self.load_tokenizer(p.init)
            if i == 0:
                self.tokenizer = tok
            elif not same_vocabulary(tok, self.tokenizer):
                raise TextDistillError(f"peers[{i}].init: {p.init} tokenizes differently from {r.peers[0].init}; "
                                       f"peers must share one tokenizer")
        self.train_set, self.dev_set = self.encode(self.tokenizer, self.train_ex), self.encode(self.tokenizer, self.dev_ex)
        log.info("task %s: %d train rows (%s), %d dev rows (%s); peers %s", task.name, len(self.train_ex),
                 self.train_ex.source, len(self.dev_ex), self.dev_ex.source, ", ".join(self.names))
        for name, p in zip(self.names, r.peers):
            warn_flat_cls(self.peers[name], self.train_set, self.tokenizer, p.init, p.layers)
        config = self.peers[self.names[0]].config
        self.terms = build_terms(r.terms, teacher_config=config, student_config=config,
                                 regression=task.is_regression, seed=self.cfg.seed)
        self.last_dev: dict = {}

    def modules(self):
        return dict(self.peers)

    def bind(self, prepared) -> None:
        self.peers = {name: prepared[name] for name in self.names}

    def loss_parts(self, batch):
        inputs = model_inputs(batch)
        logits = {name: model(**inputs).logits for name, model in self.peers.items()}
        parts = {}
        for name in self.names:
            if self.recipe.hard_weight > 0:
                parts[f"task@{name}"] = (self.recipe.hard_weight, task_loss(self.task, logits[name], batch["labels"]))
            others = [logits[o] for o in self.names if o != name]
            for term in self.terms:
                target = peer_target(others, term.loss_name, term.args.get("temperature", 1.0))
                parts[f"{term.name}@{name}"] = (term.weight, term(SimpleNamespace(logits=logits[name]),
                                                                  SimpleNamespace(logits=target),
                                                                  inputs["attention_mask"]))
        return parts

    def evaluate(self) -> dict:
        self.last_dev = {name: self.metrics_of(model, where=name) for name, model in self.peers.items()}
        return {"dev": self.last_dev[self.names[-1]], "peers": self.last_dev}

    def save(self, folder: Path, unwrap) -> dict:
        models = {}
        for name in self.names:
            model = unwrap(self.peers[name])
            save_model(model, self.tokenizer, folder / name, self.inits[name], self.mappings[name])
            info = {"peer": name, "init": self.inits[name], "layers": len(self.mappings[name]),
                    "student_from_teacher_layers": {str(s): t for s, t in self.mappings[name].items()},
                    "params": count_parameters(model), "dev": self.last_dev.get(name)}
            (folder / name / "metrics.json").write_text(json.dumps(info, indent=2) + "\n")
            models[name] = info
        last = self.names[-1]
        return {"teacher": None, "student_init": self.inits[last], "student_layers": len(self.mappings[last]),
                "student_from_teacher_layers": models[last]["student_from_teacher_layers"],
                "terms": [t.describe() for t in self.terms], "params_student": models[last]["params"],
                "params_teacher": None, "peer_models": models}
