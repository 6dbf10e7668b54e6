"""The one training loop: fine-tuning (no teacher) and offline distillation (frozen teacher).

    loss = hard_weight * task_loss(student, labels) + sum_k weight_k * term_k(student, teacher)

Methods differ only in their recipe's terms (see ``knowledge/terms.py``). The run writes into a
hidden ``.<out>.partial`` folder and renames it to ``<out>`` only when everything succeeded.
"""
from __future__ import annotations

import json
import logging
import math
import os
import platform
import random
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from . import TextDistillError, __version__
from .data.batching import encode, eval_loader, train_loader
from .data.readers import load_examples, resolve_file
from .data.tasks import Task, get_task, task_from_dict
from .evaluate import compute_metrics, model_inputs, predict
from .knowledge.terms import build_terms, check_term, term_where
from .models.loading import count_parameters, load_model, load_tokenizer
from .models.student import build_student, cls_spread
from .recipe import Recipe, dump_recipe
from .schemes.offline import LiveTeacher

log = logging.getLogger("textdistill")


def resolve_task(recipe: Recipe) -> Task:
    if isinstance(recipe.task, dict):
        return task_from_dict(recipe.task)
    return get_task(recipe.task)


def data_file(task: Task, recipe: Recipe, split: str) -> Path:
    explicit = getattr(recipe.data, split)
    if explicit:
        if not Path(explicit).is_file():
            raise TextDistillError(f"data.{split}: {explicit}: no such file")
        return Path(explicit)
    if not recipe.data.dir:
        raise TextDistillError(f"data.dir or data.{split}: say where the {split} data is")
    return resolve_file(task, split, recipe.data.dir)


def load_split(task: Task, recipe: Recipe, split: str):
    examples = load_examples(task, data_file(task, recipe, split))
    if split == "train" and recipe.data.train_rows and recipe.data.train_rows < len(examples):
        rng = random.Random(recipe.data.sample_seed)
        examples = examples.subset(sorted(rng.sample(range(len(examples)), recipe.data.train_rows)))
    return examples


def versions() -> dict:
    import accelerate
    import transformers

    return {"textdistill": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "accelerate": accelerate.__version__, "python": platform.python_version()}


def task_loss(task: Task, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if task.is_regression:
        return F.mse_loss(logits.squeeze(-1), labels)
    return F.cross_entropy(logits, labels)


def outputs_needed(term_cfgs) -> tuple[bool, bool]:
    """Whether the terms read hidden states, and attention maps."""
    return (any(t.tap not in ("logits", "attention") for t in term_cfgs),
            any(t.tap == "attention" for t in term_cfgs))


def loss_parts(student, teacher_source, terms, batch, task: Task, hard_weight: float, need_hidden: bool,
               need_attn: bool) -> dict[str, tuple[float, torch.Tensor]]:
    """The weighted pieces of one step's loss: ``{name: (weight, value)}`` (``task`` = the labels' loss)."""
    inputs = model_inputs(batch)
    s_out = student(**inputs, output_hidden_states=need_hidden, output_attentions=need_attn)
    parts = {}
    if hard_weight > 0:
        parts["task"] = (hard_weight, task_loss(task, s_out.logits, batch["labels"]))
    if teacher_source is not None:
        t_out = teacher_source(inputs, batch)
        for term in terms:
            parts[term.name] = (term.weight, term(s_out, t_out, inputs["attention_mask"]))
    return parts


def load_teacher(recipe: Recipe, task: Task, attentions: bool = False):
    teacher, head_new = load_model(recipe.teacher, task.num_labels, task.labels, attentions=attentions)
    if head_new:
        raise TextDistillError(f"teacher {recipe.teacher}: its classification head is missing, so it was never "
                               f"fine-tuned on the task; fine-tune it first (textdistill finetune)")
    return teacher.eval().requires_grad_(False)


def cache_ready(folder: Path) -> bool:
    from .schemes.cache import MANIFEST

    return (folder / MANIFEST).is_file()


def open_cache(recipe: Recipe, folder: Path, train_ex, tokenizer, n_student: int, teacher=None, tqdm=None,
               rebuild: bool = False):
    """The recipe's teacher cache: checked against the recipe and opened; built first if absent (or if
    ``rebuild``). Returns ``(CachedTeacher, manifest)``."""
    from transformers import AutoConfig

    from .models.loading import resolve_model_path
    from .schemes.cache import CachedTeacher, build_cache, cache_key, cache_plan, check_key, read_manifest

    task = resolve_task(recipe)
    teacher_path = resolve_model_path(recipe.teacher)
    n_teacher = AutoConfig.from_pretrained(teacher_path).num_hidden_layers
    plan = cache_plan(recipe.terms, n_teacher, n_student)
    key = cache_key(teacher=teacher_path, tokenizer=tokenizer, examples=train_ex, max_length=recipe.train.max_length,
                    plan=plan, dtype=recipe.teacher_cache.dtype)
    if rebuild or not cache_ready(folder):
        if teacher is None:
            teacher = load_teacher(recipe, task)
        t_tok = load_tokenizer(recipe.teacher)
        if t_tok.get_vocab() != tokenizer.get_vocab():
            raise TextDistillError(f"teacher {recipe.teacher} and the student's tokenizer have different vocabularies")
        out, tmp = prepare_output(folder, overwrite=rebuild)
        try:
            log.info("building the teacher cache %s: logits%s", folder,
                     "".join(f", {tap} of layers {layers}" for tap, layers in plan.items()))
            data = encode(tokenizer, train_ex, recipe.train.max_length, task.is_regression)
            build_cache(tmp, teacher_model=teacher, key=key, data=data, tokenizer=tokenizer,
                        batch_size=recipe.train.eval_batch_size, params_teacher=count_parameters(teacher), tqdm=tqdm)
            commit_output(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    manifest = read_manifest(folder)
    check_key(folder, manifest, key)
    return CachedTeacher(folder, manifest), manifest


def _setup_logging(folder: Path) -> logging.Handler:
    handler = logging.FileHandler(folder / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(handler)
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler) for h in log.handlers):
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(console)
    log.setLevel(logging.INFO)
    return handler


def _optimizer(student, terms, cfg):
    decay, no_decay = [], []
    for module in (student, terms):
        for name, p in module.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(p)
    # fused: one kernel for all parameters (measured on 2 CPU cores, a 17M-parameter student: 12 ms per
    # step instead of 71 ms, a third of a 3-layer fine-tuning step); the same update up to rounding
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr,
                             **({"fused": True} if cfg.fused_adamw else {}))


