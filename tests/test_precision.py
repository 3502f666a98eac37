"""optimize_for_inference(model, dtype=...): reduced precision where the device computes it
natively, float32 (with a warning) where it would be emulated and slower.

This CI machine's CPU may or may not have bf16 arithmetic, so both verdicts are forced
through archspec.memory.kernels.cpu_features, the one place that reads the CPU."""

from __future__ import annotations

import warnings

import pytest
import torch

import archspec
from archspec import optimize_for_inference
from archspec.inference import native_precision
from archspec.memory import kernels

torch.set_num_threads(2)

# One small net per member (each has its own inference class), and a backbone
NETS = [("densenet121", {"block_config": "[2, 2, 2, 2]", "expect": None}),
        ("ese_vovnet19b_slim_dw", {}), ("hardnet39ds", {}), ("peleenet", {})]
# What the docs promise for bf16: within 2% of the largest fp32 output (bf16 keeps 8
# bits; random-init zoo nets measured 0.4-0.5%)
BF16_TOLERANCE = 0.02


def _randomise_norms(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.affine:
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(n, generator=g))
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.5)


def _model(name: str, overrides: dict, **kw) -> torch.nn.Module:
    spec = archspec.load(name, overrides=overrides)
    model = archspec.build(spec, seed=0, **kw).eval()
    _randomise_norms(model)
    return model


def _x(model: torch.nn.Module) -> torch.Tensor:
    c = model.plan.input_shape[0]
    return torch.randn(2, c, 64, 64, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def bf16_cpu(monkeypatch):
    monkeypatch.setattr(kernels, "cpu_features", lambda: frozenset({"avx512_bf16"}))


@pytest.fixture
def plain_cpu(monkeypatch):
    monkeypatch.setattr(kernels, "cpu_features", lambda: frozenset())


@pytest.mark.parametrize("name,overrides", NETS, ids=[n for n, _ in NETS])
def test_bf16_computes_in_bf16_within_the_documented_tolerance(name, overrides, bf16_cpu):
    model = _model(name, overrides)
    x = _x(model)
    fast = optimize_for_inference(model, dtype=torch.bfloat16)
    assert {p.dtype for p in fast.parameters()} == {torch.bfloat16}
    with torch.inference_mode():
        exact, got, got_bf16 = model(x), fast(x), fast(x.bfloat16())
    # outputs come back in the caller's dtype, whatever the copy computes in
    assert got.dtype == torch.float32 and got_bf16.dtype == torch.bfloat16
    scale = exact.abs().max().item()
    assert (got - exact).abs().max().item() <= BF16_TOLERANCE * scale
    assert (got_bf16.float() - exact).abs().max().item() <= BF16_TOLERANCE * scale
    # the probe that carries the dtype is not state: the keys are the fp32 copy's
    assert list(fast.state_dict()) == list(optimize_for_inference(model).state_dict())
    scripted = torch.jit.script(fast)
    with torch.inference_mode():
        assert torch.equal(scripted(x), got)


def test_bf16_falls_back_to_float32_where_the_cpu_would_emulate_it(plain_cpu):
    name, overrides = NETS[0]
    model = _model(name, overrides)
    x = _x(model)
    with pytest.warns(UserWarning, match=r"dtype=torch.bfloat16\): the CPU has none of "
                      r"avx512_bf16, amx_bf16, arm_bf16.*computes in torch.float32"):
        fast = optimize_for_inference(model, dtype=torch.bfloat16)
    assert {p.dtype for p in fast.parameters()} == {torch.float32}
    with torch.inference_mode():
        want = optimize_for_inference(model)(x)
        assert torch.equal(fast(x), want)  # exactly the float32 copy
        out = fast(x.bfloat16())
    assert out.dtype == torch.bfloat16  # same interface as the bf16 copy
    assert native_precision(torch.bfloat16, "cpu")[0] is False


def test_a_features_only_backbone_returns_its_maps_in_the_inputs_dtype(bf16_cpu):
    model = _model("densenet121", NETS[0][1], features_only=True)
    x = _x(model)
    fast = optimize_for_inference(model, dtype=torch.bfloat16)
    with torch.inference_mode():
        want, got = model(x), fast(x)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == torch.float32 and g.shape == w.shape
        assert (g - w).abs().max().item() <= BF16_TOLERANCE * w.abs().max().item()


def test_float64_and_the_models_own_dtype_are_kept_as_asked():
    model = _model(*NETS[0])
    x = _x(model)
    fast = optimize_for_inference(model, dtype=torch.float64)
    assert {p.dtype for p in fast.parameters()} == {torch.float64}
    with torch.inference_mode():
        got = fast(x)
        assert got.dtype == torch.float32
        assert (got - model(x)).abs().max().item() < 1e-4
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback to announce
        optimize_for_inference(model, dtype=torch.float32)


@pytest.mark.parametrize("dtype", [torch.int8, "bfloat16", torch.bool])
def test_a_dtype_that_is_not_a_float_type_is_refused(dtype):
    with pytest.raises(TypeError, match="dtype must be a floating torch.dtype"):
        optimize_for_inference(_model(*NETS[0]), dtype=dtype)


def test_cpu_features_read_the_flags_when_torchs_probe_is_gone_or_broken(monkeypatch):
    monkeypatch.setattr(kernels, "_cpuinfo_flags", lambda: {"avx2", "avx512_bf16", "fma"})
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)

    def broken():
        raise RuntimeError("moved")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", broken, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_fp16_supported", lambda: False, raising=False)
    assert kernels.cpu_features() == {"avx512_bf16"}
    assert native_precision(torch.bfloat16, "cpu") == (True, "the CPU has avx512_bf16")
    assert native_precision(torch.float16, "cpu")[0] is False


def test_cpu_features_know_arm_and_an_unreadable_cpuinfo(monkeypatch):
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported",
                  "_is_amx_fp16_supported"):
        monkeypatch.setattr(torch.cpu, probe, lambda: False, raising=False)
    monkeypatch.setattr(kernels, "_cpuinfo_flags", lambda: {"fp", "asimd", "asimdhp", "bf16"})
    assert kernels.cpu_features() == {"arm_bf16", "arm_fp16"}
    monkeypatch.setattr(kernels, "_cpuinfo_flags", lambda: set())
    assert kernels.cpu_features() == frozenset()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_bf16_on_cuda_within_the_documented_tolerance():
    model = _model(*NETS[0]).cuda()
    x = _x(model).cuda()
    fast = optimize_for_inference(model, dtype=torch.bfloat16)
    assert {p.dtype for p in fast.parameters()} == {torch.bfloat16}
    with torch.inference_mode():
        exact, got = model(x), fast(x)
    assert got.dtype == torch.float32
    assert (got - exact).abs().max().item() <= BF16_TOLERANCE * exact.abs().max().item()
