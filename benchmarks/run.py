"""archspec against torchvision, side by side: build, train step, eval (fp32, small batches,
bf16 autocast), memory, compile.

Every timing alternates A and B in one process and reports medians with min-max over
repeats; memory is measured per configuration in its own subprocess (peak resident set
size on CPU, torch.cuda.max_memory_allocated on CUDA). Nothing here is asserted: the
numbers and their ratios go to a markdown report (docs/benchmarks.md by default), with
the machine description and the command that produced them.

    python benchmarks/run.py --device cpu              # the full run (about 15 min on 2 cores)
    python benchmarks/run.py --device cuda             # on a GPU: also bf16 autocast, channels_last
    python benchmarks/run.py --device cpu --quick --output /tmp/b.md   # smoke test (tests use it)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import OrderedDict
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import torch  # noqa: E402
import torchvision  # noqa: E402
from torch import nn  # noqa: E402

import archspec  # noqa: E402
from archspec import optimize_for_inference  # noqa: E402


# --- measurement ----------------------------------------------------------------------------

def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def ab(fns: dict[str, Callable[[], object]], repeats: int, device: str,
       warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each fn, measured round-robin so drift hits all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    _sync(device)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return times


def med(ts: list[float]) -> float:
    return statistics.median(ts)


def row(name: str, ts: list[float], base: list[float] | None, unit: float = 1000.0,
        fmt: str = "{:.1f}") -> str:
    ratio = f"{med(ts) / med(base):.3f}x" if base else "1 (baseline)"
    return (f"| {name} | {fmt.format(med(ts) * unit)} | {fmt.format(min(ts) * unit)}-"
            f"{fmt.format(max(ts) * unit)} | {ratio} |")


# --- models ---------------------------------------------------------------------------------

def torchvision_like(name: str, memory_efficient: bool = False) -> nn.Module:
    """torchvision's DenseNet for a zoo spec; the CIFAR stem (which torchvision cannot
    express) is put in place of its ImageNet stem, the rest is torchvision's code."""
    p = archspec.plan(archspec.load(name))
    bn = p.blocks[0].bn_size or 1
    m = torchvision.models.DenseNet(p.blocks[0].growth_rate, p.block_config, p.stem_channels,
                                    bn, 0.0, p.num_classes, memory_efficient=memory_efficient)
    if p.stem_type.value == "cifar":
        rest = [(n, mod) for n, mod in m.features.named_children()
                if n not in ("conv0", "norm0", "relu0", "pool0")]
        conv0 = nn.Conv2d(p.input_shape[0], p.stem_channels, 3, padding=1, bias=False)
        m.features = nn.Sequential(OrderedDict([("conv0", conv0), *rest]))
    return m


def ours(name: str, **overrides) -> nn.Module:
    spec = archspec.load(name, overrides={**overrides, "expect": None} if overrides else None)
    return archspec.build(spec, seed=0)


def train_step_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  autocast: bool = False) -> Callable[[], None]:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    ctx = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if autocast else nullcontext

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with ctx():
            loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return step


# --- sections --------------------------------------------------------------------------------

