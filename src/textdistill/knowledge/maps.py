"""Layer maps: which teacher layer(s) each student layer learns from.

A map is a pure function ``(n_teacher, n_student, epoch, seed) -> list``; entry ``j-1`` is what
student layer ``j`` learns from (1-based layers; layer 0 is the embedding output, never mapped
implicitly -- name it in a term's ``pairs``). An entry is one teacher layer (an ``int``) or, for
maps that combine layers, a list of teacher layers. Unless a map says otherwise the student's
*intermediate* layers ``1 .. M-1`` are mapped (the last one is taught through the logits, as in
Patient KD) and the teacher's intermediate layers are ``1 .. N-1``.

Teacher with N layers, student with M layers:

* ``pkd-skip`` (Sun et al. 2019): I(j) = floor(j * N / M). 12->6: 2,4,6,8,10; 12->3: 4,8.
  When M divides N this is exactly the paper's rule (every N/M-th layer).
* ``pkd-last`` (Sun et al. 2019): I(j) = N - M + j. 12->6: 7..11; 12->3: 10,11.
* ``uniform`` (TinyBERT, Jiao et al. 2020): g(m) = m * N / M for *every* student layer m = 1..M
  (floor when M does not divide N); 12->4: 3,6,9,12. TinyBERT also maps embeddings 0 <- 0: add a
  term with ``pairs: [[0, 0]]``.
* ``ckd`` (Wu et al. 2020, "Why skip if you can combine"; proposed for NMT encoders, applied here to BERT-family
  classifiers with PKD's convention): the teacher's intermediate layers
  1..N-1 are cut into M-1 contiguous groups, one per student intermediate layer; every teacher
  layer is used exactly once. Uneven sizes: the first (N-1) mod (M-1) groups get one layer more
  (12->6: {1,2,3} {4,5} {6,7} {8,9} {10,11}). The term combines a group by averaging its vectors.
* ``alp`` (ALP-KD, Passban et al. 2021): every student intermediate layer learns from *all*
  teacher intermediate layers 1..N-1; the term weights them per example with
  softmax(h_s . h_t / sqrt(d)) on the tapped vectors and matches the weighted sum.
* ``rail`` (RAIL-KD, Haidar et al. 2022): before each epoch, M-1 distinct teacher intermediate
  layers drawn at random from 1..N-1, sorted, matched one to one. The draw depends only on
  (seed, epoch): the same seed gives the same draws, every epoch re-draws.
"""
from __future__ import annotations

import numpy as np

from .. import TextDistillError
from ..registry import Registry

MAPS = Registry("layer map")
register_map = MAPS.register
# how a term combines an entry that lists several teacher layers
COMBINE = {"ckd": "mean", "alp": "attention"}
RANDOM = {"rail"}  # maps whose draw changes with the epoch


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


@register_map("uniform")
def uniform(n_teacher: int, n_student: int, epoch: int = 0, seed: int = 0) -> list[int]:
    _check(n_teacher, n_student)
    return [m * n_teacher // n_student for m in range(1, n_student + 1)]


@register_map("ckd")
def ckd(n_teacher: int, n_student: int, epoch: int = 0, seed: int = 0) -> list[list[int]]:
    _check(n_teacher, n_student)
    if n_student == 1:
        return []
    groups = np.array_split(np.arange(1, n_teacher), n_student - 1)
    return [[int(t) for t in g] for g in groups]


@register_map("alp")
def alp(n_teacher: int, n_student: int, epoch: int = 0, seed: int = 0) -> list[list[int]]:
    _check(n_teacher, n_student)
    return [list(range(1, n_teacher)) for _ in range(1, n_student)]


@register_map("rail")
def rail(n_teacher: int, n_student: int, epoch: int = 0, seed: int = 0) -> list[int]:
    _check(n_teacher, n_student)
    rng = np.random.default_rng([seed, epoch])
    return sorted(int(t) for t in rng.choice(np.arange(1, n_teacher), size=n_student - 1, replace=False))


def layer_map(strategy: str, n_teacher: int, n_student: int, epoch: int = 0, seed: int = 0) -> list:
    mapping = MAPS.get_or_fail(strategy)(n_teacher, n_student, epoch=epoch, seed=seed)
    flat = [t for entry in mapping for t in (entry if isinstance(entry, list) else [entry])]
    bad = [t for t in flat if not 1 <= t <= n_teacher]
    if bad:
        raise TextDistillError(f"layer map '{strategy}' gave teacher layer {bad[0]}, out of range 1..{n_teacher}")
    return mapping
