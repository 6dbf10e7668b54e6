"""The one training loop, for every scheme and method.

    loss = sum of weight * value over the parts the run's scheme returns for a batch

The *scheme* (``schemes/``: offline, online, self) owns the models, teachers and knowledge terms and
says what one step's loss parts are, how to evaluate and what to save; the *terms*
(``knowledge/terms.py``) say what a method compares. This loop steps, logs, evaluates and saves without
knowing either. The run writes into a hidden ``.<out>.partial`` folder and renames it to ``<out>``
only when everything succeeded. ``generations: N`` (born-again networks) chains N runs, each
generation the teacher of the next; ``stages:`` chains a general and a task distillation. An interrupted
chain keeps its finished links and the interrupted link's checkpoint: ``--resume`` continues it.
"""
from __future__ import annotations

import json
import logging
import math
import os
import platform
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from . import TextDistillError, __version__, checkpoint, dist, hardware
from .data import transfer
from .hardware import bf16_native  # noqa: F401 - part of this module's interface
from .data.batching import train_loader
from .files import output_lock
from .data.splits import data_file, load_split, resolve_task  # noqa: F401 - part of this module's interface
from .knowledge.terms import check_term, term_where
from .models.checks import check_finite_parameters, nonfinite_parameters
from .models.loading import load_tokenizer
from .recipe import Recipe, dump_recipe, resolve_references, stage_recipes
from .schemes import SCHEMES
from .schemes.base import outputs_needed, task_loss  # noqa: F401 - part of this module's interface
from .schemes.teachers import (cache_ready, check_cached_teacher, check_teacher, commit_output, load_teacher,
                               open_cache, prepare_output, resumable_partial, teacher_list)

log = logging.getLogger("textdistill")


def versions() -> dict:
    import accelerate
    import transformers

    return {"textdistill": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "accelerate": accelerate.__version__, "python": platform.python_version()}


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


def _optimizer(modules, cfg):
    decay, no_decay = [], []
    for module in modules:
        for name, p in module.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(p)
    # fused: one kernel for all parameters (measured on 2 CPU cores, a 17M-parameter student: 12 ms per
    # step instead of 71 ms, a third of a 3-layer fine-tuning step); the same update up to rounding
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr,
                             **({"fused": True} if cfg.fused_adamw else {}))


def check_command(recipe: Recipe, distill: bool | None) -> None:
    """``distill`` needs teachers and terms (or another scheme); ``finetune`` has neither."""
    has_teacher = bool(recipe.teacher or recipe.teachers)
    always = SCHEMES.get_or_fail(recipe.scheme, "scheme").always_distills
    if distill is True and not always and (not has_teacher or not recipe.terms):
        raise TextDistillError("distill: the recipe needs a 'teacher' and at least one entry in 'terms'")
    if distill is False and (has_teacher or recipe.terms or always):
        raise TextDistillError("finetune: the recipe has a teacher, terms or another scheme; use 'textdistill distill'")


def run(recipe: Recipe, out_dir: str | os.PathLike, overwrite: bool = False, distill: bool | None = None,
        resume: bool = False, any_version: bool = False) -> dict:
    """Train (distil, or fine-tune when the recipe has no teacher); returns metrics. With
    ``generations: N`` the run is repeated N times, each generation taught by the one before
    (``<out>/gen-1`` ... ``<out>/gen-N``, and a ``metrics.json`` over them). A second run naming the same
    output while this one runs is refused (``files.output_lock``)."""
    with output_lock(out_dir):
        return _run(recipe, out_dir, overwrite, distill, resume, any_version)


