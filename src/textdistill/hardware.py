"""What this machine computes fast: bf16 autocast pays off only where the hardware has bf16 arithmetic.

On a CPU without it, PyTorch emulates bf16 and a step is many times slower than in fp32 (an MPNet-12 training
step on an AMD EPYC without AVX512-BF16: ~30x, docs/performance.md section 13), so a recipe written for a machine
with AMX should not force bf16 on every machine: ``train.mixed_precision: auto`` and ``teacher_cache.runtime:
auto`` pick bf16 only where it is native (recipe.py resolves them when a recipe is read, and the run's saved
recipe.yaml says what was used)."""
from __future__ import annotations

from pathlib import Path


def bf16_native(cpuinfo: str | None = None) -> bool:
    """Whether the CPU computes bf16 natively (Linux: the flags in /proc/cpuinfo; True where they cannot be read)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return True
    flags = set(cpuinfo.split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def bf16_fast(cpu: bool = False) -> bool:
    """Whether bf16 autocast beats fp32 where a run computes: the CUDA GPU (unless ``cpu``: train.cpu) if it
    supports bf16, else the CPU if it has native bf16."""
    import torch

    if not cpu and torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return bf16_native()
