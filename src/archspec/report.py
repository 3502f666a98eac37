"""Plan -> text for people and machines: summaries, the paper's tables, diffs, the zoo list.

Torch-free: everything here reads a Plan and formats it; no arithmetic on channels.
"""

from __future__ import annotations

import json
import math
from typing import Iterable, Sequence

from .plan import Plan, Stage
from .schema import AXES, StemType

__all__ = ["human", "printable", "render_table", "summary_rows", "summary_text", "plan_dict",
           "stage_dict",
           "summary_data", "summary_json", "paper_table", "diff_rows", "diff_text",
           "diff_json", "list_rows", "search_text", "search_csv"]


def printable(text: str, *, one_line: bool = False) -> str:
    """``text`` safe to print on a terminal: control characters (ESC sequences that would
    repaint it, NUL, DEL, C1) and bidirectional overrides are shown as escapes; with
    ``one_line`` (a path, a key) newlines and tabs too."""
    keep = "" if one_line else "\n\t"
    return "".join(ch if ch in keep or not _unprintable(ch) else
                   (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
                   for ch in text)


def _unprintable(ch: str) -> bool:
    o = ord(ch)
    return o < 0x20 or 0x7F <= o < 0xA0 or 0x202A <= o <= 0x202E or 0x2066 <= o <= 0x2069 \
        or o in (0x200E, 0x200F, 0x061C)


def human(n: float, unit: str = "") -> str:
    """7978856 -> '7.98M'; 2834161664 -> '2.83G' (SI prefixes, 3 significant digits)."""
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K"), (1, "")):
        if abs(n) >= factor:
            x = n / factor
            digits = 0 if abs(x) >= 100 else 1 if abs(x) >= 10 else 2
            return f"{x:.{digits}f}{prefix}{unit}"
    return f"{n:g}{unit}"


def setting(value) -> str:
    """A spec setting as written: ``32``, ``0.5``, or per block ``12, 24, 36``."""
    if isinstance(value, (tuple, list)):
        return ", ".join(setting(v) for v in value)
    if value is None:
        return "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def variant(plan: Plan) -> str:
    """The paper's name for the kind of net: DenseNet, DenseNet-B, -C or -BC."""
    bottleneck = any(b.bn_size for b in plan.blocks)
    compressed = any(s.compression < 1 for s in plan.stages if s.kind == "transition")
    return "DenseNet-" + ("B" if bottleneck else "") + ("C" if compressed else "") \
        if bottleneck or compressed else "DenseNet"


def _size(c: int, hw: Sequence[int]) -> str:
    return "x".join(map(str, (c, *hw)))


def shape_names(plan: Plan) -> str:
    """The axes of a feature map, as the reports head their size column: CxL, CxHxW or
    CxDxHxW."""
    return "x".join(("C", *AXES[plan.dims]))


def _written(plan: Plan, key: str) -> str:
    """A setting as the spec writes it, on one line: ``batch``, ``{type: leaky_relu,
    negative_slope: 0.2}``; group norm with its groups, as before arguments existed."""
    value = plan.spec.model_dump(mode="json")[key]
    if key == "norm":
        extra = {k: v for k, v in value.items() if k not in ("type", "groups")}
        name = value["type"] + (f" ({value['groups']} groups)" if value["type"] == "group"
                                else "")
        return name + ("" if not extra else " " + ", ".join(f"{k}={v}"
                                                             for k, v in extra.items()))
    if isinstance(value, str):
        return value
    return value["type"] + " " + ", ".join(f"{k}={v}" for k, v in value.items()
                                           if k != "type")


def _split(shape: Sequence[int]) -> tuple[int, tuple[int, ...]]:
    return shape[0], tuple(shape[1:])


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]], fmt: str = "table",
                 align: str | None = None) -> str:
    """A plain-text table (aligned columns) or a GitHub markdown table.

    ``align`` has one letter per column, ``l`` or ``r`` (default: first left, rest right).
    """
    align = align or "l" + "r" * (len(header) - 1)
    if fmt == "markdown":
        sep = ["---:" if a == "r" else "---" for a in align]
        lines = [header, sep, *rows]
        return "\n".join("| " + " | ".join(str(c) for c in line) + " |" for line in lines)
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells):
        return "  ".join(str(c).rjust(w) if a == "r" else str(c).ljust(w)
                         for c, w, a in zip(cells, widths, align)).rstrip()
    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def summary_rows(plan: Plan, *, layers: bool = False) -> list[list[str]]:
    """One row per stage (and per dense layer with ``layers``), then the totals row."""
    rows = []
    for s in plan.stages:
        rows.append([s.name, _size(s.out_channels, s.out_size), f"{s.params:,}",
                     f"{s.macs:,}", f"{s.activations:,}"])
        if layers:
            for lp in s.layers:
                rows.append([f"  {lp.name}", f"{_size(lp.out_channels, s.out_size)} "
                                              f"(+{lp.growth_rate})", f"{lp.params:,}",
                             f"{lp.macs:,}", f"{lp.growth_rate * math.prod(s.out_size):,}"])
    rows.append(["total", "", f"{plan.params:,}", f"{plan.macs:,}", f"{plan.activations:,}"])
    return rows


