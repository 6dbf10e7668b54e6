"""Offline distillation: frozen teachers teach one student (and fine-tuning: no teacher at all).

One teacher (``teacher:``) or several (``teachers: [{model, weight, name, cache}, ...]``). With several,
``combine: average`` gives the logit terms one soft target, the weighted mean of the teachers' logits
(the survey's multi-teacher form); ``combine: per-teacher`` repeats each logit term once per teacher, its
weight times the teacher's share (weights are normalised to sum to 1, so identical teachers give the
single-teacher loss either way). Intermediate terms read one teacher, named by the term's ``teacher:``.

A teacher with another tokenizer than the student (MPNet teaching a MiniLM student) reads its own
tokenization of each batch's examples; only logit terms may read it. Each teacher has its own output
cache (``teacher_cache.dir`` for one teacher, ``<teacher_cache.dir>/<name>`` or the entry's ``cache``
for several), keyed by its own tokenizer.
"""
from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import torch

from .. import TextDistillError
from ..evaluate import model_inputs
from ..knowledge.terms import build_terms, check_term, default_term_name, term_where
from ..models.loading import count_parameters
from ..models import qat
from ..models.checks import check_student_depth
from .base import SCHEMES, Scheme, build_model, outputs_needed, reject, require_loss, save_model, save_state, task_loss, \
    warn_flat_cls
from .teachers import LiveTeacher, MixedTeachers, Teacher, cache_ready, load_teacher, teacher_list

__all__ = ["LiveTeacher", "Offline", "teacher_list"]
log = logging.getLogger("textdistill")