def machine(device: str) -> list[str]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            names = [ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    lines = [f"- CPU: {cpu}, {os.cpu_count()} logical cores; torch threads: "
             f"{torch.get_num_threads()}",
             f"- Python {platform.python_version()}, torch {torch.__version__}, torchvision "
             f"{torchvision.__version__}, archspec {archspec.__version__}",
             f"- device: {device}"]
    if device.startswith("cuda"):
        lines.append(f"- GPU: {torch.cuda.get_device_name(device)}")
    return lines


def section_build(repeats: int) -> list[str]:
    p = archspec.plan(archspec.load("densenet121"))
    t = ab({"tv": lambda: torchvision.models.densenet121(),
            "plan": lambda: archspec.build(p),
            "name": lambda: archspec.build("densenet121")}, repeats, "cpu")
    return ["## Build time: spec to module (densenet121, on the CPU)", "",
            "| what | median ms | min-max ms | ratio to torchvision |", "|---|---:|---:|---:|",
            row("torchvision.models.densenet121()", t["tv"], None),
            row("archspec.build(plan)", t["plan"], t["tv"]),
            row("archspec.build('densenet121') (load + plan + build)", t["name"], t["tv"]),
            "", "Target: within 1.05x of torchvision's constructor.", ""]


def section_train(device: str, repeats: int, quick: bool) -> list[str]:
    out = ["## Training step (forward, backward, SGD step)", "",
           "| model, batch, input | implementation | median ms | min-max ms | ratio |",
           "|---|---|---:|---:|---:|"]
    cases = [("densenet121", 8, 224), ("densenet-bc-100-12", 64, 32)]
    if quick:
        cases = [("densenet121", 2, 64), ("densenet-bc-100-12", 8, 32)]
    for name, batch, size in cases:
        a, b = torchvision_like(name).to(device), ours(name).to(device)
        b.load_state_dict(a.state_dict())
        x = torch.randn(batch, 3, size, size, device=device)
        y = torch.randint(0, 10, (batch,), device=device)
        t = ab({"tv": train_step_fn(a, x, y), "ours": train_step_fn(b, x, y)}, repeats, device)
        label = f"{name}, {batch}, {size}x{size}"
        out += [f"| {label} | torchvision | {med(t['tv']) * 1e3:.1f} | "
                f"{min(t['tv']) * 1e3:.1f}-{max(t['tv']) * 1e3:.1f} | 1 (baseline) |",
                f"| {label} | archspec | {med(t['ours']) * 1e3:.1f} | "
                f"{min(t['ours']) * 1e3:.1f}-{max(t['ours']) * 1e3:.1f} | "
                f"{med(t['ours']) / med(t['tv']):.3f}x |"]
    out += ["", "Target: within 1.03x of torchvision.", ""]
    return out


ALONE_CHILD = r"""
import statistics, sys, time, torch, torchvision
sys.path.insert(0, {root!r})
import archspec
which, device, batch, size, repeats = {which!r}, {device!r}, {batch!r}, {size!r}, {repeats!r}
x = torch.randn(batch, 3, size, size, device=device)
if which == "torchvision":
    fmt = torch.channels_last if {cl!r} else torch.contiguous_format
    m = torchvision.models.densenet121().to(device).eval().to(memory_format=fmt)
    x = x.contiguous(memory_format=fmt)
else:
    m = archspec.optimize_for_inference(archspec.build("densenet121", seed=0).to(device).eval())
ts = []
with torch.no_grad():
    m(x); m(x)
    for _ in range(repeats):
        if device.startswith("cuda"): torch.cuda.synchronize()
        t0 = time.perf_counter(); m(x)
        if device.startswith("cuda"): torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
print(statistics.median(ts))
"""


def _alone(which: str, device: str, batch: int, size: int, repeats: int, cl: bool) -> float:
    code = ALONE_CHILD.format(root=str(HERE.parent), which=which, device=device, batch=batch,
                              size=size, repeats=repeats, cl=cl)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def section_eval(device: str, repeats: int, quick: bool) -> list[str]:
    batch, size = (2, 64) if quick else (8, 224)
    cl = torch.channels_last
    tv = torchvision.models.densenet121().to(device).eval()
    tv_cl = torchvision.models.densenet121().to(device).eval().to(memory_format=cl)
    mine = ours("densenet121").to(device).eval()
    fast = optimize_for_inference(mine)
    x = torch.randn(batch, 3, size, size, device=device)
    xcl = x.contiguous(memory_format=cl)
    with torch.no_grad():
        # Pass 1: torchvision's two memory formats and archspec eager, alternating.
        t = ab({"tv": lambda: tv(x), "tv_cl": lambda: tv_cl(xcl), "ours": lambda: mine(x)},
               repeats, device)
        best = "tv_cl" if med(t["tv_cl"]) < med(t["tv"]) else "tv"
        # Pass 2: the baseline's best against the fast path, alone together, so neither
        # runs in an allocator state left by two other models.
        base_fn = (lambda: tv_cl(xcl)) if best == "tv_cl" else (lambda: tv(x))
        t2 = ab({"base": base_fn, "fast": lambda: fast(x)}, repeats, device)
        t["fast"] = t2["fast"]
        scale = med(t[best]) / med(t2["base"])  # report pass 2 against pass 1's baseline
        diff = (fast(x) - mine(x)).abs().max().item()
    ips = {k: batch / med(v) for k, v in t.items()}
    out = [f"## Eval forward, densenet121, batch {batch}, {size}x{size}", "",
           "| implementation | median ms | min-max ms | images/s | ratio to torchvision's best |",
           "|---|---:|---:|---:|---:|"]
    for key, label in (("tv", "torchvision, NCHW"), ("tv_cl", "torchvision, channels_last"),
                       ("ours", "archspec eager (NCHW)")):
        out.append(f"| {label} | {med(t[key]) * 1e3:.1f} | {min(t[key]) * 1e3:.1f}-"
                   f"{max(t[key]) * 1e3:.1f} | {ips[key]:.1f} | "
                   f"{med(t[best]) / med(t[key]):.3f}x throughput |")
    fast_ratio = med(t2["base"]) / med(t2["fast"])
    out += [f"| archspec optimize_for_inference (pass 2) | {med(t2['fast']) * 1e3:.1f} | "
            f"{min(t2['fast']) * 1e3:.1f}-{max(t2['fast']) * 1e3:.1f} | "
            f"{batch / med(t2['fast']):.1f} | **{fast_ratio:.3f}x throughput** |",
            ]
    # Pass 3: each model alone in a fresh process (how a server runs one model).
    tv_alone = _alone("torchvision", device, batch, size, repeats, best == "tv_cl")
    fast_alone = _alone("archspec", device, batch, size, repeats, True)
    out += [f"| pass 3, alone in a process: torchvision "
            f"{'channels_last' if best == 'tv_cl' else 'NCHW'} | {tv_alone * 1e3:.1f} | | "
            f"{batch / tv_alone:.1f} | 1.000x throughput |",
            f"| pass 3, alone in a process: archspec optimize_for_inference | "
            f"{fast_alone * 1e3:.1f} | | {batch / fast_alone:.1f} | "
            f"**{tv_alone / fast_alone:.3f}x throughput** |",
            "", f"Pass 1 alternates the first three rows; pass 2 alternates torchvision's best "
                f"({'channels_last' if best == 'tv_cl' else 'NCHW'}, median "
                f"{med(t2['base']) * 1e3:.1f} ms there, {scale:.2f}x its pass-1 time) with "
                "optimize_for_inference, and its ratio is from pass 2; pass 3 runs each model "
                "by itself in a fresh process. Timings of these models move with the "
                "allocator's state (torchvision's own channels_last time differs between "
                "passes), so all three are shown. "
                f"optimize_for_inference output vs the unoptimised model: max abs difference "
                f"{diff:.2e}. Target: at least 1.25x the throughput of torchvision's best "
                "memory format.", ""]
    return out


MEMORY_CHILD = r"""
import json, sys, time, torch
sys.path.insert(0, {root!r})
sys.path.insert(0, {here!r})
import run as bench
impl, eff, device, batch = {impl!r}, {eff!r}, {device!r}, {batch!r}
torch.manual_seed(0)
name = "densenet-bc-100-12"
m = (bench.ours(name, memory_efficient=eff) if impl == "archspec"
     else bench.torchvision_like(name, memory_efficient=eff)).to(device)
x = torch.randn(batch, 3, 32, 32, device=device)
y = torch.randint(0, 10, (batch,), device=device)
step = bench.train_step_fn(m, x, y)
if device.startswith("cuda"):
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
def status(key):
    with open("/proc/self/status") as fh:
        return next(int(ln.split()[1]) for ln in fh if ln.startswith(key + ":"))
with open("/proc/self/clear_refs", "w") as fh:  # resets the peak (VmHWM) to the current RSS
    fh.write("5")
before = status("VmRSS")
step(); step()
peak = status("VmHWM")
gpu = torch.cuda.max_memory_allocated() if device.startswith("cuda") else 0
print(json.dumps({{"peak_mb": peak / 1024, "step_mb": (peak - before) / 1024,
                  "gpu_mb": gpu / 2**20}}))
"""


FIXED_MMAP = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def measure_memory(impl: str, eff: bool, device: str, batch: int,
                   env: dict | None = None) -> dict:
    code = MEMORY_CHILD.format(root=str(HERE.parent), here=str(HERE), impl=impl, eff=eff,
                               device=device, batch=batch)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, env={**os.environ, **(env or {})})
    return json.loads(proc.stdout.strip().splitlines()[-1])