SUMMARY_HEADER = ["stage", "output CxHxW", "params", "MACs", "activations (elements)"]


def _training_memory_line(plan: Plan, batch: int) -> str:
    mem = plan.training_memory(batch)
    level = plan.spec.memory_efficient
    mode = "" if level is False else f", memory_efficient: {'max' if level == 'max' else 'true'}"
    return (f"training memory at batch {batch}: about {mem:,} bytes ({human(mem, 'B')}) of "
            f"activations kept for backward (float32{mode}; weights and gradients not "
            "included)")


def _heading(plan: Plan) -> str:
    """The summary's first line: the member's own terms (DenseNet: variant, L, k, blocks;
    VoVNet: depth, stages, layers per block, its V2 options)."""
    where = (f"input {_size(*_split(plan.input_shape))}"
             + (f" ({plan.dims}D)" if plan.dims != 2 else ""))
    if plan.family == "vovnet":
        spec = plan.spec
        options = [o for o, on in (("residual", spec.residual), ("depthwise", spec.depthwise),
                                   ("eSE", spec.attention.value == "ese")) if on]
        return (f"{plan.name}: VoVNet-{plan.depth}" + (f" ({', '.join(options)})"
                                                       if options else "")
                + f", blocks per stage {[st.blocks for st in spec.stages]}, "
                f"{spec.layers_per_block} layers per block, {where}")
    if plan.family == "peleenet":
        spec = plan.spec
        return (f"{plan.name}: PeleeNet, stem block {spec.stem_channels}, "
                f"k={setting(spec.growth_rate)}, dense layers {list(spec.block_config)}, "
                f"bottleneck widths {setting(spec.bottleneck_width)}, {where}")
    if plan.family == "hardnet":
        spec = plan.spec
        return (f"{plan.name}: HarDNet-{plan.depth}" + ("DS" if spec.depthwise else "")
                + f", m={spec.grmul:g}, k {[b.growth_rate for b in spec.blocks]}, "
                f"layers per block {[b.layers for b in spec.blocks]}, {where}")
    k = setting(plan.growth_rate)
    k = f"[{k}]" if isinstance(plan.growth_rate, tuple) else k
    return (f"{plan.name}: {variant(plan)}, L={plan.depth}, k={k}, "
            f"blocks {list(plan.block_config)}, {where}")


def summary_text(plan: Plan, *, fmt: str = "table", layers: bool = False,
                 content_hash: str | None = None, batch: int | None = None) -> str:
    """The summary people read: a heading line, the stage table, the totals in words."""
    head = _heading(plan)
    header = [SUMMARY_HEADER[0], f"output {shape_names(plan)}", *SUMMARY_HEADER[2:]]
    table = render_table(header, summary_rows(plan, layers=layers), fmt)
    tail = (f"params {plan.params:,} ({human(plan.params)}), MACs {plan.macs:,} "
            f"({human(plan.macs)}) per image, out_channels {plan.out_channels}")
    if layers and plan.family == "densenet":  # a layer's row reads two ways; say which
        tail = ("a dense layer's output is the block's concatenation after it (+ its k "
                "new channels); its activations count the k new channels only\n" + tail)
    if batch:
        tail += "\n" + _training_memory_line(plan, batch)
    if content_hash:
        tail += f"\nspec sha256 {content_hash}"
    if fmt == "markdown":
        return f"**{head}**\n\n{table}\n\n{tail}"
    return f"{head}\n\n{table}\n\n{tail}"


