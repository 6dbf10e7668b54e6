"""Teacher sources: where a frozen teacher's outputs on a training batch come from.

A source is called with the student's inputs and the batch (``source(inputs, batch)``) and returns an
object with ``logits`` (and ``hidden_states`` / ``attentions``, or ``pooled`` vectors from a cache)
that the knowledge terms read. Kinds:

* the live teacher on the student's tokens (same tokenizer);
* the live teacher on its *own* tokens: a teacher with another tokenizer (MPNet teaching a BERT-vocabulary
  student) encodes the raw training texts itself once, and the batch's example indices (``batch['idx']``)
  pick its rows, so it sees the same examples as the student; only logit terms may read such a teacher;
* the teacher-output cache (``schemes/cache.py``), keyed by the teacher's own tokenizer, read by index;
* several teachers whose logits are averaged with weights into one soft target (multi-teacher).

Every teacher is checked the same way: it must have a fine-tuned classification head for the task.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import torch

from .. import TextDistillError
from ..dist import local_device
from ..data.batching import Collator, encode
from ..evaluate import model_inputs
from ..files import build_lock
from ..models.checks import check_finite_parameters
from ..models.loading import count_parameters, load_model, load_tokenizer, resolve_model_path

log = logging.getLogger("textdistill")


def teacher_list(recipe) -> list[dict]:
    """The recipe's teachers as ``[{name, model, weight, cache}]`` (one entry for ``teacher:``), checked."""
    if recipe.teacher and recipe.teachers:
        raise TextDistillError("teacher, teachers: give one teacher or a list of teachers, not both")
    if recipe.teacher:
        return [{"name": "teacher", "model": recipe.teacher, "weight": 1.0, "cache": recipe.teacher_cache.dir}]
    out, names = [], set()
    for i, t in enumerate(recipe.teachers):
        name = t.name or f"t{i + 1}"
        if name in names:
            raise TextDistillError(f"teachers[{i}].name: duplicate teacher name '{name}'")
        if t.weight < 0:
            raise TextDistillError(f"teachers[{i}].weight: {t.weight} is negative")
        names.add(name)
        cache = t.cache or (str(Path(recipe.teacher_cache.dir) / name) if recipe.teacher_cache.dir else None)
        out.append({"name": name, "model": t.model, "weight": t.weight, "cache": cache})
    if out and sum(t["weight"] for t in out) <= 0:
        raise TextDistillError("teachers: the weights sum to 0 (give at least one teacher a positive weight)")
    return out


def load_teacher(name: str, task, attentions: bool = False):
    teacher, head_new = load_model(name, task.num_labels, task.labels, attentions=attentions)
    if head_new:
        raise TextDistillError(f"teacher {name}: its classification head is missing, so it was never "
                               f"fine-tuned on the task; fine-tune it first (textdistill finetune)")
    check_finite_parameters(teacher, f"teacher {name}", cause="it was saved by a run that went NaN; fine-tune it "
                                                              "again (a lower train.lr?)")
    return teacher.eval().requires_grad_(False)


def same_vocabulary(a, b) -> bool:
    return a is b or a.get_vocab() == b.get_vocab()


class LiveTeacher:
    """The frozen teacher run on every batch. With ``own`` (an Encoded set of the training texts in
    the teacher's tokenization, and the teacher's tokenizer) it reads its own rows of the batch's
    examples instead of the student's inputs."""

    def __init__(self, model, hidden_states: bool = False, attentions: bool = False, own=None):
        self.model = model.eval().requires_grad_(False)
        self.hidden_states, self.attentions = hidden_states, attentions
        self.own = None
        if own is not None:
            data, tokenizer = own
            self.own = (data, Collator(tokenizer, data.regression))

    @torch.no_grad()
    def __call__(self, inputs: dict, batch: dict):
        if self.own is not None:
            data, collate = self.own
            device = inputs["input_ids"].device
            own = collate([data[i] for i in batch["idx"].tolist()])
            inputs = {k: v.to(device) for k, v in model_inputs(own).items()}
        return self.model(**inputs, output_hidden_states=self.hidden_states, output_attentions=self.attentions)


