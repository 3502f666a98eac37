"""HarDNet's reference key layout (PingoLH/Pytorch-HarDNet ``hardnet.py``) and archspec's.

The reference keeps every unit in one flat ModuleList, ``base``: the stem's two convs and
its downsampling at 0-2, then per block the block, [HarDNet-85's dropout after the last
block,] the 1x1 ConvLayer and [the downsampling], and last the head, a Sequential whose
Linear is ``.3``. Inside a unit the names are the same as archspec's (archspec.nn_hardnet),
so a key maps by its ``base.N.`` prefix alone; which N is which unit follows from the
plan (which blocks downsample, whether the dropout is there).
"""

from __future__ import annotations

from typing import Mapping

import torch

__all__ = ["REFERENCE", "reference_prefixes", "from_reference", "to_reference"]

#: The layout's name in weights reports.
REFERENCE = "HarDNet reference, PingoLH/Pytorch-HarDNet"


def reference_prefixes(plan) -> dict[str, str]:
    """The reference's ``base.N.`` prefix -> archspec's, for a HarDNet plan."""
    spec = plan.spec
    out = {"base.0.": "stem.0.", "base.1.": "stem.1.", "base.2.": "stem.2."}
    i = 3
    for b, blk in enumerate(spec.blocks):
        out[f"base.{i}."] = f"features.hardblock{b + 1}."
        i += 1
        if b == len(spec.blocks) - 1 and spec.block_dropout > 0:
            i += 1  # nn.Dropout: no tensors
        out[f"base.{i}."] = f"features.transition{b + 1}."  # its ConvLayer's conv, norm
        i += 1
        if blk.downsample:
            out[f"base.{i}."] = f"features.transition{b + 1}.down."
            i += 1
    out[f"base.{i}.3."] = "head.fc."
    return out


def from_reference(state: Mapping[str, torch.Tensor], plan) -> tuple[dict, int]:
    """Keys in the reference's layout renamed to archspec's; returns (state, renamed).
    Keys outside ``base.`` stay as they are (the comparison reports them)."""
    prefixes = reference_prefixes(plan)
    out, renamed = {}, 0
    for key, value in state.items():
        new = _rename(key, prefixes)
        renamed += new != key
        out[new] = value
    return out, renamed


def to_reference(state: Mapping[str, torch.Tensor], plan) -> dict[str, torch.Tensor]:
    """An archspec HarDNet's state_dict in the reference's layout: what the reference's
    ``HarDNet(...)`` loads with strict=True."""
    back = {mine: ref for ref, mine in reference_prefixes(plan).items()}
    return {_rename(k, back): v for k, v in state.items()}


def _rename(key: str, prefixes: Mapping[str, str]) -> str:
    # the longest prefix first: "features.transition1.down." before "features.transition1."
    for old in sorted(prefixes, key=len, reverse=True):
        if key.startswith(old):
            return prefixes[old] + key[len(old):]
    return key
