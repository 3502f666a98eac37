"""A second newcomer walk (issue 23): every problem in one run, messages that reach the
fix, and output a person reads without guessing."""

from __future__ import annotations

import json

import pytest

import archspec
from archspec.cli import main

BASE = ("name: walk\ngrowth_rate: 12\nblock_config: [2, 2, 2, 2]\nstem: {type: cifar}\n"
        "input: {channels: 3, height: 32, width: 32}\n")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def problems(capsys, path) -> list[str]:
    code, out, err = run(capsys, "validate", str(path))
    assert code == 1 and not out and "Traceback" not in err
    return [line.split(": ", 1)[1] for line in err.splitlines()]  # "path: message"


# --- every problem at once ------------------------------------------------------------------

def test_a_wrong_expect_is_reported_beside_an_input_too_small(capsys, spec_file):
    f = spec_file(BASE.replace("height: 32, width: 32", "height: 4, width: 4")
                  + "expect: {params: 5}\n")
    found = problems(capsys, f)
    assert [p.split(":")[0] for p in found] == ["input.height", "expect.params"]
    assert "too small" in found[0] and "expected 5 parameters, the plan has" in found[1]


def test_every_list_of_the_wrong_length_is_reported(capsys, spec_file):
    f = spec_file(BASE + "compression: [0.5, 0.5]\ndrop_rate: [0.1]\n")
    found = problems(capsys, f)
    assert found == ["compression: has 2 values for 3 transitions; give one value, or exactly 3",
                     "drop_rate: has 1 values for 4 blocks; give one value, or exactly 4"]


def test_a_duplicate_key_does_not_hide_the_schema_problems(capsys, spec_file):
    f = spec_file(BASE + "growth_rate: 14\ncompression: 1.5\nnum_classes: -1\n")
    found = problems(capsys, f)
    assert found[0].startswith("growth_rate: duplicate key 'growth_rate' (first defined at "
                               "line 2)")
    assert "compression: must be <= 1.0, found 1.5" in found
    assert "num_classes: must be >= 0, found -1" in found


def test_an_unknown_base_does_not_hide_the_childs_own_typos(capsys, spec_file):
    f = spec_file("extends: densenet-121\nname: child\ngrowth-rate: 3\n")
    found = problems(capsys, f)
    assert found[0].startswith("extends: cannot extend 'densenet-121': no such spec")
    assert "densenet121" in found[0]
    assert found[1] == "growth-rate: unknown key 'growth-rate'; did you mean 'growth_rate'?"
    assert len(found) == 2  # no "required key missing": the base would have given them


def test_a_misspelled_key_stands_in_for_the_meant_one_when_planning(capsys, spec_file):
    # compression is refused and growth_rate misspelled: the input is still too small for
    # four blocks whatever compression is, so that is said in the same run.
    f = spec_file(BASE.replace("growth_rate", "growth_rat")
                  .replace("height: 32, width: 32", "height: 4, width: 4")
                  + "compression: 1.5\n")
    found = problems(capsys, f)
    assert found[0] == "growth_rat: unknown key 'growth_rat'; did you mean 'growth_rate'?"
    assert "compression: must be <= 1.0, found 1.5" in found
    assert any(p.startswith("input.height: input 3x4x4 (CxHxW) is too small") for p in found)


# --- messages that reach the fix ------------------------------------------------------------

@pytest.mark.parametrize("line,message", [
    ("stem: cifar", "stem: expected a mapping, found 'cifar' (a string); write stem: "
                    "{type: cifar}"),
    ("stem.type: deep", "stem.type: unknown key 'stem.type'; in YAML, keys nest instead of "
                        "taking dots: write stem: {type: deep}"),
    ("activation: ReLU", "activation: expected one of relu, silu, gelu, leaky_relu, elu, mish, prelu, relu6; found 'ReLU' (a "
                         "string); did you mean 'relu'?"),
    ("norm: {type: Group}", "norm.type: expected one of batch, group, instance, layer; found 'Group' (a "
                            "string); did you mean 'group'?"),
])
def test_messages_say_the_fix(capsys, spec_file, line, message):
    f = spec_file("name: walk\ngrowth_rate: 12\nblock_config: [2]\n" + line + "\n")
    assert problems(capsys, f) == [message]


def test_a_tab_in_the_indentation_is_named(capsys, spec_file):
    f = spec_file("name: walk\ngrowth_rate: 12\nblock_config:\n\t- 2\n")
    code, _, err = run(capsys, "validate", str(f))
    assert code == 1
    assert err == (f"{f}:4:1: YAML syntax error: a tab in the indentation; YAML forbids tabs "
                   "there, indent with spaces\n")