def saved_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct activation storages a training forward keeps for backward,
    counted by autograd's saved_tensors_hooks: deterministic and independent of the
    allocator. Parameters autograd saves (a convolution keeps its weight) are left out;
    backward's recomputation is transient and not counted here (see peak memory)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage().data_ptr() not in params:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t
    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    out.sum().backward()
    model.zero_grad(set_to_none=True)
    return sum(seen.values())


LEVELS = (False, True, "max")  # memory_efficient: off, the efficient-DenseNet trade, max


def section_memory(device: str, repeats: int, quick: bool) -> list[str]:
    batch = 8 if quick else 64
    cuda = device.startswith("cuda")
    allocators = [("PyTorch's CUDA caching allocator", None)] if cuda else \
        [("glibc defaults", None), ("MALLOC_MMAP_THRESHOLD_=131072", FIXED_MMAP)]
    what = ("torch.cuda.max_memory_allocated (GPU MB; peak and step MB are the host "
            "process's RSS)" if cuda else
            "the process's peak RSS during two training steps (VmHWM, reset just before "
            "them); step MB is that peak minus the RSS before the steps, i.e. what training "
            "adds to the built model and the loaded runtime")
    out = ["## Memory: the memory_efficient levels", "",
           "`memory_efficient: true` is the efficient-DenseNet trade (concatenation, norms "
           "and activations recomputed in backward, convolution outputs kept); `max` keeps "
           "only each block's output (and a transition only its input, that output) and "
           "reruns the convolutions too.", "",
           "### Saved activations (saved_tensors_hooks, parameters left out), one training "
           "forward", "",
           "| model, batch, input | memory_efficient | saved MB | ratio to off |",
           "|---|---|---:|---:|"]
    for name, n, size in ([("densenet-bc-100-12", batch, 32), ("densenet121", 2 if quick
                                                                   else 8, 64 if quick else 224)]):
        x = torch.randn(n, 3, size, size, device=device)
        sizes = {lvl: saved_bytes(ours(name, memory_efficient=lvl).to(device), x)
                 for lvl in LEVELS}
        for lvl in LEVELS:
            out.append(f"| {name}, {n}, {size}x{size} | {lvl} | {sizes[lvl] / 2**20:.0f} | "
                       f"{sizes[lvl] / sizes[False]:.3f}x |")
    out += ["", "Targets: true at most 0.5x, max at most 0.15x of off.", "",
            f"### Peak memory: training step, densenet-bc-100-12, batch {batch}, 32x32", "",
            f"Each configuration in its own process; measured: {what}.", ""]
    for label, env in allocators:
        res = {(impl, eff): measure_memory(impl, eff, device, batch, env)
               for impl in ("archspec", "torchvision") for eff in LEVELS
               if impl == "archspec" or eff != "max"}
        key = "gpu_mb" if cuda else "peak_mb"
        off, tv_on = res[("archspec", False)][key], res[("torchvision", True)][key]
        out += [f"#### Allocator: {label}", "",
                "| implementation | memory_efficient | peak MB | step MB |"
                + (" GPU MB |" if cuda else ""),
                "|---|---|---:|---:|" + ("---:|" if cuda else "")]
        for (impl, eff), r in res.items():
            out.append(f"| {impl} | {eff} | {r['peak_mb']:.0f} | {r['step_mb']:.0f} |"
                       + (f" {r['gpu_mb']:.0f} |" if cuda else ""))
        out.append("")
        for lvl in (True, "max"):
            r = res[("archspec", lvl)]
            out.append(f"- archspec {lvl} / off, peak: **{r[key] / off:.2f}x**; step memory: "
                       f"{r['step_mb'] / res[('archspec', False)]['step_mb']:.2f}x; "
                       f"/ torchvision memory_efficient=True, peak: {r[key] / tv_on:.2f}x")
        out.append("")
    out += ["### Step time by level (forward, backward, SGD step; alternating in one process)",
            "", "| model, batch, input | memory_efficient | median ms | min-max ms | ratio |",
            "|---|---|---:|---:|---:|", *step_time_rows(device, repeats, quick)]
    if not cuda:
        # The same in a process whose glibc heap keeps freed blocks for reuse: no page
        # faults on each step's fresh activations, so the ratio is the compute's alone.
        child = [sys.executable, __file__, "--device", device, "--repeats", str(repeats),
                 "--section", "steps"] + (["--quick"] if quick else [])
        proc = subprocess.run(child, capture_output=True, text=True, check=True,
                              env={**os.environ, **HEAP_KEPT})
        out += ["", "The same, glibc keeping freed memory on its heap ("
                + " ".join(f"{k}={v}" for k, v in HEAP_KEPT.items()) + "):", "",
                "| model, batch, input | memory_efficient | median ms | min-max ms | ratio |",
                "|---|---|---:|---:|---:|", *proc.stdout.strip().splitlines()]
    out += ["", "Target: true at most 1.15x of off. On the CPU the first table includes the "
            "page faults of each step's freshly mapped activations, which the plain path "
            "(more, larger activations) pays most; the second removes them, leaving the "
            "recomputation's own cost (per layer two normalisations, with the forward's "
            "batch statistics on the CPU, two ReLUs and a copy of the layer's input, "
            "mostly). On a shared 2-core machine single steps vary by tens of percent "
            "(the min-max columns); compare medians of runs with many repeats.", ""]
    return out


