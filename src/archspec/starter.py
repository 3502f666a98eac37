"""Starter specs for ``archspec new``: a commented file a person edits, that validates as is.

Without a base it is the README's DenseNet-BC for 64x64 inputs, every key explained; with
one it ``extends`` that base and lists the base's settings as comments, ready to be
uncommented and changed. Either way the first line points editors at the JSON Schema.
"""

from __future__ import annotations

import os
from pathlib import Path

from .loader import load
from .plan import plan as make_plan

__all__ = ["starter_text"]

_SCHEMA_LINE = "# yaml-language-server: $schema=densenet.schema.json"
_HOW = ("# Write the schema beside this file once for completion in your editor:\n"
        "#   archspec schema > densenet.schema.json\n"
        "# Check it: archspec validate {file}    Its plan: archspec summary {file}\n"
        "# Every key: archspec schema, or docs/spec-reference.md\n")

_FRESH = """name: {name}
description: DenseNet-BC for 64x64 inputs, 200 classes   # one line for people
input: {{channels: 3, height: 64, width: 64}}
stem: {{type: cifar}}          # one 3x3 conv; imagenet: 7x7/2 conv + BN + ReLU + 3x3/2 pool
growth_rate: 16              # k: channels each dense layer adds
bn_size: 4                   # bottleneck: 1x1 conv to bn_size*k channels before each 3x3 (B)
compression: 0.5             # theta: a transition keeps floor(theta * m) channels (C)
block_config: [6, 12, 24]    # layers per dense block; or depth: L for the paper's rule
drop_rate: 0.0               # dropout after each conv but the first
num_classes: 200             # 0: no classifier (the model returns pooled features)
# expect: {{params: ...}}      # numbers you believe; validate checks them against the plan
"""


def starter_text(name: str, file: str, base: str | None = None) -> str:
    """The text of a new spec named ``name`` (to be written to ``file``), extending
    ``base`` (a zoo name or path, loaded and checked here) when given. It validates."""
    head = _SCHEMA_LINE + "\n" + _HOW.format(file=file)
    if base is None:
        return head + _FRESH.format(name=name)
    p = make_plan(load(base))
    s = p.spec
    if p.family == "vovnet":
        return head + "\n".join(_vovnet_lines(name, file, base, p)) + "\n"
    if p.family == "hardnet":
        return head + "\n".join(_hardnet_lines(name, file, base, p)) + "\n"
    if p.family == "peleenet":
        return head + "\n".join(_peleenet_lines(name, file, base, p)) + "\n"
    stem = f"{{type: {s.stem.type.value}}}"
    layers = (f"# depth: {s.depth}" if s.depth is not None
              else f"# block_config: {_yaml(list(p.block_config))}")
    lines = [
        *_opening(name, file, base, p),
        f"# stem: {stem}",
        f"# growth_rate: {_yaml(s.growth_rate)}",
        f"# bn_size: {_yaml(s.bn_size)}",
        f"# compression: {_yaml(s.compression)}",
        layers,
        f"# drop_rate: {_yaml(s.drop_rate)}",
        f"# num_classes: {p.num_classes}",
        f"# ({p.params:,} parameters as it stands)",
    ]
    return head + "\n".join(lines) + "\n"


def _opening(name: str, file: str, base: str, p) -> list[str]:
    """What every member's starter opens with: extends, name, description, the input."""
    s = p.spec
    return [
        f"extends: {_relative(base, file)}",
        f"name: {name}",
        f"description: {p.name}, changed   # say what you changed and why",
        "",
        f"# {p.name}'s settings: uncomment a line and change it to make your variant.",
        f"# input: {{channels: {s.input.channels}, height: {s.input.height}, "
        f"width: {s.input.width}}}",
    ]


def _vovnet_lines(name: str, file: str, base: str, p) -> list[str]:
    """A VoVNet base's settings, each a commented line to change (the family comes with
    ``extends``)."""
    s = p.spec
    stages = ", ".join(f"{{conv_channels: {st.conv_channels}, out_channels: "
                       f"{st.out_channels}, blocks: {st.blocks}}}" for st in s.stages)
    return [
        *_opening(name, file, base, p),
        f"# stem_widths: {_yaml(s.stem_widths)}",
        f"# stages: [{stages}]",
        f"# layers_per_block: {s.layers_per_block}",
        f"# residual: {_yaml(s.residual)}",
        f"# depthwise: {_yaml(s.depthwise)}",
        f"# attention: {s.attention.value}",
        f"# drop_rate: {_yaml(s.drop_rate)}",
        f"# num_classes: {p.num_classes}",
        f"# ({p.params:,} parameters as it stands)",
    ]


def _hardnet_lines(name: str, file: str, base: str, p) -> list[str]:
    """A HarDNet base's settings, each a commented line to change."""
    s = p.spec
    blocks = ", ".join(f"{{growth_rate: {b.growth_rate}, layers: {b.layers}, out_channels: "
                       f"{b.out_channels}, downsample: {_yaml(b.downsample)}}}"
                       for b in s.blocks)
    return [
        *_opening(name, file, base, p),
        f"# stem_widths: {_yaml(s.stem_widths)}",
        f"# stem_kernels: {_yaml(s.stem_kernels)}",
        f"# downsample: {s.downsample.value}",
        f"# grmul: {s.grmul:g}",
        f"# blocks: [{blocks}]",
        f"# depthwise: {_yaml(s.depthwise)}",
        f"# block_dropout: {_yaml(s.block_dropout)}",
        f"# drop_rate: {_yaml(s.drop_rate)}",
        f"# num_classes: {p.num_classes}",
        f"# ({p.params:,} parameters as it stands)",
    ]


def _peleenet_lines(name: str, file: str, base: str, p) -> list[str]:
    """A PeleeNet base's settings, each a commented line to change."""
    s = p.spec
    return [
        *_opening(name, file, base, p),
        f"# stem_channels: {s.stem_channels}",
        f"# growth_rate: {_yaml(s.growth_rate)}",
        f"# block_config: {_yaml(s.block_config)}",
        f"# bottleneck_width: {_yaml(s.bottleneck_width)}",
        f"# drop_rate: {_yaml(s.drop_rate)}",
        f"# num_classes: {p.num_classes}",
        f"# ({p.params:,} parameters as it stands)",
    ]


def _relative(base: str, file: str) -> str:
    """``base`` as ``extends`` in ``file`` must say it: a zoo name as it is, a path
    relative to the folder ``file`` is written to (as the loader resolves it)."""
    if not os.path.exists(base):
        return base
    return Path(os.path.relpath(base, os.path.dirname(os.path.abspath(file)))).as_posix()


def _yaml(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    return str(value)
