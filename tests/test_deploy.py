"""A built model outside eager Python (issue 13): TorchScript, jit.trace, torch.fx,
torch.export, ONNX (checked with onnxruntime); timm's model API; headless models; classifier swaps that keep checkpoints
consistent. Small nets in the default run; the whole zoo, slow."""

from __future__ import annotations

import io
import warnings

import pytest
import torch

import archspec
from archspec import zoo

torch.set_num_threads(2)
warnings.filterwarnings("ignore", message=".*torch.jit.*deprecated.*")

SMALL = {"block_config": "[2, 2, 2, 2]"}  # a densenet121 with 2 layers a block: quick
KINDS = {
    "plain": ("densenet121", SMALL, {}),
    "cifar-memory-efficient": ("densenet-bc-100-12", {"depth": 16, "memory_efficient": True}, {}),
    "blur-deep-stem": ("densenetblur121d", SMALL, {}),
    "group-norm-silu": ("densenet121", {**SMALL, "norm": "{type: group, groups: 4}",
                                        "activation": "silu"}, {}),
    "plain-layers-dropout": ("densenet-40-12", {"depth": 10, "drop_rate": 0.2}, {}),
    "features-only": ("densenet121", SMALL, {"features_only": True, "out_indices": (0, 2, 4)}),
    "headless": ("densenet121", {**SMALL, "num_classes": 0}, {}),
}


def _model(kind: str, optimized: bool):
    name, overrides, kw = KINDS[kind]
    model = archspec.build(archspec.load(name, overrides=overrides), seed=0, **kw).eval()
    return archspec.optimize_for_inference(model) if optimized else model


def _same(a, b, tol: float = 1e-5) -> None:
    """Equal within ``tol`` of the outputs' scale: a freshly initialised deep residual net
    (ese_vovnet99b) has logits of 10^4, whose float32 rounding is not 1e-5."""
    if isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y, tol)
        return
    scale = max(1.0, float(b.abs().max()))
    torch.testing.assert_close(a, b, rtol=tol, atol=tol * scale)


def _convert(model, how: str, x: torch.Tensor):
    if how == "script":  # and a round trip through jit.save / jit.load
        buf = io.BytesIO()
        torch.jit.save(torch.jit.script(model), buf)
        buf.seek(0)
        return torch.jit.load(buf)
    if how == "trace":
        return torch.jit.trace(model, x, strict=False)
    if how == "fx":
        return torch.fx.symbolic_trace(model)
    batch = torch.export.Dim("batch", min=1, max=32)
    if how == "onnx":  # torch's dynamo exporter, run by onnxruntime
        ort = pytest.importorskip("onnxruntime")
        program = torch.onnx.export(model, (x,), dynamo=True, verbose=False,
                                    dynamic_shapes={"x": {0: batch}})
        session = ort.InferenceSession(program.model_proto.SerializeToString(),
                                       providers=["CPUExecutionProvider"])

        def run(inp: torch.Tensor):
            outs = [torch.from_numpy(o) for o in
                    session.run(None, {session.get_inputs()[0].name: inp.numpy()})]
            return outs if len(outs) > 1 else outs[0]
        return run
    return torch.export.export(model, (x,), dynamic_shapes={"x": {0: batch}},
                               strict=True).module()


def _cases():
    # torch.export takes ~4-7 s a model on 2 cores, ONNX ~4-7 s: every exported kind in
    # the slow run
    for how in ("script", "trace", "fx", "export", "onnx"):
        for kind in KINDS:
            for optimized in (False, True):
                # (ONNX in the fast suite: tests/test_export.py)
                # (torch.export in the fast suite: tests/test_second_walk.py's .pt2)
                quick = how not in ("export", "onnx")
                yield pytest.param(kind, optimized, how,
                                   id=f"{how}-{kind}-{'optimized' if optimized else 'built'}",
                                   marks=() if quick else pytest.mark.slow)