# glibc's largest mmap threshold (32 MB) and no trimming: freed activations stay mapped.
HEAP_KEPT = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "68719476736",
             "MALLOC_TOP_PAD_": "1073741824"}


def step_time_rows(device: str, repeats: int, quick: bool) -> list[str]:
    cuda = device.startswith("cuda")
    nchw, cl = torch.contiguous_format, torch.channels_last
    cases = ([("densenet-bc-100-12", 8, 32, nchw), ("densenet121", 2, 64, nchw)] if quick
             else [("densenet-bc-100-12", 64, 32, nchw),
                   ("densenet121", 8 if not cuda else 64, 224, nchw),
                   ("densenet121", 8 if not cuda else 64, 224, cl)])
    out = []
    for name, n, size, fmt in cases:
        x = torch.randn(n, 3, size, size, device=device).contiguous(memory_format=fmt)
        fns = {}
        for lvl in LEVELS:
            m = ours(name, memory_efficient=lvl).to(device).to(memory_format=fmt)
            y = torch.randint(0, m.num_classes, (n,), device=device)
            fns[str(lvl)] = train_step_fn(m, x, y)
        t = ab(fns, repeats, device)
        layout = ", channels_last" if fmt == cl else ""
        for lvl in LEVELS:
            out.append(row(f"{name}, {n}, {size}x{size}{layout} | {lvl}", t[str(lvl)],
                           t["False"] if lvl is not False else None))
    return out


def section_compile(device: str, quick: bool) -> list[str]:
    name, batch = "densenet-bc-100-12", (8 if quick else 64)
    m = ours(name).to(device).eval()
    x = torch.randn(batch, 3, 32, 32, device=device)
    backend = "aot_eager" if quick else "inductor"
    t0 = time.perf_counter()
    compiled = torch.compile(m, fullgraph=True, backend=backend)
    with torch.no_grad():
        y = compiled(x)
        compile_s = time.perf_counter() - t0
        ref = m(x)
        diff = (y - ref).abs().max().item()
        t = ab({"eager": lambda: m(x), "compiled": lambda: compiled(x)}, 5 if quick else 15,
               device)
    # On CUDA, convolutions may run in TF32 (10-bit mantissa) in eager and compiled alike,
    # with different kernels: their outputs agree to about 1e-3 of the output's scale.
    tf32 = device.startswith("cuda") and torch.backends.cudnn.allow_tf32
    tol = 2e-3 * ref.abs().max().item() if tf32 else 1e-4
    why = " (TF32 convolutions: 2e-3 of the largest output)" if tf32 else ""
    return [f"## torch.compile ({backend}, fullgraph=True), {name} eval, batch {batch}", "",
            "| mode | median ms | min-max ms | ratio |", "|---|---:|---:|---:|",
            row("eager", t["eager"], None), row("compiled", t["compiled"], t["eager"]), "",
            f"Compile and first call: {compile_s:.1f} s; max abs difference from eager: "
            f"{diff:.2e} (must be within {tol:.1e}{why}): "
            f"{'ok' if diff <= tol else 'OVER'}.", ""]


