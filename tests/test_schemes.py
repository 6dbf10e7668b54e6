"""Schemes beyond one frozen teacher: online mutual learning (DML), several teachers, a teacher with
another tokenizer, born-again generations; each against an independent computation or a known equality."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import fails_one_line, same_as_evaluate
from textdistill.cli import main
from textdistill.evaluate import model_inputs
from textdistill.recipe import load_recipe
from textdistill.schemes import SCHEMES
from textdistill.train import load_split, resolve_task

FAST = ["--set", "train.epochs=1", "--set", "train.batch_size=16", "--set", "train.eval_batch_size=50"]


def _scheme(recipe):
    task = resolve_task(recipe)
    scheme = SCHEMES[recipe.scheme](recipe, task, load_split(task, recipe, "train"), load_split(task, recipe, "dev"))
    scheme.setup(lambda: torch.manual_seed(0))
    return scheme


def _batch(scheme, n=8):
    from textdistill.data.batching import eval_loader

    return next(iter(eval_loader(scheme.train_set, scheme.tokenizer, n)))




# ---------------------------------------------------------------- online (deep mutual learning)

def test_dml_loss_of_three_peers_against_an_independent_computation(tiny_teacher_run, narrow_bert):
    d = tiny_teacher_run
    t = str(d / "teacher" / "model")  # a fine-tuned model as two of the peers: predictions far from uniform
    peers = [{"name": "a", "init": t}, {"name": "b", "init": t, "layers": "first:2"},
             {"name": "c", "init": str(narrow_bert)}]
    recipe = load_recipe("recipes/dml.yaml", [("data.dir", str(d / "sst2")), ("peers", peers), ("hard_weight", 0.7),
                                              ("terms.dml.args.temperature", 2.0), ("terms.dml.weight", 0.4)])
    scheme = _scheme(recipe)
    for m in scheme.peers.values():
        m.eval()  # no dropout: the same logits in both computations
    batch = _batch(scheme)
    parts = scheme.loss_parts(batch)
    assert set(parts) == {f"{p}@{k}" for k in "abc" for p in ("task", "dml")}
    z = {k: m(**model_inputs(batch)).logits.detach() for k, m in scheme.peers.items()}
    T = 2.0
    for k in "abc":
        p = torch.stack([torch.softmax(z[j] / T, -1) for j in "abc" if j != k]).mean(0)  # others' mean distribution
        q = torch.softmax(z[k] / T, -1)
        kl = (p * (p.log() - q.log())).sum(-1).mean() * T * T
        assert kl > 1e-4
        ce = F.cross_entropy(z[k], batch["labels"])
        assert parts[f"task@{k}"][0] == 0.7 and parts[f"dml@{k}"][0] == 0.4
        assert parts[f"task@{k}"][1].item() == pytest.approx(ce.item(), rel=1e-5)
        assert parts[f"dml@{k}"][1].item() == pytest.approx(kl.item(), rel=1e-3)  # float32 KL of close distributions
    # each peer's loss reaches only that peer
    parts["dml@a"][1].backward()
    assert all(p.grad is None for p in scheme.peers["b"].parameters())
    assert any(p.grad is not None for p in scheme.peers["a"].parameters())


def test_peer_target_is_the_others_mean_distribution_or_mean_logits():
    """What a peer learns from, by numpy: for KL-type losses logits whose softmax at T is the mean of the other
    peers' softmax at T; for mse (regression) the mean of their logits."""
    import numpy as np

    from textdistill.schemes.online import peer_target

    g = torch.Generator().manual_seed(3)
    others = [torch.randn(5, 3, generator=g) * 3 for _ in range(3)]
    T = 2.5

    def softmax(x):
        e = np.exp(x - x.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)
    want = np.mean([softmax(o.double().numpy() / T) for o in others], 0)
    for loss in ("kd_kl", "soft_ce"):
        got = softmax(peer_target(others, loss, T).double().numpy() / T)
        np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(peer_target(others, "mse").numpy(), np.mean([o.numpy() for o in others], 0), rtol=1e-6)
    assert not peer_target([others[0].requires_grad_()], "mse").requires_grad  # (the others are fixed teachers)


