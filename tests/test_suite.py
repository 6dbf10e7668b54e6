"""Suites: tasks x methods x seeds x grid in one command; finished runs skipped, interrupted ones resumed,
teachers fine-tuned once, a ranked grid and the best recipe, out-of-domain columns, bad suite files."""
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, fails_one_line
from textdistill.cli import main

FAST = {"train.epochs": 1, "train.batch_size": 16, "train.eval_batch_size": 50}


def _suite(tmp_path, d, tiny_bert, **extra):
    suite = {"out": str(tmp_path / "out"), "data_dir": str(d / "sst2"), "seeds": [1, 2],
             "teachers": {"tiny": {"task": "sst2", "set": {"student.init": str(tiny_bert), "train.lr": 1e-3, **FAST}}},
             "runs": [{"name": "ft", "recipe": "recipes/ft.yaml", "tasks": {"sst2": None},
                       "set": {"student.init": str(tiny_bert), "student.layers": "first:2", **FAST}},
                      {"name": "kd", "recipe": "recipes/kd.yaml", "tasks": {"sst2": "tiny"}, "cache": True,
                       "set": {"student.init": str(tiny_bert), "student.layers": "first:2", **FAST},
                       "grid": {"terms.kd.args.temperature": [2, 5]}}],
             "ood": {"sst2": ["sst2", "sst2:train"]}, **extra}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def test_a_suite_runs_skips_and_summarises(tiny_teacher_run, tiny_bert, tmp_path, capsys, monkeypatch):
    import textdistill.hardware as hardware

    d = tiny_teacher_run
    monkeypatch.setattr(hardware, "bf16_fast", lambda cpu=False: False)  # auto resolves to fp32 on every machine
    path = _suite(tmp_path, d, tiny_bert)
    data = yaml.safe_load(path.read_text())
    data["runs"][1]["set"]["train.mixed_precision"] = "auto"
    data["runs"][1]["baseline"] = "ft"
    path.write_text(yaml.safe_dump(data))
    assert main(["suite", str(path)]) == 0
    info = json.loads(capsys.readouterr().out)
    out = tmp_path / "out"
    assert info["runs"] == info["done"] == 2 + 4  # ft x 2 seeds, kd x 2 temperatures x 2 seeds
    assert (out / "teachers" / "tiny" / "metrics.json").is_file()
    names = sorted(p.name for p in (out / "sst2").iterdir())
    assert names == ["ft-s1", "ft-s2", "kd-kd.temperature=2-s1", "kd-kd.temperature=2-s2",
                     "kd-kd.temperature=5-s1", "kd-kd.temperature=5-s2"]
    kd = json.loads((out / "sst2" / "kd-kd.temperature=5-s2" / "metrics.json").read_text())
    assert kd["seed"] == 2 and kd["terms"][0].startswith("kd: logits, kd_kl {'temperature': 5}")
    assert kd["teacher_cache"].startswith(str(out / "cache" / "sst2-tiny-"))
    assert [p.name for p in (out / "cache").iterdir()] == [Path(kd["teacher_cache"]).name]  # one, for both points
    summary = (out / "summary.md").read_text()
    table = [[c.strip() for c in line.split("|")[1:-1]] for line in summary.split("\n## ")[0].splitlines()
             if line.startswith("| sst2")]
    t_acc = json.loads((out / "teachers" / "tiny" / "metrics.json").read_text())["dev"]["accuracy"]
    # the teacher first, with its own out-of-domain figures (the students' OOD columns mean little without them)
    t_ood = json.loads((out / "teachers" / "tiny" / "ood.json").read_text())
    assert table[0][:6] == ["sst2", "teacher tiny", "-", "1", f"{100 * t_acc:.2f} (accuracy)", "100%"]
    assert table[0][8:10] == [f"{100 * t_ood[o]['accuracy']:.2f}" for o in ("sst2", "sst2:train")]
    assert table[0][8] == table[0][4].split()[0]  # OOD "sst2" is the dev file itself here
    table = table[1:]
    assert [(r[1], r[2], r[3]) for r in table] == [("ft", "-", "2"), ("kd", "kd.temperature=2", "2"),
                                                   ("kd", "kd.temperature=5", "2")]
    assert all(r[5].endswith("%") for r in table)  # % of the teacher (FT: of the suite's teacher of its task)
    ft = [json.loads((out / "sst2" / f"ft-s{k}" / "metrics.json").read_text())["dev"]["accuracy"] for k in (1, 2)]
    assert table[0][5] == f"{100 * sum(ft) / 2 / t_acc:.1f}%"
    assert "grid points ranked by mean dev metric" in summary and "best recipe: best-kd-sst2.yaml" in summary
    best = yaml.safe_load((out / "best-kd-sst2.yaml").read_text())
    means = {t: sum(json.loads((out / "sst2" / f"kd-kd.temperature={t}-s{k}" / "metrics.json").read_text())["dev"]
                    ["accuracy"] for k in (1, 2)) / 2 for t in (2, 5)}
    top = [t for t in means if means[t] == max(means.values())]  # the ranking: the best mean dev metric
    assert best["terms"][0]["args"]["temperature"] in top
    # the best recipe keeps auto (it may run on another machine); each run's recipe.yaml says what ran here
    assert best["train"]["mixed_precision"] == "auto"
    ran = yaml.safe_load((out / "sst2" / "kd-kd.temperature=5-s1" / "recipe.yaml").read_text())
    assert ran["train"]["mixed_precision"] == "no"
    assert info["best"]["kd/sst2"]["point"] in [f"kd.temperature={t}" for t in top]
    assert (out / "sst2" / "ft-s1" / "ood.json").is_file() and "OOD sst2" in summary
    assert set(json.loads((out / "sst2" / "ft-s1" / "ood.json").read_text())) == {"sst2", "sst2:train"}
    rows = (out / "summary.csv").read_text().splitlines()
    assert len(rows) == 1 + 1 + 3 and rows[0].startswith("task,run,point,seeds,metric,mean,sd")
    # each kd point against its baseline (ft) on the dev rows: the gap from the runs' metrics, seeds 1 and 2
    gaps = summary[summary.index("## Gaps to each entry's baseline"):]
    gap_rows = [[c.strip() for c in line.split("|")[1:-1]] for line in gaps.splitlines() if line.startswith("| sst2")]
    assert [(r[1], r[2], r[3], r[4]) for r in gap_rows] == [("kd", "kd.temperature=2", "ft", "1, 2"),
                                                            ("kd", "kd.temperature=5", "ft", "1, 2")]
    for row, t in zip(gap_rows, (2, 5)):
        assert row[5] == f"{100 * (means[t] - sum(ft) / 2):+.2f}"
        assert 0 < float(row[7]) <= float(row[8]) <= 1  # p, and its Holm adjustment (never smaller)
    # a second call runs nothing
    import textdistill.train as train

    monkeypatch.setattr(train, "_run", lambda *a, **k: pytest.fail("a finished run ran again"))
    assert main(["suite", str(path)]) == 0
    # one entry's call keeps the other entries' rows and best recipe in the summary
    (out / "summary.md").unlink()
    (out / "best-kd-sst2.yaml").unlink()
    assert main(["suite", str(path), "--only", "ft", "--task", "sst2"]) == 0
    assert (out / "summary.md").read_text() == summary and (out / "best-kd-sst2.yaml").is_file()
    # --summary: the table and best recipes from the finished runs, nothing run (seed 3 would run without it)
    (out / "summary.md").unlink()
    (out / "best-kd-sst2.yaml").unlink()
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), "seeds": [1, 2, 3]}))
    assert main(["suite", str(path), "--summary"]) == 0
    assert (out / "summary.md").read_text() == summary and (out / "best-kd-sst2.yaml").is_file()
    # a point whose runs kept no predictions is listed as untested; a damaged file is said in its row
    for k in (1, 2):
        (out / "sst2" / f"kd-kd.temperature=2-s{k}" / "dev_predictions.jsonl").unlink()
    (out / "sst2" / "kd-kd.temperature=5-s1" / "dev_predictions.jsonl").write_text("not json\n")
    assert main(["suite", str(path), "--summary"]) == 0
    gaps = (out / "summary.md").read_text().split("## Gaps to each entry's baseline")[1]
    assert "Not tested (no seed with dev predictions on both sides" in gaps and "kd (kd.temperature=2) on sst2" in gaps
    (row,) = [line for line in gaps.splitlines() if line.startswith("| sst2")]
    assert "kd.temperature=5" in row and "not tested:" in row and "not a JSON line" in row


