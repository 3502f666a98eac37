"""The DenseNet building blocks, named as torchvision names them so checkpoints interchange.

Each class takes its widths from the plan (archspec.plan); none computes a channel count.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Optional

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from torch import Tensor, nn

__all__ = ["DenseLayer", "DenseBlock", "Transition", "imagenet_stem", "cifar_stem"]


class DenseLayer(nn.Module):
    """H_l of the paper: BN-ReLU-Conv1x1(bn_size*k)-BN-ReLU-Conv3x3(k) (DenseNet-B), or
    BN-ReLU-Conv3x3(k) when ``bottleneck_channels`` is None.

    Takes the list of all earlier feature maps of its block and returns its k new channels;
    the concatenation happens inside, so ``memory_efficient`` can recompute it in backward.
    """

    def __init__(self, in_channels: int, bottleneck_channels: Optional[int], growth_rate: int,
                 drop_rate: float, memory_efficient: bool):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        if bottleneck_channels is None:
            self.conv1 = nn.Conv2d(in_channels, growth_rate, kernel_size=3, padding=1,
                                   bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, bottleneck_channels, kernel_size=1, bias=False)
            self.norm2 = nn.BatchNorm2d(bottleneck_channels)
            self.relu2 = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(bottleneck_channels, growth_rate, kernel_size=3, padding=1,
                                   bias=False)
        self.bottleneck = bottleneck_channels is not None
        self.drop_rate = float(drop_rate)
        self.memory_efficient = memory_efficient

    def _first_conv(self, *features: Tensor) -> Tensor:
        # The part whose stored inputs grow quadratically with depth: concat-BN-ReLU-Conv.
        return self.conv1(self.relu1(self.norm1(torch.cat(features, 1))))

    def forward(self, features: list[Tensor] | Tensor) -> Tensor:
        if isinstance(features, Tensor):
            features = [features]
        if self.memory_efficient and torch.is_grad_enabled() and any(
                f.requires_grad for f in features):
            out = cp.checkpoint(self._first_conv, *features, use_reentrant=False)
        else:
            out = self._first_conv(*features)
        if not self.bottleneck:
            return self._drop(out)
        # Dropout after the bottleneck conv too, as the paper's reference code places it.
        out = self._drop(out)
        return self._drop(self.conv2(self.relu2(self.norm2(out))))

    def _drop(self, x: Tensor) -> Tensor:
        if self.drop_rate > 0:
            return F.dropout(x, p=self.drop_rate, training=self.training)
        return x


class DenseBlock(nn.ModuleDict):
    """Layers ``denselayer1..L``; returns the block input concatenated with every layer's output."""

    def __init__(self, layers: list[DenseLayer]):
        super().__init__(OrderedDict((f"denselayer{j}", layer)
                                     for j, layer in enumerate(layers, start=1)))

    def forward(self, x: Tensor) -> Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    """BN-ReLU-Conv1x1-(Dropout)-AvgPool(2x2, stride 2) between two dense blocks."""

    def __init__(self, in_channels: int, out_channels: int, drop_rate: float):
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
        if drop_rate > 0:  # no parameters: state_dict keys are unchanged
            self.drop = nn.Dropout(drop_rate)
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)


def imagenet_stem(in_channels: int, channels: int) -> list[tuple[str, nn.Module]]:
    """conv0 7x7/2, norm0, relu0, pool0 3x3/2 (pad 1): torchvision's stem."""
    return [
        ("conv0", nn.Conv2d(in_channels, channels, kernel_size=7, stride=2, padding=3,
                            bias=False)),
        ("norm0", nn.BatchNorm2d(channels)),
        ("relu0", nn.ReLU(inplace=True)),
        ("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1)),
    ]


def cifar_stem(in_channels: int, channels: int) -> list[tuple[str, nn.Module]]:
    """conv0 3x3/1 (pad 1) and nothing after it, as in the paper's CIFAR nets."""
    return [("conv0", nn.Conv2d(in_channels, channels, kernel_size=3, padding=1, bias=False))]
