"""The resource guard: refuse, before any tensor exists, a model or a batch that cannot fit.

The plan gives parameter and activation counts; this module turns them into bytes and
compares them with limits: a fixed ceiling on parameters, and the free memory of the
device where it can be read (MemAvailable on Linux for the CPU, cudaMemGetInfo for CUDA).
An absurd spec is refused in milliseconds instead of by the out-of-memory killer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import Problem, SpecError, format_path
from .plan import Plan
from .yamlio import COMMAND_LINE

__all__ = ["ResourceError", "Estimate", "estimate", "check_resources", "MAX_PARAMS",
           "available_bytes"]

MAX_PARAMS = 2_000_000_000   # 8 GB of float32 weights: 25x the largest DenseNet in use
HEADROOM = 0.8               # leave a fifth of free memory for the allocator and the rest
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "float64": 8}
# The Python objects of one dense layer (its modules, their parameter tensors' headers),
# whatever its width: densenet-bc with 2,000 one-channel layers measured 24 KB a layer.
LAYER_OVERHEAD_BYTES = 32 * 1024


class ResourceError(SpecError):
    """A model or batch beyond the limits; ``allow_large=True`` / ``--allow-large`` overrides."""


@dataclass(frozen=True)
class Estimate:
    """Bytes a build (and a training step at ``batch``) is expected to need."""

    params: int
    weight_bytes: int
    activation_bytes: int
    batch: int

    @property
    def total(self) -> int:
        return self.weight_bytes + self.activation_bytes


def estimate(plan: Plan, *, dtype_bytes: int = 4, batch: int | None = None,
             training: bool = True) -> Estimate:
    """Bytes for weights (twice when training: gradients too) and, with ``batch``, for the
    activations autograd keeps (or one stage output at a time in inference)."""
    layers = sum(len(s.layers) for s in plan.stages)
    weight = (plan.params * dtype_bytes * (2 if training and batch else 1)
              + layers * LAYER_OVERHEAD_BYTES)
    acts = 0
    if batch:
        acts = (plan.training_memory(batch, dtype_bytes=dtype_bytes) if training
                else 2 * max(s.activations for s in plan.stages) * batch * dtype_bytes)
    return Estimate(plan.params, weight, acts, batch or 0)


def available_bytes(device: Any = "cpu") -> int | None:
    """Free memory of ``device`` in bytes, or None where it cannot be read."""
    kind = getattr(device, "type", str(device).split(":")[0])
    if kind == "cuda":
        try:
            import torch

            free, _total = torch.cuda.mem_get_info(device)
            return int(free)
        except Exception:  # no driver, no such device: the builder reports that itself
            return None
    if kind == "cpu":
        try:
            with open("/proc/meminfo") as fh:
                for line in fh:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def _cause(plan: Plan) -> tuple[Any, str]:
    """Where a too-large network was made: the first override on the command line (or in
    ``overrides=``) when there is one, since a zoo spec is fine until it is changed; else
    the top of the spec file."""
    smap = plan.spec.source_map
    given = sorted(((m.column, p) for p, m in smap.values.items() if m.file == COMMAND_LINE),
                   key=lambda cp: cp[0])
    if given:
        column, path = given[0]
        return smap.locate(path), format_path(path)
    return smap.locate(()), ""


def check_resources(plan: Plan, *, device: Any = "cpu", dtype_bytes: int = 4,
                    batch: int | None = None, training: bool = True,
                    allow_large: bool = False) -> Estimate:
    """Raise ResourceError if ``plan`` (at ``batch``) exceeds the limits, unless
    ``allow_large``. Returns the estimate either way."""
    est = estimate(plan, dtype_bytes=dtype_bytes, batch=batch, training=training)
    if allow_large:
        return est
    mark, path = _cause(plan)
    hint = "; pass allow_large=True (--allow-large) to try anyway"
    if plan.params > MAX_PARAMS:
        raise ResourceError(Problem(
            f"{plan.name} has {plan.params:,} parameters, over the limit of {MAX_PARAMS:,}"
            + hint, mark.file, mark.line, mark.column, path))
    free = available_bytes(device)
    if free is not None and est.total > HEADROOM * free:
        what = (f"weights {_gb(est.weight_bytes)} + activations {_gb(est.activation_bytes)} "
                f"at batch {batch}" if batch else f"weights {_gb(est.weight_bytes)}")
        raise ResourceError(Problem(
            f"{plan.name} needs about {_gb(est.total)} ({what}) but {device} has "
            f"{_gb(free)} free" + hint, mark.file, mark.line, mark.column, path))
    return est
