"""Module -> spec for PeleeNets: the reference code's ``PeleeNet`` (Robert-JunWang/PeleeNet,
``peleenet.py``) and archspec's own, read from the stem block, each dense block's layers
and the classifier, then checked: the spec's plan must reproduce every parameter shape of
the module, or SpecError says which one differs. A stage's bottleneck width is not
stored: it is the smallest one that gives every 1x1 width the stage holds (the reference
rounds and caps it)."""

from __future__ import annotations

from typing import Any

from torch import nn

from .errors import SpecError
from .nn import CONVS
from .overrides import safe_name

__all__ = ["is_peleenet", "from_peleenet"]


def _fail(message: str) -> SpecError:
    return SpecError.at(message, "<module>")


def is_peleenet(model: nn.Module) -> bool:
    """Laid out as the reference's PeleeNet: ``features.stemblock.stem1.conv``."""
    stem = getattr(getattr(model, "features", None), "stemblock", None)
    return isinstance(getattr(getattr(stem, "stem1", None), "conv", None), CONVS)


def from_peleenet(model: nn.Module, *, name: str | None = None, source: str | None = None):
    """The PeleeNetSpec of a PeleeNet module; see archspec.from_module."""
    from .introspect_common import activation_of, finished_spec, norm_of
    from .plan_peleenet import bottleneck

    features = dict(model.features.named_children())
    first = features["stemblock"].stem1.conv
    dims = first.weight.dim() - 2
    channels = first.out_channels
    growth, layers, widths = [], [], []
    b = 1
    while f"denseblock{b}" in features:
        block = list(features[f"denseblock{b}"].children())
        k = 2 * block[0].branch1b.conv.out_channels
        inters = [layer.branch1a.conv.out_channels for layer in block]
        width = next((w for w in range(1, 257)
                      if all(bottleneck(channels + j * k, k, w) == inter
                             for j, inter in enumerate(inters))), None)
        if width is None:
            raise _fail(f"denseblock{b}'s bottlenecks {inters} fit no bottleneck width")
        growth.append(k)
        layers.append(len(block))
        widths.append(width)
        channels += len(block) * k
        b += 1
    act = getattr(features["stemblock"].stem1, "act", None)
    linear = getattr(model, "classifier", None)
    drop = getattr(model, "drop", None)
    side = {1: 1024, 2: 224, 3: 96}[dims]
    data: dict[str, Any] = {
        "family": "peleenet",
        "name": name or safe_name(type(model).__name__.lower()),
        "description": f"inferred from a {type(model).__module__}.{type(model).__name__}",
        "source": source or f"archspec.from_module({type(model).__name__})",
        "input": ({"channels": first.in_channels, "height": side, "width": side}
                  if dims == 2 else {"channels": first.in_channels, "size": [side] * dims}),
        "stem_channels": first.out_channels,
        "growth_rate": growth[0] if len(set(growth)) == 1 else growth,
        "block_config": layers,
        "bottleneck_width": widths[0] if len(set(widths)) == 1 else widths,
        # the reference's activation is F.relu, a function: no module to read
        "drop_rate": float(getattr(drop, "p", None) or getattr(model, "drop_rate", 0.0)),
        "norm": norm_of(model),
        "activation": activation_of(act, "features.stemblock.stem1.act") if act is not None
        else "relu",
        "num_classes": linear.out_features if isinstance(linear, nn.Linear) else 0,
    }
    return finished_spec(data, model, name)