def test_an_interrupted_suite_run_is_resumed(tiny_teacher_run, tiny_bert, tmp_path, capsys, monkeypatch):
    """FT at seeds 1 and 2 (13 steps each): stopped at step 8 of seed 2 (its checkpoint at step 6). The summary
    already holds seed 1 (rewritten after each run); the suite resumes seed 2."""
    from textdistill.schemes.offline import Offline

    d = tiny_teacher_run
    path = _suite(tmp_path, d, tiny_bert, seeds=[1, 2])
    s = yaml.safe_load(path.read_text())
    s["runs"][0]["set"]["train.checkpoint_every"] = 3
    path.write_text(yaml.safe_dump(s))
    real, calls = Offline.loss_parts, []

    def stop_once(self, batch):
        calls.append(1)
        if len(calls) == 13 + 8:
            raise KeyboardInterrupt
        return real(self, batch)
    with monkeypatch.context() as m:
        m.setattr(Offline, "loss_parts", stop_once)
        assert main(["suite", str(path), "--only", "ft"]) == 130
    out = tmp_path / "out" / "sst2"
    assert f"{out / 'ft-s2'} keeps its last checkpoint: run the suite again to continue it" in capsys.readouterr().err
    assert (out / "ft-s1" / "metrics.json").is_file() and (out / ".ft-s2.partial" / "checkpoint").is_dir()
    one_seed = (tmp_path / "out" / "summary.md").read_text()
    assert re.search(r"\| sst2 +\| ft +\| - +\| 1 +\| \d+\.\d\d \(accuracy\) +\|", one_seed)  # no spread of one seed
    capsys.readouterr()
    assert main(["suite", str(path), "--dry-run"]) == 0
    assert "todo " + str(out / "ft-s2") in capsys.readouterr().out
    # a checkpoint of other code: refused with one line, unless --resume-any-version (recorded)
    state = out / ".ft-s2.partial" / "checkpoint" / "state.json"
    state.write_text(json.dumps({**json.loads(state.read_text()), "code": "0123456789abcdef"}))
    assert main(["suite", str(path), "--only", "ft"]) == 2
    assert "was written by another version of textdistill" in capsys.readouterr().err
    assert main(["suite", str(path), "--only", "ft", "--resume-any-version"]) == 0
    m = json.loads((out / "ft-s2" / "metrics.json").read_text())
    assert m["resumed"] is True and m["resumed_across_code"][0] == "0123456789abcdef"
    assert re.search(r"\| sst2 +\| ft +\| - +\| 2 +\|", (tmp_path / "out" / "summary.md").read_text())


