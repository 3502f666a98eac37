"""Design-space search: which DenseNets fit a budget? Torch-free.

Take a base spec and a list of values for some of its keys, plan every combination (the
planner costs well under a millisecond a spec), keep those that meet the constraints on
parameters, MACs and training activation memory, and mark the Pareto front of what is
left. A combination that is not a valid spec (a depth the paper's rule cannot split, an
input too small for its transitions, a transition with no channels) is counted and
skipped, with its reason, never an exception.

    result = archspec.search("densenet-bc-100-12", {"growth_rate": range(8, 49, 4),
                                                     "depth": range(40, 251, 6)},
                             max_params=1_000_000)
    for c in result.candidates[:5]:
        print(c.overrides, c.params, c.macs, c.pareto)
"""

from __future__ import annotations

import itertools
import math
import os
import re
from array import array
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Iterable, Mapping, Sequence

from .errors import SpecError, format_path, parse_key_path
from .loader import resolve
from .overrides import key_path_error, read_override_value, safe_name
from .schema import FAMILIES, MAX_NAME_LENGTH, DenseNetSpec
from .plan import Plan, plan as make_plan
from .yamlio import COMMAND_LINE, parse_yaml

__all__ = ["search", "SearchResult", "Candidate", "Rejected", "SearchError", "parse_values",
           "parse_number", "parse_objectives", "write_candidates", "METRICS", "MAX_GRID"]

MAX_GRID = 1_000_000        # combinations planned without allow_large_grid (about 5 minutes)
METRICS = ("params", "macs", "activations")
_SUFFIX = {"": 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


class SearchError(ValueError):
    """An argument of a search that makes no sense (bad values, unknown key, huge grid).
    ``position`` is the 1-based place of the argument, when the command line gave it."""

    def __init__(self, message: str, position: int = 0):
        super().__init__(message)
        self.message, self.position = message, position


@dataclass(frozen=True)
class Candidate:
    """One planned combination that meets the constraints.

    ``overrides`` holds exactly the varied keys; ``activations`` is the training
    activation memory in bytes for the search's batch (float32, as the resource guard
    estimates it); ``pareto`` marks the front of the search's objectives. ``plan`` is
    planned again when asked for (a search keeps numbers, not plans: see SearchResult)."""

    overrides: dict[str, Any]
    params: int
    macs: int
    activations: int
    pareto: bool
    _planner: Any = field(default=None, repr=False, compare=False)

    @property
    def plan(self) -> Plan:
        """The candidate's Plan (planned on first use, then kept)."""
        cached = self.__dict__.get("_plan")
        if cached is None:
            cached = self._planner(self.overrides)
            object.__setattr__(self, "_plan", cached)
        return cached

    def metric(self, name: str) -> int:
        return getattr(self, name)

    def as_dict(self) -> dict:
        """The JSON contract: overrides, params, macs, activations, pareto."""
        return {"overrides": dict(self.overrides), "params": self.params, "macs": self.macs,
                "activations": self.activations, "pareto": self.pareto}


@dataclass(frozen=True)
class Rejected:
    """A combination that is not a valid spec, and why (the first problem, by key)."""

    overrides: dict[str, Any]
    reason: str


class _Rows(Sequence):
    """A read-only list whose items are made when read: a search over 10^6 combinations
    keeps a few numbers per combination, not 10^6 objects (``list(rows)`` makes them
    all)."""

    def __init__(self, n: int, make):
        self._n, self._make = n, make

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._make(j) for j in range(*i.indices(self._n))]
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(i)
        return self._make(i)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, (list, Sequence)) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"<{self._n} search rows>"


