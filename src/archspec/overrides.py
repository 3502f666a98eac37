"""Overrides (``--set`` and ``overrides=``): key paths, values read as YAML, and the name
a variant gets (``densenet121+growth_rate=48``).
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Mapping

from .errors import Problem, SpecError, format_path, parse_key_path
from .messages import model_at
from .schema import MAX_NAME_LENGTH, NAME_CHARS, NAME_PATTERN
from .sources import deep_merge, mark_inherited, other_spelling
from .yamlio import COMMAND_LINE, Mark, SourceMap, parse_yaml

__all__ = ["read_override_value", "apply_overrides", "variant", "top_key", "safe_name",
           "key_path_error"]


def read_override_value(value: Any) -> Any:
    """An override's value as the spec will hold it: text is read as YAML (``--set``
    gives text), anything else is taken as it is. SpecError for unreadable YAML."""
    if not isinstance(value, str):
        return value
    return parse_yaml(value, COMMAND_LINE)[0] if value.strip() else ""


def apply_overrides(data: dict, smap: SourceMap, overrides: Mapping[str, Any]
                     ) -> tuple[dict, SourceMap, dict[str, Any]]:
    """Set each dotted key path; locations point at the command line (column = ordinal).
    Returns the new data and locations, and the overrides with their values read."""
    data = deep_merge({}, data)  # copy mappings we may touch
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
                if isinstance(node, dict):  # input.size replaces input.height/width
                    for other in other_spelling([part]):
                        node.pop(other, None)
                        for table in (smap.keys, smap.values):
                            for p in [p for p in table if p[:i + 1] == (*tuple(path[:i]), other)]:
                                del table[p]
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


def variant(data: dict, smap: SourceMap, overrides: Mapping[str, Any]) -> dict:
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
            mark_inherited(out, touched, f"{base} with overrides")
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


def key_path_error(text: str, root: type | None = None) -> str | None:
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
        model = model_at(tuple(path[:i]), root)
        if model is None:
            return f"{format_path(path[:i])} has no keys"
        if part not in model.model_fields:
            close = difflib.get_close_matches(part, list(model.model_fields), n=1, cutoff=0.6)
            hint = f"; did you mean '{format_path((*path[:i], close[0]))}'?" if close else ""
            return f"unknown key '{format_path(path[:i + 1])}'{hint}"
    return None
