"""Training with 1 vs 2 processes on this machine, side by side: recipes/kd.yaml (3-layer MiniLM student,
the teacher's outputs from one shared cache) for one epoch, started as one process (torch with 2 threads)
and as two processes (torchrun, gloo, 1 thread each), the same global batch of 32. Interleaved
(1, 2, 1, 2, ...), medians over ``--repeats``: steps/s and seconds of training (metrics.json), wall time of
the whole command, peak dev accuracy.

    .venv/bin/python bench/processes.py --teacher runs/demo/teacher/model [--rows 2000] [--repeats 2]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from textdistill.report import markdown_table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(procs: int, teacher: str, cache: Path, out: Path, rows: int, threads: int) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS=str(threads))
    launcher = [sys.executable] if procs == 1 else [str(BIN / "torchrun"), "--standalone", "--nproc_per_node",
                                                     str(procs)]
    args = ["distill", "-r", "recipes/kd.yaml", "-o", str(out), "--overwrite", "--teacher", teacher,
            "--set", f"teacher_cache.dir={cache}", "--set", f"data.train_rows={rows}", "--set", "train.epochs=1",
            "--set", "train.checkpoint=false"]
    t0 = time.perf_counter()
    subprocess.run([*launcher, "-m", "textdistill.cli", *args], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    m = json.loads((out / "metrics.json").read_text())
    return {"wall": wall, "train": m["train_seconds"], "steps": m["train_steps"],
            "steps_per_s": m["train_steps"] / m["train_seconds"], "acc": m["dev"]["accuracy"],
            "processes": m["processes"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "processes.md"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = tmp / "cache"
        subprocess.run([sys.executable, "-m", "textdistill.cli", "cache", "-r", "recipes/kd.yaml", "-o", str(cache),
                        "--teacher", args.teacher, "--set", f"data.train_rows={args.rows}"], cwd=ROOT, check=True,
                       env=dict(os.environ, HF_HUB_OFFLINE="1"), stdout=subprocess.DEVNULL)
        results: dict[int, list[dict]] = {1: [], 2: []}
        for r in range(args.repeats):
            for procs, threads in ((1, 2), (2, 1)):
                res = run(procs, args.teacher, cache, tmp / f"p{procs}", args.rows, threads)
                assert res["processes"] == procs
                results[procs].append(res)
                print(procs, json.dumps(res), flush=True)
        shutil.rmtree(cache)
    med = {p: {k: statistics.median(x[k] for x in v) for k in ("wall", "train", "steps", "steps_per_s", "acc")}
           for p, v in results.items()}
    lines = ["# Training with 1 vs 2 processes (2 CPU cores)", "",
             f"Written by `python bench/processes.py --rows {args.rows} --repeats {args.repeats}` "
             f"({time.strftime('%Y-%m-%d')}): recipes/kd.yaml, 3-layer MiniLM-L6 student, teacher outputs from one "
             f"cache, {args.rows} SST-2 rows, 1 epoch, global batch 32; interleaved runs, medians.", "",
             markdown_table(["processes", "threads each", "steps", "train s", "steps/s", "ratio", "wall s (command)",
                             "dev acc"],
                            [[p, threads, f"{med[p]['steps']:.0f}", f"{med[p]['train']:.1f}",
                              f"{med[p]['steps_per_s']:.2f}", f"{med[p]['steps_per_s'] / med[1]['steps_per_s']:.2f}x",
                              f"{med[p]['wall']:.1f}", f"{100 * med[p]['acc']:.2f}"] for p, threads in ((1, 2), (2, 1))])]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
