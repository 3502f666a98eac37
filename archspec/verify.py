"""Check a built model against its plan: parameter count and every stage's output shape.

Forward hooks on each stage's module (``Stage.module``) record what the model really
produces; the result lists every disagreement with both figures. Used by the tests, by
``archspec summary --verify`` and by ``archspec verify``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .plan import Plan

__all__ = ["StageCheck", "CheckResult", "check_model"]


@dataclass
class StageCheck:
    """Planned and observed output shape (C, H, W) of one stage; head is (classes, 1, 1)."""

    name: str
    planned: tuple[int, ...]
    observed: tuple[int, ...] | None

    @property
    def ok(self) -> bool:
        return self.planned == self.observed


@dataclass
class CheckResult:
    """Everything ``check_model`` measured; ``ok`` is True when nothing disagrees."""

    name: str
    device: str
    dtype: str
    batch: int
    planned_params: int
    observed_params: int
    stages: list[StageCheck] = field(default_factory=list)
    forward_s: float = 0.0
    backward_s: float = 0.0
    output_finite: bool = True
    error: str | None = None

    @property
    def mismatches(self) -> list[str]:
        out = []
        if self.error:
            out.append(self.error)
        if self.planned_params != self.observed_params:
            out.append(f"params: plan {self.planned_params:,}, model {self.observed_params:,}")
        for s in self.stages:
            if not s.ok:
                out.append(f"{s.name}: plan {_shape(s.planned)}, model {_shape(s.observed)}")
        if not self.output_finite:
            out.append("output has NaN or inf")
        return out

    @property
    def ok(self) -> bool:
        return not self.mismatches


def _shape(s: tuple[int, ...] | None) -> str:
    return "x".join(map(str, s)) if s else "not reached"


def check_model(plan: Plan, model: nn.Module, *, batch: int = 2, device: Any = None,
                dtype: torch.dtype | None = None, backward: bool = True,
                input_size: tuple[int, int] | None = None) -> CheckResult:
    """Run ``model`` on a random batch and compare it with ``plan``.

    The input is ``plan.input_shape`` (or ``input_size`` H, W if given, in which case the
    plan must have been made for that size). With ``backward`` a loss is back-propagated
    too, so gradient-checkpointed paths are exercised.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    dtype = dtype or next(model.parameters()).dtype
    c, h, w = plan.input_shape
    if input_size:
        h, w = input_size
    observed: dict[str, tuple[int, ...]] = {}
    handles = []
    modules = dict(model.named_modules())
    for stage in plan.stages:
        mod = modules.get(stage.module)
        if mod is None:
            continue

        def hook(_m, _inp, out, name=stage.name):
            observed[name] = tuple(out.shape[1:]) if out.dim() == 4 else (out.shape[1], 1, 1)
        handles.append(mod.register_forward_hook(hook))
    result = CheckResult(plan.name, str(device), str(dtype).replace("torch.", ""), batch,
                         plan.params, sum(p.numel() for p in model.parameters()))
    try:
        x = torch.randn(batch, c, h, w, device=device, dtype=dtype)
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        t0 = time.perf_counter()
        with torch.set_grad_enabled(backward):
            out = model(x)
            sync()
            result.forward_s = time.perf_counter() - t0
            result.output_finite = bool(torch.isfinite(out).all())
            if backward:
                t0 = time.perf_counter()
                out.float().square().mean().backward()
                sync()
                result.backward_s = time.perf_counter() - t0
    except RuntimeError as e:  # e.g. out of memory: a result, not a crash
        result.error = f"{type(e).__name__}: {str(e).splitlines()[0]}"
    finally:
        for hnd in handles:
            hnd.remove()
    for stage in plan.stages:
        planned = (stage.out_channels, *stage.out_size)
        result.stages.append(StageCheck(stage.name, planned, observed.get(stage.name)))
    return result
