"""Recipe keys a run would ignore or misuse, and files it could not read, are refused with one line naming
the key, row or file -- before anything is written: names that would be folders of the run, a loss with no
part, keys a scheme does not use, term options that would do nothing, a negative gradient clip, an empty
generated set (files a reader cannot read: tests/test_data.py)."""
import re

import pytest

from conftest import fails_one_line
from textdistill import TextDistillError
from textdistill.knowledge.terms import Term, check_term
from textdistill.recipe import TermCfg, validate

BASE = {"method": "kd", "task": "sst2"}


@pytest.mark.parametrize("data, needle", [
    ({"scheme": "online", "peers": [{"init": "x", "name": "checkpoint"}, {"init": "x"}]},
     "peers.0.name: 'checkpoint' names a folder every run writes"),
    ({"scheme": "online", "peers": [{"init": "x", "name": "../x"}, {"init": "x"}]},
     "peers.0.name: a name holds letters, digits"),
    ({"teachers": [{"model": "x", "name": ".."}]}, "teachers.0.name: a name holds letters"),
    ({"teachers": [{"model": "x", "name": "model"}]}, "teachers.0.name: 'model' names a folder"),
    ({"terms": [{"name": "a.b", "loss": "kd_kl"}]}, "terms.0.name: a name holds letters"),
    ({"train": {"grad_clip": -1}}, "train.grad_clip: Input should be greater than 0"),
    ({"train": {"weight_decay": -0.1}}, "train.weight_decay: Input should be greater than or equal to 0"),
])
def test_names_and_numbers_the_schema_refuses(data, needle):
    with pytest.raises(TextDistillError, match=re.escape("r.yaml: " + needle)):
        validate(BASE | data, "r.yaml")


def test_names_the_schema_accepts():
    r = validate(BASE | {"teachers": [{"model": "x", "name": "mpnet+minilm_2-b"}], "terms": [{"loss": "kd_kl"}]}, "r")
    assert r.teachers[0].name == "mpnet+minilm_2-b" and r.terms[0].name is None
    assert validate(BASE | {"train": {"grad_clip": None}}, "r").train.grad_clip is None  # (no clipping)


def test_a_stage_name_is_a_folder_name(tiny_teacher_run, tmp_path, capsys):
    d = tiny_teacher_run
    out = tmp_path / "two"
    fails_one_line(["distill", "-r", "recipes/tinybert-2stage.yaml", "-o", str(out), "--data-dir", str(d / "sst2"),
                    "--set", "stages.task.name=checkpoint"], capsys,
                   "stages[1] (checkpoint).name: 'checkpoint' names a folder every run writes", out)


@pytest.mark.parametrize("cfg, needle", [
    (dict(loss="kd_kl", proj="linear"), "terms[0]: a logits term takes no layer map, projection or concat"),
    (dict(loss="kd_kl", train_teacher_proj=True), "terms[0]: a logits term takes no layer map"),
    (dict(tap="cls", map="uniform", loss="mse", proj="none", proj_dim=8),
     "terms[0].proj: 'none' contradicts proj_dim 8"),
    (dict(tap="cls", map="uniform", loss="mse", train_teacher_proj=True),
     "terms[0].train_teacher_proj: there is a teacher-side projection only with proj_dim"),
])
def test_term_options_that_would_do_nothing(cfg, needle):
    with pytest.raises(TextDistillError, match=re.escape(needle)):
        check_term(TermCfg(**cfg), "terms[0]")


@pytest.mark.parametrize("map_name", ["pkd-skip", "pkd-last", "ckd"])
def test_a_map_that_maps_no_layer_of_the_student(map_name):
    cfg = TermCfg(tap="cls", map=map_name, loss="mse")
    with pytest.raises(TextDistillError, match=rf"terms\[0\]\.map: '{map_name}' maps no layer of a 1-layer student"):
        Term(cfg, n_teacher=4, n_student=1, d_teacher=8, d_student=8, regression=False, where="terms[0]")
    assert Term(cfg, n_teacher=4, n_student=2, d_teacher=8, d_student=8, regression=False, where="terms[0]").pairs


def test_a_run_without_a_loss_and_keys_a_scheme_ignores(tiny_teacher_run, tiny_bert, tmp_path, capsys):
    d = tiny_teacher_run
    out = tmp_path / "o"
    data = ["-o", str(out), "--data-dir", str(d / "sst2")]
    two = f"peers=[{{init: {tiny_bert}}}, {{init: {tiny_bert}}}]"
    nothing = "hard_weight: 0 and no terms: the run would have no loss to train on"
    fails_one_line(["finetune", "-r", "recipes/ft.yaml", *data, "--set", f"student.init={tiny_bert}",
                    "--set", "hard_weight=0"], capsys, nothing, out)
    dml = ["distill", "-r", "recipes/dml.yaml", *data, "--set", two]
    fails_one_line([*dml, "--set", "hard_weight=0", "--set", "terms=[]"], capsys, nothing, out)
    fails_one_line([*dml, "--set", "combine=per-teacher"], capsys, "combine: not used by scheme 'online'", out)
    fails_one_line([*dml, "--set", "terms.dml.teacher=t1"], capsys,
                   "terms[0] (dml).teacher: online learning has no teachers", out)
    fails_one_line([*dml, "--set", "transfer.adversarial={flips: 1}"], capsys,
                   "transfer.adversarial: not used by scheme 'online'", out)
    fails_one_line(["finetune", "-r", "recipes/ft.yaml", *data, "--set", f"student.init={tiny_bert}",
                    "--set", f"teacher_cache.dir={tmp_path / 'c'}"], capsys,
                   "teacher_cache.dir: the run has no teacher whose outputs it would cache", out, tmp_path / "c")
    fails_one_line(["distill", "-r", "recipes/self-distill.yaml", *data, "--set", f"student.init={tiny_bert}",
                    "--set", "student.arch=bilstm"], capsys, "student.arch: not used by scheme 'self'", out)


