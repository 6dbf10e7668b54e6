"""A knowledge term = tap + layer map + loss + weight (+ projections when widths differ).

A method from a paper is a list of terms in a recipe; the training loop only sums
``term.weight * term(student_outputs, teacher_outputs, attention_mask)`` and never needs to know
which method it runs.

Taps (what is read from a model's outputs; hidden layer 0 is the embedding output):

* ``logits``: the classifier's output.
* ``cls``: hidden state of the first token ([CLS] / <s>) of the mapped layers.
* ``mean``: hidden states of the mapped layers averaged over real (non-padding) tokens.
* ``hidden``: the full hidden sequence of the mapped layers (padding positions zeroed).
* ``embeddings``: the embedding output (hidden layer 0) as a sequence; pairs default to [[0, 0]].
* ``attention``: attention probabilities of the mapped layers (1-based; layer 0 has none).
  Models are then loaded with ``attn_implementation="eager"``.

Projections (trained with the student, saved next to it as ``projections.safetensors``):

* ``proj: auto`` (default): a linear map of each student layer's features to the teacher's width
  when the widths differ (none for width-free losses such as RKD, or for attention maps).
  ``linear`` always adds one; ``mlp`` uses Linear-GELU-Linear; ``none`` refuses differing widths.
* ``proj_dim: P``: both sides are projected to width P, one projection per student layer and one
  per teacher layer (RAIL-KD's shared space).
* ``concat: true``: the mapped layers of each model are concatenated before projecting
  (RAIL-KD_c), so one vector per model is compared.
"""
from __future__ import annotations

import math

import torch

from .. import TextDistillError
from .losses import check_arguments, get_loss, loss_arguments, takes_mask
from .maps import COMBINE, MAPS, RANDOM, layer_map

TAPS = ("logits", "cls", "mean", "hidden", "embeddings", "attention")
VECTOR_TAPS = ("cls", "mean")


def tap_layers(outputs, tap: str, layers: list[int], mask: torch.Tensor, where: str = "term") -> torch.Tensor:
    """Stack the tapped representation of ``layers``: ``(batch, n_layers, dim)`` for cls/mean,
    ``(batch, n_layers, seq, dim)`` for hidden/embeddings, ``(batch, n_layers, heads, seq, seq)``
    for attention; fp32."""
    if tap == "attention":
        att = outputs.attentions
        if not att or any(a is None for a in att):
            raise TextDistillError(f"{where}: the model returned no attention maps (it must be loaded with "
                                   f"attn_implementation='eager'; sdpa returns none)")
        return torch.stack([att[layer - 1].float() for layer in layers], dim=1)
    pooled = getattr(outputs, "pooled", None)  # a teacher-output cache: {tap: {layer: (batch, dim)}}
    if pooled is not None:
        missing = [layer for layer in layers if layer not in pooled.get(tap, {})]
        if missing:
            raise TextDistillError(f"{where}: the teacher cache holds no '{tap}' vector of layer {missing[0]}")
        return torch.stack([pooled[tap][layer].float() for layer in layers], dim=1)
    hs = outputs.hidden_states
    if hs is None:
        raise TextDistillError(f"{where}: the model returned no hidden states (output_hidden_states was not set)")
    reps = []
    for layer in layers:
        h = hs[layer].float()  # (pooled in fp32 also from a mixed-precision forward)
        if tap == "cls":
            reps.append(h[:, 0])
        elif tap == "mean":
            m = mask.unsqueeze(-1).to(h.dtype)
            reps.append((h * m).sum(1) / m.sum(1).clamp(min=1.0))
        else:
            reps.append(h * mask.unsqueeze(-1).to(h.dtype))
    return torch.stack(reps, dim=1)


