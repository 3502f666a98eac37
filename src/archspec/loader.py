"""Name or path -> DenseNetSpec: zoo lookup, file reading, extends, overrides, validation.

Every failure is a SpecError located in the user's file. Pydantic's messages are
translated into the user's terms: which key, what was expected, what was found, and for
a misspelled key, what was probably meant.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from pydantic import BaseModel, ValidationError

from . import zoo
from .errors import Problem, SpecError, format_path
from .provenance import embedded_spec, is_artefact
from .schema import MAX_NAME_LENGTH, NAME_CHARS, NAME_PATTERN, NAME_RULE, DenseNetSpec
from .yamlio import (COMMAND_LINE, MAX_BYTES, Mark, SourceMap, decode_bytes, parse_yaml,
                     read_yaml)

__all__ = ["load", "loads", "resolve", "ResolvedSource", "read_spec_source", "describe",
           "parse_key_path", "key_path_error", "read_override_value", "top_key", "safe_name"]

_MAX_EXTENDS = 16


def load(name_or_path: str | os.PathLike, *, overrides: Mapping[str, Any] | None = None
         ) -> DenseNetSpec:
    """Load a spec by zoo name (``densenet121``) or from a YAML file.

    ``overrides`` maps dotted key paths to values (``{"growth_rate": 24,
    "block_config[2]": 12}``); string values are read as YAML, as ``--set`` does.
    Raises SpecError for anything wrong with the spec, located in its file.
    """
    text, file, base = read_spec_source(name_or_path)
    return resolve_text(text, file, base).spec(overrides)


def loads(yaml_text: str | bytes, source: str = "<string>", *,
          overrides: Mapping[str, Any] | None = None) -> DenseNetSpec:
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
    found: "_Found"

    def spec(self, overrides: Mapping[str, Any] | None = None) -> DenseNetSpec:
        """The spec with ``overrides`` applied (as ``load``'s), validated."""
        return _validate(self.data, self.smap, overrides, self.found)


def resolve(name_or_path: str | os.PathLike) -> ResolvedSource:
    """Read a zoo name or file and resolve its ``extends``; SpecError as ``load``."""
    return resolve_text(*read_spec_source(name_or_path))


def resolve_text(text: str | bytes, file: str, base: Path) -> ResolvedSource:
    """As ``resolve``, for text read already (``file`` names it, ``base`` is the folder
    its relative ``extends`` start from)."""
    return ResolvedSource(*_resolve(text, file, base, chain=()))


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
class _Found:
    """Problems found while reading that leave the rest of the spec checkable: refused
    YAML keys (``refused`` holds their key paths), and a parent that could not be read
    (``incomplete``: the keys it would have given are missing, so no 'required' problem
    and no arithmetic is reported)."""

    problems: list[Problem]
    refused: list[tuple]
    incomplete: bool = False
    merged: list[tuple] = field(default_factory=list)  # mappings whose merge key was refused


def _resolve(text: str | bytes, file: str, base: Path, chain: tuple[str, ...]
             ) -> tuple[dict, SourceMap, _Found]:
    """Parse one file and lay it over the spec it ``extends``, recursively."""
    data, smap, refusals = read_yaml(text, file)
    found = _Found(list(refusals.problems), list(refusals.paths), merged=list(refusals.merged))
    if not isinstance(data, dict):
        raise SpecError([*found.problems, Problem(
            f"a spec is a mapping of keys to values, found {describe(data)} at the top "
            "level", file, 1, 1, "")])
    if "extends" not in data:
        return data, smap, found
    parent_ref = data.pop("extends")

    def cannot(message: str) -> tuple[dict, SourceMap, _Found]:
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
    pdata, pmap, pfound = _resolve(ptext, pfile, pbase, chain + (here,))
    found.problems[:0] = pfound.problems  # the parent's first: they come first in the chain
    found.refused += [p for p in pfound.refused if p[:1] and p[0] not in data]
    found.incomplete |= pfound.incomplete
    found.merged += pfound.merged
    # 'expect' pins the numbers of the file that wrote it; a child is another network.
    pdata.pop("expect", None)
    _mark_inherited(pdata, data, f"extends {pdata.get('name', parent_ref)}")
    return _deep_merge(pdata, data), smap.merged_under(pmap), found


def _mark_inherited(parent: dict, child_keys: Iterable[str], how: str) -> None:
    """A variant that keeps its parent's description or source must not read as if it
    were the parent: say it is inherited, and from what (unless the child sets it)."""
    for key in ("description", "source"):
        text = parent.get(key)
        if key not in child_keys and isinstance(text, str) and text \
                and not text.startswith("(inherited;"):
            parent[key] = f"(inherited; {how}) {text}"


def _deep_merge(parent: dict, child: dict) -> dict:
    """Child keys win; mappings merge key by key; lists and scalars are replaced whole."""
    out = dict(parent)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_key_path(text: str) -> tuple:
    """``stem.channels`` -> ("stem", "channels"); ``block_config[2]`` -> ("block_config", 2)."""
    parts: list = []
    for piece in text.split("."):
        name, _, rest = piece.partition("[")
        if not name:
            raise ValueError(f"empty key in {text!r}")
        parts.append(name)
        while rest:
            idx, _, rest = rest.partition("]")
            if not idx.isdigit():
                raise ValueError(f"bad index [{idx}] in {text!r}")
            parts.append(int(idx))
            rest = rest[1:] if rest.startswith("[") else rest
            if rest:
                raise ValueError(f"unexpected {rest!r} in {text!r}")
    return tuple(parts)


def read_override_value(value: Any) -> Any:
    """An override's value as the spec will hold it: text is read as YAML (``--set``
    gives text), anything else is taken as it is. SpecError for unreadable YAML."""
    if not isinstance(value, str):
        return value
    return parse_yaml(value, COMMAND_LINE)[0] if value.strip() else ""


def _apply_overrides(data: dict, smap: SourceMap, overrides: Mapping[str, Any]
                     ) -> tuple[dict, SourceMap, dict[str, Any]]:
    """Set each dotted key path; locations point at the command line (column = ordinal).
    Returns the new data and locations, and the overrides with their values read."""
    data = _deep_merge({}, data)  # copy mappings we may touch
    smap = SourceMap(smap.file, dict(smap.keys), dict(smap.values))
    read: dict[str, Any] = {}
    for ordinal, (key, value) in enumerate(overrides.items(), start=1):
        def bad(message: str) -> SpecError:
            return SpecError(Problem(message, COMMAND_LINE, 1, ordinal, key))

        try:
            path = parse_key_path(key)
        except ValueError as e:
            raise bad(f"bad override key: {e}") from None
        try:
            value = read[key] = read_override_value(value)
        except SpecError as e:
            raise bad(f"bad override value: {e.message}") from None
        node: Any = data
        for i, part in enumerate(path):
            last = i == len(path) - 1
            if isinstance(part, int):
                if not isinstance(node, list) or part >= len(node):
                    raise bad(f"no item [{part}] to override")
            elif not isinstance(node, dict):
                raise bad(f"{format_path(path[:i]) or 'the spec'} is not a mapping")
            if last:
                node[part] = value
            else:
                child = node[part] if (isinstance(part, int) or part in node) else None
                if not isinstance(child, (dict, list)):
                    child = [] if isinstance(path[i + 1], int) else {}
                # copy before changing: the parsed data may be shared with a parent spec
                node[part] = dict(child) if isinstance(child, dict) else list(child)
                node = node[part]
        # Everything at or below the overridden path now comes from the command line.
        mark = Mark(COMMAND_LINE, 1, ordinal)
        for table in (smap.keys, smap.values):
            for p in [p for p in table if p[:len(path)] == path]:
                del table[p]
            table[path] = mark
    return data, smap, read


def _variant(data: dict, smap: SourceMap, overrides: Mapping[str, Any]) -> dict:
    """Overrides (their values read) make a new network, as ``extends:`` does: the base's
    ``expect`` pins no longer apply (unless the overrides give ``expect`` themselves), the
    name says what changed (``densenet121+growth_rate=48``), and inherited prose is
    marked as such."""
    touched = {top_key(k) for k in overrides}
    out = dict(data)
    if "expect" not in touched:
        out.pop("expect", None)
        for table in (smap.keys, smap.values):
            for p in [p for p in table if p[:1] == ("expect",)]:
                del table[p]
    base = out.get("name")
    if "name" not in touched and isinstance(base, str):
        changes = "+".join(_change_text(k, v) for k, v in overrides.items()
                           if top_key(k) != "expect")
        if changes:
            out["name"] = _variant_name(base, changes)
            _mark_inherited(out, touched, f"{base} with overrides")
    return out


def top_key(key_path: str) -> str:
    """The top-level key of a key path as written: ``stem`` of ``stem.channels``,
    ``block_config`` of ``block_config[2]``."""
    return str(key_path).strip().split(".", 1)[0].split("[", 1)[0]


# What a spec name may not hold (schema.NAME_CHARS); a derived name has '_' there instead.
_NOT_NAME_CHAR = re.compile(f"[^{NAME_CHARS}]")


def safe_name(text: str) -> str:
    """``text`` made a valid spec name: characters a name may not hold become '_', and
    a name starts with a letter, digit or underscore."""
    name = _NOT_NAME_CHAR.sub("_", text)
    return name if re.match(NAME_PATTERN, name) else f"_{name}"


def _change_text(key: str, value: Any) -> str:
    """``growth_rate=48``, ``block_config=[6,12,32,32]``, ``norm.type=group+norm.groups=4``."""
    if isinstance(value, dict) and value:
        return "+".join(_change_text(f"{key}.{k}", v) for k, v in value.items())

    def text(v: Any) -> str:
        if isinstance(v, bool):
            return str(v).lower()
        if v is None:
            return "null"
        if isinstance(v, list):
            return "[" + ",".join(text(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ",".join(f"{k}={text(x)}" for k, x in v.items()) + "}"
        return str(v)
    return _NOT_NAME_CHAR.sub("_", f"{key.strip()}={text(value)}")


def _variant_name(base: str, changes: str) -> str:
    name = f"{base}+{changes}"
    if len(name) <= MAX_NAME_LENGTH:
        return name
    import hashlib  # a long list of changes: a short, stable stand-in for them

    digest = hashlib.sha256(changes.encode()).hexdigest()[:12]
    return f"{base[:MAX_NAME_LENGTH - len(digest) - 2]}+{digest}"


def _validate(data: dict, smap: SourceMap, overrides: Mapping[str, Any] | None,
              found: _Found | None = None) -> DenseNetSpec:
    """Validate against the schema. Every problem that can be found goes into one
    SpecError: what reading refused (``found``), then the schema's problems, with
    ``partial`` set for the planner's (archspec.pipeline)."""
    found = found or _Found([], [])
    if overrides:
        data, smap, read = _apply_overrides(data, smap, overrides)
        data = _variant(data, smap, read)
    refused = [tuple(p) for p in found.refused]
    try:
        spec = DenseNetSpec.model_validate(data)
    except ValidationError as e:
        # A key refused while reading, or a required key a missing parent would give, has
        # been reported already (or cannot be judged): its schema problems would repeat it.
        errors = [err for err in e.errors()
                  if not any(_clean_loc(tuple(err["loc"]), data)[0][:len(p)] == p
                             for p in refused)
                  and not (err["type"] == "missing" and (
                      found.incomplete or tuple(err["loc"])[:-1] in found.merged))]
        err = SpecError([*found.problems, *_translate_all(errors, smap, data)]
                        or found.problems)
        err.partial = None if found.incomplete else _partial_spec(data, smap, errors, refused)
        raise err from None
    spec._source = smap
    if found.problems:
        err = SpecError(found.problems)
        err.partial = None if found.incomplete else PartialSpec(spec, tuple(refused))
        raise err
    return spec


def _partial_spec(data: dict, smap: SourceMap, errors: list[dict],
                  refused: list[tuple] = ()) -> PartialSpec | None:
    """The spec with every key pydantic refused left out (defaults in their place), if
    that validates: the planner can then still find the problems only arithmetic shows,
    so one run reports them all. A misspelled key stands in for the key it was meant as
    (``growth_rat: 12`` plans as growth_rate 12). None when a refused key has no default."""
    dropped: list[tuple] = list(refused)
    trimmed = _deep_merge({}, data)
    smap = SourceMap(smap.file, dict(smap.keys), dict(smap.values))
    filled: set[tuple] = set()
    for err in errors:
        if err["type"] != "extra_forbidden":
            continue
        loc, _ = _clean_loc(tuple(err["loc"]), data)
        meant = _suggest_field(loc) if loc else None
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
        loc, _ = _clean_loc(tuple(err["loc"]), data)
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
        spec = DenseNetSpec.model_validate(trimmed)
    except ValidationError:
        return None
    spec._source = smap
    return PartialSpec(spec, tuple(dropped))


@dataclass(frozen=True)
class PartialSpec:
    """A spec with the keys in ``dropped`` (key paths) replaced by their defaults."""

    spec: DenseNetSpec
    dropped: tuple[tuple, ...]


# --- pydantic error -> user's terms ------------------------------------------------------

def describe(value: Any) -> str:
    """How a found value is named in messages: ``true (a boolean)``, ``'abc' (a string)``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, int):
        text = str(value) if abs(value) < 10**15 else f"an integer of {len(str(abs(value)))} digits"
        return text
    if isinstance(value, float):
        return {float("inf"): ".inf", float("-inf"): "-.inf"}.get(value, repr(value)) \
            if value == value else ".nan"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"{shown!r} (a string)"
    if isinstance(value, list):
        return "an empty list" if not value else f"a list of {len(value)} items"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def key_path_error(text: str) -> str | None:
    """Why ``text`` is not a key path a spec has (``stem.chanels``, ``block_config[x]``),
    with the closest valid key; None if it is one. Indices are not range-checked here:
    whether ``block_config[5]`` exists depends on the spec."""
    try:
        path = parse_key_path(text)
    except ValueError as e:
        return str(e)
    if path[0] == "extends":
        return "'extends' is resolved before overrides; vary the keys themselves"
    for i, part in enumerate(path):
        if isinstance(part, int):
            continue
        model = _model_at(tuple(p for p in path[:i] if not isinstance(p, int)))
        if model is None:
            return f"{format_path(path[:i])} has no keys"
        if part not in model.model_fields:
            close = difflib.get_close_matches(part, list(model.model_fields), n=1, cutoff=0.6)
            hint = f"; did you mean '{format_path((*path[:i], close[0]))}'?" if close else ""
            return f"unknown key '{format_path(path[:i + 1])}'{hint}"
    return None


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The pydantic model that owns keys at ``loc`` (for 'did you mean' suggestions)."""
    model: Any = DenseNetSpec
    for part in loc:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = model.model_fields.get(part)
        if field is None:
            return None
        model = field.annotation
        args = [a for a in typing.get_args(model) if a is not type(None)]
        if typing.get_origin(model) is typing.Union and len(args) == 1:
            model = args[0]
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


_EXPECTED = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number",
    "bool_type": "true or false", "bool_parsing": "true or false",
    "string_type": "a string", "list_type": "a list", "dict_type": "a mapping",
    "model_type": "a mapping", "model_attributes_type": "a mapping",
    "none_required": "null",
}
_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<",
           "less_than_equal": "<="}


def _clean_loc(loc: tuple, data: Any) -> tuple[tuple, bool]:
    """Pydantic's loc without union branch tags ('constrained-int', 'list[...]'), found by
    walking the data the user wrote; and whether a tag was dropped."""
    out: list = []
    node, dropped = data, False
    for part in loc:
        if isinstance(node, dict) and isinstance(part, str):
            out.append(part)
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            out.append(part)
            node = node[part]
        else:  # a union branch's name: not a place in the user's file
            dropped = True
    return tuple(out), dropped


def _translate_all(errors: list[dict], smap: SourceMap, data: Any) -> list[Problem]:
    """Translate every error into the user's terms.

    - A missing key that a misspelled one stands for is said once (as the misspelling).
    - For a field that takes "a number or a list" the branch that fits what was written
      speaks: errors inside the list win over "expected an integer, found a list"; when
      no branch fits, one message names all of them ("expected an integer or a list").
    """
    cleaned = []
    for err in errors:
        loc, tagged = _clean_loc(tuple(err["loc"]), data)
        cleaned.append({**err, "loc": loc, "_branch": tagged})
    stands_for = set()  # (parent path, field name) a misspelled key was probably meant as
    for err in cleaned:
        if err["type"] == "extra_forbidden":
            meant = _suggest_field(err["loc"])
            if meant:
                stands_for.add((err["loc"][:-1], meant))
    problems: list[Problem] = []
    merged: dict[tuple, list[dict]] = {}
    for err in cleaned:
        loc = err["loc"]
        if err["type"] == "missing" and (loc[:-1], loc[-1]) in stands_for:
            continue
        if err["_branch"] and err["type"] in _EXPECTED:
            deeper = any(o is not err and o["loc"][:len(loc)] == loc and
                         (len(o["loc"]) > len(loc) or o["type"] not in _EXPECTED)
                         for o in cleaned)
            if not deeper:
                merged.setdefault(loc, []).append(err)
            continue
        if err["_branch"] and err["type"] == "literal_error":
            # e.g. memory_efficient: true, false or max: name the other branches too
            err = {**err, "_also": [_EXPECTED[o["type"]] for o in cleaned if o["loc"] == loc
                                    and o["_branch"] and o["type"] in _EXPECTED]}
        problems.append(_translate(err, smap))
    for loc, errs in merged.items():
        kinds = " or ".join(dict.fromkeys(_EXPECTED[e["type"]] for e in errs))
        problems.append(smap.problem(loc, f"expected {kinds}, found {describe(errs[0]['input'])}"))
    return problems


def parse_key_path_or_none(text: str) -> tuple | None:
    """parse_key_path, or None where ``text`` is not a key path."""
    try:
        return parse_key_path(text)
    except ValueError:
        return None


def _nested_text(path: tuple | None, value: Any) -> str | None:
    """``stem: {type: deep}`` for the path ("stem", "type") and the value 'deep'."""
    if not path or any(isinstance(p, int) for p in path):
        return None
    import yaml

    try:
        text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    except yaml.YAMLError:
        return None
    text = text.removesuffix("\n...").strip()
    for key in reversed(path[1:]):
        text = f"{{{key}: {text}}}"
    return f"{path[0]}: {text}"


def _suggest_field(loc: tuple) -> str | None:
    model = _model_at(loc[:-1])
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields) if model else [],
                                      n=1, cutoff=0.6)
    return close[0] if close else None


