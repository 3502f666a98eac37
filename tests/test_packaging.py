"""Packaging: the wheel ships the zoo (specs/ copied in as archspec/specs), a folder named
archspec cannot shadow the installed package, torch is an extra, and the pre-commit hook."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # builds a wheel and installs it: ~3.5 s on 2 cores
def test_wheel_ships_the_zoo_and_finds_it_by_name(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps",
                    "--no-build-isolation", "-q", "-w", str(tmp_path / "dist")],
                   check=True, capture_output=True, timeout=300)
    wheel = next((tmp_path / "dist").glob("archspec-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        zf.extractall(tmp_path / "site")
    shipped = {Path(n).stem for n in names if n.startswith("archspec/specs/")
               and n.endswith(".yaml")}
    in_repo = {p.stem for p in (REPO / "specs").glob("*/*.yaml")}
    assert shipped == in_repo
    # Import from the unpacked wheel only (not the source tree) and load by name.
    code = ("import sys, archspec; assert 'site' in archspec.__file__, archspec.__file__; "
            "print(sorted(archspec.zoo.names()) == sorted(%r)); "
            "print(archspec.plan(archspec.load('densenet121')).params)" % sorted(in_repo))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, env={"PYTHONPATH": str(tmp_path / "site"),
                                            "PATH": "/usr/bin:/bin"}, check=True)
    assert out.stdout.split() == ["True", "7978856"]


def _run(code: str, cwd: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *code], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **env}, timeout=120)


def test_a_folder_named_archspec_in_the_working_directory_does_not_shadow_the_package(
        tmp_path):
    # A clone named archspec, run from its parent: the installed package must win over the
    # folder (a namespace package), with `python script.py` and with `python -m archspec`.
    (tmp_path / "archspec" / "specs").mkdir(parents=True)
    (tmp_path / "archspec" / "README.md").write_text("a clone\n")
    (tmp_path / "api.py").write_text("import archspec\n"
                                     "print(archspec.plan(archspec.load('densenet121')).params)\n")
    out = _run(["api.py"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "7978856\n"
    out = _run(["-m", "archspec", "--version"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith(__import__("archspec").__version__)
    out = _run(["-m", "archspec", "validate", "densenet121"], tmp_path)
    assert out.returncode == 0 and out.stdout.startswith("OK densenet121"), out.stderr


_NO_TORCH = ("import sys\n"
             "for m in ('torch', 'torchvision', 'torchinfo'):\n"
             "    sys.modules[m] = None  # as if not installed: importing it fails\n")


def test_without_torch_the_spec_writers_commands_work_and_build_says_what_to_install(
        tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\ngrowth_rate: 12\nblock_config: [2, 2]\n"
                    "input: {channels: 3, height: 32, width: 32}\nstem: {type: cifar}\n")
    code = _NO_TORCH + (
        "from archspec.cli import main\n"
        "for argv in (['validate', %r], ['summary', 'densenet121'], ['table', 'densenet121'], ['schema'],\n"
        "             ['diff', 'densenet121', 'densenet169'], ['list'],\n"
        "             ['search', %r, '--vary', 'growth_rate=8..12:4'],\n"
        "             ['new', 'mine', '--from', 'densenet121', '-o', %r]):\n"
        "    assert main(argv) == 0, argv\n"
        "print('BUILD', main(['build', 'densenet121', '-o', %r]))\n"
        % (str(spec), str(spec), str(tmp_path / "mine.yaml"), str(tmp_path / "m.pt")))
    out = _run(["-c", code], tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.rstrip().endswith("BUILD 1")
    assert out.stderr == ('archspec build: needs PyTorch, which is not installed here '
                          '(validate, summary, table, schema, diff, list and search do '
                          'not); install it with: pip install "archspec[torch]"\n')
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("call", ["archspec.build('densenet121')", "archspec.DenseNet",
                                  "archspec.optimize_for_inference(None)",
                                  "archspec.from_module(None)"])
def test_without_torch_the_python_api_says_what_to_install(tmp_path, call):
    code = _NO_TORCH + (
        "import archspec\n"
        "try:\n"
        "    %s\n"
        "except ModuleNotFoundError as e:\n"
        "    print(e)\n" % call)
    out = _run(["-c", code], tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("archspec.")
    assert 'needs PyTorch' in out.stdout and 'pip install "archspec[torch]"' in out.stdout


def test_torch_is_an_extra_and_dev_keeps_everything():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=\[ ]", d)[0] for d in meta["dependencies"]}
    assert names == {"pydantic", "pyyaml"}
    extras = meta["optional-dependencies"]
    assert {re.split(r"[<>=\[ ]", d)[0] for d in extras["torch"]} == {
        "torch", "torchvision", "torchinfo"}
    assert "archspec[torch]" in extras["dev"] and "archspec[torch]" in extras["onnx"]


def test_the_pre_commit_hook_validates_spec_files():
    import yaml

    (hook,) = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    assert hook["id"] == "archspec-validate" and hook["entry"] == "archspec validate"
    assert hook["language"] == "python"
    files = re.compile(hook["files"])
    zoo = [str(p.relative_to(REPO)) for p in REPO.glob("specs/*/*.yaml")]
    assert zoo and all(files.search(f) for f in zoo)
    assert not files.search(".github/workflows/ci.yaml")


@pytest.mark.slow
def test_the_pre_commit_hook_runs_in_pre_commit(tmp_path):
    # pre-commit installs this repository into an environment of its own (the light
    # install), then runs the hook on the files given; a bad spec fails the run.
    pytest.importorskip("pre_commit")
    work = tmp_path / "team"
    (work / "specs").mkdir(parents=True)
    (work / "specs" / "good.yaml").write_text("extends: densenet121\nname: good\n")
    (work / "specs" / "bad.yaml").write_text("extends: densenet121\nname: bad\ngrowth_rat: 3\n")
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    env = {**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "cache")}

    def hook(*files):
        return subprocess.run([sys.executable, "-m", "pre_commit", "try-repo", str(REPO),
                               "archspec-validate", "--files", *files], cwd=work, env=env,
                              capture_output=True, text=True, timeout=600)

    ok = hook("specs/good.yaml")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = hook("specs/good.yaml", "specs/bad.yaml")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "specs/bad.yaml:3:1: growth_rat: unknown key 'growth_rat'" in bad.stdout


def test_no_module_imports_one_that_imports_it_back():
    # Issue 20: the data flows one way. Every import between archspec's modules counts,
    # those inside functions too (a lazy import is still a dependency).
    import ast

    package = REPO / "src" / "archspec"
    modules = {".".join(p.relative_to(package).with_suffix("").parts)
               .removesuffix(".__init__").removesuffix("__init__"): p
               for p in package.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        # the package a relative import starts from
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        here = [p for p in here if p]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level >= 1:
                base = here[:len(here) - (node.level - 1)]
                if node.module:
                    base = base + node.module.split(".")
                for alias in node.names:  # a module imported by name, or one of its names
                    sub = ".".join(base + [alias.name])
                    deps.add(sub if sub in modules else ".".join(base))
        graph[name] = deps - {name}
    assert {"nn", "memory", "memory.block", "memory.kernels"} <= set(graph)

    def reaches(a: str, b: str, seen: set) -> bool:
        return a == b or any(reaches(n, b, seen | {a}) for n in graph.get(a, ())
                             if n not in seen)
    circles = sorted({tuple(sorted((a, b))) for a in graph for b in graph[a]
                      if b in graph and reaches(b, a, {b})})
    assert not circles, circles


def test_the_torch_free_layers_import_no_torch_module():
    # load -> schema -> plan -> report/search never import torch, directly or through
    # another archspec module (the light install depends on it).
    code = ("import sys\n"
            "import archspec, archspec.report, archspec.search, archspec.starter, "
            "archspec.provenance, archspec.cli\n"
            "archspec.plan(archspec.load('densenet121'))\n"
            "assert not [m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'torchvision', 'torchinfo')], 'torch imported'\n")
    out = _run(["-c", code], REPO)
    assert out.returncode == 0, out.stderr


def test_the_version_is_pyprojects():
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    from archspec.version import __version__
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert __version__ == project["version"]
