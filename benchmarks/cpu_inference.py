"""CPU inference at the limit: optimize_for_inference against ONNX Runtime, with the
machine's measured matmul throughput as the roofline, whole nets and stage by stage.

    python benchmarks/cpu_inference.py [--repeats 15] [--cases densenet121:1,densenet121:8,densenet-bc-100-12:64]
    python benchmarks/cpu_inference.py --pointwise --repeats 21   # the 1x1-as-matmul A/B
    python benchmarks/cpu_inference.py --blocking --repeats 9 --cases densenet121:16,...
                                                # cache-sized passes against one pass
    python benchmarks/cpu_inference.py --direct --repeats 21 --cases densenet121:1:224,...
                                                # the blocks' direct eager loop against modules

Everything runs in one process, the contenders alternating call by call, medians over
``--repeats``; torch and ONNX Runtime use the same number of intra-op threads (torch's).

- roofline: a 2048x2048 fp32 matmul with torch on those threads, in GFLOP/s, timed in
  the same alternation as the nets. A net's GFLOP/s is 2 x the plan's MACs (the
  unrearranged model's work) / its time.
- eager: torchvision's DenseNet where it has the net (densenet121), else archspec's plain
  model; `optimize_for_inference` (fp32, channels_last), eager and scripted (what
  `archspec export --optimize -o m.pt` writes: the same kernels without Python's per-op
  cost); ONNX Runtime on the plain `archspec export` graph (what `export --optimize`
  writes for .onnx too).
- stages: each stage of the plain model exported to ONNX alone, against the same stage of
  the optimized model, on the stage's real input. ONNX Runtime keeps its own blocked
  layout (NCHWc) between the nodes of one graph, so a stage alone pays a layout change at
  its entry and exit that the whole net does not: its stages sum to more than the net.
- bf16: `optimize_for_inference(model, dtype=torch.bfloat16)` against its fp32 self, where
  the CPU computes bf16 natively; elsewhere it falls back to fp32 and the row says so.

ONNX Runtime's intra-op threads normally spin for a while after each run; alternating
call by call, those spinning threads took the two cores from the next torch call (torch
measured 2x slower beside them). Spinning is off here; ONNX Runtime's own time did not
change with it (densenet121 batch 1: 44.1 ms spinning, 44.2 ms not).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import nn

import archspec


def timed(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds per call, the functions alternating call by call."""
    for fn in fns.values():
        fn()
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def ort_session(module: nn.Module, x: torch.Tensor, path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), str(path), dynamo=True, verbose=False)
    return ort_runner(path, x)


def ort_runner(path: Path, x: torch.Tensor):
    """One call of ONNX Runtime on the .onnx at ``path`` with torch's intra-op threads and
    spinning off (see the module docstring); export_runtimes.py uses it too."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    s = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {s.get_inputs()[0].name: x.numpy()}
    return lambda: s.run(None, feed)


def torch_call(module: nn.Module, x: torch.Tensor):
    def run():
        with torch.inference_mode():
            module(x)
    return run


class _Head(nn.Module):
    """The plain model's head as one stage: norm5, ReLU, pool, classifier (the zoo nets
    measured here use ReLU)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.forward_head(torch.relu(self.model.features.norm5(x)))


class _FastHead(nn.Module):
    def __init__(self, fast: nn.Module):
        super().__init__()
        self.fast = fast

    def forward(self, x):
        x = self.fast.head_pre(x)
        return self.fast.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def stages(model: nn.Module, fast: nn.Module):
    """(name, plain stage, optimized stage) in order, the plan's stage names."""
    feats = dict(model.features.named_children())
    names = list(feats)
    first = names.index("denseblock1")
    out = [("stem", nn.Sequential(*[feats[n] for n in names[:first]]),
            nn.Sequential(fast.stem, fast.stem_pool))]
    body = [n for n in names if n.startswith(("denseblock", "transition"))]
    out += [(n, feats[n], fast.body[i]) for i, n in enumerate(body)]
    out.append(("head", _Head(model), _FastHead(fast)))
    return out


