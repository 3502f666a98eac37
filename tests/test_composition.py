"""extends, overrides, canonical form and hash, weights, backbones, specs from modules."""

from __future__ import annotations

import re

import pytest
import torch
import torchvision
from hypothesis import HealthCheck, given, settings

import archspec
from archspec.canonical import canonical, content_hash
from archspec.cli import main
from conftest import CIFAR, IMAGENET, SMALL
from test_builder import valid_specs

timm = pytest.importorskip("timm")


# --- extends -------------------------------------------------------------------------------

def test_extends_a_zoo_spec_and_errors_point_at_the_right_file(spec_file):
    child = spec_file("extends: densenet121\nname: wide121\ngrowth_rate: 48\n", "child.yaml")
    p = archspec.plan(archspec.load(child))
    assert (p.name, p.growth_rate, p.block_config) == ("wide121", 48, (6, 12, 24, 16))
    assert p.spec.expect is None  # the parent's expect is not inherited
    bad = spec_file("extends: densenet121\nname: bad\ngrowth_rate: 0\n", "bad.yaml")
    with pytest.raises(archspec.SpecError) as info:
        archspec.load(bad)
    assert (info.value.file, info.value.line, info.value.path) == (str(bad), 3, "growth_rate")


def test_extends_chain_relative_paths_and_parent_locations(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "root.yaml").write_text(
        "name: root\nstem: {type: cifar}\ngrowth_rate: 12\nblock_config: [4, 4, 4]\n"
        "input: {height: 32, width: 32}\ncompression: 7\n")
    (tmp_path / "base" / "mid.yaml").write_text("extends: root.yaml\nname: mid\n")
    (tmp_path / "leaf.yaml").write_text("extends: base/mid.yaml\nname: leaf\nnum_classes: 10\n")
    with pytest.raises(archspec.SpecError) as info:
        archspec.load(tmp_path / "leaf.yaml")
    # the bad value was written in the grandparent: that is where the error points
    err = info.value
    assert (err.file, err.line, err.column, err.path) == (
        str(tmp_path / "base" / "root.yaml"), 6, 14, "compression")
    (tmp_path / "base" / "root.yaml").write_text(
        (tmp_path / "base" / "root.yaml").read_text().replace("compression: 7", "bn_size: 4"))
    spec = archspec.load(tmp_path / "leaf.yaml")
    assert (spec.name, spec.num_classes, spec.bn_size, spec.block_config) == (
        "leaf", 10, 4, [4, 4, 4])


def test_extends_merges_mappings_and_replaces_lists(spec_file):
    child = spec_file("extends: densenet-bc-100-12\nname: c\nstem: {channels: 32}\n"
                      "input: {height: 64}\n", "c.yaml")
    spec = archspec.load(child)
    assert (spec.stem.type.value, spec.stem.channels) == ("cifar", 32)
    assert (spec.input.height, spec.input.width) == (64, 32)


def test_extends_cycle_names_the_files(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\nname: a\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\nname: b\n")
    with pytest.raises(archspec.SpecError) as info:
        archspec.load(tmp_path / "a.yaml")
    msg = str(info.value)
    assert "forms a cycle" in msg and "a.yaml -> " in msg and "b.yaml" in msg


# --- overrides -----------------------------------------------------------------------------

def test_overrides_in_the_api():
    spec = archspec.load("densenet121", overrides={"num_classes": 10, "block_config[3]": 24,
                                                   "stem.channels": "96", "expect": None})
    assert (spec.num_classes, spec.block_config, spec.stem.channels) == (
        10, [6, 12, 24, 24], 96)


def test_bad_override_is_reported_from_the_command_line():
    with pytest.raises(archspec.SpecError) as info:
        archspec.load("densenet121", overrides={"growth_rate": 32, "compresion": 0.3})
    assert str(info.value) == ("<command line>:1:2: compresion: unknown key 'compresion'; "
                               "did you mean 'compression'?")
    with pytest.raises(archspec.SpecError, match=r"no item \[9\]"):
        archspec.load("densenet121", overrides={"block_config[9]": 1})


@pytest.mark.parametrize("command", ["validate", "summary", "table", "diff", "verify",
                                     "build", "canonical", "check-weights"])
def test_set_works_on_every_spec_command(capsys, tmp_path, command):
    argv = [command, "densenet-40-12"] + {"diff": ["densenet-40-12"],
                                          "build": ["-o", str(tmp_path / "m.pt")],
                                          "check-weights": [str(tmp_path / "w.pt")]
                                          }.get(command, [])
    argv += ["--set", "growth_rate=x"]
    assert main(argv) == 1
    word = argv.index("growth_rate=x") + 1  # the column counts command-line words
    assert (f"<command line>:1:{word}: growth_rate: expected an integer"
            in capsys.readouterr().err)


# --- canonical form and hash ---------------------------------------------------------------

@pytest.mark.parametrize("name", IMAGENET + CIFAR)
def test_canonical_round_trip_for_the_zoo(name):
    spec = archspec.load(name)
    assert archspec.loads(canonical(spec)) == spec
    assert content_hash(archspec.loads(canonical(spec))) == content_hash(spec)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_specs())
