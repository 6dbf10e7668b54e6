"""Student construction copies exactly the chosen teacher layers (BERT and MPNet)."""
import pytest
import torch
from transformers import (BertConfig, BertForSequenceClassification, DistilBertConfig,
                          DistilBertForSequenceClassification, MPNetConfig, MPNetForSequenceClassification)

from textdistill import TextDistillError
from textdistill.models.student import build_student, find_layers, parse_layer_spec


def _bert(n=6):
    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=n,
                                                    num_attention_heads=2, intermediate_size=32, num_labels=3))


def _mpnet(n=6):
    torch.manual_seed(0)
    return MPNetForSequenceClassification(MPNetConfig(vocab_size=100, hidden_size=16, num_hidden_layers=n,
                                                      num_attention_heads=2, intermediate_size=32, num_labels=2))


@pytest.mark.parametrize("spec,n,expected", [
    ("first:3", 12, [1, 2, 3]), ("every:4", 12, [4, 8, 12]), ("every:2", 6, [2, 4, 6]), ("last:2", 6, [5, 6]),
    ("all", 4, [1, 2, 3, 4]), ("1, 5, 9", 12, [1, 5, 9]), ([2, 3], 6, [2, 3]), (3, 6, [1, 2, 3]),
])
def test_parse_layer_spec(spec, n, expected):
    assert parse_layer_spec(spec, n) == expected


@pytest.mark.parametrize("spec,msg", [
    ("first:8", "deeper than its teacher"), ([0, 2], "out of range 1..6"), ([1, 7], "out of range"),
    ([3, 2], "strictly increasing"), ("middle:2", "expected first:k"), ("every:7", "only 6 layers"),
])
def test_bad_layer_spec(spec, msg):
    with pytest.raises(TextDistillError, match=msg):
        parse_layer_spec(spec, 6)


@pytest.mark.parametrize("make,prefix", [(_bert, "bert.encoder.layer"), (_mpnet, "mpnet.encoder.layer")])
def test_student_copies_exactly_the_chosen_layers(make, prefix):
    teacher = make(6)
    student, mapping = build_student(teacher, [2, 4, 6])
    assert mapping == {1: 2, 2: 4, 3: 6}
    assert student.config.num_hidden_layers == 3 and teacher.config.num_hidden_layers == 6
    t_sd, s_sd = teacher.state_dict(), student.state_dict()
    for key, value in s_sd.items():
        if key.startswith(prefix + "."):
            idx, rest = key[len(prefix) + 1:].split(".", 1)
            source = f"{prefix}.{mapping[int(idx) + 1] - 1}.{rest}"
        else:
            source = key  # embeddings, pooler, head, MPNet's relative attention bias
        assert torch.equal(value, t_sd[source]), key
    # a layer that was not kept really differs from the one placed there
    assert not torch.equal(s_sd[f"{prefix}.0.attention.self.query.weight" if make is _bert
                                else f"{prefix}.0.attention.attn.q.weight"],
                           t_sd[f"{prefix}.0.attention.self.query.weight" if make is _bert
                                else f"{prefix}.0.attention.attn.q.weight"])
    # the student is an independent copy
    with torch.no_grad():
        next(student.parameters()).add_(1.0)
    assert not torch.equal(next(student.parameters()), next(teacher.parameters()))


def test_student_of_all_layers_gives_the_teachers_logits():
    teacher = _bert(4).eval()
    student, _ = build_student(teacher, "all")
    x = torch.randint(0, 100, (2, 7))
    assert torch.allclose(teacher(input_ids=x).logits, student.eval()(input_ids=x).logits)


def test_distilbert_layers_are_found():
    model = DistilBertForSequenceClassification(DistilBertConfig(vocab_size=100, dim=16, n_layers=4, n_heads=2,
                                                                 hidden_dim=32))
    assert find_layers(model)[0] == "distilbert.transformer.layer"
    student, mapping = build_student(model, "every:2")
    assert student.config.n_layers == 2 and mapping == {1: 2, 2: 4}


def test_unknown_architecture_fails_clearly():
    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = BertConfig(num_hidden_layers=2)
            self.blocks = torch.nn.ModuleList([torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)])

    with pytest.raises(TextDistillError, match="cannot find the transformer layers"):
        build_student(Odd(), "first:1")
