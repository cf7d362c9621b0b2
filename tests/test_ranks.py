"""Shares of work under torchrun: disjoint shards that cover the inputs, threads and devices per process."""

from __future__ import annotations

import pytest

from unetkit.ranks import DistContext, context_from_env, cpu_group, device_for, shard, threads_per_process


def test_shards_interleave_and_together_hold_every_item_once() -> None:
    items = [f"{i}.png" for i in range(11)]
    shares = [shard(items, DistContext(rank=r, world_size=3)) for r in range(3)]
    assert shares == [["0.png", "3.png", "6.png", "9.png"], ["1.png", "4.png", "7.png", "10.png"],
                      ["2.png", "5.png", "8.png"]]
    assert sorted(sum(shares, [])) == sorted(items)
    assert shard(items, DistContext()) == items
    assert shard(items[:1], DistContext(rank=1, world_size=2)) == []


def test_threads_divide_the_cores_among_the_processes() -> None:
    assert threads_per_process(DistContext(rank=0, world_size=2), cores=16) == 8
    assert threads_per_process(DistContext(rank=2, world_size=3), cores=16) == 5
    assert threads_per_process(DistContext(rank=5, world_size=32), cores=16) == 1  # never 0
    assert threads_per_process(DistContext(), cores=6) == 6


def test_a_bare_cuda_device_becomes_the_local_gpu_only_with_several_processes() -> None:
    assert device_for(DistContext(rank=3, world_size=4, local_rank=1), "cuda") == "cuda:1"
    assert device_for(DistContext(rank=3, world_size=4, local_rank=1), "cuda:0") == "cuda:0"
    assert device_for(DistContext(rank=3, world_size=4, local_rank=1), "cpu") == "cpu"
    assert device_for(DistContext(), "cuda") == "cuda"


def test_no_process_group_without_torchrun_rendezvous() -> None:
    import torch.distributed as dist

    # Shards started by hand (RANK / WORLD_SIZE only) and single processes join nothing.
    ctx = context_from_env({"RANK": "1", "WORLD_SIZE": "2"})
    with cpu_group(ctx, timeout_s=5, env={"RANK": "1", "WORLD_SIZE": "2"}) as joined:
        assert joined is False and not dist.is_initialized()
    with cpu_group(DistContext(), timeout_s=5, env={"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}) as joined:
        assert joined is False and not dist.is_initialized()


def test_the_training_module_still_reads_the_environment() -> None:
    from unetkit.train import distributed

    assert distributed.context_from_env is context_from_env and distributed.DistContext is DistContext
    with pytest.raises(ValueError, match="inconsistent torchrun environment"):
        distributed.context_from_env({"RANK": "2", "WORLD_SIZE": "2"})
