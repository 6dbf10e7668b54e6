"""`textdistill evaluate --predictions`: one prediction per row, checked against plain transformers on the same
rows, on labelled and unlabelled (test) files, in JSON lines and GLUE's submission form; bad options refused."""
import csv
import json

import numpy as np
import pytest
import torch

from conftest import fails_one_line
from textdistill.cli import main
from textdistill.data.readers import Examples
from textdistill.data.tasks import get_task
from textdistill.evaluate import prediction_rows, write_predictions


def _rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def _plain_logits(model_dir, sentences):
    """Logits from AutoModel + AutoTokenizer alone, one sentence at a time (no padding, no sorting)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    with torch.no_grad():
        return torch.cat([model(**tok(s, truncation=True, max_length=128, return_tensors="pt")).logits
                          for s in sentences]).numpy()


def test_predictions_match_plain_transformers_and_the_metrics(tiny_teacher_run, tmp_path, capsys):
    model = tiny_teacher_run / "teacher" / "model"
    dev = tiny_teacher_run / "sst2" / "dev.tsv"
    out = tmp_path / "dev.jsonl"
    assert main(["evaluate", "--model", str(model), "--task", "sst2", "--file", str(dev), "--predictions",
                 str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    rows = _rows(dev)
    assert result["predictions"] == {"file": str(out), "format": "jsonl", "rows": len(rows)} and len(lines) == len(rows)
    logits = _plain_logits(model, [r["sentence"] for r in rows])
    probs = torch.from_numpy(logits).softmax(-1).numpy()
    for i, (line, row) in enumerate(zip(lines, rows)):
        assert line["row"] == i and line["line"] == i + 2  # (line 1 is the header)
        assert line["label"] == row["label"]
        assert line["prediction"] == ["0", "1"][int(logits[i].argmax())]
        assert [line["probabilities"][k] for k in ("0", "1")] == pytest.approx(probs[i].tolist(), abs=1e-5)
    # the reported accuracy is the file's: recomputed from the predictions
    acc = np.mean([x["prediction"] == x["label"] for x in lines])
    assert result["metrics"]["accuracy"] == pytest.approx(acc)
    assert not list(tmp_path.glob(".*partial"))


def test_an_unlabelled_test_file_in_glue_submission_form(tiny_teacher_run, tmp_path, capsys):
    model = tiny_teacher_run / "teacher" / "model"
    rows = _rows(tiny_teacher_run / "sst2" / "dev.tsv")[:30]
    test = tmp_path / "test.tsv"  # GLUE's test form: an index column, no label
    test.write_text("index\tsentence\n" + "".join(f"{i}\t{r['sentence']}\n" for i, r in enumerate(rows)))
    base = ["evaluate", "--model", str(model), "--task", "sst2", "--file", str(test)]
    # without --predictions there is nothing to do with a file without labels
    fails_one_line(base, capsys, "no label column")
    out = tmp_path / "SST-2.tsv"
    assert main([*base, "--predictions", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["metrics"] is None and result["rows"] == 30 and result["predictions"]["format"] == "tsv"
    got = _rows(out)
    logits = _plain_logits(model, [r["sentence"] for r in rows])
    assert [r["index"] for r in got] == [str(i) for i in range(30)]
    assert [r["prediction"] for r in got] == [["0", "1"][k] for k in logits.argmax(-1)]


def test_regression_and_gold_labels_in_the_rows():
    task = get_task("stsb")
    ex = Examples(["a", "b", "c"], ["x", "y", "z"], [1.5, 4.0, None], "f", [2, 3, 4])
    rows = prediction_rows(task, np.array([[0.25], [3.5], [5.0]], dtype=np.float32), ex)
    assert rows == [{"row": 0, "line": 2, "prediction": 0.25, "label": 1.5},
                    {"row": 1, "line": 3, "prediction": 3.5, "label": 4.0},
                    {"row": 2, "line": 4, "prediction": 5.0}]
    mnli = get_task("mnli")
    ex = Examples(["a"], ["b"], None, "f", [2])
    (row,) = prediction_rows(mnli, np.array([[0.0, 2.0, 0.0]], dtype=np.float32), ex, exit_layers=np.array([3]))
    p = np.exp(2) / (np.exp(2) + 2)
    assert row["prediction"] == mnli.labels[1] and row["exit_layer"] == 3 and "label" not in row
    assert row["probabilities"][mnli.labels[1]] == pytest.approx(p, abs=1e-6)


def test_written_whole_or_not_at_all_and_glue_form_for_scores(tmp_path):
    rows = prediction_rows(get_task("stsb"), np.array([[0.25], [3.125]], dtype=np.float32),
                           Examples(["a", "b"], ["c", "d"], None, "f", [2, 3]))
    assert write_predictions(tmp_path / "STS-B.tsv", rows) == "tsv"
    assert (tmp_path / "STS-B.tsv").read_text() == "index\tprediction\n0\t0.250000\n1\t3.125000\n"
    # a row that cannot be written: the error, no file, no partial one
    with pytest.raises(TypeError):
        write_predictions(tmp_path / "p.jsonl", [*rows, {"row": 2, "prediction": object()}])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["STS-B.tsv"]


def test_bad_predictions_options_are_refused_before_the_work(tiny_teacher_run, tmp_path, capsys):
    base = ["evaluate", "--model", str(tiny_teacher_run / "teacher" / "model"), "--task", "sst2", "--data-dir",
            str(tiny_teacher_run / "sst2")]
    fails_one_line([*base, "--predictions", str(tmp_path)], capsys, "is a folder")
    fails_one_line([*base, "--predictions", str(tmp_path / "no" / "p.jsonl")], capsys, "cannot be created")
    same = str(tmp_path / "r.json")
    fails_one_line([*base, "--predictions", same, "--output", same], capsys, "the same file as --output")
    fails_one_line([*base, "--predictions", str(tmp_path / "p.jsonl"), "--exit-sweep"], capsys, "--exit-threshold")
    assert not list(tmp_path.iterdir())
    # the rows' own file is not overwritten by their predictions
    dev = tmp_path / "dev.tsv"
    dev.write_text((tiny_teacher_run / "sst2" / "dev.tsv").read_text())
    before = dev.read_text()
    fails_one_line([*base[:5], "--file", str(dev), "--predictions", str(dev)], capsys, "the rows are read from")
    assert dev.read_text() == before


def test_evaluate_folder_writes_the_same_predictions(tiny_teacher_run, tmp_path, capsys):
    from textdistill.evaluate import evaluate_folder

    model, data = tiny_teacher_run / "teacher" / "model", tiny_teacher_run / "sst2"
    metrics = evaluate_folder(model, get_task("sst2"), "dev", str(data), predictions=tmp_path / "a.jsonl")
    assert main(["evaluate", "--model", str(model), "--task", "sst2", "--data-dir", str(data), "--predictions",
                 str(tmp_path / "b.jsonl")]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"] == pytest.approx(metrics)
    a, b = ([json.loads(x) for x in (tmp_path / f).read_text().splitlines()] for f in ("a.jsonl", "b.jsonl"))
    assert [r["prediction"] for r in a] == [r["prediction"] for r in b] and len(a) == 100
