"""The result grids' shell options (scripts/*_results.sh): a task or row name the script does not know is one
line naming it and exit code 2, before anything runs (the check needs no data and no model)."""
import os
import subprocess

import pytest
from conftest import ROOT


def run(script: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "scripts" / script), "no-glue-dir", "1"], capture_output=True,
                          text=True, env={**os.environ, **env}, cwd=ROOT, timeout=120)


@pytest.mark.parametrize("script,env,needle", [
    ("scheme_results.sh", {"TASKS": "sst2 qqp"}, "TASKS: unknown 'qqp' (this script knows: rte mrpc sst2)"),
    ("transfer_results.sh", {"TASKS": "cola"}, "TASKS: unknown 'cola' (this script knows: sst2-2k rte mrpc sst2-20k)"),
    ("scheme_results.sh", {"TASKS": "sst2", "PARTS": "multi dmll"},
     "PARTS: unknown 'dmll' (this script knows: ft kd dml born-again kd-bf16 self multi mpnet)"),
])
def test_unknown_names_fail_in_one_line(script, env, needle):
    r = run(script, **env)
    assert r.returncode == 2 and r.stderr.strip() == needle, (r.returncode, r.stderr)


def test_keep_results_keeps_metrics_and_gzipped_predictions_not_models(tmp_path):
    import gzip
    import shutil

    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "keep_results.sh", tmp_path / "scripts")
    run_dir = tmp_path / "runs" / "transfer" / "mrpc" / "kd-s1"
    (run_dir / "model").mkdir(parents=True)
    (run_dir / "model" / "config.json").write_text("{}")
    (run_dir / "metrics.json").write_text('{"dev": {"f1": 0.8}}')
    predictions = "".join(f'{{"row": {i}, "prediction": "1", "label": "0"}}\n' for i in range(50))
    (run_dir / "dev_predictions.jsonl").write_text(predictions)
    (tmp_path / "runs" / "transfer" / ".kd-s2.partial").mkdir()
    (tmp_path / "runs" / "transfer" / ".kd-s2.partial" / "metrics.json").write_text("{}")
    r = subprocess.run(["bash", "scripts/keep_results.sh", "transfer"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    kept = tmp_path / "results" / "transfer"
    assert sorted(str(p.relative_to(kept)) for p in kept.rglob("*") if p.is_file()) == [
        "mrpc/kd-s1/dev_predictions.jsonl.gz", "mrpc/kd-s1/metrics.json"]
    assert gzip.decompress((kept / "mrpc/kd-s1/dev_predictions.jsonl.gz").read_bytes()).decode() == predictions
    # kept again after the run changed (a run made again), and after a kept copy was damaged: the run's rows win
    gz = kept / "mrpc/kd-s1/dev_predictions.jsonl.gz"
    for change in (lambda: (run_dir / "dev_predictions.jsonl").write_text(predictions.replace('"1"', '"0"')),
                   lambda: gz.write_bytes(gz.read_bytes()[:20])):
        change()
        assert subprocess.run(["bash", "scripts/keep_results.sh", "transfer"], cwd=tmp_path, capture_output=True,
                              timeout=60).returncode == 0
        assert gzip.decompress(gz.read_bytes()).decode() == (run_dir / "dev_predictions.jsonl").read_text()
    assert not list(kept.rglob("*.tmp"))


def test_aggregate_transfer_tests_each_method_against_kd_on_the_rows(tmp_path):
    import gzip
    import json
    import sys

    import numpy as np

    rng = np.random.default_rng(0)
    gold = rng.integers(0, 2, 300)
    (tmp_path / "teachers" / "minilm-mrpc").mkdir(parents=True)
    (tmp_path / "teachers" / "minilm-mrpc" / "metrics.json").write_text(
        json.dumps({"main_metric": "f1", "dev": {"f1": 0.86}}))
    acc = {"kd": 0.70, "kd-tang": 0.90}
    f1 = {}
    for method in acc:
        for seed in (1, 2):
            d = tmp_path / "transfer" / "mrpc" / f"{method}-s{seed}"
            d.mkdir(parents=True)
            pred = np.where(rng.random(300) < acc[method], gold, 1 - gold)
            tp, fp, fn = [int(np.sum((pred == a) & (gold == b))) for a, b in ((1, 1), (1, 0), (0, 1))]
            f1[method, seed] = 2 * tp / (2 * tp + fp + fn)
            (d / "metrics.json").write_text(json.dumps({"dev": {"f1": f1[method, seed]}, "train_seconds": 1.0,
                                                        "train_rows": 300}))
            lines = "".join(json.dumps({"row": i, "prediction": str(p), "label": str(y)}) + "\n"
                            for i, (p, y) in enumerate(zip(pred, gold)))
            (d / "dev_predictions.jsonl.gz").write_bytes(gzip.compress(lines.encode()))
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "aggregate_transfer.py"), str(tmp_path / "transfer"),
                        str(tmp_path / "teachers")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    gap = 100 * (np.mean([f1["kd-tang", s] for s in (1, 2)]) - np.mean([f1["kd", s] for s in (1, 2)]))
    (row,) = [line for line in r.stdout.splitlines() if line.startswith("| KD + Tang augmentation") and "Holm" in line]
    assert f"{gap:+.2f} (p 0.000" in row and "seeds 1, 2" in row, row