def section_small(device: str, repeats: int, quick: bool) -> list[str]:
    """Eval at batch 1 and 8, where a GPU is launch-bound: torchvision in both memory
    formats, optimize_for_inference, and on CUDA the same with example_input (a recorded
    CUDA graph) and torch.compile(mode="reduce-overhead") of torchvision's model."""
    import warnings

    cuda = device.startswith("cuda")
    size = 64 if quick else 224
    batches = (1,) if quick else (1, 8)
    reps = repeats * 4 if cuda else repeats  # a GPU call at batch 1 takes milliseconds
    cl = torch.channels_last
    tv = torchvision.models.densenet121().to(device).eval()
    tv_cl = torchvision.models.densenet121().to(device).eval().to(memory_format=cl)
    mine = ours("densenet121").to(device).eval()
    fast = optimize_for_inference(mine)
    out = [f"## Small batches: eval forward, densenet121, {size}x{size}", "",
           "| batch | implementation | median ms | min-max ms | images/s | "
           "ratio to torchvision's best |", "|---:|---|---:|---:|---:|---:|"]
    notes = []
    for batch in batches:
        x = torch.randn(batch, 3, size, size, device=device)
        xcl = x.contiguous(memory_format=cl)
        fns = {"tv": lambda: tv(x), "tv_cl": lambda: tv_cl(xcl), "fast": lambda: fast(x)}
        labels = {"tv": "torchvision, NCHW", "tv_cl": "torchvision, channels_last",
                  "fast": "archspec optimize_for_inference"}
        with torch.no_grad():
            if cuda:
                graphed = optimize_for_inference(mine, example_input=x)
                fns["graph"] = lambda: graphed(x)
                labels["graph"] = "archspec optimize_for_inference(example_input=)"
                diff = (graphed(x) - fast(x)).abs().max().item()
                notes.append(f"batch {batch}: recorded graph vs eager optimized model, max "
                             f"abs difference {diff:.2e}")
                if not quick:
                    ro = torch.compile(tv_cl, mode="reduce-overhead")
                    for _ in range(3):
                        ro(xcl)
                    fns["ro"] = lambda: ro(xcl)
                    labels["ro"] = 'torchvision channels_last, torch.compile("reduce-overhead")'
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    graphed = optimize_for_inference(mine, example_input=x)
                fns["graph"] = lambda: graphed(x)
                labels["graph"] = "archspec example_input= (CPU: no graph, eager replay)"
            t = ab(fns, reps, device, warmup=3)
        best = "tv_cl" if med(t["tv_cl"]) < med(t["tv"]) else "tv"
        for key, label in labels.items():
            ratio = med(t[best]) / med(t[key])
            bold = "**" if key == "graph" and cuda else ""
            out.append(f"| {batch} | {label} | {med(t[key]) * 1e3:.2f} | "
                       f"{min(t[key]) * 1e3:.2f}-{max(t[key]) * 1e3:.2f} | "
                       f"{batch / med(t[key]):.1f} | {bold}{ratio:.3f}x throughput{bold} |")
    out += ["", "All rows of one batch alternate in one process. Target (CUDA): the recorded "
            "graph at least 2x the throughput of torchvision's best format at batch 1 and 8. "
            "The reduce-overhead row is torchvision's model under torch.compile's own CUDA "
            "graphs, for comparison." + (" " + "; ".join(notes) + "." if notes else ""), ""]
    return out


def section_cuda_extras(device: str, repeats: int) -> list[str]:
    """bf16 autocast and channels_last training on CUDA, against torchvision, with the
    memory levels in the same formats (they keep the input's layout)."""
    out = ["## CUDA: bf16 autocast and channels_last, training step, densenet121 batch 64",
           "", "| implementation | options | median ms | images/s | ratio to torchvision |",
           "|---|---|---:|---:|---:|"]
    x = torch.randn(64, 3, 224, 224, device=device)
    y = torch.randint(0, 1000, (64,), device=device)
    impls = {"torchvision": lambda: torchvision.models.densenet121(),
             "archspec": lambda: ours("densenet121"),
             "archspec memory_efficient: true": lambda: ours("densenet121",
                                                             memory_efficient=True),
             "archspec memory_efficient: max": lambda: ours("densenet121",
                                                            memory_efficient="max")}
    for opts in ("bf16", "bf16+channels_last"):
        fmt = torch.channels_last if "channels_last" in opts else torch.contiguous_format
        xx = x.contiguous(memory_format=fmt)
        fns = {label: train_step_fn(make().to(device).to(memory_format=fmt), xx, y,
                                    autocast=True) for label, make in impls.items()}
        t = ab(fns, repeats, device)
        for label in impls:
            out.append(f"| {label} | {opts} | {med(t[label]) * 1e3:.1f} | "
                       f"{64 / med(t[label]):.0f} | "
                       f"{med(t[label]) / med(t['torchvision']):.3f}x |")
    return out + ["", "Target: archspec within 1.03x of torchvision; the memory levels at "
                  "most 1.15x archspec's plain step.", ""]


def section_bf16(device: str, repeats: int, quick: bool) -> list[str]:
    """Eval under bf16 autocast: torchvision channels_last against optimize_for_inference
    (on CUDA at batch 64 and 8, with the recorded graph at 8; on the CPU at batch 8)."""
    cuda = device.startswith("cuda")
    size = 64 if quick else 224
    batches = ((8,) if quick else (64, 8)) if cuda else ((2,) if quick else (8,))
    dtype = torch.bfloat16
    out = [f"## Eval under bf16 autocast, densenet121 {size}x{size}", "",
           "| batch | implementation | median ms | images/s | ratio to torchvision |",
           "|---:|---|---:|---:|---:|"]
    tv = torchvision.models.densenet121().to(device).eval().to(memory_format=torch.channels_last)
    mine = ours("densenet121").to(device).eval()
    fast = optimize_for_inference(mine)
    kind = "cuda" if cuda else "cpu"
    diffs = []
    for batch in batches:
        x = torch.randn(batch, 3, size, size, device=device)
        xcl = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), torch.autocast(kind, dtype=dtype):
            fns = {"tv": lambda: tv(xcl), "fast": lambda: fast(x)}
            if cuda and batch <= 8:
                graphed = optimize_for_inference(mine, example_input=x)
                fns["graph"] = lambda: graphed(x)
            t = ab(fns, repeats * 2 if cuda else repeats, device, warmup=2)
            ref = mine(x).float()
            diffs.append((fast(x).float() - ref).abs().max().item() / ref.abs().max().item())
        labels = {"tv": "torchvision, channels_last", "fast": "archspec optimize_for_inference",
                  "graph": "archspec optimize_for_inference(example_input=)"}
        for k in fns:
            out.append(f"| {batch} | {labels[k]} | {med(t[k]) * 1e3:.2f} | "
                       f"{batch / med(t[k]):.1f} | {med(t['tv']) / med(t[k]):.3f}x throughput |")
    return out + ["", "Rows of one batch alternate in one process. Target (CUDA): "
                  "optimize_for_inference at least 1.25x torchvision's throughput under bf16 "
                  "autocast, as in fp32. Largest difference from the unoptimised model under "
                  f"the same autocast, relative to its largest output: {max(diffs):.1e}.", ""]