def test_dml_end_to_end_saves_every_peer(tiny_teacher_run, tiny_bert, tmp_path):
    from transformers import AutoModelForSequenceClassification

    d = tiny_teacher_run
    out = tmp_path / "dml"
    peers = f"[{{name: big, init: {tiny_bert}}}, {{name: small, init: {tiny_bert}, layers: 'first:2'}}]"
    assert main(["distill", "-r", "recipes/dml.yaml", "-o", str(out), "--data-dir", str(d / "sst2"),
                 "--set", f"peers={peers}", *FAST]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["scheme"] == "online" and set(m["peer_models"]) == {"big", "small"}
    assert m["dev"] == m["peers"]["small"] and m["student_layers"] == 2
    assert set(m["history"][0]["loss"]) == {"task@big", "task@small", "dml@big", "dml@small"}
    for name, layers in (("big", 4), ("small", 2)):
        info = json.loads((out / name / "metrics.json").read_text())
        assert info["dev"] == m["peers"][name] and info["layers"] == layers
        model = AutoModelForSequenceClassification.from_pretrained(out / name / "model")
        assert model.config.num_hidden_layers == layers
        rows = same_as_evaluate(out / name, d / "sst2", tmp_path)  # each peer's own dev predictions
        assert np.mean([r["prediction"] == r["label"] for r in rows]) == pytest.approx(info["dev"]["accuracy"])
    assert not (out / "dev_predictions.jsonl").exists()  # (no model at the top: the peers are the models)


def test_online_bad_input(tiny_teacher_run, tiny_bert, tmp_path, capsys):
    d = tiny_teacher_run
    out = tmp_path / "o"
    base = ["distill", "-r", "recipes/dml.yaml", "-o", str(out), "--data-dir", str(d / "sst2")]
    fails_one_line(base + ["--set", f"peers=[{{init: {tiny_bert}}}]"], capsys, "peers: online (mutual) learning needs at "
           "least 2 peers", out)
    fails_one_line(base + ["--set", f"peers=[{{init: {tiny_bert}}}, {{init: {tiny_bert}}}]", "--teacher",
                   str(d / "teacher" / "model")], capsys, "teacher: not used by scheme 'online'", out)
    fails_one_line(base + ["--set", f"peers=[{{name: x, init: {tiny_bert}}}, {{name: x, init: {tiny_bert}}}]"], capsys,
           "peers[1].name: duplicate peer name 'x'", out)
    fails_one_line(base + ["--set", f"peers=[{{init: {tiny_bert}}}, {{init: {tiny_bert}}}]", "--set",
                   "terms=[{name: h, tap: cls, map: pkd-skip, loss: pkd_mse}]"], capsys,
           "terms[0] (h).tap: online learning compares the peers' logits only", out)
    fails_one_line(base + ["--set", f"peers=[{{init: {tiny_bert}}}, {{init: {tiny_bert}}}]", "--set", "generations=2"],
                   capsys, "generations: born-again runs need a scheme that chains generations (offline); this "
                   "recipe has scheme online", out)


# ---------------------------------------------------------------- several teachers

def _kd(d, tiny_bert, out, *extra):
    return main(["distill", "-r", "recipes/kd.yaml", "-o", str(out), "--data-dir", str(d / "sst2"),
                 "--set", f"student.init={tiny_bert}", "--set", "student.layers=first:2", *FAST, *extra])


@pytest.mark.parametrize("combine", ["average", "per-teacher"])
def test_identical_teachers_give_the_single_teacher_run(tiny_teacher_run, tiny_bert, tmp_path, combine):
    d = tiny_teacher_run
    t = str(d / "teacher" / "model")
    assert _kd(d, tiny_bert, tmp_path / "one", "--teacher", t) == 0
    assert _kd(d, tiny_bert, tmp_path / "two", "--set", "teacher=null", "--set", f"teachers=[{{model: {t}, weight: 2}}, {{model: {t}}}]",
               "--set", f"combine={combine}") == 0
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert [x["name"] for x in two["teachers"]] == ["t1", "t2"] and two["combine"] == combine
    kd_two = {k: v for k, v in two["history"][0]["loss"].items() if k.startswith("kd")}
    assert set(kd_two) == ({"kd"} if combine == "average" else {"kd@t1", "kd@t2"})
    for v in kd_two.values():  # each teacher's term equals the single teacher's (weights: below)
        assert v == pytest.approx(one["history"][0]["loss"]["kd"], rel=1e-4)
    if combine == "per-teacher":  # weights 2:1 -> shares 2/3 and 1/3 of the term's weight
        assert two["terms"][0].startswith("kd@t1") and two["terms"][0].endswith(f"x {0.5 * 2 / 3}")
    from safetensors.torch import load_file

    a = load_file(tmp_path / "one" / "model" / "model.safetensors")
    b = load_file(tmp_path / "two" / "model" / "model.safetensors")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5)


