"""Docs that are generated from the code must not drift from it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
