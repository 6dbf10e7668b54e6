"""Intermediate-layer methods: every recipe end to end on a tiny BERT, projections for narrower students,
taps, and one-line errors for bad terms."""
import json
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from textdistill import TextDistillError
from textdistill.cli import main
from textdistill.knowledge.terms import Term, tap_layers
from textdistill.recipe import TermCfg

from conftest import ROOT

FAST = ["--set", "train.epochs=2", "--set", "train.batch_size=16", "--set", "train.eval_batch_size=50"]
def _offline_method(path) -> bool:
    """Recipes of one offline student on the training rows (other schemes, chains of runs and transfer sets have
    their own tests: test_schemes.py, test_self.py, test_stages.py, test_transfer.py)."""
    import yaml

    r = yaml.safe_load(path.read_text())
    return (path.stem not in ("teacher", "ft") and r.get("scheme", "offline") == "offline" and r.get("generations", 1) == 1
            and not r.get("stages") and not r.get("transfer")  # stages, transfer sets: test_stages.py, test_transfer.py
            and (r.get("student") or {}).get("arch", "transformer") == "transformer")  # BiLSTM: test_bilstm.py


RECIPES = sorted(p.stem for p in (ROOT / "recipes").glob("*.yaml") if _offline_method(p))


@pytest.fixture
def teacher_folder(tiny_teacher_run):
    return tiny_teacher_run


@pytest.mark.parametrize("method", RECIPES)
def test_every_recipe_runs_end_to_end(method, teacher_folder, capsys):
    d = teacher_folder
    out = d / f"out-{method}"
    assert main(["distill", "-r", f"recipes/{method}.yaml", "-o", str(out), "--teacher", str(d / "teacher" / "model"),
                 "--set", f"student.init={d / 'teacher' / 'model'}", "--set", "student.layers=first:2",
                 "--data-dir", str(d / "sst2"), *FAST]) == 0, capsys.readouterr().err
    m = json.loads((out / "metrics.json").read_text())
    assert m["method"] == method and m["student_layers"] == 2
    names = {t.split(":")[0] for t in m["terms"]}
    for epoch in m["history"]:
        assert set(epoch["loss"]) == {"task"} | names
        assert all(v >= 0 for v in epoch["loss"].values())  # non-negative (a non-finite loss stops the run)
    recipe_terms = (ROOT / "recipes" / f"{method}.yaml").read_text()
    has_proj = "proj_dim" in recipe_terms
    assert (out / "projections.safetensors").exists() == has_proj
    assert not any(p.name.startswith("projections") for p in (out / "model").iterdir())
    log = (out / "train.log").read_text()
    if method.startswith("rail"):
        # the draw is logged every epoch: 4 teacher layers -> 2 student layers, one intermediate pair
        draws = [line.split("[", 1)[1].split("]")[0] for line in log.splitlines() if "term rail:" in line]
        assert len(draws) == 2 and all(d.startswith("S1<-T") for d in draws)
        assert [e["terms"][0] for e in m["history"]] == [line.split("term ", 1)[1] for line in log.splitlines()
                                                         if "term rail:" in line]


def test_narrow_student_gets_projections_saved_beside_it(teacher_folder, narrow_bert):
    d = teacher_folder
    out = d / "narrow-pkd"
    assert main(["distill", "-r", "recipes/pkd-skip.yaml", "-o", str(out), "--teacher", str(d / "teacher" / "model"),
                 "--set", f"student.init={narrow_bert}", "--set", "student.layers=all",
                 "--data-dir", str(d / "sst2"), *FAST]) == 0
    state = load_file(str(out / "projections.safetensors"))
    # pkd-skip 4 -> 3 maps student layers 1, 2 (16 wide) to teacher layers 1, 2 (32 wide)
    shapes = sorted((k, tuple(v.shape)) for k, v in state.items())
    assert shapes == [("1.student_proj.1.bias", (32,)), ("1.student_proj.1.weight", (32, 16)),
                      ("1.student_proj.2.bias", (32,)), ("1.student_proj.2.weight", (32, 16))]
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(out / "model")
    assert model.config.hidden_size == 16 and model.config.num_hidden_layers == 3


