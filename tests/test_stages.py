"""Two-stage distillation (general distillation on a text corpus, then the task) in one command, and the
general-distillation scheme's bad input."""
import json

import pytest

from conftest import ROOT
from textdistill.cli import main

FAST = ["--set", "train.epochs=1", "--set", "train.batch_size=16", "--set", "train.eval_batch_size=50"]


@pytest.fixture
def corpus(tmp_path):
    lines = [line.split("\t")[0] for line in (ROOT / "data/sst2/train.tsv").read_text().splitlines()[1000:1300]]
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def _args(d, tiny_bert, corpus, out):
    return ["distill", "-r", "recipes/tinybert-2stage.yaml", "-o", str(out), "--data-dir", str(d / "sst2"),
            "--teacher", str(d / "teacher" / "model"), "--set", f"student.init={tiny_bert}",
            "--set", "student.layers=first:2", "--set", f"stages.general.teacher={tiny_bert}",
            "--set", f"stages.general.data.train={corpus}", *FAST]


def test_two_stages_run_in_one_command(tiny_teacher_run, tiny_bert, corpus, tmp_path):
    from transformers import AutoConfig, AutoModelForSequenceClassification

    d, out = tiny_teacher_run, tmp_path / "two"
    assert main(_args(d, tiny_bert, corpus, out)) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert [s["name"] for s in m["stages"]] == ["general", "task"] and m["dev"] == m["stages"][1]["dev"]
    general = json.loads((out / "general" / "metrics.json").read_text())
    assert general["scheme"] == "general" and general["train_rows"] == 294 and "loss" in general["dev"]
    assert set(general["history"][0]["loss"]) == {"hid", "att"}
    assert AutoConfig.from_pretrained(out / "general" / "model").architectures == ["BertModel"]
    task = json.loads((out / "task" / "metrics.json").read_text())
    assert task["student_init"] == str(out / "general" / "model")  # the path where stage 1's student lies now
    layers = json.loads((out / "task" / "student_layers.json").read_text())
    assert layers["init"] == str(out / "general" / "model")  # (no path of the chain's .partial left behind)
    assert task["teacher"] == str(d / "teacher" / "model") and "accuracy" in task["dev"]
    assert AutoModelForSequenceClassification.from_pretrained(out / "task" / "model").config.num_hidden_layers == 2
    assert not list(tmp_path.glob(".*partial"))


def test_general_loss_parts_against_the_encoders_outputs(tiny_bert, corpus):
    """The general scheme's two terms recomputed from plain ``AutoModel`` outputs by loops over the real tokens:
    hidden MSE of student layers 1, 2 against teacher layers 2, 4 (uniform 4 -> 2) and attention MSE over the real
    query-key pairs; the dev loss is the weighted sum over the held-out lines."""
    import torch
    from transformers import AutoModel

    from textdistill.data.batching import eval_loader
    from textdistill.recipe import validate
    from textdistill.schemes import SCHEMES

    recipe = validate({"method": "general", "task": "sst2", "scheme": "general", "teacher": str(tiny_bert),
                       "student": {"init": str(tiny_bert), "layers": "first:2"}, "data": {"train": str(corpus)},
                       "terms": [{"name": "hid", "tap": "hidden", "map": "uniform", "loss": "mse", "weight": 10},
                                 {"name": "att", "tap": "attention", "map": "uniform", "loss": "attention_mse",
                                  "weight": 100}]}, "test")
    cls = SCHEMES["general"]
    scheme = cls(recipe, None, *cls.load_data(recipe, None))
    scheme.setup(lambda: torch.manual_seed(0))
    scheme.student.eval()
    assert [t.pairs for t in scheme.terms] == [[(1, 2), (2, 4)], [(1, 2), (2, 4)]]
    batch = next(iter(eval_loader(scheme.train_set, scheme.tokenizer, 6)))
    parts = scheme.loss_parts(batch)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
    with torch.no_grad():
        teacher = AutoModel.from_pretrained(tiny_bert, attn_implementation="eager").eval()
        t = teacher(**inputs, output_hidden_states=True, output_attentions=True)
        s = scheme.student(**inputs, output_hidden_states=True, output_attentions=True)
    mask = inputs["attention_mask"]
    hid, n_hid, att, n_att = 0.0, 0, 0.0, 0
    for b in range(mask.shape[0]):
        n = int(mask[b].sum())
        for sl, tl in ((1, 2), (2, 4)):
            for i in range(n):
                hid += float(((s.hidden_states[sl][b, i] - t.hidden_states[tl][b, i]) ** 2).sum())
                n_hid += s.hidden_states[sl].shape[-1]
            d = s.attentions[sl - 1][b, :, :n, :n] - t.attentions[tl - 1][b, :, :n, :n]
            att += float((d ** 2).sum())
            n_att += d.numel()
    assert parts["hid"][0] == 10 and parts["att"][0] == 100
    assert parts["hid"][1].item() == pytest.approx(hid / n_hid, rel=1e-4)
    assert parts["att"][1].item() == pytest.approx(att / n_att, rel=1e-4)
    assert 0 < (mask == 0).sum()  # (the batch has padding: the loops above skip it)


