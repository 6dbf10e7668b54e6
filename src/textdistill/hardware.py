"""What this machine computes fast: bf16 autocast pays off only where the hardware has bf16 arithmetic.

On a CPU without it, PyTorch emulates bf16 and a step is many times slower than in fp32 (an MPNet-12 training
step on an AMD EPYC without AVX512-BF16: ~27x, docs/performance.md section 13.1), so a recipe written for a machine
with native bf16 should not force bf16 on every machine: ``train.mixed_precision: auto`` and ``teacher_cache.runtime:
auto`` pick bf16 only where it is native (recipe.py resolves them when a recipe is read, and the run's saved
recipe.yaml says what was used)."""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path


def bf16_native(cpuinfo: str | None = None) -> bool:
    """Whether the CPU computes bf16 natively: Linux's /proc/cpuinfo flags (x86 avx512_bf16 / amx_bf16, Arm bf16),
    macOS's sysctl hw.optional.arm.FEAT_BF16; False where neither can be read (auto then keeps fp32)."""
    flags = _cpu_flags(cpuinfo)
    if flags is None:
        return _sysctl_bf16()
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def _cpu_flags(cpuinfo: str | None = None) -> set[str] | None:
    """The words of ``cpuinfo`` (default: Linux's /proc/cpuinfo, whose flags lines they include), or None where
    it cannot be read."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    return set(cpuinfo.split())


# x86 int8 dot-product instructions, best first: what int8 GEMMs (ONNX Runtime, PyTorch's quantized kernels) use
INT8_FLAGS = (("amx_int8", "AMX-INT8"), ("avx512_vnni", "AVX512-VNNI"), ("avx_vnni", "AVX-VNNI"),
              ("avx512bw", "AVX512BW"), ("avx2", "AVX2"))


def cpu_int8(cpuinfo: str | None = None) -> str:
    """The best int8 instruction set of the CPU by its /proc/cpuinfo flags (x86: AMX-INT8 > AVX512-VNNI >
    AVX-VNNI > AVX512BW > AVX2; Arm: "Arm dotprod"/"Arm i8mm"), or "unknown": int8 inference speed-ups depend on it
    (docs/performance.md section 6.1: the same student 3.4x over fp32 with VNNI, 1.7-1.8x with AVX2 only)."""
    flags = _cpu_flags(cpuinfo)
    if flags is None:
        return "unknown"
    for flag, name in INT8_FLAGS:
        if flag in flags:
            return name
    return "Arm i8mm" if "i8mm" in flags else "Arm dotprod" if "asimddp" in flags else "unknown"


def _sysctl_bf16() -> bool:
    if platform.system() != "Darwin":
        return False
    try:
        out = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True,
                             timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return out.strip() == "1"


def cpu_forced(cpu: bool = False) -> bool:
    """Whether a run computes on the CPU even where there is a GPU: ``train.cpu``, or ``accelerate launch --cpu``
    (ACCELERATE_USE_CPU); dist.local_device places runs by it too."""
    return cpu or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")


def bf16_fast(cpu: bool = False) -> bool:
    """Whether bf16 autocast beats fp32 where a run computes: the CUDA GPU (unless the CPU is forced: cpu_forced)
    if it has bf16 units (compute capability 8.0 and up; not the emulation torch also reports as support on a
    V100 or T4), else the CPU if it has native bf16."""
    import torch

    if not cpu_forced(cpu) and torch.cuda.is_available():
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return bf16_native()
