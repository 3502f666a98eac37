"""Distributed training on torch.distributed (issue 13): DDP and FSDP over gloo with two CPU
processes, plain and memory-efficient models; SyncBatchNorm with the memory-efficient
path, without a process group and across two processes (SyncBatchNorm's CUDA-only kernels
stood in for on CPU; the real thing runs in tests/test_distributed_cuda.py)."""

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
from run import saved_bytes  # benchmarks/run.py: the count docs/benchmarks.md reports

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
    dist.barrier()  # gloo can abort a rank torn down while its peer still talks
    dist.destroy_process_group()


@pytest.mark.slow  # seconds of subprocesses: .ci/run runs it after the fast suite (5-minute budget)
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


def test_sync_batch_norm_without_a_process_group_keeps_the_savings():
    """After convert_sync_batchnorm, without a process group, SyncBatchNorm computes as
    BatchNorm does: the memory levels keep their savings, their gradients are the plain
    model's bit for bit, and each norm runs once (one statistics update)."""
    x, y = _data()
    plain = torch.nn.SyncBatchNorm.convert_sync_batchnorm(_model(False))
    torch.nn.functional.cross_entropy(plain(x), y).backward()
    plain_bytes = saved_bytes(
        torch.nn.SyncBatchNorm.convert_sync_batchnorm(_model(False)), x)
    for level in (True, "max"):
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(_model(level))
        calls = []
        for m in model.modules():
            if isinstance(m, torch.nn.SyncBatchNorm):
                m.register_forward_hook(lambda *a: calls.append(1))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no fallback warning any more
            torch.nn.functional.cross_entropy(model(x), y).backward()
        n_norms = sum(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
        assert len(calls) == n_norms  # each norm ran once: no recomputation through it
        for (key, a), b in zip(plain.named_parameters(), model.parameters()):
            torch.testing.assert_close(b.grad, a.grad, rtol=0, atol=0, msg=key)
        for (key, a), b in zip(plain.named_buffers(), model.buffers()):
            torch.testing.assert_close(b, a, rtol=0, atol=0, msg=key)
        assert saved_bytes(torch.nn.SyncBatchNorm.convert_sync_batchnorm(_model(level)),
                            x) <= 0.6 * plain_bytes


# SyncBatchNorm synchronises only on GPUs: its kernels (batch_norm_stats and four more)
# exist for CUDA alone, and its forward refuses a CPU input. The stand-in below gives
# those five kernels CPU reference implementations and lets the device check pass, so
# torch's own SyncBatchNorm code runs unchanged over a real gloo process group: the
# all-gather of statistics in forward, the all-reduce of gradient sums in backward.
_DIMS = (0, 2, 3)


def _c(t):
    return t.view(1, -1, 1, 1)


def _stats(x, eps):
    return x.mean(_DIMS), torch.rsqrt(x.var(_DIMS, unbiased=False) + eps)


def _gather_stats(x, mean_all, invstd_all, running_mean, running_var, momentum, eps,
                  counts):
    n = counts.view(-1, 1)
    total = n.sum()
    mean = (mean_all * n).sum(0) / total
    var = (n * (invstd_all.pow(-2) - eps + (mean_all - mean).pow(2))).sum(0) / total
    if running_mean is not None:
        running_mean.mul_(1 - momentum).add_(momentum * mean)
        running_var.mul_(1 - momentum).add_(momentum * var * total / (total - 1))
    return mean, torch.rsqrt(var + eps)


def _elemt(x, weight, bias, mean, invstd, eps):
    y = (x - _c(mean)) * _c(invstd)
    return y * _c(weight) + _c(bias) if weight is not None else y


def _backward_reduce(g, x, mean, invstd, weight, input_g, weight_g, bias_g):
    sum_dy, sum_dy_xmu = g.sum(_DIMS), (g * (x - _c(mean))).sum(_DIMS)
    return (sum_dy, sum_dy_xmu, sum_dy_xmu * invstd if weight_g else None,
            sum_dy if bias_g else None)


def _backward_elemt(g, x, mean, invstd, weight, sum_dy, sum_dy_xmu, count):
    total = count.sum()
    scale = invstd * weight if weight is not None else invstd
    return (g - _c(sum_dy / total)
            - (x - _c(mean)) * _c(invstd.pow(2) * sum_dy_xmu / total)) * _c(scale)


class _SyncBatchNormCalls:
    """Counts the collectives SyncBatchNorm issues. With ``stand_in`` (on CPU), torch's
    SyncBatchNorm also synchronises CPU tensors within it (see above)."""

    KERNELS = {"batch_norm_stats": _stats,
               "batch_norm_gather_stats_with_counts": _gather_stats,
               "batch_norm_elemt": _elemt,
               "batch_norm_backward_reduce": _backward_reduce,
               "batch_norm_backward_elemt": _backward_elemt}

    def __init__(self, stand_in: bool):
        self.stand_in = stand_in
        self.calls = {"all_gather": 0, "all_reduce": 0}

    def _count(self, name, fn):
        def counted(*args, **kwargs):
            self.calls[name] += 1
            return fn(*args, **kwargs)
        return counted

    def __enter__(self):
        self.saved = [(dist, k, getattr(dist, k)) for k in self.calls]
        for k in self.calls:
            setattr(dist, k, self._count(k, getattr(dist, k)))
        if self.stand_in:
            self.saved += [(torch, k, getattr(torch, k)) for k in self.KERNELS]
            self.saved.append((torch._C, "_get_privateuse1_backend_name",
                               torch._C._get_privateuse1_backend_name))
            for k, fn in self.KERNELS.items():
                setattr(torch, k, fn)
            torch._C._get_privateuse1_backend_name = lambda: "cpu"
        return self

    def __exit__(self, *exc):
        for owner, k, fn in self.saved:
            setattr(owner, k, fn)


def _sync_worker(rank: int, folder: str, device: str, unreadable: bool = False) -> None:
    torch.set_num_threads(1)
    if unreadable:  # a torch whose SyncBatchNorm node keeps its statistics elsewhere
        from archspec.memory import kernels
        kernels.sync_statistics_of = lambda node: None
    if device == "cuda":  # the convolutions' kernels too must match run for run, in fp32
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank,
                            world_size=WORLD)
    x, y = _data()
    shard = slice(rank * BATCH, (rank + 1) * BATCH)
    x, y = x[shard].to(device), y[shard].to(device)
    grads, buffers, calls, saved = {}, {}, {}, {}
    for level in LEVELS:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(_model(level)).to(device)
        with _SyncBatchNormCalls(stand_in=device == "cpu") as sync:
            torch.nn.functional.cross_entropy(model(x), y).backward()
        grads[level] = {k: p.grad.cpu() for k, p in model.named_parameters()}
        buffers[level] = {k: b.cpu() for k, b in model.named_buffers()}
        calls[level] = sync.calls
        fresh = torch.nn.SyncBatchNorm.convert_sync_batchnorm(_model(level)).to(device)
        with _SyncBatchNormCalls(stand_in=device == "cpu"):
            saved[level] = saved_bytes(fresh, x)
    out = {"calls": {str(level): calls[level] for level in LEVELS},
           "saved": {str(level): saved[level] for level in LEVELS}}
    for level in (True, "max"):  # bitwise the plain SyncBatchNorm model's, on each rank
        out[f"{level}:grads"] = all(torch.equal(grads[level][k], g)
                                    for k, g in grads[False].items())
        out[f"{level}:buffers"] = all(torch.equal(buffers[level][k], b)
                                      for k, b in buffers[False].items())
    # The ranks' mean gradient (what DDP applies; DDP itself refuses SyncBatchNorm on CPU
    # modules) is the whole batch's.
    for g in grads[True].values():
        dist.all_reduce(g)
        g /= WORLD
    if rank == 0:
        torch.save({"grads": grads[True], "buffers": buffers[True]}, f"{folder}/sync.pt")
    with open(f"{folder}/sync{rank}.json", "w") as fh:
        json.dump(out, fh)
    dist.barrier()  # gloo can abort a rank torn down while its peer still talks
    dist.destroy_process_group()


