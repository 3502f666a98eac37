"""What every family member's plan is made of: the Stage each plan lists (stem, blocks,
transitions or stages, head), the size arithmetic of convolutions and pools, the
parameters of a norm, the reduction a backbone reports, and the check of ``expect``.
Pure arithmetic, no torch; archspec.plan (DenseNet) and archspec.plan_vovnet use it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from .errors import Problem, SpecError

__all__ = ["LayerPlan", "Stage", "StageNotFound", "PlanBase", "Links", "links_matrix",
           "conv_out", "volume", "norm_params", "reduction", "check_expect", "too_small",
           "group_norm_problems", "per_block"]


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


@dataclass(frozen=True, repr=False)
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
    in_size: tuple[int, ...]       # one entry per spatial axis: (L,), (H, W), (D, H, W)
    out_size: tuple[int, ...]
    params: int
    macs: int
    activations: int               # output elements per image
    layers: tuple[LayerPlan, ...] = ()
    growth_rate: Optional[int] = None      # block
    bn_size: Optional[int] = None          # block (None: no bottleneck)
    compression: Optional[float] = None    # transition
    drop_rate: float = 0.0                 # block and transition
    blur: bool = False                     # stem pool / transition pool is a blur pool

    def __repr__(self) -> str:
        shape = "x".join(map(str, (self.out_channels, *self.out_size)))
        return (f"Stage({self.name!r}, {self.kind}, out {shape}, params={self.params:,}, "
                f"macs={self.macs:,}" + (f", layers={len(self.layers)}" if self.layers else "")
                + ")")


class StageNotFound(KeyError):
    """``Plan.stage`` with a name the plan does not have (the message lists the names)."""

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return str(self.args[0])


@dataclass(frozen=True)
class Links:
    """A block's connectivity: which outputs each of its layers reads, and what the block
    emits. ``sources`` are the block's input and its layers' outputs, in order;
    ``readers`` its layers and, last, the block's output; ``reads[r][s]`` says whether
    reader r reads source s (the picture ``archspec plot --links`` draws)."""

    stage: str
    sources: tuple[str, ...]
    readers: tuple[str, ...]
    reads: tuple[tuple[bool, ...], ...]
    output: str                      # what the last reader is: "concatenation", ...

    def read_by(self, reader: int) -> list[str]:
        """The sources reader ``reader`` (0-based) reads, by name."""
        return [s for s, on in zip(self.sources, self.reads[reader]) if on]


class PlanBase:
    """What every member's plan answers besides its fields (``spec``, ``input_shape``,
    ``stages``): its name, its dimensions, and a stage by name."""

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def dims(self) -> int:
        """Spatial dimensions of the network: 1, 2 or 3."""
        return len(self.input_shape) - 1

    def links(self, name: str | None = None) -> "Links":
        """The connectivity of block ``name`` (default: the first block or stage); a
        KeyError names the blocks a stage that has none."""
        blocks = [s for s in self.stages if s.kind in ("block", "stage")]
        stage = blocks[0] if name is None else self.stage(name)
        if stage.kind not in ("block", "stage"):
            raise StageNotFound(f"{stage.name} is a {stage.kind}, not a block: "
                                + ", ".join(s.name for s in blocks) + " are")
        return self._links(stage)

    def stage(self, name: str) -> Stage:
        """The stage called ``name`` (``stem``, ``denseblock2``, ``stage3``, ``head``...).

        Raises KeyError naming the valid stages (and the closest one) otherwise."""
        for s in self.stages:
            if s.name == name:
                return s
        import difflib

        names = [s.name for s in self.stages]
        close = difflib.get_close_matches(str(name), names, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else "."
        raise StageNotFound(f"{self.name} has no stage {name!r}{hint} Stages: "
                            + ", ".join(names))


def norm_params(affine: bool):
    """channels -> parameters of one norm layer: weight and bias when affine, else none."""
    return (lambda c: 2 * c) if affine else (lambda c: 0)


def volume(size: Sequence[int]) -> int:
    """Elements of one channel of a feature map: the product of its spatial sizes."""
    return math.prod(size)


def reduction(full: int, now: int) -> int:
    # Round to the nearest power of two: 224 -> 7 is 32 even where floors made sizes odd.
    return 2 ** round(math.log2(full / now)) if now else 0


def check_expect(p: Any) -> None:
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
        raise SpecError(problems)


def links_matrix(stage: str, layers: int, reads, output: str) -> Links:
    """Links for a block of ``layers`` layers, where ``reads(j)`` gives the sources (0 the
    block input, i the output of layer i) layer j (1-based) reads, and the output reads
    every source."""
    sources = ("input", *(f"layer {i}" for i in range(1, layers + 1)))
    rows = [tuple(s in reads(j) for s in range(layers + 1)) for j in range(1, layers + 1)]
    rows.append((True,) * (layers + 1))
    return Links(stage, sources, (*sources[1:], "output"), tuple(rows), output)


def too_small(spec: Any, what: str, smallest: int) -> Problem:
    """An input too small for ``what`` (located at its smallest axis), with the smallest
    length each axis needs."""
    from .schema import AXES

    i = spec.input
    axes = "x".join(AXES[i.dims])
    small = min(range(i.dims), key=lambda a: i.spatial[a])
    return spec.source_map.problem(("input", *i.axis_key(small)), (
        f"input {i.channels}x{'x'.join(map(str, i.spatial))} ({axes}) is too small for "
        f"{what}: each axis needs at least {smallest}"))


def group_norm_problems(spec: Any, norms: Sequence[tuple[str, int]]) -> list[Problem]:
    """Group norm's widths: every normalised width (``norms``: module, channels) must
    divide into the spec's groups; one problem at ``norm.groups`` naming the first three
    that do not."""
    if spec.norm.type.value != "group":
        return []
    g = spec.norm.groups
    bad = [(name, c) for name, c in norms if c % g]
    if not bad:
        return []
    shown = "; ".join(f"{name} has {c} channels" for name, c in bad[:3])
    more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
    return [spec.source_map.problem(("norm", "groups"), (
        f"group norm with {g} groups needs every normalised width divisible by {g}: "
        f"{shown}{more}"))]


def per_block(spec: Any, key: str, count: int, what: str) -> tuple:
    """A per-block (or per-transition) setting: one value repeated, or a list of ``count``."""
    value = getattr(spec, key)
    if not isinstance(value, list):
        return (value,) * count
    if len(value) != count:
        smap = spec.source_map
        here, blocks = smap.locate((key,)), smap.locate(("block_config",))
        if spec.block_config is not None and here.file != blocks.file:
            # The list is inherited and the child changed the number of blocks: the fix is
            # in the child, so point there and say where the list came from.
            raise smap.error(("block_config",), (
                f"{len(spec.block_config)} blocks need {count} {what} in {key}, which has "
                f"{len(value)} values (from {here.file}:{here.line}:{here.column}); give "
                f"{key} here too: one value, or exactly {count}"))
        raise smap.error((key,), f"has {len(value)} values for {count} {what}; "
                                 f"give one value, or exactly {count}")
    return tuple(value)