def test_stage_and_corpus_bad_input(tiny_teacher_run, tiny_bert, corpus, tmp_path, capsys):
    d, out = tiny_teacher_run, tmp_path / "bad"

    def fails(needle, *extra):
        assert main([*_args(d, tiny_bert, corpus, out), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, err
        assert not out.exists() and not (tmp_path / ".bad.partial").exists()

    fails("stages[1] (task).student.init: no earlier stage named 'generl'", "--set", "stages.task.student.init=@generl")
    fails("stages[0] (general).train.epochs", "--set", "stages.general.train.epochs=-1")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    fails(f"data.train: {empty}: the corpus is empty", "--set", f"stages.general.data.train={empty}")
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0")
    fails("not a text file", "--set", f"stages.general.data.train={binary}")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("good film\ncaf\xe9 society\n".encode("latin-1"))
    fails(f"{latin}:2: not UTF-8", "--set", f"stages.general.data.train={latin}")
    fails("tap: general distillation has no task and no logits", "--set",
          "stages.general.terms=[{name: kd, tap: logits, loss: kd_kl}]")
    fails("stages[1].name: every stage needs a name", "--set", "stages.task.name=")
    # a later stage's model that is not there: refused before the general stage trains
    missing = tmp_path / "no-such-teacher"
    fails(f"stages[1] (task).teacher: {missing}: model folder not found", "--set", f"stages.task.teacher={missing}")
    fails("stages[0] (general).student.init: ", "--set", f"stages.general.student.init={missing}")
    fails("data.dev_rows: general distillation holds out the corpus's last lines", "--set",
          "stages.general.data.dev_rows=10")


def test_an_interrupted_two_stage_run_resumes_its_task_stage(tiny_teacher_run, tiny_bert, corpus, tmp_path,
                                                             monkeypatch, capsys):
    """Stopped in the task stage (after its first checkpoint): the general stage is kept, the task stage
    continues, and the result equals an uninterrupted two-stage run's."""
    from test_resume import _interrupt_at, _same_run

    d = tiny_teacher_run
    args = [*_args(d, tiny_bert, corpus, tmp_path / "full"), "--set", "stages.task.train.checkpoint_every=3"]
    assert main(args) == 0
    cut = [*_args(d, tiny_bert, corpus, tmp_path / "cut"), "--set", "stages.task.train.checkpoint_every=3"]
    with monkeypatch.context() as m:
        _interrupt_at(m, 8)  # the task stage's 8th step (general distillation is another scheme)
        assert main(cut) == 130
    assert "finished links and last checkpoint are kept" in capsys.readouterr().err
    tmp = tmp_path / ".cut.partial"
    assert (tmp / "general" / "metrics.json").is_file() and (tmp / ".task.partial" / "checkpoint").is_dir()
    assert main([*cut, "--resume"]) == 0
    for stage in ("general", "task"):
        _same_run(tmp_path / "full" / stage, tmp_path / "cut" / stage)
    assert json.loads((tmp_path / "cut" / "task" / "metrics.json").read_text())["student_init"] == str(
        tmp_path / "cut" / "general" / "model")
