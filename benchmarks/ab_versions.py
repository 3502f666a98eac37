"""Two versions of archspec side by side in one process: did a change cost speed?

    git worktree add /tmp/old <commit>
    python benchmarks/ab_versions.py --old /tmp/old/src

Imports the old tree's package as ``archspec_old`` beside the installed ``archspec``, builds
the same models from both (same seed, same weights), and alternates them (run.py's ``ab``:
medians over repeats): training steps at each memory level, and optimize_for_inference's
eval forward. Ratios are new / old (below 1: the change is faster).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import torch

import archspec
from run import ab, med, train_step_fn


def load_old(src: Path):
    spec = importlib.util.spec_from_file_location(
        "archspec_old", src / "archspec" / "__init__.py",
        submodule_search_locations=[str(src / "archspec")])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["archspec_old"] = mod
    spec.loader.exec_module(mod)
    return mod


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", type=Path, required=True, help="the old tree's src/ folder")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--quick", action="store_true", help="small inputs")
    args = ap.parse_args()
    old = load_old(args.old)
    print(f"new: {Path(archspec.__file__).parent}\nold: {Path(old.__file__).parent}\n")
    print("| case | old median ms | new median ms | new / old |\n|---|---:|---:|---:|")
    cl = torch.channels_last
    steps = ([("densenet-bc-100-12", 8, 32, torch.contiguous_format)] if args.quick else
             [("densenet-bc-100-12", 64, 32, torch.contiguous_format),
              ("densenet121", 8, 224, cl)])
    for name, n, size, fmt in steps:
        x = torch.randn(n, 3, size, size).contiguous(memory_format=fmt)
        y = torch.randint(0, 10, (n,))
        for level in (False, True, "max"):
            fns = {}
            for tag, pkg in (("old", old), ("new", archspec)):
                m = pkg.build(pkg.load(name, overrides={"memory_efficient": level}),
                              seed=0).to(memory_format=fmt)
                fns[tag] = train_step_fn(m, x, y)
            t = ab(fns, args.repeats, "cpu")
            _row(f"train step {name} b{n} {size}x{size} memory_efficient={level}", t)
    n, size = (2, 64) if args.quick else (8, 224)
    x = torch.randn(n, 3, size, size)
    fns = {}
    for tag, pkg in (("old", old), ("new", archspec)):
        fast = pkg.optimize_for_inference(pkg.build("densenet121", seed=0))
        fns[tag] = (lambda f: lambda: f(x))(fast)
    with torch.no_grad():
        t = ab(fns, args.repeats, "cpu")
    _row(f"optimize_for_inference densenet121 b{n} {size}x{size} eval", t)
    return 0


def _row(case: str, t: dict) -> None:
    a, b = med(t["old"]) * 1000, med(t["new"]) * 1000
    print(f"| {case} | {a:.1f} | {b:.1f} | {b / a:.3f}x |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
