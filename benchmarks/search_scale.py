"""How `archspec search` scales: wall time and peak memory for grids of 10^3 to 10^6
combinations (10^6 is the largest allowed without --allow-large-grid).

    python benchmarks/search_scale.py            # 10^3, 10^4, 10^5
    python benchmarks/search_scale.py --max 6    # and 10^6 (about 10 minutes on 2 cores)

Each grid runs in a fresh process (peak resident set = that search alone, torch never
imported): densenet-bc-100-12 at depth 16, growth_rate x num_classes, every combination
valid and kept (no limits), two objectives (the default); the front and the candidates' numbers are
computed, the table is not printed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = """
import json, resource, sys, time
import archspec
n = int(sys.argv[1])
g, b = (n, 1) if n <= 1000 else (1000, n // 1000)
t = time.perf_counter()
r = archspec.search("densenet-bc-100-12", {"growth_rate": range(1, g + 1),
                                           "num_classes": range(1, b + 1)},
                    overrides={"depth": 16})
front = sum(c.pareto for c in r.candidates)
seconds = time.perf_counter() - t
print(json.dumps({"grid": n, "seconds": seconds, "matched": r.matched, "front": front,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max", type=int, default=5, help="largest grid, as a power of 10")
    args = ap.parse_args()
    print("| grid | wall s | per combination ms | matched | front | peak RSS MB |")
    print("|---:|---:|---:|---:|---:|---:|")
    for e in range(3, args.max + 1):
        out = subprocess.run([sys.executable, "-c", CHILD, str(10**e)], capture_output=True,
                             text=True, check=True)
        r = json.loads(out.stdout)
        print(f"| {r['grid']:,} | {r['seconds']:.1f} | {1000 * r['seconds'] / r['grid']:.3f} "
              f"| {r['matched']:,} | {r['front']:,} | {r['peak_mb']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