def test_runs_kept_from_an_earlier_machine_count_as_finished(tiny_teacher_run, tiny_bert, tmp_path, capsys,
                                                             monkeypatch, caplog):
    """The machine's run folders were lost, their figures kept (scripts/keep_results.sh: metrics.json, ood.json):
    with ``kept:`` the suite runs only what is missing, fine-tunes a teacher again only for a run still to do, says
    when the new teacher scores otherwise than the kept one, and its summary reads the kept figures."""
    import shutil

    import textdistill.train as train

    d = tiny_teacher_run
    path = _suite(tmp_path, d, tiny_bert)
    out, kept = tmp_path / "out", tmp_path / "results"
    assert main(["suite", str(path), "--only", "ft", "--seed", "1"]) == 0
    for f in out.rglob("*.json"):  # what keep_results.sh keeps
        if f.name in ("metrics.json", "ood.json") and "model" not in f.parts:
            (kept / f.relative_to(out)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, kept / f.relative_to(out))
    s1 = json.loads((kept / "sst2" / "ft-s1" / "metrics.json").read_text())["dev"]["accuracy"]
    ood1 = json.loads((kept / "sst2" / "ft-s1" / "ood.json").read_text())
    (kept / "teachers" / "tiny").mkdir(parents=True)
    (kept / "teachers" / "tiny" / "metrics.json").write_text(json.dumps({"dev": {"accuracy": 0.0123},
                                                                        "main_metric": "accuracy"}))
    (kept / "teachers" / "tiny" / "ood.json").write_text(json.dumps({"sst2": {"accuracy": 0.0111}}))
    # a KD run the earlier teacher taught, kept without a teacher.json (as runs were before it existed)
    kd_kept = kept / "sst2" / "kd-kd.temperature=2-s2"
    kd_kept.mkdir(parents=True)
    kd_kept_m = {**json.loads((kept / "sst2" / "ft-s1" / "metrics.json").read_text()), "dev": {"accuracy": 0.5}}
    kd_kept_m.pop("mixed_precision")  # (its metrics predate the field: the recipe it saved says bf16)
    (kd_kept / "metrics.json").write_text(json.dumps(kd_kept_m))
    (kd_kept / "recipe.yaml").write_text("method: kd\ntrain:\n  mixed_precision: bf16\n")
    shutil.rmtree(out)
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), "kept": str(kept)}))
    capsys.readouterr()
    assert main(["suite", str(path), "--dry-run", "--only", "ft"]) == 0
    assert capsys.readouterr().out.splitlines()[:2] == [
        f"done {out / 'sst2' / 'ft-s1'} (kept: {kept / 'sst2' / 'ft-s1'})", f"todo {out / 'sst2' / 'ft-s2'}"]
    real, ran = train._run, []  # (what a suite calls under the run's lock)
    monkeypatch.setattr(train, "_run", lambda recipe, folder, **k: (ran.append(Path(folder).name),
                                                                 real(recipe, folder, **k))[1])
    assert main(["suite", str(path), "--only", "ft"]) == 0
    assert ran == ["ft-s2"] and not (out / "teachers").exists()  # FT needs no teacher: none fine-tuned again
    summary = (out / "summary.md").read_text()
    s2 = json.loads((out / "sst2" / "ft-s2" / "metrics.json").read_text())["dev"]["accuracy"]
    row = next([c.strip() for c in line.split("|")[1:-1]] for line in summary.splitlines() if "| ft " in line)
    assert row[3] == "2" and row[4].startswith(f"{100 * (s1 + s2) / 2:.2f} ± ")
    # the kept teacher is the % of teacher's base until a new one exists; s1's OOD figure is the kept one
    assert row[5] == f"{100 * (s1 + s2) / 2 / 0.0123:.1f}%"
    ood2 = json.loads((out / "sst2" / "ft-s2" / "ood.json").read_text())
    assert row[8] == f"{100 * (ood1['sst2']['accuracy'] + ood2['sst2']['accuracy']) / 2:.2f}"
    # KD needs the teacher's model: fine-tuned again, and the log says it differs from the kept one
    ran.clear()
    with caplog.at_level("WARNING", logger="textdistill"):
        assert main(["suite", str(path), "--only", "kd", "--seed", "1"]) == 0
    assert ran[0] == "tiny" and len(ran) == 3
    assert "teacher tiny fine-tuned again scores" in caplog.text and "0.0123" in caplog.text
    # each new run records the teacher that taught it; the summary compares each run with its own teacher
    t_new = json.loads((out / "teachers" / "tiny" / "metrics.json").read_text())["dev"]["accuracy"]
    kd1 = out / "sst2" / "kd-kd.temperature=2-s1"
    assert json.loads((kd1 / "teacher.json").read_text())["dev"]["accuracy"] == t_new
    table = {(c[1], c[2]): c for c in ([x.strip() for x in line.split("|")[1:-1]]
                                       for line in (out / "summary.md").read_text().splitlines()
                                       if line.startswith("| sst2"))}
    assert table[("teacher tiny", "-")][4] == f"{100 * t_new:.2f} (accuracy)"
    assert table[("teacher tiny", "-")][8] != "1.11"  # the new teacher's own OOD figure, not the kept one's
    assert table[("teacher tiny (earlier)", "-")][4] == "1.23 (accuracy)"
    a1 = json.loads((kd1 / "metrics.json").read_text())["dev"]["accuracy"]
    row = table[("kd", "kd.temperature=2")]
    assert row[3] == "2 (bf16 + fp32)" and row[5] == f"{100 * (a1 / t_new + 0.5 / 0.0123) / 2:.1f}%"


