"""Module -> spec for VoVNets: timm's ``VovNet`` (and archspec's own), read from the
modules that exist (the stem's convs, each stage's OSA blocks, the classifier), then
checked: the spec's plan must reproduce every parameter shape of the module, or
SpecError says which one differs. What a VoVNet spec cannot say (timm's ECA attention,
drop path) is a SpecError naming the module, never a guess."""

from __future__ import annotations

from typing import Any

from torch import nn

from .errors import SpecError
from .nn import CONVS
from .overrides import safe_name

__all__ = ["is_vovnet", "from_vovnet"]


def _fail(message: str) -> SpecError:
    return SpecError.at(message, "<module>")


def is_vovnet(model: nn.Module) -> bool:
    """Laid out as timm's VovNet: a ``stem`` Sequential and ``stages`` of OSA blocks."""
    stages = getattr(model, "stages", None)
    return (isinstance(getattr(model, "stem", None), nn.Sequential)
            and isinstance(stages, nn.Sequential) and len(stages) > 0
            and hasattr(getattr(stages[0], "blocks", None), "0")
            and hasattr(stages[0].blocks[0], "conv_concat"))


def _conv(unit: nn.Module) -> nn.Module:
    """The conv that sets a conv-norm-act's output width (the pointwise one when
    separable)."""
    conv = getattr(unit, "conv_pw", None) or getattr(unit, "conv", None)
    if not isinstance(conv, CONVS):
        raise _fail(f"{type(unit).__name__} has no conv or conv_pw: not timm's "
                    "ConvNormAct / SeparableConvNormAct")
    return conv


def _act(unit: nn.Module) -> nn.Module:
    """A conv-norm-act's activation: archspec's ``act``, timm's ``bn.act``."""
    act = getattr(unit, "act", None)
    if act is None:
        act = getattr(getattr(unit, "bn", None), "act", None)
    if act is None:
        raise _fail("stem.0 has no activation module (act, or timm's bn.act)")
    return act


def from_vovnet(model: nn.Module, *, name: str | None = None,
                source: str | None = None):
    """The VoVNetSpec of a VoVNet module; see archspec.from_module."""
    from .introspect_common import activation_of, finished_spec, norm_of

    stem = list(model.stem)
    if len(stem) != 3:
        raise _fail(f"the stem has {len(stem)} modules; a VoVNet's has three conv-norm-acts")
    first = _conv(stem[0])
    dims = first.weight.dim() - 2
    depthwise = hasattr(stem[1], "conv_dw")
    stages, attention, layers = [], set(), set()
    for i, stage in enumerate(model.stages):
        blocks = list(stage.blocks)
        for j, block in enumerate(blocks):
            for m in block.modules():
                if type(m).__name__ == "DropPath" and getattr(m, "drop_prob", 0) > 0:
                    raise _fail(f"stages.{i}.blocks.{j} has drop path; a VoVNet spec has "
                                "none (build it with drop_path_rate=0)")
            attn = getattr(block, "attn", None)
            if attn is not None:
                if not (isinstance(getattr(attn, "fc", None), CONVS)
                        and type(attn).__name__ in ("EffectiveSEModule", "EffectiveSE")):
                    raise _fail(f"stages.{i}.blocks.{j}.attn is {type(attn).__name__}; "
                                "archspec's VoVNet attention is eSE (EffectiveSEModule)")
                if getattr(attn, "add_maxpool", False):
                    raise _fail(f"stages.{i}.blocks.{j}.attn adds a max pool; archspec's "
                                "eSE is the mean's alone")
                attention.add(j == len(blocks) - 1)
            layers.add(len(block.conv_mid))
        stages.append({"conv_channels": _conv(blocks[0].conv_mid[0]).out_channels,
                       "out_channels": blocks[0].conv_concat.conv.out_channels,
                       "blocks": len(blocks)})
    if len(layers) != 1:
        raise _fail(f"OSA blocks with different numbers of layers {sorted(layers)}; a "
                    "VoVNet spec has one layers_per_block")
    if attention and attention != {True}:
        raise _fail("eSE on blocks other than each stage's last; archspec's VoVNet puts it "
                    "on the last block of every stage, as timm does")
    # timm sets ``residual`` per block (never on a stage's first): a net of one-block
    # stages says nothing either way, and plans the same with false.
    residual = any(getattr(b, "residual", False) for s in model.stages for b in s.blocks)
    head = getattr(model, "head", None)
    fc = getattr(head, "fc", None)
    num_classes = (fc.out_features if isinstance(fc, nn.Linear) else
                   0 if isinstance(fc, nn.Identity) or fc is None else 1000)
    drop = getattr(head, "drop", None)
    side = {1: 1024, 2: 224, 3: 96}[dims]
    data: dict[str, Any] = {
        "family": "vovnet",
        "name": name or safe_name(type(model).__name__.lower()),
        "description": f"inferred from a {type(model).__module__}.{type(model).__name__}",
        "source": source or f"archspec.from_module({type(model).__name__})",
        "input": ({"channels": first.in_channels, "height": side, "width": side}
                  if dims == 2 else {"channels": first.in_channels, "size": [side] * dims}),
        "stem_widths": [_conv(u).out_channels for u in stem],
        "stages": stages, "layers_per_block": layers.pop(), "residual": residual,
        "depthwise": depthwise, "attention": "ese" if attention else "none",
        "norm": norm_of(model), "activation": activation_of(_act(stem[0]), "stem.0"),
        "drop_rate": float(getattr(drop, "p", 0.0) or getattr(model, "drop_rate", 0.0)),
        "num_classes": num_classes,
    }
    return finished_spec(data, model, name)
