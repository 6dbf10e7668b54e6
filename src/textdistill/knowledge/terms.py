"""A knowledge term = tap + layer map + loss + weight (+ projection when widths differ).

A method from a paper is a list of terms in a recipe; the training loop only sums
``term.weight * term(student_outputs, teacher_outputs, attention_mask)`` and never needs to know
which method it runs.

Taps (what is read from a model's outputs; hidden layer 0 is the embedding output):

* ``logits``: the classifier's output.
* ``cls``: hidden state of the first token ([CLS] / <s>) of the mapped layers.
* ``mean``: hidden states of the mapped layers averaged over real (non-padding) tokens.
* ``hidden``: the full hidden sequence of the mapped layers (padding positions zeroed).
"""
from __future__ import annotations

import torch

from .. import TextDistillError
from .losses import get_loss, loss_arguments
from .maps import layer_map

TAPS = ("logits", "cls", "mean", "hidden")


def tap_layers(outputs, tap: str, layers: list[int], mask: torch.Tensor) -> torch.Tensor:
    """Stack the tapped representation of ``layers``: ``(batch, n_layers, dim)`` or
    ``(batch, n_layers, seq, dim)`` for ``hidden``."""
    hs = outputs.hidden_states
    if hs is None:
        raise TextDistillError("the model returned no hidden states (output_hidden_states was not set)")
    reps = []
    for layer in layers:
        h = hs[layer]
        if tap == "cls":
            reps.append(h[:, 0])
        elif tap == "mean":
            m = mask.unsqueeze(-1).to(h.dtype)
            reps.append((h * m).sum(1) / m.sum(1).clamp(min=1.0))
        else:
            reps.append(h * mask.unsqueeze(-1).to(h.dtype))
    return torch.stack(reps, dim=1)


def check_term(cfg, where: str) -> None:
    """Checks that need no model: tap, loss and its arguments, map name."""
    from .maps import MAPS

    get_loss(cfg.loss, f"{where}.loss")
    allowed = loss_arguments(cfg.loss)
    for key in cfg.args:
        if key not in allowed:
            raise TextDistillError(f"{where}.args.{key}: loss '{cfg.loss}' takes no argument '{key}' "
                                   f"(it takes: {', '.join(sorted(allowed)) or 'none'})")
    if cfg.tap not in TAPS:
        raise TextDistillError(f"{where}.tap: unknown tap '{cfg.tap}' (known: {', '.join(TAPS)})")
    if cfg.map is not None:
        MAPS.get_or_fail(cfg.map, f"{where}.map")
    if cfg.tap == "logits" and (cfg.map or cfg.pairs):
        raise TextDistillError(f"{where}: a logits term takes no layer map")
    if cfg.tap != "logits" and not (cfg.map or cfg.pairs):
        raise TextDistillError(f"{where}: a '{cfg.tap}' term needs a layer 'map' or explicit 'pairs'")


def term_where(i: int, cfg) -> str:
    return f"terms[{i}]" + (f" ({cfg.name})" if cfg.name else "")


class Term(torch.nn.Module):
    def __init__(self, cfg, *, n_teacher: int, n_student: int, d_teacher: int, d_student: int,
                 regression: bool, where: str, seed: int = 0):
        super().__init__()
        self.name, self.tap, self.weight = cfg.name, cfg.tap, cfg.weight
        self.where, self.seed = where, seed
        self.loss_name = cfg.loss
        check_term(cfg, where)
        self.loss_fn = get_loss(cfg.loss)
        self.args = dict(cfg.args)
        self.n_teacher, self.n_student = n_teacher, n_student
        self.map_name, self.pairs = cfg.map, None
        self.projections = torch.nn.ModuleList()
        if self.tap == "logits":
            if regression and cfg.loss in ("kd_kl", "soft_ce"):
                raise TextDistillError(f"{where}.loss: '{cfg.loss}' needs class logits; use 'mse' for a regression task")
            return
        if cfg.pairs:
            self.pairs = [(int(s), int(t)) for s, t in cfg.pairs]
            for s, t in self.pairs:
                if not 0 <= s <= n_student:
                    raise TextDistillError(f"{where}.pairs: student layer {s} out of range 0..{n_student}")
                if not 0 <= t <= n_teacher:
                    raise TextDistillError(f"{where}.pairs: teacher layer {t} out of range 0..{n_teacher}")
        self.set_epoch(0)
        if d_student != d_teacher:
            if cfg.proj == "none":
                raise TextDistillError(f"{where}.proj: student width {d_student} differs from teacher width "
                                       f"{d_teacher}; set proj: linear (or auto)")
            self.projections.extend(torch.nn.Linear(d_student, d_teacher) for _ in self.pairs)
        elif cfg.proj == "linear":
            self.projections.extend(torch.nn.Linear(d_student, d_teacher) for _ in self.pairs)

    @property
    def needs_hidden(self) -> bool:
        return self.tap != "logits"

    def set_epoch(self, epoch: int) -> None:
        """Called by the training loop before each epoch (maps such as RAIL-KD re-draw here)."""
        if self.tap == "logits" or (self.pairs is not None and self.map_name is None):
            return
        teacher = layer_map(self.map_name, self.n_teacher, self.n_student, epoch=epoch, seed=self.seed)
        self.pairs = list(zip(range(1, self.n_student), teacher))

    def describe(self) -> str:
        if self.tap == "logits":
            return f"{self.name}: logits, {self.loss_name} {self.args or ''} x {self.weight}"
        pairs = ", ".join(f"S{s}<-T{t}" for s, t in self.pairs)
        return f"{self.name}: {self.tap} [{pairs}], {self.loss_name} {self.args or ''} x {self.weight}"

    def forward(self, student_out, teacher_out, mask: torch.Tensor) -> torch.Tensor:
        if self.tap == "logits":
            return self.loss_fn(student_out.logits, teacher_out.logits, **self.args)
        if not self.pairs:
            return student_out.logits.new_zeros(())
        s = tap_layers(student_out, self.tap, [p[0] for p in self.pairs], mask)
        t = tap_layers(teacher_out, self.tap, [p[1] for p in self.pairs], mask)
        if len(self.projections):
            s = torch.stack([proj(s[:, i]) for i, proj in enumerate(self.projections)], dim=1)
        if s.shape != t.shape:
            raise TextDistillError(f"{self.where}: student {tuple(s.shape)} and teacher {tuple(t.shape)} "
                                   f"representations differ in shape")
        return self.loss_fn(s, t.detach(), **self.args)


def build_terms(cfgs, *, teacher_config, student_config, regression: bool, seed: int = 0) -> torch.nn.ModuleList:
    terms = torch.nn.ModuleList()
    names = set()
    for i, cfg in enumerate(cfgs):
        where = term_where(i, cfg)
        if cfg.name in names:
            raise TextDistillError(f"{where}.name: duplicate term name '{cfg.name}'")
        names.add(cfg.name)
        terms.append(Term(cfg, n_teacher=teacher_config.num_hidden_layers,
                          n_student=student_config.num_hidden_layers, d_teacher=teacher_config.hidden_size,
                          d_student=student_config.hidden_size, regression=regression, where=where, seed=seed))
    return terms