def test_the_resource_guard_blames_the_command_line_that_made_the_net_large(capsys, tmp_path):
    code, _, err = run(capsys, "build", "densenet121", "--set", "growth_rate=4000", "-o",
                       str(tmp_path / "m.pt"))
    assert code == 1
    assert err.startswith("<command line>:1:4: growth_rate: densenet121+growth_rate=4000 has "
                          "107,339,633,000 parameters, over the limit")


def test_set_and_vary_count_command_line_words_alike(capsys):
    code, _, err = run(capsys, "summary", "densenet121", "--input", "3x64x64", "--set",
                       "growth_rate=abc")
    assert code == 1 and err.startswith("<command line>:1:6: growth_rate: expected an "
                                        "integer or a list, found 'abc'")
    code, _, err = run(capsys, "search", "densenet-bc-100-12", "--vary", "depth=abc")
    assert code == 2
    assert err == ("<command line>:1:4: --vary: depth: value 'abc' can never be valid: "
                   "expected an integer, found 'abc' (a string)\n")
    code, _, err = run(capsys, "search", "densenet-bc-100-12", "--vary", "growth_rate=8,12",
                       "--vary", "compression=0.5,2")
    assert code == 2 and err.startswith("<command line>:1:6: --vary: compression: value 2 "
                                        "can never be valid: must be <= 1.0")


def test_a_childs_block_config_is_blamed_not_the_parents_list(capsys, tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "base.yaml").write_text(BASE.replace("[2, 2, 2, 2]", "[2, 2, 2]")
                                        + "compression: [0.5, 0.5]\n")
    child = tmp_path / "sub" / "child.yaml"
    child.write_text("extends: ../base.yaml\nname: child\nblock_config: [2, 2, 2, 2]\n")
    code, _, err = run(capsys, "validate", str(child))
    assert code == 1
    assert err == (f"{child}:3:15: block_config: 4 blocks need 3 transitions in compression, "
                   f"which has 2 values (from {tmp_path / 'base.yaml'}:6:14); give "
                   "compression here too: one value, or exactly 3\n")  # no sub/../


def test_check_weights_names_the_zoo_spec_a_checkpoint_fits(capsys, tmp_path):
    import torch

    ckpt = tmp_path / "d40.pth"
    torch.save(archspec.build("densenet-40-12", seed=0).state_dict(), ckpt)
    code, out, err = run(capsys, "check-weights", "densenet-100-12", str(ckpt))
    assert code == 1 and "does NOT load into densenet-100-12" in out
    assert err.splitlines()[0] == (f"{ckpt} fits the zoo's densenet-40-12: archspec "
                                   f"check-weights densenet-40-12 {ckpt}")


def test_checkpoint_functions_sit_side_by_side_and_speak_python(tmp_path):
    model = archspec.build("densenet-40-12", seed=0)
    path = archspec.save_checkpoint(model, tmp_path / "m.pt")
    assert archspec.load_checkpoint(path).plan.params == model.plan.params
    from archspec.files import OutputError

    with pytest.raises(OutputError, match="already exists; pass force=True to replace it"):
        archspec.save_checkpoint(model, path)


# --- output a person reads --------------------------------------------------------------------

def test_pretrained_cfg_has_the_normalisation_of_the_zoos_imagenet_nets():
    with __import__("torch").device("meta"):
        tv = archspec.DenseNet("densenet121", allow_large=True).pretrained_cfg
        timm_net = archspec.DenseNet("densenetblur121d", allow_large=True).pretrained_cfg
        cifar = archspec.DenseNet("densenet-bc-100-12", allow_large=True).pretrained_cfg
    assert (tv["mean"], tv["std"]) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert (tv["interpolation"], timm_net["interpolation"]) == ("bilinear", "bicubic")
    assert "mean" not in cifar and "std" not in cifar  # the zoo does not know them


def test_diff_keeps_network_order(capsys, spec_file):
    f = spec_file("extends: densenet121\nname: five\nblock_config: [6, 12, 24, 16, 8]\n")
    code, out, _ = run(capsys, "diff", "densenet121", str(f))
    assert code == 0
    rows = [line.split()[0] for line in out.splitlines()
            if line.startswith(("transition", "denseblock", "head"))]
    assert rows[-3:] == ["transition4", "denseblock5", "head"]
    code, out, _ = run(capsys, "diff", "densenet121", str(f), "--format", "json")
    names = [s["name"] for s in json.loads(out)["stages"]]
    assert names[-3:] == ["transition4", "denseblock5", "head"]


