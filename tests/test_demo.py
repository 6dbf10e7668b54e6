"""The README demo's verdict (the demo itself takes ~13 minutes and runs outside the tests): each distilled
student against FT on the dev rows, a gap counted only where the dev rows show it."""
import json

import numpy as np

from textdistill.demo import _gaps, _verdict


def _runs(tmp_path, accuracy: dict[str, float], n: int = 400):
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 2, n)
    folders, summary = {}, []
    for label, name in (("FT", "ft"), ("KD", "kd"), ("PKD-Skip", "pkd-skip"), ("TinyBERT + augmented", "tb")):
        pred = np.where(rng.random(n) < accuracy[label], gold, 1 - gold)
        folder = tmp_path / name
        folder.mkdir()
        (folder / "dev_predictions.jsonl").write_text("".join(
            json.dumps({"row": i, "prediction": str(p), "label": str(y)}) + "\n" for i, (p, y) in enumerate(zip(pred, gold))))
        folders[label] = folder
        summary.append({"model": label, "dev_accuracy": float(np.mean(pred == gold))})
    return folders, summary


def test_the_verdict_counts_only_what_the_dev_rows_show(tmp_path):
    folders, summary = _runs(tmp_path, {"FT": 0.78, "KD": 0.78, "PKD-Skip": 0.79, "TinyBERT + augmented": 0.93})
    gaps = _gaps(tmp_path, tmp_path, folders)  # (every run has its predictions: nothing is evaluated)
    assert gaps["TinyBERT + augmented"]["holm_p"] < 0.01 and gaps["KD"]["holm_p"] > 0.05
    assert all(gaps[x]["holm_p"] >= gaps[x]["permutation"]["p"] for x in gaps)
    text = _verdict(summary, gaps)
    acc = {r["model"]: 100 * r["dev_accuracy"] for r in summary}
    assert f"TinyBERT + augmented {acc['TinyBERT + augmented']:.2f} is " \
           f"{acc['TinyBERT + augmented'] - acc['FT']:.2f} points above FT (p 0.000, Holm 0.00" in text
    assert f"KD {acc['KD']:.2f} vs FT {acc['KD'] - acc['FT']:+.2f}" in text and "not shown on these rows" in text
    assert "the teacher pays off when it labels rows" in text
    # a gap significant alone but not over the three comparisons: suggestive, and said so
    gaps["TinyBERT + augmented"].update(permutation={"p": 0.03}, holm_p=0.09)
    text = _verdict(summary + [{"model": "Teacher (MiniLM-L6)", "dev_accuracy": 0.95}], gaps)
    assert "its gap is suggestive (p 0.030 alone) but not shown once the three comparisons are counted (Holm 0.09)" \
        in text
    # no student clear of the rows' noise: the verdict says so
    for name in ("ft", "kd", "pkd-skip", "tb"):
        (tmp_path / name / "dev_predictions.jsonl").unlink()
        (tmp_path / name).rmdir()
    folders, summary = _runs(tmp_path, {"FT": 0.80, "KD": 0.80, "PKD-Skip": 0.80, "TinyBERT + augmented": 0.81})
    text = _verdict(summary, _gaps(tmp_path, tmp_path, folders))
    assert "no student beats FT by more than the dev rows' noise" in text