def plan_dict(plan: Plan, *, layers: bool = False) -> dict:
    """A plan as JSON-ready data; the keys are the contract of ``archspec summary --format
    json`` (name, params, macs, out_channels, stages; more may be added). ``family`` says
    the member; the keys between ``depth`` and ``norm`` are the member's own."""
    def plain(v):
        return list(v) if isinstance(v, tuple) else v
    spec = plan.spec
    if plan.family == "vovnet":
        own = {"stem_widths": list(spec.stem_widths),
               "stage_config": [st.model_dump(mode="json") for st in spec.stages],
               "layers_per_block": spec.layers_per_block, "residual": spec.residual,
               "depthwise": spec.depthwise, "attention": spec.attention.value,
               "drop_rate": spec.drop_rate}
    elif plan.family == "hardnet":
        own = {"stem_widths": list(spec.stem_widths), "stem_kernels": list(spec.stem_kernels),
               "downsample": spec.downsample.value, "grmul": spec.grmul,
               "block_config": [b.model_dump(mode="json") for b in spec.blocks],
               "layer_widths": [list(w) for w in plan.layer_widths],
               "depthwise": spec.depthwise, "block_dropout": spec.block_dropout,
               "drop_rate": spec.drop_rate}
    elif plan.family == "peleenet":
        own = {"stem_channels": spec.stem_channels, "growth_rate": plain(spec.growth_rate),
               "bottleneck_width": plain(spec.bottleneck_width),
               "block_config": list(spec.block_config),
               "bottlenecks": [list(b) for b in plan.bottlenecks],
               "drop_rate": spec.drop_rate}
    else:
        own = {"stem": plan.stem_type.value, "stem_channels": plan.stem_channels,
               "growth_rate": plain(plan.growth_rate), "bn_size": plain(plan.bn_size),
               "compression": plain(plan.compression),
               "block_config": list(plan.block_config), "drop_rate": plain(plan.drop_rate)}
    return {
        "name": plan.name,
        "family": plan.family,
        "params": plan.params,
        "macs": plan.macs,
        "out_channels": plan.out_channels,
        "activations": plan.activations,
        "input": list(plan.input_shape),
        "depth": plan.depth,
        **own,
        "norm": spec.norm.type.value,
        "activation": spec.activation.value,
        # the arguments as written (absent: torch's defaults); the names above stay strings
        "norm_arguments": {k: v for k, v in spec.norm.model_dump(mode="json").items()
                           if k not in ("type", "groups")},
        "activation_arguments": {k: v for k, v in spec.activation.model_dump(
            mode="python", exclude_none=True).items() if k != "type"}
        if not isinstance(spec.activation.model_dump(), str) else {},
        "num_classes": plan.num_classes,
        "feature_info": [dict(f) for f in plan.feature_info],
        "stages": [stage_dict(s, layers=layers) for s in plan.stages],
    }


def stage_dict(stage: Stage, *, layers: bool = False) -> dict:
    """One stage as JSON-ready data (the ``stages`` items of ``plan_dict``)."""
    d: dict = {
        "name": stage.name, "kind": stage.kind, "module": stage.module,
        "in_channels": stage.in_channels, "out_channels": stage.out_channels,
        "in_size": list(stage.in_size), "out_size": list(stage.out_size),
        "params": stage.params, "macs": stage.macs, "activations": stage.activations,
    }
    if stage.kind == "block":
        d.update(num_layers=len(stage.layers), growth_rate=stage.growth_rate,
                 bn_size=stage.bn_size, drop_rate=stage.drop_rate)
    if stage.kind == "transition":
        d.update(compression=stage.compression, drop_rate=stage.drop_rate)
    if layers and stage.layers:
        d["layers"] = [dict(vars(layer)) for layer in stage.layers]
    return d


def summary_data(plan: Plan, *, layers: bool = False, content_hash: str | None = None,
                 batch: int | None = None) -> dict:
    """The contract keys name, params, macs, out_channels, stages (and more); with
    ``batch``, ``training_memory``: {batch, bytes, memory_efficient}."""
    data = plan_dict(plan, layers=layers)
    if batch:
        data["training_memory"] = {"batch": batch, "bytes": plan.training_memory(batch),
                                   "dtype": "float32",
                                   "memory_efficient": plan.spec.memory_efficient}
    if content_hash:
        data["sha256"] = content_hash
    return data


def summary_json(plan: Plan, *, layers: bool = False, content_hash: str | None = None,
                 batch: int | None = None) -> str:
    """``summary_data`` as indented JSON text."""
    return json.dumps(summary_data(plan, layers=layers, content_hash=content_hash,
                                   batch=batch), indent=2)


# --- the paper's architecture table (Table 1 layout) ------------------------------------

def _times(n: int) -> str:
    return f"× {n}"


