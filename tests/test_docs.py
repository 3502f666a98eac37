"""Docs that are generated from the code must not drift from it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_generated_docs_are_current():
    proc = subprocess.run([sys.executable, str(REPO / "docs" / "generate.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_readme_states_the_two_commands_and_ci_runs_them():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert 'pip install -e ".[dev]" && archspec summary densenet121' in readme
    assert 'pip install -e ".[dev]" && python -m pytest -q' in readme
    assert 'pip install -e ".[dev]"' in ci and "python -m pytest -q" in ci


# --- every Python snippet in README.md and docs/ runs as written ------------------------------

_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def _blocks(lang: str) -> list[tuple[str, str]]:
    out = []
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = path.read_text()
        for m in _BLOCK.finditer(text):
            if m[1] == lang:
                line = text[:m.start()].count("\n") + 1
                out.append((f"{path.relative_to(REPO)}:{line}", m[2]))
    return out


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory):
    """A folder holding what the snippets take as the user's own files: every spec the
    docs show (written under its ``name``), and torchvision checkpoints where the docs load
    downloaded weights (freshly initialised: nothing is downloaded here)."""
    import torch
    import torchvision

    folder = tmp_path_factory.mktemp("user")
    for _where, body in _blocks("yaml"):
        name = re.search(r"^name:\s*(\S+)", body, re.M)
        if name and not name[1].startswith("densenet"):
            (folder / f"{name[1]}.yaml").write_text(body)
    state = torchvision.models.densenet121().state_dict()
    for file in ("densenet121.pth", "densenet121-a639ec97.pth"):
        torch.save(state, folder / file)
    return folder


def _marked(blocks: list[tuple[str, str]]) -> list:
    # Snippets that script or export a whole network take half a minute each on 2 cores:
    # they run with the slow tests (.ci/run runs both), the rest in the fast suite.
    # (a DDP training step of two processes is as heavy)
    heavy = ("torch.jit.script(", "archspec.export(", "torch.export.export(",
             "DistributedDataParallel")
    return [pytest.param(where, code, marks=pytest.mark.slow)
            if any(h in code for h in heavy) else (where, code) for where, code in blocks]


@pytest.mark.parametrize("where,code", _marked(_blocks("python")),
                         ids=lambda v: v if ":" in v else "")
def test_python_snippet_runs_as_written(where, code, user_folder):
    # A fresh interpreter per snippet: each must hold its own imports, as a reader copies it.
    proc = subprocess.run([sys.executable, "-c", code], cwd=user_folder, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, f"{where}:\n{code}\n{proc.stderr[-3000:]}"


def test_cli_md_names_every_command_and_option():
    # docs/cli.md's synopsis table is written by hand; each row must name every option its
    # command takes (argparse is the truth), so a new option cannot go undocumented.
    import argparse

    from archspec.cli import _parser

    rows = {}
    for line in (REPO / "docs" / "cli.md").read_text().splitlines():
        m = re.match(r"\| `([a-z-]+)", line)
        if m:
            rows.setdefault(m[1], []).append(line)
    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for name, parser in sub.choices.items():
        if name not in rows:
            missing.append(f"{name}: no row")
            continue
        text = " ".join(rows[name])
        for action in parser._actions:
            names = action.option_strings
            # --set is documented once for every command that takes a spec
            if not names or {"--help", "--set"} & set(names) or action.help == argparse.SUPPRESS:
                continue
            if not any(re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", text) for o in names):
                missing.append(f"{name}: {names[-1]}")
    assert not missing, missing