def test_general_distillation_refuses_another_student_kind_and_synthetic_rows(tiny_teacher_run, tiny_bert, tmp_path,
                                                                              capsys):
    d = tiny_teacher_run
    out = tmp_path / "g"
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a good film\na bad film\n" * 20)
    base = ["distill", "-r", "recipes/tinybert-2stage.yaml", "-o", str(out), "--data-dir", str(d / "sst2"),
            "--teacher", str(d / "teacher" / "model"), "--set", f"student.init={tiny_bert}",
            "--set", f"stages.general.teacher={tiny_bert}", "--set", f"stages.general.data.train={corpus}"]
    fails_one_line([*base, "--set", "stages.general.transfer={dir: x, synthetic: {per_class: 2}}"], capsys,
                   "transfer: not used by scheme 'general'", out)
    fails_one_line([*base, "--set", "stages.general.student.options={hidden_size: 8}"], capsys,
                   "student.options: not used by scheme 'general'", out)


def test_an_augmentation_that_generates_nothing(tiny_teacher_run, tiny_bert, tmp_path, capsys):
    d = tiny_teacher_run
    out, aug = tmp_path / "a", tmp_path / "aug"
    fails_one_line(["distill", "-r", "recipes/kd-tang.yaml", "-o", str(out), "--data-dir", str(d / "sst2"),
                    "--teacher", str(d / "teacher" / "model"), "--set", f"student.init={tiny_bert}",
                    "--set", f"transfer.dir={aug}", "--set", "transfer.augment={method: tang, copies: 2, p_mask: 0, "
                    "p_pos: 0, p_ng: 0}", "--set", "transfer.train_rows=false"], capsys,
                   "transfer.augment: the tang rules generated no row from 200 training rows", out, aug)


def test_an_existing_output_is_refused_before_the_transfer_set_is_built(tiny_teacher_run, tiny_bert, tmp_path, capsys,
                                                                          monkeypatch):
    import textdistill.data.transfer as transfer

    d = tiny_teacher_run
    out, aug = tmp_path / "a", tmp_path / "aug"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    monkeypatch.setattr(transfer, "build", lambda *a, **k: pytest.fail("the set was built before the output check"))
    fails_one_line(["distill", "-r", "recipes/kd-tang.yaml", "-o", str(out), "--data-dir", str(d / "sst2"),
                    "--teacher", str(d / "teacher" / "model"), "--set", f"student.init={tiny_bert}",
                    "--set", f"transfer.dir={aug}"], capsys, f"{out}: output folder exists", aug)
    assert (out / "metrics.json").read_text() == "{}"


def test_unnamed_terms_are_named_by_their_place():
    from types import SimpleNamespace

    from textdistill.knowledge.terms import build_terms

    config = SimpleNamespace(num_hidden_layers=2, hidden_size=8, num_attention_heads=2)
    cfgs = [TermCfg(loss="kd_kl"), TermCfg(loss="soft_ce"), TermCfg(name="kd", loss="kd_kl")]
    terms = build_terms(cfgs, teacher_config=config, student_config=config, regression=False)
    assert [t.name for t in terms] == ["term0", "term1", "kd"] and cfgs[0].name is None  # (the recipe is unchanged)
    with pytest.raises(TextDistillError, match=re.escape("terms[1] (term0).name: duplicate term name 'term0'")):
        build_terms([TermCfg(loss="kd_kl"), TermCfg(name="term0", loss="kd_kl")], teacher_config=config,
                    student_config=config, regression=False)


def test_a_shared_folder_under_a_file_is_one_line(tiny_teacher_run, tiny_bert, tmp_path, capsys):
    """A generated set or a teacher cache whose parent is a file: one line naming it (the build lock beside the
    folder cannot be made), not a traceback and not a wait."""
    d = tiny_teacher_run
    out, afile = tmp_path / "a", tmp_path / "file"
    afile.write_text("x")
    base = ["distill", "-r", "recipes/kd-tang.yaml", "-o", str(out), "--data-dir", str(d / "sst2"),
            "--teacher", str(d / "teacher" / "model"), "--set", f"student.init={tiny_bert}"]
    fails_one_line([*base, "--set", f"transfer.dir={afile / 'aug'}"], capsys, f"{afile / 'aug'}: {afile} is not a "
                   f"folder", out)
    fails_one_line([*base, "--set", f"transfer.dir={tmp_path / 'aug'}", "--set", f"teacher_cache.dir={afile / 'c'}"],
                   capsys, f"{afile / 'c'}: {afile} is not a folder", out)
