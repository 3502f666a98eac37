"""The DenseNet building blocks, named as torchvision (and timm) name them so checkpoints
interchange. Each class takes its widths from the plan (archspec.plan); none computes a
channel count.

Activation modules keep torchvision's names (``relu0``, ``relu1``, ...) whatever the
activation, so module paths stay stable across specs; they hold no parameters but
PReLU's one learned slope each.
"""

# No `from __future__ import annotations` here: torch.fx generates code from these
# modules' annotations, and TorchScript reads them; both need real types.
from collections import OrderedDict
from math import comb
from typing import Callable, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import memory
from .rules import blur_padding
from .schema import Activation, ActivationSpec, NormSpec, NormType

__all__ = ["Norm", "CONVS", "BATCH_NORMS", "make_norm", "Features", "make_activation",
           "activate", "BlurPool2d", "DenseLayer", "DenseBlock", "Transition", "imagenet_stem",
           "cifar_stem", "deep_stem", "classifier", "ClassifierHead"]

Norm = Callable[[int], nn.Module]

# The modules of 1, 2 and 3 spatial dimensions (dims - 1 indexes these).
CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_MAX_POOL = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
_AVG_POOL = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
_INSTANCE_NORM = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)


def make_norm(spec: NormSpec, dims: int = 2) -> Norm:
    """channels -> the norm layer the spec asks for (the plan has checked group sizes).
    Arguments the spec does not give are torch's defaults."""
    kwargs = {} if spec.eps is None else {"eps": spec.eps}
    affine = spec.is_affine
    if spec.type == NormType.group:
        return lambda c: nn.GroupNorm(spec.groups, c, affine=affine, **kwargs)
    if spec.type == NormType.layer:  # over all channels and positions of a sample
        return lambda c: nn.GroupNorm(1, c, affine=affine, **kwargs)
    if spec.type == NormType.instance:
        instance = _INSTANCE_NORM[dims - 1]
        return lambda c: instance(c, affine=affine, **kwargs)
    batch = BATCH_NORMS[dims - 1]
    if spec.momentum is not None:
        kwargs["momentum"] = spec.momentum
    if not kwargs and affine:
        return batch  # the class itself, as torchvision passes it
    return lambda c: batch(c, affine=affine, **kwargs)


def make_activation(act: ActivationSpec) -> Callable[[], nn.Module]:
    kind = act.type
    if kind == Activation.silu:
        return lambda: nn.SiLU(inplace=True)
    if kind == Activation.gelu:
        return nn.GELU  # no in-place variant
    if kind == Activation.mish:
        return lambda: nn.Mish(inplace=True)
    if kind == Activation.leaky_relu:
        return lambda: nn.LeakyReLU(act.argument, inplace=True)
    if kind == Activation.elu:
        return lambda: nn.ELU(act.argument, inplace=True)
    if kind == Activation.prelu:  # one learned slope per use, as MONAI builds it
        return lambda: nn.PReLU(1, act.argument)
    if kind == Activation.relu6:
        return lambda: nn.ReLU6(inplace=True)
    return lambda: nn.ReLU(inplace=True)


def activate(kind: str, x: Tensor, inplace: bool, argument: float = 0.0) -> Tensor:
    """The functional activation for the head and the backbone taps. ``kind`` is the
    spec's value as a plain string, so forwards branch on it (TorchScript compiles that,
    where it cannot call a stored function) and FX names the node after the function
    (``relu``, as in torchvision's graph); ``argument`` is leaky_relu's negative_slope or
    elu's alpha. GELU has no in-place form."""
    if kind == "relu":
        return F.relu(x, inplace=inplace)
    if kind == "silu":
        return F.silu(x, inplace=inplace)
    if kind == "mish":
        return F.mish(x, inplace=inplace)
    if kind == "leaky_relu":
        return F.leaky_relu(x, argument, inplace=inplace)
    if kind == "elu":
        return F.elu(x, argument, inplace=inplace)
    if kind == "relu6":
        return F.relu6(x, inplace=inplace)
    return F.gelu(x)


