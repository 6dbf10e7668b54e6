#!/usr/bin/env python
"""Where a cached distillation step spends the time a student-only step does not: one run, side by side.

FT (labels only), KD and PKD-Skip from a teacher-output cache, and PKD-Skip with the live teacher are
built exactly as ``textdistill`` builds them (the offline scheme, the loop's AdamW), then take training
steps on the same SST-2 batches in interleaved rounds (the first a warm-up). Each step is split into
the loop's phases -- ``loss_parts`` (student forward, teacher outputs, terms), backward, gradient
clipping, optimizer + scheduler-free zero_grad -- and the teacher-output read alone is timed inside the
forward. Prints median ms per phase and the ratio of each step to the student-only step; ``--profile``
adds cProfile's top functions per configuration; ``--bf16`` times every configuration also with its step
under bf16 autocast (``train.mixed_precision=bf16``: the live teacher's forward too).

    .venv/bin/python bench/cached_step.py --teacher runs/demo/teacher/model --rounds 6 --steps 8 \\
        --json bench/results/cached_step.json
    .venv/bin/python bench/cached_step.py --teacher12 --configs "student only (FT)" "PKD-Skip, cache" \\
        --json bench/results/cached_step_12.json
    .venv/bin/python bench/cached_step.py --rows 67349 --data-dir ../shared/data/glue/SST-2 --cache-runtime onnx \\
        --configs "student only (FT)" "PKD-Skip, cache" --json bench/results/cached_step_full.json
    .venv/bin/python bench/cached_step.py --teacher12 --bf16 --configs "student only (FT)" "PKD-Skip, cache" \\
        "PKD-Skip, live teacher" --rounds 4 --steps 6 --rows 1000 --json bench/results/cached_step_bf16.json
"""
from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoConfig

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from textdistill.data.batching import train_loader  # noqa: E402
from textdistill.data.readers import load_examples  # noqa: E402
from textdistill.data.tasks import get_task  # noqa: E402
from textdistill.recipe import load_recipe  # noqa: E402
from textdistill.report import markdown_table, write_json  # noqa: E402
from textdistill.schemes import SCHEMES  # noqa: E402
from textdistill.train import _optimizer  # noqa: E402

CONFIGS = {"student only (FT)": ("ft", False), "KD, cache": ("kd", True), "PKD-Skip, cache": ("pkd-skip", True),
           "PKD-Skip, live teacher": ("pkd-skip", False)}
PHASES = ["teacher read", "loss_parts", "backward", "clip", "optimizer", "step"]


class Timed:
    """Wraps a teacher-output source and adds up the time spent in it."""

    def __init__(self, source):
        self.source, self.seconds = source, 0.0

    def __call__(self, *a, **k):
        t0 = time.perf_counter()
        out = self.source(*a, **k)
        self.seconds += time.perf_counter() - t0
        return out


def build(method: str, cached: bool, teacher: str, rows: int, cache_dir: Path, data_dir: str, runtime: str):
    overrides = [("data.dir", data_dir), ("student.layers", "first:3"), ("student.init", "minilm-l6"),
                 ("data.train_rows", rows)]
    if method != "ft":
        overrides += [("teacher", teacher), ("teacher_cache.dir", str(cache_dir / method) if cached else None),
                      ("teacher_cache.runtime", runtime)]
    recipe = load_recipe(str(ROOT / "recipes" / f"{method}.yaml"), overrides)
    task = get_task("sst2")
    scheme_cls = SCHEMES[recipe.scheme]
    train_ex, dev_ex = scheme_cls.load_data(recipe, task)
    scheme = scheme_cls(recipe, task, train_ex, dev_ex)
    scheme.setup(lambda: torch.manual_seed(0))
    scheme.bind(scheme.modules())
    scheme.train()
    timers = []
    for t in getattr(scheme, "teachers", []):
        t.source = Timed(t.source)
        timers.append(t.source)
    params = [p for m in scheme.modules().values() for p in m.parameters() if p.requires_grad]
    return scheme, _optimizer(scheme.modules().values(), recipe.train), params, timers, recipe.train.grad_clip


