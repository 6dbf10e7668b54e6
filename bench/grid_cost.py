#!/usr/bin/env python
"""The PKD hyper-parameter grid with one teacher cache vs with the live teacher, side by side.

Two grids that differ only in a suite's ``cache: true/false`` -- PKD-Skip on one task, the Patient KD paper's
grid (T in {5, 10, 20}, alpha in {0.2, 0.5, 0.7}, beta in {10, 100, 500, 1000}: 36 points) or its corners
(``--points 4``: T in {5, 20}, beta in {10, 1000}, alpha 0.5) -- each run by ``textdistill suite``. Reported for
each grid: its cost (the sum of its runs' ``run_seconds``: each whole run as a user waits for it, loading, the
teacher, the cache build of the cache grid's first run, training, evaluation, saving), seconds per run, training
seconds per run, the ratio to the live grid, and the best point of each (the two must rank alike: same losses).

By default the grids run point by point, alternating (point 1 cache then live, point 2 live then cache, ...), one
``textdistill suite`` call per run, so that a change of the machine's load falls on both grids alike; with
``--out`` the runs are kept there and the command is resumable: finished runs count as they are, an interrupted
one is started again from scratch (its seconds must be whole), and ``--max-runs N`` stops after N new runs (a
long grid measured over several sittings; the table covers what is finished). ``--whole`` instead runs each grid
as one suite process, the cache grid first, and adds each grid's wall time (the form of docs/performance.md
sections 12-12.2). ``--shard K/N`` splits the points among N processes on the same ``--out`` (one thread each);
each run is locked while it runs (a second process leaves it alone), and the folder's first call records the
grid's settings in ``grid.json`` (a call with other settings is refused). ``--keep DIR`` (a committed folder, e.g.
results/grid-cost-mrpc-36) copies each finished run's figures there (metrics.json, recipe.yaml, grid_cost.json) and
counts a run kept there as finished: a grid longer than one machine's life goes on from them on another machine (the
teacher fine-tuned again from the same recipe and seed). A cache grid resumed where its cache is not is given the
cache first by an uncounted warm-up run (``warmup``: one optimizer step), since the first cache run, kept, has counted
the build already.

    .venv/bin/python bench/grid_cost.py --teacher runs/teachers/minilm-mrpc/model --task mrpc \\
        --data-dir ../shared/data/glue --points 4 --epochs 1 --json bench/results/grid_cost_mrpc_4.json
    .venv/bin/python bench/grid_cost.py --teacher runs/teachers/minilm-mrpc/model --task mrpc \\
        --points 36 --epochs 3 --out runs/grid-cost-mrpc-36 --search-trials 12 \\
        --keep results/grid-cost-mrpc-36 --json bench/results/grid_cost_mrpc_36.json

``--search-trials N`` replays the suite's budgeted search (Optuna TPE, N points) on the finished cache grid's
figures at several sampler seeds: whether N of the 36 points would have found the grid's best (no training).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from textdistill.files import write_text_atomic  # noqa: E402
from textdistill.report import markdown_table, write_json  # noqa: E402
from textdistill.suite import grid_points, point_name  # noqa: E402

GRIDS = {36: {"terms.ds.args.temperature": [5, 10, 20],
              "hard_weight,terms.ds.weight": [[0.8, 0.2], [0.5, 0.5], [0.3, 0.7]],
              "terms.pt.weight": [10, 100, 500, 1000]},
         4: {"terms.ds.args.temperature": [5, 20], "terms.pt.weight": [10, 1000]}}
ENTRY = "pkd-skip"
NAMES = ("cache", "live")


def refuse(message: str):
    """Bad input or a folder that cannot be used: one line on stderr, exit code 2."""
    print(f"grid_cost: {message}", file=sys.stderr)
    sys.exit(2)


def schedule(points: list[dict], shard: tuple[int, int] = (1, 1)) -> list[tuple[str, dict]]:
    """The runs in the order they run: each point in both grids, the grid that goes first alternating; shard
    (k, n): the k-th of n processes runs points k, k + n, k + 2n, ... (counting from 1), alternating among them."""
    k, n = shard
    mine = points[k - 1::n]
    # (shard k starts with the grid shard k - 1 does not: runs side by side overlap a run of the other grid)
    return [(name, point) for j, point in enumerate(mine)
            for name in (NAMES if (j + k - 1) % 2 == 0 else NAMES[::-1])]


def parse_shard(text: str | None) -> tuple[int, int]:
    """``K/N`` -> (K, N), 1 <= K <= N; None -> (1, 1)."""
    if text is None:
        return 1, 1
    k, sep, n = text.partition("/")
    if not (sep and k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
        raise ValueError(f"--shard {text}: expected K/N with 1 <= K <= N, e.g. 1/2")
    return int(k), int(n)


def run_folder(out: Path, name: str, task: str, point: dict, entry: str = ENTRY) -> Path:
    """Where ``textdistill suite`` puts a point's run (seed 1) of grid ``name``."""
    return out / name / task / f"{entry}-{point_name(point)}-s1"


