#!/usr/bin/env python
"""The PKD hyper-parameter grid with one teacher cache vs with the live teacher, side by side in one run.

Writes two suite files that differ only in ``cache: true/false`` -- PKD-Skip on one task, the Patient KD
paper's grid (T in {5, 10, 20}, alpha in {0.2, 0.5, 0.7}, beta in {10, 100, 500, 1000}: 36 points) or its
corners (``--points 4``: T in {5, 20}, beta in {10, 1000}, alpha 0.5) -- runs each with ``textdistill suite``
and reports the wall time of each grid (the cache grid includes building the cache once), seconds per run,
their ratio, and the best point of each (the two must rank alike: same losses).

    .venv/bin/python bench/grid_cost.py --teacher runs/teachers/minilm-mrpc/model --task mrpc \\
        --data-dir ../shared/data/glue --points 4 --epochs 1 --json bench/results/grid_cost_mrpc.json
    .venv/bin/python bench/grid_cost.py --teacher runs/teachers/mpnet-rte/model --task rte \\
        --set student.init=mpnet-12 --student-layers every:4 --points 4 --epochs 1 \\
        --json bench/results/grid_cost_rte_mpnet.json
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from textdistill.report import markdown_table, write_json  # noqa: E402

GRIDS = {36: {"terms.ds.args.temperature": [5, 10, 20],
              "hard_weight,terms.ds.weight": [[0.8, 0.2], [0.5, 0.5], [0.3, 0.7]],
              "terms.pt.weight": [10, 100, 500, 1000]},
         4: {"terms.ds.args.temperature": [5, 20], "terms.pt.weight": [10, 1000]}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", required=True, help="the fine-tuned teacher folder")
    ap.add_argument("--task", default="mrpc")
    ap.add_argument("--data-dir", default="../shared/data/glue")
    ap.add_argument("--points", type=int, choices=sorted(GRIDS), default=4)
    ap.add_argument("--epochs", type=float, default=3)
    ap.add_argument("--student-layers", default="every:2")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a recipe override for every run of both grids (YAML value), e.g. student.init=mpnet-12")
    ap.add_argument("--json")
    args = ap.parse_args()
    extra = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            sys.exit(f"grid_cost: --set {item}: expected KEY=VALUE")
        extra[key] = yaml.safe_load(value)
    results = {}
    with tempfile.TemporaryDirectory(prefix="td-grid-") as tmp:
        for cache in (True, False):
            name = "cache" if cache else "live"
            suite = {"out": str(Path(tmp) / name), "data_dir": str(Path(args.data_dir).resolve()), "seeds": [1],
                     "runs": [{"name": "pkd-skip", "recipe": str(ROOT / "recipes/pkd-skip.yaml"),
                               "tasks": {args.task: str(Path(args.teacher).resolve())}, "cache": cache,
                               "set": {"train.epochs": args.epochs, "student.layers": args.student_layers, **extra},
                               "grid": GRIDS[args.points]}]}
            path = Path(tmp) / f"{name}.yaml"
            path.write_text(yaml.safe_dump(suite))
            t0 = time.perf_counter()
            res = subprocess.run([str(ROOT / ".venv/bin/textdistill"), "suite", str(path)], capture_output=True,
                                 text=True)
            wall = time.perf_counter() - t0
            if res.returncode:
                sys.exit(f"grid_cost: the {name} grid failed:\n" + "\n".join(res.stderr.splitlines()[-15:]))
            metrics = [json.loads(p.read_text()) | {"run": p.parent.name}
                       for p in sorted((Path(tmp) / name).glob(f"{args.task}/*/metrics.json"))]
            best = max(metrics, key=lambda m: m["dev"][m["main_metric"]])
            results[name] = {"wall_seconds": wall, "runs": len(metrics),
                             "train_seconds": [m["train_seconds"] for m in metrics],
                             "dev": [m["dev"][m["main_metric"]] for m in metrics],
                             "best": {"dev": best["dev"][best["main_metric"]], "run": best["run"]}}
            print(json.dumps({name: results[name]}), file=sys.stderr)
    c, v = results["cache"], results["live"]
    rows = [[name, r["runs"], f"{r['wall_seconds']:.0f}", f"{r['wall_seconds'] / r['runs']:.0f}",
             f"{r['wall_seconds'] / v['wall_seconds']:.2f}", f"{100 * r['best']['dev']:.2f} ({r['best']['run']})"]
            for name, r in results.items()]
    print(f"\nPKD-Skip grid on {args.task}: {args.points} points, {args.epochs:g} epochs, "
          f"student {args.student_layers}{''.join(f', {k}={v}' for k, v in extra.items())}, "
          f"teacher {args.teacher}\n")
    print(markdown_table(["grid", "runs", "wall s", "s per run", "x live grid", "best point (dev)"], rows))
    print(f"\ncache grid / live grid: {c['wall_seconds'] / v['wall_seconds']:.2f}")
    if args.json:
        write_json(args.json, {"args": vars(args), "results": results}, ROOT)


if __name__ == "__main__":
    main()
