"""The BiLSTM student: shapes, the siamese path, a few steps lower the loss, save -> load -> same logits,
distillation end to end, and terms it cannot serve refused."""
import json

import pytest
import torch

from textdistill.cli import main
from textdistill.models.bilstm import BiLSTMConfig, BiLSTMForSequenceClassification, build_bilstm

FAST = ["--set", "train.epochs=1", "--set", "train.batch_size=16", "--set", "train.eval_batch_size=50"]


def _model(tok, pair=False, **opts):
    torch.manual_seed(0)
    emb = torch.randn(tok.vocab_size, 12)
    return build_bilstm(tok, emb, num_labels=2, pair=pair, options={"hidden_size": 8, "mlp_hidden": 16, **opts},
                        id2label={0: "0", 1: "1"}), emb


def test_shapes_embeddings_and_padding_invariance(minilm_tokenizer):
    model, emb = _model(minilm_tokenizer)
    assert torch.equal(model.embeddings.weight[: emb.shape[0]], emb)  # initialised from the teacher's matrix
    model.eval()
    batch = minilm_tokenizer(["a good film", "a dull , lifeless and long story"], padding=True, return_tensors="pt")
    logits = model(**batch).logits
    assert logits.shape == (2, 2)
    alone = model(**minilm_tokenizer(["a good film"], return_tensors="pt")).logits
    torch.testing.assert_close(logits[0], alone[0], rtol=1e-5, atol=1e-6)  # padding and [CLS]/[SEP] do not matter
    last, _ = _model(minilm_tokenizer, pool="last")
    assert last.eval()(**batch).logits.shape == (2, 2)


def test_siamese_pairs_encode_each_sentence_alone(minilm_tokenizer):
    model, _ = _model(minilm_tokenizer, pair=True)
    model.eval()
    pairs = minilm_tokenizer(["the cat sat", "a dog"], ["a cat was sitting", "the dog barks loudly"], padding=True,
                             return_tensors="pt")
    assert model(**pairs).logits.shape == (2, 2)
    a = minilm_tokenizer(["the cat sat"], return_tensors="pt")
    b = minilm_tokenizer(["a cat was sitting"], return_tensors="pt")
    keep = lambda x: torch.ones_like(x["input_ids"], dtype=torch.bool) & ~torch.isin(  # noqa: E731
        x["input_ids"], torch.tensor(minilm_tokenizer.all_special_ids))
    h1, h2 = model.encode(a["input_ids"], keep(a)), model.encode(b["input_ids"], keep(b))
    expected = model.classifier(torch.cat([h1, h2, h1 * h2, (h1 - h2).abs()], -1))
    torch.testing.assert_close(model(**pairs).logits[:1], expected, rtol=1e-5, atol=1e-6)
    swapped = minilm_tokenizer(["a cat was sitting"], ["the cat sat"], return_tensors="pt")
    assert not torch.allclose(model(**swapped).logits, expected)  # [h1, h2, ...] is ordered


def test_a_few_steps_lower_the_loss_and_save_load_keeps_logits(minilm_tokenizer, tmp_path):
    from transformers import AutoModelForSequenceClassification

    import textdistill.models  # noqa: F401 - registers the model type

    model, _ = _model(minilm_tokenizer)
    texts = ["great fun", "a wonderful film", "truly moving", "awful mess", "boring and dull", "a terrible bore"]
    batch = minilm_tokenizer(texts, padding=True, return_tensors="pt")
    y = torch.tensor([1, 1, 1, 0, 0, 0])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = model(**batch, labels=y).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    model.eval()
    model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").is_file() and not list((tmp_path / "m").glob("*.bin"))
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "m").eval()
    assert isinstance(loaded, BiLSTMForSequenceClassification) and isinstance(loaded.config, BiLSTMConfig)
    torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits)


def test_distill_and_evaluate_a_bilstm(tiny_teacher_run, tmp_path, capsys):
    d = tiny_teacher_run
    out = tmp_path / "b"
    base = ["distill", "-r", "recipes/bilstm.yaml", "--teacher", str(d / "teacher" / "model"), "--data-dir",
            str(d / "sst2"), "--set", "student.options.hidden_size=16", "--set", "student.options.mlp_hidden=16", *FAST]
    assert main([*base, "-o", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["student_layers"] == 0 and set(m["history"][0]["loss"]) == {"mse"}
    capsys.readouterr()
    assert main(["evaluate", "--model", str(out / "model"), "--task", "sst2", "--data-dir", str(d / "sst2")]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"] == m["dev"]
    for extra, needle in ((["--set", "terms=[{name: pt, tap: cls, map: pkd-skip, loss: pkd_mse}]"],
                           "terms[0] (pt).tap: a BiLSTM student has no layers"),
                          (["--set", "student.options.pool=mean"], "student.options.pool: 'max' or 'last'"),
                          (["--set", "student.options.width=3"], "student.options.width: unknown BiLSTM option"),
                          (["--set", "student.options.embedding_dim=50"],
                           "student.options.embedding_dim: 50, but embedding: teacher copies the teacher's")):
        assert main([*base, "-o", str(tmp_path / "bad"), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, err
        assert not (tmp_path / "bad").exists() and not (tmp_path / ".bad.partial").exists()


@pytest.mark.parametrize("pair,pool", [(False, "max"), (True, "max"), (True, "last")])
def test_onnx_export_matches_pytorch(minilm_tokenizer, tmp_path, pair, pool):
    """Single sentences and the siamese pair path, dynamic batch and length: ONNX Runtime gives PyTorch's logits."""
    import numpy as np
    import onnxruntime as ort

    from textdistill.models.export import export_onnx

    model, _ = _model(minilm_tokenizer, pair=pair, pool=pool)
    model.eval()
    names = export_onnx(model, minilm_tokenizer, tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    first = ["the cat sat", "a dull , lifeless and long story about nothing at all", "good"]
    second = ["a cat was sitting", "the dog barks", "bad , really bad , from the first scene to the last"]
    for rows in (1, 3):
        enc = minilm_tokenizer(first[:rows], second[:rows] if pair else None, padding=True, return_tensors="pt")
        with torch.no_grad():
            expected = model(**enc).logits.numpy()
        feeds = {i.name: enc[i.name].numpy().astype(np.int64) for i in sess.get_inputs()}  # (unused inputs dropped)
        assert set(feeds) <= set(names)
        got = sess.run(["logits"], feeds)[0]
        np.testing.assert_allclose(got, expected, atol=1e-5)
