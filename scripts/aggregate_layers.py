#!/usr/bin/env python
"""Summarise runs/layers/<task>/*/metrics.json (written by scripts/layer_results.sh) as markdown tables:
the dev metric of every method on every task (mean ± sd over seeds, x 100) and the training seconds
per epoch (median over seeds)."""
import json
import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from textdistill.report import markdown_table, mean_cell, mean_std  # noqa: E402

root = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/layers")
TASKS = ["sst2", "mrpc", "rte", "cola", "stsb"]
METHODS = ["ft", "kd", "pkd-skip", "pkd-last", "ckd", "alp-kd", "rail-kd-l", "rail-kd-c", "tinybert", "fsp", "rkd",
           "codir"]
runs: dict[tuple[str, str], list[dict]] = {}
teachers: dict[str, dict] = {}
for task in TASKS:
    t = root / task / "teacher" / "metrics.json"
    if task == "sst2" and not t.exists():
        t = Path("runs/results/teacher/metrics.json")
    if t.exists():
        teachers[task] = json.loads(t.read_text())
    for f in sorted((root / task).glob("*/metrics.json")):
        m = re.fullmatch(r"(.+)-s(\d+)", f.parent.name)
        if m:
            runs.setdefault((task, m.group(1)), []).append(json.loads(f.read_text()))
tasks = [t for t in TASKS if t in teachers]
if not tasks:
    sys.exit(f"no results under {root}")


def metric(m: dict) -> float:
    return 100 * m["dev"][m["main_metric"]]


# last column: the mean over tasks of the per-task means (GLUE-style score), only for a method with every task
header = ["method"] + [f"{t} ({teachers[t]['main_metric']})" for t in tasks] + ["mean over tasks"]
rows = [["teacher (6 layers)"] + [f"{metric(teachers[t]):.2f}" for t in tasks]
        + [f"{statistics.mean(metric(teachers[t]) for t in tasks):.2f}"]]
for method in METHODS:
    cells, means = [], []
    for t in tasks:
        rs = runs.get((t, method), [])
        if not rs:
            cells.append("")
            continue
        means.append(mean_std([metric(r) for r in rs])[0])
        cells.append(mean_cell([metric(r) for r in rs]))
    if any(cells):
        rows.append([method] + cells + [f"{statistics.mean(means):.2f}" if len(means) == len(tasks) else ""])
print("Dev metric x 100, mean ± sd over seeds (number of seeds in brackets):\n")
print(markdown_table(header, rows))
rows = []
for method in METHODS:
    cells = []
    for t in tasks:
        rs = runs.get((t, method), [])
        cells.append(f"{statistics.median(r['train_seconds'] / len(r['history']) for r in rs):.0f}" if rs else "")
    if any(cells):
        rows.append([method] + cells)
print("\nTraining seconds per epoch (median over seeds; wall clock on a shared 2-core machine):\n")
print(markdown_table(["method"] + tasks, rows))
print("\nTrain rows: " + ", ".join(f"{t} {next(iter(r for (tt, _), r in runs.items() if tt == t))[0]['train_rows']:,}"
                                  for t in tasks if any(tt == t for tt, _ in runs)))