def _outputs(batch=4, seq=5, layers=3, dim=8, heads=2, seed=0, attentions=True):
    g = torch.Generator().manual_seed(seed)
    hs = tuple(torch.randn(batch, seq, dim, generator=g) for _ in range(layers + 1))
    att = tuple(torch.softmax(torch.randn(batch, heads, seq, seq, generator=g), -1) for _ in range(layers))
    return SimpleNamespace(hidden_states=hs, attentions=att if attentions else None,
                           logits=torch.randn(batch, 2, generator=g))


def _term(n_teacher=4, n_student=2, d_teacher=8, d_student=8, **cfg):
    return Term(TermCfg(**cfg), n_teacher=n_teacher, n_student=n_student, d_teacher=d_teacher, d_student=d_student,
                regression=False, where="terms[1] (x)", seed=0, heads_teacher=2, heads_student=2)


@pytest.mark.parametrize("cfg", [
    dict(name="x", tap="cls", map="pkd-skip", loss="pkd_mse"),
    dict(name="x", tap="mean", map="ckd", loss="mse", proj="mlp"),
    dict(name="x", tap="cls", map="alp", loss="pkd_mse"),
    dict(name="x", tap="cls", map="ckd", loss="pkd_mse", proj_dim=5),
    dict(name="x", tap="cls", map="alp", loss="pkd_mse", proj_dim=5),
    dict(name="x", tap="hidden", map="uniform", loss="fsp"),
    dict(name="x", tap="mean", map="rail", loss="pkd_mse", proj_dim=6),
    dict(name="x", tap="mean", map="rail", loss="pkd_mse", proj_dim=6, concat=True),
    dict(name="x", tap="mean", map="pkd-skip", loss="infonce"),
])
def test_projections_for_a_narrower_student_receive_gradients(cfg):
    """A 6-wide student, an 8-wide teacher: projections appear by themselves and learn."""
    term = _term(n_teacher=3, n_student=3, d_teacher=8, d_student=6, **cfg)
    assert len(list(term.parameters())) > 0
    s, t = _outputs(dim=6, seed=1), _outputs(dim=8, seed=2)
    s.hidden_states = tuple(h.requires_grad_() for h in s.hidden_states)
    loss = term(s, t, torch.ones(4, 5, dtype=torch.long))
    loss.backward()
    for name, p in term.named_parameters():
        if name.startswith("teacher_proj"):  # fixed random maps unless train_teacher_proj
            assert not p.requires_grad and p.grad is None, name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    if cfg.get("proj_dim") and not cfg.get("concat"):
        assert set(term.teacher_proj) == {"1", "2"}  # rail may draw any intermediate teacher layer of 3


def _np_linear(module, x):
    """``x @ W.T (+ b)`` of a torch Linear, in numpy float64."""
    w = module.weight.detach().double().numpy()
    b = module.bias.detach().double().numpy() if module.bias is not None else 0.0
    return x @ w.T + b


def _np_pkd_mse(s, t):
    """PKD's normalised MSE, by numpy: the mean over every element of (s/|s| - t/|t|)^2."""
    s = s / np.linalg.norm(s, axis=-1, keepdims=True)
    t = t / np.linalg.norm(t, axis=-1, keepdims=True)
    return float(((s - t) ** 2).mean())