@pytest.mark.parametrize("suffix", [pytest.param(".onnx", marks=pytest.mark.slow), ".pt2",
                                    pytest.param(".pt", marks=pytest.mark.slow)])
def test_export_says_each_step_and_the_file_names_its_spec(capsys, spec_file, tmp_path,
                                                          suffix):
    from conftest import SMALL

    spec = spec_file(SMALL)
    out = tmp_path / f"m{suffix}"
    code, stdout, err = run(capsys, "export", str(spec), "-o", str(out))
    assert code == 0, err
    steps = [line.removeprefix("archspec export: ").split(" (")[0]
             for line in err.splitlines()]
    assert steps == ["exporting to " + {".onnx": "onnx", ".pt2": "exported_program",
                                         ".pt": "torchscript"}[suffix],
                     "loading the artefact back", "checking against eager at batch 1",
                     f"writing {out}"]
    assert "No complete tensor found" not in err and "deprecated" not in err
    # The provenance: read back without torch, and every SPEC argument takes the file.
    from archspec.provenance import embedded_spec

    prov = embedded_spec(out)
    assert prov.spec_text == archspec.canonical(archspec.load(spec))
    assert prov.sha256 == archspec.content_hash(archspec.load(spec))
    code, stdout, _ = run(capsys, "validate", str(out))
    assert code == 0 and stdout.startswith("OK small (")
    code, _, err = run(capsys, "verify", str(out))
    assert code == 0 and err.startswith(f"{out}: exported by archspec "
                                        f"{archspec.__version__} from small (spec sha256 "
                                        f"{prov.sha256}, matches the embedded spec)")


def test_an_altered_or_foreign_artefact_is_refused_with_a_located_error(capsys, tmp_path):
    from archspec.provenance import embedded_spec

    fake = tmp_path / "fake.onnx"
    fake.write_bytes(b"\x08\x07\x12\x04abcd")  # a protobuf with no archspec entries
    with pytest.raises(archspec.SpecError, match="holds no archspec spec"):
        embedded_spec(fake)
    garbage = tmp_path / "g.pt2"
    garbage.write_bytes(b"PK\x03\x04" + b"\xff" * 64)
    code, _, err = run(capsys, "validate", str(garbage))
    assert code == 1 and err.startswith(f"{garbage}: not a readable archive")
    # an ONNX file whose spec was edited after export: its sha256 no longer matches
    spec = archspec.canonical(archspec.load("densenet-40-12")).encode()
    sha = b"0" * 64

    def entry(key: bytes, value: bytes) -> bytes:
        body = b"\x0a" + _varint(len(key)) + key + b"\x12" + _varint(len(value)) + value
        return b"\x72" + _varint(len(body)) + body  # field 14, length-delimited
    altered = tmp_path / "altered.onnx"
    altered.write_bytes(entry(b"archspec.spec.yaml", spec) + entry(b"archspec.sha256", sha))
    code, _, err = run(capsys, "validate", str(altered))
    assert code == 1 and err == (f"{altered}: the embedded spec does not match its "
                                 "sha256: the file was altered\n")


def _varint(n: int) -> bytes:
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


def test_new_writes_a_commented_starter_that_validates(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "new", "my-densenet")
    assert code == 0 and out == ("wrote my-densenet.yaml: edit it, then archspec validate "
                                 "my-densenet.yaml\n")
    text = (tmp_path / "my-densenet.yaml").read_text()
    assert text.startswith("# yaml-language-server: $schema=densenet.schema.json\n")
    assert archspec.load_plan(tmp_path / "my-densenet.yaml").params == 1181768
    (tmp_path / "sub").mkdir()
    code, _, err = run(capsys, "new", "wide", "--from", "my-densenet.yaml", "-o",
                       "sub/wide.yaml")
    assert code == 0, err
    text = (tmp_path / "sub" / "wide.yaml").read_text()
    assert "extends: ../my-densenet.yaml\n" in text and "# growth_rate: 16\n" in text
    assert archspec.load_plan(tmp_path / "sub" / "wide.yaml").params == 1181768
    code, _, err = run(capsys, "new", "wide", "--from", "my-densenet.yaml", "-o",
                       "sub/wide.yaml")
    assert code == 1 and "already exists; pass --force" in err
    code, _, err = run(capsys, "new", "x", "--from", "densenet-bc-100-12")
    assert code == 0 and "# depth: 100\n" in (tmp_path / "x.yaml").read_text()
    code, _, err = run(capsys, "new", "no spaces please")
    assert code == 2 and "NAME holds letters" in err
