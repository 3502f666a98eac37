"""The norm functions the memory levels run a dense layer with, passed in explicitly.

A norm inside a recomputing block runs twice: once in the forward, once when backward
rebuilds the layer. The two runs must normalise alike and have one side effect between
them. ``Recording`` is the forward's norm function: the module runs as it always does
(one update of the running statistics, one all-gather for a synchronised SyncBatchNorm)
and its batch statistics are recorded. ``Replaying`` is backward's: the same
normalisation, with no side effect.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import kernels
from .kernels import SyncStats

__all__ = ["NormFn", "BatchStats", "SyncStats", "Recording", "Replaying", "trains_batch_norm",
           "distributed", "keeps_statistics", "run_keeping_statistics"]

NormFn = Callable[[nn.Module, Tensor], Tensor]


class BatchStats(NamedTuple):
    """A BatchNorm's batch statistics from the forward's own kernel (on the CPU), which the
    direct backward reuses instead of computing them again."""
    mean: Tensor
    invstd: Tensor


class Recording:
    """The forward's norm function: ``norm(x)`` as always, its batch statistics recorded
    in ``stats`` (by the norm's id): a synchronised SyncBatchNorm's global mean and
    invstd, or on the CPU a BatchNorm's."""

    def __init__(self) -> None:
        self.stats: dict[int, object] = {}

    def __call__(self, norm: nn.Module, x: Tensor) -> Tensor:
        if isinstance(norm, nn.SyncBatchNorm) and norm.training and distributed():
            # SyncBatchNorm's own forward decides whether to synchronise; when it does,
            # its autograd node holds the global statistics.
            y, record = _run_reading(norm, x, _sync_record)
            if record is not None:
                self.stats[id(norm)] = record
            return y
        if keeps_statistics(norm, x):
            y, self.stats[id(norm)] = run_keeping_statistics(norm, x)
            return y
        return norm(x)


class Replaying:
    """Backward's norm function: the forward's normalisation again, with no side effect.
    BatchNorm: momentum 0, so the running statistics do not move; a synchronised
    SyncBatchNorm: the recorded global statistics, so no second all-gather and no local
    statistics that would differ from the forward's."""

    def __init__(self, stats: dict) -> None:
        self.stats = stats

    def __call__(self, norm: nn.Module, x: Tensor) -> Tensor:
        record = self.stats.get(id(norm))
        if isinstance(record, SyncStats):
            return _SyncNormReplay.apply(x, norm.weight, norm.bias, norm.eps, record)
        if record is _RERUN:
            return _rerun_keeping_buffers(norm, x)
        if isinstance(norm, _BATCH_NORMS) and norm.training:
            # (a SyncBatchNorm that did not synchronise computed as BatchNorm does)
            return F.batch_norm(x, norm.running_mean, norm.running_var, norm.weight,
                                norm.bias, True, 0.0, norm.eps)
        return norm(x)


# Every batch norm that normalises with batch statistics in training (1D, 2D, 3D, synced).
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)

_RERUN = object()  # a synchronised norm whose statistics could not be read back


def _rerun_keeping_buffers(norm: nn.Module, x: Tensor) -> Tensor:
    """The module's forward again (the same global statistics, as every rank recomputes
    the same inputs), its running statistics put back as the forward left them."""
    saved = [b.clone() for b in norm.buffers()]
    y = norm(x)
    with torch.no_grad():
        for b, s in zip(norm.buffers(), saved):
            b.copy_(s)
    return y


def trains_batch_norm(norm: nn.Module) -> bool:
    """A training BatchNorm with affine parameters and running statistics: what the direct
    backward computes. A SyncBatchNorm qualifies when it did not synchronise: then it ran
    F.batch_norm, as BatchNorm2d does."""
    return (type(norm) in _BATCH_NORMS and norm.training and norm.affine
            and norm.track_running_stats and norm.momentum is not None)


def distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def keeps_statistics(norm: nn.Module, x: Tensor) -> bool:
    """Whether the forward records this norm's batch statistics for the direct backward
    to reuse: a training BatchNorm1d/2d/3d on the CPU. On CUDA the backward recomputes them,
    since cuDNN's inference and training kernels need not agree to the bit."""
    return (type(norm) in _BATCH_NORMS[:3] and x.device.type == "cpu"
            and trains_batch_norm(norm) and kernels.usable("batch_statistics", x.device))


def run_keeping_statistics(norm: nn.Module, x: Tensor) -> tuple[Tensor, Optional[BatchStats]]:
    """A training BatchNorm's forward on the CPU, and the batch mean and invstd its kernel
    computed (what autograd's node for it saves)."""
    y, stats = _run_reading(norm, x, kernels.batch_statistics_of)
    return y, BatchStats(*stats) if stats is not None else None


def _run_reading(norm: nn.Module, x: Tensor, read: Callable) -> tuple[Tensor, object]:
    """norm(x) through the module (its hooks fire, its statistics update once), and what
    ``read`` finds in the autograd node it made (the batch statistics it saved). ``read``
    runs while the output is alive: torch may free a node's saved tensors with its output
    (torch 2.11 does for SyncBatchNorm's node on CUDA). The node and the input it saved are
    dropped on return: only per-channel statistics are kept, and the caller's saved-tensor
    hooks (save_on_cpu, memory counters) never see the transient save."""
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(_same, _same):
        y = norm(x.detach().requires_grad_())
        found = read(y.grad_fn)
    return y.detach(), found


def _sync_record(node) -> object:
    """A synchronised norm's global statistics; _RERUN if it synchronised but they are not
    where archspec reads them (backward then reruns the module: one more all-gather, see
    Replaying); None if it did not synchronise."""
    record = kernels.sync_statistics_of(node)
    if record is None and kernels.sync_batch_norm() is not None and \
            isinstance(node, kernels.sync_batch_norm()._backward_cls):
        return _RERUN
    return record


def _same(t: Tensor) -> Tensor:
    return t


class _SyncNormReplay(torch.autograd.Function):
    """A synchronised SyncBatchNorm recomputed in backward: the forward's normalisation
    with its recorded global statistics, then SyncBatchNorm's own backward (its one
    all-reduce of the per-channel gradient sums), so the gradients are the plain model's
    and the collectives are the plain model's, in number and in order on every rank."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                eps: float, record: SyncStats) -> Tensor:
        # The layouts SyncBatchNorm's forward normalised (it makes other inputs contiguous)
        if not (x.is_contiguous(memory_format=torch.channels_last)
                or x.is_contiguous(memory_format=torch.channels_last_3d)):
            x = x.contiguous()
        if weight is not None:
            weight = weight.contiguous()
        ctx.save_for_backward(x, weight)
        ctx.record = record
        if x.numel() == 0:
            return torch.empty_like(x)
        return kernels.sync_normalise(x, weight, bias, record.mean, record.invstd, eps)

    @staticmethod
    def backward(ctx, grad_y: Tensor):
        x, weight = ctx.saved_tensors
        grad_x, grad_w, grad_b = kernels.sync_batch_norm_backward(
            x, weight, ctx.record, grad_y, ctx.needs_input_grad[:3])
        return grad_x, grad_w, grad_b, None, None
