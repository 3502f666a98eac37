"""The command line: every command and format, bad input, exit codes, no torch where promised."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from archspec.cli import main
from conftest import CIFAR, IMAGENET, SMALL

REPO = Path(__file__).resolve().parents[1]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_validate_ok_and_errors(capsys, spec_file):
    bad = spec_file(SMALL.replace("growth_rate: 4", "growth_rate: 0"), "bad.yaml")
    code, out, err = run(capsys, "validate", "densenet121", str(bad), "densenet-bc-100-12")
    assert code == 1
    assert out.splitlines() == ["OK densenet121 (7,978,856 params, 1024 out_channels)",
                                "OK densenet-bc-100-12 (769,162 params, 342 out_channels)"]
    assert err.strip() == f"{bad}:4:14: growth_rate: must be >= 1, found 0"
    assert "Traceback" not in err


def test_validate_every_zoo_spec(capsys):
    code, out, _ = run(capsys, "validate", *IMAGENET, *CIFAR)
    assert code == 0 and out.count("OK ") == len(IMAGENET + CIFAR)


def test_summary_json_contract(capsys):
    code, out, _ = run(capsys, "summary", "densenet121", "--format", "json")
    data = json.loads(out)
    assert code == 0
    assert {"name", "params", "macs", "out_channels", "stages"} <= set(data)
    assert (data["name"], data["params"], data["out_channels"]) == ("densenet121", 7978856,
                                                                    1024)
    for stage in data["stages"]:
        assert {"name", "in_channels", "out_channels", "out_size", "params", "macs"} <= set(stage)
    assert data["stages"][1] == {**data["stages"][1], "name": "denseblock1",
                                 "in_channels": 64, "out_channels": 256, "out_size": [56, 56]}
    assert sum(s["params"] for s in data["stages"]) == data["params"]
    assert len(data["sha256"]) == 64


def test_summary_table_markdown_layers_and_input(capsys):
    code, out, _ = run(capsys, "summary", "densenet-bc-100-12")
    assert code == 0 and "denseblock1     216x32x32" in out and "769,162" in out
    code, out, _ = run(capsys, "summary", "densenet-bc-100-12", "--format", "markdown")
    assert "| stem | 24x32x32 | 648 |" in out
    code, out, _ = run(capsys, "summary", "densenet-bc-100-12", "--layers")
    assert out.count("denselayer") == 48
    assert re.search(r"\n  denselayer16 +216x32x32 \(\+12\) ", out)
    assert "its activations count the k new channels only" in out
    code, out, _ = run(capsys, "summary", "densenet121", "--input", "3x64x64", "--format",
                       "json")
    data = json.loads(out)
    assert data["input"] == [3, 64, 64] and data["stages"][-2]["out_size"] == [2, 2]


def test_summary_verify_agrees_with_torchinfo(capsys):
    code, out, err = run(capsys, "summary", "densenet-40-12", "--verify", "--format", "json")
    data = json.loads(out)
    assert code == 0, err
    assert data["verify"]["ok"] and data["verify"]["params"]["torchinfo"] == 1019722
    assert [s["torchinfo"] for s in data["verify"]["stages"]][:2] == [[16, 32, 32],
                                                                       [160, 32, 32]]


def test_summary_verify_reports_a_mismatch(capsys, monkeypatch):
    import archspec.verify as verify

    real = verify.torchinfo_check

    def tampered(plan, **kw):
        check = real(plan, **kw)
        check.torchinfo_params += 1
        return check
    monkeypatch.setattr(verify, "torchinfo_check", tampered)
    code, out, err = run(capsys, "summary", "densenet-40-12", "--verify")
    assert code == 1
    assert "params: plan 1,019,722, torchinfo 1,019,723" in err
    assert "MISMATCH" in out


def test_table_reproduces_table_1(capsys):
    code, out, _ = run(capsys, "table", "densenet121", "densenet169", "densenet201",
                       "densenet264")
    lines = out.splitlines()
    assert code == 0
    assert lines[0] == ("| Layers | Output Size | densenet121 | densenet169 | densenet201 |"
                        " densenet264 |")
    assert "| Dense Block (3) | 14 × 14 | [1×1 conv, 3×3 conv] × 24 | [1×1 conv, 3×3 conv] × 32 " \
           "| [1×1 conv, 3×3 conv] × 48 | [1×1 conv, 3×3 conv] × 64 |" in lines
    assert "| Convolution | 112 × 112 | 7×7 conv, stride 2 |" in out
    assert "| Transition Layer (1) | 56 × 56 | 1×1 conv |" in out


def test_table_of_cifar_zoo(capsys):
    code, out, _ = run(capsys, "table", *CIFAR)
    assert code == 0
    assert "| Dense Block (1) | 32 × 32 | [3×3 conv] × 12 | [3×3 conv] × 32 | [3×3 conv] × 32 " \
           "| [1×1 conv, 3×3 conv] × 16 | [1×1 conv, 3×3 conv] × 41 | [1×1 conv, 3×3 conv] × 31 |" \
           in out
    assert "Dense Block (4)" not in out


def test_list(capsys):
    code, out, _ = run(capsys, "list", "--format", "json")
    rows = json.loads(out)
    assert code == 0 and [r["name"] for r in rows][:1] == ["densenet121"]
    assert {r["name"] for r in rows} >= set(IMAGENET + CIFAR)
    assert all(r["source"] and r["description"] for r in rows)
    code, out, _ = run(capsys, "list")
    assert "densenet-bc-190-40" in out and "25.6M" in out


def test_schema_matches_shipped_file(capsys):
    code, out, _ = run(capsys, "schema")
    schema = json.loads(out)
    dense = schema["$defs"]["DenseNetSpec"]
    assert code == 0 and dense["additionalProperties"] is False
    assert {"growth_rate", "bn_size", "compression", "block_config", "depth",
            "extends", "family"} <= set(dense["properties"])
    shipped = json.loads((REPO / "specs" / "schema.json").read_text())
    assert shipped == schema, "specs/schema.json is stale: run `archspec schema > specs/schema.json`"
    for spec in (REPO / "specs").glob("*/*.yaml"):
        assert spec.read_text().startswith("# yaml-language-server: $schema=../schema.json")


def test_diff(capsys):
    code, out, _ = run(capsys, "diff", "densenet121", "densenet169")
    assert code == 0
    assert "block_config: [6, 12, 24, 16] -> [6, 12, 32, 32]" in out
    assert "denseblock3  1024x14x14 (24 layers)  1280x14x14 (32 layers)" in out
    assert "denseblock1" not in out  # unchanged stages are not listed
    assert "+6,170,624" in out


def test_set_overrides_and_their_errors(capsys):
    code, out, _ = run(capsys, "validate", "densenet-bc-100-12", "--set", "growth_rate=24",
                       "--set", "expect=null")
    assert code == 0 and "OK densenet-bc-100-12" in out
    code, _, err = run(capsys, "validate", "densenet121", "--set", "growth_rate=abc")
    assert code == 1
    # the column counts command-line words, as --vary's errors do (issue 23)
    assert err.strip() == "<command line>:1:4: growth_rate: expected an integer or a list, found 'abc' " \
                          "(a string)"
    code, _, err = run(capsys, "validate", "densenet121", "--set", "growth_rate")
    assert code == 2 and "KEY.PATH=VALUE" in err


def test_build_writes_checkpoint_atomically_and_refuses_overwrite(capsys, tmp_path):
    import torch

    import archspec
    from archspec.builder import load_checkpoint

    out_file = tmp_path / "m.pt"
    code, out, _ = run(capsys, "build", "densenet-40-12", "-o", str(out_file), "--seed", "3")
    assert code == 0 and out.startswith(f"wrote {out_file}")
    payload = torch.load(out_file, weights_only=True)
    assert archspec.loads(payload["spec"]) == archspec.load("densenet-40-12")
    model = load_checkpoint(out_file)
    ref = archspec.build("densenet-40-12", seed=3)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                   ref.state_dict().values()))
    before = out_file.read_bytes()
    code, _, err = run(capsys, "build", "densenet-40-12", "-o", str(out_file), "--seed", "4")
    assert code == 1 and "already exists; pass --force" in err
    assert out_file.read_bytes() == before
    code, _, _ = run(capsys, "build", "densenet-40-12", "-o", str(out_file), "--seed", "4",
                     "--force")
    assert code == 0 and out_file.read_bytes() != before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary left behind


def test_build_never_overwrites_its_input(capsys, spec_file):
    spec = spec_file(SMALL)
    before = spec.read_text()
    code, _, err = run(capsys, "build", str(spec), "-o", str(spec), "--force")
    assert code == 1 and "is an input of this command" in err
    assert spec.read_text() == before


def test_verify(capsys):
    code, out, err = run(capsys, "verify", "densenet-40-12", "densenet-bc-100-12", "--batch",
                         "2", "--format", "json")
    rows = json.loads(out)
    assert code == 0 and [r["ok"] for r in rows] == [True, True]
    assert "[2/2] done" in err  # progress, on stderr
    code, _, err = run(capsys, "verify", "densenet-40-12", "--device", "cuda:99")
    assert code == 1 and ("CUDA is not available" in err or "cuda" in err.lower())
    code, _, err = run(capsys, "verify")
    assert code == 2


def test_plot(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    out_file = tmp_path / "channels.png"
    code, out, _ = run(capsys, "plot", "densenet121", "densenet-bc-100-12", "-o", str(out_file))
    assert code == 0 and out_file.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, _, err = run(capsys, "plot", "densenet121", "-o", str(tmp_path / "x.txt"))
    assert code == 2 and ".png, .svg or .pdf" in err
    from archspec.plot import channel_trace
    import archspec
    ys, marks = channel_trace(archspec.plan(archspec.load("densenet121")))
    assert ys[:3] == [64, 96, 128] and [ys[i] for i in marks] == [128, 256, 512]


def test_canonical_round_trip(capsys):
    import archspec

    for name in IMAGENET + CIFAR:
        code, out, _ = run(capsys, "canonical", name)
        assert code == 0 and archspec.loads(out) == archspec.load(name)


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2
    code, _, _ = run(capsys, "summary", "densenet121", "--input", "3x224x224x224x2")
    assert code == 2


def test_unknown_spec_exit_1(capsys):
    code, _, err = run(capsys, "summary", "densenet12")
    assert code == 1 and "did you mean densenet121" in err and "Traceback" not in err


def test_planning_commands_never_import_torch(tmp_path):
    code = (
        "import sys\n"
        "from archspec.cli import main\n"
        "for argv in (['validate', 'densenet121'], ['summary', 'densenet121'],\n"
        "             ['summary', 'densenet121', '--format', 'json'],\n"
        "             ['table', 'densenet121'], ['list'], ['schema'],\n"
        "             ['diff', 'densenet121', 'densenet169'], ['canonical', 'densenet121']):\n"
        "    assert main(argv) == 0, argv\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_console_script_and_module_entry_points():
    env = {**os.environ, "NO_COLOR": "1"}
    for cmd in (["archspec", "validate", "densenet121"],
                [sys.executable, "-m", "archspec", "validate", "densenet121"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == "OK densenet121 (7,978,856 params, 1024 out_channels)\n"


def test_no_colour_when_not_a_terminal(capsys):
    code, out, _ = run(capsys, "validate", "densenet121")
    assert "\033[" not in out


def test_colour_only_on_a_terminal_and_never_with_no_color(monkeypatch):
    from archspec.cli import _colour

    class Terminal:
        def isatty(self):
            return True
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert _colour("OK", "32", Terminal()) == "\033[32mOK\033[0m"
    monkeypatch.setenv("NO_COLOR", "1")
    assert _colour("OK", "32", Terminal()) == "OK"
