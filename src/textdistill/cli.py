"""Command line: textdistill finetune | distill | cache | augment | evaluate | significance | export | layer-map |
suite | report | demo"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading

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
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from its last checkpoint (its .OUTPUT.partial folder)")
    p.add_argument("--allow-weak-teacher", action="store_true",
                   help="distil from a teacher that scores near chance on the dev rows (refused otherwise)")
    p.add_argument("--resume-any-version", action="store_true",
                   help="with --resume: accept a checkpoint written by other textdistill code (recorded in metrics)")


def _train(args, distill: bool) -> int:
    from .recipe import load_recipe, parse_overrides
    from .train import run

    overrides = []
    for key, value in (("task", args.task), ("teacher", args.teacher), ("data.dir", args.data_dir),
                       ("train.seed", args.seed), ("allow_weak_teacher", args.allow_weak_teacher or None)):
        if value is not None:
            overrides.append((key, value))
    overrides += parse_overrides(args.overrides)
    recipe = load_recipe(args.recipe, overrides)
    metrics = run(recipe, args.output, overwrite=args.overwrite, distill=distill, resume=args.resume,
                  any_version=args.resume_any_version)
    from accelerate import PartialState

    if not PartialState().is_main_process:  # (several processes: rank 0 reports)
        return 0
    print(json.dumps({"output": args.output, "dev": metrics["dev"], "train_seconds": metrics["train_seconds"]}))
    return 0


def _cache(args) -> int:
    from .dist import single_process
    from .recipe import load_recipe, parse_overrides

    single_process("textdistill cache")
    from .train import cache_only

    overrides = [(k, v) for k, v in (("task", args.task), ("teacher", args.teacher), ("data.dir", args.data_dir),
                                     ("teacher_cache.dtype", args.dtype), ("teacher_cache.runtime", args.runtime),
                                     ("allow_weak_teacher", args.allow_weak_teacher or None)) if v is not None]
    recipe = load_recipe(args.recipe, overrides + parse_overrides(args.overrides))
    manifest = cache_only(recipe, args.output, overwrite=args.overwrite)
    print(json.dumps({"cache": args.output, "rows": manifest["key"]["rows"], "taps": manifest["key"]["taps"],
                      "dtype": manifest["key"]["dtype"], "bytes": manifest["bytes"],
                      "runtime": manifest.get("runtime", "torch")}))
    return 0


def _augment(args) -> int:
    from .data import transfer
    from .dist import single_process

    single_process("textdistill augment")
    from .recipe import load_recipe, parse_overrides
    from .train import load_split, resolve_task
    from tqdm.auto import tqdm

    overrides = [(k, v) for k, v in (("task", args.task), ("teacher", args.teacher), ("data.dir", args.data_dir))
                 if v is not None] + [("transfer.dir", args.output)] + parse_overrides(args.overrides)
    recipe = load_recipe(args.recipe, overrides)
    if recipe.transfer.augment is None and recipe.transfer.synthetic is None:
        raise TextDistillError("augment: the recipe has no transfer.augment or transfer.synthetic section (e.g. "
                               "--set transfer.augment.method=tang, or --set 'transfer.synthetic={per_class: 500}')")
    transfer.check(recipe)
    train_ex = load_split(resolve_task(recipe), recipe, "train")
    _, provenance = transfer.open_set(recipe, train_ex, tqdm, rebuild=args.overwrite)
    synthesis = provenance.get("synthesis", {})  # data-free: how well the decoded texts carry their class
    print(json.dumps({"output": args.output, **{k: provenance[k] for k in ("source_rows", "generated", "seconds")},
                      **provenance["key"],
                      **({"decoded_agreement": synthesis["decoded_agreement"]} if synthesis else {})}))
    return 0


SWEEP = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)
LATENCY_ROWS = 100  # --exit-threshold times the real early stop on the first rows, one at a time


def _evaluate(args) -> int:
    from .data.batching import encode, stream_loader
    from .data.readers import load_examples, resolve_file
    from .data.tasks import get_task
    from .evaluate import predict
    from .models.checks import NONFINITE_CAUSES, check_finite_logits, check_max_length, nonfinite_parameters
    from .models.loading import count_parameters, load_model, load_tokenizer

    task = get_task(args.task)
    if args.output:
        _check_writable(args.output, "--output")
    exits = args.exit_threshold is not None or args.exit_sweep
    if args.predictions:
        _check_writable(args.predictions, "--predictions")
        if args.output and _same_file(args.output, args.predictions):
            raise TextDistillError(f"--predictions {args.predictions}: the same file as --output")
        if args.exit_sweep and args.exit_threshold is None:
            raise TextDistillError("--predictions: one prediction per row needs one threshold; with --exit-sweep "
                                   "also give --exit-threshold H (the predictions are those at H)")
    if args.plot and not args.exit_sweep:
        raise TextDistillError("--plot: draws the --exit-sweep curve; add --exit-sweep")
    if args.plot:
        _check_image_path(args.plot, "--plot")
    if args.file and (args.data_dir or args.split):
        raise TextDistillError(f"--file: the rows come from {args.file}; leave out --data-dir and --split")
    if args.compare and not args.exit_sweep:
        raise TextDistillError("--compare: places other models beside the --exit-sweep curve; add --exit-sweep")
    compare = _compare_specs(args.compare or [])  # (checked before the work)
    if exits and task.is_regression:
        raise TextDistillError(f"--exit-threshold/--exit-sweep: early exit needs a classification task, not "
                               f"{task.name}")
    if args.file:
        path = args.file
    elif args.data_dir:
        path = resolve_file(task, args.split or "dev", args.data_dir)
    else:
        raise TextDistillError("evaluate: give --file or --data-dir")
    if args.predictions and _same_file(args.predictions, path):
        raise TextDistillError(f"--predictions {args.predictions}: the file the rows are read from")
    examples = load_examples(task, path, require_labels=not args.predictions)  # (predictions: a test file will do)
    if examples.labels is None and args.exit_sweep:
        raise TextDistillError(f"--exit-sweep: {path} has no labels to measure the sweep on")
    from .models.export import is_onnx_model

    if is_onnx_model(args.model):  # an export (textdistill export): predictions through ONNX Runtime
        if exits:
            raise TextDistillError("--exit-threshold/--exit-sweep: not available for an ONNX model")
        return _evaluate_onnx(args, task, path, examples)
    heads = None
    if exits:
        from .models.exits import load_exits

        heads = load_exits(args.model)
    model, head_new = load_model(args.model, task.num_labels, task.labels)
    if head_new:
        raise TextDistillError(f"{args.model}: the model has no classification head (not fine-tuned)")
    if heads is not None:
        heads.check(model.config, args.model)
    check_max_length(model.config, args.max_length, "--max-length", args.model)
    tokenizer = load_tokenizer(args.model)
    loader = stream_loader(examples, tokenizer, args.batch_size, args.max_length, task.is_regression)
    result = {"model": args.model, "task": task.name, "file": str(path), "rows": len(examples)}
    if heads is None:
        logits = predict(model, loader)
        bad = nonfinite_parameters(model)
        check_finite_logits(logits, f"{args.model}: its logits on {path}", cause=(
            f"its weights are not finite ({len(bad)} tensors, first: {bad[0]}): it was saved by a run that went NaN "
            f"(likely {NONFINITE_CAUSES})" if bad else "its weights are finite but overflow on these inputs"))
        result["metrics"] = _metrics(task, logits, examples)
        pending = (logits, None)
    else:
        result.update(_early_exit(args, task, model, heads, loader, examples, compare))
        pending = result.pop("_predictions", None)
        if args.exit_threshold is not None:  # the real early stop, one example at a time
            from .data.batching import Collator
            from .models.exits import exit_latency

            first = examples.subset(range(min(LATENCY_ROWS, len(examples))))
            data, collate = encode(tokenizer, first, args.max_length, task.is_regression), Collator(tokenizer,
                                                                                                   task.is_regression)
            rows = [collate([data[i]]) for i in range(len(data))]
            result["early_exit"]["latency"] = exit_latency(model, heads, rows, args.exit_threshold)
    result["params"] = count_parameters(model)
    if args.predictions:  # (last: a failure before leaves no file)
        result["predictions"] = _predictions(args, task, *pending, examples)
    if args.output:
        _write_json(args.output, result, "--output")
    print(json.dumps(result))
    return 0


def _same_file(a, b) -> bool:
    return os.path.realpath(os.path.expanduser(a)) == os.path.realpath(os.path.expanduser(b))


def _metrics(task, logits, examples) -> dict | None:
    """The task's metrics of ``logits`` on ``examples``; None for rows without labels (a test file)."""
    from .evaluate import compute_metrics

    return None if examples.labels is None else compute_metrics(task, logits, examples.labels)