def case(spec: str, batch: int, repeats: int, folder: Path) -> list[str]:
    torch.manual_seed(0)
    model = archspec.build(spec, seed=0).eval()
    fast = archspec.optimize_for_inference(model)
    p = model.plan
    x = torch.randn(batch, *p.input_shape)
    gflop = 2 * p.macs * batch / 1e9
    fns = {}
    if spec == "densenet121":
        import torchvision

        tv = torchvision.models.densenet121().eval()
        tv.load_state_dict(model.state_dict())
        fns["torchvision eager"] = torch_call(tv, x)
    else:
        fns["archspec eager"] = torch_call(model, x)
    fns["optimize_for_inference"] = torch_call(fast, x)
    if _passes(fast, x) > 1:  # the same copy with the batch in one pass, side by side
        whole = archspec.optimize_for_inference(model)
        whole.cache_bytes = 0
        fns["optimize_for_inference, one pass"] = torch_call(whole, x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notice
        fns["optimize_for_inference, TorchScript"] = torch_call(torch.jit.script(fast), x)
    fns["ONNX Runtime (plain export)"] = ort_session(model, x, folder / f"{spec}-{batch}.onnx")
    # the roofline in the same alternation: this machine's throughput moves with its load
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    fns["roofline"] = lambda: a @ b
    t = timed(fns, repeats)
    roof = 2 * 2048 ** 3 / t.pop("roofline") / 1e9
    ort = t["ONNX Runtime (plain export)"]
    lines = [f"### {spec}, batch {batch}, {'x'.join(map(str, p.input_shape[1:]))}, fp32 "
             f"({gflop:.1f} GFLOP per call)", "",
             f"Roofline in the same run: {roof:.0f} GFLOP/s (2048x2048 fp32 matmul).", "",
             "| runtime | median ms | GFLOP/s | of the roofline | speed vs ONNX Runtime |",
             "|---|---:|---:|---:|---:|"]
    for k, v in t.items():
        lines.append(f"| {k} | {v * 1000:.1f} | {gflop / v:.0f} | {gflop / v / roof:.0%} | "
                     f"{ort / v:.3f}x |")
    lines += ["", "| stage | GMAC | optimize_for_inference ms | ONNX Runtime ms | "
              "optimized GFLOP/s | ONNX Runtime GFLOP/s | speed vs ONNX Runtime |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    h = x
    tot = {"ours": 0.0, "ort": 0.0}
    for name, plain, opt in stages(model, fast):
        with torch.no_grad():
            nxt = plain(h)
        hin = h.contiguous(memory_format=torch.channels_last) if h.dim() == 4 else h
        st = timed({"ours": torch_call(opt, hin),
                    "ort": ort_session(plain, h, folder / f"{spec}-{batch}-{name}.onnx")},
                   repeats)
        g = 2 * p.stage(name).macs * batch / 1e9
        tot["ours"] += st["ours"]
        tot["ort"] += st["ort"]
        lines.append(f"| {name} | {g / 2:.2f} | {st['ours'] * 1000:.1f} | "
                     f"{st['ort'] * 1000:.1f} | {g / st['ours']:.0f} | {g / st['ort']:.0f} | "
                     f"{st['ort'] / st['ours']:.3f}x |")
        h = nxt
    lines.append(f"| sum | {p.macs * batch / 1e9:.2f} | {tot['ours'] * 1000:.1f} | "
                 f"{tot['ort'] * 1000:.1f} | {gflop / tot['ours']:.0f} | "
                 f"{gflop / tot['ort']:.0f} | {tot['ort'] / tot['ours']:.3f}x |")
    lines += ["", *bf16_rows(model, x, repeats), ""]
    return lines


def bf16_rows(model: nn.Module, x: torch.Tensor, repeats: int) -> list[str]:
    from archspec.inference import native_precision

    fp32 = archspec.optimize_for_inference(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bf16 = archspec.optimize_for_inference(model, dtype=torch.bfloat16)
    said = "; ".join(str(w.message) for w in caught)
    t = timed({"fp32": torch_call(fp32, x), "bf16": torch_call(bf16, x)}, repeats)
    with torch.inference_mode():
        diff = (bf16(x).float() - fp32(x)).abs().max().item()
    native, why = native_precision(torch.bfloat16, "cpu")
    kind = next(bf16.parameters()).dtype
    return [f"bf16: `optimize_for_inference(model, dtype=torch.bfloat16)` ran in {kind} "
            f"(native bf16 on this CPU: {'yes' if native else 'no'}, {why}): "
            f"{t['fp32'] * 1000:.1f} ms fp32, {t['bf16'] * 1000:.1f} ms bf16 path, "
            f"{t['fp32'] / t['bf16']:.3f}x its fp32 speed; max |bf16 - fp32| logits "
            f"{diff:.3g}" + (f". It said: {said}" if said else ".")]


def _passes(fast: nn.Module, x: torch.Tensor) -> int:
    parts = fast._passes(x)
    return 1 if parts is None else len(parts)


def blocking_ab(spec: str, batch: int, repeats: int) -> str:
    """optimize_for_inference taking the batch in cache-sized passes (the default)
    against the same copy taking it whole (``cache_bytes = 0``), alternating."""
    model = archspec.build(spec, seed=0).eval()
    new = archspec.optimize_for_inference(model)
    old = archspec.optimize_for_inference(model)
    old.cache_bytes = 0
    x = torch.randn(batch, *model.plan.input_shape)
    parts = new._passes(x)
    sizes = "one pass" if parts is None else f"{len(parts)} passes of {parts[0].shape[0]}"
    per_image = new.buffer_per_pixel * x[0, 0].numel() * x.element_size() / 2 ** 20
    t = timed({"whole": torch_call(old, x), "passes": torch_call(new, x)}, repeats)
    return (f"| {spec}, batch {batch} | {per_image * batch:.1f} MB | {sizes} | "
            f"{t['whole'] * 1000:.1f} | {t['passes'] * 1000:.1f} | "
            f"{t['whole'] / t['passes']:.3f}x |")


def direct_ab(spec: str, batch: int, size: int, repeats: int) -> str:
    """optimize_for_inference with its blocks' direct eager loop (the default) against
    the same copy calling every layer as modules, and the copy scripted, alternating."""
    from archspec.inference import _FastBlock

    model = archspec.build(spec, seed=0).eval()
    new = archspec.optimize_for_inference(model)
    old = archspec.optimize_for_inference(model)
    for block in old.body:
        if isinstance(block, _FastBlock):
            block.direct = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notice
        scripted = torch.jit.script(archspec.optimize_for_inference(model))
    x = torch.randn(batch, model.plan.input_shape[0], size, size)
    t = timed({"modules": torch_call(old, x), "direct": torch_call(new, x),
               "script": torch_call(scripted, x)}, repeats)
    return (f"| {spec}, batch {batch}, {size}x{size} | {t['modules'] * 1000:.2f} | "
            f"{t['direct'] * 1000:.2f} | {t['script'] * 1000:.2f} | "
            f"{t['modules'] / t['direct']:.3f}x | {t['modules'] / t['script']:.3f}x |")


def pointwise_ab(spec: str, batch: int, repeats: int) -> str:
    """optimize_for_inference with its 1x1 convs on small maps as matrix products (the
    default) against the same copy with every conv left to oneDNN, alternating."""
    from archspec import inference

    model = archspec.build(spec, seed=0).eval()
    new = archspec.optimize_for_inference(model)
    keep = inference._as_pointwise
    inference._as_pointwise = lambda conv: conv
    try:
        old = archspec.optimize_for_inference(model)
    finally:
        inference._as_pointwise = keep
    x = torch.randn(batch, *model.plan.input_shape)
    t = timed({"conv": torch_call(old, x), "linear": torch_call(new, x)}, repeats)
    return (f"| {spec}, batch {batch} | {t['conv'] * 1000:.1f} | {t['linear'] * 1000:.1f} | "
            f"{t['conv'] / t['linear']:.3f}x |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--cases", default="densenet121:1,densenet121:8,densenet-bc-100-12:64")
    ap.add_argument("--pointwise", action="store_true",
                    help="only the A/B of 1x1 convs as matrix products (POINTWISE_PIXELS)")
    ap.add_argument("--blocking", action="store_true",
                    help="only the A/B of cache-sized passes (archspec.cache_blocking)")
    ap.add_argument("--direct", action="store_true",
                    help="only the A/B of the blocks' direct eager loop; cases as "
                         "spec:batch:size")
    args = ap.parse_args()
    if args.direct:
        print("| case | layers as modules, ms | direct loop, ms | TorchScript, ms | "
              "direct speed-up | TorchScript speed-up |\n|---|---:|---:|---:|---:|---:|")
        for c in args.cases.split(","):
            spec, batch, size = c.split(":")
            print(direct_ab(spec, int(batch), int(size), args.repeats), flush=True)
        return 0
    if args.blocking:
        from archspec.cache_blocking import last_level_cache_bytes

        print(f"Last-level cache: {last_level_cache_bytes() / 2 ** 20:g} MB, "
              f"{torch.get_num_threads()} threads.\n\n"
              "| case | block-buffer bytes, whole batch | passes | one pass, ms | "
              "cache-sized passes, ms | speed-up |\n|---|---:|---|---:|---:|---:|")
        for c in args.cases.split(","):
            spec, batch = c.rsplit(":", 1)
            print(blocking_ab(spec, int(batch), args.repeats), flush=True)
        return 0
    if args.pointwise:
        print("| case | 1x1 convs as convs, ms | as matrix products, ms | speed-up |\n"
              "|---|---:|---:|---:|")
        for c in args.cases.split(","):
            spec, batch = c.rsplit(":", 1)
            print(pointwise_ab(spec, int(batch), args.repeats), flush=True)
        return 0
    folder = Path(tempfile.mkdtemp(prefix="archspec-cpu-inference-"))
    import onnxruntime

    print(f"{torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}, "
          f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}.\n", flush=True)
    for c in args.cases.split(","):
        spec, batch = c.rsplit(":", 1)
        print("\n".join(case(spec, int(batch), args.repeats, folder)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
