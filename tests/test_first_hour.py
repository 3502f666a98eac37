"""What a new user meets in the first hour (issue 10), each as the user's own action."""

from __future__ import annotations

import inspect
import json
import os
import stat
from pathlib import Path

import pytest

import archspec
from archspec.cli import main
from archspec.files import write_atomic
from archspec.report import summary_text

REPO = Path(__file__).resolve().parents[1]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- 1. the default test run leaves the slow tests out, CI runs them after --------------------

def test_slow_tests_are_left_out_of_the_readme_command_and_run_by_ci():
    import tomllib

    opts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "not slow" in opts["addopts"]
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    slow = next(i for i, line in enumerate(ci) if line.startswith("python -m pytest -q -m slow"))
    assert ci.index("python -m pytest -q") < slow
    assert "-m slow" in (REPO / "README.md").read_text()


# --- 2. files get the mode any other tool gives them --------------------------------------------

@pytest.fixture
def umask():
    def set_mask(mask: int) -> None:
        os.umask(mask)
    old = os.umask(0o022)
    yield set_mask
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_written_files_follow_the_umask_and_keep_a_replaced_files_mode(tmp_path, umask):
    umask(0o022)
    new = write_atomic(tmp_path / "a.yaml", lambda fh: fh.write(b"x"))
    assert _mode(new) == 0o644
    umask(0o027)
    assert _mode(write_atomic(tmp_path / "b.yaml", lambda fh: fh.write(b"x"))) == 0o640
    os.chmod(new, 0o600)  # the user made it private: --force keeps that
    write_atomic(new, lambda fh: fh.write(b"y"), force=True)
    assert _mode(new) == 0o600 and new.read_bytes() == b"y"


def test_build_output_is_0644_under_umask_022(capsys, tmp_path, umask, spec_file):
    from conftest import SMALL

    umask(0o022)
    out = tmp_path / "m.pt"
    code, _, err = run(capsys, "build", str(spec_file(SMALL)), "-o", str(out))
    assert code == 0, err
    assert _mode(out) == 0o644


# --- 3. overrides make a variant ------------------------------------------------------------------

def test_override_of_a_zoo_spec_is_a_variant_not_a_broken_pin(capsys):
    code, out, err = run(capsys, "summary", "densenet121", "--set", "growth_rate=48")
    assert code == 0, err
    assert out.startswith("densenet121+growth_rate=48:")
    spec = archspec.load("densenet121", overrides={"num_classes": 10, "block_config[3]": 24})
    p = archspec.plan(spec)  # the guide's own example plans
    assert spec.name == "densenet121+num_classes=10+block_config[3]=24"
    assert spec.expect is None and p.num_classes == 10
    assert spec.description.startswith("(inherited; densenet121 with overrides)")
    assert spec.source.startswith("(inherited;")
    # an expect given among the overrides still applies, and is located there
    with pytest.raises(archspec.SpecError) as info:
        archspec.plan(archspec.load("densenet121", overrides={
            "growth_rate": 48, "expect": "{params: 1}"}))
    assert info.value.file == "<command line>" and info.value.path == "expect.params"
    assert "--set" not in str(info.value)  # no CLI hint in Python


def test_extends_marks_inherited_prose(spec_file):
    spec = archspec.load(spec_file("extends: densenet121\nname: wide\ngrowth_rate: 48\n"))
    assert spec.description == "(inherited; extends densenet121) DenseNet-121 (DenseNet-BC, k=32)"
    own = archspec.load(spec_file("extends: densenet121\nname: w\ndescription: mine\n"))
    assert own.description == "mine" and own.source.startswith("(inherited; extends")


def test_override_names_are_valid_names_and_round_trip():
    spec = archspec.load("densenet121", overrides={"norm": "{type: group, groups: 4}",
                                                   "stem.channels": 32})
    assert spec.name == "densenet121+norm.type=group+norm.groups=4+stem.channels=32"
    assert archspec.loads(archspec.canonical(spec)) == spec


# --- 4. every problem at once, with a fix -----------------------------------------------------------

