"""Located YAML: plain Python data plus a map from every key path to where it was written.

Only YAML's core types come through (mappings with string keys, sequences, strings, ints,
floats, bools, null); any other tag (``!!python/object``, ``!!binary``, custom ``!tags``),
duplicate keys and merge keys are refused. Inputs are bounded before they can hurt: size,
nesting depth and the number of nodes after alias expansion (so a "billion laughs" file is
refused in milliseconds instead of filling memory).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import yaml

from .errors import Problem, SpecError, format_path

__all__ = ["Mark", "SourceMap", "parse_yaml", "decode_bytes",
           "MAX_BYTES", "MAX_DEPTH", "MAX_NODES"]

MAX_BYTES = 1 << 20          # 1 MiB: a spec is a page of text; anything larger is a mistake.
MAX_DEPTH = 32               # specs nest three levels deep; 32 leaves room and stops recursion.
MAX_NODES = 100_000          # after alias expansion; billion-laughs files exceed it at once.
COMMAND_LINE = "<command line>"  # the "file" of values given by --set / overrides=

# C parser when available: same safety (it is only used to compose nodes), 5-10x faster.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = {f"{_TAG}{t}" for t in ("null", "bool", "int", "float", "str", "timestamp")}

Path = tuple  # a key path: ("block_config", 2)


@dataclass(frozen=True)
class Mark:
    """Where something was written: file name, 1-based line and column."""

    file: str
    line: int
    column: int


@dataclass
class SourceMap:
    """Key path -> where its key and its value were written.

    ``locate`` walks up the path when an exact entry is missing, so a problem with a key
    that is absent (a required field, a default) still points at its enclosing mapping.
    """

    file: str
    keys: dict[Path, Mark] = field(default_factory=dict)
    values: dict[Path, Mark] = field(default_factory=dict)

    def locate(self, path: Path, *, at_key: bool = False) -> Mark:
        """The mark for ``path``: its key (``at_key``) or its value, else the nearest parent."""
        path = tuple(path)
        while True:
            table = self.keys if at_key else self.values
            if path in table:
                return table[path]
            if path in self.values:
                return self.values[path]
            if not path:
                return Mark(self.file, 1, 1)
            path = path[:-1]

    def problem(self, path: Path, message: str, *, at_key: bool = False) -> Problem:
        """A Problem located at ``path`` with a user-facing rendering of the path."""
        mark = self.locate(path, at_key=at_key)
        return Problem(message, mark.file, mark.line, mark.column, format_path(path))

    def error(self, path: Path, message: str, *, at_key: bool = False) -> SpecError:
        """A SpecError with one problem located at ``path``."""
        return SpecError(self.problem(path, message, at_key=at_key))

    def merged_under(self, parent: "SourceMap") -> "SourceMap":
        """Locations of a child spec laid over its parent's (child wins where both have one)."""
        out = SourceMap(self.file, dict(parent.keys), dict(parent.values))
        out.keys.update(self.keys)
        out.values.update(self.values)
        return out


def _mark(file: str, m: Any) -> Mark:
    return Mark(file, m.line + 1, m.column + 1)


def decode_bytes(raw: bytes, file: str) -> str:
    """UTF-8 (a BOM is allowed); anything else is a SpecError at the first bad byte."""
    if len(raw) > MAX_BYTES:
        raise SpecError.at(f"file is {len(raw):,} bytes; specs are limited to {MAX_BYTES:,} bytes",
                           file, 1, 1)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        before = raw[: e.start]
        line = before.count(b"\n") + 1
        column = e.start - (before.rfind(b"\n") + 1) + 1
        raise SpecError.at(
            f"not UTF-8 text: byte 0x{raw[e.start]:02x} at offset {e.start} "
            "(is this a binary file?)", file, line, column) from None


def _yaml_error(e: yaml.YAMLError, file: str, text: str) -> SpecError:
    if isinstance(e, yaml.reader.ReaderError):  # a character YAML forbids: locate it
        before = text[: e.position]
        line = before.count("\n") + 1
        column = e.position - (before.rfind("\n") + 1) + 1
        code = e.character if isinstance(e.character, int) else ord(e.character)
        return SpecError.at(f"character U+{code:04X} is not allowed in YAML "
                            "(a control character?)", file, line, column)
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    context = getattr(e, "context", None)
    message = f"YAML syntax error: {problem}" + (f" ({context})" if context else "")
    if mark is None:
        return SpecError.at(message, file, 1, 1)
    return SpecError.at(message, file, mark.line + 1, mark.column + 1)


def _check_depth(text: str, file: str) -> None:
    """Refuse deep nesting from the event stream, before the recursive composer runs."""
    depth = 0
    events: Iterator[Any] = yaml.parse(text, Loader=_Loader)
    for ev in events:
        if isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                m = ev.start_mark
                raise SpecError.at(f"nesting deeper than {MAX_DEPTH} levels", file,
                                   m.line + 1, m.column + 1)
        elif isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