def test_average_of_teachers_is_the_weighted_mean_of_their_logits(tiny_teacher_run, tiny_bert, tmp_path):
    d = tiny_teacher_run
    t1, t2 = str(d / "teacher" / "model"), str(tiny_bert)  # tiny_bert has a (random) head: a second, other teacher
    recipe = load_recipe("recipes/kd.yaml", [("data.dir", str(d / "sst2")), ("student.init", str(tiny_bert)),
                                             ("student.layers", "first:2"), ("teacher", None),
                                             ("teachers", [{"model": t1, "weight": 3}, {"model": t2, "weight": 1}])])
    scheme = _scheme(recipe)
    batch = _batch(scheme)
    inputs = model_inputs(batch)
    outs = {t.name: t.source(inputs, batch) for t in scheme.teachers}
    mixed = scheme.mixer(outs)
    expected = 0.75 * outs["t1"].logits + 0.25 * outs["t2"].logits
    torch.testing.assert_close(mixed.logits, expected)
    assert not torch.allclose(outs["t1"].logits, outs["t2"].logits)


def test_several_teachers_bad_input(tiny_teacher_run, tiny_bert, tmp_path, capsys):
    d = tiny_teacher_run
    t = str(d / "teacher" / "model")
    out = tmp_path / "m"
    fails_one_line(["distill", "-r", "recipes/kd.yaml", "-o", str(out), "--data-dir", str(d / "sst2"), "--set", "teacher=null",
            "--set", f"teachers=[{{model: {t}, weight: -1}}, {{model: {t}}}]"], capsys,
           "teachers[0].weight: -1.0 is negative", out)
    fails_one_line(["distill", "-r", "recipes/kd.yaml", "-o", str(out), "--data-dir", str(d / "sst2"), "--set", "teacher=null",
            "--set", f"teachers=[{{model: {t}, weight: 0}}, {{model: {t}, weight: 0}}]"], capsys,
           "teachers: the weights sum to 0", out)
    fails_one_line(["distill", "-r", "recipes/kd.yaml", "-o", str(out), "--data-dir", str(d / "sst2"), "--teacher", t,
            "--set", f"teachers=[{{model: {t}}}]"], capsys, "teacher, teachers: give one teacher or a list", out)
    two = f"teachers=[{{model: {t}}}, {{model: {t}}}]"
    null = ["--set", "teacher=null"]
    fails_one_line(["distill", "-r", "recipes/pkd-skip.yaml", "-o", str(out), "--data-dir", str(d / "sst2"),
            *null, "--set", two], capsys, "terms[1] (pt).teacher: with several teachers an intermediate term names", out)
    fails_one_line(["distill", "-r", "recipes/pkd-skip.yaml", "-o", str(out), "--data-dir", str(d / "sst2"),
            *null, "--set", two, "--set", "terms.pt.teacher=t9"], capsys, "terms[1] (pt).teacher: no teacher named 't9'", out)


def test_several_teachers_from_their_own_caches(tiny_teacher_run, tiny_bert, tmp_path):
    """Each teacher has its cache at <teacher_cache.dir>/<name>; the run from the caches trains as the live run
    does; an intermediate term named for t2 reads t2's hidden states, not t1's."""
    d = tiny_teacher_run
    t1, t2 = str(d / "teacher" / "model"), str(tiny_bert)  # two different teachers of one width
    teachers = f"teachers=[{{model: {t1}}}, {{model: {t2}}}]"
    args = ["-r", "recipes/pkd-skip.yaml", "--set", "teacher=null", "--set", teachers, "--set", "terms.pt.teacher=t2"]
    live, cached, cache = tmp_path / "live", tmp_path / "cached", tmp_path / "cache"
    assert _kd(d, tiny_bert, live, *args) == 0
    assert _kd(d, tiny_bert, cached, *args, "--set", f"teacher_cache.dir={cache}") == 0
    assert sorted(p.name for p in cache.iterdir()) == ["t1", "t2"]
    assert "cls of layers [2]" in (cached / "train.log").read_text()  # (t2's cache holds what the term reads)
    for name in ("t1", "t2"):
        assert (cache / name / "cache.json").is_file()
    a, b = (json.loads((x / "metrics.json").read_text()) for x in (live, cached))
    for k, v in a["history"][0]["loss"].items():
        assert b["history"][0]["loss"][k] == pytest.approx(v, rel=1e-4), k
    recipe = load_recipe("recipes/pkd-skip.yaml", [("data.dir", str(d / "sst2")), ("student.init", t2),
                                                   ("student.layers", "first:2"), ("teacher", None),
                                                   ("teachers", [{"model": t1}, {"model": t2}]),
                                                   ("terms.pt.teacher", "t2")])
    scheme = _scheme(recipe)
    assert scheme.reads == [None, "t2"]  # (the logit term reads the teachers' average)
    scheme.student.eval()  # (no dropout: the student's two forwards below agree)
    batch = _batch(scheme)
    inputs = model_inputs(batch)
    s_out = scheme.student(**inputs, output_hidden_states=True)
    outs = {t.name: t.source(inputs, batch) for t in scheme.teachers}
    pt = scheme.terms[1]
    got = scheme.loss_parts(batch)["pt"][1]
    torch.testing.assert_close(got, pt(s_out, outs["t2"], inputs["attention_mask"]))
    assert not torch.allclose(got, pt(s_out, outs["t1"], inputs["attention_mask"]))


