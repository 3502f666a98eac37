"""HarDNetSpec -> HarDNetPlan: every channel count, output size, parameter and MAC of a
HarDNet. Pure arithmetic, no torch; the same conventions as archspec.plan (parameters
trainable only, MACs of the learned convolutions and the classifier for one image,
activations as stage-output elements of one image).

The network (Chao et al., ICCV 2019, as PingoLH/Pytorch-HarDNet's ``hardnet.py`` builds
it):

- stem: conv-norm-act k0/2, conv-norm-act k1/1, then a downsampling: a 3x3/2 max pool
  (padding 1) or, in the DS variants, a 3x3/2 depthwise conv and a norm.
- harmonic dense blocks: layer j (1-based) reads the outputs j - 2^i for every 2^i that
  divides j (output 0 is the block's input), concatenated; it is growth_rate x
  grmul^(links - 1) wide, rounded to an even number as the reference rounds it; a layer
  is a 3x3 conv-norm-act, or in the DS variants a 1x1 conv-norm-act then a 3x3 depthwise
  conv-norm. The block emits its odd layers and its last, concatenated (not its input).
- after each block: [dropout,] a 1x1 conv-norm-act to out_channels, and where asked a
  downsampling: a 2x2/2 max pool, or a 3x3/2 depthwise conv-norm.
- head: global average pool, dropout, linear classifier.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import Problem, SpecError
from .plan_common import (Links, PlanBase, Stage, check_expect, conv_out, group_norm_problems,
                          links_matrix, norm_params, reduction, too_small, volume)
from .schema import Downsample, HarDNetSpec

__all__ = ["HarDNetPlan", "plan_hardnet", "harmonic_links", "layer_width"]

#: The reference code looks for divisors 2^0 .. 2^9 (``for i in range(10)``); the schema
#: caps a block at 1023 layers, where that is every power of two that divides an index.
_MAX_POWER = 10


def harmonic_links(j: int) -> tuple[int, ...]:
    """The outputs layer ``j`` (1-based) reads: j - 2^i for every 2^i dividing j, nearest
    first (0 is the block's input)."""
    return tuple(j - 2 ** i for i in range(_MAX_POWER) if j % 2 ** i == 0)


def layer_width(j: int, growth_rate: int, grmul: float) -> int:
    """Layer j's width: growth_rate x grmul^(links - 1), rounded as the reference rounds
    it (``int(int(w + 1) / 2) * 2``: the even number at or below w + 1), the multiplications
    done one at a time in floating point as there."""
    width: float = growth_rate
    for _ in harmonic_links(j)[1:]:
        width *= grmul
    return int(int(width + 1) / 2) * 2


def _emitted(j: int, layers: int) -> bool:
    """Whether the block's output includes layer j (1-based): the odd ones and the last."""
    return j % 2 == 1 or j == layers


@dataclass(frozen=True, repr=False)
class HarDNetPlan(PlanBase):
    """The resolved architecture of a HarDNet spec (the members' shared plan interface:
    ``spec``, ``stages``, ``params``, ``macs``, ``out_channels``, ``activations``,
    ``input_shape``, ``num_classes``, ``feature_info``, ``name``, ``dims``, ``stage``).
    ``layer_widths[b][j]`` is block b's layer j + 1's width, ``layer_inputs[b][j]`` its
    input channels (the sum of the widths it reads)."""

    spec: HarDNetSpec
    num_classes: int
    input_shape: tuple[int, ...]
    stages: tuple[Stage, ...]
    params: int
    macs: int
    out_channels: int
    activations: int
    layer_widths: tuple[tuple[int, ...], ...]
    layer_inputs: tuple[tuple[int, ...], ...]
    block_in: tuple[int, ...]                    # each block's input channels
    block_out: tuple[int, ...]                   # each block's emitted channels
    feature_info: tuple[dict, ...] = field(default=())

    family = "hardnet"
    first_conv = "stem.0.conv"  # the module whose weight sees the input

    def __repr__(self) -> str:
        shape = "x".join(map(str, self.input_shape))
        layers = [b.layers for b in self.spec.blocks]
        return (f"HarDNetPlan({self.name!r}, input {shape}, layers {layers}, "
                f"params={self.params:,}, macs={self.macs:,}, "
                f"out_channels={self.out_channels})")

    @property
    def depth(self) -> int:
        """The paper's depth: the stem's two convs, one per block layer (a DS layer's 1x1
        and depthwise 3x3 count once), each block's 1x1 and the classifier (HarDNet-68:
        2 + 60 + 5 + 1 = 68; HarDNet-39DS: 2 + 32 + 4 + 1 = 39). The downsamplings are
        not counted."""
        blocks = self.spec.blocks
        return 2 + sum(b.layers for b in blocks) + len(blocks) + 1

    def _links(self, stage: Stage) -> Links:
        # Chao et al.'s Figure 3: layer j reads j - 2^i for every 2^i dividing j; the
        # block emits its odd layers and its last.
        b = int(stage.name[len("hardblock"):]) - 1
        n = self.spec.blocks[b].layers
        links = links_matrix(stage.name, n, harmonic_links,
                             "the odd layers and the last, concatenated (not the input)")
        emit = tuple(j > 0 and _emitted(j, n) for j in range(n + 1))
        return Links(links.stage, links.sources, links.readers, (*links.reads[:-1], emit),
                     links.output)

    def training_memory(self, batch: int = 1, *, dtype_bytes: int = 4,
                        memory_efficient: bool | str | None = None,
                        recomputation: bool = True) -> int:
        """Estimated bytes of activations autograd keeps for backward in a training step
        of ``batch`` images (``dtype_bytes`` per element): per conv-norm-act its conv's
        output and its norm's output (what the activation keeps: its result for relu,
        leaky_relu and elu, which run in place, its input for the others), and its
        activated output where a conv or pool reads it alone (relu6 and the rest
        keep that apart from their input); per depthwise conv-norm its conv's output and,
        where a conv reads it alone, its norm's; per layer that reads several outputs the
        concatenation; each block's emitted concatenation; each max pool's indices (int64:
        two float32 elements); the classifier's pooled input. An estimate for the resource
        guard (within 10% of what autograd keeps, tested); HarDNets have no memory
        levels."""
        return self._saved_elements_per_image() * batch * dtype_bytes

    def _saved_elements_per_image(self) -> int:
        spec = self.spec
        total = self.input_shape[0] * volume(self.input_shape[1:])
        dw = spec.downsample == Downsample.depthwise
        # an activation that keeps its input: its output, read alone, is one more tensor
        apart = int(spec.activation.type.value not in ("relu", "leaky_relu", "elu"))
        last = len(spec.blocks)
        for s in self.stages:
            vol, vin = volume(s.out_size), volume(s.in_size)
            if s.kind == "stem":
                w0, w1 = spec.stem_widths
                half = volume(tuple(conv_out(n, spec.stem_kernels[0], 2,
                                             spec.stem_kernels[0] // 2) for n in s.in_size))
                total += (2 + apart) * (w0 + w1) * half  # conv1 and the pool read them
                total += (2 if dw else 3) * w1 * vol  # dw conv + norm, or output + indices
            elif s.kind == "block":
                b = int(s.name[len("hardblock"):]) - 1
                n = len(self.layer_widths[b])
                for j, (width, c_in) in enumerate(zip(self.layer_widths[b],
                                                      self.layer_inputs[b]), start=1):
                    alone = j % 2 == 0 and j < n  # layer j + 1 reads only layer j
                    if spec.depthwise:  # 1x1 conv-norm-act (its output read by the dw
                        # conv), dw conv-norm
                        total += (3 + apart + int(alone)) * width * vol
                    else:
                        total += (2 + apart * int(alone)) * width * vol
                    total += c_in * vol if len(harmonic_links(j)) > 1 else 0
                total += s.out_channels * vol
            elif s.kind == "transition":
                b = int(s.name[len("transition"):]) - 1
                read_alone = b < last - 1 or spec.blocks[b].downsample
                total += (2 + apart * int(read_alone)) * s.out_channels * vin
                if spec.blocks[b].downsample:
                    # dw conv + norm (read by the next block's first conv), or the
                    # pool's output and its indices
                    total += (2 if dw else 3) * s.out_channels * vol
            else:
                total += s.in_channels + s.activations
        return total


def plan_hardnet(spec: HarDNetSpec) -> HarDNetPlan:
    """Resolve a HarDNet spec; SpecError, located at the responsible key, for an input too
    small for the downsamplings, widths group norm cannot divide, and an ``expect`` the
    plan contradicts."""
    problems: list[Problem] = []
    dims = spec.input.dims
    k3 = 3 ** dims
    norm = norm_params(spec.norm.is_affine)
    act = spec.activation.params
    dw = spec.downsample == Downsample.depthwise

    def cna(c_in: int, c_out: int, kernel: int) -> int:
        """Parameters of a conv-norm-act (no conv bias)."""
        return c_in * c_out * kernel + norm(c_out) + act

    def depthwise(c: int) -> int:
        """A 3x3 depthwise conv and its norm (no activation)."""
        return c * k3 + norm(c)

    norms: list[tuple[str, int]] = []  # (module, channels) of every norm, for group norm
    c_in, size = spec.input.channels, spec.input.spatial
    w0, w1 = spec.stem_widths
    k0, k1 = spec.stem_kernels

    # --- stem: conv k0/2, conv k1/1, downsampling ---------------------------------------------
    half = tuple(conv_out(n, k0, 2, k0 // 2) for n in size)
    quarter = tuple(conv_out(n, 3, 2, 1) for n in half)  # max pool 3/2/1 or dw conv 3/2/1
    if min(half) < 1 or min(quarter) < 1:
        problems.append(too_small(spec, "the stem's two stride-2 steps", _smallest(spec)))
        half, quarter = (1,) * dims, (1,) * dims
    params = cna(c_in, w0, k0 ** dims) + cna(w0, w1, k1 ** dims)
    macs = (c_in * w0 * k0 ** dims + w0 * w1 * k1 ** dims) * volume(half)
    norms += [("stem.0.norm", w0), ("stem.1.norm", w1)]
    if dw:
        params += depthwise(w1)
        macs += w1 * k3 * volume(quarter)
        norms.append(("stem.2.norm", w1))
    stages = [Stage("stem", "stem", "stem", c_in, w1, size, quarter, params, macs,
                    w1 * volume(quarter))]
    channels, size = w1, quarter
    feature_info = [{"module": "stem", "num_chs": w1, "stage": "stem",
                     "reduction": reduction(spec.input.spatial[0], quarter[0])}]

    # --- harmonic dense blocks, each with its 1x1 conv and downsampling ------------------------
    widths_all, inputs_all, block_in, block_out = [], [], [], []
    for b, blk in enumerate(spec.blocks):
        vol = volume(size)
        widths = [channels]  # output 0: the block's input
        inputs = []
        params = macs = 0
        for j in range(1, blk.layers + 1):
            width = layer_width(j, blk.growth_rate, spec.grmul)
            reads = sum(widths[k] for k in harmonic_links(j))
            if spec.depthwise:  # 1x1 conv-norm-act, then a 3x3 depthwise conv-norm
                params += cna(reads, width, 1) + depthwise(width)
                macs += (reads * width + width * k3) * vol
                norms += [(f"features.hardblock{b + 1}.layers.{j - 1}.layer1.norm", width),
                          (f"features.hardblock{b + 1}.layers.{j - 1}.layer2.norm", width)]
            else:
                params += cna(reads, width, k3)
                macs += reads * width * k3 * vol
                norms.append((f"features.hardblock{b + 1}.layers.{j - 1}.norm", width))
            widths.append(width)
            inputs.append(reads)
        emitted = sum(widths[j] for j in range(1, blk.layers + 1) if _emitted(j, blk.layers))
        stages.append(Stage(f"hardblock{b + 1}", "block", f"features.hardblock{b + 1}", channels, emitted,
                            size, size, params, macs, emitted * vol,
                            growth_rate=blk.growth_rate))
        widths_all.append(tuple(widths[1:]))
        inputs_all.append(tuple(inputs))
        block_in.append(channels)
        block_out.append(emitted)
        # the 1x1 conv-norm-act after the block, then the downsampling
        out = blk.out_channels
        params = cna(emitted, out, 1)
        macs = emitted * out * vol
        norms.append((f"features.transition{b + 1}.norm", out))
        in_size = size
        if blk.downsample:
            if dw:
                size = tuple(conv_out(n, 3, 2, 1) for n in size)
                params += depthwise(out)
                macs += out * k3 * volume(size)
                norms.append((f"features.transition{b + 1}.down.norm", out))
            else:
                size = tuple(conv_out(n, 2, 2, 0) for n in size)
            if min(size) < 1:
                if not any(p.message.startswith("input") for p in problems):
                    problems.append(too_small(spec, f"block {b + 1}'s downsampling",
                                               _smallest(spec)))
                size = (1,) * dims
        last = b == len(spec.blocks) - 1
        stages.append(Stage(f"transition{b + 1}", "transition",
                            f"features.transition{b + 1}", emitted,
                            out, in_size, size, params, macs, out * volume(size),
                            drop_rate=spec.block_dropout if last else 0.0))
        level = {"module": f"features.transition{b + 1}", "num_chs": out,
                 "stage": f"transition{b + 1}",
                 "reduction": reduction(spec.input.spatial[0], size[0])}
        if feature_info[-1]["reduction"] == level["reduction"] and b > 0:
            feature_info.pop()  # one level per resolution: its last 1x1 conv's output
        feature_info.append(level)
        channels = out

    # --- head: global average pool, dropout, classifier ------------------------------------
    n = spec.num_classes
    head_out = n or channels
    stages.append(Stage("head", "head", "head.fc", channels, head_out, size, (1,) * dims,
                        channels * n + n, channels * n, head_out, drop_rate=spec.drop_rate))
    problems += group_norm_problems(spec, norms)
    if problems:
        raise SpecError(problems)
    result = HarDNetPlan(
        spec=spec, num_classes=n, input_shape=(spec.input.channels, *spec.input.spatial),
        stages=tuple(stages), params=sum(s.params for s in stages),
        macs=sum(s.macs for s in stages), out_channels=channels,
        activations=sum(s.activations for s in stages), layer_widths=tuple(widths_all),
        layer_inputs=tuple(inputs_all), block_in=tuple(block_in),
        block_out=tuple(block_out), feature_info=tuple(feature_info))
    check_expect(result)
    return result


def _smallest(spec: HarDNetSpec) -> int:
    """The smallest input length that leaves every downsampling an output."""
    k0 = spec.stem_kernels[0]
    dw = spec.downsample == Downsample.depthwise
    size = 1
    while True:
        n = conv_out(conv_out(size, k0, 2, k0 // 2), 3, 2, 1)
        for blk in spec.blocks:
            if blk.downsample and n >= 1:
                n = conv_out(n, 3, 2, 1) if dw else conv_out(n, 2, 2, 0)
        if n >= 1:
            return size
        size += 1