class MixedTeachers:
    """Several teacher sources whose logits are averaged with weights (the survey's multi-teacher soft
    target); each source's own outputs stay readable by name for intermediate terms."""

    def __init__(self, sources: dict, weights: dict[str, float]):
        total = sum(weights.values())
        self.sources, self.weights = sources, {k: w / total for k, w in weights.items()}

    def __call__(self, outputs: dict):
        logits = sum(self.weights[k] * outputs[k].logits.float() for k in self.sources if self.weights[k])
        return SimpleNamespace(logits=logits, pooled=None, hidden_states=None, attentions=None)


def cache_ready(folder: Path) -> bool:
    from .cache import MANIFEST

    return (Path(folder) / MANIFEST).is_file()


def check_output_path(out: Path) -> None:
    """An output folder must be a new or replaceable folder: not a file, not the current folder or one above it
    (``--overwrite`` would delete it), and its parent must be creatable."""
    where = Path.cwd().resolve()
    resolved = out.expanduser().resolve()
    if out.name in ("", ".", "..") or resolved == where or resolved in where.parents or resolved == Path.home():
        raise TextDistillError(f"{out}: cannot be an output folder (it is the current folder, one above it or your "
                               f"home, which --overwrite would delete); name a new folder, e.g. runs/x")
    if out.exists() and not out.is_dir():
        raise TextDistillError(f"{out}: cannot be an output folder (a file of that name exists)")
    parent = next((p for p in [out.parent, *out.parent.parents] if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise TextDistillError(f"{out}: cannot be created ({parent} is a file, not a folder)")
    if parent is not None and not os.access(parent, os.W_OK | os.X_OK):
        raise TextDistillError(f"{out}: cannot be created (no permission to write in {parent})")


def resumable_partial(tmp: Path) -> bool:
    """A run's (or a chain's) ``.partial`` holding a checkpoint or a finished link."""
    from ..checkpoint import present

    return tmp.is_dir() and (present(tmp) or any(tmp.glob("*/metrics.json"))
                             or any(present(p) for p in tmp.glob(".*.partial")))


def prepare_output(out_dir, overwrite: bool, resume: bool = False, create: bool = True) -> tuple[Path, Path]:
    """``(out, tmp)``: results are written into the hidden ``.<out>.partial`` and renamed on success
    (``resume``: the interrupted run's ``.partial`` is kept and continued). ``create=False`` checks only (the
    processes other than rank 0 of a multi-process run)."""
    out = Path(out_dir)
    check_output_path(out)
    tmp = out.parent / f".{out.name}.partial"
    if resume:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise TextDistillError(f"--resume: {out} exists, the run is complete")
        if not tmp.is_dir():
            raise TextDistillError(f"--resume: no interrupted run of {out} (no {tmp})")
        return out, tmp
    if out.exists() and not overwrite and not (out.is_dir() and not any(out.iterdir())):  # (an empty one is used)
        raise TextDistillError(f"{out}: output folder exists (use --overwrite to replace it)")
    if not overwrite and resumable_partial(tmp):  # (hours of training are not thrown away unasked)
        raise TextDistillError(f"{out}: an interrupted run is kept in {tmp}: continue it with --resume, or start "
                               f"again with --overwrite")
    if not create:
        return out, tmp
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir(parents=True)
    except OSError as e:
        raise TextDistillError(f"{out}: cannot create the output folder ({e.strerror})") from None
    return out, tmp


def commit_output(tmp: Path, out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


class on_device:
    """``with on_device(model, device):`` the model on ``device`` for the block (a teacher pass before the loop
    places the modules: the dev check, the cache build), back where it was after."""

    def __init__(self, model, device):
        self.model, self.device = model, device
        self.home = next(model.parameters()).device if model is not None else None

    def __enter__(self):
        if self.model is not None and self.device is not None and self.device != self.home:
            self.model.to(self.device)
        return self.model

    def __exit__(self, *exc):
        if self.model is not None and self.device is not None and self.device != self.home:
            self.model.to(self.home)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()


def open_cache(*, teacher: str, task, folder: Path, train_ex, tokenizer, term_cfgs, n_student: int, max_length: int,
               dtype: str, batch_size: int, model=None, tqdm=None, rebuild: bool = False, runtime: str = "onnx",
               device=None, teacher_check: dict | None = None):
    """The teacher cache of ``teacher`` (tokenized with its own ``tokenizer``) for the terms ``term_cfgs``:
    checked against them and opened; built first if absent (or if ``rebuild``), with the teacher on ``device``
    (a GPU: PyTorch there; the CPU: ``runtime``); ``teacher_check``, the teacher's dev score, goes into a new
    cache's manifest. Returns ``(CachedTeacher, manifest)``."""
    from transformers import AutoConfig

    from .cache import CachedTeacher, build_cache, cache_key, cache_plan, check_key, read_manifest

    folder = Path(folder)
    teacher_path = resolve_model_path(teacher)
    n_teacher = AutoConfig.from_pretrained(teacher_path).num_hidden_layers
    plan = cache_plan(term_cfgs, n_teacher, n_student)
    key = cache_key(teacher=teacher_path, tokenizer=tokenizer, examples=train_ex, max_length=max_length,
                    plan=plan, dtype=dtype, runtime=runtime)
    if rebuild or not cache_ready(folder):
        with build_lock(folder, "teacher cache"):
            if rebuild or not cache_ready(folder):  # (not built by another process while this one waited)
                if model is None:
                    model = load_teacher(teacher, task)
                if folder.is_dir() and any(folder.iterdir()) and not rebuild:
                    raise TextDistillError(f"{folder}: not a teacher cache (no cache.json) and not empty; "
                                           f"point teacher_cache.dir at a new folder")
                out, tmp = prepare_output(folder, overwrite=True)
                try:
                    log.info("building the teacher cache %s: logits%s", folder,
                             "".join(f", {tap} of layers {layers}" for tap, layers in plan.items()))
                    data = encode(tokenizer, train_ex, max_length, task.is_regression)
                    with on_device(model, device):
                        build_cache(tmp, teacher_model=model, key=key, data=data, tokenizer=tokenizer,
                                    batch_size=batch_size, params_teacher=count_parameters(model), tqdm=tqdm,
                                    runtime=runtime, teacher_check=teacher_check)
                    commit_output(tmp, out)
                except BaseException:
                    shutil.rmtree(tmp, ignore_errors=True)
                    raise
    manifest = read_manifest(folder)
    check_key(folder, manifest, key)
    return CachedTeacher(folder, manifest), manifest


def _weak_allowed(allow_weak: bool) -> bool:
    return allow_weak or os.environ.get("TEXTDISTILL_ALLOW_WEAK_TEACHER") == "1"


def check_teacher(model, name: str, tokenizer, dev_ex, task, max_length: int, allow_weak: bool,
                  device=None) -> dict | None:
    """Score the teacher on a sample of the dev rows; near chance (:func:`~..models.checks.is_near_chance`) it is
    refused with one line, or only warned about with ``allow_weak`` (``--allow-weak-teacher``) or the environment
    variable ``TEXTDISTILL_ALLOW_WEAK_TEACHER=1`` (smoke tests on tiny random models: the test suite sets it).
    Returns ``{metric, score, chance, rows, near_chance}`` (what a cache built next records), None unchecked."""
    from ..models.checks import ROWS_CHECKED, is_near_chance, teacher_near_chance, weak_teacher_message

    if dev_ex.labels is None or task.is_regression and len(dev_ex) < 3:
        return None
    with on_device(model, device):
        score, chance = teacher_near_chance(model, tokenizer, dev_ex, task, rows=ROWS_CHECKED, max_length=max_length)
    rows = min(ROWS_CHECKED, len(dev_ex))
    log.info("teacher %s: %s %.3f on %d dev rows (chance %.3f)", name, task.main_metric, score, rows, chance)
    weak = is_near_chance(score, chance)
    if weak:
        message = weak_teacher_message(name, task, score, chance, rows)
        if not _weak_allowed(allow_weak):
            raise TextDistillError(message)
        log.warning("teacher %s scores near chance (%s %.3f, chance %.3f); accepted (allow_weak_teacher)", name,
                    task.main_metric, score, chance)
    return {"metric": task.main_metric, "score": float(score), "chance": float(chance), "rows": rows,
            "near_chance": bool(weak)}


def check_cached_teacher(manifest: dict, name: str, task, folder, allow_weak: bool) -> None:
    """A ready cache whose teacher scored near chance when it was built (and was accepted then) is refused unless
    this run accepts a weak teacher too: the run reads that teacher's outputs without scoring it again."""
    from ..models.checks import weak_teacher_message

    c = manifest.get("teacher_check")
    if c and c.get("near_chance") and not _weak_allowed(allow_weak):
        raise TextDistillError(f"{folder}: this teacher cache was built from a teacher near chance, accepted then; "
                               + weak_teacher_message(name, task, c["score"], c["chance"], c["rows"]))


class Teacher:
    """One teacher of a run: its name, weight, tokenizer, config, parameter count and output source."""

    def __init__(self, *, name: str, model_name: str, weight: float, cache: str | None, task, train_ex,
                 student_tokenizer, term_cfgs, n_student: int, cfg, cache_dtype: str, hidden: bool,
                 cache_runtime: str = "onnx",
                 attentions: bool, model=None, tqdm=None, dev_ex=None, allow_weak: bool = False, tokenizer=None):
        self.name, self.model_name, self.weight, self.cache = name, model_name, weight, cache
        # (``tokenizer``: the teacher's own, where the caller has loaded it already)
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model_name)
        self.own_tokens = not same_vocabulary(self.tokenizer, student_tokenizer)
        if model is None and (cache is None or not cache_ready(Path(cache))):
            model = load_teacher(model_name, task, attentions=attentions)
        self.model = model
        checked = None
        if model is not None and dev_ex is not None:  # (a ready cache was checked when it was built: see below)
            checked = check_teacher(model, model_name, self.tokenizer, dev_ex, task, cfg.max_length, allow_weak,
                                    device=local_device(cfg.cpu))
        if cache is not None:
            self.source, manifest = open_cache(
                teacher=model_name, task=task, folder=Path(cache), train_ex=train_ex, tokenizer=self.tokenizer,
                term_cfgs=term_cfgs, n_student=n_student, max_length=cfg.max_length, dtype=cache_dtype,
                batch_size=cfg.eval_batch_size, model=model, tqdm=tqdm, runtime=cache_runtime,
                device=local_device(cfg.cpu), teacher_check=checked)
            if dev_ex is not None:
                check_cached_teacher(manifest, model_name, task, cache, allow_weak)
            self.config = SimpleNamespace(**manifest["teacher_config"])
            self.params = manifest["params_teacher"]
            log.info("teacher %s: outputs from the cache %s (%s)", name, cache, ", ".join(
                ["logits"] + [f"{tap} of layers {layers}" for tap, layers in manifest["key"]["taps"].items()]))
        else:
            if model is None:
                model = self.model = load_teacher(model_name, task, attentions=attentions)
            self.config, self.params = model.config, count_parameters(model)
            own = None
            if self.own_tokens:
                own = (encode(self.tokenizer, train_ex, cfg.max_length, task.is_regression), self.tokenizer)
                log.info("teacher %s: another tokenizer than the student's (%s); it reads its own tokens of "
                         "each batch's examples", name, type(self.tokenizer).__name__)
            self.source = LiveTeacher(model, hidden_states=hidden, attentions=attentions, own=own)

    def to(self, device):
        if isinstance(self.source, LiveTeacher):
            self.source.model.to(device)
        return self