def test_the_teachers_check_leaves_the_random_numbers_as_they_were(tiny_teacher_run, narrow_bert):
    """_check_teachers builds the terms (projections drawn from torch's RNG) to check them: the run's random
    numbers after it are those before it, so a run draws the same student, projections and batches as before."""
    t = str(tiny_teacher_run / "teacher" / "model")  # 32 wide; the narrow student 16: the [CLS] term projects
    recipe = load_recipe("recipes/pkd-skip.yaml", [("data.dir", str(tiny_teacher_run / "sst2")),
                                                   ("student.init", str(narrow_bert)), ("student.layers", "all"),
                                                   ("teacher", t)])
    scheme = _scheme(recipe)
    assert len(list(scheme.terms[1].parameters())) > 0  # (building the terms draws random numbers)
    torch.manual_seed(3)
    before = torch.get_rng_state()
    scheme._check_teachers()
    torch.testing.assert_close(torch.get_rng_state(), before)


def test_each_teachers_tokenizer_is_loaded_once(tiny_teacher_run, tiny_bert, other_vocab_teacher, monkeypatch):
    """The teachers' check loads each teacher's tokenizer; the teacher then uses that one (a 12-layer teacher's
    tokenizer is not read from disk twice)."""
    from transformers import AutoTokenizer

    loads = []
    real = AutoTokenizer.from_pretrained.__func__

    def counted(cls, path, *a, **k):
        loads.append(str(path))
        return real(cls, path, *a, **k)

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", classmethod(counted))
    t = str(tiny_teacher_run / "teacher" / "model")
    scheme = _scheme(load_recipe("recipes/kd.yaml", [
        ("data.dir", str(tiny_teacher_run / "sst2")), ("student.init", str(tiny_bert)), ("student.layers", "first:2"),
        ("teacher", None), ("teachers", [{"model": t, "name": "a"}, {"model": str(other_vocab_teacher), "name": "b"}])]))
    assert loads.count(t) == 1 and loads.count(str(other_vocab_teacher)) == 1
    assert [x.own_tokens for x in scheme.teachers] == [False, True]


def test_several_teachers_refused_before_a_cache_is_built(tiny_teacher_run, narrow_bert, other_vocab_teacher,
                                                          tmp_path, capsys):
    """A term that cannot read its teacher (another width without a projection, another tokenizer) is refused
    before any teacher's cache is written."""
    d = tiny_teacher_run
    t = str(d / "teacher" / "model")
    out, cache = tmp_path / "m", tmp_path / "cache"
    base = ["distill", "-r", "recipes/pkd-skip.yaml", "-o", str(out), "--data-dir", str(d / "sst2"),
            "--set", "teacher=null", "--set", f"teacher_cache.dir={cache}", "--set", f"student.init={t}",
            "--set", "student.layers=first:2"]
    fails_one_line(base + ["--set", f"teachers=[{{model: {t}}}, {{model: {narrow_bert}, name: narrow}}]",
                           "--set", "terms.pt.teacher=narrow", "--set", "terms.pt.proj=none"], capsys,
                   "terms[1] (pt).proj: ", out)
    assert not cache.exists()
    fails_one_line(base + ["--set", f"teachers=[{{model: {t}}}, {{model: {other_vocab_teacher}, name: other}}]",
                           "--set", "terms.pt.teacher=other"], capsys,
                   f"terms[1] (pt): teacher {other_vocab_teacher} tokenizes differently from the student", out)
    assert not cache.exists()


