"""VoVNetSpec -> VoVNetPlan: every channel count, output size, parameter and MAC of a
VoVNet. Pure arithmetic, no torch; the same conventions as archspec.plan (parameters
trainable only, MACs of the learned convolutions and the classifier for one image,
activations as stage-output elements of one image).

The network (timm's ``vovnet.py``, after Lee et al. 2019 and CenterMask 2020):

- stem: three conv-norm-act, 3x3/2, 3x3/1, 3x3/2 (the last two depthwise-separable in
  the depthwise variants): the input shrinks 4x.
- stages: every stage but the first starts with a 3x3/2 max pool (ceil mode); then
  ``blocks`` OSA blocks. An OSA block (with c_in channels in, width m, L layers, out o):
  [a 1x1 reduction c_in -> m when depthwise and c_in != m], L conv-norm-acts (3x3, or
  depthwise 3x3 + pointwise 1x1), each reading only the one before it; the block's input
  and all L outputs concatenated (c_in + L*m channels) into a 1x1 conv-norm-act to o;
  eSE attention on the last block of each stage (1x1 conv o -> o with bias); a residual
  sum for every block but a stage's first, where asked.
- head: global average pool, dropout, linear classifier.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import Problem, SpecError
from .plan_common import (Links, PlanBase, Stage, check_expect, conv_out, group_norm_problems,
                          links_matrix, norm_params, reduction, too_small, volume)
from .schema import Attention, VoVNetSpec

__all__ = ["VoVNetPlan", "plan_vovnet", "pool_out"]


def pool_out(size: int) -> int:
    """Output length of the stages' 3x3/2 max pool in ceil mode (torch's rule: a window
    must start inside the input)."""
    out = -(-(size - 3) // 2) + 1
    if (out - 1) * 2 >= size:
        out -= 1
    return out


@dataclass(frozen=True, repr=False)
class VoVNetPlan(PlanBase):
    """The resolved architecture of a VoVNet spec (the members' shared plan interface:
    ``spec``, ``stages``, ``params``, ``macs``, ``out_channels``, ``activations``,
    ``input_shape``, ``num_classes``, ``feature_info``, ``name``, ``dims``, ``stage``)."""

    spec: VoVNetSpec
    num_classes: int
    input_shape: tuple[int, ...]
    stages: tuple[Stage, ...]
    params: int
    macs: int
    out_channels: int
    activations: int
    block_widths: tuple[tuple[int, int], ...]   # per block: (in_channels, concatenated)
    feature_info: tuple[dict, ...] = field(default=())

    family = "vovnet"
    first_conv = "stem.0.conv"  # the module whose weight sees the input

    def __repr__(self) -> str:
        shape = "x".join(map(str, self.input_shape))
        blocks = [st.blocks for st in self.spec.stages]
        return (f"VoVNetPlan({self.name!r}, input {shape}, blocks {blocks}, "
                f"params={self.params:,}, macs={self.macs:,}, "
                f"out_channels={self.out_channels})")

    @property
    def depth(self) -> int:
        """The paper's depth: the stem's three convs and each OSA block's 3x3 convs and
        its 1x1 aggregation (VoVNet-39: 3 + 6 x (5 + 1) = 39); the depthwise variants'
        reductions, the eSE's 1x1 and the classifier are not counted."""
        spec = self.spec
        return 3 + (spec.layers_per_block + 1) * sum(st.blocks for st in spec.stages)

    def _links(self, stage: Stage) -> Links:
        # Lee et al.'s Figure 1(b): each 3x3 conv reads only the one before it (the first,
        # the block input); the block aggregates them all once, into its 1x1 conv.
        return links_matrix(stage.name, self.spec.layers_per_block, lambda j: (j - 1,),
                            "one concatenation of the input and every layer, into a 1x1 "
                            "conv")

    def training_memory(self, batch: int = 1, *, dtype_bytes: int = 4,
                        memory_efficient: bool | str | None = None,
                        recomputation: bool = True) -> int:
        """Estimated bytes of activations autograd keeps for backward in a training step
        of ``batch`` images (``dtype_bytes`` per element): the image; per conv-norm-act
        its conv's output (the norm's input) and its activated output (the next layer's
        input), and a separable one's depthwise output besides; per OSA block the
        concatenation its 1x1 reads, and the eSE product and residual sum where they
        are; each stage pool's output and indices (int64: two float32 elements); the
        head's input and pooled features. An estimate for the resource guard (within
        about 10% of what autograd keeps, tested); VoVNets have no memory levels."""
        return self._saved_elements_per_image() * batch * dtype_bytes

    def _saved_elements_per_image(self) -> int:
        spec = self.spec
        dw = spec.depthwise
        total = self.input_shape[0] * volume(self.input_shape[1:])
        for s in self.stages:
            vol = volume(s.out_size)
            if s.kind == "stem":
                w0, w1, w2 = spec.stem_widths
                half = volume(tuple(conv_out(n, 3, 2, 1) for n in s.in_size))
                total += 2 * ((w0 + w1) * half + w2 * vol)
                if dw:  # the depthwise outputs of the two separable convs
                    total += w0 * half + w1 * vol
            elif s.kind == "stage":
                i = int(s.name[len("stage"):]) - 1
                st = spec.stages[i]
                m, L = st.conv_channels, spec.layers_per_block
                if i > 0:  # the max pool's output and its int64 indices
                    total += 3 * s.in_channels * vol
                for j in range(st.blocks):
                    c_in = s.in_channels if j == 0 else st.out_channels
                    reduce = dw and c_in != m
                    total += (2 * L * m + (c_in + L * m) + 2 * st.out_channels) * vol
                    total += (2 * m * vol if reduce else 0) + (L * m * vol if dw else 0)
                    if spec.attention.value == "ese" and j == st.blocks - 1:
                        total += st.out_channels * vol  # the gated product
                    if spec.residual and j > 0:
                        total += st.out_channels * vol  # the sum
            else:
                total += s.in_channels * volume(s.in_size) + s.in_channels + s.activations
        return total