def save_projections(terms, folder: Path) -> None:
    """Projections trained with the student go next to the HF folder, never inside it."""
    state = {k: v.detach().contiguous().cpu() for k, v in terms.state_dict().items()}
    if not state:
        return
    from safetensors.torch import save_file

    save_file(state, str(folder / "projections.safetensors"),
              metadata={"terms": json.dumps([t.describe() for t in terms])})


def prepare_output(out_dir: str | os.PathLike, overwrite: bool) -> tuple[Path, Path]:
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise TextDistillError(f"{out}: output folder exists (use --overwrite to replace it)")
    tmp = out.parent / f".{out.name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return out, tmp


def commit_output(tmp: Path, out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def run(recipe: Recipe, out_dir: str | os.PathLike, overwrite: bool = False, distill: bool | None = None) -> dict:
    """Train a student (or fine-tune a model when the recipe has no teacher); returns metrics."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    if distill is True and (not recipe.teacher or not recipe.terms):
        raise TextDistillError("distill: the recipe needs a 'teacher' and at least one entry in 'terms'")
    if distill is False and (recipe.teacher or recipe.terms):
        raise TextDistillError("finetune: the recipe has a teacher or terms; use 'textdistill distill'")
    if recipe.terms and not recipe.teacher:
        raise TextDistillError("terms need a 'teacher'")
    if not recipe.student.init and not recipe.teacher:
        raise TextDistillError("student.init: name the model to fine-tune (a folder, a hub id or an alias)")
    for i, term in enumerate(recipe.terms):
        check_term(term, term_where(i, term))
    cfg = recipe.train
    task = resolve_task(recipe)
    # read and check the data before anything is loaded or written
    train_ex, dev_ex = load_split(task, recipe, "train"), load_split(task, recipe, "dev")
    out, tmp = prepare_output(out_dir, overwrite)
    handler = _setup_logging(tmp)
    try:
        metrics = _run(recipe, task, train_ex, dev_ex, tmp, Accelerator, set_seed, tqdm,
                       get_linear_schedule_with_warmup)
        metrics["data"] = {"train": train_ex.source, "dev": dev_ex.source}
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        log.removeHandler(handler)
        handler.close()
        commit_output(tmp, out)
    except BaseException:
        log.removeHandler(handler)
        handler.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote %s", out)
    return metrics


def cache_only(recipe: Recipe, out_dir: str | os.PathLike, overwrite: bool = False) -> dict:
    """``textdistill cache``: build (or check) the teacher cache of a recipe; returns its manifest."""
    from transformers import AutoConfig

    from .models.loading import resolve_model_path
    from .models.student import parse_layer_spec
    from tqdm.auto import tqdm

    if not recipe.teacher:
        raise TextDistillError("cache: the recipe needs a 'teacher'")
    for i, term in enumerate(recipe.terms):
        check_term(term, term_where(i, term))
    task = resolve_task(recipe)
    train_ex = load_split(task, recipe, "train")
    init = recipe.student.init or recipe.teacher
    n_student = len(parse_layer_spec(recipe.student.layers,
                                     AutoConfig.from_pretrained(resolve_model_path(init)).num_hidden_layers))
    folder = Path(out_dir)
    _, manifest = open_cache(recipe, folder, train_ex, load_tokenizer(init), n_student, tqdm=tqdm,
                             rebuild=overwrite and folder.exists())
    return manifest


def _run(recipe, task, train_ex, dev_ex, tmp, Accelerator, set_seed, tqdm, get_schedule) -> dict:
    cfg = recipe.train
    (tmp / "recipe.yaml").write_text(dump_recipe(recipe))
    labels = task.labels
    need_hidden, need_attn = outputs_needed(recipe.terms)

    init = recipe.student.init or recipe.teacher
    cache_dir = Path(recipe.teacher_cache.dir) if recipe.teacher and recipe.teacher_cache.dir else None
    teacher = None
    # with a ready cache the teacher is not loaded (unless the student copies its layers)
    if recipe.teacher and (cache_dir is None or not cache_ready(cache_dir) or init == recipe.teacher):
        teacher = load_teacher(recipe, task, attentions=need_attn)
    # seeded after the teacher is loaded (loading may draw random numbers): a run from the cache (no
    # teacher loaded) builds the same student, projections and batches as a run with the live teacher
    set_seed(cfg.seed)
    if init == recipe.teacher:
        source = teacher
    else:
        source, head_new = load_model(init, task.num_labels, labels, attentions=need_attn, new_head_ok=True)
        if head_new:
            log.info("student init %s: new classification head for %d labels", init, task.num_labels)
    student, mapping = build_student(source, recipe.student.layers)
    if source is not teacher:
        del source
    student.config.id2label = dict(enumerate(labels)) if labels else {0: "score"}
    student.config.label2id = {v: k for k, v in student.config.id2label.items()}
    log.info("student from %s: %s", init, ", ".join(f"S{s}<-T{t}" for s, t in mapping.items()))

    tokenizer = load_tokenizer(init)
    if teacher is not None and cache_dir is None:
        t_tok = tokenizer if init == recipe.teacher else load_tokenizer(recipe.teacher)
        if t_tok.get_vocab() != tokenizer.get_vocab() or teacher.config.vocab_size != student.config.vocab_size:
            raise TextDistillError(f"teacher {recipe.teacher} and student init {init} have different vocabularies "
                                   f"(teacher and student must share one tokenizer)")

    train_set = encode(tokenizer, train_ex, cfg.max_length, task.is_regression)
    dev_set = encode(tokenizer, dev_ex, cfg.max_length, task.is_regression)
    log.info("task %s: %d train rows (%s), %d dev rows (%s)", task.name, len(train_ex), train_ex.source,
             len(dev_ex), dev_ex.source)
    spread = cls_spread(student, model_inputs(next(iter(eval_loader(train_set, tokenizer, 16)))))
    if spread < 1e-3:
        log.warning("student (%s, layers %s): its last layer's [CLS] vector hardly depends on the input (relative "
                    "spread %.1e over 16 training examples), so a classifier on it learns slowly; try other layers "
                    "(student.layers=every:2) or more epochs", init, recipe.student.layers, spread)

    teacher_config, params_teacher = (teacher.config, count_parameters(teacher)) if teacher is not None else (None, None)
    cached = None
    if cache_dir is not None:
        cached, manifest = open_cache(recipe, cache_dir, train_ex, tokenizer, student.config.num_hidden_layers,
                                      teacher, tqdm)
        teacher_config, params_teacher = SimpleNamespace(**manifest["teacher_config"]), manifest["params_teacher"]
        log.info("teacher outputs from the cache %s (%s)", cache_dir, ", ".join(
            ["logits"] + [f"{tap} of layers {layers}" for tap, layers in manifest["key"]["taps"].items()]))
    terms = build_terms(recipe.terms, teacher_config=teacher_config or student.config,
                        student_config=student.config, regression=task.is_regression, seed=cfg.seed)
    accelerator = Accelerator(cpu=cfg.cpu, mixed_precision=cfg.mixed_precision)
    loader = train_loader(train_set, tokenizer, cfg.batch_size, cfg.seed, cfg.length_grouped,
                          pad_to=cfg.max_length if cfg.pad_to_max_length else None)
    total_steps = max(1, math.ceil(len(loader) * cfg.epochs))
    optimizer = _optimizer(student, terms, cfg)
    scheduler = get_schedule(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
    student, terms, optimizer, loader, scheduler = accelerator.prepare(student, terms, optimizer, loader, scheduler)
    teacher_source = None
    if cached is not None:
        teacher_source, teacher = cached, None  # the teacher model is never run
    elif teacher is not None:
        teacher_source = LiveTeacher(teacher.to(accelerator.device), hidden_states=need_hidden,
                                     attentions=need_attn)

    history, step, eval_seconds, step_seconds, t0 = [], 0, 0.0, [], time.perf_counter()
    for epoch in range(math.ceil(cfg.epochs)):
        for term in terms:
            term.set_epoch(epoch)
            log.info("epoch %d term %s", epoch + 1, term.describe())
        student.train()
        sums: dict[str, float] = {}
        bar = tqdm(loader, desc=f"epoch {epoch + 1}", leave=False, mininterval=2,
                   total=min(len(loader), total_steps - step))
        t_prev = time.perf_counter()
        for batch in bar:
            parts = loss_parts(student, teacher_source, terms, batch, task, recipe.hard_weight, need_hidden, need_attn)
            loss = sum(w * v for w, v in parts.values())
            if not torch.isfinite(loss):
                raise TextDistillError(f"loss became {loss.item()} at step {step + 1} (lower train.lr?)")
            accelerator.backward(loss)
            if cfg.grad_clip:
                accelerator.clip_grad_norm_(list(student.parameters()) + list(terms.parameters()), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            now = time.perf_counter()
            step_seconds.append(now - t_prev)  # batch loading included
            t_prev = now
            for name, (_, v) in parts.items():
                sums[name] = sums.get(name, 0.0) + v.item()
            if step % 50 == 0:
                bar.set_postfix({k: f"{v / (bar.n + 1):.4f}" for k, v in sums.items()})
            if step >= total_steps:
                break
        n = max(1, bar.n)
        t_eval = time.perf_counter()
        dev = compute_metrics(task, predict(student, eval_loader(dev_set, tokenizer, cfg.eval_batch_size)),
                              dev_ex.labels)
        eval_seconds += time.perf_counter() - t_eval
        history.append({"epoch": epoch + 1, "step": step, "seconds": round(time.perf_counter() - t0, 1),
                        "loss": {k: round(v / n, 6) for k, v in sums.items()}, "dev": dev,
                        "terms": [t.describe() for t in terms if t.tap != "logits"]})
        log.info("epoch %d step %d: loss %s dev %s", epoch + 1, step, history[-1]["loss"], dev)
    train_seconds = time.perf_counter() - t0 - eval_seconds  # dev evaluation after each epoch excluded

    student = accelerator.unwrap_model(student)
    student.save_pretrained(tmp / "model")
    tokenizer.save_pretrained(tmp / "model")
    save_projections(accelerator.unwrap_model(terms), tmp)
    (tmp / "student_layers.json").write_text(json.dumps({"init": init, "student_from_teacher_layers":
                                                        {str(s): t for s, t in mapping.items()}}, indent=2) + "\n")
    return {
        "task": task.name, "method": recipe.method, "teacher": recipe.teacher, "student_init": init,
        "student_layers": len(mapping), "student_from_teacher_layers": {str(s): t for s, t in mapping.items()},
        "terms": [t.describe() for t in terms], "dev": history[-1]["dev"], "main_metric": task.main_metric,
        "history": history, "params_teacher": params_teacher, "teacher_cache": str(cache_dir) if cache_dir else None,
        "params_student": count_parameters(student), "train_rows": len(train_ex), "train_steps": step,
        "train_seconds": round(train_seconds, 1), "eval_seconds": round(eval_seconds, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "step_seconds": {"median": round(statistics.median(step_seconds), 4),
                         "p90": round(sorted(step_seconds)[int(0.9 * (len(step_seconds) - 1))], 4)}, "seed": cfg.seed, "versions": versions(),
    }
