"""General distillation (TinyBERT's first stage, Jiao et al. 2020): a student learns the intermediate
representations of a *pre-trained* (not fine-tuned) teacher on unlabelled text, before any task.

The data is a plain-text corpus (``data.train``: one text per line, UTF-8; ``data.dev`` optional, else the
last 2% of the corpus, at most 1,000 lines, are held out). There are no labels and no classification
head: teacher and student are the bare encoders (``AutoModel``), the loss is the sum of the recipe's
intermediate terms (hidden states, attention maps, embeddings, pooled vectors) and the dev "metric" is
that loss on the held-out lines. The student is saved as an encoder folder that a task stage
(``student.init: "@general"`` in a two-stage recipe) loads with a new classification head.

Differences from TinyBERT: its general distillation runs on English Wikipedia (2.5B words) for days;
here any corpus file (``scripts/make_corpus.py`` builds one from the GLUE train files beside the repo).
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from .. import TextDistillError
from ..data.readers import Examples
from ..data.tasks import Task
from ..evaluate import model_inputs
from ..knowledge.terms import build_terms, check_term, term_where
from ..models.loading import _hub_error, count_parameters, load_tokenizer, resolve_model_path
from ..models.student import build_student
from .base import SCHEMES, Scheme, outputs_needed, reject, save_model, save_state, transformer_only
from .teachers import same_vocabulary

log = logging.getLogger("textdistill")
CORPUS = Task("corpus", ("text",), labels=None, metrics=("loss",), description="unlabelled text")


def read_corpus(path: str, where: str) -> list[str]:
    """Non-empty lines of a UTF-8 text file; one-line errors for a missing, binary, non-UTF-8 or empty file."""
    p = Path(path)
    if not p.is_file():
        raise TextDistillError(f"{where}: {path}: no such file")
    raw = p.read_bytes()
    if b"\0" in raw[:1 << 16]:
        raise TextDistillError(f"{where}: {path}: not a text file (NUL bytes)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise TextDistillError(f"{where}: {path}:{line}: not UTF-8 (byte offset {e.start})") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise TextDistillError(f"{where}: {path}: the corpus is empty")
    return lines


def _examples(texts: list[str], source: str, first_line: int = 1) -> Examples:
    return Examples(texts, None, None, source, list(range(first_line, first_line + len(texts))))


def _encoder(name: str, attentions: bool):
    from transformers import AutoModel

    kwargs = {"attn_implementation": "eager"} if attentions else {}
    try:
        return AutoModel.from_pretrained(resolve_model_path(name), **kwargs)
    except (OSError, ValueError) as e:
        raise _hub_error(name, e) from e


@SCHEMES.register("general")
class General(Scheme):
    @classmethod
    def load_data(cls, recipe, task):
        if not recipe.data.train:
            raise TextDistillError("data.train: general distillation reads a text corpus (one text per line)")
        if recipe.data.dev_rows:
            raise TextDistillError("data.dev_rows: general distillation holds out the corpus's last lines (or reads "
                                   "data.dev); drop dev_rows")
        texts = read_corpus(recipe.data.train, "data.train")
        if recipe.data.train_rows and recipe.data.train_rows < len(texts):  # a seeded sample, in corpus order
            import random

            keep = sorted(random.Random(recipe.data.sample_seed).sample(range(len(texts)), recipe.data.train_rows))
            texts = [texts[i] for i in keep]
        if recipe.data.dev:
            return _examples(texts, recipe.data.train), _examples(read_corpus(recipe.data.dev, "data.dev"),
                                                                   recipe.data.dev)
        held = min(1000, max(1, len(texts) // 50))
        if len(texts) < 2:
            raise TextDistillError(f"data.train: {recipe.data.train}: needs at least 2 lines (one is held out)")
        return (_examples(texts[:-held], recipe.data.train),
                _examples(texts[-held:], f"{recipe.data.train} (last {held} lines)", len(texts) - held + 1))

    def check(self) -> None:
        r = self.recipe
        reject(r, {"teachers": bool(r.teachers), "peers": bool(r.peers), "exits": "exits" in r.model_fields_set,
                   "transfer": any(x is not None for x in (r.transfer.augment, r.transfer.adversarial,
                                                             r.transfer.synthetic)) or not r.transfer.train_rows,
                   "teacher_cache": bool(r.teacher_cache.dir),
                   "student.quantize": r.student.quantize is not None, **transformer_only(r)}, "general")
        if not r.teacher or not r.terms:
            raise TextDistillError("scheme general: needs a pre-trained 'teacher' and intermediate 'terms'")
        if not r.student.init:
            raise TextDistillError("student.init: name the pre-trained model whose layers the student keeps")
        for i, term in enumerate(r.terms):
            check_term(term, term_where(i, term))
            if term.tap == "logits":
                raise TextDistillError(f"{term_where(i, term)}.tap: general distillation has no task and no "
                                       f"logits; use hidden, attention, embeddings, cls or mean")
        self.task = CORPUS

    def setup(self, seed_fn) -> None:
        r = self.recipe
        self.need_hidden, self.need_attn = outputs_needed(r.terms)
        self.teacher = _encoder(r.teacher, self.need_attn).eval().requires_grad_(False)
        seed_fn()
        self.student, self.mapping = build_student(_encoder(r.student.init, self.need_attn), r.student.layers)
        log.info("student from %s: %s", r.student.init, ", ".join(f"S{s}<-T{t}" for s, t in self.mapping.items()))
        self.tokenizer = load_tokenizer(r.student.init)
        if not same_vocabulary(self.tokenizer, load_tokenizer(r.teacher)):
            raise TextDistillError(f"teacher {r.teacher} and student init {r.student.init} tokenize differently; "
                                   f"general distillation compares intermediate layers and needs one tokenizer")
        self.train_set, self.dev_set = self.encode(self.tokenizer, self.train_ex), self.encode(self.tokenizer, self.dev_ex)
        log.info("corpus: %d train lines (%s), %d held out (%s)", len(self.train_ex), self.train_ex.source,
                 len(self.dev_ex), self.dev_ex.source)
        self.terms = build_terms(r.terms, teacher_config=self.teacher.config, student_config=self.student.config,
                                 regression=False, seed=self.cfg.seed)

    def modules(self):
        return {"student": self.student, "terms": self.terms}

    def bind(self, prepared) -> None:
        self.student, self.terms = prepared["student"], prepared["terms"]
        self.teacher.to(next(self.student.parameters()).device)

    def loss_parts(self, batch):
        inputs = model_inputs(batch)
        kw = {"output_hidden_states": self.need_hidden, "output_attentions": self.need_attn}
        s_out = self.student(**inputs, **kw)
        with torch.no_grad():
            t_out = self.teacher(**inputs, **kw)
        return {term.name: (term.weight, term(s_out, t_out, inputs["attention_mask"])) for term in self.terms}

    @torch.no_grad()
    def evaluate(self) -> dict:
        from ..data.batching import eval_loader

        was = self.student.training
        self.student.eval()
        total, n = 0.0, 0
        device = next(self.student.parameters()).device
        for batch in eval_loader(self.dev_set, self.tokenizer, self.cfg.eval_batch_size):
            batch = {k: v.to(device) for k, v in batch.items()}
            parts = self.loss_parts(batch)
            total += float(sum(w * v for w, v in parts.values())) * len(batch["idx"])
            n += len(batch["idx"])
        self.student.train(was)
        return {"dev": {"loss": total / max(1, n)}, "terms": [t.describe() for t in self.terms]}

    def save(self, folder: Path, unwrap) -> dict:
        student, terms = unwrap(self.student), unwrap(self.terms)
        save_model(student, self.tokenizer, folder, self.recipe.student.init, self.mapping)
        save_state(terms, folder / "projections.safetensors", {"terms": [t.describe() for t in terms]})
        return {"teacher": self.recipe.teacher, "student_init": self.recipe.student.init,
                "student_layers": len(self.mapping), "terms": [t.describe() for t in terms],
                "student_from_teacher_layers": {str(s): t for s, t in self.mapping.items()},
                "params_teacher": count_parameters(self.teacher), "params_student": count_parameters(student)}
