"""Performance features, tested for what they must keep exact and for what they save.
Timings are never asserted here: benchmarks/run.py measures them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import archspec
from archspec import zoo
from archspec import optimize_for_inference
from run import saved_bytes  # benchmarks/run.py: the count docs/benchmarks.md reports

REPO = Path(__file__).resolve().parents[1]
torch.set_num_threads(2)


def _randomise_norms(model: torch.nn.Module, seed: int = 0) -> None:
    """Trained-looking BatchNorm: random statistics, and scales of both signs (and a zero)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(n, generator=g))
            m.weight.data[0] = 0.0
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.5)


def _input_for(p) -> torch.Tensor:
    c, h, *_ = p.input_shape
    # ImageNet nets at 64x64 (volumes at 32^3): every stage still has pixels
    size = (64 if h >= 64 else h) if p.dims == 2 else min(h, 32)
    return torch.randn(2, c, *[size] * p.dims, generator=torch.Generator().manual_seed(1))


# the largest 2D nets (3-4 s each on 2 cores) check the same code paths as the others
_LARGEST = ("densenet264d", "densenet-bc-250-24", "densenet-bc-190-40")


def _fast_suite(name: str) -> bool:
    """One volume net and one VoVNet in the fast suite; the others, and the largest 2D
    nets, in the slow stage."""
    group = zoo.groups()[name]
    return (group != "monai" or name == "densenet121-3d") and \
        (group != "vovnet" or name == "ese_vovnet19b_slim_dw") and name not in _LARGEST


@pytest.mark.parametrize("name", [
    n if _fast_suite(n) else pytest.param(n, marks=pytest.mark.slow) for n in zoo.names()])
def test_optimize_for_inference_is_exact_for_every_zoo_spec(name):
    p = archspec.plan(archspec.load(name))
    model = archspec.build(p, seed=0).eval()
    _randomise_norms(model)
    x = _input_for(p)
    post_activation = p.family != "densenet"  # VoVNet, HarDNet, PeleeNet
    if post_activation:
        # Through 20-100 post-activation convs (and residual sums) random norms grow the
        # logits to 10^5, whose float32 rounding says little: the folding is checked in
        # float64, where it is exact to rounding.
        model, x = model.double(), x.double()
    fast = optimize_for_inference(model)
    with torch.no_grad():
        ref = model(x)
        if post_activation:
            assert (fast(x) - ref).abs().max() <= 1e-10 * ref.abs().max()
        else:
            torch.testing.assert_close(fast(x), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("overrides", [
    {"activation": "silu"}, {"norm": "{type: group, groups: 4}"},
    {"anti_alias.transitions": True, "stem.type": "deep", "anti_alias.stem": True},
    {"bn_size": None},
])
def test_optimize_for_inference_other_options(overrides):
    spec = archspec.load("densenet121", overrides={**overrides, "expect": None,
                                                   "block_config": "[2, 2, 2, 2]"})
    model = archspec.build(spec, seed=0).eval()
    _randomise_norms(model)
    fast = optimize_for_inference(model)
    x = torch.randn(2, 3, 67, 67)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-4)


def test_optimized_model_folds_and_reorders():
    model = archspec.build("densenet121", seed=0).eval()
    fast = optimize_for_inference(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    seen = []
    fast.body[1].conv.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape)))
    fast(torch.randn(1, 3, 224, 224))
    assert seen == [(1, 256, 28, 28)]  # transition1's conv runs after the pool: 28x28, not 56x56
    with pytest.raises(RuntimeError, match="eval-only"):
        fast.train()
    assert model.features.norm0.weight.requires_grad  # the original is untouched
    with pytest.raises(TypeError, match="built by archspec.build"):
        optimize_for_inference(torch.nn.Conv2d(3, 3, 1))


