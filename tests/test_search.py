"""Design-space search (archspec.search, ``archspec search``): exact, complete, honest fronts."""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
import subprocess
import sys

import pytest

import archspec
from archspec.cli import main
from archspec.search import (SearchError, parse_number, parse_objectives, parse_values,
                             search)

GRID = {"growth_rate": [8, 12, 16], "depth": [40, 46, 52, 100, 101],
        "compression": [0.5, 1.0]}
INPUT64 = {"input": "{channels: 3, height: 64, width: 64}"}


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_values_and_numbers_as_people_write_them():
    assert parse_values("12,24,40") == [12, 24, 40]
    assert parse_values("40..46") == [40, 41, 42, 43, 44, 45, 46]
    assert parse_values("8..20:4") == [8, 12, 16, 20]
    assert parse_values("0.3..0.7:0.1") == [0.3, 0.4, 0.5, 0.6, 0.7]  # exact, not 0.30000004
    assert parse_values("null,4") == [None, 4]
    assert parse_number("1M") == 10**6 and parse_number("2.5G") == 2_500_000_000
    assert parse_number("300k") == 300_000 and parse_number("1_000") == 1000
    assert parse_objectives("params:max,macs:min") == (("params", "max"), ("macs", "min"))
    for bad in ("", "1..x", "5..1", "1..9:0", "1,,2"):
        with pytest.raises(SearchError):
            parse_values(bad)
    for bad in ("1Q", "-5", "nan", "inf"):
        with pytest.raises(SearchError):
            parse_number(bad)


def test_candidates_equal_brute_force_and_replan_to_the_same_numbers():
    result = search("densenet-bc-100-12", GRID, overrides=INPUT64, max_params="300k",
                    min_params="50k", max_macs="1G", batch=4)
    expected, invalid = {}, 0
    for combo in itertools.product(*GRID.values()):
        varied = dict(zip(GRID, combo))
        try:
            p = archspec.load_plan("densenet-bc-100-12", overrides={**INPUT64, **varied})
        except archspec.SpecError:
            invalid += 1
            continue
        if 50_000 <= p.params <= 300_000 and p.macs <= 10**9:
            expected[tuple(combo)] = (p.params, p.macs, p.training_memory(4))
    got = {tuple(c.overrides.values()): (c.params, c.macs, c.activations)
           for c in result.candidates}
    assert got == expected and len(got) > 3
    assert result.evaluated == 30 and result.invalid == invalid > 0
    assert result.valid == result.evaluated - result.invalid
    assert all(set(c.overrides) == set(GRID) for c in result.candidates)
    params = [c.params for c in result.candidates]
    assert params == sorted(params, reverse=True)  # default sort: -params


def test_front_is_exactly_the_non_dominated_set():
    result = search("densenet-bc-100-12", {"growth_rate": range(6, 30, 2),
                                           "depth": range(40, 130, 6)}, max_params="2M")

    def dominates(a, b):  # more params and fewer MACs, one strictly
        return a.params >= b.params and a.macs <= b.macs and \
            (a.params, a.macs) != (b.params, b.macs)
    cs = result.candidates
    for c in cs:
        assert c.pareto == (not any(dominates(o, c) for o in cs)), c
    assert 1 < sum(c.pareto for c in cs) < len(cs)
    other = search("densenet-bc-100-12", {"growth_rate": range(6, 30, 2),
                                          "depth": range(40, 130, 6)}, max_params="2M",
                   objectives="params:min,activations:min", sort="macs", top=5)
    assert [c.macs for c in other.candidates] == sorted(c.macs for c in cs)[:5]
    assert other.matched == len(cs)