def test_schema_and_arithmetic_problems_in_one_run(capsys, spec_file):
    path = spec_file("name: x\ngrowht_rate: 12\ngrowth_rate: 12\ncompression: 1.5\n"
                     "input: {height: 8, width: 8}\nblock_config: [2, 2, 2, 2]\n")
    code, _, err = run(capsys, "validate", str(path))
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 3, err
    assert lines[0].endswith("growht_rate: unknown key 'growht_rate'; did you mean 'growth_rate'?")
    assert ":4:14: compression: must be <= 1.0, found 1.5" in lines[1]
    assert ":5:17: input.height: input 3x8x8 (CxHxW) is too small" in lines[2]
    assert "smallest input this net accepts is 3x29x29 (CxHxW)" in lines[2]
    assert "or keep 8x8 with at most 1 transition (2 blocks)" in lines[2]
    with pytest.raises(archspec.SpecError) as info:  # the same from Python
        archspec.load_plan(path)
    assert len(info.value.problems) == 3


def test_smallest_input_is_the_smallest_that_plans():
    for name in ("densenet121", "densenet-bc-100-12", "densenetblur121d"):
        with pytest.raises(archspec.SpecError) as info:
            archspec.load_plan(name, overrides={"input": "{height: 1, width: 1}"})
        side = int(info.value.message.split("accepts is 3x")[1].split("x")[0])
        archspec.load_plan(name, overrides={"input.height": side, "input.width": side})
        with pytest.raises(archspec.SpecError):
            archspec.load_plan(name, overrides={"input.height": side - 1,
                                                "input.width": side - 1})


# --- 5. causes on the command line are located there --------------------------------------------

def test_command_line_causes_point_at_the_command_line(capsys):
    code, _, err = run(capsys, "summary", "densenet121", "--input", "3x16x16")
    assert code == 1 and err.startswith("<command line>:1:4: input.height: input 3x16x16"), err
    code, _, err = run(capsys, "summary", "densenet121", "--set", "num_classes=2",
                       "--set", "block_config[9]=1")
    assert code == 1 and err.startswith("<command line>:1:6: block_config[9]:"), err


# --- 6. names are identifiers; free text is escaped -----------------------------------------------

@pytest.mark.parametrize("name", ['"a\\x1b[31mred"', '"a\\x00b"', '"x\\u202ey"',
                                  '"../../etc/passwd"', '".hidden"', '"a b"'])
def test_names_must_be_identifiers(capsys, spec_file, name):
    path = spec_file(f"name: {name}\ngrowth_rate: 4\nblock_config: [1]\n")
    code, out, err = run(capsys, "validate", str(path))
    assert code == 1 and ":1:7: name: a name holds letters, digits" in err
    assert "\x1b" not in err + out and "\x00" not in err and "\u202e" not in err


def test_free_text_is_escaped_when_printed():
    from archspec.report import printable

    assert printable("a\x1b[31mred\x00\u202e") == "a\\x1b[31mred\\x00\\u202e"
    assert printable("plain, ünïcode\ttab") == "plain, ünïcode\ttab"


# --- 7. the Python API shows itself ------------------------------------------------------------------

def test_api_has_real_signatures_and_a_clean_namespace():
    params = inspect.signature(archspec.build).parameters
    assert {"spec", "device", "dtype", "seed", "weights", "features_only",
            "out_indices"} <= set(params)
    assert "channels_last" in inspect.signature(archspec.optimize_for_inference).parameters
    assert {"name", "source"} <= set(inspect.signature(archspec.from_module).parameters)
    assert not {"Any", "annotations"} & set(dir(archspec))


def test_plan_repr_stage_lookup_and_training_memory():
    p = archspec.plan(archspec.load("densenet121"))
    assert len(repr(p)) < 200 and "\n" not in repr(p) and "7,978,856" in repr(p)
    assert "denseblock2" in summary_text(p)  # rendering is report's (issue 20)
    with pytest.raises(KeyError, match="did you mean 'denseblock1'.*stem, denseblock1"):
        p.stage("block1")
    assert p.training_memory(8) == 8 * p.training_memory(1)
    assert p.training_memory(1, dtype_bytes=2) * 2 == p.training_memory(1)


