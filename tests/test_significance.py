"""`textdistill significance`: the fast metrics against evaluate.METRICS, the tests against independent
computations (a hand-written randomisation loop, the normal approximation of a paired difference, McNemar's
binomial sum), and bad input."""
import json
import math

import numpy as np
import pytest

from conftest import fails_one_line
from textdistill.cli import main
from textdistill.data.tasks import get_task
from textdistill.evaluate import METRICS
from textdistill.significance import _metric, compare, holm


def _write(path, preds, gold, labels=("0", "1")):
    with open(path, "w") as f:
        for i, (p, y) in enumerate(zip(preds, gold)):
            value = (lambda v: float(v)) if labels is None else (lambda v: labels[int(v)])
            f.write(json.dumps({"row": i, "line": i + 2, "prediction": value(p), "label": value(y)}) + "\n")
    return str(path)


def _noisy(rng, gold, accuracy, classes=2):
    wrong = (gold + rng.integers(1, classes, len(gold))) % classes
    return np.where(rng.random(len(gold)) < accuracy, gold, wrong)


@pytest.mark.parametrize("task,name", [("sst2", "accuracy"), ("mrpc", "f1"), ("cola", "mcc"), ("mnli", "mcc"),
                                       ("mnli", "accuracy"), ("stsb", "pearson"), ("stsb", "spearman")])
def test_fast_metrics_equal_evaluates(task, name):
    t, rng = get_task(task), np.random.default_rng(1)
    for _ in range(5):
        if t.is_regression:  # (rounded: ties, which Spearman's ranks must average)
            y = np.round(rng.random(300) * 5, 1)
            p = np.round(y + rng.normal(0, 1, 300), 1)
        else:
            y = rng.integers(0, len(t.labels), 300)
            p = _noisy(rng, y, 0.7, len(t.labels))
        assert _metric(t, name)(p, y) == pytest.approx(METRICS[name](p, y), abs=1e-12)
    k = 3  # macro F1 (not a GLUE task's metric here): against scikit-learn on three classes
    y = rng.integers(0, k, 300)
    p = _noisy(rng, y, 0.6, k)
    assert _metric(get_task("mnli"), "macro_f1")(p, y) == pytest.approx(METRICS["macro_f1"](p, y), abs=1e-12)


@pytest.mark.filterwarnings("ignore")  # (scikit-learn warns about the ill-defined cases it answers with 0)
@pytest.mark.parametrize("name,p,y", [
    ("macro_f1", [0, 1, 1, 0, 0], [0, 1, 0, 0, 1]),  # class 2 of 3 in neither: averaged over the present ones
    ("macro_f1", [0, 2, 1, 0], [0, 1, 1, 0]),  # class 2 only predicted
    ("f1", [0, 0, 0, 0], [0, 1, 1, 0]),  # no positive prediction
    ("f1", [0, 1, 0, 0], [0, 0, 0, 0]),  # no positive label
    ("f1", [0, 0, 0], [0, 0, 0]),  # neither
    ("mcc", [1, 1, 1, 1], [0, 1, 1, 0]),  # one predicted class: a zero denominator
    ("mcc", [0, 2, 1, 1], [0, 2, 1, 2]),
])
def test_fast_metrics_at_the_edges(name, p, y):
    task = get_task("mnli" if name != "f1" else "mrpc")
    p, y = np.array(p), np.array(y)
    assert _metric(task, name)(p, y) == pytest.approx(METRICS[name](p, y), abs=1e-12)


