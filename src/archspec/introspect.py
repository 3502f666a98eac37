"""Module -> spec: infer a DenseNet spec from a torchvision, timm, MONAI or archspec model.

Reads the widths of the modules that exist (conv0, each dense layer's convs, each
transition's conv, the classifier), so any DenseNet laid out with torchvision's names can
be described (MONAI's, of 1, 2 or 3 spatial dimensions, nests each layer's modules in
``layers`` and calls the classifier ``class_layers.out``), then checked: the spec's plan
must reproduce every parameter shape of the module, or SpecError says which one differs.
What a spec cannot say (another norm or activation, MONAI's channel-wise dropout) is a
SpecError naming the module, never a guess.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

from torch import nn

from .introspect_common import activation_of, fail, finished_spec, norm_of, zoo_twin
from .nn import CONVS
from .overrides import safe_name
from .rules import deep_tiered_widths
from .schema import DenseNetSpec, HarDNetSpec, PeleeNetSpec, VoVNetSpec

__all__ = ["from_module", "from_name", "activation_of", "zoo_twin"]


def _shortest_theta(pairs: list[tuple[int, int]]) -> float | None:
    """The shortest decimal theta with floor(theta * in) == out for every (in, out)."""
    c_in, c_out = pairs[0]
    lo, hi = Fraction(c_out, c_in), Fraction(c_out + 1, c_in)
    for digits in range(1, 8):
        step = Fraction(1, 10 ** digits)
        candidate = math.ceil(lo / step) * step
        if candidate < hi and 0 < candidate <= 1 and all(
                math.floor(candidate * i) == o for i, o in pairs):
            return float(candidate)
    return None


def _theta(pairs: list[tuple[int, int]]) -> float | list[float]:
    """The compression that gives every transition's width (out = floor(theta * in)):
    one value if one fits all, else one per transition."""
    if not pairs:
        return 1.0
    shared = _shortest_theta(pairs)
    if shared is not None:
        return shared
    each = [_shortest_theta([p]) for p in pairs]
    if any(t is None for t in each):
        raise fail(f"no compression gives these transition widths: {pairs}")
    return each  # type: ignore[return-value]


def from_module(model: nn.Module, *, name: str | None = None,
                source: str | None = None) -> DenseNetSpec:
    """Infer the spec of a DenseNet module (torchvision, timm or archspec).

    ``name`` defaults to the zoo's name for the same network (``densenet121`` for
    torchvision's densenet121), else the class name. The spec pins the parameter count and
    output channels it was checked against in ``expect``. Raises SpecError if the module
    is not a DenseNet laid out with torchvision's names, or if the inferred spec does not
    reproduce the module's parameter shapes.
    """
    plan = getattr(model, "plan", None)
    if plan is not None and isinstance(getattr(plan, "spec", None), (
            DenseNetSpec, VoVNetSpec, HarDNetSpec, PeleeNetSpec)):
        return plan.spec
    from .introspect_hardnet import from_hardnet, is_hardnet
    from .introspect_peleenet import from_peleenet, is_peleenet
    from .introspect_vovnet import from_vovnet, is_vovnet

    if is_vovnet(model):
        return from_vovnet(model, name=name, source=source)
    if is_hardnet(model):
        return from_hardnet(model, name=name, source=source)
    if is_peleenet(model):
        return from_peleenet(model, name=name, source=source)
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Module):
        raise fail(f"{type(model).__name__} has no 'features': not a DenseNet laid out "
                    "like torchvision's")
    children = dict(features.named_children())
    conv0 = children.get("conv0")
    if not isinstance(conv0, CONVS):
        raise fail("features.conv0 is not a Conv1d, Conv2d or Conv3d")
    dims = conv0.weight.dim() - 2
    pool0 = children.get("pool0")
    stem_widths = None
    if isinstance(children.get("conv2"), CONVS) and pool0 is not None:
        stem, stem_channels = "deep", children["conv2"].out_channels
        stem_widths = [conv0.out_channels, children["conv1"].out_channels]
    elif conv0.kernel_size == (7,) * dims and conv0.stride == (2,) * dims and pool0 is not None:
        stem, stem_channels = "imagenet", conv0.out_channels
    elif conv0.kernel_size == (3,) * dims and conv0.stride == (1,) * dims and pool0 is None:
        stem, stem_channels = "cifar", conv0.out_channels
    else:
        raise fail(f"unknown stem: conv0 {conv0.kernel_size} stride {conv0.stride}")

    blocks = [m for n, m in children.items() if n.startswith("denseblock")]
    if not blocks or not all(hasattr(b, "denselayer1") for b in blocks):
        raise fail("no features.denseblockN modules with denselayer1")
    _refuse_channel_dropout(blocks)
    growth, bn_sizes = [], []
    for b in blocks:
        first = _layer_modules(b.denselayer1)
        bottleneck = isinstance(getattr(first, "conv2", None), CONVS)
        k = first.conv2.out_channels if bottleneck else first.conv1.out_channels
        growth.append(k)
        if bottleneck and first.conv1.out_channels % k:
            raise fail(f"bottleneck width {first.conv1.out_channels} is not a multiple of "
                        f"the growth rate {k}")
        bn_sizes.append(first.conv1.out_channels // k if bottleneck else None)
    if stem_widths is not None:
        k1 = growth[0]
        if stem_widths == [k1, k1]:
            stem_widths = None
        elif tuple(stem_widths) == deep_tiered_widths(k1):
            stem, stem_widths = "deep_tiered", None
    block_config = [sum(1 for n, _ in b.named_children() if n.startswith("denselayer"))
                    for b in blocks]
    transitions = [m for n, m in children.items() if n.startswith("transition")]
    pairs = [(m.conv.in_channels, m.conv.out_channels) for m in transitions]
    classifier = getattr(model, "classifier", None)
    class_layers = getattr(model, "class_layers", None)  # MONAI's head
    if classifier is None and class_layers is not None:
        classifier = getattr(class_layers, "out", None)
    num_classes = (classifier.out_features if isinstance(classifier, nn.Linear) else
                   0 if isinstance(classifier, nn.Identity) else 1000)
    first = blocks[0].denselayer1
    blur_stem = _blur_filter(pool0)
    blur_trans = _blur_filter(transitions[0].pool) if transitions else None
    norm = norm_of(model)

    def one(values: list) -> Any:
        return values[0] if len(set(values)) == 1 else values
    data: dict[str, Any] = {
        "name": name or safe_name(type(model).__name__.lower()),
        "description": f"inferred from a {type(model).__module__}.{type(model).__name__}",
        "source": source or f"archspec.from_module({type(model).__name__})",
        # A module does not say what size it runs at: the zoo's sizes for its kind.
        "input": _input(conv0.in_channels, dims, stem),
        "stem": {"type": stem, "channels": stem_channels, "widths": stem_widths},
        "growth_rate": one(growth), "bn_size": one(bn_sizes),
        "compression": _theta(pairs), "block_config": block_config,
        "drop_rate": float(getattr(first, "drop_rate", 0.0) or 0.0),
        "norm": norm, "activation": _activation(model, first),
        "anti_alias": {"stem": blur_stem is not None, "transitions": blur_trans is not None,
                       "filter_size": blur_stem or blur_trans or 3},
        "num_classes": num_classes,
        "memory_efficient": _memory_level(model, blocks[0]),
    }
    return finished_spec(data, model, name)


def _blur_filter(pool: Any) -> int | None:
    """The filter size of a blur pool (timm's or ours: a module with a ``filt`` buffer)."""
    if pool is None:
        return None
    for m in pool.modules():
        filt = getattr(m, "filt", None)
        if filt is not None and hasattr(filt, "shape"):
            return int(filt.shape[-1])
    return None


def _input(channels: int, dims: int, stem: str) -> dict[str, Any]:
    if dims == 2:
        side = 224 if stem != "cifar" else 32
        return {"channels": channels, "height": side, "width": side}
    # volumes: MONAI's 3D tutorials' 96^3; signals: 1024 samples (32 after the stem)
    side = (96 if dims == 3 else 1024) if stem != "cifar" else 32
    return {"channels": channels, "size": [side] * dims}


def _layer_modules(layer: nn.Module) -> nn.Module:
    """Where a dense layer keeps norm1, conv1...: itself, or MONAI's ``layers``."""
    inner = getattr(layer, "layers", None)
    return inner if isinstance(inner, nn.Sequential) and hasattr(inner, "conv1") else layer


def _refuse_channel_dropout(blocks: list) -> None:
    for b in blocks:
        for name, m in b.named_modules():
            if isinstance(m, (nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)) and m.p > 0:
                raise fail(f"{type(m).__name__} at {name} drops whole channels (MONAI's "
                            "dropout_prob); archspec's drop_rate drops single elements, "
                            "so no spec says this network: use dropout_prob=0")


def _activation(model: nn.Module, layer: nn.Module) -> Any:
    """The activation of the first dense layer (``relu1``; timm keeps it in ``norm1.act``):
    one archspec names, or a SpecError naming it (MONAI's Swish, a PReLU...), never a
    guess, since an activation holds no parameter that a shape check would catch."""
    inner = _layer_modules(layer)
    act = getattr(inner, "relu1", None)
    where = "relu1"
    if act is None:
        act, where = getattr(getattr(inner, "norm1", None), "act", None), "norm1.act"
    if act is None:
        raise fail("the first dense layer has no relu1 (nor timm's norm1.act): cannot "
                    "tell its activation")
    return activation_of(act, f"denselayer1.{where}")


def from_name(ref: str) -> tuple[nn.Module, str]:
    """``torchvision:densenet121`` or ``timm:densenet121`` -> (model without weights, ref)."""
    library, sep, arch = ref.partition(":")
    if not sep or not arch:
        raise fail(f"expected LIBRARY:NAME such as torchvision:densenet121, got {ref!r}")
    if library == "torchvision":
        import torchvision

        names = sorted(n for n in dir(torchvision.models) if n.startswith("densenet")
                       and callable(getattr(torchvision.models, n)))  # not the module
        if arch not in names:
            raise fail(f"torchvision has no DenseNet called {arch!r} (its DenseNet "
                        f"constructors: {', '.join(names)})")
        ctor = getattr(torchvision.models, arch)
        return ctor(weights=None), ref
    if library == "timm":
        try:
            import timm
        except ImportError:
            raise fail("timm is not installed: pip install timm") from None
        if arch not in timm.list_models("*densenet*") + timm.list_models("*vovnet*"):
            raise fail(f"timm has no DenseNet or VoVNet called {arch!r}")
        return timm.create_model(arch, pretrained=False), ref
    raise fail(f"unknown library {library!r}: use torchvision: or timm:")


def _memory_level(model: nn.Module, block: nn.Module) -> Any:
    """The spec value for the blocks' memory setting: archspec's own (False, True, "max"),
    or True for torchvision's memory_efficient / timm's grad_checkpointing."""
    first = block.denselayer1
    level = getattr(block, "memory_efficient", getattr(first, "memory_efficient", False))
    if level == "max":
        return "max"
    return bool(level or getattr(first, "grad_checkpointing", False)
                or getattr(model, "grad_checkpointing", False))