def check_term(cfg, where: str) -> None:
    """Checks that need no model: tap, loss and its arguments, map name, option combinations."""
    loss_fn = get_loss(cfg.loss, f"{where}.loss")
    allowed = loss_arguments(cfg.loss)
    for key in cfg.args:
        if key not in allowed:
            raise TextDistillError(f"{where}.args.{key}: loss '{cfg.loss}' takes no argument '{key}' "
                                   f"(it takes: {', '.join(sorted(allowed)) or 'none'})")
    check_arguments(cfg.loss, cfg.args, where)
    if cfg.tap not in TAPS:
        raise TextDistillError(f"{where}.tap: unknown tap '{cfg.tap}' (known: {', '.join(TAPS)})")
    if cfg.tap not in loss_fn.taps:
        raise TextDistillError(f"{where}.loss: '{cfg.loss}' does not apply to the '{cfg.tap}' tap "
                               f"(it takes: {', '.join(loss_fn.taps)})")
    if cfg.map is not None:
        MAPS.get_or_fail(cfg.map, f"{where}.map")
        if COMBINE.get(cfg.map) == "attention" and cfg.tap not in VECTOR_TAPS:
            raise TextDistillError(f"{where}.map: '{cfg.map}' weighs teacher layers per example and needs a "
                                   f"cls or mean tap, not '{cfg.tap}'")
    if cfg.map and cfg.pairs:
        raise TextDistillError(f"{where}: give a layer 'map' or explicit 'pairs', not both")
    if cfg.tap == "logits" and (cfg.map or cfg.pairs or cfg.proj_dim or cfg.concat or cfg.proj in ("linear", "mlp")
                                or cfg.train_teacher_proj):
        raise TextDistillError(f"{where}: a logits term takes no layer map, projection or concat")
    if cfg.proj_dim and cfg.proj == "none":
        raise TextDistillError(f"{where}.proj: 'none' contradicts proj_dim {cfg.proj_dim} (which projects both sides)")
    if cfg.train_teacher_proj and not cfg.proj_dim:
        raise TextDistillError(f"{where}.train_teacher_proj: there is a teacher-side projection only with proj_dim")
    if cfg.tap not in ("logits", "embeddings") and not (cfg.map or cfg.pairs):
        raise TextDistillError(f"{where}: a '{cfg.tap}' term needs a layer 'map' or explicit 'pairs'")
    if cfg.tap == "embeddings" and cfg.map:
        raise TextDistillError(f"{where}.map: the embeddings tap is layer 0 of both models and takes no map")
    if cfg.tap == "attention" and (cfg.proj_dim or cfg.concat or cfg.proj in ("linear", "mlp")):
        raise TextDistillError(f"{where}: attention maps are compared head to head, without projections")
    if cfg.concat and cfg.tap not in VECTOR_TAPS:
        raise TextDistillError(f"{where}.concat: concatenation needs a cls or mean tap, not '{cfg.tap}'")
    if cfg.concat and cfg.map and cfg.map in COMBINE:
        raise TextDistillError(f"{where}.concat: not with the '{cfg.map}' map, which combines layers itself")
    if cfg.fuse != "mean" and COMBINE.get(cfg.map) != "mean":
        raise TextDistillError(f"{where}.fuse: fuses the layer groups of the ckd map, not '{cfg.map}'")
    if cfg.fuse == "linear" and cfg.proj_dim:
        raise TextDistillError(f"{where}.fuse: linear fusion maps a group to the teacher's width; not with proj_dim")


def teacher_layers_read(cfg, n_teacher: int, n_student: int) -> list[int]:
    """Every teacher layer a term may read, over all epochs (random maps: all intermediate layers)."""
    if cfg.tap == "logits":
        return []
    if cfg.pairs or cfg.tap == "embeddings":
        return sorted({int(t) for _, t in (cfg.pairs or [(0, 0)])})
    if cfg.map in RANDOM:
        return list(range(1, n_teacher))
    entries = layer_map(cfg.map, n_teacher, n_student)
    return sorted({t for e in entries for t in (e if isinstance(e, list) else [e])})


