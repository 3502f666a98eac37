"""Spec -> Plan: every channel count, output size, parameter and MAC of a DenseNet.

Pure arithmetic, no torch. Every channel-count rule of the paper lives here once; the
builder instantiates what the plan says and the reports print it, neither recomputes it.

Conventions (also in docs/spec-reference.md):
- ``params`` counts trainable parameters: conv weights (no conv has a bias), BN weight and
  bias (affine), classifier weight and bias. BN running statistics are buffers, not params.
- ``macs`` counts multiply-accumulates of convolutions and the classifier for ONE image;
  BN, ReLU, pooling and concatenation are not counted (they are memory-bound, and this is
  the convention of the paper's FLOPs figures and of torchinfo's "mult-adds").
- ``activations`` counts elements of a stage's output for one image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Optional

from .errors import Problem, SpecError
from .schema import DenseNetSpec, StemType
from .yamlio import COMMAND_LINE

__all__ = ["LayerPlan", "Stage", "Plan", "plan", "conv_out"]


def conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution or pooling window along one axis (floor mode)."""
    return (size + 2 * padding - kernel) // stride + 1


@dataclass(frozen=True)
class LayerPlan:
    """One dense layer: sees ``in_channels`` (block input + earlier layers), adds ``growth_rate``.

    ``bottleneck_channels`` is bn_size*k for DenseNet-B layers and None for plain ones.
    """

    name: str                      # denselayer{j}, as torchvision names it
    in_channels: int
    bottleneck_channels: Optional[int]
    growth_rate: int
    out_channels: int              # channels after this layer's output is concatenated
    params: int
    macs: int


@dataclass(frozen=True)
class Stage:
    """A stem, dense block, transition or head: what goes in, what comes out, what it costs.

    ``module`` is the dotted name, in the built model, of the submodule whose output is
    this stage's output (the hook point used to check a plan against a model).
    """

    name: str
    kind: str                      # "stem" | "block" | "transition" | "head"
    module: str
    in_channels: int
    out_channels: int
    in_size: tuple[int, int]
    out_size: tuple[int, int]
    params: int
    macs: int
    activations: int               # output elements per image
    layers: tuple[LayerPlan, ...] = ()
    # transition: the compression applied; block: its index (1-based) in the network
    compression: Optional[float] = None
    index: int = 0

    def as_dict(self, *, layers: bool = False) -> dict:
        """JSON-ready view; keys are a contract of ``archspec summary --format json``."""
        d = {
            "name": self.name, "kind": self.kind, "module": self.module,
            "in_channels": self.in_channels, "out_channels": self.out_channels,
            "in_size": list(self.in_size), "out_size": list(self.out_size),
            "params": self.params, "macs": self.macs, "activations": self.activations,
        }
        if self.kind == "block":
            d["num_layers"] = len(self.layers)
        if layers and self.layers:
            d["layers"] = [dict(vars(layer)) for layer in self.layers]
        return d


@dataclass(frozen=True)
class Plan:
    """The resolved architecture of one spec. Build a model from it or report it."""

    spec: DenseNetSpec
    stem_type: StemType
    stem_channels: int
    growth_rate: int
    bn_size: Optional[int]
    compression: float
    block_config: tuple[int, ...]
    drop_rate: float
    num_classes: int
    input_shape: tuple[int, int, int]          # C, H, W
    stem_conv_size: tuple[int, int]            # after the stem's conv (before any pool)
    stages: tuple[Stage, ...]
    params: int
    macs: int
    out_channels: int                          # features entering the classifier
    activations: int                           # sum of stage outputs per image
    feature_info: tuple[dict, ...] = field(default=())

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def depth(self) -> int:
        """Weighted layers as the paper counts them: convs (two per bottleneck layer) + FC."""
        per_layer = 2 if self.bn_size else 1
        stem_convs = 1
        return stem_convs + per_layer * sum(self.block_config) + (len(self.block_config) - 1) + 1

    def training_activations(self, *, memory_efficient: bool | None = None) -> int:
        """Estimated elements autograd keeps for backward, per image, in a training step.

        Per dense layer at HxW with c inputs, bottleneck b and growth k: the concatenation
        and its BN output (2c), the bottleneck conv and BN outputs (2b) and the new
        features (k). With memory_efficient the first two are recomputed in backward
        instead (only the largest one exists at a time). Transitions keep their BN and conv
        outputs and the pooled map; the stem its conv, BN and pool outputs. An estimate
        for the resource guard, within tens of percent of what autograd really keeps.
        """
        if memory_efficient is None:
            memory_efficient = self.spec.memory_efficient
        total, transient = 0, 0
        for s in self.stages:
            h, w = s.in_size
            if s.kind == "stem":
                ch, cw = self.stem_conv_size
                conv_outputs = 2 if self.stem_type == StemType.imagenet else 1
                total += conv_outputs * s.out_channels * ch * cw + s.activations
            elif s.kind == "block":
                for lp in s.layers:
                    b = lp.bottleneck_channels or 0
                    concat = 2 * lp.in_channels * h * w
                    total += (2 * b + lp.growth_rate) * h * w
                    if memory_efficient:
                        transient = max(transient, concat)
                    else:
                        total += concat
                total += s.activations  # the block's final concatenation
            elif s.kind == "transition":
                total += (s.in_channels + s.out_channels) * h * w + s.activations
            else:  # head: norm5 output, pooled features, logits
                total += s.in_channels * h * w + s.in_channels + s.activations
        return total + transient

    def stage(self, name: str) -> Stage:
        """The stage called ``name`` (``stem``, ``denseblock2``, ``transition1``, ``head``)."""
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)

    def as_dict(self, *, layers: bool = False) -> dict:
        """JSON-ready view; the keys are a contract of ``archspec summary --format json``."""
        c, h, w = self.input_shape
        return {
            "name": self.name,
            "params": self.params,
            "macs": self.macs,
            "out_channels": self.out_channels,
            "activations": self.activations,
            "input": [c, h, w],
            "depth": self.depth,
            "growth_rate": self.growth_rate,
            "bn_size": self.bn_size,
            "compression": self.compression,
            "block_config": list(self.block_config),
            "num_classes": self.num_classes,
            "stages": [s.as_dict(layers=layers) for s in self.stages],
        }