@pytest.mark.parametrize("cfg", [
    dict(tap="mean", map="rail", loss="pkd_mse", proj_dim=6),  # RAIL-KD_l: both sides projected, layer by layer
    dict(tap="mean", map="rail", loss="pkd_mse", proj_dim=6, concat=True),  # RAIL-KD_c: concatenated, then projected
    dict(tap="cls", map="pkd-skip", loss="pkd_mse"),  # a narrower student: its side projected to the teacher's width
])
def test_projected_terms_against_numpy(cfg):
    """The term's value rebuilt outside the Term from its own projection weights: pooling, (concatenation,)
    projection and the loss in numpy float64."""
    term = _term(n_teacher=4, n_student=3, d_teacher=8, d_student=6, name="x", **cfg)
    s, t = _outputs(layers=3, dim=6, seed=5), _outputs(layers=4, dim=8, seed=6)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 0]])
    m = mask.double().numpy()[..., None]

    def pool(out, layer):
        h = out.hidden_states[layer].double().numpy()
        return h[:, 0] if cfg["tap"] == "cls" else (h * m).sum(1) / m.sum(1)
    pairs = term.pairs
    assert pairs and all(isinstance(tl, int) for _, tl in pairs)
    if cfg.get("concat"):
        sv = _np_linear(term.student_proj["cat"], np.concatenate([pool(s, sl) for sl, _ in pairs], -1))
        tv = _np_linear(term.teacher_proj["cat"], np.concatenate([pool(t, tl) for _, tl in pairs], -1))
        want = _np_pkd_mse(sv, tv)
    else:
        sv = np.stack([_np_linear(term.student_proj[str(sl)], pool(s, sl)) for sl, _ in pairs], 1)
        tv = np.stack([_np_linear(term.teacher_proj[str(tl)], pool(t, tl)) if cfg.get("proj_dim") else pool(t, tl)
                       for _, tl in pairs], 1)
        want = _np_pkd_mse(sv, tv)
    assert term(s, t, mask).item() == pytest.approx(want, rel=1e-5)
    if not cfg.get("proj_dim"):
        assert not len(term.teacher_proj) and [sl for sl, _ in pairs] == [1, 2] and [tl for _, tl in pairs] == [1, 2]


def test_teacher_projections_train_only_when_asked():
    cfg = dict(name="x", tap="mean", map="rail", loss="pkd_mse", proj_dim=6)
    for trained in (False, True):
        term = _term(n_teacher=3, n_student=3, d_teacher=8, d_student=6, train_teacher_proj=trained, **cfg)
        s, t = _outputs(dim=6, seed=1), _outputs(dim=8, seed=2)
        term(s, t, torch.ones(4, 5, dtype=torch.long)).backward()
        grads = [p.grad for p in term.teacher_proj.parameters()]
        # two teacher layers: trained projections have weight and bias, frozen ones a weight only (a fixed random
        # bias would shift every target alike)
        assert len(grads) == (4 if trained else 2)
        assert all((g is not None and g.abs().sum() > 0) if trained else g is None for g in grads)
        assert all((m.bias is not None) == trained for m in term.teacher_proj.values())


def test_width_free_losses_need_no_projection():
    from textdistill.knowledge.losses import rkd_distance

    term = _term(d_teacher=8, d_student=6, name="x", tap="cls", map="pkd-skip", loss="rkd_distance")
    assert len(list(term.parameters())) == 0
    s, t = _outputs(dim=6), _outputs(layers=4, dim=8)
    assert term.pairs == [(1, 2)]  # pkd-skip 4 -> 2: student layer 1 <- teacher layer 2
    want = rkd_distance(s.hidden_states[1][:, 0][:, None], t.hidden_states[2][:, 0][:, None])  # the raw [CLS] vectors
    got = term(s, t, torch.ones(4, 5))
    assert got.item() == pytest.approx(want.item(), rel=1e-6) and got.item() > 0


def test_ckd_and_alp_combine_teacher_layers():
    s, t = _outputs(layers=2, seed=3), _outputs(layers=4, seed=4)
    mask = torch.ones(4, 5)
    ckd = _term(n_teacher=4, n_student=2, name="x", tap="cls", map="ckd", loss="mse")  # S1 <- mean(T1..T3)
    want = torch.nn.functional.mse_loss(s.hidden_states[1][:, 0],
                                        torch.stack([t.hidden_states[k][:, 0] for k in (1, 2, 3)]).mean(0))
    assert ckd(s, t, mask).item() == pytest.approx(want.item(), rel=1e-6)
    alp = _term(n_teacher=4, n_student=2, name="x", tap="cls", map="alp", loss="mse")
    sv = s.hidden_states[1][:, 0]
    tv = torch.stack([t.hidden_states[k][:, 0] for k in (1, 2, 3)], 1)
    w = torch.softmax((sv[:, None] * tv).sum(-1) / 8 ** 0.5, -1)  # per example, over T1..T3
    want = torch.nn.functional.mse_loss(sv, (w[..., None] * tv).sum(1))
    assert alp(s, t, mask).item() == pytest.approx(want.item(), rel=1e-6)