@dataclass
class SearchResult:
    """What a search planned and kept. ``matches`` are all combinations that met the
    constraints, sorted; ``candidates`` are the first ``top`` of them; ``rejected`` the
    invalid combinations with their reasons. All three are read-only sequences whose
    items are made when read (see _Rows)."""

    base: str
    evaluated: int
    valid: int
    invalid: int
    matches: Sequence[Candidate]
    candidates: Sequence[Candidate]
    rejected: Sequence[Rejected]
    batch: int
    objectives: tuple[tuple[str, str], ...]
    base_plan: Plan

    @property
    def matched(self) -> int:
        return len(self.matches)

    def as_dict(self, *, show_invalid: bool = False) -> dict:
        """``{"base", "evaluated", "valid", "invalid", "candidates": [...]}`` (the
        contract), plus ``matched``, ``batch``, ``objectives`` and, with
        ``show_invalid``, ``rejected``: [{overrides, reason}]."""
        out: dict[str, Any] = {
            "base": self.base, "evaluated": self.evaluated, "valid": self.valid,
            "invalid": self.invalid, "matched": self.matched, "batch": self.batch,
            "objectives": [f"{m}:{d}" for m, d in self.objectives],
            "candidates": [c.as_dict() for c in self.candidates]}
        if show_invalid:
            out["rejected"] = [{"overrides": dict(r.overrides), "reason": r.reason}
                               for r in self.rejected]
        return out


# --- parsing what people write ----------------------------------------------------------------

_RANGE = re.compile(r"^\s*(?P<lo>[^.\s:][^:]*?)\s*\.\.\s*(?P<hi>[^:]+?)\s*(?::\s*(?P<step>.+?))?\s*$")


def parse_values(text: str, *, limit: int = MAX_GRID) -> list[Any]:
    """``12,24,40`` (each read as YAML: ``null``, ``0.5``, ``true``), ``40..250``
    (inclusive integers) or ``8..48:4`` (a step; decimals work: ``0.3..0.7:0.1`` is exact
    to the digits written). SearchError for anything else, or past ``limit`` values."""
    m = _RANGE.match(text)
    if m:
        lo, hi, step = (_decimal(m["lo"]), _decimal(m["hi"]),
                        _decimal(m["step"]) if m["step"] else Decimal(1))
        if step <= 0:
            raise SearchError(f"the step of {text!r} must be positive")
        if hi < lo:
            raise SearchError(f"empty range {_shown(text)}: {_shown(m['hi'])} is below "
                              f"{_shown(m['lo'])}")
        if (hi - lo) / step >= limit:  # compared as decimals: the count may be huge
            raise SearchError(f"{_shown(text)} has more than {limit:,} values")
        count = int((hi - lo) / step) + 1
        integral = all(d == d.to_integral_value() for d in (lo, step))
        return [int(lo + i * step) if integral else float(lo + i * step)
                for i in range(count)]
    if not text.strip():
        raise SearchError("no values: give a list (12,24,40) or a range (8..48:4)")
    values = []
    for piece in text.split(","):
        if not piece.strip():
            raise SearchError(f"empty value in {text!r}")
        try:
            values.append(parse_yaml(piece, COMMAND_LINE)[0])
        except SpecError as e:
            raise SearchError(f"cannot read value {piece.strip()!r}: {e.message}") from None
    if len(values) > limit:
        raise SearchError(f"{len(values):,} values, more than {limit:,}")
    return values


_MAX_DIGITS = 40  # a bound or step longer than this is no design choice


def _decimal(text: str) -> Decimal:
    text = text.strip()
    if len(text) > _MAX_DIGITS:
        raise SearchError(f"{_shown(text)} is too long a number (at most {_MAX_DIGITS} "
                          "characters)")
    try:
        d = Decimal(text)
    except InvalidOperation:
        raise SearchError(f"{text!r} is not a number") from None
    if not d.is_finite():
        raise SearchError(f"{text!r} is not a finite number")
    if abs(d.adjusted()) > 30:
        raise SearchError(f"{text!r} is out of range (at most 1e30)")
    return d


