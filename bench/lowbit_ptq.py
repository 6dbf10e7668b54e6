"""Post-training weight-only quantization of a trained student, no training: every Linear weight snapped
to 8 or 4 bits (symmetric, per output channel) or to ternary {-a, 0, a} per row (TWN, TernaryBERT's
quantizer), activations in fp32; dev metric of each. The baseline that quantization-aware KD
(recipes/qat-kd.yaml, student.quantize.weights) has to beat.

    .venv/bin/python bench/lowbit_ptq.py --student runs/demo/tinybert-augmented/model [--task sst2 --data-dir data/sst2]
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from textdistill.data.batching import stream_loader  # noqa: E402
from textdistill.data.readers import load_examples, resolve_file  # noqa: E402
from textdistill.data.tasks import get_task  # noqa: E402
from textdistill.evaluate import compute_metrics, predict  # noqa: E402
from textdistill.models.loading import load_model, load_tokenizer  # noqa: E402
from textdistill.models.qat import quantize_weight  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--student", required=True)
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--data-dir", default=str(ROOT / "data" / "sst2"))
    args = ap.parse_args()
    task = get_task(args.task)
    dev = load_examples(task, resolve_file(task, "dev", args.data_dir))
    base = load_model(args.student, task.num_labels, task.labels)[0].eval()
    tok = load_tokenizer(args.student)
    out = {}
    for bits in (None, 8, 4, 2):
        model = copy.deepcopy(base)
        if bits:
            with torch.no_grad():
                for m in model.modules():
                    if type(m) is torch.nn.Linear:
                        m.weight.copy_(quantize_weight(m.weight, bits, per_channel=True))
        logits = predict(model, stream_loader(dev, tok, 64, 128, task.is_regression))
        out["fp32" if bits is None else ("ternary" if bits == 2 else f"int{bits}")] = \
            compute_metrics(task, logits, dev.labels)[task.main_metric]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
