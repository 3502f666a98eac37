"""Whole-process speed of `archspec summary densenet121 --format json` against a Python
process that builds torchvision's densenet121 and runs torchinfo.summary on it.

Both are timed side by side in one run, alternating A and B, and the script prints the
medians, min-max and the ratio. It also checks that both report the same parameter count.

    python benchmarks/cli_speed.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

BASELINE = """
import torchinfo, torchvision
model = torchvision.models.densenet121()
stats = torchinfo.summary(model, input_size=(1, 3, 224, 224), verbose=0)
print(stats.total_params)
"""


def _time(cmd: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return time.perf_counter() - t0, proc.stdout


def alternate(ours_cmd: list[str], base_cmd: list[str], repeats: int
              ) -> tuple[list[float], list[float], str, str]:
    """Seconds of each whole process, A and B alternating (after one warm-up run of each,
    for the file cache); with the last stdout of each."""
    _time(ours_cmd), _time(base_cmd)
    ours, base = [], []
    for _ in range(repeats):
        t, out_a = _time(ours_cmd)
        ours.append(t)
        t, out_b = _time(base_cmd)
        base.append(t)
    return ours, base, out_a, out_b


def measure(repeats: int) -> dict:
    ours_cmd = [sys.executable, "-m", "archspec", "summary", "densenet121", "--format", "json"]
    ours, base, out_a, out_b = alternate(ours_cmd, [sys.executable, "-c", BASELINE], repeats)
    params_a, params_b = json.loads(out_a)["params"], int(out_b.strip())
    return {"ours": ours, "base": base, "params": (params_a, params_b)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    r = measure(ap.parse_args().repeats)
    mo, mb = statistics.median(r["ours"]), statistics.median(r["base"])
    print("| command | median s | min-max s | params |")
    print("|---|---:|---:|---:|")
    print(f"| archspec summary densenet121 --format json | {mo:.3f} | "
          f"{min(r['ours']):.3f}-{max(r['ours']):.3f} | {r['params'][0]:,} |")
    print(f"| torchvision densenet121 + torchinfo.summary | {mb:.3f} | "
          f"{min(r['base']):.3f}-{max(r['base']):.3f} | {r['params'][1]:,} |")
    print(f"\nspeed-up (baseline median / archspec median): {mb / mo:.1f}x; "
          f"same parameter count: {r['params'][0] == r['params'][1]}")


if __name__ == "__main__":
    main()
