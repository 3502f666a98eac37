"""Plan -> nn.Module, and checkpoints of built models.

Everything above this layer (load, schema, plan, report, search) stays torch-free; this
module and the ones that run models (nn, inference, capture, deploy, weights, verify,
introspect) import torch.

The model walks the plan's stages and instantiates modules named as torchvision's
DenseNet names them (features.conv0 ... features.norm5, classifier), in the same order
and with the same initialisation, so state_dicts load either way with strict=True.
"""

# No `from __future__ import annotations`: torch.fx and TorchScript read these modules'
# annotations as real types.
import functools
import math
import os
from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import zoo
from .canonical import canonical, content_hash
from .files import write_atomic
from .graph_mode import capturing
from .loader import load, loads
from .nn import (BATCH_NORMS, CONVS, ClassifierHead, DenseBlock, DenseLayer, Features, Transition,
                 activate, classifier, cifar_stem, deep_stem, imagenet_stem, make_activation, make_norm)
from .nn_hardnet import (CombConvLayer, ConvLayer, HarDBlock, hardnet_feature_maps, hardnet_stem,
                         hardnet_transition)
from .nn_peleenet import BasicConv as PeleeConv, PeleeLayer, StemBlock, peleenet_feature_maps
from .nn_vovnet import OsaBlock, OsaStage, feature_maps, vovnet_stem
from .plan import Plan, plan as make_plan
from .plan_hardnet import HarDNetPlan, harmonic_links
from .plan_peleenet import PeleeNetPlan
from .plan_vovnet import VoVNetPlan
from .resources import check_resources
from .schema import (AXES, Attention, DenseNetSpec, Downsample, HarDNetSpec, PeleeNetSpec,
                     StemType, VoVNetSpec)

__all__ = ["DenseNet", "DenseNetFeatures", "VoVNet", "VoVNetFeatures", "HarDNet", "HarDNetFeatures", "PeleeNet",
           "PeleeNetFeatures", "FeatureInfo", "build",
           "expected_state",
           "save_checkpoint", "load_checkpoint"]


def _pretrained_cfg(plan: Plan) -> Dict[str, Any]:
    """timm's ``pretrained_cfg`` for a spec: what a data pipeline or a fine-tuning script
    reads from a model (input size, classes, where the first conv and the classifier are),
    and which spec it is (name and content hash). A spec does not state how its inputs are
    normalised, so ``mean``/``std`` (timm's keys) are given only where the zoo knows them:
    its ImageNet networks, with the ImageNet statistics torchvision and timm train with."""
    cfg = {"architecture": plan.name, "input_size": tuple(plan.input_shape),
           "num_classes": plan.num_classes, "first_conv": plan.first_conv,
           "classifier": plan.stages[-1].module, "pool_size": tuple(plan.stages[-1].in_size),
           "spec_sha256": content_hash(plan.spec), "source": plan.spec.source}
    group = zoo.groups().get(_zoo_hashes().get(content_hash(plan.spec), ""))
    if group in ("imagenet", "timm", "vovnet", "hardnet", "peleenet"):  # torchvision (and HarDNet's
        # reference, through torchvision's transforms) resize bilinearly, timm bicubically
        cfg.update(mean=IMAGENET_MEAN, std=IMAGENET_STD, crop_pct=0.875,
                   interpolation="bilinear" if group in ("imagenet", "hardnet", "peleenet")
                   else "bicubic")
    return cfg


@functools.lru_cache(maxsize=1)
def _zoo_hashes() -> Dict[str, str]:
    """content hash -> zoo name: which zoo spec a spec is exactly."""
    return {content_hash(load(n)): n for n in zoo.names()}


