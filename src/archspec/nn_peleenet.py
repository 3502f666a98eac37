"""PeleeNet's building blocks (Wang et al., NeurIPS 2018), named as the reference code
(Robert-JunWang/PeleeNet ``peleenet.py``) names its modules (``stemblock.stem1``...,
``denselayerJ.branch1a``..., ``conv``/``norm`` in a BasicConv2d), so that state_dicts
interchange with strict=True. Each class takes its widths from the plan
(archspec.plan_peleenet); none computes a channel count. Norms and activations come
from the same factories as DenseNet's (archspec.nn), in 1, 2 or 3 dimensions.
"""

# No `from __future__ import annotations`: TorchScript and torch.fx read annotations.
from typing import Callable, List

import torch
from torch import Tensor, nn

from .nn import CONVS, Norm

__all__ = ["BasicConv", "StemBlock", "PeleeLayer", "peleenet_feature_maps"]

Act = Callable[[], nn.Module]
_MAX_POOL = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)


class BasicConv(nn.Module):
    """conv (no bias) -> norm -> activation: the reference's BasicConv2d (its ReLU is
    functional, so it has no key; here the spec's activation module, ``act``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 norm: Norm, act: Act, dims: int = 2):
        super().__init__()
        self.conv = CONVS[dims - 1](in_channels, out_channels, kernel_size, stride=stride,
                                    padding=kernel_size // 2, bias=False)
        self.norm = norm(out_channels)
        self.act = act()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.conv(x)))


class StemBlock(nn.Module):
    """stem1 3x3/2 to w; a 2x2/2 max pool of it beside stem2a 1x1 to w/2 and stem2b 3x3/2
    to w; both concatenated into stem3 1x1 to w."""

    def __init__(self, in_channels: int, width: int, norm: Norm, act: Act, dims: int = 2):
        super().__init__()
        self.stem1 = BasicConv(in_channels, width, 3, 2, norm, act, dims)
        self.stem2a = BasicConv(width, width // 2, 1, 1, norm, act, dims)
        self.stem2b = BasicConv(width // 2, width, 3, 2, norm, act, dims)
        self.stem3 = BasicConv(2 * width, width, 1, 1, norm, act, dims)
        self.pool = _MAX_POOL[dims - 1](kernel_size=2, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        out = self.stem1(x)
        return self.stem3(torch.cat([self.pool(out), self.stem2b(self.stem2a(out))], 1))


class PeleeLayer(nn.Module):
    """A two-way dense layer: branch 1 a 1x1 to ``bottleneck`` and a 3x3 to k/2, branch 2
    a 1x1 to ``bottleneck`` and two 3x3s to k/2; returns [input, branch 1, branch 2]."""

    def __init__(self, in_channels: int, bottleneck: int, half_growth: int, norm: Norm,
                 act: Act, dims: int = 2):
        super().__init__()
        self.branch1a = BasicConv(in_channels, bottleneck, 1, 1, norm, act, dims)
        self.branch1b = BasicConv(bottleneck, half_growth, 3, 1, norm, act, dims)
        self.branch2a = BasicConv(in_channels, bottleneck, 1, 1, norm, act, dims)
        self.branch2b = BasicConv(bottleneck, half_growth, 3, 1, norm, act, dims)
        self.branch2c = BasicConv(half_growth, half_growth, 3, 1, norm, act, dims)

    def forward(self, x: Tensor) -> Tensor:
        branch1 = self.branch1b(self.branch1a(x))
        branch2 = self.branch2c(self.branch2b(self.branch2a(x)))
        return torch.cat([x, branch1, branch2], 1)


def peleenet_feature_maps(features: nn.Sequential, x: Tensor, taps: List[int],
                          stop: int) -> List[Tensor]:
    """A PeleeNet backbone's feature maps: the outputs of ``features[i]`` for i in
    ``taps``; nothing after ``features[stop]`` runs."""
    out: List[Tensor] = []
    for i, module in enumerate(features):
        if i <= stop:
            x = module(x)
            if i in taps:
                out.append(x)
    return out
