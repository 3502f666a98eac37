"""SpecError: the one exception a user's mistake in a spec turns into.

Every problem knows where it was written (file, 1-based line and column) and which key
it concerns (a path such as ``block_config[2]``), so the command line can print
``FILE:LINE:COL: key.path: message`` and editors can jump to it. Several problems found in
one pass travel together in one SpecError.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

__all__ = ["Problem", "SpecError", "format_path", "parse_key_path", "TORCH_MISSING", "torch_missing"]

#: What to do when a command that makes tensors runs where PyTorch is not installed: a spec
#: writer's install (``pip install archspec``) has the torch-free tools only.
TORCH_MISSING = ("needs PyTorch, which is not installed here (validate, summary, table, "
                 "schema, diff, list and search do not); install it with: "
                 "pip install \"archspec[torch]\"")
_TORCH_PACKAGES = {"torch", "torchvision", "torchinfo"}


def torch_missing(e: ImportError) -> bool:
    """Whether ``e`` says that torch, torchvision or torchinfo is not installed."""
    return (isinstance(e, ModuleNotFoundError)
            and (e.name or "").split(".")[0] in _TORCH_PACKAGES)


def format_path(path: Sequence[str | int]) -> str:
    """Render a key path the way a user reads it: ``stem.channels``, ``block_config[2]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def parse_key_path(text: str) -> tuple:
    """format_path's inverse: ``stem.channels`` -> ("stem", "channels"),
    ``block_config[2]`` -> ("block_config", 2). ValueError for anything else."""
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


@dataclass(frozen=True)
class Problem:
    """One mistake: where it was written and what is wrong with it."""

    message: str
    file: str = "<unknown>"
    line: int = 0
    column: int = 0
    path: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        key = f" {self.path}:" if self.path else ""
        return f"{where}:{key} {self.message}"


class SpecError(ValueError):
    """A spec that cannot be loaded, validated or planned.

    Attributes ``file``, ``line``, ``column`` (1-based; 0 when unknown), ``path`` (the key
    path) and ``message`` describe the first problem; ``problems`` holds all of them in the
    order they appear in the file. ``str(err)`` is one ``FILE:LINE:COL: key.path: message``
    line per problem.
    """

    #: Set by the loader when the schema refused some keys but the spec without them
    #: validates (archspec.loader.PartialSpec): lets the planner report its problems too.
    partial: object = None

    def __init__(self, problems: Problem | Iterable[Problem]):
        if isinstance(problems, Problem):
            problems = [problems]
        found = list(problems)
        if not found:
            raise ValueError("SpecError needs at least one problem")
        # Sort by position so the report reads top to bottom like the file; stable for ties.
        self.problems: tuple[Problem, ...] = tuple(
            sorted(found, key=lambda p: (p.file, p.line, p.column))
        )
        first = self.problems[0]
        self.file, self.line, self.column = first.file, first.line, first.column
        self.path, self.message = first.path, first.message
        super().__init__("\n".join(str(p) for p in self.problems))

    @classmethod
    def at(cls, message: str, file: str = "<unknown>", line: int = 0, column: int = 0,
           path: str = "") -> "SpecError":
        """Shorthand for a SpecError with a single problem."""
        return cls(Problem(message, file, line, column, path))
