"""HarDNet's building blocks (Chao et al., ICCV 2019), with the reference code's names
inside each unit (PingoLH/Pytorch-HarDNet ``hardnet.py``: ``conv``/``norm``/``relu`` in a
ConvLayer, ``dwconv``/``norm`` in a DWConvLayer, ``layer1``/``layer2`` in a CombConvLayer,
``layers.j`` in a HarDBlock), so that the reference's flat ``base.N`` keys map onto
archspec's ``stem``, ``features.hardblockI``, ``features.transitionI`` and ``head`` one
unit at a time
(archspec.weights_hardnet). Each class takes its widths and links from the plan
(archspec.plan_hardnet); none computes a channel count. Norms and activations come from
the same factories as DenseNet's (archspec.nn), in 1, 2 or 3 dimensions.
"""

# No `from __future__ import annotations`: TorchScript and torch.fx read annotations.
from collections import OrderedDict
from typing import Callable, List

import torch
from torch import Tensor, nn

from .nn import CONVS, Norm

__all__ = ["ConvLayer", "DWConvLayer", "CombConvLayer", "HarDBlock", "hardnet_stem",
           "hardnet_transition", "hardnet_feature_maps"]

Act = Callable[[], nn.Module]
_MAX_POOL = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)


class ConvLayer(nn.Sequential):
    """conv (no bias, padding k//2) -> norm -> activation: HarDNet's post-activation unit
    (the reference's ``relu`` is ReLU6; here the spec's activation)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 norm: Norm, act: Act, dims: int = 2):
        super().__init__(OrderedDict([
            ("conv", CONVS[dims - 1](in_channels, out_channels, kernel_size, stride=stride,
                                     padding=kernel_size // 2, bias=False)),
            ("norm", norm(out_channels)),
            ("relu", act())]))


class DWConvLayer(nn.Sequential):
    """A 3x3 depthwise conv (one filter per channel) and a norm, no activation: the DS
    variants' downsampling (stride 2) and the second half of their layers (stride 1)."""

    def __init__(self, channels: int, stride: int, norm: Norm, dims: int = 2):
        super().__init__(OrderedDict([
            ("dwconv", CONVS[dims - 1](channels, channels, 3, stride=stride, padding=1,
                                       groups=channels, bias=False)),
            ("norm", norm(channels))]))


class CombConvLayer(nn.Sequential):
    """A DS layer: a 1x1 conv-norm-act to the layer's width, then a 3x3 depthwise
    conv-norm."""

    def __init__(self, in_channels: int, out_channels: int, norm: Norm, act: Act,
                 dims: int = 2):
        super().__init__(OrderedDict([
            ("layer1", ConvLayer(in_channels, out_channels, 1, 1, norm, act, dims)),
            ("layer2", DWConvLayer(out_channels, 1, norm, dims))]))


class HarDBlock(nn.Module):
    """A harmonic dense block: layer j reads the outputs ``links[j - 1]`` (0 is the
    block's input), concatenated in that order; the block returns the outputs ``emitted``
    concatenated (its odd layers and its last, as the plan says)."""

    def __init__(self, layers: List[nn.Module], links: List[List[int]], emitted: List[int]):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.links: List[List[int]] = [list(link) for link in links]
        self.emitted: List[int] = list(emitted)

    def forward(self, x: Tensor) -> Tensor:
        outs: List[Tensor] = [x]
        for i, layer in enumerate(self.layers):
            link = self.links[i]
            if len(link) > 1:
                x = torch.cat([outs[k] for k in link], 1)
            else:
                x = outs[link[0]]
            outs.append(layer(x))
        return torch.cat([outs[k] for k in self.emitted], 1)


def hardnet_stem(in_channels: int, widths: List[int], kernels: List[int], depthwise_down: bool,
                 norm: Norm, act: Act, dims: int = 2) -> nn.Sequential:
    """conv-norm-act k0/2, conv-norm-act k1/1, then a 3x3/2 max pool (padding 1) or a
    3x3/2 depthwise conv-norm."""
    w0, w1 = widths
    # made in order: a seed draws the reference's weights only if the modules draw in its
    # order
    first = ConvLayer(in_channels, w0, kernels[0], 2, norm, act, dims)
    second = ConvLayer(w0, w1, kernels[1], 1, norm, act, dims)
    down: nn.Module = (DWConvLayer(w1, 2, norm, dims) if depthwise_down
                       else _MAX_POOL[dims - 1](kernel_size=3, stride=2, padding=1))
    return nn.Sequential(first, second, down)


def hardnet_transition(in_channels: int, out_channels: int, drop_rate: float,
                       downsample: bool, depthwise_down: bool, norm: Norm, act: Act,
                       dims: int = 2) -> nn.Sequential:
    """What follows a block: [dropout,] a 1x1 conv-norm-act (``conv``, ``norm``, ``relu``)
    and [a downsampling ``down``: a 2x2/2 max pool or a 3x3/2 depthwise conv-norm]."""
    parts: "OrderedDict[str, nn.Module]" = OrderedDict()
    if drop_rate > 0:
        parts["drop"] = nn.Dropout(drop_rate)
    parts.update(ConvLayer(in_channels, out_channels, 1, 1, norm, act, dims).named_children())
    if downsample:
        parts["down"] = (DWConvLayer(out_channels, 2, norm, dims) if depthwise_down
                         else _MAX_POOL[dims - 1](kernel_size=2, stride=2))
    return nn.Sequential(parts)


def hardnet_feature_maps(stem: nn.Module, features: nn.Sequential, x: Tensor, taps: List[int],
                         stop: int) -> List[Tensor]:
    """A HarDNet backbone's feature maps: tap -1 is the stem's output, tap i the output of
    ``features[i]`` (a block or a transition); nothing after ``features[stop]`` runs."""
    x = stem(x)
    out: List[Tensor] = []
    if -1 in taps:
        out.append(x)
    for i, module in enumerate(features):
        if i <= stop:
            x = module(x)
            if i in taps:
                out.append(x)
    return out