def test_taps():
    out = _outputs()
    mask = torch.tensor([[1, 1, 1, 0, 0]] * 4)
    mean = tap_layers(out, "mean", [2], mask)
    assert torch.allclose(mean[:, 0], out.hidden_states[2][:, :3].mean(1))
    assert torch.equal(tap_layers(out, "cls", [0, 3], mask)[:, 1], out.hidden_states[3][:, 0])
    hidden = tap_layers(out, "hidden", [1], mask)
    assert hidden[:, :, 3:].abs().sum() == 0 and torch.equal(hidden[:, 0, :3], out.hidden_states[1][:, :3])
    assert torch.equal(tap_layers(out, "attention", [1, 3], mask)[:, 1], out.attentions[2])  # layer 3 = index 2
    with pytest.raises(TextDistillError, match="terms\\[2\\]: the model returned no attention maps"):
        tap_layers(_outputs(attentions=False), "attention", [1], mask, "terms[2]")
    with pytest.raises(TextDistillError, match="returned no attention maps"):
        tap_layers(SimpleNamespace(attentions=()), "attention", [1], mask)  # what sdpa gives


@pytest.mark.parametrize("cfg,message", [
    (dict(tap="cls", map="pkd-skip", loss="attention_kl"), "'attention_kl' does not apply to the 'cls' tap"),
    (dict(tap="attention", pairs=[[0, 0]], loss="attention_mse"), "pairs: student layer 0 out of range 1..2"),
    (dict(tap="hidden", pairs=[[1, 9]], loss="mse"), "pairs: teacher layer 9 out of range 0..4"),
    (dict(tap="cls", map="rail", loss="pkd_mse", proj="none"), "proj: student width 6 differs"),
    (dict(tap="hidden", map="alp", loss="mse"), "needs a cls or mean tap"),
    (dict(tap="cls", map="uniform", pairs=[[1, 1]], loss="mse"), "not both"),
    (dict(tap="embeddings", map="uniform", loss="mse"), "takes no map"),
    (dict(tap="attention", map="uniform", loss="attention_mse", proj_dim=4), "without projections"),
    (dict(tap="cls", map="rail", loss="pkd_mse", args={"temperature": 2}), "args.temperature: loss 'pkd_mse'"),
    (dict(tap="cls", map="ramdom", loss="pkd_mse"), "map: unknown layer map 'ramdom'"),
    (dict(tap="cls", map="rail", loss="pkd_mze"), "loss: unknown loss 'pkd_mze'"),
])
def test_bad_terms(cfg, message):
    with pytest.raises(TextDistillError, match="terms\\[1\\] \\(x\\)") as err:
        _term(d_student=6, name="x", **cfg)
    assert message in str(err.value)


def test_attention_heads_must_match():
    with pytest.raises(TextDistillError, match="2 attention heads, the teacher 4"):
        Term(TermCfg(name="x", tap="attention", map="uniform", loss="attention_kl"), n_teacher=4, n_student=2,
             d_teacher=8, d_student=8, regression=False, where="terms[1] (x)", heads_teacher=4, heads_student=2)


