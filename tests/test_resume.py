"""Checkpoints and --resume: a run interrupted mid-epoch and resumed ends with the same weights and metrics as
an uninterrupted one; SIGTERM keeps the partial run; bad --resume input gives one line."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT, fails_one_line
from textdistill.cli import main
from textdistill.schemes.offline import Offline

# 200 rows, batch 16: 13 steps an epoch; a checkpoint every 3 steps and at the end of each epoch
FAST = ["--set", "train.epochs=2", "--set", "train.batch_size=16", "--set", "train.eval_batch_size=50",
        "--set", "train.checkpoint_every=3"]


# recipes with extra settings: KD with adversarial rows after every 4th batch (the cadence must survive a resume)
VARIANTS = {"kd-adversarial": ("kd", ["--set", "transfer.adversarial={flips: 1, every: 4}"])}


def _args(d, tiny_bert, out, recipe="pkd-skip"):
    recipe, extra = VARIANTS.get(recipe, (recipe, []))
    return ["distill", "-r", f"recipes/{recipe}.yaml", "-o", str(out), "--teacher", str(d / "teacher" / "model"),
            "--data-dir", str(d / "sst2"), "--set", f"student.init={tiny_bert}", "--set", "student.layers=first:2",
            *FAST, *extra]


def _interrupt_at(monkeypatch, step):
    real, calls = Offline.loss_parts, []

    def loss_parts(self, batch):
        calls.append(1)
        if len(calls) == step:
            raise KeyboardInterrupt
        return real(self, batch)
    monkeypatch.setattr(Offline, "loss_parts", loss_parts)


def _same_run(a, b):
    wa, wb = load_file(a / "model" / "model.safetensors"), load_file(b / "model" / "model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=0, atol=0, msg=k)
    ma, mb = (json.loads((x / "metrics.json").read_text()) for x in (a, b))
    assert ma["dev"] == mb["dev"] and ma["train_steps"] == mb["train_steps"]
    assert [h["loss"] for h in ma["history"]] == [h["loss"] for h in mb["history"]]
    assert [h["dev"] for h in ma["history"]] == [h["dev"] for h in mb["history"]]
    pa, pb = a / "projections.safetensors", b / "projections.safetensors"
    if pa.exists():
        for k, v in load_file(pa).items():
            torch.testing.assert_close(load_file(pb)[k], v, rtol=0, atol=0)


@pytest.mark.parametrize("stop, recipe", [(8, "pkd-skip"), (14, "pkd-skip"), (17, "rail-kd-l"), (8, "kd-adversarial")])
def test_resumed_run_equals_an_uninterrupted_one(tiny_teacher_run, tiny_bert, tmp_path, monkeypatch, capsys, stop,
                                                 recipe):
    """Stopped at step 8 (mid-epoch 1: last checkpoint at step 6), 14 (just after the epoch-1 checkpoint) and
    17 in epoch 2 of RAIL-KD (its random layer draw is per epoch); KD with adversarial rows every 4th step, stopped
    at step 8 (resumed at 6, the adversarial rows must come at step 8 again, not 10)."""
    d = tiny_teacher_run
    assert main(_args(d, tiny_bert, tmp_path / "full", recipe)) == 0
    out = tmp_path / "cut"
    with monkeypatch.context() as m:
        _interrupt_at(m, stop)
        assert main(_args(d, tiny_bert, out, recipe)) == 130
    err = capsys.readouterr().err
    assert "continue it with the same command and --resume" in err.splitlines()[-1]
    assert not out.exists() and (tmp_path / ".cut.partial" / "checkpoint" / "state.json").is_file()
    state = json.loads((tmp_path / ".cut.partial" / "checkpoint" / "state.json").read_text())
    assert state["progress"]["step"] == {8: 6, 14: 13, 17: 15}[stop]
    # resumed with other checkpoint steps (when it saves, not what it trains): the same run all the same
    again = ["--set", "train.checkpoint_every=5"] if stop == 14 else []
    assert main([*_args(d, tiny_bert, out, recipe), "--resume", *again]) == 0
    assert "resuming at epoch" in (out / "train.log").read_text()
    assert not (out / "checkpoint").exists() and not (tmp_path / ".cut.partial").exists()
    assert json.loads((out / "metrics.json").read_text())["resumed"] is True
    _same_run(tmp_path / "full", out)


def test_resume_bad_input(tiny_teacher_run, tiny_bert, tmp_path, monkeypatch, capsys):
    d = tiny_teacher_run
    out = tmp_path / "r"

    def fails(argv, needle):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, err

    fails([*_args(d, tiny_bert, out), "--resume"], "--resume: no interrupted run of")
    with monkeypatch.context() as m:
        _interrupt_at(m, 8)
        assert main(_args(d, tiny_bert, out)) == 130
    capsys.readouterr()
    fails([*_args(d, tiny_bert, out), "--resume", "--set", "train.lr=1e-3"],
          "was started with another recipe (first difference: 'lr: 0.0001' -> 'lr: 0.001')")
    # a precision that differs (auto resolves by the machine) gets a hint; an lr that differs does not
    fails([*_args(d, tiny_bert, out), "--resume", "--set", "train.mixed_precision=bf16"],
          "'mixed_precision: 'no'' -> 'mixed_precision: bf16'); train.mixed_precision / teacher_cache.runtime: auto "
          "resolves by the machine")
    fails([*_args(d, tiny_bert, out), "--resume", "--set", "train.lr=1e-3"], "'lr: 0.0001' -> 'lr: 0.001')")
    state = tmp_path / ".r.partial" / "checkpoint" / "state.json"
    s = json.loads(state.read_text())
    state.write_text(json.dumps({**s, "code": "0123456789abcdef"}))
    fails([*_args(d, tiny_bert, out), "--resume"], "was written by another version of textdistill")
    assert (tmp_path / ".r.partial").is_dir()  # a refused --resume leaves the partial run alone
    assert main([*_args(d, tiny_bert, out), "--resume", "--resume-any-version"]) == 0  # accepted, and recorded
    assert json.loads((out / "metrics.json").read_text())["resumed_across_code"][0] == "0123456789abcdef"
    with monkeypatch.context() as m:
        _interrupt_at(m, 8)
        assert main(_args(d, tiny_bert, tmp_path / "r2")) == 130
    (tmp_path / ".r2.partial" / "checkpoint" / "state.json").unlink()
    capsys.readouterr()
    fails([*_args(d, tiny_bert, tmp_path / "r2"), "--resume"], "has no checkpoint to resume")


def test_a_crash_after_a_checkpoint_keeps_the_run_for_resume(tiny_teacher_run, tiny_bert, tmp_path, monkeypatch,
                                                              capsys):
    """An error that is no refusal (here a RuntimeError at step 8, as out of memory would be) keeps the partial run
    and its checkpoint of step 6; the same command without --resume refuses to throw it away; --resume finishes
    it as if nothing happened."""
    d = tiny_teacher_run
    out = tmp_path / "c"
    real, calls = Offline.loss_parts, []

    def crash(self, batch):
        calls.append(1)
        if len(calls) == 8:
            raise RuntimeError("out of memory")
        return real(self, batch)
    with monkeypatch.context() as m:
        m.setattr(Offline, "loss_parts", crash)
        with pytest.raises(RuntimeError, match="out of memory"):
            main(_args(d, tiny_bert, out))
    assert not out.exists() and (tmp_path / ".c.partial" / "checkpoint" / "state.json").is_file()
    capsys.readouterr()
    assert main(_args(d, tiny_bert, out)) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"textdistill: error: {out}: an interrupted run is kept in {tmp_path / '.c.partial'}: continue it " \
                  f"with --resume, or start again with --overwrite"
    assert main([*_args(d, tiny_bert, out), "--resume"]) == 0
    assert main(_args(d, tiny_bert, tmp_path / "full")) == 0
    _same_run(tmp_path / "full", out)


def test_without_checkpoints_an_interrupt_leaves_nothing(tiny_teacher_run, tiny_bert, tmp_path, monkeypatch, capsys):
    d = tiny_teacher_run
    out = tmp_path / "n"
    with monkeypatch.context() as m:
        _interrupt_at(m, 8)
        assert main([*_args(d, tiny_bert, out), "--set", "train.checkpoint=false", "--set",
                     "train.checkpoint_every=0"]) == 130
    assert "interrupted (nothing was written)" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / ".n.partial").exists()


def test_sigterm_keeps_the_partial_run(tiny_teacher_run, tiny_bert, tmp_path):
    d = tiny_teacher_run
    out = tmp_path / "t"
    # many steps, so that the signal lands during training: 30 epochs of 13 steps, a checkpoint every step
    cmd = [sys.executable, "-m", "textdistill", *_args(d, tiny_bert, out), "--set", "train.epochs=30",
           "--set", "train.checkpoint_every=1"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    state = tmp_path / ".t.partial" / "checkpoint" / "state.json"
    deadline = time.time() + 120
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, err
    assert "continue it with the same command and --resume" in err.strip().splitlines()[-1]
    assert not out.exists() and (tmp_path / ".t.partial" / "checkpoint").is_dir()


def test_an_interrupted_chain_keeps_its_finished_links_and_resumes(tiny_teacher_run, tiny_bert, tmp_path,
                                                                   monkeypatch, capsys):
    """Born-again, 2 generations of 26 steps: stopped at step 8 of generation 2 (its checkpoint at step 6),
    resumed: generation 1 is kept, generation 2 continues, and both equal an uninterrupted chain's."""
    d = tiny_teacher_run

    def args(out, *more):
        return ["distill", "-r", "recipes/born-again.yaml", "-o", str(out), "--data-dir", str(d / "sst2"),
                "--teacher", str(d / "teacher" / "model"), "--set", f"student.init={tiny_bert}", *FAST, *more]
    assert main(args(tmp_path / "full")) == 0
    out, tmp = tmp_path / "cut", tmp_path / ".cut.partial"
    with monkeypatch.context() as m:
        _interrupt_at(m, 26 + 8)
        assert main(args(out)) == 130
    assert "the chain's finished links and last checkpoint are kept" in capsys.readouterr().err
    assert (tmp / "gen-1" / "metrics.json").is_file() and not out.exists()
    assert json.loads((tmp / ".gen-2.partial" / "checkpoint" / "state.json").read_text())["progress"]["step"] == 6
    gen1 = (tmp / "gen-1" / "model" / "model.safetensors").stat().st_mtime_ns
    # a recipe that would make another generation 1 is refused, and the partial chain is left alone
    assert main([*args(out, "--set", "train.lr=1e-3"), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "gen-1 was made with another recipe (first difference: 'lr: " in err, err
    assert (tmp / "gen-1" / "metrics.json").is_file() and (tmp / ".gen-2.partial" / "checkpoint").is_dir()
    assert main([*args(out, "--set", "train.checkpoint_every=4"), "--resume"]) == 0  # other checkpoint steps: kept
    assert (out / "gen-1" / "model" / "model.safetensors").stat().st_mtime_ns == gen1  # kept, not retrained
    assert "resuming at epoch" in (out / "gen-2" / "train.log").read_text()
    for g in ("gen-1", "gen-2"):
        _same_run(tmp_path / "full" / g, out / g)
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["resumed"] is True
    assert summary["dev"] == json.loads((tmp_path / "full" / "metrics.json").read_text())["dev"]
    assert json.loads((out / "gen-2" / "metrics.json").read_text())["teacher"] == str(out / "gen-1" / "model")
    assert not tmp.exists()


def test_chain_resume_edge_cases(tiny_teacher_run, tiny_bert, tmp_path, monkeypatch, capsys):
    """Generation 1 stopped after a checkpoint resumes from it; an error (not an interrupt) in generation 2
    keeps generation 1; a finished link of other code is kept only with --resume-any-version (recorded);
    --resume with nothing to continue is refused; a leftover checkpoint.tmp is no checkpoint."""
    import textdistill.train as train
    from textdistill.checkpoint import code_hash
    from textdistill.recipe import load_recipe

    d = tiny_teacher_run

    def args(out, *more):
        return ["distill", "-r", "recipes/born-again.yaml", "-o", str(out), "--data-dir", str(d / "sst2"),
                "--teacher", str(d / "teacher" / "model"), "--set", f"student.init={tiny_bert}", *FAST, *more]

    def fails(argv, needle):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, err

    assert main(args(tmp_path / "full")) == 0
    out, tmp = tmp_path / "a", tmp_path / ".a.partial"
    with monkeypatch.context() as m:
        _interrupt_at(m, 8)  # generation 1, step 8: its checkpoint at step 6
        assert main(args(out)) == 130
    capsys.readouterr()
    assert train.resumable(out) and not (tmp / "gen-1").exists()
    assert main([*args(out), "--resume"]) == 0
    assert "resuming at epoch" in (out / "gen-1" / "train.log").read_text()
    for g in ("gen-1", "gen-2"):
        _same_run(tmp_path / "full" / g, out / g)

    out, tmp = tmp_path / "b", tmp_path / ".b.partial"
    real, calls = Offline.loss_parts, []

    def breaks(self, batch):
        calls.append(1)
        if len(calls) == 26 + 2:  # generation 2, before its first checkpoint
            raise RuntimeError("out of memory (simulated)")
        return real(self, batch)
    with monkeypatch.context() as m:
        m.setattr(Offline, "loss_parts", breaks)
        with pytest.raises(RuntimeError):
            train.run(load_recipe("recipes/born-again.yaml", [
                ("data.dir", str(d / "sst2")), ("teacher", str(d / "teacher" / "model")),
                ("student.init", str(tiny_bert)), *[tuple(a.split("=", 1)) for a in FAST[1::2]]]), out)
    assert (tmp / "gen-1" / "metrics.json").is_file() and not (tmp / ".gen-2.partial").exists()
    metrics = tmp / "gen-1" / "metrics.json"
    metrics.write_text(json.dumps({**json.loads(metrics.read_text()), "code": "0123456789abcdef"}))
    fails([*args(out), "--resume"], "gen-1 was trained by another version of textdistill (source hash 0123456789abcdef")
    assert main([*args(out), "--resume", "--resume-any-version"]) == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["resumed_across_code"] == sorted(["0123456789abcdef", code_hash()])
    _same_run(tmp_path / "full" / "gen-2", out / "gen-2")

    (tmp_path / ".c.partial" / "checkpoint.tmp").mkdir(parents=True)  # a first checkpoint write that was killed
    assert not train.resumable(tmp_path / "c")
    fails([*args(tmp_path / "c"), "--resume"], "holds no finished link and no checkpoint to continue")
    assert (tmp_path / ".c.partial").is_dir()


def test_a_chain_interrupted_before_any_checkpoint_leaves_nothing(tiny_teacher_run, tiny_bert, tmp_path,
                                                                  monkeypatch, capsys):
    d = tiny_teacher_run
    out = tmp_path / "c"
    with monkeypatch.context() as m:
        _interrupt_at(m, 2)
        assert main(["distill", "-r", "recipes/born-again.yaml", "-o", str(out), "--data-dir", str(d / "sst2"),
                     "--teacher", str(d / "teacher" / "model"), "--set", f"student.init={tiny_bert}", *FAST]) == 130
    assert "interrupted (nothing was written)" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / ".c.partial").exists()


def test_a_checkpoint_carries_the_fp16_gradient_scaler(tmp_path):
    """fp16's loss scale (and its growth tracker) comes back on resume; without it a resumed fp16 run would start
    again from the initial scale. (The CUDA RNG states are saved the same way where a GPU is in use.)"""
    from textdistill import checkpoint

    def parts():
        m = torch.nn.Linear(3, 2)
        opt = torch.optim.AdamW(m.parameters(), lr=0.1)
        return m, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    m, opt, sched = parts()
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scaler.load_state_dict({**scaler.state_dict(), "scale": 96.0, "_growth_tracker": 7})  # (as after some steps)
    (tmp_path / "run").mkdir()
    checkpoint.save(tmp_path / "run", modules={"m": m}, optimizer=opt, scheduler=sched, sampler_state=torch.zeros(1),
                    progress={"step": 7}, recipe_text="x", scaler=scaler)
    state, tensors = checkpoint.read(tmp_path / "run", "x", "run")
    m2, opt2, sched2 = parts()
    fresh = torch.amp.GradScaler("cpu", init_scale=1024.0)
    checkpoint.restore(state, tensors, modules={"m": m2}, optimizer=opt2, scheduler=sched2, scaler=fresh)
    assert fresh.get_scale() == 96.0 and fresh.state_dict()["_growth_tracker"] == 7
    torch.testing.assert_close(m2.weight, m.weight, rtol=0, atol=0)


def test_the_launchers_rank_decides_who_locks_the_output():
    from textdistill.dist import launched_rank

    assert launched_rank({}) == 0 and launched_rank({"RANK": "3"}) == 0  # (one process: a stray RANK is ignored)
    assert launched_rank({"WORLD_SIZE": "2", "RANK": "1"}) == 1
    assert launched_rank({"OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_RANK": "2"}) == 2
    assert launched_rank({"PMI_SIZE": "2", "PMI_RANK": "0"}) == 0


def test_a_second_run_on_the_same_output_is_refused_while_the_first_runs(tiny_teacher_run, tiny_bert, tmp_path,
                                                                          capsys):
    """Two runs naming one output (two terminals, two grids): the second is refused in one line, and the first
    one's .partial -- here with a checkpoint the second, with --overwrite, would have emptied -- is untouched.
    Once the first ends, its lock file is gone and the output can be written."""
    import shutil

    from filelock import FileLock

    out = tmp_path / "kd"
    partial = tmp_path / ".kd.partial"
    (partial / "checkpoint").mkdir(parents=True)
    (partial / "checkpoint" / "state.json").write_text("{}")
    held = FileLock(tmp_path / ".kd.lock")  # (the first run's lock: another descriptor, so flock refuses ours)
    held.acquire()
    try:
        for mode in (["--overwrite"], ["--resume"]):
            assert main([*_args(tiny_teacher_run, tiny_bert, out), *mode]) == 2
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1 and f"{out}: another run is writing it now" in err, err
            assert (partial / "checkpoint" / "state.json").read_text() == "{}" and not out.exists()
    finally:
        held.release()
    shutil.rmtree(partial)
    # held from the first check to the last write: a second run started from inside the first's training loop
    # is refused too, and the first ends as if alone
    real, inner = Offline.loss_parts, []

    def loss_parts(self, batch):
        if len(inner) < 2:
            inner.append(main([*_args(tiny_teacher_run, tiny_bert, out), "--overwrite"]))
        return real(self, batch)

    Offline.loss_parts = loss_parts
    try:
        assert main([*_args(tiny_teacher_run, tiny_bert, out), "--set", "train.epochs=1"]) == 0
    finally:
        Offline.loss_parts = real
    assert inner == [2, 2] and "another run is writing it now" in capsys.readouterr().err
    assert (out / "metrics.json").is_file() and not (tmp_path / ".kd.lock").exists()
    # a path where no lock file can be made: the run's own check says why, as before
    (tmp_path / "file").write_text("x")
    fails_one_line(_args(tiny_teacher_run, tiny_bert, tmp_path / "file" / "kd"), capsys,
                   f"{tmp_path / 'file'} is a file, not a folder", tmp_path / "file" / "kd")
