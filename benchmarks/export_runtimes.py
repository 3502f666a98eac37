"""Each `archspec export` target in its own runtime: the plain export against `--optimize`,
side by side in one process (alternating, medians).

    python benchmarks/export_runtimes.py [--spec densenet121] [--batch 8] [--repeats 9]

.onnx runs in ONNX Runtime (intra-op threads = torch's, spinning off), .pt2 through torch.export.load,
.pt through torch.jit.load. Ratios are the plain export's time / the optimized one's
(above 1: --optimize is faster). `--optimize` must never be below 1 for any target.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from archspec.cli import main as cli
from cpu_inference import ort_runner  # this folder: scripts run as python benchmarks/...


def runner(path: Path, fmt: str, x: torch.Tensor):
    if fmt == ".onnx":  # spinning off, torch's threads: cpu_inference.py says why
        return ort_runner(path, x)
    m = torch.export.load(str(path)).module() if fmt == ".pt2" else torch.jit.load(str(path))

    def run():
        with torch.no_grad():
            m(x)
    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default="densenet121")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--formats", default=".onnx,.pt2,.pt")
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="archspec-export-bench-"))
    import archspec

    shape = archspec.plan(archspec.load(args.spec)).input_shape
    x = torch.randn(args.batch, *shape)
    print(f"| {args.spec}, batch {args.batch} | plain median ms | --optimize median ms | "
          "plain / optimized |\n|---|---:|---:|---:|")
    for fmt in args.formats.split(","):
        fns = {}
        for kind, extra in (("plain", []), ("optimize", ["--optimize"])):
            path = folder / f"{kind}{fmt}"
            code = cli(["export", args.spec, "-o", str(path), "--batch", str(args.batch),
                        *extra])
            if code != 0:
                print(f"export {kind}{fmt} failed", file=sys.stderr)
                return 1
            fns[kind] = runner(path, fmt, x)
        for fn in fns.values():
            fn()
        times = {k: [] for k in fns}
        for _ in range(args.repeats):
            for k, fn in fns.items():
                t = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t)
        a, b = (statistics.median(times[k]) * 1000 for k in ("plain", "optimize"))
        runtime = {".onnx": "onnxruntime", ".pt2": "torch.export.load",
                   ".pt": "torch.jit.load"}[fmt]
        print(f"| {fmt} ({runtime}) | {a:.1f} | {b:.1f} | {a / b:.3f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
