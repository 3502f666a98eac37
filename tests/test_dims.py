"""DenseNets in 1, 2 and 3 spatial dimensions, and MONAI's networks exactly.

MONAI (a dev dependency) is the reference for 1D and 3D: its DenseNet121/169/201/264 give
the parameter counts the zoo pins, the seeded initialisation (torchvision's order, as
ours), the key layout ``build(..., weights=)`` reads and ``--layout monai`` writes, and
the outputs in eval and train mode.
"""

from __future__ import annotations

import copy

import pytest
import torch

import archspec
from archspec import SpecError
from archspec.weights import in_layout

monai_nets = pytest.importorskip("monai.networks.nets")

torch.set_num_threads(2)

MONAI_3D = {"densenet121-3d": ("DenseNet121", 11_244_674),
            "densenet169-3d": ("DenseNet169", 18_546_050),
            "densenet201-3d": ("DenseNet201", 25_334_658),
            "densenet264-3d": ("DenseNet264", 40_251_266)}


def small(size: list[int], stem: str = "{type: cifar}", **extra: str
          ) -> archspec.DenseNetSpec:
    """A small spec of len(size) dimensions that builds in milliseconds."""
    lines = [f"name: small{len(size)}d", f"input: {{channels: 2, size: {size}}}",
             f"stem: {stem}", "growth_rate: 4", "bn_size: 2", "compression: 0.5",
             "block_config: [2, 3]", "num_classes: 3"]
    lines += [f"{k}: {v}" for k, v in extra.items()]
    return archspec.loads("\n".join(lines) + "\n")


def _monai(ctor: str, dims: int, cin: int, cout: int, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return getattr(monai_nets, ctor)(spatial_dims=dims, in_channels=cin, out_channels=cout)


@pytest.mark.parametrize("name", [n if n == "densenet121-3d" else
                                  pytest.param(n, marks=pytest.mark.slow)
                                  for n in sorted(MONAI_3D)])
def test_zoo_3d_specs_are_monai_exactly(name):
    ctor, count = MONAI_3D[name]
    p = archspec.plan(archspec.load(name))
    ref = _monai(ctor, 3, 1, 2)
    assert p.params == count == sum(t.numel() for t in ref.parameters())
    assert p.input_shape == (1, 96, 96, 96) and p.dims == 3
    # seeded, archspec draws MONAI's weights (torchvision's order in both)
    ours = archspec.build(name, seed=0)
    mine = in_layout(ours.state_dict(), "monai", dims=3)
    theirs = ref.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)


@pytest.mark.parametrize("dims, count", [(1, 5_523_011), (2, 6_953_795)])
def test_monai_densenet121_in_1d_and_2d_with_2_in_3_out(dims, count):
    size = [1024] if dims == 1 else [224, 224]
    spec = archspec.load("densenet121", overrides={"input.channels": 2, "input.size": size,
                                                    "num_classes": 3})
    assert archspec.plan(spec).params == count
    assert archspec.plan(spec).dims == dims
    ref = _monai("DenseNet121", dims, 2, 3)
    assert sum(t.numel() for t in ref.parameters()) == count


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_outputs_equal_monai_on_the_same_weights_in_eval_and_train(dims):
    size = {1: [256], 2: [64, 64], 3: [32, 32, 32]}[dims]
    spec = archspec.load("densenet121", overrides={"input.channels": 1, "input.size": size,
                                                    "num_classes": 2})
    ref = _monai("DenseNet121", dims, 1, 2, seed=3)
    ours = archspec.build(spec, weights=ref.state_dict())  # MONAI's key layout, read
    x = torch.randn(2, 1, *size, generator=torch.Generator().manual_seed(0))
    for train in (False, True):
        ours.train(train)
        ref.train(train)
        with torch.no_grad():
            torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=1e-5)
    # train mode moved both models' running statistics the same way
    mine = in_layout(ours.state_dict(), "monai", dims=dims)
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(mine[k], v, rtol=0, atol=1e-6)