def test_build_takes_a_state_dict_and_optimizes_backbones():
    import torch
    import torchvision

    tv = torchvision.models.densenet121()
    model = archspec.build("densenet121", weights=tv.state_dict()).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), tv.eval()(x), rtol=0, atol=1e-5)
    with pytest.raises(archspec.SpecError, match="missing from the checkpoint"):
        archspec.build("densenet169", weights=tv.state_dict())
    backbone = archspec.build("densenet121", features_only=True, out_indices=(0, 2, 4),
                              seed=0).eval()
    fast = archspec.optimize_for_inference(backbone)
    with torch.no_grad():
        for a, b in zip(backbone(x), fast(x), strict=True):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


# --- 8. the command line's rough edges ----------------------------------------------------------------

def test_usage_error_shows_the_subcommands_usage(capsys):
    code, _, err = run(capsys, "summary", "densenet121", "--input", "abc")
    assert code == 2 and err.startswith("usage: archspec summary")


def test_help_has_examples_and_says_what_options_do(capsys):
    for command, needle in (("build", "checkpoint to write"), ("plot", "FILE.png|svg|pdf"),
                            ("summary", "examples:")):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert needle in capsys.readouterr().out


def test_summary_takes_several_specs_and_estimates_training_memory(capsys):
    code, out, _ = run(capsys, "summary", "densenet121", "densenet169", "--batch", "32")
    assert code == 0 and "densenet121:" in out and "densenet169:" in out
    assert "activations (elements)" in out and "training memory at batch 32" in out
    code, out, _ = run(capsys, "summary", "densenet121", "densenet169", "--format", "json",
                       "--batch", "4")
    data = json.loads(out)
    p = archspec.plan(archspec.load("densenet121"))
    assert [d["name"] for d in data] == ["densenet121", "densenet169"]
    assert data[0]["training_memory"] == {"batch": 4, "bytes": p.training_memory(4),
                                          "dtype": "float32", "memory_efficient": False}


def test_list_fits_100_columns_unless_wide(capsys):
    _, out, _ = run(capsys, "list")
    assert max(map(len, out.splitlines())) <= 100 and "source" not in out.splitlines()[0]
    _, out, _ = run(capsys, "list", "--wide")
    assert "source" in out.splitlines()[0] and "Huang et al." in out


def test_diff_json(capsys):
    code, out, _ = run(capsys, "diff", "densenet121", "densenet169", "--format", "json")
    data = json.loads(out)
    assert code == 0 and data["a"] == "densenet121" and data["b"] == "densenet169"
    assert data["settings"]["block_config"] == [[6, 12, 24, 16], [6, 12, 32, 32]]
    assert data["params"] == [7978856, 14149480]
    block3 = next(s for s in data["stages"] if s["name"] == "denseblock3")
    assert block3["a"]["num_layers"] == 24 and block3["b"]["num_layers"] == 32


def test_check_weights_all_and_build_dtype(capsys, tmp_path):
    import torch
    import torchvision

    ckpt = tmp_path / "d121.pth"
    torch.save(torchvision.models.densenet121().state_dict(), ckpt)
    code, _, err = run(capsys, "check-weights", "densenet169", str(ckpt))
    assert code == 1 and "--all shows every one" in err
    code, _, err_all = run(capsys, "check-weights", "densenet169", str(ckpt), "--all")
    assert code == 1 and "more problems" not in err_all
    assert len(err_all.splitlines()) > len(err.splitlines())
    out = tmp_path / "bf16.pt"
    code, stdout, _ = run(capsys, "build", "densenet-bc-100-12", "-o", str(out), "--dtype",
                          "bfloat16")
    assert code == 0 and "bfloat16" in stdout
    state = torch.load(out, weights_only=True)["state_dict"]
    assert state["features.conv0.weight"].dtype == torch.bfloat16


# --- 10. from_module and import keep what they know ------------------------------------------------

def test_from_module_names_zoo_twins_and_import_pins_params(capsys, tmp_path):
    import torchvision

    assert archspec.from_module(torchvision.models.densenet121()).name == "densenet121"
    out = tmp_path / "d161.yaml"
    code, _, err = run(capsys, "import", "torchvision:densenet161", "-o", str(out))
    assert code == 0, err
    spec = archspec.load(out)
    assert spec.name == "densenet161" and spec.expect.params == 28_681_000
    assert archspec.plan(spec).params == 28_681_000
