"""Tables of results (markdown), inference speed of a teacher and its students, and ``textdistill report``:
a markdown report with plots (plots.py) of finished runs."""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import statistics
import tempfile
from pathlib import Path

from . import TextDistillError

log = logging.getLogger("textdistill")


def markdown_table(header: list[str], rows: list[list]) -> str:
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in cells[1:]])


def write_json(path, record, root: Path) -> None:
    """A benchmark's JSON record (indented), with the paths under ``root`` written relative to it: no paths of
    the machine that measured it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text((json.dumps(record, indent=2) + "\n").replace(str(root) + "/", ""))


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def precision_mix(precisions) -> str:
    """``"bf16 + fp32"`` where the runs trained in more than one precision, by their recorded ``mixed_precision``
    (None: not recorded), else ``""``. A chain's metrics.json records its links' values joined by ``+``
    (``"bf16+no"``): each counts, so runs that are all such chains are a mix too."""
    known = sorted({"fp32" if p == "no" else p for ps in precisions if ps for p in ps.split("+")})
    return " + ".join(known) if len(known) > 1 else ""


def mean_cell(values: list[float], precisions=()) -> str:
    """``mean ± sd (n)`` of a table cell (``mean (1)`` for one value, empty for none). ``precisions``: the runs'
    recorded ``mixed_precision`` (metrics.json; None where a run did not record it): a cell over runs of other
    precisions (``auto`` on machines with and without native bf16) says so, e.g. ``[bf16 + fp32]``."""
    if not values:
        return ""
    mean, sd = mean_std(values)
    note = f" [{mixed}]" if (mixed := precision_mix(precisions)) else ""
    return (f"{mean:.2f} ± {sd:.2f} ({len(values)})" if len(values) > 1 else f"{mean:.2f} (1)") + note


def _architecture(model, batch: dict) -> tuple | None:
    """What a PyTorch model's forward time depends on: its modules' types, its parameters' shapes and dtypes, and
    the batch's shapes; None for anything else (an ONNX Runtime session: timed on its own)."""
    import torch

    if not isinstance(model, torch.nn.Module):
        return None
    return (tuple((n, type(m).__name__) for n, m in model.named_modules()),
            tuple((n, tuple(p.shape), str(p.dtype)) for n, p in model.named_parameters()),
            tuple((k, tuple(v.shape)) for k, v in sorted(batch.items())))


def speed_table(models: dict, batch: dict | None, rounds: int = 5, repeats: int = 10,
                batches: dict[str, dict] | None = None, spread: dict | None = None) -> dict[str, float]:
    """Median forward latency (seconds) of each model on the same tokenized batch (or, for models with
    different tokenizers, on ``batches[name]``: the same texts, each tokenized for its model).

    The models are timed in interleaved rounds (A, B, C, A, B, C, ...) so that machine noise hits
    all of them alike; the median over rounds is returned. Models of one architecture on batches of one shape
    (students that differ only in their weights) are timed once and share the figure: timed apart, the noise
    between them reads as a difference of methods. ``spread``, if given, receives each model's half range over
    the rounds relative to its median.
    """
    from .evaluate import latency

    timed: dict[tuple, str] = {}  # architecture -> the model timed for it
    stands_for = {}
    for name, model in models.items():
        key = _architecture(model, batches[name] if batches else batch)
        stands_for[name] = name if key is None else timed.setdefault(key, name)
    times = {name: [] for name in set(stands_for.values())}
    for _ in range(rounds):
        for name in models:
            if name in times:
                times[name].append(latency(models[name], batches[name] if batches else batch, repeats=repeats))
    median = {name: statistics.median(v) for name, v in times.items()}
    if spread is not None:
        spread.update({name: (max(times[rep]) - min(times[rep])) / 2 / median[rep] for name, rep in stands_for.items()})
    return {name: median[rep] for name, rep in stands_for.items()}


# ---------------------------------------------------------------------------------------------------------
# textdistill report RUNS... -o OUT: a markdown report (tables per task) and PNG plots (plots.py) of finished runs