def test_one_file_a_side_against_independent_computations(tmp_path):
    rng, n = np.random.default_rng(0), 2000
    gold = rng.integers(0, 2, n)
    pa, pb = _noisy(rng, gold, 0.80), _noisy(rng, gold, 0.81)
    a, b = _write(tmp_path / "a.jsonl", pa, gold), _write(tmp_path / "b.jsonl", pb, gold)
    r = compare(get_task("sst2"), [a], [b], resamples=4999)
    acc_a, acc_b = np.mean(pa == gold), np.mean(pb == gold)
    assert r["a"]["mean"] == pytest.approx(acc_a) and r["difference"] == pytest.approx(acc_b - acc_a)
    # McNemar: the exact two-sided binomial p of the discordant rows, summed by hand
    only_a, only_b = int(np.sum((pa == gold) & (pb != gold))), int(np.sum((pb == gold) & (pa != gold)))
    m = only_a + only_b
    p_hand = min(1.0, 2 * sum(math.comb(m, i) for i in range(min(only_a, only_b) + 1)) / 2 ** m)
    assert r["mcnemar"] == {"on": "right/wrong per row (accuracy)", "only_a_right": only_a, "only_b_right": only_b,
                            "p": pytest.approx(p_hand, rel=1e-9)}
    # the bootstrap interval against the normal approximation of a paired difference of proportions
    d = (only_b - only_a) / n
    sd = math.sqrt((m / n - d * d) / n)
    assert r["bootstrap"]["low"] == pytest.approx(d - 1.96 * sd, abs=0.25 * sd)
    assert r["bootstrap"]["high"] == pytest.approx(d + 1.96 * sd, abs=0.25 * sd)
    # the permutation test against a hand-written randomisation loop (swap each row's pair with probability 1/2)
    loop = np.random.default_rng(5)
    swaps = loop.random((4000, n)) < 0.5
    null = np.array([np.mean(np.where(s, pa, pb) == gold) - np.mean(np.where(s, pb, pa) == gold) for s in swaps])
    p_loop = (np.sum(np.abs(null) >= abs(d) - 1e-12) + 1) / (len(null) + 1)
    assert 0.15 < p_loop < 0.85  # (a gap the rows do not show: a halved or one-sided p would be far off)
    assert r["permutation"] == {"p": pytest.approx(p_loop, abs=0.04), "resamples": 4999}
    # the same predictions on both sides: no difference, nothing to find
    same = compare(get_task("sst2"), [a], [a], resamples=499)
    assert same["difference"] == 0 and same["permutation"]["p"] == 1.0 and same["mcnemar"]["p"] == 1.0
    assert same["bootstrap"]["low"] == same["bootstrap"]["high"] == 0  # (every resample's difference is 0)


def test_seeds_a_side(tmp_path):
    rng, n = np.random.default_rng(2), 500
    gold = rng.integers(0, 2, n)
    a = [_write(tmp_path / f"a{s}.jsonl", _noisy(rng, gold, 0.75), gold) for s in range(3)]
    b = [_write(tmp_path / f"b{s}.jsonl", _noisy(rng, gold, 0.95), gold) for s in range(3)]
    r = compare(get_task("mrpc"), a, b, resamples=999)
    f1 = lambda path: METRICS["f1"](*(np.array([int(json.loads(x)[k]) for x in open(path)])  # noqa: E731
                                      for k in ("prediction", "label")))
    per_a, per_b = [f1(p) for p in a], [f1(p) for p in b]
    assert r["a"]["per_file"] == pytest.approx(per_a) and r["b"]["per_file"] == pytest.approx(per_b)
    assert r["difference"] == pytest.approx(np.mean(per_b) - np.mean(per_a))
    assert r["permutation"]["p"] < 0.01 and r["bootstrap"]["low"] > 0 and "mcnemar" not in r
    # Welch's t by its formula
    va, vb = np.var(per_a, ddof=1), np.var(per_b, ddof=1)
    assert r["seeds_welch_t"]["t"] == pytest.approx((np.mean(per_b) - np.mean(per_a)) / math.sqrt(va / 3 + vb / 3))
    # several seeds a side swap together: a row's A predictions (all seeds) trade places with its B predictions.
    # Seeds that mostly agree make the joint swap's null wider than swapping each seed on its own would.
    base_a, base_b = _noisy(rng, gold, 0.80), _noisy(rng, gold, 0.82)
    near = lambda base: np.where(rng.random(n) < 0.03, 1 - base, base)  # noqa: E731
    sa, sb = np.stack([near(base_a) for _ in range(3)]), np.stack([near(base_b) for _ in range(3)])
    a3 = [_write(tmp_path / f"ja{s}.jsonl", sa[s], gold) for s in range(3)]
    b3 = [_write(tmp_path / f"jb{s}.jsonl", sb[s], gold) for s in range(3)]
    r = compare(get_task("sst2"), a3, b3, resamples=4999)
    acc = lambda preds: np.mean([np.mean(p == gold) for p in preds])  # noqa: E731
    d = acc(sb) - acc(sa)
    loop = np.random.default_rng(9)

    def p_of(joint: bool) -> float:
        null = []
        for _ in range(3000):
            swap = loop.random(n) < 0.5 if joint else loop.random((3, n)) < 0.5
            null.append(acc(np.where(swap, sb, sa)) - acc(np.where(swap, sa, sb)))
        return (np.sum(np.abs(null) >= abs(d) - 1e-12) + 1) / (len(null) + 1)

    p_joint, p_apart = p_of(True), p_of(False)
    assert abs(p_joint - p_apart) > 0.1  # (the two rules differ here, so the check below tells them apart)
    assert r["permutation"]["p"] == pytest.approx(p_joint, abs=0.04)
    # seeds whose metrics do not vary: no t (null, not NaN, in the JSON)
    same = compare(get_task("mrpc"), [a[0], a[0]], [b[0], b[0]], resamples=99)
    assert same["seeds_welch_t"] == {"t": None, "p": None}
    # unequal seed counts: the interval and the means, no permutation test
    r = compare(get_task("mrpc"), a[:2], b, resamples=99)
    assert r["permutation"] is None and r["a"]["mean"] == pytest.approx(np.mean(per_a[:2]))


