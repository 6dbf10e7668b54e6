"""Recipes: every shipped recipe validates; bad keys are named with their file; overrides."""
from pathlib import Path

import pytest

from textdistill import TextDistillError
from textdistill.recipe import load_recipe, parse_overrides

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_shipped_recipes_validate_and_are_short(path):
    recipe = load_recipe(str(path))
    assert recipe.method == path.stem
    assert len(path.read_text().splitlines()) <= 30


def test_pkd_recipes_follow_the_paper():
    r = load_recipe(str(RECIPES[0].parent / "pkd-skip.yaml"))
    ds, pt = r.terms
    assert (ds.loss, ds.tap, pt.loss, pt.tap, pt.map) == ("soft_ce", "logits", "pkd_mse", "cls", "pkd-skip")
    assert r.hard_weight + ds.weight == pytest.approx(1.0)  # (1 - alpha) and alpha
    assert load_recipe(str(RECIPES[0].parent / "pkd-last.yaml")).terms[1].map == "pkd-last"


def test_overrides():
    path = str(RECIPES[0].parent / "pkd-skip.yaml")
    r = load_recipe(path, parse_overrides(["train.lr=3e-5", "terms.ds.args.temperature=10", "terms.1.weight=100",
                                           "student.layers=[1,3]", "data.train_rows=50"]))
    assert r.train.lr == 3e-5 and r.terms[0].args["temperature"] == 10 and r.terms[1].weight == 100
    assert r.student.layers == [1, 3] and r.data.train_rows == 50


def test_bad_recipes(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: kd\ntask: sst2\ntrain:\n  lrr: 0.1\n")
    with pytest.raises(TextDistillError, match=r"bad.yaml: unknown key 'train.lrr'"):
        load_recipe(str(bad))
    bad.write_text("method: kd\ntask: sst2\nterms:\n  - {name: kd, loss: kd_kl, wieght: 1}\n")
    with pytest.raises(TextDistillError, match=r"bad.yaml: unknown key 'terms.0.wieght'"):
        load_recipe(str(bad))
    bad.write_text("method: kd\ntask: sst2\ntrain: {epochs: -1}\n")
    with pytest.raises(TextDistillError, match=r"bad.yaml: train.epochs"):
        load_recipe(str(bad))
    bad.write_text("task: sst2\n")
    with pytest.raises(TextDistillError, match=r"missing key 'method'"):
        load_recipe(str(bad))
    bad.write_text("method: [unclosed\n")
    with pytest.raises(TextDistillError, match=r"bad.yaml:2:1: invalid YAML: .*flow sequence on line 1"):
        load_recipe(str(bad))
    with pytest.raises(TextDistillError, match="no entry 'kd2'"):
        load_recipe(str(RECIPES[0].parent / "kd.yaml"), [("terms.kd2.weight", 1)])
    with pytest.raises(TextDistillError, match="expected KEY=VALUE"):
        parse_overrides(["train.lr"])
    with pytest.raises(TextDistillError, match="recipe not found"):
        load_recipe(str(tmp_path / "none.yaml"))