def test_weights_report_names_the_monai_layout():
    spec = small([32, 32, 32], stem="{type: imagenet, channels: 8}")
    ref = getattr(monai_nets, "DenseNet")(spatial_dims=3, in_channels=2, out_channels=3,
                                          init_features=8, growth_rate=4,
                                          block_config=(2, 3), bn_size=2)
    from archspec.weights import compare

    report, _ = compare(archspec.build(spec), ref.state_dict(), "monai.pt")
    assert report.ok, report.problems()
    assert report.layouts == ["MONAI"] and report.remapped > 0
    assert "keys remapped (MONAI)" in report.summary()
    # and the other way: MONAI's own module loads ours strictly
    ref.load_state_dict(in_layout(archspec.build(spec, seed=1).state_dict(), "monai",
                                  dims=3), strict=True)


def test_2d_only_layouts_refuse_a_volume():
    with pytest.raises(ValueError, match="torchvision's DenseNet is 2D"):
        in_layout({}, "torchvision", dims=3)
    with pytest.raises(ValueError, match="unknown layout"):
        in_layout({}, "keras")


@pytest.mark.parametrize("ctor, dims, cin, cout, zoo_name", [
    ("DenseNet121", 3, 1, 2, "densenet121-3d"),
    pytest.param("DenseNet264", 3, 1, 2, "densenet264-3d", marks=pytest.mark.slow),
    ("DenseNet121", 1, 2, 3, None),
    ("DenseNet121", 2, 2, 3, None),
])
def test_from_module_reads_monai(ctor, dims, cin, cout, zoo_name):
    ref = _monai(ctor, dims, cin, cout)
    spec = archspec.from_module(ref)
    p = archspec.plan(spec)
    assert p.dims == dims and p.input_shape[0] == cin and p.num_classes == cout
    assert p.params == sum(t.numel() for t in ref.parameters())
    if zoo_name:
        assert spec.name == zoo_name
    ours = archspec.build(spec, weights=ref.state_dict())
    size = {1: [128], 2: [64, 64], 3: [32, 32, 32]}[dims]
    x = torch.randn(1, cin, *size)
    ref.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), ref(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    ({"act": ("prelu", {"num_parameters": 8})}, r"PReLU\(num_parameters=8\): archspec's "
     "prelu learns one slope per place"),
    ({"act": ("swish", {"alpha": 2.0})}, "Swish; archspec's activations are relu"),
    ({"act": ("gelu", {"approximate": "tanh"})}, "archspec's gelu is the exact one"),
    ({"norm": ("instance", {"track_running_stats": True})},
     "features.norm0 is InstanceNorm3d with running statistics"),
    ({"dropout_prob": 0.2}, "Dropout3d at denselayer1.layers.dropout drops whole channels"),
])
def test_from_module_says_what_it_cannot_express(kwargs, message):
    ref = monai_nets.DenseNet(spatial_dims=3, in_channels=1, out_channels=2,
                              init_features=8, growth_rate=4, block_config=(2, 2), **kwargs)
    with pytest.raises(SpecError, match=message):
        archspec.from_module(ref)


