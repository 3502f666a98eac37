"""Fuzz the loader and planner with mutated specs; print accepted / rejected / crashed.

Each case takes a valid spec (the zoo, and small hand-made ones) and mutates its YAML
text: lines deleted, duplicated or swapped, values retyped (bools, nulls, huge and
negative numbers, NaN, tags, anchors, brackets), text truncated, bytes inserted. The only
acceptable outcomes are a plan (accepted) or a SpecError with a location (rejected);
anything else is a crash and is printed with the input that caused it.

    python benchmarks/fuzz.py --cases 20000 [--seed 0]
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


def fuzz(cases: int, seed: int = 0, verbose: bool = False) -> dict:
    rng = random.Random(seed)
    bases = seeds()
    counts = {"accepted": 0, "rejected": 0, "crashed": 0}
    slowest, crashes = 0.0, []
    for _ in range(cases):
        data = mutate(rng.choice(bases), rng)
        t0 = time.perf_counter()
        try:
            counts[run_case(data)] += 1
        except Exception:  # a crash: the thing this script exists to find
            counts["crashed"] += 1
            crashes.append((data, traceback.format_exc()))
            if verbose:
                print(f"CRASH on {data!r}\n{crashes[-1][1]}", file=sys.stderr)
        slowest = max(slowest, time.perf_counter() - t0)
    return {**counts, "slowest_s": slowest, "crashes": crashes}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    r = fuzz(args.cases, args.seed, verbose=True)
    print(f"cases {args.cases}  accepted {r['accepted']}  rejected {r['rejected']}  "
          f"crashed {r['crashed']}  slowest case {r['slowest_s'] * 1000:.1f} ms  "
          f"total {time.perf_counter() - t0:.1f} s")
    return 1 if r["crashed"] else 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    raise SystemExit(main())
