"""``archspec plot``: channels after every layer across the network, one line per spec.

The picture people draw by hand when they explain DenseNet: the channel count climbs by k
at every dense layer and drops at every transition (marked). Reads the plan only.
"""

from __future__ import annotations

import io
import os
from typing import Sequence

from .files import write_atomic
from .plan import Plan
from .report import setting

__all__ = ["channel_trace", "plot_channels", "plot_links", "plot_search"]


def channel_trace(plan: Plan) -> tuple[list[int], list[int]]:
    """(channels after the stem, each dense layer and each transition; indices of the
    transitions in that list). A VoVNet's: after each stem conv, and in each OSA block
    after each 3x3 conv, the concatenation and the 1x1 aggregation; the marks are where a
    stage's max pool halves the size."""
    if plan.family == "vovnet":
        spec = plan.spec
        channels, pools = list(spec.stem_widths), []
        widths = iter(plan.block_widths)
        for i, st in enumerate(spec.stages):
            if i > 0:
                pools.append(len(channels))
            for _ in range(st.blocks):
                _, concat = next(widths)
                channels += [st.conv_channels] * spec.layers_per_block
                channels += [concat, st.out_channels]
        return channels, pools
    channels, transitions = [plan.stages[0].out_channels], []
    for stage in plan.stages[1:-1]:
        if stage.kind == "block":
            channels += [lp.out_channels for lp in stage.layers]
        else:
            transitions.append(len(channels))
            channels.append(stage.out_channels)
    return channels, transitions


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        from .files import OutputError

        raise OutputError("plotting needs matplotlib: pip install 'archspec[plot]'") from None
    matplotlib.use("Agg")  # no display needed, and none is touched
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike, force: bool, inputs: Sequence[str] = ()):
    fmt = os.fspath(path).rsplit(".", 1)[-1].lower()
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return write_atomic(path, lambda fh: fh.write(buf.getvalue()), force=force, inputs=inputs)


def plot_channels(plans: Sequence[Plan], path: str | os.PathLike, *, force: bool = False,
                  inputs: Sequence[str] = ()):
    """Draw every plan's channel trace into ``path`` (.png, .svg or .pdf), atomically."""
    plt = _pyplot()

    fig, ax = plt.subplots(figsize=(9, 4.8), dpi=120)
    for p in plans:
        ys, marks = channel_trace(p)
        what = f"k={setting(p.growth_rate)}" if p.family == "densenet" else \
            f"VoVNet-{p.depth}"
        (line,) = ax.plot(range(len(ys)), ys, label=f"{p.name} ({what})", linewidth=1.6)
        ax.plot(marks, [ys[i] for i in marks], linestyle="none", marker="v",
                color=line.get_color(), markersize=7)
        for i in marks:
            ax.axvline(i, color=line.get_color(), alpha=0.18, linestyle="--", linewidth=1)
    ax.set_xlabel("layer (stem, dense layers, transitions ▼ in network order)"
                  if all(p.family == "densenet" for p in plans) else
                  "layer in network order (▼ a transition or a stage's pool)")
    ax.set_ylabel("channels")
    ax.set_title("Channels after every layer")
    ax.grid(alpha=0.25)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return _save(fig, path, force, inputs)


def plot_links(plans: Sequence[Plan], path: str | os.PathLike, *, stage: str | None = None,
               force: bool = False, inputs: Sequence[str] = ()):
    """Draw each plan's block connectivity (``Plan.links``: which outputs each layer
    reads, and what the block emits) side by side into ``path``, atomically: one row per
    layer and one for the block's output, one column per source (the block input, then
    each layer's output), a filled cell where the row reads the column."""
    plt = _pyplot()
    found = [p.links(stage) for p in plans]
    width = sum(max(3.0, 0.35 * len(f.sources) + 1.5) for f in found)
    fig, axes = plt.subplots(1, len(found), figsize=(min(width, 30), 5.2), dpi=120,
                             squeeze=False)
    for ax, p, f in zip(axes[0], plans, found):
        ax.imshow([[1.0 if on else 0.0 for on in row] for row in f.reads], cmap="Greys",
                  vmin=0, vmax=1.25, aspect="equal")
        n = len(f.sources)
        step = max(1, n // 16)  # a label every few layers in a long block
        ax.set_xticks(range(0, n, step), [f.sources[i] for i in range(0, n, step)],
                      rotation=90, fontsize=7)
        ax.set_yticks(range(0, len(f.readers), step) if len(f.readers) > 1 else [0],
                      [f.readers[i] for i in range(0, len(f.readers), step)], fontsize=7)
        ax.set_xlabel("reads the output of")
        ax.set_title(f"{p.name}: {f.stage}", fontsize=9)
        ax.axhline(len(f.readers) - 1.5, color="tab:red", linewidth=1)
    fig.suptitle("Which outputs each layer reads (last row: what the block emits)",
                 fontsize=10)
    fig.tight_layout()
    return _save(fig, path, force, inputs)


def plot_search(result, path: str | os.PathLike, *, force: bool = False):
    """A search's candidates as parameters against MACs: the Pareto front highlighted and
    joined, the base spec and the zoo's nets of the same input size marked and named."""
    from . import zoo
    from .loader import load
    from .plan import plan as make_plan
    from .report import human

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.2), dpi=120)
    rest = [c for c in result.matches if not c.pareto]
    front = sorted((c for c in result.matches if c.pareto), key=lambda c: c.macs)
    ax.scatter([c.macs for c in rest], [c.params for c in rest], s=14, alpha=0.45,
               color="tab:blue", label=f"within the limits ({result.matched})")
    ax.plot([c.macs for c in front], [c.params for c in front], marker="o", markersize=5,
            color="tab:red", linewidth=1.4, label=f"Pareto front ({len(front)})")
    base = result.base_plan
    ax.scatter([base.macs], [base.params], marker="*", s=180, color="black", zorder=5,
               label=f"base: {result.base}")
    same_input = [p for p in (make_plan(load(n)) for n in zoo.names())
                  if p.input_shape == base.input_shape and p.name != base.name]
    if same_input:
        ax.scatter([p.macs for p in same_input], [p.params for p in same_input], marker="s",
                   s=36, facecolors="none", edgecolors="tab:green", zorder=4,
                   label="zoo, same input")
        for p in same_input:
            ax.annotate(p.name, (p.macs, p.params), fontsize=7, xytext=(4, 3),
                        textcoords="offset points", color="tab:green")
    ax.set_xlabel("MACs per image")
    ax.set_ylabel("parameters")
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: human(v)))
    ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: human(v)))
    shape = "x".join(map(str, base.input_shape))
    ax.set_title(f"search over {result.base} at {shape}: {result.matched:,} of "
                 f"{result.evaluated:,} fit")
    ax.grid(alpha=0.25)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return _save(fig, path, force)