def find_runs(paths: list[str]) -> list[Path]:
    """Run folders (holding a ``metrics.json``) among ``paths``, each a run folder or a folder of them (searched
    recursively; hidden folders such as an unfinished ``.NAME.partial`` are skipped, and a run's own subfolders
    are not searched: the links of a chained run belong to it)."""
    found: dict[Path, None] = {}
    for arg in paths:
        top = Path(arg)
        if not top.is_dir():
            raise TextDistillError(f"report: {arg}: no such folder")
        before = len(found)
        for folder, dirs, files in os.walk(top):
            if "metrics.json" in files:
                found.setdefault(Path(folder), None)
                dirs.clear()
            else:
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if len(found) == before and not (top / "metrics.json").is_file():
            raise TextDistillError(f"report: {arg}: no metrics.json in it or below it (not a run folder or a folder "
                                   f"of runs)")
    return list(found)


def _read_metrics(folder: Path) -> dict:
    try:
        m = json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError) as e:
        raise TextDistillError(f"report: {folder / 'metrics.json'}: unreadable ({e})") from None
    # a chained run (stages, generations): its last link holds the student, its size and its learning curves
    links = m.get("stages") or m.get("generations") or []
    if links and isinstance(links[-1], dict) and (folder / str(links[-1].get("name"))).is_dir():
        last = folder / links[-1]["name"]
        if (last / "metrics.json").is_file():
            m = {**json.loads((last / "metrics.json").read_text()), **m}
        m["_model"] = last / "model"
    return m


def load_run(folder: Path) -> dict | None:
    """``{folder, model, task, method, layers, seed, value, metric, ...}`` of a run, or None when its metrics are not
    a training run's (no task, method or main dev metric)."""
    m = _read_metrics(folder)
    metric = m.get("main_metric")
    if not (m.get("task") and m.get("method") and isinstance(m.get("dev"), dict) and metric in m["dev"]):
        return None
    return {"folder": folder, "model": m.get("_model", folder / "model"), "task": m["task"], "method": m["method"],
            "layers": m.get("student_layers"), "seed": m.get("seed"),
            # the pre-trained layers a sliced student keeps (every:4 and first:3 are different students)
            "kept_layers": tuple(v for _, v in sorted((m.get("student_from_teacher_layers") or {}).items(),
                                                      key=lambda kv: int(kv[0]))) or None,
            "metric": metric, "value": m["dev"][metric],
            "params": m.get("params_student"), "params_teacher": m.get("params_teacher"),
            "train_seconds": m.get("train_seconds"), "history": m.get("history") or [],
            "mixed_precision": m.get("mixed_precision"),
            "dev_file": (m.get("data") or {}).get("dev"), "taught_by": _taught_by(folder, metric)}


