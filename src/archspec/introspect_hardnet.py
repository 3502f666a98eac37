"""Module -> spec for HarDNets: the reference code's ``HarDNet`` (PingoLH/Pytorch-HarDNet,
``hardnet.py``: one flat ``base`` ModuleList) read unit by unit, then checked: the spec's
plan must reproduce every parameter shape of the module (in archspec's key layout, through
the same renaming a checkpoint goes through), or SpecError says which one differs. The
growth multiplier m is not stored in the module: it is the one value, to two decimals,
that gives every layer width it holds."""

from __future__ import annotations

from typing import Any

from torch import nn

from .errors import SpecError
from .nn import CONVS
from .overrides import safe_name

__all__ = ["is_hardnet", "from_hardnet"]


def _fail(message: str) -> SpecError:
    return SpecError.at(message, "<module>")


def is_hardnet(model: nn.Module) -> bool:
    """Laid out as the reference's HarDNet: a ``base`` list whose units include a block
    with ``layers`` and ``links``."""
    base = getattr(model, "base", None)
    return (isinstance(base, nn.ModuleList) and len(base) > 4
            and isinstance(getattr(base[0], "conv", None), CONVS)
            and any(hasattr(u, "links") and hasattr(u, "layers") for u in base))


def _width(layer: nn.Module) -> int:
    """A block layer's output width: its conv's (a DS layer's first, 1x1, conv's)."""
    conv = getattr(getattr(layer, "layer1", layer), "conv", None)
    if not isinstance(conv, CONVS):
        raise _fail(f"{type(layer).__name__} has no conv: not the reference's ConvLayer "
                    "or CombConvLayer")
    return conv.out_channels


def _grmul(blocks: list[dict], widths: list[list[int]]) -> float:
    from .plan_hardnet import layer_width

    for hundredths in range(100, 401):
        m = hundredths / 100
        if all(layer_width(j, b["growth_rate"], m) == w
               for b, ws in zip(blocks, widths) for j, w in enumerate(ws, start=1)):
            return m
    raise _fail("no growth multiplier between 1.00 and 4.00 gives the blocks' layer widths "
                f"{widths[0][:8]}...: not a harmonic dense block")


def from_hardnet(model: nn.Module, *, name: str | None = None, source: str | None = None):
    """The HarDNetSpec of a reference HarDNet module; see archspec.from_module."""
    from .introspect_common import activation_of, finished_spec, norm_of

    base = list(model.base)
    first, second = base[0].conv, base[1].conv
    dims = first.weight.dim() - 2
    down = base[2]
    depthwise_down = hasattr(down, "dwconv")
    if not depthwise_down and type(down).__name__ not in ("MaxPool1d", "MaxPool2d",
                                                          "MaxPool3d"):
        raise _fail(f"base.2 is {type(down).__name__}; a HarDNet stem ends in a max pool or "
                    "a depthwise conv")
    blocks: list[dict] = []
    widths: list[list[int]] = []
    block_dropout, depthwise, i = 0.0, False, 3
    head = None
    while i < len(base):
        unit = base[i]
        if hasattr(unit, "links") and hasattr(unit, "layers"):
            layers = list(unit.layers)
            depthwise = hasattr(layers[0], "layer1")
            widths.append([_width(layer) for layer in layers])
            blocks.append({"growth_rate": widths[-1][0], "layers": len(layers)})
            i += 1
            if isinstance(base[i], nn.Dropout):
                block_dropout = float(base[i].p)
                i += 1
            conv = getattr(base[i], "conv", None)
            if not isinstance(conv, CONVS):
                raise _fail(f"base.{i} is {type(base[i]).__name__}; after a block the "
                            "reference has a 1x1 ConvLayer")
            blocks[-1]["out_channels"] = conv.out_channels
            i += 1
            if i < len(base) and (hasattr(base[i], "dwconv") or type(base[i]).__name__
                                  in ("MaxPool1d", "MaxPool2d", "MaxPool3d")):
                blocks[-1]["downsample"] = True
                i += 1
        else:
            head = unit
            i += 1
    linear = [m for m in (head.modules() if head is not None else ()) if
              isinstance(m, nn.Linear)]
    drops = [m for m in (head.modules() if head is not None else ()) if
             isinstance(m, nn.Dropout)]
    side = {1: 1024, 2: 224, 3: 96}[dims]
    data: dict[str, Any] = {
        "family": "hardnet",
        "name": name or safe_name(type(model).__name__.lower()),
        "description": f"inferred from a {type(model).__module__}.{type(model).__name__}",
        "source": source or f"archspec.from_module({type(model).__name__})",
        "input": ({"channels": first.in_channels, "height": side, "width": side}
                  if dims == 2 else {"channels": first.in_channels, "size": [side] * dims}),
        "stem_widths": [first.out_channels, second.out_channels],
        "stem_kernels": [first.kernel_size[0], second.kernel_size[0]],
        "downsample": "depthwise" if depthwise_down else "maxpool",
        "grmul": _grmul(blocks, widths), "blocks": blocks, "depthwise": depthwise,
        "block_dropout": block_dropout,
        "norm": norm_of(model),
        "activation": activation_of(getattr(base[0], "relu", nn.ReLU6()), "base.0.relu"),
        "drop_rate": float(drops[0].p) if drops else 0.0,
        "num_classes": linear[0].out_features if linear else 0,
    }
    return finished_spec(data, model, name)
