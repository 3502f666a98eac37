"""Name or path -> Spec: the spec's sources read (archspec.sources), overrides
applied (archspec.overrides), validated against the schema, every problem located in the
user's file and said in the user's terms (archspec.messages).

Every problem that can be found without the others is reported in one SpecError; its
``partial`` lets the planner add the arithmetic problems (archspec.pipeline).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from pydantic import ValidationError

from .errors import SpecError, parse_key_path
from .messages import clean_loc, describe, suggest_field, translate_all
from .overrides import (apply_overrides, key_path_error, read_override_value, safe_name,
                        top_key, variant)
from .schema import FAMILIES, DenseNetSpec, Spec
from .sources import Found, deep_merge, read_spec_source, resolve_source
from .yamlio import SourceMap

# The names other modules and users import from here (kept where they were).
__all__ = ["load", "loads", "resolve", "resolve_text", "ResolvedSource", "PartialSpec",
           "read_spec_source", "describe", "parse_key_path", "key_path_error",
           "read_override_value", "top_key", "safe_name"]


def load(name_or_path: str | os.PathLike, *, overrides: Mapping[str, Any] | None = None
         ) -> Spec:
    """Load a spec by zoo name (``densenet121``) or from a YAML file.

    ``overrides`` maps dotted key paths to values (``{"growth_rate": 24,
    "block_config[2]": 12}``); string values are read as YAML, as ``--set`` does.
    Raises SpecError for anything wrong with the spec, located in its file.
    """
    text, file, base = read_spec_source(name_or_path)
    return resolve_text(text, file, base).spec(overrides)


def loads(yaml_text: str | bytes, source: str = "<string>", *,
          overrides: Mapping[str, Any] | None = None) -> Spec:
    """Load a spec from YAML text; ``source`` names it in error messages.

    ``extends:`` paths are resolved relative to the current directory.
    """
    return resolve_text(yaml_text, source, Path.cwd()).spec(overrides)


@dataclass(frozen=True)
class ResolvedSource:
    """A spec read and its ``extends`` resolved, not yet validated: many variants of one
    base (``archspec.search``) validate from it without reading or parsing YAML again."""

    data: dict
    smap: SourceMap
    found: "Found"

    def spec(self, overrides: Mapping[str, Any] | None = None) -> Spec:
        """The spec with ``overrides`` applied (as ``load``'s), validated."""
        return _validate(self.data, self.smap, overrides, self.found)


def resolve(name_or_path: str | os.PathLike) -> ResolvedSource:
    """Read a zoo name or file and resolve its ``extends``; SpecError as ``load``."""
    return resolve_text(*read_spec_source(name_or_path))


def resolve_text(text: str | bytes, file: str, base: Path) -> ResolvedSource:
    """As ``resolve``, for text read already (``file`` names it, ``base`` is the folder
    its relative ``extends`` start from)."""
    return ResolvedSource(*resolve_source(text, file, base, chain=()))


def _validate(data: dict, smap: SourceMap, overrides: Mapping[str, Any] | None,
              found: Found | None = None) -> Spec:
    """Validate against the schema. Every problem that can be found goes into one
    SpecError: what reading refused (``found``), then the schema's problems, with
    ``partial`` set for the planner's (archspec.pipeline)."""
    found = found or Found([], [])
    if overrides:
        data, smap, read = apply_overrides(data, smap, overrides)
        data = variant(data, smap, read)
    refused = [tuple(p) for p in found.refused]
    model, data = _member(data, smap)
    try:
        spec = model.model_validate(data)
    except ValidationError as e:
        # A key refused while reading, or a required key a missing parent would give, has
        # been reported already (or cannot be judged): its schema problems would repeat it.
        errors = [err for err in e.errors()
                  if not any(clean_loc(tuple(err["loc"]), data)[0][:len(p)] == p
                             for p in refused)
                  and not (err["type"] == "missing" and (
                      found.incomplete or tuple(err["loc"])[:-1] in found.merged))]
        err = SpecError([*found.problems, *translate_all(errors, smap, data, model)]
                        or found.problems)
        err.partial = None if found.incomplete else _partial_spec(data, smap, errors, refused,
                                                                   model)
        raise err from None
    spec._source = smap
    spec._files = tuple(found.files)
    if found.problems:
        err = SpecError(found.problems)
        err.partial = None if found.incomplete else PartialSpec(spec, tuple(refused))
        raise err
    return spec


def _member(data: dict, smap: SourceMap) -> tuple[type, dict]:
    """The family member's schema that ``family`` names, and the data to validate with it.
    A spec without ``family`` (or with ``family: densenet``) is a DenseNet, validated
    without the key, so that its canonical form and hash are what they were before the
    family grew."""
    family = data.get("family", "densenet") if isinstance(data, dict) else "densenet"
    if not isinstance(family, str) or family not in FAMILIES:
        raise SpecError([smap.problem(("family",), (
            f"expected one of {', '.join(FAMILIES)}; found {describe(family)}"))])
    if family == "densenet":
        return DenseNetSpec, {k: v for k, v in data.items() if k != "family"}
    return FAMILIES[family], data


def _partial_spec(data: dict, smap: SourceMap, errors: list[dict],
                  refused: list[tuple] = (), model: type = DenseNetSpec
                  ) -> PartialSpec | None:
    """The spec with every key pydantic refused left out (defaults in their place), if
    that validates: the planner can then still find the problems only arithmetic shows,
    so one run reports them all. A misspelled key stands in for the key it was meant as
    (``growth_rat: 12`` plans as growth_rate 12). None when a refused key has no default."""
    dropped: list[tuple] = list(refused)
    trimmed = deep_merge({}, data)
    smap = SourceMap(smap.file, dict(smap.keys), dict(smap.values))
    filled: set[tuple] = set()
    for err in errors:
        if err["type"] != "extra_forbidden":
            continue
        loc, _ = clean_loc(tuple(err["loc"]), data)
        meant = suggest_field(loc, model) if loc else None
        parent: Any = trimmed
        for part in loc[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if meant and isinstance(parent, dict) and meant not in parent:
            parent[meant] = parent.pop(loc[-1])
            for table in (smap.keys, smap.values):
                if loc in table:
                    table[(*loc[:-1], meant)] = table[loc]
            dropped.append(loc)
            filled.add((*loc[:-1], meant))
    for err in errors:
        if err["type"] == "missing" and tuple(err["loc"]) in filled:
            continue
        loc, _ = clean_loc(tuple(err["loc"]), data)
        if not loc:
            return None
        dropped.append(loc)
        node: Any = trimmed
        for part in loc[:-1]:
            node = node[part] if isinstance(node, dict) and part in node else None
            if node is None:
                break
        if isinstance(node, dict):
            node.pop(loc[-1], None)
        elif isinstance(node, list):  # an item of a per-block list: drop the whole list
            parent: Any = trimmed
            for part in loc[:-2]:
                parent = parent.get(part) if isinstance(parent, dict) else None
            if isinstance(parent, dict):
                parent.pop(loc[-2], None)
                dropped.append(loc[:-1])
    trimmed.pop("expect", None)  # pins of a spec that is not the one written
    try:
        spec = model.model_validate(trimmed)
    except ValidationError:
        return None
    spec._source = smap
    return PartialSpec(spec, tuple(dropped))


@dataclass(frozen=True)
class PartialSpec:
    """A spec with the keys in ``dropped`` (key paths) replaced by their defaults."""

    spec: Spec
    dropped: tuple[tuple, ...]
