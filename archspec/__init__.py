"""archspec: declarative convolutional architectures, DenseNet first.

    spec = archspec.load("densenet121")      # or a path to your YAML file
    p = archspec.plan(spec)                  # channels, sizes, params, MACs; no torch
    model = archspec.build(spec, seed=0)     # an nn.Module interchangeable with torchvision's

Importing archspec does not import torch; ``build`` does, on first use.
"""

from __future__ import annotations

from typing import Any

from .canonical import canonical, content_hash
from .errors import Problem, SpecError
from .loader import load, loads
from .plan import Plan, Stage, LayerPlan, plan
from .schema import DenseNetSpec, StemType

__version__ = "0.1.0"

__all__ = ["load", "loads", "plan", "build", "from_module", "optimize_for_inference",
           "canonical", "content_hash",
           "SpecError", "Problem", "Plan", "Stage", "LayerPlan", "DenseNetSpec", "StemType",
           "__version__"]


def build(spec: Any, **kwargs: Any):
    """Build the nn.Module a spec describes; see :func:`archspec.builder.build`.

    Keywords: device, dtype, seed, allow_large, weights, drop_head, features_only,
    out_indices.
    """
    # builder, not build: a submodule named build would replace this function on import.
    from .builder import build as _build  # torch is imported here, not at package import

    return _build(spec, **kwargs)


def from_module(model: Any, **kwargs: Any) -> DenseNetSpec:
    """Infer the spec of a torchvision, timm or archspec DenseNet instance; see
    :func:`archspec.introspect.from_module`."""
    from .introspect import from_module as _from_module

    return _from_module(model, **kwargs)


def optimize_for_inference(model: Any, **kwargs: Any):
    """An eval-only, faster copy of a built DenseNet (norms folded, transitions pooled
    before their convs, no per-layer concatenation, channels_last); see
    :func:`archspec.inference.optimize_for_inference`."""
    from .inference import optimize_for_inference as _optimize

    return _optimize(model, **kwargs)