def parse_number(text: str | int | float) -> int:
    """``1M`` -> 1000000, ``2.5G``, ``300k``, ``1e6``, ``1_000_000``; SearchError
    otherwise (negative numbers too: budgets are counts)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = Decimal(str(text)) if not isinstance(text, int) or \
            text.bit_length() < 128 else Decimal("inf")
    else:
        raw = str(text).strip().replace("_", "").replace(",", "")
        if len(raw) > _MAX_DIGITS:
            raise SearchError(f"{_shown(str(text))} is too long a number (at most "
                              f"{_MAX_DIGITS} characters)")
        suffix = raw[-1:] if raw[-1:] in _SUFFIX and raw[-1:] else ""
        try:
            value = Decimal(raw[:len(raw) - len(suffix)]) * _SUFFIX[suffix]
        except InvalidOperation:
            raise SearchError(f"{text!r} is not a number (such as 1000000, 1M, 2.5G or "
                              "300k)") from None
    if not value.is_finite() or value < 0:
        raise SearchError(f"{_shown(text)} must be a finite number >= 0")
    if value > _MAX_BUDGET:
        raise SearchError(f"{_shown(text)} is larger than any network (at most "
                          "10^24); leave the limit out for none")
    return int(value)


_MAX_BUDGET = Decimal("1e24")


def parse_objectives(text: str) -> tuple[tuple[str, str], ...]:
    """``params:max,macs:min`` -> (("params", "max"), ("macs", "min"))."""
    out = []
    for piece in text.split(","):
        metric, _, direction = piece.strip().partition(":")
        if metric not in METRICS or direction not in ("min", "max"):
            raise SearchError(f"objective {piece.strip()!r}: expected METRIC:min or "
                              f"METRIC:max with METRIC one of {', '.join(METRICS)}")
        out.append((metric, direction))
    if len({m for m, _ in out}) != len(out):
        raise SearchError(f"objectives {text!r} name a metric twice")
    return tuple(out)


# --- the search --------------------------------------------------------------------------------

def search(base: str | os.PathLike, vary: Mapping[str, Iterable[Any]], *,
           overrides: Mapping[str, Any] | None = None, max_params: int | str | None = None,
           min_params: int | str | None = None, max_macs: int | str | None = None,
           max_activations: int | str | None = None, batch: int = 1,
           objectives: Sequence[tuple[str, str]] | str = (("params", "max"), ("macs", "min")),
           sort: str = "-params", top: int | None = None, allow_large_grid: bool = False,
           allow_large: bool | None = None) -> SearchResult:
    """Plan every combination of ``vary`` (key path -> values) over ``base`` (a zoo name
    or a path, with ``overrides`` applied to all) and return those within the limits.

    Limits: ``max_params``/``min_params`` (trainable parameters), ``max_macs`` (per
    image), ``max_activations`` (bytes of activations autograd keeps in a float32
    training step of ``batch`` images, the resource guard's estimate); numbers may be
    written ``1M``, ``300M``, ``2.5G``. ``objectives`` sets the Pareto front's axes;
    ``sort`` is a metric, ``-`` first for descending; ``top`` keeps the first N.

    Raises SearchError for unknown keys, unreadable values or a grid of more than
    MAX_GRID combinations (unless ``allow_large_grid``; ``allow_large``, its old name, still
    works and warns), and SpecError if the base itself (with
    ``overrides``) is not valid; an invalid combination is counted, never raised.
    """
    if isinstance(objectives, str):
        objectives = parse_objectives(objectives)
    objectives = tuple(objectives)
    sort_key = sort.lstrip("-")
    if sort_key not in METRICS:
        raise SearchError(f"cannot sort by {sort!r}: use one of "
                          + ", ".join(m for k in METRICS for m in (k, "-" + k)))
    if batch < 1:
        raise SearchError(f"batch must be at least 1, got {batch}")
    if top is not None and top < 1:
        raise SearchError(f"top must be at least 1, got {top}")
    limits = {name: None if v is None else parse_number(v) for name, v in (
        ("max_params", max_params), ("min_params", min_params), ("max_macs", max_macs),
        ("max_activations", max_activations))}
    keys = list(vary)
    if not keys:
        raise SearchError("nothing to vary: give at least one key and its values")
    source = resolve(base)
    member = FAMILIES.get(source.data.get("family", "densenet"), DenseNetSpec) \
        if isinstance(source.data, dict) else DenseNetSpec
    grid = []
    for i, key in enumerate(keys, start=1):
        why = key_path_error(key, member)  # in the terms of the base's family member
        if why:
            raise SearchError(f"{key}: {why}", i)
        values = _unique(_bounded_values(vary[key], key, i, allow_large_grid))
        if not values:
            raise SearchError(f"{key}: no values", i)
        grid.append(values)
    count = math.prod(len(v) for v in grid)
    if allow_large is not None:
        import warnings

        warnings.warn("search(allow_large=) is now allow_large_grid= (allow_large means "
                      "'past the resource guard' everywhere else)", DeprecationWarning,
                      stacklevel=2)
        allow_large_grid = allow_large_grid or allow_large
    if count > MAX_GRID and not allow_large_grid:
        raise SearchError(f"the grid has {count:,} combinations, more than {MAX_GRID:,}; "
                          "narrow it, or allow_large_grid=True (--allow-large-grid)")

    # --set values are YAML text: read once, not once per combination.
    fixed = {k: read_override_value(v) for k, v in (overrides or {}).items()}
    base_plan = make_plan(source.spec(fixed or None))
    for i, key in enumerate(keys, start=1):
        why = _never_valid(source, fixed, key, grid[i - 1])
        if why:
            raise SearchError(f"{key}: {why}", i)
    # Per combination only numbers are kept (about 8 bytes a metric and a key): its
    # index in the grid and its metrics; rejected ones keep an index into their reasons.
    index, params, macs, acts = array("q"), array("q"), array("q"), array("q")
    bad, bad_reason, reasons = array("q"), array("l"), {}
    valid = 0
    for n, combo in enumerate(itertools.product(*grid)):
        try:
            p = make_plan(source.spec({**fixed, **dict(zip(keys, combo))}))
        except SpecError as e:
            first = e.problems[0]
            why = f"{first.path}: {first.message}" if first.path else first.message
            bad.append(n)
            bad_reason.append(reasons.setdefault(why, len(reasons)))
            continue
        valid += 1
        a = p.training_memory(batch)
        if _within(p, a, limits):
            index.append(n)
            params.append(p.params)
            macs.append(p.macs)
            acts.append(a)

    metrics = {"params": params, "macs": macs, "activations": acts}
    front = _pareto([[_as_min(metrics[m][i], d) for m, d in objectives]
                     for i in range(len(index))])
    order = sorted(range(len(index)), key=metrics[sort_key].__getitem__,
                   reverse=sort.startswith("-"))
    sizes = [len(v) for v in grid]

    def varied(n: int) -> dict[str, Any]:
        picks = []
        for size in reversed(sizes):  # itertools.product's order: the last key fastest
            n, i = divmod(n, size)
            picks.append(i)
        return {k: grid[j][i] for j, (k, i) in enumerate(zip(keys, reversed(picks)))}

    def planner(over: dict) -> Plan:
        return make_plan(source.spec({**fixed, **over}))

    def candidate(rank: int) -> Candidate:
        i = order[rank]
        return Candidate(varied(index[i]), params[i], macs[i], acts[i], i in front, planner)

    names = list(reasons)
    matches = _Rows(len(order), candidate)
    return SearchResult(str(base), count, valid, len(bad), matches,
                        _Rows(min(top, len(order)) if top else len(order), candidate),
                        _Rows(len(bad), lambda j: Rejected(varied(bad[j]), names[bad_reason[j]])),
                        batch, objectives, base_plan)


def _bounded_values(values: Any, key: str, position: int, allow_large_grid: bool) -> list:
    """The values of one key as a list, refusing what a grid cannot hold before it is
    held: a string (its characters are not values: parse_values reads text), a range or
    iterator longer than the grid limit (counted as it is consumed, so an endless
    iterator stops there)."""
    if isinstance(values, (str, bytes)):
        raise SearchError(f"{key}: values must be a list or range, not the string "
                          f"{_shown(values)} (archspec.search.parse_values reads text "
                          "such as '12,24' or '8..48:4')", position)
    if isinstance(values, Mapping):
        raise SearchError(f"{key}: values must be a list or range, not a mapping", position)
    if isinstance(values, range) and len(values) > MAX_GRID and not allow_large_grid:
        raise SearchError(f"{key}: {len(values):,} values, more than {MAX_GRID:,}", position)
    try:
        it = iter(values)
    except TypeError:
        raise SearchError(f"{key}: values must be a list or range, not "
                          f"{type(values).__name__}", position) from None
    cap = None if allow_large_grid else MAX_GRID
    out = list(itertools.islice(it, cap + 1)) if cap is not None else list(it)
    if cap is not None and len(out) > cap:
        raise SearchError(f"{key}: more than {MAX_GRID:,} values", position)
    return out


def _unique(values: list) -> list:
    """Each value once, in first-seen order: 12,12 or 0.1,0.10 are one candidate."""
    seen, out = set(), []
    for v in values:
        key = _frozen(v)
        if key not in seen:
            seen.add(key)
            out.append(v)
    return out


def _frozen(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return ("list", tuple(_frozen(x) for x in v))
    if isinstance(v, dict):
        return ("dict", tuple(sorted((str(k), _frozen(x)) for k, x in v.items())))
    if isinstance(v, bool) or v is None:
        return ("const", v)
    try:
        hash(v)
    except TypeError:
        return ("repr", repr(v))
    return ("value", v)


def _never_valid(source: Any, fixed: dict, key: str, values: list) -> str | None:
    """Why some value of ``key`` can never be valid, whatever the other keys are: the
    schema refuses it at that key (a type, a range; the schema's rules are per field), so
    `--vary depth=abc` is a usage error, not a grid of rejected candidates. Numbers are
    checked at their extremes (bounds are ranges) and one of each other type."""
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    others = {(type(v), repr(v)): v for v in values if v not in numbers or isinstance(v, bool)}
    picks = ([min(numbers), max(numbers)] if numbers else []) + list(others.values())[:100]
    where = format_path(parse_key_path(key))
    for value in picks:
        try:
            source.spec({**fixed, key: value})
        except SpecError as e:
            for p in e.problems:
                at_key = p.path == where or p.path.startswith((where + ".", where + "["))
                if p.file == COMMAND_LINE and at_key and _schema_problem(p.message):
                    return f"value {_shown(value)} can never be valid: {p.message}"
    return None


def _schema_problem(message: str) -> bool:
    # The loader's own override problems (an index the base lacks) depend on the other
    # keys; the schema's (a type, a bound, an enum) do not.
    return not message.startswith(("no item", "bad override")) \
        and not message.endswith("is not a mapping")


def _text(value: Any) -> str:
    """A varied value as a person writes it: 0.5, true, null, [6,12]."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, list):
        return "[" + ",".join(_text(v) for v in value) + "]"
    return str(value)


def _shown(value: Any) -> str:
    text = repr(value)
    if len(text) <= 40:
        return text
    return repr(value[:34]) + "..." if isinstance(value, str) else text[:37] + "..."


def _within(p: Plan, activations: int, limits: dict[str, int | None]) -> bool:
    checks = (("max_params", p.params, 1), ("min_params", p.params, -1),
              ("max_macs", p.macs, 1), ("max_activations", activations, 1))
    return all(limits[k] is None or sign * value <= sign * limits[k]
               for k, value, sign in checks)


def _as_min(value: int, direction: str) -> int:
    return -value if direction == "max" else value


def _pareto(points: list[list[int]]) -> set[int]:
    """Indices of the points no other point dominates (all objectives minimised; equal
    points do not dominate each other). One objective: the minima. Two: one sort and a
    sweep, O(n log n). More: sorted lexicographically, a point can only be dominated by
    one before it, and then by one already on the front, so each point is compared with
    the front alone (O(n * front))."""
    if not points:
        return set()
    order = sorted(range(len(points)), key=points.__getitem__)
    if len(points[0]) == 1:
        best = points[order[0]]
        return {i for i in order if points[i] == best}
    if len(points[0]) == 2:
        front: set[int] = set()
        lowest = None  # the smallest second value among points before this group
        j = 0
        while j < len(order):  # groups of equal points: all on the front, or none
            k = j
            while k < len(order) and points[order[k]] == points[order[j]]:
                k += 1
            second = points[order[j]][1]
            if lowest is None or second < lowest:
                front.update(order[j:k])
                lowest = second
            j = k
        return front
    kept: list[int] = []
    for i in order:
        p = points[i]
        if not any(all(a <= b for a, b in zip(points[j], p)) and points[j] != p
                   for j in kept):
            kept.append(i)
    return set(kept)


def write_candidates(result: SearchResult, folder: str | os.PathLike, *,
                     force: bool = False, inputs: Iterable[str | os.PathLike] = ()
                     ) -> list[os.PathLike]:
    """Write each candidate as a complete spec file ``FOLDER/NAME.yaml`` (its name records
    the base and what was varied; ``expect`` pins the planned parameters and output
    channels), atomically. The folder is created if missing (not its parents); names are
    identifiers, so nothing is written outside it.

    All or nothing: every target is checked first (an existing file without ``force``,
    one of ``inputs`` or the base's own files, two candidates with one name), and if a
    write fails midway the files this call created are removed again."""
    import yaml
    from pathlib import Path

    from .canonical import canonical_dict
    from .files import OutputError, check_writable, write_atomic

    out = Path(folder)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: is not a folder")
    if not out.parent.is_dir():
        raise OutputError(f"{out}: folder {out.parent} does not exist")
    inputs = [*inputs, *result.base_plan.spec.source_files]
    base = Path(result.base).stem  # a zoo name, or the base file's name
    digits = max(2, len(str(len(result.candidates))))
    files: dict[Path, str] = {}
    for rank, c in enumerate(result.candidates, start=1):
        varied = ", ".join(f"{k}={_text(v)}" for k, v in c.overrides.items())
        # The name (and file name) is the base, the rank and what was varied: the --set
        # overrides every candidate shares are in the spec, not repeated in 20 file names.
        name = safe_name(f"{base}-{rank:0{digits}d}-"
                         + "+".join(f"{k}={_text(v)}" for k, v in c.overrides.items()))
        data = canonical_dict(c.plan.spec)
        data["name"] = name[:MAX_NAME_LENGTH]
        data["description"] = (f"archspec search candidate {rank} of "
                               f"{len(result.candidates)}: {varied} "
                               f"({c.params:,} params, {c.macs:,} MACs per image"
                               f"{', on the Pareto front' if c.pareto else ''})")
        data["source"] = f"archspec search over {result.base}"
        data["expect"] = {"params": c.params, "out_channels": c.plan.out_channels}
        path = out / f"{data['name']}.yaml"
        if path in files:  # names cut to the length limit can meet
            raise OutputError(f"{path}: two candidates would have this name; vary fewer "
                              "keys or write fewer candidates (--top)")
        files[path] = yaml.safe_dump(data, sort_keys=False, default_flow_style=None,
                                     allow_unicode=True, width=100)
    if out.is_dir():
        for path in files:
            check_writable(path, force=force, inputs=inputs)
    created_folder = not out.exists()
    out.mkdir(exist_ok=True)
    written: list[Path] = []
    try:
        for path, text in files.items():
            existed = path.exists()
            write_atomic(path, lambda fh, t=text: fh.write(t.encode()), force=force,
                         inputs=inputs)
            if not existed:
                written.append(path)
    except BaseException:
        for path in written:  # nothing half-done: what this call created goes again
            path.unlink(missing_ok=True)
        if created_folder:
            try:
                out.rmdir()
            except OSError:
                pass
        raise
    return list(files)
