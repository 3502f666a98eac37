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


class _Zygote:
    """tests/snippet_zygote.py: one interpreter that has imported torch, forking a fresh
    child per snippet (the import is most of a small snippet's time)."""

    def __init__(self):
        self._start()

    def _start(self):
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name(
            "snippet_zygote.py"))], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            start_new_session=True)

    def run(self, code: str, where: str, cwd: Path, log: Path, timeout: float) -> int:
        import json
        import os
        import select
        import signal

        if self.proc.poll() is not None:  # killed after an earlier snippet's timeout
            self._start()
        request = {"code": code, "where": where, "cwd": str(cwd), "log": str(log)}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:  # the whole group: the zygote and the snippet's child
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()  # reaped, so the next run sees it gone and starts another
            raise TimeoutError(f"{where}: still running after {timeout:.0f} s")
        reply = self.proc.stdout.readline()
        if not reply:
            raise RuntimeError(f"{where}: the snippet runner died: {log.read_text()[-3000:]}")
        return json.loads(reply)["rc"]

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


# autouse: started with the module's first test, so torch is imported while the generated
# docs are checked, not while the first snippet waits
@pytest.fixture(scope="module", autouse=True)
def zygote():
    import os

    if not hasattr(os, "fork"):
        yield None
        return
    z = _Zygote()
    yield z
    z.close()


def _fresh_interpreter_only(code: str) -> bool:
    """Snippets that keep a brand-new interpreter: those that start processes of their own
    (their workers import the snippet's __main__, which a fork's namespace is not). The
    torch-free install is .ci/run's own step ("the spec writer's install")."""
    return any(h in code for h in ("multiprocessing", "DistributedDataParallel", "subprocess",
                                   "torchrun"))


@pytest.mark.parametrize("where,code", _marked(_blocks("python")),
                         ids=lambda v: v if ":" in v else "")
def test_python_snippet_runs_as_written(where, code, user_folder, zygote, tmp_path):
    # A fresh interpreter per snippet, or a fresh fork of one that has only imported torch:
    # each must hold its own imports, as a reader copies it.
    if zygote is None or _fresh_interpreter_only(code):
        proc = subprocess.run([sys.executable, "-c", code], cwd=user_folder,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{where}:\n{code}\n{proc.stderr[-3000:]}"
        return
    log = tmp_path / "snippet.log"
    rc = zygote.run(code, where, user_folder, log, timeout=300)
    assert rc == 0, f"{where}:\n{code}\n{log.read_text()[-3000:]}"


def test_the_snippet_runner_is_a_fresh_interpreter_to_each_snippet(zygote, tmp_path):
    """What the fork must keep of a new interpreter: a snippet that forgets its import
    fails though torch is loaded in the runner, a snippet's globals and torch settings do
    not reach the next one, and its exit status is the snippet's."""
    if zygote is None:
        pytest.skip("no os.fork: snippets run in new interpreters")
    log = tmp_path / "log"
    assert zygote.run("x = torch.zeros(1)", "forgot", tmp_path, log, 120) == 1
    assert "NameError: name 'torch' is not defined" in log.read_text()
    assert zygote.run("import torch\ntorch.set_default_dtype(torch.float64)\nleft = 1",
                      "first", tmp_path, log, 120) == 0
    check = ("import torch\nassert 'left' not in globals()\n"
             "assert torch.get_default_dtype() == torch.float32\nprint('clean')")
    assert zygote.run(check, "second", tmp_path, log, 120) == 0, log.read_text()
    assert log.read_text() == "clean\n"
    assert zygote.run("raise SystemExit(3)", "exits", tmp_path, log, 120) == 3


@pytest.mark.slow  # restarts the runner: one more torch import
def test_the_snippet_runner_outlives_a_snippet_that_hangs(zygote, tmp_path):
    if zygote is None:
        pytest.skip("no os.fork: snippets run in new interpreters")
    log = tmp_path / "log"
    with pytest.raises(TimeoutError):
        zygote.run("import time\ntime.sleep(60)", "hangs", tmp_path, log, 2)
    assert zygote.run("print('next')", "next", tmp_path, log, 120) == 0
    assert log.read_text() == "next\n"


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
