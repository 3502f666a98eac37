"""Spec -> Plan: every channel count, output size, parameter and MAC of a DenseNet.

Pure arithmetic, no torch. Every channel-count rule of the paper (and of timm's variants)
lives here once; the builder instantiates what the plan says and the reports print it,
neither recomputes it.

Conventions (also in docs/spec-reference.md):
- ``params`` counts trainable parameters: conv weights (no conv has a bias), norm weight
  and bias (affine), classifier weight and bias. BN running statistics are buffers.
- ``macs`` counts multiply-accumulates of the learned convolutions and the classifier for
  ONE image; norms, activations, pooling (blur filters included: they are fixed, not
  learned) and concatenation are not counted, as in the paper's FLOPs figures.
- ``activations`` counts elements of a stage's output for one image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Optional, Sequence

from .errors import Problem, SpecError
from .plan_common import (LayerPlan, Links, PlanBase, Stage, StageNotFound, links_matrix,
                          check_expect as _check_expect, per_block as _per,
                          conv_out, norm_params as _norm_params, reduction as _reduction,
                          volume as _volume)
from .rules import blur_padding, deep_tiered_widths, transition_recomputes
from .schema import AXES, Activation, DenseNetSpec, NormType, Spec, StemType

__all__ = ["LayerPlan", "Stage", "StageNotFound", "Plan", "plan", "conv_out", "blur_out"]

_POOLING_STEMS = (StemType.imagenet, StemType.deep, StemType.deep_tiered)
_DEEP_STEMS = (StemType.deep, StemType.deep_tiered)


def blur_out(size: int, filter_size: int) -> int:
    """Output length of a stride-2 blur pool with reflect padding."""
    return conv_out(size, filter_size, 2, blur_padding(filter_size))


@dataclass(frozen=True, repr=False)
class Plan(PlanBase):
    """The resolved architecture of one spec. Build a model from it or report it.

    ``growth_rate``, ``bn_size``, ``compression`` and ``drop_rate`` are as the spec wrote
    them (one value, or a tuple per block / per transition); the per-stage values are on
    the stages.
    """

    spec: DenseNetSpec
    stem_type: StemType
    stem_channels: int
    stem_widths: tuple[int, ...]               # deep stems: the first two convs' widths
    growth_rate: int | tuple[int, ...]
    bn_size: Optional[int] | tuple[Optional[int], ...]
    compression: float | tuple[float, ...]
    block_config: tuple[int, ...]
    drop_rate: float | tuple[float, ...]
    num_classes: int
    input_shape: tuple[int, ...]               # C, then (L,), (H, W) or (D, H, W)
    stem_conv_size: tuple[int, ...]            # after the stem's convs (before any pool)
    stages: tuple[Stage, ...]
    params: int
    macs: int
    out_channels: int                          # features entering the classifier
    activations: int                           # elements: sum of stage outputs per image
    feature_info: tuple[dict, ...] = field(default=())

    family = "densenet"  # the member (archspec.plan_vovnet.VoVNetPlan says "vovnet")
    first_conv = "features.conv0"  # the module whose weight sees the input

    def __repr__(self) -> str:
        shape = "x".join(map(str, self.input_shape))
        return (f"Plan({self.name!r}, input {shape}, blocks {list(self.block_config)}, "
                f"params={self.params:,}, macs={self.macs:,}, "
                f"out_channels={self.out_channels})")

    @property
    def blocks(self) -> tuple[Stage, ...]:
        return tuple(s for s in self.stages if s.kind == "block")

    @property
    def depth(self) -> int:
        """Weighted layers as the paper counts them: stem convs, one or two convs per dense
        layer, one per transition, and the classifier."""
        stem_convs = 3 if self.stem_type in _DEEP_STEMS else 1
        per_layer = sum((2 if b.bn_size else 1) * len(b.layers) for b in self.blocks)
        return stem_convs + per_layer + (len(self.block_config) - 1) + 1

    def _links(self, stage: Stage) -> Links:
        # Huang et al.'s Figure 1: layer l reads the block input and every layer before it;
        # the block emits the concatenation of all of them.
        return links_matrix(stage.name, len(stage.layers), lambda j: range(j),
                            "concatenation of the input and every layer")

    def training_memory(self, batch: int = 1, *, dtype_bytes: int = 4,
                        memory_efficient: bool | str | None = None,
                        recomputation: bool = True) -> int:
        """Estimated bytes of activations autograd keeps for backward in a training step
        of ``batch`` images (``dtype_bytes`` per element; weights and gradients not
        included). ``memory_efficient`` (False, True or "max") defaults to the spec's.
        ``recomputation`` adds what backward holds at once while it recomputes the
        memory levels' largest layer (the peak to budget for); without it, the estimate
        is of what the forward keeps alone, which autograd's saved_tensors_hooks count.
        Compare ``activations``, the plain count of stage-output elements of one image.
        """
        kept, transient = self._saved_elements_per_image(memory_efficient)
        return (kept + (transient if recomputation else 0)) * batch * dtype_bytes

    def _saved_elements_per_image(self, memory_efficient: bool | str | None
                                  ) -> tuple[int, int]:
        """Estimated elements autograd keeps for backward per image in a training step,
        and those backward's largest recomputation holds at once.

        Per dense layer at HxW with c inputs, bottleneck b and growth k, the plain model
        keeps the concatenation and its norm output (2c), the bottleneck conv and norm
        outputs (2b) and the new features (k). ``memory_efficient: true`` keeps only the
        conv1 output (b, or k without a bottleneck) and ``"max"`` nothing; both recompute
        the rest in backward, one layer at a time, so the largest layer's recomputation is
        the transient. Every level keeps each block's output. Transitions keep their norm
        and conv outputs and the pooled map, except under ``"max"``, where the paper's
        transition (BatchNorm, ReLU, average pool, no dropout) keeps only its input, the
        block's output. The stem keeps the image, its conv and norm outputs and the pooled
        map; under ``"max"`` a pooling stem keeps the image only (memory.stem). An
        estimate for the resource guard, within about 10% of what autograd keeps.
        """
        if memory_efficient is None:
            memory_efficient = self.spec.memory_efficient
        total, transient = 0, 0
        for s in self.stages:
            hw = _volume(s.in_size)
            if s.kind == "stem":
                chw = _volume(self.stem_conv_size)
                widths = sum(self.stem_widths) + s.out_channels
                normed = 2 if self.stem_type != StemType.cifar else 1
                rest = normed * widths * chw + s.activations
                total += s.in_channels * hw
                if memory_efficient == "max" and self.stem_type != StemType.cifar:
                    transient = max(transient, rest)  # a pooling stem keeps its input only
                else:
                    total += rest
            elif s.kind == "block":
                for lp in s.layers:
                    b = lp.bottleneck_channels or 0
                    layer = (2 * lp.in_channels + 2 * b + lp.growth_rate) * hw
                    if memory_efficient == "max":
                        transient = max(transient, layer)
                    elif memory_efficient:
                        total += (b or lp.growth_rate) * hw
                        transient = max(transient, layer)
                    else:
                        total += layer
                total += s.activations  # the block's output (the shared buffer)
            elif s.kind == "transition":
                kept = (s.in_channels + s.out_channels) * hw
                if memory_efficient == "max" and self._transition_recomputes(s):
                    transient = max(transient, kept)  # it keeps only its input
                else:
                    total += kept + s.activations
            else:  # head: norm5 output, pooled features, logits
                total += s.in_channels * hw + s.in_channels + s.activations
        return total, transient

    def _transition_recomputes(self, s: Stage) -> bool:
        """Whether the built transition recomputes under ``"max"`` (rules.py's rule)."""
        norm = self.spec.norm
        return transition_recomputes(batch_norm=norm.type == NormType.batch and norm.is_affine,
                                     relu=self.spec.activation.type == Activation.relu,
                                     # the direct average-pool backward: 2D, 3D
                                     average_pool=not s.blur and self.dims in (2, 3),
                                     dropout=s.drop_rate > 0)


def _as_written(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _depth_to_blocks(spec: DenseNetSpec) -> tuple[int, ...]:
    """The paper's rule for three-block nets: (L-4)/3 layers per block, (L-4)/6 with bottlenecks."""
    smap = spec.source_map
    bn = spec.bn_size if isinstance(spec.bn_size, list) else [spec.bn_size] * 3
    if len(bn) != 3 or len({b is None for b in bn}) != 1:
        raise smap.error(("depth",), "depth gives three blocks with or without bottlenecks "
                                     "throughout; with another bn_size per block, give "
                                     "block_config instead")
    bottleneck = bn[0] is not None
    per = 6 if bottleneck else 3
    rule = "(L-4)/6 (bottleneck layers count twice)" if bottleneck else "(L-4)/3"
    depth = spec.depth
    assert depth is not None
    n, rest = divmod(depth - 4, per)
    if n >= 1 and rest == 0:
        return (n,) * 3
    # valid depths are 4 + per*n for n >= 1 layers per block
    nearest = [d for d in (4 + per * n, 4 + per * (n + 1)) if d >= 4 + per] or [4 + per]
    raise smap.error(("depth",), f"depth {depth} does not give a whole number of layers per "
                     f"block by the rule {rule}; nearest valid depths: "
                     + " and ".join(map(str, sorted(set(nearest)))))


def _transition_width(theta: float, channels: int) -> int:
    # floor(theta*m) on the decimal the user wrote: float rounding must not turn
    # 0.29*100 = 28.999999999999996 into 28.
    return math.floor(Fraction(repr(theta)) * channels)


def _pool_need(blur: bool, filter_size: int, avg: bool) -> int:
    """The fewest pixels along an axis that a stride-2 pool can run on: a blur's reflect
    padding needs more pixels than it pads, a 2x2 average pool needs 2."""
    return blur_padding(filter_size) + 1 if blur else 2 if avg else 1


def _pool_out(size: int, blur: bool, filter_size: int, avg: bool) -> Optional[int]:
    """Length after a stride-2 pool along one axis (2x2 average, 3x3/2 max or a stride-2
    blur), or None where the pool cannot run on ``size`` pixels."""
    if size < _pool_need(blur, filter_size, avg):
        return None
    if blur:
        return blur_out(size, filter_size)
    return size // 2 if avg else conv_out(size, 3, 2, 1)


def _stem_conv_out(stem_type: StemType, size: int) -> int:
    """Length after a pooling stem's stride-2 conv: 7x7/2 pad 3 (imagenet) or the deep
    stems' 3x3/2 pad 1 (their two stride-1 3x3 convs keep the size)."""
    kernel = 7 if stem_type == StemType.imagenet else 3
    return conv_out(size, kernel, 2, kernel // 2)


class _Sizes:
    """Spatial bookkeeping, and the 'input too small' problem with its fix, in one place."""

    def __init__(self, spec: DenseNetSpec, n_transitions: int):
        self.spec = spec
        self.n_transitions = n_transitions

    def axis(self, size: int) -> tuple[bool, int]:
        """Whether one axis of ``size`` input pixels passes the stem, and how many
        transitions it then passes (the same rules as ``plan``'s, one axis at a time)."""
        spec, aa = self.spec, self.spec.anti_alias
        if spec.stem.type != StemType.cifar:
            size = _stem_conv_out(spec.stem.type, size)
            if size < 1:
                return False, 0
            pooled = _pool_out(size, aa.stem, aa.filter_size, avg=False)
            if pooled is None:
                return False, 0
            size = pooled
        for t in range(self.n_transitions):
            pooled = _pool_out(size, aa.transitions, aa.filter_size, avg=True)
            if pooled is None:
                return True, t
            size = pooled
        return True, self.n_transitions

    def smallest(self) -> int:
        """The smallest side length that passes the stem and every transition."""
        def fits(n: int) -> bool:
            stem_ok, done = self.axis(n)
            return stem_ok and done == self.n_transitions
        hi = 1
        while not fits(hi):  # sizes only grow with the input: double, then bisect
            hi *= 2
        lo = hi // 2
        while lo + 1 < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if fits(mid) else (mid, hi)
        return hi

    def too_small(self, stage: str, size: tuple[int, ...], need: int) -> Problem:
        i = self.spec.input
        axes = AXES[i.dims]
        names, shape = "x".join(axes), "x".join(map(str, i.spatial))
        small = self.smallest()
        grown = "x".join(str(max(small, n)) for n in i.spatial)
        fix = [f"the smallest input this net accepts is {i.channels}x{grown} (Cx{names})"]
        fits = [self.axis(n) for n in i.spatial]
        if all(ok for ok, _ in fits) and self.n_transitions:
            fit = min(done for _, done in fits)
            fix.append(f"or keep {shape} with at most {fit} transition"
                       f"{'' if fit == 1 else 's'} ({fit + 1} block{'' if fit == 0 else 's'})")
        # Blame the axis that is too short, so an --input or --set is located on the
        # command line and a file's own height, width or size entry at its line.
        axis = next((n for n, v in enumerate(size) if v < need), 0)
        return self.spec.source_map.problem(("input", *i.axis_key(axis)), (
            f"input {i.channels}x{shape} (Cx{names}) is too small: {stage} receives "
            f"{'x'.join(map(str, size))} ({names}) and needs at least "
            f"{'x'.join([str(need)] * len(size))}, {axes[axis]} is {size[axis]}; "
            + ", ".join(fix)))

    def pool(self, stage: str, size: tuple[int, ...], blur: bool, filter_size: int,
             avg: bool) -> tuple[int, ...]:
        """Size after a stride-2 pool: 2x2 average, 3x3/2 max, or a stride-2 blur."""
        out = tuple(_pool_out(n, blur, filter_size, avg) for n in size)
        if any(n is None for n in out):
            kind = "blur pool" if blur else "2x2 average pool" if avg else "max pool"
            raise SpecError(self.too_small(f"{stage} ({kind})", size,
                                           _pool_need(blur, filter_size, avg)))
        return out  # type: ignore[return-value]


def plan(spec: Spec) -> Plan:
    """Resolve a spec into a Plan: channels, sizes, parameters and MACs of every stage.

    Raises SpecError, located at the responsible key, for a depth that does not fit the
    paper's rule, per-block lists of the wrong length, a transition that would output no
    channels, an input too small for the stem and transitions, widths that group norm
    cannot divide, and an ``expect`` that the plan contradicts. Several problems are
    reported together where the arithmetic can go on past the first.
    """
    if spec.family == "vovnet":  # each member plans in a module of its own
        from .plan_vovnet import plan_vovnet
        return plan_vovnet(spec)
    if spec.family == "hardnet":
        from .plan_hardnet import plan_hardnet
        return plan_hardnet(spec)
    if spec.family == "peleenet":
        from .plan_peleenet import plan_peleenet
        return plan_peleenet(spec)
    smap = spec.source_map
    problems: list[Problem] = []

    if spec.block_config is not None and spec.depth is not None:
        raise smap.error(("depth",), "give either 'depth' or 'block_config', not both",
                         at_key=True)
    if spec.block_config is None and spec.depth is None:
        raise smap.error((), "the number of layers is missing: give 'block_config' (layers "
                             "per block) or 'depth' (the paper's L)")
    block_config = tuple(spec.block_config) if spec.block_config else _depth_to_blocks(spec)
    n_blocks = len(block_config)
    length_problems: list[Problem] = []

    def per(key: str, count: int, what: str) -> tuple:
        try:
            return _per(spec, key, count, what)
        except SpecError as e:  # every list of the wrong length, in one run
            length_problems.extend(e.problems)
            return ()

    ks = per("growth_rate", n_blocks, "blocks")
    bns = per("bn_size", n_blocks, "blocks")
    drops = per("drop_rate", n_blocks, "blocks")
    thetas = per("compression", n_blocks - 1, "transitions") \
        if isinstance(spec.compression, list) or n_blocks > 1 else ()
    if length_problems:
        raise SpecError(length_problems)

    stem_type, aa = spec.stem.type, spec.anti_alias
    k1 = ks[0]
    stem_channels = spec.stem.channels
    if stem_channels is None:
        compressed = any(t < 1 for t in thetas) or (not isinstance(spec.compression, list)
                                                    and spec.compression < 1)
        deep_or_bc = stem_type in _DEEP_STEMS or any(bns) or compressed
        stem_channels = 2 * k1 if deep_or_bc else 16
    stem_widths: tuple[int, ...] = ()
    if stem_type in _DEEP_STEMS:
        if spec.stem.widths is not None:
            stem_widths = tuple(spec.stem.widths)
        elif stem_type == StemType.deep:
            stem_widths = (k1, k1)
        else:
            stem_widths = deep_tiered_widths(k1)
            if k1 < 4:
                raise smap.error(("stem", "type"), f"deep_tiered widths are 3*(k//4) and "
                                                   f"6*(k//4): k={k1} gives 0; give "
                                                   "stem.widths")
    elif spec.stem.widths is not None:
        raise smap.error(("stem", "widths"), f"only the deep stems have widths; a "
                                             f"{stem_type.value} stem has one conv")
    if aa.stem and stem_type not in _POOLING_STEMS:
        raise smap.error(("anti_alias", "stem"), "the cifar stem has no pool to anti-alias; "
                                                 "use an imagenet or deep stem")

    if spec.input.dims != 2:
        blurred = [key for key in ("stem", "transitions") if getattr(aa, key)]
        if blurred:  # timm's blur pool is a 2D binomial filter
            raise SpecError([smap.problem(("anti_alias", key), (
                f"blur pooling is 2D only; this net is {spec.input.dims}D (input.size has "
                f"{spec.input.dims} entr{'y' if spec.input.dims == 1 else 'ies'}): set "
                f"anti_alias.{key} to false")) for key in blurred])
    # Every norm is followed by an activation, so the two are counted together: a
    # PReLU adds its one learned slope to each norm's parameters.
    _norm = _norm_params(spec.norm.is_affine)
    act_params = spec.activation.params

    def _norm_act(c: int) -> int:
        return _norm(c) + act_params

    sizes = _Sizes(spec, n_blocks - 1)
    c_in, size = spec.input.channels, spec.input.spatial
    dims = len(size)
    k3, k7 = 3 ** dims, 7 ** dims  # kernel volumes: 3x3 (3, 3x3x3), 7x7 (7, 7x7x7)
    stages: list[Stage] = []
    # Channels and parameters do not depend on sizes: past an input too small, planning
    # goes on at 1x1 so that the problems it does not hide (a wrong `expect`, a transition
    # with no channels) are reported in the same run. One size problem is enough.
    size_problem: list[Problem] = []
    ones = (1,) * dims

    def pool(stage: str, size: tuple[int, ...], blur: bool, avg: bool) -> tuple[int, ...]:
        try:
            return sizes.pool(stage, size, blur, aa.filter_size, avg=avg)
        except SpecError as e:
            size_problem[:] = size_problem or list(e.problems)
            return ones

    # --- stem ---------------------------------------------------------------------------
    if stem_type == StemType.cifar:  # 3x3 conv, stride 1, pad 1; size unchanged
        stem_conv_size = size
        params = c_in * stem_channels * k3
        stages.append(Stage("stem", "stem", "features.conv0", c_in, stem_channels, size,
                            size, params, params * _volume(size),
                            stem_channels * _volume(size)))
    else:
        size1 = tuple(_stem_conv_out(stem_type, n) for n in size)
        if stem_type == StemType.imagenet:
            params = c_in * stem_channels * k7 + _norm_act(stem_channels)
            macs = c_in * stem_channels * k7 * _volume(size1)
        else:  # deep: 3x3/2, 3x3, 3x3, each with a norm
            c1, c2 = stem_widths
            params = (c_in * c1 * k3 + _norm_act(c1) + c1 * c2 * k3 + _norm_act(c2)
                      + c2 * stem_channels * k3 + _norm_act(stem_channels))
            macs = (c_in * c1 + c1 * c2 + c2 * stem_channels) * k3 * _volume(size1)
        if min(size1) < 1:
            size_problem.append(sizes.too_small("the stem's stride-2 conv", size, 1))
            size1 = ones
        stem_conv_size = size1
        size2 = pool("the stem pool", size1, aa.stem, avg=False)
        stages.append(Stage("stem", "stem", "features.pool0", c_in, stem_channels, size,
                            size2, params, macs, stem_channels * _volume(size2),
                            blur=aa.stem))
        size = size2

    # --- dense blocks and transitions ----------------------------------------------------
    channels = stem_channels
    params_known = True
    for i, num_layers in enumerate(block_config, start=1):
        k, bn_size, drop = ks[i - 1], bns[i - 1], drops[i - 1]
        layers = []
        block_in = channels
        vol = _volume(size)
        for j in range(1, num_layers + 1):
            if bn_size:
                mid = bn_size * k
                params = _norm_act(channels) + channels * mid + _norm_act(mid) + mid * k * k3
                macs = (channels * mid + mid * k * k3) * vol
            else:
                mid = None
                params = _norm_act(channels) + channels * k * k3
                macs = channels * k * k3 * vol
            layers.append(LayerPlan(f"denselayer{j}", channels, mid, k, channels + k,
                                    params, macs))
            channels += k
        stages.append(Stage(
            f"denseblock{i}", "block", f"features.denseblock{i}", block_in, channels,
            size, size, sum(lp.params for lp in layers), sum(lp.macs for lp in layers),
            channels * vol, tuple(layers), growth_rate=k, bn_size=bn_size,
            drop_rate=drop))
        if i == n_blocks:
            break
        theta = thetas[i - 1]
        out = _transition_width(theta, channels)
        if out < 1:
            path = ("compression", i - 1) if isinstance(spec.compression, list) else \
                ("compression",)
            problems.append(smap.problem(path, (
                f"transition{i} would output floor({theta} x {channels}) = {out} channels; "
                "raise compression or growth_rate")))
            out = 1  # go on so later problems are reported too
            params_known = False
        size2 = pool(f"transition{i}", size, aa.transitions, avg=True)
        params = _norm_act(channels) + channels * out
        macs = channels * out * vol  # the 1x1 conv runs before the pool, at full size
        stages.append(Stage(f"transition{i}", "transition", f"features.transition{i}",
                            channels, out, size, size2, params, macs, out * _volume(size2),
                            compression=theta, drop_rate=drop,
                            blur=aa.transitions))
        channels, size = out, size2

    problems = size_problem + problems

    # --- head: norm5, activation, global average pool, classifier --------------------------
    # num_classes 0: a headless model (timm's convention); it outputs the pooled features.
    n = spec.num_classes
    out = n or channels
    stages.append(Stage("head", "head", "classifier", channels, out, size, ones,
                        _norm_act(channels) + channels * n + n, channels * n, out))
    try:
        _check_group_norm(spec, stages, stem_widths)
    except SpecError as e:
        problems.extend(e.problems)
    if spec.norm.type == NormType.instance and not size_problem:
        problems.extend(_instance_norm_sizes(spec, stages))

    result = Plan(
        spec=spec, stem_type=stem_type, stem_channels=stem_channels, stem_widths=stem_widths,
        growth_rate=_as_written(spec.growth_rate), bn_size=_as_written(spec.bn_size),
        compression=_as_written(spec.compression), block_config=block_config,
        drop_rate=_as_written(spec.drop_rate), num_classes=n,
        input_shape=(c_in, *spec.input.spatial),
        stem_conv_size=stem_conv_size, stages=tuple(stages),
        params=sum(s.params for s in stages), macs=sum(s.macs for s in stages),
        out_channels=channels, activations=sum(s.activations for s in stages),
        feature_info=_feature_info(stages, spec, stem_conv_size),
    )
    if params_known:  # a transition forced to 1 channel would make the count a guess
        try:
            _check_expect(result)
        except SpecError as e:
            problems.extend(e.problems)
    if problems:
        raise SpecError(problems)
    return result


def _norm_widths(spec: DenseNetSpec, stages: Sequence[Stage],
                 stem_widths: tuple[int, ...]) -> list[tuple[str, int]]:
    """(module name, channels) of every norm layer, in network order."""
    stem = stages[0]
    out: list[tuple[str, int]] = []
    if spec.stem.type == StemType.imagenet:
        out.append(("features.norm0", stem.out_channels))
    elif spec.stem.type in _DEEP_STEMS:
        out += [("features.norm0", stem_widths[0]), ("features.norm1", stem_widths[1]),
                ("features.norm2", stem.out_channels)]
    for s in stages[1:-1]:
        if s.kind == "block":
            for lp in s.layers:
                out.append((f"{s.module}.{lp.name}.norm1", lp.in_channels))
                if lp.bottleneck_channels:
                    out.append((f"{s.module}.{lp.name}.norm2", lp.bottleneck_channels))
        else:
            out.append((f"{s.module}.norm", s.in_channels))
    out.append(("features.norm5", stages[-1].in_channels))
    return out


def _check_group_norm(spec: DenseNetSpec, stages: Sequence[Stage],
                      stem_widths: tuple[int, ...]) -> None:
    if spec.norm.type != NormType.group:
        return
    g = spec.norm.groups
    bad = [(name, c) for name, c in _norm_widths(spec, stages, stem_widths) if c % g]
    if bad:
        shown = "; ".join(f"{name} has {c} channels" for name, c in bad[:3])
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        raise spec.source_map.error(("norm", "groups"), (
            f"group norm with {g} groups needs every normalised width divisible by {g}: "
            f"{shown}{more}"))


def _instance_norm_sizes(spec: DenseNetSpec, stages: Sequence[Stage]) -> list[Problem]:
    """Instance norm normalises each channel of each sample over its positions: on one
    position the variance is 0 and torch refuses to run (in eval too, as it keeps no
    running statistics). The last block's maps, which norm5 sees, are the smallest."""
    last = stages[-1].in_size
    if _volume(last) > 1:
        return []
    i = spec.input
    names = "x".join(AXES[i.dims])
    shape = "x".join(map(str, last))
    return [spec.source_map.problem(("norm", "type"), (
        f"instance norm needs more than one position per channel, and norm5 sees {shape} "
        f"({names}) at input {i.channels}x{'x'.join(map(str, i.spatial))}: give a larger "
        f"input, fewer transitions, or batch, group or layer norm"))]


def _feature_info(stages: list[Stage], spec: DenseNetSpec, stem_conv_size: tuple[int, ...]
                  ) -> tuple[dict, ...]:
    """Backbone taps as timm reports them: the stem's last norm (before the pool), the end
    of each block but the last (before its transition), and norm5 after the last block."""
    h0 = spec.input.spatial[0]  # timm reports one reduction; the first axis's
    info = []
    stem = stages[0]
    if spec.stem.type == StemType.cifar:
        info.append({"module": "features.conv0", "num_chs": stem.out_channels,
                     "reduction": 1, "stage": "stem"})
    else:
        norm = "features.norm2" if spec.stem.type in _DEEP_STEMS else "features.norm0"
        info.append({"module": norm, "num_chs": stem.out_channels,
                     "reduction": _reduction(h0, stem_conv_size[0]), "stage": "stem"})
    blocks = [s for s in stages if s.kind == "block"]
    for s in blocks[:-1]:
        info.append({"module": s.module, "num_chs": s.out_channels,
                     "reduction": _reduction(h0, s.out_size[0]), "stage": s.name})
    last = blocks[-1]
    info.append({"module": "features.norm5", "num_chs": last.out_channels,
                 "reduction": _reduction(h0, last.out_size[0]), "stage": last.name})
    return tuple(info)
