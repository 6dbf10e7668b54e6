#!/usr/bin/env python
"""Inference speed, accuracy and size of one trained student in five runtimes, measured side by side.

PyTorch fp32, PyTorch dynamic int8 (torch.ao ``quantize_dynamic`` on the Linear layers), ONNX Runtime fp32,
ONNX Runtime int8 dynamic and ONNX Runtime int8 static (the last three made by ``textdistill export``: the
static one calibrated on ``--calibration-rows`` training texts). On the task's dev file, tokenization
excluded: median forward latency at batch 1 (a median-length example) and batch 32 (the first 32 dev examples,
dynamic padding), timed in interleaved rounds (A, B, C, ..., A, B, C, ...) after warm-up; throughput
(examples/s at batch 32); the dev metrics of each runtime and its argmax agreement with PyTorch fp32; size on
disk (PyTorch fp32: the safetensors weights; PyTorch int8: its serialized state dict, measured in memory;
ONNX: model.onnx). Prints a markdown table with ratios against PyTorch fp32 and whether the issue's target
(>= 2x the fp32 PyTorch throughput at <= 0.5 points loss) is met; writes JSON.

Both runtimes use the same number of threads (``--threads``, default torch's). ``--qat FOLDER`` adds a
quantization-aware student (recipes/qat-kd.yaml) in ONNX Runtime int8; its accuracy is compared with the
fp32 student's.

    .venv/bin/python bench/onnx_speed.py --student runs/results/pkd-skip-20k-s1/model --task sst2 \\
        --data-dir ../shared/data/glue --json bench/results/onnx_speed_sst2.json
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from textdistill.data.batching import encode, eval_loader  # noqa: E402
from textdistill.data.readers import load_examples, resolve_file  # noqa: E402
from textdistill.data.tasks import get_task  # noqa: E402
from textdistill.evaluate import compute_metrics, predict  # noqa: E402
from textdistill.hardware import cpu_int8  # noqa: E402
from textdistill.models.export import _session, export, onnx_predict  # noqa: E402
from textdistill.models.loading import load_model, load_tokenizer  # noqa: E402
from textdistill.report import markdown_table, speed_table  # noqa: E402

NAMES = {"pt_fp32": "PyTorch fp32", "pt_int8": "PyTorch int8 dynamic", "ort_fp32": "ONNX Runtime fp32",
         "ort_int8_dynamic": "ONNX Runtime int8 dynamic", "ort_int8_static": "ONNX Runtime int8 static",
         "qat_ort_int8": "QAT-KD student, ONNX Runtime int8 dynamic"}
TARGET_SPEEDUP, TARGET_LOSS = 2.0, 0.5  # issue 13: >= 2x fp32 PyTorch throughput at <= 0.5 points


class OrtModel:
    """An ONNX Runtime session behind the ``model(**batch)`` call that ``evaluate.latency`` times."""

    def __init__(self, session):
        self.session = session
        self.names = [i.name for i in session.get_inputs()]

    def eval(self):
        return self

    def __call__(self, **batch):
        return self.session.run(["logits"], {n: batch[n].numpy() for n in self.names})


def batches(tokenizer, examples, max_length: int):
    """Batch 1: the median-length example; batch 32: the first 32, padded to the longest (int64 tensors)."""
    a, b = examples.text_a, examples.text_b
    lengths = [len(ids) for ids in tokenizer(a, b, truncation=True, max_length=max_length)["input_ids"]]
    median = sorted(range(len(a)), key=lambda i: lengths[i])[len(a) // 2]
    one = tokenizer([a[median]], [b[median]] if b else None, truncation=True, max_length=max_length,
                    return_tensors="pt")
    many = tokenizer(a[:32], b[:32] if b else None, padding=True, truncation=True, max_length=max_length,
                     return_tensors="pt")
    return dict(one), dict(many)


def state_dict_bytes(model) -> int:
    """Serialized size of a (quantized) PyTorch model's state dict, measured in memory (nothing is written)."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", required=True, help="a saved student folder (textdistill finetune/distill .../model)")
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--data-dir", help="GLUE root or the task's folder (dev file, train file for calibration); "
                                       "default: the shipped data/sst2 sample")
    ap.add_argument("--dev", help="the dev file (overrides --data-dir)")
    ap.add_argument("--calibration", help="static int8 calibration file (default: the train file of --data-dir)")
    ap.add_argument("--calibration-rows", type=int, default=200)
    ap.add_argument("--max-rows", type=int, help="evaluate on the first N dev rows only (quick checks)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, help="torch and ONNX Runtime intra-op threads (default: torch's)")
    ap.add_argument("--keep", help="keep the three ONNX exports in this folder (default: a temporary folder)")
    ap.add_argument("--qat", metavar="FOLDER", help="also a quantization-aware student (recipes/qat-kd.yaml) "
                                                     "exported to ONNX Runtime int8 (per channel, as trained)")
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    task = get_task(args.task)
    data_dir = Path(args.data_dir) if args.data_dir else ROOT / "data" / "sst2"
    dev_path = Path(args.dev) if args.dev else resolve_file(task, "dev", data_dir)
    calib_path = Path(args.calibration) if args.calibration else resolve_file(task, "train", data_dir)
    dev = load_examples(task, dev_path, max_rows=args.max_rows)

    student = load_model(args.student, task.num_labels, task.labels)[0].eval()
    tok = load_tokenizer(args.student)
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pt_int8 = quantize_dynamic(student, {torch.nn.Linear}, dtype=torch.qint8)

    tmp = None if args.keep else tempfile.TemporaryDirectory(prefix="onnx_speed.")
    work = Path(args.keep or tmp.name)
    exports = {}
    for key, int8 in (("ort_fp32", None), ("ort_int8_dynamic", "dynamic"), ("ort_int8_static", "static")):
        print(f"exporting {NAMES[key]} ...", file=sys.stderr)
        exports[key] = export(args.student, work / key, int8=int8, task=task.name, file=str(dev_path),
                              calibration=str(calib_path) if int8 == "static" else None,
                              calibration_rows=args.calibration_rows, min_agreement=0.0, overwrite=True)
    if args.qat:
        print(f"exporting {NAMES['qat_ort_int8']} ...", file=sys.stderr)
        exports["qat_ort_int8"] = export(args.qat, work / "qat_ort_int8", int8="dynamic", task=task.name,
                                         file=str(dev_path), min_agreement=0.0, overwrite=True)
    models = {"pt_fp32": student, "pt_int8": pt_int8,
              **{k: OrtModel(_session(work / k / "model.onnx", threads)) for k in exports}}
    sizes = {"pt_fp32": sum(p.stat().st_size for p in Path(args.student).glob("*.safetensors")),
             "pt_int8": state_dict_bytes(pt_int8),
             **{k: (work / k / "model.onnx").stat().st_size for k in exports}}

    # accuracy: every runtime on the same dev batches
    loader = eval_loader(encode(tok, dev, 128, task.is_regression), tok, 64)
    logits = {k: (onnx_predict(m.session, loader) if isinstance(m, OrtModel) else predict(m, loader))
              for k, m in models.items()}
    metrics = {k: compute_metrics(task, z, dev.labels) for k, z in logits.items()}
    agree = {k: float((z.argmax(-1) == logits["pt_fp32"].argmax(-1)).mean()) for k, z in logits.items()}

    one, many = batches(tok, dev, 128)
    with torch.inference_mode():
        lat1 = speed_table(models, one, rounds=args.rounds, repeats=args.repeats)
        lat32 = speed_table(models, many, rounds=args.rounds, repeats=args.repeats)

    main_metric = task.main_metric
    rows, results = [], {}
    for k in models:
        m, m0 = 100 * metrics[k][main_metric], 100 * metrics["pt_fp32"][main_metric]
        s1, s32 = lat1["pt_fp32"] / lat1[k], lat32["pt_fp32"] / lat32[k]
        results[k] = {"name": NAMES[k], "metrics": metrics[k], "agreement_with_pt_fp32": agree[k],
                      "latency_ms_b1": 1000 * lat1[k], "latency_ms_b32": 1000 * lat32[k],
                      "throughput_b32": 32 / lat32[k], "speedup_b1": s1, "speedup_b32": s32,
                      "size_bytes": sizes[k], "size_ratio": sizes[k] / sizes["pt_fp32"],
                      "delta_points": m - m0,
                      "meets_target": bool(s32 >= TARGET_SPEEDUP and m0 - m <= TARGET_LOSS)}
        rows.append([NAMES[k], f"{m:.2f}", f"{m - m0:+.2f}", f"{100 * agree[k]:.2f}", f"{1000 * lat1[k]:.2f}",
                     f"{1000 * lat32[k]:.1f}", f"{32 / lat32[k]:.0f}", f"{s1:.2f}x", f"{s32:.2f}x",
                     f"{sizes[k] / 1e6:.1f}", f"{sizes[k] / sizes['pt_fp32']:.2f}x"])
    int8_isa = cpu_int8()  # int8 speed-ups depend on the CPU's int8 instructions (VNNI: ~2x those of AVX2 alone)
    print(f"\n{args.student} on {dev_path} ({len(dev)} rows, {task.name}), {threads} thread(s), CPU int8: {int8_isa}; "
          f"batch 1: {one['input_ids'].shape[1]} tokens, batch 32: {many['input_ids'].shape[1]} tokens (padded)\n")
    print(markdown_table(["runtime", f"dev {main_metric}", "Δ pts", "agree % (vs PT fp32)", "ms b=1", "ms b=32",
                          "ex/s b=32", "speed-up b=1", "speed-up b=32", "size MB", "size ratio"], rows))
    met = [NAMES[k] for k, r in results.items() if r["meets_target"] and k != "pt_fp32"]
    print(f"\ntarget (>= {TARGET_SPEEDUP:g}x PyTorch fp32 throughput at batch 32, <= {TARGET_LOSS} points lost): "
          + (f"met by {', '.join(met)}" if met else "not met"))
    if args.json:
        import os

        rel = lambda p: os.path.relpath(Path(p).absolute(), Path.cwd())  # noqa: E731 - no machine paths in results
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "student": rel(args.student), "task": task.name, "dev": rel(dev_path), "rows": len(dev),
            "qat": rel(args.qat) if args.qat else None,
            "calibration": {"file": rel(calib_path), "rows": args.calibration_rows}, "threads": threads,
            "cpu_int8": int8_isa, "rounds": args.rounds, "repeats": args.repeats, "tokens_b1": one["input_ids"].shape[1],
            "tokens_b32": many["input_ids"].shape[1], "runtimes": results,
            "exports": {k: {"check": v["check"], "int8_detail": v["int8_detail"], "versions": v["versions"]}
                        for k, v in exports.items()}}, indent=2) + "\n")
    if tmp is not None:
        tmp.cleanup()
    return results


if __name__ == "__main__":
    main()
