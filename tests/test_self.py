"""Self-distillation with early exits (scheme: self): a run end to end, its loss against an independent
computation, the early-exit rule (threshold 0 = the plain model, a huge one = the first exit), the real
batch-1 early stop against the simulated rule, the CLI sweep and plot, and one-line errors."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import fails_one_line, same_as_evaluate
from textdistill.cli import main
from textdistill.data.batching import Collator, eval_loader
from textdistill.evaluate import model_inputs, predict
from textdistill.models.exits import early_exit, early_exit_forward, entropy, exit_logits, load_exits, predict_exits
from textdistill.models.student import find_layers
from textdistill.recipe import load_recipe
from textdistill.schemes import SCHEMES
from textdistill.train import load_split, resolve_task

FAST = ["--set", "train.epochs=2", "--set", "train.batch_size=16", "--set", "train.eval_batch_size=50",
        "--set", "train.lr=3e-3"]


@pytest.fixture(scope="module")
def self_run(tiny_teacher_run, tiny_bert):
    """A 'scheme: self' run of tiny_bert (4 layers, exits on all of them) on the tiny SST-2 sample."""
    d = tiny_teacher_run
    out = d / "self-run"
    if not out.exists():
        assert main(["distill", "-r", "recipes/self-distill.yaml", "-o", str(out), "--data-dir", str(d / "sst2"),
                     "--set", f"student.init={tiny_bert}", *FAST]) == 0
    return out


@pytest.fixture(scope="module")
def loaded(self_run, tiny_teacher_run):
    """The saved model (plain transformers), its exits and the dev rows."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from textdistill.data.batching import encode
    from textdistill.data.readers import load_examples
    from textdistill.data.tasks import get_task

    model = AutoModelForSequenceClassification.from_pretrained(self_run / "model").eval()
    tokenizer = AutoTokenizer.from_pretrained(self_run / "model")
    task = get_task("sst2")
    data = encode(tokenizer, load_examples(task, tiny_teacher_run / "sst2" / "dev.tsv"), 128, False)
    return model, load_exits(self_run / "model", model.config), tokenizer, data


def test_run_writes_model_exits_and_every_exits_metrics(self_run, loaded):
    m = json.loads((self_run / "metrics.json").read_text())
    assert m["scheme"] == "self" and m["exit_layers"] == [1, 2, 3, 4] and m["exit_pool"] == "mean"
    assert set(m["exits"]) == {"1", "2", "3", "4"} and m["dev"] == m["exits"]["4"]
    assert all(set(e["exits"]) == {"1", "2", "3", "4"} for e in m["history"])
    for epoch in m["history"]:
        assert set(epoch["loss"]) == {"task"} | {f"{p}@{layer}" for p in ("task", "kd") for layer in (1, 2, 3)}
    assert (self_run / "exits.safetensors").is_file()
    rows = same_as_evaluate(self_run, self_run.parent / "sst2", self_run.parent)  # the last exit's, row by row
    assert np.mean([r["prediction"] == r["label"] for r in rows]) == pytest.approx(m["exits"]["4"]["accuracy"])
    assert not any("exits" in p.name for p in (self_run / "model").iterdir())
    # plain transformers loads model/; its predictions are the last exit's, and the exits reproduce metrics.json
    model, heads, tokenizer, data = loaded
    assert model.config.num_hidden_layers == 4 and heads.layers == [1, 2, 3, 4] and set(heads.heads) == {"1", "2", "3"}
    loader = eval_loader(data, tokenizer, 50)
    every = predict_exits(model, heads, loader)
    assert every.shape == (100, 4, 2)
    assert torch.allclose(torch.from_numpy(every[:, -1]), torch.from_numpy(predict(model, loader)), atol=1e-5)
    labels = torch.tensor([f["labels"] for f in data.features])
    for i, layer in enumerate(heads.layers):
        acc = (torch.from_numpy(every[:, i]).argmax(-1) == labels).float().mean().item()
        assert acc == pytest.approx(m["exits"][str(layer)]["accuracy"])