class BlurPool2d(nn.Module):
    """Anti-aliased stride-2 downsampling: a fixed binomial blur, applied per channel
    (Zhang 2019; the layout of timm's BlurPool2d: reflect padding, a non-persistent
    ``filt`` buffer, so state_dicts carry no extra keys)."""

    def __init__(self, channels: int, filter_size: int = 3, stride: int = 2):
        super().__init__()
        self.channels, self.filter_size, self.stride = channels, filter_size, stride
        self.padding = [blur_padding(filter_size, stride)] * 4
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

    ``forward`` takes the list of all earlier feature maps of its block, concatenates them
    (torchvision's ``cat`` node, so FX feature extractors written for torchvision work) and
    returns its k new channels. The memory levels (archspec.memory.block) run the same
    modules on prefixes of the block's shared feature buffer.
    """

    bottleneck: torch.jit.Final[bool]  # a constant to TorchScript: plain layers have no conv2

    def __init__(self, in_channels: int, bottleneck_channels: Optional[int], growth_rate: int,
                 drop_rate: float, memory_efficient: bool, norm: Norm = nn.BatchNorm2d,
                 act: Callable[[], nn.Module] = lambda: nn.ReLU(inplace=True),
                 dims: int = 2):
        super().__init__()
        conv = CONVS[dims - 1]
        self.norm1 = norm(in_channels)
        self.relu1 = act()
        if bottleneck_channels is None:
            self.conv1 = conv(in_channels, growth_rate, kernel_size=3, padding=1, bias=False)
        else:
            self.conv1 = conv(in_channels, bottleneck_channels, kernel_size=1, bias=False)
            self.norm2 = norm(bottleneck_channels)
            self.relu2 = act()
            self.conv2 = conv(bottleneck_channels, growth_rate, kernel_size=3, padding=1,
                              bias=False)
        self.in_channels, self.growth_rate = in_channels, growth_rate  # from the plan
        self.bottleneck = bottleneck_channels is not None
        self.drop_rate = float(drop_rate)
        self.memory_efficient = memory_efficient

    def forward(self, features: List[Tensor]) -> Tensor:
        return self.new_features(torch.cat(features, 1))

    def bottleneck_fn(self, x: Tensor) -> Tensor:
        """norm1-act-conv1 of the concatenated features: the part whose stored inputs grow
        quadratically with depth."""
        return self.conv1(self.relu1(self.norm1(x)))

    def new_features(self, x: Tensor) -> Tensor:
        """The layer's k new channels from the concatenation of the earlier feature maps."""
        return self.tail(self.bottleneck_fn(x))

    def tail(self, b: Tensor) -> Tensor:
        """From conv1's output to the k new channels: dropout, then (DenseNet-B)
        norm2-act-conv2 and dropout again, as the paper's reference code places it."""
        out = self._drop(b)
        if not self.bottleneck:
            return out
        return self._drop(self.conv2(self.relu2(self.norm2(out))))

    def _drop(self, x: Tensor) -> Tensor:
        if self.drop_rate > 0:
            return F.dropout(x, p=self.drop_rate, training=self.training)
        return x


class DenseBlock(nn.ModuleDict):
    """Layers ``denselayer1..L``; returns the block input concatenated with every layer's output.

    ``memory_efficient`` (the spec's setting, or timm's ``set_grad_checkpointing``) chooses
    how an eager training forward stores what backward needs:

    - ``False``: plain autograd, as torchvision's default.
    - ``True``: the efficient-DenseNet trade (Pleiss et al., 2017). Features live in one
      shared buffer; the cheap, memory-bound part of each layer (concatenation, norm1,
      activation, and the bottleneck's norm2-activation) is recomputed in backward, and
      the convolutions' outputs are kept, so no convolution runs twice.
    - ``"max"``: only the block's output is kept; backward recomputes every layer,
      convolutions included. The least memory, for the most time.

    Either level gives the plain model's gradients bit for bit and updates BatchNorm's
    statistics once; a SyncBatchNorm also synchronises once (its recomputation reuses
    the gathered statistics). Scripted, traced and exported models, and every forward
    without gradients, take the plain path (the same function); under torch.compile each
    layer's concatenation-norm1-act-conv1 is checkpointed, which dynamo can see through
    (blocks holding a SyncBatchNorm: the plain path). Under ``max``, Transition
    recomputes the same way. How: archspec.memory.
    """

    # TorchScript types attributes it reads; this one (bool or "max") is read in eager only.
    __jit_ignored_attributes__ = ["memory_efficient"]

    def __init__(self, layers: List[DenseLayer], out_channels: int):
        super().__init__(OrderedDict((f"denselayer{j}", layer)
                                     for j, layer in enumerate(layers, start=1)))
        self.out_channels = out_channels  # the plan's; sizes the shared feature buffer
        self.memory_efficient = layers[0].memory_efficient if layers else False

    def forward(self, init_features: Tensor) -> Tensor:
        if not torch.jit.is_scripting():
            out = self._at_memory_level(init_features)
            if out is not None:  # the block's memory level applies
                return out
        features = [init_features]
        for name, layer in self.items():
            new_features = layer(features)
            features.append(new_features)
        return torch.cat(features, 1)

    @torch.jit.unused  # eager only: TorchScript compiles the plain path above
    def _at_memory_level(self, x: Tensor) -> Optional[Tensor]:
        return memory.block.forward(self, x)


class Transition(nn.Sequential):
    """norm-act-Conv1x1-(Dropout)-pool between two dense blocks; the pool is the paper's
    2x2/2 average pool, or a stride-2 blur pool (anti-aliasing).

    Under ``memory_efficient: max`` a training forward keeps only the transition's input,
    the block output its dense block keeps anyway: backward recomputes norm-act (batch
    statistics with momentum 0, so the running ones move once) and calls the
    convolution's and the pool's backward kernels directly, as the dense layers do. The
    plain transition keeps the activation and the convolution's output besides, as much
    again as the block's output. This applies to the paper's transition (BatchNorm,
    ReLU, average pool, no dropout); any other takes the plain path, as do ``true``, which
    trades no time here, and scripted, traced, exported and compiled models. How:
    archspec.memory.transition."""

    # TorchScript types attributes it reads; this one (bool or "max") is read in eager only.
    __jit_ignored_attributes__ = ["memory_efficient"]

    def __init__(self, in_channels: int, out_channels: int, drop_rate: float,
                 norm: Norm = nn.BatchNorm2d,
                 act: Callable[[], nn.Module] = lambda: nn.ReLU(inplace=True),
                 blur_filter: Optional[int] = None, memory_efficient=False, dims: int = 2):
        super().__init__()
        self.norm = norm(in_channels)
        self.relu = act()
        self.conv = CONVS[dims - 1](in_channels, out_channels, kernel_size=1, bias=False)
        if drop_rate > 0:  # no parameters: state_dict keys are unchanged
            self.drop = nn.Dropout(drop_rate)
        self.pool = (BlurPool2d(out_channels, blur_filter) if blur_filter
                     else _AVG_POOL[dims - 1](kernel_size=2, stride=2))
        self.memory_efficient = memory_efficient

    def forward(self, x: Tensor) -> Tensor:
        if not torch.jit.is_scripting():
            out = self._at_memory_level(x)
            if out is not None:  # recomputed under max
                return out
        for module in self:
            x = module(x)
        return x

    @torch.jit.unused
    def _at_memory_level(self, x: Tensor) -> Optional[Tensor]:
        return memory.transition.forward(self, x)


class Features(nn.Sequential):
    """torchvision's ``features``: the stem's modules, the dense blocks and transitions,
    norm5, run in order. Under ``memory_efficient: max`` an eager training forward runs a
    pooling stem keeping only its input and recomputes it in backward (how:
    archspec.memory.stem); every other forward is the Sequential's."""

    # TorchScript types attributes it reads; this one (bool or "max") is read in eager only.
    __jit_ignored_attributes__ = ["memory_efficient"]

    def __init__(self, modules, memory_efficient=False):
        super().__init__(modules)
        self.memory_efficient = memory_efficient

    def forward(self, x: Tensor) -> Tensor:
        start = 0
        if not torch.jit.is_scripting():
            got = self._stem_at_memory_level(x)
            if got is not None:  # the stem ran, recomputed in backward
                x, start = got
        for i, module in enumerate(self):
            if i >= start:
                x = module(x)
        return x

    @torch.jit.unused
    def _stem_at_memory_level(self, x: Tensor) -> Optional[Tuple[Tensor, int]]:
        return memory.stem.forward(self, x)


def _stem_pool(channels: int, blur_filter: Optional[int], dims: int) -> nn.Module:
    if blur_filter:  # timm: max pool at stride 1, then the blur does the downsampling
        return nn.Sequential(nn.MaxPool2d(kernel_size=3, stride=1, padding=1),
                             BlurPool2d(channels, blur_filter))
    return _MAX_POOL[dims - 1](kernel_size=3, stride=2, padding=1)


def imagenet_stem(in_channels: int, channels: int, norm: Norm, act: Callable[[], nn.Module],
                  blur_filter: Optional[int] = None, dims: int = 2
                  ) -> list[tuple[str, nn.Module]]:
    """conv0 7x7/2, norm0, relu0, pool0 3x3/2 (pad 1): torchvision's stem (and MONAI's,
    in 1 and 3 dimensions: 7/2 and 7x7x7/2, 3/2 and 3x3x3/2)."""
    return [
        ("conv0", CONVS[dims - 1](in_channels, channels, kernel_size=7, stride=2, padding=3,
                                  bias=False)),
        ("norm0", norm(channels)),
        ("relu0", act()),
        ("pool0", _stem_pool(channels, blur_filter, dims)),
    ]


def deep_stem(in_channels: int, widths: tuple[int, ...], channels: int, norm: Norm,
              act: Callable[[], nn.Module], blur_filter: Optional[int] = None,
              dims: int = 2) -> list[tuple[str, nn.Module]]:
    """timm's deep stem: conv0 3x3/2, conv1 3x3, conv2 3x3, each with norm and act, pool0."""
    c1, c2 = widths
    conv = CONVS[dims - 1]
    return [
        ("conv0", conv(in_channels, c1, 3, stride=2, padding=1, bias=False)),
        ("norm0", norm(c1)), ("relu0", act()),
        ("conv1", conv(c1, c2, 3, stride=1, padding=1, bias=False)),
        ("norm1", norm(c2)), ("relu1", act()),
        ("conv2", conv(c2, channels, 3, stride=1, padding=1, bias=False)),
        ("norm2", norm(channels)), ("relu2", act()),
        ("pool0", _stem_pool(channels, blur_filter, dims)),
    ]


def cifar_stem(in_channels: int, channels: int, dims: int = 2) -> list[tuple[str, nn.Module]]:
    """conv0 3x3/1 (pad 1) and nothing after it, as in the paper's CIFAR nets."""
    return [("conv0", CONVS[dims - 1](in_channels, channels, kernel_size=3, padding=1,
                                      bias=False))]


def classifier(in_features: int, num_classes: int, zero_bias: bool = True) -> nn.Module:
    """The linear classifier with a zero bias (torchvision's and timm's init; torch's
    default where ``zero_bias`` is false, as HarDNet's reference leaves it), or an
    Identity for a headless model (``num_classes`` 0)."""
    if num_classes == 0:
        return nn.Identity()
    linear = nn.Linear(in_features, num_classes)
    if zero_bias:
        nn.init.constant_(linear.bias, 0)
    return linear


class ClassifierHead(nn.Module):
    """Global average pool, dropout, linear classifier (timm's ClassifierHead keys:
    ``head.fc``); with no classes the fc is an Identity and the pooled features pass."""

    def __init__(self, in_features: int, num_classes: int, drop_rate: float, dims: int = 2,
                 zero_bias: bool = True):
        super().__init__()
        self.spatial: List[int] = list(range(2, dims + 2))
        self.drop = nn.Dropout(drop_rate)
        self.fc: nn.Module = classifier(in_features, num_classes, zero_bias)

    def forward(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.drop(x.mean(self.spatial))
        return x if pre_logits else self.fc(x)

