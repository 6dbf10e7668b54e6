"""Distillation losses: pure functions ``(student, teacher, **args) -> scalar`` looked up by name.

Conventions (the traps of other toolkits are written out here on purpose):

* ``kd_kl``: ``T^2 * KL(softmax(t/T) || softmax(s/T))`` with ``log_softmax`` on the student and
  reduction ``batchmean`` (sum over classes, mean over examples) -- Hinton et al. 2015.
* ``soft_ce``: PKD's L_DS, ``-sum_c softmax(t/T)_c * log softmax(s/T)_c`` averaged over examples,
  times ``T^2`` unless ``t2=False``. Its gradient equals ``kd_kl``'s (they differ by the teacher's
  entropy, a constant).
* ``pkd_mse``: Patient KD's L_PT on L2-normalised vectors, shape ``(batch, layers, dim)``.
  ``reduction="mean"`` (default) averages over batch, layers and dimensions, as the authors' code
  does (``F.mse_loss`` on the stacked vectors); the paper's beta values (100-500) were tuned with it.
  ``reduction="sum"`` is the paper's equation: sum over layers and dimensions, mean over the batch.
* ``cosine``: 1 - cosine similarity along the feature axis, averaged (over real tokens for sequences).
* ``attention_mse`` / ``attention_kl``: attention maps ``(batch, layers, heads, query, key)``.
  transformers returns probabilities (after softmax), so both work on probabilities, over real
  query rows and key columns only. TinyBERT's MSE is on the scores before the softmax; MiniLM's
  KL is on probabilities, like ``attention_kl`` (KL(teacher || student) per query row, averaged).
* ``fsp``: the FSP/Gram relation between consecutive mapped layers a, b of a model (Yim et al.
  2017, tokens as the spatial axis): ``G = H_a^T H_b / n_tokens`` (``dim x dim``, real tokens only);
  MSE between the student's and teacher's G, averaged over the consecutive pairs. Needs 2+ layers.
* ``rkd_distance`` / ``rkd_angle``: relations between the examples of a batch (Park et al. 2019):
  pairwise distances normalised by their mean, and the angles of all triplets; Huber (smooth L1)
  between student and teacher relations, averaged over layers. Width-free: no projection needed.
* ``infonce``: a contrastive loss in the spirit of CoDIR (Sun et al. 2020), simplified to InfoNCE
  over the batch: the student vector of example i should be closer (cosine / temperature) to the
  teacher vector of example i than to those of the other examples of the batch (CoDIR draws its
  negatives from a memory bank of other examples instead).

Every loss declares which taps it accepts (``taps``) and whether it needs equal widths.
A loss that declares a keyword ``mask`` receives the batch's attention mask.
"""
from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

from .. import TextDistillError
from ..registry import Registry

LOSSES = Registry("loss")
register_loss = LOSSES.register


VECTOR, SEQUENCE = ("cls", "mean"), ("hidden", "embeddings")


def loss(name: str, taps, width_free: bool = False, checks: dict | None = None):
    """Register a loss with the taps it accepts; ``width_free`` losses compare relations, so a
    student of another width needs no projection. ``checks``: argument name -> a function that raises
    TextDistillError for a bad value (run on a recipe's ``args`` before anything trains: :func:`check_arguments`)."""
    def deco(fn):
        fn.taps, fn.width_free, fn.checks = tuple(taps), width_free, dict(checks or {})
        return register_loss(name)(fn)
    return deco


def check_arguments(name: str, args: dict, where: str) -> None:
    """A recipe term's loss arguments checked by value, each error naming the key (``terms[0] (kd).args.temperature:
    ...``): at recipe time, not at the first training step."""
    for key, value in args.items():
        check = getattr(LOSSES[name], "checks", {}).get(key)  # (a loss registered without @loss has none)
        if check is not None:
            try:
                check(value)
            except TextDistillError as e:
                raise TextDistillError(f"{where}.args.{key}: {e}") from None


def get_loss(name: str, where: str = "loss"):
    return LOSSES.get_or_fail(name, where)


def loss_arguments(name: str) -> set[str]:
    """The arguments a recipe may set (keyword-only, except the mask the term passes itself)."""
    params = inspect.signature(LOSSES[name]).parameters
    return {p for p, v in params.items() if v.kind == v.KEYWORD_ONLY and p != "mask"}


def takes_mask(name: str) -> bool:
    return "mask" in inspect.signature(LOSSES[name]).parameters


def _check_t(temperature: float):
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise TextDistillError(f"temperature must be positive, got {temperature!r}")