def _bn(c: int) -> int:
    return 2 * c  # affine BN: weight and bias


def _depth_to_blocks(spec: DenseNetSpec) -> tuple[int, ...]:
    """The paper's rule for three-block nets: (L-4)/3 layers per block, (L-4)/6 with bottlenecks."""
    smap = spec.source_map
    per = 6 if spec.bn_size else 3
    rule = "(L-4)/6 (bottleneck layers count twice)" if spec.bn_size else "(L-4)/3"
    depth = spec.depth
    assert depth is not None
    n, rest = divmod(depth - 4, per)
    if n >= 1 and rest == 0:
        return (n,) * 3
    # valid depths are 4 + per*n for n >= 1 layers per block
    nearest = [d for d in (4 + per * n, 4 + per * (n + 1)) if d >= 4 + per]
    nearest = nearest or [4 + per]
    raise smap.error(("depth",), f"depth {depth} does not give a whole number of layers per "
                     f"block by the rule {rule}; nearest valid depths: "
                     + " and ".join(map(str, sorted(set(nearest)))))


def _transition_width(theta: float, channels: int) -> int:
    # floor(theta*m) on the decimal the user wrote: float rounding must not turn
    # 0.29*100 = 28.999999999999996 into 28.
    return math.floor(Fraction(repr(theta)) * channels)


