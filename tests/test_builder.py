"""The builder: plan == model for every zoo spec, torchvision equivalence, memory_efficient."""

from __future__ import annotations

import pytest
import torch
import torchvision
from hypothesis import HealthCheck, given, settings, strategies as st

import archspec
from archspec import zoo
from archspec.verify import check_model
from conftest import SMALL

torch.set_num_threads(2)
TV = ["densenet121", "densenet161", "densenet169", "densenet201"]


def _volumes_slow(names):
    # a 96^3 forward of a 3D zoo net takes 2-3 s on 2 cores; tests/test_dims.py checks
    # them against MONAI in the fast suite, the forward at full size runs with the slow.
    # So do the VoVNets but the smallest (tests/test_vovnet.py checks them against timm)
    # and the largest 2D net, densenet264d (its plan and count are checked elsewhere).
    groups = zoo.groups()
    return [pytest.param(n, marks=pytest.mark.slow)
            if n.endswith("-3d") or (groups[n] == "vovnet" and n != "ese_vovnet19b_slim_dw")
            or n == "densenet264d" else n for n in names]


@pytest.mark.parametrize("name", _volumes_slow(zoo.names()))
def test_zoo_model_matches_plan(name):
    p = archspec.plan(archspec.load(name))
    model = archspec.build(p, seed=0).eval()
    result = check_model(p, model, batch=1, backward=False)
    assert result.ok, result.mismatches
    assert result.observed_params == p.params == p.spec.expect.params
    assert [s.observed for s in result.stages] == [
        (s.out_channels, *s.out_size) for s in p.stages]


@pytest.mark.parametrize("name", TV)
def test_torchvision_state_dict_loads_strictly_and_outputs_agree(name):
    tv = getattr(torchvision.models, name)().eval()
    ours = archspec.build(name).eval()
    ours.load_state_dict(tv.state_dict(), strict=True)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x), rtol=0, atol=1e-5)
    # and the other way round: our checkpoint is torchvision's
    tv.load_state_dict(ours.state_dict(), strict=True)


def test_seed_reproduces_torchvision_initialisation():
    torch.manual_seed(7)
    tv = torchvision.models.densenet121()
    ours = archspec.build("densenet121", seed=7)
    a, b = ours.state_dict(), tv.state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_seed_leaves_global_rng_alone():
    torch.manual_seed(3)
    before = torch.rand(1)
    torch.manual_seed(3)
    archspec.build(archspec.loads(SMALL), seed=11)
    assert torch.equal(torch.rand(1), before)


def test_initialisation_follows_torchvision():
    model = archspec.build(archspec.loads(SMALL), seed=0)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in norms)
    assert torch.all(model.classifier.bias == 0)
    assert not any(m.bias is not None for m in model.modules()
                   if isinstance(m, torch.nn.Conv2d))


def test_plain_layers_have_no_bottleneck_and_dropout_follows_the_reference_code():
    text = SMALL.replace("bn_size: 2\n", "") + "drop_rate: 0.2\n"
    model = archspec.build(archspec.loads(text), seed=0)
    layer = model.features.denseblock1.denselayer1
    assert layer.conv1.kernel_size == (3, 3) and not hasattr(layer, "conv2")
    assert isinstance(model.features.transition1.drop, torch.nn.Dropout)
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))  # dropout is off in eval
    model.train()
    assert not torch.equal(model(x), model(x))   # and on in training


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dtype(dtype):
    p = archspec.plan(archspec.loads(SMALL))
    model = archspec.build(p, dtype=dtype, device="cpu")
    assert all(t.dtype == dtype for t in model.parameters())
    result = check_model(p, model, batch=2, backward=True)
    assert result.ok, result.mismatches


def test_verify_reports_a_mismatch():
    p = archspec.plan(archspec.loads(SMALL))
    other = archspec.plan(archspec.loads(SMALL.replace("growth_rate: 4", "growth_rate: 6")))
    result = check_model(p, archspec.build(other), batch=2, backward=False)
    assert not result.ok
    assert any(m.startswith("params: plan") for m in result.mismatches)
    assert any(m.startswith("denseblock1: plan 16x32x32, model 24x32x32")
               for m in result.mismatches)


@st.composite
def valid_specs(draw):
    stem = draw(st.sampled_from(["cifar", "imagenet"]))
    bn = draw(st.sampled_from([None, 1, 2, 4]))
    blocks = draw(st.lists(st.integers(1, 3), min_size=1, max_size=4))
    k = draw(st.integers(1, 8))
    theta = draw(st.sampled_from([1.0, 0.5, 0.75, 0.3]))
    lo = (4 if stem == "imagenet" else 1) * 2 ** (len(blocks) - 1)
    h = draw(st.integers(lo, lo + 9))
    w = draw(st.integers(lo, lo + 9))
    lines = ["name: random", f"input: {{channels: {draw(st.integers(1, 4))}, height: {h}, "
             f"width: {w}}}", f"stem: {{type: {stem}, channels: {draw(st.integers(1, 12))}}}",
             f"growth_rate: {k}", f"compression: {theta}", f"block_config: {blocks}",
             f"num_classes: {draw(st.integers(1, 7))}"]
    if bn:
        lines.append(f"bn_size: {bn}")
    return "\n".join(lines) + "\n"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_specs())
def test_random_specs_plan_equals_model(text):
    try:
        p = archspec.plan(archspec.loads(text))
    except archspec.SpecError as e:  # e.g. a compression that leaves no channels
        assert "transition" in e.message
        return
    result = check_model(p, archspec.build(p, seed=0), batch=2, backward=False)
    assert result.ok, (text, result.mismatches)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
@pytest.mark.parametrize("name", zoo.names())
def test_zoo_on_cuda_forward_and_backward(name):
    p = archspec.plan(archspec.load(name))
    model = archspec.build(p, device="cuda", seed=0)
    result = check_model(p, model, batch=2, backward=True)
    assert result.ok, result.mismatches
    assert next(model.parameters()).grad is not None
