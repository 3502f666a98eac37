"""VoVNet's building blocks (Lee et al. 2019; VoVNetV2 in CenterMask, 2020), named as
timm's ``vovnet.py`` names its modules (``conv``/``bn`` in a conv-norm-act,
``conv_dw``/``conv_pw`` in a separable one, ``conv_reduction``, ``conv_mid``,
``conv_concat``, ``attn.fc``, ``head.fc``) so that state_dicts interchange with timm's
with strict=True. Each class takes its widths from the plan (archspec.plan_vovnet);
none computes a channel count. Norms and activations come from the same factories as
DenseNet's (archspec.nn), in 1, 2 or 3 dimensions.
"""

# No `from __future__ import annotations`: TorchScript and torch.fx read annotations.
from typing import Callable, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .nn import CONVS, Norm

__all__ = ["ConvNormAct", "SeparableConvNormAct", "EffectiveSE", "OsaBlock", "OsaStage",
           "vovnet_stem", "feature_maps"]

Act = Callable[[], nn.Module]


class ConvNormAct(nn.Module):
    """conv (no bias) -> norm -> activation: VoVNet's post-activation unit."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 norm: Norm, act: Act, dims: int = 2):
        super().__init__()
        self.conv = CONVS[dims - 1](in_channels, out_channels, kernel_size, stride=stride,
                                    padding=kernel_size // 2, bias=False)
        self.bn = norm(out_channels)
        self.act = act()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class SeparableConvNormAct(nn.Module):
    """A depthwise 3x3 (one filter per input channel), a pointwise 1x1, norm, activation:
    the depthwise variants' stand-in for a 3x3 conv-norm-act."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm: Norm,
                 act: Act, dims: int = 2):
        super().__init__()
        conv = CONVS[dims - 1]
        self.conv_dw = conv(in_channels, in_channels, 3, stride=stride, padding=1,
                            groups=in_channels, bias=False)
        self.conv_pw = conv(in_channels, out_channels, 1, bias=False)
        self.bn = norm(out_channels)
        self.act = act()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv_pw(self.conv_dw(x))))


class EffectiveSE(nn.Module):
    """Effective squeeze-excitation (CenterMask): each channel's global mean, one 1x1
    conv with bias (no reduction, so no information is lost), a hard-sigmoid gate."""

    def __init__(self, channels: int, dims: int = 2):
        super().__init__()
        self.fc = CONVS[dims - 1](channels, channels, 1)
        self.spatial: List[int] = list(range(2, dims + 2))

    def forward(self, x: Tensor) -> Tensor:
        return x * F.hardsigmoid(self.fc(x.mean(self.spatial, keepdim=True)))


class OsaBlock(nn.Module):
    """One-shot aggregation: ``layers`` 3x3 conv-norm-acts in a chain, each reading the
    one before it; the block's input and every layer's output concatenated once into a
    1x1 conv-norm-act; then eSE attention and the residual sum where the plan has them."""

    def __init__(self, in_channels: int, conv_channels: int, out_channels: int, layers: int,
                 residual: bool, depthwise: bool, attention: bool, norm: Norm, act: Act,
                 dims: int = 2):
        super().__init__()
        self.residual = residual
        reduce = depthwise and in_channels != conv_channels
        self.conv_reduction: Optional[nn.Module] = (
            ConvNormAct(in_channels, conv_channels, 1, 1, norm, act, dims) if reduce else None)
        mid: List[nn.Module] = []
        c = in_channels
        for _ in range(layers):
            mid.append(SeparableConvNormAct(conv_channels, conv_channels, 1, norm, act, dims)
                       if depthwise else
                       ConvNormAct(c, conv_channels, 3, 1, norm, act, dims))
            c = conv_channels
        self.conv_mid = nn.Sequential(*mid)
        self.conv_concat = ConvNormAct(in_channels + layers * conv_channels, out_channels, 1,
                                       1, norm, act, dims)
        self.attn: Optional[nn.Module] = EffectiveSE(out_channels, dims) if attention else None

    def forward(self, x: Tensor) -> Tensor:
        outputs = [x]
        y = x
        if self.conv_reduction is not None:
            y = self.conv_reduction(y)
        for conv in self.conv_mid:
            y = conv(y)
            outputs.append(y)
        y = self.conv_concat(torch.cat(outputs, 1))
        if self.attn is not None:
            y = self.attn(y)
        if self.residual:
            y = y + x
        return y


class OsaStage(nn.Module):
    """A 3x3/2 max pool in ceil mode (every stage but the first), then the OSA blocks."""

    def __init__(self, blocks: List[OsaBlock], downsample: bool, dims: int = 2):
        super().__init__()
        pool = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)[dims - 1]
        self.pool: Optional[nn.Module] = (pool(kernel_size=3, stride=2, ceil_mode=True)
                                          if downsample else None)
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        if self.pool is not None:
            x = self.pool(x)
        return self.blocks(x)


def vovnet_stem(in_channels: int, widths: List[int], depthwise: bool, norm: Norm, act: Act,
                dims: int = 2) -> nn.Sequential:
    """3x3/2, 3x3/1, 3x3/2 conv-norm-acts (the last two separable when ``depthwise``)."""
    w0, w1, w2 = widths
    if depthwise:
        second: nn.Module = SeparableConvNormAct(w0, w1, 1, norm, act, dims)
        third: nn.Module = SeparableConvNormAct(w1, w2, 2, norm, act, dims)
    else:
        second = ConvNormAct(w0, w1, 3, 1, norm, act, dims)
        third = ConvNormAct(w1, w2, 3, 2, norm, act, dims)
    return nn.Sequential(ConvNormAct(in_channels, w0, 3, 2, norm, act, dims), second, third)


def feature_maps(stem: nn.Sequential, stages: nn.Sequential, x: Tensor, taps: List[int],
                 stop: int) -> List[Tensor]:
    """A VoVNet backbone's feature maps (timm's levels): level 0 is the stem's second
    conv-norm-act (stride 2), level i the output of ``stages[i - 1]``; ``taps`` the levels
    returned, ``stop`` the last one, past which nothing runs."""
    out: List[Tensor] = []
    x = stem[1](stem[0](x))
    if 0 in taps:
        out.append(x)
    x = stem[2](x)
    for i, stage in enumerate(stages):
        if i + 1 <= stop:
            x = stage(x)
            if i + 1 in taps:
                out.append(x)
    return out