def finished(out: Path, keep: Path | None, name: str, task: str, point: dict) -> Path | None:
    """The metrics.json of a point's finished run of grid ``name``: in ``out``, else kept in ``keep``; None if
    neither holds it."""
    for root in (out, keep):
        if root is not None and (path := run_folder(root, name, task, point) / "metrics.json").is_file():
            return path
    return None


KEPT = ("metrics.json", "recipe.yaml", "grid_cost.json")


def relative_paths(text: str) -> str:
    """A run's files name its teacher, data and cache by absolute path: kept in the repository, they name them
    relative to it (``runs/...``, ``../shared/...``), no absolute path of this machine."""
    return text.replace(f"{ROOT}/", "").replace(f"{ROOT.parent}/", "../")


def keep_run(folder: Path, out: Path, keep: Path) -> None:
    """Copies a finished run's figures into ``keep`` at the same place under it, paths relative to the repository
    (each file whole or not at all), metrics.json last: a kept run counts as finished once its metrics are there."""
    dest = keep / folder.relative_to(out)
    dest.mkdir(parents=True, exist_ok=True)
    for name in KEPT[1:] + KEPT[:1]:
        if (folder / name).is_file():
            write_text_atomic(dest / name, relative_paths((folder / name).read_text()))


def keep_unkept(out: Path, keep: Path, task: str) -> None:
    """Copies the finished runs in ``out`` that ``keep`` lacks (a process ended between a run and its copy, or
    --keep given part-way through a grid)."""
    for name in NAMES:
        for metrics in sorted((out / name / task).glob(f"{ENTRY}-*/metrics.json")):
            folder = metrics.parent
            if not (keep / folder.relative_to(out) / "metrics.json").is_file():
                keep_run(folder, out, keep)


def suite_file(out: Path, name: str, args, extra: dict, grid: dict, entry: str = ENTRY) -> dict:
    return {"out": str(out / name), "data_dir": str(Path(args.data_dir).resolve()), "seeds": [1],
            "runs": [{"name": entry, "recipe": str(ROOT / "recipes/pkd-skip.yaml"),
                      "tasks": {args.task: str(Path(args.teacher).resolve())}, "cache": name == "cache",
                      "set": {"train.epochs": args.epochs, "student.layers": args.student_layers, **extra},
                      "grid": grid}]}


def write_suite(path: Path, suite: dict) -> None:
    """The suite's keys in their order: a point's folder name follows the grid keys' order."""
    path.write_text(yaml.safe_dump(suite, sort_keys=False))


