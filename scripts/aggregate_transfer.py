#!/usr/bin/env python
"""Summarise results/transfer (scripts/transfer_results.sh) as the markdown of docs/results.md section 6:
3-layer students on each transfer set, dev metric x 100, mean ± sd over seeds (seeds in brackets), the gap
of each method to KD on the training rows tested on the dev rows (textdistill significance, over the seeds
whose runs kept their dev predictions), and the seconds of generation and of training.
    .venv/bin/python scripts/aggregate_transfer.py [results/transfer] [results/teachers]"""
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from textdistill.data.tasks import get_task  # noqa: E402
from textdistill.report import markdown_table, mean_cell  # noqa: E402
from textdistill.significance import compare_seeds, holm, run_predictions  # noqa: E402

root = Path(sys.argv[1] if len(sys.argv) > 1 else "results/transfer")
troot = Path(sys.argv[2] if len(sys.argv) > 2 else "results/teachers")
SETS = {"sst2-2k": "minilm-sst2-2k", "sst2-20k": "minilm-sst2-20k", "mrpc": "minilm-mrpc", "rte": "minilm-rte"}
TASKS = {"sst2-2k": "sst2", "sst2-20k": "sst2", "mrpc": "mrpc", "rte": "rte"}
METHODS = [("FT (labels only)", "ft"), ("KD, training rows", "kd"), ("KD + Tang augmentation", "kd-tang"),
           ("KD + TinyBERT-style augmentation", "kd-tinybert-aug"), ("KD + adversarial rows", "kd-adversarial"),
           ("data-free KD (no real row)", "kd-datafree"), ("TinyBERT-style, one stage", "tinybert"),
           ("TinyBERT two-stage (general + task)", "tinybert-2stage")]


def runs(s: str, method: str) -> list[dict]:
    return [json.loads(f.read_text()) for f in sorted((root / s).glob(f"{method}-s*/metrics.json"))
            if f.parent.name.rsplit("-s", 1)[0] == method]


teachers = {s: json.loads((troot / t / "metrics.json").read_text()) for s, t in SETS.items()
            if (troot / t / "metrics.json").is_file()}
sets = [s for s in SETS if s in teachers and (root / s).is_dir()]
if not sets:
    sys.exit(f"no results under {root}")
metric = {s: teachers[s]["main_metric"] for s in sets}
rows = [["teacher (MiniLM-L6)"] + [f"{100 * teachers[s]['dev'][metric[s]]:.2f}" for s in sets]]
for label, m in METHODS:
    rows.append([label] + [mean_cell([100 * r["dev"][metric[s]] for r in runs(s, m)],
                                     [r.get("mixed_precision") for r in runs(s, m)]) for s in sets])
print(markdown_table(["transfer set / method"] + [f"{s} ({metric[s]})" for s in sets], rows))


def predictions(s: str, method: str) -> dict[int, Path]:
    """{seed: run folder} of a method's runs that kept their dev predictions."""
    out = {}
    for f in sorted((root / s).glob(f"{method}-s*/metrics.json")):
        name, seed = f.parent.name.rsplit("-s", 1)
        if name == method and seed.isdigit() and run_predictions(f.parent) is not None:
            out[int(seed)] = f.parent
    return out


gaps = {}  # (method, set) -> the comparison with KD on the training rows, seeds paired by number
for _, m in METHODS:
    for s in sets if m != "kd" else ():
        gap = compare_seeds(get_task(TASKS[s]), predictions(s, "kd"), predictions(s, m), resamples=4999)
        if gap:
            gaps[m, s] = gap
if gaps:
    keys = [k for k in gaps if gaps[k][1]["permutation"]]
    adjusted = dict(zip(keys, holm([gaps[k][1]["permutation"]["p"] for k in keys])))
    rows = []
    for label, m in METHODS:
        if m == "kd":
            continue
        cells = []
        for s in sets:
            if (m, s) not in gaps:
                cells.append("")
                continue
            seeds, r = gaps[m, s]
            cells.append(f"{100 * r['difference']:+.2f} (p {r['permutation']['p']:.3f}, Holm {adjusted[m, s]:.3f}; "
                         f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))})")
        if any(cells):  # (methods no seed of which kept predictions yet: left out)
            rows.append([label] + cells)
    print("\nEach method minus KD on the training rows, on the dev rows (paired permutation test over the seeds "
          "whose runs kept their dev predictions, Holm-adjusted over the table; `textdistill significance`):\n")
    print(markdown_table(["method"] + sets, rows))
rows = []
for label, m in METHODS:
    cells = []
    for s in sets:
        rs = runs(s, m)
        what = (f"{rs[0]['train_rows']:,} rows" if "train_rows" in rs[0] else  # two stages: each one's seconds
                " + ".join(f"{st['name']} {st['train_seconds']:.0f} s" for st in rs[0].get("stages", []))) if rs else ""
        cells.append(f"{statistics.median(r['train_seconds'] for r in rs):.0f} ({what})" if rs else "")
    rows.append([label] + cells)
print("\nTraining seconds (median over seeds; rows seen per epoch in brackets; one thread beside other jobs):\n")
print(markdown_table(["method"] + sets, rows))
gen = []
for f in sorted((root / "sets").glob("*/provenance.json")):
    p = json.loads(f.read_text())
    gen.append([f.parent.name, p["key"]["method"], f"{p['generated']:,}", f"{p['seconds']:.0f}"])
if gen:
    print("\nGenerated sets (seconds to generate):\n")
    print(markdown_table(["set", "rule", "rows", "seconds"], gen))
