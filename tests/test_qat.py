"""Quantization-aware KD (student.quantize, models/qat.py): the fake-quantizers against independent
computations (ONNX Runtime's own DynamicQuantizeLinear, numpy grids), straight-through gradients, and a tiny
run whose saved weights lie on the int8 grid and whose int8 ONNX export reproduces them."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import fails_one_line, same_as_evaluate
from textdistill.cli import main
from textdistill.models.qat import FakeQuantLinear, quantize_activation, quantize_weight


def _on_grid(w: np.ndarray, bits: int, per_channel: bool) -> bool:
    qmax = 2 ** (bits - 1) - 1
    amax = np.abs(w).max(axis=1, keepdims=True) if per_channel else np.abs(w).max()
    k = w / (amax / qmax)
    return bool(np.allclose(k, np.round(k), atol=1e-3) and np.abs(np.round(k)).max() <= qmax)


@pytest.mark.parametrize("bits,per_channel", [(8, True), (8, False), (4, True)])
def test_weights_on_the_grid(bits, per_channel):
    w = torch.randn(16, 40, generator=torch.Generator().manual_seed(0))
    q = quantize_weight(w, bits, per_channel).numpy()
    assert _on_grid(q, bits, per_channel)
    # numpy, written out: round(w / s) * s with s = max|w| / qmax
    qmax = 2 ** (bits - 1) - 1
    s = np.abs(w.numpy()).max(axis=1, keepdims=True) / qmax if per_channel else np.abs(w.numpy()).max() / qmax
    np.testing.assert_allclose(q, np.clip(np.round(w.numpy() / s), -qmax, qmax) * s, rtol=1e-6, atol=1e-7)


def test_ternary_weights_twn():
    w = torch.randn(8, 64, generator=torch.Generator().manual_seed(1))
    q = quantize_weight(w, 2, True).numpy()
    for row, wr in zip(q, w.numpy()):
        delta = 0.7 * np.abs(wr).mean()
        keep = np.abs(wr) > delta
        alpha = np.abs(wr[keep]).mean()
        np.testing.assert_allclose(row, alpha * np.sign(wr) * keep, rtol=1e-5)
        assert len(np.unique(np.round(row, 6))) <= 3


def test_activations_as_onnxruntime_dynamic_quantization():
    """Against ORT's DynamicQuantizeLinear + DequantizeLinear on the same tensor (an independent implementation)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    x = (torch.randn(3, 7, 24, generator=torch.Generator().manual_seed(2)) * 3 + 0.5).float()
    graph = helper.make_graph(
        [helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"]),
         helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])], "dq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(x.shape))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (expected,) = sess.run(None, {"x": x.numpy()})
    got = quantize_activation(x).numpy()
    scale = (max(x.max().item(), 0) - min(x.min().item(), 0)) / 255
    assert np.abs(got - expected).max() <= scale * 1.0001  # rounding of ties may differ by one step
    assert np.mean(np.isclose(got, expected, atol=1e-6)) > 0.99
    onnx.checker.check_model(model)


def test_straight_through_gradients():
    w = torch.randn(4, 6, requires_grad=True)
    quantize_weight(w, 8, True).sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))
    x = torch.randn(5, 6, requires_grad=True)
    (quantize_activation(x) * 2).sum().backward()
    assert torch.equal(x.grad, torch.full_like(x, 2.0))


def test_fake_quant_linear_keeps_the_state_dict_names():
    lin = torch.nn.Linear(6, 3)
    q = FakeQuantLinear(6, 3, bits=8, activations=8, per_channel=True)
    q.load_state_dict(lin.state_dict())
    assert set(q.state_dict()) == {"weight", "bias"}
    x = torch.randn(2, 6)
    assert torch.allclose(q(x), lin(x), atol=0.05)  # int8 is close to fp32 ...
    assert not torch.equal(q(x), lin(x))  # ... but not the same


