"""Teacher-output cache for offline distillation.

A frozen teacher gives the same outputs every epoch and for every student, so they are computed once
(``textdistill cache``, or by ``distill`` when the recipe names a ``teacher_cache`` folder that does
not exist yet) and read back by example index. What is stored is what the recipe's terms read:

* ``logits`` (float32), always;
* for ``cls`` / ``mean`` terms, those vectors of every teacher layer the terms may read -- all
  intermediate layers for RAIL-KD's random draws (L x d per example), the mapped ones otherwise.

Full sequences (``hidden``, ``embeddings``) and attention maps are not cached: they cost
``layers x tokens x dim`` (or ``x tokens x heads``) per example; such recipes use the live teacher.

The folder holds ``outputs.safetensors`` and ``cache.json``. The manifest's key is a hash of the
teacher's weight and config files, the tokenizer's vocabulary and class, the training texts (after
sampling), ``max_length`` and the stored taps/layers/dtype; a cache whose key differs from the
recipe's is refused and the differing parts named. The tensor file's SHA-256 is recorded and checked
when the cache is opened, so a truncated or altered file is reported, never used.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from .. import TextDistillError
from ..files import sha256_file
from ..knowledge.terms import VECTOR_TAPS, teacher_layers_read, term_where

log = logging.getLogger("textdistill")
VERSION = 1
FILE = "outputs.safetensors"
MANIFEST = "cache.json"


def teacher_fingerprint(folder: str) -> str:
    """SHA-256 over the teacher folder's config and weight files (names and contents)."""
    path = Path(folder)
    if not path.is_dir():
        raise TextDistillError(f"teacher_cache: the teacher must be a local folder to be fingerprinted ({folder})")
    files = sorted(p for p in path.iterdir() if p.name == "config.json" or p.suffix in (".safetensors", ".bin"))
    if not any(p.suffix in (".safetensors", ".bin") for p in files):
        raise TextDistillError(f"{folder}: no weight files (*.safetensors, *.bin) to fingerprint")
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode())
        sha256_file(p, h)
    return h.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps([type(tokenizer).__name__, vocab]).encode()).hexdigest()


def examples_fingerprint(examples) -> str:
    return hashlib.sha256(json.dumps([examples.text_a, examples.text_b]).encode()).hexdigest()


def cache_plan(term_cfgs, n_teacher: int, n_student: int) -> dict[str, list[int]]:
    """``{tap: [teacher layers]}`` the terms read; refuses terms whose tap cannot be cached."""
    plan: dict[str, set[int]] = {}
    for i, cfg in enumerate(term_cfgs):
        if cfg.tap == "logits":
            continue
        if cfg.tap not in VECTOR_TAPS:
            raise TextDistillError(
                f"{term_where(i, cfg)}.tap: '{cfg.tap}' needs full sequences or attention maps of the teacher "
                f"(layers x tokens x {'tokens x heads' if cfg.tap == 'attention' else 'dim'} per example), which the "
                f"cache does not store; distil this recipe with the live teacher (teacher_cache: null)")
        plan.setdefault(cfg.tap, set()).update(teacher_layers_read(cfg, n_teacher, n_student))
    return {tap: sorted(layers) for tap, layers in sorted(plan.items())}


def cache_key(*, teacher: str, tokenizer, examples, max_length: int, plan: dict, dtype: str,
              runtime: str = "onnx") -> dict:
    """What a cache holds. ``runtime`` enters it only where it changes the outputs' precision (``torch-bf16``):
    ONNX Runtime and PyTorch in fp32 give the same outputs (checked within ``ONNX_TOL`` when the cache is built)."""
    return {"version": VERSION, "teacher": teacher_fingerprint(teacher), "tokenizer": tokenizer_fingerprint(tokenizer),
            "train_texts": examples_fingerprint(examples), "rows": len(examples), "max_length": max_length,
            "taps": plan, "dtype": dtype, **precision_key(runtime)}


def precision_key(runtime: str) -> dict:
    """What a cache's key (and a suite's cache folder) adds for a runtime whose outputs are not fp32's."""
    return {"teacher_precision": PRECISION[runtime]} if runtime in PRECISION else {}


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


RUNTIMES = ("torch", "onnx", "torch-bf16")
PRECISION = {"torch-bf16": "bf16"}  # runtimes whose outputs are not fp32's (the cache key says so)
ONNX_TOL = 1e-3  # max |difference| of logits and tap vectors allowed between ONNX Runtime and PyTorch


class _CacheGraph(torch.nn.Module):
    """The teacher as the cache reads it -- logits, then each tap's pooled vectors of its layers -- as one module
    whose forward takes the tokenizer's inputs positionally (what ``torch.onnx.export`` traces)."""

    def __init__(self, model, plan: dict, names: list[str]):
        super().__init__()
        self.model, self.plan, self.names = model, plan, names

    def forward(self, *inputs):
        from ..knowledge.terms import tap_layers

        kw = dict(zip(self.names, inputs))
        out = self.model(**kw, output_hidden_states=bool(self.plan))
        return (out.logits,) + tuple(tap_layers(out, tap, layers, kw["attention_mask"])
                                     for tap, layers in self.plan.items())


