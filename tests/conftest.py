import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_GLUE = ROOT.parent / "shared" / "data" / "glue"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.chdir(ROOT)  # the tests name recipes/, suites/ and data/ relative to the repository root, as the README does
# the tiny random teachers of these tests score at chance: accepted (with a warning) except where a test
# checks the refusal (tests/test_bad_input.py)
os.environ["TEXTDISTILL_ALLOW_WEAK_TEACHER"] = "1"


@pytest.fixture(scope="session")
def minilm_tokenizer():
    from textdistill.models.loading import load_tokenizer

    return load_tokenizer("minilm-l6")


def _save_tiny(folder: Path, model, tokenizer):
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_bert_folder(folder: Path, tokenizer, hidden: int, layers: int, seed: int) -> Path:
    """A BERT classifier with random weights, 2 heads, the MiniLM (BERT uncased) tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=128, num_labels=2)
    return _save_tiny(folder, BertForSequenceClassification(cfg), tokenizer)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory, minilm_tokenizer):
    """4 layers, 32 wide."""
    return tiny_bert_folder(tmp_path_factory.mktemp("tiny_bert"), minilm_tokenizer, 32, 4, seed=0)


@pytest.fixture(scope="session")
def narrow_bert(tmp_path_factory, minilm_tokenizer):
    """3 layers, 16 wide: a student narrower than tiny_bert, with the same vocabulary."""
    return tiny_bert_folder(tmp_path_factory.mktemp("narrow"), minilm_tokenizer, 16, 3, seed=1)


def write_sst2_sample(folder: Path, train_rows: int = 200, dev_rows: int = 100) -> Path:
    """The first rows of the shipped SST-2 sample, in a GLUE-style task folder."""
    folder.mkdir(parents=True)
    for name, n in (("train.tsv", train_rows), ("dev.tsv", dev_rows)):
        lines = (ROOT / "data" / "sst2" / name).read_text().splitlines()
        (folder / name).write_text("\n".join(lines[: n + 1]) + "\n")
    return folder


@pytest.fixture
def sst2_tiny_dir(tmp_path):
    """200 train and 100 dev rows of the shipped SST-2 sample."""
    return write_sst2_sample(tmp_path / "sst2")


@pytest.fixture(scope="session")
def tiny_teacher_run(tmp_path_factory, tiny_bert):
    """A folder with ``sst2/`` (200 + 100 rows) and ``teacher/``: tiny_bert fine-tuned on them (shared)."""
    from textdistill.cli import main

    d = tmp_path_factory.mktemp("tiny_teacher")
    write_sst2_sample(d / "sst2")
    assert main(["finetune", "-r", "recipes/teacher.yaml", "-o", str(d / "teacher"), "--set", f"student.init={tiny_bert}",
                 "--data-dir", str(d / "sst2"), "--set", "train.lr=1e-3", "--set", "train.epochs=2",
                 "--set", "train.batch_size=16", "--set", "train.eval_batch_size=50"]) == 0
    return d


def shared_glue():
    if not SHARED_GLUE.is_dir():
        if os.environ.get("TEXTDISTILL_REQUIRE_SHARED"):  # set by .ci/run: CI has ../shared beside the clone
            pytest.fail(f"{SHARED_GLUE} is absent and TEXTDISTILL_REQUIRE_SHARED is set")
        pytest.skip(f"{SHARED_GLUE} is absent (the real GLUE data lives beside the repo in ../shared)")
    return SHARED_GLUE


def fails_one_line(argv, capsys, needle, *absent):
    """``textdistill argv`` exits 2 with one line on stderr containing ``needle``, and leaves none of the
    ``absent`` output folders (nor their ``.NAME.partial``) behind."""
    from textdistill.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    for path in absent:
        assert not Path(path).exists() and not (Path(path).parent / f".{Path(path).name}.partial").exists()


def same_as_evaluate(run_folder: Path, data_dir: Path, tmp: Path, task: str = "sst2") -> list[dict]:
    """The run's dev_predictions.jsonl (written by the training loop) against what `textdistill evaluate
    --predictions` gives on the saved model folder: the same rows, predictions and labels, probabilities to fp32
    noise. Returns the rows."""
    import contextlib
    import io
    import json

    from textdistill.cli import main

    out = tmp / f"{run_folder.name}-evaluated.jsonl"
    with contextlib.redirect_stdout(io.StringIO()):  # (evaluate prints its result; keep it off the test's capture)
        assert main(["evaluate", "--model", str(run_folder / "model"), "--task", task, "--data-dir", str(data_dir),
                     "--predictions", str(out)]) == 0
    mine = [json.loads(x) for x in (run_folder / "dev_predictions.jsonl").read_text().splitlines()]
    theirs = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(mine) == len(theirs) > 0
    for a, b in zip(mine, theirs):
        assert {k: a[k] for k in ("row", "line", "label", "prediction")} == \
               {k: b[k] for k in ("row", "line", "label", "prediction")}
        assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-4)
    return mine


def built_once_by_two_runs(module, name: str, run, caplog) -> list:
    """``run()`` twice at once, the second started from inside the first's ``module.name`` (a builder of a shared
    folder), which goes on once the second reports waiting for the lock; returns ``[builds, codes]`` (how many
    times the builder ran, the second run's exit codes) -- a shared folder is built once: ``[[1], [0]]``."""
    import logging
    import threading

    real, builds, codes = getattr(module, name), [], []
    other = threading.Thread(target=lambda: codes.append(run()), daemon=True)  # (a lock never released: no hang)

    def waiting():
        return any("another process is building it" in r.getMessage() for r in caplog.records)

    def slow(*a, **k):
        builds.append(1)
        other.start()
        for _ in range(1200):
            if waiting():
                break
            threading.Event().wait(0.05)
        assert waiting(), "the second run never waited for the lock"
        return real(*a, **k)

    setattr(module, name, slow)
    try:
        with caplog.at_level(logging.INFO, logger="textdistill"):
            assert run() == 0
            other.join(timeout=120)
        assert not other.is_alive(), "the second run still waits: the lock was not released"
    finally:
        setattr(module, name, real)
    return [builds, codes]
