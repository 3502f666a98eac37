"""The memory levels' private PyTorch calls (archspec.memory.kernels) each fall back to the
public path when they are missing or wrong: gradients stay the plain model's bit for bit,
and one warning names the path that fell back."""

import warnings

import pytest
import torch

import archspec
from archspec.memory import kernels


@pytest.fixture(autouse=True)
def fresh_verdicts():
    kernels.reset()
    yield
    kernels.reset()  # the next test checks the real kernels again


def _missing(*args, **kwargs):
    raise AttributeError("module 'torch.ops.aten' has no attribute 'gone'")


def _step(level, drop_rate=0.0):
    """One training step of densenet-bc-100-12 (depth 16) at ``level``: input and
    parameter gradients and buffers."""
    spec = archspec.load("densenet-bc-100-12", overrides={
        "depth": 16, "expect": None, "drop_rate": drop_rate, "memory_efficient": level})
    model = archspec.build(spec, seed=0)
    x = torch.linspace(-2, 2, 4 * 3 * 32 * 32).view(4, 3, 32, 32).requires_grad_()
    torch.manual_seed(5)
    model(x).square().mean().backward()
    return ([x.grad] + [p.grad for p in model.parameters()]
            + [b.clone() for b in model.buffers()])


def _assert_same(a, b):
    assert len(a) == len(b)
    for i, (u, v) in enumerate(zip(a, b)):
        torch.testing.assert_close(u, v, rtol=0, atol=0, msg=f"tensor {i}")


def _fallback_warnings(caught):
    return [str(w.message) for w in caught if issubclass(w.category, kernels.FastPathWarning)]


def test_every_fast_path_passes_its_self_check_here():
    """On this torch every fast path agrees with the public one, so the memory levels run
    their fast kernels and warn about nothing."""
    for path in kernels.PATHS:
        with warnings.catch_warnings():
            warnings.simplefilter("error", kernels.FastPathWarning)
            assert kernels.usable(path, "cpu"), path


def test_the_self_check_runs_outside_the_callers_autocast():
    """A first training step under bf16 autocast checks the kernels in float32 (bf16
    rounding would fail a float32 comparison and cost the fast path for nothing)."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for path in kernels.PATHS:
            with warnings.catch_warnings():
                warnings.simplefilter("error", kernels.FastPathWarning)
                assert kernels.usable(path, "cpu"), path


def test_the_self_check_draws_no_random_numbers_and_hides_from_saved_tensor_hooks():
    seen = []
    state = torch.get_rng_state()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: seen.append(t) or t, lambda t: t):
        for path in kernels.PATHS:
            kernels.usable(path, "cpu")
    assert torch.equal(torch.get_rng_state(), state)
    assert seen == []


# (path, the wrapper to break, a wrong-but-plausible stand-in for it)
BREAKS = [
    ("conv_backward", "_convolution_backward",
     lambda *a: tuple(t * 1.5 if t is not None else None
                      for t in torch.ops.aten.convolution_backward(*a))),
    ("norm_act_backward", "_threshold_backward", lambda g, z, t: g),  # forgets the mask
    ("norm_act_backward", "_batch_norm_impl_index_backward",
     lambda *a: tuple(t.neg() for t in torch.ops.aten._batch_norm_impl_index_backward(*a))),
    ("batch_statistics", "batch_statistics_of",
     lambda node: (node._saved_result1 + 1, node._saved_result2)
     if type(node).__name__ == "NativeBatchNormBackward0" else None),
    ("avg_pool_backward", "_avg_pool2d_backward",
     lambda *a: torch.ops.aten.avg_pool2d_backward(*a) * 4),
]


@pytest.mark.parametrize("how", ["missing", "wrong"])
@pytest.mark.parametrize("path,wrapper,wrong", BREAKS,
                         ids=[f"{b[0]}:{b[1].strip('_')}" for b in BREAKS])
def test_a_broken_private_call_falls_back_with_one_warning(path, wrapper, wrong, how,
                                                           monkeypatch):
    """The private call is gone (raises) or returns wrong numbers, as after a torch
    release that moved it: the self-check catches it, the level takes the public path,
    and the gradients and running statistics stay the plain model's."""
    plain = _step(False)
    monkeypatch.setattr(kernels, wrapper, _missing if how == "missing" else wrong)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for level in (True, "max"):
            _assert_same(plain, _step(level))
            _assert_same(plain, _step(level))  # a second step: no second warning
    said = _fallback_warnings(caught)
    assert len(said) == 1, said  # once per process and device type
    assert f"'{path}'" in said[0] and "Using " in said[0], said[0]
    assert not kernels.usable(path, "cpu")