def _torch_runner(teacher_model, plan):
    """The cache graph in PyTorch: a batch's logits and tap vectors (the module ONNX Runtime would run)."""
    from ..evaluate import model_inputs

    device = next(teacher_model.parameters()).device

    def run(batch):
        inputs = {k: v.to(device) for k, v in model_inputs(batch).items()}
        return list(_CacheGraph(teacher_model, plan, list(inputs))(*inputs.values()))
    return run


def _bf16_runner(teacher_model, plan):
    """The cache graph in PyTorch under bf16 autocast (on the teacher's device): ~3x the fp32 pass of a 12-layer
    teacher on a CPU with native bf16 (docs/performance.md section 10); logits and tap vectors come back fp32."""
    run32 = _torch_runner(teacher_model, plan)
    device = next(teacher_model.parameters()).device.type

    def run(batch):
        with torch.autocast(device, dtype=torch.bfloat16):
            return [t.float() for t in run32(batch)]
    return run


def _onnx_runner(teacher_model, plan, tokenizer, work: Path, checks: list):
    """The cache graph exported to ONNX (in ``work``) and run by ONNX Runtime (as many threads as torch), or None
    (with a warning) when the export or the session fails, or when on a ``checks`` batch (the shortest and the
    longest) a logit or tap vector differs from PyTorch's by more than ``ONNX_TOL``."""
    import numpy as np

    from ..models.export import _session, export_onnx, model_inputs_of

    t0 = time.perf_counter()
    try:
        names = model_inputs_of(teacher_model, tokenizer)
        path = work / "teacher.onnx"
        export_onnx(_CacheGraph(teacher_model, plan, names).eval(), tokenizer, path, names=names,
                    outputs=("logits",) + tuple(plan))
        session = _session(path, threads=torch.get_num_threads())
    except TextDistillError as e:
        log.warning("teacher cache: ONNX Runtime not used (%s); the teacher runs in PyTorch", e)
        return None

    def run(batch):
        outs = session.run(None, {n: batch[n].numpy().astype(np.int64) for n in names})
        return [torch.from_numpy(o) for o in outs]
    reference = _torch_runner(teacher_model, plan)
    try:
        diff = max((a.float() - b.float().cpu()).abs().max().item()
                   for batch in checks for a, b in zip(run(batch), reference(batch)))
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
        log.warning("teacher cache: ONNX Runtime failed on a batch (%s: %s); the teacher runs in PyTorch",
                    type(e).__name__, str(e).strip().splitlines()[0] if str(e).strip() else "")
        return None
    if not diff <= ONNX_TOL:
        log.warning("teacher cache: ONNX Runtime's outputs differ from PyTorch's by %.2g; the teacher runs in "
                    "PyTorch", diff)
        return None
    run.export_seconds = round(time.perf_counter() - t0, 2)  # export, session and the checks
    return run


