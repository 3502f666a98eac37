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

__all__ = ["channel_trace", "plot_channels"]


def channel_trace(plan: Plan) -> tuple[list[int], list[int]]:
    """(channels after the stem, each dense layer and each transition; indices of the
    transitions in that list)."""
    channels, transitions = [plan.stages[0].out_channels], []
    for stage in plan.stages[1:-1]:
        if stage.kind == "block":
            channels += [lp.out_channels for lp in stage.layers]
        else:
            transitions.append(len(channels))
            channels.append(stage.out_channels)
    return channels, transitions


def plot_channels(plans: Sequence[Plan], path: str | os.PathLike, *, force: bool = False,
                  inputs: Sequence[str] = ()):
    """Draw every plan's channel trace into ``path`` (.png, .svg or .pdf), atomically."""
    try:
        import matplotlib
    except ImportError:
        from .files import OutputError

        raise OutputError("plot needs matplotlib: pip install 'archspec[plot]'") from None
    matplotlib.use("Agg")  # no display needed, and none is touched
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.8), dpi=120)
    for p in plans:
        ys, marks = channel_trace(p)
        (line,) = ax.plot(range(len(ys)), ys, label=f"{p.name} (k={setting(p.growth_rate)})",
                          linewidth=1.6)
        ax.plot(marks, [ys[i] for i in marks], linestyle="none", marker="v",
                color=line.get_color(), markersize=7)
        for i in marks:
            ax.axvline(i, color=line.get_color(), alpha=0.18, linestyle="--", linewidth=1)
    ax.set_xlabel("layer (stem, dense layers, transitions ▼ in network order)")
    ax.set_ylabel("channels")
    ax.set_title("Channels after every layer")
    ax.grid(alpha=0.25)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fmt = os.fspath(path).rsplit(".", 1)[-1].lower()
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt)
    plt.close(fig)
    return write_atomic(path, lambda fh: fh.write(buf.getvalue()), force=force, inputs=inputs)
