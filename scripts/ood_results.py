#!/usr/bin/env python
"""Out-of-domain metrics of finished runs' models, kept beside their metrics in results/: every model folder of
each run (``model``, DML's peers ``l3/model``..., born-again's ``gen-1/model``...) evaluated on a task's split
(default: SST-2 models on IMDB's 2,000-review subset; ``--split test``: all 25,000), written to
``results/<run>/ood-by-model.json`` as ``{"l3/model": {"imdb": {"accuracy": ...}}, ...}``. Models already
evaluated on that set are skipped, so it can run after every grid step.
    .venv/bin/python scripts/ood_results.py runs/schemes/sst2/* runs/teachers/minilm-sst2-20k [--task imdb] [--split test]"""
import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from textdistill import TextDistillError  # noqa: E402
from textdistill.data.tasks import get_task  # noqa: E402
from textdistill.evaluate import evaluate_folder  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("runs", nargs="+", help="finished run folders under runs/")
ap.add_argument("--task", default="imdb")
ap.add_argument("--split", default="dev", help="dev (IMDB: the 2k subset) or test (IMDB: all 25k)")
ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "glue"))
args = ap.parse_args()
name = args.task if args.split == "dev" else f"{args.task}:{args.split}"
try:
    task = get_task(args.task)
    for run in map(Path, args.runs):
        if not run.resolve().is_relative_to((ROOT / "runs").resolve()):
            raise TextDistillError(f"{run}: not a run folder under runs/ (its metrics are kept in results/)")
        if not (run / "metrics.json").is_file():
            continue  # unfinished
        rel = run.resolve().relative_to((ROOT / "runs").resolve())
        out = ROOT / "results" / rel / "ood-by-model.json"
        done = json.loads(out.read_text()) if out.is_file() else {}
        for model in sorted({run / "model", *run.glob("*/model")}):
            key = str(model.relative_to(run))
            if not (model / "config.json").is_file() or name in done.get(key, {}):
                continue
            done.setdefault(key, {})[name] = evaluate_folder(model, task, args.split, args.data_dir)
            print(f"{rel}/{key}: {name} {done[key][name]}", flush=True)
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_suffix(".tmp")
            tmp.write_text(json.dumps(done, indent=2, sort_keys=True) + "\n")
            os.replace(tmp, out)
except TextDistillError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