def _k(n: int, dims: int) -> str:
    """A kernel's size as the paper writes it, in the net's dimensions: 3×3, 3×3×3, 3."""
    return "×".join([str(n)] * dims)


def _block_cell(s: Stage, dims: int = 2) -> str:
    convs = (f"{_k(1, dims)} conv, {_k(3, dims)} conv" if s.layers[0].bottleneck_channels
             else f"{_k(3, dims)} conv")
    return f"[{convs}] {_times(len(s.layers))}"


def _same(values: Iterable[str]) -> str:
    vals = list(dict.fromkeys(values))
    return vals[0] if len(vals) == 1 else " / ".join(vals)


def paper_table(plans: Sequence[Plan]) -> str:
    """Markdown table in the layout of the member's paper's Table 1 (DenseNet: Layers |
    Output Size | one column per spec; VoVNet: Stage | Output | ...). Plans with different
    numbers of blocks or stages fill with '–'. ValueError for plans of two members: their
    papers' tables have different rows."""
    families = list(dict.fromkeys(p.family for p in plans))
    if len(families) > 1:
        raise ValueError(f"one family per table: these specs are {' and '.join(families)} "
                         "networks, whose papers' tables have different rows")
    if families == ["vovnet"]:
        return _vovnet_table(plans)
    if families == ["hardnet"]:
        return _hardnet_table(plans)
    if families == ["peleenet"]:
        return _peleenet_table(plans)
    n_blocks = max(len(p.block_config) for p in plans)
    rows: list[list[str]] = []

    def xy(hw) -> str:
        return " × ".join(map(str, hw))

    def row(label: str, size_of, cell_of) -> None:
        sizes, cells = [], []
        for p in plans:
            got = cell_of(p)
            cells.append(got if got is not None else "–")
            if got is not None and size_of(p):
                sizes.append(size_of(p))
        rows.append([label, _same(sizes) if sizes else "", *cells])

    def stem_conv(p: Plan) -> str:
        if p.stem_type == StemType.imagenet:
            return f"{_k(7, p.dims)} conv, stride 2"
        k3 = _k(3, p.dims)
        if p.stem_type == StemType.cifar:
            return f"{k3} conv"
        return f"[{k3} conv, stride 2; {k3} conv; {k3} conv]"

    def stem_pool(p: Plan) -> str | None:
        if p.stem_type == StemType.cifar:
            return None
        return "3×3 max pool, blur pool stride 2" if p.stages[0].blur \
            else f"{_k(3, p.dims)} max pool, stride 2"

    row("Convolution", lambda p: xy(p.stem_conv_size), stem_conv)
    row("Pooling", lambda p: xy(p.stages[0].out_size), stem_pool)
    for i in range(1, n_blocks + 1):
        def block(p: Plan, i=i):
            return p.stage(f"denseblock{i}") if i <= len(p.block_config) else None
        row(f"Dense Block ({i})", lambda p, b=block: xy(b(p).out_size) if b(p) else "",
            lambda p, b=block: _block_cell(b(p), p.dims) if b(p) else None)
        if i < n_blocks:
            def trans(p: Plan, i=i):
                return p.stage(f"transition{i}") if i < len(p.block_config) else None
            row(f"Transition Layer ({i})", lambda p, t=trans: xy(t(p).in_size) if t(p) else "",
                lambda p, t=trans: f"{_k(1, p.dims)} conv" if t(p) else None)
            rows.append(["", _same(xy(trans(p).out_size) for p in plans if trans(p)),
                         *[("blur pool, stride 2" if trans(p).blur else
                            f"{_k(2, p.dims)} average pool, stride 2") if trans(p) else "–"
                           for p in plans]])
    row("Classification Layer", lambda p: xy(p.stages[-1].out_size),
        lambda p: f"{xy(p.stages[-2].out_size)} global average pool")
    rows.append(["", "", *[f"{p.num_classes}D fully-connected, softmax" for p in plans]])
    rows.append(["Growth rate k", "", *[setting(p.growth_rate) for p in plans]])
    rows.append(["Compression θ", "", *[setting(p.compression) for p in plans]])
    rows.append(["Depth L", "", *[str(p.depth) for p in plans]])
    rows.append(["Params", "", *[f"{human(p.params)} ({p.params:,})" for p in plans]])
    rows.append(["MACs", "", *[human(p.macs) for p in plans]])
    header = ["Layers", "Output Size", *[p.name for p in plans]]
    return render_table(header, rows, "markdown", align="l" * len(header))