def test_bad_suite_files(tiny_teacher_run, tiny_bert, tmp_path, capsys):
    d = tiny_teacher_run
    path = _suite(tmp_path, d, tiny_bert)
    s = yaml.safe_load(path.read_text())
    for change, needle in ((lambda x: x["runs"][0]["tasks"].update({"sst5": None}), "unknown task 'sst5'"),
                           (lambda x: x["runs"][1].update({"recipe": "recipes/kd-fast.yaml"}),
                            "runs[1] (kd).recipe: recipes/kd-fast.yaml: not found"),
                           (lambda x: x["runs"][1]["tasks"].update({"sst2": "big"}),
                            "runs[1] (kd).tasks.sst2: 'big' is neither a teacher"),
                           (lambda x: x.update({"sedes": [1]}), "unknown key 'sedes'"),
                           (lambda x: x.update({"seeds": [1, 1]}), "a seed is listed twice"),
                           (lambda x: x["runs"][1].update({"seeds": [2, 2]}), "a seed is listed twice"),
                           (lambda x: x["runs"][0].update({"set": {"train.lr": -1}}), "train.lr"),
                           (lambda x: x.update({"ood": {"sst2": ["imdb:validation"]}}),
                            "ood.sst2: task imdb has no 'validation' split"),
                           (lambda x: x.update({"kept": str(tmp_path / "results")}), "results: no such folder"),
                           (lambda x: x["runs"][1].update({"baseline": "fine-tune"}),
                            "runs[1] (kd).baseline: 'fine-tune' is not another entry"),
                           (lambda x: x["runs"][1].update({"baseline": "kd"}), "'kd' is not another entry"),
                           (lambda x: x["runs"][0].update({"baseline": "kd"}),
                            "runs[0] (ft).baseline: 'kd' has a grid"),
                           (lambda x: (x["runs"][0].update({"tasks": {"rte": None}}),
                                       x["runs"][1].update({"baseline": "ft"})),
                            "runs[1] (kd).baseline: 'ft' runs none of this entry's tasks")):
        bad = yaml.safe_load(yaml.safe_dump(s))
        change(bad)
        path.write_text(yaml.safe_dump(bad))
        fails_one_line(["suite", str(path)], capsys, needle, tmp_path / "out")


def test_the_shipped_suite_files_are_valid(capsys):
    """Every suite in suites/ loads, gives each run its own folder, and passes --dry-run's checks (every run's
    recipe with its overrides, tasks, teachers, ood sets), listing each run once."""
    from textdistill.suite import load_suite, plan

    files = sorted((ROOT / "suites").glob("*.yaml"))
    assert files
    for path in files:
        suite = load_suite(str(path))
        if suite.kept and (ROOT / ".git").exists():  # a clean clone has only what git tracks: an empty or untracked
            tracked = subprocess.run(["git", "ls-files", suite.kept], cwd=ROOT, capture_output=True, text=True)
            assert tracked.returncode == 0 and tracked.stdout.strip(), f"{path}: kept: {suite.kept} holds no file in git"
        runs = plan(suite)
        assert runs and len({r["out"] for r in runs}) == len(runs), path  # every run has its own folder
        assert main(["suite", str(path.relative_to(ROOT)), "--dry-run"]) == 0
        printed = capsys.readouterr().out.splitlines()
        listed = [line.split()[1] for line in printed if line.startswith(("todo runs/", "done runs/"))]
        searched = {(r["entry"].name, r["task"]) for r in runs if r["entry"].search is not None}
        # a search's runs are decided as it goes: only its finished ones are listed, and one line says what it does
        assert sorted(listed) == sorted(str(r["out"]) for r in runs if r["entry"].search is None
                                        or line_done(printed, r["out"])), path
        assert {(line.split()[1], line.split()[3].rstrip(":")) for line in printed
                if line.startswith("search ")} == searched, path


def line_done(printed: list[str], out) -> bool:
    """``out`` is listed as finished: ``done OUT``, or ``done OUT (kept: FOLDER)`` where only its kept figures are
    left (a clean clone: runs/ is not in git, results/ is)."""
    return any(line.split()[:2] == ["done", str(out)] for line in printed)


def test_an_entry_may_have_its_own_seeds(tiny_teacher_run, tiny_bert, tmp_path):
    from textdistill.suite import load_suite, plan

    path = _suite(tmp_path, tiny_teacher_run, tiny_bert)
    suite = yaml.safe_load(path.read_text())
    suite["runs"][1]["seeds"] = [7]
    path.write_text(yaml.safe_dump(suite))
    names = sorted(r["out"].name for r in plan(load_suite(str(path))))
    assert names == ["ft-s1", "ft-s2", "kd-kd.temperature=2-s7", "kd-kd.temperature=5-s7"]
    suite["runs"][1]["seeds"] = []
    path.write_text(yaml.safe_dump(suite))
    with pytest.raises(Exception, match="seeds"):
        load_suite(str(path))


