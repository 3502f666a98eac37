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
    c, h, w = p.input_shape
    size = 64 if h >= 64 else h  # ImageNet nets at 64x64: every stage still has pixels
    return torch.randn(2, c, size, size, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", zoo.names())
def test_optimize_for_inference_is_exact_for_every_zoo_spec(name):
    p = archspec.plan(archspec.load(name))
    model = archspec.build(p, seed=0).eval()
    _randomise_norms(model)
    fast = optimize_for_inference(model)
    x = _input_for(p)
    with torch.no_grad():
        ref = model(x)
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


def test_memory_efficient_is_exact_and_updates_batch_norm_once():
    text = (REPO / "specs" / "cifar" / "densenet-bc-100-12.yaml").read_text()
    for extra in ("", "drop_rate: 0.2\n"):
        plain = archspec.build(archspec.loads(text + extra), seed=0)
        eff = archspec.build(archspec.loads(text + extra + "memory_efficient: true\n"), seed=0)
        x = torch.randn(4, 3, 32, 32, requires_grad=True)
        grads = []
        for model in (plain, eff):
            x.grad = None
            torch.manual_seed(5)  # the same dropout masks in both
            model(x).square().mean().backward()
            grads.append(x.grad.clone())
        torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=1e-6)
        for a, b in zip(plain.parameters(), eff.parameters()):
            torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-6)
        for a, b in zip(plain.buffers(), eff.buffers()):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)  # running stats, counts
        assert eff.features.denseblock1.denselayer1.norm1.num_batches_tracked.item() == 1


def test_memory_efficient_under_bf16_autocast():
    spec = archspec.load("densenet-bc-100-12", overrides={"depth": 16, "expect": None})
    plain = archspec.build(spec, seed=0)
    eff = archspec.build(archspec.load("densenet-bc-100-12", overrides={
        "depth": 16, "expect": None, "memory_efficient": True}), seed=0)
    x = torch.randn(4, 3, 32, 32)
    for model in (plain, eff):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(x).float().square().mean().backward()
    torch.testing.assert_close(plain.features.denseblock1.denselayer2.conv1.weight.grad,
                               eff.features.denseblock1.denselayer2.conv1.weight.grad,
                               rtol=0.05, atol=1e-3)


def _saved_bytes(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes of distinct storages the forward pass keeps alive for backward."""
    seen: dict[int, int] = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    out.sum().backward()  # outside the hooks: backward's recomputation is transient
    return sum(seen.values())


def test_memory_efficient_keeps_a_fraction_of_the_activations():
    plain = archspec.build("densenet-bc-100-12", seed=0)
    eff = archspec.build(archspec.load("densenet-bc-100-12",
                                       overrides={"memory_efficient": True}), seed=0)
    x = torch.randn(8, 3, 32, 32)
    a, b = _saved_bytes(plain, x), _saved_bytes(eff, x)
    assert b < 0.15 * a, (a, b)  # 0.09x here


@pytest.mark.slow
def test_memory_efficient_lowers_measured_peak_memory():
    """Real memory, in separate processes: what a training step adds to peak RSS. glibc's
    fixed mmap threshold makes freed activation memory return to the OS, so the peak
    reflects live memory rather than the allocator's retention (see docs/benchmarks.md)."""
    code = ("import json, sys; sys.path.insert(0, {root!r}); import run; "
            "print(json.dumps(run.measure_memory('archspec', {eff}, 'cpu', 16)))")
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    step = {}
    for eff in (False, True):
        out = subprocess.run([sys.executable, "-c", code.format(root=str(REPO / "benchmarks"),
                                                                 eff=eff)],
                             capture_output=True, text=True, check=True, env=env)
        step[eff] = json.loads(out.stdout.strip().splitlines()[-1])["step_mb"]
    assert step[True] < 0.5 * step[False], step


def test_compile_fullgraph_matches_eager():
    model = archspec.build(archspec.load("densenet-bc-100-12", overrides={
        "depth": 16, "expect": None}), seed=0).eval()
    x = torch.randn(2, 3, 32, 32)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)


def test_compile_training_with_memory_efficient():
    spec = archspec.load("densenet-bc-100-12", overrides={"depth": 16, "expect": None,
                                                          "memory_efficient": True})
    model = archspec.build(spec, seed=0)
    ref = archspec.build(spec, seed=0)
    x = torch.randn(2, 3, 32, 32)
    compiled = torch.compile(model, backend="aot_eager")  # graph breaks allowed here
    compiled(x).sum().backward()
    ref(x).sum().backward()
    torch.testing.assert_close(model.features.conv0.weight.grad, ref.features.conv0.weight.grad,
                               rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_benchmark_runner_quick_mode(tmp_path):
    out = tmp_path / "bench.md"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "run.py"), "--device",
                           "cpu", "--quick", "--output", str(out)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = out.read_text()
    for heading in ("## Machine", "## Build time", "## Training step", "## Eval forward",
                    "## Memory", "## torch.compile"):
        assert heading in text
    assert "archspec optimize_for_inference" in text and "x throughput" in text


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