@pytest.mark.parametrize("pool", ["mean", "cls"])
def test_loss_parts_against_an_independent_computation(tiny_teacher_run, tiny_bert, pool):
    d = tiny_teacher_run
    T, hard, w = 2.0, 0.7, 0.4
    hint = {"name": "hint", "tap": "mean", "loss": "mse", "weight": 3.0, "pairs": [[2, 4]]}
    recipe = load_recipe("recipes/self-distill.yaml", [
        ("data.dir", str(d / "sst2")), ("student.init", str(tiny_bert)), ("exits.layers", "1,3"),
        ("exits.pool", pool), ("hard_weight", hard), ("terms.kd.args.temperature", T), ("terms.kd.weight", w)])
    recipe.terms.append(type(recipe.terms[0])(**hint))
    task = resolve_task(recipe)
    scheme = SCHEMES["self"](recipe, task, load_split(task, recipe, "train"), load_split(task, recipe, "dev"))
    scheme.setup(lambda: torch.manual_seed(0))
    scheme.model.eval(), scheme.heads.eval()  # no dropout: the same outputs in both computations
    batch = next(iter(eval_loader(scheme.train_set, scheme.tokenizer, 8)))
    parts = scheme.loss_parts(batch)
    assert set(parts) == {"task", "task@1", "kd@1", "task@3", "kd@3", "hint"}

    inputs, y = model_inputs(batch), batch["labels"]
    with torch.no_grad():
        out = scheme.model(**inputs, output_hidden_states=True)
    mask = inputs["attention_mask"].unsqueeze(-1).float()

    def pooled(layer, how=pool):
        h = out.hidden_states[layer]
        return h[:, 0] if how == "cls" else (h * mask).sum(1) / mask.sum(1)

    p_final = torch.softmax(out.logits / T, -1)
    expected = {"task": (1.0, F.cross_entropy(out.logits, y)),
                "hint": (3.0, ((pooled(2, "mean") - pooled(4, "mean")) ** 2).mean())}
    for layer in (1, 3):
        z = scheme.heads.heads[str(layer)](pooled(layer))
        log_q = torch.log_softmax(z / T, -1)
        expected[f"task@{layer}"] = (hard, F.cross_entropy(z, y))
        expected[f"kd@{layer}"] = (w, (p_final * (p_final.log() - log_q)).sum(-1).mean() * T * T)
    for name, (weight, value) in expected.items():
        assert parts[name][0] == pytest.approx(weight), name
        assert parts[name][1].item() == pytest.approx(value.item(), rel=1e-5, abs=1e-7), name
    # the last layer teaches without learning from the exits: the KD parts send it no gradient
    parts["kd@1"][1].backward()
    assert scheme.model.classifier.weight.grad is None or not scheme.model.classifier.weight.grad.any()
    assert scheme.heads.heads["1"][0].weight.grad.abs().sum() > 0