@SCHEMES.register("offline")
class Offline(Scheme):
    always_distills = False  # (fine-tuning is the offline scheme without a teacher)
    chains_generations = True  # born-again: generation g+1's one teacher is generation g's student

    def check(self) -> None:
        r = self.recipe
        reject(r, {"peers": bool(r.peers), "exits": "exits" in r.model_fields_set}, "offline")
        require_loss(r)
        self.teacher_cfgs = teacher_list(r)
        if not self.teacher_cfgs and r.teacher_cache.dir:
            raise TextDistillError("teacher_cache.dir: the run has no teacher whose outputs it would cache")
        if r.terms and not self.teacher_cfgs:
            raise TextDistillError("terms need a 'teacher'")
        if not r.student.init and not self.teacher_cfgs:
            raise TextDistillError("student.init: name the model to fine-tune (a folder, a hub id or an alias)")
        names = [t["name"] for t in self.teacher_cfgs]
        for i, term in enumerate(r.terms):
            where = term_where(i, term)
            check_term(term, where)
            if term.teacher is not None and term.teacher not in names:
                raise TextDistillError(f"{where}.teacher: no teacher named '{term.teacher}' (teachers: {names})")
            if term.tap != "logits" and term.teacher is None and len(names) > 1:
                raise TextDistillError(f"{where}.teacher: with several teachers an intermediate term names the "
                                       f"teacher it reads (one of {names})")
        self.init = r.student.init or self.teacher_cfgs[0]["model"]
        qat.check(r.student.quantize, r.student.arch)
        if r.student.arch == "bilstm":
            for i, term in enumerate(r.terms):
                if term.tap != "logits":
                    raise TextDistillError(f"{term_where(i, term)}.tap: a BiLSTM student has no layers, attention maps "
                                           f"or hidden states to match; only logit terms apply, not '{term.tap}'")
            if r.transfer.adversarial is not None:
                raise TextDistillError("transfer.adversarial: needs a transformer student (embeddings of the "
                                       "teacher's width)")
        elif r.student.options:
            raise TextDistillError("student.options: only for student.arch: bilstm")
        if r.transfer.adversarial is not None:
            if len(self.teacher_cfgs) != 1 or self.teacher_cfgs[0]["cache"]:
                raise TextDistillError("transfer.adversarial: needs one live teacher (the adversarial rows are new "
                                       "inputs: no teacher cache, not several teachers)")
            if not any(t.tap == "logits" for t in r.terms):
                raise TextDistillError("transfer.adversarial: the recipe has no logit term to train on the rows")

    def setup(self, seed_fn) -> None:
        r, task = self.recipe, self.task
        self.need_hidden, self.need_attn = outputs_needed(r.terms)
        # a teacher is loaded now if it runs live, if its cache must be built, or if the student copies its
        # layers; with a ready cache it is never loaded
        models = {}
        for t in self.teacher_cfgs:
            if t["cache"] is None or not cache_ready(Path(t["cache"])) or self.init == t["model"]:
                models[t["name"]] = load_teacher(t["model"], task, attentions=self.need_attn)
        # seeded after the teachers are loaded (loading may draw random numbers): a run from the cache
        # builds the same student, projections and batches as a run with the live teacher
        seed_fn()
        source = next((models[t["name"]] for t in self.teacher_cfgs if t["model"] == self.init), None)
        self.student, self.mapping = build_model(self.init, r.student.layers, task, attentions=self.need_attn,
                                                 source=source, arch=r.student.arch, options=r.student.options)
        if r.student.quantize is not None:
            qat.prepare(self.student, r.student.quantize)
            log.info("student: quantization-aware, %s", qat.describe(r.student.quantize))
        self.tokenizer = self.load_tokenizer(self.init)
        self.train_set, self.dev_set = self.encode(self.tokenizer, self.train_ex), self.encode(self.tokenizer, self.dev_ex)
        log.info("task %s: %d train rows (%s), %d dev rows (%s)", task.name, len(self.train_ex), self.train_ex.source,
                 len(self.dev_ex), self.dev_ex.source)
        if r.student.arch == "transformer":
            warn_flat_cls(self.student, self.train_set, self.tokenizer, self.init, r.student.layers)

        n_student = self.student.config.num_hidden_layers
        tokenizers = self._check_teachers()
        self.teachers = []
        for t in self.teacher_cfgs:
            reads = [c for c in r.terms if c.teacher in (None, t["name"])]
            teacher = Teacher(name=t["name"], model_name=t["model"], weight=t["weight"], cache=t["cache"], task=task,
                              train_ex=self.train_ex, student_tokenizer=self.tokenizer, term_cfgs=reads,
                              n_student=n_student, cfg=self.cfg, cache_dtype=r.teacher_cache.dtype,
                              cache_runtime=r.teacher_cache.runtime,
                              hidden=self.need_hidden, attentions=self.need_attn, model=models.get(t["name"]),
                              tqdm=self.tqdm, dev_ex=self.dev_ex, allow_weak=r.allow_weak_teacher,
                              tokenizer=tokenizers[t["name"]])
            if not teacher.own_tokens and teacher.cache is None and teacher.config.vocab_size != self.student.config.vocab_size:
                raise TextDistillError(f"teacher {t['model']} and student init {self.init} have different "
                                       f"vocabularies (teacher and student must share one tokenizer)")
            self.teachers.append(teacher)
        if r.student.arch == "transformer":
            check_student_depth(self.student.config, [(t.model_name, t.config) for t in self.teachers], self.init)
        self.mixer = None
        if len(self.teachers) > 1:
            self.mixer = MixedTeachers({t.name: t.source for t in self.teachers},
                                       {t.name: t.weight for t in self.teachers})
        self.terms, self.reads = self._build_terms(self.teachers)
        self.adversarial = r.transfer.adversarial
        if self.adversarial is not None and self.teachers[0].own_tokens:
            raise TextDistillError("transfer.adversarial: teacher and student must share one tokenizer")

    def _check_teachers(self) -> dict:
        """What the teachers' configs and tokenizers decide, refused before any teacher's cache is built (hours
        for a 12-layer teacher): an intermediate term reading a teacher of another tokenizer, a term whose layers
        or widths do not fit the teacher it reads. Returns each teacher's tokenizer by name (loaded once)."""
        from transformers import AutoConfig

        from .teachers import same_vocabulary
        from ..models.loading import load_tokenizer, resolve_model_path

        teachers, tokenizers = [], {}
        for t in self.teacher_cfgs:
            tokenizers[t["name"]] = load_tokenizer(t["model"])
            if not same_vocabulary(tokenizers[t["name"]], self.tokenizer):
                for i, c in enumerate(self.recipe.terms):
                    if c.tap != "logits" and c.teacher in (None, t["name"]):
                        raise TextDistillError(
                            f"{term_where(i, c)}: teacher {t['model']} tokenizes differently from the student "
                            f"{self.init}; only logit terms can read a teacher with another tokenizer")
            config = AutoConfig.from_pretrained(resolve_model_path(t["model"]))
            teachers.append(SimpleNamespace(name=t["name"], weight=t["weight"], config=config))
        with torch.random.fork_rng(devices=[]):  # (built to be checked: the run's random numbers stay as they were)
            self._build_terms(teachers)
        return tokenizers

    def _build_terms(self, teachers) -> tuple[torch.nn.ModuleList, list[str | None]]:
        """The terms, and the teacher each reads (None: the combined teachers' logits); ``teachers``: each
        with ``name``, ``weight`` and ``config``."""
        r = self.recipe
        cfgs, configs, reads_of = [], [], []
        by_name = {t.name: t for t in teachers}
        total = sum(t.weight for t in teachers) or 1.0
        for i, c in enumerate(r.terms):
            if c.name is None:  # (named by its place in the recipe, before any term is repeated per teacher)
                c = c.model_copy(update={"name": default_term_name(i)})
            if len(teachers) > 1 and c.tap == "logits" and c.teacher is None and r.combine == "per-teacher":
                for t in teachers:
                    cfgs.append(c.model_copy(update={"name": f"{c.name}@{t.name}", "weight": c.weight * t.weight / total,
                                                     "teacher": t.name}))
                    configs.append(t.config)
                    reads_of.append(t.name)
                continue
            reads = c.teacher if c.teacher is not None else (None if len(teachers) > 1 else
                                                             (teachers[0].name if teachers else None))
            cfgs.append(c)
            configs.append(by_name[reads].config if reads else teachers[0].config if teachers else None)
            reads_of.append(reads)
        terms = build_terms(cfgs, teacher_config=self.student.config, teacher_configs=configs,
                            student_config=self.student.config, regression=self.task.is_regression, seed=self.cfg.seed)
        return terms, reads_of

    def modules(self):
        return {"student": self.student, "terms": self.terms}

    def bind(self, prepared) -> None:
        self.student, self.terms = prepared["student"], prepared["terms"]
        device = next(self.student.parameters()).device
        for t in self.teachers:
            t.to(device)

    def loss_parts(self, batch):
        inputs = model_inputs(batch)
        s_out = self.student(**inputs, output_hidden_states=self.need_hidden, output_attentions=self.need_attn)
        parts = {}
        if self.recipe.hard_weight > 0:
            parts["task"] = (self.recipe.hard_weight, task_loss(self.task, s_out.logits, batch["labels"]))
        if self.teachers:
            outs = {t.name: t.source(inputs, batch) for t in self.teachers}
            mixed = self.mixer(outs) if self.mixer else None
            for term, reads in zip(self.terms, self.reads):
                parts[term.name] = (term.weight, term(s_out, outs[reads] if reads else mixed, inputs["attention_mask"]))
        if self.adversarial is not None and self.step % self.adversarial.every == 0:  # (the loop's count: resumes)
            parts.update(self._adversarial_parts(inputs))
        return parts

    def _adversarial_parts(self, inputs):
        """The logit terms on rows where teacher and student disagree most (data/transfer/adversarial.py)."""
        from ..data.transfer.adversarial import hotflip

        adv, teacher = self.adversarial, self.teachers[0].source.model
        rows = hotflip(self.student, teacher, inputs, flips=adv.flips, temperature=adv.temperature,
                       special_ids=self.tokenizer.all_special_ids)
        s_out = self.student(**rows)
        with torch.no_grad():
            t_out = teacher(**rows)
        return {f"{term.name}@adv": (term.weight * adv.weight, term(s_out, t_out, rows["attention_mask"]))
                for term in self.terms if term.tap == "logits"}

    def evaluate(self) -> dict:
        terms = {"terms": [t.describe() for t in self.terms if t.tap != "logits"]}
        if qat.is_prepared(self.student):
            # quantization-aware: "dev" is the saved model's (quantized weights, fp32 activations, what `textdistill
            # evaluate` gives on the folder); the fake-quantized student's (activations quantized per batch as ONNX
            # Runtime's dynamic int8 does, so it depends on eval_batch_size) is kept beside it
            import copy

            saved = qat.convert(copy.deepcopy(self.student))
            return {"dev": self.metrics_of(saved, where="."), "dev_fake_quant": self.metrics_of(self.student), **terms}
        return {"dev": self.metrics_of(self.student, where="."), **terms}

    def save(self, folder: Path, unwrap) -> dict:
        student, terms = unwrap(self.student), unwrap(self.terms)
        save_model(student, self.tokenizer, folder, self.init, self.mapping)
        # projections trained with the student go next to the HF folder, never inside it
        save_state(terms, folder / "projections.safetensors", {"terms": [t.describe() for t in terms]})
        first = self.teachers[0] if self.teachers else None
        out = {"teacher": self.recipe.teacher, "student_init": self.init, "student_layers": len(self.mapping),
               "student_from_teacher_layers": {str(s): t for s, t in self.mapping.items()},
               "terms": [t.describe() for t in terms], "params_teacher": first.params if first else None,
               "teacher_cache": first.cache if first else None, "params_student": count_parameters(student)}
        if len(self.teachers) > 1 or self.recipe.teachers:
            out["teachers"] = [{"name": t.name, "model": t.model_name, "weight": t.weight, "params": t.params,
                                "cache": t.cache, "own_tokenizer": t.own_tokens} for t in self.teachers]
            out["combine"] = self.recipe.combine
        return out
