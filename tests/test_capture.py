"""``optimize_for_inference(model, example_input=x)``: a recorded forward for small static
batches (issue 11). On the CPU the wrapper runs its whole contract (static buffers,
padding, fallbacks, copies out) with an eager "replay", so everything but the CUDA graph
itself is tested here; the ``cuda`` tests record real graphs where a GPU is present."""

from __future__ import annotations

import threading
import warnings

import pytest
import torch

import archspec
from archspec.capture import CapturedInference

torch.set_num_threads(2)
NAME = "densenet-bc-100-12"


def _model(**kw) -> torch.nn.Module:
    spec = archspec.load(NAME, overrides={"depth": 40, "expect": None})
    model = archspec.build(spec, seed=0, **kw).eval()
    g = torch.Generator().manual_seed(0)
    for m in model.modules():  # trained-looking statistics: folding must still be exact
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model


def _captured(model: torch.nn.Module, example: torch.Tensor) -> CapturedInference:
    with warnings.catch_warnings():
        if example.device.type == "cpu":
            warnings.filterwarnings("ignore", "example_input is on cpu")
        return archspec.optimize_for_inference(model, example_input=example)


def _x(batch: int, seed: int = 1, device: str = "cpu") -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, 32, 32, generator=g).to(device)


def test_cpu_says_there_is_no_graph():
    with pytest.warns(UserWarning, match="CUDA graphs record only CUDA work"):
        c = archspec.optimize_for_inference(_model(), example_input=_x(4))
    assert isinstance(c, CapturedInference) and not c.captured


def test_matching_calls_replay_and_equal_the_optimized_model():
    model = _model()
    fast = archspec.optimize_for_inference(model)
    c = _captured(model, _x(4))
    for batch in (4, 1, 3):  # the example's batch, and smaller ones padded into it
        x = _x(batch, seed=batch)
        assert c.replays(x)
        with torch.no_grad():
            got, want, ref = c(x), fast(x), model(x)
        assert got.shape == (batch, 10)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


def test_results_are_copies_not_the_static_output():
    c = _captured(_model(), _x(2))
    a = c(_x(2, seed=1))
    kept = a.clone()
    b = c(_x(2, seed=2))
    torch.testing.assert_close(a, kept, rtol=0, atol=0)  # the second replay left it alone
    assert not torch.equal(a, b)
    a.add_(1.0)  # writing to a result cannot reach the next call
    torch.testing.assert_close(c(_x(2, seed=2)), b, rtol=0, atol=0)


@pytest.mark.parametrize("other", [
    lambda: _x(5),                                      # a larger batch
    lambda: torch.randn(2, 3, 40, 40),                  # another image size
    lambda: _x(2).double(),                             # another dtype
    lambda: _x(2).requires_grad_(),                     # input gradients wanted
])
def test_other_calls_run_eagerly_with_the_same_results(other):
    model = _model()
    c = _captured(model, _x(2))
    x = other()
    assert not c.replays(x)
    fast = archspec.optimize_for_inference(model)
    if x.dtype != next(fast.parameters()).dtype:  # eager refuses it; so must the wrapper
        with pytest.raises(RuntimeError) as want:
            fast(x)
        with pytest.raises(RuntimeError) as got_error:
            c(x)
        assert str(got_error.value) == str(want.value)
        return
    got = c(x)
    torch.testing.assert_close(got, fast(x), rtol=1e-5, atol=1e-5)
    if x.requires_grad:
        got.sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0