def plan_vovnet(spec: VoVNetSpec) -> VoVNetPlan:
    """Resolve a VoVNet spec; SpecError, located at the responsible key, for an input too
    small for the stem and the stages' pools, a depthwise block that cannot be residual,
    widths group norm cannot divide, and an ``expect`` the plan contradicts."""
    smap = spec.source_map
    problems: list[Problem] = []
    dims = spec.input.dims
    k3 = 3 ** dims
    norm = norm_params(spec.norm.is_affine)
    act = spec.activation.params

    def cna(c_in: int, c_out: int, kernel: int) -> int:
        """Parameters of a conv-norm-act (no conv bias)."""
        return c_in * c_out * kernel + norm(c_out) + act

    def separable(c_in: int, c_out: int) -> int:
        """A depthwise 3x3 (c_in filters), a pointwise 1x1, norm, act."""
        return c_in * k3 + c_in * c_out + norm(c_out) + act

    norms: list[tuple[str, int]] = []  # (module, channels) of every norm, for group norm
    c_in, size = spec.input.channels, spec.input.spatial
    w0, w1, w2 = spec.stem_widths

    # --- stem: 3x3/2, 3x3/1, 3x3/2 ----------------------------------------------------------
    def stride2(n: int) -> int:
        return conv_out(n, 3, 2, 1)
    half = tuple(stride2(n) for n in size)
    quarter = tuple(stride2(n) for n in half)
    if min(quarter) < 1 or min(half) < 1:
        problems.append(too_small(spec, "the stem's two stride-2 convs",
                                  _smallest(len(spec.stages))))
        half, quarter = (1,) * dims, (1,) * dims
    second = separable if spec.depthwise else (lambda a, b: cna(a, b, k3))
    params = cna(c_in, w0, k3) + second(w0, w1) + second(w1, w2)
    macs = c_in * w0 * k3 * volume(half)
    if spec.depthwise:
        macs += (w0 * k3 + w0 * w1) * volume(half) + (w1 * k3 + w1 * w2) * volume(quarter)
    else:
        macs += w0 * w1 * k3 * volume(half) + w1 * w2 * k3 * volume(quarter)
    norms += [("stem.0.bn", w0), ("stem.1.bn", w1), ("stem.2.bn", w2)]
    stages = [Stage("stem", "stem", "stem", c_in, w2, size, quarter, params, macs,
                    w2 * volume(quarter))]
    channels, size = w2, quarter
    feature_info = [{"module": "stem.1", "num_chs": w1, "stage": "stem",
                     "reduction": reduction(spec.input.spatial[0], half[0])}]

    # --- OSA stages ---------------------------------------------------------------------------
    L = spec.layers_per_block
    block_widths = []
    for i, st in enumerate(spec.stages):
        m, out = st.conv_channels, st.out_channels
        stage_in, in_size = channels, size
        if i > 0:
            pooled = tuple(pool_out(n) for n in size)
            if min(pooled) < 1:
                if not any(p.message.startswith("input") for p in problems):
                    problems.append(too_small(spec, f"stage{i + 1}'s 3x3/2 max pool",
                                              _smallest(len(spec.stages))))
                pooled = (1,) * dims
            size = pooled
        vol = volume(size)
        params = macs = 0
        for j in range(st.blocks):
            prefix = f"stages.{i}.blocks.{j}"
            residual = spec.residual and j > 0
            reduce = spec.depthwise and channels != m
            if reduce and residual and j == 1:  # once a stage, at its second block
                problems.append(smap.problem(("stages", i, "blocks"), (
                    f"a depthwise OSA block reduces its {channels} input channels to "
                    f"conv_channels {m} with a 1x1 first, so it cannot add its input back "
                    f"(residual): stage{i + 1}'s blocks after the first would; give "
                    "out_channels equal to conv_channels, one block, or residual: false")))
            if reduce:
                params += cna(channels, m, 1)
                macs += channels * m * vol
                norms.append((f"{prefix}.conv_reduction.bn", m))
            first = m if reduce or spec.depthwise else channels
            for layer in range(L):
                if spec.depthwise:
                    params += separable(m, m)
                    macs += (m * k3 + m * m) * vol
                else:
                    c = first if layer == 0 else m
                    params += cna(c, m, k3)
                    macs += c * m * k3 * vol
                norms.append((f"{prefix}.conv_mid.{layer}.bn", m))
            concat = channels + L * m
            params += cna(concat, out, 1)
            macs += concat * out * vol
            norms.append((f"{prefix}.conv_concat.bn", out))
            block_widths.append((channels, concat))
            if spec.attention == Attention.ese and j == st.blocks - 1:
                params += out * out + out
                macs += out * out
            channels = out
        stages.append(Stage(f"stage{i + 1}", "stage", f"stages.{i}", stage_in, out, in_size,
                            size, params, macs, out * vol))
        feature_info.append({"module": f"stages.{i}", "num_chs": out, "stage": f"stage{i + 1}",
                             "reduction": reduction(spec.input.spatial[0], size[0])})

    # --- head: global average pool, dropout, classifier ------------------------------------
    n = spec.num_classes
    head_out = n or channels
    stages.append(Stage("head", "head", "head.fc", channels, head_out, size, (1,) * dims,
                        channels * n + n, channels * n, head_out, drop_rate=spec.drop_rate))
    problems += group_norm_problems(spec, norms)
    if problems:
        raise SpecError(problems)
    result = VoVNetPlan(
        spec=spec, num_classes=n, input_shape=(spec.input.channels, *spec.input.spatial),
        stages=tuple(stages), params=sum(s.params for s in stages),
        macs=sum(s.macs for s in stages), out_channels=channels,
        activations=sum(s.activations for s in stages), block_widths=tuple(block_widths),
        feature_info=tuple(feature_info))
    check_expect(result)  # the same pins, said as a DenseNet's
    return result


def _smallest(n_stages: int) -> int:
    """The smallest input length that leaves every pool an output: the stem halves twice
    (3x3/2, pad 1) and each stage after the first pools 3x3/2 in ceil mode, unpadded."""
    size = 1
    while True:
        n = conv_out(conv_out(size, 3, 2, 1), 3, 2, 1)
        for _ in range(n_stages - 1):
            n = pool_out(n) if n >= 1 else 0
        if n >= 1:
            return size
        size += 1
