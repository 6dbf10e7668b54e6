#!/usr/bin/env python
"""The teacher's pass over the training rows (building the teacher-output cache) in PyTorch vs ONNX Runtime vs
PyTorch under bf16 autocast, side by side in one run.

For each teacher, the cache of ``recipes/pkd-skip.yaml`` (logits + the [CLS] vectors of the mapped layers)
is built from the same rows with ``teacher_cache.runtime: torch``, ``onnx`` and ``torch-bf16`` in interleaved
rounds (the first a warm-up): the time of ``build_cache`` alone (ONNX: export + session + pass + the checks
against PyTorch), medians, and the largest difference of each cache's logits from PyTorch fp32's. Same
threads for all.

    .venv/bin/python bench/cache_build.py --rows 2000 --teachers runs/demo/teacher/model mpnet-12 \\
        --json bench/results/cache_build.json
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from textdistill.data.batching import encode  # noqa: E402
from textdistill.data.readers import load_examples  # noqa: E402
from textdistill.data.tasks import get_task  # noqa: E402
from textdistill.models.loading import count_parameters, load_model, load_tokenizer, resolve_model_path  # noqa: E402
from textdistill.recipe import load_recipe  # noqa: E402
from textdistill.report import markdown_table, write_json  # noqa: E402
from textdistill.schemes.cache import build_cache, cache_key, cache_plan  # noqa: E402

RUNTIMES = ("torch", "onnx", "torch-bf16")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teachers", nargs="+", default=[str(ROOT / "runs/demo/teacher/model"), "mpnet-12"],
                    help="teacher folders or aliases (a pre-trained model gets a random head: speed is the same)")
    ap.add_argument("--train", default=str(ROOT / "data/sst2/train.tsv"))
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (the first is a warm-up)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    task = get_task("sst2")
    examples = load_examples(task, args.train, max_rows=args.rows)
    recipe = load_recipe(str(ROOT / "recipes/pkd-skip.yaml"), [("data.dir", str(ROOT / "data/sst2"))])
    setups = {}
    for name in args.teachers:
        model, tokenizer = load_model(name, 2, task.labels)[0].eval(), load_tokenizer(name)
        n_t = model.config.num_hidden_layers
        plan = cache_plan(recipe.terms, n_t, 3)
        keys = {rt: cache_key(teacher=str(resolve_model_path(name)), tokenizer=tokenizer, examples=examples,
                              max_length=128, plan=plan, dtype="float16", runtime=rt) for rt in RUNTIMES}
        setups[name] = (model, tokenizer, keys, encode(tokenizer, examples, 128, False))
    times = {(n, rt): [] for n in args.teachers for rt in RUNTIMES}
    diffs, used, export = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name, (model, tokenizer, keys, data) in setups.items():
                folders = {}
                for rt in RUNTIMES:
                    folder = Path(tmp) / f"{len(folders)}-{rt}"
                    t0 = time.perf_counter()
                    build_cache(folder, teacher_model=model, key=keys[rt], data=data, tokenizer=tokenizer, batch_size=64,
                                params_teacher=count_parameters(model), runtime=rt)
                    if r > 0:
                        times[(name, rt)].append(time.perf_counter() - t0)
                    manifest = json.loads((folder / "cache.json").read_text())
                    used[(name, rt)] = manifest["runtime"]
                    if r > 0 and rt == "onnx":
                        export.setdefault(name, []).append(manifest.get("onnx_export_seconds", 0.0))
                    folders[rt] = folder
                from safetensors.torch import load_file
                a = load_file(str(folders["torch"] / "outputs.safetensors"))["logits"]
                for rt in RUNTIMES[1:]:
                    b = load_file(str(folders[rt] / "outputs.safetensors"))["logits"]
                    diffs[(name, rt)] = (a - b).abs().max().item()
                for f in folders.values():
                    shutil.rmtree(f)
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    rows = []
    for name, (model, *_rest) in setups.items():
        t, o, b = (statistics.median(times[(name, rt)]) for rt in RUNTIMES)
        e = statistics.median(export[name])
        rows.append([name.replace(str(ROOT) + "/", ""),
                     f"{model.config.num_hidden_layers} x {model.config.hidden_size}", f"{t:.1f}", f"{o:.1f}",
                     f"{e:.1f}", f"{b:.1f}", f"{t / o:.2f}x", f"{t / (o - e):.2f}x", f"{t / b:.2f}x", f"{o / b:.2f}x",
                     used[(name, "onnx")], f"{diffs[(name, 'onnx')]:.1e}", f"{diffs[(name, 'torch-bf16')]:.1e}"])
    print(f"\nBuilding the teacher cache of recipes/pkd-skip.yaml over {len(examples):,} SST-2 rows (batch 64, "
          f"dynamic padding), {torch.get_num_threads()} threads, {args.rounds - 1} timed rounds (medians)\n")
    print(markdown_table(["teacher", "layers x width", "PyTorch s", "ONNX Runtime s (all)",
                          "of which export, session, checks s", "PyTorch bf16 s", "ONNX speed-up",
                          "ONNX speed-up of the pass alone", "bf16 speed-up", "bf16 vs ONNX",
                          "ONNX runtime used", "max logit diff ONNX", "max logit diff bf16"], rows))
    if args.json:  # (names relative to the repository: no paths of this machine in the results)
        rel = {name: name.replace(str(ROOT) + "/", "") for name in args.teachers}
        export = {rel[n]: v for n, v in export.items()}
        diffs = {f"{rel[n]}|{rt}": v for (n, rt), v in diffs.items()}
        times = {(rel[n], rt): v for (n, rt), v in times.items()}
        used = {(rel[n], rt): v for (n, rt), v in used.items()}
        write_json(args.json, {"rows": len(examples), "threads": torch.get_num_threads(),
                               "seconds": {f"{n}|{rt}": v for (n, rt), v in times.items()},
                               "onnx_export_seconds": export,
                               "runtime_used": {f"{n}|{rt}": u for (n, rt), u in used.items()},
                               "logit_diff": diffs}, ROOT)


if __name__ == "__main__":
    main()
