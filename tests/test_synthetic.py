"""Data-free transfer rows synthesised from a teacher alone (textdistill.data.transfer.synthetic)."""
import pytest

from textdistill import TextDistillError
from textdistill.data.tasks import get_task
from textdistill.data.transfer.synthetic import synthesize, whole_word_ids
from textdistill.models.loading import load_tokenizer
from textdistill.schemes.teachers import load_teacher


@pytest.fixture(scope="module")
def teacher(tiny_teacher_run):
    path = str(tiny_teacher_run / "teacher" / "model")
    return load_teacher(path, get_task("sst2")), load_tokenizer(path)


@pytest.fixture(scope="module")
def responsive(minilm_tokenizer):
    """A tiny BERT classifier whose logits move with its input. The fine-tuned tiny teacher barely does
    (it learnt the majority class: the same logits to 3 decimals on any text), so it cannot show the
    confidence rising; wide random weights (init std 0.2) give a classifier that does, without training."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=minilm_tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64, num_labels=2, initializer_range=0.2)
    return BertForSequenceClassification(cfg), minilm_tokenizer


@pytest.fixture(scope="module")
def run(teacher):
    model, tok = teacher
    return synthesize(model, tok, num_labels=2, per_class=6, length=8, steps=20, batch_size=4, seed=0)


def test_loss_decreases(run, responsive):
    stats = run[3]
    assert all(stats["loss_last"][c] < stats["loss_first"][c] for c in range(2)), stats
    stats = synthesize(*responsive, num_labels=2, per_class=4, length=8, steps=20)[3]
    assert all(stats["loss_last"][c] < stats["loss_first"][c] for c in range(2)), stats
    for key in ("confidence_initial", "confidence_embeddings", "confidence_decoded", "decoded_agreement"):
        assert len(stats[key]) == 2 and all(0.0 <= v <= 1.0 for v in stats[key])
    assert stats["seconds"] > 0


def test_more_steps_more_confidence_on_the_embeddings(responsive):
    conf = {steps: synthesize(*responsive, num_labels=2, per_class=4, length=8, steps=steps, seed=1)[3]
            for steps in (1, 30)}
    for c in range(2):
        assert conf[30]["confidence_embeddings"][c] > conf[1]["confidence_embeddings"][c] + 0.05, conf
        assert conf[30]["confidence_embeddings"][c] > conf[30]["confidence_initial"][c], conf
        assert conf[1]["confidence_initial"][c] == pytest.approx(conf[30]["confidence_initial"][c])  # same start


def test_loss_decreases_with_the_settings_runs_use(responsive):
    """transfer.synthetic's defaults (SyntheticCfg: straight-through decoding, no snap term, lr 0.3), not the
    function's own."""
    from textdistill.recipe import SyntheticCfg

    c = SyntheticCfg()
    stats = synthesize(*responsive, num_labels=2, per_class=4, length=8, steps=30, lr=c.lr, snap=c.snap,
                       straight_through=c.straight_through, diversity=c.diversity)[3]
    assert c.straight_through and c.snap == 0
    assert all(stats["loss_last"][k] < stats["loss_first"][k] for k in range(2)), stats


def test_straight_through_scores_the_decoded_texts(responsive):
    stats = synthesize(*responsive, num_labels=2, per_class=4, length=8, steps=30, snap=0.0, straight_through=True)[3]
    for c in range(2):
        # the teacher saw exactly the decoded tokens, so decoding loses nothing
        assert stats["confidence_decoded"][c] == pytest.approx(stats["confidence_embeddings"][c], abs=1e-4)
        assert stats["confidence_decoded"][c] > stats["confidence_initial"][c]


def test_count_balance_and_whole_word_tokens(run, teacher):
    _, tok = teacher
    texts, _, targets, _ = run
    assert len(texts) == len(targets) == 2 * 6
    assert targets == [0] * 6 + [1] * 6
    words = set(tok.convert_ids_to_tokens(whole_word_ids(tok)))
    assert not words & set(tok.all_special_tokens)
    for text in texts:
        tokens = tok.tokenize(text)
        assert len(text.split()) == len(tokens) == 8, text
        for t in tokens:
            assert t in words and t.isalpha() and not t.startswith(("##", "[")), t