def _predictions(args, task, logits, exit_layers, examples) -> dict:
    """Each row's prediction written to ``--predictions`` (evaluate.write_predictions); what the result says."""
    from .evaluate import prediction_rows, write_predictions

    try:
        form = write_predictions(os.path.expanduser(args.predictions),
                                 prediction_rows(task, logits, examples, exit_layers))
    except OSError as e:
        raise TextDistillError(f"--predictions {args.predictions}: cannot be written ({e.strerror})") from None
    return {"file": args.predictions, "format": form, "rows": len(examples)}


def _check_writable(path: str, option: str) -> None:
    """Before the work: ``path`` can be created (its folder exists and is writable, it is no folder itself)."""
    from pathlib import Path

    p = Path(path).expanduser()
    parent = p.parent
    if p.is_dir():
        raise TextDistillError(f"{option} {path}: is a folder (give a file name)")
    if not parent.is_dir():
        raise TextDistillError(f"{option} {path}: cannot be created ({parent} is not an existing folder)")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise TextDistillError(f"{option} {path}: cannot be written (permission denied)")


def _check_image_path(path: str, option: str) -> None:
    """Before the work: ``path`` is a file matplotlib can write (a known image format, in a writable folder)."""
    from pathlib import Path

    from matplotlib.backend_bases import FigureCanvasBase

    kinds = FigureCanvasBase.get_supported_filetypes()
    if Path(path).suffix.lower().lstrip(".") not in kinds:
        raise TextDistillError(f"{option} {path}: not an image format matplotlib writes (use .png, or one of "
                               f"{', '.join('.' + k for k in sorted(kinds))})")
    _check_writable(path, option)


