"""Located YAML: marks, and the refusals that keep hostile input cheap."""

from __future__ import annotations

import time

import pytest
import yaml

from archspec import SpecError
from archspec import yamlio
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


class _LimitedLoader(yaml.SafeLoader):
    """A parser with a nesting limit of its own that scans flow brackets ahead, as
    libyaml does from PyYAML 6.0.4 (limit 1000): here 40 levels, to keep the test quick."""

    def fetch_flow_collection_start(self, TokenClass):
        if self.flow_level >= 40:
            raise yaml.scanner.ScannerError("while increasing flow level", None,
                                            "exceeded maximum nesting depth",
                                            self.get_mark())
        super().fetch_flow_collection_start(TokenClass)


@pytest.mark.parametrize("loader", [getattr(yaml, "CSafeLoader", yaml.SafeLoader),
                                    yaml.SafeLoader, _LimitedLoader],
                         ids=["c", "python", "parser-with-a-limit"])
@pytest.mark.parametrize("text,where", [
    ("a: " + "[" * 50 + "]" * 50, (1, 35)),
    ("a:\n  b: " + "{c: " * 50 + "1" + "}" * 50, (2, 126)),
    ("- " * 50 + "x", (1, 65)),
])
def test_the_nesting_rule_is_archspecs_whatever_the_parser(monkeypatch, loader, text, where):
    # The same message and location whichever parser reads the file: PyYAML 6.0.3's libyaml
    # has no limit, 6.0.4's refuses 1000 levels and reads ahead of the parser (issue 23).
    monkeypatch.setattr(yamlio, "_Loader", loader)
    with pytest.raises(SpecError) as info:
        parse_yaml(text, "f.yaml")
    p = info.value.problems[0]
    assert (p.message, p.line, p.column) == ("nesting deeper than 32 levels", *where)


def test_a_syntax_error_is_still_reported_as_the_parser_saw_it(monkeypatch):
    # the replay with the pure-Python parser finds no depth problem: the first error stands
    monkeypatch.setattr(yamlio, "_Loader", _LimitedLoader)
    with pytest.raises(SpecError) as info:
        parse_yaml("a: [[1, 2]\n", "f.yaml")
    p = info.value.problems[0]
    assert "YAML syntax error: " in p.message and "expected ',' or ']'" in p.message
    assert (p.line, p.column) == (2, 1)
