"""Whether a forward runs eagerly or is being captured as a graph: one predicate.

The memory levels, the inference block's shared buffer and the CUDA-graph replay are
eager tricks. A graph capture (TorchScript's scripting or tracing, FX symbolic tracing,
torch.export, torch.compile) must see the model's plain function instead, or under
torch.compile a form dynamo traces through. Each of those places asks ``capturing()`` and
decides from its one answer, so no two of them can disagree about what "a graph" is.
"""

from __future__ import annotations

from typing import Optional

import torch

__all__ = ["capturing"]


def capturing() -> Optional[str]:
    """``"script"``, ``"trace"``, ``"fx"``, ``"export"`` or ``"compile"`` while this code
    is being captured that way, None when it runs eagerly. torch.export runs dynamo, so
    an export is named as such before compilation is."""
    if torch.jit.is_scripting():
        return "script"
    if torch.jit.is_tracing():
        return "trace"
    if _fx_symbolic_tracing():
        return "fx"
    if _exporting():
        return "export"
    if torch.compiler.is_compiling():
        return "compile"
    return None


def _fx_symbolic_tracing() -> bool:
    from torch.fx import _symbolic_trace as fx

    # torch >= 2.8 names the symbolic-tracing check apart from export's
    return getattr(fx, "is_fx_symbolic_tracing", fx.is_fx_tracing)()


def _exporting() -> bool:
    is_exporting = getattr(torch.compiler, "is_exporting", None)  # torch >= 2.7
    return bool(is_exporting and is_exporting())
