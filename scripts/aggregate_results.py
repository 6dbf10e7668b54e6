#!/usr/bin/env python
"""Summarise runs/results/*/metrics.json (written by scripts/sst2_results.sh) as markdown tables."""
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from textdistill.report import markdown_table, mean_std  # noqa: E402

root = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/results")
teacher = json.loads((root / "teacher" / "metrics.json").read_text())
t_acc = teacher["dev"]["accuracy"]
print(f"Teacher: MiniLM-L6 fine-tuned on {teacher['train_rows']:,} rows, {teacher['train_steps']} steps, "
      f"SST-2 dev accuracy {100 * t_acc:.2f} ({teacher['params_student']:,} parameters, "
      f"{teacher['train_seconds']:.0f} s)\n")
groups: dict[tuple[str, str], list[dict]] = {}
for f in sorted(root.glob("*/metrics.json")):
    m = re.fullmatch(r"(.+)-(20k|full)-s(\d+)", f.parent.name)
    if m:
        groups.setdefault((m.group(2), m.group(1)), []).append(json.loads(f.read_text()))
rows = []
order = {"ft": 0, "kd": 1, "pkd-skip": 2, "pkd-last": 3}
for (data, method), runs in sorted(groups.items(), key=lambda kv: (kv[0][0] != "20k", order.get(kv[0][1], 9))):
    accs = [r["dev"]["accuracy"] * 100 for r in runs]
    mean, std = mean_std(accs)
    rows.append([method.upper() if method != "pkd-skip" else "PKD-Skip", f"{runs[0]['train_rows']:,}",
                 len(runs), f"{mean:.2f} ± {std:.2f}", ", ".join(f"{a:.2f}" for a in accs),
                 f"{100 * mean / (100 * t_acc):.1f}%", runs[0]["train_steps"]])
# (no timing column: these runs shared the machine with other work; bench/method_cost.py compares costs)
print(markdown_table(["method", "train rows", "seeds", "dev acc (mean ± sd)", "per seed", "% of teacher",
                      "steps"], rows))
