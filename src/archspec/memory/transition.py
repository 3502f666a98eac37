"""A transition under ``memory_efficient: max``: it keeps only its input.

That input is the block output its dense block keeps anyway, so the transition costs no
memory of its own; the plain one keeps the activation and the convolution's output
besides, as much again as the block's output. Backward recomputes norm-act (batch
statistics with momentum 0, so the running ones move once) and calls the convolution's
and the pool's backward kernels directly, as the dense layers do (direct.py); where those
kernels failed their self-check it backpropagates through the recomputed transition.

``forward(t, x)`` is the one call nn.Transition makes: the output, or None for the plain
path (the rule in archspec.rules.transition_recomputes, which the planner reads too).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from ..graph_mode import capturing
from ..rules import transition_recomputes
from . import direct, kernels
from .norms import Replaying, distributed, keeps_statistics, run_keeping_statistics, \
    trains_batch_norm
from .replay import autocast_like, autocast_state

__all__ = ["forward"]


def forward(t: nn.Module, x: Tensor) -> Optional[Tensor]:
    if t.memory_efficient != "max" or not torch.is_grad_enabled():
        return None
    if capturing() is not None:
        return None
    if not transition_recomputes(batch_norm=trains_batch_norm(t.norm),
                                 relu=type(t.relu) is nn.ReLU,
                                 # (the direct backward's pool kernels: 2D, 3D)
                                 average_pool=type(t.pool) in (nn.AvgPool2d, nn.AvgPool3d),
                                 dropout=hasattr(t, "drop")):
        return None
    if isinstance(t.norm, nn.SyncBatchNorm) and distributed():
        return None  # it may synchronise: its statistics are not recomputed locally
    if not (x.requires_grad or any(p.requires_grad for p in t.parameters())):
        return None
    params = [p for p in t.parameters() if p.requires_grad]
    return _RecomputedTransition.apply(t, x, *params)


class _RecomputedTransition(torch.autograd.Function):

    @staticmethod
    def forward(ctx, t: nn.Module, x: Tensor, *params: Tensor) -> Tensor:
        # the modules' own forwards: one statistics update
        if keeps_statistics(t.norm, x):
            y, ctx.kept = run_keeping_statistics(t.norm, x)
        else:
            y, ctx.kept = t.norm(x), None
        c = t.conv(t.relu(y))
        ctx.t, ctx.conv_out = t, (c.size(), c.stride(), c.dtype)
        ctx.autocast = autocast_state()
        ctx.direct = direct.usable(x.device) and kernels.usable("avg_pool_backward", x.device)
        ctx.save_for_backward(x)
        return t.pool(c)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y: Tensor):
        x, = ctx.saved_tensors
        t = ctx.t
        params = [p for p in t.parameters() if p.requires_grad]
        if ctx.direct:
            grads = _direct_grads(ctx, x, grad_y)
            grad_x = grads.pop("x")
        else:
            grad_x, grads = _autograd_grads(ctx, x, grad_y, params)
        return (None, grad_x if ctx.needs_input_grad[1] else None,
                *[grads.get(id(p)) for p in params])


def _direct_grads(ctx, x: Tensor, grad_y: Tensor) -> dict:
    t, (size, stride, dtype) = ctx.t, ctx.conv_out
    pool = t.pool
    # The pool's backward reads only its input's geometry: an uninitialised stand-in with
    # the convolution output's size and strides, alive for this call only.
    like = torch.empty_strided(size, stride, dtype=dtype, device=x.device)
    grads: direct.Grads = {}
    with torch.no_grad(), autocast_like(ctx.autocast):
        grad_c = kernels.avg_pool_backward(grad_y, like, pool.kernel_size, pool.stride,
                                           pool.padding, pool.ceil_mode,
                                           pool.count_include_pad, pool.divisor_override)
        del like
        z, saved = direct.norm_act(t.norm, x, ctx.kept)
        grads["x"] = direct.norm_act_conv_backward(t.norm, x, z, saved, t.conv, grad_c, grads)
    return grads


def _autograd_grads(ctx, x: Tensor, grad_y: Tensor, params: list) -> tuple:
    """The public path: the transition recomputed (momentum 0) and backpropagated."""
    t = ctx.t
    with torch.enable_grad(), autocast_like(ctx.autocast):
        inp = x.detach().requires_grad_(True)
        out = t.pool(t.conv(t.relu(Replaying({})(t.norm, inp))))
        got = torch.autograd.grad(out, [inp, *params], grad_y, allow_unused=True)
    grads: direct.Grads = {}
    direct.accumulate_all(grads, params, got[1:])
    return got[0], grads