@pytest.mark.parametrize("kind,optimized,how", list(_cases()))
def test_every_kind_of_model_leaves_eager_python_unchanged(kind, optimized, how):
    model = _model(kind, optimized)
    x, x3 = torch.randn(2, 3, 64, 64), torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        before, before3 = model(x), model(x3)
        converted = _convert(model, how, x)
        tol = 1e-4 if how == "onnx" else 1e-5  # onnxruntime's own kernels
        _same(converted(x), before, tol)
        if how != "trace" or not optimized:  # a trace is of one shape; others any batch
            _same(converted(x3), before3, tol)
        # no cached state: the model itself still answers as before, at any batch
        _same(model(x), before, 0)
        _same(model(x3), before3, 0)


@pytest.mark.slow  # scripts three FX graphs of densenet121: 9 s on 2 cores
def test_fx_node_names_are_torchvisions_and_fx_graphs_script():
    import torchvision
    from torchvision.models.feature_extraction import (create_feature_extractor,
                                                       get_graph_node_names)

    for name in ("densenet121", "densenet161"):
        theirs = getattr(torchvision.models, name)().eval()
        assert get_graph_node_names(archspec.build(name, seed=0).eval()) == \
            get_graph_node_names(theirs)
    # code written for torchvision works unchanged
    ours = archspec.build("densenet121", seed=0).eval()
    nodes = {"features.denseblock1.denselayer2.cat": "cat", "features.transition2": "t2"}
    out = create_feature_extractor(ours, return_nodes=nodes)(torch.randn(1, 3, 64, 64))
    p = ours.plan
    layer2 = p.stage("denseblock1").layers[1]
    assert out["cat"].shape == (1, layer2.in_channels, 16, 16)  # 96: 64 + one k=32 layer
    assert out["t2"].shape == (1, p.stage("transition2").out_channels, 4, 4)
    graph = torch.fx.symbolic_trace(archspec.build("densenet121", seed=0).eval())
    torch.jit.script(graph)


def test_memory_efficient_model_scripts_and_trains_on_the_plain_path_under_script():
    model = _model("cifar-memory-efficient", False).train()
    scripted = torch.jit.script(model)
    x = torch.randn(2, 3, 32, 32)
    scripted(x).sum().backward()  # the plain path: same function, ordinary autograd
    assert model.features.conv0.weight.grad is not None


# --- timm's model API -----------------------------------------------------------------------------

def test_timm_model_api_matches_timms_densenet():
    timm = pytest.importorskip("timm")
    ref = timm.create_model("densenet121", pretrained=False).eval()
    ours = archspec.build("densenet121", weights=ref.state_dict()).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        f_ref, f_ours = ref.forward_features(x), ours.forward_features(x)
        _same(f_ours, f_ref)
        _same(ours.forward_head(f_ours, pre_logits=True),
              ref.forward_head(f_ref, pre_logits=True))
        _same(ours.forward_head(f_ours), ref.forward_head(f_ref))
    assert ours.num_features == ref.num_features == 1024
    assert ours.num_classes == ref.num_classes == 1000
    assert ours.get_classifier() is ours.classifier
    cfg = ours.pretrained_cfg
    assert cfg["input_size"] == (3, 224, 224) and cfg["num_classes"] == 1000
    assert cfg["first_conv"] == ref.pretrained_cfg["first_conv"] == "features.conv0"
    assert cfg["classifier"] == ref.pretrained_cfg["classifier"] == "classifier"
    assert cfg["spec_sha256"] == archspec.content_hash(archspec.load("densenet121"))
    assert ours.default_cfg is ours.pretrained_cfg


def test_headless_model_returns_pooled_features_like_timm():
    timm = pytest.importorskip("timm")
    ref = timm.create_model("densenet121", pretrained=False, num_classes=0).eval()
    ours = archspec.build(archspec.load("densenet121", overrides={"num_classes": 0}),
                          weights=ref.state_dict()).eval()
    p = ours.plan
    assert p.params == sum(t.numel() for t in ref.parameters()) == 6_953_856
    assert p.stages[-1].out_channels == 1024 and isinstance(ours.classifier, torch.nn.Identity)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        _same(ours(x), ref(x))
    assert ours(x).shape == (2, 1024)


