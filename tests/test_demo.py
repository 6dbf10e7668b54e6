"""The README demo's verdict (the demo itself takes ~13 minutes and runs outside the tests): each distilled
student against FT on the dev rows, a gap counted only where the dev rows show it."""
import json

import numpy as np
import pytest

from textdistill.demo import DISTILLED, _gaps, _verdict


def _runs(tmp_path, accuracy: dict[str, float], n: int = 400):
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 2, n)
    folders, summary = {}, [{"model": "Teacher (MiniLM-L6)", "dev_accuracy": 0.95}]
    for label, name in (("FT", "ft"), ("KD", "kd"), ("PKD-Skip", "pkd-skip"), ("TinyBERT + augmented", "tb")):
        pred = np.where(rng.random(n) < accuracy[label], gold, 1 - gold)
        folder = tmp_path / name
        folder.mkdir()
        (folder / "dev_predictions.jsonl").write_text("".join(
            json.dumps({"row": i, "prediction": str(p), "label": str(y)}) + "\n" for i, (p, y) in enumerate(zip(pred, gold))))
        folders[label] = folder
        summary.append({"model": label, "dev_accuracy": float(np.mean(pred == gold))})
    return folders, summary


def test_the_gaps_are_tested_on_the_rows(tmp_path):
    folders, summary = _runs(tmp_path, {"FT": 0.78, "KD": 0.78, "PKD-Skip": 0.79, "TinyBERT + augmented": 0.93})
    gaps = _gaps(tmp_path, tmp_path, folders)  # (every run has its predictions: nothing is evaluated)
    assert gaps["TinyBERT + augmented"]["holm_p"] < 0.01 and gaps["KD"]["holm_p"] > 0.05
    assert all(gaps[x]["holm_p"] >= gaps[x]["permutation"]["p"] for x in gaps)
    text = _verdict(summary, gaps)
    acc = {r["model"]: 100 * r["dev_accuracy"] for r in summary}
    assert f"TinyBERT + augmented {acc['TinyBERT + augmented']:.2f} is " \
           f"{acc['TinyBERT + augmented'] - acc['FT']:.2f} points above FT (p 0.000, Holm 0.00" in text
    assert f"KD {acc['KD']:.2f} vs FT {acc['KD'] - acc['FT']:+.2f}" in text and "not shown on these rows" in text
    assert "TinyBERT + augmented beats FT on these rows" in text and "the teacher pays off through" in text


def _fake(gap: dict, raw: dict, holm: dict) -> tuple[list[dict], dict]:
    summary = [{"model": "Teacher (MiniLM-L6)", "dev_accuracy": 0.85}, {"model": "FT", "dev_accuracy": 0.80}]
    summary += [{"model": x, "dev_accuracy": 0.80 + gap[x] / 100} for x in DISTILLED]
    return summary, {x: {"permutation": {"p": raw[x]}, "holm_p": holm[x]} for x in DISTILLED}


@pytest.mark.parametrize("gap,raw,holm,says,never", [
    # KD shown above FT, TinyBERT not: the conclusion names KD, and does not say that no student beats FT
    ({"KD": 3.0, "PKD-Skip": 0.2, "TinyBERT + augmented": 1.0}, {"KD": 0.001, "PKD-Skip": 0.8, "TinyBERT + augmented": 0.2},
     {"KD": 0.003, "PKD-Skip": 0.8, "TinyBERT + augmented": 0.4},
     ["KD beats FT on these rows", "soft targets help even on the same"], ["no student beats FT", "add nothing"]),
    # significant alone, not over three: the largest such gap is called suggestive, whichever student it is
    ({"KD": 1.2, "PKD-Skip": 0.1, "TinyBERT + augmented": 1.05}, {"KD": 0.03, "PKD-Skip": 0.9, "TinyBERT + augmented": 0.04},
     {"KD": 0.09, "PKD-Skip": 0.9, "TinyBERT + augmented": 0.09},
     ["KD's gap (+1.20) is suggestive (p 0.030 alone)", "(Holm 0.09)"], ["It is the student that also learns"]),
    ({"KD": -0.5, "PKD-Skip": 0.1, "TinyBERT + augmented": 1.95}, {"KD": 0.5, "PKD-Skip": 0.9, "TinyBERT + augmented": 0.046},
     {"KD": 0.9, "PKD-Skip": 0.9, "TinyBERT + augmented": 0.14},
     ["TinyBERT + augmented's gap (+1.95) is suggestive", "It is the student that also learns"], ["beats FT"]),
    # nothing: said so; a student shown below FT: said too
    ({"KD": -3.0, "PKD-Skip": 0.1, "TinyBERT + augmented": 0.5}, {"KD": 0.001, "PKD-Skip": 0.9, "TinyBERT + augmented": 0.5},
     {"KD": 0.003, "PKD-Skip": 0.9, "TinyBERT + augmented": 0.9},
     ["no student beats FT by more than the dev rows' noise", "KD falls below FT on these rows"], ["suggestive"]),
])
def test_the_verdict_says_what_the_tests_show(gap, raw, holm, says, never):
    text = _verdict(*_fake(gap, raw, holm))
    for s in says:
        assert s in text, (s, text)
    for s in never:
        assert s not in text, (s, text)
