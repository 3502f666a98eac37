"""Rules the planner and the built modules must both follow, each written once (no torch).

The planner predicts what a model will do (its sizes, its widths, what a memory level
keeps) and the modules do it; a rule written in both places drifts. Each lives here, and
plan.py, nn.py, memory/ and introspect.py read it.
"""

from __future__ import annotations

__all__ = ["blur_padding", "deep_tiered_widths", "transition_recomputes"]


def blur_padding(filter_size: int, stride: int = 2) -> int:
    """Reflect padding on each side of a blur pool (timm's get_padding(filter, stride))."""
    return ((stride - 1) + (filter_size - 1)) // 2


def deep_tiered_widths(k: int) -> tuple[int, int]:
    """timm's 'deep_tiered' stem: its first two 3x3 convs are 3*(k//4) and 6*(k//4) wide
    (k: the first block's growth rate); the third is the stem's width."""
    return 3 * (k // 4), 6 * (k // 4)


def transition_recomputes(*, batch_norm: bool, relu: bool, average_pool: bool,
                          dropout: bool) -> bool:
    """Whether a transition stores only its input and recomputes the rest in backward
    under ``memory_efficient: max``: the paper's transition (training BatchNorm, ReLU,
    2x2 average pool, no dropout) does; any other takes the plain path. The planner's
    memory estimate and archspec.memory.transition both ask this."""
    return batch_norm and relu and average_pool and not dropout