def test_autocast_must_match_the_recording():
    model = _model()
    c = _captured(model, _x(2))
    x = _x(2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not c.replays(x)  # recorded in fp32: bf16 kernels are another graph
        assert c(x).dtype == torch.bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cb = _captured(model, x)
        assert cb.replays(x)
        with torch.no_grad():
            got, want = cb(x), archspec.optimize_for_inference(model)(x)
    assert not cb.replays(x)  # outside autocast: eager fp32
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_backbone_returns_every_level():
    model = _model(features_only=True)
    c = _captured(model, _x(3))
    fast = archspec.optimize_for_inference(model)
    got, want = c(_x(2)), fast(_x(2))
    assert isinstance(got, list) and len(got) == len(want) == len(model.feature_info)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert c.feature_info.channels() == model.feature_info.channels()  # read through


@pytest.mark.slow  # 9 s of tracing, scripting and exporting: .ci/run runs it after the fast suite
def test_tracing_scripting_exporting_see_the_model_and_change_nothing():
    model = _model()
    c = _captured(model, _x(2))
    x = _x(2)
    before = c(x)
    traced = torch.jit.trace(c, (x,), check_trace=False)
    scripted = torch.jit.script(c)
    exported = torch.export.export(c, (x,), strict=True)
    gm = torch.fx.symbolic_trace(c)
    for other in (traced, scripted, exported.module(), gm):
        torch.testing.assert_close(other(_x(2, seed=7)), c(_x(2, seed=7)), rtol=1e-5,
                                   atol=1e-5)
    torch.testing.assert_close(c(x), before, rtol=0, atol=0)
    assert c.replays(x)


def test_state_dict_is_the_models_and_loads_into_the_replay():
    model = _model()
    c = _captured(model, _x(2))
    fast = archspec.optimize_for_inference(model)
    assert list(c.state_dict()) == list(fast.state_dict())
    other = _model()
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(0.5)
    new = archspec.optimize_for_inference(other).state_dict()
    c.load_state_dict(new)
    x = _x(2)
    assert c.replays(x)
    torch.testing.assert_close(c(x), archspec.optimize_for_inference(other)(x), rtol=1e-5,
                               atol=1e-5)
    with pytest.raises(ValueError, match="assign=True"):
        c.load_state_dict(new, assign=True)
    with pytest.raises(RuntimeError, match="eval-only"):
        c.train()


def test_moving_or_casting_drops_the_recording():
    model = _model()
    c = _captured(model, _x(2))
    with pytest.warns(UserWarning, match="drops its recorded graph"):
        c.double()
    x = _x(2).double()
    assert not c.replays(x)
    fast = archspec.optimize_for_inference(model.double())
    torch.testing.assert_close(c(x), fast(x), rtol=1e-5, atol=1e-5)  # folded in fp32 first


def test_threads_get_their_own_results():
    model = _model()
    c = _captured(model, _x(2))
    fast = archspec.optimize_for_inference(model)
    xs = [_x(2, seed=s) for s in range(8)]
    want = [fast(x) for x in xs]
    got: dict[int, torch.Tensor] = {}

    def call(i: int) -> None:
        got[i] = c(xs[i])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(8):
        torch.testing.assert_close(got[i], want[i], rtol=1e-5, atol=1e-5)


def test_bad_example_inputs():
    model = _model()
    with pytest.raises(TypeError, match="example_input must be a tensor"):
        archspec.optimize_for_inference(model, example_input=[1, 2])
    with pytest.raises(ValueError, match="is on meta, the model on cpu"):
        archspec.optimize_for_inference(model, example_input=torch.empty(2, 3, 32, 32,
                                                                         device="meta"))
    with pytest.raises(ValueError, match="batch dimension"):
        archspec.optimize_for_inference(model, example_input=torch.empty(0, 3, 32, 32))


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")


@pytest.fixture
def full_fp32():
    """cuDNN convolves fp32 in TF32 by default, and the captured graph (its batch-8
    buffer) and the eager model pick different kernels: their TF32 roundings differ by
    ~1e-3 of the output. Full fp32 makes the 1e-4 comparison test the replay itself."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("name", ["densenet121", "densenet-bc-100-12"])
def test_cuda_graph_replays_the_optimized_model(name, full_fp32):
    model = archspec.build(name, seed=0, device="cuda").eval()
    c = _captured(model, _cuda_x(name, 8))
    fast = archspec.optimize_for_inference(model)
    assert c.captured
    for batch in (8, 1):
        x = _cuda_x(name, batch, seed=batch)
        assert c.replays(x)
        with torch.no_grad():
            torch.testing.assert_close(c(x), fast(x), rtol=1e-4, atol=1e-4)
    a = c(_cuda_x(name, 8, seed=3))
    kept = a.clone()
    c(_cuda_x(name, 8, seed=4))
    torch.testing.assert_close(a, kept, rtol=0, atol=0)


@pytest.mark.cuda
@cuda
def test_cuda_graph_under_bf16_autocast():
    model = archspec.build("densenet121", seed=0, device="cuda").eval()
    x = _cuda_x("densenet121", 4)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        c = _captured(model, x)
        assert c.captured and c.replays(x)
        with torch.no_grad():
            got, want = c(x), archspec.optimize_for_inference(model)(x)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want.float(), rtol=2e-2, atol=2e-2)


def _cuda_x(name: str, batch: int, seed: int = 1) -> torch.Tensor:
    c, h, w = archspec.plan(archspec.load(name)).input_shape
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, c, h, w, generator=g).cuda()
