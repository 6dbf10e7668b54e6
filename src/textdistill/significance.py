"""Is model B better than model A on these rows, or is it noise? (``textdistill significance``)

Two kinds of noise separate two students' dev figures: the dev set's own sampling (which rows happened to be
in it) and training (the seed). For the first, with the rows' predictions of both (``textdistill evaluate
--predictions``, JSON lines with the gold labels):

- a **paired permutation test** (approximate randomisation; Riezler & Maxwell 2005, the test Dror et al. 2018
  recommend for metrics such as F1): under the null, A's and B's predictions of a row are exchangeable, so
  swapping them row by row at random gives the null distribution of the difference of the task's metric;
  ``scipy.stats.permutation_test`` with ``permutation_type='samples'``, two-sided;
- a **paired bootstrap** confidence interval of the difference (the same resampled rows for every file;
  ``scipy.stats.bootstrap``, BCa; percentiles where BCa is undefined, e.g. when every resample gives the same
  difference);
- for one file a side on a classification task, **McNemar's exact test** on the rows exactly one of the two
  gets right (``scipy.stats.binomtest``).

With several seeds a side (as many files for A as for B), each side's figure is the mean of its seeds' metrics,
a row's swap exchanges all of its seeds' predictions at once, and a **Welch t-test over the seeds' metrics**
(``scipy.stats.ttest_ind``) speaks to training noise -- with 3 seeds a weak test, reported, not relied on.
"""
from __future__ import annotations

import gzip
import json
import warnings
from pathlib import Path

import numpy as np
from scipy import stats

from . import TextDistillError

PREDICTIONS_FILE = "dev_predictions.jsonl"  # beside each model a run saves: its last dev evaluation, row by row
BATCH = 256  # resamples scipy holds at once: memory O(BATCH x rows), not O(resamples x rows) (QQP dev: 40k rows)