def test_bad_recipe_term_from_the_cli(teacher_folder, capsys):
    d = teacher_folder
    out = d / "bad"
    assert main(["distill", "-r", "recipes/tinybert.yaml", "-o", str(out), "--teacher", str(d / "teacher" / "model"),
                 "--data-dir", str(d / "sst2"), "--set", "terms.att.loss=attention_klx"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "terms[3] (att).loss: unknown loss 'attention_klx'" in err
    assert not out.exists() and not Path(str(out.parent / ".bad.partial")).exists()


def test_fused_adamw_makes_the_same_update_as_the_per_tensor_loop(tiny_bert):
    """train.fused_adamw (the default) only changes the kernel: same decay groups, same steps."""
    from transformers import AutoModelForSequenceClassification

    from textdistill.recipe import TrainCfg
    from textdistill.train import _optimizer

    models, opts = [], []
    for fused in (True, False):
        torch.manual_seed(0)
        m = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
        models.append(m)
        opts.append(_optimizer([m, torch.nn.ModuleList()], TrainCfg(lr=1e-2, fused_adamw=fused)))
    assert opts[0].defaults["fused"] and not opts[1].defaults["fused"]
    assert [len(g["params"]) for g in opts[0].param_groups] == [len(g["params"]) for g in opts[1].param_groups]
    start = [p.detach().clone() for p in models[0].parameters()]
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        grads = [torch.randn(p.shape, generator=gen) for p in models[0].parameters()]
        for m, o in zip(models, opts):
            for p, g in zip(m.parameters(), grads):
                p.grad = g.clone()
            o.step()
    for (name, a), b, a0 in zip(models[0].named_parameters(), models[1].parameters(), start):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
        assert not torch.equal(a, a0), name  # every parameter moved


def test_ckd_linear_fusion_is_a_trained_map_of_the_concatenated_group():
    """CKD's paper: F(h_a, h_b, ...) = W [h_a; h_b; ...] + b per group (6 -> 3: groups {1,2,3} and {4,5})."""
    term = _term(n_teacher=6, n_student=3, name="x", tap="cls", map="ckd", loss="mse", fuse="linear")
    assert [tuple(term.fuse[k].weight.shape) for k in ("0", "1")] == [(8, 24), (8, 16)]
    s, t = _outputs(layers=3, dim=8, seed=1), _outputs(layers=6, dim=8, seed=2)
    s.hidden_states = tuple(h.requires_grad_() for h in s.hidden_states)
    loss = term(s, t, torch.ones(4, 5, dtype=torch.long))
    groups = [[1, 2, 3], [4, 5]]
    target = [term.fuse[str(i)](torch.cat([t.hidden_states[layer][:, 0] for layer in g], -1)) for i, g in enumerate(groups)]
    expected = torch.stack([((s.hidden_states[j][:, 0] - target[j - 1]) ** 2).mean() for j in (1, 2)]).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in term.fuse.parameters())
    assert "fuse linear" in term.describe()
    with pytest.raises(TextDistillError, match="fuses the layer groups of the ckd map"):
        _term(name="x", tap="cls", map="pkd-skip", loss="mse", fuse="linear")


def test_bf16_mixed_precision_autocasts_the_step_and_evaluates_in_fp32(teacher_folder, monkeypatch, capsys):
    """train.mixed_precision=bf16: the loop runs every training step (student, terms) under CPU autocast, the dev
    evaluation in fp32 (Accelerate's own forward wrapper is undone), the saved weights are fp32 and `evaluate`
    of the saved model gives the run's dev metrics; the losses follow the fp32 run's closely but not exactly."""
    from textdistill.schemes.offline import Offline

    seen = {"train": [], "eval": []}
    loss_parts, evaluate = Offline.loss_parts, Offline.evaluate

    def spy_loss(self, batch):
        parts = loss_parts(self, batch)
        seen["train"].append(torch.is_autocast_enabled("cpu"))
        return parts

    def spy_eval(self):
        hook = self.student.classifier.register_forward_hook(lambda m, i, o: seen["eval"].append(o.dtype))
        try:
            return evaluate(self)
        finally:
            hook.remove()

    monkeypatch.setattr(Offline, "loss_parts", spy_loss)
    monkeypatch.setattr(Offline, "evaluate", spy_eval)
    d, runs = teacher_folder, {}
    for precision in ("bf16", "no"):
        out = d / f"out-mixed-{precision}"
        assert main(["distill", "-r", "recipes/tinybert.yaml", "-o", str(out), "--teacher", str(d / "teacher" / "model"),
                     "--set", f"student.init={d / 'teacher' / 'model'}", "--set", "student.layers=first:2",
                     "--set", f"train.mixed_precision={precision}", "--data-dir", str(d / "sst2"), *FAST,
                     "--overwrite"]) == 0, capsys.readouterr().err
        runs[precision] = json.loads((out / "metrics.json").read_text())
        if precision == "bf16":
            assert seen["train"] and all(seen["train"]), "a training step ran without autocast"
            assert set(seen["eval"]) == {torch.float32}, seen["eval"]
            weights = load_file(out / "model" / "model.safetensors")
            assert {t.dtype for t in weights.values()} == {torch.float32}
            capsys.readouterr()
            assert main(["evaluate", "--model", str(out / "model"), "--task", "sst2", "--data-dir", str(d / "sst2")]) == 0
            assert json.loads(capsys.readouterr().out)["metrics"] == runs["bf16"]["dev"]
        else:
            assert seen["train"] and not any(seen["train"])
        seen = {"train": [], "eval": []}
    bf16, fp32 = runs["bf16"]["history"][0]["loss"], runs["no"]["history"][0]["loss"]
    assert bf16 != fp32
    assert bf16 == pytest.approx(fp32, rel=0.1)


def test_bf16_native_reads_the_cpu_flags():
    from textdistill.train import bf16_native

    assert bf16_native("flags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n")
    assert bf16_native("flags : fpu amx_bf16 amx_tile\n")
    assert bf16_native("Features\t: fp asimd bf16 i8mm\n")  # Arm
    assert not bf16_native("flags\t\t: fpu sse2 avx avx2 fma avx512f avx512_vnni\n")


def test_cpu_int8_names_the_best_int8_instructions():
    from textdistill.hardware import cpu_int8

    assert cpu_int8("flags : fpu avx2 avx512f avx512bw avx512_vnni amx_int8 amx_tile\n") == "AMX-INT8"
    assert cpu_int8("flags\t\t: fpu avx2 avx512f avx512bw avx512_vnni avx512_bf16\n") == "AVX512-VNNI"
    assert cpu_int8("flags : fpu avx2 avx_vnni\n") == "AVX-VNNI"
    assert cpu_int8("flags : fpu sse2 avx avx2 fma\n") == "AVX2"  # this machine's AMD EPYC
    assert cpu_int8("Features\t: fp asimd asimddp i8mm bf16\n") == "Arm i8mm"
    assert cpu_int8("Features\t: fp asimd asimddp\n") == "Arm dotprod"
    assert cpu_int8("flags : fpu sse2\n") == "unknown"


@pytest.mark.parametrize("cpu_flags, cuda, bf16_gpu, on_cpu, want", [
    ("avx512_bf16", False, False, False, ("bf16", "torch-bf16")),   # a CPU with native bf16
    ("avx2", False, False, False, ("no", "onnx")),                  # emulated bf16: ~30x slower, so fp32
    ("avx2", True, True, False, ("bf16", "torch-bf16")),            # a GPU with bf16
    ("avx2", True, False, False, ("no", "onnx")),                   # a GPU without (e.g. a V100)
    ("avx2", True, True, True, ("no", "onnx")),                     # train.cpu: the CPU decides
])
def test_auto_precision_is_bf16_only_where_it_is_native(monkeypatch, cpu_flags, cuda, bf16_gpu, on_cpu, want):
    import torch

    from textdistill import hardware
    from textdistill.recipe import load_recipe

    real = hardware.bf16_native
    monkeypatch.setattr(hardware, "bf16_native", lambda: real(f"flags\t: fpu sse2 {cpu_flags}\n"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    # torch reports emulated bf16 as support unless asked not to (a V100, a T4): auto must ask
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16_gpu or including_emulation)
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    r = load_recipe("recipes/kd.yaml", [("train.mixed_precision", "auto"), ("teacher_cache.runtime", "auto"),
                                        ("train.cpu", on_cpu)])
    assert (r.train.mixed_precision, r.teacher_cache.runtime) == want
    # explicit settings are kept as written, whatever the machine
    r = load_recipe("recipes/kd.yaml", [("train.mixed_precision", "bf16"), ("teacher_cache.runtime", "torch")])
    assert (r.train.mixed_precision, r.teacher_cache.runtime) == ("bf16", "torch")
    if cuda and bf16_gpu and not on_cpu:  # accelerate launch --cpu: the CPU decides, as for train.cpu
        monkeypatch.setenv("ACCELERATE_USE_CPU", "true")
        r = load_recipe("recipes/kd.yaml", [("train.mixed_precision", "auto")])
        assert r.train.mixed_precision == ("bf16" if "bf16" in cpu_flags else "no")


def test_auto_precision_is_resolved_again_in_each_stage(monkeypatch):
    """A stage merges into the recipe as written (auto), not as resolved for the base: a stage that trains on the
    CPU of a machine whose GPU has bf16 (and whose CPU has not) runs fp32."""
    from textdistill import hardware
    from textdistill.recipe import load_recipe, stage_recipes, validate

    monkeypatch.setattr(hardware, "bf16_fast", lambda cpu=False: not cpu)
    r = load_recipe("recipes/tinybert-2stage.yaml", [("train.mixed_precision", "auto"), ("stages.task.train", {"cpu": True})])
    assert r.train.mixed_precision == "bf16"
    stages = {name: validate(data, "x") for name, data in stage_recipes(r)}
    assert stages["general"].train.mixed_precision == "bf16"
    assert stages["task"].train.cpu and stages["task"].train.mixed_precision == "no"


def test_bf16_native_is_false_where_the_cpu_cannot_be_read(monkeypatch):
    from textdistill import hardware

    class Unreadable:
        def __init__(self, *_):
            pass

        def read_text(self):
            raise OSError("no /proc")

    monkeypatch.setattr(hardware, "Path", Unreadable)
    monkeypatch.setattr(hardware.platform, "system", lambda: "Windows")
    assert hardware.bf16_native() is False
    assert hardware.cpu_int8() == "unknown"


@pytest.mark.parametrize("cfg", [dict(name="x", tap="logits", loss="kd_kl", args={"temperature": 5}),
                                 dict(name="x", tap="logits", loss="soft_ce", args={"temperature": 5}),
                                 dict(name="x", tap="mean", map="pkd-skip", loss="pkd_mse", proj_dim=5)])
def test_terms_compute_in_fp32_inside_bf16_autocast(cfg):
    """Under CPU bf16 autocast (train.mixed_precision=bf16) a term gets the models' bf16 outputs but computes its
    loss in fp32: the same value as the fp32 computation on those outputs, not autocast's."""
    g = torch.Generator().manual_seed(0)
    s, t = _outputs(batch=32, seed=1), _outputs(batch=32, seed=2)
    s.logits, t.logits = 4 * torch.randn(32, 5, generator=g), 4 * torch.randn(32, 5, generator=g)
    s16 = SimpleNamespace(logits=s.logits.bfloat16(), hidden_states=tuple(h.bfloat16() for h in s.hidden_states))
    mask = torch.ones(32, 5, dtype=torch.long)
    term = _term(n_teacher=3, n_student=3, **cfg)
    exact = term(SimpleNamespace(logits=s16.logits.float(), hidden_states=tuple(h.float() for h in s16.hidden_states)),
                 t, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = term(s16, t, mask)
        if cfg["tap"] == "logits":  # what the loss gives when autocast is left on
            from textdistill.knowledge.losses import LOSSES
            loose = LOSSES[cfg["loss"]](s16.logits, t.logits.bfloat16(), **cfg["args"])
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(exact.item(), rel=1e-6)
    if cfg["tap"] == "logits":
        assert loose.item() != pytest.approx(exact.item(), rel=1e-3)


def test_step_stats_percentile_is_not_below_the_median():
    from textdistill.train import step_stats
    # two steps: the median is their mean, the 90th percentile lies 90 % of the way to the slower one
    assert step_stats([1.0, 3.0]) == {"median": 2.0, "p90": 2.8}
    # 1..11 seconds: rank 0.9 * 10 = 9 falls exactly on the tenth value
    assert step_stats([float(s) for s in range(11, 0, -1)]) == {"median": 6.0, "p90": 10.0}
    rng = random.Random(0)
    for n in range(1, 30):
        stats = step_stats([rng.uniform(0.1, 5) for _ in range(n)])
        assert stats["p90"] >= stats["median"]
