#!/usr/bin/env python
"""An unlabelled text corpus for general distillation (recipes/tinybert-2stage.yaml): every sentence of the
GLUE *train* files beside the repo (both sides of pair tasks), one per line, de-duplicated, in a seeded
random order. Dev and test files are never read (they are what the students are evaluated on), nor IMDB and
PAWS (only their evaluation splits are here); --exclude drops a task (e.g. the one being distilled).
    .venv/bin/python scripts/make_corpus.py ../shared/data/glue runs/corpus/general.txt --exclude SST-2"""
import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from textdistill import TextDistillError  # noqa: E402
from textdistill.data.readers import load_examples, resolve_file  # noqa: E402
from textdistill.data.tasks import get_task  # noqa: E402
from textdistill.files import write_text_atomic  # noqa: E402

TASKS = {"CoLA": "cola", "SST-2": "sst2", "MRPC": "mrpc", "STS-B": "stsb", "QQP": "qqp", "MNLI": "mnli",
         "QNLI": "qnli", "RTE": "rte", "WNLI": "wnli"}

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("glue")
ap.add_argument("output")
ap.add_argument("--exclude", action="append", default=[], choices=sorted(TASKS))
ap.add_argument("--seed", type=int, default=0)
args = ap.parse_args()
seen, counts = {}, {}
for folder, name in TASKS.items():
    if folder in args.exclude:
        continue
    task = get_task(name)
    try:
        ex = load_examples(task, resolve_file(task, "train", args.glue))
    except TextDistillError as e:
        print(f"skip {folder}: {e}", file=sys.stderr)
        continue
    texts = ex.text_a + (ex.text_b or [])
    counts[folder] = 0
    for t in texts:
        t = " ".join(t.split())
        if t and t not in seen:
            seen[t] = None
            counts[folder] += 1
lines = list(seen)
random.Random(args.seed).shuffle(lines)
out = Path(args.output)
out.parent.mkdir(parents=True, exist_ok=True)
write_text_atomic(out, "\n".join(lines) + "\n")  # (whole or not at all: scripts test whether it exists)
print(f"{out}: {len(lines):,} lines, {sum(len(x.split()) for x in lines):,} words ("
      + ", ".join(f"{k} {v:,}" for k, v in counts.items()) + ")")
