"""The result grids' shell options (scripts/*_results.sh): a task or row name the script does not know is one
line naming it and exit code 2, before anything runs (the check needs no data and no model)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT


def run(script: str, where: Path, **env) -> subprocess.CompletedProcess:
    """The script run from a copy of scripts/ in ``where`` whose setup.sh does nothing: the check must come without
    a .venv (grid.sh sets one up first, which in a clean clone would install torch inside the test)."""
    shutil.copytree(ROOT / "scripts", where / "scripts")
    (where / "scripts" / "setup.sh").write_text("#!/usr/bin/env bash\n")
    return subprocess.run(["bash", str(where / "scripts" / script), "no-glue-dir", "1"], capture_output=True,
                          text=True, env={**os.environ, **env}, cwd=where, timeout=120)


@pytest.mark.parametrize("script,env,needle", [
    ("scheme_results.sh", {"TASKS": "sst2 qqp"}, "TASKS: unknown 'qqp' (this script knows: rte mrpc sst2)"),
    ("transfer_results.sh", {"TASKS": "cola"}, "TASKS: unknown 'cola' (this script knows: sst2-2k rte mrpc sst2-20k)"),
    ("scheme_results.sh", {"TASKS": "sst2", "PARTS": "multi dmll"},
     "PARTS: unknown 'dmll' (this script knows: ft kd dml born-again kd-bf16 self multi mpnet)"),
])
def test_unknown_names_fail_in_one_line(script, env, needle, tmp_path):
    r = run(script, tmp_path, **env)
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


def test_aggregate_schemes_tables_from_a_tree_of_runs(tmp_path):
    """docs/results.md section 5's tables from a made-up tree: each cell the mean ± sd of the seeds' figures
    (a DML cell its peer's, born-again's its generation's), the early-exit sweep averaged, the plot written,
    and --splice replacing both blocks of a document."""
    import json
    import statistics
    import sys

    def put(path, record):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))

    r, t = tmp_path / "schemes", tmp_path / "teachers"
    put(t / "minilm-sst2-20k" / "metrics.json", {"main_metric": "accuracy", "dev": {"accuracy": 0.87}})
    put(t / "minilm-mrpc" / "metrics.json", {"main_metric": "f1", "dev": {"f1": 0.86}})
    put(t / "mpnet-mrpc" / "metrics.json", {"main_metric": "f1", "dev": {"f1": 0.88}})
    for s in ("1", "2"):
        put(t / f"minilm-mrpc-s{s}" / "metrics.json", {"main_metric": "f1", "dev": {"f1": 0.85}})
    acc = {"ft": (0.84, 0.86), "kd": (0.85, 0.85)}
    for seed in (1, 2):
        for m, v in acc.items():
            put(r / "sst2" / f"{m}-s{seed}" / "metrics.json", {"dev": {"accuracy": v[seed - 1]}})
            put(r / "mrpc" / f"{m}-s{seed}" / "metrics.json", {"dev": {"f1": v[seed - 1] - 0.1}})
        put(r / "sst2" / f"dml-s{seed}" / "metrics.json",
            {"dev": {}, "peers": {"l3": {"accuracy": 0.80 + 0.02 * seed}, "l6": {"accuracy": 0.9}}})
        put(r / "sst2" / f"self-s{seed}" / "metrics.json",
            {"history": [{"exits": {str(k): {"accuracy": 0.7 + 0.02 * k + 0.01 * seed} for k in range(1, 7)}}]})
        put(r / "sst2" / f"self-s{seed}" / "exit-sweep.json",
            {"sweep": [{"threshold": 0, "accuracy": 0.88, "mean_layers": 6.0},
                       {"threshold": 0.5, "accuracy": 0.84 + 0.02 * seed, "mean_layers": 1.5 + seed}]})
        put(r / "mrpc" / f"born-again-s{seed}" / "metrics.json",
            {"generations": [{"dev": {"f1": 0.80}}, {"dev": {"f1": 0.81 + 0.02 * seed}}]})
        for m, v in (("kd-3teachers-average", 0.82), ("kd-3teachers-per-teacher", 0.83), ("kd-teacher-s1", 0.8),
                     ("kd-teacher-s2", 0.79), ("kd-mpnet", 0.78), ("kd-mpnet+minilm", 0.8 + 0.01 * seed)):
            put(r / "mrpc" / f"{m}-s{seed}" / "metrics.json", {"dev": {"f1": v}})
    put(r / "mrpc" / "kd-mpnet-s10x" / "metrics.json", {"dev": {"f1": 0.0}})  # (not a seed folder: ignored)
    script = [sys.executable, str(ROOT / "scripts" / "aggregate_schemes.py"), str(r), str(t)]
    out = subprocess.run(script + ["--plot", str(tmp_path / "exits.png")], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()

    def row(first):
        """The table row whose first cell begins with ``first`` (is ``first``, ending in "$")."""
        rows = [[c.strip() for c in x.strip().strip("|").split("|")] for x in lines if x.startswith("| ")]
        (found,) = [c for c in rows if (c[0] == first[:-1] if first.endswith("$") else c[0].startswith(first))]
        return found

    def cell(*values):
        return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f} ({len(values)})"

    assert row("FT, 3 layers")[1:3] == [cell(0.84, 0.86), cell(0.74, 0.76)]
    assert row("DML, 3-layer peer")[1] == cell(0.82, 0.84) and row("DML, 6-layer peer")[1] == cell(0.9, 0.9)
    assert row("dev accuracy")[1:] == [cell(0.7 + 0.02 * k + 0.01, 0.7 + 0.02 * k + 0.02) for k in range(1, 7)]
    assert row("0.5$") == ["0.5", cell(0.86, 0.88), "3.00"]
    assert row("generation 2")[1] == cell(0.83, 0.85)
    assert row("KD from 3 teachers, average")[1] == cell(0.82, 0.82)
    assert row("teacher MPNet-12")[1] == "88.00" and row("KD from MPNet-12 +")[1] == cell(0.81, 0.82)
    assert row("KD from MPNet-12$")[1] == cell(0.78, 0.78)
    assert (tmp_path / "exits.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = tmp_path / "doc.md"
    doc.write_text("# x\n<!-- aggregate_schemes_5.1 -->\nSTALE\n<!-- /aggregate_schemes_5.1 -->\nprose\n"
                   "<!-- aggregate_schemes 5.2+ -->\nSTALE\n<!-- /aggregate_schemes -->\nend\n")
    assert subprocess.run(script + ["--splice", str(doc)], capture_output=True, timeout=300).returncode == 0
    text = doc.read_text()
    assert "On SST-2 only, where the issue asks for the early-exit curve" in text  # (5.2's note is the script's)
    assert "STALE" not in text and text.index("| FT, 3 layers") < text.index("prose") < text.index("### 5.2")
    assert text.endswith("<!-- /aggregate_schemes -->\nend\n") and "### 5.1" not in text


def test_compare_teacher_says_whether_a_teacher_fine_tuned_again_is_the_kept_one(tmp_path):
    """scripts/compare_teacher.py: equal dev scores and losses within 1e-4 (relative): the kept one; another dev
    score or a loss further off: a WARNING naming both scores; no kept figures: said, not an error."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("compare_teacher", ROOT / "scripts" / "compare_teacher.py")
    ct = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ct)

    def write(root, dev, losses):
        d = tmp_path / root / "teachers" / "t"
        d.mkdir(parents=True, exist_ok=True)
        history = [{"epoch": i + 1, "step": 10 * (i + 1), "loss": {"task": v}, "dev": {"accuracy": dev}}
                   for i, v in enumerate(losses)]
        (d / "metrics.json").write_text(json.dumps({"dev": {"accuracy": dev}, "history": history}))

    assert "no kept figures" in (write("runs", 0.8, [0.5, 0.4]) or ct.main("t", str(tmp_path)))
    write("results", 0.8, [0.5, 0.400001])
    assert ct.main("t", str(tmp_path)).startswith("teacher t fine-tuned again: the kept dev scores exactly")
    write("results", 0.8, [0.5, 0.41])
    assert ct.main("t", str(tmp_path)).endswith("; its loss history differs): the students kept in results/ were "
                                                "taught by the kept teacher")
    write("results", 0.81, [0.5, 0.4])
    out = ct.main("t", str(tmp_path))
    assert out.startswith("WARNING") and "{'accuracy': 0.8} vs kept {'accuracy': 0.81}" in out
    with pytest.raises(ct.Refused, match="no such teacher run"):
        ct.main("u", str(tmp_path))
    (tmp_path / "results" / "teachers" / "t" / "metrics.json").write_text("{not json")
    for argv, needle in (([str(ROOT / "scripts" / "compare_teacher.py"), "t", str(tmp_path)], "not a metrics file"),
                         ([str(ROOT / "scripts" / "compare_teacher.py")], "usage: compare_teacher.py NAME")):
        r = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr, r.stderr
