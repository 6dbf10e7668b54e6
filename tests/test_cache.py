"""Teacher-output cache: the same losses as the live teacher, never used when stale or corrupt, and a
distillation from it that never runs the teacher."""
import json
import shutil

import pytest
import torch

from conftest import built_once_by_two_runs
from textdistill import TextDistillError
from textdistill.cli import main
from textdistill.data.batching import encode, train_loader
from textdistill.evaluate import model_inputs
from textdistill.knowledge.terms import build_terms
from textdistill.models.loading import load_model, load_tokenizer
from textdistill.models.student import build_student
from textdistill.recipe import load_recipe
from textdistill.schemes.offline import LiveTeacher
from textdistill.train import load_split, open_cache, resolve_task


FAST = ["--set", "train.epochs=1", "--set", "train.batch_size=16", "--set", "train.eval_batch_size=32"]


@pytest.fixture
def setup(tiny_teacher_run):
    return tiny_teacher_run


def _recipe(setup, name, *sets):
    overrides = [("teacher", str(setup / "teacher" / "model")), ("data.dir", str(setup / "sst2")),
                 ("student.init", str(setup / "teacher" / "model")), ("student.layers", "first:2"),
                 ("teacher_cache.dtype", "float32")]
    return load_recipe(f"recipes/{name}.yaml", overrides + [tuple(s.split("=", 1)) for s in sets])


@pytest.mark.parametrize("method", ["kd", "pkd-skip", "ckd", "alp-kd", "rail-kd-l", "rail-kd-c", "rkd", "codir"])
def test_losses_from_the_cache_equal_the_live_teacher(setup, method, tmp_path):
    recipe = _recipe(setup, method)
    task = resolve_task(recipe)
    train_ex = load_split(task, recipe, "train")
    tok = load_tokenizer(recipe.student.init)
    teacher = load_model(recipe.teacher, 2, task.labels)[0].eval()
    student, _ = build_student(teacher, "first:2")
    cached, manifest = open_cache(teacher=recipe.teacher, task=task, folder=tmp_path / "c", train_ex=train_ex,
                                  tokenizer=tok, term_cfgs=recipe.terms, n_student=2,
                                  max_length=recipe.train.max_length, dtype=recipe.teacher_cache.dtype, batch_size=64)
    live = LiveTeacher(teacher, hidden_states=True)
    torch.manual_seed(0)
    terms = build_terms(recipe.terms, teacher_config=teacher.config, student_config=student.config,
                        regression=False, seed=3)
    data = encode(tok, train_ex, recipe.train.max_length, False)
    n = 0
    for batch in train_loader(data, tok, 16, seed=1):  # other batches and padding than at cache time
        inputs = model_inputs(batch)
        s_out = student(**inputs, output_hidden_states=True)
        a, b = live(inputs, batch), cached(inputs, batch)
        for term in terms:
            x, y = term(s_out, a, inputs["attention_mask"]), term(s_out, b, inputs["attention_mask"])
            assert x.item() == pytest.approx(y.item(), rel=1e-4, abs=1e-6), (term.name, n)
        n += 1
        if n == 3:
            break
    if method.startswith("rail"):
        assert manifest["key"]["taps"] == {"mean": [1, 2, 3]}  # every intermediate layer of the 4-layer teacher
    if method == "pkd-skip":
        assert manifest["key"]["taps"] == {"cls": [2]}


def _cache(setup, out, *extra):
    return main(["cache", "-r", "recipes/pkd-skip.yaml", "-o", str(out), "--teacher", str(setup / "teacher" / "model"),
                 "--data-dir", str(setup / "sst2"), "--set", f"student.init={setup / 'teacher' / 'model'}",
                 "--set", "student.layers=first:2", *extra])


