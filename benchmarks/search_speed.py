"""Design-space search speed: one `archspec search` process planning a 2,050-point grid,
against one Python process that builds torchvision's densenet121 and runs
torchinfo.summary on it (what people do today, one model at a time).

Both are timed side by side in one run, alternating A and B; the script prints medians,
min-max, the ratio, and the in-process planning rate (specs planned per second).

    python benchmarks/search_speed.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cli_speed import BASELINE, alternate  # noqa: E402  one way to time whole processes

# 41 growth rates x 50 depths, every one a valid DenseNet-BC (depth = 4 + 6n), up to L=334
VARY = ["--vary", "growth_rate=8..48", "--vary", "depth=40..334:6"]


def measure(repeats: int) -> dict:
    ours_cmd = [sys.executable, "-m", "archspec", "search", "densenet-bc-100-12", *VARY,
                "--max-params", "1M", "--format", "json"]
    ours, base, out, _ = alternate(ours_cmd, [sys.executable, "-c", BASELINE], repeats)
    data = json.loads(out)

    import archspec
    from archspec.search import parse_values

    grid = {"growth_rate": parse_values("8..48"), "depth": parse_values("40..334:6")}
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        r = archspec.search("densenet-bc-100-12", grid, max_params="1M")
        rates.append(r.evaluated / (time.perf_counter() - t0))
    return {"evaluated": data["evaluated"], "valid": data["valid"],
            "matched": len(data["candidates"]), "search_s": ours, "torchinfo_s": base,
            "rate": rates}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    m = measure(args.repeats)
    med = statistics.median
    print(f"grid: {m['evaluated']:,} specs ({m['valid']:,} valid, {m['matched']} under 1M "
          f"params), {args.repeats} repeats, medians")
    print("| process | median s | min-max s | ratio |")
    print("|---|---:|---:|---:|")
    print(f"| archspec search (2,050 specs) | {med(m['search_s']):.2f} | "
          f"{min(m['search_s']):.2f}-{max(m['search_s']):.2f} | 1 |")
    print(f"| torchvision densenet121 + torchinfo.summary (1 model) | "
          f"{med(m['torchinfo_s']):.2f} | {min(m['torchinfo_s']):.2f}-"
          f"{max(m['torchinfo_s']):.2f} | {med(m['torchinfo_s']) / med(m['search_s']):.2f}x |")
    print(f"in-process planning rate: {med(m['rate']):,.0f} specs/s "
          f"(min {min(m['rate']):,.0f}, max {max(m['rate']):,.0f})")


if __name__ == "__main__":
    main()
