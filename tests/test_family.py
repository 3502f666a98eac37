"""The family beyond the paper: timm's stems and blur pooling, per-block settings,
group norm, other activations, other input channels. Each option is built and its plan
checked against the module."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

import archspec
from archspec.cli import main
from archspec.verify import check_model

timm = pytest.importorskip("timm")
torch.set_num_threads(2)

PER_BLOCK = """\
name: perblock
input: {channels: 1, height: 64, width: 64}
stem: {type: deep_tiered, widths: [8, 16]}
growth_rate: [12, 24, 36]
bn_size: [4, null, 2]
compression: [0.5, 0.75]
drop_rate: [0.0, 0.1, 0.2]
block_config: [3, 4, 5]
norm: {type: group, groups: 2}
activation: silu
anti_alias: {stem: true, transitions: true, filter_size: 5}
num_classes: 7
"""


@pytest.mark.parametrize("name,params", [("densenetblur121d", 7_998_088),
                                         pytest.param("densenet264d", 72_736_216,
                                                      marks=pytest.mark.slow)])
def test_timm_models_are_reproduced(name, params):
    tm = timm.create_model(name, pretrained=False).eval()
    p = archspec.plan(archspec.load(name))
    ours = archspec.build(p).eval()
    assert p.params == params == sum(t.numel() for t in tm.parameters())
    a, b = ours.state_dict(), tm.state_dict()
    assert list(a) == list(b) and all(a[k].shape == b[k].shape for k in a)
    ours.load_state_dict(b, strict=True)
    x = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tm(x), rtol=0, atol=1e-5)
    # and the feature taps, as timm lists them
    assert [f["module"] for f in p.feature_info] == [
        f["module"] for f in tm.feature_info]
    assert [f["num_chs"] for f in p.feature_info] == [f["num_chs"] for f in tm.feature_info]


def test_deep_tiered_widths_follow_timm():
    tm = timm.create_model("densenet121", stem_type="deep_tiered", pretrained=False)
    spec = archspec.load("densenet121", overrides={"stem.type": "deep_tiered", "expect": None})
    p = archspec.plan(spec)
    assert p.stem_widths == (24, 48)
    assert p.params == sum(t.numel() for t in tm.parameters())
    archspec.build(spec).load_state_dict(tm.state_dict(), strict=True)


def test_blur_in_transitions_matches_timm():
    tm = timm.create_model("densenet121", stem_type="deep", pretrained=False,
                           aa_layer=timm.layers.BlurPool2d, aa_stem_only=False).eval()
    spec = archspec.load("densenetblur121d", overrides={"anti_alias.transitions": True})
    ours = archspec.build(spec).eval()
    ours.load_state_dict(tm.state_dict(), strict=True)
    x = torch.randn(1, 3, 75, 75)  # odd sizes: the blur's padding must agree too
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tm(x), rtol=0, atol=1e-5)


def test_per_block_settings_follow_through_plan_and_model():
    p = archspec.plan(archspec.loads(PER_BLOCK))
    blocks = p.blocks
    assert [(b.growth_rate, b.bn_size, b.drop_rate) for b in blocks] == [
        (12, 4, 0.0), (24, None, 0.1), (36, 2, 0.2)]
    assert [s.compression for s in p.stages if s.kind == "transition"] == [0.5, 0.75]
    assert [b.out_channels for b in blocks] == [60, 126, 274]
    model = archspec.build(p, seed=0)
    result = check_model(p, model, batch=2, backward=True)
    assert result.ok, result.mismatches
    assert model.features.denseblock2.denselayer1.drop_rate == 0.1
    assert not hasattr(model.features.denseblock2.denselayer1, "conv2")
    assert model.features.transition2.drop.p == 0.1
    assert isinstance(model.features.norm0, torch.nn.GroupNorm)
    assert isinstance(model.features.relu0, torch.nn.SiLU)


def test_per_block_settings_in_cli_reports(capsys, spec_file):
    path = spec_file(PER_BLOCK)
    assert main(["summary", str(path), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["growth_rate"] == [12, 24, 36] and data["compression"] == [0.5, 0.75]
    assert [s.get("growth_rate") for s in data["stages"] if s["kind"] == "block"] == [12, 24, 36]
    assert main(["table", str(path)]) == 0
    out = capsys.readouterr().out
    assert "| Growth rate k |  | 12, 24, 36 |" in out and "blur pool, stride 2" in out
    assert "| Dense Block (2) | 8 × 8 | [3×3 conv] × 4 |" in out
    assert main(["plot", str(path), "-o", str(path.with_suffix(".svg"))]) == 0


@pytest.mark.parametrize("text,path,words", [
    ("growth_rate: [12, 24]", "growth_rate", "has 2 values for 3 blocks"),
    ("compression: [0.5, 0.5, 0.5]", "compression", "has 3 values for 2 transitions"),
    ("drop_rate: [0.1, 1.5, 0.1]", "drop_rate[1]", "must be < 1.0"),
    ("norm: {type: group, groups: 5}", "norm.groups", "features.denseblock1.denselayer1.norm1 has"),
    ("norm: {type: lyer}", "norm.type", "expected one of batch, group, instance, layer"),
    ("norm: {type: group, momentum: 0.2}", "norm.momentum", "momentum is batch norm's"),
    ("activation: {type: elu, negative_slope: 0.2}", "activation.negative_slope",
     "elu takes alpha, not negative_slope"),
    ("activation: tanh", "activation", "expected one of relu, silu, gelu"),
    ("anti_alias: {stem: true}", "anti_alias.stem", "the cifar stem has no pool"),
    ("stem: {type: cifar, widths: [4, 4]}", "stem.widths", "only the deep stems have widths"),
    ("stem: {type: deep}", "input.height", "is too small"),
    ("stem: {type: dep}", "stem.type", "did you mean 'deep'"),
])
def test_family_mistakes_are_located(spec_file, text, path, words):
    base = ("name: f\ninput: {height: 32, width: 32}\nstem: {type: cifar}\ngrowth_rate: 12\n"
            "bn_size: 4\ncompression: 0.5\nblock_config: [2, 2, 2]\nnum_classes: 10\n")
    key = text.split(":")[0]
    lines = [ln for ln in base.splitlines() if not ln.startswith(key + ":")]
    if key == "stem" and "deep}" in text:
        lines = [ln.replace("height: 32, width: 32", "height: 8, width: 8") for ln in lines]
    with pytest.raises(archspec.SpecError) as info:
        archspec.plan(archspec.load(spec_file("\n".join(lines) + "\n" + text + "\n")))
    assert info.value.path == path and words in info.value.message, str(info.value)


@pytest.mark.parametrize("activation", ["relu", "silu", "gelu", "mish", "elu", "prelu", "relu6",
                                        "{type: leaky_relu, negative_slope: 0.2}"])
def test_activations_build_and_differ(activation):
    small = {"depth": 16, "expect": None}
    spec = archspec.load("densenet-bc-100-12", overrides={"activation": activation, **small})
    model = archspec.build(spec, seed=0).eval()
    result = check_model(archspec.plan(spec), model, batch=2, backward=False)
    assert result.ok
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    relu = archspec.build(archspec.load("densenet-bc-100-12", overrides=small), seed=0).eval()
    with torch.no_grad():
        same = torch.allclose(model(x), relu(x))
    assert same == (activation == "relu")


def test_group_norm_model_and_features():
    spec = archspec.load("densenet121", overrides={"norm": "{type: group, groups: 32}"})
    p = archspec.plan(spec)
    assert p.params == 7_978_856  # GroupNorm has BN's weight and bias, no running stats
    model = archspec.build(p)
    assert not any(k.endswith("running_mean") for k in model.state_dict())
    feats = archspec.build(p, features_only=True)(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == [64, 256, 512, 1024, 1024]


def test_mnist_spec_takes_one_channel():
    p = archspec.plan(archspec.load("densenet-bc-mnist"))
    assert p.input_shape == (1, 28, 28) and p.stages[0].in_channels == 1
    assert [s.out_size for s in p.blocks] == [(28, 28), (14, 14), (7, 7)]
    model = archspec.build(p, seed=0)
    assert model.features.conv0.weight.shape[1] == 1
    assert check_model(p, model, batch=2, backward=True).ok


def test_options_are_in_the_json_schema():
    from archspec.schema import json_schema

    schema = json_schema()
    props = schema["$defs"]["DenseNetSpec"]["properties"]
    assert {"norm", "activation", "anti_alias"} <= set(props)
    defs = schema["$defs"]
    assert defs["StemType"]["enum"] == ["cifar", "imagenet", "deep", "deep_tiered"]
    assert defs["NormType"]["enum"] == ["batch", "group", "instance", "layer"]
    names = ["relu", "silu", "gelu", "leaky_relu", "elu", "mish", "prelu", "relu6"]
    assert props["activation"]["anyOf"][0]["enum"] == names  # a name, or a mapping:
    assert props["activation"]["anyOf"][1]["properties"]["type"]["enum"] == names
    assert any(b.get("type") == "array" for b in props["growth_rate"]["anyOf"])


@st.composite
def family_specs(draw):
    n = draw(st.integers(1, 3))
    stem = draw(st.sampled_from(["cifar", "imagenet", "deep", "deep_tiered"]))
    ks = draw(st.lists(st.integers(4, 12), min_size=n, max_size=n))
    bns = draw(st.lists(st.sampled_from([None, 1, 2]), min_size=n, max_size=n))
    thetas = draw(st.lists(st.sampled_from([0.5, 0.75, 1.0]), min_size=n - 1,
                           max_size=n - 1))
    dims = draw(st.sampled_from([1, 2, 2, 3]))
    aa = draw(st.booleans()) and stem != "cifar" and dims == 2  # blur pooling is 2D
    aa_t = draw(st.booleans()) and dims == 2
    lo = (8 if stem != "cifar" else 2) * 2 ** (n - 1)
    h = draw(st.integers(lo, lo + (7 if dims < 3 else 2)))
    size = f"height: {h}, width: {h}" if dims == 2 else f"size: {[h] * dims}"
    norm = draw(st.sampled_from(["batch", "group", "instance", "layer",
                                 "{type: instance, affine: true}", "{type: batch, affine: false}"]))
    norm = norm[:-1] if norm.startswith("{") else "{type: " + norm
    act = draw(st.sampled_from(["relu", "silu", "gelu", "mish", "elu", "relu6",
                                "{type: prelu, init: 0.1}",
                                "{type: leaky_relu, negative_slope: 0.1}"]))
    lines = [
        "name: fam", f"input: {{channels: {draw(st.integers(1, 3))}, {size}}}",
        f"stem: {{type: {stem}}}",
        f"growth_rate: {ks if draw(st.booleans()) else ks[0]}",
        "bn_size: [" + ", ".join("null" if b is None else str(b) for b in bns) + "]",
        f"block_config: {draw(st.lists(st.integers(1, 3), min_size=n, max_size=n))}",
        f"norm: {norm}, groups: {draw(st.sampled_from([1, 2, 4]))}}}",
        f"activation: {act}",
        f"anti_alias: {{stem: {str(aa).lower()}, transitions: {str(aa_t).lower()}}}",
        f"num_classes: {draw(st.integers(1, 5))}",
    ]
    if thetas:
        lines.append(f"compression: {thetas}")
    return "\n".join(lines) + "\n"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(family_specs())
def test_random_family_specs_plan_equals_model(text):
    try:
        p = archspec.plan(archspec.loads(text))
    except archspec.SpecError as e:  # group sizes that do not divide, tiny inputs
        assert e.path in ("norm.groups", "input.height", "input.width", "compression",
                          "norm.type") or e.path.startswith("input.size"), str(e)
        return
    model = archspec.build(p, seed=0)
    result = check_model(p, model, batch=2, backward=True)
    assert result.ok, (text, result.mismatches)
    assert archspec.plan(archspec.from_module(_without_plan(model))).params == p.params


def _without_plan(model):
    del model.plan
    return model
