"""Model loading: aliases, folders, and heads that do not fit the task."""
import pytest
from transformers import BertConfig, BertForSequenceClassification

from textdistill import TextDistillError
from textdistill.models.loading import load_model, resolve_model_path


def test_aliases_and_paths(tmp_path):
    assert resolve_model_path("minilm-l6").endswith("model")
    assert resolve_model_path("bert-base-uncased") == "bert-base-uncased"  # a hub id is passed on
    with pytest.raises(TextDistillError, match="model folder not found"):
        resolve_model_path(str(tmp_path / "nope"))
    with pytest.raises(TextDistillError, match="not a model folder"):
        resolve_model_path(str(tmp_path))


def test_heads_that_do_not_fit(tmp_path):
    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                     id2label={0: "entailment", 1: "not_entailment"}, label2id={"entailment": 0, "not_entailment": 1})
    BertForSequenceClassification(cfg).save_pretrained(tmp_path / "rte")
    model, new = load_model(str(tmp_path / "rte"), 2, ("entailment", "not_entailment"))
    assert not new and model.config.id2label == {0: "entailment", 1: "not_entailment"}
    with pytest.raises(TextDistillError, match=r"labels are \['entailment', 'not_entailment'\], the task's are "
                                               r"\['not_entailment', 'entailment'\]"):
        load_model(str(tmp_path / "rte"), 2, ("not_entailment", "entailment"))
    with pytest.raises(TextDistillError, match="head has 2 outputs, the task needs 3"):
        load_model(str(tmp_path / "rte"), 3, ("contradiction", "entailment", "neutral"))
    # as a student's starting point, a head of another size is replaced by a new one
    model, new = load_model(str(tmp_path / "rte"), 3, ("contradiction", "entailment", "neutral"), new_head_ok=True)
    assert new and model.classifier.out_features == 3
    # a bare encoder has no head at all
    _, new = load_model("minilm-l6", 2, ("0", "1"))
    assert new