def test_seeded(teacher):
    model, tok = teacher
    kw = dict(num_labels=2, per_class=3, length=6, steps=5)
    a, b, c = (synthesize(model, tok, seed=s, **kw)[0] for s in (7, 7, 8))
    assert a == b
    assert a != c


@pytest.mark.parametrize("bad, name", [(dict(per_class=0), "per_class"), (dict(length=0), "length"),
                                       (dict(steps=0), "steps"), (dict(batch_size=0), "batch_size"),
                                       (dict(num_labels=1), "needs a classifier"), (dict(num_labels=3), "num_labels"),
                                       (dict(length=500), "length")])
def test_bad_arguments(teacher, bad, name):
    model, tok = teacher
    with pytest.raises(TextDistillError, match=name) as e:
        synthesize(model, tok, **(dict(num_labels=2, per_class=2) | bad))
    assert "\n" not in str(e.value)


def test_sentence_pairs_in_the_tokenizers_template(responsive):
    model, tok = responsive
    texts, texts_b, targets, stats = synthesize(model, tok, num_labels=2, per_class=4, length=5, steps=30,
                                                pairs=True, seed=3, snap=0.0, straight_through=True)
    assert len(texts) == len(texts_b) == len(targets) == 8 and targets == [0] * 4 + [1] * 4
    for a, b in zip(texts, texts_b):
        assert len(tok.tokenize(a)) == len(tok.tokenize(b)) == 5, (a, b)
        # re-encoded as a pair: [CLS] a [SEP] b [SEP], token types 0 then 1, as the teacher saw them
        enc = tok(a, b)
        assert enc["input_ids"][0] == tok.cls_token_id and enc["input_ids"].count(tok.sep_token_id) == 2
        assert enc["token_type_ids"] == [0] * 7 + [1] * 6
    for c in range(2):  # straight-through: the teacher scored the decoded pairs, token types included
        assert stats["confidence_decoded"][c] == pytest.approx(stats["confidence_embeddings"][c], abs=1e-4)
        assert stats["loss_last"][c] < stats["loss_first"][c]
    singles = synthesize(model, tok, num_labels=2, per_class=4, length=5, steps=30, seed=3, snap=0.0,
                         straight_through=True)
    assert singles[1] is None and all(len(tok.tokenize(a)) == 5 for a in singles[0])


def test_sentence_pairs_for_an_mpnet_teacher(minilm_tokenizer):
    """MPNet's template: <s> a </s></s> b </s>, no token types, positions offset by the padding index (34
    position embeddings, padding index 0: 33 tokens; the real all-mpnet-base-v2 reads 512 of its 514)."""
    import torch
    from transformers import MPNetConfig, MPNetForSequenceClassification, MPNetTokenizerFast

    b = minilm_tokenizer
    tok = MPNetTokenizerFast(vocab=b.get_vocab(), unk_token="[UNK]", pad_token="[PAD]", mask_token="[MASK]",
                             bos_token="[CLS]", eos_token="[SEP]", sep_token="[SEP]", cls_token="[CLS]")
    torch.manual_seed(0)
    cfg = MPNetConfig(vocab_size=b.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=34, num_labels=2, initializer_range=0.2,
                      pad_token_id=b.pad_token_id)
    model = MPNetForSequenceClassification(cfg)
    texts, texts_b, _, stats = synthesize(model, tok, num_labels=2, per_class=3, length=14, steps=20, pairs=True,
                                          snap=0.0, straight_through=True)
    for a, b_ in zip(texts, texts_b):
        ids = tok(a, b_)["input_ids"]
        assert len(ids) == 32 and ids[15:17] == [tok.sep_token_id] * 2 and "token_type_ids" not in tok(a, b_)
    for c in range(2):  # the teacher scored exactly these pairs (no token types to get wrong, sides in place)
        assert stats["confidence_decoded"][c] == pytest.approx(stats["confidence_embeddings"][c], abs=1e-4)
    with pytest.raises(TextDistillError, match="length: 2 x 15 words \\+ 4 special tokens exceeds the teacher's 33 "):
        synthesize(model, tok, num_labels=2, per_class=1, length=15, steps=1, pairs=True)


