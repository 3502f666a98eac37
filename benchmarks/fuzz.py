"""Fuzz archspec's input surfaces; print accepted / rejected / crashed per surface.

- ``spec``: a valid spec (the zoo, and small hand-made ones) with its YAML text mutated:
  lines deleted, duplicated or swapped, values retyped (bools, nulls, huge and negative
  numbers, NaN, tags, anchors, brackets), text truncated, bytes inserted. Accepted: a
  plan; rejected: a SpecError with a location.
- ``search``: ``--vary`` values and limits as people (and scripts) mistype them, through
  the command line's own parsers, then a search when the grid is small. Rejected: a
  SearchError or SpecError.
- ``checkpoint``: a small model's state_dict, mutated as a dict (keys doubled with
  ``module.``, dtypes changed, shapes changed, non-tensors, wrappers) and as bytes (torch
  zip and safetensors files flipped, cut, padded), read and compared as check-weights
  does. Accepted: a report; rejected: a WeightsError or SpecError.
- ``output``: output paths with control characters, long names, missing folders,
  directories, links and dots, written by ``archspec new`` through the command line.
  Accepted or rejected by exit code; a traceback, or a file anywhere but the path named,
  is a crash.

Anything else is a crash and is printed with the input that caused it.

    python benchmarks/fuzz.py --cases 20000 [--seed 0] [--surface spec]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import traceback
from pathlib import Path

import archspec
from archspec import zoo

VALUES = ["true", "false", "null", "~", "-1", "0", "1", "2.5", "1e309", "-.inf", ".nan",
          str(10**30), "'12'", "[]", "{}", "[1, 2", "{a: 1}", "!!python/object:os.system 1",
          "!!binary aGk=", "!custom x", "&a 3", "*a", "*nope", "cifar", "imagenet", "resnet",
          '"\\x07"', "0x10", "0o17", "1_000", "2020-01-01", "|\n  text", ">-\n  folded",
          "[[[[[[[[[[]]]]]]]]]]", "- a", "? complex", "@", "`", "%TAG", "'unterminated"]
SMALL = """\
name: small
input: {channels: 3, height: 32, width: 32}
stem:
  type: cifar
  channels: 8
