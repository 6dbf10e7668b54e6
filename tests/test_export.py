"""ONNX export of a tiny fine-tuned BERT (textdistill export), fp32 and int8, and evaluate on the export."""
import json

import numpy as np
import pytest
import torch

from textdistill.cli import main

TEXTS = ["a gripping , funny film .", "dull", "the plot is nothing but boilerplate clichés from start to finish , "
         "and the cast can not save it .", "warm , funny , engaging"]


@pytest.fixture(scope="module")
def run(tiny_teacher_run):
    return tiny_teacher_run


@pytest.fixture(scope="module")
def fp32_export(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "onnx"
    assert main(["export", "--model", str(run / "teacher" / "model"), "--output", str(out), "--task", "sst2",
                 "--data-dir", str(run / "sst2")]) == 0
    return out


def _run_onnx(folder, enc):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    return sess.run(["logits"], {n: enc[n].numpy().astype(np.int64) for n in names})[0]


def test_fp32_export_matches_pytorch(run, fp32_export):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = fp32_export
    assert {p.name for p in out.iterdir()} >= {"model.onnx", "config.json", "tokenizer.json", "export.json"}
    assert not (out / ".work").exists() and not (out.parent / f".{out.name}.partial").exists()
    src = run / "teacher" / "model"
    model = AutoModelForSequenceClassification.from_pretrained(src).eval()
    tok = AutoTokenizer.from_pretrained(out)
    for texts in (TEXTS, TEXTS[:1], TEXTS * 10):  # padded batch, one row without padding, batch of 40
        enc = tok(texts, padding=True, return_tensors="pt")
        with torch.no_grad():
            expected = model(**enc).logits.numpy()
        got = _run_onnx(out, enc)
        assert got.shape == expected.shape
        assert (got.argmax(-1) == expected.argmax(-1)).all()
        np.testing.assert_allclose(got, expected, atol=1e-4)
    info = json.loads((out / "export.json").read_text())
    assert info["opset"] >= 17 and info["int8"] is None and info["source"] == str(src.resolve())
    assert info["inputs"] == ["input_ids", "attention_mask", "token_type_ids"] and info["outputs"] == ["logits"]
    check = info["check"]
    assert check["rows"] == 100 and check["data"].endswith("dev.tsv")
    assert check["fp32"]["agreement"] == 1.0 and check["fp32"]["max_abs_logit_diff"] < 1e-4
    assert check["fp32"]["metrics"]["accuracy"] == pytest.approx(check["pytorch_metrics"]["accuracy"])
    assert info["sizes"]["onnx_bytes"] == (out / "model.onnx").stat().st_size > 0
    assert info["sizes"]["pytorch_bytes"] == (src / "model.safetensors").stat().st_size


def test_evaluate_onnx_same_metrics(run, fp32_export, capsys, tmp_path):
    results, predictions = {}, {}
    for name, model in (("pt", run / "teacher" / "model"), ("onnx", fp32_export),
                        ("file", fp32_export / "model.onnx")):
        capsys.readouterr()
        out = tmp_path / f"{name}.jsonl"
        assert main(["evaluate", "--model", str(model), "--task", "sst2", "--data-dir", str(run / "sst2"),
                     "--predictions", str(out)]) == 0
        results[name] = json.loads(capsys.readouterr().out)
        predictions[name] = [json.loads(x) for x in out.read_text().splitlines()]
    assert results["onnx"]["rows"] == results["pt"]["rows"] == 100
    assert results["onnx"]["runtime"] == "onnxruntime"
    for name in ("onnx", "file"):
        assert results[name]["metrics"] == pytest.approx(results["pt"]["metrics"])
        # each row's prediction through ONNX Runtime is PyTorch's (probabilities to fp32 noise)
        for a, b in zip(predictions[name], predictions["pt"], strict=True):
            assert a["prediction"] == b["prediction"] and a["row"] == b["row"]
            assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-4)
    # the rows without labels (a test file): ONNX Runtime's predictions, no metrics
    test = tmp_path / "test.tsv"
    test.write_text("sentence\n" + "".join(line.rsplit("\t", 1)[0] + "\n"
                                           for line in (run / "sst2" / "dev.tsv").read_text().splitlines()[1:]))
    out = tmp_path / "test.jsonl"
    assert main(["evaluate", "--model", str(fp32_export), "--task", "sst2", "--file", str(test), "--predictions",
                 str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"] is None
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["prediction"] for r in rows] == [r["prediction"] for r in predictions["pt"]]
    assert all("label" not in r for r in rows)
    # a head for another task is refused
    from textdistill import TextDistillError
    from textdistill.data.tasks import get_task
    from textdistill.models.export import check_labels

    with pytest.raises(TextDistillError, match="2 outputs, task mnli needs 3"):
        check_labels(fp32_export, get_task("mnli"), "m")


def test_dynamic_int8(run, tmp_path, capsys):
    out = tmp_path / "dyn"
    assert main(["export", "--model", str(run / "teacher" / "model"), "--output", str(out), "--int8", "dynamic",
                 "--file", str(run / "sst2" / "dev.tsv"), "--task", "sst2"]) == 0
    printed = json.loads(capsys.readouterr().out)
    info = json.loads((out / "export.json").read_text())
    assert info["int8"] == "dynamic" == printed["int8"]
    for key in ("agreement", "max_abs_logit_diff", "metrics"):  # (stdout prints a summary of export.json's check)
        assert printed["check"]["int8"][key] == info["check"]["int8"][key]
    assert info["check"]["fp32"]["agreement"] == 1.0
    assert info["sizes"]["onnx_bytes"] < info["sizes"]["onnx_fp32_bytes"]
    # the recorded agreement, recomputed from `textdistill evaluate`'s predictions of both models (the check's batch
    # size: dynamic int8 quantizes each batch's activations with that batch's range)
    preds, acc = {}, {}
    for name, model in (("pt", run / "teacher" / "model"), ("int8", out)):
        rows = tmp_path / f"{name}.jsonl"
        assert main(["evaluate", "--model", str(model), "--task", "sst2", "--data-dir", str(run / "sst2"),
                     "--batch-size", "32", "--predictions", str(rows)]) == 0
        acc[name] = json.loads(capsys.readouterr().out)["metrics"]["accuracy"]
        preds[name] = [json.loads(x)["prediction"] for x in rows.read_text().splitlines()]
    agree = np.mean([a == b for a, b in zip(preds["pt"], preds["int8"], strict=True)])
    assert info["check"]["int8"]["agreement"] == pytest.approx(agree)
    assert info["check"]["int8"]["metrics"]["accuracy"] == pytest.approx(acc["int8"])


def test_int8_below_min_agreement_refused_nothing_written(run, tmp_path, capsys, monkeypatch):
    """The int8 model's check is the gate: below --min-agreement the export is refused in one line and leaves no
    output and no .partial (the fp32 graph, checked first, passes)."""
    from textdistill.models import export as export_mod

    real, calls = export_mod.onnx_predict, []

    def int8_flipped(session, loader):  # the fp32 graph's logits as they are, the int8 model's negated
        calls.append(1)
        return real(session, loader) * (1 if len(calls) == 1 else -1)
    monkeypatch.setattr(export_mod, "onnx_predict", int8_flipped)
    out = tmp_path / "o"
    capsys.readouterr()
    assert main(["export", "--model", str(run / "teacher" / "model"), "--output", str(out), "--int8", "dynamic",
                 "--task", "sst2", "--data-dir", str(run / "sst2"), "--min-agreement", "0.5"]) == 2
    _one_line_error(capsys, "the int8 (dynamic) model agrees with PyTorch on only 0.00% of 100 rows",
                    "--min-agreement 50.0%", "nothing written")
    assert len(calls) == 2 and not out.exists() and not (tmp_path / ".o.partial").exists()


def test_static_int8_with_calibration(run, tmp_path):
    out = tmp_path / "static"
    # without data: the check runs on the built-in sample, calibration on 40 rows of the given file
    assert main(["export", "--model", str(run / "teacher" / "model"), "--output", str(out), "--int8", "static",
                 "--task", "sst2", "--calibration", str(run / "sst2" / "train.tsv"), "--calibration-rows", "40"]) == 0
    info = json.loads((out / "export.json").read_text())
    assert info["int8"] == "static" and info["check"]["data"] == "built-in sample"
    detail = info["int8_detail"]
    assert detail["calibration"]["rows"] == 40 and detail["per_channel"] and detail["format"] == "QDQ"
    assert info["sizes"]["onnx_bytes"] < info["sizes"]["onnx_fp32_bytes"]


def _one_line_error(capsys, *needles):
    import re

    lines = [ln for ln in re.split(r"[\r\n]", capsys.readouterr().err) if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("evaluate:")]  # the check's progress bar (stderr, erased)
    assert len(lines) == 1 and lines[0].startswith("textdistill: error: "), lines
    err = lines[0]
    for n in needles:
        assert n in err, err
    return err


def test_not_a_student_folder(tmp_path, run, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "notes.txt").write_text("hello\n")
    half = tmp_path / "half"  # a config but no weights
    half.mkdir()
    (half / "config.json").write_text((run / "teacher" / "model" / "config.json").read_text())
    for folder in (bad, half, tmp_path / "missing"):
        out = tmp_path / "out"
        capsys.readouterr()
        assert main(["export", "--model", str(folder), "--output", str(out)]) == 2
        _one_line_error(capsys, "not a student folder")
        assert not out.exists() and not (tmp_path / ".out.partial").exists()


def test_existing_output_and_bad_options(run, fp32_export, tmp_path, capsys):
    model = str(run / "teacher" / "model")
    before = {p.name: p.stat().st_mtime_ns for p in fp32_export.iterdir()}
    capsys.readouterr()
    assert main(["export", "--model", model, "--output", str(fp32_export)]) == 2
    _one_line_error(capsys, "exists", "--overwrite")
    assert {p.name: p.stat().st_mtime_ns for p in fp32_export.iterdir()} == before
    out = tmp_path / "o"
    for args, needle in ((["--int8", "static"], "calibration"), (["--data-dir", str(run / "sst2")], "--task"),
                         (["--int8", "dynamic", "--calibration", str(run / "sst2" / "train.tsv"), "--task", "sst2"],
                          "only used by --int8 static")):
        assert main(["export", "--model", model, "--output", str(out), *args]) == 2
        _one_line_error(capsys, needle)
        assert not out.exists()


def test_mismatch_refused_nothing_written(run, tmp_path, capsys, monkeypatch):
    """An ONNX graph whose predictions differ from PyTorch's is refused; no output, no .partial left."""
    from textdistill.models import export as export_mod

    real = export_mod.onnx_predict
    monkeypatch.setattr(export_mod, "onnx_predict", lambda s, loader: -real(s, loader))  # flips every argmax
    out = tmp_path / "o"
    capsys.readouterr()
    assert main(["export", "--model", str(run / "teacher" / "model"), "--output", str(out)]) == 2
    _one_line_error(capsys, "disagrees with PyTorch", "nothing written")
    assert not out.exists() and not (tmp_path / ".o.partial").exists()
