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

__all__ = ["Mark", "SourceMap", "Refusals", "parse_yaml", "read_yaml", "decode_bytes",
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
    tab = _tab_in_indentation(text, mark.line) if mark is not None else None
    if tab is not None:  # libyaml and PyYAML word this differently, and neither says why
        return SpecError.at("YAML syntax error: a tab in the indentation; YAML forbids "
                            "tabs there, indent with spaces", file, mark.line + 1, tab + 1)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    context = getattr(e, "context", None)
    message = f"YAML syntax error: {problem}" + (f" ({context})" if context else "")
    if mark is None:
        return SpecError.at(message, file, 1, 1)
    return SpecError.at(message, file, mark.line + 1, mark.column + 1)


def _tab_in_indentation(text: str, line: int) -> int | None:
    """The 0-based column of a tab in the leading whitespace of ``line``, if any."""
    lines = text.split("\n")
    if not 0 <= line < len(lines):
        return None
    row = lines[line]
    indent = row[: len(row) - len(row.lstrip(" \t"))]
    return indent.index("\t") if "\t" in indent else None


def _check_depth(text: str, file: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH, the same way whichever PyYAML is installed.

    The rule is archspec's: it counts collection start events and stops at the first
    one past MAX_DEPTH. The C parser is tried first (5-10x faster), but libyaml 0.2.5+
    (bundled from PyYAML 6.0.4) refuses 1000 levels itself, and its scanner reads a run
    of flow brackets ahead of the parser, so its own error can come before event 33.
    When the C parser fails, the pure-Python parser (no nesting limit, and tokens read
    lazily) replays the stream so that archspec's rule, message and location still win;
    a syntax error that is not about depth is then reported as the C parser saw it.
    """
    try:
        _first_too_deep(text, file, _Loader)
    except yaml.YAMLError:
        if _Loader is yaml.SafeLoader:
            raise
        try:
            _first_too_deep(text, file, yaml.SafeLoader)
        except (yaml.YAMLError, RecursionError):
            pass
        raise


def _first_too_deep(text: str, file: str, loader: type) -> None:
    """Raise a SpecError at the first collection that starts past MAX_DEPTH."""
    depth = 0
    events: Iterator[Any] = yaml.parse(text, Loader=loader)
    for ev in events:
        if isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                m = ev.start_mark
                raise SpecError.at(f"nesting deeper than {MAX_DEPTH} levels", file,
                                   m.line + 1, m.column + 1)
        elif isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def _check_size(root: yaml.Node, file: str) -> None:
    """Refuse more than MAX_NODES nodes after alias expansion in time linear in the nodes
    written: each node's expanded size is counted once (aliases share nodes), and the node
    where _Converter's count would pass the limit is found by skipping whole subtrees that
    fit. Same message and place as the converter's own check, without the expansion."""
    sizes: dict[int, int] = {}
    busy: set[int] = set()

    def children(node: yaml.Node) -> list[yaml.Node]:
        # the values _Converter.convert visits, in its order (refused keys have none)
        if isinstance(node, yaml.SequenceNode):
            return list(node.value) if node.tag == f"{_TAG}seq" else []
        if not isinstance(node, yaml.MappingNode) or node.tag != f"{_TAG}map":
            return []
        out, seen = [], set()
        for knode, vnode in node.value:
            if (knode.tag == f"{_TAG}merge" or not isinstance(knode, yaml.ScalarNode)
                    or knode.tag != f"{_TAG}str" or knode.value in seen):
                continue
            seen.add(knode.value)
            out.append(vnode)
        return out

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key not in sizes:
            if key in busy:  # a recursive alias: the converter's depth check reports it
                return 1
            busy.add(key)
            total = 1
            for child in children(node):
                total += size(child)
                if total > MAX_NODES:
                    break
            busy.discard(key)
            sizes[key] = total
        return sizes[key]

    if size(root) <= MAX_NODES:
        return
    count, node = 0, root
    while True:  # descend to the node where the pre-order count passes the limit
        count += 1
        if count > MAX_NODES:
            m = node.start_mark
            raise SpecError.at(f"more than {MAX_NODES:,} YAML nodes after expanding aliases "
                               "(an alias bomb?)", file, m.line + 1, m.column + 1)
        for child in children(node):
            if count + size(child) <= MAX_NODES:
                count += size(child)
            else:
                node = child
                break
        else:  # every child fits (only a recursive alias makes sizes disagree): go on
            return


#: A value refused (a foreign tag, an unreadable number): its key is left out of the data.
_REFUSED = object()


class _Converter:
    """Turns a composed node graph into plain data, recording marks and enforcing limits.

    Refusals that leave the rest of the document readable (duplicate, merge and non-string
    keys, foreign tags, unreadable numbers) are collected in ``problems`` with the key paths
    they concern in ``refused``; the data comes back without them.
    """

    def __init__(self, file: str):
        self.file = file
        self.smap = SourceMap(file)
        self.nodes = 0
        self.problems: list[Problem] = []
        self.refused: list[Path] = []
        self.merged: list[Path] = []
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
            items = [self.convert(v, path + (i,), depth + 1) for i, v in enumerate(node.value)]
            return [None if v is _REFUSED else v for v in items]
        return self._scalar(node, path)

    def _bad_tag(self, node: yaml.Node, path: Path) -> None:
        tag = node.tag.replace(_TAG, "!!")
        self.problems.append(self.smap.problem(
            path, f"YAML tag {tag} is not allowed; specs use plain mappings, lists, "
                  "strings, numbers, booleans and null"))
        self.refused.append(path)
        return _REFUSED

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
                self.merged.append(path)  # its keys are unknown: none is "missing" here
                continue
            if not isinstance(knode, yaml.ScalarNode) or knode.tag != f"{_TAG}str":
                self.problems.append(Problem(
                    f"keys must be plain strings, found {_node_kind(knode)}",
                    self.file, kmark.line, kmark.column, _path_str(path)))
                continue
            key = knode.value
            kpath = path + (key,)
            if key in out or kpath in self.refused:
                first = self.smap.keys[kpath]
                self.problems.append(Problem(
                    f"duplicate key '{key}' (first defined at line {first.line})",
                    self.file, kmark.line, kmark.column, _path_str(kpath)))
                self.refused.append(kpath)  # which one was meant is the user's call
                continue
            self.smap.keys[kpath] = kmark
            value = self.convert(vnode, kpath, depth + 1)
            if value is not _REFUSED:
                out[key] = value
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
            self.refused.append(path)
            return _REFUSED
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
    data, smap, found = read_yaml(text, file)
    if found.problems:
        raise SpecError(found.problems)
    return data, smap


@dataclass(frozen=True)
class Refusals:
    """What reading refused while the rest of the document stayed readable: the problems,
    and the key paths they concern (left out of the data)."""

    problems: tuple[Problem, ...] = ()
    paths: tuple[Path, ...] = ()
    #: mappings that held a merge key: the keys it would have given are unknown
    merged: tuple[Path, ...] = ()


def read_yaml(text: str | bytes, file: str = "<string>"
              ) -> tuple[Any, SourceMap, Refusals]:
    """As parse_yaml, but refused keys and values (duplicate keys, foreign tags, ...) come
    back as Refusals beside the data without them, so a caller can report them together
    with the problems the rest of the document has. SpecError for the rest (syntax,
    encoding, size, depth and node limits), where nothing can be read."""
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
    _check_size(node, file)
    conv = _Converter(file)
    data = conv.convert(node, (), 0)
    if data is _REFUSED:
        raise SpecError(conv.problems)
    return data, conv.smap, Refusals(tuple(conv.problems), tuple(conv.refused),
                                     tuple(conv.merged))
