"""Checks that keep a run from silently producing (or using) a broken model.

* :func:`check_finite_parameters` -- before a model is saved (and on a loaded teacher): every parameter
  finite, else one line naming the tensors and the likely cause (:func:`likely_nonfinite_cause`);
* :func:`check_finite_logits` -- dev / evaluation logits finite;
* :func:`teacher_near_chance` -- a teacher's main metric on a sample of the dev set against the best
  constant prediction (a checkpoint with a saved but never trained head scores like chance);
* :func:`check_max_length` / :func:`check_recipe_lengths` -- ``max_length`` within the positions a model
  has (else its embeddings fail with a shape error deep in transformers);
* :func:`check_student_depth` -- a student no deeper than its (deepest) teacher.

Each raises :class:`~textdistill.TextDistillError` (one line, exit code 2 in the CLI).
"""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import torch

from .. import TextDistillError

NONFINITE_CAUSES = ("a NaN or infinite label in the training data, non-finite teacher weights or outputs, "
                    "or too high a learning rate (train.lr)")


def nonfinite_parameters(model) -> list[str]:
    """Names of the parameters (and floating buffers) holding a NaN or an infinity."""
    named = list(model.named_parameters()) + [(n, b) for n, b in model.named_buffers() if b.is_floating_point()]
    return [name for name, t in named if t.is_floating_point() and not bool(torch.isfinite(t.detach()).all())]


def likely_nonfinite_cause(*, labels=None, teachers=(), lr: float | None = None) -> str:
    """The most likely reason a training went non-finite, from what the caller knows: NaN/inf labels, then
    non-finite teacher weights (``teachers``: models or ``(name, model)`` pairs), else the learning rate."""
    if labels is not None:
        bad = [i for i, y in enumerate(labels) if isinstance(y, float) and not math.isfinite(y)]
        if bad:
            return f"{len(bad)} training label(s) are NaN or infinite (first: row {bad[0] + 1})"
    for t in teachers:
        name, model = t if isinstance(t, tuple) else (getattr(getattr(t, "config", None), "_name_or_path", "?"), t)
        if model is not None and nonfinite_parameters(model):
            return f"the teacher {name} has non-finite weights"
    if lr is not None:
        return f"the learning rate train.lr={lr:g} is probably too high (try a tenth of it)"
    return f"likely {NONFINITE_CAUSES}"


def check_finite_parameters(model, what: str = "the trained model", cause: str | None = None) -> None:
    """Refuse (one line) a model with NaN/inf parameters, e.g. before it is saved."""
    bad = nonfinite_parameters(model)
    if not bad:
        return
    total = sum(1 for _ in model.named_parameters())
    raise TextDistillError(f"{what} has non-finite (NaN/inf) weights in {len(bad)} of {total} tensors "
                           f"(first: {bad[0]}); nothing was saved; {cause or f'likely {NONFINITE_CAUSES}'}")


def check_finite_logits(logits, what: str = "dev logits", cause: str | None = None) -> None:
    """Refuse NaN/inf logits (metrics on them are meaningless: argmax of NaN is class 0)."""
    arr = logits.detach().cpu().numpy() if isinstance(logits, torch.Tensor) else np.asarray(logits)
    finite = np.isfinite(arr).reshape(len(arr), -1).all(1) if arr.ndim else np.isfinite(arr)
    if np.all(finite):
        return
    rows = np.flatnonzero(~finite)
    raise TextDistillError(f"{what} are not finite (NaN/inf) on {len(rows)} of {len(arr)} rows (first: row "
                           f"{rows[0] + 1}); {cause or f'the model weights or the run went non-finite: likely {NONFINITE_CAUSES}'}")


# ----------------------------------------------------------------------------------------------- weak teachers
ROWS_CHECKED = 1000  # dev rows a teacher is scored on before it teaches (all of RTE, MRPC, SST-2: a 256-row
# sample put the real 0.56 RTE teacher at 0.543, on the 0.523 + 0.02 line)
# a teacher whose main metric is below chance + this margin is "near chance": a random head predicts (nearly) one
# class and scores the majority class's accuracy or less; real but weak teachers stay above (MiniLM-L6 on RTE:
# 0.56 against a majority class of 0.53)
WEAK_MARGIN = 0.02


def chance_score(task, labels) -> float:
    """The main metric of the best constant prediction on ``labels`` (majority class for accuracy, always-positive
    for F1, 0 for MCC); 0 for regression (Pearson/Spearman of a constant are undefined)."""
    from ..evaluate import METRICS

    if task.is_regression:
        return 0.0
    labels = np.asarray(labels)
    metric = METRICS[task.main_metric]
    scores = []
    for c in range(task.num_labels):
        try:
            s = metric(np.full_like(labels, c), labels)
        except (ValueError, ZeroDivisionError):
            continue
        scores.append(0.0 if s != s else s)
    return max(scores, default=0.0)


