"""HarDNet (Chao et al., ICCV 2019), the family's second member beside DenseNet after
VoVNet: the zoo's four pinned to the reference code's counts, exact against the expected
outputs made once from that code (tests/expected/hardnet, provenance inside each file),
its key layout read and written, and the surfaces every member has."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import archspec
from archspec import SpecError
from archspec.cli import main
from conftest import folding_norms
from archspec.plan_hardnet import harmonic_links, layer_width
from archspec.weights_hardnet import to_reference

torch.set_num_threads(2)

EXPECTED = Path(__file__).resolve().parent / "expected" / "hardnet"
REFERENCE = {"hardnet68": 17_565_348, "hardnet85": 36_670_212, "hardnet39ds": 3_488_228,
             "hardnet68ds": 4_180_602}


def _expected(name: str) -> dict:
    return json.loads((EXPECTED / f"{name}.json").read_text())


def _input() -> torch.Tensor:  # as tests/expected/hardnet/generate.py draws it
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def small(**extra) -> str:
    lines = {"family": "hardnet", "name": "tiny", "input": "{channels: 3, height: 64, width: 64}",
             "stem_widths": "[8, 16]", "grmul": "1.7",
             "blocks": "[{growth_rate: 6, layers: 4, out_channels: 24, downsample: true}, "
                       "{growth_rate: 8, layers: 3, out_channels: 32}]",
             "num_classes": "5"}
    lines.update({k: str(v) for k, v in extra.items()})
    return "".join(f"{k}: {v}\n" for k, v in lines.items() if v != "None")


# --- exactness against the reference code --------------------------------------------------

def test_zoo_pins_the_reference_counts_torch_free():
    for name, count in REFERENCE.items():
        p = archspec.plan(archspec.load(name))
        assert p.params == count == _expected(name)["params"]
        assert p.spec.expect.params == count


@pytest.mark.parametrize("name", list(REFERENCE))
def test_a_seed_gives_the_reference_network_and_its_outputs(name):
    """Built with seed=0, archspec's HarDNet is the reference's HarDNet after
    torch.manual_seed(0): its state_dict in the reference's layout has the reference's
    keys and shapes in the reference's order, and it gives the reference's outputs in
    eval mode and in train mode (dropout included), with the same running statistics."""
    want = _expected(name)
    model = archspec.build(name, seed=0)
    theirs = to_reference(model.state_dict(), model.plan)
    assert [[k, list(v.shape)] for k, v in theirs.items()] == want["keys"]
    assert sum(p.numel() for p in model.parameters()) == want["params"]
    x = _input()
    model.eval()
    with torch.no_grad():
        out = model(x)
    expect = torch.tensor(want["eval_output"])
    scale = expect.abs().max().item()
    torch.testing.assert_close(out, expect, rtol=0, atol=1e-5 * max(scale, 1.0))
    model.train()
    torch.manual_seed(1)
    with torch.no_grad():
        out = model(x)
    # Train mode normalises by batch statistics over maps as small as 2x2 (64x64 in), which
    # magnifies float32 rounding: the same code on another CPU's kernels (the files were made
    # on one, AVX512 machines give other sums) moved these outputs by up to 9.6e-5 at
    # scale 1 and the statistics' sum by 1.3e-8 relative, while archspec and the reference
    # on one machine agree to 1e-5 in both modes. A wrong link or width moves them by O(1).
    expect = torch.tensor(want["train_output"])
    torch.testing.assert_close(out, expect, rtol=0,
                               atol=5e-4 * max(expect.abs().max().item(), 1.0))
    stats = sum(v.double().sum().item() for k, v in model.state_dict().items()
                if k.endswith(("running_mean", "running_var")))
    assert stats == pytest.approx(want["running_stats_sum"], rel=1e-6)


def test_the_reference_layout_loads_with_a_report_and_round_trips(tmp_path, capsys):
    model = archspec.build("hardnet39ds", seed=3)
    theirs = to_reference(model.state_dict(), model.plan)
    assert all(k.startswith("base.") for k in theirs)
    loaded = archspec.build("hardnet39ds", weights=theirs)
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    # the same file through the CLI: the report names the layout it read
    path = tmp_path / "hardnet39ds.pth"
    torch.save(theirs, path)
    assert main(["check-weights", "hardnet39ds", str(path)]) == 0
    out = capsys.readouterr().out
    assert "446 keys remapped (HarDNet reference, PingoLH/Pytorch-HarDNet)" in out, out
    # HarDNet-85's dropout after its last block shifts the reference's indices
    m85 = archspec.build("hardnet85", seed=0)
    keys = list(to_reference(m85.state_dict(), m85.plan))
    assert keys[-1] == "base.19.3.bias" and not any(k.startswith("base.17.") for k in keys)


def test_harmonic_links_and_widths_are_the_papers():
    # Chao et al., Figure 3: layer k reads k - 2^n for every 2^n dividing k
    assert [harmonic_links(j) for j in range(1, 9)] == [
        (0,), (1, 0), (2,), (3, 2, 0), (4,), (5, 4), (6,), (7, 6, 4, 0)]
    # width k * m^(links - 1), rounded to even as the reference rounds it
    assert [layer_width(j, 14, 1.7) for j in range(1, 9)] == [14, 24, 14, 40, 14, 24, 14, 68]
    p = archspec.plan(archspec.load("hardnet68"))
    assert p.layer_widths[0] == (14, 24, 14, 40, 14, 24, 14, 68)
    assert p.block_out[0] == 14 + 14 + 14 + 14 + 68  # the odd layers and the last
    links = p.links("hardblock1")
    assert links.read_by(3) == ["input", "layer 2", "layer 3"]  # layer 4
    assert links.read_by(len(links.readers) - 1) == ["layer 1", "layer 3", "layer 5",
                                                     "layer 7", "layer 8"]


@pytest.mark.parametrize("name", ["hardnet39ds", pytest.param("hardnet68",
                                                              marks=pytest.mark.slow)])
def test_macs_are_the_convolutions_and_the_classifier(name):
    from torch.utils.flop_counter import FlopCounterMode

    p = archspec.plan(archspec.load(name))
    model = archspec.build(name, seed=0).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.randn(1, 3, 224, 224))
    assert counter.get_total_flops() == 2 * p.macs


# --- a first-class PyTorch citizen -----------------------------------------------------------

@pytest.mark.parametrize("spec", ["tiny", "tiny-ds"])
def test_scripts_traces_exports_and_optimizes(spec):
    text = small() if spec == "tiny" else small(depthwise="true", downsample="depthwise",
                                                 stem_kernels="[3, 1]", block_dropout="0.1")
    model = archspec.build(archspec.loads(text), seed=0)
    folding_norms(model)  # statistics that make the folding do something
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        for graph in (torch.jit.script(model), torch.jit.trace(model, x),
                      torch.fx.symbolic_trace(model), torch.export.export(model, (x,)).module()):
            torch.testing.assert_close(graph(x), ref, rtol=0, atol=0)
        fast = archspec.optimize_for_inference(model)
        scale = ref.abs().max().item()
        torch.testing.assert_close(fast(x), ref, rtol=0, atol=1e-5 * max(scale, 1.0))
        torch.testing.assert_close(torch.jit.script(fast)(x), fast(x), rtol=0, atol=0)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    with pytest.raises(RuntimeError, match="eval-only"):
        fast.train()
    with pytest.raises(ValueError, match="memory levels are DenseNet's"):
        model.set_grad_checkpointing(True)


def test_backbone_levels_one_per_resolution():
    p = archspec.plan(archspec.load("hardnet68"))
    assert [(f["module"], f["num_chs"], f["reduction"]) for f in p.feature_info] == [
        ("stem", 64, 4), ("features.transition2", 256, 8), ("features.transition3", 320, 16),
        ("features.transition5", 1024, 32)]
    full = archspec.build("hardnet39ds", seed=0).eval()
    backbone = archspec.build("hardnet39ds", features_only=True,
                              weights=full.state_dict(), drop_head=True).eval()
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        maps = backbone(x)
        assert [m.shape[1] for m in maps] == backbone.feature_info.channels()
        torch.testing.assert_close(maps[-1], full.forward_features(x), rtol=0, atol=0)
        fast = archspec.optimize_for_inference(backbone)
        for a, b in zip(fast(x), maps):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    picked = archspec.build("hardnet39ds", features_only=True, out_indices=(1, 3), seed=0)
    assert [m.shape[1] for m in picked(x)] == [96, 1024]


@pytest.mark.parametrize("size", [[48], [32, 32, 32]])
def test_one_and_three_dimensional_hardnets_plan_what_they_build(size):
    spec = archspec.loads(small(input=f"{{channels: 2, size: {size}}}", depthwise="true",
                                downsample="depthwise"))
    p = archspec.plan(spec)
    model = archspec.build(spec, seed=0)
    assert sum(t.numel() for t in model.parameters()) == p.params
    out = archspec.build(spec, features_only=True, seed=0).eval()(torch.randn(1, 2, *size))
    assert [m.shape[1] for m in out] == [f["num_chs"] for f in p.feature_info]
    assert model(torch.randn(2, 2, *size)).shape == (2, 5)


@pytest.mark.parametrize("name", ["tiny", "tiny-ds", "tiny-relu", "hardnet39ds",
                                  "hardnet68ds", pytest.param("hardnet68",
                                                              marks=pytest.mark.slow)])
def test_training_memory_is_what_autograd_keeps(name):
    """The plan's estimate (summary --batch, search, the resource guard) against the
    distinct storages a training forward saves for backward, parameters left out."""
    texts = {"tiny": small(), "tiny-ds": small(depthwise="true", downsample="depthwise"),
             "tiny-relu": small(activation="relu", drop_rate="0.2")}
    spec = archspec.loads(texts[name]) if name in texts else archspec.load(
        name, overrides={"input": "{channels: 3, height: 64, width: 64}", "expect": None})
    model = archspec.build(spec, seed=0)
    kept: dict[int, int] = {}

    def pack(t):
        kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(torch.randn(2, 3, 64, 64))
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = sum(n for ptr, n in kept.items() if ptr not in weights)
    assert abs(archspec.plan(spec).training_memory(2) / saved - 1) < 0.05, saved


# --- the spec: located errors -----------------------------------------------------------------

@pytest.mark.parametrize("change, where, message", [
    ({"grmul": "0.9"}, "grmul", "must be >= 1"),
    ({"blocks": "[{growth_rate: 6, layers: 0, out_channels: 24}]"}, "blocks[0].layers",
     "must be >= 1"),
    ({"blocks": "[]"}, "blocks", "at least 1 item"),
    ({"memory_efficient": "true"}, "memory_efficient", "the memory levels are DenseNet's"),
    ({"growth_rate": "12"}, "growth_rate", "unknown key 'growth_rate'"),
    ({"blocks": "[{growth_rat: 6, layers: 2, out_channels: 8}]"}, "blocks[0].growth_rat",
     "did you mean 'growth_rate'?"),
    ({"downsample": "avgpool"}, "downsample", "maxpool, depthwise"),
    ({"stem_kernels": "[3, 2]"}, "stem_kernels", "odd"),
    ({"input": "{channels: 3, height: 64, width: 4}"}, "input.width", "is too small for"),
    ({"norm": "{type: group, groups: 16}"}, "norm.groups",
     "features.hardblock1.layers.0.norm has 6 channels"),
])
def test_mistakes_are_located(spec_file, capsys, change, where, message):
    path = spec_file(small(**change))
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:" in err and f": {where}: " in err and message in err, err
    assert "Traceback" not in err


# --- reports and the command line -------------------------------------------------------------

def test_summary_table_diff_search_new_and_links(capsys, tmp_path):
    assert main(["summary", "hardnet68", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["family"] == "hardnet" and data["grmul"] == 1.7 and data["depth"] == 68
    assert data["layer_widths"][0] == [14, 24, 14, 40, 14, 24, 14, 68]
    assert main(["summary", "hardnet39ds"]) == 0
    assert "hardnet39ds: HarDNet-39DS, m=1.6" in capsys.readouterr().out
    assert main(["table", "hardnet68", "hardnet39ds"]) == 0
    table = capsys.readouterr().out
    assert "HarDBlock k=14, m=1.7, n=8 [3×3 conv]; 1×1 conv, 128; 2×2 max pool" in table
    assert "| Depth |  | 68 | 39DS |" in table
    assert main(["table", "hardnet68", "densenet121"]) == 2
    capsys.readouterr()
    assert main(["diff", "hardnet68", "hardnet68ds"]) == 0
    assert "downsample: maxpool -> depthwise" in capsys.readouterr().out
    assert main(["search", "hardnet39ds", "--vary", "grmul=1.6..1.8:0.1"]) == 0
    assert "evaluated 3, valid 3" in capsys.readouterr().out
    out = tmp_path / "mine.yaml"
    assert main(["new", "mine", "--from", "hardnet68", "-o", str(out)]) == 0
    assert "# grmul: 1.7" in out.read_text()
    assert archspec.plan(archspec.load(out)).params == REFERENCE["hardnet68"]
    svg = tmp_path / "links.svg"
    assert main(["plot", "hardnet68", "--links", "--stage", "hardblock2", "-o", str(svg)]) == 0
    assert svg.read_text().startswith("<?xml")


def test_the_shipped_json_schema_takes_hardnets_keys_and_no_others():
    """(test_vovnet checks every zoo spec, the HarDNets too, validates against it.)"""
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    schema = json.loads((Path(__file__).resolve().parents[1] / "specs" / "schema.json")
                        .read_text())
    validator = jsonschema.Draft202012Validator(schema)
    assert not list(validator.iter_errors(yaml.safe_load(small())))
    assert list(validator.iter_errors(yaml.safe_load(small(growth_rate=12))))
    assert list(validator.iter_errors(yaml.safe_load(small(layers_per_block=3))))


def test_a_spec_error_never_builds():
    with pytest.raises(SpecError, match="grmul"):
        archspec.build(archspec.loads(small(grmul="0.5")))


def _as_reference(model: torch.nn.Module) -> torch.nn.Module:
    """archspec's HarDNet rearranged into the reference's structure (one flat ``base``
    list: stem units, then per block the block, [dropout,] its ConvLayer and [its
    downsampling], then the head Sequential), as PingoLH/Pytorch-HarDNet builds it."""
    from collections import OrderedDict

    from torch import nn

    units = list(model.stem)
    for name, part in model.features.named_children():
        if name.startswith("hardblock"):
            units.append(part)
            continue
        if "drop" in part._modules:
            units.append(part.drop)
        units.append(nn.Sequential(OrderedDict(conv=part.conv, norm=part.norm,
                                               relu=part.relu)))
        if "down" in part._modules:
            units.append(part.down)
    units.append(nn.Sequential(nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(),
                               nn.Dropout(model.head.drop.p), model.head.fc))
    ref = nn.Module()
    ref.base = nn.ModuleList(units)
    return ref


@pytest.mark.parametrize("name", list(REFERENCE))
def test_from_module_reads_the_reference_layout(name):
    """A module in the reference's structure (its keys are the expected file's, so this is
    the layout hardnet.py builds) reads back to the zoo spec, m and all."""
    ref = _as_reference(archspec.build(name, seed=0))
    assert [[k, list(v.shape)] for k, v in ref.state_dict().items()] == \
        _expected(name)["keys"]
    spec = archspec.from_module(ref)
    assert spec.name == name and archspec.plan(spec).params == REFERENCE[name]
    assert spec.grmul == archspec.load(name).grmul


def test_from_module_refuses_what_a_spec_cannot_say():
    ref = _as_reference(archspec.build("hardnet39ds", seed=0))
    ref.base[2] = torch.nn.AvgPool2d(3, 2, 1)
    with pytest.raises(SpecError, match="base.2 is AvgPool2d"):
        archspec.from_module(ref)
