"""Several processes on the CPU (dist.py): a 2-process run (torchrun, gloo) trains the same student as a
1-process run with the same global batch (dropout off: equal up to float rounding); only rank 0 writes; the
launches that would silently train with fewer processes are refused with one line."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT, write_sst2_sample
from textdistill import TextDistillError
from textdistill.dist import check_launch, launched_world_size, requested_processes

BIN = Path(sys.executable).parent


def _env():
    return dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1",
                TEXTDISTILL_ALLOW_WEAK_TEACHER="1")


@pytest.fixture(scope="module")
def no_dropout_teacher(tmp_path_factory, minilm_tokenizer):
    from transformers import BertConfig, BertForSequenceClassification

    d = tmp_path_factory.mktemp("mp")
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=minilm_tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, num_labels=2, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
    BertForSequenceClassification(cfg).save_pretrained(d / "teacher")
    minilm_tokenizer.save_pretrained(d / "teacher")
    write_sst2_sample(d / "sst2", train_rows=96, dev_rows=40)
    return d


def _distill(launcher: list[str], d: Path, out: Path, *extra) -> subprocess.CompletedProcess:
    args = ["distill", "-r", "recipes/kd.yaml", "-o", str(out), "--teacher", str(d / "teacher"), "--set",
            f"student.init={d / 'teacher'}", "--set", "student.layers=all", "--data-dir", str(d / "sst2"), "--set",
            "train.epochs=2", "--set", "train.batch_size=16", "--set", "train.eval_batch_size=20", "--set",
            "train.lr=1e-3", "--set", "train.fused_adamw=false", *extra]
    return subprocess.run([*launcher, "-m", "textdistill.cli", *args], cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=300)


def test_two_processes_train_like_one(no_dropout_teacher, tmp_path):
    d = no_dropout_teacher
    one = _distill([sys.executable], d, tmp_path / "one")
    assert one.returncode == 0, one.stderr[-2000:]
    two = _distill([str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2"], d, tmp_path / "two")
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.count('"output"') == 1  # rank 0 reports
    m1, m2 = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("one", "two"))
    assert (m1["processes"], m2["processes"]) == (1, 2)
    assert m1["train_steps"] == m2["train_steps"] == 2 * 6  # 96 rows, global batch 16
    assert m1["dev"] == m2["dev"]
    w1, w2 = (load_file(tmp_path / n / "model" / "model.safetensors") for n in ("one", "two"))
    moved = max((w1[k] - load_file(d / "teacher" / "model.safetensors")[k]).abs().max().item() for k in w1)
    assert moved > 1e-3  # training changed the weights ...
    for k in w1:  # ... and both runs the same way (the batch split over 2 processes, the gradients averaged)
        torch.testing.assert_close(w1[k], w2[k], rtol=1e-4, atol=2e-5)
    assert "2 processes (DistributedType.MULTI_CPU)" in (tmp_path / "two" / "train.log").read_text()
    assert not list(tmp_path.glob(".*.partial"))


def test_batch_not_divisible_by_the_processes(no_dropout_teacher, tmp_path):
    r = _distill([str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2"], no_dropout_teacher,
                 tmp_path / "odd", "--set", "train.batch_size=15")
    assert r.returncode != 0 and "train.batch_size=15: the batch is split over 2 processes" in r.stderr
    assert not (tmp_path / "odd").exists() and not (tmp_path / ".odd.partial").exists()


def test_accelerate_cpu_launch_of_several_processes_is_refused(no_dropout_teacher, tmp_path):
    """`accelerate launch --cpu --num_processes 2` starts ONE process without a word: refused."""
    r = _distill([str(BIN / "accelerate"), "launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
                  "--mixed_precision", "no", "--dynamo_backend", "no"], no_dropout_teacher, tmp_path / "acc")
    assert r.returncode != 0
    lines = [line for line in r.stderr.splitlines() if line.startswith("textdistill: error:")]
    assert len(lines) == 1 and "started 1 process" in lines[0] and "--multi_gpu --num_processes 2" in lines[0]
    assert not (tmp_path / "acc").exists()


def test_launch_checks():
    assert launched_world_size({}) == 1 and launched_world_size({"WORLD_SIZE": "4"}) == 4
    assert requested_processes([".venv/bin/accelerate", "launch", "--cpu", "--num_processes", "3", "x.py"]) == 3
    assert requested_processes(["/usr/bin/python", "/x/bin/accelerate", "launch", "--num-processes=2"]) == 2
    assert requested_processes(["python", "train.py", "--num_processes", "2"]) is None  # not accelerate launch
    check_launch({}, parent=["accelerate", "launch", "--num_processes", "2"])  # no launcher env: not ours
    check_launch({"ACCELERATE_USE_CPU": "True"}, parent=["accelerate", "launch", "--cpu"])  # 1 asked, 1 started
    with pytest.raises(TextDistillError, match="started 1 process"):
        check_launch({"ACCELERATE_USE_CPU": "True"}, parent=["accelerate", "launch", "--num_processes", "2"])
    check_launch({"ACCELERATE_USE_CPU": "True", "WORLD_SIZE": "2"},
                 parent=["accelerate", "launch", "--num_processes", "2"])  # a real 2-process launch
    assert shutil.which("torchrun", path=str(BIN))


def test_chains_caches_and_suites_run_in_one_process(monkeypatch, capsys, tmp_path):
    """Under a multi-process launch (WORLD_SIZE > 1) the commands that write shared things are refused first."""
    from textdistill.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    for argv, needle in ((["cache", "-r", "recipes/kd.yaml", "-o", str(tmp_path / "c")], "textdistill cache: runs in one"),
                         (["suite", "suites/pkd-grid-mrpc.yaml"], "textdistill suite: runs in one"),
                         (["distill", "-r", "recipes/born-again.yaml", "-o", str(tmp_path / "b")],
                          "stages / generations: runs in one")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, err
    assert not list(tmp_path.iterdir())