@pytest.mark.slow  # seconds of subprocesses: .ci/run runs it after the fast suite (5-minute budget)
def test_sync_batch_norm_across_two_processes_replays_the_global_statistics(tmp_path):
    """Over two gloo processes (SyncBatchNorm's CUDA kernels stood in for on CPU), the
    memory levels recompute each synchronised norm with the statistics its forward
    gathered: gradients and running statistics bitwise the plain SyncBatchNorm model's
    on each rank, the same collectives (one all-gather and one all-reduce per norm, no
    more), the savings kept, and the ranks' mean gradient the whole batch's."""
    _check_sync_batch_norm(tmp_path, "cpu")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_sync_batch_norm_on_cuda_across_two_processes(tmp_path):
    """The same with SyncBatchNorm's own CUDA kernels: two processes share one GPU and
    synchronise over gloo (which carries CUDA tensors; NCCL wants a GPU per rank)."""
    _check_sync_batch_norm(tmp_path, "cuda")


@pytest.mark.slow
def test_sync_batch_norm_whose_statistics_cannot_be_read_back_is_rerun(tmp_path):
    """If a torch release keeps SyncBatchNorm's gathered statistics where archspec does
    not read them, backward reruns the synchronising norm (one more all-gather per dense
    layer norm) with its running statistics put back: still the plain model's gradients
    and buffers, bit for bit."""
    _check_sync_batch_norm(tmp_path, "cpu", unreadable=True)