@torch.no_grad()
def build_cache(folder: Path, *, teacher_model, key: dict, data, tokenizer, batch_size: int, params_teacher: int,
                tqdm=None, runtime: str = "onnx", teacher_check: dict | None = None) -> None:
    """Run the teacher once over ``data`` (an Encoded set) and write the cache into ``folder``. ``runtime``:
    ``onnx`` (a teacher on the CPU): the teacher with the pooling of the cached taps exported to ONNX and run
    by ONNX Runtime -- faster on CPU (docs/performance.md section 10) --, checked against PyTorch on the
    shortest and the longest batch; PyTorch if that fails, and for the batches after an ONNX Runtime error.
    ``torch``: PyTorch. ``torch-bf16``: PyTorch under bf16 autocast (outputs within bf16's precision of fp32's;
    the cache key records it, so an fp32 recipe never reads such a cache). ``teacher_check``: the teacher's dev
    score before the build (``check_teacher``), kept in the manifest so that a run reusing the cache knows whether
    a near-chance teacher was accepted."""
    import tempfile

    from safetensors.torch import save_file

    from ..data.batching import eval_loader

    if runtime not in RUNTIMES:
        raise TextDistillError(f"teacher_cache.runtime: '{runtime}' is not one of {list(RUNTIMES)}")
    plan, dtype = key["taps"], DTYPES[key["dtype"]]
    n = len(data)
    store = {"logits": None}
    for tap, layers in plan.items():
        store[tap] = torch.empty(n, len(layers), teacher_model.config.hidden_size, dtype=dtype)
    teacher_model.eval()
    loader = eval_loader(data, tokenizer, batch_size)  # (shortest rows first)
    bf16 = runtime == "torch-bf16"
    torch_run = (_bf16_runner if bf16 else _torch_runner)(teacher_model, plan)
    run, used, extra = torch_run, "torch-bf16" if bf16 else "torch", {}
    if bf16:
        from .. import hardware

        if next(teacher_model.parameters()).device.type == "cpu" and not hardware.bf16_native():
            log.warning("teacher_cache.runtime torch-bf16: this CPU has no native bf16 (avx512_bf16 / amx_bf16); "
                        "the pass will be many times slower than fp32 (runtime: onnx; auto picks it here)")
    with tempfile.TemporaryDirectory(prefix="textdistill-onnx-") as work:
        if runtime == "onnx" and next(teacher_model.parameters()).device.type != "cpu":
            log.info("teacher cache: the teacher is on %s; it runs there in PyTorch (ONNX Runtime here is for "
                     "CPUs)", next(teacher_model.parameters()).device)
        elif runtime == "onnx":
            last = None
            for last in loader:
                pass
            onnx_run = _onnx_runner(teacher_model, plan, tokenizer, Path(work), [next(iter(loader)), last])
            if onnx_run is not None:
                run, used, extra = onnx_run, "onnx", {"onnx_export_seconds": onnx_run.export_seconds}
        for i, batch in enumerate(tqdm(loader, desc="teacher cache", mininterval=2, disable=None) if tqdm else loader):
            try:
                logits, *vectors = run(batch)
            except Exception as e:  # noqa: BLE001 - an ONNX Runtime error: PyTorch computes the rest
                if run is torch_run:
                    raise
                log.warning("teacher cache: ONNX Runtime failed on batch %d (%s); PyTorch computes the rest", i + 1,
                            type(e).__name__)
                run, used = torch_run, f"onnx for {i} batches, then torch"
                logits, *vectors = run(batch)
            idx = batch["idx"]
            if store["logits"] is None:
                store["logits"] = torch.empty(n, logits.shape[-1], dtype=torch.float32)
            store["logits"][idx] = logits.float().cpu()
            for tap, v in zip(plan, vectors):
                store[tap][idx] = v.to(dtype).cpu()
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in store.items()}, str(folder / FILE))
    c = teacher_model.config
    manifest = {"key": key, "file_sha256": sha256_file(folder / FILE).hexdigest(),
                "teacher_config": {"num_hidden_layers": c.num_hidden_layers, "hidden_size": c.hidden_size,
                                   "num_attention_heads": getattr(c, "num_attention_heads", None),
                                   "num_labels": c.num_labels, "model_type": c.model_type},
                "params_teacher": params_teacher, "bytes": (folder / FILE).stat().st_size, "runtime": used,
                **extra, **({"teacher_check": teacher_check} if teacher_check else {})}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def read_manifest(folder: Path) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise TextDistillError(f"{folder}: not a teacher cache (no {MANIFEST})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise TextDistillError(f"{path}: corrupt manifest ({e.msg} at line {e.lineno})") from None


def check_key(folder: Path, manifest: dict, key: dict) -> None:
    have = manifest.get("key", {})
    names = {"teacher": "the teacher's weights or config", "tokenizer": "the tokenizer",
             "train_texts": "the training texts (data file, train_rows or sample_seed)", "rows": "the number of rows",
             "max_length": "train.max_length", "taps": "the taps/layers the terms read", "dtype": "the dtype",
             "version": "the cache format",
             "teacher_precision": "the teacher's precision (teacher_cache.runtime torch-bf16 or fp32)"}
    differ = [names.get(k, k) for k in list(key) + [k for k in have if k not in key] if have.get(k) != key.get(k)]
    if differ:
        raise TextDistillError(f"{folder}: stale teacher cache, built for other {'; '.join(differ)}; "
                               f"rebuild it (textdistill cache ... --overwrite) or point teacher_cache elsewhere")


class CachedTeacher:
    """Teacher outputs read from a cache by the batch's example indices (``batch['idx']``)."""

    def __init__(self, folder: Path, manifest: dict, device=None):
        from safetensors.torch import load_file

        folder = Path(folder)
        path = folder / FILE
        if not path.is_file():
            raise TextDistillError(f"{path}: missing (the cache is incomplete)")
        if sha256_file(path).hexdigest() != manifest.get("file_sha256"):
            raise TextDistillError(f"{path}: corrupt or truncated (its SHA-256 differs from {MANIFEST}); rebuild it")
        try:
            tensors = load_file(str(path))
        except Exception as e:  # noqa: BLE001 - safetensors raises several types
            raise TextDistillError(f"{path}: unreadable ({e})") from None
        self.logits = tensors.pop("logits")
        plan = manifest["key"]["taps"]
        self.vectors = {tap: (plan[tap], tensors[tap]) for tap in plan}
        self.device = device

    def __call__(self, inputs: dict, batch: dict):
        idx = batch["idx"].cpu()
        device = self.device or inputs["input_ids"].device
        pooled = {tap: {layer: t[idx, j].to(device, torch.float32) for j, layer in enumerate(layers)}
                  for tap, (layers, t) in self.vectors.items()}
        return SimpleNamespace(logits=self.logits[idx].to(device), pooled=pooled, hidden_states=None, attentions=None)
