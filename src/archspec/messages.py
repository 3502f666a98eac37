"""Pydantic's validation errors in the user's terms: which key, what was expected, what
was found, and for a misspelled key, what was probably meant.
"""

from __future__ import annotations

import difflib
import typing
from typing import Any

from pydantic import BaseModel

from .errors import Problem, parse_key_path
from .schema import NAME_RULE, DenseNetSpec
from .yamlio import SourceMap

__all__ = ["describe", "translate_all", "clean_loc", "suggest_field", "model_at"]


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


def model_at(loc: tuple, root: type[BaseModel] | None = None) -> type[BaseModel] | None:
    """The pydantic model that owns keys at ``loc`` (for 'did you mean' suggestions) in a
    spec of the family member ``root`` (default: a DenseNet)."""
    model: Any = root or DenseNetSpec
    for part in loc:
        if isinstance(part, int) and typing.get_origin(model) is list:
            model = typing.get_args(model)[0]  # an item of a list of mappings (stages[1])
            continue
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


def clean_loc(loc: tuple, data: Any) -> tuple[tuple, bool]:
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


def translate_all(errors: list[dict], smap: SourceMap, data: Any,
                  root: type[BaseModel] | None = None) -> list[Problem]:
    """Translate every error into the user's terms.

    - A missing key that a misspelled one stands for is said once (as the misspelling).
    - For a field that takes "a number or a list" the branch that fits what was written
      speaks: errors inside the list win over "expected an integer, found a list"; when
      no branch fits, one message names all of them ("expected an integer or a list").
    """
    cleaned = []
    for err in errors:
        loc, tagged = clean_loc(tuple(err["loc"]), data)
        cleaned.append({**err, "loc": loc, "_branch": tagged})
    stands_for = set()  # (parent path, field name) a misspelled key was probably meant as
    for err in cleaned:
        if err["type"] == "extra_forbidden":
            meant = suggest_field(err["loc"], root)
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
        problems.append(_translate(err, smap, root))
    for loc, errs in merged.items():
        kinds = " or ".join(dict.fromkeys(_EXPECTED[e["type"]] for e in errs))
        problems.append(smap.problem(loc, f"expected {kinds}, found {describe(errs[0]['input'])}"))
    return problems


def _key_path_or_none(text: str) -> tuple | None:
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


def suggest_field(loc: tuple, root: type[BaseModel] | None = None) -> str | None:
    model = model_at(loc[:-1], root)
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields) if model else [],
                                      n=1, cutoff=0.6)
    return close[0] if close else None


def _translate(err: dict, smap: SourceMap, root: type[BaseModel] | None = None) -> Problem:
    loc = tuple(err["loc"])
    kind, ctx, found = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "extra_forbidden" and "." in str(loc[-1]):
        # `stem.type: deep`, as --set spells it: YAML reads the dots as part of one key
        nested = _nested_text(_key_path_or_none(str(loc[-1])), found)
        if nested:
            return smap.problem(loc, f"unknown key '{loc[-1]}'; in YAML, keys nest "
                                     f"instead of taking dots: write {nested}", at_key=True)
    if kind == "extra_forbidden":
        model = model_at(loc[:-1], root)
        options = list(model.model_fields) if model else []
        meant = suggest_field(loc, root)
        hint = f"; did you mean '{meant}'?" if meant else \
            (f"; allowed keys: {', '.join(options)}" if options else "")
        return smap.problem(loc, f"unknown key '{loc[-1]}'{hint}", at_key=True)
    if kind == "missing":
        return smap.problem(loc[:-1], f"required key '{loc[-1]}' is missing")
    if kind in _EXPECTED:
        hint = ""
        model = model_at(loc, root)
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
    if kind == "value_error":  # the schema's own rules say what is wrong in full
        return smap.problem(loc, str(ctx.get("error", err["msg"])))
    return smap.problem(loc, f"{err['msg']}, found {describe(found)}")