def _vovnet_table(plans: Sequence[Plan]) -> str:
    """The layout of the VoVNet paper's Table 1: one row per stage, each OSA stage as
    [3×3 conv, m × L; concat & 1×1 conv, o] × blocks."""
    n_stages = max(len(p.spec.stages) for p in plans)
    rows: list[list[str]] = []

    def xy(hw) -> str:
        return " × ".join(map(str, hw))

    def stem(p: Plan) -> str:
        k3 = _k(3, p.dims)
        w0, w1, w2 = p.spec.stem_widths
        conv = f"{k3} dw+pw conv" if p.spec.depthwise else f"{k3} conv"
        return f"{k3} conv, {w0}, stride 2; {conv}, {w1}; {conv}, {w2}, stride 2"
    rows.append(["Stem", _same(xy(p.stages[0].out_size) for p in plans),
                 *[stem(p) for p in plans]])
    for i in range(1, n_stages + 1):
        def cell(p: Plan, i=i) -> str:
            if i > len(p.spec.stages):
                return "–"
            st, k3 = p.spec.stages[i - 1], _k(3, p.dims)
            conv = f"{k3} dw+pw conv" if p.spec.depthwise else f"{k3} conv"
            pool = f"{k3} max pool, stride 2; " if i > 1 else ""
            extra = "; eSE" if p.spec.attention.value == "ese" else ""
            return (f"{pool}[{conv}, {st.conv_channels} {_times(p.spec.layers_per_block)}; "
                    f"concat & {_k(1, p.dims)} conv, {st.out_channels}{extra}] "
                    f"{_times(st.blocks)}")
        sizes = [xy(p.stage(f"stage{i}").out_size) for p in plans if i <= len(p.spec.stages)]
        rows.append([f"OSA stage {i}", _same(sizes), *[cell(p) for p in plans]])
    rows.append(["Classification", "1 × 1", *[f"global average pool, {p.num_classes}D "
                                               "fully-connected, softmax" for p in plans]])
    rows.append(["Depth", "", *[str(p.depth) for p in plans]])
    rows.append(["Residual", "", *[str(p.spec.residual).lower() for p in plans]])
    rows.append(["Params", "", *[f"{human(p.params)} ({p.params:,})" for p in plans]])
    rows.append(["MACs", "", *[human(p.macs) for p in plans]])
    header = ["Stage", "Output", *[p.name for p in plans]]
    return render_table(header, rows, "markdown", align="l" * len(header))


def _hardnet_table(plans: Sequence[Plan]) -> str:
    """The layout of the HarDNet paper's Table 1: the stem, then one row per harmonic
    dense block with its k, m and n, the 1x1 conv after it and its downsampling."""
    n_blocks = max(len(p.spec.blocks) for p in plans)
    rows: list[list[str]] = []

    def xy(hw) -> str:
        return " × ".join(map(str, hw))

    def down(p: Plan, where: str) -> str:
        k = _k(3 if where == "stem" or p.spec.downsample.value == "depthwise" else 2, p.dims)
        return (f"{k} dw conv, stride 2" if p.spec.downsample.value == "depthwise"
                else f"{k} max pool, stride 2")

    def stem(p: Plan) -> str:
        (w0, w1), (k0, k1) = p.spec.stem_widths, p.spec.stem_kernels
        return (f"{_k(k0, p.dims)} conv, {w0}, stride 2; {_k(k1, p.dims)} conv, {w1}; "
                f"{down(p, 'stem')}")
    rows.append(["Stem", _same(xy(p.stages[0].out_size) for p in plans),
                 *[stem(p) for p in plans]])
    for i in range(1, n_blocks + 1):
        def cell(p: Plan, i=i) -> str:
            if i > len(p.spec.blocks):
                return "–"
            b = p.spec.blocks[i - 1]
            layer = (f"{_k(1, p.dims)} conv + {_k(3, p.dims)} dw conv" if p.spec.depthwise
                     else f"{_k(3, p.dims)} conv")
            return (f"HarDBlock k={b.growth_rate}, m={p.spec.grmul:g}, n={b.layers} "
                    f"[{layer}]; {_k(1, p.dims)} conv, {b.out_channels}"
                    + (f"; {down(p, 'block')}" if b.downsample else ""))
        sizes = [xy(p.stage(f"hardblock{i}").out_size) for p in plans
                 if i <= len(p.spec.blocks)]
        rows.append([f"HarDBlock {i}", _same(sizes), *[cell(p) for p in plans]])
    rows.append(["Classification", "1 × 1", *[f"global average pool, {p.num_classes}D "
                                               "fully-connected, softmax" for p in plans]])
    rows.append(["Depth", "", *[str(p.depth) + ("DS" if p.spec.depthwise else "")
                                for p in plans]])
    rows.append(["Params", "", *[f"{human(p.params)} ({p.params:,})" for p in plans]])
    rows.append(["MACs", "", *[human(p.macs) for p in plans]])
    header = ["Stage", "Output", *[p.name for p in plans]]
    return render_table(header, rows, "markdown", align="l" * len(header))


