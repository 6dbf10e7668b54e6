"""Layer maps: which teacher layer each intermediate student layer learns from.

A map is a pure function ``(n_teacher, n_student, epoch, seed) -> list[int]``: entry ``j-1`` is the
1-based teacher layer for student layer ``j``, for ``j = 1 .. n_student - 1`` (the student's last
layer is taught through the logits, as in Patient KD). Layer 0 would be the embeddings.

Patient KD (Sun et al., 2019), teacher with N layers, student with M layers:

* ``pkd-skip``: every k-th layer, I(j) = floor(j * N / M). 12->6: 2,4,6,8,10; 12->3: 4,8.
  When M divides N this is exactly the paper's rule (every N/M-th layer).
* ``pkd-last``: the last M-1 layers below the top, I(j) = N - M + j. 12->6: 7..11; 12->3: 10,11.
"""
from __future__ import annotations

from .. import TextDistillError
from ..registry import Registry

MAPS = Registry("layer map")
register_map = MAPS.register


def _check(n_teacher: int, n_student: int):
    if n_student < 1 or n_teacher < 1:
        raise TextDistillError(f"layer counts must be positive (teacher {n_teacher}, student {n_student})")
    if n_student > n_teacher:
        raise TextDistillError(f"the student ({n_student} layers) is deeper than the teacher ({n_teacher} layers)")


@register_map("pkd-skip")
def pkd_skip(n_teacher: int, n_student: int, epoch: int = 0, seed: int = 0) -> list[int]:
    _check(n_teacher, n_student)
    return [j * n_teacher // n_student for j in range(1, n_student)]


@register_map("pkd-last")
def pkd_last(n_teacher: int, n_student: int, epoch: int = 0, seed: int = 0) -> list[int]:
    _check(n_teacher, n_student)
    return [n_teacher - n_student + j for j in range(1, n_student)]


def layer_map(strategy: str, n_teacher: int, n_student: int, epoch: int = 0, seed: int = 0) -> list[int]:
    mapping = MAPS.get_or_fail(strategy)(n_teacher, n_student, epoch=epoch, seed=seed)
    bad = [t for t in mapping if not 1 <= t <= n_teacher]
    if bad:
        raise TextDistillError(f"layer map '{strategy}' gave teacher layer {bad[0]}, out of range 1..{n_teacher}")
    return mapping