def test_regression_predictions(tmp_path):
    rng, n = np.random.default_rng(3), 400
    gold = np.round(rng.random(n) * 5, 2)
    a = _write(tmp_path / "a.jsonl", gold + rng.normal(0, 1.5, n), gold, labels=None)
    b = _write(tmp_path / "b.jsonl", gold + rng.normal(0, 0.5, n), gold, labels=None)
    r = compare(get_task("stsb"), [a], [b], resamples=499)
    assert r["metric"] == "pearson" and r["difference"] > 0.2 and r["permutation"]["p"] < 0.01
    assert "mcnemar" not in r
    assert compare(get_task("stsb"), [a], [b], metric="spearman", resamples=99)["metric"] == "spearman"


def test_cli_on_evaluate_predictions_and_bad_input(tiny_teacher_run, tmp_path, capsys):
    model, data = tiny_teacher_run / "teacher" / "model", tiny_teacher_run / "sst2"
    a = tmp_path / "a.jsonl"
    assert main(["evaluate", "--model", str(model), "--task", "sst2", "--data-dir", str(data), "--predictions",
                 str(a)]) == 0
    rows = [json.loads(x) for x in a.read_text().splitlines()]
    for r in rows[:10]:  # B: the same model made right on its first ten rows
        r["prediction"] = r["label"]
    b = tmp_path / "b.jsonl"
    b.write_text("".join(json.dumps(r) + "\n" for r in rows))
    capsys.readouterr()
    assert main(["significance", "--task", "sst2", "--a", str(a), "--b", str(b), "--resamples", "999",
                 "--output", str(tmp_path / "s.json")]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result == json.loads((tmp_path / "s.json").read_text())
    fixed = result["mcnemar"]["only_b_right"]
    assert result["mcnemar"]["only_a_right"] == 0 and result["difference"] == pytest.approx(fixed / 100)
    assert "accuracy: B" in captured.err and "McNemar p" in captured.err
    # bad input: one line, exit code 2
    base = ["significance", "--task", "sst2", "--a", str(a), "--b"]
    short = tmp_path / "short.jsonl"
    short.write_text("".join(json.dumps(r) + "\n" for r in rows[:50]))
    fails_one_line([*base, str(short)], capsys, "50 rows")
    k = next(i for i, r in enumerate(rows) if r["label"] == "0")
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps({**r, "label": "1" if i == k else r["label"]}) + "\n"
                             for i, r in enumerate(rows)))
    fails_one_line([*base, str(other)], capsys, f"row {k}'s gold label differs")
    moved = tmp_path / "moved.jsonl"  # the same labels, another row order: refused by the rows' numbers
    moved.write_text("".join(json.dumps({**r, "row": r["row"] + 1 if i < 2 else r["row"]}) + "\n"
                             for i, r in enumerate(rows)))
    fails_one_line([*base, str(moved)], capsys, "not the same rows")
    numeric = tmp_path / "numeric.jsonl"  # class ids written as numbers are read as the labels they spell
    numeric.write_text("".join(json.dumps({**r, "prediction": int(r["prediction"]), "label": int(r["label"])})
                               + "\n" for r in rows))
    assert compare(get_task("sst2"), [str(b)], [str(numeric)], resamples=99)["difference"] == 0  # (B, in numbers)
    # a run's predictions as results/ keeps them (gzipped: scripts/keep_results.sh) read alike; a damaged one not
    import gzip

    zipped = tmp_path / "b.jsonl.gz"
    zipped.write_bytes(gzip.compress(b.read_bytes()))
    assert compare(get_task("sst2"), [str(b)], [str(zipped)], resamples=99)["difference"] == 0
    (tmp_path / "cut.jsonl.gz").write_bytes(zipped.read_bytes()[:40])
    fails_one_line([*base, str(tmp_path / "cut.jsonl.gz")], capsys, "cannot be read as predictions")
    nolabel = tmp_path / "nolabel.jsonl"
    nolabel.write_text(json.dumps({"row": 0, "prediction": "1"}) + "\n")
    fails_one_line([*base, str(nolabel)], capsys, "no gold 'label'")
    tsv = tmp_path / "p.tsv"
    tsv.write_text("index\tprediction\n0\t1\n")
    fails_one_line([*base, str(tsv)], capsys, "not a JSON line")
    fails_one_line([*base, str(tmp_path / "absent.jsonl")], capsys, "no such file")
    fails_one_line([*base, str(b), "--metric", "pearson"], capsys, "task sst2 reports accuracy")
    fails_one_line([*base, str(b), "--confidence", "1.5"], capsys, "between 0 and 1")
    mnli = tmp_path / "mnli.jsonl"
    mnli.write_text(json.dumps({"row": 0, "prediction": "maybe", "label": "1"}) + "\n")
    fails_one_line([*base, str(mnli)], capsys, "not task sst2's labels")


