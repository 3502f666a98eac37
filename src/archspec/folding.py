"""Batch norm folded into a convolution, the arithmetic both inference paths share
(archspec.inference for DenseNet, archspec.inference_vovnet): an eval-mode BatchNorm is a
per-channel affine map, computed in float64 and written into the conv's weight and
bias in the conv's own dtype."""

# No `from __future__ import annotations`: TorchScript reads the modules these make.

from typing import Optional

import torch
from torch import Tensor, nn

__all__ = ["affine", "per_out", "fold_after", "conv_like"]


def affine(bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """(s, b) in float64 with bn(x) == s*x + b in eval."""
    s = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    return s, bn.bias.double() - bn.running_mean.double() * s


def per_out(v: Tensor, w: Tensor) -> Tensor:
    """A per-output-channel vector shaped to scale conv weight ``w`` (1, 2 or 3D)."""
    return v.view(-1, *[1] * (w.dim() - 1))


def fold_after(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Weight and bias of conv followed by bn."""
    s, b = affine(bn)
    w = conv.weight.double() * per_out(s, conv.weight)
    bias = b if conv.bias is None else conv.bias.double() * s + b
    return w, bias


def conv_like(weight: Tensor, bias: Optional[Tensor], like: nn.Conv2d) -> nn.Conv2d:
    """A conv with ``like``'s geometry, dtype and device holding ``weight`` and ``bias``
    (float64 from the folding), rounded once, to ``like``'s dtype."""
    conv = type(like)(weight.shape[1] * like.groups, weight.shape[0], like.kernel_size,
                      like.stride, like.padding, like.dilation, like.groups,
                      bias=bias is not None, device=like.weight.device,
                      dtype=like.weight.dtype)
    conv.weight.data.copy_(weight)
    if bias is not None:
        conv.bias.data.copy_(bias)
    return conv


#: (conv, norm) attribute pairs of the post-activation units: timm's VoVNet (``conv`` or
#: the separable ``conv_pw``, then ``bn``) and HarDNet's reference (``conv`` or the
#: depthwise ``dwconv``, then ``norm``).
_UNITS = (("conv_pw", "bn"), ("conv", "bn"), ("conv", "norm"), ("dwconv", "norm"))


def fold_batch_norms(model: nn.Module) -> int:
    """Fold, in place, every affine BatchNorm that follows a conv in a conv-norm[-act]
    unit (_UNITS) into that conv; returns how many were folded."""
    from .nn import BATCH_NORMS

    folded = 0
    for unit in list(model.modules()):
        for name, norm in _UNITS:
            conv, bn = getattr(unit, name, None), getattr(unit, norm, None)
            if not isinstance(conv, nn.modules.conv._ConvNd) or \
                    not isinstance(bn, BATCH_NORMS) or not bn.affine or \
                    not bn.track_running_stats:
                continue
            setattr(unit, name, conv_like(*fold_after(conv, bn), conv))
            setattr(unit, norm, nn.Identity())
            folded += 1
            break
    return folded