def _check_reduction(reduction: str):
    if reduction not in ("batchmean", "mean"):
        raise TextDistillError(f"reduction must be 'batchmean' (sum over classes, mean over examples) or 'mean' "
                               f"(mean over examples and classes, as the PKD authors' code), got '{reduction}'")


def _check_pkd_reduction(reduction: str):
    if reduction not in ("mean", "sum"):
        raise TextDistillError(f"pkd_mse: reduction must be 'mean' or 'sum', got '{reduction}'")


def _check_flag(value):
    if not isinstance(value, bool):
        raise TextDistillError(f"must be true or false, got {value!r}")


_LOGIT_CHECKS = {"temperature": _check_t, "reduction": _check_reduction}


@loss("kd_kl", ["logits"], checks=_LOGIT_CHECKS)
def kd_kl(student: torch.Tensor, teacher: torch.Tensor, *, temperature: float = 1.0,
          reduction: str = "batchmean") -> torch.Tensor:
    """T^2 * KL(softmax(t/T) || softmax(s/T)); ``reduction: mean`` also averages over the C classes (the PKD
    authors' ``nn.KLDivLoss(reduction='mean')``: the batchmean value / C)."""
    _check_t(temperature)
    _check_reduction(reduction)
    log_p_s = F.log_softmax(student / temperature, dim=-1)
    p_t = F.softmax(teacher / temperature, dim=-1)
    kl = F.kl_div(log_p_s, p_t, reduction="batchmean")  # torch's own 'mean' is to change meaning: divide here
    return (kl / student.shape[-1] if reduction == "mean" else kl) * temperature ** 2


@loss("soft_ce", ["logits"], checks={**_LOGIT_CHECKS, "t2": _check_flag})
def soft_ce(student: torch.Tensor, teacher: torch.Tensor, *, temperature: float = 1.0,
            t2: bool = True, reduction: str = "batchmean") -> torch.Tensor:
    _check_t(temperature)
    _check_reduction(reduction)
    p_t = F.softmax(teacher / temperature, dim=-1)
    loss = -(p_t * F.log_softmax(student / temperature, dim=-1)).sum(-1).mean()
    if reduction == "mean":
        loss = loss / student.shape[-1]
    return loss * temperature ** 2 if t2 else loss