# ---------------------------------------------------------------- a teacher with another tokenizer

@pytest.fixture(scope="module")
def other_vocab_teacher(tmp_path_factory):
    """A BERT classifier whose WordPiece vocabulary is built from the SST-2 sample's words (not MiniLM's)."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    from conftest import ROOT

    d = tmp_path_factory.mktemp("othervocab")
    words = sorted({w for line in (ROOT / "data/sst2/train.tsv").read_text().lower().splitlines()[1:400]
                    for w in line.split("\t")[0].split()})
    (d / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tok = BertTokenizerFast(vocab_file=str(d / "vocab.txt"))
    torch.manual_seed(5)
    model = BertForSequenceClassification(BertConfig(vocab_size=len(tok), hidden_size=24, num_hidden_layers=2,
                                                     num_attention_heads=2, intermediate_size=48, num_labels=2,
                                                     id2label={0: "0", 1: "1"}, label2id={"0": 0, "1": 1}))
    model.save_pretrained(d / "model")
    tok.save_pretrained(d / "model")
    return d / "model"


def test_a_teacher_with_another_tokenizer_reads_its_own_tokens(tiny_teacher_run, tiny_bert, other_vocab_teacher,
                                                               tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    d = tiny_teacher_run
    base = [("data.dir", str(d / "sst2")), ("student.init", str(tiny_bert)), ("student.layers", "first:2"),
            ("teacher", str(other_vocab_teacher))]
    live = _scheme(load_recipe("recipes/kd.yaml", base))
    cached = _scheme(load_recipe("recipes/kd.yaml", base + [("teacher_cache.dir", str(tmp_path / "c"))]))
    assert live.teachers[0].own_tokens and cached.teachers[0].own_tokens
    batch = _batch(live)
    texts = [live.train_ex.text_a[i] for i in batch["idx"].tolist()]
    # the teacher alone, on its own tokenization of the same texts
    tok = AutoTokenizer.from_pretrained(other_vocab_teacher)
    alone = AutoModelForSequenceClassification.from_pretrained(other_vocab_teacher).eval()
    with torch.no_grad():
        expected = alone(**tok(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")).logits
    assert tok(texts[0])["input_ids"] != live.tokenizer(texts[0])["input_ids"]
    inputs = model_inputs(batch)
    torch.testing.assert_close(live.teachers[0].source(inputs, batch).logits, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(cached.teachers[0].source(inputs, batch).logits, expected, rtol=1e-4, atol=1e-5)
    # and a distillation run with it: logits only
    assert _kd(d, tiny_bert, tmp_path / "kd", "--teacher", str(other_vocab_teacher)) == 0


# ---------------------------------------------------------------- born-again generations

def test_born_again_generations_chain(tiny_teacher_run, tiny_bert, tmp_path):
    d = tiny_teacher_run
    out = tmp_path / "ban"
    assert main(["distill", "-r", "recipes/born-again.yaml", "-o", str(out), "--data-dir", str(d / "sst2"),
                 "--teacher", str(d / "teacher" / "model"), "--set", f"student.init={tiny_bert}", *FAST]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert [g["generation"] for g in m["generations"]] == [1, 2] and m["dev"] == m["generations"][1]["dev"]
    g2 = json.loads((out / "gen-2" / "metrics.json").read_text())
    assert g2["teacher"] == str(out / "gen-1" / "model") == m["generations"][1]["teacher"]
    assert g2["student_layers"] == 4  # the teacher's architecture


def test_born_again_with_a_list_of_teachers_is_refused(tiny_teacher_run, tiny_bert, tmp_path, capsys):
    d = tiny_teacher_run
    out = tmp_path / "ban"
    fails_one_line(["distill", "-r", "recipes/born-again.yaml", "-o", str(out), "--data-dir", str(d / "sst2"),
                    "--set", "teacher=null", "--set", f"teachers=[{{model: {d / 'teacher' / 'model'}}}]",
                    "--set", f"student.init={tiny_bert}", *FAST], capsys,
                   "generations: born-again runs need one 'teacher'", out)
    assert not list(tmp_path.glob(".*partial"))
