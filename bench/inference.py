#!/usr/bin/env python
"""Inference speed of teachers and their students, measured side by side in one run.

For each family (the fine-tuned MiniLM-L6 teacher and its 3-layer student; a 12-layer teacher --
the ``mpnet-12`` alias when installed, else a random BERT-base-shaped 12 x 768 model, since speed
does not depend on the weights -- with 6- and 3-layer students built from it), on real SST-2 dev
sentences, tokenization excluded: median forward latency at batch 1 (a median-length sentence) and
batch 32 (32 dev sentences, dynamic padding), throughput (sentences/s at batch 32), speed-up over
the teacher and that speed-up as a fraction of the layer-count limit (N/M). The models are timed
in interleaved rounds. Then int8 dynamic quantisation (torch.ao, Linear layers) of a trained 3-layer
student: latency and SST-2 dev accuracy before and after.

    .venv/bin/python bench/inference.py --student runs/results/pkd-skip-20k-s1/model --json bench/results/inference.json
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from textdistill import TextDistillError  # noqa: E402
from textdistill.data.batching import encode, eval_loader  # noqa: E402
from textdistill.data.readers import load_examples  # noqa: E402
from textdistill.data.tasks import get_task  # noqa: E402
from textdistill.evaluate import compute_metrics, predict  # noqa: E402
from textdistill.models.loading import count_parameters, load_model, load_tokenizer  # noqa: E402
from textdistill.models.student import build_student  # noqa: E402
from textdistill.report import markdown_table, speed_table, write_json  # noqa: E402


def batches(tokenizer, texts):
    lengths = [len(tokenizer(t)["input_ids"]) for t in texts]
    median = sorted(range(len(texts)), key=lambda i: lengths[i])[len(texts) // 2]
    one = tokenizer([texts[median]], return_tensors="pt")
    many = tokenizer(texts[:32], padding=True, return_tensors="pt")
    return dict(one), dict(many)


def twelve_layer():
    try:
        model, _ = load_model("mpnet-12", 2, ("0", "1"), new_head_ok=True)
        return "MPNet-12 (all-mpnet-base-v2, 12 x 768)", model, load_tokenizer("mpnet-12")
    except TextDistillError:
        from transformers import BertConfig, BertForSequenceClassification

        cfg = BertConfig(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072,
                         num_labels=2)
        return "BERT-base-shaped 12 x 768 (random weights)", BertForSequenceClassification(cfg).eval(), \
            load_tokenizer("minilm-l6")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", default=str(ROOT / "runs/results/teacher/model"))
    ap.add_argument("--student", default=str(ROOT / "runs/results/pkd-skip-20k-s1/model"),
                    help="a trained 3-layer student of the teacher (for the int8 accuracy)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    task = get_task("sst2")
    dev = load_examples(task, ROOT / "data/sst2/dev.tsv")
    families = []
    teacher = load_model(args.teacher, 2, task.labels)[0].eval()
    student = load_model(args.student, 2, task.labels)[0].eval()
    families.append(("MiniLM-L6 (6 x 384, fine-tuned on SST-2)", teacher, load_tokenizer(args.teacher),
                     {"3 layers (trained student)": student}))
    name12, t12, tok12 = twelve_layer()
    families.append((name12, t12, tok12, {"6 layers (every 2nd)": build_student(t12, "every:2")[0].eval(),
                                           "3 layers (every 4th)": build_student(t12, "every:4")[0].eval()}))
    rows, results = [], []
    for fam, teacher_model, tok, students in families:
        one, many = batches(tok, dev.text_a)
        models = {"teacher": teacher_model, **students}
        n_t = teacher_model.config.num_hidden_layers
        with torch.inference_mode():
            lat1 = speed_table(models, one, rounds=args.rounds, repeats=args.repeats)
            lat32 = speed_table(models, many, rounds=args.rounds, repeats=args.repeats)
        for name, model in models.items():
            m = model.config.num_hidden_layers
            limit = n_t / m
            s1, s32 = lat1["teacher"] / lat1[name], lat32["teacher"] / lat32[name]
            results.append({"family": fam, "model": name, "layers": m, "params": count_parameters(model),
                            "latency_ms_b1": 1000 * lat1[name], "latency_ms_b32": 1000 * lat32[name],
                            "throughput_b32": 32 / lat32[name], "speedup_b1": s1, "speedup_b32": s32,
                            "limit": limit, "tokens_b1": one["input_ids"].shape[1],
                            "tokens_b32": many["input_ids"].shape[1]})
            rows.append([fam if name == "teacher" else "", name, f"{count_parameters(model) / 1e6:.1f}M",
                         f"{1000 * lat1[name]:.1f}", f"{1000 * lat32[name]:.0f}", f"{32 / lat32[name]:.0f}",
                         f"{s1:.2f}x ({100 * s1 / limit:.0f}%)", f"{s32:.2f}x ({100 * s32 / limit:.0f}%)",
                         f"{limit:.0f}x"])
    print(markdown_table(["family", "model", "params", "ms b=1", "ms b=32", "sent/s b=32", "speed-up b=1 (% of limit)",
                          "speed-up b=32 (% of limit)", "layer limit"], rows))

    # int8 dynamic quantisation of the trained student
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = quantize_dynamic(student, {torch.nn.Linear}, dtype=torch.qint8)
    tok = load_tokenizer(args.student)
    data = encode(tok, dev, 128, False)
    acc = {k: compute_metrics(task, predict(m, eval_loader(data, tok, 64)), dev.labels)["accuracy"]
           for k, m in (("fp32", student), ("int8", q))}
    one, many = batches(tok, dev.text_a)
    with torch.inference_mode():
        lq1 = speed_table({"fp32": student, "int8": q}, one, rounds=args.rounds, repeats=args.repeats)
        lq32 = speed_table({"fp32": student, "int8": q}, many, rounds=args.rounds, repeats=args.repeats)
    qrows = [[k, f"{100 * acc[k]:.2f}", f"{1000 * lq1[k]:.1f}", f"{1000 * lq32[k]:.0f}"] for k in ("fp32", "int8")]
    print(f"\nint8 dynamic quantisation of {os.path.relpath(args.student)} (SST-2 dev, 872 rows): accuracy change "
          f"{100 * (acc['int8'] - acc['fp32']):+.2f} points, speed-up b=32 {lq32['fp32'] / lq32['int8']:.2f}x\n")
    print(markdown_table(["student", "dev acc", "ms b=1", "ms b=32"], qrows))
    if args.json:
        write_json(args.json, {"models": results, "int8": {
            "student": args.student, "accuracy": acc, "latency_ms_b1": {k: 1000 * v for k, v in lq1.items()},
            "latency_ms_b32": {k: 1000 * v for k, v in lq32.items()}}, "threads": torch.get_num_threads()}, ROOT)


if __name__ == "__main__":
    main()
