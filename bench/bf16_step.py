#!/usr/bin/env python
"""A training step in fp32 vs under bf16 autocast on this machine, side by side in one run.

The step ``train.mixed_precision`` changes (forward under ``torch.autocast``, fp32 loss, backward; the AdamW
update is the same in both and left out), on the same random batch, in interleaved rounds after one warm-up
step of each on a small batch. Prints the median seconds of each and bf16 / fp32, and whether this CPU has
native bf16 (hardware.bf16_native: AVX512-BF16, AMX, Arm BF16). ``train.mixed_precision: auto`` picks bf16
only where it is native; this is the measurement behind that rule (docs/performance.md section 13).

    .venv/bin/python bench/bf16_step.py --model mpnet-12 --batch 8 --length 64 --rounds 3 --threads 1 \\
        --json bench/results/bf16_step_epyc.json
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from textdistill import hardware  # noqa: E402
from textdistill.models.loading import load_model  # noqa: E402


def step(model, ids, labels, bf16: bool) -> float:
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    torch.nn.functional.cross_entropy(logits.float(), labels).backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mpnet-12", help="a model alias or folder (textdistill's loading rules)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--length", type=int, default=64, help="tokens per row")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = load_model(a.model, 2, ("0", "1"), new_head_ok=True)[0].train()
    vocab = model.config.vocab_size
    ids = torch.randint(5, vocab, (a.batch, a.length))
    labels = torch.randint(0, 2, (a.batch,))
    for bf16 in (False, True):  # warm-up: a small batch of each (kernels, allocator)
        step(model, ids[:1, :8], labels[:1], bf16)
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for r in range(a.rounds):
        for name in (("fp32", "bf16") if r % 2 == 0 else ("bf16", "fp32")):
            times[name].append(step(model, ids, labels, name == "bf16"))
            print(f"round {r + 1} {name}: {times[name][-1]:.2f} s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {"model": a.model, "cpu": cpu_name(), "bf16_native": hardware.bf16_native(), "threads": a.threads,
           "batch": a.batch, "length": a.length, "rounds": a.rounds, "seconds": times,
           "median_s": {k: round(v, 3) for k, v in med.items()}, "bf16_over_fp32": round(med["bf16"] / med["fp32"], 2),
           "torch": torch.__version__}
    print(f"{out['cpu']} (native bf16: {out['bf16_native']}), {a.model}, batch {a.batch} x {a.length} tokens, "
          f"{a.threads} thread(s): fp32 {med['fp32']:.2f} s, bf16 autocast {med['bf16']:.2f} s per step "
          f"(median of {a.rounds}): bf16 / fp32 = {out['bf16_over_fp32']:.2f}")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
