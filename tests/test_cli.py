"""The CLI end to end on a tiny BERT built in the test, bad input, and plain-transformers reloading."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import same_as_evaluate
from textdistill.cli import main


def _train(kind, recipe, out, *sets):
    args = [kind, "-r", recipe, "-o", str(out)]
    for s in sets:
        args += ["--set", s]
    return main(args)


FAST = ["train.epochs=1", "train.batch_size=16", "train.eval_batch_size=50"]


@pytest.fixture
def tiny_teacher(tiny_teacher_run):
    """tiny_bert fine-tuned on the same 200 rows as sst2_tiny_dir (shared by the test session)."""
    return tiny_teacher_run / "teacher"


def test_finetune_distill_evaluate(tmp_path, tiny_teacher, sst2_tiny_dir, capsys):
    m = json.loads((tiny_teacher / "metrics.json").read_text())
    assert m["student_layers"] == 4 and m["train_rows"] == 200 and m["teacher"] is None
    for method in ("kd", "pkd-skip", "pkd-last"):
        out = tmp_path / method
        assert _train("distill", f"recipes/{method}.yaml", out, f"teacher={tiny_teacher / 'model'}",
                      f"student.init={tiny_teacher / 'model'}", "student.layers=first:2",
                      f"data.dir={sst2_tiny_dir}", *FAST) == 0
        m = json.loads((out / "metrics.json").read_text())
        for key in ("task", "method", "teacher", "student_layers", "dev", "params_teacher", "params_student",
                    "train_seconds", "seed", "versions"):
            assert key in m, key
        assert m["method"] == method and m["student_layers"] == 2 and m["seed"] == 42
        assert m["student_from_teacher_layers"] == {"1": 1, "2": 2}
        assert m["params_student"] < m["params_teacher"]
        # the whole run: more than its training and dev evaluations (loading, the teacher, saving)
        assert m["run_seconds"] > m["train_seconds"] + m["eval_seconds"] > 0
        assert set(m["history"][0]["loss"]) == ({"task", "kd"} if method == "kd" else {"task", "ds", "pt"})
        assert {p.name for p in out.iterdir()} == {"model", "metrics.json", "recipe.yaml", "train.log",
                                                   "student_layers.json", "dev_predictions.jsonl"}
        rows = same_as_evaluate(out, sst2_tiny_dir, tmp_path)  # the last dev evaluation, row by row
        assert np.mean([r["prediction"] == r["label"] for r in rows]) == pytest.approx(m["dev"]["accuracy"])
        assert "S1<-T" in (out / "train.log").read_text()
    # 4 -> 2: skip maps student layer 1 to teacher layer 2, last to teacher layer 3
    assert "S1<-T2" in json.loads((tmp_path / "pkd-skip" / "metrics.json").read_text())["terms"][1]
    assert "S1<-T3" in json.loads((tmp_path / "pkd-last" / "metrics.json").read_text())["terms"][1]
    capsys.readouterr()
    assert main(["evaluate", "--model", str(tmp_path / "kd" / "model"), "--task", "sst2", "--data-dir",
                 str(sst2_tiny_dir)]) == 0
    result = json.loads(capsys.readouterr().out)
    trained = json.loads((tmp_path / "kd" / "metrics.json").read_text())
    assert result["rows"] == 100
    assert result["metrics"]["accuracy"] == pytest.approx(trained["dev"]["accuracy"])


def test_saved_student_reloads_with_plain_transformers(tmp_path, tiny_bert):
    """A student folder loads with AutoModelForSequenceClassification / AutoTokenizer alone, same logits."""
    from transformers import AutoModelForSequenceClassification

    from textdistill.models.student import build_student

    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_bert)
    student, _ = build_student(teacher, [1, 3])
    student.eval().save_pretrained(tmp_path / "s")
    teacher_tok = __import__("transformers").AutoTokenizer.from_pretrained(tiny_bert)
    teacher_tok.save_pretrained(tmp_path / "s")
    texts = ["a gripping , funny film .", "dull"]
    enc = teacher_tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = student(**enc).logits
    code = ("import sys, json, torch\n"
            "from transformers import AutoModelForSequenceClassification as M, AutoTokenizer as T\n"
            f"p = {str(tmp_path / 's')!r}\n"
            "m, t = M.from_pretrained(p).eval(), T.from_pretrained(p)\n"
            f"enc = t({texts!r}, padding=True, return_tensors='pt')\n"
            "with torch.no_grad(): print(json.dumps(m(**enc).logits.tolist()))\n"
            "assert not any(k.startswith('textdistill') for k in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert torch.allclose(torch.tensor(json.loads(out.strip().splitlines()[-1])), expected, atol=1e-6)


def _fails(args, capsys, message, folder=None):
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert message in lines[-1], err
    assert sum(line.startswith("textdistill: error:") for line in lines) == 1
    if folder is not None:
        assert not folder.exists() and not (folder.parent / f".{folder.name}.partial").exists()


def test_bad_input_gives_one_line_and_writes_nothing(tmp_path, tiny_teacher, tiny_bert, sst2_tiny_dir, capsys):
    out = tmp_path / "out"
    base = ["-o", str(out), "--set", f"data.dir={sst2_tiny_dir}", "--set", f"teacher={tiny_teacher / 'model'}",
            "--set", f"student.init={tiny_teacher / 'model'}"]
    _fails(["distill", "-r", "recipes/kd.yaml", *base, "--set", "terms.kd.args.tempreature=2"], capsys,
           "terms[0] (kd).args.tempreature: loss 'kd_kl' takes no argument 'tempreature'", out)
    _fails(["distill", "-r", "recipes/kd.yaml", *base, "--set", "student.layers=first:6"], capsys,
           "deeper than its teacher", out)
    _fails(["distill", "-r", "recipes/kd.yaml", *base, "--task", "sst5"], capsys, "unknown task 'sst5'", out)
    _fails(["distill", "-r", "recipes/kd.yaml", *base, "--set", "train.max_lenght=3"], capsys,
           "unknown key 'train.max_lenght'", out)
    _fails(["distill", "-r", "recipes/pkd-skip.yaml", *base, "--set", "terms.pt.pairs=[[1,9]]", "--set",
            "terms.pt.map=null"], capsys, "teacher layer 9 out of range 0..4", out)
    _fails(["distill", "-r", "recipes/pkd-skip.yaml", *base, "--set", "terms.pt.map=pkd-middle"], capsys,
           "unknown layer map 'pkd-middle'", out)
    # a teacher whose head was never trained (a bare encoder checkpoint)
    from transformers import BertModel
    bare = tmp_path / "bare"
    BertModel.from_pretrained(tiny_bert).save_pretrained(bare)
    __import__("transformers").AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(bare)
    _fails(["distill", "-r", "recipes/kd.yaml", *base, "--set", f"teacher={bare}"], capsys,
           "never fine-tuned", out)
    # teacher and student with different vocabularies
    vocab = tmp_path / "vocab"
    vocab.mkdir()
    (vocab / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"]) + "\n")
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast
    other = tmp_path / "other"
    BertForSequenceClassification(BertConfig(vocab_size=7, hidden_size=32, num_hidden_layers=4,
                                             num_attention_heads=2, intermediate_size=64)).save_pretrained(other)
    BertTokenizerFast(vocab_file=str(vocab / "vocab.txt")).save_pretrained(other)
    # (logit terms may read a teacher with another tokenizer: tests/test_schemes.py; intermediate ones not)
    _fails(["distill", "-r", "recipes/pkd-skip.yaml", *base, "--set", f"student.init={other}"], capsys,
           "only logit terms can read a teacher with another tokenizer", out)
    # a label the task does not know, and an empty file
    (sst2_tiny_dir / "train.tsv").write_text("sentence\tlabel\ngood\t1\nbad\t3\n")
    _fails(["distill", "-r", "recipes/kd.yaml", *base], capsys, "train.tsv:3: unseen label '3'", out)
    (sst2_tiny_dir / "train.tsv").write_text("")
    _fails(["distill", "-r", "recipes/kd.yaml", *base], capsys, "train.tsv: the file is empty", out)
    # an existing output folder is never replaced without --overwrite
    (sst2_tiny_dir / "train.tsv").write_text("sentence\tlabel\ngood\t1\nbad\t0\n")
    out.mkdir()  # (an empty folder is used: nothing in it to lose)
    (out / "notes.txt").write_text("mine")
    _fails(["distill", "-r", "recipes/kd.yaml", *base], capsys, "output folder exists", None)
    assert (out / "notes.txt").exists()


def test_regression_task_and_user_task(tmp_path, tiny_bert, capsys):
    """STS-B (regression: MSE task loss, MSE to the teacher's score) and a task declared in the recipe."""
    import random

    rng = random.Random(0)
    words = "a man woman dog cat is plays runs the ball guitar in park".split()
    sent = lambda: " ".join(rng.choice(words) for _ in range(6))  # noqa: E731
    stsb = tmp_path / "stsb"
    stsb.mkdir()
    for name, n in (("train.tsv", 64), ("dev.tsv", 32)):
        rows = [f"{i}\tmain\tx\t2012\t{i}\tnone\tnone\t{sent()}\t{sent()}\t{rng.uniform(0, 5):.3f}" for i in range(n)]
        header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
        (stsb / name).write_text("\n".join([header] + rows) + "\n")
    common = ["--task", "stsb", "--data-dir", str(stsb), "--set", "train.epochs=1", "--set", "train.batch_size=16"]
    assert main(["finetune", "-r", "recipes/teacher.yaml", "-o", str(tmp_path / "t"), "--set",
                 f"student.init={tiny_bert}", *common]) == 0
    t = tmp_path / "t" / "model"
    assert json.loads((t / "config.json").read_text())["id2label"] == {"0": "score"}  # one output
    _fails(["distill", "-r", "recipes/kd.yaml", "-o", str(tmp_path / "bad"), "--teacher", str(t), "--set",
            f"student.init={t}", *common], capsys, "'kd_kl' needs class logits; use 'mse'", tmp_path / "bad")
    assert main(["distill", "-r", "recipes/kd.yaml", "-o", str(tmp_path / "s"), "--teacher", str(t), "--set",
                 f"student.init={t}", "--set", "student.layers=every:2", "--set", "terms.kd.loss=mse",
                 "--set", "terms.kd.args={}", *common]) == 0
    m = json.loads((tmp_path / "s" / "metrics.json").read_text())
    assert set(m["dev"]) == {"pearson", "spearman"} and m["main_metric"] == "pearson"

    user = tmp_path / "user"
    user.mkdir()
    for name, n in (("train.csv", 48), ("dev.csv", 16)):
        lines = ["title,team"] + [f"\"{sent()}, please\",{rng.choice(['billing', 'tech'])}" for _ in range(n)]
        (user / name).write_text("\n".join(lines) + "\n")
    recipe = tmp_path / "user.yaml"
    recipe.write_text(f"""method: ft
task: {{name: tickets, text_columns: [title], label_column: team, labels: [billing, tech], metrics: [macro_f1, accuracy]}}
data: {{train: {user / 'train.csv'}, dev: {user / 'dev.csv'}}}
student: {{init: {tiny_bert}, layers: first:2}}
train: {{epochs: 1, batch_size: 16}}
""")
    assert main(["finetune", "-r", str(recipe), "-o", str(tmp_path / "u")]) == 0
    m = json.loads((tmp_path / "u" / "metrics.json").read_text())
    assert m["task"] == "tickets" and set(m["dev"]) == {"macro_f1", "accuracy"}
    config = json.loads((tmp_path / "u" / "model" / "config.json").read_text())
    assert config["id2label"] == {"0": "billing", "1": "tech"}