def load_predictions(path: str, task) -> tuple[np.ndarray, np.ndarray, list]:
    """``(predictions, gold, ids)`` of a ``--predictions`` JSON-lines file (or a run folder's dev predictions):
    class ids (or scores) in the file's order, and each line's ``(row, line)`` (None where absent) to check that two files hold the same rows."""
    p = Path(path)
    if p.is_dir():  # a run folder: its dev predictions (a chain's: its last link's)
        found = run_predictions(p)
        if found is None:
            raise TextDistillError(f"{path}: a folder without dev predictions (runs write dev_predictions.jsonl; "
                                   f"for a model folder, write them with textdistill evaluate --predictions)")
        p = found
    if not p.is_file():
        raise TextDistillError(f"{path}: no such file")
    preds, gold, ids = [], [], []
    index = {name: i for i, name in enumerate(task.labels)} if task.labels else None
    opener = gzip.open if p.suffix == ".gz" else open  # (results/ keeps a run's dev predictions gzipped)
    try:
        with opener(p, "rt", encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    raise TextDistillError(f"{path}:{n}: not a JSON line (write the file with textdistill evaluate "
                                           f"--predictions FILE.jsonl)") from None
                if not isinstance(row, dict) or "prediction" not in row:
                    raise TextDistillError(f"{path}:{n}: no 'prediction' (write the file with textdistill evaluate "
                                           f"--predictions FILE.jsonl)")
                if "label" not in row:
                    raise TextDistillError(f"{path}:{n}: no gold 'label' (predictions of a file without labels "
                                           f"cannot be compared)")
                try:
                    if index is None:
                        preds.append(float(row["prediction"]))
                        gold.append(float(row["label"]))
                    else:  # (a label as the task's files spell it; a class id written as a number will do too)
                        preds.append(index[str(row["prediction"])])
                        gold.append(index[str(row["label"])])
                except (KeyError, TypeError, ValueError):
                    what = f"labels {', '.join(task.labels)}" if index else "numbers"
                    raise TextDistillError(f"{path}:{n}: prediction {row['prediction']!r} / label {row['label']!r} "
                                           f"are not task {task.name}'s {what}") from None
                ids.append((row.get("row"), row.get("line")))
    except (OSError, EOFError, UnicodeDecodeError) as e:  # (a damaged .gz, a file that is not text)
        raise TextDistillError(f"{path}: cannot be read as predictions ({e})") from None
    if not preds:
        raise TextDistillError(f"{path}: no predictions")
    return np.asarray(preds), np.asarray(gold), ids


def run_predictions(folder) -> Path | None:
    """A run folder's dev predictions (runs/: dev_predictions.jsonl; results/: gzipped) -- for a chain of runs
    (stages, generations) its last link's, for mutual learning (DML) the peer whose figures are the run's (the
    last); None where the run wrote none (runs from before they were written)."""
    folder = Path(folder)
    for name in (PREDICTIONS_FILE, PREDICTIONS_FILE + ".gz"):
        if (folder / name).is_file():
            return folder / name
    m = json.loads((folder / "metrics.json").read_text()) if (folder / "metrics.json").is_file() else {}
    links = m.get("links") or m.get("stages") or m.get("generations")  # (a chain's summary names its links)
    if links:
        return run_predictions(folder / links[-1]["name"])
    if m.get("peer_models"):
        return run_predictions(folder / list(m["peer_models"])[-1])
    return None


def _metric(task, name: str):
    """The task metric ``name`` as a fast function of (predictions, gold): the same figures as
    evaluate.METRICS (scikit-learn/scipy; a test compares them), cheap enough to call thousands of times. Not
    scikit-learn's functions themselves: on 408 MRPC rows f1_score takes ~2.2 ms a call (input validation) and the
    confusion-matrix form here ~4 us, so a 9,999-resample test would take ~45 s instead of ~0.1 s (12-07, 1 thread)."""
    if name == "accuracy":
        return lambda p, y: float(np.mean(p == y))
    if name in ("f1", "macro_f1", "mcc"):
        k = len(task.labels)

        def confusion(p, y):
            return np.bincount(y * k + p, minlength=k * k).reshape(k, k).astype(float)  # [true, predicted]

        if name == "f1":  # binary F1 of the positive class (class 1), as scikit-learn's binary average
            if k != 2:
                raise TextDistillError(f"metric f1: the F1 of the positive class needs 2 labels, task {task.name} "
                                       f"has {k}")

            def f1(p, y):
                c = confusion(p, y)
                tp, fp, fn = c[1, 1], c[0, 1], c[1, 0]
                return float(2 * tp / (2 * tp + fp + fn)) if tp else 0.0
            return f1
        if name == "macro_f1":
            def macro_f1(p, y):  # the mean over the classes in the gold labels or the predictions (scikit-learn's)
                c = confusion(p, y)
                tp, denom = np.diag(c), c.sum(0) + c.sum(1)
                present = denom > 0
                return float(np.mean(2 * tp[present] / denom[present]))
            return macro_f1

        def mcc(p, y):  # the multiclass form (Gorodkin 2004), as scikit-learn computes it
            c = confusion(p, y)
            t, q, correct, s = c.sum(1), c.sum(0), np.trace(c), c.sum()
            denom = np.sqrt((s * s - q @ q) * (s * s - t @ t))
            return float((correct * s - q @ t) / denom) if denom else 0.0
        return mcc
    if name == "pearson":
        return lambda p, y: float(np.corrcoef(p, y)[0, 1])
    if name == "spearman":
        return lambda p, y: float(np.corrcoef(stats.rankdata(p), stats.rankdata(y))[0, 1])
    raise TextDistillError(f"metric {name}: no significance test for it")


def compare(task, a: list[str], b: list[str], *, metric: str | None = None, resamples: int = 9999,
            confidence: float = 0.95, seed: int = 0) -> dict:
    """The tests of the module's docstring for the prediction files ``a`` (model A, one per seed) against ``b``."""
    if not a or not b:
        raise TextDistillError("significance: give prediction files for both A and B")
    name = metric or task.main_metric
    if name not in task.metrics:
        raise TextDistillError(f"--metric {name}: task {task.name} reports {', '.join(task.metrics)}")
    if not 0 < confidence < 1:
        raise TextDistillError(f"--confidence {confidence}: must be between 0 and 1")
    f = _metric(task, name)
    loaded = {path: load_predictions(path, task) for path in dict.fromkeys([*a, *b])}
    first, (_, gold, first_ids) = a[0], loaded[a[0]]
    for path, (p, y, ids) in loaded.items():
        if len(y) != len(gold):
            raise TextDistillError(f"{path}: {len(y)} rows, {first} has {len(gold)}: not predictions of the same rows")
        if not np.array_equal(y, gold):
            row = int(np.flatnonzero(y != gold)[0])
            raise TextDistillError(f"{path}: row {row}'s gold label differs from {first}'s: not the same rows")
        for i, (mine, theirs) in enumerate(zip(ids, first_ids)):
            if any(m is not None and t is not None and m != t for m, t in zip(mine, theirs)):
                raise TextDistillError(f"{path}: its line {i + 1} is row/line {mine}, {first}'s is {theirs}: not "
                                       f"the same rows")
    A = np.stack([loaded[path][0] for path in a])
    B = np.stack([loaded[path][0] for path in b])
    n = len(gold)

    def diff(pa, pb, y):  # B's mean metric minus A's, over the seeds
        return np.mean([f(p, y) for p in pb]) - np.mean([f(p, y) for p in pa])

    per_a, per_b = [f(p, gold) for p in A], [f(p, gold) for p in B]
    out = {"task": task.name, "metric": name, "rows": n,
           "a": {"files": a, "per_file": per_a, "mean": float(np.mean(per_a))},
           "b": {"files": b, "per_file": per_b, "mean": float(np.mean(per_b))},
           "difference": float(np.mean(per_b) - np.mean(per_a))}
    rng = np.random.default_rng(seed)
    # the bootstrap: resample row indices, the same rows for every file and the gold labels
    def interval(method: str):
        with warnings.catch_warnings():  # (BCa on a degenerate distribution: NaN and a warning; then percentiles)
            warnings.simplefilter("ignore", stats.DegenerateDataWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            ci = stats.bootstrap((np.arange(n),), lambda i: diff(A[:, i], B[:, i], gold[i]), vectorized=False,
                                 n_resamples=resamples, batch=BATCH, confidence_level=confidence, method=method,
                                 random_state=np.random.default_rng(seed)).confidence_interval
        return float(ci.low), float(ci.high)

    (low, high), method = interval("BCa"), "BCa"
    if not (np.isfinite(low) and np.isfinite(high)):
        (low, high), method = interval("percentile"), "percentile"
    out["bootstrap"] = {"confidence": confidence, "low": low, "high": high, "method": method, "resamples": resamples}
    if len(a) == len(b):
        # the permutation test: a row's A and B predictions (all seeds) swap places; rows keep their positions
        table = np.concatenate([A, B], axis=1)  # (seeds, 2n): A's rows, then B's
        perm = stats.permutation_test((np.arange(n), np.arange(n) + n),
                                      lambda ia, ib: diff(table[:, ia], table[:, ib], gold),
                                      permutation_type="samples", vectorized=False, n_resamples=resamples,
                                      batch=BATCH, alternative="two-sided", random_state=rng)
        # (scipy runs every permutation where there are no more than resamples of them: then the exact test)
        out["permutation"] = {"p": float(perm.pvalue), "resamples": int(np.size(perm.null_distribution))}
    else:
        out["permutation"] = None  # (pairs need as many seeds a side)
    if len(a) == len(b) == 1 and not task.is_regression:
        right_a, right_b = A[0] == gold, B[0] == gold
        only_a, only_b = int(np.sum(right_a & ~right_b)), int(np.sum(right_b & ~right_a))
        out["mcnemar"] = {"on": "right/wrong per row (accuracy)", "only_a_right": only_a, "only_b_right": only_b,
                          "p": float(stats.binomtest(only_b, only_a + only_b).pvalue) if only_a + only_b else 1.0}
    if len(a) > 1 and len(b) > 1:
        with warnings.catch_warnings():  # (seeds with identical metrics: no spread, t undefined, scipy warns)
            warnings.simplefilter("ignore", RuntimeWarning)
            t = stats.ttest_ind(per_b, per_a, equal_var=False)
        spread = np.var(per_a) + np.var(per_b) > 0  # (seeds that agree to the last digit: t is not defined)
        finite = lambda x: float(x) if spread and np.isfinite(x) else None  # noqa: E731 - (JSON has no NaN)
        out["seeds_welch_t"] = {"t": finite(t.statistic), "p": finite(t.pvalue)}
    return out


def compare_seeds(task, a: dict, b: dict, **kw) -> tuple[list, dict] | None:
    """``compare`` over the seeds both sides have (``{seed: predictions file or run folder}``, paired by seed):
    ``(seeds, result)``, or None where they share no seed."""
    seeds = sorted(set(a) & set(b))
    return (seeds, compare(task, [str(a[s]) for s in seeds], [str(b[s]) for s in seeds], **kw)) if seeds else None


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjustment of several tests' p-values (family-wise error), in the given order:
    the i-th smallest p times (m - i + 1), made non-decreasing, capped at 1."""
    m = len(pvalues)
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda j: pvalues[j])):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def summary_line(r: dict) -> str:
    """One line for people: the difference, its interval and the tests' p-values."""
    m = r["metric"]
    parts = [f"{m}: B {100 * r['b']['mean']:.2f} vs A {100 * r['a']['mean']:.2f} "
             f"(B - A {100 * r['difference']:+.2f}; {100 * r['bootstrap']['confidence']:.0f} % bootstrap interval "
             f"{100 * r['bootstrap']['low']:+.2f} .. {100 * r['bootstrap']['high']:+.2f})"]
    if r["permutation"]:
        parts.append(f"permutation p {r['permutation']['p']:.4f}")
    if "mcnemar" in r:
        parts.append(f"McNemar p (right/wrong per row) {r['mcnemar']['p']:.4f} ({r['mcnemar']['only_a_right']} rows "
                     f"only A right, {r['mcnemar']['only_b_right']} only B)")
    if r.get("seeds_welch_t", {}).get("p") is not None:
        parts.append(f"seeds' Welch t p {r['seeds_welch_t']['p']:.4f}")
    return f"{r['task']}, {r['rows']} rows, " + "; ".join(parts)