def test_canonical_round_trip_for_random_specs(text):
    spec = archspec.loads(text)
    assert archspec.loads(canonical(spec)) == spec


def test_hash_changes_with_the_architecture_only():
    a = archspec.load("densenet121")
    assert content_hash(a) == content_hash(archspec.load("densenet121"))
    assert content_hash(a) != content_hash(
        archspec.load("densenet121", overrides={"drop_rate": 0.1}))


def test_checkpoint_hash_is_checked_on_rebuild(tmp_path):
    from archspec.builder import load_checkpoint, save_checkpoint

    path = tmp_path / "m.pt"
    save_checkpoint(archspec.build(archspec.loads(SMALL), seed=0), path)
    payload = torch.load(path, weights_only=True)
    payload["spec"] = payload["spec"].replace("growth_rate: 4", "growth_rate: 5")
    torch.save(payload, path)
    with pytest.raises(archspec.SpecError, match="does not match its sha256"):
        load_checkpoint(path)


# --- weights -------------------------------------------------------------------------------

def test_weights_from_torchvision_timm_and_old_keys(tmp_path):
    tv = torchvision.models.densenet121().eval()
    files = {"tv.pth": tv.state_dict(),
             "old.pth": {re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", k): v
                         for k, v in tv.state_dict().items()
                         if not k.endswith("num_batches_tracked")},
             "dp.pth": {"state_dict": {f"module.{k}": v for k, v in tv.state_dict().items()}}}
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        want = tv(x)
    for name, state in files.items():
        torch.save(state, tmp_path / name)
        model = archspec.build("densenet121", weights=tmp_path / name).eval()
        with torch.no_grad():
            torch.testing.assert_close(model(x), want, rtol=0, atol=1e-5)
    tm = timm.create_model("densenet121", pretrained=False).eval()
    torch.save(tm.state_dict(), tmp_path / "timm.pth")
    ours = archspec.build("densenet121", weights=tmp_path / "timm.pth").eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tm(x), rtol=0, atol=1e-5)


def test_mismatched_weights_are_reported_in_the_spec_s_terms(tmp_path, capsys):
    torch.save(torchvision.models.densenet161().state_dict(), tmp_path / "161.pth")
    with pytest.raises(archspec.SpecError) as info:
        archspec.build("densenet121", weights=tmp_path / "161.pth")
    lines = str(info.value).splitlines()
    assert f"{tmp_path / '161.pth'}: block 3, layer 7, conv2: expected 32x128x3x3, " \
           "found 48x192x3x3" in lines
    assert any("stem, conv0: expected 64x3x7x7, found 96x3x7x7" in ln for ln in lines)
    assert main(["check-weights", "densenet121", str(tmp_path / "161.pth")]) == 1
    out, err = capsys.readouterr()
    assert "does NOT load into densenet121" in out and "... and" in err


def test_drop_head_loads_a_backbone_into_another_num_classes(tmp_path, capsys):
    torch.save(torchvision.models.densenet121().state_dict(), tmp_path / "tv.pth")
    ten = {"num_classes": 10, "expect": None}
    with pytest.raises(archspec.SpecError, match="classifier: expected 10x1024, found 1000x1024"):
        archspec.build(archspec.load("densenet121", overrides=ten), weights=tmp_path / "tv.pth")
    model = archspec.build(archspec.load("densenet121", overrides=ten),
                           weights=tmp_path / "tv.pth", drop_head=True)
    assert model.classifier.out_features == 10
    assert main(["check-weights", "densenet121", str(tmp_path / "tv.pth"), "--set",
                 "num_classes=10", "--set", "expect=null", "--drop-head"]) == 0
    assert "classifier not loaded" in capsys.readouterr().out