def _check_sync_batch_norm(tmp_path: Path, device: str, unreadable: bool = False) -> None:
    mp.spawn(_sync_worker, args=(str(tmp_path), device, unreadable), nprocs=WORLD,
             join=True)
    results = [json.loads((tmp_path / f"sync{r}.json").read_text()) for r in range(WORLD)]
    n_norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in _model(False).modules())
    for res in results:
        for level in (True, "max"):
            assert res[f"{level}:grads"] and res[f"{level}:buffers"], (level, res)
        for level in LEVELS:
            calls = res["calls"][str(level)]
            if unreadable and level is not False:
                assert calls["all_reduce"] == n_norms and calls["all_gather"] > n_norms
                continue
            assert calls == {"all_gather": n_norms, "all_reduce": n_norms}, res["calls"]
        assert res["saved"]["True"] <= 0.6 * res["saved"]["False"], res["saved"]
        assert res["saved"]["max"] <= 0.35 * res["saved"]["False"], res["saved"]
    # One process with BatchNorm on the concatenated batch: the same step.
    x, y = _data()
    single = _model(True)
    torch.nn.functional.cross_entropy(single(x), y).backward()
    synced = torch.load(tmp_path / "sync.pt")
    for key, p in single.named_parameters():
        torch.testing.assert_close(synced["grads"][key], p.grad, rtol=1e-4, atol=1e-5,
                                   msg=key)
    for key, b in single.named_buffers():
        torch.testing.assert_close(synced["buffers"][key], b, rtol=1e-4, atol=1e-5,
                                   msg=key)


@pytest.mark.slow
def test_recipe_trains_under_torchrun(tmp_path):
    """docs/recipes.md's train.py, as written there, under torchrun with two CPU
    processes (gloo) and in one process."""
    import subprocess
    import sys

    text = (Path(__file__).parents[1] / "docs" / "recipes.md").read_text()
    start = text.index("```python\n# train.py\n") + len("```python\n")
    script = tmp_path / "train.py"
    script.write_text(text[start:text.index("```", start)])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["--steps", "1", "--set", "memory_efficient=true"]
    for launch in ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                    "--nproc_per_node=2"], [sys.executable]):
        run = subprocess.run([*launch, str(script), *args], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
        assert "step 0: loss" in run.stdout, run.stdout
