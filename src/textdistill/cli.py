"""Command line: textdistill finetune | distill | cache | augment | evaluate | layer-map | demo"""
from __future__ import annotations

import argparse
import json
import os
import sys

from . import TextDistillError


def _recipe_args(p: argparse.ArgumentParser):
    p.add_argument("--recipe", "-r", help="YAML recipe (see recipes/)")
    p.add_argument("--output", "-o", required=True, help="output folder (created; written only on success)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field, e.g. train.lr=3e-5 or terms.kd.args.temperature=10 (repeatable)")
    p.add_argument("--task", help="shortcut for --set task=...")
    p.add_argument("--teacher", help="shortcut for --set teacher=...")
    p.add_argument("--data-dir", help="shortcut for --set data.dir=...")
    p.add_argument("--seed", type=int, help="shortcut for --set train.seed=...")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")


def _train(args, distill: bool) -> int:
    from .recipe import load_recipe, parse_overrides
    from .train import run

    overrides = []
    for key, value in (("task", args.task), ("teacher", args.teacher), ("data.dir", args.data_dir),
                       ("train.seed", args.seed)):
        if value is not None:
            overrides.append((key, value))
    overrides += parse_overrides(args.overrides)
    recipe = load_recipe(args.recipe, overrides)
    metrics = run(recipe, args.output, overwrite=args.overwrite, distill=distill)
    print(json.dumps({"output": args.output, "dev": metrics["dev"], "train_seconds": metrics["train_seconds"]}))
    return 0


def _cache(args) -> int:
    from .recipe import load_recipe, parse_overrides
    from .train import cache_only

    overrides = [(k, v) for k, v in (("task", args.task), ("teacher", args.teacher), ("data.dir", args.data_dir),
                                     ("teacher_cache.dtype", args.dtype)) if v is not None]
    recipe = load_recipe(args.recipe, overrides + parse_overrides(args.overrides))
    manifest = cache_only(recipe, args.output, overwrite=args.overwrite)
    print(json.dumps({"cache": args.output, "rows": manifest["key"]["rows"], "taps": manifest["key"]["taps"],
                      "dtype": manifest["key"]["dtype"], "bytes": manifest["bytes"]}))
    return 0


def _augment(args) -> int:
    from .data import transfer
    from .recipe import load_recipe, parse_overrides
    from .train import load_split, resolve_task
    from tqdm.auto import tqdm

    overrides = [(k, v) for k, v in (("task", args.task), ("teacher", args.teacher), ("data.dir", args.data_dir))
                 if v is not None] + [("transfer.dir", args.output)] + parse_overrides(args.overrides)
    recipe = load_recipe(args.recipe, overrides)
    if recipe.transfer.augment is None:
        raise TextDistillError("augment: the recipe has no transfer.augment section (e.g. --set "
                               "transfer.augment.method=tang)")
    transfer.check(recipe)
    train_ex = load_split(resolve_task(recipe), recipe, "train")
    _, provenance = transfer.open_set(recipe, train_ex, tqdm, rebuild=args.overwrite)
    print(json.dumps({"output": args.output, **{k: provenance[k] for k in ("source_rows", "generated", "seconds")},
                      **provenance["key"]}))
    return 0


def _evaluate(args) -> int:
    from .data.batching import encode, eval_loader
    from .data.readers import load_examples, resolve_file
    from .data.tasks import get_task
    from .evaluate import compute_metrics, predict
    from .models.loading import count_parameters, load_model, load_tokenizer

    task = get_task(args.task)
    if args.file:
        path = args.file
    elif args.data_dir:
        path = resolve_file(task, args.split, args.data_dir)
    else:
        raise TextDistillError("evaluate: give --file or --data-dir")
    examples = load_examples(task, path)
    model, head_new = load_model(args.model, task.num_labels, task.labels)
    if head_new:
        raise TextDistillError(f"{args.model}: the model has no classification head (not fine-tuned)")
    tokenizer = load_tokenizer(args.model)
    data = encode(tokenizer, examples, args.max_length, task.is_regression)
    metrics = compute_metrics(task, predict(model, eval_loader(data, tokenizer, args.batch_size)), examples.labels)
    result = {"model": args.model, "task": task.name, "file": str(path), "rows": len(examples), "metrics": metrics,
              "params": count_parameters(model)}
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=2)
    print(json.dumps(result))
    return 0


