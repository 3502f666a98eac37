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

__all__ = ["StageCheck", "CheckResult", "check_model", "TorchinfoCheck", "torchinfo_check",
           "verify_all", "DeviceError"]


class DeviceError(RuntimeError):
    """The requested device does not exist or is not available here."""


def parse_dtype(name: str | None) -> torch.dtype | None:
    """torch dtype for a name such as ``bfloat16`` (None stays None)."""
    return None if name is None else getattr(torch, name)


def parse_device(device: Any) -> torch.device:
    """torch.device for ``device``, or DeviceError saying why it cannot be used."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise DeviceError(f"unknown device {device!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError("CUDA is not available on this machine")
    if dev.type == "meta":  # shapes only: nothing to initialise, check or save
        raise DeviceError(f"device {device!r} holds no data (a meta tensor has shapes "
                          "only); use cpu or cuda")
    return dev


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
                input_size: tuple[int, ...] | None = None, warmup: int = 1) -> CheckResult:
    """Run ``model`` on a random batch and compare it with ``plan``; the reported
    forward/backward times are warm (after ``warmup`` untimed calls).

    The input is ``plan.input_shape`` (or ``input_size``, its spatial sizes, if given,
    in which case the plan must have been made for that size). With ``backward`` a loss is back-propagated
    too, so gradient-checkpointed paths are exercised.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    dtype = dtype or next(model.parameters()).dtype
    c, *spatial = plan.input_shape
    if input_size:
        spatial = list(input_size)
    dims = len(spatial)
    observed: dict[str, tuple[int, ...]] = {}
    handles = []
    modules = dict(model.named_modules())
    for stage in plan.stages:
        mod = modules.get(stage.module)
        if mod is None:
            continue

        def hook(_m, _inp, out, name=stage.name):
            observed[name] = (tuple(out.shape[1:]) if out.dim() == dims + 2
                              else (out.shape[1], *[1] * dims))
        handles.append(mod.register_forward_hook(hook))
    result = CheckResult(plan.name, str(device), str(dtype).replace("torch.", ""), batch,
                         plan.params, sum(p.numel() for p in model.parameters()))
    try:
        x = torch.randn(batch, c, *spatial, device=device, dtype=dtype)
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        # The times reported are of the call after `warmup` untimed ones: a first call
        # pays for cuDNN's algorithm search, lazy CUDA initialisation and the allocator's
        # first growth (425 ms for densenet121's forward on an H100, against a few warm).
        for _ in range(warmup + 1):
            model.zero_grad(set_to_none=True)
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
            if not result.output_finite:
                break
    except RuntimeError as e:  # e.g. out of memory: a result, not a crash
        result.error = f"{type(e).__name__}: {str(e).splitlines()[0]}"
    finally:
        for hnd in handles:
            hnd.remove()
    for stage in plan.stages:
        planned = (stage.out_channels, *stage.out_size)
        result.stages.append(StageCheck(stage.name, planned, observed.get(stage.name)))
    return result


@dataclass
class TorchinfoCheck:
    """torchinfo's view of a built model beside the plan's (``summary --verify``)."""

    name: str
    planned_params: int
    torchinfo_params: int
    planned_macs: int
    torchinfo_macs: int
    stages: list[StageCheck]

    @property
    def mismatches(self) -> list[str]:
        out = []
        if self.planned_params != self.torchinfo_params:
            out.append(f"params: plan {self.planned_params:,}, torchinfo "
                       f"{self.torchinfo_params:,}")
        out += [f"{s.name}: plan {_shape(s.planned)}, torchinfo {_shape(s.observed)}"
                for s in self.stages if not s.ok]
        return out

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def as_dict(self) -> dict:
        return {"ok": self.ok, "params": {"plan": self.planned_params,
                                          "torchinfo": self.torchinfo_params},
                "macs": {"plan": self.planned_macs, "torchinfo": self.torchinfo_macs},
                "stages": [{"name": s.name, "plan": list(s.planned),
                            "torchinfo": list(s.observed) if s.observed else None,
                            "ok": s.ok} for s in self.stages],
                "mismatches": self.mismatches}

    def render(self, fmt: str = "table") -> str:
        from .report import render_table

        rows = [[s.name, _shape(s.planned), _shape(s.observed), "ok" if s.ok else "MISMATCH"]
                for s in self.stages]
        rows.append(["params", f"{self.planned_params:,}", f"{self.torchinfo_params:,}",
                     "ok" if self.planned_params == self.torchinfo_params else "MISMATCH"])
        # torchinfo also counts BN as mult-adds; the plan counts convs and the classifier.
        rows.append(["MACs (info)", f"{self.planned_macs:,}", f"{self.torchinfo_macs:,}", ""])
        return render_table(["check", "plan", "torchinfo", "result"], rows, fmt, align="lrrl")


def torchinfo_check(plan: Plan, *, device: Any = "cpu", allow_large: bool = False
                    ) -> TorchinfoCheck:
    """Build ``plan``, run torchinfo.summary on one image, and compare with the plan."""
    import torchinfo

    from .builder import build
    from .resources import check_resources

    dev = parse_device(device)
    check_resources(plan, device=dev, batch=1, training=False, allow_large=allow_large)
    model = build(plan, device=dev, seed=0, allow_large=allow_large).eval()
    stats = torchinfo.summary(model, input_size=(1, *plan.input_shape), device=device,
                              verbose=0)
    by_id = {info.layer_id: info for info in stats.summary_list}
    stages = []
    for stage in plan.stages:
        info = by_id.get(id(model.get_submodule(stage.module)))
        observed = None
        if info is not None and info.output_size:
            size = list(info.output_size[1:])
            observed = (tuple(size) if len(size) == plan.dims + 1
                        else (size[0], *[1] * plan.dims))
        stages.append(StageCheck(stage.name, (stage.out_channels, *stage.out_size), observed))
    return TorchinfoCheck(plan.name, plan.params, int(stats.total_params), plan.macs,
                          int(stats.total_mult_adds), stages)


def verify_all(plans: list[Plan], *, device: Any = "cpu", batch: int = 2,
               dtype: str = "float32", progress=None, allow_large: bool = False
               ) -> list[CheckResult]:
    """Build each plan on ``device`` and check it with forward and backward passes.

    Every plan is first checked against the resource limits at ``batch`` (ResourceError
    for the first that exceeds them, before anything runs, unless ``allow_large``). A spec
    that then fails to build or run (out of memory, say) is a failed result, not an
    exception, so one bad spec does not hide the others.
    """
    from .builder import build
    from .resources import DTYPE_BYTES, check_resources

    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    dev = parse_device(device)
    for p in plans:
        check_resources(p, device=dev, dtype_bytes=DTYPE_BYTES[dtype], batch=batch,
                        allow_large=allow_large)
    results = []
    for i, p in enumerate(plans, start=1):
        if progress:
            progress(i - 1, len(plans), p.name)
        try:
            model = build(p, device=dev, dtype=torch_dtype, seed=0,
                          allow_large=allow_large).train()
            results.append(check_model(p, model, batch=batch, backward=True))
            del model
        except RuntimeError as e:
            r = CheckResult(p.name, str(dev), dtype, batch, p.params, 0)
            r.error = f"{type(e).__name__}: {str(e).splitlines()[0]}"
            results.append(r)
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    if progress:
        progress(len(plans), len(plans), "done")
    return results