def section_volumes(device: str, repeats: int, quick: bool) -> list[str]:
    """densenet121-3d against MONAI's DenseNet121(spatial_dims=3, in_channels=1,
    out_channels=2) on the same weights: training step time per memory level and the
    bytes autograd keeps (saved_tensors_hooks; on CUDA also the allocator's peak), and
    eval time, eager and optimize_for_inference."""
    from monai.networks.nets import DenseNet121

    batch, side = (2, 32) if quick else (2, 48)
    torch.manual_seed(0)
    monai = DenseNet121(spatial_dims=3, in_channels=1, out_channels=2).to(device)
    models = {"MONAI": monai}
    for level in LEVELS:
        m = archspec.build("densenet121-3d", weights=monai.state_dict(), device=device)
        m.set_grad_checkpointing(level)
        models[f"archspec, memory_efficient: {str(level).lower()}"] = m
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, side, side, side, generator=g).to(device)
    y = torch.randint(0, 2, (batch,), generator=g).to(device)
    saved = {name: saved_bytes(m, x) for name, m in models.items()}
    peak = {}
    if device.startswith("cuda"):
        for name, m in models.items():
            step = train_step_fn(m, x, y)
            step()
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            step()
            torch.cuda.synchronize()
            peak[name] = torch.cuda.max_memory_allocated()
    times = ab({name: train_step_fn(m, x, y) for name, m in models.items()}, repeats, device)
    shape = f"batch {batch}, 1x{side}x{side}x{side}"
    out = ["## Volumes: densenet121-3d against MONAI's DenseNet121 (3D, 1 in, 2 out)", "",
           f"Same weights (MONAI's, loaded with `weights=`), {shape}, {device}. Training "
           "step: forward, cross-entropy, backward, SGD step. Saved: the distinct storages "
           "a training forward keeps for backward (saved_tensors_hooks, parameters left "
           "out)" + ("; peak: torch.cuda.max_memory_allocated over one step" if peak else "")
           + ". Ratios are to MONAI's.", "",
           "| implementation | median ms | min-max ms | time ratio | saved MB | saved ratio |"
           + (" peak MB | peak ratio |" if peak else ""),
           "|---|---:|---:|---:|---:|---:|" + ("---:|---:|" if peak else "")]
    base = times["MONAI"]
    step_ratio = {name: med(ts) / med(base) for name, ts in times.items()}
    for name, ts in times.items():
        cells = (f"| {name} | {med(ts) * 1e3:.0f} | {min(ts) * 1e3:.0f}-{max(ts) * 1e3:.0f} | "
                 f"{med(ts) / med(base):.3f}x | {saved[name] / 2**20:.1f} | "
                 f"{saved[name] / saved['MONAI']:.3f}x |")
        if peak:
            cells += f" {peak[name] / 2**20:.0f} | {peak[name] / peak['MONAI']:.3f}x |"
        out.append(cells)
    for m in models.values():
        m.eval()
    fast = archspec.optimize_for_inference(models["archspec, memory_efficient: false"])

    def infer(m):
        def run():
            with torch.no_grad():
                m(x)
        return run
    times = ab({"MONAI eager": infer(monai),
                "archspec eager": infer(models["archspec, memory_efficient: false"]),
                "archspec optimize_for_inference": infer(fast)}, repeats, device)
    out += ["", f"Eval forward, {shape}:", "",
            "| implementation | median ms | min-max ms | ratio to MONAI |",
            "|---|---:|---:|---:|"]
    base = times["MONAI eager"]
    out += [row(name, ts, base if name != "MONAI eager" else None, fmt="{:.0f}")
            for name, ts in times.items()]
    # issue 21's targets, judged from the medians above
    level = "archspec, memory_efficient: {}".format
    checks = [
        ("plain step <= 1.03x MONAI's", step_ratio[level("false")] <= 1.03),
        ("`true`: saved <= 0.5x", saved[level("true")] <= 0.5 * saved["MONAI"]),
        ("`true`: step <= 1.15x", step_ratio[level("true")] <= 1.15),
        ("`max`: saved <= 0.2x", saved[level("max")] <= 0.2 * saved["MONAI"]),
        ("`max`: step <= 1.3x", step_ratio[level("max")] <= 1.3),
        ("optimize_for_inference faster than MONAI eager",
         med(times["archspec optimize_for_inference"]) < med(base))]
    out += ["", "Targets (issue 21), from the medians above: " + "; ".join(
        f"{what}: {'met' if ok else 'NOT met'}" for what, ok in checks) + ". Times on a "
        "shared 2-core machine spread by about 10% between runs (the min-max columns)."]
    return out