def collect(out: Path, task: str, points: list[dict], keep: Path | None = None) -> dict:
    """Each grid's finished runs (in ``out`` or kept in ``keep``), in grid order: seconds, dev metric, best point;
    and the points still to run."""
    results = {}
    for name in NAMES:
        done, missing = [], []
        for point in points:
            path = finished(out, keep, name, task, point)
            if path is None:
                missing.append(point_name(point))
                continue
            m = json.loads(path.read_text())
            if "run_seconds" not in m:
                refuse(f"{path}: no run_seconds (a run of textdistill before it recorded them); move the folder "
                       f"away to run that point again")
            how = path.parent / "grid_cost.json"
            how = json.loads(how.read_text()) if how.is_file() else {}
            done.append({"point": point_name(point), "run_seconds": m["run_seconds"],
                         "train_seconds": m["train_seconds"], "dev": m["dev"][m["main_metric"]],
                         "resumed": bool(m.get("resumed")), "shard": how.get("shard"),
                         "machine": how.get("machine")})
        best = max(done, key=lambda r: r["dev"]) if done else None  # (the first of a tie, in grid order)
        results[name] = {"runs": len(done), "missing": missing, "runs_detail": done,
                         "grid_seconds": round(sum(r["run_seconds"] for r in done), 1),
                         "best": best and {"dev": best["dev"], "point": best["point"]}}
    return results


def _suite(path: Path) -> None:
    res = subprocess.run([str(ROOT / ".venv/bin/textdistill"), "suite", str(path)], capture_output=True, text=True)
    if res.returncode:
        print("\n".join(res.stderr.splitlines()[-15:]), file=sys.stderr)
        sys.exit(f"grid_cost: textdistill suite {path} failed (exit {res.returncode}; its last lines above)")


def cache_ready(out: Path) -> bool:
    """Whether the cache grid's teacher cache is built in ``out`` (its manifest is written last)."""
    from textdistill.schemes.cache import MANIFEST

    return any((out / "cache" / "cache").glob(f"*/{MANIFEST}"))


def build_counted(out: Path, keep: Path | None, task: str) -> bool:
    """Whether a finished cache run (in ``out`` or kept in ``keep``) built the cache and so counted its build
    (its grid_cost.json says ``built_cache``; a run in ``out`` from before that record: the old rule, any finished
    cache run there counted it)."""
    for root in (out, keep):
        if root is None:
            continue
        for metrics in (root / "cache" / task).glob(f"{ENTRY}-*/metrics.json"):
            how = metrics.parent / "grid_cost.json"
            how = json.loads(how.read_text()) if how.is_file() else {}
            if how.get("built_cache") or (root == out and "built_cache" not in how):
                return True
    return False


def teacher_name(teacher: str) -> str:
    """The teacher as grid.json records it: relative to the repository where it lies inside it (the same on
    another machine with the same checkout), else resolved. A relative name is read from the repository."""
    path = Path(teacher) if Path(teacher).is_absolute() else ROOT / teacher
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def check_settings(out: Path, args, extra: dict, keep: Path | None = None) -> None:
    """The grid's settings, written to ``grid.json`` in ``out`` (and ``keep``) by the first call (whole or not at
    all): a later call on the same folder with other settings would add runs of another grid to it (and count
    another cache's build), so it is refused. (A grid.json of before 12-07, the teacher by absolute path, is read
    as the same teacher.)"""
    mine = {"task": args.task, "teacher": teacher_name(args.teacher), "points": getattr(args, "points", None),
            "epochs": args.epochs, "student_layers": args.student_layers, "set": extra}
    for root in (out, keep):
        if root is None:
            continue
        path = root / "grid.json"
        if path.is_file():
            theirs = json.loads(path.read_text())
            if theirs.get("teacher"):
                theirs["teacher"] = teacher_name(theirs["teacher"])
            if theirs != mine:
                diff = ", ".join(f"{k} {theirs.get(k)!r} there, {v!r} now" for k, v in mine.items()
                                 if theirs.get(k) != v)
                refuse(f"{root} holds runs of another grid ({diff}); give another "
                       f"{'--out' if root == out else '--keep'}")
    for root in (out, keep):
        if root is not None and not (root / "grid.json").is_file():
            root.mkdir(parents=True, exist_ok=True)
            write_text_atomic(root / "grid.json", json.dumps(mine, indent=2) + "\n")


