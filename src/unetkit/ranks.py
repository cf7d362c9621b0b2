"""Which of the processes that ``torchrun`` started this one is, and what share of the work it takes.

``torchrun --nproc_per_node=N ...`` starts N copies of a command; each finds ``RANK`` / ``WORLD_SIZE`` /
``LOCAL_RANK`` in its environment. Training joins a process group on top of this
(:mod:`unetkit.train.distributed`); ``unetkit predict`` only splits its inputs: process ``r`` of ``N`` takes
items ``r, r + N, r + 2N, ...`` (:func:`shard`), so every input is predicted by exactly one process.
Without the variables (or with ``WORLD_SIZE=1``) this is process 0 of 1 and nothing is split.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` of ``world_size`` processes, ``local_rank`` on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def context_from_env(env: dict[str, str] | None = None) -> DistContext:
    """The :class:`DistContext` that ``torchrun``'s environment variables describe (single process without them).

    Raises:
        ValueError: malformed or inconsistent ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``.
    """
    env = dict(os.environ if env is None else env)
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError as err:
        raise ValueError(f"malformed torchrun environment (RANK / WORLD_SIZE / LOCAL_RANK): {err}") from err
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ValueError(f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local}")
    return DistContext(rank=rank, world_size=world, local_rank=local)


def shard(items: Sequence[T], ctx: DistContext) -> list[T]:
    """This process's share of ``items``: those at positions ``rank, rank + world_size, ...``.

    Every process must pass the same sequence in the same order; the shares are then disjoint and together
    hold every item once, and neighbouring items (often similar in size) go to different processes.
    """
    return list(items[ctx.rank :: ctx.world_size])


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no sched_getaffinity (macOS, Windows)
        return os.cpu_count() or 1


def threads_per_process(ctx: DistContext, *, cores: int | None = None) -> int:
    """Intra-op threads for one of ``ctx.world_size`` processes sharing ``cores`` (default: the available ones)."""
    return max(1, (available_cores() if cores is None else int(cores)) // ctx.world_size)


def device_for(ctx: DistContext, device: str) -> str:
    """``device`` for this process: a bare ``cuda`` becomes ``cuda:LOCAL_RANK`` when several processes run."""
    return f"cuda:{ctx.local_rank}" if ctx.enabled and device == "cuda" else device


@contextlib.contextmanager
def cpu_group(ctx: DistContext, *, timeout_s: float, env: dict[str, str] | None = None) -> Iterator[bool]:
    """Inside the block, be in a Gloo (CPU) process group with the other processes when ``torchrun``'s
    rendezvous (``MASTER_ADDR`` / ``MASTER_PORT``) is there; yields whether a group was joined.

    ``timeout_s`` bounds every collective, so it must cover the wait for the slowest process. Without a
    rendezvous (one process, or shards started by hand with ``RANK`` / ``WORLD_SIZE``) nothing is joined.
    """
    env = dict(os.environ if env is None else env)
    if not ctx.enabled or not env.get("MASTER_ADDR") or not env.get("MASTER_PORT"):
        yield False
        return
    import torch.distributed as dist

    if dist.is_initialized():
        yield True
        return
    dist.init_process_group(backend="gloo", timeout=timedelta(seconds=timeout_s))
    try:
        yield True
    finally:
        dist.destroy_process_group()


def all_gather(value: T) -> list[T]:
    """Every process's ``value`` in rank order when in a process group (see :func:`cpu_group`), else ``[value]``."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        return [value]
    box: list[T | None] = [None] * dist.get_world_size()
    dist.all_gather_object(box, value)
    return box  # type: ignore[return-value]


def barrier() -> None:
    """Wait for every process of the process group (see :func:`cpu_group`); nothing outside one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