def section_family(device: str, repeats: int, quick: bool) -> list[str]:
    """The dense family's members against their reference modules on the same weights:
    archspec's VoVNets against timm's, and (where ARCHSPEC_REFERENCE_CODE names the
    reference code) HarDNet and PeleeNet against theirs: training step, eval forward, and
    optimize_for_inference."""
    import timm

    batch, side = (2, 96) if quick else (8, 224)
    names = ["ese_vovnet19b_dw"] if quick else ["ese_vovnet19b_dw", "ese_vovnet39b"]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, side, side, generator=g).to(device)
    y = torch.randint(0, 1000, (batch,), generator=g).to(device)
    out = ["## The dense family against the reference implementations", "",
           f"timm {timm.__version__}'s module and archspec's on the same weights (timm's "
           f"state_dict loaded with `weights=`), batch {batch}, 3x{side}x{side}, {device}. "
           "Training step: forward, cross-entropy, backward, SGD step. Ratios are to timm's "
           "(lower is faster).", "",
           "| model | implementation | median ms | min-max ms | ratio to timm |",
           "|---|---|---:|---:|---:|"]
    verdicts = []
    for name in names:
        torch.manual_seed(0)
        ref = timm.create_model(name).to(device)
        mine = archspec.build(name, weights=ref.state_dict(), device=device)
        steps = ab({"timm": train_step_fn(ref, x, y), "archspec": train_step_fn(mine, x, y)},
                   repeats, device)
        ref.eval()
        mine.eval()
        fast = archspec.optimize_for_inference(mine)

        def infer(m):
            def run():
                with torch.no_grad():
                    m(x)
            return run
        evals = ab({"timm": infer(ref), "archspec": infer(mine),
                    "archspec optimize_for_inference": infer(fast)}, repeats, device)
        step_ratio = med(steps["archspec"]) / med(steps["timm"])
        eval_ratio = med(evals["archspec"]) / med(evals["timm"])
        for what, times in (("train step", steps), ("eval", evals)):
            for impl, ts in times.items():
                ratio = f"{med(ts) / med(times['timm']):.3f}x" if impl != "timm" else "1"
                out.append(f"| {name} ({what}) | {impl} | {med(ts) * 1e3:.1f} | "
                           f"{min(ts) * 1e3:.1f}-{max(ts) * 1e3:.1f} | {ratio} |")
        fast_ratio = med(evals["archspec optimize_for_inference"]) / med(evals["timm"])
        verdicts.append(f"{name}: train step {step_ratio:.3f}x ("
                        f"{'met' if step_ratio <= 1.03 else 'NOT met'}), eval {eval_ratio:.3f}x "
                        f"({'met' if eval_ratio <= 1.0 else 'NOT met'}), "
                        f"optimize_for_inference {fast_ratio:.3f}x")
    out += ["", "Targets (issue 22), from the medians above (train step <= 1.03x timm's, eval "
            "no slower): " + "; ".join(verdicts) + ". Times on a shared 2-core machine "
            "spread by about 10% between runs (the min-max columns)."]
    return out + [""] + _reference_rows(device, repeats, x, y, quick)


# HarDNet's and PeleeNet's reference code is not a package: the benchmark reads it from a
# checkout named by ARCHSPEC_REFERENCE_CODE (a folder holding hardnet.py and peleenet.py,
# from PingoLH/Pytorch-HarDNet and Robert-JunWang/PeleeNet).
REFERENCES = [("hardnet68", "hardnet.py", lambda r: r.HarDNet(pretrained=False, arch=68)),
              ("hardnet39ds", "hardnet.py",
               lambda r: r.HarDNet(pretrained=False, depth_wise=True, arch=39)),
              ("peleenet", "peleenet.py", lambda r: r.PeleeNet())]


def _reference_rows(device: str, repeats: int, x, y, quick: bool) -> list[str]:
    import importlib.util

    folder = os.environ.get("ARCHSPEC_REFERENCE_CODE")
    out = ["### HarDNet and PeleeNet against their reference code", ""]
    if not folder:
        return out + ["Not run: set ARCHSPEC_REFERENCE_CODE to a folder holding the "
                      "reference code's hardnet.py and peleenet.py.", ""]
    out += [f"The reference modules (read from {os.path.basename(folder.rstrip('/'))}/: "
            "hardnet.py, peleenet.py) and archspec's on the same weights (the reference's "
            f"state_dict loaded with `weights=`), batch {x.shape[0]}, "
            f"3x{x.shape[2]}x{x.shape[3]}, {device}. Ratios are to the reference's "
            "(lower is faster).", "",
            "| model | implementation | median ms | min-max ms | ratio to the reference |",
            "|---|---|---:|---:|---:|"]
    verdicts = []
    for name, file, make in (REFERENCES[:1] if quick else REFERENCES):
        spec = importlib.util.spec_from_file_location(file[:-3], os.path.join(folder, file))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        torch.manual_seed(0)
        ref = make(module).to(device)
        mine = archspec.build(name, weights=ref.state_dict(), device=device)
        steps = ab({"reference": train_step_fn(ref, x, y), "archspec": train_step_fn(mine, x, y)},
                   repeats, device)
        ref.eval()
        mine.eval()
        fast = archspec.optimize_for_inference(mine)

        def infer(m):
            def run():
                with torch.no_grad():
                    m(x)
            return run
        evals = ab({"reference": infer(ref), "archspec": infer(mine),
                    "archspec optimize_for_inference": infer(fast)}, repeats, device)
        for what, times in (("train step", steps), ("eval", evals)):
            for impl, ts in times.items():
                ratio = (f"{med(ts) / med(times['reference']):.3f}x" if impl != "reference"
                         else "1")
                out.append(f"| {name} ({what}) | {impl} | {med(ts) * 1e3:.1f} | "
                           f"{min(ts) * 1e3:.1f}-{max(ts) * 1e3:.1f} | {ratio} |")
        step = med(steps["archspec"]) / med(steps["reference"])
        ev = med(evals["archspec"]) / med(evals["reference"])
        opt = med(evals["archspec optimize_for_inference"]) / med(evals["reference"])
        verdicts.append(f"{name}: train step {step:.3f}x ({'met' if step <= 1.03 else 'NOT met'}"
                        f"), eval {ev:.3f}x ({'met' if ev <= 1.0 else 'NOT met'}), "
                        f"optimize_for_inference {opt:.3f}x")
    return out + ["", "Targets (issue 22): " + "; ".join(verdicts) + ".", ""]