def test_small_maps_1x1_convs_run_as_matrix_products():
    """At 14x14 and below (the plan's sizes) a channels_last copy computes each 1x1 conv as
    F.linear on the NHWC view; larger maps keep oneDNN's conv. Same keys, shapes and
    function either way."""
    from archspec.inference import _PointwiseConv2d, _PointwiseConv3d

    model = archspec.build("densenet121", seed=0).eval()
    _randomise_norms(model)
    fast = optimize_for_inference(model)
    kinds = {}
    for mod, name in zip(fast.body, [n for n in dict(model.features.named_children())
                                     if n.startswith(("denseblock", "transition"))]):
        convs = [mod.conv] if hasattr(mod, "conv") else [layer.conv1 for layer in mod.layers]
        kinds[name] = {type(c).__name__ for c in convs}
    assert kinds == {"denseblock1": {"Conv2d"}, "transition1": {"Conv2d"},
                     "denseblock2": {"Conv2d"}, "transition2": {"_PointwiseConv2d"},
                     "denseblock3": {"_PointwiseConv2d"}, "transition3": {"_PointwiseConv2d"},
                     "denseblock4": {"_PointwiseConv2d"}}
    nchw = optimize_for_inference(model, channels_last=False)
    assert not any(isinstance(m, _PointwiseConv2d) for m in nchw.modules())
    assert {k: v.shape for k, v in fast.state_dict().items()} == \
        {k: v.shape for k, v in nchw.state_dict().items()}
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-4)
    # volumes: densenet121-3d's last block runs at 3^3
    vol = optimize_for_inference(archspec.build("densenet121-3d", seed=0).eval())
    assert any(isinstance(m, _PointwiseConv3d) for m in vol.body[-1].modules())


def test_optimize_for_inference_keeps_autocast_dtype():
    """Under bf16 autocast every folded clamp reads and writes bf16 (a clamp against fp32
    bounds would promote to fp32 and cost a cast pass per layer), and the output stays
    as close to the model's own autocast output as bf16 allows."""
    from archspec.inference import _Clamp

    spec = archspec.load("densenet121", overrides={"block_config": "[2, 2, 2, 2]",
                                                   "expect": None})
    model = archspec.build(spec, seed=0).eval()
    _randomise_norms(model)
    fast = optimize_for_inference(model)
    seen = set()
    for m in fast.modules():
        if isinstance(m, _Clamp):
            m.register_forward_hook(lambda m, i, o: seen.add((i[0].dtype, o.dtype)))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        got, want = fast(x), model(x)
    assert seen == {(torch.bfloat16, torch.bfloat16)}
    with torch.no_grad():
        exact = model(x)
    # bf16 keeps 8 bits: both autocast outputs are that far from fp32, and no further
    scale = exact.abs().max().item()
    assert (got.float() - exact).abs().max().item() < 0.05 * scale
    assert (got.float() - exact).abs().max() < 3 * (want.float() - exact).abs().max() + 1e-3


def test_eager_blocks_call_their_kernels_directly_and_every_hook_still_runs(monkeypatch):
    """A BN-ReLU bottleneck block's eager loop calls each layer's kernels without module
    calls (the same ops: bitwise the module path, fp32 and under autocast); a layer with
    a hook on it or one of its parts runs as modules, and a global module hook turns the
    direct loop off, so no hook ever misses a call."""
    from archspec.inference import _FastBlock

    spec = archspec.load("densenet121", overrides={"block_config": "[2, 3, 2, 2]",
                                                   "expect": None})
    model = archspec.build(spec, seed=0).eval()
    _randomise_norms(model)
    fast = optimize_for_inference(model)
    blocks = [b for b in fast.body if isinstance(b, _FastBlock)]
    assert all(b.direct for b in blocks)
    x = torch.randn(2, 3, 64, 64)
    direct_calls = []
    from archspec import inference
    real = inference._direct_layer
    monkeypatch.setattr(inference, "_direct_layer",
                        lambda *a: direct_calls.append(1) or real(*a))
    with torch.no_grad():
        got = fast(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got_bf16 = fast(x)
    assert len(direct_calls) == 2 * 9
    for b in blocks:
        b.direct = False
    with torch.no_grad():
        assert torch.equal(got, fast(x))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(got_bf16, fast(x))
    for b in blocks:
        b.direct = True
    # a hook on one layer's conv2: that layer runs as modules, its hook sees the call
    direct_calls.clear()
    seen = []
    blocks[1].layers[2].conv2.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.no_grad():
        assert torch.equal(got, fast(x))
    assert seen == [torch.Size([2, 32, 8, 8])] and len(direct_calls) == 9 - 1
    # a hook for every module: no direct loop at all
    direct_calls.clear()
    calls = []
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda m, i, o: calls.append(type(m).__name__))
    try:
        with torch.no_grad():
            assert torch.equal(got, fast(x))
    finally:
        handle.remove()
    assert direct_calls == [] and calls.count("_Clamp") >= 9
    # other layers (GELU between the convs, no bottleneck) keep the module loop
    for overrides in ({"activation": "gelu"}, {"bn_size": None}):
        other = archspec.load("densenet121", overrides={"block_config": "[2, 2, 2, 2]",
                                                        "expect": None, **overrides})
        fast = optimize_for_inference(archspec.build(other, seed=0).eval())
        assert not any(b.direct for b in fast.body if isinstance(b, _FastBlock))


