"""Shared fixtures: zoo names and a helper that writes a spec file and loads it."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
from hypothesis import settings

# CI runs the same examples every time, so a failure there reproduces; locally hypothesis
# keeps exploring new ones.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

import archspec
from archspec import zoo

IMAGENET = ["densenet121", "densenet169", "densenet201", "densenet264", "densenet161"]
CIFAR = ["densenet-40-12", "densenet-100-12", "densenet-100-24", "densenet-bc-100-12",
         "densenet-bc-250-24", "densenet-bc-190-40"]

# A small valid spec that builds in milliseconds; tests change one thing at a time.
SMALL = """\
name: small
input: {channels: 3, height: 32, width: 32}
stem: {type: cifar}
growth_rate: 4
bn_size: 2
compression: 0.5
block_config: [2, 2]
num_classes: 5
"""


@pytest.fixture
def spec_file(tmp_path: Path):
    """spec_file(text) -> path of a spec file holding ``text`` (dedented)."""
    def write(text: str, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path
    return write


@pytest.fixture
def load_error(spec_file):
    """load_error(text) -> the SpecError that loading and planning ``text`` raises."""
    def run(text: str) -> archspec.SpecError:
        path = spec_file(text)
        with pytest.raises(archspec.SpecError) as info:
            archspec.plan(archspec.load(path))
        return info.value
    return run


def all_zoo() -> list[str]:
    return zoo.names()


def folding_norms(model) -> None:
    """Give every BatchNorm2d of ``model`` statistics and affine parameters that make
    folding it into its conv change the weights (drawn from the global RNG)."""
    import torch

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
