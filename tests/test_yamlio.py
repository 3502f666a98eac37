"""Located YAML: marks, and the refusals that keep hostile input cheap."""

from __future__ import annotations

import time

import pytest

from archspec import SpecError
from archspec.yamlio import MAX_BYTES, parse_yaml


def test_marks_point_at_keys_and_values():
    data, smap = parse_yaml("name: x\nblock_config:\n  - 6\n  - 12\n", "f.yaml")
    assert data == {"name": "x", "block_config": [6, 12]}
    assert smap.locate(("block_config", 1)).__dict__ == {"file": "f.yaml", "line": 4,
                                                         "column": 5}
    assert smap.locate(("block_config",), at_key=True).line == 2
    # an absent key falls back to its nearest parent
    assert smap.locate(("stem", "channels")).line == 1


def test_alias_bomb_is_refused_without_expanding_it():
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i-1}"] * 10) + "]")
    t0 = time.perf_counter()
    with pytest.raises(SpecError, match="alias bomb"):
        parse_yaml("\n".join(lines))
    # 10**10 nodes if expanded: a guard against hanging (hours), generous for a busy machine
    assert time.perf_counter() - t0 < 30.0


def test_recursive_alias_is_refused():
    with pytest.raises(SpecError, match="nesting deeper"):
        parse_yaml("a: &x [*x]\n")


def test_deep_nesting_is_refused_without_recursion_error():
    with pytest.raises(SpecError, match="nesting deeper than 32"):
        parse_yaml("a: " + "[" * 100_000 + "]" * 100_000)


@pytest.mark.parametrize("text,words", [
    ("a: !!python/object/apply:os.system ['true']", "!!python/object/apply:os.system"),
    ("a: !!binary aGVsbG8=", "!!binary"),
    ("a: !custom 1", "!custom"),
    ("a: !!set {x}", "!!set"),
])
def test_foreign_tags_are_refused(text, words):
    with pytest.raises(SpecError) as info:
        parse_yaml(text)
    assert words in info.value.message and "not allowed" in info.value.message


def test_merge_keys_and_non_string_keys_are_refused():
    with pytest.raises(SpecError, match="merge keys"):
        parse_yaml("base: &b {x: 1}\nother:\n  <<: *b\n")
    with pytest.raises(SpecError, match="keys must be plain strings"):
        parse_yaml("1: a\n")


def test_non_utf8_is_located():
    with pytest.raises(SpecError) as info:
        parse_yaml(b"name: x\ngrowth: \xff\n", "bin.yaml")
    assert (info.value.line, info.value.column) == (2, 9)
    assert "not UTF-8" in info.value.message


def test_size_limit():
    with pytest.raises(SpecError, match="limited to"):
        parse_yaml(b"#" * (MAX_BYTES + 1))


def test_timestamps_stay_text_and_huge_ints_are_values():
    data, _ = parse_yaml("d: 2020-01-01\nn: 1000000000000000000000000000000\n")
    assert data == {"d": "2020-01-01", "n": 10**30}


@pytest.mark.parametrize("text", ["", "   \n", "# only a comment\n"])
def test_empty(text):
    with pytest.raises(SpecError, match="empty|no YAML document"):
        parse_yaml(text)