def step(setup, batch, times: dict | None, bf16: bool = False) -> None:
    scheme, optimizer, params, timers, clip = setup
    for t in timers:
        t.seconds = 0.0
    marks = [time.perf_counter()]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):  # as the loop with train.mixed_precision=bf16
        parts = scheme.loss_parts(batch)
    loss = sum(w * v.float() for w, v in parts.values())
    marks.append(time.perf_counter())
    loss.backward()
    marks.append(time.perf_counter())
    if clip:
        torch.nn.utils.clip_grad_norm_(params, clip)
    marks.append(time.perf_counter())
    optimizer.step()
    optimizer.zero_grad()
    marks.append(time.perf_counter())
    for name, value in parts.items():  # as the loop logs them
        value[1].item()
    if times is not None:
        times["teacher read"].append(sum(t.seconds for t in timers))
        for name, a, b in zip(PHASES[1:5], marks, marks[1:]):
            times[name].append(b - a)
        times["step"].append(time.perf_counter() - marks[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", default=str(ROOT / "runs/demo/teacher/model"), help="fine-tuned SST-2 teacher folder")
    ap.add_argument("--rows", type=int, default=4000, help="training rows (the cache covers them); 67349: all of "
                    "SST-2's (with --data-dir)")
    ap.add_argument("--data-dir", default=str(ROOT / "data/sst2"), help="SST-2 folder (train.tsv, dev.tsv)")
    ap.add_argument("--teacher12", action="store_true", help="teacher: a random BERT-base-shaped model (12 x 768, "
                    "as bench/compare.py --teacher12), for speed only")
    ap.add_argument("--cache-runtime", choices=["torch", "onnx"], default="torch",
                    help="teacher_cache.runtime of the cache build (the steps are the same)")
    ap.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    ap.add_argument("--rounds", type=int, default=6, help="interleaved rounds (the first is a warm-up)")
    ap.add_argument("--steps", type=int, default=8, help="steps per configuration per round")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--profile", action="store_true", help="print cProfile's top functions per configuration")
    ap.add_argument("--bf16", action="store_true", help="each configuration also with its step under bf16 autocast "
                    "(train.mixed_precision=bf16), interleaved with the fp32 one")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        if args.teacher12:
            from compare import random_bert_base

            os.environ["TEXTDISTILL_ALLOW_WEAK_TEACHER"] = "1"  # (random weights: for speed only)
            args.teacher = str(random_bert_base(Path(tmp) / "teacher12"))
        if not Path(args.teacher).is_dir():
            sys.exit(f"cached_step: {args.teacher}: no fine-tuned SST-2 teacher there; give --teacher FOLDER")
        configs = {name: CONFIGS[name] for name in CONFIGS if name in args.configs}
        setups = {name: build(m, c, args.teacher, args.rows, Path(tmp), args.data_dir,
                                     args.cache_runtime) for name, (m, c) in configs.items()}
        if args.bf16:  # (the same modules: fp32 and bf16 steps alternate on one model, as rounds do)
            setups = {k: v for name, setup in setups.items() for k, v in ((name, setup), (f"{name}, bf16", setup))}
            configs = {name: None for name in setups}
        teacher_layers = AutoConfig.from_pretrained(args.teacher).num_hidden_layers
        scheme = next(iter(setups.values()))[0]
        batches = []
        for batch in train_loader(scheme.train_set, scheme.tokenizer, 32, seed=0):
            batches.append(batch)
            if len(batches) == args.steps:
                break
        times = {name: {p: [] for p in PHASES} for name in configs}
        profiles = {name: cProfile.Profile() for name in configs}
        for r in range(args.rounds):
            for name, setup in setups.items():
                prof = profiles[name] if args.profile and r > 0 else None
                for batch in batches:
                    if prof:
                        prof.enable()
                    step(setup, batch, times[name] if r > 0 else None, bf16=name.endswith(", bf16"))
                    if prof:
                        prof.disable()
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    med = {name: {p: statistics.median(v) for p, v in t.items()} for name, t in times.items()}
    ref = med[next(iter(med))]["step"]
    rows = [[name] + [f"{1000 * m[p]:.1f}" for p in PHASES] + [f"{m['step'] / ref:.3f}"] for name, m in med.items()]
    tokens = statistics.mean(b["input_ids"].shape[1] for b in batches)
    print(f"\nMedian ms per phase, batch 32, {len(batches)} SST-2 batches of ~{tokens:.0f} tokens (length-grouped), "
          f"{args.rounds - 1} timed rounds, {torch.get_num_threads()} threads; {args.rows:,} training rows in the "
          f"cache, a {teacher_layers}-layer teacher\n")
    print(markdown_table(["configuration"] + PHASES + [f"x {next(iter(med))} step"], rows))
    if args.profile:
        for name, prof in profiles.items():
            s = io.StringIO()
            pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(12)
            print(f"\n--- {name}: top functions by own time\n" + "\n".join(s.getvalue().splitlines()[6:22]))
    if args.json:
        write_json(args.json, {"median_seconds": med, "samples": times, "mean_tokens": tokens,
                               "threads": torch.get_num_threads(), "rows": args.rows,
                               "teacher_layers": teacher_layers}, ROOT)


if __name__ == "__main__":
    main()