def _peleenet_table(plans: Sequence[Plan]) -> str:
    """The layout of the PeleeNet paper's Table 1: the stem block, then per stage its
    dense layers (two branches) and its transition."""
    n_blocks = max(len(p.spec.block_config) for p in plans)
    rows: list[list[str]] = []

    def xy(hw) -> str:
        return " × ".join(map(str, hw))

    def stem(p: Plan) -> str:
        return f"Stem Block, {p.spec.stem_channels}"
    rows.append(["Stage 0", _same(xy(p.stages[0].out_size) for p in plans),
                 *[stem(p) for p in plans]])
    for i in range(1, n_blocks + 1):
        def cell(p: Plan, i=i) -> str:
            if i > len(p.spec.block_config):
                return "–"
            k, k1, k3 = p.growth_rates[i - 1], _k(1, p.dims), _k(3, p.dims)
            width = setting(p.spec.bottleneck_width if not isinstance(
                p.spec.bottleneck_width, list) else p.spec.bottleneck_width[i - 1])
            last = i == len(p.spec.block_config)
            transition = f"{k1} conv, {p.stage(f'transition{i}').out_channels}" + (
                "" if last else f"; {_k(2, p.dims)} average pool, stride 2")
            return (f"DenseLayer [{k1} conv, {k3} conv; {k1} conv, {k3} conv, {k3} conv] "
                    f"{_times(p.spec.block_config[i - 1])} (k={k}, bottleneck width {width}); "
                    f"Transition Layer [{transition}]")
        sizes = [xy(p.stage(f"denseblock{i}").out_size) for p in plans
                 if i <= len(p.spec.block_config)]
        rows.append([f"Stage {i}", _same(sizes), *[cell(p) for p in plans]])
    rows.append(["Classification", "1 × 1", *[f"global average pool, {p.num_classes}D "
                                               "fully-connected, softmax" for p in plans]])
    rows.append(["Params", "", *[f"{human(p.params)} ({p.params:,})" for p in plans]])
    rows.append(["MACs", "", *[human(p.macs) for p in plans]])
    header = ["Stage", "Output", *[p.name for p in plans]]
    return render_table(header, rows, "markdown", align="l" * len(header))


# --- diff ----------------------------------------------------------------------------------

def _stage_cells(s: Stage | None) -> tuple[str, str]:
    if s is None:
        return "–", "–"
    return _size(s.out_channels, s.out_size), f"{s.params:,}"


def _stage_names(a: Plan, b: Plan) -> list[str]:
    """The stages of both plans in network order (stem, denseblock1, transition1, ...,
    head), so a stage only one side has sits where it runs, not after the head."""
    kinds = {"block": 0, "transition": 1}

    def order(s: Stage) -> tuple:
        if s.kind == "stem":
            return (0, 0)
        if s.kind == "head":
            return (2, 0)
        return (1, int(s.name.lstrip("abcdefghijklmnopqrstuvwxyz")), kinds.get(s.kind, 2))
    stages = {s.name: s for s in (*a.stages, *b.stages)}
    return sorted(stages, key=lambda n: order(stages[n]))


def diff_rows(a: Plan, b: Plan) -> list[list[str]]:
    """Stage by stage (matched by name), every stage where channels, size or params differ."""
    names = _stage_names(a, b)
    by_a, by_b = {s.name: s for s in a.stages}, {s.name: s for s in b.stages}
    rows = []
    for n in names:
        sa, sb = by_a.get(n), by_b.get(n)
        ca, cb = _stage_cells(sa), _stage_cells(sb)
        layers_a = len(sa.layers) if sa and sa.layers else None
        layers_b = len(sb.layers) if sb and sb.layers else None
        if ca == cb and layers_a == layers_b:
            continue
        delta = (sb.params if sb else 0) - (sa.params if sa else 0)
        la = f" ({layers_a} layers)" if layers_a is not None else ""
        lb = f" ({layers_b} layers)" if layers_b is not None else ""
        rows.append([n, ca[0] + la, cb[0] + lb, ca[1], cb[1], f"{delta:+,}"])
    return rows


