"""Ships the zoo inside the wheel.

The zoo lives at the top of the source tree (``specs/``) for people to read. A wheel
carries it as ``archspec/specs/`` (package data), copied here at build time. An editable
install needs no copy: it is a plain path entry to this folder (no import hook, so a
folder named ``archspec`` in the current directory cannot shadow the package), and
``archspec.zoo`` reads ``specs/`` beside the package.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ZOO = Path(__file__).resolve().parent / "specs"


class build_py_with_zoo(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):  # the source tree's specs/ serves
            return
        target = Path(self.build_lib) / "archspec" / "specs"
        for spec in sorted(ZOO.glob("*/*.yaml")) + [ZOO / "schema.json"]:
            dest = target / spec.relative_to(ZOO)
            dest.parent.mkdir(parents=True, exist_ok=True)
            self.copy_file(str(spec), str(dest))


setup(cmdclass={"build_py": build_py_with_zoo})
