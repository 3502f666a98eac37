"""Where a spec comes from: a zoo name or a file read safely, and its ``extends`` chain
laid over its parents, every key keeping the place it was written.

Problems that leave the rest checkable (refused YAML keys, a parent that cannot be read)
are collected in ``Found`` rather than raised, so that loading reports them together
with the schema's and the planner's.
"""

from __future__ import annotations

import difflib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from . import zoo
from .errors import Problem, SpecError
from .messages import describe
from .provenance import embedded_spec, is_artefact
from .yamlio import MAX_BYTES, SourceMap, decode_bytes, read_yaml

__all__ = ["read_spec_source", "resolve_source", "Found", "deep_merge", "mark_inherited"]

_MAX_EXTENDS = 16


def read_spec_source(name_or_path: str | os.PathLike) -> tuple[str, str, Path]:
    """(text, file name for messages, folder for relative ``extends``) of a name or path."""
    raw_name = os.fspath(name_or_path)
    looks_like_path = (isinstance(name_or_path, os.PathLike) or os.sep in raw_name
                       or "/" in raw_name or raw_name.endswith((".yaml", ".yml"))
                       or os.path.exists(raw_name))
    if not looks_like_path:
        item = zoo.find(raw_name)
        if item is None:
            close = difflib.get_close_matches(raw_name, zoo.names(), n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(close)}?" if close else \
                "; 'archspec list' shows the zoo"
            raise SpecError.at(f"no such spec: not a file, and not a zoo name{hint}", raw_name)
        data = item.read_bytes()
        file = str(item)
        return decode_bytes(data, file), file, Path(file).parent
    path = Path(raw_name)
    if is_artefact(path) and path.is_file():  # an exported model: the spec it carries
        return embedded_spec(path).spec_text, f"{raw_name}#spec", path.parent
    try:
        st = path.stat()
    except FileNotFoundError:
        raise SpecError.at("no such file", raw_name) from None
    except OSError as e:
        raise SpecError.at(f"cannot read: {e.strerror}", raw_name) from None
    if path.is_dir():
        raise SpecError.at("is a directory, not a spec file", raw_name)
    if not stat.S_ISREG(st.st_mode):  # a FIFO or /dev/stdin would block the read forever
        raise SpecError.at("is not a regular file (a pipe or device?)", raw_name)
    if st.st_size > MAX_BYTES:
        raise SpecError.at(f"file is {st.st_size:,} bytes; specs are limited to "
                           f"{MAX_BYTES:,} bytes", raw_name, 1, 1)
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_BYTES + 1)  # bounded even if the file grows (or is a pipe)
    except OSError as e:
        raise SpecError.at(f"cannot read: {e.strerror}", raw_name) from None
    return decode_bytes(data, raw_name), raw_name, path.parent


@dataclass
class Found:
    """Problems found while reading that leave the rest of the spec checkable: refused
    YAML keys (``refused`` holds their key paths), and a parent that could not be read
    (``incomplete``: the keys it would have given are missing, so no 'required' problem
    and no arithmetic is reported)."""

    problems: list[Problem]
    refused: list[tuple]
    incomplete: bool = False
    merged: list[tuple] = field(default_factory=list)  # mappings whose merge key was refused
    files: list[str] = field(default_factory=list)  # the file and every file it extends


def resolve_source(text: str | bytes, file: str, base: Path, chain: tuple[str, ...]
             ) -> tuple[dict, SourceMap, Found]:
    """Parse one file and lay it over the spec it ``extends``, recursively."""
    data, smap, refusals = read_yaml(text, file)
    found = Found(list(refusals.problems), list(refusals.paths), merged=list(refusals.merged),
                  files=[file])
    if not isinstance(data, dict):
        raise SpecError([*found.problems, Problem(
            f"a spec is a mapping of keys to values, found {describe(data)} at the top "
            "level", file, 1, 1, "")])
    if "extends" not in data:
        return data, smap, found
    parent_ref = data.pop("extends")

    def cannot(message: str) -> tuple[dict, SourceMap, Found]:
        found.problems.append(smap.problem(("extends",), message))
        found.incomplete = True
        return data, smap, found

    if not isinstance(parent_ref, str) or not parent_ref:
        return cannot(f"expected a zoo name or a path, found {describe(parent_ref)}")
    here = os.path.abspath(file) if os.path.exists(file) else file
    if len(chain) >= _MAX_EXTENDS:
        return cannot(f"more than {_MAX_EXTENDS} levels of 'extends'")
    # A path is relative to the child file; a bare name is a zoo name unless such a file
    # exists. Normalised (sub/../base.yaml is base.yaml), so messages name the file plainly.
    candidate = Path(os.path.normpath(base / parent_ref))
    ref = candidate if (candidate.exists() or "/" in parent_ref
                        or parent_ref.endswith((".yaml", ".yml"))) else parent_ref
    try:
        ptext, pfile, pbase = read_spec_source(ref)
    except SpecError as e:
        return cannot(f"cannot extend {parent_ref!r}: {e.message}")
    pkey = os.path.abspath(pfile) if os.path.exists(pfile) else pfile
    if pkey in chain or pkey == here:
        return cannot(f"'extends' forms a cycle: {' -> '.join([*chain, here, pkey])}")
    pdata, pmap, pfound = resolve_source(ptext, pfile, pbase, chain + (here,))
    found.problems[:0] = pfound.problems  # the parent's first: they come first in the chain
    found.refused += [p for p in pfound.refused if p[:1] and p[0] not in data]
    found.incomplete |= pfound.incomplete
    found.merged += pfound.merged
    found.files += pfound.files
    # 'expect' pins the numbers of the file that wrote it; a child is another network.
    pdata.pop("expect", None)
    mark_inherited(pdata, data, f"extends {pdata.get('name', parent_ref)}")
    return deep_merge(pdata, data), smap.merged_under(pmap), found


def mark_inherited(parent: dict, child_keys: Iterable[str], how: str) -> None:
    """A variant that keeps its parent's description or source must not read as if it
    were the parent: say it is inherited, and from what (unless the child sets it)."""
    for key in ("description", "source"):
        text = parent.get(key)
        if key not in child_keys and isinstance(text, str) and text \
                and not text.startswith("(inherited;"):
            parent[key] = f"(inherited; {how}) {text}"


# Two spellings of one thing: a mapping that says one replaces the other one inherited
# (input.size, the N-d spelling, and input.height/width, the 2D one).
SPELLINGS = (frozenset({"size"}), frozenset({"height", "width"}))


def other_spelling(keys: Iterable[str]) -> frozenset:
    """The keys a mapping that sets ``keys`` replaces: height/width for size, and back."""
    said = set(keys)
    for mine, theirs in (SPELLINGS, SPELLINGS[::-1]):
        if said & mine and not said & theirs:
            return theirs
    return frozenset()


def deep_merge(parent: dict, child: dict) -> dict:
    """Child keys win; mappings merge key by key; lists and scalars are replaced whole.
    A child that writes one spelling of the input size drops the parent's other one."""
    out = {k: v for k, v in parent.items() if k not in other_spelling(child)}
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out