def claim(folder: Path):
    """An exclusive lock on the run ``folder`` (a lock file beside it, flock: released when this process ends,
    however it ends); None where another process holds it (a shard, or a second call, running that run now)."""
    import fcntl

    folder.parent.mkdir(parents=True, exist_ok=True)
    handle = open(folder.parent / f".{folder.name}.lock", "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def run_by_point(out: Path, args, extra: dict, points: list[dict]) -> int:
    """Runs the points not yet finished (of its shard), alternating grids; returns how many it ran. A run that
    another process is running now (its lock held) is left to it."""
    ran = 0
    shard = getattr(args, "shard", None) or (1, 1)
    keep = kept_folder(args)
    if shard[1] > 1 and not (build_counted(out, keep, args.task) and cache_ready(out)):
        # (the first cache run builds the cache and counts its build, or a warm-up builds it where a kept run
        # counted it: one process, before the shards share the cache)
        refuse(f"--shard {shard[0]}/{shard[1]}: the cache is not built in {out} yet; run without --shard (e.g. "
               f"--max-runs 1) first")
    check_settings(out, args, extra, keep)
    if keep is not None:
        keep_unkept(out, keep, args.task)
    todo = [(name, point) for name, point in schedule(points, shard)
            if finished(out, keep, name, args.task, point) is None]
    if (any(name == "cache" for name, _ in todo) and args.max_runs != 0 and build_counted(out, keep, args.task)
            and not cache_ready(out)):
        warm_cache(out, args, extra, points[0])
    for name, point in todo:
        folder = run_folder(out, name, args.task, point)
        if finished(out, keep, name, args.task, point) is not None:  # (finished meanwhile by another process)
            continue
        if args.max_runs is not None and ran >= args.max_runs:
            break
        lock = claim(folder)
        if lock is None:
            print(f"{time.strftime('%H:%M:%S')} {name} {point_name(point)}: running in another process, left to it",
                  file=sys.stderr, flush=True)
            continue
        with lock:
            if finished(out, keep, name, args.task, point) is None:  # (not finished between the check and the lock)
                _run_point(out, args, extra, name, point, folder, shard, keep)
                if keep is not None:
                    keep_run(folder, out, keep)
        ran += 1
    return ran


def kept_folder(args) -> Path | None:
    keep = getattr(args, "keep", None)
    return Path(keep).resolve() if keep else None


def warm_cache(out: Path, args, extra: dict, point: dict) -> None:
    """Builds the cache grid's cache in ``out`` by a run that counts in neither grid (entry ``warmup``, a sliver of
    an epoch: one optimizer step where an epoch has up to 1,000): for a grid resumed from kept runs on a machine
    without its cache, whose kept first cache run counted the build already."""
    lock = claim(out / "cache" / args.task / "warmup")
    if lock is None:
        refuse(f"another process is building the cache in {out}; run again once it has")
    with lock:
        if cache_ready(out):
            return
        shutil.rmtree(out / "cache" / "cache", ignore_errors=True)  # (a cache an interrupted warm-up left)
        path = out / "cache-warmup.yaml"
        write_suite(path, suite_file(out, "cache", args, {**extra, "train.epochs": 1e-3},
                                     {k: [v] for k, v in point.items()}, entry="warmup"))
        print(f"{time.strftime('%H:%M:%S')} cache warm-up (a run kept nowhere: the cache for the runs to come)",
              file=sys.stderr, flush=True)
        _suite(path)


def _run_point(out: Path, args, extra: dict, name: str, point: dict, folder: Path, shard: tuple[int, int],
               keep: Path | None = None) -> None:
    # an interrupted run starts again: resumed, its run_seconds would count only its last part; and until a
    # finished cache run has counted the build, a cache left by an interrupted run (or a warm-up) goes, so that the
    # cache run that builds it counts it (and says so: built_cache)
    shutil.rmtree(folder.parent / f".{folder.name}.partial", ignore_errors=True)
    shutil.rmtree(folder, ignore_errors=True)
    if name == "cache" and not build_counted(out, keep, args.task):
        shutil.rmtree(out / "cache" / "cache", ignore_errors=True)
    built = name == "cache" and not cache_ready(out)
    path = out / f"{name}-point{'' if shard[1] == 1 else f'-{shard[0]}of{shard[1]}'}.yaml"
    one = {k: [v] for k, v in point.items()}
    write_suite(path, suite_file(out, name, args, extra, one))
    print(f"{time.strftime('%H:%M:%S')} {name} {point_name(point)}", file=sys.stderr, flush=True)
    _suite(path)
    # (how it ran, beside the run: the shard, and the threads the runs were given)
    (folder / "grid_cost.json").write_text(json.dumps({"shard": f"{shard[0]}/{shard[1]}",
                                                       "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                                                       "machine": machine(), "built_cache": built,
                                                       "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                 time.gmtime())}) + "\n")


def machine() -> str:
    """Which machine ran a run (runs of one grid kept over several machines): the CPU model and a short digest of
    the host's machine-id, nothing that names this host."""
    import hashlib
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        ident = Path("/etc/machine-id").read_text().strip()
    except OSError:
        ident = platform.node()
    # (machines cloned from one image may share a machine-id; with the same CPU model, as such clones have, their
    # runs are alike for this measurement)
    return f"{cpu} #{hashlib.sha256(ident.encode()).hexdigest()[:8]}"


def by_machine(results: dict) -> tuple[dict, int]:
    """Per machine: the points whose cache and live runs both ran on it, and the cache/live ratio over them
    (runs kept without a machine: ``None``); and how many points' two runs ran on two machines."""
    where = {n: {r["point"]: r for r in results[n]["runs_detail"]} for n in NAMES}
    out: dict = {}
    split = 0
    for point, c in where["cache"].items():
        v = where["live"].get(point)
        if v is not None and v.get("machine") != c.get("machine"):
            split += 1
        elif v is not None:
            m = out.setdefault(c.get("machine"), {"points": 0, "cache": 0.0, "live": 0.0})
            m["points"] += 1
            m["cache"] += c["run_seconds"]
            m["live"] += v["run_seconds"]
    for m in out.values():
        m["ratio"] = round(m["cache"] / m["live"], 3) if m["live"] else None
    return out, split


def run_whole(out: Path, args, extra: dict, points: list[dict]) -> dict:
    """Each grid as one suite process (cache first); returns each grid's wall seconds."""
    walls = {}
    for name in NAMES:
        path = out / f"{name}.yaml"
        write_suite(path, suite_file(out, name, args, extra, GRIDS[args.points]))
        t0 = time.perf_counter()
        _suite(path)
        walls[name] = round(time.perf_counter() - t0, 1)
    return walls


def replay_search(grid: dict, done: list[dict], trials: int, seeds: list[int], sampler: str = "tpe") -> list[dict]:
    """What a suite's ``search: {trials: N}`` would have found on this grid: the suite's own search loop
    (suite.search_points) with each point's value read from the finished grid instead of trained, once per
    sampler seed. Each: the points it ran, the best of them, and that point's rank in the whole grid (1: the
    grid's best; ties share the better rank)."""
    from textdistill.suite import SearchCfg, search_points

    value = {r["point"]: r["dev"] for r in done}
    ranked = sorted(value.values(), reverse=True)
    out = []
    for seed in seeds:
        values: dict = {}
        search_points(grid, SearchCfg(trials=trials, sampler=sampler, seed=seed), values, {},
                      lambda name: value[name], "replay")
        name, (_, best) = max(values.items(), key=lambda kv: kv[1][1])
        out.append({"seed": seed, "points": list(values), "best": {"point": name, "dev": best},
                    "rank": ranked.index(best) + 1})
    return out


def ratio(results: dict) -> float | None:
    """The cache grid's seconds over the live grid's, over the points finished in both."""
    both = ({r["point"] for r in results["cache"]["runs_detail"]}
            & {r["point"] for r in results["live"]["runs_detail"]})
    cache, live = (sum(r["run_seconds"] for r in results[n]["runs_detail"] if r["point"] in both) for n in NAMES)
    return cache / live if both and live else None


def table(results: dict, walls: dict | None) -> str:
    rows = []
    for name, r in results.items():
        if not r["runs"]:
            rows.append([name, 0] + [""] * (5 + bool(walls)))
            continue
        rel = 1.0 if name == "live" else ratio(results)
        cells = [name, r["runs"], f"{r['grid_seconds']:.0f}", f"{r['grid_seconds'] / r['runs']:.0f}",
                 f"{statistics.median(d['train_seconds'] for d in r['runs_detail']):.0f}",
                 "" if rel is None else f"{rel:.2f}", f"{100 * r['best']['dev']:.2f} ({r['best']['point']})"]
        if walls:
            cells[3:3] = [f"{walls[name]:.0f}"]
        rows.append(cells)
    header = ["grid", "runs", "grid s (sum of runs)", "s per run", "training s per run (median)",
              "x live grid (points run in both)", "best point (dev)"]
    if walls:
        header[3:3] = ["wall s"]
    return markdown_table(header, rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", required=True, help="the fine-tuned teacher folder")
    ap.add_argument("--task", default="mrpc")
    ap.add_argument("--data-dir", default="../shared/data/glue")
    ap.add_argument("--points", type=int, choices=sorted(GRIDS), default=4)
    ap.add_argument("--epochs", type=float, default=3)
    ap.add_argument("--student-layers", default="every:2")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a recipe override for every run of both grids (YAML value), e.g. student.init=mpnet-12")
    ap.add_argument("--out", help="keep the runs here and resume from them (default: a temporary folder)")
    ap.add_argument("--keep", help="also copy each finished run's figures here (a committed folder) and count the "
                    "runs kept here as finished: the grid goes on from them on another machine")
    ap.add_argument("--max-runs", type=int, help="run at most this many new runs, then report what is finished")
    ap.add_argument("--whole", action="store_true", help="each grid as one suite process, timed whole")
    ap.add_argument("--shard", metavar="K/N", help="run only points K, K+N, K+2N, ... (N processes side by side "
                    "on the same --out, one thread each: OMP_NUM_THREADS=1; after a first cache run has finished); "
                    "a last call without --shard and with --max-runs 0 reports the whole grid and writes --json")
    ap.add_argument("--search-trials", type=int, help="also replay a budgeted search (the suite's Optuna TPE "
                    "search of this many points) over the finished cache grid, at each --search-seeds")
    ap.add_argument("--search-seeds", type=int, nargs="+", default=list(range(10)))
    ap.add_argument("--json")
    args = ap.parse_args()
    extra = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            refuse(f"--set {item}: expected KEY=VALUE")
        extra[key] = yaml.safe_load(value)
    if args.keep and args.whole:
        refuse("--keep: not with --whole (a whole grid is timed from its start in one sitting)")
    if args.max_runs is not None and (args.max_runs < 0 or args.whole):
        refuse("--max-runs: a number >= 0, and not with --whole")
    try:
        args.shard = parse_shard(args.shard)
    except ValueError as e:
        refuse(str(e))
    if args.shard != (1, 1) and (args.whole or not args.out):
        refuse("--shard: with --out (the shards share it), and not with --whole")
    if args.shard != (1, 1) and os.environ.get("OMP_NUM_THREADS") is None:
        print("grid_cost: --shard without OMP_NUM_THREADS: each shard's runs take every core and the shards "
              "contend; set OMP_NUM_THREADS=1 for runs comparable with the grid's other runs", file=sys.stderr)
    if args.whole and args.out and (any(Path(args.out).glob("*/*/*/metrics.json"))
                                    or (Path(args.out) / "cache" / "cache").exists()):
        refuse(f"--whole times each grid from its start: {args.out} already holds runs or a cache")
    points = grid_points(GRIDS[args.points])
    with tempfile.TemporaryDirectory(prefix="td-grid-") as tmp:
        out = Path(args.out or tmp).resolve()
        out.mkdir(parents=True, exist_ok=True)
        walls = run_whole(out, args, extra, points) if args.whole else None
        ran = 0 if args.whole else run_by_point(out, args, extra, points)
        results = collect(out, args.task, points, kept_folder(args))
    done = min(r["runs"] for r in results.values())
    print(f"\nPKD-Skip grid on {args.task}: {args.points} points ({done} finished in both grids; {ran} run now), "
          f"{args.epochs:g} epochs, student {args.student_layers}{''.join(f', {k}={v}' for k, v in extra.items())}, "
          f"teacher {args.teacher}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
          f"{'each grid one process' if args.whole else 'point by point, alternating'}"
          f"{f', shard {args.shard[0]}/{args.shard[1]}' if args.shard != (1, 1) else ''}\n")
    print(table(results, walls))
    machines, split = by_machine(results)
    if len(machines) > 1 or split:
        print("\nruns on more than one machine -- cache / live by machine, over the points whose two runs ran on it: "
              + "; ".join(f"{name or 'not recorded'}: {m['points']} points, {m['ratio']:.2f}"
                          for name, m in machines.items())
              + (f"; {split} point{'' if split == 1 else 's'} whose two runs ran on two machines" if split else ""))
    c, v = results["cache"], results["live"]
    if c["runs"] == v["runs"] == len(points):
        print(f"\ncache grid / live grid: {ratio(results):.2f}"
              + (f" (wall: {walls['cache'] / walls['live']:.2f})" if walls else ""))
    else:
        print(f"\nnot finished: cache {c['runs']} and live {v['runs']} of {len(points)} runs (run the same command "
              f"again to go on)")
    searches = None
    if args.search_trials and c["runs"] < len(points):
        print(f"\n(--search-trials: replayed once the cache grid is finished; {c['runs']} of {len(points)} runs)")
    elif args.search_trials:
        searches = replay_search(GRIDS[args.points], c["runs_detail"], args.search_trials, args.search_seeds)
        ranks = [x["rank"] for x in searches]
        found = ", ".join(f"{100 * x['best']['dev']:.2f}" for x in searches)
        print(f"\nA TPE search of {args.search_trials} of the {len(points)} points (suite `search: {{trials: "
              f"{args.search_trials}}}`), replayed on the cache grid's figures at {len(ranks)} sampler seeds: found "
              f"the grid's best point at {ranks.count(1)} of them; rank of the best point found: median "
              f"{statistics.median(ranks):g}, worst {max(ranks)}; best dev found: "
              f"{found} (grid best "
              f"{100 * c['best']['dev']:.2f})")
    if args.json and args.shard != (1, 1):
        print(f"\n(--json: not written by a shard, whose view of the grid may be partial; a last call without "
              f"--shard writes it)")
    elif args.json:
        write_json(args.json, {"args": vars(args), "threads": os.environ.get("OMP_NUM_THREADS"), "results": results,
                               "ratio": ratio(results), "by_machine": machines, "wall_seconds": walls,
                               "searches": searches}, ROOT)


if __name__ == "__main__":
    main()
