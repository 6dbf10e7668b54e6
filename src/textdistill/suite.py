"""Suites: many runs from one file -- tasks x methods x seeds (x a hyper-parameter grid) -- resumable, with
the teachers fine-tuned and their output caches built once, and one table at the end.

    textdistill suite suites/example.yaml [--only NAME] [--task TASK ...] [--seed SEED ...] [--dry-run | --summary]

A suite file::

    out: runs/suite-example              # run folders: <out>/<task>/<name>[-<grid point>]-s<seed>
    data_dir: ../shared/data/glue
    seeds: [1, 2, 3]
    teachers:                            # fine-tuned into <out>/teachers/<name> if absent (or a ready folder)
      minilm-rte: {task: rte}            #   recipe: recipes/teacher.yaml unless given; set: overrides
    runs:
      - name: kd
        recipe: recipes/kd.yaml
        tasks: {rte: minilm-rte}         # task -> its teacher (name above, or a model folder; null: none)
        set: {train.epochs: 3}           # overrides for every run of the entry
        grid: {terms.kd.args.temperature: [5, 10, 20], hard_weight: [0.5, 0.3]}   # every combination
        # tied keys: {"hard_weight,terms.kd.weight": [[0.5, 0.5], [0.3, 0.7]]}
        cache: true                      # logit/vector teacher outputs cached once per (task, teacher, taps)
        seeds: [1]                       # this entry's seeds (default: the suite's)
        search: {trials: 12}             # optional: only 12 grid points, chosen one after another by Optuna's
                                         #   TPE sampler (sampler: random, seed: 0), each run at every seed
        baseline: ft                     # optional: another entry (no grid); the summary tests this entry's
                                         #   gaps to it on the dev rows (runs' dev_predictions, seeds paired)
    ood: {sst2: [imdb, "imdb:test"]}     # also evaluate a task's runs on other sets (task: its dev file,
                                         #   task:split another split: IMDB's 2k subset and its 25k test)
    kept: results/suite-example          # optional: the figures of an earlier machine's runs, kept as small text
                                         #   in the same layout (<task>/<name>/metrics.json, ood.json,
                                         #   teachers/<name>/metrics.json; scripts/keep_results.sh): a run kept
                                         #   there is finished, and the summary reads it
    reference: references/pkd-glue-dev.csv   # a paper's figures (CSV: key,task,metric,value[,source]; the
                                         #   row keyed "teacher" is its teacher); an entry's `reference: KEY`
                                         #   puts the paper's % of teacher beside the run's, in that metric

A run whose ``metrics.json`` exists (under ``out`` or ``kept``) is skipped; an interrupted one (a ``.partial``
with a checkpoint, or a chain's finished links) is resumed (from a checkpoint of other textdistill code only with
``--resume-any-version``). Which of the two happens (or neither: finished meanwhile) is decided while holding the
run's own lock (``files.output_lock``): two suites that share runs do not train one twice; a run another process
holds stops the suite in one line, a teacher another suite is fine-tuning is waited for and then used. The
summary is rewritten after each run (``--summary``: written from the finished runs, computing missing
out-of-domain figures, without training). The summary (``<out>/summary.md``,
``summary.csv``) holds, per task, its teachers (dev and out-of-domain figures) and, per entry (and grid point),
the main dev metric as mean ± sd over seeds, % of the teacher (for a run without one, FT: of the suite's teacher
of that task, if it has exactly one), parameters, seconds and the out-of-domain metrics; with a grid, the points
ranked by mean dev metric and the best point's recipe (``<out>/best-<entry>-<task>.yaml``; ``auto`` precisions stay
``auto`` there, to be resolved by the machine that runs it).

A budgeted search (``search``, needs the ``optuna`` package: ``pip install -e ".[search]"``) runs ``trials`` of the
grid's points instead of all of them: Optuna's sampler (TPE, or random) proposes a point from the grid's values,
every seed of it runs, and the mean dev metric (over the seeds run) is what the sampler learns from before it
proposes the next. The study is rebuilt from the finished runs each time the suite runs (no database): finished
points count and are never run again, a point interrupted mid-way is finished first, and a proposal of a point
already run is answered with its metric, not run again (after 200 such answers in a row the search stops: the
sampler keeps to the points it has). A point whose run fails (a refusal, a loss gone NaN) is recorded
(``<out>/<task>/.search-<entry>-failed.json``), counts as tried and is not proposed again: the search goes on with
other points. The points run are ranked and the best recipe written as for a full grid.

Kept figures (``kept``, a folder read relative to the working directory, as ``out`` is): after a machine is lost,
``runs/`` goes with it and the figures that ``scripts/keep_results.sh`` copied remain. Runs kept there are
finished (to run one again, delete its kept copy too). A teacher is fine-tuned only when a run still to do needs
its model -- again, if only its kept figures are left. Each run of a suite teacher records that teacher's dev
figures beside its metrics (``teacher.json``, kept with them), so a run's % of teacher is against the teacher
that taught it; a teacher fine-tuned again that scores otherwise gets a second row ("earlier") for the runs the
earlier one taught (runs kept without a teacher.json are taken as taught by the kept teacher's figures). A row
whose runs trained in other precisions (``train.mixed_precision: auto`` on machines with and without native
bf16, as each run's metrics.json records) says so in its seeds cell, e.g. "3 (bf16 + fp32)".
With a ``reference``, rows of entries that name a reference key also get the run's % of the teacher in the
reference's metric (e.g. accuracy where the main metric is F1) and the paper's own % of its teacher: a claim
compared point by point, not in absolute figures from another model.
"""
from __future__ import annotations

import csv
import itertools
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from . import TextDistillError
from .files import OutputBusy
from .recipe import read_yaml, validation_error
from .report import markdown_table, mean_std, precision_mix

