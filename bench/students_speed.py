"""Latency of a teacher and any students (transformer slices, BiLSTMs, ...) side by side, in one run.

Each model reads the same dev sentences through its own tokenizer (tokenization excluded): batch 1 (a
median-length sentence) and batch 32 (the first 32, padded to the longest); interleaved rounds after
warm-up, medians; speed-up over the teacher and over a reference student. Accuracy is read from each
run's metrics.json (its dev metric as trained), parameters are counted, size is the safetensors bytes.
``--slices SPEC ...`` adds students that are slices of the teacher (textdistill's student builder, e.g. ``every:2``
for 3 of 6 layers), untrained: their latency is a trained slice's (the same modules), their accuracy is not
reported -- a reference where no trained transformer student of the task is at hand.

    .venv/bin/python bench/students_speed.py --teacher runs/demo/teacher --students runs/demo/tinybert-augmented \\
        runs/bilstm/ft runs/bilstm/kd runs/bilstm/kd-tang --reference runs/demo/tinybert-augmented \\
        --out bench/results/students_speed.md
    .venv/bin/python bench/students_speed.py --teacher runs/teachers/minilm-sst2-20k \\
        --students runs/bilstm-results/sst2-20k/{ft,kd,kd-tang}-s3 --slices every:2 --task sst2 \\
        --data-dir ../shared/data/glue --out bench/results/students_speed_sst2_20k.md
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from textdistill.data.readers import load_examples, resolve_file  # noqa: E402
from textdistill.data.tasks import get_task  # noqa: E402
from textdistill.models.loading import count_parameters, load_model, load_tokenizer  # noqa: E402
from textdistill.models.student import build_student  # noqa: E402
from textdistill.report import markdown_table, speed_table  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", required=True, help="a run folder (with model/ and metrics.json)")
    ap.add_argument("--students", nargs="+", required=True, help="run folders")
    ap.add_argument("--slices", nargs="*", default=[], help="layer specs of untrained slices of the teacher "
                    "(latency only), e.g. every:2")
    ap.add_argument("--reference", help="one of the students: the second speed-up column is over it")
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--data-dir", default=str(ROOT / "data" / "sst2"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--out")
    args = ap.parse_args()
    task = get_task(args.task)
    dev = load_examples(task, resolve_file(task, "dev", args.data_dir))
    runs = [args.teacher, *args.students]
    models, one, many, info = {}, {}, {}, {}
    for run in runs:
        folder = Path(run) / "model"
        models[run] = load_model(str(folder), task.num_labels, task.labels)[0].eval()
        tok = load_tokenizer(str(folder))
        lengths = [len(x) for x in tok(dev.text_a, dev.text_b, truncation=True, max_length=128)["input_ids"]]
        median = sorted(range(len(dev)), key=lambda i: lengths[i])[len(dev) // 2]
        names = tok.model_input_names
        pick = lambda enc: {k: v for k, v in enc.items() if k in names}  # noqa: E731
        one[run] = pick(tok([dev.text_a[median]], [dev.text_b[median]] if dev.text_b else None, truncation=True,
                            max_length=128, return_tensors="pt"))
        many[run] = pick(tok(dev.text_a[:32], dev.text_b[:32] if dev.text_b else None, padding=True, truncation=True,
                             max_length=128, return_tensors="pt"))
        m = json.loads((Path(run) / "metrics.json").read_text())
        info[run] = {"metric": m["main_metric"], "value": m["dev"][m["main_metric"]],
                     "params": count_parameters(models[run]),
                     "bytes": sum(p.stat().st_size for p in folder.glob("*.safetensors"))}
    for spec in args.slices:  # untrained slices of the teacher: latency only
        name = f"slice {spec} of the teacher (untrained)"
        models[name], _ = build_student(models[args.teacher], spec)
        models[name].eval()
        one[name], many[name] = one[args.teacher], many[args.teacher]
        info[name] = {"metric": info[args.teacher]["metric"], "value": None, "params": count_parameters(models[name]),
                      "bytes": None}
        runs.append(name)
    with torch.inference_mode():
        lat1 = speed_table(models, None, rounds=args.rounds, repeats=args.repeats, batches=one)
        lat32 = speed_table(models, None, rounds=args.rounds, repeats=args.repeats, batches=many)
    ref = args.reference or (runs[-1] if args.slices else args.students[0])
    rows = []
    for run in runs:
        i = info[run]
        rows.append([run if run not in args.students + [args.teacher] else os.path.relpath(run),
                     f"{100 * i['value']:.2f}" if i["value"] is not None else "-", f"{i['params'] / 1e6:.2f}M",
                     f"{i['bytes'] / 1e6:.1f}" if i["bytes"] is not None else "-", f"{1000 * lat1[run]:.2f}", f"{1000 * lat32[run]:.1f}",
                     f"{lat32[args.teacher] / lat32[run]:.2f}x", f"{lat32[ref] / lat32[run]:.2f}x",
                     f"{lat1[args.teacher] / lat1[run]:.2f}x"])
    table = markdown_table(["run", f"dev {info[args.teacher]['metric']}", "params", "MB", "ms b=1", "ms b=32",
                            "speed-up b=32 (teacher)", f"speed-up b=32 ({os.path.relpath(ref) if ref in args.students else ref})",
                            "speed-up b=1 (teacher)"], rows)
    text = (f"Written by `python bench/students_speed.py` ({time.strftime('%Y-%m-%d')}), {torch.get_num_threads()} "
            f"thread(s), {len(dev)} dev rows of {args.task}; {args.rounds} interleaved rounds x {args.repeats} "
            f"repeats, medians; tokenization excluded.\n\n{table}\n")
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