def _run(recipe: Recipe, out_dir, overwrite: bool, distill: bool | None, resume: bool, any_version: bool) -> dict:
    """:func:`run` under its lock (the links of a chain run through here: the chain's lock covers them)."""
    if recipe.stages or recipe.generations > 1:
        dist.single_process("stages / generations")
    chain = {"resume": resume, "any_version": any_version}
    if recipe.stages:
        return _stages(recipe, out_dir, overwrite, distill, **chain)
    check_command(recipe, distill)
    if recipe.generations > 1:
        return _generations(recipe, out_dir, overwrite, **chain)
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    t_start = time.perf_counter()  # run_seconds: the whole run as a user waits for it (data, models, cache, saving)
    task = resolve_task(recipe)
    # read and check the data and the recipe before anything is loaded or written
    scheme_cls = SCHEMES.get_or_fail(recipe.scheme, "scheme")
    train_ex, dev_ex = scheme_cls.load_data(recipe, task)
    transfer.check(recipe)
    if recipe.train.tensorboard:
        _summary_writer()
    # several processes (dist.py): rank 0 alone writes; the others wait for what it builds, then read it
    state = dist.init(recipe.train.cpu)
    main = state.is_main_process
    check_batch(recipe.train.batch_size, state.num_processes)
    scheme = scheme_cls(recipe, task, train_ex, dev_ex, tqdm=tqdm)
    prepare_output(out_dir, overwrite, resume=resume, create=False)  # (checks only: before a transfer set is built)
    # the transfer set: the training rows, then generated rows only the teacher labels (built once, reused)
    with state.main_process_first():
        scheme.train_ex = transfer.extend(recipe, train_ex, tqdm)
    out, tmp = prepare_output(out_dir, overwrite, resume=resume, create=main)
    if resume:  # refused before anything in the partial run is touched
        checkpoint.read(tmp, dump_recipe(recipe), str(tmp), any_version)
    state.wait_for_everyone()
    handler = _setup_logging(tmp) if main else None
    try:
        if main:
            (tmp / "recipe.yaml").write_text(dump_recipe(recipe))
        with state.main_process_first():  # (a teacher cache is built by rank 0)
            scheme.setup(lambda: set_seed(recipe.train.seed))
        metrics = _loop(scheme, tmp, tqdm, resume=resume, any_version=any_version)
        metrics["data"] = {"train": scheme.train_ex.source, "dev": dev_ex.source, "labelled_train_rows": sum(y is not None for y in scheme.train_ex.labels or [])}
        # (of a resumed run, this process's part only: its metrics say "resumed")
        metrics["run_seconds"] = round(time.perf_counter() - t_start, 1)
        if main:
            (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
            log.removeHandler(handler)
            handler.close()
            commit_output(tmp, out)
        state.wait_for_everyone()
    except BaseException as e:
        if handler is not None:
            log.removeHandler(handler)
            handler.close()
        if isinstance(e, KeyboardInterrupt) and checkpoint.present(tmp):
            raise Interrupted(f"interrupted; the run and its last checkpoint are kept in {tmp}: continue it with "
                              f"the same command and --resume") from None
        if checkpoint.present(tmp) and (resume or not isinstance(e, TextDistillError)):
            # a crash (out of memory, a full disk, a device error) after a checkpoint, or any stop of a resumed run
            # (a refusal the user can mend, such as a moved teacher cache): the work is kept for --resume; a new
            # run refused or gone NaN (TextDistillError) would only stop again there
            if not isinstance(e, TextDistillError):  # (a refusal stays one line; its run is kept all the same)
                log.error("%s: stopped by %s; the run and its last checkpoint are kept: continue it with the same "
                          "command and --resume", tmp, type(e).__name__)
            raise
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    if main:
        log.info("wrote %s", out)
    return metrics


class Interrupted(KeyboardInterrupt):
    """An interrupted run whose checkpoint was kept (the message says where)."""


def step_stats(step_seconds: list[float]) -> dict:
    """Median and 90th percentile (linear interpolation, as numpy's default) of the seconds per step."""
    return {"median": round(float(np.median(step_seconds)), 4),
            "p90": round(float(np.percentile(step_seconds, 90)), 4)}


def resumable(out_dir) -> bool:
    """Whether ``out_dir`` is an interrupted run that ``--resume`` continues: its ``.partial`` holds a
    checkpoint, or (a chain of runs) a finished link or an interrupted link's checkpoint."""
    out = Path(out_dir)
    tmp = out.parent / f".{out.name}.partial"
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        return False
    return resumable_partial(tmp)


def _chain(out_dir, overwrite: bool, names: list[str], make, finish=None, resume: bool = False,
           any_version: bool = False) -> dict:
    """Runs that build on each other (born-again generations, two-stage distillation): ``make(name, done)``
    gives the recipe of link ``name`` from ``done`` (the model folders of the links before it); each link is
    a complete run in ``<out>/<name>``; ``finish`` may reshape the summary (``<out>/metrics.json``). All links
    are written into ``.<out>.partial`` and renamed together, and the paths inside their metrics and recipes
    are rewritten to where the models end up. Stopped (interrupted, or an error) after a link finished or a
    checkpoint was written, the partial chain is kept; ``resume`` keeps its finished links (refused unless the
    chain makes the same recipe for them now, with the same code unless ``any_version``) and continues the
    interrupted one from its checkpoint."""
    out, tmp = prepare_output(out_dir, overwrite, resume=resume)
    if resume and not resumable(out):
        raise TextDistillError(f"--resume: {tmp} holds no finished link and no checkpoint to continue")
    try:
        done, results, codes = {}, [], set()
        for name in names:
            r, link = make(name, done), tmp / name
            if resume and (link / "metrics.json").is_file():
                m = _finished_link(link, r, tmp, out, any_version)
                codes.add(m.get("code"))
            else:
                m = _run(r, link, True, None, resume and resumable(link), any_version)
            done[name] = str(link / "model")
            results.append((name, m))
        for stale in set(p.name for p in tmp.iterdir()) - set(names) - {"metrics.json"}:  # links of a longer chain
            shutil.rmtree(tmp / stale)
        for name, m in results:
            for f in (tmp / name / "metrics.json", tmp / name / "recipe.yaml", tmp / name / "student_layers.json"):
                if f.is_file():  # (student_layers.json: a student sliced from an earlier link)
                    f.write_text(f.read_text().replace(str(tmp), str(out)))
            results[results.index((name, m))] = (name, json.loads((tmp / name / "metrics.json").read_text()))
        summary = {"task": results[-1][1]["task"], "main_metric": results[-1][1]["main_metric"],
                   "dev": results[-1][1]["dev"], "links": [{"name": n, "teacher": m.get("teacher"), "dev": m["dev"],
                                                          "train_seconds": m["train_seconds"],
                                                          "mixed_precision": m.get("mixed_precision")}
                                                         for n, m in results],
                   "mixed_precision": "+".join(sorted({m["mixed_precision"] for _, m in results
                                                       if m.get("mixed_precision")})) or None,
                   "train_seconds": round(sum(m["train_seconds"] for _, m in results), 1)}
        if resume:
            summary["resumed"] = True
            if codes - {checkpoint.code_hash()}:
                summary["resumed_across_code"] = sorted(str(c) for c in codes | {checkpoint.code_hash()})
        summary = finish(summary) if finish else summary
        (tmp / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
        commit_output(tmp, out)
    except BaseException as e:
        if resume and isinstance(e, TextDistillError):  # a refused --resume leaves the partial chain alone
            raise
        if resumable(out):
            if isinstance(e, KeyboardInterrupt):
                raise Interrupted(f"interrupted; the chain's finished links and last checkpoint are kept in {tmp}: "
                                  f"continue it with the same command and --resume") from None
            log.error("%s: stopped by an error; its finished links and last checkpoint are kept for --resume", tmp)
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def _finished_link(link: Path, recipe: Recipe, tmp: Path, out: Path, any_version: bool) -> dict:
    """The metrics of a link that finished before the chain stopped, kept by ``--resume`` only if the chain makes
    the same recipe for it now (its paths may already point to ``out``: stopped while the chain was committed)
    and, unless ``any_version``, it was trained by the same code."""
    old, new = (link / "recipe.yaml").read_text(), dump_recipe(recipe)
    if not any(checkpoint.same_training(old, n) for n in (new, new.replace(str(tmp), str(out)))):
        raise TextDistillError(f"--resume: {link} was made with another recipe (first difference: "
                               f"{checkpoint.first_difference(old, new)})")
    m = json.loads((link / "metrics.json").read_text())
    if m.get("code") != checkpoint.code_hash() and not any_version:
        raise TextDistillError(f"--resume: {link} was trained by another version of textdistill (source hash "
                               f"{m.get('code')}, now {checkpoint.code_hash()}); start the chain again, or keep "
                               f"the link with --resume-any-version")
    log.warning("%s: finished before the chain stopped, kept", link.name)
    return m


def _generations(recipe: Recipe, out_dir, overwrite: bool, **chain) -> dict:
    """Born-again networks (Furlanello et al. 2018): generation 1 learns from the recipe's teacher,
    generation g+1 from generation g; all share the student's architecture and initialisation."""
    if not SCHEMES.get_or_fail(recipe.scheme, "scheme").chains_generations:
        able = ", ".join(sorted(n for n, cls in SCHEMES.items() if cls.chains_generations))
        raise TextDistillError(f"generations: born-again runs need a scheme that chains generations ({able}); "
                               f"this recipe has scheme {recipe.scheme}")
    if not recipe.teacher:
        raise TextDistillError("generations: born-again runs need one 'teacher' (generation 1's; each next one is "
                               "taught by the generation before)")
    names = [f"gen-{g}" for g in range(1, recipe.generations + 1)]

    def make(name, done):
        # generation g+1's teacher is the chain's own generation g: the weak-teacher check (meant for a saved but
        # never trained head) would refuse a real student that scores near a constant predictor (MRPC F1, RTE)
        r = recipe.model_copy(update={"teacher": list(done.values())[-1] if done else recipe.teacher, "generations": 1,
                                      "allow_weak_teacher": recipe.allow_weak_teacher or bool(done)})
        if r.teacher_cache.dir:  # each generation has another teacher, so its own cache
            r = r.model_copy(update={"teacher_cache": r.teacher_cache.model_copy(
                update={"dir": str(Path(r.teacher_cache.dir) / name)})})
        return r

    def finish(summary):
        links = summary.pop("links")
        return {"method": recipe.method, **summary,
                "generations": [dict(link, generation=g) for g, link in enumerate(links, 1)]}
    return _chain(out_dir, overwrite, names, make, finish, **chain)


def _stages(recipe: Recipe, out_dir, overwrite: bool, distill: bool | None, **chain) -> dict:
    """Two-stage (or n-stage) distillation, TinyBERT-style: general distillation on unlabelled text, then
    task distillation starting from its student (``student.init: "@general"``). Every stage's recipe,
    data and scheme are checked before the first one runs."""
    stages = stage_recipes(recipe)
    if distill is False:
        raise TextDistillError("finetune: a recipe with stages distils; use 'textdistill distill'")
    from .models.loading import resolve_model_path

    inits = {}
    for i, (name, data) in enumerate(stages):  # check every stage now, earlier stages' inits standing in
        r = resolve_references(data, inits)
        refs = [("teacher", r.teacher), ("student.init", r.student.init)]
        refs += [(f"teachers[{j}].model", t.model) for j, t in enumerate(r.teachers)]
        for key, ref in refs:  # a later stage's missing model is found now, not after the general stage trained
            try:
                if ref:
                    resolve_model_path(ref)
            except TextDistillError as e:
                raise TextDistillError(f"stages[{i}] ({name}).{key}: {e}") from None
        inits[name] = r.student.init
        task = resolve_task(r)
        scheme_cls = SCHEMES.get_or_fail(r.scheme, "scheme")
        scheme_cls(r, task, *scheme_cls.load_data(r, task))
        transfer.check(r)

    def finish(summary):
        return {"method": recipe.method, **summary, "stages": summary.pop("links")}
    return _chain(out_dir, overwrite, [n for n, _ in stages],
                  lambda name, done: resolve_references(dict(stages)[name], done), finish, **chain)


def student_depth(recipe: Recipe) -> int:
    """The number of layers the recipe's student keeps (``student.layers`` of its ``student.init``, or the teacher)."""
    from transformers import AutoConfig

    from .models.loading import resolve_model_path
    from .models.student import parse_layer_spec

    init = resolve_model_path(recipe.student.init or recipe.teacher)
    return len(parse_layer_spec(recipe.student.layers, AutoConfig.from_pretrained(init).num_hidden_layers))


def cache_only(recipe: Recipe, out_dir: str | os.PathLike, overwrite: bool = False) -> dict:
    """``textdistill cache``: build (or check) the teacher cache of a recipe; returns its manifest."""
    from tqdm.auto import tqdm

    teachers = teacher_list(recipe)
    if len(teachers) != 1:
        raise TextDistillError("cache: the recipe needs one 'teacher' (several teachers: distil with "
                               "teacher_cache.dir set, each teacher gets its own cache)")
    for i, term in enumerate(recipe.terms):
        check_term(term, term_where(i, term))
    task = resolve_task(recipe)
    transfer.check(recipe)
    train_ex = transfer.extend(recipe, load_split(task, recipe, "train"), tqdm)
    n_student = student_depth(recipe)
    folder = Path(out_dir)
    tokenizer, model, checked = load_tokenizer(recipe.teacher), None, None
    if overwrite or not cache_ready(folder):  # the teacher is scored before its outputs are stored
        model = load_teacher(recipe.teacher, task)
        checked = check_teacher(model, recipe.teacher, tokenizer, load_split(task, recipe, "dev"), task,
                                recipe.train.max_length, recipe.allow_weak_teacher,
                                device=dist.local_device(recipe.train.cpu))
    _, manifest = open_cache(teacher=recipe.teacher, task=task, folder=folder, train_ex=train_ex, model=model,
                             tokenizer=tokenizer, term_cfgs=recipe.terms, n_student=n_student,
                             max_length=recipe.train.max_length, dtype=recipe.teacher_cache.dtype,
                             batch_size=recipe.train.eval_batch_size, tqdm=tqdm, rebuild=overwrite and folder.exists(),
                             runtime=recipe.teacher_cache.runtime, device=dist.local_device(recipe.train.cpu),
                             teacher_check=checked)
    if checked is None:  # a ready cache: its teacher was scored when it was built (accepted near chance then?)
        check_cached_teacher(manifest, recipe.teacher, task, folder, recipe.allow_weak_teacher)
    return manifest


def _summary_writer():
    """torch's SummaryWriter class (``train.tensorboard``), or a one-line error without the tensorboard package."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise TextDistillError("train.tensorboard: needs the 'tensorboard' package (pip install "
                               "'tensorboard>=2.15')") from None
    return SummaryWriter


def check_batch(batch_size: int, processes: int) -> None:
    if batch_size % processes:
        raise TextDistillError(f"train.batch_size={batch_size}: the batch is split over {processes} processes; use "
                               f"a multiple of {processes}")


def _all_finite(loss, world: int) -> bool:
    """Whether the loss is finite in every process (one tiny all-reduce with several processes)."""
    finite = torch.isfinite(loss.detach()).float().reshape(1)
    if world > 1:
        import torch.distributed as torch_dist

        torch_dist.all_reduce(finite, op=torch_dist.ReduceOp.MIN)
    return bool(finite.item())


def _average_gradients(params, world: int) -> None:
    """The mean of every gradient over the processes, in one all-reduce. A parameter no process used this step
    keeps no gradient (the optimizer skips it, as with one process); one that some used counts zero elsewhere."""
    import torch.distributed as torch_dist
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    used = torch.tensor([p.grad is not None for p in params], dtype=torch.float32)
    torch_dist.all_reduce(used, op=torch_dist.ReduceOp.MAX)
    params = [p for p, u in zip(params, used.tolist()) if u]
    if not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = _flatten_dense_tensors(grads)
    torch_dist.all_reduce(flat)
    flat /= world
    for p, g in zip(params, _unflatten_dense_tensors(flat, grads)):
        if p.grad is None:
            p.grad = g.clone()
        else:
            p.grad.copy_(g)


def _loop(scheme, tmp: Path, tqdm, resume: bool = False, any_version: bool = False) -> dict:
    """The one training loop, method- and scheme-blind (``run`` has set up the process group and checked the batch)."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration
    from transformers import get_linear_schedule_with_warmup

    recipe, task, cfg = scheme.recipe, scheme.task, scheme.cfg
    from accelerate.state import AcceleratorState

    # Accelerate keeps its settings in a process-wide singleton that refuses a second mixed_precision; one process
    # runs several recipes (a suite, stages, generations), each with its own: the process group (PartialState) stays
    AcceleratorState._reset_state(reset_partial_state=False)
    # train.batch_size is the global batch whatever the number of processes: each takes its share of every batch
    # (split_batches), so a recipe trains the same on 1 or N processes
    accelerator = Accelerator(cpu=cfg.cpu, mixed_precision=cfg.mixed_precision,
                              dataloader_config=DataLoaderConfiguration(split_batches=True))
    main = accelerator.is_main_process
    if cfg.mixed_precision == "bf16" and accelerator.device.type == "cpu" and main and not hardware.bf16_native():
        log.warning("train.mixed_precision=bf16: this CPU has no native bf16 instructions (AVX512-BF16, AMX, "
                    "Arm BF16); emulated bf16 is many times slower than fp32 here (~27x for an MPNet-12 step, "
                    "docs/performance.md section 13.1): train.mixed_precision: auto uses bf16 only where it is native")
    loader = train_loader(scheme.train_set, scheme.tokenizer, cfg.batch_size, cfg.seed, cfg.length_grouped,
                          pad_to=cfg.max_length if cfg.pad_to_max_length else None)
    order = loader.sampler.generator  # draws each epoch's batch order (its state is checkpointed)
    schedule_steps = max(1, math.ceil(len(loader) * cfg.epochs))
    modules = scheme.modules()
    optimizer = _optimizer(modules.values(), cfg)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * schedule_steps), schedule_steps)
    if accelerator.num_processes > 1:
        # no DDP wrapper (a scheme calls its modules' parts and attributes freely): the gradients are averaged
        # over the processes after each backward pass (_average_gradients), as DDP would
        prepared = [accelerator.prepare_model(m, evaluation_mode=True) for m in modules.values()]
        prepared += list(accelerator.prepare(optimizer, loader, scheduler))
    else:
        prepared = accelerator.prepare(*modules.values(), optimizer, loader, scheduler)
    for m in prepared[:len(modules)]:
        # Accelerate wraps a prepared module's forward in autocast under mixed precision; the loop autocasts the
        # training step itself instead (below: a live teacher's forward too; the terms keep fp32), and evaluation
        # stays in fp32, so the dev metrics are those of the saved fp32 model
        if "_original_forward" in m.__dict__:  # (both instance attributes go: the class's forward is back)
            m.__dict__.pop("forward", None)
            m.__dict__.pop("_original_forward")
    scheme.bind(dict(zip(modules, prepared[:len(modules)])))
    optimizer, loader, scheduler = prepared[len(modules):]
    total_steps = max(1, math.ceil(len(loader) * cfg.epochs))
    params = [p for m in scheme.modules().values() for p in m.parameters() if p.requires_grad]
    if accelerator.num_processes > 1:
        log.info("%d processes (%s): each takes %d rows of every batch of %d", accelerator.num_processes,
                 accelerator.distributed_type, cfg.batch_size // accelerator.num_processes, cfg.batch_size)

    # the loop's state: everything a checkpoint must carry to continue exactly where it stopped
    run = {"epoch": 0, "batches": 0, "step": 0, "history": [], "sums": {}, "counts": {}, "step_seconds": [],
           "eval_seconds": 0.0, "elapsed": 0.0}
    recipe_text, rng_at_resume, run_codes = dump_recipe(recipe), None, None
    if resume:
        state, tensors = checkpoint.read(tmp, recipe_text, str(tmp), any_version)
        if state["code"] != checkpoint.code_hash():
            log.warning("resuming a checkpoint of other code (source hash %s, now %s)", state["code"],
                        checkpoint.code_hash())
            run_codes = [state["code"], checkpoint.code_hash()]
        order.set_state(checkpoint.restore(state, tensors, modules=scheme.modules(), optimizer=optimizer,
                                           scheduler=scheduler, scaler=accelerator.scaler))
        rng_at_resume = tensors["rng/torch"]
        run.update(state["progress"])
        log.info("resuming at epoch %d, step %d (%d batches of the epoch done)", run["epoch"] + 1, run["step"],
                 run["batches"])

    def save_checkpoint(epoch_start):
        run["elapsed"] = time.perf_counter() - t0
        if main:
            checkpoint.save(tmp, modules={k: accelerator.unwrap_model(m) for k, m in scheme.modules().items()},
                            optimizer=optimizer, scheduler=scheduler, sampler_state=epoch_start, progress=run,
                            recipe_text=recipe_text, scaler=accelerator.scaler)
        accelerator.wait_for_everyone()

    # a resumed run drops the events written after its checkpoint (purge_step)
    writer = _summary_writer()(str(tmp / "tensorboard"), purge_step=run["step"] if resume else None) \
        if cfg.tensorboard and main else None
    t0 = time.perf_counter() - run["elapsed"]
    for epoch in range(run["epoch"], math.ceil(cfg.epochs)):
        for line in scheme.set_epoch(epoch):
            log.info("epoch %d term %s", epoch + 1, line)
        scheme.train()
        epoch_start = order.get_state()
        skip = run["batches"]
        # the first batch of an epoch draws its order and, in torch's DataLoader, one number from the global
        # RNG: a checkpoint from an epoch's end was taken before that draw, one from inside an epoch after it
        if rng_at_resume is not None and skip == 0:
            torch.set_rng_state(rng_at_resume)
            rng_at_resume = None
        batches = iter(loader)
        for _ in range(skip):
            next(batches)
        if rng_at_resume is not None:
            torch.set_rng_state(rng_at_resume)
            rng_at_resume = None
        bar = tqdm(batches, desc=f"epoch {epoch + 1}", leave=False, mininterval=2, disable=None if main else True,
                   total=min(len(loader) - skip, total_steps - run["step"]))
        t_prev = time.perf_counter()
        for batch in bar:
            scheme.step = run["step"] + 1
            with accelerator.autocast():  # train.mixed_precision (a no-op with "no")
                parts = scheme.loss_parts(batch)
            loss = sum(w * v.float() for w, v in parts.values())
            if not _all_finite(loss, accelerator.num_processes):  # (every process stops, none waits forever)
                value = loss.item() if not torch.isfinite(loss) else "non-finite in another process"
                raise TextDistillError(f"loss became {value} at step {run['step'] + 1}; nothing was saved; "
                                       f"{scheme.nonfinite_cause()}")
            accelerator.backward(loss)
            if accelerator.num_processes > 1:
                _average_gradients(params, accelerator.num_processes)
            if cfg.grad_clip is not None:
                accelerator.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            run["step"] += 1
            run["batches"] += 1
            now = time.perf_counter()
            run["step_seconds"].append(now - t_prev)  # batch loading included
            t_prev = now
            sums, counts = run["sums"], run["counts"]
            for name, (_, v) in parts.items():  # a part may come every N-th step only: its own count
                value = v.item()
                sums[name] = sums.get(name, 0.0) + value
                counts[name] = counts.get(name, 0) + 1
                if writer:
                    writer.add_scalar(f"loss/{name}", value, run["step"])
            if writer:
                writer.add_scalar("loss/total", loss.item(), run["step"])
                writer.add_scalar("lr", scheduler.get_last_lr()[0], run["step"])
            if run["step"] % 50 == 0:
                bar.set_postfix({k: f"{v / counts[k]:.4f}" for k, v in sums.items()})
            if run["step"] >= total_steps:
                break
            if cfg.checkpoint_every and run["step"] % cfg.checkpoint_every == 0:
                save_checkpoint(epoch_start)
        for name, module in scheme.modules().items():  # weights a step made NaN: stop here, save nothing
            if nonfinite_parameters(module):
                check_finite_parameters(module, f"after epoch {epoch + 1}, the {name}",
                                        cause=scheme.nonfinite_cause())
        t_eval = time.perf_counter()
        result = scheme.evaluate()
        run["eval_seconds"] += time.perf_counter() - t_eval
        run["history"].append({"epoch": epoch + 1, "step": run["step"], "seconds": round(time.perf_counter() - t0, 1),
                               "loss": {k: round(v / run["counts"][k], 6) for k, v in run["sums"].items()}, **result})
        log.info("epoch %d step %d: loss %s dev %s", epoch + 1, run["step"], run["history"][-1]["loss"], result["dev"])
        if writer:
            for name, value in result["dev"].items():
                writer.add_scalar(f"dev/{name}", value, run["step"])
            writer.flush()
        run.update(epoch=epoch + 1, batches=0, sums={}, counts={})
        if cfg.checkpoint and epoch + 1 < math.ceil(cfg.epochs):
            save_checkpoint(order.get_state())
    train_seconds = time.perf_counter() - t0 - run["eval_seconds"]  # dev evaluation after each epoch excluded

    if writer:
        writer.close()
    saved = scheme.save(tmp, accelerator.unwrap_model) if main else {}
    if main:
        scheme.write_dev_predictions(tmp)
        shutil.rmtree(tmp / checkpoint.FOLDER, ignore_errors=True)
    history, step_seconds = run["history"], run["step_seconds"]
    last = {k: v for k, v in history[-1].items() if k not in ("epoch", "step", "seconds", "loss", "terms")}
    return {
        "task": task.name, "method": recipe.method, "scheme": recipe.scheme, **saved, **last,
        "main_metric": task.main_metric, "history": history, "train_rows": len(scheme.train_ex),
        "train_steps": run["step"], "train_seconds": round(train_seconds, 1),
        "eval_seconds": round(run["eval_seconds"], 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "step_seconds": step_stats(step_seconds),
        "seed": cfg.seed, "mixed_precision": cfg.mixed_precision, "versions": versions(), "code": checkpoint.code_hash(), "resumed": resume,
        "processes": accelerator.num_processes,
        **({"resumed_across_code": run_codes} if run_codes else {}),
    }
