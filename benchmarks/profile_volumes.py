"""Where densenet121-3d's eval forward spends its time against MONAI's DenseNet121 (3D,
1 in, 2 out, the same weights): the kernels each runs, by total device time, and how
many it launches.

    python benchmarks/profile_volumes.py --device cuda [--batch 2 --side 48 --top 15]

Written for issue 21's open CUDA rows (docs/benchmarks.md, "Volumes": archspec's plain
eval at 1.36x MONAI's time, its plain training step at 1.17x, on an H200). On the CPU the
two forwards run the same kernels (121 batch norms, 120 convolutions; archspec 62
concatenations to MONAI's 58: torchvision's layer concatenates the list of all earlier
features, MONAI's the running concatenation and the new features), so the difference
there is in how long one kernel takes, which this table shows per kernel name.
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

import archspec


def kernels(model: torch.nn.Module, x: torch.Tensor, device: str, repeats: int):
    """(name, calls per forward, total ms per forward) of the kernels one forward runs."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with torch.no_grad():
        for _ in range(3):
            model(x)
        if device == "cuda":
            torch.cuda.synchronize()
        with profile(activities=activities) as prof:
            for _ in range(repeats):
                model(x)
            if device == "cuda":
                torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        if device == "cuda":
            t = e.self_device_time_total
            if t <= 0 or e.key.startswith(("aten::", "cuda")):
                continue  # device kernels only (aten ops are their CPU-side launchers)
        else:
            t = e.self_cpu_time_total
            if t <= 0 or not e.key.startswith("aten::"):
                continue
        rows.append((e.key, e.count / repeats, t / repeats / 1e3))
    return sorted(rows, key=lambda r: -r[2])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--side", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args()
    from monai.networks.nets import DenseNet121

    torch.manual_seed(0)
    ref = DenseNet121(spatial_dims=3, in_channels=1, out_channels=2).to(args.device).eval()
    mine = archspec.build("densenet121-3d", weights=ref.state_dict(),
                          device=args.device).eval()
    fast = archspec.optimize_for_inference(mine)
    x = torch.randn(args.batch, 1, args.side, args.side, args.side, device=args.device)
    print(f"densenet121-3d eval forward, batch {args.batch}, 1x{args.side}^3, "
          f"{args.device}, torch {torch.__version__}; per forward, mean of {args.repeats}")
    for name, model in (("MONAI", ref), ("archspec", mine),
                        ("archspec optimize_for_inference", fast)):
        rows = kernels(model, x, args.device, args.repeats)
        total = sum(r[2] for r in rows)
        launches = sum(r[1] for r in rows)
        print(f"\n{name}: {total:.2f} ms in {launches:.0f} "
              f"{'kernels' if args.device == 'cuda' else 'aten ops'}")
        print(f"  {'kernel':70s} {'calls':>6s} {'ms':>8s}")
        for key, calls, ms in rows[:args.top]:
            print(f"  {key[:70]:70s} {calls:6.0f} {ms:8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
