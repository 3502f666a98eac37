"""Distributed training on torch.distributed (issue 13): DDP and FSDP over gloo with two CPU
processes, plain and memory-efficient models; SyncBatchNorm with the memory-efficient
path (run without a process group here: the real all-reduce needs GPUs)."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import archspec

WORLD = 2
BATCH = 4  # per rank
LEVELS = (False, True, "max")


def _model(level):
    spec = archspec.load("densenet-bc-100-12", overrides={"depth": 16, "expect": None,
                                                          "memory_efficient": level})
    return archspec.build(spec, seed=0)


def _data():
    g = torch.Generator().manual_seed(1)
    return (torch.randn(WORLD * BATCH, 3, 32, 32, generator=g),
            torch.randint(0, 10, (WORLD * BATCH,), generator=g))


def _worker(rank: int, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank,
                            world_size=WORLD)
    from torch.nn.parallel import DistributedDataParallel as DDP

    x, y = _data()
    shard = slice(rank * BATCH, (rank + 1) * BATCH)
    out: dict = {}
    for level in LEVELS:
        # One training step (BatchNorm in train mode): ranks end with the same parameters.
        ddp = DDP(_model(level))
        opt = torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
        torch.nn.functional.cross_entropy(ddp(x[shard]), y[shard]).backward()
        opt.step()
        flat = torch.cat([p.detach().flatten() for p in ddp.module.parameters()])
        gathered = [torch.empty_like(flat) for _ in range(WORLD)]
        dist.all_gather(gathered, flat)
        out[f"{level}:ranks_agree"] = bool(torch.equal(gathered[0], gathered[1]))
        # BatchNorm in eval: DDP's averaged gradient is the full batch's gradient.
        ddp = DDP(_model(level).eval())
        torch.nn.functional.cross_entropy(ddp(x[shard]), y[shard]).backward()
        if rank == 0:
            torch.save({k: p.grad for k, p in ddp.module.named_parameters()},
                       f"{folder}/ddp-{level}.pt")
    # FSDP2: shard every parameter across the two ranks and take a step.
    from torch.distributed.fsdp import fully_shard

    model = _model(True)
    fully_shard(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = torch.nn.functional.cross_entropy(model(x[shard]), y[shard])
    loss.backward()
    opt.step()
    out["fsdp_loss_finite"] = bool(torch.isfinite(loss))
    out["fsdp_sharded"] = all(type(p).__name__ == "DTensor" for p in model.parameters())
    out["fsdp_grads"] = all(p.grad is not None for p in model.parameters())
    with open(f"{folder}/rank{rank}.json", "w") as fh:
        json.dump(out, fh)
    dist.destroy_process_group()


def test_ddp_and_fsdp_over_gloo_with_two_cpu_processes(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path),), nprocs=WORLD, join=True)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    for res in results:
        for level in LEVELS:
            assert res[f"{level}:ranks_agree"], (level, res)
        assert res["fsdp_loss_finite"] and res["fsdp_sharded"] and res["fsdp_grads"], res
    x, y = _data()
    for level in LEVELS:  # one process on the concatenated batch, BatchNorm in eval
        single = _model(level).eval()
        torch.nn.functional.cross_entropy(single(x), y).backward()
        ddp = torch.load(tmp_path / f"ddp-{level}.pt")
        for key, p in single.named_parameters():
            torch.testing.assert_close(ddp[key], p.grad, rtol=1e-5, atol=1e-6, msg=key)


def test_sync_batch_norm_keeps_one_update_and_the_plain_gradients():
    """After convert_sync_batchnorm a memory-efficient model must not run a norm twice
    (a second all-reduce, a second statistics update). Without a process group
    SyncBatchNorm computes as BatchNorm does, so the plain model's gradients are exact."""
    plain = _model(False)
    for level in (True, "max"):
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(_model(level))
        calls = []
        for m in model.modules():
            if isinstance(m, torch.nn.SyncBatchNorm):
                m.register_forward_hook(lambda *a: calls.append(1))
        x, y = _data()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.nn.functional.cross_entropy(model(x), y).backward()
        assert any("SyncBatchNorm" in str(w.message) for w in caught)
        plain.zero_grad()
        torch.nn.functional.cross_entropy(plain(x), y).backward()
        n_norms = sum(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
        assert len(calls) == n_norms  # each norm ran once: no recomputation through it
        for (key, a), b in zip(plain.named_parameters(), model.parameters()):
            torch.testing.assert_close(b.grad, a.grad, rtol=0, atol=0, msg=key)
        first = model.features.denseblock1.denselayer1.norm1
        assert first.num_batches_tracked.item() == 1