def test_cpu_block_buffers_are_kept_per_thread_and_never_returned():
    """Eager CPU calls keep each block's buffer for the next call (no fresh pages each
    forward), per thread, for two shapes, across inference_mode and no_grad; a
    features_only copy keeps none of the buffers it returns, so earlier results stand."""
    import threading

    from archspec import feature_buffer
    from archspec.inference import _FastBlock

    spec = archspec.load("densenet121", overrides={"block_config": "[2, 2, 2, 2]",
                                                   "expect": None})
    model = archspec.build(spec, seed=0).eval()
    _randomise_norms(model)
    fast = optimize_for_inference(model)
    block = fast.body[0]
    x, y = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)

    def held():
        local = feature_buffer._KEPT.get(block)
        return [] if local is None else list(local.__dict__.get("buffers", {}).values())
    with torch.no_grad():
        first = fast(x)
        kept = held()
        assert len(kept) == 1
        assert torch.equal(fast(x), first) and held()[0] is kept[0]  # the same storage
        fast(y)
        assert torch.equal(fast(x), first)
        fast(torch.randn(3, 3, 64, 64))  # a second shape joins, a third pushes out the first
        fast(torch.randn(4, 3, 64, 64))
        assert [b.shape[0] for b in held()] == [3, 4]
    with torch.inference_mode():  # inference tensors are kept apart from normal ones
        torch.testing.assert_close(fast(x), first, rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), first, rtol=0, atol=0)
    # another thread has buffers of its own
    seen = {}
    t = threading.Thread(target=lambda: seen.update(out=fast(x), bufs=held()))
    with torch.no_grad():
        t.start()
        t.join()
    assert torch.equal(seen["out"], first)
    assert len(seen["bufs"]) == 1 and all(seen["bufs"][0] is not b for b in held())
    # a backbone's returned block outputs are never the kept buffers
    backbone = archspec.build(spec, seed=0, features_only=True).eval()
    fast = optimize_for_inference(backbone)
    returned = [j for j in fast.taps if 0 <= j < len(fast.body)
                and isinstance(fast.body[j], _FastBlock)]
    assert returned and all(not fast.body[j].keep_buffer for j in returned)
    with torch.no_grad():
        a = [t.clone() for t in fast(x)]
        got = fast(x)
        fast(y)
        assert all(torch.equal(g, w) for g, w in zip(got, a))


def test_without_torchs_hook_dicts_the_blocks_run_as_modules(monkeypatch):
    """The hook checks read private attributes; where torch renames them the answer is
    "a hook may run", and the optimized model takes the module loop: slower, never
    wrong."""
    from archspec.memory import kernels

    module = torch.nn.modules.module
    monkeypatch.delattr(module, "_global_forward_hooks")
    assert kernels.global_forward_hooks() is True
    monkeypatch.undo()
    assert kernels.global_forward_hooks() is False

    class Bare:  # a module-like object without the per-module dicts
        pass
    assert kernels.forward_hooked([Bare()]) is True
    assert kernels.forward_hooked([torch.nn.ReLU()]) is False


def test_optimized_model_gives_input_gradients():
    """Saliency maps and adversarial examples need d(output)/d(input): with gradients
    recorded the optimized blocks concatenate (the shared buffer cannot carry them)."""
    model = archspec.build("densenet-bc-100-12", seed=0,
                           overrides={"depth": 40, "expect": None}).eval()
    _randomise_norms(model)
    fast = optimize_for_inference(model)
    # A seeded input: the folded clamp and relu(norm) may round a value at the kink to
    # opposite sides, and then that one element's gradient differs by design.
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    grads = []
    for m in (model, fast):
        xi = x.clone().requires_grad_()
        m(xi)[:, 3].sum().backward()
        grads.append(xi.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-5)


LEVELS = (True, "max")


def _bitwise(a: torch.Tensor, b: torch.Tensor, msg: str = "") -> None:
    torch.testing.assert_close(a, b, rtol=0, atol=0, msg=msg or None)


NETS = [
    ("densenet-bc-100-12", 0.0),  # bottleneck layers
    ("densenet-bc-100-12", 0.2),  # dropout replayed in backward
    ("densenet-40-12", 0.0),      # no bottleneck: H_l = BN-ReLU-Conv3x3
    ("densenet-40-12", 0.2),
]
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


