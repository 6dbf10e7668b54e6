#!/usr/bin/env python
"""Summarise results/bilstm-results (scripts/bilstm_results.sh, kept by scripts/keep_results.sh) as the markdown of
docs/results.md section 4.1: BiLSTM students (FT on labels, KD with logit MSE, KD + Tang-augmented copies) beside
the MiniLM-L6 teacher and the 3-layer transformer students of results/schemes (FT, KD). Dev metric x 100,
mean ± sd over seeds (number of seeds in brackets).
    .venv/bin/python scripts/aggregate_bilstm.py [results]"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from textdistill.report import markdown_table, mean_cell  # noqa: E402

root = Path(sys.argv[1] if len(sys.argv) > 1 else "results")
# column: (folder in bilstm-results, task folder in schemes, teacher, dev metric)
COLS = {"mrpc": ("mrpc", "mrpc", "minilm-mrpc", "f1"), "sst2 (20k rows)": ("sst2-20k", "sst2", "minilm-sst2-20k", "accuracy")}


def cell(folder: Path, name: str, metric: str) -> str:
    values = [100 * json.loads(f.read_text())["dev"][metric] for f in sorted(folder.glob(f"{name}-s*/metrics.json"))
              if f.parent.name.removeprefix(name + "-s").isdigit()]
    return mean_cell(values)


rows = [["teacher MiniLM-L6 (6 x 384, fine-tuned)"] + [
    f"{100 * json.loads(p.read_text())['dev'][m]:.2f}" if (p := root / "teachers" / t / "metrics.json").is_file() else ""
    for _, _, t, m in COLS.values()]]
for label, grid, name in (("3-layer transformer, FT", "schemes", "ft"), ("3-layer transformer, KD", "schemes", "kd"),
                          ("BiLSTM, labels only (FT)", "bilstm-results", "ft"),
                          ("BiLSTM, KD (logit MSE)", "bilstm-results", "kd"),
                          ("BiLSTM, KD on the rows + 5 Tang copies each", "bilstm-results", "kd-tang")):
    rows.append([label] + [cell(root / grid / (b if grid == "bilstm-results" else s), name, m)
                           for b, s, _, m in COLS.values()])
print(markdown_table(["student"] + [f"{c} ({v[3]})" for c, v in COLS.items()], rows))