def _taught_by(folder: Path, metric: str) -> dict | None:
    """The teacher that taught a run, as a suite records it beside the run's metrics (``teacher.json``: its name and
    dev figures), if it holds the run's main metric; None otherwise."""
    try:
        t = json.loads((folder / "teacher.json").read_text())
        return {"name": t.get("name"), "value": float(t["dev"][metric])}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def group_runs(runs: list[dict]) -> dict[str, list[dict]]:
    """Per task, groups of runs (same method, student depth and kept pre-trained layers: the seeds of one table
    row), with a label that names the depth where one method appears at several, and the kept layers where one
    method has several students of one depth (PKD's first 3 layers vs every fourth). A seed twice in a group (two
    runs of one configuration and seed, or configurations this grouping cannot tell apart, such as grid points) is
    logged."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["task"], r["method"], r["layers"], r.get("kept_layers")), []).append(r)
    by_task: dict[str, list[dict]] = {}
    for (task, method, layers, kept), members in groups.items():
        seeds = [r["seed"] for r in members if r["seed"] is not None]
        if len(set(seeds)) < len(seeds):
            log.warning("report: %s on %s%s: seed %s appears more than once (%s); the row averages them",
                        method, task, f" ({layers}L)" if layers is not None else "",
                        sorted({s for s in seeds if seeds.count(s) > 1}), ", ".join(_rel(r["folder"]) for r in members))
        by_task.setdefault(task, []).append({"task": task, "method": method, "layers": layers, "kept_layers": kept,
                                             "runs": sorted(members, key=lambda r: (r["seed"] is None, r["seed"]))})
    for task, gs in by_task.items():
        depths: dict[str, set] = {}
        kinds: dict[tuple, set] = {}
        for g in gs:
            depths.setdefault(g["method"], set()).add(g["layers"])
            kinds.setdefault((g["method"], g["layers"]), set()).add(g["kept_layers"])
        for g in gs:
            several_kept = len(kinds[(g["method"], g["layers"])]) > 1
            inside = ([f"{g['layers']}L"] if len(depths[g["method"]]) > 1 or several_kept else []) + (
                [f"layers {','.join(map(str, g['kept_layers']))}"] if several_kept and g["kept_layers"] else [])
            g["label"] = g["method"] + (f" ({': '.join(inside)})" if inside else "")
            values = [r["value"] for r in g["runs"]]
            g["mean"], g["sd"] = mean_std(values)
            g["params"] = g["runs"][0]["params"]
        gs.sort(key=lambda g: (g["method"] != "teacher", -(g["layers"] or 0), g["method"], g["kept_layers"] or ()))
    return dict(sorted(by_task.items()))


def _pick_teacher(task: str, groups: list[dict], teacher: dict | None) -> dict | None:
    if teacher is not None and teacher["task"] == task:
        return next(g for g in groups if teacher in g["runs"])
    found = [g for g in groups if g["method"] == "teacher"]
    if len(found) > 1:
        raise TextDistillError(f"report: task {task}: {len(found)} teachers ("
                               + ", ".join(g["label"] for g in found) + "); choose one with --teacher RUN")
    return found[0] if found else None


def _batch(model_dir: Path, texts, max_length: int) -> dict:
    from .models.loading import load_tokenizer

    tokenizer = load_tokenizer(str(model_dir))
    enc = tokenizer(texts.text_a, texts.text_b, padding=True, truncation=True, max_length=max_length,
                    return_tensors="pt")
    return {k: v for k, v in enc.items() if k in tokenizer.model_input_names}


def measure_speed(task: str, teacher: dict, groups: list[dict], rows: int = 32) -> tuple[dict | None, str]:
    """Teacher latency / student latency of each group (its first run's model), batched: ``rows`` of the task's
    dev texts, tokenization excluded, interleaved rounds, median (:func:`speed_table`). ``(None, why)`` when a
    model folder or the dev file is missing."""
    from .data.readers import load_examples
    from .data.splits import resolve_task
    from .data.tasks import get_task
    from .models.loading import load_model
    from .recipe import load_recipe

    first = teacher["runs"][0]
    folders = {g["label"]: g["runs"][0]["model"] for g in groups}
    missing = [str(_rel(f)) for f in folders.values() if not (Path(f) / "config.json").is_file()]
    if missing:
        return None, f"model folder missing ({', '.join(missing)})"
    dev = next((r["dev_file"] for g in [teacher, *groups] for r in g["runs"]
                if r["dev_file"] and Path(r["dev_file"]).is_file()), None)
    if dev is None:
        return None, "the dev file the runs were evaluated on is not found"
    recipe_file = first["folder"] / "recipe.yaml"
    recipe = load_recipe(str(recipe_file)) if recipe_file.is_file() else None
    task_obj = resolve_task(recipe) if recipe else get_task(task)
    max_length = recipe.train.max_length if recipe else 128
    texts = load_examples(task_obj, dev, max_rows=rows)
    models, batches = {}, {}
    for label, folder in folders.items():
        models[label] = load_model(str(folder), task_obj.num_labels, task_obj.labels)[0].eval()
        batches[label] = _batch(Path(folder), texts, max_length)
    spread: dict = {}
    seconds = speed_table(models, None, batches=batches, spread=spread)
    t = seconds[teacher["label"]]
    for g in groups:
        g["latency_ms"] = 1000 * seconds[g["label"]]
    return {g["label"]: t / seconds[g["label"]] for g in groups}, (
        f"measured: median forward time of a batch of {len(texts)} dev texts over 5 interleaved rounds "
        f"(tokenization excluded; models of one architecture timed once), the teacher's {1000 * t:.1f} ms / the "
        f"student's; the rounds spread by up to ±{100 * max(spread.values()):.0f} % around a median")


def _rel(path) -> str:
    """A path relative to the current directory (never an absolute path of this machine in a report)."""
    return os.path.relpath(Path(path).absolute(), Path.cwd())


def _fmt_params(n) -> str:
    if not n:
        return ""
    return f"{n / 1e6:.1f}M" if n >= 1e7 else f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}K"


def write_report(paths: list[str], out_dir: str, title: str | None = None, teacher: str | None = None,
                 measure: bool = False, argv: list[str] | None = None) -> dict:
    """``OUT/report.md`` and ``OUT/*.png`` from the runs under ``paths``; returns what was written."""
    folders = find_runs(paths)
    teacher_run = None
    if teacher is not None:
        if not (Path(teacher) / "metrics.json").is_file():
            raise TextDistillError(f"--teacher {teacher}: not a run folder (no metrics.json)")
        teacher_run = load_run(Path(teacher))
        if teacher_run is None:
            raise TextDistillError(f"--teacher {teacher}: its metrics.json has no task, method or dev metric")
        folders = [f for f in folders if f.resolve() != Path(teacher).resolve()] + [Path(teacher)]
    runs, skipped = [], []
    for folder in folders:
        r = teacher_run if teacher_run is not None and folder == Path(teacher) else load_run(folder)
        (runs if r else skipped).append(r or folder)
    if not runs:
        raise TextDistillError(f"report: no training runs among {', '.join(paths)} (metrics.json without a task, "
                               f"method or dev metric)")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TextDistillError(f"report: -o {out_dir}: cannot create the folder ({e.strerror})") from None

    # everything is written into a hidden folder inside OUT, then moved up: a failure part-way (a model that cannot
    # be timed, a full disk) leaves OUT's files as they were, not new plots beside an old report.md
    try:
        stage = Path(tempfile.mkdtemp(prefix=".report.", suffix=".partial", dir=out))
    except OSError as e:
        raise TextDistillError(f"report: -o {out_dir}: cannot write into the folder ({e.strerror})") from None
    try:
        result = _compose(stage, out, paths, runs, skipped, teacher_run, title=title, teacher=teacher, measure=measure)
        for f in sorted(stage.iterdir()):
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return result


def _compose(stage: Path, out: Path, paths, runs, skipped, teacher_run, *, title, teacher, measure) -> dict:
    """write_report's tables and plots, written into ``stage`` (moved into ``out`` by the caller)."""
    from . import plots
    from .evaluate import METRICS

    command = "textdistill report " + " ".join(_rel(p) for p in paths) + f" -o {_rel(out)}" + (
        f" --teacher {_rel(teacher)}" if teacher else "") + (" --measure-speed" if measure else "") + (
        f" --title '{title}'" if title else "")
    lines = [f"# {title or 'Distillation runs'}", "",
             f"Written by `{command}` from {len(runs)} run{'s' * (len(runs) != 1)} (paths relative to the "
             f"working directory). Dev metric: mean ± sd over seeds; % of teacher: the mean of a row over the "
             f"teacher's mean (over the teachers that taught its runs, where a suite recorded them: teacher.json)."]
    if skipped:
        lines += ["", "Skipped (metrics.json of no training run): " + ", ".join(f"`{_rel(f)}`" for f in skipped)]
    written, csv_rows = [], []
    for task, groups in group_runs(runs).items():
        metric = groups[0]["runs"][0]["metric"]
        scale = 100 if metric in METRICS else 1
        t_group = _pick_teacher(task, groups, teacher_run)
        students = [g for g in groups if g is not t_group]
        t_mean = t_group["mean"] if t_group else None
        t_params = t_group["params"] if t_group else next((r["params_teacher"] for g in students for r in g["runs"]
                                                             if r["params_teacher"]), None)
        # speed-up: measured where asked and possible, else the parameter ratio (and the axis says so)
        speedups, how = None, ""
        if measure and t_group:
            speedups, how = measure_speed(task, t_group, [t_group, *students])
            if speedups is None:
                how = f"--measure-speed: not measured ({how}); "
        if speedups is None:
            speedups = {g["label"]: t_params / g["params"] for g in [*([t_group] if t_group else []), *students]
                        if t_params and g["params"]}
            how += "parameters of the teacher / of the student (not a measured speed)"
            axis = "parameters of the teacher / of the student"
        else:
            axis = "measured speed-up over the teacher (batch of 32, median)"
        rows, own = [], []
        for g in groups:
            mean, sd = scale * g["mean"], scale * g["sd"]
            # % of teacher: over the teachers that taught the row's runs (a suite's teacher.json), where recorded,
            # else over the teacher row (a teacher fine-tuned again may score otherwise than the one that taught)
            ref = t_mean
            if g is not t_group and any(r["taught_by"] for r in g["runs"]) and t_mean is not None:
                ref = statistics.mean(r["taught_by"]["value"] if r["taught_by"] else t_mean for r in g["runs"])
                if abs(ref - t_mean) > 1e-9:
                    own.append(f"{g['label']} ({scale * ref:.2f})")
            kept = 100 * g["mean"] / ref if ref else None
            g["kept"], g["kept_sd"] = kept, (100 * g["sd"] / ref if ref else None)
            seeds = ", ".join(str(r["seed"]) for r in g["runs"])
            if mixed := precision_mix(r["mixed_precision"] for r in g["runs"]):  # (a row over runs of two precisions)
                seeds += f" [{mixed}]"
            secs = [r["train_seconds"] for r in g["runs"] if r["train_seconds"] is not None]
            speed = speedups.get(g["label"])
            rows.append([g["label"] + (" (teacher)" if g is t_group and g["method"] != "teacher" else ""),
                         g["layers"] if g["layers"] is not None else "", seeds or "",
                         f"{mean:.2f} ± {sd:.2f}" if len(g["runs"]) > 1 else f"{mean:.2f}",
                         f"{kept:.1f}" if kept is not None else "", _fmt_params(g["params"]),
                         f"{speed:.2f}×" if speed else "", _fmt_seconds(statistics.mean(secs)) if secs else ""])
            csv_rows.append({"task": task, "method": g["method"], "label": g["label"], "layers": g["layers"],
                             "seeds": len(g["runs"]), "metric": metric, "mean": g["mean"], "sd": g["sd"],
                             "pct_of_teacher": kept, "params": g["params"], "speedup": speed,
                             "speedup_kind": "measured" if axis.startswith("measured") else "param_ratio",
                             "train_seconds": statistics.mean(secs) if secs else None})
        lines += ["", f"## {task}", "",
                  (f"Teacher: " + ", ".join(f"`{_rel(r['folder'])}`" for r in t_group["runs"])
                   + f" (row {t_group['label']}), dev {metric} {scale * t_mean:.2f}." if t_group else
                   "No teacher run for this task (method `teacher`, or --teacher RUN): no % of teacher."),
                  f"Speed-up: {how}.", *([] if not own else [
                      "", "% of teacher of " + ", ".join(own) + ": over the teachers that taught those runs (their "
                      "teacher.json; the teacher row for a run without one), which scored otherwise than the teacher "
                      "row."]), "",
                  markdown_table(["method", "layers", "seeds", f"dev {metric}" + (" ×100" if scale == 100 else ""),
                                  "% of teacher", "params", "speed-up", "train s"], rows)]
        images = []
        name = _slug(task)
        points = [{"label": g["label"], "x": speedups[g["label"]], "y": scale * g["mean"], "sd": scale * g["sd"],
                   "teacher": g is t_group} for g in groups if g["label"] in speedups]
        if any(not p["teacher"] for p in points):
            images.append(("accuracy vs speed-up", plots.pareto(stage / f"pareto-{name}.png", points, axis,
                                                                f"dev {metric}", f"{task}: students vs teacher")))
        if t_group and students:
            bars = [(g["label"], g["kept"], g["kept_sd"] if len(g["runs"]) > 1 else 0.0) for g in students]
            images.append(("% of teacher kept", plots.kept_bars(stage / f"kept-{name}.png", bars,
                                                                 f"{task}: % of teacher kept (dev {metric})")))
        for g in groups:
            if any(r["history"] for r in g["runs"]):
                images.append((f"learning curves: {g['label']}", plots.learning_curves(
                    stage / f"curves-{name}-{_slug(g['label'])}.png", [r["history"] for r in g["runs"]], metric, scale,
                    f"{task} {g['label']}: loss per term" + (f" (mean of {len(g['runs'])} seeds)"
                                                             if len(g["runs"]) > 1 else ""))))
        lines.append("")
        for caption, path in images:
            lines += [f"![{caption}]({path.name})", ""]
            written.append(path)
        lines += ["Runs:", ""] + [f"- {g['label']}: " + ", ".join(f"`{_rel(r['folder'])}`" for r in g["runs"])
                                  for g in groups]
    (stage / "report.md").write_text("\n".join(lines).rstrip() + "\n")
    _write_csv(stage / "results.csv", csv_rows)
    return {"report": _rel(out / "report.md"), "csv": _rel(out / "results.csv"), "runs": len(runs),
            "plots": [_rel(out / p.name) for p in written]}


def _fmt_seconds(s: float) -> str:
    return f"{s:.0f}" if s >= 10 else f"{s:.1f}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-") or "run"


def _write_csv(path: Path, rows: list[dict]) -> None:
    import csv

    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["task"])
        writer.writeheader()
        writer.writerows(rows)
