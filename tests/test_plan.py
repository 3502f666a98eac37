"""The planner: exact numbers for the zoo, the paper's rules, and no torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

import archspec
from conftest import CIFAR, IMAGENET, SMALL

TORCHVISION_PARAMS = {"densenet121": 7_978_856, "densenet169": 14_149_480,
                      "densenet201": 20_013_928, "densenet161": 28_681_000}
# Table 2 prints params rounded to 0.1M; the exact counts are pinned beside them.
PAPER_PARAMS = {
    "densenet-40-12": ("1.0M", 1_019_722), "densenet-100-12": ("7.0M", 6_979_642),
    "densenet-100-24": ("27.2M", 27_249_082), "densenet-bc-100-12": ("0.8M", 769_162),
    "densenet-bc-250-24": ("15.3M", 15_324_406), "densenet-bc-190-40": ("25.6M", 25_624_430),
}


@pytest.mark.parametrize("name", list(TORCHVISION_PARAMS))
def test_imagenet_params_equal_torchvision(name):
    assert archspec.plan(archspec.load(name)).params == TORCHVISION_PARAMS[name]


@pytest.mark.parametrize("name", list(PAPER_PARAMS))
def test_cifar_params_round_to_table_2(name):
    printed, exact = PAPER_PARAMS[name]
    params = archspec.plan(archspec.load(name)).params
    assert params == exact
    assert f"{params / 1e6:.1f}M" == printed


def test_densenet121_stages_follow_table_1():
    p = archspec.plan(archspec.load("densenet121"))
    assert [(s.name, s.in_channels, s.out_channels, s.out_size) for s in p.stages] == [
        ("stem", 3, 64, (56, 56)),
        ("denseblock1", 64, 256, (56, 56)), ("transition1", 256, 128, (28, 28)),
        ("denseblock2", 128, 512, (28, 28)), ("transition2", 512, 256, (14, 14)),
        ("denseblock3", 256, 1024, (14, 14)), ("transition3", 1024, 512, (7, 7)),
        ("denseblock4", 512, 1024, (7, 7)), ("head", 1024, 1000, (1, 1)),
    ]
    assert p.out_channels == 1024
    assert sum(s.params for s in p.stages) == p.params
    # torchvision documents densenet121 at 2.83 GFLOPS (multiply-adds) for 224x224.
    assert p.macs == 2_834_161_664


def test_layers_in_a_block_see_all_earlier_features():
    p = archspec.plan(archspec.load("densenet121"))
    block = p.stage("denseblock2")
    assert [lp.in_channels for lp in block.layers] == [128 + 32 * i for i in range(12)]
    assert all(lp.bottleneck_channels == 128 for lp in block.layers)


@pytest.mark.parametrize("depth,bottleneck,per_block", [
    (40, False, 12), (100, False, 32), (100, True, 16), (250, True, 41), (190, True, 31)])
def test_depth_rule(depth, bottleneck, per_block):
    extra = "bn_size: 4\ncompression: 0.5\n" if bottleneck else ""
    spec = archspec.loads(f"name: d\nstem: {{type: cifar}}\ngrowth_rate: 12\ndepth: {depth}\n"
                          f"input: {{height: 32, width: 32}}\n{extra}")
    p = archspec.plan(spec)
    assert p.block_config == (per_block,) * 3
    assert p.depth == depth


@pytest.mark.parametrize("bn,theta,stem", [(None, 1.0, 16), (4, 1.0, 24), (None, 0.5, 24)])
def test_default_stem_channels_follow_the_paper(bn, theta, stem):
    text = SMALL.replace("growth_rate: 4", "growth_rate: 12").replace("bn_size: 2\n", "")
    text = text.replace("compression: 0.5", f"compression: {theta}")
    if bn:
        text += f"bn_size: {bn}\n"
    assert archspec.plan(archspec.loads(text)).stem_channels == stem


def test_transition_width_uses_the_decimal_written():
    # floor(0.29 * 100) is 29; binary floating point would give 28.
    text = SMALL.replace("compression: 0.5", "compression: 0.29").replace(
        "stem: {type: cifar}", "stem: {type: cifar, channels: 92}")
    p = archspec.plan(archspec.loads(text))
    assert p.stage("transition1").in_channels == 100
    assert p.stage("transition1").out_channels == 29


def test_odd_sizes_floor_like_torch():
    text = SMALL.replace("height: 32, width: 32", "height: 37, width: 30").replace(
        "block_config: [2, 2]", "block_config: [1, 1, 1]")
    p = archspec.plan(archspec.loads(text))
    assert [s.out_size for s in p.stages if s.kind == "transition"] == [(18, 15), (9, 7)]


def test_feature_info_matches_timm_for_densenet121():
    info = archspec.plan(archspec.load("densenet121")).feature_info
    assert [(f["module"], f["num_chs"], f["reduction"]) for f in info] == [
        ("features.norm0", 64, 2), ("features.denseblock1", 256, 4),
        ("features.denseblock2", 512, 8), ("features.denseblock3", 1024, 16),
        ("features.norm5", 1024, 32)]


def test_plan_does_not_import_torch():
    code = ("import sys, archspec\n"
            "for n in archspec.zoo.names(): archspec.plan(archspec.load(n))\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_zoo_spec_is_listed_and_pins_its_numbers():
    names = archspec.zoo.names()
    assert set(IMAGENET + CIFAR) <= set(names)
    assert names.index("densenet264") < names.index("densenet-40-12")  # ImageNet first
    for name in IMAGENET + CIFAR:
        spec = archspec.load(name)
        assert spec.source and spec.expect and spec.expect.params
        archspec.plan(spec)  # raises if expect disagrees
