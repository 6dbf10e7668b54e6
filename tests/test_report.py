"""textdistill report (markdown + PNG plots of finished runs) and train.tensorboard, on tiny runs."""
import csv
import json
import re
import sys

import pytest

from textdistill.cli import main
from textdistill.plots import frontier
from textdistill.report import write_report

from conftest import ROOT

FAST = ["--set", "train.epochs=2", "--set", "train.batch_size=16", "--set", "train.eval_batch_size=50"]
PNG = b"\x89PNG\r\n\x1a\n"


def _student(d, command, recipe, out, seed, *extra):
    model = str(d / "teacher" / "model")
    args = [command, "-r", str(ROOT / "recipes" / f"{recipe}.yaml"), "-o", str(out), "--seed", str(seed),
            "--set", f"student.init={model}", "--set", "student.layers=first:2", "--data-dir", str(d / "sst2"),
            *FAST, *extra]
    if command == "distill":
        args += ["--teacher", model]
    assert main(args) == 0


@pytest.fixture(scope="module")
def runs(tiny_teacher_run):
    """``report-runs/`` beside the tiny teacher: KD (seeds 1, 2; seed 2 with TensorBoard scalars), FT (seed 1), and
    an unfinished hidden run the report must skip."""
    d = tiny_teacher_run
    base = d / "report-runs"
    if not base.is_dir():
        _student(d, "distill", "kd", base / "kd-s1", 1)
        _student(d, "distill", "kd", base / "kd-s2", 2, "--set", "train.tensorboard=true")
        _student(d, "finetune", "ft", base / "ft" / "s1", 1)
        partial = base / ".kd-s3.partial"
        partial.mkdir()
        (partial / "metrics.json").write_text("{not json")
    return d


def _report(d, monkeypatch, *extra):
    monkeypatch.chdir(d)
    assert main(["report", "report-runs", "teacher", "-o", "out", *extra]) == 0
    return (d / "out" / "report.md").read_text()


def _rows(text: str) -> dict[str, list[str]]:
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| ")]
    return {r[0]: r for r in rows[1:]}


def test_report_writes_tables_and_plots(runs, monkeypatch, capsys):
    d = runs
    text = _report(d, monkeypatch, "--title", "Tiny runs")
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["report"] == "out/report.md" and printed["runs"] == 4
    assert text.startswith("# Tiny runs\n") and "## sst2" in text
    rows = _rows(text)
    assert set(rows) == {"teacher", "kd", "ft"}
    header = [c.strip() for c in next(line for line in text.splitlines() if line.startswith("| method")).strip("|")
              .split("|")]
    assert header == ["method", "layers", "seeds", "dev accuracy ×100", "% of teacher", "params", "speed-up",
                      "train s"]
    teacher = json.loads((d / "teacher" / "metrics.json").read_text())
    kd = [json.loads((d / "report-runs" / f"kd-s{s}" / "metrics.json").read_text()) for s in (1, 2)]
    assert rows["teacher"][1:3] == ["4", "42"] and rows["teacher"][4] == "100.0"
    assert rows["kd"][1:3] == ["2", "1, 2"] and rows["ft"][1:3] == ["2", "1"]
    mean = sum(m["dev"]["accuracy"] for m in kd) / 2
    assert rows["kd"][3].startswith(f"{100 * mean:.2f} ± ")
    assert rows["kd"][4] == f"{100 * mean / teacher['dev']['accuracy']:.1f}"
    ratio = teacher["params_student"] / kd[0]["params_student"]
    assert rows["kd"][6] == f"{ratio:.2f}×" and rows["teacher"][6] == "1.00×"
    assert "parameters of the teacher / of the student" in text  # not measured: the axis says what it is
    # the plots: Pareto, % of teacher kept, a learning curve per group; valid PNGs, linked from the report
    names = {"pareto-sst2.png", "kept-sst2.png", "curves-sst2-teacher.png", "curves-sst2-kd.png", "curves-sst2-ft.png"}
    assert {p.name for p in (d / "out").glob("*.png")} == names
    for name in names:
        assert (d / "out" / name).read_bytes()[:8] == PNG
        assert f"]({name})" in text
    # relative paths only, no terminal residue; the unfinished hidden run is skipped
    assert str(d) not in text and "/tmp" not in text and "\r" not in text and "it/s" not in text
    assert "`report-runs/kd-s1`, `report-runs/kd-s2`" in text and "`report-runs/ft/s1`" in text
    assert ".partial" not in text and "`textdistill report report-runs teacher -o out --title 'Tiny runs'`" in text
    table = list(csv.DictReader((d / "out" / "results.csv").open()))
    assert {r["method"]: r["seeds"] for r in table} == {"teacher": "1", "kd": "2", "ft": "1"}