@loss("mse", ["logits", *VECTOR, *SEQUENCE, "attention"])
def mse(student: torch.Tensor, teacher: torch.Tensor, *, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error over all elements (regression logits, pooled vectors); for full sequences
    (batch, layers, seq, dim) the mean over the real tokens only (padding positions excluded); for attention
    maps (batch, layers, heads, seq, seq) ``attention_mse`` (real query rows and key columns only)."""
    if student.dim() == 5 and mask is not None:
        return attention_mse(student, teacher, mask=mask)
    if student.dim() == 4 and mask is not None:
        w = _token_weights(mask, student[..., 0]).unsqueeze(-1)
        return ((student - teacher).pow(2) * w).sum() / (w.sum() * student.shape[-1]).clamp(min=1)
    return F.mse_loss(student, teacher)


@loss("pkd_mse", VECTOR, checks={"reduction": _check_pkd_reduction})
def pkd_mse(student: torch.Tensor, teacher: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    _check_pkd_reduction(reduction)
    s = F.normalize(student, p=2, dim=-1)
    t = F.normalize(teacher, p=2, dim=-1)
    sq = (s - t).pow(2)
    if reduction == "mean":
        return sq.mean()
    return sq.reshape(sq.shape[0], -1).sum(-1).mean()  # sum


def _token_weights(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The ``(batch, seq)`` mask shaped to broadcast over ``(batch, layers, seq)``."""
    return mask.to(like.dtype).unsqueeze(1).expand(like.shape[0], like.shape[1], -1)


@loss("cosine", [*VECTOR, *SEQUENCE])
def cosine(student: torch.Tensor, teacher: torch.Tensor, *, mask: torch.Tensor | None = None) -> torch.Tensor:
    dist = 1 - F.cosine_similarity(student, teacher, dim=-1, eps=1e-8)
    if student.dim() == 4 and mask is not None:  # (batch, layers, seq, dim): real tokens only
        w = _token_weights(mask, dist)
        return (dist * w).sum() / w.sum().clamp(min=1)
    return dist.mean()


def _attention_weights(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(batch, 1, 1, query, key) weights: 1 where both the query and the key are real tokens."""
    m = mask.to(like.dtype)
    return (m[:, :, None] * m[:, None, :])[:, None, None]


def _check_attention(student, teacher):
    if student.dim() != 5:
        raise TextDistillError(f"attention losses need attention maps (batch, layers, heads, query, key), "
                               f"got shape {tuple(student.shape)}")
    if student.shape[2] != teacher.shape[2]:
        raise TextDistillError(f"the student has {student.shape[2]} attention heads, the teacher "
                               f"{teacher.shape[2]}: attention maps can only be matched head to head")


@loss("attention_mse", ["attention"])
def attention_mse(student: torch.Tensor, teacher: torch.Tensor, *, mask: torch.Tensor | None = None) -> torch.Tensor:
    _check_attention(student, teacher)
    if mask is None:
        return F.mse_loss(student, teacher)
    w = _attention_weights(mask, student).expand_as(student)
    return ((student - teacher).pow(2) * w).sum() / w.sum().clamp(min=1)


@loss("attention_kl", ["attention"])
def attention_kl(student: torch.Tensor, teacher: torch.Tensor, *, mask: torch.Tensor | None = None) -> torch.Tensor:
    _check_attention(student, teacher)
    # padding keys have probability 0 for the teacher, so they add nothing to the sum
    kl = (torch.xlogy(teacher, teacher) - teacher * torch.log(student.clamp(min=1e-12))).sum(-1)
    if mask is None:
        return kl.mean()
    rows = mask.to(kl.dtype)[:, None, None, :].expand_as(kl)
    return (kl * rows).sum() / rows.sum().clamp(min=1)


def _gram(h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """FSP matrices between consecutive layers: (batch, layers, seq, dim) -> (batch, layers-1, dim, dim)."""
    if mask is not None:
        h = h * mask.to(h.dtype)[:, None, :, None]
        n = mask.to(h.dtype).sum(-1).clamp(min=1)[:, None, None, None]
    else:
        n = h.shape[2]
    return torch.einsum("bkld,bkle->bkde", h[:, :-1], h[:, 1:]) / n


@loss("fsp", SEQUENCE)
def fsp(student: torch.Tensor, teacher: torch.Tensor, *, mask: torch.Tensor | None = None) -> torch.Tensor:
    if student.shape[1] < 2:
        raise TextDistillError("fsp relates consecutive layers: map at least 2 layers")
    return F.mse_loss(_gram(student, mask), _gram(teacher, mask))


def _relation_loss(relation, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Huber loss between the student's and teacher's relations, per layer, averaged over layers."""
    return torch.stack([F.smooth_l1_loss(relation(student[:, k]), relation(teacher[:, k]))
                        for k in range(student.shape[1])]).mean()


def _pairwise_distances(x: torch.Tensor) -> torch.Tensor:
    """(batch, dim) -> (batch, batch) Euclidean distances, normalised by their off-diagonal mean."""
    d = torch.cdist(x.unsqueeze(0), x.unsqueeze(0)).squeeze(0)
    off = ~torch.eye(len(x), dtype=torch.bool, device=x.device)
    return d / d[off].mean().clamp(min=1e-12)


@loss("rkd_distance", VECTOR, width_free=True)
def rkd_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    if student.shape[0] < 2:
        return student.new_zeros(())
    return _relation_loss(_pairwise_distances, student, teacher)


def _angles(x: torch.Tensor) -> torch.Tensor:
    """(batch, dim) -> (batch, batch, batch): cos of the angle at j between i and k."""
    e = F.normalize(x.unsqueeze(0) - x.unsqueeze(1), p=2, dim=-1)  # e[j, i] = unit(x_i - x_j)
    return torch.bmm(e, e.transpose(1, 2))


@loss("rkd_angle", VECTOR, width_free=True)
def rkd_angle(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    if student.shape[0] < 3:
        return student.new_zeros(())
    return _relation_loss(_angles, student, teacher)


@loss("infonce", VECTOR, checks={"temperature": _check_t})
def infonce(student: torch.Tensor, teacher: torch.Tensor, *, temperature: float = 0.1) -> torch.Tensor:
    _check_t(temperature)
    s = F.normalize(student, p=2, dim=-1).transpose(0, 1)  # (layers, batch, dim)
    t = F.normalize(teacher, p=2, dim=-1).transpose(0, 1)
    logits = torch.bmm(s, t.transpose(1, 2)) / temperature  # (layers, batch, batch)
    target = torch.arange(s.shape[1], device=s.device).expand(s.shape[0], -1)
    return F.cross_entropy(logits.reshape(-1, s.shape[1]), target.reshape(-1))