@pytest.mark.parametrize("kwargs, norm, act", [
    ({"norm": "instance"}, {"type": "instance"}, "relu"),
    ({"norm": ("instance", {"affine": True, "eps": 1e-3})},
     {"type": "instance", "eps": 1e-3, "affine": True}, "relu"),
    ({"norm": ("batch", {"momentum": 0.01, "eps": 1e-3})},
     {"type": "batch", "eps": 1e-3, "momentum": 0.01}, "relu"),
    ({"norm": ("group", {"num_groups": 1})}, {"type": "group", "groups": 1}, "relu"),
    ({"act": ("leakyrelu", {"negative_slope": 0.2})}, {"type": "batch"},
     {"type": "leaky_relu", "negative_slope": 0.2}),
    ({"act": ("elu", {"alpha": 0.5})}, {"type": "batch"}, {"type": "elu", "alpha": 0.5}),
    ({"act": "mish"}, {"type": "batch"}, "mish"),          # MONAI's Mish: F.mish
    ({"act": "memswish"}, {"type": "batch"}, "silu"),      # F.silu
    ({"act": "swish"}, {"type": "batch"}, "silu"),         # x * sigmoid(x): to rounding
    ({"act": "prelu"}, {"type": "batch"}, "prelu"),        # a learned slope in every place
    ({"act": ("prelu", {"init": 0.1})}, {"type": "batch"}, {"type": "prelu", "init": 0.1}),
])
def test_monai_norms_and_activations_are_read_with_their_arguments(kwargs, norm, act):
    torch.manual_seed(0)
    ref = monai_nets.DenseNet(spatial_dims=3, in_channels=1, out_channels=2,
                              init_features=16, growth_rate=8, block_config=(2, 3), **kwargs)
    spec = archspec.from_module(ref)
    dumped = spec.model_dump(mode="json")
    assert {k: v for k, v in dumped["norm"].items() if k != "groups" or "groups" in norm} \
        == norm
    assert dumped["activation"] == act
    ours = archspec.build(spec, weights=ref.state_dict())
    x = torch.randn(2, 1, 24, 24, 24, generator=torch.Generator().manual_seed(0))
    for train in (False, True):
        ours.train(train)
        ref.train(train)
        with torch.no_grad():
            torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=1e-5)


def test_prelu_learns_a_slope_in_every_place_monai_does():
    """Each norm is followed by its own PReLU (the head's is MONAI's class_layers.relu,
    archspec's features.relu5): slopes made distinct so that a swapped or dropped one
    changes the output or a gradient."""
    torch.manual_seed(0)
    ref = monai_nets.DenseNet(spatial_dims=3, in_channels=1, out_channels=2,
                              init_features=8, growth_rate=4, block_config=(2, 3),
                              bn_size=2, act="prelu")
    slopes = [m.weight for m in ref.modules() if isinstance(m, torch.nn.PReLU)]
    assert len(slopes) == 1 + 2 * 5 + 1 + 1  # stem, 2 per layer, transition, head
    with torch.no_grad():
        for i, w in enumerate(slopes):
            w.fill_(0.05 * (i + 1))
    spec = archspec.from_module(ref)
    assert spec.activation.value == "prelu"
    assert archspec.plan(spec).params == sum(t.numel() for t in ref.parameters())
    ours = archspec.build(spec, weights=ref.state_dict())
    assert torch.equal(ours.features.relu5.weight, ref.class_layers.relu.weight)
    x = torch.randn(4, 1, 12, 12, 12, generator=torch.Generator().manual_seed(1))
    for train in (False, True):
        ours.train(train)
        ref.train(train)
        with torch.no_grad():
            torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=1e-5)
    # written back in MONAI's layout, MONAI's module loads every slope strictly
    ref.load_state_dict(in_layout(ours.state_dict(), "monai", dims=3), strict=True)
    with pytest.raises(ValueError, match="timm's DenseNet has no learned activation"):
        in_layout(archspec.build(small([8, 8], activation="prelu")).state_dict(), "timm")
    # the memory levels give every slope its gradient, bitwise
    ours.train()
    for level in (True, "max"):
        a, b = copy.deepcopy(ours), copy.deepcopy(ours)
        b.set_grad_checkpointing(level)
        a(x).square().sum().backward()
        b(x).square().sum().backward()
        for (name, u), v in zip(a.named_parameters(), b.parameters()):
            assert torch.equal(u.grad, v.grad), (level, name)
    ours.eval()
    with torch.no_grad():
        torch.testing.assert_close(archspec.optimize_for_inference(ours)(x), ours(x),
                                   rtol=1e-4, atol=1e-5)
        # a backbone's taps are the activated norms, through their own slopes
        backbone = archspec.build(spec, features_only=True, weights=ref.state_dict()).eval()
        maps = backbone(x)
        assert [m.shape[1] for m in maps] == backbone.feature_info.channels()
        torch.testing.assert_close(maps[-1], ours.forward_features(x), rtol=0, atol=0)
        fast = archspec.optimize_for_inference(backbone)
        for got, want in zip(fast(x), maps):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_build_writes_a_prelu_net_only_in_a_layout_that_has_its_slopes(tmp_path, capsys):
    from archspec.cli import main

    args = ["build", "densenet121", "--set", "activation.type=prelu", "-o",
            str(tmp_path / "p.pt")]
    assert main(args + ["--layout", "torchvision"]) == 2
    assert "torchvision's DenseNet has no learned activation" in capsys.readouterr().err
    assert not (tmp_path / "p.pt").exists()
    assert main(args + ["--layout", "monai"]) == 0
    state = torch.load(tmp_path / "p.pt", weights_only=True)
    assert "class_layers.relu.weight" in state and "features.relu0.weight" in state


