"""VoVNet (Lee et al. 2019; VoVNetV2 in CenterMask, 2020), the dense family's first member
beyond DenseNet, exactly as timm builds it.

timm (a dev dependency) is the reference: its seven VoVNets give the parameter counts the
zoo pins, the module names our state_dicts share (strict=True both ways), the seeded
initialisation, the outputs in eval and train mode and the backbone's feature_info.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch

import archspec
from archspec import SpecError
from archspec.cli import main
from conftest import folding_norms

timm = pytest.importorskip("timm")

torch.set_num_threads(2)

REPO = Path(__file__).resolve().parents[1]
TIMM = {"vovnet39a": 22_600_296, "vovnet57a": 36_640_296,
        "ese_vovnet19b_dw": 6_543_080, "ese_vovnet19b_slim_dw": 1_897_752,
        "ese_vovnet39b": 24_568_936, "ese_vovnet57b": 38_608_936,
        "ese_vovnet99b": 63_199_272}
# the small ones run in the README's test command; the rest in the slow stage
FAST = ("ese_vovnet19b_slim_dw", "ese_vovnet19b_dw")


def _each(names=TIMM):
    return [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in names]


def _timm(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model(name, pretrained=False)


def small(**extra) -> str:
    lines = {"family": "vovnet", "name": "tiny", "input": "{channels: 3, height: 64, width: 64}",
             "stem_widths": "[8, 8, 16]",
             "stages": "[{conv_channels: 8, out_channels: 16}, {conv_channels: 8, "
                       "out_channels: 24, blocks: 2}]",
             "layers_per_block": "3", "residual": "true", "attention": "ese",
             "num_classes": "5"}
    lines.update({k: str(v) for k, v in extra.items()})
    return "".join(f"{k}: {v}\n" for k, v in lines.items() if v != "None")


# --- exactness against timm ----------------------------------------------------------------

def test_zoo_pins_timms_counts_torch_free():
    for name, count in TIMM.items():
        p = archspec.plan(archspec.load(name))
        assert (p.family, p.params, p.out_channels) == ("vovnet", count, p.spec.stages[-1]
                                                        .out_channels), name
    assert {n for n, g in archspec.zoo.groups().items() if g == "vovnet"} == set(TIMM)


@pytest.mark.parametrize("name", _each())
def test_timms_weights_load_and_give_timms_outputs(name):
    ref = _timm(name, seed=1)
    assert sum(t.numel() for t in ref.parameters()) == TIMM[name]
    ours = archspec.build(name, weights=ref.state_dict())  # timm's keys, strict
    assert sum(t.numel() for t in ours.parameters()) == TIMM[name]
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    for train in (False, True):
        ours.train(train)
        ref.train(train)
        with torch.no_grad():
            torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=1e-5)
    for (k, a), (k2, b) in zip(ours.state_dict().items(), ref.state_dict().items()):
        assert k == k2 and torch.equal(a, b)  # train mode moved the same statistics
    # timm's own module loads ours strictly, and from_module names it back
    ref.load_state_dict(archspec.build(name, seed=2).state_dict(), strict=True)
    spec = archspec.from_module(ref)
    assert spec.name == name and archspec.plan(spec).params == TIMM[name]


def test_a_seed_gives_timms_initialisation():
    ref = _timm("ese_vovnet19b_slim_dw", seed=3)
    ours = archspec.build("ese_vovnet19b_slim_dw", seed=3)
    for (k, a), b in zip(ours.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("name", ["ese_vovnet19b_slim_dw",
                                  pytest.param("vovnet39a", marks=pytest.mark.slow)])
def test_macs_are_the_convolutions_and_the_classifier(name):
    from torch.utils.flop_counter import FlopCounterMode

    p = archspec.plan(archspec.load(name))
    model = archspec.build(name, seed=0).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.randn(1, 3, 224, 224))
    assert counter.get_total_flops() == 2 * p.macs
    assert [s.out_size for s in p.stages[1:-1]] == [(56, 56), (28, 28), (14, 14), (7, 7)]


def test_backbone_is_timms_features_only():
    ref = _timm("ese_vovnet19b_slim_dw", seed=4).eval()
    backbone = archspec.build("ese_vovnet19b_slim_dw", features_only=True,
                              weights=ref.state_dict()).eval()
    theirs = timm.create_model("ese_vovnet19b_slim_dw", features_only=True)
    assert backbone.feature_info.channels() == theirs.feature_info.channels()
    assert backbone.feature_info.reduction() == theirs.feature_info.reduction()
    assert backbone.feature_info.module_name() == theirs.feature_info.module_name()
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        want = ref.forward_intermediates(x, intermediates_only=True)
        got = backbone(x)
        assert len(got) == len(want) == 5
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        picked = archspec.build("ese_vovnet19b_slim_dw", features_only=True,
                                out_indices=(1, 4), weights=ref.state_dict()).eval()(x)
        assert [m.shape[1] for m in picked] == [112, 512]


def test_timms_eca_attention_is_refused_by_name():
    with pytest.raises(SpecError, match="attn is EcaModule; archspec's VoVNet attention is eSE"):
        archspec.from_module(timm.create_model("eca_vovnet39b"))


# --- a first-class PyTorch citizen -----------------------------------------------------------

@pytest.mark.parametrize("name", ["tiny", pytest.param("ese_vovnet19b_slim_dw",
                                                      marks=pytest.mark.slow)])
def test_scripts_traces_exports_and_optimizes(name):
    spec = archspec.loads(small()) if name == "tiny" else archspec.load(name)
    model = archspec.build(spec, seed=0)
    folding_norms(model)  # statistics that make the folding do something
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        for graph in (torch.jit.script(model), torch.jit.trace(model, x),
                      torch.fx.symbolic_trace(model), torch.export.export(model, (x,)).module()):
            torch.testing.assert_close(graph(x), ref, rtol=0, atol=0)
        fast = archspec.optimize_for_inference(model)
        torch.testing.assert_close(fast(x), ref, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(torch.jit.script(fast)(x), fast(x), rtol=0, atol=0)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    with pytest.raises(RuntimeError, match="eval-only"):
        fast.train()
    with pytest.raises(ValueError, match="memory levels are DenseNet's"):
        model.set_grad_checkpointing(True)


@pytest.mark.parametrize("size", [[48], [32, 32, 32]])
def test_one_and_three_dimensional_vovnets_plan_what_they_build(size):
    spec = archspec.loads(small(input=f"{{channels: 2, size: {size}}}"))
    p = archspec.plan(spec)
    model = archspec.build(spec, seed=0)
    assert sum(t.numel() for t in model.parameters()) == p.params
    out = archspec.build(spec, features_only=True, seed=0).eval()(torch.randn(1, 2, *size))
    assert [tuple(m.shape[2:]) for m in out[1:]] == [s.out_size for s in p.stages[1:-1]]
    assert model(torch.randn(2, 2, *size)).shape == (2, 5)


def test_reset_classifier_and_headless():
    model = archspec.build(archspec.loads(small()), seed=0)
    model.reset_classifier(7)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 7)
    assert model.plan.num_classes == 7 and model.get_classifier().out_features == 7
    headless = archspec.build(archspec.loads(small(num_classes=0)), seed=0)
    assert headless(torch.randn(1, 3, 64, 64)).shape == (1, 24)


# --- the spec: located errors -----------------------------------------------------------------

@pytest.mark.parametrize("change, where, message", [
    ({"residual": "true", "depthwise": "true"}, "stages[1].blocks",
     "a depthwise OSA block reduces its 24 input channels to conv_channels 8"),
    ({"stages": "[]"}, "stages", "must have at least 1 item"),
    ({"memory_efficient": "true"}, "memory_efficient", "the memory levels are DenseNet's"),
    ({"layers_per_block": "0"}, "layers_per_block", "must be >= 1"),
    ({"growth_rate": "12"}, "growth_rate", "unknown key 'growth_rate'"),
    ({"stages": "[{conv_chanels: 8, out_channels: 16}]"}, "stages[0].conv_chanels",
     "did you mean 'conv_channels'?"),
    ({"attention": "eca"}, "attention", "expected one of none, ese"),
    ({"input": "{channels: 3, height: 64, width: 4}"}, "input.width", "is too small for"),
    ({"norm": "{type: group, groups: 16}"}, "norm.groups",
     "stages.0.blocks.0.conv_mid.0.bn has 8 channels"),
    ({"family": "resnet"}, "family",
     "expected one of densenet, vovnet, hardnet, peleenet; found 'resnet'"),
])
def test_mistakes_are_located(spec_file, capsys, change, where, message):
    path = spec_file(small(**change))
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:" in err and f": {where}: " in err and message in err, err
    assert "Traceback" not in err


def test_the_smallest_input_is_named(spec_file, capsys):
    path = spec_file(small(input="{channels: 3, height: 64, width: 4}"))
    main(["validate", str(path)])
    assert "each axis needs at least 5" in capsys.readouterr().err
    # 5 -> 3 -> 2 through the stem, then stage2's ceil-mode pool gives 1; 4 gives 0
    ok = archspec.build(archspec.loads(small(input="{channels: 3, height: 5, width: 5}")),
                        seed=0).eval()
    assert ok(torch.randn(1, 3, 5, 5)).shape == (1, 5)
    with pytest.raises(SpecError, match="input.height"):
        archspec.plan(archspec.loads(small(input="{channels: 3, height: 4, width: 5}")))


def test_a_densenet_spec_is_as_it_was():
    from archspec.canonical import canonical, content_hash

    plain = archspec.load("densenet121")
    said = archspec.loads(canonical(plain).replace("name: densenet121",
                                                   "family: densenet\nname: densenet121"))
    assert said == plain and content_hash(said) == content_hash(plain)
    assert "family" not in canonical(plain)


# --- the command line and the reports ------------------------------------------------------

def test_summary_json_says_the_family_and_its_own_keys(capsys):
    assert main(["summary", "ese_vovnet39b", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["family"] == "vovnet" and data["params"] == TIMM["ese_vovnet39b"]
    assert data["depth"] == 39 and data["layers_per_block"] == 5 and data["residual"]
    assert [s["name"] for s in data["stages"]] == ["stem", "stage1", "stage2", "stage3",
                                                   "stage4", "head"]
    assert main(["summary", "densenet121", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["family"] == "densenet"


def test_table_diff_search_and_plot(capsys, tmp_path):
    assert main(["table", "vovnet39a", "vovnet57a"]) == 0
    out = capsys.readouterr().out
    assert "| OSA stage 3 | 14 × 14 | 3×3 max pool, stride 2; [3×3 conv, 192 × 5; concat & " \
           "1×1 conv, 768] × 2 | " in out and "| Depth |  | 39 | 57 |" in out
    assert main(["table", "vovnet39a", "densenet121"]) == 2
    assert "one family per table" in capsys.readouterr().err
    assert main(["diff", "vovnet39a", "ese_vovnet39b"]) == 0
    out = capsys.readouterr().out
    assert "residual: false -> true" in out and "attention: none -> ese" in out
    assert main(["diff", "densenet121", "vovnet39a"]) == 0
    assert "family: densenet -> vovnet" in capsys.readouterr().out
    assert main(["search", "ese_vovnet19b_slim_dw", "--vary", "layers_per_block=2..4",
                 "--format", "csv"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert len(rows) == 4 and "1897752" in "".join(rows)
    assert main(["plot", "vovnet39a", "-o", str(tmp_path / "c.svg")]) == 0


def test_every_zoo_spec_validates_against_the_shipped_json_schema():
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    schema = json.loads((REPO / "specs" / "schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    for path in sorted((REPO / "specs").glob("*/*.yaml")):
        data = yaml.safe_load(path.read_text())
        errors = list(validator.iter_errors(data))
        assert not errors, (path.name, errors[0].message)
    vov = yaml.safe_load((REPO / "specs" / "vovnet" / "vovnet39a.yaml").read_text())
    assert list(validator.iter_errors({**vov, "growth_rate": 12}))  # a DenseNet key
    dense = yaml.safe_load((REPO / "specs" / "imagenet" / "densenet121.yaml").read_text())
    assert list(validator.iter_errors({**dense, "layers_per_block": 5}))


def test_spec_files_read_the_same_written_by_hand(spec_file):
    path = spec_file(textwrap.dedent("""\
        family: vovnet
        name: mine
        extends: ese_vovnet19b_dw
        num_classes: 10
        """))
    spec = archspec.load(path)
    assert spec.family == "vovnet" and spec.num_classes == 10 and spec.depthwise
    assert archspec.plan(spec).params == TIMM["ese_vovnet19b_dw"] - 1024 * 990 - 990


def test_links_say_which_outputs_each_layer_reads(capsys, tmp_path):
    dense = archspec.plan(archspec.load("densenet121")).links()
    assert dense.stage == "denseblock1" and len(dense.sources) == 7
    assert dense.read_by(2) == ["input", "layer 1", "layer 2"]  # layer 3 reads all before
    osa = archspec.plan(archspec.load("vovnet39a")).links("stage3")
    assert [osa.read_by(i) for i in range(5)] == [["input"], ["layer 1"], ["layer 2"],
                                                   ["layer 3"], ["layer 4"]]
    assert osa.read_by(5) == list(osa.sources)  # one aggregation of everything
    out = tmp_path / "links.svg"
    assert main(["plot", "densenet121", "vovnet39a", "--links", "-o", str(out)]) == 0
    assert out.read_text().lstrip().startswith("<?xml")
    assert main(["plot", "densenet121", "--links", "--stage", "transition1", "-o",
                 str(tmp_path / "t.svg")]) == 2
    assert "transition1 is a transition, not a block: denseblock1" in capsys.readouterr().err
    assert main(["plot", "densenet121", "--stage", "denseblock2", "-o",
                 str(tmp_path / "u.svg")]) == 2
    assert not (tmp_path / "t.svg").exists() and not (tmp_path / "u.svg").exists()


def test_import_and_new_speak_vovnet(capsys, tmp_path):
    out = tmp_path / "imported.yaml"
    assert main(["import", "timm:ese_vovnet19b_slim_dw", "-o", str(out)]) == 0
    assert "VoVNet-19, blocks per stage [1, 1, 1, 1]" in capsys.readouterr().out
    assert archspec.plan(archspec.load(out)).params == TIMM["ese_vovnet19b_slim_dw"]
    starter = tmp_path / "mine.yaml"
    assert main(["new", "mine", "--from", "ese_vovnet19b_dw", "-o", str(starter)]) == 0
    text = starter.read_text()
    assert "# layers_per_block: 3" in text and "# residual: true" in text
    changed = text.replace("# layers_per_block: 3", "layers_per_block: 4")
    starter.write_text(changed)
    assert archspec.load(starter).layers_per_block == 4


def test_check_weights_names_the_vovnet_a_checkpoint_fits(capsys, tmp_path):
    ckpt = tmp_path / "slim10.pt"
    torch.save(timm.create_model("ese_vovnet19b_slim_dw", num_classes=10).state_dict(), ckpt)
    assert main(["check-weights", "ese_vovnet19b_dw", str(ckpt), "--drop-head"]) == 1
    err = capsys.readouterr().err
    assert "fits the zoo's ese_vovnet19b_slim_dw" in err
    assert main(["check-weights", "ese_vovnet19b_slim_dw", str(ckpt), "--drop-head"]) == 0
    assert "classifier not loaded (2 tensors, drop_head)" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["tiny", "ese_vovnet19b_slim_dw", "ese_vovnet39b"])
def test_training_memory_is_what_autograd_keeps(name):
    """The plan's estimate (summary --batch, search, the resource guard) against the
    distinct storages a training forward saves for backward, parameters left out."""
    size = "{channels: 3, height: 64, width: 64}"
    spec = archspec.loads(small()) if name == "tiny" else \
        archspec.load(name, overrides={"input": size, "expect": None})
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