def _layer_map(args) -> int:
    from .knowledge.maps import COMBINE, MAPS, RANDOM, layer_map

    n_t, n_s = args.teacher_layers, args.student_layers
    strategies = sorted(MAPS) if args.strategy == "all" else [args.strategy]
    results = []
    for name in strategies:
        epochs = range(args.epoch, args.epoch + (args.epochs if name in RANDOM else 1))
        draws = [layer_map(name, n_t, n_s, epoch=e, seed=args.seed) for e in epochs]
        results.append({"strategy": name, "teacher_layers": n_t, "student_layers": n_s, "mapping": draws[0],
                        **({"seed": args.seed, "draws": {str(e + 1): d for e, d in zip(epochs, draws)}}
                           if name in RANDOM else {})})
        if args.json:
            continue
        print(f"{name}: teacher {n_t} layers -> student {n_s} layers"
              + (f" (seed {args.seed}, epochs {epochs[0] + 1}..{epochs[-1] + 1})" if name in RANDOM else ""))
        for e, mapping in zip(epochs, draws):
            if name in RANDOM:
                print(f"  epoch {e + 1}: " + ", ".join(f"S{j}<-T{t}" for j, t in enumerate(mapping, 1)))
                continue
            for j, t in enumerate(mapping, 1):
                src = f"teacher layers {t} ({COMBINE[name]})" if isinstance(t, list) else f"teacher layer {t}"
                print(f"  student layer {j:2d} <- {src}")
        if len(draws[0]) < n_s:
            print(f"  student layer {n_s:2d} <- teacher logits (KD term)")
    if args.json:
        print(json.dumps(results[0] if len(results) == 1 else results))
    return 0


def _demo(args) -> int:
    from .demo import main as demo_main

    return demo_main(args.output, args.overwrite)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="textdistill", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("finetune", help="fine-tune a model (a teacher, or a student baseline) on a task")
    _recipe_args(p)
    p.set_defaults(fn=lambda a: _train(a, distill=False))
    p = sub.add_parser("distill", help="distil a student from a fine-tuned teacher")
    _recipe_args(p)
    p.set_defaults(fn=lambda a: _train(a, distill=True))
    p = sub.add_parser("cache", help="compute a recipe's teacher outputs once (then distil with "
                                     "--set teacher_cache.dir=FOLDER)")
    p.add_argument("--recipe", "-r", help="the distillation recipe whose terms say what to store")
    p.add_argument("--output", "-o", required=True, help="cache folder")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--task")
    p.add_argument("--teacher")
    p.add_argument("--data-dir")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], help="of the stored vectors")
    p.add_argument("--overwrite", action="store_true", help="rebuild an existing cache")
    p.set_defaults(fn=_cache)
    p = sub.add_parser("augment", help="generate a recipe's augmented transfer set (then distil with "
                                       "--set transfer.dir=FOLDER)")
    p.add_argument("--recipe", "-r", required=True, help="a recipe with a transfer.augment section")
    p.add_argument("--output", "-o", required=True, help="folder of the generated set (texts.jsonl, provenance.json)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="e.g. transfer.augment.method=tinybert or transfer.augment.copies=10")
    p.add_argument("--task")
    p.add_argument("--teacher")
    p.add_argument("--data-dir")
    p.add_argument("--overwrite", action="store_true", help="regenerate an existing set")
    p.set_defaults(fn=_augment)
    p = sub.add_parser("evaluate", help="evaluate a saved model on a task's file")
    p.add_argument("--model", required=True)
    p.add_argument("--task", required=True)
    p.add_argument("--data-dir")
    p.add_argument("--split", default="dev")
    p.add_argument("--file")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--output", help="also write the result as JSON to this file")
    p.set_defaults(fn=_evaluate)
    p = sub.add_parser("layer-map", help="show which teacher layer each student layer learns from")
    p.add_argument("--strategy", required=True, help="a map name, or 'all'")
    p.add_argument("--teacher-layers", type=int, required=True)
    p.add_argument("--student-layers", type=int, required=True)
    p.add_argument("--epoch", type=int, default=0, help="first epoch to show (0-based), for random maps")
    p.add_argument("--epochs", type=int, default=3, help="how many epochs of draws to show for random maps")
    p.add_argument("--seed", type=int, default=0, help="seed of random maps (a run uses train.seed)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=_layer_map)
    p = sub.add_parser("demo", help="the README demo: teacher, FT/KD/PKD-Skip 3-layer students on SST-2")
    p.add_argument("--output", "-o", default="runs/demo")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(fn=_demo)
    return parser


def main(argv=None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # transformers' per-load/per-save bars; ours stay
    try:
        return args.fn(args)
    except TextDistillError as e:
        print(f"textdistill: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("textdistill: interrupted (nothing was written)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