def test_stale_and_corrupt_caches_are_refused(setup, tmp_path, capsys):
    c = tmp_path / "c"
    assert _cache(setup, c) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["rows"] == 200 and info["taps"] == {"cls": [2]} and info["dtype"] == "float16"
    assert _cache(setup, c) == 0  # up to date: checked, not rebuilt
    capsys.readouterr()
    # a changed data row
    data2 = tmp_path / "sst2"
    shutil.copytree(setup / "sst2", data2)
    lines = (data2 / "train.tsv").read_text().splitlines()
    lines[5] = "a completely different sentence\t1"
    (data2 / "train.tsv").write_text("\n".join(lines) + "\n")
    assert main(["cache", "-r", "recipes/pkd-skip.yaml", "-o", str(c), "--teacher", str(setup / "teacher" / "model"),
                 "--data-dir", str(data2), "--set", f"student.init={setup / 'teacher' / 'model'}",
                 "--set", "student.layers=first:2"]) == 2
    assert "stale teacher cache, built for other the training texts" in capsys.readouterr().err
    # a changed teacher weight
    teacher2 = tmp_path / "teacher2"
    shutil.copytree(setup / "teacher" / "model", teacher2)
    model = load_model(str(teacher2), 2, ("0", "1"))[0]
    with torch.no_grad():
        model.classifier.weight[0, 0] += 1e-3
    model.save_pretrained(teacher2)
    assert main(["cache", "-r", "recipes/pkd-skip.yaml", "-o", str(c), "--teacher", str(teacher2),
                 "--data-dir", str(setup / "sst2"), "--set", f"student.init={teacher2}",
                 "--set", "student.layers=first:2"]) == 2
    assert "built for other the teacher's weights or config" in capsys.readouterr().err
    # other max_length, other taps
    assert _cache(setup, c, "--set", "train.max_length=64") == 2
    assert "train.max_length" in capsys.readouterr().err
    assert _cache(setup, c, "--set", "terms.pt.map=pkd-last") == 2
    assert "the taps/layers the terms read" in capsys.readouterr().err
    # a truncated tensor file
    f = c / "outputs.safetensors"
    raw = f.read_bytes()
    f.write_bytes(raw[: len(raw) // 2])
    assert _cache(setup, c) == 2
    assert "corrupt or truncated" in capsys.readouterr().err
    # a broken manifest
    (c / "cache.json").write_text("{not json")
    assert _cache(setup, c) == 2
    assert "corrupt manifest" in capsys.readouterr().err
    # rebuilding fixes it
    assert _cache(setup, c, "--overwrite") == 0


def test_sequence_taps_are_not_cached(setup, tmp_path, capsys):
    assert main(["cache", "-r", "recipes/tinybert.yaml", "-o", str(tmp_path / "c"), "--teacher",
                 str(setup / "teacher" / "model"), "--data-dir", str(setup / "sst2")]) == 2
    err = capsys.readouterr().err
    assert "terms[1] (emb).tap: 'embeddings' needs full sequences" in err and "live teacher" in err
    assert not (tmp_path / "c").exists()


def test_distill_from_the_cache_never_runs_the_teacher(setup, tiny_bert, tmp_path, monkeypatch, capsys):
    teacher = str(setup / "teacher" / "model")
    base = ["-r", "recipes/pkd-skip.yaml", "--teacher", teacher, "--data-dir", str(setup / "sst2"),
            "--set", f"student.init={tiny_bert}", "--set", "student.layers=first:2",
            "--set", "teacher_cache.dtype=float32", *FAST]
    live = base
    base = base + ["--set", f"teacher_cache.dir={tmp_path / 'c'}"]
    # first run: the cache is absent, so distill builds it (loading the teacher once)
    assert main(["distill", "-o", str(tmp_path / "a"), *base]) == 0
    assert (tmp_path / "c" / "cache.json").exists()
    import textdistill.schemes.base as scheme_base
    import textdistill.schemes.teachers as teachers

    loaded = []
    real = scheme_base.load_model

    def spy(name, *args, **kwargs):
        loaded.append(name)
        return real(name, *args, **kwargs)
    monkeypatch.setattr(scheme_base, "load_model", spy)
    monkeypatch.setattr(teachers, "load_model", spy)
    assert main(["distill", "-o", str(tmp_path / "b"), *base]) == 0
    assert teacher not in loaded and loaded == [str(tiny_bert)]
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert b["teacher_cache"] == str(tmp_path / "c") and b["params_teacher"] == a["params_teacher"]
    # the same student as with the live teacher: same initialisation, batches and dropout (the training
    # loop re-seeds after loading the teacher); only the batching of the teacher's forward passes differs
    assert main(["distill", "-o", str(tmp_path / "live"), *live]) == 0
    lv = json.loads((tmp_path / "live" / "metrics.json").read_text())
    assert lv["teacher_cache"] is None
    for m in (a, b):
        assert m["history"][0]["loss"] == pytest.approx(lv["history"][0]["loss"], rel=1e-4)
    from safetensors.torch import load_file
    w_live = load_file(tmp_path / "live" / "model" / "model.safetensors")
    w_cache = load_file(tmp_path / "b" / "model" / "model.safetensors")
    assert w_live.keys() == w_cache.keys()
    for k in w_live:
        torch.testing.assert_close(w_cache[k], w_live[k], rtol=1e-3, atol=1e-4)
    assert main(["distill", "-o", str(tmp_path / "c2"), *base]) == 0  # from the cache again: identical
    c = json.loads((tmp_path / "c2" / "metrics.json").read_text())
    assert c["history"][0]["loss"] == b["history"][0]["loss"] and c["dev"] == b["dev"]


@pytest.mark.parametrize("method", ["pkd-skip", "rail-kd-c"])  # [CLS] vectors of mapped layers; means of all layers
def test_a_cache_built_in_onnx_runtime_holds_the_pytorch_outputs(setup, method, tmp_path):
    from safetensors.torch import load_file

    recipe = _recipe(setup, method)
    task = resolve_task(recipe)
    train_ex = load_split(task, recipe, "train")
    tok = load_tokenizer(recipe.teacher)
    teacher = load_model(recipe.teacher, 2, task.labels)[0].eval()
    stores = {}
    for runtime in ("torch", "onnx"):
        _, manifest = open_cache(teacher=recipe.teacher, task=task, folder=tmp_path / runtime, train_ex=train_ex,
                                 tokenizer=tok, term_cfgs=recipe.terms, n_student=2, max_length=recipe.train.max_length,
                                 dtype="float32", batch_size=64, model=teacher, runtime=runtime)
        assert manifest["runtime"] == runtime
        assert sorted(p.name for p in (tmp_path / runtime).iterdir()) == ["cache.json", "outputs.safetensors"]
        stores[runtime] = load_file(str(tmp_path / runtime / "outputs.safetensors"))
    assert set(stores["torch"]) == set(stores["onnx"]) and len(stores["torch"]) == 2
    for name, a in stores["torch"].items():
        assert a.abs().sum() > 0
        torch.testing.assert_close(stores["onnx"][name], a, rtol=1e-4, atol=1e-5, msg=name)


def test_a_bf16_cache_holds_the_teacher_under_autocast_and_is_keyed_apart(setup, tmp_path):
    """teacher_cache.runtime torch-bf16: the pass runs under bf16 autocast (outputs near fp32's, not equal to them);
    its key records the precision, so an fp32 recipe refuses the cache (naming why) and vice versa."""
    from safetensors.torch import load_file

    recipe = _recipe(setup, "pkd-skip")
    task = resolve_task(recipe)
    train_ex = load_split(task, recipe, "train")
    tok = load_tokenizer(recipe.teacher)
    teacher = load_model(recipe.teacher, 2, task.labels)[0].eval()

    def cache(folder, runtime):
        return open_cache(teacher=recipe.teacher, task=task, folder=folder, train_ex=train_ex, tokenizer=tok,
                          term_cfgs=recipe.terms, n_student=2, max_length=recipe.train.max_length, dtype="float32",
                          batch_size=64, model=teacher, runtime=runtime)[1]
    m16, m32 = cache(tmp_path / "bf16", "torch-bf16"), cache(tmp_path / "fp32", "torch")
    assert m16["runtime"] == "torch-bf16" and m16["key"]["teacher_precision"] == "bf16"
    assert "teacher_precision" not in m32["key"]
    a, b = (load_file(str(tmp_path / f / "outputs.safetensors")) for f in ("bf16", "fp32"))
    for name in b:
        assert a[name].dtype == torch.float32 and 0 < (a[name] - b[name]).abs().max() < 0.1, name
    for folder, runtime in (("bf16", "onnx"), ("fp32", "torch-bf16")):
        with pytest.raises(TextDistillError, match="stale teacher cache, built for other the teacher's precision"):
            cache(tmp_path / folder, runtime)


def test_a_bf16_cache_on_a_cpu_without_native_bf16_warns(setup, tmp_path, monkeypatch, caplog):
    from textdistill import hardware

    monkeypatch.setattr(hardware, "bf16_native", lambda: False)
    recipe = _recipe(setup, "kd")
    task = resolve_task(recipe)
    open_cache(teacher=recipe.teacher, task=task, folder=tmp_path / "c", train_ex=load_split(task, recipe, "train"),
               tokenizer=load_tokenizer(recipe.teacher), term_cfgs=recipe.terms, n_student=2,
               max_length=recipe.train.max_length, dtype="float32", batch_size=64,
               model=load_model(recipe.teacher, 2, task.labels)[0].eval(), runtime="torch-bf16")
    assert "this CPU has no native bf16" in caplog.text


def test_onnx_runtime_falls_back_to_pytorch_when_it_disagrees(setup, tmp_path, monkeypatch, caplog):
    import textdistill.schemes.cache as cache_mod

    monkeypatch.setattr(cache_mod, "ONNX_TOL", -1.0)  # no graph can pass: PyTorch must build the cache
    recipe = _recipe(setup, "kd")
    task = resolve_task(recipe)
    teacher = load_model(recipe.teacher, 2, task.labels)[0].eval()
    _, manifest = open_cache(teacher=recipe.teacher, task=task, folder=tmp_path / "c",
                             train_ex=load_split(task, recipe, "train"), tokenizer=load_tokenizer(recipe.teacher),
                             term_cfgs=recipe.terms, n_student=2, max_length=recipe.train.max_length, dtype="float32",
                             batch_size=64, model=teacher, runtime="onnx")
    assert manifest["runtime"] == "torch"
    assert "ONNX Runtime's outputs differ from PyTorch's" in caplog.text


def test_an_onnx_runtime_error_mid_build_leaves_the_rest_to_pytorch(setup, tmp_path, monkeypatch, caplog):
    from safetensors.torch import load_file

    import textdistill.schemes.cache as cache_mod

    real = cache_mod._onnx_runner

    def failing(*a, **k):  # the checks pass; the second batch of the build raises as ONNX Runtime would
        run, calls = real(*a, **k), []

        def flaky(batch):
            calls.append(1)
            if len(calls) == 2:
                raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION")
            return run(batch)
        flaky.export_seconds = run.export_seconds
        return flaky
    monkeypatch.setattr(cache_mod, "_onnx_runner", failing)
    recipe = _recipe(setup, "pkd-skip")
    task = resolve_task(recipe)
    teacher = load_model(recipe.teacher, 2, task.labels)[0].eval()
    stores = {}
    for runtime in ("torch", "onnx"):
        _, manifest = open_cache(teacher=recipe.teacher, task=task, folder=tmp_path / runtime,
                                 train_ex=load_split(task, recipe, "train"), tokenizer=load_tokenizer(recipe.teacher),
                                 term_cfgs=recipe.terms, n_student=2, max_length=recipe.train.max_length,
                                 dtype="float32", batch_size=8, model=teacher, runtime=runtime)
        stores[runtime] = load_file(str(tmp_path / runtime / "outputs.safetensors"))
    assert manifest["runtime"] == "onnx for 1 batches, then torch"
    assert "ONNX Runtime failed on batch 2" in caplog.text
    for name, a in stores["torch"].items():
        torch.testing.assert_close(stores["onnx"][name], a, rtol=1e-4, atol=1e-5, msg=name)


def test_teacher_passes_before_the_loop_run_on_the_process_device(monkeypatch):
    """On a GPU machine the teacher's dev check and cache build run on this process's GPU (LOCAL_RANK), then the
    teacher goes back where it was; train.cpu or no GPU: the CPU."""
    from textdistill import dist
    from textdistill.schemes.teachers import on_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setattr("accelerate.PartialState._shared_state", {})  # (no process state yet)
    assert dist.local_device() == torch.device("cuda", 1)
    assert dist.local_device(cpu=True) == torch.device("cpu")
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")  # accelerate launch --cpu
    assert dist.local_device() == torch.device("cpu")
    model, moves = torch.nn.Linear(2, 2), []
    monkeypatch.setattr(model, "to", lambda device: moves.append(device))
    with on_device(model, torch.device("cuda", 1)) as m:
        assert m is model and moves == [torch.device("cuda", 1)]
    assert moves == [torch.device("cuda", 1), torch.device("cpu")]
    with on_device(model, torch.device("cpu")), on_device(None, torch.device("cuda", 0)):
        pass
    assert len(moves) == 2  # already there / no model: nothing moves


def test_cache_and_distill_send_the_teacher_passes_to_the_process_device(setup, tmp_path, monkeypatch):
    """`textdistill cache` and a distill run that builds its cache put the teacher's dev check and the cache build on
    the device local_device gives (recorded here instead of moved)."""
    import contextlib

    from textdistill import dist
    from textdistill.schemes import teachers

    seen = []

    @contextlib.contextmanager
    def record(model, device):
        seen.append(device)
        yield model

    monkeypatch.setattr(teachers, "on_device", record)
    monkeypatch.setattr(teachers, "local_device", lambda cpu=False: "the-device")
    monkeypatch.setattr(dist, "local_device", lambda cpu=False: "the-device")
    assert _cache(setup, tmp_path / "c1") == 0
    assert seen == ["the-device", "the-device"]  # dev check, cache build
    seen.clear()
    assert main(["distill", "-r", "recipes/kd.yaml", "-o", str(tmp_path / "kd"), "--teacher",
                 str(setup / "teacher" / "model"), "--data-dir", str(setup / "sst2"),
                 "--set", f"student.init={setup / 'teacher' / 'model'}", "--set", "student.layers=first:2",
                 "--set", "train.epochs=1", "--set", f"teacher_cache.dir={tmp_path / 'c2'}"]) == 0
    assert seen == ["the-device", "the-device"]


def test_two_processes_naming_one_cache_build_it_once(setup, tmp_path, caplog):
    """The teacher cache, like a generated set: a second run reaching it while the first builds it waits and
    reuses it (built once)."""
    import textdistill.schemes.cache as cache

    assert built_once_by_two_runs(cache, "build_cache", lambda: _cache(setup, tmp_path / "c"), caplog) == [[1], [0]]
    assert any("teacher cache" in r.getMessage() and "waiting for it" in r.getMessage() for r in caplog.records)
    assert not list(tmp_path.glob(".*.lock"))  # (the lock file goes once the folder is built)