def test_a_prelu_argument_is_prelus_alone(spec_file):
    path = spec_file("name: p\nstem: {type: cifar}\ngrowth_rate: 4\nblock_config: [2]\n"
                     "input: {channels: 1, size: [8, 8]}\n"
                     "activation: {type: relu, init: 0.1}\n")
    with pytest.raises(SpecError, match=r"relu takes no arguments; init is prelu's"):
        archspec.load(path)


def test_from_module_group_norm_and_gelu_in_3d():
    ref = monai_nets.DenseNet(spatial_dims=3, in_channels=1, out_channels=2,
                              init_features=16, growth_rate=8, block_config=(2, 3),
                              norm=("group", {"num_groups": 8}), act="gelu")
    spec = archspec.from_module(ref)
    assert spec.norm.type.value == "group" and spec.norm.groups == 8
    assert spec.activation.value == "gelu"
    ours = archspec.build(spec, weights=ref.state_dict()).eval()
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref.eval()(x), rtol=0, atol=1e-5)


# --- the spec -----------------------------------------------------------------------------

def test_two_dimensional_size_is_height_and_width_with_the_same_hash():
    from archspec.canonical import canonical, content_hash

    a = archspec.load("densenet121")
    text = (archspec.zoo.find("densenet121").read_text()
            .replace("input: {channels: 3, height: 224, width: 224}",
                     "input: {channels: 3, size: [224, 224]}"))
    assert "size: [224, 224]" in text
    b = archspec.loads(text)
    assert canonical(a) == canonical(b) and content_hash(a) == content_hash(b)
    assert "input: {channels: 3, height: 224, width: 224}\n" in canonical(a)
    c = archspec.load("densenet121-3d")
    assert "input:\n  channels: 1\n  size: [96, 96, 96]\n" in canonical(c)
    assert "height" not in canonical(c)
    assert archspec.loads(canonical(c)) == c


@pytest.mark.parametrize("text, where, message", [
    ("input: {channels: 1, size: [8, 8, 8, 8]}", "input.size", "at most 3"),
    ("input: {channels: 1, size: []}", "input.size", "at least 1"),
    ("input: {channels: 1, size: [32, 32, 32], height: 32}", "input",
     "either size or height/width"),
    ("input: {channels: 1, size: [32, 0, 32]}", "input.size[1]", "must be >= 1"),
])
def test_bad_sizes_are_located(spec_file, text, where, message):
    path = spec_file(f"""\
        name: bad
        {text}
        stem: {{type: cifar}}
        growth_rate: 4
        block_config: [2]
        """)
    with pytest.raises(SpecError) as info:
        archspec.load(path)
    shown = str(info.value)
    assert f":2:" in shown and f"{where}:" in shown and message in shown, shown