def _write_json(path: str, result: dict, option: str) -> None:
    from .files import write_text_atomic

    try:
        write_text_atomic(os.path.expanduser(path), json.dumps(result, indent=2))
    except OSError as e:
        raise TextDistillError(f"{option} {path}: cannot be written ({e.strerror})") from None


def _evaluate_onnx(args, task, path, examples) -> int:
    from .data.batching import stream_loader
    from .models.export import check_labels, load_onnx, onnx_parameters, onnx_predict
    from .models.loading import load_tokenizer

    session, onnx_path = load_onnx(args.model)
    check_labels(onnx_path.parent, task, args.model)
    tokenizer = load_tokenizer(str(onnx_path.parent))
    loader = stream_loader(examples, tokenizer, args.batch_size, args.max_length, task.is_regression)
    logits = onnx_predict(session, loader)
    result = {"model": args.model, "task": task.name, "file": str(path), "rows": len(examples),
              "metrics": _metrics(task, logits, examples), "params": onnx_parameters(onnx_path),
              "runtime": "onnxruntime"}
    if args.predictions:
        result["predictions"] = _predictions(args, task, logits, None, examples)
    if args.output:
        _write_json(args.output, result, "--output")
    print(json.dumps(result))
    return 0


def _export(args) -> int:
    from .models.export import export

    info = export(args.model, args.output, int8=args.int8, task=args.task, data_dir=args.data_dir, file=args.file,
                  calibration=args.calibration, calibration_rows=args.calibration_rows,
                  min_agreement=args.min_agreement, opset=args.opset, batch_size=args.batch_size,
                  max_length=args.max_length, overwrite=args.overwrite, per_channel=args.per_channel)
    check = info["check"]
    print(json.dumps({"output": args.output, "int8": info["int8"], "data": check["data"], "rows": check["rows"],
                      "pytorch_metrics": check.get("pytorch_metrics"),
                      "check": {k: {m: check[k][m] for m in ("agreement", "max_abs_logit_diff", "metrics")
                                    if m in check[k]} for k in ("fp32", "int8") if k in check},
                      "sizes": info["sizes"]}))
    return 0


