"""Several processes (data parallel) with Accelerate: one run started by a launcher on N processes.

    accelerate launch --multi_gpu --num_processes 2 -m textdistill.cli distill -r recipes/kd.yaml -o runs/kd2
    torchrun --standalone --nproc_per_node 2 -m textdistill.cli distill -r recipes/kd.yaml -o runs/kd2

Both launchers set ``WORLD_SIZE``/``LOCAL_RANK`` for every process. On a machine without GPUs the processes
form a gloo process group on the CPU (Accelerate's MULTI_CPU; :func:`init` asks for it: Accelerate by
itself would only do so with ``cpu=True``, and otherwise starts N unsynchronised single-process trainings
that all exit 0); with GPUs, one GPU per process (NCCL). The training batches are split across processes
(``train.batch_size`` is the global batch: each process takes 1/N of every batch, so a recipe trains the same
on 1 or N processes), and the gradients are averaged over the processes after each backward pass.
Rank 0 alone writes: the output folder, checkpoints, logs, the teacher cache and generated transfer sets
(the other ranks wait, then read them). Every rank evaluates the whole dev set with its (identical)
replica, so the metrics cover each dev row exactly once.

The last, short batch of an epoch is topped up with rows from the epoch's start (Accelerate's
``even_batches``), so with N processes up to N - 1 rows per epoch are seen twice; with a row count that the
batch divides, 1 and N processes train the same model. Chains of runs (stages, generations), ``cache``,
``augment`` and ``suite`` run in one process (refused under a launcher).

Two launches are refused with one line (:func:`check_launch`): ``accelerate launch --cpu --num_processes N``
(N > 1), which starts a single process without a word, and a process that sees ``WORLD_SIZE > 1`` but did
not join a process group.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from . import TextDistillError, hardware

WAIT_HOURS = 48
WORLD_KEYS = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def launched_world_size(env=os.environ) -> int:
    """The number of processes the launcher says it started (1 without a launcher)."""
    for key in WORLD_KEYS:
        try:
            if int(env.get(key, "1")) > 1:
                return int(env[key])
        except ValueError:
            continue
    return 1


RANK_KEYS = ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")


def launched_rank(env=os.environ) -> int:
    """This process's rank as the launcher set it (0 without a launcher, or with one process)."""
    if launched_world_size(env) == 1:
        return 0
    for key in RANK_KEYS:
        try:
            return int(env[key])
        except (KeyError, ValueError):
            continue
    return 0


def requested_processes(cmdline: list[str]) -> int | None:
    """``--num_processes N`` / ``--num-processes=N`` of an ``accelerate launch`` command line, else None."""
    if not any(Path(a).name == "accelerate" or a.endswith("accelerate_cli.py") for a in cmdline[:3]) or \
            "launch" not in cmdline:
        return None
    for i, arg in enumerate(cmdline):
        m = re.fullmatch(r"--num[_-]processes(?:=(\d+))?", arg)
        if m:
            value = m.group(1) or (cmdline[i + 1] if i + 1 < len(cmdline) else "")
            return int(value) if value.isdigit() else None
    return None


def _parent_cmdline() -> list[str]:
    try:
        raw = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def check_launch(env=os.environ, parent: list[str] | None = None) -> None:
    """Refuse the launches that would silently train with fewer processes than asked for."""
    world = launched_world_size(env)
    if world == 1 and env.get("ACCELERATE_USE_CPU") is not None:  # started by `accelerate launch`
        asked = requested_processes(_parent_cmdline() if parent is None else parent)
        if asked and asked > 1:
            raise TextDistillError(
                f"accelerate launch --num_processes {asked} started 1 process (with --cpu, Accelerate runs a single "
                f"process); for {asked} CPU processes use `accelerate launch --multi_gpu --num_processes {asked}` "
                f"or `torchrun --standalone --nproc_per_node {asked}` (textdistill then trains on the CPU with gloo)")


def single_process(what: str) -> None:
    """Refuse ``what`` (chained runs, caches, generated sets, suites) under a multi-process launch."""
    world = launched_world_size()
    if world > 1:
        raise TextDistillError(f"{what}: runs in one process (launched on {world}); start it without torchrun / "
                               f"accelerate launch (a single distill or finetune run is what runs on several)")


def local_device(cpu: bool = False):
    """This process's device before Accelerate places the modules: its GPU (``LOCAL_RANK``) where there is one
    and ``train.cpu`` is off, else the CPU. Teacher passes before the loop (the dev check, the cache build) run
    there."""
    import torch
    from accelerate import PartialState

    if PartialState._shared_state and PartialState().initialized:  # (init ran: the device the loop will use)
        return PartialState().device
    if hardware.cpu_forced(cpu) or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())


def init(cpu: bool = False):
    """Accelerate's process state for this run: a gloo group on the CPU when a launcher started several
    processes and there is no GPU (or ``train.cpu``), else Accelerate's own choice. Checked: the state has as
    many processes as the launcher started."""
    import torch
    from accelerate import PartialState

    check_launch()
    world = launched_world_size()
    if world > 1 and not torch.cuda.is_available():
        cpu = True
    from datetime import timedelta

    # the other processes wait while rank 0 builds a teacher cache or a transfer set: hours with a 12-layer
    # teacher, far beyond the process group's default timeout (30 min with gloo, 10 with NCCL)
    if PartialState._shared_state and PartialState().initialized and cpu and PartialState().device.type != "cpu":
        raise TextDistillError(f"train.cpu: this process already runs on {PartialState().device} (an earlier run in "
                               f"it); run train.cpu recipes in a process of their own")
    state = PartialState(cpu=cpu, timeout=timedelta(hours=WAIT_HOURS))
    if not state.is_main_process:  # one log: rank 0's (the others say only what goes wrong)
        import logging

        logging.getLogger("textdistill").setLevel(logging.ERROR)
    if state.num_processes != world:
        raise TextDistillError(f"the launcher started {world} processes (WORLD_SIZE={world}) but this one runs alone "
                               f"({state.distributed_type}); use `torchrun --nproc_per_node {world}` or "
                               f"`accelerate launch --multi_gpu --num_processes {world}`")
    return state