def test_cli_json_contract_csv_and_invalid_list(capsys):
    code, out, _ = run(capsys, "search", "densenet-bc-100-12", "--vary", "growth_rate=8,12",
                       "--vary", "depth=40,41", "--format", "json", "--show-invalid")
    data = json.loads(out)
    assert code == 0 and {"base", "evaluated", "valid", "invalid", "candidates"} <= set(data)
    assert (data["evaluated"], data["valid"], data["invalid"]) == (4, 2, 2)
    assert set(data["candidates"][0]) == {"overrides", "params", "macs", "activations",
                                          "pareto"}
    assert data["candidates"][0]["overrides"] == {"growth_rate": 12, "depth": 40}
    assert "depth 41 does not give a whole number" in data["rejected"][0]["reason"]
    code, out, _ = run(capsys, "search", "densenet-bc-100-12", "--vary", "growth_rate=8,12",
                       "--vary", "depth=40", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["growth_rate"] for r in rows] == ["12", "8"] and rows[0]["pareto"] == "true"
    code, out, _ = run(capsys, "search", "densenet-bc-100-12", "--vary", "depth=40,41",
                       "--show-invalid")
    assert code == 0 and "invalid combinations:" in out and "depth=41: depth:" in out


def test_write_gives_specs_that_validate_and_pin_their_numbers(capsys, tmp_path):
    out = tmp_path / "candidates"
    code, _, err = run(capsys, "search", "densenet-bc-100-12", "--vary", "growth_rate=8..16:4",
                       "--vary", "depth=40,52", "--top", "3", "--write", str(out))
    assert code == 0, err
    files = sorted(out.glob("*.yaml"))
    assert len(files) == 3
    for f in files:
        p = archspec.load_plan(f)  # plans, with expect holding
        assert p.spec.expect.params == p.params
        assert f.stem == p.name and re.fullmatch(
            r"densenet-bc-100-12-0[123]-growth_rate=(8|12|16)\+depth=(40|52)", p.name)
        assert p.spec.description.startswith("archspec search candidate ")
        assert "C10+" not in p.spec.description + p.spec.source  # not the base's numbers
    again = ["search", "densenet-bc-100-12", "--vary", "growth_rate=8..16:4", "--vary",
             "depth=40,52", "--top", "3", "--write", str(out)]
    code, _, err = run(capsys, *again)
    assert code == 1 and "already exists; pass --force" in err  # never over a file unasked
    code, _, err = run(capsys, *again, "--force")
    assert code == 0 and err.count("wrote ") == 3


@pytest.mark.parametrize("argv,column,needle", [
    (["--vary", "growht_rate=1,2"], 4, "did you mean 'growth_rate'"),
    (["--vary", "growth_rate=1..x"], 4, "'x' is not a number"),
    (["--vary", "growth_rate"], 4, "expected KEY=VALUES"),
    (["--vary", "growth_rate=8", "--max-macs", "3Q"], 6, "--max-macs: '3Q' is not a number"),
    (["--vary", "growth_rate=8", "--objectives", "params:up"], 6, "--objectives"),
])
def test_bad_arguments_are_located_on_the_command_line(capsys, argv, column, needle):
    code, out, err = run(capsys, "search", "densenet121", *argv)
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.startswith(f"<command line>:1:{column}: ") and needle in err, err


def test_huge_grid_is_refused_with_its_size(capsys):
    code, _, err = run(capsys, "search", "densenet121", "--vary", "growth_rate=1..2000",
                       "--vary", "depth=1..2000")
    assert code == 2 and "4,000,000 combinations" in err and "--allow-large-grid" in err
    # --allow-large means "past the resource guard" elsewhere; search says where it went
    code, _, err = run(capsys, "search", "densenet121", "--vary", "growth_rate=16",
                       "--allow-large")
    assert code == 2 and "use --allow-large-grid" in err


def test_search_never_imports_torch():
    code = ("import sys, archspec; r = archspec.search('densenet-bc-100-12', "
            "{'growth_rate': [8, 12]}); assert r.valid == 2; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_plot_of_a_search(capsys, tmp_path):
    path = tmp_path / "front.svg"
    code, _, err = run(capsys, "search", "densenet121", "--vary", "growth_rate=16..40:8",
                       "--plot", str(path))
    assert code == 0, err
    svg = path.read_text()
    assert "Pareto front" in svg and "densenet169" in svg  # a zoo net of the same input