def _early_exit(args, task, model, heads, loader, examples, compare: list[tuple[str, str]]) -> dict:
    """Metrics of the early-exit predictions (``--exit-threshold``), a sweep over thresholds
    (``--exit-sweep``, a table on stderr), other models on the same rows (``compare``: ``_compare_specs``) and
    the plot (``--plot``); see models/exits.py."""
    import torch

    from .models.exits import early_exit, predict_exits

    logits = torch.from_numpy(predict_exits(model, heads, loader)).unbind(1)  # one (rows, classes) per exit

    def at(threshold: float) -> dict:
        chosen, layers = early_exit(logits, heads.layers, threshold)
        return {"threshold": threshold, "metrics": _metrics(task, chosen.numpy(), examples),
                "mean_layers": round(layers.float().mean().item(), 4),
                "stopped_at": {str(layer): int((layers == layer).sum()) for layer in heads.layers}}

    out = {"metrics": _metrics(task, logits[-1].numpy(), examples),
           "exits": {str(layer): _metrics(task, z.numpy(), examples) for layer, z in zip(heads.layers, logits)}}
    if args.exit_threshold is not None:
        out["early_exit"] = at(args.exit_threshold)
        if args.predictions:  # the early exit's at H, with the layer each row stopped at (written by the caller)
            chosen, layers = early_exit(logits, heads.layers, args.exit_threshold)
            out["_predictions"] = (chosen.numpy(), layers.numpy())
    if args.exit_sweep:
        main = task.main_metric
        out["sweep"] = [{"threshold": r["threshold"], main: r["metrics"][main], "mean_layers": r["mean_layers"]}
                        for r in map(at, SWEEP)]
        print(f"{'threshold':>9}  {main:>9}  mean layers (of {heads.n_layers})", file=sys.stderr)
        for r in out["sweep"]:
            print(f"{r['threshold']:9.2f}  {r[main]:9.4f}  {r['mean_layers']:.2f}", file=sys.stderr)
        if compare:
            out["compare"] = _compared(compare, task, examples, args)
            for label, c in out["compare"].items():
                print(f"{label}: {main} {c['metrics'][main]:.4f} at {c['layers']} layers", file=sys.stderr)
        if args.plot:
            from .plots import exit_curve

            exit_curve(args.plot, [{"threshold": r["threshold"], "x": r["mean_layers"], "y": r[main]}
                                   for r in out["sweep"]],
                       [{"x": int(k), "y": m[main]} for k, m in out["exits"].items()],
                       [{"label": label, "x": c["layers"], "y": c["metrics"][main]}
                        for label, c in out.get("compare", {}).items()],
                       main, f"early exit, {task.name} ({len(examples)} rows)")
            out["plot"] = args.plot
    return out