class _Converter:
    """Turns a composed node graph into plain data, recording marks and enforcing limits."""

    def __init__(self, file: str):
        self.file = file
        self.smap = SourceMap(file)
        self.nodes = 0
        self.problems: list[Problem] = []
        self._scalars = yaml.constructor.SafeConstructor()

    def convert(self, node: yaml.Node, path: Path, depth: int) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise SpecError.at(
                f"more than {MAX_NODES:,} YAML nodes after expanding aliases "
                "(an alias bomb?)", self.file, node.start_mark.line + 1,
                node.start_mark.column + 1)
        if depth > MAX_DEPTH:  # reachable through recursive aliases only
            raise SpecError.at(f"nesting deeper than {MAX_DEPTH} levels (recursive alias?)",
                               self.file, node.start_mark.line + 1, node.start_mark.column + 1)
        self.smap.values.setdefault(path, _mark(self.file, node.start_mark))
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path, depth)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != f"{_TAG}seq":
                return self._bad_tag(node, path)
            return [self.convert(v, path + (i,), depth + 1) for i, v in enumerate(node.value)]
        return self._scalar(node, path)

    def _bad_tag(self, node: yaml.Node, path: Path) -> None:
        tag = node.tag.replace(_TAG, "!!")
        self.problems.append(self.smap.problem(
            path, f"YAML tag {tag} is not allowed; specs use plain mappings, lists, "
                  "strings, numbers, booleans and null"))
        return None

    def _mapping(self, node: yaml.MappingNode, path: Path, depth: int) -> Any:
        if node.tag != f"{_TAG}map":
            return self._bad_tag(node, path)
        out: dict[str, Any] = {}
        for knode, vnode in node.value:
            kmark = _mark(self.file, knode.start_mark)
            if knode.tag == f"{_TAG}merge":
                self.problems.append(Problem(
                    "YAML merge keys (<<) are not supported; use 'extends:' to build on "
                    "another spec", self.file, kmark.line, kmark.column, _path_str(path)))
                continue
            if not isinstance(knode, yaml.ScalarNode) or knode.tag != f"{_TAG}str":
                self.problems.append(Problem(
                    f"keys must be plain strings, found {_node_kind(knode)}",
                    self.file, kmark.line, kmark.column, _path_str(path)))
                continue
            key = knode.value
            kpath = path + (key,)
            if key in out:
                first = self.smap.keys[kpath]
                self.problems.append(Problem(
                    f"duplicate key '{key}' (first defined at line {first.line})",
                    self.file, kmark.line, kmark.column, _path_str(kpath)))
                continue
            self.smap.keys[kpath] = kmark
            out[key] = self.convert(vnode, kpath, depth + 1)
        return out

    def _scalar(self, node: yaml.ScalarNode, path: Path) -> Any:
        tag = node.tag
        if tag not in _SCALAR_TAGS:
            return self._bad_tag(node, path)
        try:
            if tag.endswith(":null"):
                return None
            if tag.endswith(":bool"):
                return self._scalars.construct_yaml_bool(node)
            if tag.endswith(":int"):
                return self._scalars.construct_yaml_int(node)
            if tag.endswith(":float"):
                return self._scalars.construct_yaml_float(node)
        except ValueError as e:  # e.g. an int with more digits than Python will parse
            self.problems.append(self.smap.problem(path, f"cannot read number: {e}"))
            return None
        # str, and timestamps kept as the text the user wrote: no spec field is a date.
        return str(node.value)


def _path_str(path: Path) -> str:
    return format_path(path)


def _node_kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return f"{node.tag.replace(_TAG, '')} {node.value!r}"


def parse_yaml(text: str | bytes, file: str = "<string>") -> tuple[Any, SourceMap]:
    """Parse one YAML document into plain data and its SourceMap.

    Raises SpecError for empty input, syntax errors, refused tags, duplicate keys and
    inputs beyond the size, depth and node limits.
    """
    if isinstance(text, bytes):
        text = decode_bytes(text, file)
    elif len(text) > MAX_BYTES:
        raise SpecError.at(f"text is {len(text):,} characters; specs are limited to "
                           f"{MAX_BYTES:,}", file, 1, 1)
    if not text.strip():
        raise SpecError.at("file is empty; a spec needs at least 'name', 'growth_rate' and "
                           "'block_config' (or 'depth')", file, 1, 1)
    try:
        _check_depth(text, file)
        node = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as e:
        raise _yaml_error(e, file, text) from None
    except RecursionError:  # belt and braces: _check_depth should have caught it
        raise SpecError.at(f"nesting deeper than {MAX_DEPTH} levels", file, 1, 1) from None
    if node is None:
        raise SpecError.at("file holds no YAML document (only comments?)", file, 1, 1)
    conv = _Converter(file)
    data = conv.convert(node, (), 0)
    if conv.problems:
        raise SpecError(conv.problems)
    return data, conv.smap
