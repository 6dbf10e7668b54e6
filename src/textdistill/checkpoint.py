"""Checkpoints inside a run's ``.partial`` folder, so that an interrupted run continues (``--resume``) and
ends with the same weights and metrics as an uninterrupted one.

A checkpoint (``<.out.partial>/checkpoint/``, replaced atomically: written beside it, then renamed) holds

* ``tensors.safetensors``: every trained module's state (``<module>/<key>``), the optimizer's per-parameter
  state (``optimizer/<index>/<name>``), torch's global RNG state (dropout; on a GPU also each CUDA device's) and
  the training sampler's generator state at the start of the current epoch (so the epoch's batch order is drawn
  again);
* ``state.json``: step, epoch, batches done in the epoch, the loop's running sums, history and timings, the
  optimizer's hyper-parameters, the scheduler's state, fp16's gradient scaler state (its loss scale), Python's
  RNG state, the resolved recipe and the source hash of the code that wrote it.

No pickle: tensors in safetensors, everything else JSON. A checkpoint written for another recipe or by
another version of the code is refused, naming the difference.
"""
from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path

import torch
import yaml

from . import TextDistillError

FOLDER, TENSORS, STATE = "checkpoint", "tensors.safetensors", "state.json"


def _source_hash() -> str:
    h = hashlib.sha256()
    root = Path(__file__).resolve().parent
    for p in sorted(root.rglob("*.py")):
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


_CODE = _source_hash()  # (when the package is imported: the code this process runs, not files edited since)


def code_hash() -> str:
    """SHA-256 over the package's source files as this process imported them: a checkpoint resumes only under the
    code that wrote it, and a run records the code that ran it."""
    return _CODE


def _json(x):
    """Tuples (RNG state, betas) as lists, recursively; torch scalars as numbers."""
    if isinstance(x, (list, tuple)):
        return [_json(v) for v in x]
    if isinstance(x, dict):
        return {k: _json(v) for k, v in x.items()}
    if isinstance(x, torch.Tensor):
        return x.item()
    return x


def _tuples(x):
    return tuple(_tuples(v) for v in x) if isinstance(x, list) else x


