"""Bad specs raise SpecError at the right line, column and key path, in the user's terms."""

from __future__ import annotations

import pytest

import archspec

BASE = """\
name: t
input: {channels: 3, height: 32, width: 32}
stem:
  type: cifar
growth_rate: 12
block_config: [4, 4, 4]
num_classes: 10
"""

# (id, spec text, line, column, key path, words the message must contain)
CASES = [
    ("misspelled key", BASE.replace("growth_rate: 12", "growth_rat: 12"),
     5, 1, "growth_rat", ["unknown key 'growth_rat'", "did you mean 'growth_rate'"]),
    ("misspelled nested key", BASE.replace("  type: cifar", "  type: cifar\n  chanels: 16"),
     5, 3, "stem.chanels", ["unknown key 'chanels'", "did you mean 'channels'"]),
    ("bool as count", BASE.replace("growth_rate: 12", "growth_rate: true"),
     5, 14, "growth_rate", ["expected an integer", "found true (a boolean)"]),
    ("float as count", BASE.replace("growth_rate: 12", "growth_rate: 12.5"),
     5, 14, "growth_rate", ["expected an integer", "found 12.5"]),
    ("string as count", BASE.replace("growth_rate: 12", "growth_rate: twelve"),
     5, 14, "growth_rate", ["expected an integer", "'twelve' (a string)"]),
    ("negative layers", BASE.replace("[4, 4, 4]", "[4, -1, 4]"),
     6, 19, "block_config[1]", ["must be >= 1", "found -1"]),
    ("empty block_config", BASE.replace("[4, 4, 4]", "[]"),
     6, 15, "block_config", ["at least 1 item", "found 0"]),
    ("compression zero", BASE + "compression: 0\n",
     8, 14, "compression", ["must be > 0", "found 0"]),
    ("compression above one", BASE + "compression: 1.5\n",
     8, 14, "compression", ["must be <= 1", "found 1.5"]),
    ("unknown stem type", BASE.replace("type: cifar", "type: imagnet"),
     4, 9, "stem.type", ["expected one of cifar, imagenet", "did you mean 'imagenet'"]),
    ("num_classes negative", BASE.replace("num_classes: 10", "num_classes: -2"),
     7, 14, "num_classes", ["must be >= 0", "found -2"]),
    ("nan dropout", BASE + "drop_rate: .nan\n",
     8, 12, "drop_rate", ["finite number", ".nan"]),
    ("missing growth rate", BASE.replace("growth_rate: 12\n", ""),
     1, 1, "", ["required key 'growth_rate' is missing"]),
    ("depth that does not fit", BASE.replace("block_config: [4, 4, 4]", "depth: 41"),
     6, 8, "depth", ["depth 41", "(L-4)/3", "nearest valid depths: 40 and 43"]),
    ("depth that does not fit (bottleneck)",
     BASE.replace("block_config: [4, 4, 4]", "depth: 101\nbn_size: 4"),
     6, 8, "depth", ["(L-4)/6", "nearest valid depths: 100 and 106"]),
    ("depth and block_config", BASE + "depth: 40\n",
     8, 1, "depth", ["either 'depth' or 'block_config', not both"]),
    ("neither depth nor block_config", BASE.replace("block_config: [4, 4, 4]\n", ""),
     1, 1, "", ["give 'block_config'", "or 'depth'"]),
    ("duplicate key", BASE + "growth_rate: 24\n",
     8, 1, "growth_rate", ["duplicate key 'growth_rate'", "line 5"]),
    ("expect params wrong", BASE + "expect:\n  params: 1000\n",
     9, 11, "expect.params", ["expected 1,000 parameters", "the plan has"]),
    ("expect out_channels wrong", BASE + "expect: {out_channels: 99}\n",
     8, 24, "expect.out_channels", ["expected 99 output channels", "the plan has 160"]),
    ("input too small", BASE.replace("height: 32, width: 32", "height: 2, width: 2"),
     2, 30, "input.height", ["too small", "transition2", "1x1 (HxW)",
                             "smallest input this net accepts is 3x4x4"]),
    ("python tag", BASE.replace("num_classes: 10", "num_classes: !!python/object:os.system 1"),
     7, 14, "num_classes", ["tag !!python/object:os.system is not allowed"]),
    ("top-level list", "- 1\n- 2\n", 1, 1, "", ["found a list of 2 items at the top level"]),
    ("syntax error", "name: t\ngrowth_rate: [1, 2\n", 3, 1, "", ["YAML syntax error"]),
]


@pytest.mark.parametrize("text,line,column,path,words", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_spec_is_located(spec_file, text, line, column, path, words):
    file = spec_file(text)
    with pytest.raises(archspec.SpecError) as info:
        archspec.plan(archspec.load(file))
    err = info.value
    assert (err.file, err.line, err.column, err.path) == (str(file), line, column, path), str(err)
    for w in words:
        assert w in err.message, err.message
    assert str(err).startswith(f"{file}:{line}:{column}: ")


def test_transition_width_below_one(spec_file):
    text = BASE.replace("growth_rate: 12", "growth_rate: 1").replace(
        "type: cifar", "type: cifar\n  channels: 1") + "compression: 0.1\n"
    file = spec_file(text)
    with pytest.raises(archspec.SpecError) as info:
        archspec.plan(archspec.load(file))
    err = info.value
    assert (err.line, err.path) == (9, "compression")
    assert "transition1 would output floor(0.1 x 5) = 0 channels" in err.message


def test_several_problems_reported_together(spec_file):
    text = BASE.replace("growth_rate: 12", "growth_rate: 0").replace(
        "num_classes: 10", "num_class: 10").replace("type: cifar", "type: nope")
    with pytest.raises(archspec.SpecError) as info:
        archspec.load(spec_file(text))
    err = info.value
    assert [(p.line, p.path) for p in err.problems] == [
        (4, "stem.type"), (5, "growth_rate"), (7, "num_class")]
    assert len(str(err).splitlines()) == 3


def test_unknown_zoo_name_suggests():
    with pytest.raises(archspec.SpecError) as info:
        archspec.load("densenet12")
    assert "did you mean densenet121" in str(info.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(archspec.SpecError, match="no such file"):
        archspec.load(tmp_path / "absent.yaml")
    with pytest.raises(archspec.SpecError, match="is a directory"):
        archspec.load(tmp_path)


def test_loads_names_its_source():
    with pytest.raises(archspec.SpecError) as info:
        archspec.loads("name: x\ngrowth_rate: -3\nblock_config: [1]\n", source="inline.yaml")
    assert str(info.value) == "inline.yaml:2:14: growth_rate: must be >= 1, found -3"
