"""Training on several processes with PyTorch's own engine: ``torchrun`` + ``DistributedDataParallel``.

``torchrun --nproc_per_node=N -m unetkit.cli train DATA --out RUN`` (or ``--nnodes`` / ``--rdzv-endpoint``
for several machines) starts N copies of the same command; each reads ``RANK`` / ``WORLD_SIZE`` /
``LOCAL_RANK`` from its environment. What then happens (see :mod:`unetkit.train.loop`):

* process group: NCCL when training on CUDA, Gloo on the CPU; each CUDA process uses GPU ``LOCAL_RANK``;
* every process draws its own batches, a pure function of ``(seed, step, rank)`` (rank 0 draws exactly
  the batches of a one-process run), and DDP averages the gradients, so one step sees
  ``WORLD_SIZE * batch_size`` patches;
* rank 0 alone writes the run directory (plan, checkpoints, state, logs), validates and keeps the
  time budget; its decisions (planned step count, early stop) are broadcast so every process runs the
  same number of steps. For ``--resume`` across machines the run directory must be on a shared file system.

Without ``WORLD_SIZE`` (or with 1) nothing here changes a run.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

# Reading torchrun's environment lives in unetkit.ranks (prediction shards files with it too); training code
# keeps importing it from here.
from unetkit.ranks import DistContext, context_from_env

__all__ = ["DistContext", "barrier", "broadcast_ints", "context_from_env", "setup", "teardown", "unwrap", "wrap"]


def setup(ctx: DistContext, device: str) -> torch.device:
    """Join the process group (when ``ctx.enabled``) and return this process's device.

    Raises:
        ValueError: a CUDA run with more processes on a machine than it has GPUs.
    """
    dev = torch.device(device)
    if dev.type == "cuda" and ctx.enabled:
        if ctx.local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK {ctx.local_rank} has no GPU: this machine has {torch.cuda.device_count()}; "
                "start at most that many processes per node"
            )
        dev = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(dev)
    if ctx.enabled and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return dev


def teardown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, ctx: DistContext, device: torch.device) -> torch.nn.Module:
    """``DistributedDataParallel(model)`` when distributed (batch norm synchronised across GPUs), else ``model``."""
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DistributedDataParallel(model, device_ids=[device.index])
    return DistributedDataParallel(model)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The network inside a DDP wrapper (what is saved and validated)."""
    return getattr(model, "module", model)


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def broadcast_ints(ctx: DistContext, values: list[int]) -> list[int]:
    """Rank 0's ``values`` on every rank (each rank passes a list of the same length)."""
    if not ctx.enabled:
        return values
    box: list[Any] = [list(values)]
    dist.broadcast_object_list(box, src=0)
    return [int(v) for v in box[0]]