def save(folder: Path, *, modules: dict, optimizer, scheduler, sampler_state: torch.Tensor, progress: dict,
         recipe_text: str, scaler=None) -> None:
    from safetensors.torch import save_file

    tensors = {f"{name}/{k}": v.detach().contiguous().cpu() for name, m in modules.items()
               for k, v in m.state_dict().items()}
    opt = optimizer.state_dict()
    scalars = {}
    for pid, state in opt["state"].items():
        for k, v in state.items():
            if isinstance(v, torch.Tensor) and v.ndim > 0:
                tensors[f"optimizer/{pid}/{k}"] = v.detach().contiguous().cpu()
            else:
                scalars[f"{pid}/{k}"] = _json(v)
    tensors["rng/torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # (GPU dropout draws from these)
        for i, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = cuda_state
    tensors["rng/sampler"] = sampler_state
    state = {"progress": progress, "optimizer": {"param_groups": _json(opt["param_groups"]), "scalars": scalars},
             "scheduler": _json(scheduler.state_dict()), "python_random": _json(random.getstate()),
             "recipe": recipe_text, "code": code_hash()}
    if scaler is not None:  # fp16: the loss scale and its growth tracker
        state["scaler"] = _json(scaler.state_dict())
    tmp, final = folder / f"{FOLDER}.tmp", folder / FOLDER
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(tensors, str(tmp / TENSORS))
    (tmp / STATE).write_text(json.dumps(state) + "\n")
    old = folder / f"{FOLDER}.old"
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def present(folder: Path) -> bool:
    """Whether ``folder`` holds a complete checkpoint (or the previous one, when a write was interrupted between
    its two renames); a leftover ``checkpoint.tmp`` of a killed first write is none."""
    return any((folder / name / STATE).is_file() for name in (FOLDER, f"{FOLDER}.old"))


def read(folder: Path, recipe_text: str, where: str, any_version: bool = False) -> tuple[dict, dict]:
    """``(state, tensors)`` of the checkpoint in ``folder``, checked against the recipe and the code (with
    ``any_version``, a checkpoint of other code is accepted: the run records both hashes)."""
    from safetensors.torch import load_file

    ck = folder / FOLDER
    if not (ck / STATE).is_file() and (folder / f"{FOLDER}.old" / STATE).is_file():
        ck = folder / f"{FOLDER}.old"  # interrupted between the two renames
    if not present(folder):
        raise TextDistillError(f"--resume: {where} has no checkpoint to resume (train.checkpoint_every was 0, or "
                               f"the run never reached one)")
    try:
        state = json.loads((ck / STATE).read_text())
        tensors = load_file(str(ck / TENSORS))
    except Exception as e:  # noqa: BLE001 - json and safetensors raise several types
        raise TextDistillError(f"--resume: {ck}: unreadable checkpoint ({type(e).__name__})") from None
    if state.get("code") != code_hash() and not any_version:
        raise TextDistillError(f"--resume: {where} was written by another version of textdistill (source hash "
                               f"{state.get('code')}, now {code_hash()}); start it again, or accept the mix with "
                               f"--resume-any-version")
    if not same_training(state.get("recipe", ""), recipe_text):
        diff = first_difference(state.get("recipe", ""), recipe_text)
        hint = ("; train.mixed_precision / teacher_cache.runtime: auto resolves by the machine (bf16 only where it "
                "is native): resume on a machine like the first, or with that setting given as the checkpoint has it"
                if any(k in diff for k in ("mixed_precision:", "runtime:", "teacher_cache")) else "")
        raise TextDistillError(f"--resume: {where} was started with another recipe (first difference: {diff}){hint}")
    return state, tensors


# settings that say when a run saves and what it logs, not what it trains: a resumed run may change them
BOOKKEEPING = ("checkpoint", "checkpoint_every", "tensorboard")


def _trained(recipe_text: str) -> str:
    """A saved recipe without its ``train`` section's bookkeeping settings (for comparisons)."""
    try:
        data = yaml.safe_load(recipe_text)
    except yaml.YAMLError:
        return recipe_text
    if not isinstance(data, dict) or not isinstance(data.get("train"), dict):
        return recipe_text
    data["train"] = {k: v for k, v in data["train"].items() if k not in BOOKKEEPING}
    return yaml.safe_dump(data, sort_keys=False)


def same_training(old: str, new: str) -> bool:
    """Whether two saved recipes (recipe.yaml texts) train the same way: equal but for BOOKKEEPING settings
    (a grid that starts checkpointing resumes the runs it started before)."""
    return old == new or _trained(old) == _trained(new)


def first_difference(old: str, new: str) -> str:
    """The first line where two recipes differ in what they train, as ``'old' -> 'new'`` (or "its length")."""
    a, b = _trained(old).splitlines(), _trained(new).splitlines()
    return next((f"'{x.strip()}' -> '{y.strip()}'" for x, y in zip(a, b) if x != y), "its length")


def restore(state: dict, tensors: dict, *, modules: dict, optimizer, scheduler, scaler=None) -> torch.Tensor:
    """Load the checkpoint into the run's modules, optimizer, scheduler, gradient scaler (fp16) and RNGs; returns
    the sampler's generator state at the start of the interrupted epoch."""
    for name, m in modules.items():
        prefix = f"{name}/"
        m.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    opt_state: dict = {}
    for k, v in tensors.items():
        if k.startswith("optimizer/"):
            _, pid, key = k.split("/", 2)
            opt_state.setdefault(int(pid), {})[key] = v
    for k, v in state["optimizer"]["scalars"].items():
        pid, key = k.split("/", 1)
        opt_state.setdefault(int(pid), {})[key] = torch.tensor(v) if key == "step" else v
    groups = state["optimizer"]["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and "scaler" in state:
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(tensors["rng/torch"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("rng/cuda/")), key=lambda k: int(k[9:]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[:torch.cuda.device_count()])
    random.setstate(_tuples(state["python_random"]))
    return tensors["rng/sampler"]