def default_term_name(i: int) -> str:
    """The name of the recipe's unnamed term ``terms[i]`` (in loss parts and logs)."""
    return f"term{i}"


def term_where(i: int, cfg) -> str:
    return f"terms[{i}]" + (f" ({cfg.name})" if cfg.name else "")


def _projection(kind: str, d_in: int, d_out: int) -> torch.nn.Module:
    if kind == "mlp":
        return torch.nn.Sequential(torch.nn.Linear(d_in, d_out), torch.nn.GELU(), torch.nn.Linear(d_out, d_out))
    return torch.nn.Linear(d_in, d_out, bias=kind != "linear-nobias")


class Term(torch.nn.Module):
    def __init__(self, cfg, *, n_teacher: int, n_student: int, d_teacher: int, d_student: int,
                 regression: bool, where: str, seed: int = 0, heads_teacher: int | None = None,
                 heads_student: int | None = None):
        super().__init__()
        check_term(cfg, where)
        self.name, self.tap, self.weight = cfg.name, cfg.tap, cfg.weight
        self.where, self.seed = where, seed
        self.loss_name, self.loss_fn = cfg.loss, get_loss(cfg.loss)
        self.pass_mask = takes_mask(cfg.loss)
        self.args = dict(cfg.args)
        self.n_teacher, self.n_student = n_teacher, n_student
        self.map_name, self.concat = cfg.map, cfg.concat
        self.combine = COMBINE.get(cfg.map)
        if self.combine == "mean" and cfg.fuse == "linear":
            self.combine = "linear"
        self.pairs: list[tuple[int, int | list[int]]] | None = None
        self.student_proj = torch.nn.ModuleDict()
        self.teacher_proj = torch.nn.ModuleDict()
        self.fuse = torch.nn.ModuleDict()  # CKD's linear fusion of each group of teacher layers
        if self.tap == "logits":
            if regression and cfg.loss in ("kd_kl", "soft_ce"):
                raise TextDistillError(f"{where}.loss: '{cfg.loss}' needs class logits; use 'mse' for a regression task")
            return
        lowest = 1 if self.tap == "attention" else 0
        if cfg.pairs or self.tap == "embeddings":
            self.pairs = [(int(s), int(t)) for s, t in (cfg.pairs or [(0, 0)])]
            for s, t in self.pairs:
                if not lowest <= s <= n_student:
                    raise TextDistillError(f"{where}.pairs: student layer {s} out of range {lowest}..{n_student}")
                if not lowest <= t <= n_teacher:
                    raise TextDistillError(f"{where}.pairs: teacher layer {t} out of range {lowest}..{n_teacher}")
            if self.tap == "embeddings" and any(p != (0, 0) for p in self.pairs):
                raise TextDistillError(f"{where}.pairs: the embeddings tap is layer 0 of both models ([[0, 0]])")
        self.set_epoch(0)
        if not self.pairs:
            raise TextDistillError(f"{where}.map: '{cfg.map}' maps no layer of a {n_student}-layer student (it "
                                   f"leaves the last layer to the logit terms); give explicit pairs or another map")
        self.teacher_layers = teacher_layers_read(cfg, n_teacher, n_student)
        if self.tap == "attention":
            if heads_teacher != heads_student:
                raise TextDistillError(f"{where}: the student has {heads_student} attention heads, the teacher "
                                       f"{heads_teacher}; attention maps are matched head to head")
            return
        self._build_projections(cfg, d_teacher, d_student)

    def _build_projections(self, cfg, d_teacher: int, d_student: int):
        kind = "mlp" if cfg.proj == "mlp" else "linear"
        width_free = self.loss_fn.width_free
        k = len(self.pairs)
        if self.combine == "linear":  # CKD: W [t_a; t_b; ...] + b per group, trained with the student
            for i, (_, group) in enumerate(self.pairs):
                self.fuse[str(i)] = torch.nn.Linear(len(group) * d_teacher, d_teacher)
        if cfg.proj_dim:  # both sides into one space (RAIL-KD)
            # a frozen teacher-side projection is a random linear map without bias (a random offset would
            # only shift every target alike)
            teacher_kind = kind if cfg.train_teacher_proj else "linear-nobias"
            if self.concat:
                self.student_proj["cat"] = _projection(kind, k * d_student, cfg.proj_dim)
                self.teacher_proj["cat"] = _projection(teacher_kind, k * d_teacher, cfg.proj_dim)
            else:
                for s, _ in self.pairs:
                    self.student_proj[str(s)] = _projection(kind, d_student, cfg.proj_dim)
                for t in self.teacher_layers:
                    self.teacher_proj[str(t)] = _projection(teacher_kind, d_teacher, cfg.proj_dim)
            # a fixed random teacher projection keeps the target's geometry (up to a random map); a trained
            # one can minimise the term by making every teacher vector alike
            self.teacher_proj.requires_grad_(cfg.train_teacher_proj)
            return
        differ = d_student != d_teacher and not width_free
        if differ and cfg.proj == "none":
            raise TextDistillError(f"{self.where}.proj: student width {d_student} differs from teacher width "
                                   f"{d_teacher}; set proj: auto, linear or mlp (or proj_dim)")
        if differ or cfg.proj in ("linear", "mlp"):
            if self.concat:
                self.student_proj["cat"] = _projection(kind, k * d_student, k * d_teacher)
            else:
                for s, _ in self.pairs:
                    self.student_proj[str(s)] = _projection(kind, d_student, d_teacher)

    def set_epoch(self, epoch: int) -> None:
        """Called by the training loop before each epoch (maps such as RAIL-KD re-draw here)."""
        if self.tap == "logits" or self.map_name is None:
            return
        teacher = layer_map(self.map_name, self.n_teacher, self.n_student, epoch=epoch, seed=self.seed)
        self.pairs = list(zip(range(1, len(teacher) + 1), teacher))

    def describe(self) -> str:
        if self.tap == "logits":
            return f"{self.name}: logits, {self.loss_name} {self.args or ''} x {self.weight}"

        def src(e):
            if not isinstance(e, list):
                return f"T{e}"
            return f"T{{{','.join(map(str, e))}}}" + (f" ({self.combine})" if self.combine else "")
        pairs = ", ".join(f"S{s}<-{src(t)}" for s, t in self.pairs)
        extra = (" concat" if self.concat else "") + (" fuse linear" if self.combine == "linear" else "")
        if len(self.teacher_proj):
            extra += " teacher-proj " + ("trained" if next(self.teacher_proj.parameters()).requires_grad else "frozen")
        return f"{self.name}: {self.tap}{extra} [{pairs}], {self.loss_name} {self.args or ''} x {self.weight}"

    def _teacher(self, teacher_out, mask) -> tuple[torch.Tensor | None, list[torch.Tensor] | None]:
        """The teacher side: one tensor (batch, k, ...) for one-to-one entries, or for maps that
        combine several teacher layers the per-entry stacks (batch, n_layers, ...) to combine."""
        entries = [p[1] for p in self.pairs]
        if self.combine is None:
            return tap_layers(teacher_out, self.tap, entries, mask, self.where), None
        return None, [tap_layers(teacher_out, self.tap, e, mask, self.where) for e in entries]

    def _project_teacher(self, t: torch.Tensor, layers: list[int]) -> torch.Tensor:
        return torch.stack([self.teacher_proj[str(layer)](t[:, i]) for i, layer in enumerate(layers)], dim=1)

    def forward(self, student_out, teacher_out, mask: torch.Tensor) -> torch.Tensor:
        # the loss in fp32 also inside a mixed-precision step (train.mixed_precision): CPU autocast leaves
        # softmax / log_softmax in bf16, which put a KD term ~2 % off; the models' forwards stay in autocast
        with torch.autocast(mask.device.type, enabled=False):
            return self._forward(student_out, teacher_out, mask)

    def _forward(self, student_out, teacher_out, mask: torch.Tensor) -> torch.Tensor:
        if self.tap == "logits":
            return self.loss_fn(student_out.logits.float(), teacher_out.logits.float(), **self.args)
        s = tap_layers(student_out, self.tap, [p[0] for p in self.pairs], mask, self.where)  # (fp32)
        with torch.no_grad():
            t, candidates = self._teacher(teacher_out, mask)
        if self.concat:
            s, t = s.flatten(1).unsqueeze(1), t.flatten(1).unsqueeze(1)
            if "cat" in self.student_proj:
                s = self.student_proj["cat"](s)
            if "cat" in self.teacher_proj:
                t = self.teacher_proj["cat"](t)
        else:
            if len(self.student_proj):
                s = torch.stack([self.student_proj[str(p[0])](s[:, i]) for i, p in enumerate(self.pairs)], dim=1)
            if len(self.teacher_proj):
                if candidates is not None:
                    candidates = [self._project_teacher(c, e) for c, (_, e) in zip(candidates, self.pairs)]
                else:
                    t = self._project_teacher(t, [p[1] for p in self.pairs])
        if candidates is not None:  # CKD: the group's mean or linear fusion; ALP-KD: attention over the layers
            combine = {"mean": lambda i, c: c.mean(1), "linear": lambda i, c: self.fuse[str(i)](c.flatten(1)),
                       "attention": lambda i, c: alp_target(s[:, i], c)}[self.combine]
            t = torch.stack([combine(i, c) for i, c in enumerate(candidates)], dim=1)
        if s.shape[2:] != t.shape[2:] and not self.loss_fn.width_free or s.shape[:2] != t.shape[:2]:
            raise TextDistillError(f"{self.where}: student {tuple(s.shape)} and teacher {tuple(t.shape)} "
                                   f"representations differ in shape")
        kwargs = dict(self.args)
        if self.pass_mask:
            kwargs["mask"] = mask
        # the teacher side may carry gradients of its projections (proj_dim) or of ALP's weights
        return self.loss_fn(s, t, **kwargs)


