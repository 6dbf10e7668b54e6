import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_GLUE = ROOT.parent / "shared" / "data" / "glue"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def minilm_tokenizer():
    from textdistill.models.loading import load_tokenizer

    return load_tokenizer("minilm-l6")


def _save_tiny(folder: Path, model, tokenizer):
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory, minilm_tokenizer):
    """A 4-layer, 32-wide BERT classifier (random weights) with the MiniLM (BERT uncased) tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=minilm_tokenizer.vocab_size, hidden_size=32, num_hidden_layers=4,
                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=128, num_labels=2)
    return _save_tiny(tmp_path_factory.mktemp("tiny_bert"), BertForSequenceClassification(cfg), minilm_tokenizer)


@pytest.fixture
def sst2_tiny_dir(tmp_path):
    """200 train and 100 dev rows of the shipped SST-2 sample."""
    src = ROOT / "data" / "sst2"
    d = tmp_path / "sst2"
    d.mkdir()
    for name, n in (("train.tsv", 200), ("dev.tsv", 100)):
        lines = (src / name).read_text().splitlines()
        (d / name).write_text("\n".join(lines[: n + 1]) + "\n")
    return d


def shared_glue():
    if not SHARED_GLUE.is_dir():
        pytest.skip(f"{SHARED_GLUE} is absent (the real GLUE data lives beside the repo in ../shared)")
    return SHARED_GLUE