def _assert_level_is_exact(name: str, drop_rate: float, level, device: str = "cpu",
                           layout: str = "nchw", autocast: torch.dtype | None = None) -> None:
    """One training step of the plain model and of the same model at ``level``: the input
    and parameter gradients and the BatchNorm buffers bit for bit, the block outputs in
    the plain path's layout."""
    fmt = LAYOUTS[layout]
    over = {"depth": 16 if name.startswith("densenet-bc") else 13, "expect": None,
            "drop_rate": drop_rate}
    plain = archspec.build(archspec.load(name, overrides=over), seed=0, device=device)
    eff = archspec.build(archspec.load(name, overrides={**over, "memory_efficient": level}),
                         seed=0, device=device)
    x = torch.randn(4, 3, 32, 32).to(device, memory_format=fmt).requires_grad_()
    grads, outs = [], []
    for model in (plain, eff):
        model.to(memory_format=fmt)
        x.grad = None
        torch.manual_seed(5)  # the same dropout masks in both
        # the first dense block's output, through a forward hook (same step)
        hook = model.features.denseblock1.register_forward_hook(
            lambda m, i, o: outs.append(o.detach()))
        with torch.autocast(device, dtype=autocast, enabled=autocast is not None):
            y = model(x)
        hook.remove()
        y.float().square().mean().backward()
        grads.append(x.grad.clone())
    _bitwise(outs[0], outs[1])
    assert outs[1].is_contiguous(memory_format=fmt), "the block changed the layout"
    _bitwise(grads[0], grads[1])
    for (key, a), b in zip(plain.named_parameters(), eff.parameters()):
        _bitwise(a.grad, b.grad, key)
    for (key, a), b in zip(plain.named_buffers(), eff.buffers()):
        _bitwise(a, b, key)  # running statistics and counts: one update per step
    assert eff.features.denseblock1.denselayer1.norm1.num_batches_tracked.item() == 1


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("name,drop_rate", NETS)
def test_memory_efficient_gradients_are_bitwise_and_batch_norm_updates_once(name, drop_rate,
                                                                           level, layout):
    _assert_level_is_exact(name, drop_rate, level, layout=layout)