def test_task_filter(capsys):
    """--task runs one task's part of a suite and --seed one seed's (the shipped 12-layer suite, listed with
    --dry-run); an unknown task or seed, or filters that leave no run, are one line."""
    assert main(["suite", "suites/mpnet12.yaml", "--dry-run", "--task", "rte", "--task", "mrpc"]) == 0
    lines = capsys.readouterr().out.splitlines()
    teachers = [line for line in lines if line.startswith("todo teacher ")]  # (where this checkout lacks them)
    assert {line.rsplit("/", 1)[1] for line in teachers} <= {"mpnet-rte", "mpnet-mrpc"}
    lines = [line for line in lines if line not in teachers]
    assert len(lines) == 2 * 14 * 3 + 1 and json.loads(lines[-1])["runs"] == 84
    assert {line.split()[1].split("/")[2] for line in lines[:-1]} == {"rte", "mrpc"}
    fails_one_line(["suite", "suites/mpnet12.yaml", "--dry-run", "--task", "rte", "--only", "kd-6-full"], capsys,
                   "--only kd-6-full --task rte: no run matches all of these")
    # --seed: one seed of a task's runs (the first pass of a long suite on a CPU)
    assert main(["suite", "suites/mpnet12.yaml", "--dry-run", "--task", "rte", "--seed", "2"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("todo teacher ")]
    assert len(lines) == 14 + 1 and all(line.split()[1].endswith("-s2") for line in lines[:-1])  # "done X (kept: Y)"
    fails_one_line(["suite", "suites/mpnet12.yaml", "--dry-run", "--seed", "9"], capsys, "--seed 9: no run of that seed")
    fails_one_line(["suite", "suites/mpnet12.yaml", "--dry-run", "--only", "kd-6-full", "--seed", "2"], capsys,
                   "--only kd-6-full --seed 2: no run matches all of these")
    fails_one_line(["suite", "suites/mpnet12.yaml", "--dry-run", "--only", "kd-7"], capsys,
                   "--only kd-7: no run entry of that name")
    fails_one_line(["suite", "suites/mpnet12.yaml", "--task", "sst5"], capsys, "--task sst5: no run of that task")


def test_runs_share_a_cache_when_it_would_hold_the_same_outputs(tiny_bert, tmp_path):
    """KD of a 2- and a 3-layer student reads the same logits: one cache; PKD-Skip's [CLS] vectors of other teacher
    layers, another max_length or another training sample: caches of their own."""
    from textdistill.recipe import load_recipe
    from textdistill.suite import Suite, cache_folder

    suite = Suite(out=str(tmp_path / "out"), runs=[{"name": "x", "recipe": "recipes/kd.yaml", "tasks": {"sst2": None}}])

    def folder(recipe, *sets):
        r = load_recipe(f"recipes/{recipe}.yaml", [("teacher", str(tiny_bert)), ("student.init", str(tiny_bert)),
                                                   *sets])
        return cache_folder(suite, {"task": "sst2", "teacher": "tiny"}, r)

    kd2, kd3 = folder("kd", ("student.layers", "first:2")), folder("kd", ("student.layers", "first:3"))
    assert kd2 == kd3 and Path(kd2).name.startswith("sst2-tiny-")
    assert folder("kd", ("terms.kd.args.temperature", 20), ("hard_weight", 0.1)) == kd2  # not in the cache
    # ONNX Runtime and PyTorch in fp32 hold the same outputs; under bf16 autocast they are other outputs
    assert folder("kd", ("teacher_cache.runtime", "torch")) == kd2
    others = {folder("pkd-skip", ("student.layers", "first:2")), folder("pkd-skip", ("student.layers", "first:3")),
              folder("kd", ("train.max_length", 64)), folder("kd", ("data.train_rows", 50)),
              folder("kd", ("teacher_cache.runtime", "torch-bf16"))}
    assert len(others) == 5 and kd2 not in others
    # a teacher given as a folder: its cache is one folder under <out>/cache, named by the path's last three parts
    # (an absolute path's parts above them, this machine's folders, are not in the name)
    r = load_recipe("recipes/kd.yaml", [("teacher", str(tiny_bert)), ("student.init", str(tiny_bert))])
    by_path = Path(cache_folder(suite, {"task": "sst2", "teacher": "/home/ann/work/runs/teachers/mrpc x/model"}, r))
    assert by_path.parent == tmp_path / "out" / "cache"
    assert by_path.name.startswith("sst2-teachers_mrpc_x_model-") and "ann" not in by_path.name
    # two folders whose names read alike once made safe are two caches; so are two with the same last three parts
    alike = Path(cache_folder(suite, {"task": "sst2", "teacher": "/home/ann/work/runs/teachers/mrpc_x/model"}, r))
    assert alike.name.startswith("sst2-teachers_mrpc_x_model-") and alike != by_path
    elsewhere = Path(cache_folder(suite, {"task": "sst2", "teacher": "/home/bob/runs/teachers/mrpc x/model"}, r))
    assert elsewhere.name.startswith("sst2-teachers_mrpc_x_model-") and elsewhere != by_path
    relative = Path(cache_folder(suite, {"task": "sst2", "teacher": "runs/teachers/mrpc-x/model"}, r))
    assert relative.name.startswith("sst2-teachers_mrpc-x_model-")


def test_a_reference_puts_the_papers_share_of_its_teacher_beside_the_runs(tmp_path):
    """An entry's `reference: KEY` adds the run's % of its teacher in the paper's metric (MRPC: accuracy, where the
    main metric is F1) and the paper's own % of its teacher, read from the shipped PKD file."""
    import csv

    from textdistill.suite import load_suite, plan, summarise

    out = tmp_path / "out"
    suite = {"out": str(out), "seeds": [1, 2], "reference": str(ROOT / "references" / "pkd-glue-dev.csv"),
             "teachers": {"t": {"task": "mrpc"}},
             "runs": [{"name": "pkd", "reference": "pkd-skip-6", "recipe": str(ROOT / "recipes" / "pkd-skip.yaml"),
                       "tasks": {"mrpc": "t"}},
                      {"name": "ft", "reference": "ft-6", "recipe": str(ROOT / "recipes" / "ft.yaml"),
                       "tasks": {"mrpc": None}},
                      {"name": "kd", "recipe": str(ROOT / "recipes" / "kd.yaml"), "tasks": {"mrpc": "t"}}]}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    s = load_suite(str(path))
    (out / "teachers" / "t").mkdir(parents=True)
    (out / "teachers" / "t" / "metrics.json").write_text(json.dumps({"dev": {"f1": 0.86, "accuracy": 0.80}}))
    for r, acc in zip(plan(s), (0.76, 0.79, 0.70, 0.71, 0.72, 0.74)):
        r["out"].mkdir(parents=True)
        (r["out"] / "metrics.json").write_text(json.dumps({"main_metric": "f1", "dev": {"f1": acc + 0.05,
                                                           "accuracy": acc}, "train_seconds": 1.0}))
    summarise(s, plan(s))
    with open(ROOT / "references" / "pkd-glue-dev.csv", newline="") as f:
        paper = {(r["key"], r["task"]): float(r["value"]) for r in csv.DictReader(f)}
    want = 100 * paper[("pkd-skip-6", "mrpc")] / paper[("teacher", "mrpc")]
    rows = {r["run"]: r for r in csv.DictReader(open(out / "summary.csv"))}
    assert list(rows) == ["teacher t", "pkd", "ft", "kd"]  # the teacher, then the entries in the suite's order
    assert rows["pkd"]["of_teacher_paper_metric"] == f"{100 * (0.76 + 0.79) / 2 / 0.80:.1f}% (accuracy)"
    assert rows["pkd"]["paper_of_teacher"].startswith(f"{want:.1f}% (83.46 / 86.93)")
    assert abs(want - 96.0) < 0.1  # the repository's PKD-6 keeps 96.0 % of its teacher on MRPC (dev accuracy)
    # FT has no teacher: it is compared with the suite's teacher of its task (PKD's tables do the same)
    assert rows["ft"]["of_teacher"] == f"{100 * (0.75 + 0.76) / 2 / 0.86:.1f}%"  # main metric, F1
    assert rows["ft"]["of_teacher_paper_metric"] == f"{100 * (0.70 + 0.71) / 2 / 0.80:.1f}% (accuracy)"
    assert rows["ft"]["paper_of_teacher"].startswith(
        f"{100 * paper[('ft-6', 'mrpc')] / paper[('teacher', 'mrpc')]:.1f}% (82.23 / 86.93)")
    assert rows["kd"]["paper_of_teacher"] == rows["kd"]["of_teacher_paper_metric"] == ""  # no reference named
    assert "paper (pkd-glue-dev): % of its teacher" in (out / "summary.md").read_text()
    assert rows["teacher t"]["mean"] == "86.0" and rows["teacher t"]["paper_of_teacher"] == "teacher: 86.93 (accuracy)"


def test_bad_references(tmp_path, capsys):
    ref = tmp_path / "ref.csv"
    suite = {"out": str(tmp_path / "out"), "reference": str(ref),
             "runs": [{"name": "kd", "reference": "kd-6", "recipe": str(ROOT / "recipes" / "ft.yaml"),
                       "tasks": {"rte": None}}]}
    path = tmp_path / "suite.yaml"
    for text, needle in ((None, f"reference {ref}: not found"),
                         ("key,task,value\n", "the header needs the columns key, task, metric, value (missing: metric)"),
                         ("key,task,metric,value\nkd-6,rte,accuracy,high\n", f"{ref}: row 2: value 'high' is not a number"),
                         ("key,task,metric,value\nkd-6,rte,accuracy,67.5\n", "row 2: value 67.5 is not in [-1, 1]"),
                         ("key,task,metric,value\nkd-6,rte,acc,0.675\n", "row 2: rte has no metric 'acc'"),
                         ("key,task,metric,value\nkd-6,rtee,accuracy,0.6\n", "row 2: unknown task 'rtee'"),
                         ("key,task,metric,value\nkd-6,rte,accuracy,0.6\nkd-6,rte,accuracy,0.7\n",
                          "row 3: kd-6 on rte is listed twice"),
                         ("key,task,metric,value\nkd-3,rte,accuracy,0.6\n",
                          f"runs[0] (kd).reference: 'kd-6' is not a key of the reference file {ref}")):
        if text is not None:
            ref.write_text(text)
        path.write_text(yaml.safe_dump(suite))
        fails_one_line(["suite", str(path), "--dry-run"], capsys, needle)
    del suite["reference"]
    path.write_text(yaml.safe_dump(suite))
    fails_one_line(["suite", str(path), "--dry-run"], capsys, "is not a key of a reference file (the suite names none)")


def test_reference_cells_need_the_same_metric_on_both_sides():
    """The paper's % is computed only where its teacher and student figures share a metric; the run's only where
    every seed (and the teacher) has the reference's metric."""
    from textdistill.suite import _reference_cells

    refs = {("teacher", "mrpc"): ("accuracy", 0.9), ("kd-6", "mrpc"): ("f1", 0.8), ("ft-6", "mrpc"): ("accuracy", 0.81)}
    teacher = {"accuracy": 0.8, "f1": 0.86}
    items = [({"dev": {"accuracy": 0.72}}, teacher), ({"dev": {"f1": 0.8}}, teacher)]
    assert _reference_cells(refs, "kd-6", "mrpc", items) == ["", ""]  # f1: a seed lacks it; metrics differ
    assert _reference_cells(refs, "ft-6", "mrpc", items[:1]) == ["90.0% (accuracy)", "90.0% (81.00 / 90.00)"]
    assert _reference_cells(refs, "ft-6", "rte", items[:1]) == ["", ""]  # no figure for the task
    # seeds taught by two versions of a teacher (one fine-tuned again): each against its own
    two = [({"dev": {"accuracy": 0.72}}, teacher), ({"dev": {"accuracy": 0.72}}, {"accuracy": 0.9})]
    assert _reference_cells(refs, "ft-6", "mrpc", two)[0] == f"{100 * (0.9 + 0.8) / 2:.1f}% (accuracy)"
    assert _reference_cells(refs, "ft-6", "mrpc", [({"dev": {"accuracy": 0.72}}, None)])[0] == ""


def _search_suite(tmp_path, d, tiny_bert, trials, seeds=(1,), sampler="random"):
    path = _suite(tmp_path, d, tiny_bert, seeds=list(seeds))
    s = yaml.safe_load(path.read_text())
    s["runs"] = [s["runs"][1]]  # kd only
    s["runs"][0]["grid"] = {"terms.kd.args.temperature": [1, 2, 5, 10], "hard_weight,terms.kd.weight": [[0.5, 0.5],
                                                                                                        [0.2, 0.8]]}
    s["runs"][0]["search"] = {"trials": trials, "sampler": sampler, "seed": 3}
    s.pop("ood")
    path.write_text(yaml.safe_dump(s))
    return path


def _points(out: Path) -> dict[str, list[str]]:
    got: dict[str, list[str]] = {}
    for run in sorted((out / "sst2").iterdir()):
        if (run / "metrics.json").is_file():
            point, seed = run.name.removeprefix("kd-").rsplit("-s", 1)
            got.setdefault(point, []).append(seed)
    return got


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_a_search_runs_its_budget_of_grid_points_and_continues(tiny_teacher_run, tiny_bert, tmp_path, capsys,
                                                                caplog, sampler):
    """search: {trials: 2} of an 8-point grid runs 2 distinct points (every seed of each), ranks them and writes
    the best recipe; run again it runs nothing; with trials: 3 it adds one point (the study rebuilt from the
    finished runs); a point whose seed 2 is missing is finished before any new point."""
    d, out = tiny_teacher_run, tmp_path / "out"
    path = _search_suite(tmp_path, d, tiny_bert, trials=2, seeds=(1, 2), sampler=sampler)
    assert main(["suite", str(path), "--dry-run"]) == 0
    assert f"search kd on sst2: 2 of 8 grid points by {sampler} (0 finished)" in capsys.readouterr().out
    assert main(["suite", str(path)]) == 0
    info = json.loads(capsys.readouterr().out)
    first = _points(out)
    assert len(first) == 2 and all(seeds == ["1", "2"] for seeds in first.values()), first
    means = {p: sum(json.loads((out / "sst2" / f"kd-{p}-s{k}" / "metrics.json").read_text())["dev"]["accuracy"]
                    for k in (1, 2)) / 2 for p in first}
    assert info["best"]["kd/sst2"]["point"] in [p for p in means if means[p] == max(means.values())]
    summary = (out / "summary.md").read_text()
    assert all(p in summary for p in first) and (out / "best-kd-sst2.yaml").is_file()
    assert main(["suite", str(path)]) == 0 and _points(out) == first  # nothing new
    capsys.readouterr()
    path = _search_suite(tmp_path, d, tiny_bert, trials=3, seeds=(1, 2), sampler=sampler)
    assert main(["suite", str(path)]) == 0
    second = _points(out)
    assert len(second) == 3 and set(first) < set(second)
    # a point with a seed missing (a search stopped mid-point) is completed first, and counts as one of the trials
    import shutil

    new = next(p for p in second if p not in first)
    shutil.rmtree(out / "sst2" / f"kd-{new}-s2")
    caplog.clear()
    with caplog.at_level("INFO", logger="textdistill"):
        assert main(["suite", str(path)]) == 0
    assert _points(out) == second
    assert f"finishing the point it began, {new}" in caplog.text and "point 3 of 3" not in caplog.text


def test_search_bad_input(tiny_teacher_run, tiny_bert, tmp_path, capsys, monkeypatch):
    import builtins

    d = tiny_teacher_run
    path = _search_suite(tmp_path, d, tiny_bert, trials=9)
    fails_one_line(["suite", str(path)], capsys, "runs[0] (kd).search.trials: 9 exceeds the grid's 8 points",
                   tmp_path / "out")
    s = yaml.safe_load(path.read_text())
    s["runs"][0]["search"]["trials"] = 0
    path.write_text(yaml.safe_dump(s))
    fails_one_line(["suite", str(path)], capsys, "runs.0.search.trials", tmp_path / "out")
    s["runs"][0].pop("grid")
    s["runs"][0]["search"]["trials"] = 1
    path.write_text(yaml.safe_dump(s))
    fails_one_line(["suite", str(path)], capsys, "runs[0] (kd).search: searches the entry's grid; give it a grid",
                   tmp_path / "out")
    path = _search_suite(tmp_path, d, tiny_bert, trials=2)
    real = builtins.__import__

    def no_optuna(name, *a, **k):
        if name == "optuna":
            raise ImportError(name)
        return real(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", no_optuna)
    fails_one_line(["suite", str(path)], capsys, "search: needs the optuna package", tmp_path / "out")
    monkeypatch.undo()
    fails_one_line(["suite", str(path), "--seed", "1"], capsys, "--seed: a search runs each point it picks at every "
                   "seed of its entry (kd)", tmp_path / "out")


def test_grid_point_names_and_folders_that_would_collide(tiny_teacher_run, tiny_bert, tmp_path, capsys):
    from textdistill.suite import point_name

    assert point_name({"terms.kd.args.temperature": 5, "hard_weight,terms.kd.weight": [0.5, 0.7]}) == \
        "kd.temperature=5-hard_weight,kd.weight=0.5,0.7"  # every value of tied keys: [0.5, 0.5] is another folder
    path = _suite(tmp_path, tiny_teacher_run, tiny_bert)
    s = yaml.safe_load(path.read_text())
    s["runs"][1]["grid"] = {"train.lr": [1e-5, 0.00001]}
    path.write_text(yaml.safe_dump(s))
    fails_one_line(["suite", str(path)], capsys, "runs (kd): two runs would share the folder", tmp_path / "out")


def test_a_search_goes_on_past_a_point_that_fails(tiny_teacher_run, tiny_bert, tmp_path, capsys, caplog):
    """temperature 0 is refused when its run starts: the point is recorded as failed, counts as tried, the search
    runs the other points, and a second call neither retries it nor needs the teacher again."""
    d, out = tiny_teacher_run, tmp_path / "out"
    path = _search_suite(tmp_path, d, tiny_bert, trials=3)
    s = yaml.safe_load(path.read_text())
    s["runs"][0]["grid"] = {"terms.kd.args.temperature": [0, 2, 5]}
    path.write_text(yaml.safe_dump(s))
    with caplog.at_level("ERROR", logger="textdistill"):
        assert main(["suite", str(path)]) == 0
    assert "point kd.temperature=0 failed (terms[0] (kd).args.temperature" in caplog.text
    assert set(_points(out)) == {"kd.temperature=2", "kd.temperature=5"}
    failed = json.loads((out / "sst2" / ".search-kd-failed.json").read_text())
    assert list(failed) == ["kd.temperature=0"] and "temperature" in failed["kd.temperature=0"]
    capsys.readouterr()
    assert main(["suite", str(path), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "(2 finished, 1 failed)" in printed and "todo teacher" not in printed


def test_a_suite_decides_under_the_lock_of_the_run(tiny_teacher_run, tiny_bert, tmp_path, capsys, caplog,
                                                   monkeypatch):
    """Two suites sharing runs (two terminals, two grids that overlap): whether a run is started, resumed or
    skipped is decided while holding the lock its run holds, so a suite that waited for a run another one held
    does not train it again over the other's figures. A run held by another process stops the suite in one line
    (a search records no failed point for it)."""
    import shutil
    from contextlib import contextmanager

    from filelock import FileLock, Timeout

    import textdistill.files as files
    import textdistill.train as train

    d, out = tiny_teacher_run, tmp_path / "out" / "sst2"
    path = _suite(tmp_path, d, tiny_bert, seeds=[1])
    out.mkdir(parents=True)
    held = FileLock(out / ".ft-s1.lock")  # (another process's run: another descriptor, so flock refuses ours)
    held.acquire()
    try:
        assert main(["suite", str(path), "--only", "ft"]) == 2
    finally:
        held.release()
    err = capsys.readouterr().err.strip()
    assert err.splitlines()[-1].endswith(f"{out / 'ft-s1'}: another run is writing it now (it holds "
                                         f"{out / '.ft-s1.lock'}); wait for it to end or choose another output"), err
    assert sorted(p.name for p in out.iterdir()) == [".ft-s1.lock"]  # (the other one's; nothing of ours)
    (out / ".ft-s1.lock").unlink()
    # the suite's own question (resume the .partial?) is asked under the run's lock
    real_resumable, asked = train.resumable, []

    def resumable(folder):
        probe = FileLock(Path(folder).parent / f".{Path(folder).name}.lock")
        try:
            probe.acquire(timeout=0)
            probe.release()
            asked.append((Path(folder).name, False))
        except Timeout:
            asked.append((Path(folder).name, True))
        return real_resumable(folder)

    monkeypatch.setattr(train, "resumable", resumable)
    assert main(["suite", str(path), "--only", "ft"]) == 0
    assert asked and set(asked) == {("ft-s1", True)} and (out / "ft-s1" / "metrics.json").is_file()
    # seed 2 finished by another suite while this one waited for its lock: not trained again
    s = yaml.safe_load(path.read_text())
    s["seeds"] = [1, 2]
    path.write_text(yaml.safe_dump(s))
    real_lock = files.output_lock

    @contextmanager
    def finished_while_waiting(folder, wait=None):
        if Path(folder).name == "ft-s2":
            shutil.copytree(out / "ft-s1", out / "ft-s2")  # (the other suite's run, done as this one gets the lock)
        with real_lock(folder, wait=wait):
            yield

    monkeypatch.setattr(files, "output_lock", finished_while_waiting)
    with caplog.at_level("INFO", logger="textdistill"):
        assert main(["suite", str(path), "--only", "ft"]) == 0
    assert f"suite: {out / 'ft-s2'}" not in caplog.text
    assert (out / "ft-s2" / "metrics.json").read_text() == (out / "ft-s1" / "metrics.json").read_text()
    assert not any(p.name.endswith(".lock") for p in out.iterdir())
    # a search point held by another suite: this suite stops, and the point is not recorded as failed
    caplog.clear()

    @contextmanager
    def busy(folder, wait=None):  # (every run is another suite's; the teacher, waited for, is not)
        if wait is None:
            raise files.OutputBusy(f"{folder}: another run is writing it now")
        with real_lock(folder, wait=wait):
            yield

    monkeypatch.setattr(files, "output_lock", busy)
    search = _search_suite(tmp_path, d, tiny_bert, trials=2)
    assert main(["suite", str(search)]) == 2
    assert "another run is writing it now" in capsys.readouterr().err
    assert not (out / ".search-kd-failed.json").exists() and set(_points(tmp_path / "out")) == {"ft"}


@pytest.mark.parametrize("other_finishes", [True, False])
def test_a_teacher_another_suite_is_fine_tuning_is_waited_for(tiny_teacher_run, tiny_bert, tmp_path, caplog,
                                                              monkeypatch, other_finishes):
    """Two suites on two cores share a teacher: the second one waits for the first one's fine-tuning (a
    warning says so), then uses the teacher it wrote; if that one ended without a teacher (killed), it
    fine-tunes the teacher itself."""
    import shutil
    import threading
    import time

    from filelock import FileLock

    import textdistill.train as train

    d = tiny_teacher_run
    path = _suite(tmp_path, d, tiny_bert, seeds=[1])
    teachers = tmp_path / "out" / "teachers"
    teachers.mkdir(parents=True)
    held = threading.Event()

    def other_suite():  # (another process's lock: another descriptor, so flock refuses ours until it ends)
        with FileLock(teachers / ".tiny.lock"):
            held.set()
            time.sleep(1.5)
            if other_finishes:
                shutil.copytree(d / "teacher", teachers / "tiny")  # (its teacher, written as it ends)

    other = threading.Thread(target=other_suite)
    other.start()
    held.wait()
    real, ran = train._run, []
    monkeypatch.setattr(train, "_run", lambda recipe, folder, **k: (ran.append(Path(folder).name),
                                                                 real(recipe, folder, **k))[1])
    try:
        with caplog.at_level("WARNING", logger="textdistill"):
            assert main(["suite", str(path), "--only", "kd"]) == 0
    finally:
        other.join()
    assert f"suite: teacher tiny {teachers / 'tiny'}: another run is writing it now; waiting for it" in caplog.text
    assert ran == (["kd-kd.temperature=2-s1", "kd-kd.temperature=5-s1"] if other_finishes else
                   ["tiny", "kd-kd.temperature=2-s1", "kd-kd.temperature=5-s1"])
    taught = json.loads((tmp_path / "out" / "sst2" / "kd-kd.temperature=2-s1" / "teacher.json").read_text())
    wrote = json.loads((teachers / "tiny" / "metrics.json").read_text())
    assert taught["dev"] == wrote["dev"] and not (teachers / ".tiny.lock").exists()
    if other_finishes:
        assert wrote == json.loads((d / "teacher" / "metrics.json").read_text())
