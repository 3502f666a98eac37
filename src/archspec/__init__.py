"""archspec: declarative convolutional architectures, DenseNet first.

    spec = archspec.load("densenet121")      # or a path to your YAML file
    p = archspec.plan(spec)                  # channels, sizes, params, MACs; no torch
    model = archspec.build(spec, seed=0)     # an nn.Module interchangeable with torchvision's

Importing archspec does not import torch; ``build`` does, on first use.
"""

import importlib as _importlib
import os as _os
import typing as _typing

from .canonical import canonical, content_hash
from .errors import TORCH_MISSING as _TORCH_MISSING, Problem, SpecError, \
    torch_missing as _torch_missing
from .loader import load, loads
from .pipeline import load_plan
from .plan import LayerPlan, Plan, Stage, plan
from .plan_hardnet import HarDNetPlan
from .plan_peleenet import PeleeNetPlan
from .plan_vovnet import VoVNetPlan
from .schema import DenseNetSpec, HarDNetSpec, PeleeNetSpec, StemType, VoVNetSpec
from .search import search

if _typing.TYPE_CHECKING:  # for editors and type checkers only: torch stays lazy
    import torch

    from .builder import (DenseNet, DenseNetFeatures, HarDNet, HarDNetFeatures, PeleeNet,
                          PeleeNetFeatures, VoVNet, VoVNetFeatures, load_checkpoint,
                          save_checkpoint)
    from .deploy import ExportResult

from .version import __version__

__all__ = ["load", "loads", "plan", "load_plan", "search", "build", "from_module",
           "optimize_for_inference", "export", "canonical", "content_hash", "SpecError",
           "Problem", "Plan", "Stage", "LayerPlan", "DenseNetSpec", "StemType", "VoVNetSpec",
           "VoVNetPlan", "HarDNetSpec", "HarDNetPlan", "PeleeNetSpec", "PeleeNetPlan",
           "__version__"]


# The model classes and the checkpoint functions live in archspec.builder, which imports
# torch; they are looked up here only when named (``archspec.DenseNet``, as LightningCLI's
# ``class_path`` names a model class), so ``import archspec`` stays torch-free. Not in
# __all__ for that reason (a star import would load torch).
_LAZY = {"DenseNet", "DenseNetFeatures", "VoVNet", "VoVNetFeatures", "HarDNet",
         "HarDNetFeatures", "PeleeNet", "PeleeNetFeatures", "save_checkpoint",
         "load_checkpoint"}


def _torch_part(module: str, what: str):
    """archspec.<module>, which imports torch; where PyTorch is missing, an error that says
    how to install it (a spec writer's ``pip install archspec`` has no torch)."""
    try:
        return _importlib.import_module(f"{__name__}.{module}")
    except ModuleNotFoundError as e:
        if not _torch_missing(e):
            raise
        raise ModuleNotFoundError(f"archspec.{what} {_TORCH_MISSING}", name=e.name) from None


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(_torch_part("builder", name), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | _LAZY)


def build(spec: "DenseNetSpec | Plan | str | _os.PathLike", *,
          device: "str | torch.device | None" = None, dtype: "torch.dtype | None" = None,
          seed: "int | None" = None, allow_large: bool = False,
          weights: "str | _os.PathLike | _typing.Mapping[str, torch.Tensor] | None" = None,
          drop_head: bool = False, features_only: bool = False,
          out_indices: "_typing.Sequence[int] | None" = None,
          overrides: "_typing.Mapping[str, _typing.Any] | None" = None,
          adapt: "_typing.Sequence[str]" = ()) -> "torch.nn.Module":
    """Build the nn.Module a spec describes (a DenseNet, or with ``features_only`` a
    backbone returning feature maps).

    ``spec``: a DenseNetSpec, a Plan, a zoo name or a path. ``seed`` gives bitwise
    torchvision's initialisation for that seed without touching the global RNG;
    ``device``/``dtype`` move the model after it is initialised on the CPU; ``weights`` is a
    checkpoint path or a state_dict (torchvision, timm, MONAI or archspec keys;
    ``drop_head`` keeps the new classifier; ``adapt`` opts into changing tensors to fit:
    ``"inflate"`` a 2D checkpoint's kernels into a 1D or 3D net, ``"input_channels"`` the
    first conv to the spec's input channels, each listed in the weights report);
    ``allow_large`` skips the resource guard; ``overrides``
    ({key.path: value}) make a variant of a named or file spec. See
    :func:`archspec.builder.build`.
    """
    # builder, not build: a submodule named build would replace this function on import.
    _build = _torch_part("builder", "build").build  # torch is imported here, not at import

    return _build(spec, device=device, dtype=dtype, seed=seed, allow_large=allow_large,
                  weights=weights, drop_head=drop_head, features_only=features_only,
                  out_indices=out_indices, overrides=overrides, adapt=adapt)


def from_module(model: "torch.nn.Module", *, name: "str | None" = None,
                source: "str | None" = None) -> DenseNetSpec:
    """Infer the spec of a torchvision, timm or archspec DenseNet instance (named after
    the zoo spec it equals, if any); see :func:`archspec.introspect.from_module`."""
    return _torch_part("introspect", "from_module").from_module(model, name=name, source=source)


def export(model: "torch.nn.Module", path: "str | _os.PathLike", *,
           input_shape: "tuple[int, int, int] | None" = None, batch: int = 1,
           dynamic_batch: bool = False, force: bool = False,
           seed: int = 0) -> "ExportResult":
    """Write ``model`` as ONNX (.onnx), an ExportedProgram (.pt2) or TorchScript (.pt), by
    the suffix of ``path``, once the artefact, loaded back by its runtime, matches eager
    on a random input (within 1e-4); atomically, never over an existing file unless
    ``force``. See :func:`archspec.deploy.export`."""
    _export = _torch_part("deploy", "export").export  # torch (and onnx for .onnx) load here
    return _export(model, path, input_shape=input_shape, batch=batch,
                   dynamic_batch=dynamic_batch, force=force, seed=seed)


def optimize_for_inference(model: "torch.nn.Module", *, channels_last: bool = True,
                           example_input: "torch.Tensor | None" = None,
                           dtype: "torch.dtype | None" = None) -> "torch.nn.Module":
    """An eval-only, faster copy of a built DenseNet or ``features_only`` backbone (norms
    folded, transitions pooled before their convs, no per-layer concatenation,
    channels_last); with ``example_input``, its forward recorded as a CUDA graph for
    small static batches; with ``dtype=torch.bfloat16``, computing in bf16 where the
    device does so natively (else float32, with a warning). See
    :func:`archspec.inference.optimize_for_inference`."""
    _optimize = _torch_part("inference", "optimize_for_inference").optimize_for_inference

    return _optimize(model, channels_last=channels_last, example_input=example_input,
                     dtype=dtype)