def alp_target(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """ALP-KD: ``sum_k softmax_k(s . t_k / sqrt(d)) t_k`` for ``s`` (batch, d), ``t`` (batch, k, d)."""
    weights = torch.softmax(torch.einsum("bd,bkd->bk", s, t) / math.sqrt(s.shape[-1]), dim=-1)
    return torch.einsum("bk,bkd->bd", weights, t)


def build_terms(cfgs, *, teacher_config, student_config, regression: bool, seed: int = 0,
                teacher_configs=None) -> torch.nn.ModuleList:
    """The terms of ``cfgs``; ``teacher_configs`` (one per term, None for ``teacher_config``) gives each
    term the shape of the teacher it reads (several teachers)."""
    terms = torch.nn.ModuleList()
    names = set()
    for i, cfg in enumerate(cfgs):
        where = term_where(i, cfg)
        if cfg.name is None:  # (the name of its loss part; every scheme alike)
            cfg = cfg.model_copy(update={"name": default_term_name(i)})
        if cfg.name in names:
            raise TextDistillError(f"{where}.name: duplicate term name '{cfg.name}'")
        names.add(cfg.name)
        tc = teacher_configs[i] if teacher_configs is not None and teacher_configs[i] is not None else teacher_config
        terms.append(Term(cfg, n_teacher=tc.num_hidden_layers,
                          n_student=student_config.num_hidden_layers, d_teacher=tc.hidden_size,
                          d_student=student_config.hidden_size, regression=regression, where=where, seed=seed,
                          heads_teacher=getattr(tc, "num_attention_heads", None),
                          heads_student=getattr(student_config, "num_attention_heads", None)))
    return terms
