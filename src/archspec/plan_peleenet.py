"""PeleeNetSpec -> PeleeNetPlan: every channel count, output size, parameter and MAC of a
PeleeNet. Pure arithmetic, no torch; the same conventions as archspec.plan (parameters
trainable only, MACs of the learned convolutions and the classifier for one image,
activations as stage-output elements of one image).

The network (Wang et al., NeurIPS 2018, as Robert-JunWang/PeleeNet's ``peleenet.py``
builds it), conv-norm-act throughout:

- stem block (width w): stem1 3x3/2 to w; then a 2x2/2 max pool of stem1's output beside
  stem2a 1x1 to w/2 and stem2b 3x3/2 to w; both concatenated (2w) into stem3 1x1 to w.
  The input shrinks 4x.
- dense blocks: a layer with c input channels adds k channels, k/2 from each branch:
  branch 1 is a 1x1 to b then a 3x3 to k/2; branch 2 a 1x1 to b, a 3x3 to k/2 and another
  3x3 to k/2; the layer returns [input, branch 1, branch 2] concatenated. b is
  floor(k/2 x bottleneck_width / 4) x 4, or floor(c/8) x 4 where that exceeds c/2.
- after each block: a 1x1 conv keeping every channel; a 2x2 average pool but after the
  last.
- head: global average pool, dropout, linear classifier.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import Problem, SpecError
from .plan_common import (Links, PlanBase, Stage, check_expect, conv_out, group_norm_problems,
                          links_matrix, norm_params, per_block, reduction, too_small, volume)
from .schema import PeleeNetSpec

__all__ = ["PeleeNetPlan", "plan_peleenet", "bottleneck"]


def bottleneck(in_channels: int, growth_rate: int, width: int) -> int:
    """A branch's 1x1 width, as the reference sizes it: floor(k/2 x width / 4) x 4, but
    floor(in/8) x 4 where that would exceed half the layer's input."""
    inter = int(growth_rate // 2 * width / 4) * 4
    if inter > in_channels / 2:
        inter = int(in_channels / 8) * 4
    return inter


@dataclass(frozen=True, repr=False)
class PeleeNetPlan(PlanBase):
    """The resolved architecture of a PeleeNet spec (the members' shared plan interface:
    ``spec``, ``stages``, ``params``, ``macs``, ``out_channels``, ``activations``,
    ``input_shape``, ``num_classes``, ``feature_info``, ``name``, ``dims``, ``stage``).
    ``bottlenecks[b][j]`` is block b's layer j + 1's 1x1 width."""

    spec: PeleeNetSpec
    num_classes: int
    input_shape: tuple[int, ...]
    stages: tuple[Stage, ...]
    params: int
    macs: int
    out_channels: int
    activations: int
    growth_rates: tuple[int, ...]
    bottlenecks: tuple[tuple[int, ...], ...]
    feature_info: tuple[dict, ...] = field(default=())

    family = "peleenet"
    first_conv = "features.stemblock.stem1.conv"  # the module whose weight sees the input

    def __repr__(self) -> str:
        shape = "x".join(map(str, self.input_shape))
        return (f"PeleeNetPlan({self.name!r}, input {shape}, blocks "
                f"{list(self.spec.block_config)}, params={self.params:,}, "
                f"macs={self.macs:,}, out_channels={self.out_channels})")

    @property
    def depth(self) -> int:
        """Weighted layers on the longest path: stem1, stem2a, stem2b and stem3, three per
        dense layer (branch 2's 1x1 and two 3x3s), one per transition, the classifier."""
        blocks = self.spec.block_config
        return 4 + 3 * sum(blocks) + len(blocks) + 1

    def _links(self, stage: Stage) -> Links:
        # a dense block: every layer reads the concatenation of all before it
        b = int(stage.name[len("denseblock"):]) - 1
        n = self.spec.block_config[b]
        return links_matrix(stage.name, n, lambda j: tuple(range(j)),
                            "every layer's input and output, concatenated")

    def training_memory(self, batch: int = 1, *, dtype_bytes: int = 4,
                        memory_efficient: bool | str | None = None,
                        recomputation: bool = True) -> int:
        """Estimated bytes of activations autograd keeps for backward in a training step
        of ``batch`` images (``dtype_bytes`` per element): per conv-norm-act its conv's
        output and its activated output (relu, in place, keeps its result; other
        activations keep their input besides); per dense layer its concatenated output
        (the next layer's input); the stem's max pool indices (int64: two float32
        elements); each transition pool's output; the classifier's pooled input. An
        estimate for the resource guard; PeleeNets have no memory levels."""
        return self._saved_elements_per_image() * batch * dtype_bytes

    def _saved_elements_per_image(self) -> int:
        spec = self.spec
        # per conv-norm-act: the conv's output and what the activation keeps (relu, in
        # place, its result; others their input, and then the output is one more tensor
        # where a conv or pool reads it rather than only a concatenation)
        apart = int(spec.activation.type.value not in ("relu", "leaky_relu", "elu"))
        total = self.input_shape[0] * volume(self.input_shape[1:])
        w = spec.stem_channels
        last = len(spec.block_config)
        for s in self.stages:
            vol, vin = volume(s.out_size), volume(s.in_size)
            if s.kind == "stem":
                half = volume(tuple(conv_out(n, 3, 2, 1) for n in s.in_size))
                # stem1 (read by the pool and stem2a) and stem2a at half; stem2b (only
                # concatenated) and stem3 (read by the first layer) at the output; the
                # pool's indices (w int64) and the concatenation stem3 reads (2w)
                total += (2 + apart) * (w + w // 2) * half
                total += (2 * w + (2 + apart) * w) * vol + 2 * w * vol + 2 * w * vol
            elif s.kind == "block":
                b = int(s.name[len("denseblock"):]) - 1
                k = self.growth_rates[b]
                for j, inter in enumerate(self.bottlenecks[b]):
                    # 1a, 2a (read by the 3x3s), 2b (read by 2c); 1b and 2c only concatenated
                    total += ((2 + apart) * (2 * inter + k // 2) + 2 * k) * vol
                    total += (s.in_channels + (j + 1) * k) * vol  # the layer's output
            elif s.kind == "transition":
                b = int(s.name[len("transition"):]) - 1
                total += (2 + apart * int(b < last - 1)) * s.in_channels * vin
                if s.out_size != s.in_size:
                    total += s.out_channels * vol  # the pool's output, the next conv's input
            else:
                total += s.in_channels + s.activations
        return total


def plan_peleenet(spec: PeleeNetSpec) -> PeleeNetPlan:
    """Resolve a PeleeNet spec; SpecError, located at the responsible key, for per-block
    lists of the wrong length, a layer whose bottleneck would have no channels, an input
    the stem block's two branches cannot agree on or too small for the pools, widths group
    norm cannot divide, and an ``expect`` the plan contradicts."""
    smap = spec.source_map
    problems: list[Problem] = []
    dims = spec.input.dims
    k3 = 3 ** dims
    norm = norm_params(spec.norm.is_affine)
    act = spec.activation.params

    def cna(c_in: int, c_out: int, kernel: int) -> int:
        """Parameters of a conv-norm-act (no conv bias)."""
        return c_in * c_out * kernel + norm(c_out) + act

    blocks = spec.block_config
    growth = per_block(spec, "growth_rate", len(blocks), "growth rates")
    widths = per_block(spec, "bottleneck_width", len(blocks), "bottleneck widths")
    norms: list[tuple[str, int]] = []
    c_in, size = spec.input.channels, spec.input.spatial
    w = spec.stem_channels

    # --- stem block ---------------------------------------------------------------------------
    half = tuple(conv_out(n, 3, 2, 1) for n in size)
    quarter = tuple(conv_out(n, 3, 2, 1) for n in half)
    pooled = tuple(n // 2 for n in half)
    if min(quarter) < 1 or min(pooled) < 1:
        problems.append(too_small(spec, "the stem block's stride-2 steps",
                                  _smallest(len(blocks))))
        half = quarter = pooled = (2,) * dims
    elif quarter != pooled:
        axis = next(a for a in range(dims) if quarter[a] != pooled[a])
        problems.append(smap.problem(("input", *spec.input.axis_key(axis)), (
            f"the stem block concatenates a 2x2/2 max pool of its first conv's output "
            f"({half[axis]} long on this axis) with a 3x3/2 conv of it: they give "
            f"{pooled[axis]} and {quarter[axis]}; the first conv's output must be even, "
            f"so the input a multiple of 4 (or one less) on each axis")))
    params = cna(c_in, w, k3) + cna(w, w // 2, 1) + cna(w // 2, w, k3) + cna(2 * w, w, 1)
    macs = (c_in * w * k3 + w * (w // 2)) * volume(half) + \
        ((w // 2) * w * k3 + 2 * w * w) * volume(quarter)
    norms += [("features.stemblock.stem1.norm", w), ("features.stemblock.stem2a.norm", w // 2),
              ("features.stemblock.stem2b.norm", w), ("features.stemblock.stem3.norm", w)]
    stages = [Stage("stem", "stem", "features.stemblock", c_in, w, size, quarter, params,
                    macs, w * volume(quarter))]
    channels, size = w, quarter
    feature_info: list[dict] = []

    # --- dense blocks and transitions ---------------------------------------------------------
    inters_all = []
    for b, n_layers in enumerate(blocks):
        k, half_k = growth[b], growth[b] // 2
        vol = volume(size)
        params = macs = 0
        inters = []
        block_in = channels
        for j in range(n_layers):
            inter = bottleneck(channels, k, widths[b])
            if inter < 1 and not any("bottleneck" in p.message for p in problems):
                problems.append(smap.problem(("bottleneck_width",) if not isinstance(
                    spec.bottleneck_width, list) else ("bottleneck_width", b), (
                    f"denseblock{b + 1}'s layer {j + 1} sees {channels} channels: its "
                    f"branches' 1x1 would have {inter} (at most half the input, rounded "
                    f"down to a multiple of 4); give the stem or the earlier blocks more "
                    f"channels")))
            inter = max(inter, 1)
            layer = f"features.denseblock{b + 1}.denselayer{j + 1}"
            params += 2 * cna(channels, inter, 1) + 2 * cna(inter, half_k, k3) + \
                cna(half_k, half_k, k3)
            macs += (2 * channels * inter + 2 * inter * half_k * k3
                     + half_k * half_k * k3) * vol
            norms += [(f"{layer}.branch1a.norm", inter), (f"{layer}.branch1b.norm", half_k),
                      (f"{layer}.branch2c.norm", half_k)]
            inters.append(inter)
            channels += k
        inters_all.append(tuple(inters))
        stages.append(Stage(f"denseblock{b + 1}", "block", f"features.denseblock{b + 1}",
                            block_in, channels, size, size, params, macs, channels * vol,
                            growth_rate=k, bn_size=widths[b]))
        # the transition: a 1x1 conv-norm-act keeping every channel, then (but for the
        # last) a 2x2 average pool
        params = cna(channels, channels, 1)
        macs = channels * channels * vol
        norms.append((f"features.transition{b + 1}.norm", channels))
        in_size = size
        last = b == len(blocks) - 1
        feature_info.append({"module": f"features.transition{b + 1}", "num_chs": channels,
                             "stage": f"transition{b + 1}",
                             "reduction": reduction(spec.input.spatial[0], size[0])})
        if not last:
            size = tuple(n // 2 for n in size)
            if min(size) < 1:
                if not any(p.message.startswith("input") for p in problems):
                    problems.append(too_small(spec, f"transition{b + 1}'s 2x2 average pool",
                                              _smallest(len(blocks))))
                size = (1,) * dims
        stages.append(Stage(f"transition{b + 1}", "transition",
                            f"features.transition{b + 1}" + ("" if last else "_pool"),
                            channels, channels, in_size, size, params, macs,
                            channels * volume(size), compression=1.0))

    # --- head: global average pool, dropout, classifier ------------------------------------
    n = spec.num_classes
    head_out = n or channels
    stages.append(Stage("head", "head", "classifier", channels, head_out, size, (1,) * dims,
                        channels * n + n, channels * n, head_out, drop_rate=spec.drop_rate))
    problems += group_norm_problems(spec, norms)
    if problems:
        raise SpecError(problems)
    result = PeleeNetPlan(
        spec=spec, num_classes=n, input_shape=(spec.input.channels, *spec.input.spatial),
        stages=tuple(stages), params=sum(s.params for s in stages),
        macs=sum(s.macs for s in stages), out_channels=channels,
        activations=sum(s.activations for s in stages), growth_rates=tuple(growth),
        bottlenecks=tuple(inters_all), feature_info=tuple(feature_info))
    check_expect(result)
    return result


def _smallest(n_blocks: int) -> int:
    """The smallest input length that leaves every pool an output: the stem quarters it,
    each transition but the last halves it."""
    return 4 * 2 ** (n_blocks - 1)