@pytest.fixture
def deterministic_cudnn():
    """cuDNN's weight-gradient kernels may add with atomics (run-to-run differences);
    the deterministic ones make a bitwise comparison meaningful."""
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
@pytest.mark.parametrize("autocast", [None, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("name,drop_rate", NETS)
def test_memory_efficient_is_bitwise_on_cuda(name, drop_rate, level, layout, autocast,
                                             deterministic_cudnn):
    """The same contract on cuDNN: there the backward recomputes the batch statistics
    (cuDNN's training kernel, momentum 0, its reserve space) instead of reusing them."""
    _assert_level_is_exact(name, drop_rate, level, "cuda", layout, autocast)


@pytest.mark.parametrize("kind", ["paper", "dropout", "blur", "group"])
def test_max_transition_keeps_only_its_input_with_the_plain_gradients(kind):
    """Under max the paper's transition keeps only its input (the block's output, which
    the block keeps anyway) and recomputes norm-act in backward; other transitions take
    the plain path. Either way: the plain transition's output, gradients and statistics,
    bit for bit, and set_grad_checkpointing reaches the transitions too."""
    from archspec.nn import Transition

    norm = (lambda c: torch.nn.GroupNorm(4, c)) if kind == "group" else torch.nn.BatchNorm2d
    args = (32, 16, 0.2 if kind == "dropout" else 0.0, norm)
    blur = 3 if kind == "blur" else None
    torch.manual_seed(0)
    plain = Transition(*args, blur_filter=blur)
    ours = Transition(*args, blur_filter=blur, memory_efficient="max")
    ours.load_state_dict(plain.state_dict())
    x = torch.randn(4, 32, 16, 16, requires_grad=True)
    outs, grads, saved = [], [], []
    for t in (plain, ours):
        x.grad, ptrs = None, set()

        def pack(v):
            ptrs.add(v.untyped_storage().data_ptr())
            return v
        torch.manual_seed(5)  # the same dropout mask in both
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda v: v):
            out = t(x)
        out.square().sum().backward()
        outs.append(out)
        grads.append([x.grad.clone()] + [p.grad for p in t.parameters()])
        saved.append(ptrs - {p.untyped_storage().data_ptr() for p in t.parameters()})
    _bitwise(outs[0], outs[1])
    for a, b in zip(*grads):
        _bitwise(a, b)
    for a, b in zip(plain.buffers(), ours.buffers()):
        _bitwise(a, b)  # BatchNorm: one statistics update
    if kind == "paper":
        assert saved[1] == {x.untyped_storage().data_ptr()}, "keeps more than its input"
        assert len(saved[0]) >= 3  # the plain one: input, activation, conv output
    else:  # the plain path: as many saved activations as the plain transition
        assert len(saved[1]) == len(saved[0]) >= 3
    model = archspec.build(archspec.load("densenet-bc-100-12", overrides={"depth": 16}))
    model.set_grad_checkpointing("max")
    assert {t.memory_efficient for t in model.modules() if isinstance(t, Transition)} \
        == {"max"}


@pytest.mark.parametrize("level", [True, "max"])
def test_cpu_backward_reuses_the_forwards_batch_statistics(level):
    """On the CPU the direct backward normalises with the statistics the forward's kernel
    computed (eval mode, same kernel, same bits: the bitwise tests above), so no
    training-mode batch norm, i.e. no statistics reduction, runs in backward."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class BatchNorms(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.training = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket.__name__ in ("native_batch_norm",
                                                "_native_batch_norm_legit"):
                self.training.append(bool(args[5]))
            if func.overloadpacket.__name__ == "_native_batch_norm_legit_no_training":
                self.training.append(False)
            return func(*args, **(kwargs or {}))

    spec = archspec.load("densenet-bc-100-12", overrides={"depth": 16, "expect": None,
                                                          "memory_efficient": level})
    model = archspec.build(spec, seed=0)
    loss = model(torch.randn(4, 3, 32, 32)).square().mean()
    with BatchNorms() as seen:
        loss.backward()
    n_recomputed = 12 + (2 if level == "max" else 0)  # 6 layers x 2 norms (+ transitions)
    assert seen.training == [False] * n_recomputed


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("level", LEVELS)
def test_memory_efficient_under_bf16_autocast(level, layout):
    # the recomputation re-enters the forward's autocast: the same bf16 kernels
    _assert_level_is_exact("densenet-bc-100-12", 0.0, level, layout=layout,
                           autocast=torch.bfloat16)


def test_memory_levels_keep_what_they_promise_and_the_plan_estimates_it():
    """Saved bytes, counted by autograd's hooks (deterministic, allocator-independent):
    true keeps at most half of the plain model's, max at most 0.15x (densenet-bc-100-12,
    the paper's CIFAR net), and the plan's estimate follows each level."""
    x = torch.randn(8, 3, 32, 32)
    saved, kept, estimated = {}, {}, {}
    for level in (False, True, "max"):
        spec = archspec.load("densenet-bc-100-12", overrides={"memory_efficient": level})
        saved[level] = saved_bytes(archspec.build(spec, seed=0), x)
        kept[level] = archspec.plan(spec).training_memory(8, recomputation=False)
        estimated[level] = archspec.plan(spec).training_memory(8)
    assert saved[True] <= 0.5 * saved[False], saved    # 0.21x
    assert saved["max"] <= 0.15 * saved[False], saved  # 0.04x
    for level in saved:  # the default adds the largest layer's recomputation
        assert 0.9 <= kept[level] / saved[level] <= 1.2, (level, kept, saved)
        assert estimated[level] >= kept[level]
    assert estimated[False] > estimated[True] > estimated["max"]


@pytest.mark.slow
def test_memory_levels_keep_what_they_promise_on_densenet121():
    """The same targets on the ImageNet net, at 224x224, where the stem and the
    transitions hold a larger share: true at most half, max at most 0.15x the plain
    model's saved bytes (0.31x and 0.11x at batch 2)."""
    x = torch.randn(2, 3, 224, 224)
    saved = {}
    for level in (False, True, "max"):
        spec = archspec.load("densenet121", overrides={"memory_efficient": level})
        saved[level] = saved_bytes(archspec.build(spec, seed=0), x)
        kept = archspec.plan(spec).training_memory(2, recomputation=False)
        assert 0.85 <= kept / saved[level] <= 1.2, (level, kept, saved)
    assert saved[True] <= 0.5 * saved[False], saved
    assert saved["max"] <= 0.15 * saved[False], saved


@pytest.mark.slow
def test_memory_efficient_lowers_measured_peak_memory():
    """Real memory, in separate processes: what a training step adds to peak RSS. glibc's
    fixed mmap threshold makes freed activation memory return to the OS, so the peak
    reflects live memory rather than the allocator's retention (see docs/benchmarks.md)."""
    code = ("import json, sys; sys.path.insert(0, {root!r}); import run; "
            "print(json.dumps(run.measure_memory('archspec', {eff}, 'cpu', 16)))")
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    step = {}
    for eff in (False, True, "max"):
        out = subprocess.run([sys.executable, "-c", code.format(root=str(REPO / "benchmarks"),
                                                                 eff=repr(eff))],
                             capture_output=True, text=True, check=True, env=env)
        step[eff] = json.loads(out.stdout.strip().splitlines()[-1])["step_mb"]
    # Measured 0.24x and 0.61x (docs/benchmarks.md): max keeps only block outputs; true
    # also keeps conv outputs and its backward's transients show in the peak.
    assert step["max"] < 0.5 * step[False], step
    assert step[True] < 0.8 * step[False], step


def test_compile_fullgraph_matches_eager():
    model = archspec.build(archspec.load("densenet-bc-100-12", overrides={
        "depth": 16, "expect": None}), seed=0).eval()
    x = torch.randn(2, 3, 32, 32)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # 17 s of dynamo tracing per level: .ci/run runs it after the fast suite
@pytest.mark.parametrize("level", [True, "max"])
def test_compile_fullgraph_trains_memory_efficient_with_eager_gradients(level):
    """Under torch.compile the block checkpoints each layer's concat-norm1-act-conv1 (a
    higher-order op dynamo sees through): one graph, eager's gradients, one BatchNorm
    update, and still a fraction of the compiled plain model's saved activations."""
    over = {"depth": 40, "expect": None}  # 6 layers a block: enough for the savings to show
    spec = archspec.load("densenet-bc-100-12", overrides={**over, "memory_efficient": level})
    ref = archspec.build(archspec.load("densenet-bc-100-12", overrides=over), seed=0)
    model = archspec.build(spec, seed=0)
    x = torch.randn(4, 3, 32, 32)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    compiled(x).square().mean().backward()
    ref(x).square().mean().backward()
    for (key, a), b in zip(ref.named_parameters(), model.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-6, msg=key)
    for (key, a), b in zip(ref.named_buffers(), model.buffers()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=key)
    assert model.features.denseblock1.denselayer1.norm1.num_batches_tracked.item() == 1
    plain = torch.compile(ref, fullgraph=True, backend="aot_eager")
    assert saved_bytes(compiled, x) < 0.6 * saved_bytes(plain, x)  # 0.42x; 0.25x at L=100


@pytest.mark.slow
def test_benchmark_runner_quick_mode(tmp_path):
    out = tmp_path / "bench.md"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "run.py"), "--device",
                           "cpu", "--quick", "--output", str(out)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = out.read_text()
    for heading in ("## Machine", "## Build time", "## Training step", "## Eval forward",
                    "## Small batches", "## Eval under bf16",
                    "## Memory", "## torch.compile", "## Volumes"):
        assert heading in text
    assert "archspec optimize_for_inference" in text and "x throughput" in text
    # --update regenerates one section in place and leaves every other line as it was.
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "run.py"), "--device",
                           "cpu", "--quick", "--output", str(out), "--update", "build"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    updated = out.read_text()
    assert "regenerated alone by `python benchmarks/run.py" in updated
    section = slice(text.index("## Build time"), text.index("## Training step"))
    assert text.replace(text[section], "") == updated.replace(
        updated[updated.index("## Build time"):updated.index("## Training step")], "")


@pytest.mark.slow  # seconds of subprocesses: .ci/run runs it after the fast suite (5-minute budget)
def test_benchmark_runner_refuses_cuda_without_a_gpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "run.py"), "--device",
                           "cuda", "--quick", "--output", str(tmp_path / "b.md")],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "CUDA is not available" in proc.stderr


def test_optimized_model_copies_pickles_and_keeps_no_state_between_calls():
    import copy
    import pickle

    fast = optimize_for_inference(archspec.build("densenet-bc-100-12", seed=0).eval())
    a, b = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    ya = fast(a)
    yb = fast(b)  # the second call reuses the block buffers: the first result must stand
    torch.testing.assert_close(fast(a), ya, rtol=0, atol=0)
    assert not torch.equal(ya, yb)
    for clone in (copy.deepcopy(fast), pickle.loads(pickle.dumps(fast))):
        torch.testing.assert_close(clone(a), ya, rtol=0, atol=0)