def test_input_too_small_names_the_axis_and_the_smallest_size(spec_file):
    path = spec_file("""\
        name: flat
        input: {channels: 1, size: [96, 96, 8]}
        growth_rate: 32
        bn_size: 4
        compression: 0.5
        block_config: [6, 12, 24, 16]
        """)
    with pytest.raises(SpecError) as info:
        archspec.plan(archspec.load(path))
    shown = str(info.value)
    assert ":2:" in shown and "input.size[2]:" in shown
    assert "input 1x96x96x8 (CxDxHxW) is too small" in shown
    assert "W is 1" in shown and "the smallest input this net accepts is 1x96x96x29" in shown


def test_instance_norm_on_one_position_per_channel_is_refused_at_validate(spec_file):
    path = spec_file("""\
        name: tiny
        input: {channels: 1, size: [4, 4, 4]}
        stem: {type: cifar}
        growth_rate: 4
        block_config: [2, 2, 2]
        norm: {type: instance}
        """)
    with pytest.raises(SpecError) as info:
        archspec.plan(archspec.load(path))
    shown = str(info.value)
    assert ":6:" in shown and "norm.type: instance norm needs more than one position per " \
        "channel, and norm5 sees 1x1x1 (DxHxW) at input 1x4x4x4" in shown, shown


@pytest.mark.parametrize("key", ["stem", "transitions"])
def test_blur_pooling_is_refused_outside_2d(spec_file, key):
    path = spec_file(f"""\
        name: blurred
        input: {{channels: 1, size: [64, 64, 64]}}
        growth_rate: 8
        block_config: [2, 2]
        anti_alias: {{{key}: true}}
        """)
    with pytest.raises(SpecError, match=f"anti_alias.{key}: blur pooling is 2D only; "
                                        "this net is 3D"):
        archspec.plan(archspec.load(path))


@pytest.mark.parametrize("size", [[40], [24, 20], [12, 10, 14]])
@pytest.mark.parametrize("stem", ["cifar", "imagenet", "deep"])
def test_plan_equals_built_module_in_every_dimension(size, stem):
    spec = small([s * (4 if stem != "cifar" else 1) for s in size],
                 stem=f"{{type: {stem}}}")
    p = archspec.plan(spec)
    model = archspec.build(p, seed=0).eval()
    from archspec.verify import check_model

    result = check_model(p, model, batch=2, backward=True)
    assert result.ok, result.mismatches
    assert result.observed_params == p.params
    # MACs: conv and linear multiply-accumulates, counted by hooks on the built model
    assert _counted_macs(model, (1, *p.input_shape)) == p.macs


def _counted_macs(model: torch.nn.Module, shape: tuple) -> int:
    total = 0

    def hook(m, inp, out):
        nonlocal total
        if isinstance(m, torch.nn.Linear):
            total += m.in_features * m.out_features
        else:
            total += out[0].numel() * m.weight[0].numel()
    convs = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, convs)
               and m.weight.requires_grad]
    with torch.no_grad():
        model(torch.randn(shape))
    for h in handles:
        h.remove()
    return total


def test_summary_and_json_have_as_many_axes_as_the_input():
    from archspec.report import plan_dict, summary_text

    p = archspec.plan(archspec.load("densenet121-3d"))
    text = summary_text(p)
    assert "output CxDxHxW" in text and "64x24x24x24" in text and "input 1x96x96x96 (3D)" in text
    d = plan_dict(p)
    assert d["input"] == [1, 96, 96, 96]
    assert all(len(s["out_size"]) == 3 for s in d["stages"])
    one = archspec.plan(small([64]))
    assert "output CxL" in summary_text(one)


# --- the model ----------------------------------------------------------------------------

@pytest.mark.parametrize("size", [[24], [10, 12, 12]])
@pytest.mark.parametrize("level", [True, "max"])
def test_memory_levels_are_bitwise_in_1d_and_3d(size, level):
    plain = archspec.build(small(size, drop_rate=0.0), seed=0)
    frugal = copy.deepcopy(plain)
    frugal.set_grad_checkpointing(level)
    x = torch.randn(4, 2, *size, generator=torch.Generator().manual_seed(1))
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    saved = {}
    for name, model, xi in (("plain", plain, xa), ("frugal", frugal, xb)):
        count = 0

        def pack(t):
            nonlocal count
            count += t.numel() * t.element_size()
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = model(xi).square().sum()
        saved[name] = count
        loss.backward()
    for a, b in zip(plain.parameters(), frugal.parameters()):
        assert torch.equal(a.grad, b.grad)
    for a, b in zip(plain.buffers(), frugal.buffers()):
        assert torch.equal(a, b)  # BatchNorm's statistics moved once
    assert torch.equal(xa.grad, xb.grad)
    assert saved["frugal"] < 0.8 * saved["plain"], saved


