"""A plain (non-editable) install finds every zoo spec by name: the specs/ folder is
shipped inside the wheel as archspec.specs."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


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
