"""What both trainers need under ``torchrun`` (data-parallel on several processes), in one place.

Each process is a rank; every rank builds the same models from the same seed, draws its own
batches, averages its gradients with the others before each optimiser step (one all-reduce per
step) and only rank 0 writes. The CLI runs a command's body inside the process group with
:func:`run_in_process_group`; a single process never creates one.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch

from ..devices import describe_device, resolve_device


def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)``: ``(0, 1)`` outside a process group."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def process_device(name: str):
    """``(rank, world, device)`` of this process; under torchrun each rank takes its own GPU."""
    rank, world = rank_and_world()
    device = resolve_device(name)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", rank % torch.cuda.device_count())
    return rank, world, device


def device_label(device, world: int) -> str:
    """The device a model card names: ``cuda:0 (NVIDIA H100) x2`` for two processes."""
    return describe_device(device) + (f" x{world}" if world > 1 else "")


def rank_seed(seed: int, rank: int, iteration: int) -> int:
    """A resumed rank > 0's seed: the state file holds rank 0's random streams, and the other ranks
    must not draw rank 0's batches."""
    return int(np.random.SeedSequence([seed, rank, iteration]).generate_state(1)[0])


def average_gradients(params, world: int) -> None:
    """One all-reduce over all of these parameters' gradients (flattened), then divide by the world size."""
    if world == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.flatten() for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= world
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def rank0_decides(flag: bool, device) -> bool:
    """Rank 0's ``flag`` on every rank (a stop decided by one clock), so all ranks stop together."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    tensor = torch.tensor([float(flag)], device=device)
    dist.broadcast(tensor, src=0)
    return bool(tensor.item())


def any_rank(flag: bool, device) -> bool:
    """True on every rank when ``flag`` is True on any (a signal that reached some ranks only)."""
    tensor = torch.tensor([float(flag)], device=device)
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
    return bool(tensor.item())


def run_in_process_group(device: str, body) -> int:
    """``body()``; under torchrun (WORLD_SIZE > 1) inside the process group (NCCL on GPUs, gloo on
    CPU), which every rank leaves together, and then the process ends with ``body``'s code."""
    dist = torch.distributed
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return body()
    dist.init_process_group("nccl" if torch.cuda.is_available() and device != "cpu" else "gloo")
    try:
        code = body()
        dist.barrier()  # rank 0 may still be writing; a rank that tears gloo down early aborts
    finally:
        dist.destroy_process_group()
    # gloo's worker threads can still abort the interpreter's shutdown (SIGABRT after a clean run): leave now
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