def test_report_measures_speed_on_the_models(runs, monkeypatch):
    text = _report(runs, monkeypatch, "--measure-speed")
    assert "measured: median forward time of a batch of 32 dev texts" in text
    assert "parameters of the teacher / of the student" not in text
    rows = _rows(text)
    assert rows["teacher"][6] == "1.00×" and all(float(rows[m][6].rstrip("×")) > 0 for m in ("kd", "ft"))
    assert rows["kd"][6] == rows["ft"][6]  # one architecture (2 layers of the teacher): timed once, one figure
    assert re.search(r"the rounds spread by up to ±\d+ % around a median", text)
    assert (runs / "out" / "pareto-sst2.png").read_bytes()[:8] == PNG


def test_speed_table_times_each_architecture_once(monkeypatch):
    """Students that differ only in their weights share one timing (their noise would read as a method's
    difference); another depth is timed on its own; rounds interleave; the spread is each model's half range."""
    import torch

    import textdistill.evaluate as evaluate
    from textdistill.report import speed_table

    def net(layers, seed):
        torch.manual_seed(seed)
        return torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(layers)])
    models = {"a": net(2, 0), "b": net(2, 1), "c": net(3, 2)}
    calls = []
    fake = iter([0.010, 0.030, 0.012, 0.030, 0.011, 0.033])

    def latency(model, batch, repeats=10):
        calls.append(next(k for k, m in models.items() if m is model))
        return next(fake)
    monkeypatch.setattr(evaluate, "latency", latency)
    spread: dict = {}
    got = speed_table(models, {"x": torch.ones(1, 4)}, rounds=3, spread=spread)
    assert calls == ["a", "c"] * 3
    assert got == {"a": 0.011, "b": 0.011, "c": 0.030}
    assert spread["b"] == spread["a"] == pytest.approx(0.001 / 0.011) and spread["c"] == pytest.approx(0.0015 / 0.030)


def test_report_teacher_option(runs, monkeypatch):
    monkeypatch.chdir(runs)
    assert main(["report", "report-runs", "-o", "out-t", "--teacher", "teacher"]) == 0
    text = (runs / "out-t" / "report.md").read_text()
    assert _rows(text)["teacher"][4] == "100.0" and "--teacher teacher" in text


