"""Early exits: small classifiers on intermediate layers of one model, and early-exit inference.

A model with ``N`` layers and exits on layers ``l_1 < ... < l_k = N`` gives ``k`` predictions per
example in one forward pass. The exit on layer ``N`` is the model's own classification head; every
other exit ``l`` is

    z_l = W2 dropout(tanh(W1 pool(h_l) + b1)) + b2

with ``pool`` the mean of layer ``l``'s hidden states over real tokens (``pool: mean``) or its first
token (``pool: cls``). The heads are trained by ``scheme: self`` (schemes/selfdistill.py) and saved
beside the model folder as ``exits.safetensors``; the model folder stays a plain Hugging Face model.

Early exit (FastBERT's rule, Liu et al. 2020): an example stops at the first exit whose normalised
entropy ``H(softmax(z_l)) / log(C)`` (0: certain, 1: uniform over the ``C`` classes) is below the
threshold ``S`` (FastBERT's "speed"); the last exit always answers. ``S = 0`` runs every layer (the
plain model's prediction); ``S > 1`` stops every example at the first exit. ``early_exit`` applies the
rule to logits computed for every exit (cheap evaluation of many thresholds); ``early_exit_forward``
really stops a forward pass of one example when an exit is confident, for latency.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .. import TextDistillError
from .student import find_layers, parse_layer_spec

EXITS_FILE = "exits.safetensors"


def parse_exit_layers(spec, n_layers: int) -> list[int]:
    """The exit layers of ``spec`` (a layer spec as in ``student.layers``; a single number is one layer)
    for a model of ``n_layers`` layers, always including the last one (the model's own head)."""
    where = f"exits.layers={spec!r}"
    if isinstance(spec, int) and not isinstance(spec, bool):
        spec = [spec]
    explicit = spec if isinstance(spec, (list, tuple)) else (
        spec.split(",") if isinstance(spec, str) and spec.replace(",", "").replace(" ", "").isdigit() else [])
    bad = [int(x) for x in explicit if not 1 <= int(x) <= n_layers]
    if bad:
        raise TextDistillError(f"{where}: the model has {n_layers} layers, there is no layer {bad[0]} for an exit")
    try:
        layers = parse_layer_spec(spec, n_layers)
    except TextDistillError as e:
        raise TextDistillError(str(e).replace(f"student.layers={spec!r}", where)) from None
    return sorted(set(layers) | {n_layers})


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Normalised entropy of ``softmax(logits)`` along the last axis: 0 (one class) .. 1 (uniform)."""
    return torch.distributions.Categorical(logits=logits.float()).entropy() / math.log(logits.shape[-1])


class ExitHeads(torch.nn.Module):
    """The exit classifiers of one model (``heads[str(layer)]``, the last layer has none: the model's head)."""

    def __init__(self, layers: Sequence[int], n_layers: int, hidden_size: int, num_labels: int,
                 pool: str = "mean", dropout: float = 0.1):
        super().__init__()
        if pool not in ("mean", "cls"):
            raise TextDistillError(f"exits.pool: expected 'mean' or 'cls', got {pool!r}")
        self.layers, self.n_layers, self.pool = list(layers), n_layers, pool
        self.hidden_size, self.num_labels, self.dropout = hidden_size, num_labels, dropout
        self.heads = torch.nn.ModuleDict({
            str(layer): torch.nn.Sequential(torch.nn.Linear(hidden_size, hidden_size), torch.nn.Tanh(),
                                            torch.nn.Dropout(dropout), torch.nn.Linear(hidden_size, num_labels))
            for layer in self.layers if layer != n_layers})

    @classmethod
    def for_model(cls, config, layers: Sequence[int], pool: str) -> ExitHeads:
        return cls(layers, config.num_hidden_layers, config.hidden_size, config.num_labels, pool,
                   getattr(config, "hidden_dropout_prob", 0.1))

    def metadata(self) -> dict:
        """Everything ``from_metadata`` needs (stored in the safetensors header)."""
        return {"layers": self.layers, "n_layers": self.n_layers, "pool": self.pool, "hidden_size": self.hidden_size,
                "num_labels": self.num_labels, "dropout": self.dropout}

    @classmethod
    def from_metadata(cls, meta: dict) -> ExitHeads:
        return cls(meta["layers"], meta["n_layers"], meta["hidden_size"], meta["num_labels"], meta["pool"],
                   meta["dropout"])

    def check(self, config, where: str) -> None:
        """The model of ``config`` is the one these exits were trained on (depth, width, labels)."""
        ours = (self.n_layers, self.hidden_size, self.num_labels)
        if (config.num_hidden_layers, config.hidden_size, config.num_labels) != ours:
            raise TextDistillError(f"{where}: exits for a model of {ours[0]} layers x {ours[1]} with {ours[2]} labels, "
                                   f"but the model has {config.num_hidden_layers} x {config.hidden_size} with "
                                   f"{config.num_labels}")

    def head(self, layer: int, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Logits of the exit on ``layer`` from that layer's hidden states ``(batch, seq, dim)``."""
        if self.pool == "cls":
            pooled = hidden[:, 0]
        else:
            m = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
        return self.heads[str(layer)](pooled)

    def forward(self, hidden_states: Sequence[torch.Tensor], mask: torch.Tensor) -> list[torch.Tensor]:
        """Logits of the intermediate exits (ascending layers) from a model's ``hidden_states`` (layer 0 =
        embeddings, as transformers returns them)."""
        return [self.head(layer, hidden_states[layer], mask) for layer in self.layers if layer != self.n_layers]


def load_exits(model_folder: str | Path, config=None) -> ExitHeads:
    """The exit heads saved beside ``model_folder`` (``<run>/exits.safetensors`` for ``<run>/model``);
    with ``config``, checked against the model they belong to."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(model_folder).parent / EXITS_FILE
    if not path.is_file():
        raise TextDistillError(f"{model_folder}: no {EXITS_FILE} beside the model (early exits need a model "
                               f"trained with 'scheme: self')")
    with safe_open(str(path), "pt") as f:
        meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
    try:
        heads = ExitHeads.from_metadata(meta)
    except KeyError as e:
        raise TextDistillError(f"{path}: no '{e.args[0]}' in its metadata (not written by 'scheme: self')") from None
    heads.load_state_dict(load_file(str(path)))
    if config is not None:
        heads.check(config, str(path))
    return heads.eval()


def exit_logits(model, heads: ExitHeads, batch: dict) -> list[torch.Tensor]:
    """Every exit's logits for a batch in one forward pass, ascending layers (the last: the model's head)."""
    from ..evaluate import model_inputs

    inputs = model_inputs(batch)
    out = model(**inputs, output_hidden_states=True)
    return [*heads(out.hidden_states, inputs["attention_mask"]), out.logits]


def predict_exits(model, heads: ExitHeads, loader) -> np.ndarray:
    """``(examples, exits, classes)`` logits of every exit, in the dataset's order."""
    from ..evaluate import predict

    heads.eval()
    return predict(model, loader, logits_fn=lambda m, inputs: torch.stack(exit_logits(m, heads, inputs), dim=1))


def early_exit(per_exit_logits: Sequence[torch.Tensor] | torch.Tensor, layers: Sequence[int],
               threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """FastBERT's rule on precomputed logits (``exits x (batch, classes)``, ascending ``layers``): each
    example takes the first exit whose normalised entropy is below ``threshold`` (else the last).
    Returns ``(logits (batch, classes), layer each example stopped at (batch,))``."""
    stacked = torch.stack(list(per_exit_logits))
    confident = entropy(stacked) < threshold  # (exits, batch)
    confident[-1] = True
    first = confident.int().argmax(0)  # the first True of each column
    rows = torch.arange(stacked.shape[1], device=stacked.device)
    return stacked[first, rows], torch.as_tensor(list(layers), device=stacked.device)[first]


class _Exited(Exception):
    def __init__(self, logits: torch.Tensor, layer: int):
        super().__init__(layer)
        self.logits, self.layer = logits, layer


@torch.inference_mode()
def early_exit_forward(model, heads: ExitHeads, inputs: dict, threshold: float) -> tuple[torch.Tensor, int]:
    """One example (batch size 1) that really stops: a forward hook on each exit layer runs its head and
    aborts the pass once the exit is confident, so the layers above it never run. Returns
    ``(logits (1, classes), layer)``; the same answer as ``early_exit`` on ``exit_logits``."""
    from ..evaluate import model_inputs

    inputs = model_inputs(inputs)
    model.eval()
    heads.eval()
    if inputs["input_ids"].shape[0] != 1:
        raise TextDistillError("early_exit_forward: one example at a time (batch size 1)")
    mask = inputs["attention_mask"]
    _, stack = find_layers(model)

    def hook(layer):
        def fn(module, args, output):
            logits = heads.head(layer, output[0] if isinstance(output, tuple) else output, mask)
            if entropy(logits).item() < threshold:
                raise _Exited(logits, layer)
        return fn

    handles = [stack[layer - 1].register_forward_hook(hook(layer)) for layer in heads.layers if layer != heads.n_layers]
    try:
        return model(**inputs).logits, heads.n_layers
    except _Exited as e:
        return e.logits, e.layer
    finally:
        for h in handles:
            h.remove()


def exit_latency(model, heads: ExitHeads, examples: Sequence[dict], threshold: float) -> dict:
    """Median milliseconds per example (batch size 1, tokenization excluded) of the full model and of
    ``early_exit_forward`` at ``threshold``, and the mean layers the latter ran."""
    import statistics
    import time

    from ..evaluate import model_inputs

    model.eval()
    full, early, layers = [], [], []
    with torch.inference_mode():
        for inputs in examples:
            inputs = model_inputs(inputs)
            t0 = time.perf_counter()
            model(**inputs)
            t1 = time.perf_counter()
            layers.append(early_exit_forward(model, heads, inputs, threshold)[1])
            early.append(time.perf_counter() - t1)
            full.append(t1 - t0)
    return {"examples": len(full), "full_ms": round(1000 * statistics.median(full), 3),
            "early_exit_ms": round(1000 * statistics.median(early), 3),
            "mean_layers": round(statistics.mean(layers), 4)}