log = logging.getLogger("textdistill")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _unique_seeds(seeds):
    if seeds is not None and len(set(seeds)) != len(seeds):
        raise ValueError(f"a seed is listed twice: {seeds}")
    return seeds


class TeacherEntry(_Strict):
    task: str
    recipe: str = "recipes/teacher.yaml"
    set: dict[str, Any] = Field(default_factory=dict)


class SearchCfg(_Strict):
    """A budgeted search over an entry's grid (Optuna) instead of every combination."""
    trials: int = Field(ge=1)  # grid points to run, each at every seed
    sampler: Literal["tpe", "random"] = "tpe"
    seed: int = 0  # of the sampler


class RunEntry(_Strict):
    name: str
    recipe: str
    tasks: dict[str, str | None]
    set: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    cache: bool = False
    seeds: list[int] | None = Field(None, min_length=1)  # this entry's seeds instead of the suite's
    reference: str | None = None  # its key in the suite's reference file (the paper's row to compare with)
    search: SearchCfg | None = None  # run only search.trials of the grid's points, chosen by Optuna
    baseline: str | None = None  # another entry (no grid): the summary tests each of this entry's gaps to it

    @field_validator("seeds")
    @classmethod
    def _unique(cls, v):
        return _unique_seeds(v)


class Suite(_Strict):
    out: str
    data_dir: str | None = None
    seeds: list[int] = Field(default_factory=lambda: [42], min_length=1)

    @field_validator("seeds")
    @classmethod
    def _unique(cls, v):
        return _unique_seeds(v)

    teachers: dict[str, TeacherEntry] = Field(default_factory=dict)
    runs: list[RunEntry] = Field(min_length=1)
    ood: dict[str, list[str]] = Field(default_factory=dict)
    reference: str | None = None  # a CSV of a paper's figures (key,task,metric,value[,source])
    kept: str | None = None  # a folder of kept figures in the layout of ``out`` (metrics.json, ood.json)


def _kept_place(suite: Suite, folder: Path) -> Path | None:
    """The place of a folder under ``out`` in the kept folder (None without ``kept``)."""
    if not suite.kept:
        return None
    return Path(suite.kept) / os.path.relpath(Path(folder).resolve(), Path(suite.out).resolve())


def finished(suite: Suite, folder: Path) -> Path | None:
    """Where a run's (or a teacher's) figures are: its folder under ``out`` if it has metrics.json, else the
    same place under ``kept`` (figures of an earlier machine), else None."""
    if (Path(folder) / "metrics.json").is_file():
        return Path(folder)
    kept = _kept_place(suite, folder)
    if kept is not None and (kept / "metrics.json").is_file():
        return kept
    return None


def load_reference(path: str) -> dict[tuple[str, str], tuple[str, float]]:
    """A paper's figures: ``{(key, task): (metric, value)}`` from a CSV with the columns key, task, metric (one of
    the task's metrics), value (a fraction, as in metrics.json) and optionally source; the key ``teacher`` is the
    paper's teacher."""
    from .data.tasks import get_task

    if not Path(path).is_file():
        raise TextDistillError(f"reference {path}: not found")
    out = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"key", "task", "metric", "value"} - set(reader.fieldnames or ())
        if missing:
            raise TextDistillError(f"{path}: the header needs the columns key, task, metric, value "
                                   f"(missing: {', '.join(sorted(missing))})")
        for row in reader:
            where = f"{path}: row {reader.line_num}"
            try:
                value = float(row["value"])
            except (TypeError, ValueError):
                raise TextDistillError(f"{where}: value {row['value']!r} is not a number") from None
            if not -1 <= value <= 1:
                raise TextDistillError(f"{where}: value {value} is not in [-1, 1] (a fraction, as metrics.json has "
                                       f"them: 0.912 for 91.2 %)")
            try:
                task = get_task(row["task"])
            except TextDistillError as e:
                raise TextDistillError(f"{where}: {e}") from None
            if row["metric"] not in task.metrics:
                raise TextDistillError(f"{where}: {row['task']} has no metric '{row['metric']}' (its metrics: "
                                       f"{', '.join(task.metrics)})")
            if (row["key"], row["task"]) in out:
                raise TextDistillError(f"{where}: {row['key']} on {row['task']} is listed twice")
            out[(row["key"], row["task"])] = (row["metric"], value)
    return out


def load_suite(path: str) -> Suite:
    try:
        suite = Suite.model_validate(read_yaml(path, "suite file"))
    except ValidationError as e:
        raise validation_error(e, path) from None
    from .data.tasks import get_task

    names = set()
    for i, entry in enumerate(suite.runs):
        if entry.name in names:
            raise TextDistillError(f"{path}: runs[{i}].name: duplicate entry '{entry.name}'")
        names.add(entry.name)
        if not Path(entry.recipe).is_file():
            raise TextDistillError(f"{path}: runs[{i}] ({entry.name}).recipe: {entry.recipe}: not found")
        if entry.search is not None:
            if not entry.grid:
                raise TextDistillError(f"{path}: runs[{i}] ({entry.name}).search: searches the entry's grid; give "
                                       f"it a grid")
            n = len(grid_points(entry.grid))
            if entry.search.trials > n:
                raise TextDistillError(f"{path}: runs[{i}] ({entry.name}).search.trials: {entry.search.trials} exceeds "
                                       f"the grid's {n} points (drop search to run them all)")
        for task, teacher in entry.tasks.items():
            get_task(task)  # unknown task: one line
            if teacher and teacher not in suite.teachers and not Path(teacher).is_dir():
                raise TextDistillError(f"{path}: runs[{i}] ({entry.name}).tasks.{task}: '{teacher}' is neither a "
                                       f"teacher of the suite nor a model folder")
    by_name = {e.name: e for e in suite.runs}
    for i, entry in enumerate(suite.runs):
        if entry.baseline is None:
            continue
        where = f"{path}: runs[{i}] ({entry.name}).baseline"
        base = by_name.get(entry.baseline)
        if base is None or base is entry:
            raise TextDistillError(f"{where}: '{entry.baseline}' is not another entry of the suite")
        if base.grid:
            raise TextDistillError(f"{where}: '{base.name}' has a grid; a baseline is one configuration")
        if not set(entry.tasks) & set(base.tasks):
            raise TextDistillError(f"{where}: '{base.name}' runs none of this entry's tasks")
    if suite.kept and not Path(suite.kept).is_dir():
        raise TextDistillError(f"{path}: kept: {suite.kept}: no such folder (create it, or drop kept:)")
    keys = {k for k, _ in load_reference(suite.reference)} if suite.reference else set()
    for i, entry in enumerate(suite.runs):
        if entry.reference is not None and entry.reference not in keys:
            where = (f"the reference file {suite.reference}" if suite.reference
                     else "a reference file (the suite names none)")
            raise TextDistillError(f"{path}: runs[{i}] ({entry.name}).reference: '{entry.reference}' is not a key of "
                                   f"{where}")
    try:
        plan(suite)  # (every run its own folder)
    except TextDistillError as e:
        raise TextDistillError(f"{path}: {e}") from None
    for task, others in suite.ood.items():
        get_task(task)
        for t in others:
            name, split = ood_split(t)
            if split not in get_task(name).files:
                raise TextDistillError(f"{path}: ood.{task}: task {name} has no '{split}' split (splits: "
                                       f"{', '.join(get_task(name).files)})")
    return suite


