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
"""
from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

from .. import TextDistillError
from ..registry import Registry

LOSSES = Registry("loss")
register_loss = LOSSES.register


def get_loss(name: str, where: str = "loss"):
    return LOSSES.get_or_fail(name, where)


def loss_arguments(name: str) -> set[str]:
    params = inspect.signature(LOSSES[name]).parameters
    return {p for p, v in params.items() if v.kind == v.KEYWORD_ONLY}


def _check_t(temperature: float):
    if temperature <= 0:
        raise TextDistillError(f"temperature must be positive, got {temperature}")


@register_loss("kd_kl")
def kd_kl(student: torch.Tensor, teacher: torch.Tensor, *, temperature: float = 1.0) -> torch.Tensor:
    _check_t(temperature)
    log_p_s = F.log_softmax(student / temperature, dim=-1)
    p_t = F.softmax(teacher / temperature, dim=-1)
    return F.kl_div(log_p_s, p_t, reduction="batchmean") * temperature ** 2


@register_loss("soft_ce")
def soft_ce(student: torch.Tensor, teacher: torch.Tensor, *, temperature: float = 1.0,
            t2: bool = True) -> torch.Tensor:
    _check_t(temperature)
    p_t = F.softmax(teacher / temperature, dim=-1)
    loss = -(p_t * F.log_softmax(student / temperature, dim=-1)).sum(-1).mean()
    return loss * temperature ** 2 if t2 else loss


@register_loss("mse")
def mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all elements (regression logits, or hidden states)."""
    return F.mse_loss(student, teacher)


@register_loss("pkd_mse")
def pkd_mse(student: torch.Tensor, teacher: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    s = F.normalize(student, p=2, dim=-1)
    t = F.normalize(teacher, p=2, dim=-1)
    sq = (s - t).pow(2)
    if reduction == "mean":
        return sq.mean()
    if reduction == "sum":
        return sq.reshape(sq.shape[0], -1).sum(-1).mean()
    raise TextDistillError(f"pkd_mse: reduction must be 'mean' or 'sum', got '{reduction}'")