def plan(spec: DenseNetSpec) -> Plan:
    """Resolve a spec into a Plan: channels, sizes, parameters and MACs of every stage.

    Raises SpecError, located at the responsible key, for a depth that does not fit the
    paper's rule, a transition that would output no channels, an input too small for the
    stem and transitions, and an ``expect`` that the plan contradicts. Several problems
    are reported together where the arithmetic can go on past the first.
    """
    smap = spec.source_map
    problems: list[Problem] = []

    if spec.block_config is not None and spec.depth is not None:
        raise smap.error(("depth",), "give either 'depth' or 'block_config', not both",
                         at_key=True)
    if spec.block_config is None and spec.depth is None:
        raise smap.error((), "the number of layers is missing: give 'block_config' (layers "
                             "per block) or 'depth' (the paper's L)")
    block_config = tuple(spec.block_config) if spec.block_config else _depth_to_blocks(spec)

    k, bn_size, theta = spec.growth_rate, spec.bn_size, spec.compression
    stem_channels = spec.stem.channels
    if stem_channels is None:
        stem_channels = 2 * k if (bn_size or theta < 1) else 16

    c_in, h, w = spec.input.channels, spec.input.height, spec.input.width
    size_path = ("input",)
    stages: list[Stage] = []

    def too_small(stage: str, h: int, w: int, need: str) -> Problem:
        return smap.problem(size_path, f"{c_in}x{spec.input.height}x{spec.input.width} "
                                       f"is too small: {stage} receives {h}x{w}, {need}")

    # --- stem -------------------------------------------------------------------------
    if spec.stem.type == StemType.imagenet:
        h1, w1 = conv_out(h, 7, 2, 3), conv_out(w, 7, 2, 3)
        if min(h1, w1) < 1:
            raise SpecError(too_small("the stem's 7x7/2 conv", h, w, "needs at least 1x1"))
        h2, w2 = conv_out(h1, 3, 2, 1), conv_out(w1, 3, 2, 1)
        stem_conv_size = (h1, w1)
        params = c_in * stem_channels * 49 + _bn(stem_channels)
        macs = c_in * stem_channels * 49 * h1 * w1
        stages.append(Stage("stem", "stem", "features.pool0", c_in, stem_channels, (h, w),
                            (h2, w2), params, macs, stem_channels * h2 * w2))
        h, w = h2, w2
    else:  # cifar: 3x3 conv, stride 1, pad 1; size unchanged
        stem_conv_size = (h, w)
        params = c_in * stem_channels * 9
        macs = params * h * w
        stages.append(Stage("stem", "stem", "features.conv0", c_in, stem_channels, (h, w),
                            (h, w), params, macs, stem_channels * h * w))

    # --- dense blocks and transitions ----------------------------------------------------
    channels = stem_channels
    for i, num_layers in enumerate(block_config, start=1):
        layers = []
        block_in = channels
        for j in range(1, num_layers + 1):
            if bn_size:
                mid = bn_size * k
                params = _bn(channels) + channels * mid + _bn(mid) + mid * k * 9
                macs = (channels * mid + mid * k * 9) * h * w
            else:
                mid = None
                params = _bn(channels) + channels * k * 9
                macs = channels * k * 9 * h * w
            layers.append(LayerPlan(f"denselayer{j}", channels, mid, k, channels + k,
                                    params, macs))
            channels += k
        stages.append(Stage(
            f"denseblock{i}", "block", f"features.denseblock{i}", block_in, channels,
            (h, w), (h, w), sum(lp.params for lp in layers), sum(lp.macs for lp in layers),
            channels * h * w, tuple(layers), index=i))
        if i == len(block_config):
            break
        out = _transition_width(theta, channels)
        if out < 1:
            problems.append(smap.problem(("compression",), (
                f"transition{i} would output floor({theta} x {channels}) = {out} channels; "
                "raise compression or growth_rate")))
            out = 1  # go on so later problems are reported too
        if min(h, w) < 2:
            problems.append(too_small(f"transition{i} (2x2 average pool)", h, w,
                                      "needs at least 2x2"))
            break
        h2, w2 = h // 2, w // 2
        params = _bn(channels) + channels * out
        macs = channels * out * h * w  # the 1x1 conv runs before the pool, at full size
        stages.append(Stage(f"transition{i}", "transition", f"features.transition{i}",
                            channels, out, (h, w), (h2, w2), params, macs, out * h2 * w2,
                            compression=theta, index=i))
        channels, h, w = out, h2, w2

    if problems:
        raise SpecError(problems)

    # --- head: norm5, ReLU, global average pool, classifier -----------------------------
    n = spec.num_classes
    stages.append(Stage("head", "head", "classifier", channels, n, (h, w), (1, 1),
                        _bn(channels) + channels * n + n, channels * n, n))

    result = Plan(
        spec=spec, stem_type=spec.stem.type, stem_channels=stem_channels, growth_rate=k,
        bn_size=bn_size, compression=theta, block_config=block_config,
        drop_rate=spec.drop_rate, num_classes=n,
        input_shape=(c_in, spec.input.height, spec.input.width),
        stem_conv_size=stem_conv_size, stages=tuple(stages),
        params=sum(s.params for s in stages), macs=sum(s.macs for s in stages),
        out_channels=channels, activations=sum(s.activations for s in stages),
        feature_info=_feature_info(stages, spec, stem_conv_size),
    )
    _check_expect(result)
    return result


def _feature_info(stages: list[Stage], spec: DenseNetSpec, stem_conv_size: tuple[int, int]
                  ) -> tuple[dict, ...]:
    """Backbone taps as timm reports them: the stem's BN (before the pool), the end of each
    block but the last (before its transition), and norm5 at the end of the last block."""
    h0 = spec.input.height
    info = []
    stem = stages[0]
    if spec.stem.type == StemType.imagenet:
        info.append({"module": "features.norm0", "num_chs": stem.out_channels,
                     "reduction": _reduction(h0, stem_conv_size[0]), "stage": "stem"})
    else:
        info.append({"module": "features.conv0", "num_chs": stem.out_channels,
                     "reduction": 1, "stage": "stem"})
    blocks = [s for s in stages if s.kind == "block"]
    for s in blocks[:-1]:
        info.append({"module": s.module, "num_chs": s.out_channels,
                     "reduction": _reduction(h0, s.out_size[0]), "stage": s.name})
    last = blocks[-1]
    info.append({"module": "features.norm5", "num_chs": last.out_channels,
                 "reduction": _reduction(h0, last.out_size[0]), "stage": last.name})
    return tuple(info)


def _reduction(full: int, now: int) -> int:
    # Round to the nearest power of two: 224 -> 7 is 32 even where floors made sizes odd.
    return 2 ** round(math.log2(full / now)) if now else 0


def _check_expect(p: Plan) -> None:
    exp = p.spec.expect
    if exp is None:
        return
    smap = p.spec.source_map
    problems = []
    if exp.params is not None and exp.params != p.params:
        problems.append(smap.problem(("expect", "params"), (
            f"expected {exp.params:,} parameters, the plan has {p.params:,} "
            f"(difference {p.params - exp.params:+,})")))
    if exp.out_channels is not None and exp.out_channels != p.out_channels:
        problems.append(smap.problem(("expect", "out_channels"), (
            f"expected {exp.out_channels} output channels, the plan has {p.out_channels}")))
    if problems:
        if any(m.file == COMMAND_LINE for m in smap.values.values()):
            hint = " (overrides changed this spec; override 'expect' too, e.g. --set expect=null)"
            problems = [Problem(pr.message + hint, pr.file, pr.line, pr.column, pr.path)
                        for pr in problems]
        raise SpecError(problems)