def test_report_that_fails_part_way_leaves_the_folder_as_it_was(runs, monkeypatch):
    """The plots and tables are written into a hidden folder and moved up at the end: a failure after the first plot leaves
    the folder's earlier report as it was, no new plot beside it, and no staging folder."""
    from textdistill import plots

    monkeypatch.chdir(runs)
    out = runs / "out-fail"
    assert main(["report", "report-runs", "teacher", "-o", "out-fail"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (out / "report.md").write_text("an earlier report\n")
    before["report.md"] = b"an earlier report\n"
    for p in out.glob("*.png"):
        p.unlink()
        del before[p.name]

    def broken(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(plots, "kept_bars", broken)
    with pytest.raises(OSError):
        write_report(["report-runs", "teacher"], "out-fail")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # (no staging folder left either)


def test_atomic_text_write_keeps_the_old_file_on_error(tmp_path):
    from textdistill.files import write_text_atomic

    path = tmp_path / "a.json"
    path.write_text("old\n")
    with pytest.raises(UnicodeEncodeError):
        write_text_atomic(path, "half \ud800 written")  # (a lone surrogate: fails while writing, after the open)
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["a.json"]
    write_text_atomic(path, "new\n")
    assert path.read_text() == "new\n" and [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_tensorboard_scalars_per_loss_term(runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = runs / "report-runs" / "kd-s2" / "tensorboard"
    assert any(p.name.startswith("events.out.tfevents") for p in folder.iterdir())
    events = EventAccumulator(str(folder))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss/task", "loss/kd", "loss/total", "lr", "dev/accuracy"} <= tags
    m = json.loads((runs / "report-runs" / "kd-s2" / "metrics.json").read_text())
    assert len(events.Scalars("loss/kd")) == m["train_steps"]
    assert [e.step for e in events.Scalars("dev/accuracy")] == [h["step"] for h in m["history"]]
    assert events.Scalars("dev/accuracy")[-1].value == pytest.approx(m["dev"]["accuracy"])
    assert not (runs / "report-runs" / "kd-s1" / "tensorboard").exists()  # off by default


def test_tensorboard_missing_is_one_line(tiny_teacher_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as without the package
    d = tiny_teacher_run
    assert main(["distill", "-r", str(ROOT / "recipes" / "kd.yaml"), "-o", str(tmp_path / "kd"),
                 "--teacher", str(d / "teacher" / "model"), "--set", f"student.init={d / 'teacher' / 'model'}",
                 "--data-dir", str(d / "sst2"), "--set", "train.tensorboard=true", *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'tensorboard' package" in err[0]
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("case", ["no-runs", "missing", "bad-output", "bad-teacher"])
def test_bad_input_is_one_line(case, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.json").write_text(json.dumps(
        {"task": "sst2", "method": "kd", "main_metric": "accuracy", "dev": {"accuracy": 0.8}, "seed": 1}))
    (tmp_path / "file").write_text("")
    args = {"no-runs": ["empty", "-o", "out"], "missing": ["nowhere", "-o", "out"],
            "bad-output": ["run", "-o", "file/out"], "bad-teacher": ["run", "-o", "out", "--teacher", "empty"]}[case]
    assert main(["report", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("textdistill: error: "), err
    assert {"no-runs": "no metrics.json", "missing": "no such folder", "bad-output": "cannot create",
            "bad-teacher": "not a run folder"}[case] in err[0]
    assert not (tmp_path / "out").exists()


def test_frontier_keeps_the_undominated_points():
    pts = [{"x": 1, "y": 90}, {"x": 2, "y": 88}, {"x": 2, "y": 85}, {"x": 3, "y": 80}, {"x": 1.5, "y": 80}]
    assert [(p["x"], p["y"]) for p in frontier(pts)] == [(1, 90), (2, 88), (3, 80)]


def test_write_json_leaves_no_path_of_the_machine(tmp_path):
    from textdistill.report import write_json

    root = tmp_path / "repo"
    write_json(tmp_path / "new" / "bench.json", {"teacher": f"{root}/runs/t/model", "other": "/data/x", "n": 1}, root)
    text = (tmp_path / "new" / "bench.json").read_text()
    assert json.loads(text) == {"teacher": "runs/t/model", "other": "/data/x", "n": 1}
    assert str(tmp_path) not in text and text.endswith("}\n")


def test_latency_times_the_forward_without_autograd():
    """Speed is measured as inference runs: no autograd graph built (report --measure-speed has no outer no-grad)."""
    import torch

    from textdistill.evaluate import latency

    seen = []

    class Probe(torch.nn.Module):
        def forward(self, **batch):
            seen.append(torch.is_grad_enabled())
            return batch["x"] * 2

    assert latency(Probe(), {"x": torch.ones(2, requires_grad=True)}, repeats=2, warmup=1) >= 0
    assert seen == [False, False, False]


def test_students_of_one_depth_from_other_layers_are_other_rows(tmp_path, caplog):
    """PKD's first 3 layers and every fourth layer are two students of one depth: two rows, labelled by the
    layers they keep; two runs of one row with the same seed (grid points, say) are logged, not passed over."""
    from textdistill.report import group_runs, load_run

    def run(name, method, kept, seed):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "metrics.json").write_text(json.dumps({
            "task": "rte", "method": method, "main_metric": "accuracy", "dev": {"accuracy": 0.5 + seed / 100},
            "seed": seed, "student_layers": len(kept),
            "student_from_teacher_layers": {str(i + 1): t for i, t in enumerate(kept)}}))
        return load_run(folder)

    runs = [run("ft-first3-s1", "ft", [1, 2, 3], 1), run("ft-3-s1", "ft", [4, 8, 12], 1),
            run("ft-3-s2", "ft", [4, 8, 12], 2), run("ft-6-s1", "ft", [2, 4, 6, 8, 10, 12], 1),
            run("kd-3-s1", "kd", [4, 8, 12], 1)]
    with caplog.at_level("WARNING", logger="textdistill"):
        groups = group_runs(runs)["rte"]
    assert [(g["label"], [r["seed"] for r in g["runs"]]) for g in groups] == [
        ("ft (6L)", [1]), ("ft (3L: layers 1,2,3)", [1]), ("ft (3L: layers 4,8,12)", [1, 2]), ("kd", [1])]
    assert groups[2]["mean"] == pytest.approx(51.5 / 100)
    assert "appears more than once" not in caplog.text
    with caplog.at_level("WARNING", logger="textdistill"):
        group_runs(runs + [run("kd-3-T20-s1", "kd", [4, 8, 12], 1)])
    assert "report: kd on rte (3L): seed [1] appears more than once" in caplog.text


def test_percent_of_teacher_is_over_the_teacher_that_taught_the_run(tmp_path, monkeypatch):
    """A suite records beside each run the teacher that taught it (teacher.json); a teacher fine-tuned again may
    score otherwise. The report's % of teacher of such runs is over their own teacher, and says so."""
    def run(name, method, value, taught=None):
        folder = tmp_path / "runs" / name
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({
            "task": "rte", "method": method, "main_metric": "accuracy", "dev": {"accuracy": value}, "seed": 1,
            "student_layers": 12 if method == "teacher" else 3, "params_student": 100 if method == "teacher" else 40}))
        if taught is not None:
            (folder / "teacher.json").write_text(json.dumps({"name": "t", "dev": {"accuracy": taught},
                                                             "main_metric": "accuracy"}))

    run("teacher", "teacher", 0.64)
    run("kd-s1", "kd", 0.48, taught=0.60)   # taught by an earlier teacher: 80 % of it, not 75 % of the row's
    run("ft-s1", "ft", 0.48)                # no teacher.json: over the teacher row
    run("pkd-s1", "pkd", 0.48, taught=0.64)  # taught by the row's teacher
    monkeypatch.chdir(tmp_path)
    assert main(["report", "runs", "-o", "out"]) == 0
    text = (tmp_path / "out" / "report.md").read_text()
    rows = _rows(text)
    assert rows["kd"][4] == "80.0" and rows["ft"][4] == "75.0" and rows["pkd"][4] == "75.0"
    assert "% of teacher of kd (60.00): over the teachers that taught those runs" in text
    assert "pkd (" not in text.split("% of teacher of")[1].split("\n")[0]
    with open(tmp_path / "out" / "results.csv") as f:
        pct = {r["label"]: float(r["pct_of_teacher"]) for r in csv.DictReader(f)}
    assert pct["kd"] == pytest.approx(80.0) and pct["ft"] == pytest.approx(75.0)


def test_a_cell_over_runs_of_other_precisions_says_so():
    from textdistill.report import mean_cell

    assert mean_cell([80.0, 82.0], ["bf16", "no"]) == "81.00 ± 1.41 (2) [bf16 + fp32]"
    assert mean_cell([80.0, 82.0], ["no", "no"]) == "81.00 ± 1.41 (2)"
    assert mean_cell([80.0, 82.0], [None, "no"]) == "81.00 ± 1.41 (2)"  # a run that did not record it: no claim
    assert mean_cell([80.0]) == "80.00 (1)" and mean_cell([]) == ""
    # a chain (born-again, two-stage) records its links' precisions joined: "bf16+no" is both, "no" alone is one
    assert mean_cell([80.0, 82.0], ["bf16+no", "no"]) == "81.00 ± 1.41 (2) [bf16 + fp32]"
    assert mean_cell([80.0, 82.0], ["bf16", "bf16"]) == "81.00 ± 1.41 (2)"
    assert mean_cell([80.0, 82.0], ["bf16+no", "bf16+no"]) == "81.00 ± 1.41 (2) [bf16 + fp32]"  # each chain: both


def test_a_report_row_over_runs_of_other_precisions_says_so(tmp_path, monkeypatch):
    for name, seed, precision in (("teacher", 1, "no"), ("kd-s1", 1, "bf16"), ("kd-s2", 2, "no"), ("ft-s1", 1, "no")):
        folder = tmp_path / "runs" / name
        folder.mkdir(parents=True)
        method = name.split("-")[0]
        (folder / "metrics.json").write_text(json.dumps({
            "task": "rte", "method": method, "main_metric": "accuracy", "dev": {"accuracy": 0.5}, "seed": seed,
            "student_layers": 6 if method == "teacher" else 3, "params_student": 60 if method == "teacher" else 30,
            "mixed_precision": precision}))
    monkeypatch.chdir(tmp_path)
    assert main(["report", "runs", "-o", "out"]) == 0
    rows = _rows((tmp_path / "out" / "report.md").read_text())
    assert rows["kd"][2] == "1, 2 [bf16 + fp32]" and rows["ft"][2] == "1"