def test_unreadable_checkpoints(tmp_path):
    (tmp_path / "text.pt").write_text("not a checkpoint")
    torch.save({"a": [1, 2]}, tmp_path / "notensors.pt")
    for name, words in (("text.pt", "cannot read checkpoint"),
                        ("notensors.pt", "not a state_dict"),
                        ("absent.pt", "no such checkpoint file")):
        with pytest.raises(archspec.SpecError, match=words):
            archspec.build("densenet-40-12", weights=tmp_path / name)


# --- backbones ------------------------------------------------------------------------------

def test_feature_info_and_features_equal_timm():
    p = archspec.plan(archspec.load("densenet121"))
    tf = timm.create_model("densenet121", pretrained=False, features_only=True).eval()
    assert [f["num_chs"] for f in p.feature_info] == tf.feature_info.channels()
    assert [f["reduction"] for f in p.feature_info] == tf.feature_info.reduction()
    assert [f["module"] for f in p.feature_info] == tf.feature_info.module_name()
    ours = archspec.build("densenet121", features_only=True).eval()
    ours.load_state_dict({k.replace("features_", "features.", 1): v
                          for k, v in tf.state_dict().items()})
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        for a, b in zip(ours(x), tf(x), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_features_only_out_indices_and_backward():
    model = archspec.build("densenet-bc-100-12", features_only=True, out_indices=(1, -1))
    outs = model(torch.randn(2, 3, 32, 32))
    assert [tuple(o.shape[1:]) for o in outs] == [(216, 32, 32), (342, 8, 8)]
    assert [f["num_chs"] for f in model.feature_info] == [216, 342]
    sum(o.sum() for o in outs).backward()
    with pytest.raises(ValueError, match="out_indices"):
        archspec.build("densenet121", features_only=True, out_indices=(7,))


def test_features_only_loads_a_classifier_checkpoint(tmp_path):
    torch.save(torchvision.models.densenet121().state_dict(), tmp_path / "tv.pth")
    model = archspec.build("densenet121", features_only=True, weights=tmp_path / "tv.pth")
    assert not hasattr(model, "classifier")


# --- specs from modules ---------------------------------------------------------------------

@pytest.mark.parametrize("ref,zoo_name", [("torchvision:densenet121", "densenet121"),
                                          ("torchvision:densenet161", "densenet161"),
                                          ("torchvision:densenet169", "densenet169"),
                                          ("torchvision:densenet201", "densenet201"),
                                          ("timm:densenet121", "densenet121")])
def test_from_module(ref, zoo_name):
    from archspec.introspect import from_name

    model, _ = from_name(ref)
    spec = archspec.from_module(model)
    p, z = archspec.plan(spec), archspec.plan(archspec.load(zoo_name))
    assert (p.params, p.block_config, p.growth_rate, p.bn_size, p.compression,
            p.stem_channels) == (z.params, z.block_config, z.growth_rate, z.bn_size,
                                 z.compression, z.stem_channels)
    rebuilt = archspec.build(spec)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == \
        {k: v.shape for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", ["densenet-40-12", "densenet-bc-100-12", "densenet264"])
def test_from_module_of_our_own_models_and_plain_layers(name):
    model = archspec.build(name)
    assert archspec.from_module(model) == archspec.load(name)
    # the same through the module's structure alone (a copy without .plan)
    del model.plan
    inferred = archspec.plan(archspec.from_module(model))
    assert inferred.params == archspec.plan(archspec.load(name)).params


def test_from_module_refuses_other_networks():
    with pytest.raises(archspec.SpecError, match="no 'features'"):
        archspec.from_module(torch.nn.Linear(2, 2))


def test_import_command(tmp_path, capsys):
    out = tmp_path / "tv121.yaml"
    assert main(["import", "torchvision:densenet121", "-o", str(out)]) == 0
    spec = archspec.load(out)
    assert archspec.plan(spec).params == 7_978_856 and spec.source == "torchvision:densenet121"
    assert main(["import", "torchvision:densenet121", "-o", str(out)]) == 1
    assert main(["import", "torchvision:resnet50", "-o", str(tmp_path / "r.yaml")]) == 1
    assert "no DenseNet called 'resnet50'" in capsys.readouterr().err