SECTIONS = ("build", "train", "eval", "small", "bf16", "memory", "compile", "volumes",
            "family")


def run_section(name: str, device: str, repeats: int, quick: bool) -> list[str]:
    return {"build": lambda: section_build(repeats),
            "train": lambda: section_train(device, repeats, quick),
            "eval": lambda: section_eval(device, repeats, quick),
            "small": lambda: section_small(device, repeats, quick),
            "bf16": lambda: section_bf16(device, repeats, quick),
            "memory": lambda: section_memory(device, max(3, repeats // 3), quick),
            "compile": lambda: section_compile(device, quick),
            "volumes": lambda: section_volumes(device, max(3, repeats // 2), quick),
            "family": lambda: section_family(device, max(3, repeats // 2), quick),
            "steps": lambda: step_time_rows(device, repeats, quick)}[name]()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--output", default=str(HERE.parent / "docs" / "benchmarks.md"))
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    ap.add_argument("--update", choices=SECTIONS, metavar="SECTION",
                    help="regenerate one section (" + ", ".join(SECTIONS) + ") in place "
                    "in --output; the rest of the file stays as its own run wrote it")
    ap.add_argument("--section", choices=SECTIONS + ("steps",),  # a child process
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("CUDA is not available on this machine", file=sys.stderr)
        return 1
    repeats = args.repeats or (3 if args.quick else 15)
    if args.section:  # one section, in this fresh process; markdown on stdout
        print("\n".join(run_section(args.section, args.device, repeats, args.quick)))
        return 0
    command = "python benchmarks/run.py " + " ".join(sys.argv[1:])
    if args.update:
        return update_section(args, repeats, command)
    parts = ["# Benchmarks", "",
             f"Generated by `{command}` on {time.strftime('%Y-%m-%d')}. Medians over "
             f"{repeats} repeats, A and B alternating in one process (a fresh process per "
             "section); ratios are archspec / "
             "torchvision (for times lower is better). Nothing here is asserted in tests.", "",
             "## Machine", "", *machine(args.device), ""]
    # Each section in its own process: one section's allocations must not leave the
    # allocator (and page cache) in a state that helps or hurts the next one's timings.
    child = [a for a in sys.argv[1:] if a not in ("--output",)]
    if "--output" in sys.argv:
        i = sys.argv.index("--output")
        child = sys.argv[1:i] + sys.argv[i + 2:]
    for name in SECTIONS:
        print(f"[{name}]", file=sys.stderr, flush=True)
        proc = subprocess.run([sys.executable, __file__, *child, "--section", name],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return 1
        parts += proc.stdout.rstrip("\n").split("\n") + [""]
    if args.device.startswith("cuda"):
        parts += section_cuda_extras(args.device, repeats)
    extra = HERE / "notes.md"
    if extra.exists():
        parts += [extra.read_text().rstrip(), ""]
    text = "\n".join(parts)
    Path(args.output).write_text(text)
    print(text)
    return 0


def update_section(args: argparse.Namespace, repeats: int, command: str) -> int:
    """Replace one top-level section of the report with a fresh run of it (in a child
    process, as a full run does), marked with the command and date that made it."""
    path = Path(args.output)
    if not path.exists():
        print(f"{path}: no report to update; run without --update first", file=sys.stderr)
        return 1
    child = [sys.executable, __file__, "--device", args.device, "--repeats", str(repeats),
             *(["--quick"] if args.quick else []),
             *(["--threads", str(args.threads)] if args.threads else []),
             "--section", args.update]
    proc = subprocess.run(child, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        return 1
    fresh = proc.stdout.rstrip("\n").split("\n")
    lines = path.read_text().split("\n")
    try:
        start = lines.index(fresh[0])  # the section's "## ..." heading
    except ValueError:
        print(f"{path}: no section headed {fresh[0]!r} to replace", file=sys.stderr)
        return 1
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
               len(lines))
    stamp = (f"This section was regenerated alone by `{command}` on "
             f"{time.strftime('%Y-%m-%d')}; the rest of the file comes "
             "from the run named at the top.")
    lines[start:end] = [fresh[0], "", stamp, *fresh[1:], ""]
    path.write_text("\n".join(lines))
    print("\n".join(fresh))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
