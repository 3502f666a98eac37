"""Broken and hostile specs (files in tests/corpus/): each gets a located SpecError, within
a second and with bounded memory, through the Python API and through the CLI (exit 1, no
traceback)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

import archspec
from archspec.cli import main

CORPUS = Path(__file__).resolve().parent / "corpus"

# file -> (line, column, key path, words in the message)
EXPECTED = {
    "empty.yaml": (1, 1, "", "file is empty"),
    "comments-only.yaml": (1, 1, "", "no YAML document"),
    "non-utf8.yaml": (1, 11, "", "not UTF-8 text: byte 0xe9"),
    "utf16.yaml": (1, 1, "", "not UTF-8 text"),
    "binary-garbage.yaml": (1, 1, "", "not UTF-8 text"),
    "control-chars.yaml": (1, 10, "", "character U+0007 is not allowed"),
    "syntax-unclosed-list.yaml": (8, 12, "", "YAML syntax error"),
    "syntax-bad-indent.yaml": (5, 2, "", "YAML syntax error"),
    "syntax-tab.yaml": (5, 1, "", "a tab in the indentation; YAML forbids tabs there"),
    "two-documents.yaml": (9, 1, "", "expected a single document"),
    "top-level-list.yaml": (1, 1, "", "found a list of 2 items at the top level"),
    "top-level-scalar.yaml": (1, 1, "", "found 'densenet121' (a string) at the top level"),
    "alias-bomb.yaml": (1, 14, "", "alias bomb"),
    "deep-nesting.yaml": (1, 38, "", "nesting deeper than 32 levels"),
    "duplicate-key.yaml": (9, 1, "growth_rate", "duplicate key 'growth_rate'"),
    "merge-key.yaml": (5, 1, "", "merge keys (<<) are not supported"),
    "non-string-key.yaml": (9, 1, "", "keys must be plain strings"),
    "python-object-tag.yaml": (8, 14, "num_classes", "!!python/object/apply:os.system is not"),
    "custom-tag.yaml": (4, 14, "growth_rate", "YAML tag !k is not allowed"),
    "binary-tag.yaml": (1, 7, "name", "YAML tag !!binary is not allowed"),
    "huge-integer.yaml": (4, 14, "growth_rate", "must be <= 65536, found an integer of 31 digits"),
    "negative-count.yaml": (4, 14, "growth_rate", "must be >= 1, found -12"),
    "zero-count.yaml": (4, 14, "growth_rate", "must be >= 1, found 0"),
    "float-count.yaml": (4, 14, "growth_rate", "expected an integer or a list, found 12.0"),
    "bool-count.yaml": (4, 14, "growth_rate", "expected an integer or a list, found true (a boolean)"),
    "null-count.yaml": (4, 14, "growth_rate", "expected an integer or a list, found null"),
    "nan-count.yaml": (4, 14, "growth_rate", "expected an integer or a list, found .nan"),
    "string-count.yaml": (4, 14, "growth_rate", "expected an integer or a list, found '12' (a string)"),
    "inf-compression.yaml": (6, 14, "compression", "must be a finite number, found .inf"),
    "theta-zero.yaml": (6, 14, "compression", "must be > 0.0, found 0"),
    "theta-above-one.yaml": (6, 14, "compression", "must be <= 1.0, found 1.01"),
    "empty-block-config.yaml": (7, 15, "block_config", "must have at least 1 item(s), found 0"),
    "billion-layer-block.yaml": (7, 19, "block_config[1]", "must be <= 10000, found 1000000000"),
    "too-many-blocks.yaml": (7, 15, "block_config", "must have at most 16 item(s), found 40"),
    "block-config-mapping.yaml": (7, 15, "block_config", "expected a list, found a mapping"),
    "stem-scalar.yaml": (3, 7, "stem", "expected a mapping, found 'cifar' (a string); "
                         "write stem: {type: cifar}"),
    "input-too-small.yaml": (2, 30, "input.height",
                             "input 3x3x3 (CxHxW) is too small: transition2"),
    "imagenet-input-too-small.yaml": (2, 30, "input.height",
                                      "input 3x8x8 (CxHxW) is too small: transition2"),
    "num-classes-negative.yaml": (8, 14, "num_classes", "must be >= 0, found -1"),
    "unknown-stem-type.yaml": (3, 14, "stem.type", "expected one of cifar, imagenet"),
    "unknown-key.yaml": (9, 1, "groth_rate", "did you mean 'growth_rate'"),
    "depth-not-fitting.yaml": (7, 8, "depth", "nearest valid depths: 100 and 106"),
    "extends-missing.yaml": (1, 10, "extends", "cannot extend 'no-such-parent.yaml': no such"),
    "extends-self.yaml": (1, 10, "extends", "'extends' forms a cycle"),
}


def test_every_corpus_file_has_an_expectation():
    assert sorted(p.name for p in CORPUS.iterdir()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_through_the_api(name):
    line, column, path, words = EXPECTED[name]
    file = CORPUS / name
    t0 = time.perf_counter()
    with pytest.raises(archspec.SpecError) as info:
        archspec.plan(archspec.load(file))
    elapsed = time.perf_counter() - t0
    tracemalloc.start()  # a second run for memory: tracing slows allocation several-fold
    try:
        with pytest.raises(archspec.SpecError):
            archspec.plan(archspec.load(file))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    err = info.value
    assert (err.file, err.line, err.column, err.path) == (str(file), line, column, path), str(err)
    assert words in err.message
    # Bounds against hanging and memory blow-ups (generous: these take milliseconds).
    assert elapsed < 1.0 and peak < 64 * 2**20, (elapsed, peak)


def test_corpus_through_the_cli_in_one_process():
    files = [str(CORPUS / n) for n in sorted(EXPECTED)]
    proc = subprocess.run([sys.executable, "-m", "archspec", "validate", *files],
                          capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"},
                          timeout=120)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    for name, (line, column, path, words) in EXPECTED.items():
        prefix = f"{CORPUS / name}:{line}:{column}:" + (f" {path}:" if path else "")
        assert any(ln.startswith(prefix) and words in ln for ln in lines), name


@pytest.mark.parametrize("name", ["alias-bomb.yaml", "deep-nesting.yaml", "empty.yaml",
                                  "binary-garbage.yaml", "python-object-tag.yaml"])
@pytest.mark.parametrize("command", ["validate", "summary", "table", "build", "verify"])
def test_corpus_every_command_exits_1(capsys, tmp_path, name, command):
    argv = [command, str(CORPUS / name)]
    if command == "build":
        argv += ["-o", str(tmp_path / "out.pt")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{CORPUS / name}:") and "Traceback" not in err
    assert not (tmp_path / "out.pt").exists()


def test_file_over_the_size_limit(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_bytes(b"name: big\n" + b"# padding\n" * 110_000)  # 1.1 MB
    with pytest.raises(archspec.SpecError, match="specs are limited to 1,048,576 bytes"):
        archspec.load(big)


def test_directory_and_missing_path(capsys, tmp_path):
    assert main(["validate", str(tmp_path)]) == 1
    assert capsys.readouterr().err.strip() == f"{tmp_path}: is a directory, not a spec file"
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 1
    assert capsys.readouterr().err.strip() == f"{tmp_path / 'nope.yaml'}: no such file"


def test_resource_guard_refuses_before_allocating(capsys):
    import torch  # noqa: F401  (imported first: the timing below must exclude it)

    from archspec.resources import ResourceError

    huge = archspec.load("densenet121", overrides={
        "growth_rate": 4096, "block_config": "[10000, 10000, 10000, 10000]", "expect": "null"})
    t0 = time.perf_counter()
    with pytest.raises(ResourceError, match="over the limit of 2,000,000,000"):
        archspec.build(huge)
    assert time.perf_counter() - t0 < 2.0
    assert main(["verify", "densenet121", "--batch", "1000000"]) == 1
    err = capsys.readouterr().err
    assert "needs about" in err and "--allow-large" in err


def test_allow_large_lets_a_build_through(monkeypatch):
    import archspec.resources as res

    monkeypatch.setattr(res, "MAX_PARAMS", 100)
    small = archspec.loads("name: s\nstem: {type: cifar}\ngrowth_rate: 2\nblock_config: [1]\n"
                           "input: {height: 8, width: 8}\nnum_classes: 2\n")
    with pytest.raises(res.ResourceError):
        archspec.build(small)
    assert archspec.build(small, allow_large=True) is not None
