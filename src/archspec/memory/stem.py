"""The stem under ``memory_efficient: max``: it keeps only its input, the image.

A pooling stem (torchvision's conv0-norm0-relu0-pool0, timm's deep stems) keeps its
convolutions' and norms' outputs at half the input's resolution, and the max pool its
indices: in a 3D net at 48^3 most of what ``max`` still kept (densenet121-3d, batch 2:
16 of 20.5 MB). Under ``max`` the forward runs the stem's own modules once (BatchNorm's
running statistics move once) and keeps the image; backward reruns the stem with the
norms replayed (norms.Replaying: batch statistics with momentum 0) and backpropagates
through it, so the gradients are the plain model's to the bit.

``forward(features, x)`` is the one call nn.Features makes: the stem's output and the
number of ``features`` modules it ran, or None for the plain path (no level ``max``, no
gradients, a graph being captured, a stem without a pool, a norm that synchronises across
ranks).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from ..graph_mode import capturing
from .norms import Replaying
from .replay import autocast_like, autocast_state

__all__ = ["forward", "stem_modules"]

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm)


def stem_modules(features: nn.Module) -> list[nn.Module]:
    """The stem: ``features``' children before the first dense block, if it pools (a
    CIFAR stem is one convolution that keeps only the image anyway)."""
    children = list(features.named_children())
    end = next((i for i, (name, _) in enumerate(children) if name.startswith("denseblock")),
               len(children))
    stem = children[:end]
    return [m for _, m in stem] if any(name == "pool0" for name, _ in stem) else []


def forward(features: nn.Module, x: Tensor) -> Optional[tuple[Tensor, int]]:
    if getattr(features, "memory_efficient", False) != "max" or not torch.is_grad_enabled():
        return None
    if capturing() is not None:
        return None
    modules = stem_modules(features)
    if not modules or any(isinstance(m, nn.SyncBatchNorm) for s in modules
                          for m in s.modules()):
        return None  # a synchronising norm's recomputation would all-gather again
    params = [p for s in modules for p in s.parameters() if p.requires_grad]
    if not (x.requires_grad or params):
        return None
    return _RecomputedStem.apply(modules, x, *params), len(modules)


def _run(modules: list[nn.Module], x: Tensor, norm=None) -> Tensor:
    for m in modules:
        x = norm(m, x) if norm is not None and isinstance(m, _NORMS) else m(x)
    return x


class _RecomputedStem(torch.autograd.Function):

    @staticmethod
    def forward(ctx, modules: list, x: Tensor, *params: Tensor) -> Tensor:
        ctx.modules, ctx.autocast = modules, autocast_state()
        ctx.save_for_backward(x)
        return _run(modules, x)  # the modules' own forwards: one statistics update

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y: Tensor):
        x, = ctx.saved_tensors
        params = [p for s in ctx.modules for p in s.parameters() if p.requires_grad]
        with torch.enable_grad(), autocast_like(ctx.autocast):
            inp = x.detach().requires_grad_(ctx.needs_input_grad[1])
            out = _run(ctx.modules, inp, Replaying({}))
            wrt = ([inp] if ctx.needs_input_grad[1] else []) + params
            got = torch.autograd.grad(out, wrt, grad_y, allow_unused=True)
        grad_x = got[0] if ctx.needs_input_grad[1] else None
        return (None, grad_x, *got[1 if ctx.needs_input_grad[1] else 0:])