def test_reset_classifier_keeps_plan_and_checkpoints_consistent(tmp_path):
    from archspec.builder import load_checkpoint, save_checkpoint

    model = archspec.build("densenet121", seed=0)
    model.reset_classifier(10)
    assert model.num_classes == 10 and model.classifier.out_features == 10
    assert model.plan.num_classes == 10 and model.plan.name == "densenet121+num_classes=10"
    assert model.plan.params == sum(p.numel() for p in model.parameters())
    save_checkpoint(model, tmp_path / "ft.pt")
    back = load_checkpoint(tmp_path / "ft.pt")
    for (k, a), (_, b) in zip(model.state_dict().items(), back.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
    model.reset_classifier(0)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1024)


def test_set_grad_checkpointing_switches_the_memory_path_with_the_same_gradients():
    spec = archspec.load("densenet-bc-100-12", overrides={"depth": 16})
    plain, switched = archspec.build(spec, seed=0), archspec.build(spec, seed=0)
    switched.set_grad_checkpointing(True)
    assert all(b.memory_efficient for b in switched.modules()
               if isinstance(b, archspec.builder.DenseBlock))
    x = torch.randn(4, 3, 32, 32)
    saved = []

    def pack(t):
        saved.append(t.untyped_storage().nbytes())
        return t
    for model in (plain, switched):
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(x)
        out.square().mean().backward()
        saved.append(None)
    for a, b in zip(plain.parameters(), switched.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-6)
    cut = saved.index(None)
    assert sum(saved[cut + 1:-1]) < 0.5 * sum(saved[:cut])  # it really took the other path


def test_backbone_feature_info_speaks_timms_methods():
    timm = pytest.importorskip("timm")
    ref = timm.create_model("densenet121", pretrained=False, features_only=True,
                            out_indices=(1, 2, 4))
    ours = archspec.build("densenet121", features_only=True, out_indices=(1, 2, 4))
    for method in ("channels", "reduction", "module_name"):
        theirs = getattr(ref.feature_info, method)()
        mine = getattr(ours.feature_info, method)()
        if method == "module_name":  # timm's names are its own module paths
            theirs = [n.replace("features_", "features.") for n in theirs]
        assert mine == theirs, method
    assert ours.feature_info.channels(0) == 256


def test_optimized_state_dict_keys_depend_on_the_spec_only():
    a = archspec.build("densenet-bc-100-12", seed=0).eval()
    b = archspec.build("densenet-bc-100-12", seed=1).eval()
    with torch.no_grad():
        for m in b.modules():  # negative BatchNorm scales: the old code added buffers
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.neg_()
    fa, fb = archspec.optimize_for_inference(a), archspec.optimize_for_inference(b)
    assert list(fa.state_dict()) == list(fb.state_dict())
    fa.load_state_dict(fb.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        _same(fa(x), fb(x), 0)


@pytest.mark.slow
@pytest.mark.parametrize("name", zoo.names())
def test_every_zoo_spec_scripts_and_exports(name):
    p = archspec.plan(archspec.load(name))
    model = archspec.build(p, seed=0).eval()
    c, h, *_ = p.input_shape
    side = min(h, 64) if p.dims != 3 else min(h, 32)  # volumes at 32^3: every stage has voxels
    x = torch.randn(2, c, *[side] * p.dims)
    with torch.no_grad():
        ref = model(x)
        for how in ("script", "export", "onnx"):
            _same(_convert(model, how, x)(x), ref, 1e-4 if how == "onnx" else 1e-5)
        fast = archspec.optimize_for_inference(model)
        _same(_convert(fast, "script", x)(x), fast(x))
