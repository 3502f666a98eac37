"""The DenseNet building blocks, named as torchvision (and timm) name them so checkpoints
interchange. Each class takes its widths from the plan (archspec.plan); none computes a
channel count.

Activation modules keep torchvision's names (``relu0``, ``relu1``, ...) whatever the
activation, so module paths stay stable across specs; they hold no parameters.
"""

from __future__ import annotations

from collections import OrderedDict
from math import comb
from typing import Callable, Optional

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from torch import Tensor, nn

from .schema import Activation, NormSpec, NormType

__all__ = ["Norm", "make_norm", "make_activation", "activation_fn", "BlurPool2d",
           "DenseLayer", "DenseBlock", "Transition", "imagenet_stem", "cifar_stem",
           "deep_stem"]

Norm = Callable[[int], nn.Module]


def make_norm(spec: NormSpec) -> Norm:
    """channels -> the norm layer the spec asks for (the plan has checked group sizes)."""
    if spec.type == NormType.group:
        return lambda c: nn.GroupNorm(spec.groups, c)
    return nn.BatchNorm2d


def make_activation(kind: Activation) -> Callable[[], nn.Module]:
    if kind == Activation.silu:
        return lambda: nn.SiLU(inplace=True)
    if kind == Activation.gelu:
        return nn.GELU  # no in-place variant
    return lambda: nn.ReLU(inplace=True)


def activation_fn(kind: Activation) -> Callable[[Tensor], Tensor]:
    """The functional form, for the head and for backbone taps (never in place)."""
    return {Activation.relu: F.relu, Activation.silu: F.silu, Activation.gelu: F.gelu}[kind]


class BlurPool2d(nn.Module):
    """Anti-aliased stride-2 downsampling: a fixed binomial blur, applied per channel
    (Zhang 2019; the layout of timm's BlurPool2d: reflect padding, a non-persistent
    ``filt`` buffer, so state_dicts carry no extra keys)."""

    def __init__(self, channels: int, filter_size: int = 3, stride: int = 2):
        super().__init__()
        self.channels, self.filter_size, self.stride = channels, filter_size, stride
        self.padding = [((stride - 1) + (filter_size - 1)) // 2] * 4
        coeffs = torch.tensor([comb(filter_size - 1, k) for k in range(filter_size)],
                              dtype=torch.float32) / 2 ** (filter_size - 1)
        filt = (coeffs[:, None] * coeffs[None, :])[None, None].repeat(channels, 1, 1, 1)
        self.register_buffer("filt", filt, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        x = F.pad(x, self.padding, mode="reflect")
        return F.conv2d(x, self.filt.to(x.dtype), stride=self.stride, groups=self.channels)


class DenseLayer(nn.Module):
    """H_l of the paper: norm-act-Conv1x1(bn_size*k)-norm-act-Conv3x3(k) (DenseNet-B), or
    norm-act-Conv3x3(k) when ``bottleneck_channels`` is None.

    Takes the list of all earlier feature maps of its block and returns its k new channels;
    the concatenation happens inside, so ``memory_efficient`` can recompute it in backward.
    """

    def __init__(self, in_channels: int, bottleneck_channels: Optional[int], growth_rate: int,
                 drop_rate: float, memory_efficient: bool, norm: Norm = nn.BatchNorm2d,
                 act: Callable[[], nn.Module] = lambda: nn.ReLU(inplace=True)):
        super().__init__()
        self.norm1 = norm(in_channels)
        self.relu1 = act()
        if bottleneck_channels is None:
            self.conv1 = nn.Conv2d(in_channels, growth_rate, kernel_size=3, padding=1,
                                   bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, bottleneck_channels, kernel_size=1, bias=False)
            self.norm2 = norm(bottleneck_channels)
            self.relu2 = act()
            self.conv2 = nn.Conv2d(bottleneck_channels, growth_rate, kernel_size=3, padding=1,
                                   bias=False)
        self.bottleneck = bottleneck_channels is not None
        self.drop_rate = float(drop_rate)
        self.memory_efficient = memory_efficient

    def _first_conv(self, *features: Tensor) -> Tensor:
        # The part whose stored inputs grow quadratically with depth: concat-norm-act-conv.
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
    """norm-act-Conv1x1-(Dropout)-pool between two dense blocks; the pool is the paper's
    2x2/2 average pool, or a stride-2 blur pool (anti-aliasing)."""

    def __init__(self, in_channels: int, out_channels: int, drop_rate: float,
                 norm: Norm = nn.BatchNorm2d,
                 act: Callable[[], nn.Module] = lambda: nn.ReLU(inplace=True),
                 blur_filter: Optional[int] = None):
        super().__init__()
        self.norm = norm(in_channels)
        self.relu = act()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
        if drop_rate > 0:  # no parameters: state_dict keys are unchanged
            self.drop = nn.Dropout(drop_rate)
        self.pool = (BlurPool2d(out_channels, blur_filter) if blur_filter
                     else nn.AvgPool2d(kernel_size=2, stride=2))


def _stem_pool(channels: int, blur_filter: Optional[int]) -> nn.Module:
    if blur_filter:  # timm: max pool at stride 1, then the blur does the downsampling
        return nn.Sequential(nn.MaxPool2d(kernel_size=3, stride=1, padding=1),
                             BlurPool2d(channels, blur_filter))
    return nn.MaxPool2d(kernel_size=3, stride=2, padding=1)


def imagenet_stem(in_channels: int, channels: int, norm: Norm, act: Callable[[], nn.Module],
                  blur_filter: Optional[int] = None) -> list[tuple[str, nn.Module]]:
    """conv0 7x7/2, norm0, relu0, pool0 3x3/2 (pad 1): torchvision's stem."""
    return [
        ("conv0", nn.Conv2d(in_channels, channels, kernel_size=7, stride=2, padding=3,
                            bias=False)),
        ("norm0", norm(channels)),
        ("relu0", act()),
        ("pool0", _stem_pool(channels, blur_filter)),
    ]


def deep_stem(in_channels: int, widths: tuple[int, ...], channels: int, norm: Norm,
              act: Callable[[], nn.Module], blur_filter: Optional[int] = None
              ) -> list[tuple[str, nn.Module]]:
    """timm's deep stem: conv0 3x3/2, conv1 3x3, conv2 3x3, each with norm and act, pool0."""
    c1, c2 = widths
    return [
        ("conv0", nn.Conv2d(in_channels, c1, 3, stride=2, padding=1, bias=False)),
        ("norm0", norm(c1)), ("relu0", act()),
        ("conv1", nn.Conv2d(c1, c2, 3, stride=1, padding=1, bias=False)),
        ("norm1", norm(c2)), ("relu1", act()),
        ("conv2", nn.Conv2d(c2, channels, 3, stride=1, padding=1, bias=False)),
        ("norm2", norm(channels)), ("relu2", act()),
        ("pool0", _stem_pool(channels, blur_filter)),
    ]


def cifar_stem(in_channels: int, channels: int) -> list[tuple[str, nn.Module]]:
    """conv0 3x3/1 (pad 1) and nothing after it, as in the paper's CIFAR nets."""
    return [("conv0", nn.Conv2d(in_channels, channels, kernel_size=3, padding=1, bias=False))]