growth_rate: 4
bn_size: 2
compression: 0.5
block_config: [2, 2, 2]
drop_rate: 0.1
num_classes: 5
memory_efficient: false
expect: {out_channels: 10}
"""


def seeds() -> list[str]:
    """Valid spec texts to mutate: every zoo file and the small spec."""
    texts = [zoo.find(n).read_text() for n in zoo.names()]
    return texts + [SMALL]


def mutate(text: str, rng: random.Random) -> str | bytes:
    """One to three random mutations of ``text``."""
    for _ in range(rng.randint(1, 3)):
        lines = text.splitlines(keepends=True) or [""]
        i = rng.randrange(len(lines))
        op = rng.randrange(9)
        if op == 0:                      # delete a line
            del lines[i]
        elif op == 1:                    # duplicate a line (duplicate keys)
            lines.insert(i, lines[i])
        elif op == 2:                    # retype a value
            key, sep, _ = lines[i].partition(":")
            if sep:
                lines[i] = f"{key}: {rng.choice(VALUES)}\n"
        elif op == 3:                    # truncate the text
            return "".join(lines)[: rng.randrange(len(text) + 1)]
        elif op == 4:                    # swap two lines
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == 5:                    # insert a random key
            lines.insert(i, f"{rng.choice(['grwth_rate', 'stem', 'extends', 'x'])}: "
                            f"{rng.choice(VALUES)}\n")
        elif op == 6:                    # mangle indentation
            lines[i] = rng.choice(["", " ", "\t", "    "]) + lines[i].lstrip()
        elif op == 7:                    # a random number where a number was
            key, sep, _ = lines[i].partition(":")
            if sep:
                lines[i] = f"{key}: {rng.choice([-1, 0, 1, 3, 7, 10**6, 2**31])}\n"
        else:                            # raw bytes
            raw = "".join(lines).encode()
            k = rng.randrange(len(raw) + 1)
            return raw[:k] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 4))) + raw[k:]
        text = "".join(lines)
    return text


def run_case(data: str | bytes) -> str:
    """'accepted', 'rejected', or raises whatever a crash raised."""
    try:
        archspec.plan(archspec.loads(data, source="<fuzz>"))
        return "accepted"
    except archspec.SpecError as e:
        assert e.problems and all(p.file for p in e.problems)
        return "rejected"


# --- search arguments ---------------------------------------------------------------------

SEARCH_PIECES = ["12", "24", "1", "0", "-1", "1..8", "8..48:4", "0.1..0.5:0.1", "1..1e400",
                 "1e5000", "1" + "0" * 60, "..", "1..", "..5", "5..1", "1..5:0", "1..5:-1",
                 "nan", "inf", "-inf", "null", "true", "[6,12]", "{a: 1}", "'12'", "٣",
                 "1_000", "0x10", "12,", ",12", "12,,24", "\x1b[2J", "1..5:1e-30", " "]
SEARCH_KEYS = ["growth_rate", "depth", "drop_rate", "bn_size", "compression",
               "block_config[1]", "stem.channels", "input.height", "nope", "a..b",
               "block_config[99999999999999999999]", "growth_rate[0]", "", "x" * 300]


def search_case(rng: random.Random) -> tuple:
    n = rng.randint(1, 3)
    vary = {}
    for _ in range(n):
        vary[rng.choice(SEARCH_KEYS)] = ",".join(
            rng.choice(SEARCH_PIECES) for _ in range(rng.randint(1, 2)))
    limit = rng.choice([None, "1M", "1e5000", "-5", "2.5G", "abc", "9" * 50, "0"])
    return vary, limit


def run_search_case(case: tuple) -> str:
    from archspec.search import SearchError, parse_number, parse_values, search

    vary, limit = case
    try:
        values = {k: parse_values(v) for k, v in vary.items()}
        max_params = parse_number(limit) if limit is not None else None
        grid = 1
        for v in values.values():
            grid *= len(v)
        if grid > 40:  # the parsers are what is fuzzed; big grids are the benchmark's
            return "accepted"
        search("densenet-bc-100-12", values, overrides={"depth": 16},
               max_params=max_params)
        return "accepted"
    except (SearchError, archspec.SpecError):
        return "rejected"


# --- checkpoints -----------------------------------------------------------------------------

_STATE: dict = {}


def _small_state() -> dict:
    if not _STATE:
        model = archspec.build(archspec.loads(SMALL, source="<small>", overrides={"expect": None}), seed=0)
        _STATE.update(model.state_dict())
    return dict(_STATE)


def checkpoint_case(rng: random.Random, folder: Path) -> Path:
    import torch

    state = _small_state()
    for _ in range(rng.randint(1, 3)):
        keys = [k for k, v in state.items() if isinstance(v, torch.Tensor)]
        if not keys:
            break
        key = rng.choice(keys)
        op = rng.randrange(7)
        if op == 0:
            state["module." * rng.randint(1, 3) + key] = state[key]
        elif op == 1:
            state[key] = state[key].to(rng.choice([torch.complex64, torch.bool, torch.int64,
                                                   torch.float16, torch.float64]))
        elif op == 2:
            state[key] = torch.zeros(rng.randint(0, 3), rng.randint(1, 3))
        elif op == 3:
            state[key] = rng.choice([1, "x", None, [1, 2]])
        elif op == 4:
            state = {rng.choice(["state_dict", "model", "x"]): state}
            break
        elif op == 5:
            del state[key]
        else:
            state[rng.choice(["", "\x1b[2J", "features.x" * 50])] = torch.zeros(1)
    suffix = rng.choice([".pt", ".safetensors"])
    path = folder / f"case{suffix}"
    try:
        if suffix == ".pt":
            torch.save(state, path)
        else:
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in state.items()
                       if isinstance(v, torch.Tensor)}, str(path))
    except Exception:  # a mutation the writer itself refuses: write bytes instead
        path.write_bytes(b"PK\x03\x04 not a checkpoint")
    if rng.random() < 0.5:  # and the bytes
        raw = bytearray(path.read_bytes())
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(3)
            i = rng.randrange(len(raw) + 1)
            if op == 0 and raw:
                raw[min(i, len(raw) - 1)] ^= 1 << rng.randrange(8)
            elif op == 1:
                del raw[i:]
            else:
                raw[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        path.write_bytes(bytes(raw))
    return path


def run_checkpoint_case(path: Path) -> str:
    from archspec.builder import expected_state
    from archspec.weights import WeightsError, compare, read_state_dict

    try:
        state = read_state_dict(path)
        report, _ = compare(expected_state(archspec.loads(SMALL, source="<small>", overrides={"expect": None})), state,
                            str(path))
        report.problems()
        report.summary()
        return "accepted" if report.ok else "rejected"
    except (WeightsError, archspec.SpecError):
        return "rejected"


# --- output paths ----------------------------------------------------------------------------

PATH_PIECES = ["a", "b.yaml", "..", ".", "", "sub", "x" * 300, "\x1b[31m", "\n", "\t",
               " ", "-rf", "~", "$HOME", "*", "é", "\u202e", "nul", "con.yaml"]


def output_case(rng: random.Random) -> str:
    parts = [rng.choice(PATH_PIECES) for _ in range(rng.randint(1, 3))]
    return "/".join(parts) + rng.choice(["", ".yaml", "/", ".yml"])


def run_output_case(rel: str, folder: Path) -> str:
    """``archspec new`` writing to ``rel`` from inside ``folder``: a traceback, or a file
    that appears anywhere but at the named path, is a crash."""
    import contextlib
    import io
    import os

    from archspec.cli import main

    (folder / "sub").mkdir(exist_ok=True)
    (folder / "a").write_text("exists\n") if rng_exists(rel) else None
    before = _tree(folder)
    err = io.StringIO()
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = main(["new", "fuzzed", "-o", rel])
            except SystemExit as e:
                code = e.code
    finally:
        os.chdir(cwd)
    assert "Traceback" not in err.getvalue(), err.getvalue()
    new = _tree(folder) - before
    named = os.path.normpath(os.path.join(folder, rel))
    assert all(os.path.normpath(p) == named for p in new), (rel, new)
    for p in new:
        os.unlink(p)
    return "accepted" if code == 0 else "rejected"


def rng_exists(rel: str) -> bool:
    return rel.startswith("a")


def _tree(folder: Path) -> set[str]:
    import os

    return {os.path.join(d, f) for d, _, files in os.walk(folder) for f in files}


def fuzz(cases: int, seed: int = 0, verbose: bool = False, surface: str = "spec") -> dict:
    """``cases`` cases of one surface (see the module docstring); counts and crashes."""
    import tempfile

    rng = random.Random(seed)
    bases = seeds()
    counts = {"accepted": 0, "rejected": 0, "crashed": 0}
    slowest, crashes = 0.0, []
    folder = Path(tempfile.mkdtemp(prefix="archspec-fuzz-"))
    for _ in range(cases):
        if surface == "spec":
            data, run = mutate(rng.choice(bases), rng), run_case
        elif surface == "search":
            data, run = search_case(rng), run_search_case
        elif surface == "checkpoint":
            data, run = checkpoint_case(rng, folder), run_checkpoint_case
        else:
            data = output_case(rng)
            run = lambda rel: run_output_case(rel, folder)  # noqa: E731
        t0 = time.perf_counter()
        try:
            counts[run(data)] += 1
        except Exception:  # a crash: the thing this script exists to find
            counts["crashed"] += 1
            crashes.append((data, traceback.format_exc()))
            if verbose:
                print(f"CRASH on {data!r}\n{crashes[-1][1]}", file=sys.stderr)
        slowest = max(slowest, time.perf_counter() - t0)
    return {**counts, "slowest_s": slowest, "crashes": crashes}


SURFACES = ("spec", "search", "checkpoint", "output")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--surface", choices=SURFACES, default="spec")
    args = ap.parse_args()
    t0 = time.perf_counter()
    r = fuzz(args.cases, args.seed, verbose=True, surface=args.surface)
    print(f"{args.surface}: cases {args.cases}  accepted {r['accepted']}  rejected {r['rejected']}  "
          f"crashed {r['crashed']}  slowest case {r['slowest_s'] * 1000:.1f} ms  "
          f"total {time.perf_counter() - t0:.1f} s")
    return 1 if r["crashed"] else 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    raise SystemExit(main())