def test_a_tokenizer_without_whole_words_is_refused(teacher, monkeypatch):
    import textdistill.data.transfer.synthetic as synthetic

    model, tok = teacher
    monkeypatch.setattr(synthetic, "whole_word_ids", lambda tokenizer: [])  # as for a byte-level BPE vocabulary
    with pytest.raises(TextDistillError, match="no whole-word token that encodes to itself .*byte-level BPE") as e:
        synthetic.synthesize(model, tok, num_labels=2, per_class=1, length=4, steps=1)
    assert "\n" not in str(e.value)


def test_pairs_count_both_sides_and_the_specials_against_the_positions(teacher):
    model, tok = teacher  # 128 positions: 2 x 62 words + [CLS] + 2 [SEP] = 127 fits, 2 x 63 + 3 does not
    assert len(synthesize(model, tok, num_labels=2, per_class=1, length=62, steps=1, pairs=True)[0]) == 2
    with pytest.raises(TextDistillError, match="length: 2 x 63 words \\+ 3 special tokens exceeds the teacher's 128"):
        synthesize(model, tok, num_labels=2, per_class=1, length=63, steps=1, pairs=True)


def test_first_loss_against_the_teacher_on_the_start_words(responsive):
    """The objective before the first step, rebuilt from token ids: the start vectors are word embeddings drawn
    with the seed, so the loss is CE of the teacher on those words (input_ids, not inputs_embeds) plus diversity x
    the mean off-diagonal cosine of the examples' mean word vectors; snap's distance to the nearest word is 0
    there."""
    import torch
    import torch.nn.functional as F

    from textdistill.data.transfer.synthetic import _placeholders, _template

    model, tok = responsive
    model.eval()  # (synthesize sets it too: no dropout)
    words = torch.tensor(whole_word_ids(tok))
    enc, pos = _template(tok, _placeholders(tok, words.tolist()), 8, False)
    emb = model.get_input_embeddings().weight.detach()
    gen = torch.Generator().manual_seed(5)
    want = []
    for c in range(2):  # one batch of 4 per class, drawn in class order
        init = torch.randint(len(words), (4, 8), generator=gen)
        ids = torch.tensor(enc["input_ids"]).repeat(4, 1)
        ids[:, pos[0]] = words[init]
        with torch.no_grad():
            logits = model(input_ids=ids, token_type_ids=torch.tensor(enc["token_type_ids"]).repeat(4, 1)).logits
        pooled = F.normalize(emb[words[init]].mean(1), dim=-1)
        cos = (pooled @ pooled.T).sum() - pooled.pow(2).sum()  # off the diagonal
        want.append(F.cross_entropy(logits, torch.full((4,), c)).item() + 0.7 * cos.item() / 12)
    kw = dict(num_labels=2, per_class=4, length=8, steps=1, batch_size=4, seed=5, diversity=0.7)
    got = synthesize(model, tok, snap=0.0, **kw)[3]["loss_first"]
    assert got == pytest.approx(want, rel=1e-5)
    snapped = synthesize(model, tok, snap=0.3, **kw)[3]["loss_first"]
    assert snapped == pytest.approx(want, abs=1e-3)  # (cdist's rounding only)


def test_snap_gap_by_hand():
    """The snap term's distance against a plain loop: for every free vector, the smallest Euclidean distance to a
    word vector, averaged, over scale * sqrt(d); 0 for vectors that are words."""
    import numpy as np
    import torch

    from textdistill.data.transfer.synthetic import snap_gap

    rng = np.random.default_rng(0)
    W, X = rng.normal(size=(50, 8)), rng.normal(size=(2, 3, 8))
    want = np.mean([min(np.sqrt(((x - w) ** 2).sum()) for w in W) for x in X.reshape(-1, 8)]) / (0.7 * np.sqrt(8))
    assert snap_gap(torch.tensor(X), torch.tensor(W), 0.7).item() == pytest.approx(want, rel=1e-9)
    assert snap_gap(torch.tensor(W[[3, 7, 7]]).reshape(1, 3, 8), torch.tensor(W), 0.7).item() == pytest.approx(0, abs=1e-6)