def _diff_settings(a: Plan, b: Plan) -> list[tuple[str, object, object]]:
    """(setting, A's, B's) for every setting either member has ('–' where one lacks it)."""
    sa, sb = _settings(a), _settings(b)
    keys = list(dict.fromkeys([*sa, *sb]))
    return [(k, sa.get(k, "–"), sb.get(k, "–")) for k in keys]


def _settings(p: Plan) -> dict[str, object]:
    """A plan's settings as diff shows them, in the member's spec order."""
    if p.family == "vovnet":
        spec = p.spec
        return {"family": p.family, "stem_widths": list(spec.stem_widths),
                "conv_channels": [st.conv_channels for st in spec.stages],
                "out_channels": [st.out_channels for st in spec.stages],
                "blocks": [st.blocks for st in spec.stages],
                "layers_per_block": spec.layers_per_block,
                "residual": str(spec.residual).lower(),
                "depthwise": str(spec.depthwise).lower(), "attention": spec.attention.value,
                "drop_rate": setting(spec.drop_rate),
                "input": "x".join(map(str, p.input_shape)), "num_classes": p.num_classes,
                "norm": _written(p, "norm"), "activation": _written(p, "activation")}
    if p.family == "peleenet":
        spec = p.spec
        return {"family": p.family, "stem_channels": spec.stem_channels,
                "growth_rate": setting(spec.growth_rate),
                "bottleneck_width": setting(spec.bottleneck_width),
                "block_config": list(spec.block_config), "drop_rate": setting(spec.drop_rate),
                "input": "x".join(map(str, p.input_shape)), "num_classes": p.num_classes,
                "norm": _written(p, "norm"), "activation": _written(p, "activation")}
    if p.family == "hardnet":
        spec = p.spec
        return {"family": p.family, "stem_widths": list(spec.stem_widths),
                "stem_kernels": list(spec.stem_kernels), "downsample": spec.downsample.value,
                "grmul": spec.grmul, "growth_rate": [b.growth_rate for b in spec.blocks],
                "layers": [b.layers for b in spec.blocks],
                "out_channels": [b.out_channels for b in spec.blocks],
                "downsample_after": [b.downsample for b in spec.blocks],
                "depthwise": str(spec.depthwise).lower(),
                "block_dropout": setting(spec.block_dropout),
                "drop_rate": setting(spec.drop_rate),
                "input": "x".join(map(str, p.input_shape)), "num_classes": p.num_classes,
                "norm": _written(p, "norm"), "activation": _written(p, "activation")}
    return {"family": p.family, **dict((k, v) for k, v, _ in _densenet_settings(p, p))}


def _densenet_settings(a: Plan, b: Plan) -> list[tuple[str, object, object]]:
    return [("growth_rate", setting(a.growth_rate), setting(b.growth_rate)),
              ("bn_size", setting(a.bn_size), setting(b.bn_size)),
              ("compression", setting(a.compression), setting(b.compression)),
              ("drop_rate", setting(a.drop_rate), setting(b.drop_rate)),
              ("block_config", list(a.block_config), list(b.block_config)),
              ("stem", f"{a.stem_type.value} {a.stem_channels}",
               f"{b.stem_type.value} {b.stem_channels}"),
              ("input", "x".join(map(str, a.input_shape)), "x".join(map(str, b.input_shape))),
              ("num_classes", a.num_classes, b.num_classes),
              ("norm", _written(a, "norm"), _written(b, "norm")),
              ("activation", _written(a, "activation"), _written(b, "activation")),
              ("anti_alias", _aa(a), _aa(b))]


def diff_text(a: Plan, b: Plan, fmt: str = "table") -> str:
    """What differs between two plans, stage by stage, then the totals."""
    rows = diff_rows(a, b)
    lines = [f"{a.name} -> {b.name}"]
    changed = [f"  {k}: {x} -> {y}" for k, x, y in _diff_settings(a, b) if x != y]
    lines += changed or ["  no settings differ"]
    if rows:
        lines += ["", render_table(["stage", "A CxHxW", "B CxHxW", "A params", "B params",
                                    "Δ params"], rows, fmt)]
    else:
        lines += ["", "every stage has the same channels, size and params"]
    lines += ["", f"params {a.params:,} -> {b.params:,} ({b.params - a.params:+,}); "
                  f"MACs {human(a.macs)} -> {human(b.macs)}"]
    return "\n".join(lines)


