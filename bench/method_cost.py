#!/usr/bin/env python
"""Training cost of each distillation method, measured side by side in one run.

Every method's recipe builds its student (MiniLM-L6's first 3 layers), its terms and an AdamW
optimiser exactly as ``textdistill distill`` does, and takes training steps (forward, teacher,
terms, backward, optimiser) with one live MiniLM-L6 teacher on the same SST-2 batches. The
methods are timed in interleaved rounds (A, B, C, ..., A, B, C, ...) so that machine noise hits
all alike; the first round is a warm-up. Prints median ms per step and ratios to FT (no teacher)
and to PKD-Skip, and writes the figures as JSON.

    .venv/bin/python bench/method_cost.py --rounds 5 --steps 4 --json bench/results/method_cost.json
    .venv/bin/python bench/method_cost.py --teacher runs/teachers/minilm-sst2-20k/model --methods ft kd dml \\
        self-distill born-again kd-3teachers kd-other-tokenizer --other-teacher runs/teachers/mpnet-mrpc/model
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from textdistill.data.batching import encode, train_loader  # noqa: E402
from textdistill.data.readers import load_examples  # noqa: E402
from textdistill.data.tasks import get_task  # noqa: E402
from textdistill.models.loading import load_tokenizer  # noqa: E402
from textdistill.recipe import load_recipe  # noqa: E402
from textdistill.report import markdown_table, write_json  # noqa: E402
from textdistill.schemes import SCHEMES  # noqa: E402
from textdistill.train import _optimizer  # noqa: E402

METHODS = ["ft", "kd", "pkd-skip", "pkd-last", "ckd", "alp-kd", "rail-kd-l", "rail-kd-c", "tinybert", "fsp", "rkd",
           "codir"]
# teacher arrangements of recipes/kd.yaml (no recipe of their own): three live teachers averaged (the --teacher
# three times, as docs/results.md 5.4's three seeds of it), and a 12-layer teacher of another tokenizer
# (--other-teacher, e.g. an MPNet-12 classifier) that reads its own tokens of each batch
ARRANGEMENTS = {"kd-3teachers": "kd", "kd-other-tokenizer": "kd"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", default=None, help="fine-tuned SST-2 teacher folder (default: runs/results/teacher/model; "
                    "absent: exit with a message)")
    ap.add_argument("--methods", nargs="+", default=METHODS,
                    help=f"recipes/<name>.yaml, or a teacher arrangement of KD: {', '.join(ARRANGEMENTS)}")
    ap.add_argument("--other-teacher", help="kd-other-tokenizer's teacher: a classifier folder of another "
                    "tokenizer than MiniLM's (e.g. runs/teachers/mpnet-mrpc/model)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (the first is a warm-up)")
    ap.add_argument("--steps", type=int, default=4, help="training steps per method per round")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    task = get_task("sst2")
    teacher_name = args.teacher or str(ROOT / "runs/results/teacher/model")
    if not Path(teacher_name).is_dir():
        sys.exit(f"method_cost: {teacher_name}: no fine-tuned SST-2 teacher there; give --teacher FOLDER")
    for m in args.methods:
        if m not in ARRANGEMENTS and not (ROOT / "recipes" / f"{m}.yaml").is_file():
            sys.exit(f"method_cost: --methods {m}: no recipes/{m}.yaml and not one of {', '.join(ARRANGEMENTS)}")
    if "kd-other-tokenizer" in args.methods and not (args.other_teacher and Path(args.other_teacher).is_dir()):
        sys.exit("method_cost: --methods kd-other-tokenizer needs --other-teacher FOLDER (a classifier)")
    tokenizer = load_tokenizer("minilm-l6")
    data = encode(tokenizer, load_examples(task, ROOT / "data/sst2/train.tsv"), 128, False)
    batches = []
    for batch in train_loader(data, tokenizer, args.batch_size, seed=0):
        batches.append(batch)
        if len(batches) == args.steps:
            break
    tokens = statistics.mean(b["input_ids"].shape[1] for b in batches)

    # each method's participants as the training loop builds them (the offline scheme)
    examples = load_examples(task, ROOT / "data/sst2/train.tsv")
    setups = {}
    for method in args.methods:
        # the slice recipes' students as in docs/results.md §3; the schemes keep their recipes' models (DML: a
        # 6- and a 3-layer peer; self-distillation and born-again: all 6 layers)
        own = method in ("dml", "self-distill", "born-again")
        overrides = [("data.dir", str(ROOT / "data/sst2"))] + ([] if own else [("student.layers", "first:3"),
                                                                            ("student.init", "minilm-l6")])
        overrides += [("teacher", teacher_name)] if method not in ("ft", "dml", "self-distill") else []
        if method == "kd-3teachers":
            overrides += [("teacher", None), ("teachers", [{"model": teacher_name, "name": f"t{i}"} for i in (1, 2, 3)])]
        elif method == "kd-other-tokenizer":
            overrides += [("teacher", args.other_teacher), ("allow_weak_teacher", True)]  # (another task's head)
        recipe = load_recipe(str(ROOT / "recipes" / f"{ARRANGEMENTS.get(method, method)}.yaml"), overrides)
        scheme = SCHEMES[recipe.scheme](recipe, task, examples, examples)
        scheme.setup(lambda: torch.manual_seed(0))
        scheme.bind(scheme.modules())
        scheme.train()
        setups[method] = (scheme, _optimizer(scheme.modules().values(), recipe.train))

    def step(s, batch):
        scheme, optimizer = s
        loss = sum(w * v for w, v in scheme.loss_parts(batch).values())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    times = {m: [] for m in args.methods}
    for r in range(args.rounds):
        for method in args.methods:
            for batch in batches:
                t0 = time.perf_counter()
                step(setups[method], batch)
                if r > 0:
                    times[method].append(time.perf_counter() - t0)
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    med = {m: statistics.median(v) for m, v in times.items()}
    ref_ft, ref_pkd = med.get("ft"), med.get("pkd-skip")
    rows = [[m, f"{1000 * med[m]:.0f}", f"{med[m] / ref_ft:.2f}" if ref_ft else "",
             f"{med[m] / ref_pkd:.2f}" if ref_pkd else ""] for m in args.methods]
    print(f"\nMedian ms per training step, batch {args.batch_size}, {len(batches)} SST-2 batches of "
          f"~{tokens:.0f} tokens, {args.rounds - 1} timed rounds x {args.steps} steps, "
          f"{torch.get_num_threads()} threads; teacher {teacher_name}\n")
    print(markdown_table(["method", "ms / step", "x FT", "x PKD-Skip"], rows))
    if args.json:
        write_json(args.json, {"median_seconds": med, "samples": times, "batch_size": args.batch_size,
                               "mean_tokens": tokens, "teacher": teacher_name, "other_teacher": args.other_teacher,
                               "rounds": args.rounds, "steps": args.steps,
                               "threads": torch.get_num_threads()}, ROOT)


if __name__ == "__main__":
    main()