def _compare_specs(specs: list[str]) -> list[tuple[str, str]]:
    """``--compare [LABEL=]MODEL`` values as (label, model folder): a run folder stands for its ``model/``; the
    label defaults to the run's folder name."""
    from pathlib import Path

    out = []
    for spec in specs:
        label, _, path = spec.partition("=") if "=" in spec else ("", "", spec)
        p = Path(path)
        if (p / "model" / "config.json").is_file() and not (p / "config.json").is_file():
            p = p / "model"
        if not (p / "config.json").is_file():
            raise TextDistillError(f"--compare {spec}: {path} is no saved model or run folder (no config.json)")
        out.append((label or (p.parent.name if p.name == "model" else p.name), str(p)))
    return out


def _compared(specs: list[tuple[str, str]], task, examples, args) -> dict:
    """Each ``--compare`` model's metrics on the rows of the sweep (its own tokenizer) and its layer count."""
    from .data.batching import stream_loader
    from .evaluate import compute_metrics, predict
    from .models.checks import check_max_length
    from .models.loading import load_model, load_tokenizer

    out = {}
    for label, path in specs:
        model, head_new = load_model(path, task.num_labels, task.labels)
        layers = getattr(model.config, "num_hidden_layers", None)
        if head_new or not layers:
            raise TextDistillError(f"--compare {path}: " + ("the model has no classification head (not fine-tuned)"
                                                            if head_new else "no transformer layers to place"))
        check_max_length(model.config, args.max_length, "--max-length", path)
        loader = stream_loader(examples, load_tokenizer(path), args.batch_size, args.max_length, task.is_regression)
        out[label] = {"model": path, "layers": layers,
                      "metrics": compute_metrics(task, predict(model, loader), examples.labels)}
    return out


def _int_at_least(low: int):
    """An argparse type: an integer >= ``low`` (a bad value is one line naming the option, exit code 2)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    parse.__name__ = f"integer >= {low}"
    return parse


POSITIVE, NATURAL = _int_at_least(1), _int_at_least(0)


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (``textdistill: error: evaluate: argument --batch-size: ...``), exit code 2."""

    def error(self, message):
        command = self.prog.split(" ", 1)[1] + ": " if " " in self.prog else ""
        raise TextDistillError(f"{command}{message} (see {self.prog} --help)")


def _suite(args) -> int:
    from .dist import single_process
    from .suite import describe, run_suite

    single_process("textdistill suite")
    print(json.dumps(describe(run_suite(args.suite, only=args.only, dry_run=args.dry_run, tasks=args.task,
                                        seeds=args.seed, any_version=args.resume_any_version,
                                        summary_only=args.summary))))
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


def _significance(args) -> int:
    from .data.tasks import get_task
    from .significance import compare, summary_line

    task = get_task(args.task)
    if args.output:
        _check_writable(args.output, "--output")
    result = compare(task, args.a, args.b, metric=args.metric, resamples=args.resamples,
                     confidence=args.confidence, seed=args.seed)
    print(summary_line(result), file=sys.stderr)
    if args.output:
        _write_json(args.output, result, "--output")
    print(json.dumps(result))
    return 0


def _report(args) -> int:
    from .report import write_report

    print(json.dumps(write_report(args.runs, args.output, title=args.title, teacher=args.teacher,
                                  measure=args.measure_speed)))
    return 0


