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


@pytest.mark.parametrize("where,code", _blocks("python"), ids=lambda v: v if ":" in v else "")
def test_python_snippet_runs_as_written(where, code, user_folder):
    # A fresh interpreter per snippet: each must hold its own imports, as a reader copies it.
    proc = subprocess.run([sys.executable, "-c", code], cwd=user_folder, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, f"{where}:\n{code}\n{proc.stderr[-3000:]}"