@pytest.mark.parametrize("size", [[32], [12, 12, 12]])
def test_graphs_and_inference_in_1d_and_3d(size):
    model = archspec.build(small(size), seed=0).eval()
    x = torch.randn(2, 2, *size)
    with torch.no_grad():
        ref = model(x)
        torch.testing.assert_close(torch.jit.script(model)(x), ref, rtol=0, atol=0)
        torch.testing.assert_close(torch.jit.trace(model, x)(x), ref, rtol=0, atol=0)
        torch.testing.assert_close(torch.fx.symbolic_trace(model)(x), ref, rtol=0, atol=0)
        exported = torch.export.export(model, (x,)).module()
        torch.testing.assert_close(exported(x), ref, rtol=0, atol=0)
        fast = archspec.optimize_for_inference(model)
        torch.testing.assert_close(fast(x), ref, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(torch.jit.script(fast)(x), fast(x), rtol=0, atol=0)


@pytest.mark.slow  # 4 s: an ONNX export and its check in onnxruntime
def test_onnx_export_of_a_volume_net(tmp_path):
    pytest.importorskip("onnxruntime")
    result = archspec.export(archspec.build(small([12, 12, 12]), seed=0),
                             tmp_path / "net.onnx", batch=2)
    assert result.input_shape == (2, 12, 12, 12)
    assert max(result.max_abs_diff.values()) < 1e-4


@pytest.mark.parametrize("size", [[64], [16, 16, 16]])
def test_features_only_reports_nd_reductions(size):
    spec = small(size, stem="{type: imagenet}")
    backbone = archspec.build(spec, features_only=True, seed=0).eval()
    x = torch.randn(1, 2, *size)
    with torch.no_grad():
        maps = backbone(x)
    assert [m.shape[1] for m in maps] == backbone.feature_info.channels()
    for m, reduction in zip(maps, backbone.feature_info.reduction()):
        assert list(m.shape[2:]) == [n // reduction for n in size]


def test_a_tensor_of_the_wrong_rank_or_width_gets_a_clear_message():
    model = archspec.build(small([8, 8, 8]))
    with pytest.raises(ValueError, match=r"small3d is a 3D network: it takes a batch "
                                         r"N x C x DxHxW \(5 dimensions\), got a "
                                         r"4-dimensional tensor of shape \[2, 2, 8, 8\]"):
        model(torch.randn(2, 2, 8, 8))
    with pytest.raises(ValueError, match=r"takes 2 input channels .* got 3"):
        model(torch.randn(2, 3, 8, 8, 8))
    fast = archspec.optimize_for_inference(model.eval())
    with pytest.raises(ValueError, match="is a 3D network"):
        fast(torch.randn(2, 2, 8, 8))


@pytest.mark.parametrize("norm, act", [
    ("{type: instance, affine: true}", "{type: leaky_relu, negative_slope: 0.2}"),
    ("{type: layer}", "elu"),
    ("{type: batch, affine: false}", "mish"),
    ("{type: batch, momentum: 0.3, eps: 0.001}", "relu"),
    ("{type: group, groups: 2}", "{type: prelu, init: 0.1}"),
])
def test_norms_and_activations_with_arguments_everywhere(norm, act):
    spec = small([8, 8, 8], norm=norm, activation=act)
    p = archspec.plan(spec)
    plain = archspec.build(spec, seed=0)
    assert sum(t.numel() for t in plain.parameters()) == p.params
    x = torch.randn(4, 2, 8, 8, 8, generator=torch.Generator().manual_seed(2))
    for level in (True, "max"):  # bitwise gradients, statistics moved once
        a, b = copy.deepcopy(plain), copy.deepcopy(plain)
        b.set_grad_checkpointing(level)
        a(x).square().sum().backward()
        b(x).square().sum().backward()
        assert all(torch.equal(u.grad, v.grad) for u, v in zip(a.parameters(), b.parameters()))
        assert all(torch.equal(u, v) for u, v in zip(a.buffers(), b.buffers()))
    model = plain.eval()
    with torch.no_grad():
        ref = model(x)
        torch.testing.assert_close(torch.jit.script(model)(x), ref, rtol=0, atol=0)
        torch.testing.assert_close(torch.export.export(model, (x,)).module()(x), ref,
                                   rtol=0, atol=0)
        torch.testing.assert_close(archspec.optimize_for_inference(model)(x), ref,
                                   rtol=1e-4, atol=1e-5)


# --- starting points from 2D ImageNet checkpoints (opted into, listed in the report) -------

def test_inflated_kernel_sees_a_volume_as_the_2d_kernel_sees_each_slice():
    from archspec.weights import inflate_kernel

    g = torch.Generator().manual_seed(0)
    w2 = torch.randn(4, 3, 3, 3, generator=g)
    w3 = inflate_kernel(w2, (4, 3, 3, 3, 3))
    assert w3.shape == (4, 3, 3, 3, 3)
    image = torch.randn(1, 3, 10, 10, generator=g)
    volume = image.unsqueeze(2).expand(1, 3, 8, 10, 10)  # the image repeated along depth
    out2 = torch.nn.functional.conv2d(image, w2, padding=1)
    out3 = torch.nn.functional.conv3d(volume, w3, padding=1)
    for d in range(1, 7):  # away from the depth borders, which see zero padding
        torch.testing.assert_close(out3[:, :, d], out2, rtol=1e-5, atol=1e-5)


def test_a_2d_kernel_into_1d_sums_over_the_removed_axis():
    from archspec.weights import inflate_kernel

    g = torch.Generator().manual_seed(1)
    w2 = torch.randn(4, 3, 3, 3, generator=g)
    w1 = inflate_kernel(w2, (4, 3, 3))
    signal = torch.randn(1, 3, 12, generator=g)
    image = signal.unsqueeze(-1).expand(1, 3, 12, 9)  # the signal repeated along width
    out2 = torch.nn.functional.conv2d(image, w2, padding=1)
    out1 = torch.nn.functional.conv1d(signal, w1, padding=1)
    torch.testing.assert_close(out2[..., 4], out1, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("channels", [1, 2, 4, 7])
def test_input_channels_are_adapted_by_timms_rule(channels):
    from timm.models import adapt_input_conv

    from archspec.weights import adapt_input_channels

    w = torch.randn(8, 3, 7, 7, generator=torch.Generator().manual_seed(channels))
    torch.testing.assert_close(adapt_input_channels(w, channels),
                               adapt_input_conv(channels, w.clone()), rtol=0, atol=0)


def test_an_imagenet_checkpoint_starts_a_volume_net_only_when_asked(tmp_path):
    import torchvision

    from archspec.weights import WeightsError

    state = torchvision.models.densenet121().state_dict()
    spec = archspec.load("densenet121-3d", overrides={"input.size": [32, 32, 32]})
    with pytest.raises(WeightsError) as info:
        archspec.build(spec, weights=state, drop_head=True)  # never silent
    shown = str(info.value)
    assert "stem, conv0: expected 64x1x7x7x7, found 64x3x7x7; a 2D kernel in a 3D net: " \
        "adapt=('inflate',)" in shown and "adapt=('input_channels',)" in shown
    model = archspec.build(spec, weights=state, drop_head=True,
                           adapt=("inflate", "input_channels"))
    w = model.features.conv0.weight
    expected = state["features.conv0.weight"].sum(1, keepdim=True).unsqueeze(2) / 7
    torch.testing.assert_close(w, expected.expand_as(w), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(model.features.norm5.weight, state["features.norm5.weight"])
    # the report lists every adaptation
    from archspec.builder import expected_state
    from archspec.weights import compare

    report, _ = compare(expected_state(archspec.plan(spec)), state, drop_head=True,
                        adapt=("inflate", "input_channels"))
    assert report.ok and len(report.adapted) == 120
    assert ("features.conv0.weight", "64x3x7x7 inflated to 64x3x7x7x7 (I3D); input "
            "channels 3 -> 1 (timm's adapt_input_conv)") in report.adapted
    with pytest.raises(ValueError, match="unknown adaptation 'stretch'"):
        compare(expected_state(archspec.plan(spec)), state, adapt=("stretch",))


def test_check_weights_and_build_take_adapt_on_the_command_line(tmp_path, capsys):
    import torchvision

    from archspec.cli import main

    ckpt = tmp_path / "tv.pth"
    torch.save(torchvision.models.densenet121().state_dict(), ckpt)
    args = ["check-weights", "densenet121", str(ckpt), "--drop-head", "--set",
            "input.size=[256]", "--set", "input.channels=2"]
    assert main(args) == 1
    assert main(args + ["--adapt", "inflate", "--adapt", "input_channels"]) == 0
    out = capsys.readouterr().out
    assert "loads into densenet121" in out and "120 adapted" in out
    assert main(["build", "densenet121", "--set", "input.size=[256]", "--weights",
                 str(ckpt), "--drop-head", "--adapt", "inflate", "-o",
                 str(tmp_path / "d1.pt")]) == 0


@pytest.mark.slow  # dynamo tracing: seconds per model
@pytest.mark.parametrize("size", [[32], [8, 8, 8]])
def test_compile_fullgraph_in_1d_and_3d_eval_and_memory_efficient_training(size):
    model = archspec.build(small(size), seed=0)
    x = torch.randn(2, 2, *size, generator=torch.Generator().manual_seed(0))
    compiled = torch.compile(model.eval(), fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)
    eager, frugal = copy.deepcopy(model).train(), copy.deepcopy(model).train()
    frugal.set_grad_checkpointing(True)
    eager(x).square().sum().backward()
    torch.compile(frugal, fullgraph=True, backend="aot_eager")(x).square().sum().backward()
    for a, b in zip(eager.parameters(), frugal.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name, size", [("densenet121-3d", [32, 32, 32]),
                                        ("densenetblur121d", [64, 64])])
def test_max_keeps_only_the_image_of_a_pooling_stem_and_the_plan_says_so(name, size):
    """Under max a pooling stem keeps its input only (memory.stem): what is left is the
    blocks' outputs, as the plan estimates; the gradients stay the plain model's."""
    spec = archspec.load(name, overrides={"input.size": size})
    p = archspec.plan(spec)
    plain = archspec.build(spec, seed=0)
    frugal = copy.deepcopy(plain)
    frugal.set_grad_checkpointing("max")
    x = torch.randn(2, *p.input_shape, generator=torch.Generator().manual_seed(0))
    kept = {}
    for label, model in (("plain", plain), ("max", frugal)):
        params = {t.untyped_storage().data_ptr() for t in model.parameters()}
        seen = {}

        def pack(t):
            if t.untyped_storage().data_ptr() not in params:
                seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = model(x).square().sum()
        loss.backward()
        kept[label] = sum(seen.values())
    for a, b in zip(plain.parameters(), frugal.parameters()):
        assert torch.equal(a.grad, b.grad)
    for a, b in zip(plain.buffers(), frugal.buffers()):
        assert torch.equal(a, b)
    assert kept["max"] < 0.08 * kept["plain"], kept
    estimate = p.training_memory(2, memory_efficient="max", recomputation=False)
    assert abs(estimate - kept["max"]) <= 0.05 * kept["max"], (estimate, kept)
