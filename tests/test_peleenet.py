"""PeleeNet (Wang et al., NeurIPS 2018), the family's fourth member: the zoo's PeleeNet
pinned to the reference code's count, exact against the expected outputs made once from
that code (tests/expected/peleenet, provenance inside the file), the reference's own keys,
and the surfaces every member has."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import archspec
from archspec import SpecError
from archspec.cli import main
from conftest import folding_norms
from archspec.plan_peleenet import bottleneck

torch.set_num_threads(2)

EXPECTED = Path(__file__).resolve().parent / "expected" / "peleenet" / "peleenet.json"


def small(**extra) -> str:
    lines = {"family": "peleenet", "name": "tiny",
             "input": "{channels: 3, height: 64, width: 64}", "stem_channels": "16",
             "growth_rate": "8", "block_config": "[2, 3]", "bottleneck_width": "[1, 2]",
             "num_classes": "5"}
    lines.update({k: str(v) for k, v in extra.items()})
    return "".join(f"{k}: {v}\n" for k, v in lines.items() if v != "None")


def test_the_zoo_pins_the_reference_count_torch_free():
    p = archspec.plan(archspec.load("peleenet"))
    assert p.params == 2_802_248 == json.loads(EXPECTED.read_text())["params"]
    assert p.out_channels == 704 and p.macs == 507_757_568  # the paper's 508M
    assert [s.out_size for s in p.stages if s.kind == "block"] == [
        (56, 56), (28, 28), (14, 14), (7, 7)]


def test_a_seed_gives_the_reference_network_and_its_outputs():
    """Built with seed=0, archspec's PeleeNet is the reference's PeleeNet() after
    torch.manual_seed(0): the same keys and shapes in the same order (so the reference's
    state_dict loads with strict=True), the same initial weights, outputs in eval and
    train mode (dropout included), and running statistics."""
    want = json.loads(EXPECTED.read_text())
    model = archspec.build("peleenet", seed=0)
    assert [[k, list(v.shape)] for k, v in model.state_dict().items()] == want["keys"]
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        out = model(x)
    expect = torch.tensor(want["eval_output"])
    tol = 1e-5 * max(expect.abs().max().item(), 1.0)
    torch.testing.assert_close(out, expect, rtol=0, atol=tol)
    model.train()
    torch.manual_seed(1)
    with torch.no_grad():
        out = model(x)
    # batch statistics magnify float32 rounding, and another CPU's kernels sum in another
    # order: the same reference code on an AVX512 machine moved the statistics' sum by
    # 2.2e-8 relative (test_hardnet.py has the measurements for the outputs)
    expect = torch.tensor(want["train_output"])
    torch.testing.assert_close(out, expect, rtol=0,
                               atol=max(tol, 5e-4 * max(expect.abs().max().item(), 1.0)))
    stats = sum(v.double().sum().item() for k, v in model.state_dict().items()
                if k.endswith(("running_mean", "running_var")))
    assert stats == pytest.approx(want["running_stats_sum"], rel=1e-6)


def test_the_reference_keys_load_strictly_both_ways(tmp_path, capsys):
    a = archspec.build("peleenet", seed=1)
    b = archspec.build("peleenet", weights=a.state_dict())
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                 b.state_dict().values()))
    path = tmp_path / "peleenet.pth"
    torch.save(a.state_dict(), path)
    assert main(["check-weights", "peleenet", str(path)]) == 0
    assert "680 tensors match" in capsys.readouterr().out


def test_the_bottleneck_is_sized_as_the_reference_sizes_it():
    # floor(k/2 x width / 4) x 4, but floor(in/8) x 4 where that exceeds half the input
    assert bottleneck(32, 32, 1) == 16 and bottleneck(512, 32, 4) == 64
    assert bottleneck(40, 32, 4) == 20  # 64 > 40 / 2: floor(40 / 8) x 4
    p = archspec.plan(archspec.load("peleenet"))
    assert p.bottlenecks[0] == (16, 16, 16) and p.bottlenecks[3][0] == 64
    assert p.links("denseblock1").read_by(2) == ["input", "layer 1", "layer 2"]


def test_macs_are_the_convolutions_and_the_classifier():
    from torch.utils.flop_counter import FlopCounterMode

    p = archspec.plan(archspec.load("peleenet"))
    model = archspec.build("peleenet", seed=0).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.randn(1, 3, 224, 224))
    assert counter.get_total_flops() == 2 * p.macs


@pytest.mark.slow  # ~4.5 s on 2 cores; HarDNet's and VoVNet's tiny nets cover the family fast
def test_scripts_traces_exports_and_optimizes():
    model = archspec.build(archspec.loads(small()), seed=0)
    folding_norms(model)  # statistics that make the folding do something
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        for graph in (torch.jit.script(model), torch.jit.trace(model, x),
                      torch.fx.symbolic_trace(model), torch.export.export(model, (x,)).module()):
            torch.testing.assert_close(graph(x), ref, rtol=0, atol=0)
        fast = archspec.optimize_for_inference(model)
        torch.testing.assert_close(fast(x), ref, rtol=0,
                                   atol=1e-5 * max(ref.abs().max().item(), 1.0))
        torch.testing.assert_close(torch.jit.script(fast)(x), fast(x), rtol=0, atol=0)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    with pytest.raises(ValueError, match="memory levels are DenseNet's"):
        model.set_grad_checkpointing(True)
    model.reset_classifier(7)
    assert model(x).shape == (2, 7)


def test_backbone_levels_are_the_transitions():
    p = archspec.plan(archspec.load("peleenet"))
    assert [(f["module"], f["num_chs"], f["reduction"]) for f in p.feature_info] == [
        ("features.transition1", 128, 4), ("features.transition2", 256, 8),
        ("features.transition3", 512, 16), ("features.transition4", 704, 32)]
    full = archspec.build("peleenet", seed=0).eval()
    backbone = archspec.build("peleenet", features_only=True, weights=full.state_dict(),
                              drop_head=True).eval()
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        maps = backbone(x)
        assert [m.shape[1] for m in maps] == [128, 256, 512, 704]
        torch.testing.assert_close(maps[-1], full.forward_features(x), rtol=0, atol=0)
        for a, b in zip(archspec.optimize_for_inference(backbone)(x), maps):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5 * b.abs().max().item())


@pytest.mark.parametrize("size", [[64], [16, 16, 16]])
def test_one_and_three_dimensional_peleenets_plan_what_they_build(size):
    spec = archspec.loads(small(input=f"{{channels: 2, size: {size}}}"))
    p = archspec.plan(spec)
    model = archspec.build(spec, seed=0)
    assert sum(t.numel() for t in model.parameters()) == p.params
    assert model(torch.randn(2, 2, *size)).shape == (2, 5)


@pytest.mark.parametrize("activation", ["relu", "silu", "relu6", "zoo"])
def test_training_memory_is_what_autograd_keeps(activation):
    spec = archspec.load("peleenet", overrides={
        "input": "{channels: 3, height: 64, width: 64}", "expect": None}) \
        if activation == "zoo" else archspec.loads(small(activation=activation, drop_rate="0.1"))
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


@pytest.mark.parametrize("change, where, message", [
    ({"growth_rate": "9"}, "growth_rate", "must be even"),
    ({"stem_channels": "15"}, "stem_channels", "must be even"),
    ({"block_config": "[0]"}, "block_config[0]", "must be >= 1"),
    ({"bottleneck_width": "[1, 2, 3]"}, "bottleneck_width", "has 3 values for 2"),
    ({"memory_efficient": "true"}, "memory_efficient", "memory levels recompute DenseNet's"),
    ({"compression": "0.5"}, "compression", "unknown key 'compression'"),
    ({"input": "{channels: 3, height: 66, width: 64}"}, "input.height",
     "the stem block concatenates"),
    ({"input": "{channels: 3, height: 64, width: 4}"}, "input.width", "is too small for"),
    ({"stem_channels": "2", "growth_rate": "2", "bottleneck_width": "1"}, "bottleneck_width",
     "its branches' 1x1 would have 0"),
])
def test_mistakes_are_located(spec_file, capsys, change, where, message):
    path = spec_file(small(**change))
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:" in err and f": {where}: " in err and message in err, err
    assert "Traceback" not in err


def test_summary_table_diff_and_new(capsys, tmp_path):
    assert main(["summary", "peleenet", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["family"] == "peleenet" and data["bottleneck_width"] == [1, 2, 4, 4]
    assert main(["table", "peleenet"]) == 0
    assert "Stem Block, 32" in capsys.readouterr().out
    assert main(["diff", "peleenet", "densenet121"]) == 0
    assert "family: peleenet -> densenet" in capsys.readouterr().out
    out = tmp_path / "mine.yaml"
    assert main(["new", "mine", "--from", "peleenet", "-o", str(out)]) == 0
    assert archspec.plan(archspec.load(out)).params == 2_802_248


def test_a_spec_error_never_builds():
    with pytest.raises(SpecError, match="growth_rate"):
        archspec.build(archspec.loads(small(growth_rate="7")))


def test_from_module_reads_the_reference_layout():
    """The reference's keys are archspec's: a module laid out as peleenet.py's (here
    archspec's own without its plan; the reference's F.relu is read as relu) reads back
    to the zoo spec, and a variant to its own settings."""
    model = archspec.build("peleenet", seed=0)
    del model.plan
    spec = archspec.from_module(model)
    assert spec.name == "peleenet" and archspec.plan(spec).params == 2_802_248
    variant = archspec.build(archspec.loads(small(activation="silu",
                                                  bottleneck_width="[2, 4]")), seed=0)
    del variant.plan
    spec = archspec.from_module(variant)
    assert spec.bottleneck_width == [2, 4] and spec.activation.type.value == "silu"
    assert spec.block_config == [2, 3] and spec.growth_rate == 8
