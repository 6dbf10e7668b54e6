"""bench/grid_cost.py's bookkeeping (no training: a stand-in for ``textdistill suite`` writes each run's figures):
the alternating order, resuming from finished runs, starting an interrupted run again, --max-runs, and the cost
ratio over the points finished in both grids."""
import importlib.util
import json
import re
import types
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

spec = importlib.util.spec_from_file_location("grid_cost", ROOT / "bench" / "grid_cost.py")
gc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gc)
ARGS = types.SimpleNamespace(task="mrpc", data_dir=".", teacher="t", epochs=1, student_layers="every:2", points=4,
                             max_runs=None)
SECONDS = {"cache": 30.0, "live": 50.0}


def refused(capsys, call, needle: str) -> None:
    """``call()`` exits with code 2 and one line on stderr holding ``needle``."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        call()
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and needle in err, (e.value.code, err)


CACHE = ("cache", "cache", "mrpc-teacher-abc")


@pytest.fixture
def fake_suite(monkeypatch):
    """Runs the one-point suite file as ``textdistill suite`` would place it: metrics.json with run_seconds; a
    cache run (or warm-up) builds the teacher cache where it is not (its manifest, written last)."""
    calls = []

    def run(path: Path):
        suite = yaml.safe_load(path.read_text())
        entry = suite["runs"][0]
        if entry["cache"] and not gc.cache_ready(Path(suite["out"]).parent):
            built = Path(suite["out"]).parent.joinpath(*CACHE)
            built.mkdir(parents=True, exist_ok=True)
            (built / "cache.json").write_text("{}")
        point = {k: v[0] for k, v in entry["grid"].items()}
        name = Path(suite["out"]).name
        calls.append((name, gc.point_name(point)) if entry["name"] == gc.ENTRY else (name, entry["name"]))
        folder = gc.run_folder(Path(suite["out"]).parent, name, "mrpc", point, entry["name"])
        folder.mkdir(parents=True)
        dev = 0.8 + 0.01 * point["terms.pt.weight"] / 1000  # the largest beta is best
        (folder / "metrics.json").write_text(json.dumps({
            "run_seconds": SECONDS[name], "train_seconds": SECONDS[name] - 10, "dev": {"f1": dev},
            "main_metric": "f1"}))
    monkeypatch.setattr(gc, "_suite", run)
    return calls


def test_schedule_alternates_which_grid_goes_first():
    points = gc.grid_points(gc.GRIDS[4])
    order = gc.schedule(points)
    assert len(order) == 8 and [n for n, _ in order] == ["cache", "live", "live", "cache"] * 2
    assert [p for _, p in order[::2]] == points == [p for _, p in order[1::2]]
    assert len(gc.grid_points(gc.GRIDS[36])) == 36


def test_shards_split_the_points_and_each_alternates():
    points = gc.grid_points(gc.GRIDS[36])
    whole = gc.schedule(points)
    shards = [gc.schedule(points, (k, 3)) for k in (1, 2, 3)]
    runs = [(n, gc.point_name(p)) for sh in shards for n, p in sh]
    assert len(runs) == 72 and sorted(runs) == sorted((n, gc.point_name(p)) for n, p in whole)
    assert [gc.point_name(p) for _, p in shards[1][::2]] == [gc.point_name(p) for p in points[1::3]]
    # within each shard the grid that goes first alternates, over all its runs; shards side by side start with
    # different grids, so a run overlaps a run of the other grid
    for k, sh in enumerate(shards, 1):
        first = ["cache", "live"] if k % 2 else ["live", "cache"]
        assert [n for n, _ in sh] == (first + first[::-1]) * 6
    assert gc.schedule(points, (1, 1)) == whole
    assert gc.parse_shard(None) == (1, 1) and gc.parse_shard("2/3") == (2, 3)
    for bad in ("0/2", "3/2", "2", "a/b", "1/0"):
        with pytest.raises(ValueError, match=f"--shard {bad}: expected K/N"):
            gc.parse_shard(bad)


def test_shards_wait_for_the_first_cache_run_then_share_the_grid(tmp_path, fake_suite, capsys):
    points = gc.grid_points(gc.GRIDS[4])
    sharded = [types.SimpleNamespace(**{**vars(ARGS), "shard": (k, 2)}) for k in (1, 2)]
    refused(capsys, lambda: gc.run_by_point(tmp_path, sharded[0], {}, points),
            "--shard 1/2: the cache is not built in")
    assert fake_suite == [] and not list(tmp_path.glob("*.yaml")) and not (tmp_path / "grid.json").exists()
    assert gc.run_by_point(tmp_path, types.SimpleNamespace(**{**vars(ARGS), "max_runs": 1}), {}, points) == 1
    assert gc.run_by_point(tmp_path, sharded[1], {}, points) == 4  # points 2 and 4: live first, then cache first
    assert fake_suite[1:5] == [("live", gc.point_name(points[1])), ("cache", gc.point_name(points[1])),
                               ("cache", gc.point_name(points[3])), ("live", gc.point_name(points[3]))]
    assert (tmp_path / "cache-point-2of2.yaml").is_file()
    assert gc.run_by_point(tmp_path, sharded[0], {}, points) == 3  # point 1's live run, point 3
    r = gc.collect(tmp_path, "mrpc", points)
    assert r["cache"]["runs"] == r["live"]["runs"] == 4 and gc.ratio(r) == 0.6
    assert {d["point"]: d["shard"] for d in r["live"]["runs_detail"]} == {
        gc.point_name(p): s for p, s in zip(points, ["1/2", "2/2", "1/2", "2/2"])}
    assert gc.run_by_point(tmp_path, ARGS, {}, points) == 0


def test_a_run_another_process_is_running_is_left_to_it(tmp_path, fake_suite):
    """Shards (or a second call) on one folder: a run whose lock another process holds is neither deleted nor run
    again; a lock file left by a process that has ended holds nothing."""
    import fcntl

    points = gc.grid_points(gc.GRIDS[4])
    busy = gc.run_folder(tmp_path, "cache", "mrpc", points[0])
    partial = busy.parent / f".{busy.name}.partial"
    (partial / "checkpoint").mkdir(parents=True)
    with open(busy.parent / f".{busy.name}.lock", "a") as held:  # (another open file: flock conflicts with it)
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert gc.run_by_point(tmp_path, types.SimpleNamespace(**{**vars(ARGS), "max_runs": 2}), {}, points) == 2
        assert partial.is_dir() and ("cache", gc.point_name(points[0])) not in fake_suite
    assert fake_suite == [("live", gc.point_name(points[0])), ("live", gc.point_name(points[1]))]
    assert gc.run_by_point(tmp_path, ARGS, {}, points) == 6  # the lock is released: point 1's cache run runs now
    assert ("cache", gc.point_name(points[0])) in fake_suite and not partial.exists()


def test_a_folder_of_another_grid_is_refused(tmp_path, fake_suite, capsys):
    points = gc.grid_points(gc.GRIDS[4])
    assert gc.run_by_point(tmp_path, types.SimpleNamespace(**{**vars(ARGS), "max_runs": 1}), {}, points) == 1
    assert json.loads((tmp_path / "grid.json").read_text())["epochs"] == 1
    other = types.SimpleNamespace(**{**vars(ARGS), "epochs": 3})
    refused(capsys, lambda: gc.run_by_point(tmp_path, other, {}, points),
            "holds runs of another grid (epochs 1 there, 3 now); give another --out")
    refused(capsys, lambda: gc.run_by_point(tmp_path, ARGS, {"train.lr": 1e-3}, points),
            "set {} there, {'train.lr': 0.001} now")
    # a grid.json of before 12-07 names the teacher by its absolute path: the same teacher
    grid = json.loads((tmp_path / "grid.json").read_text())
    assert grid["teacher"] == "t"  # (relative to the repository)
    (tmp_path / "grid.json").write_text(json.dumps(grid | {"teacher": str(gc.ROOT / "t")}))
    assert gc.run_by_point(tmp_path, types.SimpleNamespace(**{**vars(ARGS), "max_runs": 1}), {}, points) == 1
    assert len(fake_suite) == 2


@pytest.mark.parametrize("argv, message", [
    (["--shard", "1/2"], "--shard: with --out"),
    (["--shard", "1/2", "--out", "x", "--whole"], "--shard: with --out"),
    (["--shard", "2/1", "--out", "x"], "--shard 2/1: expected K/N"),
    (["--keep", "k", "--whole"], "--keep: not with --whole"),
])
def test_shard_options_refused(monkeypatch, argv, message, capsys):
    monkeypatch.setattr("sys.argv", ["grid_cost.py", "--teacher", "t"] + argv)
    refused(capsys, gc.main, message)


def test_by_point_resumes_restarts_partials_and_stops_at_max_runs(tmp_path, fake_suite):
    points = gc.grid_points(gc.GRIDS[4])
    args = types.SimpleNamespace(**{**vars(ARGS), "max_runs": 3})
    assert gc.run_by_point(tmp_path, args, {}, points) == 3
    assert fake_suite == [("cache", gc.point_name(points[0])), ("live", gc.point_name(points[0])),
                          ("live", gc.point_name(points[1]))]
    r = gc.collect(tmp_path, "mrpc", points)
    assert (r["cache"]["runs"], r["live"]["runs"]) == (1, 2) and len(r["cache"]["missing"]) == 3
    assert gc.ratio(r) == pytest.approx(30 / 50)  # over point 1 only, the one finished in both
    # an interrupted run (its .partial, with a checkpoint) is started again, not resumed
    nxt = gc.run_folder(tmp_path, "cache", "mrpc", points[1])
    partial = nxt.parent / f".{nxt.name}.partial"
    (partial / "checkpoint").mkdir(parents=True)
    assert gc.run_by_point(tmp_path, ARGS, {}, points) == 5
    assert not partial.exists() and len(fake_suite) == 8
    assert fake_suite[3] == ("cache", gc.point_name(points[1]))
    assert gc.run_by_point(tmp_path, ARGS, {}, points) == 0  # all finished: nothing runs again
    r = gc.collect(tmp_path, "mrpc", points)
    assert r["cache"]["grid_seconds"] == 120 and r["live"]["grid_seconds"] == 200 and gc.ratio(r) == 0.6
    assert r["cache"]["best"] == {"dev": pytest.approx(0.81), "point": gc.point_name(points[1])}
    text = gc.table(r, None)
    assert "| cache | 4    | 120" in text and "0.60" in text and "81.00 (ds.temperature=5-pt.weight=1000)" in text


def test_one_point_suite_runs_where_the_grid_puts_that_point(tmp_path, tiny_bert, capsys):
    """The suite file a point runs from, as the suite runner plans it (--dry-run): the same folder as that point of
    the whole grid, which collect() reads."""
    from textdistill.suite import run_suite

    args = types.SimpleNamespace(**{**vars(ARGS), "teacher": str(tiny_bert), "task": "sst2"})
    for i, point in enumerate(gc.grid_points(gc.GRIDS[36])[4:7]):
        name = gc.NAMES[i % 2]
        suite = gc.suite_file(tmp_path, name, args, {"student.init": str(tiny_bert)},
                              {k: [v] for k, v in point.items()})
        entry = suite["runs"][0]
        assert entry["cache"] is (name == "cache") and entry["set"]["train.epochs"] == 1
        assert gc.grid_points(entry["grid"]) == [point]  # (the tied alpha key keeps its pair)
        path = tmp_path / f"{name}.yaml"
        gc.write_suite(path, suite)
        run_suite(str(path), dry_run=True)
        assert capsys.readouterr().out.split() == ["todo", str(gc.run_folder(tmp_path, name, "sst2", point))]


def test_replayed_search_reads_the_grid_and_ranks_what_it_found():
    points = gc.grid_points(gc.GRIDS[36])
    done = [{"point": gc.point_name(p), "dev": 0.5 + 0.01 * i} for i, p in enumerate(points)]  # the last is best
    whole = gc.replay_search(gc.GRIDS[36], done, 36, [0])[0]
    assert sorted(whole["points"]) == sorted(r["point"] for r in done) and whole["rank"] == 1
    assert whole["best"] == {"point": done[-1]["point"], "dev": pytest.approx(0.85)}
    dev = {r["point"]: r["dev"] for r in done}
    for found in gc.replay_search(gc.GRIDS[36], done, 6, [0, 1, 2]):
        assert len(found["points"]) == len(set(found["points"])) == 6
        best = max(dev[p] for p in found["points"])
        assert found["best"]["dev"] == best and found["rank"] == 1 + sum(v > best for v in dev.values())
    again = gc.replay_search(gc.GRIDS[36], done, 6, [1])[0]
    assert again["points"] == gc.replay_search(gc.GRIDS[36], done, 6, [1])[0]["points"]  # seeded


def test_a_cache_built_by_an_interrupted_first_run_is_built_again(tmp_path, fake_suite):
    """The first cache run counts the cache's build: while no cache run has finished, an interrupted run's cache
    goes with it; once one has, the cache stays (later runs only read it)."""
    points = gc.grid_points(gc.GRIDS[4])
    built = tmp_path.joinpath(*CACHE)
    built.mkdir(parents=True)
    first = gc.run_folder(tmp_path, "cache", "mrpc", points[0])
    (first.parent / f".{first.name}.partial").mkdir(parents=True)
    args = types.SimpleNamespace(**{**vars(ARGS), "max_runs": 1})
    stale = built / "half-written"
    stale.write_text("")
    assert gc.run_by_point(tmp_path, args, {}, points) == 1 and not stale.exists()  # built again
    how = json.loads((first / "grid_cost.json").read_text())
    assert how["built_cache"] is True and gc.build_counted(tmp_path, None, "mrpc")
    stale.write_text("")
    args.max_runs = 3  # (live 1, live 2, then cache 2)
    assert gc.run_by_point(tmp_path, args, {}, points) == 3 and stale.exists()
    second = gc.run_folder(tmp_path, "cache", "mrpc", points[1])
    assert json.loads((second / "grid_cost.json").read_text())["built_cache"] is False
    r = gc.collect(tmp_path, "mrpc", points)
    assert (r["cache"]["runs"], r["live"]["runs"]) == (2, 2)


def test_a_run_without_run_seconds_is_refused_in_one_line(tmp_path, capsys):
    points = gc.grid_points(gc.GRIDS[4])
    old = gc.run_folder(tmp_path, "live", "mrpc", points[0])
    old.mkdir(parents=True)
    (old / "metrics.json").write_text(json.dumps({"train_seconds": 1, "dev": {"f1": 0.8}, "main_metric": "f1"}))
    refused(capsys, lambda: gc.collect(tmp_path, "mrpc", points), "no run_seconds")


def test_kept_runs_count_as_finished_on_another_machine_after_a_cache_warm_up(tmp_path, fake_suite):
    """--keep: each finished run's figures are copied there; a new --out (another machine: no runs, no cache) runs
    only the points not kept, after one uncounted warm-up run that builds the cache (its build was counted by the
    first kept cache run), and the table counts kept and new runs alike."""
    points = gc.grid_points(gc.GRIDS[4])
    keep = tmp_path / "kept"
    first = types.SimpleNamespace(**{**vars(ARGS), "max_runs": 3, "keep": str(keep)})
    assert gc.run_by_point(tmp_path / "a", first, {}, points) == 3
    kept = sorted(p.relative_to(keep).as_posix() for p in keep.rglob("metrics.json"))
    assert kept == sorted(f"{n}/mrpc/{gc.ENTRY}-{gc.point_name(p)}-s1/metrics.json"
                          for n, p in [("cache", points[0]), ("live", points[0]), ("live", points[1])])
    assert json.loads((keep / "grid.json").read_text()) == json.loads((tmp_path / "a" / "grid.json").read_text())
    how = json.loads((keep / "live" / "mrpc" / f"{gc.ENTRY}-{gc.point_name(points[1])}-s1" / "grid_cost.json")
                     .read_text())
    assert how["shard"] == "1/1" and " #" in how["machine"] and how["finished"].endswith("Z")
    assert re.fullmatch(r"[0-9a-f]{8}", how["machine"].split(" #")[-1])  # (a digest, not the host's name)
    assert how["built_cache"] is False  # (a live run builds nothing)
    # paths under the repository (and beside it) are kept relative to it
    run = gc.run_folder(tmp_path / "a", "live", "mrpc", points[1])
    (run / "recipe.yaml").write_text(f"teacher: {gc.ROOT}/runs/t\ndata:\n  dir: {gc.ROOT.parent}/shared/glue\n")
    gc.keep_run(run, tmp_path / "a", keep)
    assert (keep / run.relative_to(tmp_path / "a") / "recipe.yaml").read_text() == (
        "teacher: runs/t\ndata:\n  dir: ../shared/glue\n")
    del fake_suite[:]
    again = types.SimpleNamespace(**{**vars(ARGS), "keep": str(keep)})
    assert gc.run_by_point(tmp_path / "b", again, {}, points) == 5
    assert fake_suite[0] == ("cache", "warmup")  # the cache first, then point 2's cache run, not point 1's
    assert fake_suite[1:] == [("cache", gc.point_name(points[1]))] + [
        (n, gc.point_name(p)) for p in points[2:] for n in (gc.NAMES if p is points[2] else gc.NAMES[::-1])]
    warm = yaml.safe_load((tmp_path / "b" / "cache-warmup.yaml").read_text())["runs"][0]
    assert warm["name"] == "warmup" and warm["cache"] is True and warm["set"]["train.epochs"] == 1e-3
    r = gc.collect(tmp_path / "b", "mrpc", points, keep)
    assert r["cache"]["runs"] == r["live"]["runs"] == 4 and gc.ratio(r) == 0.6  # (the warm-up counts nowhere)
    assert len(list(keep.rglob("metrics.json"))) == 8
    del fake_suite[:]
    assert gc.run_by_point(tmp_path / "c", again, {}, points) == 0 and fake_suite == []  # all kept: no warm-up


def test_a_warm_up_only_where_the_cache_build_was_counted(tmp_path, fake_suite, capsys):
    """Kept live runs alone (no cache run kept): the next cache run builds the cache and counts it, no warm-up;
    a keep folder of another grid is refused before anything runs."""
    points = gc.grid_points(gc.GRIDS[4])
    keep = tmp_path / "kept"
    live = keep / "live" / "mrpc" / f"{gc.ENTRY}-{gc.point_name(points[0])}-s1"
    live.mkdir(parents=True)
    (live / "metrics.json").write_text(json.dumps({"run_seconds": 50.0, "train_seconds": 40.0, "dev": {"f1": 0.8},
                                                   "main_metric": "f1"}))
    args = types.SimpleNamespace(**{**vars(ARGS), "max_runs": 1, "keep": str(keep)})
    assert gc.run_by_point(tmp_path / "a", args, {}, points) == 1
    assert fake_suite == [("cache", gc.point_name(points[0]))]
    other = types.SimpleNamespace(**{**vars(ARGS), "epochs": 3, "keep": str(keep)})
    refused(capsys, lambda: gc.run_by_point(tmp_path / "b", other, {}, points),
            "kept holds runs of another grid (epochs 1 there, 3 now); give another --keep")
    assert len(fake_suite) == 1 and not (tmp_path / "b" / "grid.json").exists()


def test_resuming_from_kept_runs_in_every_order_of_events(tmp_path, fake_suite, capsys):
    """A run finished but not yet kept (the process ended between) is kept by the next call; shards wait for the
    warm-up on a machine without the cache; an interrupted warm-up's cache is built again; no warm-up where only
    live runs are left; and a call without --keep after a warm-up does not take the warm-up's cache for a counted
    build (its next cache run builds the cache again and counts it)."""
    points = gc.grid_points(gc.GRIDS[4])
    keep = tmp_path / "kept"
    with_keep = {**vars(ARGS), "keep": str(keep)}
    assert gc.run_by_point(tmp_path / "a", types.SimpleNamespace(**{**with_keep, "max_runs": 2}), {}, points) == 2
    # the process ends between a run and its copy: the next call keeps it
    unkept = keep / "live" / "mrpc" / f"{gc.ENTRY}-{gc.point_name(points[0])}-s1"
    for f in unkept.iterdir():
        f.unlink()
    gc.run_by_point(tmp_path / "a", types.SimpleNamespace(**{**with_keep, "max_runs": 0}), {}, points)
    assert json.loads((unkept / "metrics.json").read_text())["run_seconds"] == 50.0
    assert not list(keep.rglob(".*.partial"))
    # another machine: the shards wait until an unsharded call has warmed the cache up (and run one point)
    b = tmp_path / "b"
    shard = types.SimpleNamespace(**{**with_keep, "shard": (2, 2)})
    refused(capsys, lambda: gc.run_by_point(b, shard, {}, points), "--shard 2/2: the cache is not built in")
    half = b.joinpath(*CACHE)
    half.mkdir(parents=True)
    (half / "half-written").write_text("")  # (an interrupted warm-up: no manifest)
    del fake_suite[:]
    assert gc.run_by_point(b, types.SimpleNamespace(**{**with_keep, "max_runs": 1}), {}, points) == 1
    assert fake_suite == [("cache", "warmup"), ("live", gc.point_name(points[1]))]
    assert not (half / "half-written").exists() and gc.cache_ready(b)
    assert gc.run_by_point(b, shard, {}, points) == 3  # point 2's cache run, point 4
    assert gc.run_by_point(b, types.SimpleNamespace(**{**with_keep, "shard": (1, 2)}), {}, points) == 2  # point 3
    assert all(n != "warmup" for _, n in fake_suite[2:]) and len(list(keep.rglob("metrics.json"))) == 8
    # only live runs left (all cache runs kept), on a machine without the cache: nothing to warm up
    for f in (keep / "live").rglob("metrics.json"):
        f.unlink()
    del fake_suite[:]
    assert gc.run_by_point(tmp_path / "c", types.SimpleNamespace(**with_keep), {}, points) == 4
    assert {n for n, _ in fake_suite} == {"live"} and not gc.cache_ready(tmp_path / "c")
    # without --keep after a warm-up: the warm-up's cache is no counted build
    d = tmp_path / "d"
    gc.check_settings(d, ARGS, {})
    gc.warm_cache(d, ARGS, {}, points[0])
    assert gc.cache_ready(d) and not gc.build_counted(d, None, "mrpc")
    (d.joinpath(*CACHE) / "from-the-warm-up").write_text("")
    assert gc.run_by_point(d, types.SimpleNamespace(**{**vars(ARGS), "max_runs": 1}), {}, points) == 1
    first = gc.run_folder(d, "cache", "mrpc", points[0])
    assert json.loads((first / "grid_cost.json").read_text())["built_cache"] is True
    assert not (d.joinpath(*CACHE) / "from-the-warm-up").exists()


def test_the_table_says_when_runs_came_from_several_machines(tmp_path, fake_suite, capsys, monkeypatch):
    points = gc.grid_points(gc.GRIDS[4])
    assert gc.run_by_point(tmp_path, ARGS, {}, points) == 8
    r = gc.collect(tmp_path, "mrpc", points)
    machines, split = gc.by_machine(r)
    assert list(machines.values()) == [{"points": 4, "cache": 120.0, "live": 200.0, "ratio": 0.6}] and split == 0
    how = gc.run_folder(tmp_path, "live", "mrpc", points[3]) / "grid_cost.json"
    how.write_text(json.dumps(json.loads(how.read_text()) | {"machine": "another CPU #00000000"}))
    machines, split = gc.by_machine(gc.collect(tmp_path, "mrpc", points))
    assert [m["points"] for m in machines.values()] == [3] and split == 1  # (point 4's runs: two machines)
    monkeypatch.setattr("sys.argv", ["grid_cost.py", "--teacher", "t", "--points", "4", "--out", str(tmp_path),
                                     "--max-runs", "0", "--epochs", "1"])
    gc.main()
    assert "1 point whose two runs ran on two machines" in capsys.readouterr().out