def _demo(args) -> int:
    from .demo import main as demo_main

    return demo_main(args.output, args.overwrite)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="textdistill", description=__doc__)
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
    p.add_argument("--runtime", choices=["torch", "onnx", "torch-bf16", "auto"], help="run the teacher in PyTorch, ONNX "
                   "Runtime or PyTorch under bf16 autocast; auto: bf16 where it is native, else ONNX Runtime "
                   "(teacher_cache.runtime)")
    p.add_argument("--overwrite", action="store_true", help="rebuild an existing cache")
    p.add_argument("--allow-weak-teacher", action="store_true",
                   help="store the outputs of a teacher that scores near chance on the dev rows (refused otherwise)")
    p.set_defaults(fn=_cache)
    p = sub.add_parser("augment", help="generate a recipe's transfer set, augmented or data-free (synthetic), "
                                       "to read before distilling with --set transfer.dir=FOLDER")
    p.add_argument("--recipe", "-r", required=True, help="a recipe with a transfer.augment or transfer.synthetic "
                                                         "section")
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
    p.add_argument("--split", help="with --data-dir: the task's split (default dev)")
    p.add_argument("--file", help="a task file to evaluate on (instead of --data-dir and --split)")
    p.add_argument("--batch-size", type=POSITIVE, default=64)
    p.add_argument("--max-length", type=_int_at_least(2), default=128, help="tokens per text (at least 2: [CLS] "
                   "and [SEP]; at most what the model's positions allow)")
    p.add_argument("--output", help="also write the result as JSON to this file")
    p.add_argument("--predictions", metavar="FILE",
                   help="also write each row's prediction to FILE: JSON lines (row, line, prediction, probabilities, "
                        "the gold label where there is one), or GLUE's submission form (index<TAB>prediction) for a "
                        ".tsv name; the rows may then have no labels (a test file: no metrics)")
    p.add_argument("--exit-threshold", type=float, metavar="H",
                   help="early exit (a 'scheme: self' model): each example stops at the first exit whose normalised "
                        "entropy is below H; reports its metrics and mean_layers")
    p.add_argument("--exit-sweep", action="store_true",
                   help=f"early exit at thresholds {', '.join(map(str, SWEEP))}: main metric and mean layers")
    p.add_argument("--plot", metavar="PNG", help="with --exit-sweep: plot the metric against mean layers")
    p.add_argument("--compare", action="append", metavar="[LABEL=]MODEL",
                   help="with --exit-sweep: also evaluate this model (a saved model or run folder, e.g. a separately "
                        "distilled student) on the same rows and place it at its layer count (repeatable)")
    p.set_defaults(fn=_evaluate)
    p = sub.add_parser("significance", help="is model B better than A on the same rows, or noise? Paired "
                                            "permutation test, bootstrap interval, McNemar, seeds' t-test")
    p.add_argument("--task", required=True)
    p.add_argument("--a", nargs="+", required=True, metavar="PREDICTIONS",
                   help="model A's `evaluate --predictions` JSON-lines files, or run folders (their "
                        "dev_predictions.jsonl); one per seed")
    p.add_argument("--b", nargs="+", required=True, metavar="PREDICTIONS",
                   help="model B's, of the same rows (as many files as A for the permutation test)")
    p.add_argument("--metric", help="one of the task's metrics (default: its main one)")
    p.add_argument("--resamples", type=POSITIVE, default=9999, help="permutations and bootstrap samples (9999)")
    p.add_argument("--confidence", type=float, default=0.95, help="of the bootstrap interval (0.95)")
    p.add_argument("--seed", type=int, default=0, help="of the resampling")
    p.add_argument("--output", help="also write the result as JSON to this file")
    p.set_defaults(fn=_significance)
    p = sub.add_parser("export", help="export a saved student to ONNX (optionally int8), checked against PyTorch")
    p.add_argument("--model", required=True, help="a saved student folder (config.json, model.safetensors, tokenizer)")
    p.add_argument("--output", "-o", required=True, help="folder: model.onnx, config.json, tokenizer, export.json")
    p.add_argument("--format", choices=["onnx"], default="onnx")
    p.add_argument("--int8", choices=["dynamic", "static"],
                   help="ONNX Runtime int8 quantization; static calibrates on training texts")
    p.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=None,
                   help="--int8 dynamic: one weight scale per output channel (default: as the student was trained "
                        "with student.quantize, else per tensor)")
    p.add_argument("--task", help="with --data-dir or --file: check the export on these rows (else a built-in sample)")
    p.add_argument("--data-dir", help="the task's data: the check runs on its dev file, static calibration on train")
    p.add_argument("--file", help="the rows of the check (a task file)")
    p.add_argument("--calibration", metavar="FILE", help="--int8 static: calibration texts (default: the train file "
                                                           "under --data-dir)")
    p.add_argument("--calibration-rows", type=POSITIVE, default=200, metavar="N", help="calibration rows (default 200)")
    p.add_argument("--min-agreement", type=float, default=0.97,
                   help="refuse an int8 model whose argmax agrees with PyTorch's on fewer rows (default 0.97)")
    p.add_argument("--opset", type=POSITIVE, default=17)
    p.add_argument("--batch-size", type=POSITIVE, default=32)
    p.add_argument("--max-length", type=_int_at_least(2), default=128)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(fn=_export)
    p = sub.add_parser("suite", help="run a suite file: tasks x methods x seeds (x a grid), resumable, one table")
    p.add_argument("suite", help="the suite YAML (see src/textdistill/suite.py)")
    p.add_argument("--only", metavar="NAME", help="run only the entry of this name")
    p.add_argument("--task", action="append", metavar="TASK", help="run only this task's runs (repeatable); the "
                   "teachers of other tasks are not fine-tuned")
    p.add_argument("--dry-run", action="store_true", help="list the runs (done / todo) and stop")
    p.add_argument("--summary", action="store_true", help="write <out>/summary.md and .csv from the finished runs "
                   "and stop, training nothing (out-of-domain figures not yet computed are computed); a suite also "
                   "rewrites them after each run")
    p.add_argument("--seed", type=int, action="append", metavar="SEED",
                   help="run only this seed's runs (repeatable): e.g. one seed of everything first")
    p.add_argument("--resume-any-version", action="store_true",
                   help="continue interrupted runs even from checkpoints of other textdistill code (recorded in "
                        "their metrics)")
    p.set_defaults(fn=_suite)
    p = sub.add_parser("layer-map", help="show which teacher layer each student layer learns from")
    p.add_argument("--strategy", required=True, help="a map name, or 'all'")
    p.add_argument("--teacher-layers", type=POSITIVE, required=True)
    p.add_argument("--student-layers", type=POSITIVE, required=True)
    p.add_argument("--epoch", type=NATURAL, default=0, help="first epoch to show (0-based), for random maps")
    p.add_argument("--epochs", type=POSITIVE, default=3, help="how many epochs of draws to show for random maps")
    p.add_argument("--seed", type=int, default=0, help="seed of random maps (a run uses train.seed)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=_layer_map)
    p = sub.add_parser("report", help="a markdown report with plots (Pareto, learning curves, %% of teacher) of "
                                      "finished runs")
    p.add_argument("runs", nargs="+", metavar="RUNS", help="run folders (metrics.json), or folders of them "
                                                           "(searched recursively)")
    p.add_argument("--output", "-o", required=True, help="folder: report.md, results.csv and the PNG plots")
    p.add_argument("--title", help="the report's heading")
    p.add_argument("--teacher", metavar="RUN", help="the teacher run of its task (default: the run whose method "
                                                    "is 'teacher')")
    p.add_argument("--measure-speed", action="store_true",
                   help="time the teacher and each student (batch of 32 dev texts) instead of using the "
                        "parameter ratio as speed-up")
    p.set_defaults(fn=_report)
    p = sub.add_parser("demo", help="the README demo: a teacher and four 3-layer students (FT, KD, PKD-Skip, TinyBERT + augmented) on SST-2")
    p.add_argument("--output", "-o", default="runs/demo")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(fn=_demo)
    return parser


def _terminate(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        args = build_parser().parse_args(argv)
    except TextDistillError as e:  # a usage error (_Parser): one line, like every other bad input
        print(f"textdistill: error: {e}", file=sys.stderr)
        return 2
    if threading.current_thread() is threading.main_thread():  # SIGTERM (a scheduler, kill) as Ctrl-C
        signal.signal(signal.SIGTERM, _terminate)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # transformers' per-load/per-save bars; ours stay
    try:
        return args.fn(args)
    except TextDistillError as e:
        print(f"textdistill: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"textdistill: {str(e) or 'interrupted (nothing was written)'}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