def test_threshold_zero_is_the_full_model_and_a_huge_one_the_first_exit(self_run, loaded, tiny_teacher_run, capsys):
    model, heads, tokenizer, data = loaded
    loader = eval_loader(data, tokenizer, 50)
    every = torch.from_numpy(predict_exits(model, heads, loader)).unbind(1)
    full = torch.from_numpy(predict(model, loader))
    chosen, layers = early_exit(every, heads.layers, 0.0)
    assert torch.equal(chosen, every[-1]) and (layers == 4).all()
    assert torch.allclose(chosen, full, atol=1e-5)
    chosen, layers = early_exit(every, heads.layers, 2.0)
    assert torch.equal(chosen, every[0]) and (layers == 1).all()
    # the CLI reports the same
    base = ["evaluate", "--model", str(self_run / "model"), "--task", "sst2", "--data-dir", str(tiny_teacher_run / "sst2")]
    assert main(base) == 0
    plain = json.loads(capsys.readouterr().out)["metrics"]["accuracy"]
    labels = torch.tensor([f["labels"] for f in data.features])
    first_exit = (every[0].argmax(-1) == labels).float().mean().item()
    for threshold, layer, acc in ((0, 4, plain), (2, 1, first_exit)):
        assert main([*base, "--exit-threshold", str(threshold)]) == 0
        r = json.loads(capsys.readouterr().out)["early_exit"]
        assert r["mean_layers"] == layer and r["stopped_at"][str(layer)] == 100 and r["latency"]["mean_layers"] == layer
        assert r["metrics"]["accuracy"] == pytest.approx(acc)
    # --predictions with a threshold: each row's early-exit prediction and the layer it stopped at
    out = tiny_teacher_run / "exit-predictions.jsonl"
    for threshold, z, layer in ((0, full, 4), (2, every[0], 1)):
        assert main([*base, "--exit-threshold", str(threshold), "--predictions", str(out)]) == 0
        capsys.readouterr()
        rows = [json.loads(x) for x in out.read_text().splitlines()]
        assert [r["exit_layer"] for r in rows] == [layer] * 100
        assert [r["prediction"] for r in rows] == [["0", "1"][k] for k in z.argmax(-1).tolist()]
    # a threshold where rows stop at different exits: each row's layer and prediction as early_exit gives them
    # (about half the rows stop at the first exit). The threshold lies midway in the widest gap between
    # any exit's entropies near the first exit's median, never on a row's own entropy: the CLI's pass
    # (its own batches) differs from this one by float rounding, which must not move a row across it
    first = entropy(every[0]).sort().values
    near = torch.stack([entropy(z) for z in every]).flatten().sort().values
    near = near[(near >= first[len(first) // 4]) & (near <= first[3 * len(first) // 4])]
    k = int((near[1:] - near[:-1]).argmax())
    threshold = float((near[k] + near[k + 1]) / 2)
    assert near[k + 1] - near[k] > 1e-4
    chosen, layers = early_exit(every, heads.layers, threshold)
    assert len(set(layers.tolist())) > 1, "the threshold does not split the rows between exits"
    assert main([*base, "--exit-threshold", str(threshold), "--predictions", str(out)]) == 0
    capsys.readouterr()
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["exit_layer"] for r in rows] == layers.tolist()
    assert [r["prediction"] for r in rows] == [["0", "1"][k] for k in chosen.argmax(-1).tolist()]
    # the same rows without labels (a test file): predictions, no metrics
    dev = (tiny_teacher_run / "sst2" / "dev.tsv").read_text().splitlines()
    test = tiny_teacher_run / "exit-test.tsv"
    test.write_text("sentence\n" + "".join(line.rsplit("\t", 1)[0] + "\n" for line in dev[1:]))
    assert main([*base[:5], "--file", str(test), "--exit-threshold", "2", "--predictions", str(out)]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["metrics"] is None and r["early_exit"]["metrics"] is None and set(r["exits"].values()) == {None}
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["prediction"] for x in rows] == [["0", "1"][k] for k in every[0].argmax(-1).tolist()]


def test_real_batch_one_early_stop_matches_the_simulated_rule(loaded):
    model, heads, tokenizer, data = loaded
    collate = Collator(tokenizer, False)
    rows = [collate([data[i]]) for i in range(40)]
    per_row = [torch.cat(exit_logits(model, heads, row)) for row in rows]  # (exits, classes) each
    # a threshold between two first-exit entropies (no ties): some rows stop early, others run deeper
    first = sorted(entropy(z[0]).item() for z in per_row)
    threshold = (first[len(first) // 2] + first[len(first) // 2 + 1]) / 2
    ran = []
    top = heads.n_layers - 1
    handle = find_layers(model)[1][top].register_forward_hook(lambda *a: ran.append(True))
    try:
        stops = []
        for row, z in zip(rows, per_row):
            want, want_layer = early_exit(z.unsqueeze(1), heads.layers, threshold)
            ran.clear()
            got, layer = early_exit_forward(model, heads, row, threshold)
            assert layer == want_layer.item() and torch.allclose(got, want, atol=1e-6)
            assert bool(ran) == (layer == heads.n_layers)  # the last layer never ran for an early stop
            stops.append(layer)
    finally:
        handle.remove()
    assert min(stops) == 1 and max(stops) > 1


def test_exit_sweep_and_plot(self_run, tiny_teacher_run, tmp_path, capsys):
    png = tmp_path / "sweep.png"
    teacher = tiny_teacher_run / "teacher"
    assert main(["evaluate", "--model", str(self_run / "model"), "--task", "sst2", "--data-dir",
                 str(tiny_teacher_run / "sst2"), "--exit-sweep", "--plot", str(png),
                 "--compare", str(teacher), "--compare", f"the teacher={teacher / 'model'}"]) == 0
    captured = capsys.readouterr()
    r = json.loads(captured.out)
    # --compare: a run folder stands for its model/, labelled by the run's name; each is evaluated on the same
    # rows as evaluating it alone
    assert main(["evaluate", "--model", str(teacher / "model"), "--task", "sst2", "--data-dir",
                 str(tiny_teacher_run / "sst2")]) == 0
    alone = json.loads(capsys.readouterr().out)
    layers = json.loads((teacher / "model" / "config.json").read_text())["num_hidden_layers"]
    assert r["compare"] == {name: {"model": str(teacher / "model"), "layers": layers, "metrics": alone["metrics"]}
                            for name in ("teacher", "the teacher")}
    assert f"teacher: accuracy {alone['metrics']['accuracy']:.4f} at {layers} layers" in captured.err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [s["threshold"] for s in r["sweep"]] == [0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0]
    assert r["sweep"][0]["mean_layers"] == 4 and r["sweep"][0]["accuracy"] == r["metrics"]["accuracy"]
    mean_layers = [s["mean_layers"] for s in r["sweep"]]
    assert mean_layers == sorted(mean_layers, reverse=True)  # a higher threshold never runs more layers
    m = json.loads((self_run / "metrics.json").read_text())
    assert {k: pytest.approx(v["accuracy"]) for k, v in m["exits"].items()} == \
        {k: v["accuracy"] for k, v in r["exits"].items()}
    assert "threshold" in captured.err and "mean layers" in captured.err




def test_bad_input_gives_one_line_and_writes_nothing(tiny_teacher_run, tiny_bert, self_run, tmp_path, capsys):
    d = tiny_teacher_run
    out = tmp_path / "out"
    base = ["distill", "-r", "recipes/self-distill.yaml", "-o", str(out), "--data-dir", str(d / "sst2"),
            "--set", f"student.init={tiny_bert}", *FAST]
    fails_one_line([*base, "--set", "exits.layers=[1,9]"], capsys, "exits.layers=[1, 9]: the model has 4 layers", out)
    fails_one_line([*base, "--set", "student.layers=first:2", "--set", "exits.layers=3"], capsys,
           "exits.layers=3: the model has 2 layers", out)
    fails_one_line([*base, "--teacher", str(d / "teacher" / "model")], capsys,
           "teacher: scheme self: the model teaches itself; remove 'teacher'", out)
    fails_one_line([*base, "--set", "student.init=null"], capsys, "student.init:", out)
    fails_one_line([*base, "--set", "exits.layers=4"], capsys, "exits.layers: no exit below the last layer", out)
    fails_one_line([*base, "--set", "terms=[{name: att, tap: attention, loss: attention_kl, pairs: [[1, 4]]}]"], capsys,
           "terms[0] (att).tap: scheme self compares", out)
    fails_one_line([*base, "--set", "terms=[{name: h, tap: cls, loss: mse, pairs: [[1, 3]]}]"], capsys,
           "terms[0] (h).pairs: [1, 3]: scheme self pairs a lower layer 1..3 with the last layer 4", out)
    fails_one_line([*base, "--set", "terms=[{name: h, tap: cls, loss: mse, map: uniform}]"], capsys,
           "terms[0] (h).map: scheme self takes explicit pairs", out)
    # early exit on a model trained without exits; --plot without --exit-sweep
    report = tmp_path / "report.json"
    evaluate = ["evaluate", "--task", "sst2", "--data-dir", str(d / "sst2"), "--output", str(report)]
    fails_one_line([*evaluate, "--model", str(d / "teacher" / "model"), "--exit-threshold", "0.3"], capsys,
           "no exits.safetensors beside the model", report)
    fails_one_line([*evaluate, "--model", str(d / "teacher" / "model"), "--exit-sweep"], capsys, "exits.safetensors", report)
    fails_one_line([*evaluate, "--model", str(self_run / "model"), "--plot", str(tmp_path / "p.png")], capsys,
           "--plot: draws the --exit-sweep curve", report, tmp_path / "p.png")
    fails_one_line([*evaluate, "--model", str(self_run / "model"), "--compare", str(d / "teacher")], capsys,
           "--compare: places other models beside the --exit-sweep curve; add --exit-sweep", report)
    fails_one_line([*evaluate, "--model", str(self_run / "model"), "--exit-sweep", "--plot", str(tmp_path / "p.png"),
                    "--compare", f"KD={tmp_path / 'nowhere'}"], capsys,
           f"--compare KD={tmp_path / 'nowhere'}: {tmp_path / 'nowhere'} is no saved model or run folder", report,
           tmp_path / "p.png")
