"""Plan -> nn.Module. The only layer of archspec that imports torch.

The model walks the plan's stages and instantiates modules named as torchvision's
DenseNet names them (features.conv0 ... features.norm5, classifier), in the same order
and with the same initialisation, so state_dicts load either way with strict=True.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .canonical import canonical, content_hash
from .files import write_atomic
from .loader import load, loads
from .nn import (DenseBlock, DenseLayer, Transition, activation_fn, cifar_stem, deep_stem,
                 imagenet_stem, make_activation, make_norm)
from .plan import Plan, plan as make_plan
from .resources import check_resources
from .schema import DenseNetSpec, StemType

__all__ = ["DenseNet", "DenseNetFeatures", "build", "expected_state", "save_checkpoint",
           "load_checkpoint"]


class DenseNet(nn.Module):
    """A DenseNet built from a Plan; ``self.plan`` is the plan it was built from."""

    def __init__(self, plan: Plan):
        super().__init__()
        self.plan = plan
        spec = plan.spec
        norm, act = make_norm(spec.norm), make_activation(spec.activation)
        self._act = activation_fn(spec.activation)
        blur = spec.anti_alias.filter_size
        stem = plan.stages[0]
        if plan.stem_type == StemType.cifar:
            features = cifar_stem(stem.in_channels, stem.out_channels)
        elif plan.stem_type == StemType.imagenet:
            features = imagenet_stem(stem.in_channels, stem.out_channels, norm, act,
                                     blur if stem.blur else None)
        else:
            features = deep_stem(stem.in_channels, plan.stem_widths, stem.out_channels, norm,
                                 act, blur if stem.blur else None)
        for stage in plan.stages[1:-1]:
            if stage.kind == "block":
                layers = [DenseLayer(lp.in_channels, lp.bottleneck_channels, lp.growth_rate,
                                     stage.drop_rate, spec.memory_efficient, norm, act)
                          for lp in stage.layers]
                features.append((stage.name, DenseBlock(layers, stage.out_channels)))
            else:
                features.append((stage.name, Transition(
                    stage.in_channels, stage.out_channels, stage.drop_rate, norm, act,
                    blur if stage.blur else None)))
        head = plan.stages[-1]
        features.append(("norm5", norm(head.in_channels)))
        self.features = nn.Sequential(OrderedDict(features))
        self.classifier = nn.Linear(head.in_channels, head.out_channels)
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's initialisation, in its order, so a seed gives torchvision's weights.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.constant_(m.bias, 0)

    def forward(self, x: Tensor) -> Tensor:
        out = self._act(self.features(x))
        out = torch.flatten(F.adaptive_avg_pool2d(out, (1, 1)), 1)
        return self.classifier(out)


class DenseNetFeatures(nn.Module):
    """A DenseNet backbone: ``forward`` returns the feature maps at ``plan.feature_info``
    (selected by ``out_indices``), as timm's ``features_only`` models do: the stem's
    activated norm0 (conv0 for the CIFAR stem), each block's output but the last, and the
    activated norm5. State_dict keys are the classifier model's minus ``classifier.*``.
    """

    def __init__(self, plan: Plan, out_indices: tuple[int, ...] | None = None):
        super().__init__()
        info = list(plan.feature_info)
        if out_indices is None:
            out_indices = tuple(range(len(info)))
        bad = [i for i in out_indices if not -len(info) <= i < len(info)]
        if bad:
            raise ValueError(f"out_indices {bad} out of range: {plan.name} has "
                             f"{len(info)} feature levels (0..{len(info) - 1})")
        self.plan = plan
        self.out_indices = tuple(i % len(info) for i in out_indices)
        self.feature_info = [info[i] for i in self.out_indices]
        full = DenseNet(plan)
        self.features = full.features  # same modules, same init, same names
        self._act = full._act
        self._taps = {info[i]["module"].split(".", 1)[1]: i for i in self.out_indices}
        last = max(self.out_indices)
        names = [n for n, _ in self.features.named_children()]
        self._stop = names.index(info[last]["module"].split(".", 1)[1])

    def forward(self, x: Tensor) -> list[Tensor]:
        out: list[Tensor] = []
        activated = False
        for i, (name, module) in enumerate(self.features.named_children()):
            if activated and name.startswith("relu"):
                # The tap already applied this activation; the in-place module would modify
                # the returned tensor (and one autograd saved).
                activated = False
                continue
            x = module(x)
            activated = False
            if name in self._taps:
                if name.startswith("norm"):  # timm's norm layers carry their activation
                    x = self._act(x)
                    activated = True
                out.append(x)
            if i == self._stop:  # later stages feed no requested output
                break
        return out


def _as_plan(spec: Any) -> Plan:
    if isinstance(spec, Plan):
        return spec
    if isinstance(spec, (str, os.PathLike)):
        spec = load(spec)
    if not isinstance(spec, DenseNetSpec):
        raise TypeError(f"build() takes a spec, a plan, a zoo name or a path, not "
                        f"{type(spec).__name__}")
    return make_plan(spec)


def build(spec: DenseNetSpec | Plan | str | os.PathLike, *, device: Any = None,
          dtype: torch.dtype | None = None, seed: int | None = None,
          allow_large: bool = False,
          weights: str | os.PathLike | Mapping[str, Tensor] | None = None,
          drop_head: bool = False, features_only: bool = False,
          out_indices: tuple[int, ...] | list[int] | None = None) -> nn.Module:
    """Build the nn.Module a spec describes.

    ``spec`` may be a DenseNetSpec, a Plan, a zoo name or a path. The model is initialised
    on the CPU (with ``seed``, if given, without touching the global RNG state; the same
    seed gives bitwise the same weights as torchvision's constructor after
    ``torch.manual_seed(seed)``) and then moved to ``device`` and ``dtype``.

    Before anything is allocated the plan's size is checked against the limits of
    archspec.resources (a parameter ceiling and the free memory of the CPU and of
    ``device``); beyond them ResourceError is raised unless ``allow_large``.

    ``weights``: a checkpoint file or a state_dict to load (archspec, torchvision or timm;
    old torchvision keys are remapped); it must fit exactly, except for the classifier with ``drop_head``.
    Problems are raised as WeightsError in the spec's terms. ``features_only`` returns a
    DenseNetFeatures backbone whose forward gives the feature maps of
    ``plan.feature_info`` (``out_indices`` selects some of them).
    """
    p = _as_plan(spec)
    dtype_bytes = torch.empty((), dtype=dtype or torch.float32).element_size()
    # Built on the CPU first, then moved: both must hold the weights.
    check_resources(p, device="cpu", dtype_bytes=4, allow_large=allow_large)
    if device is not None and torch.device(device).type != "cpu":
        check_resources(p, device=device, dtype_bytes=dtype_bytes, allow_large=allow_large)
    def make() -> nn.Module:
        if features_only:
            return DenseNetFeatures(p, tuple(out_indices) if out_indices is not None else None)
        return DenseNet(p)

    if seed is None:
        model = make()
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = make()
    if weights is not None:
        from .weights import load_weights

        # a backbone has no classifier: the checkpoint's is left out like with drop_head
        load_weights(model, weights, drop_head=drop_head or features_only)
    if device is not None or dtype is not None:
        model = model.to(device=device, dtype=dtype)
    return model


CHECKPOINT_FORMAT = "archspec-checkpoint-1"


def save_checkpoint(model: DenseNet, path: str | os.PathLike, *, force: bool = False,
                    inputs: tuple | list = (), seed: int | None = None):
    """Write ``model``'s state_dict (on the CPU) with its canonical spec and content hash,
    atomically; refuses to replace an existing file unless ``force``."""
    spec = model.plan.spec
    payload = {
        "format": CHECKPOINT_FORMAT,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "spec": canonical(spec),
        "sha256": content_hash(spec),
        "seed": seed,
    }
    return write_atomic(path, lambda fh: torch.save(payload, fh), force=force, inputs=inputs)


def load_checkpoint(path: str | os.PathLike, *, device: Any = None) -> DenseNet:
    """Rebuild the model a checkpoint from ``save_checkpoint`` describes and load its
    weights. The stored spec's hash is checked, so an edited spec is not silently used."""
    from .errors import SpecError

    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise SpecError.at("not an archspec checkpoint (no 'format' marker)", str(path))
    spec = loads(payload["spec"], source=f"{path}#spec")
    if content_hash(spec) != payload["sha256"]:
        raise SpecError.at("the stored spec does not match its sha256: the checkpoint was "
                           "altered", str(path))
    model = build(spec)
    model.load_state_dict(payload["state_dict"], strict=True)
    return model.to(device) if device is not None else model


def expected_state(spec: DenseNetSpec | Plan | str | os.PathLike) -> nn.Module:
    """The model a spec describes, on the meta device: names and shapes, no memory."""
    with torch.device("meta"):
        return DenseNet(_as_plan(spec))