def diff_json(a: Plan, b: Plan) -> str:
    """The diff for tools: ``{"a", "b", "settings": {key: [a, b]}, "stages": [{"name",
    "a", "b", "params_delta"}], "params": [a, b], "macs": [a, b]}``; a stage missing on one
    side is null there. Only what differs is listed, as in the text form."""
    by_a, by_b = {s.name: s for s in a.stages}, {s.name: s for s in b.stages}
    names = _stage_names(a, b)

    def brief(s: Stage | None):
        if s is None:
            return None
        return {"out_channels": s.out_channels, "out_size": list(s.out_size),
                "params": s.params, "num_layers": len(s.layers) if s.layers else None}
    stages = []
    for n in names:
        sa, sb = brief(by_a.get(n)), brief(by_b.get(n))
        if sa != sb:
            stages.append({"name": n, "a": sa, "b": sb, "params_delta":
                           (sb["params"] if sb else 0) - (sa["params"] if sa else 0)})
    settings = {k: [x, y] for k, x, y in _diff_settings(a, b) if x != y}
    return json.dumps({"a": a.name, "b": b.name, "settings": settings, "stages": stages,
                       "params": [a.params, b.params], "macs": [a.macs, b.macs]}, indent=2,
                      default=str)


def _aa(p: Plan) -> str:
    aa = p.spec.anti_alias
    where = [w for w, on in (("stem", aa.stem), ("transitions", aa.transitions)) if on]
    return f"blur {aa.filter_size} in " + " and ".join(where) if where else "none"


LIST_DESCRIPTION_WIDTH = 52  # name, params, MACs and this fit 100 columns


def list_rows(plans: Sequence[Plan], *, wide: bool = False) -> list[list[str]]:
    """``archspec list``: name, params, MACs, description (shortened unless ``wide``),
    source; free text escaped for the terminal."""
    rows = []
    for p in plans:
        desc = printable(p.spec.description)
        if not wide and len(desc) > LIST_DESCRIPTION_WIDTH:
            desc = desc[:LIST_DESCRIPTION_WIDTH - 3] + "..."
        rows.append([p.name, human(p.params), human(p.macs), desc, printable(p.spec.source)])
    return rows


# --- search ----------------------------------------------------------------------------------

def _value(v) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    return "null" if v is None else setting(v) if not isinstance(v, list) else \
        "[" + ",".join(_value(x) for x in v) + "]"


def search_text(result, *, show_invalid: bool = False) -> str:
    """``archspec search``'s table: the varied values, params, MACs, activation bytes,
    front membership; then what was evaluated."""
    keys = list(result.candidates[0].overrides) if result.candidates else []
    rows = [[*(_value(c.overrides[k]) for k in keys), f"{c.params:,}", human(c.macs),
             human(c.activations, "B"), "*" if c.pareto else ""]
            for c in result.candidates]
    header = [*keys, "params", "MACs", f"activations (batch {result.batch})", "front"]
    lines = [render_table(header, rows, align="r" * (len(header) - 1) + "l")
             if rows else "no candidate meets the constraints"]
    front = sum(c.pareto for c in result.candidates)
    shown = f", {len(rows)} shown" if len(rows) < result.matched else ""
    axes = ", ".join(f"{m} {'largest' if d == 'max' else 'smallest'}"
                     for m, d in result.objectives)
    lines += ["", f"{result.base}: evaluated {result.evaluated:,}, valid {result.valid:,}, "
                  f"invalid {result.invalid:,}; {result.matched:,} meet the constraints"
                  f"{shown}; * = Pareto front ({axes}), {front} shown"]
    if show_invalid and result.rejected:
        lines += ["", "invalid combinations:"]
        lines += [f"  {' '.join(f'{k}={_value(v)}' for k, v in r.overrides.items())}: "
                  f"{printable(r.reason)}" for r in result.rejected]
    return "\n".join(lines)


def search_csv(result) -> str:
    """One row per candidate: the varied keys, params, macs, activations, pareto."""
    import csv
    import io

    keys = list(result.candidates[0].overrides) if result.candidates else []
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*keys, "params", "macs", "activations", "pareto"])
    for c in result.candidates:
        w.writerow([*(_value(c.overrides[k]) for k in keys), c.params, c.macs,
                    c.activations, str(c.pareto).lower()])
    return buf.getvalue().rstrip("\n")