# torchvision's and timm's ImageNet normalisation (RGB, inputs scaled to [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DenseNet(nn.Module):
    """A DenseNet built from a Plan; ``self.plan`` is the plan it was built from.

    torchvision's layout (``features``, ``classifier``) and timm's model API:
    ``forward_features`` (features and the final activation), ``forward_head(x,
    pre_logits=False)``, ``num_features``, ``num_classes``, ``get_classifier``,
    ``reset_classifier``, ``set_grad_checkpointing``, ``pretrained_cfg``. With
    ``num_classes: 0`` the classifier is an Identity and ``forward`` returns the pooled
    features, as timm's headless models do.

    The constructor takes what ``archspec.build`` takes for a classifier on the CPU (a
    spec, plan, zoo name or path; ``overrides``, ``seed``, ``weights``, ``drop_head``,
    ``allow_large``), so a config tool can name the class itself (LightningCLI's
    ``class_path: archspec.DenseNet``); ``build`` adds ``device`` and ``dtype``.
    """

    __jit_unused_properties__ = ["default_cfg"]  # a Python dict: not for TorchScript

    def __init__(self, spec: DenseNetSpec | Plan | str | os.PathLike, *,
                 overrides: Mapping[str, Any] | None = None, seed: int | None = None,
                 weights: str | os.PathLike | Mapping[str, Tensor] | None = None,
                 drop_head: bool = False, allow_large: bool = False,
                 adapt: tuple[str, ...] | list[str] = ()):
        super().__init__()
        _construct(self, "densenet", spec, overrides, seed, weights, drop_head, allow_large,
                   adapt, self._make)

    def _make(self, plan: Plan) -> None:
        self.plan = plan
        spec = plan.spec
        dims = self.dims = plan.dims
        norm, act = make_norm(spec.norm, dims), make_activation(spec.activation)
        self.activation = spec.activation.value
        self.activation_argument = spec.activation.argument  # leaky_relu's slope, elu's alpha
        blur = spec.anti_alias.filter_size
        stem = plan.stages[0]
        if plan.stem_type == StemType.cifar:
            features = cifar_stem(stem.in_channels, stem.out_channels, dims)
        elif plan.stem_type == StemType.imagenet:
            features = imagenet_stem(stem.in_channels, stem.out_channels, norm, act,
                                     blur if stem.blur else None, dims)
        else:
            features = deep_stem(stem.in_channels, plan.stem_widths, stem.out_channels, norm,
                                 act, blur if stem.blur else None, dims)
        for stage in plan.stages[1:-1]:
            if stage.kind == "block":
                layers = [DenseLayer(lp.in_channels, lp.bottleneck_channels, lp.growth_rate,
                                     stage.drop_rate, spec.memory_efficient, norm, act, dims)
                          for lp in stage.layers]
                features.append((stage.name, DenseBlock(layers, stage.out_channels)))
            else:
                features.append((stage.name, Transition(
                    stage.in_channels, stage.out_channels, stage.drop_rate, norm, act,
                    blur if stage.blur else None, spec.memory_efficient, dims)))
        head = plan.stages[-1]
        features.append(("norm5", norm(head.in_channels)))
        if spec.activation.params:
            # A learned activation needs a module of its own after norm5 (MONAI's
            # class_layers.relu); the others stay functional there, as torchvision's.
            features.append(("relu5", act()))
        self.features = Features(OrderedDict(features), spec.memory_efficient)
        self.num_features = head.in_channels
        self.num_classes = plan.num_classes
        self.classifier = classifier(head.in_channels, plan.num_classes)
        # timm's flag is a bool; the level (true or max) lives on the blocks
        self.grad_checkpointing = bool(spec.memory_efficient)
        self.pretrained_cfg = _pretrained_cfg(plan)
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's initialisation, in its order, so a seed gives torchvision's weights.
        for m in self.modules():
            if isinstance(m, CONVS):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, (*BATCH_NORMS, nn.GroupNorm)) and m.affine:
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.constant_(m.bias, 0)

    @property
    def default_cfg(self) -> Dict[str, Any]:
        """timm's older name for ``pretrained_cfg``."""
        return self.pretrained_cfg

    def forward_features(self, x: Tensor) -> Tensor:
        """The last feature map, activated (timm's forward_features): N x C x H/32 x W/32."""
        if not torch.jit.is_scripting():
            self._check_input(x)
        x = self.features(x)
        if self.activation == "prelu":  # features.relu5 has applied it
            return x
        return activate(self.activation, x, True, self.activation_argument)

    @torch.jit.unused  # eager only: a graph fixes its input's rank anyway
    def _check_input(self, x: Tensor) -> None:
        check_input(self.plan, x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Global average pool and classifier; ``pre_logits`` stops before the classifier."""
        if self.dims == 2:  # the pool torchvision's (and MONAI's) model runs
            x = F.adaptive_avg_pool2d(x, (1, 1))
        elif self.dims == 3:
            x = F.adaptive_avg_pool3d(x, (1, 1, 1))
        else:
            x = F.adaptive_avg_pool1d(x, 1)
        x = torch.flatten(x, 1)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.classifier

    @torch.jit.ignore
    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """A fresh classifier for ``num_classes`` (0: none, forward returns pooled
        features). The plan follows (it becomes the variant ``NAME+num_classes=N``), so
        ``save_checkpoint`` writes a checkpoint that loads back."""
        if global_pool not in (None, "avg"):
            raise ValueError(f"only global average pooling ('avg'), not {global_pool!r}")
        like = next(self.parameters())
        self.plan = _with_classes(self.plan, num_classes)
        self.num_classes = num_classes
        self.classifier = classifier(self.num_features, num_classes).to(
            device=like.device, dtype=like.dtype)
        self.pretrained_cfg = _pretrained_cfg(self.plan)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: Union[bool, str] = True) -> None:
        """Switch the memory-efficient path of every dense block (and, at ``"max"``,
        transition) on or off at run time (timm's name for it); gradients are the same
        either way. ``True`` takes the spec's level when it names one (``"max"``), else
        ``true``'s; ``"max"`` asks for that level explicitly."""
        if enable not in (True, False, "max"):
            raise ValueError(f"enable must be True, False or 'max', not {enable!r}")
        level = "max" if enable is True and self.plan.spec.memory_efficient == "max" else enable
        self.grad_checkpointing = bool(enable)
        for m in self.modules():
            if isinstance(m, (DenseBlock, Transition, Features)):
                m.memory_efficient = level


def _with_classes(plan: Plan, num_classes: int) -> Plan:
    """The plan of the same spec with another number of classes: a variant, named so."""
    if num_classes == plan.num_classes:
        return plan
    return make_plan(loads(canonical(plan.spec), source=f"<{plan.name}>",
                           overrides={"num_classes": num_classes}))


class FeatureInfo(list):
    """A backbone's feature levels: a list of dicts (module, num_chs, reduction, stage)
    that also answers timm's FeatureInfo methods, so code written for timm backbones
    (necks sized from ``feature_info.channels()``) works unchanged."""

    def get_dicts(self, keys: Optional[List[str]] = None) -> List[Dict[str, Any]]:
        return [dict(d) if keys is None else {k: d[k] for k in keys} for d in self]

    def get(self, key: str, idx: Optional[Union[int, List[int]]] = None) -> Any:
        if idx is None:
            return [d[key] for d in self]
        if isinstance(idx, (tuple, list)):
            return [self[i][key] for i in idx]
        return self[idx][key]

    def channels(self, idx: Optional[Union[int, List[int]]] = None) -> Any:
        return self.get("num_chs", idx)

    def reduction(self, idx: Optional[Union[int, List[int]]] = None) -> Any:
        return self.get("reduction", idx)

    def module_name(self, idx: Optional[Union[int, List[int]]] = None) -> Any:
        return self.get("module", idx)


class DenseNetFeatures(nn.Module):
    """A DenseNet backbone: ``forward`` returns the feature maps at ``plan.feature_info``
    (selected by ``out_indices``), as timm's ``features_only`` models do: the stem's
    activated norm0 (conv0 for the CIFAR stem), each block's output but the last, and the
    activated norm5. ``feature_info`` is a FeatureInfo (timm's methods). State_dict keys
    are the classifier model's minus ``classifier.*``.
    """

    def __init__(self, spec: DenseNetSpec | Plan | str | os.PathLike,
                 out_indices: tuple[int, ...] | list[int] | None = None, *,
                 overrides: Mapping[str, Any] | None = None, seed: int | None = None,
                 weights: str | os.PathLike | Mapping[str, Tensor] | None = None,
                 allow_large: bool = False, adapt: tuple[str, ...] | list[str] = ()):
        super().__init__()
        # a backbone has no classifier: the checkpoint's is left out (drop_head)
        _construct(self, "densenet", spec, overrides, seed, weights, True, allow_large,
                   adapt, lambda plan: self._make(plan, out_indices))

    def _make(self, plan: Plan, out_indices: Optional[Tuple[int, ...]]) -> None:
        info = list(plan.feature_info)
        if out_indices is None:
            out_indices = tuple(range(len(info)))
        out_indices = tuple(out_indices)
        bad = [i for i in out_indices if not -len(info) <= i < len(info)]
        if bad:
            raise ValueError(f"out_indices {bad} out of range: {plan.name} has "
                             f"{len(info)} feature levels (0..{len(info) - 1})")
        self.plan = plan
        self.out_indices = tuple(i % len(info) for i in out_indices)
        self.feature_info = FeatureInfo(info[i] for i in self.out_indices)
        full = DenseNet(plan, allow_large=True)  # checked above
        self.features = full.features  # same modules, same init, same names
        self.activation = full.activation
        self.activation_argument = full.activation_argument
        # Positions in ``features`` (plain ints, so TorchScript and FX read them): where a
        # tap is taken, which taps are norms to activate (timm's norms carry their
        # activation), which activation modules those taps make redundant (they would act
        # in place on a returned tensor), and where nothing later is needed.
        names = [n for n, _ in self.features.named_children()]
        taps = [names.index(info[i]["module"].split(".", 1)[1]) for i in self.out_indices]
        if plan.spec.activation.params:
            # A learned activation has its module after every norm (relu5 after norm5):
            # tap that module's output, the activated norm.
            taps = [i + 1 if names[i].startswith("norm") else i for i in taps]
        self._taps: List[int] = sorted(taps)
        self._activated: List[int] = [i for i in self._taps if names[i].startswith("norm")]
        self._skip: List[int] = [i + 1 for i in self._activated
                                 if i + 1 < len(names) and names[i + 1].startswith("relu")]
        self._stop = max(self._taps)

    def forward(self, x: Tensor) -> List[Tensor]:
        if not torch.jit.is_scripting():
            self._check_input(x)
        out: List[Tensor] = []
        for i, module in enumerate(self.features):
            if i <= self._stop and i not in self._skip:
                x = module(x)
                if i in self._taps:
                    if i in self._activated:
                        x = activate(self.activation, x, False, self.activation_argument)
                    out.append(x)
        return out


    @torch.jit.unused
    def _check_input(self, x: Tensor) -> None:
        check_input(self.plan, x)


class _PostActivationNet(nn.Module):
    """What VoVNet and HarDNet share: a ``stem`` and a body whose output is
    ``forward_features``, a ``head`` (global average pool, dropout, ``head.fc``), and the
    timm-style model API (``forward_head``, ``get_classifier``, ``reset_classifier``,
    ``pretrained_cfg``). The memory levels are DenseNet's; these members refuse them.
    ``_zero_bias``: whether a fresh classifier's bias starts at zero (timm's VoVNet) or
    where torch's default draws it (HarDNet's reference)."""

    _zero_bias: bool = True
    _no_memory_levels: str = ""

    @torch.jit.unused
    def _check_input(self, x: Tensor) -> None:
        check_input(self.plan, x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Global average pool, dropout and classifier; ``pre_logits`` stops before it."""
        return self.head(x, pre_logits)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    @torch.jit.ignore
    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """A fresh classifier for ``num_classes`` (0: none); the plan follows."""
        if global_pool not in (None, "avg"):
            raise ValueError(f"only global average pooling ('avg'), not {global_pool!r}")
        like = next(self.parameters())
        self.plan = _with_classes(self.plan, num_classes)
        self.num_classes = num_classes
        self.head.fc = classifier(self.num_features, num_classes, self._zero_bias).to(
            device=like.device, dtype=like.dtype)
        self.pretrained_cfg = _pretrained_cfg(self.plan)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: Union[bool, str] = True) -> None:
        """The memory levels are DenseNet's: this member has none (ValueError if asked)."""
        if enable:
            raise ValueError("the memory levels are DenseNet's: " + self._no_memory_levels)


def _feature_levels(module: nn.Module, plan: Any,
                    out_indices: Optional[Tuple[int, ...]]) -> list:
    """A backbone's levels: ``out_indices`` checked against ``plan.feature_info`` (a
    ValueError naming the range), then ``plan``, ``dims``, ``out_indices`` (made
    non-negative) and ``feature_info`` set on ``module``; returns the plan's levels."""
    info = list(plan.feature_info)
    out_indices = tuple(range(len(info)) if out_indices is None else out_indices)
    bad = [i for i in out_indices if not -len(info) <= i < len(info)]
    if bad:
        raise ValueError(f"out_indices {bad} out of range: {plan.name} has "
                         f"{len(info)} feature levels (0..{len(info) - 1})")
    module.plan = plan
    module.dims = plan.dims
    module.out_indices = tuple(i % len(info) for i in out_indices)
    module.feature_info = FeatureInfo(info[i] for i in module.out_indices)
    return info


class VoVNet(_PostActivationNet):
    """A VoVNet built from a VoVNetPlan; ``self.plan`` is the plan it was built from.

    timm's layout (``stem``, ``stages.i.blocks.j``, ``head.fc``: a timm VoVNet's
    state_dict loads with strict=True) and the model API DenseNet has:
    ``forward_features``, ``forward_head(x, pre_logits=False)``, ``num_features``,
    ``num_classes``, ``get_classifier``, ``reset_classifier``, ``pretrained_cfg``. The
    constructor takes what DenseNet's takes.
    """

    _no_memory_levels = ("an OSA block concatenates once, so a VoVNet keeps what a plain "
                         "conv net keeps")

    def __init__(self, spec: VoVNetSpec | VoVNetPlan | str | os.PathLike, *,
                 overrides: Mapping[str, Any] | None = None, seed: int | None = None,
                 weights: str | os.PathLike | Mapping[str, Tensor] | None = None,
                 drop_head: bool = False, allow_large: bool = False,
                 adapt: tuple[str, ...] | list[str] = ()):
        super().__init__()
        _construct(self, "vovnet", spec, overrides, seed, weights, drop_head, allow_large,
                   adapt, self._make)

    def _make(self, plan: VoVNetPlan) -> None:
        self.plan = plan
        spec = plan.spec
        dims = self.dims = plan.dims
        norm, act = make_norm(spec.norm, dims), make_activation(spec.activation)
        self.stem = vovnet_stem(spec.input.channels, list(spec.stem_widths), spec.depthwise,
                                norm, act, dims)
        widths = iter(plan.block_widths)
        stages = []
        for i, st in enumerate(spec.stages):
            blocks = []
            for j in range(st.blocks):
                c_in, _ = next(widths)
                blocks.append(OsaBlock(c_in, st.conv_channels, st.out_channels,
                                       spec.layers_per_block, spec.residual and j > 0,
                                       spec.depthwise,
                                       spec.attention == Attention.ese and j == st.blocks - 1,
                                       norm, act, dims))
            stages.append(OsaStage(blocks, downsample=i > 0, dims=dims))
        self.stages = nn.Sequential(*stages)
        self.num_features = plan.out_channels
        self.num_classes = plan.num_classes
        self.head = ClassifierHead(plan.out_channels, plan.num_classes, spec.drop_rate, dims)
        self.pretrained_cfg = _pretrained_cfg(plan)
        # timm's initialisation: He (fan_out) for every conv, zero classifier bias
        for m in self.modules():
            if isinstance(m, CONVS):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: Tensor) -> Tensor:
        """The last stage's output (timm's forward_features): N x C x H/32 x W/32."""
        if not torch.jit.is_scripting():
            self._check_input(x)
        return self.stages(self.stem(x))


class VoVNetFeatures(nn.Module):
    """A VoVNet backbone: ``forward`` returns the feature maps at ``plan.feature_info``
    (timm's: the stem's second conv, stride 2, and each stage's output), selected by
    ``out_indices``. State_dict keys are the classifier model's minus ``head.*``."""

    def __init__(self, spec: VoVNetSpec | VoVNetPlan | str | os.PathLike,
                 out_indices: tuple[int, ...] | list[int] | None = None, *,
                 overrides: Mapping[str, Any] | None = None, seed: int | None = None,
                 weights: str | os.PathLike | Mapping[str, Tensor] | None = None,
                 allow_large: bool = False, adapt: tuple[str, ...] | list[str] = ()):
        super().__init__()
        _construct(self, "vovnet", spec, overrides, seed, weights, True, allow_large, adapt,
                   lambda plan: self._make(plan, out_indices))

    def _make(self, plan: VoVNetPlan, out_indices: Optional[Tuple[int, ...]]) -> None:
        _feature_levels(self, plan, out_indices)
        full = VoVNet(plan, allow_large=True)
        self.stem, self.stages = full.stem, full.stages
        self.pretrained_cfg = full.pretrained_cfg
        # level 0 is the stem's second conv; level i the output of stages[i - 1]
        self._taps: List[int] = sorted(self.out_indices)
        self._stop = max(self._taps)

    @torch.jit.unused
    def _check_input(self, x: Tensor) -> None:
        check_input(self.plan, x)

    def forward(self, x: Tensor) -> List[Tensor]:
        if not torch.jit.is_scripting():
            self._check_input(x)
        return feature_maps(self.stem, self.stages, x, self._taps, self._stop)


class HarDNet(_PostActivationNet):
    """A HarDNet built from a HarDNetPlan; ``self.plan`` is the plan it was built from.

    Layout: ``stem`` (conv, conv, downsampling), ``features.hardblockI`` (its
    ``layers.j``) and ``features.transitionI`` (the 1x1 conv-norm-act and its
    downsampling), ``head.fc``; the reference's flat ``base.N`` state_dict loads through
    archspec.weights (remapped, reported). The model API DenseNet and VoVNet have:
    ``forward_features``, ``forward_head(x, pre_logits=False)``, ``num_features``,
    ``num_classes``, ``get_classifier``, ``reset_classifier``, ``pretrained_cfg``. Seeded,
    it draws the reference's initial weights (the same modules in the same order, torch's
    default initialisation, which the reference keeps).
    """

    _zero_bias = False  # torch's default Linear initialisation, as the reference keeps it
    _no_memory_levels = "a HarDNet layer is post-activation and reads a few earlier outputs"

    def __init__(self, spec: HarDNetSpec | HarDNetPlan | str | os.PathLike, *,
                 overrides: Mapping[str, Any] | None = None, seed: int | None = None,
                 weights: str | os.PathLike | Mapping[str, Tensor] | None = None,
                 drop_head: bool = False, allow_large: bool = False,
                 adapt: tuple[str, ...] | list[str] = ()):
        super().__init__()
        _construct(self, "hardnet", spec, overrides, seed, weights, drop_head, allow_large,
                   adapt, self._make)

    def _make(self, plan: HarDNetPlan) -> None:
        self.plan = plan
        spec = plan.spec
        dims = self.dims = plan.dims
        norm, act = make_norm(spec.norm, dims), make_activation(spec.activation)
        dw_down = spec.downsample == Downsample.depthwise
        self.stem = hardnet_stem(spec.input.channels, list(spec.stem_widths),
                                 list(spec.stem_kernels), dw_down, norm, act, dims)
        parts: "OrderedDict[str, nn.Module]" = OrderedDict()
        for b, blk in enumerate(spec.blocks):
            layers: List[nn.Module] = []
            for reads, width in zip(plan.layer_inputs[b], plan.layer_widths[b]):
                layers.append(CombConvLayer(reads, width, norm, act, dims) if spec.depthwise
                              else ConvLayer(reads, width, 3, 1, norm, act, dims))
            n = blk.layers
            parts[f"hardblock{b + 1}"] = HarDBlock(
                layers, [list(harmonic_links(j)) for j in range(1, n + 1)],
                [j for j in range(1, n + 1) if j % 2 == 1 or j == n])
            last = b == len(spec.blocks) - 1
            parts[f"transition{b + 1}"] = hardnet_transition(
                plan.block_out[b], blk.out_channels, spec.block_dropout if last else 0.0,
                blk.downsample, dw_down, norm, act, dims)
        self.features = nn.Sequential(parts)
        self.num_features = plan.out_channels
        self.num_classes = plan.num_classes
        self.head = ClassifierHead(plan.out_channels, plan.num_classes, spec.drop_rate, dims,
                                   zero_bias=self._zero_bias)
        self.pretrained_cfg = _pretrained_cfg(plan)

    def forward_features(self, x: Tensor) -> Tensor:
        """The last 1x1 conv's output: N x C x H/32 x W/32 for the zoo's HarDNets."""
        if not torch.jit.is_scripting():
            self._check_input(x)
        return self.features(self.stem(x))


class HarDNetFeatures(nn.Module):
    """A HarDNet backbone: ``forward`` returns the feature maps at ``plan.feature_info``
    (the stem's output, and each 1x1 conv's output where the next block works at a
    coarser resolution, and the last), selected by ``out_indices``; a tap sits after the
    transition's downsampling, so it has that level's reduction. State_dict keys are the
    classifier model's minus ``head.*``."""

    def __init__(self, spec: HarDNetSpec | HarDNetPlan | str | os.PathLike,
                 out_indices: tuple[int, ...] | list[int] | None = None, *,
                 overrides: Mapping[str, Any] | None = None, seed: int | None = None,
                 weights: str | os.PathLike | Mapping[str, Tensor] | None = None,
                 allow_large: bool = False, adapt: tuple[str, ...] | list[str] = ()):
        super().__init__()
        _construct(self, "hardnet", spec, overrides, seed, weights, True, allow_large, adapt,
                   lambda plan: self._make(plan, out_indices))

    def _make(self, plan: HarDNetPlan, out_indices: Optional[Tuple[int, ...]]) -> None:
        info = _feature_levels(self, plan, out_indices)
        full = HarDNet(plan, allow_large=True)
        self.stem, self.features = full.stem, full.features
        self.pretrained_cfg = full.pretrained_cfg
        names = [name for name, _ in self.features.named_children()]
        # the index in self.features whose output each level is (-1: the stem's)
        self._taps: List[int] = sorted(
            -1 if info[i]["module"] == "stem" else names.index(info[i]["module"].split(".")[1])
            for i in self.out_indices)
        self._stop = max(self._taps)

    @torch.jit.unused
    def _check_input(self, x: Tensor) -> None:
        check_input(self.plan, x)

    def forward(self, x: Tensor) -> List[Tensor]:
        if not torch.jit.is_scripting():
            self._check_input(x)
        return hardnet_feature_maps(self.stem, self.features, x, self._taps, self._stop)


class PeleeNet(_PostActivationNet):
    """A PeleeNet built from a PeleeNetPlan; ``self.plan`` is the plan it was built from.

    The reference's layout (``features.stemblock``, ``features.denseblockI.denselayerJ``,
    ``features.transitionI``, ``classifier``: its state_dict loads with strict=True) and
    the model API the other members have. Seeded, it draws the reference's initial
    weights: its modules made in the same order, then its ``_initialize_weights`` (conv
    weights normal with std sqrt(2 / (kernel volume x out channels)), norms 1 and 0, the
    classifier normal with std 0.01 and a zero bias).
    """

    _no_memory_levels = ("a PeleeNet layer is post-activation with two branches, which "
                         "they do not implement")

    def __init__(self, spec: PeleeNetSpec | PeleeNetPlan | str | os.PathLike, *,
                 overrides: Mapping[str, Any] | None = None, seed: int | None = None,
                 weights: str | os.PathLike | Mapping[str, Tensor] | None = None,
                 drop_head: bool = False, allow_large: bool = False,
                 adapt: tuple[str, ...] | list[str] = ()):
        super().__init__()
        _construct(self, "peleenet", spec, overrides, seed, weights, drop_head, allow_large,
                   adapt, self._make)

    def _make(self, plan: PeleeNetPlan) -> None:
        self.plan = plan
        spec = plan.spec
        dims = self.dims = plan.dims
        norm, act = make_norm(spec.norm, dims), make_activation(spec.activation)
        parts: "OrderedDict[str, nn.Module]" = OrderedDict()
        parts["stemblock"] = StemBlock(spec.input.channels, spec.stem_channels, norm, act, dims)
        channels = spec.stem_channels
        avg = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)[dims - 1]
        for b, n_layers in enumerate(spec.block_config):
            k = plan.growth_rates[b]
            layers: "OrderedDict[str, nn.Module]" = OrderedDict()
            for j in range(n_layers):
                layers[f"denselayer{j + 1}"] = PeleeLayer(channels, plan.bottlenecks[b][j],
                                                          k // 2, norm, act, dims)
                channels += k
            parts[f"denseblock{b + 1}"] = nn.Sequential(layers)
            parts[f"transition{b + 1}"] = PeleeConv(channels, channels, 1, 1, norm, act, dims)
            if b != len(spec.block_config) - 1:
                parts[f"transition{b + 1}_pool"] = avg(kernel_size=2, stride=2)
        self.features = nn.Sequential(parts)
        self.num_features = plan.out_channels
        self.num_classes = plan.num_classes
        self.spatial: List[int] = list(range(2, dims + 2))
        self.drop = nn.Dropout(spec.drop_rate)
        self.classifier = classifier(plan.out_channels, plan.num_classes)
        self.pretrained_cfg = _pretrained_cfg(plan)
        _pelee_init(self)

    def forward_features(self, x: Tensor) -> Tensor:
        """The last transition's output: N x C x H/32 x W/32 for the zoo's PeleeNet."""
        if not torch.jit.is_scripting():
            self._check_input(x)
        return self.features(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Global average pool, dropout and classifier; ``pre_logits`` stops before it."""
        x = self.drop(x.mean(self.spatial))
        return x if pre_logits else self.classifier(x)

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.classifier

    @torch.jit.ignore
    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """A fresh classifier for ``num_classes`` (0: none); the plan follows."""
        if global_pool not in (None, "avg"):
            raise ValueError(f"only global average pooling ('avg'), not {global_pool!r}")
        like = next(self.parameters())
        self.plan = _with_classes(self.plan, num_classes)
        self.num_classes = num_classes
        self.classifier = classifier(self.num_features, num_classes).to(device=like.device,
                                                                        dtype=like.dtype)
        if isinstance(self.classifier, nn.Linear):
            with torch.no_grad():
                self.classifier.weight.normal_(0, 0.01)
        self.pretrained_cfg = _pretrained_cfg(self.plan)


def _pelee_init(model: nn.Module) -> None:
    """The reference's _initialize_weights, in its order (modules() order)."""
    for m in model.modules():
        if isinstance(m, CONVS):
            n = math.prod(m.kernel_size) * m.out_channels
            m.weight.data.normal_(0, math.sqrt(2.0 / n))
        elif isinstance(m, BATCH_NORMS) and m.affine:
            m.weight.data.fill_(1)
            m.bias.data.zero_()
        elif isinstance(m, nn.Linear):
            m.weight.data.normal_(0, 0.01)
            m.bias.data.zero_()


class PeleeNetFeatures(nn.Module):
    """A PeleeNet backbone: ``forward`` returns the feature maps at ``plan.feature_info``
    (each transition's 1x1 conv output, before its pool: strides 4, 8, 16 and 32 for the
    zoo's), selected by ``out_indices``. State_dict keys are the classifier model's minus
    ``classifier.*``."""

    def __init__(self, spec: PeleeNetSpec | PeleeNetPlan | str | os.PathLike,
                 out_indices: tuple[int, ...] | list[int] | None = None, *,
                 overrides: Mapping[str, Any] | None = None, seed: int | None = None,
                 weights: str | os.PathLike | Mapping[str, Tensor] | None = None,
                 allow_large: bool = False, adapt: tuple[str, ...] | list[str] = ()):
        super().__init__()
        _construct(self, "peleenet", spec, overrides, seed, weights, True, allow_large, adapt,
                   lambda plan: self._make(plan, out_indices))

    def _make(self, plan: PeleeNetPlan, out_indices: Optional[Tuple[int, ...]]) -> None:
        info = _feature_levels(self, plan, out_indices)
        full = PeleeNet(plan, allow_large=True)
        self.features = full.features
        self.pretrained_cfg = full.pretrained_cfg
        names = [name for name, _ in self.features.named_children()]
        self._taps: List[int] = sorted(names.index(info[i]["module"].split(".")[1])
                                       for i in self.out_indices)
        self._stop = max(self._taps)

    @torch.jit.unused
    def _check_input(self, x: Tensor) -> None:
        check_input(self.plan, x)

    def forward(self, x: Tensor) -> List[Tensor]:
        if not torch.jit.is_scripting():
            self._check_input(x)
        return peleenet_feature_maps(self.features, x, self._taps, self._stop)


#: Each family member's classifier model and backbone.
_CLASSES = {"densenet": (DenseNet, DenseNetFeatures), "vovnet": (VoVNet, VoVNetFeatures),
            "hardnet": (HarDNet, HarDNetFeatures), "peleenet": (PeleeNet, PeleeNetFeatures)}


def check_input(plan: Plan, x: Any) -> None:
    """A ValueError in the spec's terms for an input the network cannot take (a 4D batch
    into a 3D net, 3 channels into a 1-channel net), instead of torch's error from deep
    inside the first convolution. Not while a graph is captured: it would add nodes."""
    if capturing() is not None or not isinstance(x, Tensor):
        return
    axes = "x".join(AXES[plan.dims])
    if x.dim() != plan.dims + 2:
        raise ValueError(
            f"{plan.name} is a {plan.dims}D network: it takes a batch N x C x {axes} "
            f"({plan.dims + 2} dimensions), got a {x.dim()}-dimensional tensor of shape "
            f"{list(x.shape)}")
    if x.shape[1] != plan.input_shape[0]:
        raise ValueError(f"{plan.name} takes {plan.input_shape[0]} input channel"
                         f"{'' if plan.input_shape[0] == 1 else 's'} (N x C x {axes}, "
                         f"C = {plan.input_shape[0]}), got {x.shape[1]}: shape "
                         f"{list(x.shape)}")


def _construct(module: nn.Module, family: str, spec: Any,
               overrides: Optional[Mapping[str, Any]], seed: Optional[int], weights: Any,
               drop_head: bool, allow_large: bool, adapt: Any, make: Any) -> None:
    """What every model class's constructor does: the plan of ``spec`` (a member of
    ``family``), the resource guard, the modules made with ``seed``, the weights loaded."""
    plan = _as_plan(spec, overrides)
    if plan.family != family:
        raise TypeError(f"{plan.name} is a {plan.family} spec, not a {family}: build it "
                        "with archspec.build, which picks the class")
    check_resources(plan, device="cpu", dtype_bytes=4, allow_large=allow_large)
    _seeded(seed, lambda: make(plan))
    if weights is not None:
        _load_weights(module, weights, drop_head, adapt)


def _seeded(seed: Optional[int], make: Any) -> None:
    """Run ``make`` with the global RNG seeded, restoring its state after: the same seed
    gives torchvision's weights for that seed (its constructor draws in the same order)."""
    if seed is None:
        make()
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        make()


def _load_weights(model: nn.Module, weights: Any, drop_head: bool,
                  adapt: tuple[str, ...] | list[str] = ()) -> None:
    from .weights import load_weights  # remapping of torchvision, timm and MONAI keys

    load_weights(model, weights, drop_head=drop_head, adapt=tuple(adapt))


def _as_plan(spec: Any, overrides: Optional[Mapping[str, Any]] = None) -> Plan:
    if overrides and not isinstance(spec, (str, os.PathLike)):
        raise TypeError("overrides apply to a zoo name or a path; for a DenseNetSpec use "
                        "archspec.load(name, overrides=...) first")
    if isinstance(spec, (Plan, VoVNetPlan, HarDNetPlan, PeleeNetPlan)):
        return spec
    if isinstance(spec, (str, os.PathLike)):
        spec = load(spec, overrides=dict(overrides) if overrides else None)
    if not isinstance(spec, (DenseNetSpec, VoVNetSpec, HarDNetSpec, PeleeNetSpec)):
        raise TypeError(f"a model is built from a spec, a plan, a zoo name or a path, not "
                        f"{type(spec).__name__}")
    return make_plan(spec)


def build(spec: DenseNetSpec | Plan | str | os.PathLike, *, device: Any = None,
          dtype: torch.dtype | None = None, seed: int | None = None,
          allow_large: bool = False,
          weights: str | os.PathLike | Mapping[str, Tensor] | None = None,
          drop_head: bool = False, features_only: bool = False,
          out_indices: tuple[int, ...] | list[int] | None = None,
          overrides: Mapping[str, Any] | None = None,
          adapt: tuple[str, ...] | list[str] = ()) -> nn.Module:
    """Build the nn.Module a spec describes.

    ``spec`` may be a DenseNetSpec, a Plan, a zoo name or a path; with a name or a path,
    ``overrides`` ({key.path: value}, as ``archspec.load`` takes them) make a variant, so
    a config file (Hydra's ``_target_``, jsonargparse's ``class_path``) can say both. The
    model is initialised on the CPU (with ``seed``, if given, without touching the global
    RNG state; the same seed gives bitwise the same weights as torchvision's constructor
    after ``torch.manual_seed(seed)``) and then moved to ``device`` and ``dtype``.

    Before anything is allocated the plan's size is checked against the limits of
    archspec.resources (a parameter ceiling and the free memory of the CPU and of
    ``device``); beyond them ResourceError is raised unless ``allow_large``.

    ``weights``: a checkpoint file or a state_dict to load (archspec, torchvision or timm;
    old torchvision keys are remapped); it must fit exactly, except for the classifier
    with ``drop_head``, and but for what ``adapt`` opts into (``"inflate"``: a 2D
    checkpoint's kernels into a 1D or 3D net by I3D's rule; ``"input_channels"``: the
    first conv to the spec's input channels, timm's rule). Problems are raised as
    WeightsError in the spec's terms.
    ``features_only`` returns a DenseNetFeatures backbone whose forward gives the feature
    maps of ``plan.feature_info`` (``out_indices`` selects some of them).
    """
    p = _as_plan(spec, overrides)
    # Built on the CPU first, then moved: both must hold the weights.
    check_resources(p, device="cpu", dtype_bytes=4, allow_large=allow_large)
    if device is not None and torch.device(device).type != "cpu":
        dtype_bytes = torch.empty((), dtype=dtype or torch.float32).element_size()
        check_resources(p, device=device, dtype_bytes=dtype_bytes, allow_large=allow_large)
    model_class, backbone_class = _CLASSES[p.family]
    if features_only:  # allow_large=True: checked just above
        model: nn.Module = backbone_class(p, out_indices, seed=seed, weights=weights,
                                          allow_large=True, adapt=adapt)
    else:
        model = model_class(p, seed=seed, weights=weights, drop_head=drop_head,
                            allow_large=True, adapt=adapt)
    if device is not None or dtype is not None:
        model = model.to(device=device, dtype=dtype)
    return model


CHECKPOINT_FORMAT = "archspec-checkpoint-1"


def save_checkpoint(model: DenseNet, path: str | os.PathLike, *, force: bool = False,
                    inputs: tuple | list = (), seed: int | None = None,
                    layout: str = "archspec"):
    """Write ``model``'s state_dict (on the CPU) with its canonical spec and content hash,
    atomically; refuses to replace an existing file unless ``force``.

    ``layout`` other than ``"archspec"`` writes the plain state_dict that another
    library's own model loads with ``strict=True``: ``"monai"`` (MONAI's DenseNet, any
    dimensions), ``"torchvision"`` or ``"timm"`` (2D); see ``weights.in_layout``. Such a
    file holds tensors only, no spec; archspec reads it back with ``weights=``."""
    from .weights import in_layout

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if layout != "archspec":
        plain = in_layout(state, layout, dims=model.plan.dims)
        return write_atomic(path, lambda fh: torch.save(plain, fh), force=force,
                            inputs=inputs)
    spec = model.plan.spec
    payload = {
        "format": CHECKPOINT_FORMAT,
        "state_dict": state,
        "spec": canonical(spec),
        "sha256": content_hash(spec),
        "seed": seed,
    }
    return write_atomic(path, lambda fh: torch.save(payload, fh), force=force, inputs=inputs)


def load_checkpoint(path: str | os.PathLike, *, device: Any = None) -> DenseNet:
    """Rebuild the model a checkpoint from ``save_checkpoint`` describes and load its
    weights. The stored spec's hash is checked, so an edited spec is not silently used."""
    from .errors import Problem, SpecError
    from .weights import WeightsError, check_declared_size, load_weights

    file = os.fspath(path)
    if not os.path.isfile(file):
        raise SpecError.at("no such checkpoint file", file)
    check_declared_size(file)
    try:
        payload = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, truncated, or objects it will not unpickle
        why = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise WeightsError(Problem(f"cannot read checkpoint: {why}", file)) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise SpecError.at("not an archspec checkpoint (no 'format' marker); a plain "
                           "state_dict loads with build(spec, weights=...)", file)
    for key, kind in (("spec", str), ("sha256", str), ("state_dict", dict)):
        if not isinstance(payload.get(key), kind):
            raise SpecError.at(f"not a complete archspec checkpoint: '{key}' is missing "
                               f"or not a {kind.__name__}", file)
    spec = loads(payload["spec"], source=f"{file}#spec")
    if content_hash(spec) != payload["sha256"]:
        raise SpecError.at("the stored spec does not match its sha256: the checkpoint was "
                           "altered", file)
    model = build(spec)
    load_weights(model, payload["state_dict"])  # every problem in the spec's terms
    return model.to(device) if device is not None else model


def zoo_specs_fitting(state: Mapping[str, torch.Tensor], *, drop_head: bool = False
                      ) -> list[str]:
    """The zoo names whose models a state_dict loads into (names and shapes), for the
    "it fits densenet161" hint of a checkpoint that does not fit the spec asked for."""
    from .pipeline import load_plan
    from .weights import compare, normalise_keys

    # Parameters only (no running statistics): a zoo spec whose count differs cannot fit,
    # so only a candidate with the same count is built (on the meta device) and compared.
    named, _ = normalise_keys(dict(state))
    count = sum(t.numel() for k, t in named.items()
                if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
                and not (drop_head and k.startswith(("classifier.", "head.fc."))))
    fits = []
    for name in zoo.names():
        p = load_plan(name)
        c, n = p.stages[-1].in_channels, p.num_classes
        head = c * n + n  # the classifier's weight and bias (a DenseNet's norm5 stays)
        if count != (p.params - head if drop_head else p.params):
            continue
        report, _ = compare(expected_state(p), dict(state), drop_head=drop_head)
        if report.ok:
            fits.append(name)
    return fits


def expected_state(spec: DenseNetSpec | Plan | str | os.PathLike) -> nn.Module:
    """The model a spec describes, on the meta device: names and shapes, no memory."""
    p = _as_plan(spec)
    with torch.device("meta"):  # nothing is allocated: no resource guard
        return _CLASSES[p.family][0](p, allow_large=True)