def test_each_path_warns_when_its_own_call_breaks(monkeypatch):
    """The warning names the path whose check failed, and only that path."""
    monkeypatch.setattr(kernels, "_avg_pool2d_backward", _missing)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _step("max")
    said = _fallback_warnings(caught)
    assert len(said) == 1 and "'avg_pool_backward'" in said[0]
    assert "AttributeError" in said[0]
    assert all(kernels.usable(p, "cpu") for p in kernels.PATHS if p != "avg_pool_backward")


def test_the_fallbacks_keep_dropout_and_plain_layers_exact(monkeypatch):
    """With every fast path broken at once, dropout (masks replayed) and layers without a
    bottleneck still give the plain model's gradients."""
    for _, wrapper, _ in BREAKS:
        monkeypatch.setattr(kernels, wrapper, _missing)
    plain = _step(False, drop_rate=0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", kernels.FastPathWarning)
        for level in (True, "max"):
            _assert_same(plain, _step(level, drop_rate=0.2))
    spec = archspec.load("densenet-40-12", overrides={"depth": 13, "expect": None})
    x = torch.linspace(-1, 1, 2 * 3 * 32 * 32).view(2, 3, 32, 32)
    grads = []
    for level in (False, True, "max"):
        model = archspec.build(spec.model_copy(update={"memory_efficient": level}), seed=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", kernels.FastPathWarning)
            model(x).square().mean().backward()
        grads.append([p.grad for p in model.parameters()])
    _assert_same(grads[0], grads[1])
    _assert_same(grads[0], grads[2])


def test_sync_batch_norm_falls_back_to_the_plain_path(monkeypatch, tmp_path):
    """Without SyncBatchNorm's autograd function where archspec looks for it, a block
    holding a SyncBatchNorm in a process group trains on the plain path, with one
    warning that says so."""
    import torch.distributed as dist

    spec = archspec.load("densenet-bc-100-12", overrides={"depth": 16, "expect": None,
                                                          "memory_efficient": True})
    model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(archspec.build(spec, seed=0))
    plain = torch.nn.SyncBatchNorm.convert_sync_batchnorm(
        archspec.build(spec.model_copy(update={"memory_efficient": False}), seed=0))
    monkeypatch.setattr(kernels, "sync_batch_norm", lambda: None)
    # SyncBatchNorm refuses CPU tensors in a process group; one rank never synchronises,
    # so letting it through changes nothing else (test_distributed.py does the same)
    monkeypatch.setattr(torch._C, "_get_privateuse1_backend_name", lambda: "cpu")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0,
                            world_size=1)
    try:
        x = torch.linspace(-2, 2, 2 * 3 * 32 * 32).view(2, 3, 32, 32)
        saved = {}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for m in (plain, model):
                counted = saved.setdefault(id(m), [])
                with torch.autograd.graph.saved_tensors_hooks(
                        lambda t: counted.append(t.numel()) or t, lambda t: t):
                    loss = m(x).square().mean()
                loss.backward()
        assert sum(saved[id(model)]) == sum(saved[id(plain)])  # the plain path's savings
        said = _fallback_warnings(caught)
        assert len(said) == 1 and "'sync_batch_norm'" in said[0], said
        _assert_same([p.grad for p in plain.parameters()],
                     [p.grad for p in model.parameters()])
    finally:
        dist.destroy_process_group()


def test_statistics_a_torch_has_freed_read_as_none():
    """A node whose saved tensors are gone (torch 2.11 frees SyncBatchNorm's with its
    output on CUDA) reads as "no statistics" (the public path), never as a RuntimeError;
    the forward reads the node it made while its output lives, and keeps no graph."""
    from archspec.memory import norms

    bn = torch.nn.BatchNorm2d(4)
    x = torch.randn(2, 4, 3, 3, requires_grad=True)
    y = bn(x)
    y.sum().backward()  # frees the node's saved tensors
    assert kernels.batch_statistics_of(y.grad_fn) is None
    out, stats = norms._run_reading(torch.nn.BatchNorm2d(4), x, kernels.batch_statistics_of)
    assert stats is not None and stats[0].shape == (4,)
    assert out.grad_fn is None
