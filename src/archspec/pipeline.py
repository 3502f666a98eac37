"""Name or path -> Plan in one call, with every problem of the spec reported at once.

``load`` stops at the schema's problems and ``plan`` never sees a spec the schema refused,
so a file with a misspelled key and an input too small for its depth would need two runs
to show both. Here, when the schema refuses some keys, the rest of the spec (those keys at
their defaults, as archspec.loader.PartialSpec) is still planned, and the arithmetic
problems that do not concern a refused key join the schema's in one SpecError.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from .errors import Problem, SpecError
from .loader import load
from .overrides import top_key
from .plan import Plan, plan

__all__ = ["load_plan"]


def load_plan(name_or_path: str | os.PathLike, *,
              overrides: Mapping[str, Any] | None = None) -> Plan:
    """``plan(load(name_or_path, overrides=overrides))``, except that a SpecError holds
    the schema's problems and the planner's together wherever the arithmetic can still be
    done (what ``archspec validate`` and the other commands report)."""
    try:
        spec = load(name_or_path, overrides=overrides)
    except SpecError as e:
        extra = _arithmetic_problems(e.partial) if e.partial is not None else []
        if extra:
            raise SpecError([*e.problems, *extra]) from None
        raise
    return plan(spec)


def _arithmetic_problems(partial: Any) -> list[Problem]:
    try:
        plan(partial.spec)
    except SpecError as e:
        dropped = {str(path[0]) for path in partial.dropped if path}
        # A problem of a refused key, or of the whole spec, may come from the default that
        # stood in for it: only problems located at other keys are the file's own.
        return [p for p in e.problems
                if p.path and top_key(p.path) not in dropped and top_key(p.path) != "expect"]
    return []