def teacher_near_chance(model, tokenizer, examples, task, rows: int = 256, seed: int = 0, max_length: int = 128,
                        batch_size: int = 64) -> tuple[float, float]:
    """``(score, chance)``: the teacher's main metric on a seeded sample of ``rows`` labelled dev examples, and
    the best constant prediction's on the same rows (:func:`chance_score`). A teacher is near chance when
    ``score < chance + WEAK_MARGIN`` (:func:`is_near_chance`): a checkpoint whose classification head was saved
    but never trained (random), or a fine-tuning that did not learn."""
    from ..data.batching import encode, eval_loader
    from ..evaluate import compute_metrics, predict

    if examples.labels is None:
        raise TextDistillError(f"{examples.source}: the teacher is checked on labelled dev rows; this file has none")
    keep = [i for i, y in enumerate(examples.labels) if y is not None]
    if len(keep) > rows:
        keep = sorted(random.Random(seed).sample(keep, rows))
    sample = examples.subset(keep)
    loader = eval_loader(encode(tokenizer, sample, max_length, task.is_regression), tokenizer, batch_size)
    was_training = model.training
    score = compute_metrics(task, predict(model, loader), sample.labels)[task.main_metric]
    model.train(was_training)
    return (0.0 if score != score else score), chance_score(task, sample.labels)


def is_near_chance(score: float, chance: float, margin: float = WEAK_MARGIN) -> bool:
    return score < chance + margin


def weak_teacher_message(name: str, task, score: float, chance: float, rows: int) -> str:
    return (f"teacher {name}: {task.main_metric} {score:.3f} on {rows} dev rows, chance is {chance:.3f}: it looks "
            f"never fine-tuned on {task.name} (a saved but untrained head?); fine-tune it first (textdistill "
            f"finetune), or accept it with --allow-weak-teacher")


# ------------------------------------------------------------------------------------------ lengths and depth
# models whose position ids start after the padding index (RoBERTa-style): max_position_embeddings - (pad + 1) usable
POSITION_OFFSET_TYPES = {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "mpnet", "longformer",
                         "data2vec-text", "ibert", "roberta-prelayernorm", "xmod"}


def _get(config, key):
    return config.get(key) if isinstance(config, dict) else getattr(config, key, None)


def usable_positions(config) -> int | None:
    """How many tokens a model reads (``max_position_embeddings``, less the padding offset of RoBERTa-style
    models); None when the config has no absolute positions."""
    n = _get(config, "max_position_embeddings")
    if not isinstance(n, int) or n <= 0:
        return None
    if _get(config, "model_type") in POSITION_OFFSET_TYPES:
        pad = _get(config, "pad_token_id")
        n -= (pad if isinstance(pad, int) else 1) + 1
    return n


def check_max_length(config, max_length: int, option: str, model: str) -> None:
    n = usable_positions(config)
    if n is not None and max_length > n:
        raise TextDistillError(f"{option}={max_length}: above what {model} can read ({n} tokens, "
                               f"max_position_embeddings={_get(config, 'max_position_embeddings')}); use at most {n}")


def _local_config(name: str) -> dict | None:
    from .loading import resolve_model_path

    try:
        path = Path(resolve_model_path(name))
        return json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else None
    except (TextDistillError, OSError, ValueError):
        return None  # loading it later reports the problem


def check_recipe_lengths(recipe) -> None:
    """``train.max_length`` against every local model the recipe names (teachers, student init, peers): run
    before anything is loaded or written."""
    names = [("teacher", recipe.teacher)] + [(f"teachers[{i}]", t.model) for i, t in enumerate(recipe.teachers)]
    if getattr(recipe.student, "arch", "transformer") == "transformer":
        names.append(("student.init", recipe.student.init))
    names += [(f"peers[{i}]", p.init) for i, p in enumerate(recipe.peers)]
    for key, name in names:
        if name and not str(name).startswith("@"):
            config = _local_config(name)
            if config is not None:
                check_max_length(config, recipe.train.max_length, "train.max_length", f"{key} {name}")


def check_student_depth(student_config, teachers, init: str) -> None:
    """Refuse a student deeper than its deepest teacher (``teachers``: ``(name, config)`` pairs)."""
    n_s = _get(student_config, "num_hidden_layers")
    depths = [(name, _get(c, "num_hidden_layers")) for name, c in teachers]
    depths = [(name, d) for name, d in depths if isinstance(d, int)]
    if not isinstance(n_s, int) or not depths:
        return
    name, deepest = max(depths, key=lambda x: x[1])
    if n_s > deepest:
        raise TextDistillError(f"student.layers: the student ({n_s} layers, from {init}) would be deeper than its "
                               f"teacher {name} ({deepest} layers); keep at most {deepest} layers "
                               f"(e.g. student.layers=every:2)")