def ood_split(entry: str) -> tuple[str, str]:
    """``imdb`` (its dev file) or ``imdb:test`` (another split of the task)."""
    task, _, split = entry.partition(":")
    return task, split or "dev"


def grid_points(grid: dict[str, list]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in order (one empty point without a grid)."""
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def point_name(point: dict) -> str:
    """``kd.temperature=5-hard_weight=0.5`` (term keys without ``terms.`` and ``args.``); tied keys by all of
    theirs, ``hard_weight,ds.weight=0.5,0.5``."""
    def short(k):
        return k.strip().removeprefix("terms.").replace(".args.", ".")

    def one(k, v):
        if "," in k and isinstance(v, list):
            return f"{','.join(short(x) for x in k.split(','))}={','.join(map(str, v))}"
        return f"{short(k)}={v}"
    return "-".join(one(k, v) for k, v in point.items())


def point_overrides(point: dict) -> list[tuple[str, Any]]:
    """A grid key may tie several recipe keys, ``"hard_weight,terms.ds.weight": [[0.5, 0.5], [0.3, 0.7]]``
    (PKD's alpha sets both); its values then set them together."""
    out = []
    for key, value in point.items():
        keys = [k.strip() for k in key.split(",")]
        if len(keys) == 1:
            out.append((key, value))
        elif not isinstance(value, list) or len(value) != len(keys):
            raise TextDistillError(f"grid.{key}: each value must list {len(keys)} values, got {value!r}")
        else:
            out += list(zip(keys, value))
    return out


def plan(suite: Suite) -> list[dict]:
    """Every run of the suite: ``{entry, task, teacher, seed, point, out}``."""
    out = Path(suite.out)
    runs = []
    for entry in suite.runs:
        for task, teacher in entry.tasks.items():
            for point in grid_points(entry.grid):
                for seed in entry.seeds or suite.seeds:
                    name = entry.name + (f"-{point_name(point)}" if point else "") + f"-s{seed}"
                    runs.append({"entry": entry, "task": task, "teacher": teacher, "seed": seed, "point": point,
                                 "out": out / task / name})
    seen: dict[Path, dict] = {}
    for r in runs:  # two grid values that print alike (1e-05 and 0.00001), or a value listed twice
        if r["out"] in seen:
            raise TextDistillError(f"runs ({r['entry'].name}): two runs would share the folder {r['out']} (a grid "
                                   f"value listed twice, or two values that print the same?)")
        seen[r["out"]] = r
    return runs


def _teacher_folder(suite: Suite, name: str | None) -> str | None:
    if name is None:
        return None
    return str(Path(suite.out) / "teachers" / name / "model") if name in suite.teachers else name


def _overrides(suite: Suite, run: dict) -> list[tuple[str, Any]]:
    entry, task = run["entry"], run["task"]
    sets = [("task", task), ("train.seed", run["seed"])]
    if suite.data_dir:
        sets.append(("data.dir", suite.data_dir))
    teacher = _teacher_folder(suite, run["teacher"])
    if teacher:
        sets.append(("teacher", teacher))
    sets += list(entry.set.items()) + point_overrides(run["point"])
    return sets


def cache_folder(suite: Suite, run: dict, recipe) -> str:
    """The teacher-output cache of a ``cache: true`` run: one per (task, teacher, what the cache holds), so every
    run whose cache would hold the same outputs -- the same taps and teacher layers, training texts, max_length,
    dtype and the teacher pass's precision (teacher_cache.runtime torch-bf16) -- shares it, across seeds, grid
    points and entries (KD with a 6- and a 3-layer student: one logits cache). Needs the teacher's folder (read
    when the run starts, after the suite's teachers exist)."""
    import hashlib

    from transformers import AutoConfig

    from .models.loading import resolve_model_path
    from .schemes.cache import cache_plan, precision_key
    from .train import student_depth

    n_teacher = AutoConfig.from_pretrained(resolve_model_path(recipe.teacher)).num_hidden_layers
    # (logits alone: the student's depth does not matter, and a BiLSTM student has none)
    n_student = student_depth(recipe) if any(t.tap != "logits" for t in recipe.terms) else 0
    holds = {"taps": cache_plan(recipe.terms, n_teacher, n_student), "data": recipe.data.model_dump(),
             "transfer": recipe.transfer.model_dump(), "max_length": recipe.train.max_length,
             "dtype": recipe.teacher_cache.dtype}
    holds.update(precision_key(recipe.teacher_cache.runtime))  # (outputs of another precision: another cache)
    digest = hashlib.sha256(json.dumps(holds, sort_keys=True, default=str).encode()).hexdigest()[:10]
    # a teacher given as a folder (runs/teachers/x/model) names its cache by its last three parts, in one folder
    # name (not the parts above them: an absolute path would put this machine's folders into every kept recipe),
    # and a hash of the whole path keeps two folders apart that read alike so
    teacher = re.sub(r"[^A-Za-z0-9_.+-]+", "_", "/".join(Path(run["teacher"]).parts[-3:])).strip("_.")[-60:]
    if teacher != run["teacher"]:
        teacher += "-" + hashlib.sha256(str(Path(run["teacher"]).resolve()).encode()).hexdigest()[:6]
    return str(Path(suite.out) / "cache" / f"{run['task']}-{teacher}-{digest}")


def run_suite(path: str, only: str | None = None, dry_run: bool = False, tasks: list[str] | None = None,
              seeds: list[int] | None = None, any_version: bool = False, summary_only: bool = False) -> dict:
    from .recipe import load_recipe
    from .files import output_lock
    from .train import Interrupted, _run, resumable

    suite = load_suite(path)
    everything = plan(suite)
    for task in tasks or []:
        if not any(r["task"] == task for r in everything):
            raise TextDistillError(f"--task {task}: no run of that task in {path}")
    if only is not None and not any(r["entry"].name == only for r in everything):
        raise TextDistillError(f"--only {only}: no run entry of that name in {path}")
    for seed in seeds or []:
        if not any(r["seed"] == seed for r in everything):
            raise TextDistillError(f"--seed {seed}: no run of that seed in {path}")
    runs = [r for r in everything if (only is None or r["entry"].name == only) and (not tasks or r["task"] in tasks)
            and (not seeds or r["seed"] in seeds)]
    if not runs:
        asked = " ".join([f"--only {only}"] * (only is not None) + [f"--task {t}" for t in tasks or []]
                         + [f"--seed {s}" for s in seeds or []])
        raise TextDistillError(f"{asked}: no run matches all of these in {path}")
    # check every recipe before anything runs (and, of the offline ones, their teachers: one, or a list)
    recipes = [load_recipe(r["entry"].recipe, _overrides(suite, r)) for r in runs]
    from .schemes import SCHEMES
    from .schemes.teachers import teacher_list

    for r, recipe in zip(runs, recipes):
        if recipe.scheme == "offline":
            try:
                teacher_list(recipe)
            except TextDistillError as e:
                raise TextDistillError(f"{path}: runs ({r['entry'].name}, {r['task']}): {e}") from None
    searches = {_group(r) for r in runs if r["entry"].search is not None}
    if searches and seeds:
        raise TextDistillError(f"--seed: a search runs each point it picks at every seed of its entry "
                               f"({', '.join(sorted({e for e, _ in searches}))}); leave out --seed, or pick other "
                               f"entries with --only")
    # a teacher is needed by a run still to do: of a search, only while the search has points to run
    pending = {g for g in searches if not _search_done(suite, [r for r in runs if _group(r) == g])}
    needed = {r["teacher"] for r in runs if r["teacher"] in suite.teachers and not finished(suite, r["out"])
              and (r["entry"].search is None or _group(r) in pending)}
    if pending and not (dry_run or summary_only):
        _optuna()  # (one line now if it is not installed)
    if dry_run:
        for name in sorted(needed):
            if not (Path(suite.out) / "teachers" / name / "metrics.json").is_file():
                print(f"todo teacher {Path(suite.out) / 'teachers' / name}")
        for r in runs:
            where = finished(suite, r["out"])
            if r["entry"].search is not None and where is None:
                continue  # (which points run is decided as the search goes)
            print(f"{'todo' if where is None else 'done'} {r['out']}"
                  + (f" (kept: {where})" if where is not None and where != r["out"] else ""))
        for entry, task in sorted(searches):
            group = [r for r in runs if _group(r) == (entry, task)]
            e = group[0]["entry"]
            done, failed = len(_point_values(suite, group)), len(_failed_points(suite, group))
            print(f"search {entry} on {task}: {e.search.trials} of {len(grid_points(e.grid))} grid points by "
                  f"{e.search.sampler} ({done} finished" + (f", {failed} failed" if failed else "") + ")")
        return {"runs": len(runs)}
    if summary_only:
        return _summary_and_best(suite, everything)
    for name in sorted(needed):
        t = suite.teachers[name]
        folder = Path(suite.out) / "teachers" / name
        if (folder / "metrics.json").is_file():
            continue
        # (whether to run or resume is decided under the run's own lock; a teacher another suite is fine-tuning
        # now is waited for, then used)
        with output_lock(folder, wait=f"suite: teacher {name}"):
            if not (folder / "metrics.json").is_file():  # (another suite may have finished it meanwhile)
                sets = ([("task", t.task)] + ([("data.dir", suite.data_dir)] if suite.data_dir else [])
                        + list(t.set.items()))
                log.info("suite: fine-tuning teacher %s", name)
                _run(load_recipe(t.recipe, sets), folder, overwrite=True, distill=None, resume=resumable(folder),
                     any_version=any_version)
                _compare_with_kept(suite, name, folder)

    def execute(r: dict, recipe) -> None:
        if finished(suite, r["out"]):
            return
        with output_lock(r["out"]):  # (whether to run, resume or skip is decided under the run's own lock)
            if finished(suite, r["out"]):  # (another suite finished it meanwhile)
                return
            log.info("suite: %s", r["out"])
            if r["entry"].cache and recipe.teacher:
                recipe.teacher_cache.dir = cache_folder(suite, r, recipe)
            always = SCHEMES.get_or_fail(recipe.scheme, "scheme").always_distills
            distill = bool(recipe.teacher or recipe.teachers or always)
            try:
                _run(recipe, r["out"], overwrite=True, distill=distill, resume=resumable(r["out"]),
                     any_version=any_version)
            except Interrupted:
                raise Interrupted(f"interrupted; {r['out']} keeps its last checkpoint: run the suite again to "
                                  f"continue it") from None
            except KeyboardInterrupt:  # (before the run's first checkpoint: the runs finished before it stay)
                raise Interrupted(f"interrupted before {r['out']} wrote a checkpoint (the suite's finished runs are "
                                  f"kept): run the suite again to continue") from None
            if r["teacher"] in suite.teachers:  # the figures of the teacher that taught it, kept with its own
                t = json.loads((Path(suite.out) / "teachers" / r["teacher"] / "metrics.json").read_text())
                (r["out"] / "teacher.json").write_text(json.dumps(
                    {"name": r["teacher"], "dev": t["dev"], "main_metric": t.get("main_metric")}, indent=2) + "\n")
        try:  # kept current: a long suite's table grows run by run (and a summary problem stops no training)
            _summary_and_best(suite, everything)
        except TextDistillError as e:
            log.warning("suite: summary not updated (%s)", e)

    searched = set()
    for r, recipe in zip(runs, recipes):
        if r["entry"].search is None:
            execute(r, recipe)
        elif _group(r) not in searched:  # the whole search of (entry, task), where its first run is listed
            searched.add(_group(r))
            group = [(x, rx) for x, rx in zip(runs, recipes) if _group(x) == _group(r)]
            _search(suite, group, execute)
    return _summary_and_best(suite, everything)


def _group(r: dict) -> tuple[str, str]:
    return r["entry"].name, r["task"]


def _optuna():
    try:
        import optuna
    except ImportError:
        raise TextDistillError("search: needs the optuna package (pip install optuna, or pip install -e "
                               "\".[search]\")") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _failures_file(suite: Suite, group: list[dict]) -> Path:
    """Where a search records the points whose runs failed (so that it does not propose them again)."""
    r = group[0]
    return Path(suite.out) / r["task"] / f".search-{r['entry'].name}-failed.json"


def _failed_points(suite: Suite, group: list[dict]) -> dict[str, str]:
    """``{point name: the error}`` of the search's points whose run failed."""
    path = _failures_file(suite, group)
    return json.loads(path.read_text()) if path.is_file() else {}


def _search_done(suite: Suite, group: list[dict]) -> bool:
    """Whether a search has tried its budget of points (finished or failed) and left no point half run."""
    values, failed = _point_values(suite, group), _failed_points(suite, group)
    return (len(values) + len(failed) >= group[0]["entry"].search.trials
            and not _half_run(suite, _by_point(group), values, failed))


def _by_point(group: list[dict]) -> dict[str, list[dict]]:
    """The runs of ``group`` (one entry and task) by the name of their grid point, in grid order."""
    by_point: dict[str, list[dict]] = {}
    for r in group:
        by_point.setdefault(point_name(r["point"]), []).append(r)
    return by_point


def _half_run(suite: Suite, by_point: dict[str, list[dict]], values: dict, failed: dict) -> list[str]:
    """The points a search began and did not finish: one of their runs finished or interrupted, not all done."""
    from .train import resumable

    return [name for name, rs in by_point.items() if name not in values and name not in failed
            and any(finished(suite, r["out"]) or resumable(r["out"]) for r in rs)]


def _point_values(suite: Suite, group: list[dict]) -> dict[str, tuple[dict, float]]:
    """``{point name: (point, mean main dev metric)}`` of the grid points of ``group`` (one entry and task) whose
    every listed seed finished."""
    values = {}
    for name, rs in _by_point(group).items():
        where = [finished(suite, r["out"]) for r in rs]
        if all(where):
            ms = [json.loads((w / "metrics.json").read_text()) for w in where]
            values[name] = (rs[0]["point"], sum(m["dev"][m["main_metric"]] for m in ms) / len(ms))
    return values


def _search(suite: Suite, group: list[tuple[dict, Any]], execute) -> None:
    """Optuna's sampler picks ``search.trials`` of the grid's points of one (entry, task), one after another; a
    point runs at every seed of ``group`` and its mean dev metric is told to the sampler (a failed point: a failed
    trial). The study is rebuilt from the finished and failed points (so a suite run again continues the search); a
    partly run point is finished first."""
    entry = group[0][0]["entry"]
    runs = [r for r, _ in group]
    by_point = _by_point(runs)
    failed = _failed_points(suite, runs)

    def run_point(name: str) -> float | None:
        """The point's mean dev metric after running its seeds; None if a run failed (recorded: a search moves on
        to other points, and does not propose this one again)."""
        try:
            for r, recipe in group:
                if point_name(r["point"]) == name:
                    execute(r, recipe)
        except OutputBusy:  # (another suite writes the point's run now: not this point's failure; this suite stops)
            raise
        except TextDistillError as e:
            log.error("search %s on %s: point %s failed (%s); the search goes on without it", entry.name,
                      runs[0]["task"], name, e)
            failed[name] = str(e)
            _failures_file(suite, runs).write_text(json.dumps(failed, indent=2) + "\n")
            return None
        return _point_values(suite, by_point[name])[name][1]

    values = _point_values(suite, runs)
    for name in _half_run(suite, by_point, values, failed):  # finished before the sampler proposes new points
        if len(values) + len(failed) < entry.search.trials:
            log.info("search %s on %s: finishing the point it began, %s", entry.name, runs[0]["task"], name)
            if (value := run_point(name)) is not None:
                values[name] = (by_point[name][0]["point"], value)
    search_points(entry.grid, entry.search, values, failed, run_point, f"{entry.name} on {runs[0]['task']}")


def search_points(grid: dict[str, list], cfg: SearchCfg, values: dict, failed: dict, run_point, label: str) -> None:
    """The search itself, as any caller replays it: the sampler learns the points of ``values`` (``{name: (point,
    value)}``) and ``failed`` (names), then proposes grid points until ``cfg.trials`` are known; ``run_point(name)``
    gives a new point's value (None: it failed). ``values`` and ``failed`` grow in place."""
    optuna = _optuna()
    from optuna.distributions import CategoricalDistribution

    keys = list(grid)
    space = {k: CategoricalDistribution(list(range(len(grid[k])))) for k in keys}  # value indices
    sampler = (optuna.samplers.TPESampler(seed=cfg.seed) if cfg.sampler == "tpe"
               else optuna.samplers.RandomSampler(seed=cfg.seed))
    study = optuna.create_study(direction="maximize", sampler=sampler)
    points = {point_name(p): p for p in grid_points(grid)}

    def index(point: dict) -> dict:
        return {k: grid[k].index(point[k]) for k in keys}

    for point, value in values.values():
        study.add_trial(optuna.trial.create_trial(params=index(point), distributions=space, value=value))
    for name in failed:
        study.add_trial(optuna.trial.create_trial(params=index(points[name]), distributions=space,
                                                  state=optuna.trial.TrialState.FAIL))
    repeats = 0
    while len(values) + len(failed) < cfg.trials:
        trial = study.ask(fixed_distributions=space)
        point = {k: grid[k][trial.params[k]] for k in keys}
        name = point_name(point)
        if name in values or name in failed:  # proposed again: answered with what is known, not run again
            if name in values:
                study.tell(trial, values[name][1])
            else:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            repeats += 1
            if repeats >= 200:
                log.warning("search %s: the sampler proposed only points already tried 200 times in a row; "
                            "stopping at %d of %d points", label, len(values) + len(failed), cfg.trials)
                return
            continue
        repeats = 0
        log.info("search %s: point %d of %d: %s", label, len(values) + len(failed) + 1, cfg.trials, name)
        value = run_point(name)
        if value is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            values[name] = (point, value)
            study.tell(trial, value)


def _summary_and_best(suite: Suite, everything: list[dict]) -> dict:
    """The summary over every finished run of the suite, not only those of this call (--only, --task), and
    the best grid point's recipe of each (entry, task)."""
    from .recipe import dump_recipe, load_recipe

    summary = summarise(suite, everything)
    for (entry, task), best in summary["best"].items():
        r = next(x for x in everything
                 if x["entry"].name == entry and x["task"] == task and x["point"] == best["point"])
        (Path(suite.out) / f"best-{entry}-{task}.yaml").write_text(
            dump_recipe(load_recipe(r["entry"].recipe, _overrides(suite, r)), as_given=True))
    return summary


_GAPS: dict = {}  # (task, both sides' prediction files and their mtimes) -> compare_seeds' answer, or its error


def _gaps(suite: Suite, groups: dict) -> tuple[list[list[str]], list[str]]:
    """Rows of the summary's gaps table -- each entry with a ``baseline`` against it, per task and grid point,
    over the seeds whose runs (here or kept) have dev predictions on both sides -- and the pairs left untested."""
    from .data.tasks import get_task
    from .significance import compare_seeds, holm, run_predictions

    def predictions(items) -> dict[int, Path]:
        where = {r["seed"]: finished(suite, r["out"]) for r, _, _ in items}
        return {seed: p for seed, w in where.items() if w and (p := run_predictions(w)) is not None}

    found, untested = [], []
    for (task, entry, point), items in groups.items():
        base_name = next(e.baseline for e in suite.runs if e.name == entry)
        base = groups.get((task, base_name, "")) if base_name else None
        if not base:
            continue
        a, b = predictions(base), predictions(items)
        key = (task, tuple((s, str(p), p.stat().st_mtime_ns) for s, p in sorted(a.items())),
               tuple((s, str(p), p.stat().st_mtime_ns) for s, p in sorted(b.items())))
        if key not in _GAPS:  # (the summary is rewritten after every run: a pair is compared once per process)
            try:
                _GAPS[key] = compare_seeds(get_task(task), a, b, resamples=4999)
            except TextDistillError as e:  # (a damaged or mismatched file: said in its row, the rest stands)
                _GAPS[key] = str(e)
        if _GAPS[key] is None:
            untested.append(f"{entry}{f' ({point})' if point else ''} on {task}")
        else:
            found.append((task, entry, point, base_name, _GAPS[key]))
    position = {e.name: i for i, e in enumerate(suite.runs)}
    found.sort(key=lambda g: (g[0], position[g[1]], g[2]))
    # Holm over the tested pairs, handed out in the same order as the rows that use them
    adjusted = iter(holm([gap[1]["permutation"]["p"] for *_, gap in found if not isinstance(gap, str)]))
    rows = []
    for task, entry, point, base, gap in found:
        if isinstance(gap, str):
            rows.append([task, entry, point or "-", base, "", "", "", f"not tested: {gap}", ""])
            continue
        seeds, r = gap
        rows.append([task, entry, point or "-", base, ", ".join(map(str, seeds)), f"{100 * r['difference']:+.2f}",
                     f"{100 * r['bootstrap']['low']:+.2f} .. {100 * r['bootstrap']['high']:+.2f}",
                     f"{r['permutation']['p']:.4f}", f"{next(adjusted):.4f}"])
    return rows, sorted(untested)


def _compare_with_kept(suite: Suite, name: str, folder: Path) -> None:
    """A teacher fine-tuned again (its model was lost, its figures kept): the runs kept from the earlier one
    were taught by that one; say so when the two differ."""
    kept = _kept_place(suite, folder)
    if kept is None or not (kept / "metrics.json").is_file():
        return
    old = json.loads((kept / "metrics.json").read_text()).get("dev")
    new = json.loads((folder / "metrics.json").read_text()).get("dev")
    if old != new:
        log.warning("suite: teacher %s fine-tuned again scores %s, the kept one %s: the runs it taught are compared "
                    "with it (the summary's 'earlier' row)", name, {k: round(v, 4) for k, v in new.items()},
                    {k: round(v, 4) for k, v in old.items()})


def _ood(suite: Suite, r: dict, metrics: dict) -> dict:
    """Metrics of the run's model on the suite's out-of-domain sets (``task`` or ``task:split``; computed once,
    kept in the run's ood.json), tokenized per batch (25,000 IMDB reviews fit in memory). A kept run's figures
    come from its kept ood.json (its model is not here)."""
    from .data.tasks import get_task
    from .evaluate import evaluate_folder

    cache = r["out"] / "ood.json"
    done = json.loads(cache.read_text()) if cache.is_file() else {}
    where = finished(suite, r["out"])
    if where is not None and where != r["out"] and (where / "ood.json").is_file():
        done = json.loads((where / "ood.json").read_text())  # a kept run: its figures are the kept ones
    for name in suite.ood.get(r["task"], []):
        if name in done or not (r["out"] / "model").is_dir():
            continue
        task_name, split = ood_split(name)
        done[name] = evaluate_folder(r["out"] / "model", get_task(task_name), split, suite.data_dir or ".")
        cache.write_text(json.dumps(done, indent=2) + "\n")
    return done


def summarise(suite: Suite, runs: list[dict]) -> dict:
    """``summary.md`` / ``summary.csv`` over the finished runs; returns the best grid point per (entry, task)."""
    teachers = {}
    for name in suite.teachers:
        where = finished(suite, Path(suite.out) / "teachers" / name)
        if where:
            teachers[name] = json.loads((where / "metrics.json").read_text())

    def taught_by(r: dict, where: Path) -> tuple[str | None, dict | None]:
        """The name and dev figures of the teacher a run is compared with: the one that taught it (its
        teacher.json; a kept run without one: the kept teacher's figures), for a run without a teacher (FT) the
        suite's teacher of its task."""
        name = r["teacher"] if r["teacher"] in suite.teachers else None
        if name is None:
            name = _task_teacher(suite, r["task"])
            return name, (teachers[name]["dev"] if name in teachers else None)
        if (where / "teacher.json").is_file():
            return name, json.loads((where / "teacher.json").read_text())["dev"]
        kept = _kept_place(suite, Path(suite.out) / "teachers" / name)
        if where != r["out"] and kept is not None and (kept / "metrics.json").is_file():
            return name, json.loads((kept / "metrics.json").read_text())["dev"]
        return name, (teachers[name]["dev"] if name in teachers else None)

    groups: dict[tuple, list[tuple[dict, dict, dict | None]]] = {}
    earlier: dict[str, list[dict]] = {}  # per teacher: figures of earlier versions that taught runs here
    for r in runs:
        where = finished(suite, r["out"])
        if where:
            name, tdev = taught_by(r, where)
            if r["teacher"] == name and name in teachers and tdev is not None and tdev != teachers[name]["dev"] \
                    and tdev not in earlier.setdefault(name, []):
                earlier[name].append(tdev)
            m = json.loads((where / "metrics.json").read_text())
            m.setdefault("mixed_precision", _saved_precision(where))
            groups.setdefault((r["task"], r["entry"].name, point_name(r["point"])), []).append((r, m, tdev))
    header = ["task", "run", "grid point", "seeds", "dev (main metric)", "% of teacher", "params", "train s"]
    oods = sorted({o for v in suite.ood.values() for o in v})
    header += [f"OOD {o}" for o in oods]
    refs = load_reference(suite.reference) if suite.reference else None
    if refs is not None:
        header += ["% of teacher (paper's metric)", f"paper ({Path(suite.reference).stem}): % of its teacher"]
    entries = {e.name: e for e in suite.runs}
    rows, csv_rows, ranked, best = [], [], {}, {}

    def add(task, run, point, seeds, values, main, pct, params, seconds, ood_cells, ref_cells, precision=""):
        """One row of summary.md and summary.csv (a spread only over two or more seeds); returns the mean."""
        mean, sd = mean_std(values)
        spread = len(values) > 1
        rows.append([task, run, point or "-", f"{seeds} ({precision})" if precision else seeds, f"{mean:.2f}{f' ± {sd:.2f}' if spread else ''} ({main})", pct,
                     f"{params / 1e6:.1f}M" if params else "", f"{seconds:.0f}" if seconds else "", *ood_cells,
                     *ref_cells])
        csv_rows.append({"task": task, "run": run, "point": point, "seeds": seeds, "metric": main,
                         "mean": round(mean, 4), "sd": round(sd, 4) if spread else None, "of_teacher": pct,
                         "params": params, "mixed_precisions": precision or None,
                         "train_seconds": round(seconds, 1) if seconds else None,
                         **{f"ood_{o}": c for o, c in zip(oods, ood_cells)},
                         **({"of_teacher_paper_metric": ref_cells[0], "paper_of_teacher": ref_cells[1]}
                            if refs is not None else {})})
        return mean

    for name, m in sorted(teachers.items(), key=lambda x: (suite.teachers[x[0]].task, x[0])):
        # each teacher first in its task's rows: its dev and out-of-domain figures are what the students keep
        task = suite.teachers[name].task
        main = m.get("main_metric") or next(iter(m["dev"]))
        ood = _ood(suite, {"out": Path(suite.out) / "teachers" / name, "task": task}, m)
        ref_cells = ["", f"teacher: {100 * refs[('teacher', task)][1]:.2f} ({refs[('teacher', task)][0]})"
                     if ("teacher", task) in refs else ""] if refs is not None else []
        add(task, f"teacher {name}", None, 1, [100 * m["dev"][main]], main, "100%", m.get("params_student"),
            m.get("train_seconds"), [f"{100 * ood[o][next(iter(ood[o]))]:.2f}" if o in ood else "" for o in oods],
            ref_cells)
        for dev in earlier.get(name, []):  # fine-tuned again after a lost machine: the one that taught kept runs
            add(task, f"teacher {name} (earlier)", None, 1, [100 * dev[main]], main, "100%", None, None,
                ["" for _ in oods], ["", ""] if refs is not None else [])
    position = {e.name: i for i, e in enumerate(suite.runs)}  # the suite file's order of entries
    for (task, entry, point), items in sorted(groups.items(), key=lambda g: (g[0][0], position[g[0][1]], g[0][2])):
        main = items[0][1]["main_metric"]
        values = [100 * m["dev"][main] for _, m, _ in items]
        # each run against the teacher that taught it (the same one for all, unless one was fine-tuned again)
        pct = (f"{100 * mean_std([m['dev'][main] / t[main] for _, m, t in items])[0]:.1f}%"
               if all(t and t.get(main) for _, _, t in items) else "")
        ood_cells = []
        for o in oods:
            vals = [100 * d[o][next(iter(d[o]))] for d in (_ood(suite, r, m) for r, m, _ in items) if o in d]
            ood_cells.append(f"{mean_std(vals)[0]:.2f}" if vals else "")
        seconds = mean_std([m["train_seconds"] for _, m, _ in items])[0]
        ref_cells = (_reference_cells(refs, entries[entry].reference, task, [(m, t) for _, m, t in items])
                     if refs is not None else [])
        # runs of one row trained in other precisions (train.mixed_precision: auto on machines with and without
        # native bf16; runs before metrics recorded it say nothing): the seeds cell says so
        mean = add(task, entry, point, len(items), values, main, pct, items[0][1].get("params_student"), seconds,
                   ood_cells, ref_cells, precision_mix([m.get("mixed_precision") for _, m, _ in items]))
        ranked.setdefault((entry, task), []).append((mean, point, items[0][0]["point"], seconds))
    order = sorted(range(len(rows)), key=lambda i: rows[i][0])  # by task, stable: teachers before their students
    rows, csv_rows = [rows[i] for i in order], [csv_rows[i] for i in order]
    text = [f"# Suite {suite.out}\n", markdown_table(header, rows) if rows else "no run done"]
    for (entry, task), points in sorted(ranked.items()):
        if len(points) < 2:
            continue
        points.sort(key=lambda x: -x[0])
        best[(entry, task)] = {"point": points[0][2], "mean": points[0][0]}
        text.append(f"\n## {entry} on {task}: grid points ranked by mean dev metric\n")
        text.append(markdown_table(["rank", "grid point", "mean dev", "train s"],
                                   [[i + 1, p, f"{m:.2f}", f"{s:.0f}"] for i, (m, p, _, s) in enumerate(points)]))
        text.append(f"\nbest recipe: best-{entry}-{task}.yaml")
    gaps, untested = _gaps(suite, groups)
    if gaps or untested:
        text.append("\n## Gaps to each entry's baseline, tested on the dev rows\n")
        text.append("B - A in the main metric x 100 over the seeds both ran and kept dev predictions for (paired by "
                    "seed); paired permutation test (two-sided), Holm-adjusted over this table; 95 % bootstrap "
                    "interval (`textdistill significance`).\n")
        if gaps:
            text.append(markdown_table(["task", "run (B)", "grid point", "baseline (A)", "seeds", "B - A",
                                        "interval", "p", "Holm p"], gaps))
        if untested:
            text.append(f"\nNot tested (no seed with dev predictions on both sides; runs from before runs wrote "
                        f"them): {'; '.join(untested)}.")
    out = Path(suite.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text("\n".join(text) + "\n")
    with open(out / "summary.csv", "w", newline="") as f:
        if csv_rows:
            w = csv.DictWriter(f, fieldnames=list(csv_rows[0]))
            w.writeheader()
            w.writerows(csv_rows)
    return {"runs": len(runs), "done": sum(len(v) for v in groups.values()), "best": best,
            "summary": str(out / "summary.md")}


def _saved_precision(folder: Path) -> str | None:
    """train.mixed_precision of the recipe a run saved (runs whose metrics.json predates the field), if any."""
    try:
        value = (yaml.safe_load((folder / "recipe.yaml").read_text()) or {}).get("train", {}).get("mixed_precision")
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    return "no" if value is False else value  # (YAML reads a bare no as false)


def _task_teacher(suite: Suite, task: str) -> str | None:
    """The teacher a run without one (FT) is compared with: the suite's only teacher of its task, if one."""
    names = [name for name, t in suite.teachers.items() if t.task == task]
    return names[0] if len(names) == 1 else None


def _reference_cells(refs: dict, key: str | None, task: str, items: list[tuple[dict, dict | None]]) -> list[str]:
    """The runs' % of their teacher in the reference's metric (``items``: each seed's metrics and its teacher's
    dev figures) and the paper's % of its own teacher, e.g. ``["96.3% (accuracy)", "98.4% (91.06 / 92.58)"]``;
    empty cells where either side is missing."""
    if key is None or (key, task) not in refs or ("teacher", task) not in refs:
        return ["", ""]
    metric, value = refs[(key, task)]
    t_metric, t_value = refs[("teacher", task)]
    paper = f"{100 * value / t_value:.1f}% ({100 * value:.2f} / {100 * t_value:.2f})" if t_metric == metric else ""
    ratios = [m["dev"][metric] / t[metric] for m, t in items if metric in m["dev"] and t and t.get(metric)]
    ours = f"{100 * sum(ratios) / len(ratios):.1f}% ({metric})" if ratios and len(ratios) == len(items) else ""
    return [ours, paper]


def describe(summary: dict) -> dict:
    """The summary as JSON (best points keyed ``entry/task``)."""
    return {**summary, "best": {f"{e}/{t}": {"point": point_name(b["point"]), "mean": round(b["mean"], 4)}
                                for (e, t), b in summary.get("best", {}).items()}}