def test_holm_by_hand():
    # m = 4: sorted 0.01, 0.02, 0.03, 0.5 -> 0.04, 0.06, 0.06 (0.03 x 2, made non-decreasing), 0.5
    assert holm([0.03, 0.5, 0.01, 0.02]) == pytest.approx([0.06, 0.5, 0.04, 0.06])
    assert holm([0.04, 0.01]) == pytest.approx([0.04, 0.02]) and holm([0.9, 0.8]) == [1.0, 1.0] and holm([]) == []


def test_a_runs_predictions_are_found_where_runs_and_results_keep_them(tmp_path):
    from textdistill.significance import run_predictions

    plain, kept, chain, none = (tmp_path / n for n in ("plain", "kept", "chain", "none"))
    born, dml = tmp_path / "born-again", tmp_path / "dml"
    for d in (plain, kept, chain / "general", chain / "task", none, born / "gen-1", born / "gen-2", dml / "l6",
              dml / "l3"):
        d.mkdir(parents=True)
    for d in (born / "gen-1", born / "gen-2", dml / "l6", dml / "l3"):
        (d / "dev_predictions.jsonl.gz").write_bytes(b"")
    (born / "metrics.json").write_text(json.dumps({"generations": [{"name": "gen-1"}, {"name": "gen-2"}]}))
    (dml / "metrics.json").write_text(json.dumps({"peer_models": {"l6": {}, "l3": {}}}))  # (the run's dev: the last)
    (plain / "dev_predictions.jsonl").write_text("{}\n")
    (kept / "dev_predictions.jsonl.gz").write_bytes(b"")
    (chain / "task" / "dev_predictions.jsonl.gz").write_bytes(b"")
    (chain / "metrics.json").write_text(json.dumps({"links": [{"name": "general"}, {"name": "task"}]}))
    (none / "metrics.json").write_text("{}")
    assert run_predictions(plain) == plain / "dev_predictions.jsonl"
    assert run_predictions(kept) == kept / "dev_predictions.jsonl.gz"
    assert run_predictions(chain) == chain / "task" / "dev_predictions.jsonl.gz"  # the last link's
    assert run_predictions(born) == born / "gen-2" / "dev_predictions.jsonl.gz"
    assert run_predictions(dml) == dml / "l3" / "dev_predictions.jsonl.gz"
    assert run_predictions(none) is None and run_predictions(tmp_path / "absent") is None
    # significance takes run folders too
    from textdistill import TextDistillError
    from textdistill.significance import load_predictions

    (plain / "dev_predictions.jsonl").write_text(json.dumps({"row": 0, "prediction": "1", "label": "0"}) + "\n")
    assert load_predictions(str(plain), get_task("sst2"))[0].tolist() == [1]
    with pytest.raises(TextDistillError, match="a folder without dev predictions"):
        load_predictions(str(none), get_task("sst2"))


def test_compare_seeds_pairs_by_seed(tmp_path):
    from textdistill.significance import compare_seeds

    rng = np.random.default_rng(4)
    gold = rng.integers(0, 2, 200)
    files = {k: _write(tmp_path / f"{k}.jsonl", _noisy(rng, gold, 0.8), gold) for k in ("a1", "a3", "b2", "b3")}
    assert compare_seeds(get_task("sst2"), {1: files["a1"]}, {2: files["b2"]}) is None
    seeds, r = compare_seeds(get_task("sst2"), {1: files["a1"], 3: files["a3"]}, {2: files["b2"], 3: files["b3"]},
                             resamples=99)
    assert seeds == [3] and r["a"]["files"] == [files["a3"]] and r["b"]["files"] == [files["b3"]]