@pytest.fixture(scope="module")
def qat_run(tiny_teacher_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("qat") / "student"
    teacher = tiny_teacher_run / "teacher" / "model"
    assert main(["distill", "-r", "recipes/qat-kd.yaml", "-o", str(out), "--data-dir", str(tiny_teacher_run / "sst2"),
                 "--teacher", str(teacher), "--set", f"student.init={teacher}", "--set", "student.layers=first:2",
                 "--set", "train.epochs=1", "--set", "train.batch_size=32", "--set", "train.eval_batch_size=50"]) == 0
    return out


def test_qat_student_saves_int8_grid_weights(qat_run):
    from transformers import AutoModelForSequenceClassification

    config = json.loads((qat_run / "model" / "config.json").read_text())
    assert config["textdistill_quantization"]["weights_bits"] == 8
    weights = load_file(qat_run / "model" / "model.safetensors")
    linear = [k for k, v in weights.items() if k.endswith(".weight") and v.ndim == 2 and "embeddings" not in k]
    assert len(linear) >= 2 * 6 + 1  # q, k, v, o, ffn in/out per layer, classifier
    for k in linear:
        assert _on_grid(weights[k].numpy(), 8, per_channel=True), k
    model = AutoModelForSequenceClassification.from_pretrained(qat_run / "model")  # plain transformers loads it
    assert all(type(m) is torch.nn.Linear for m in model.modules() if isinstance(m, torch.nn.Linear))
    metrics = json.loads((qat_run / "metrics.json").read_text())
    assert "accuracy" in metrics["dev"] and "accuracy" in metrics["dev_fake_quant"]


def test_qat_dev_metrics_are_the_saved_models(qat_run, tiny_teacher_run, capsys, tmp_path):
    """metrics.json's dev figures are those `textdistill evaluate` gives on the saved folder (quantized weights,
    fp32 activations), not the fake-quantized student's during training."""
    capsys.readouterr()
    assert main(["evaluate", "--model", str(qat_run / "model"), "--task", "sst2",
                 "--data-dir", str(tiny_teacher_run / "sst2")]) == 0
    evaluated = json.loads(capsys.readouterr().out)["metrics"]
    assert evaluated == json.loads((qat_run / "metrics.json").read_text())["dev"]
    same_as_evaluate(qat_run, tiny_teacher_run / "sst2", tmp_path)  # the saved model's rows, not fake-quant's


def test_qat_student_int8_export_reproduces_its_weights(qat_run, tiny_teacher_run, tmp_path):
    import onnx
    from onnx import numpy_helper

    out = tmp_path / "onnx"
    assert main(["export", "--model", str(qat_run / "model"), "--output", str(out), "--int8", "dynamic",
                 "--task", "sst2", "--data-dir", str(tiny_teacher_run / "sst2")]) == 0
    info = json.loads((out / "export.json").read_text())
    assert info["int8_detail"]["per_channel"] is True and info["int8_detail"]["quantization_aware"]["weights_bits"] == 8
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(out / "model.onnx").graph.initializer}
    weights = load_file(qat_run / "model" / "model.safetensors")
    # the query projection of layer 0: ONNX stores it transposed (MatMul B) as int8 with one scale per column
    w = weights["bert.encoder.layer.0.attention.self.query.weight"].numpy().T
    expected = np.round(w / (np.abs(w).max(axis=0) / 127)).astype(np.int64)
    int8 = [v for v in inits.values() if v.dtype == np.int8 and v.shape == w.shape]
    assert int8 and any(np.array_equal(v.astype(np.int64), expected) for v in int8)


def test_qat_bad_input(tmp_path, tiny_teacher_run, capsys):
    out = tmp_path / "out"
    teacher = tiny_teacher_run / "teacher" / "model"
    base = ["distill", "-r", "recipes/qat-kd.yaml", "-o", str(out), "--data-dir", str(tiny_teacher_run / "sst2"),
            "--teacher", str(teacher), "--set", f"student.init={teacher}"]
    fails_one_line([*base, "--set", "student.quantize.weights=4"], capsys, "student.quantize: 4-bit weights with int8 "
                   "activations", out)
    fails_one_line([*base, "--set", "student.arch=bilstm", "--set", "terms=[{name: kd, loss: kd_kl}]"], capsys,
                   "student.quantize: only for transformer students", out)
    fails_one_line([*base, "--set", "student.quantize.weights=3"], capsys, "student.quantize.weights", out)


def test_qat_student_exports_in_fp32_and_refuses_an_explicit_per_channel_static(qat_run, tiny_teacher_run, tmp_path,
                                                                                 capsys):
    data = ["--task", "sst2", "--data-dir", str(tiny_teacher_run / "sst2")]
    assert main(["export", "--model", str(qat_run / "model"), "--output", str(tmp_path / "fp32"), *data]) == 0
    assert json.loads((tmp_path / "fp32" / "export.json").read_text())["check"]["fp32"]["agreement"] == 1.0
    fails_one_line(["export", "--model", str(qat_run / "model"), "--output", str(tmp_path / "s"), "--int8", "static",
                    "--per-channel", *data], capsys, "--per-channel: only for --int8 dynamic", tmp_path / "s")