def _translate(err: dict, smap: SourceMap) -> Problem:
    loc = tuple(err["loc"])
    kind, ctx, found = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "extra_forbidden" and "." in str(loc[-1]):
        # `stem.type: deep`, as --set spells it: YAML reads the dots as part of one key
        nested = _nested_text(parse_key_path_or_none(str(loc[-1])), found)
        if nested:
            return smap.problem(loc, f"unknown key '{loc[-1]}'; in YAML, keys nest "
                                     f"instead of taking dots: write {nested}", at_key=True)
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        options = list(model.model_fields) if model else []
        meant = _suggest_field(loc)
        hint = f"; did you mean '{meant}'?" if meant else \
            (f"; allowed keys: {', '.join(options)}" if options else "")
        return smap.problem(loc, f"unknown key '{loc[-1]}'{hint}", at_key=True)
    if kind == "missing":
        return smap.problem(loc[:-1], f"required key '{loc[-1]}' is missing")
    if kind in _EXPECTED:
        hint = ""
        model = _model_at(loc)
        if kind in ("model_type", "dict_type") and isinstance(found, str) and model \
                and "type" in model.model_fields:  # `stem: cifar` for `stem: {type: cifar}`
            hint = f"; write {loc[-1]}: {{type: {found}}}"
        return smap.problem(loc, f"expected {_EXPECTED[kind]}, found {describe(found)}{hint}")
    if kind in _BOUNDS:
        bound = next(iter(ctx.values()))
        return smap.problem(loc, f"must be {_BOUNDS[kind]} {bound}, found {describe(found)}")
    if kind == "string_pattern_mismatch" and loc == ("name",):
        return smap.problem(loc, f"a name holds {NAME_RULE}; found {describe(found)}")
    if kind == "finite_number":
        return smap.problem(loc, f"must be a finite number, found {describe(found)}")
    if kind in ("too_short", "too_long"):
        limit = ctx.get("min_length") if kind == "too_short" else ctx.get("max_length")
        unit = "character" if isinstance(found, str) else "item"
        word = "at least" if kind == "too_short" else "at most"
        size = len(found) if hasattr(found, "__len__") else "?"
        return smap.problem(loc, f"must have {word} {limit} {unit}(s), found {size}")
    if kind in ("enum", "literal_error"):
        expected = ctx.get("expected", "")
        options = [o.strip(" '") for o in expected.replace(" or ", ",").split(",") if o.strip()]
        folded = [o for o in options if o.lower() == str(found).lower()]  # ReLU -> relu
        close = folded or difflib.get_close_matches(str(found), options, n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        also = err.get("_also")
        expected = (f"{' or '.join(also)}, or {', '.join(options)}" if also
                    else f"one of {', '.join(options)}")
        return smap.problem(loc, f"expected {expected}; found {describe(found)}{hint}")
    return smap.problem(loc, f"{err['msg']}, found {describe(found)}")
