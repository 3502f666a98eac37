"""The zoo: shipped spec files, found by file stem (``densenet121``, ``densenet-bc-100-12``).

The files live in the top-level ``specs/`` folder of the source tree, where a source
checkout and an editable install read them; a wheel carries a copy as ``archspec/specs``
(setup.py), read through importlib.resources (so a zipped install works too).
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

__all__ = ["names", "find", "groups", "root"]


def _walk(node: Traversable, group: str = ""):
    for child in sorted(node.iterdir(), key=lambda t: t.name):
        if child.is_dir() and not child.name.startswith(("_", ".")):
            yield from _walk(child, f"{group}/{child.name}" if group else child.name)
        elif child.name.endswith((".yaml", ".yml")):
            yield child.name.rsplit(".", 1)[0], group, child


def root() -> Traversable:
    """The folder the zoo is read from: the wheel's copy, else the source tree's specs/."""
    shipped = resources.files("archspec") / "specs"
    if shipped.is_dir():
        return shipped
    return Path(__file__).resolve().parents[2] / "specs"  # src/archspec/zoo.py


@lru_cache(maxsize=1)
def _index() -> dict[str, tuple[str, Traversable]]:
    index: dict[str, tuple[str, Traversable]] = {}
    for name, group, item in _walk(root()):
        if name in index:  # a name is the contract: two files with one stem would be ambiguous
            raise RuntimeError(f"zoo has two specs named {name!r}")
        index[name] = (group, item)
    return index


def names() -> list[str]:
    """All zoo names, grouped (imagenet first, then cifar, then the rest) and sorted."""
    order = {"imagenet": 0, "cifar": 1}
    return sorted(_index(), key=lambda n: (order.get(_index()[n][0], 9), _index()[n][0],
                                           _natural(n)))


def groups() -> dict[str, str]:
    """name -> group (the zoo sub-folder: ``imagenet``, ``cifar``, ...)."""
    return {n: _index()[n][0] for n in names()}


def find(name: str) -> Traversable | None:
    """The shipped file for ``name``, or None."""
    hit = _index().get(name)
    return hit[1] if hit else None


def _natural(name: str) -> tuple:
    # densenet-bc-100-12 before densenet-bc-190-40 before densenet-bc-250-24
    import re

    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))

