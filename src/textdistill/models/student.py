"""Build a shallower student from a teacher by keeping a chosen list of its layers.

The student has the teacher's architecture and configuration with fewer layers. It receives a
copy of the teacher's embeddings (and, for MPNet, the shared relative-position bias), of the
chosen layers, and of the pooler / classification head. Which teacher layer became which
student layer is returned (and printed, and recorded in ``metrics.json`` and the student folder).

Layer specs (teacher layers are 1-based):

* ``first:k`` : layers 1..k (PKD's initialisation from the bottom of BERT)
* ``every:k`` : layers k, 2k, 3k, ... (12 layers, every:4 -> 4, 8, 12; DistilBERT-style striding)
* ``last:k``  : the top k layers
* ``all``     : every layer (the teacher itself)
* ``1,5,9`` or a YAML list ``[1, 5, 9]`` : any strictly increasing list
"""
from __future__ import annotations

import copy
import re

import torch

from .. import TextDistillError


def find_layers(model) -> tuple[str, torch.nn.ModuleList]:
    """The transformer layer stack of a HF encoder: ``(qualified name, ModuleList)``."""
    n = getattr(model.config, "num_hidden_layers", None)
    found = [(name, mod) for name, mod in model.named_modules()
             if isinstance(mod, torch.nn.ModuleList) and re.search(r"(^|\.)(layer|layers)$", name)
             and (n is None or len(mod) == n)]
    if len(found) != 1:
        raise TextDistillError(f"cannot find the transformer layers of model type "
                               f"'{getattr(model.config, 'model_type', type(model).__name__)}' "
                               f"({'none' if not found else 'several'} ModuleList named 'layer'/'layers' "
                               f"with {n} entries); build the student yourself and pass its folder")
    return found[0]


def parse_layer_spec(spec, n_teacher: int) -> list[int]:
    """Teacher layers (1-based, strictly increasing) that the student keeps."""
    where = f"student.layers={spec!r}"
    if isinstance(spec, int):
        spec = f"first:{spec}"
    if isinstance(spec, (list, tuple)):
        layers = [int(x) for x in spec]
    elif isinstance(spec, str):
        s = spec.strip().lower()
        m = re.fullmatch(r"(first|every|last):(\d+)", s)
        if s == "all":
            layers = list(range(1, n_teacher + 1))
        elif m:
            kind, k = m.group(1), int(m.group(2))
            if k < 1:
                raise TextDistillError(f"{where}: k must be at least 1")
            if kind == "first":
                layers = list(range(1, k + 1))
            elif kind == "last":
                layers = list(range(n_teacher - k + 1, n_teacher + 1))
            else:
                layers = list(range(k, n_teacher + 1, k))
                if not layers:
                    raise TextDistillError(f"{where}: the teacher has only {n_teacher} layers")
        elif re.fullmatch(r"\d+(\s*,\s*\d+)*", s):
            layers = [int(x) for x in s.split(",")]
        else:
            raise TextDistillError(f"{where}: expected first:k, every:k, last:k, all, or a list like 1,5,9")
    else:
        raise TextDistillError(f"{where}: expected a string or a list of layer numbers")
    if len(layers) > n_teacher:
        raise TextDistillError(f"{where}: the student ({len(layers)} layers) would be deeper than its teacher "
                               f"({n_teacher} layers)")
    bad = [x for x in layers if not 1 <= x <= n_teacher]
    if bad:
        raise TextDistillError(f"{where}: layer {bad[0]} is out of range 1..{n_teacher}")
    if any(b <= a for a, b in zip(layers, layers[1:])):
        raise TextDistillError(f"{where}: layers must be strictly increasing")
    return layers


def build_student(source, spec) -> tuple[torch.nn.Module, dict[int, int]]:
    """A copy of ``source`` (a HF model) that keeps the layers given by ``spec``.

    Returns ``(student, mapping)`` with ``mapping[student_layer] = teacher_layer`` (both 1-based).
    """
    prefix, stack = find_layers(source)
    layers = parse_layer_spec(spec, len(stack))
    config = copy.deepcopy(source.config)
    config.num_hidden_layers = len(layers)
    student = type(source)(config)
    keep = {t - 1: s for s, t in enumerate(layers)}  # teacher index -> student index (0-based)
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.(.*)")
    state = {}
    for key, value in source.state_dict().items():
        m = pattern.fullmatch(key)
        if m is None:
            state[key] = value.clone()
        elif int(m.group(1)) in keep:
            state[f"{prefix}.{keep[int(m.group(1))]}.{m.group(2)}"] = value.clone()
    missing, unexpected = student.load_state_dict(state, strict=False)
    # tied or buffer-only keys may legitimately differ; real weights may not
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise TextDistillError(f"student construction failed: missing {missing[:3]}, unexpected {unexpected[:3]}")
    student.to(next(source.parameters()).dtype)
    mapping = {s + 1: t for s, t in enumerate(layers)}
    return student, mapping


@torch.no_grad()
def cls_spread(model, inputs: dict) -> float:
    """How much the last layer's first-token ([CLS]) vector varies over a batch, relative to its size:
    mean over dimensions of the std across examples, divided by the mean vector norm. Near 0 means
    the classifier's input hardly depends on the text (e.g. the first 3 layers of all-MiniLM-L6-v2,
    a mean-pooling sentence encoder: ~1e-5), so fine-tuning through [CLS] starts from nothing."""
    was_training = model.training
    model.eval()
    h = model(**inputs, output_hidden_states=True).hidden_states[-1][:, 0].float()
    model.train(was_training)
    return (h.std(0).mean() / h.norm(dim=-1).mean().clamp_min(1e-12)).item()
