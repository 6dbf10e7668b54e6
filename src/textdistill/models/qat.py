"""Quantization-aware training (``student.quantize``): fake-quantized Linear layers in the student while it
is distilled from a full-precision teacher (Q8BERT, Zafrir et al. 2019; TernaryBERT, Zhang et al. 2020).

Every ``nn.Linear`` of a transformer student (attention, feed-forward, pooler, classifier) becomes a
:class:`FakeQuantLinear`: its forward uses

* **weights** quantized symmetrically to ``weights`` bits: 8 or 4 bits (scale ``max|w| / (2^(b-1) - 1)``, per
  output channel or per tensor), or 2 bits as TernaryBERT's ternary {-a, 0, +a} per row (TWN: threshold
  0.7 * mean|w|, ``a`` = the mean |w| above it);
* **input activations** (``activations: 8``) quantized the way ONNX Runtime's dynamic int8 does at inference
  (``DynamicQuantizeLinear``): per tensor, asymmetric uint8 from this batch's min and max (including 0), or
  left in fp32 (``activations: null``: weight-only, where no integer kernel exists, e.g. 4 and 2 bits).

Gradients pass the rounding straight through (STE) to the fp32 "latent" weights, which the optimizer
updates. :func:`convert` replaces each FakeQuantLinear by a plain ``nn.Linear`` holding the quantized
weights (values on the int8/int4/ternary grid, stored in fp32), so the saved folder loads with plain
transformers; its ``config.json`` records the scheme (``textdistill_quantization``) and ``textdistill export
--int8 dynamic`` quantizes with the same per-channel/per-tensor choice, which reproduces the trained int8
weights exactly (the largest |w| of a channel maps to 127 before and after). The word embeddings are not
fake-quantized (ONNX Runtime's dynamic int8 quantizes the embedding Gather weight-only, per tensor).

The rounding is written out rather than taken from ``torch.fake_quantize_per_channel_affine``: that kernel
multiplies by 1/scale where ONNX Runtime's quantizer divides by the scale, and at rounding ties the two grids
part (3 of 11.8M random BERT-sized weights, 12-07), so the exported int8 model would not hold exactly the weights
the student was trained with. The activations' form gives the same values as torch's per-tensor kernel.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import TextDistillError

CONFIG_KEY = "textdistill_quantization"


def _ste(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``q`` in the forward pass, identity gradient to ``x`` in the backward pass."""
    return x + (q - x).detach()


def quantize_weight(w: torch.Tensor, bits: int, per_channel: bool) -> torch.Tensor:
    """``w`` on the ``bits`` grid (fake-quantized, same dtype), with straight-through gradients."""
    if bits == 2:  # ternary, per row (TWN, as TernaryBERT)
        a = w.abs()
        delta = 0.7 * a.mean(dim=1, keepdim=True)
        keep = (a > delta).to(w.dtype)
        alpha = (a * keep).sum(dim=1, keepdim=True) / keep.sum(dim=1, keepdim=True).clamp_min(1)
        return _ste(w, alpha * torch.sign(w) * keep)
    qmax = 2 ** (bits - 1) - 1
    amax = w.abs().amax(dim=1, keepdim=True) if per_channel else w.abs().amax()
    scale = (amax / qmax).clamp_min(1e-12)
    return _ste(w, torch.clamp(torch.round(w / scale), -qmax, qmax) * scale)


def quantize_activation(x: torch.Tensor) -> torch.Tensor:
    """ONNX Runtime's DynamicQuantizeLinear then dequantization: uint8, per tensor, range [min(x, 0), max(x, 0)]."""
    lo, hi = x.detach().min().clamp(max=0), x.detach().max().clamp(min=0)
    scale = ((hi - lo) / 255).clamp_min(1e-12)
    zero = torch.clamp(torch.round(-lo / scale), 0, 255)
    q = torch.clamp(torch.round(x / scale) + zero, 0, 255)
    return _ste(x, (q - zero) * scale)


class FakeQuantLinear(nn.Linear):
    """An ``nn.Linear`` (same parameters and state-dict names) whose forward uses quantized weights and inputs."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, bits: int = 8,
                 activations: int | None = 8, per_channel: bool = True, device=None, dtype=None):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self.bits, self.activations, self.per_channel = bits, activations, per_channel

    def forward(self, x):
        if self.activations:
            x = quantize_activation(x)
        return F.linear(x, quantize_weight(self.weight, self.bits, self.per_channel), self.bias)

    def extra_repr(self) -> str:
        act = "uint8 dynamic" if self.activations else "fp32"
        return (f"{super().extra_repr()}, weights={self.bits}-bit "
                f"{'per-channel' if self.per_channel and self.bits != 2 else 'per-row ternary' if self.bits == 2 else 'per-tensor'}, "
                f"inputs={act}")


def check(cfg, arch: str) -> None:
    """Recipe checks (``student.quantize``), one line each."""
    if cfg is None:
        return
    if arch != "transformer":
        raise TextDistillError(f"student.quantize: only for transformer students (student.arch: {arch} has no "
                               f"quantization-aware layers here)")
    if cfg.activations and cfg.weights != 8:
        raise TextDistillError(f"student.quantize: {cfg.weights}-bit weights with int8 activations have no integer "
                               f"kernel to run on; use activations: null (weight-only) or weights: 8")


def prepare(model: nn.Module, cfg) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` by a :class:`FakeQuantLinear` with the same weights (in place)."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                q = FakeQuantLinear(child.in_features, child.out_features, child.bias is not None, bits=cfg.weights,
                                    activations=cfg.activations, per_channel=cfg.per_channel,
                                    device=child.weight.device, dtype=child.weight.dtype)
                q.load_state_dict(child.state_dict())
                setattr(parent, name, q)
                swapped += 1
    if not swapped:
        raise TextDistillError(f"student.quantize: the student ({type(model).__name__}) has no Linear layers to "
                               f"quantize")
    setattr(model.config, CONFIG_KEY, describe(cfg))  # (saved into config.json by save_pretrained)
    return model


def describe(cfg) -> dict:
    return {"weights_bits": cfg.weights, "per_channel": cfg.per_channel or cfg.weights == 2, "weights": "ternary per row (TWN)" if cfg.weights == 2 else
            ("symmetric per output channel" if cfg.per_channel else "symmetric per tensor"),
            "activations": "uint8 dynamic per tensor" if cfg.activations else "fp32",
            "layers": "every nn.Linear (attention, feed-forward, pooler, classifier); embeddings in fp32"}


def is_prepared(model: nn.Module) -> bool:
    return any(isinstance(m, FakeQuantLinear) for m in model.modules())


@torch.no_grad()
def convert(model: nn.Module) -> nn.Module:
    """Every FakeQuantLinear back to an ``nn.Linear`` holding its quantized weights (in place)."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, FakeQuantLinear):
                lin = nn.Linear(child.in_features, child.out_features, child.bias is not None,
                                device=child.weight.device, dtype=child.weight.dtype)
                lin.weight.copy_(quantize_weight(child.weight, child.bits, child.per_channel))
                if child.bias is not None:
                    lin.bias.copy_(child.bias)
                setattr(parent, name, lin)
    return model
