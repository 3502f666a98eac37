"""Deployable artefacts from a built model: ONNX, torch.export's ExportedProgram, TorchScript.

One job: turn an eval-mode model into bytes in the format its file's suffix names, load
those bytes back with the runtime that will serve them (onnxruntime, torch.export.load,
torch.jit.load), compare that with eager on random inputs, and only then write the file
atomically. A file that exists is therefore one that was checked.
"""

from __future__ import annotations

import io
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .files import write_atomic

__all__ = ["FORMATS", "ExportError", "ExportResult", "export", "format_for"]

# suffix -> format name (what `archspec export` prints and the JSON result says)
FORMATS = {".onnx": "onnx", ".pt2": "exported_program", ".pt": "torchscript"}
# What `--optimize` emits, per target: optimize_for_inference's model where it runs faster
# in the target's runtime than the plain one, else the plain one. ONNX Runtime fuses
# Conv+BatchNorm(+ReLU) itself and slows down on the rearranged graph: densenet121 b8 on
# 2 cores ran at 0.62-0.65x the plain export's speed (shared buffer) and 0.84-0.86x
# (concatenating blocks), densenet-bc-100-12 b8 at 0.73x; TorchScript and torch.export
# run the optimized model faster (benchmarks/export_runtimes.py, docs/benchmarks.md).
OPTIMIZE_HELPS = {"onnx": False, "exported_program": True, "torchscript": True}
# fp32 kernels differ between runtimes (onnxruntime's convolutions, TorchScript's fusions)
# by rounding only; a wrong graph differs by orders of magnitude more.
TOLERANCE = 1e-4
MAX_BATCH = 1 << 16  # the dynamic batch dimension's upper bound
_ONNX_PROTO_LIMIT = 2**31 - 1  # protobuf's limit for a single serialized ONNX model


class ExportError(RuntimeError):
    """The artefact could not be made, or does not compute what the model computes."""


@dataclass
class ExportResult:
    path: Path
    format: str
    batch: int
    dynamic_batch: bool
    input_shape: tuple[int, int, int]
    # batch size -> max |artefact - eager| on a random input of that batch
    max_abs_diff: dict[int, float] = field(default_factory=dict)
    bytes: int = 0

    def as_dict(self) -> dict:
        return {"path": str(self.path), "format": self.format, "batch": self.batch,
                "dynamic_batch": self.dynamic_batch, "input": list(self.input_shape),
                "max_abs_diff": {str(k): v for k, v in self.max_abs_diff.items()},
                "tolerance": TOLERANCE, "bytes": self.bytes}


def format_for(path: str | os.PathLike) -> str:
    """The format a file name asks for, by its suffix; ValueError for any other."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{os.fspath(path)!r}: the suffix picks the format: "
                         + ", ".join(f"{s} ({f})" for s, f in FORMATS.items()))
    return FORMATS[suffix]


def export(model: nn.Module, path: str | os.PathLike, *,
           input_shape: tuple[int, int, int] | None = None, batch: int = 1,
           dynamic_batch: bool = False, force: bool = False, inputs: tuple | list = (),
           seed: int = 0, progress: Callable[[str], None] | None = None) -> ExportResult:
    """Export ``model`` (a float32 model on the CPU, made eval meanwhile) to ``path``, in
    the format of its suffix, after checking the exported artefact against eager within
    ``TOLERANCE`` at ``batch`` (and, with ``dynamic_batch``, at another batch size too). ``input_shape``
    (C, H, W) defaults to the input of the spec the model was built from.

    ``inputs`` are files the output must not replace (as ``write_atomic`` takes them).
    ``progress(step)`` is told each step as it starts (exporting takes seconds to minutes).
    A model built by archspec carries its provenance into the file: its canonical spec and
    that spec's sha256 (ONNX ``metadata_props``, the extra files of a .pt2 or TorchScript
    archive), which ``archspec.provenance.embedded_spec`` reads back and every command
    taking a SPEC accepts (``archspec verify model.onnx``).
    Raises ExportError when the exporter fails or the artefact disagrees with eager, and
    ValueError for an unknown suffix or a batch below 1; nothing is written then.
    """
    fmt = format_for(path)
    if input_shape is None:
        plan = getattr(model, "plan", None)
        if plan is None:
            raise ValueError("input_shape is needed for a model not built by archspec")
        input_shape = plan.input_shape
    if not 1 <= batch <= MAX_BATCH:
        raise ValueError(f"batch must be between 1 and {MAX_BATCH}, got {batch}")
    say = progress or (lambda step: None)
    plan = getattr(model, "plan", None)
    provenance = _provenance(plan.spec) if plan is not None else {}
    was_training = model.training
    model.eval()
    try:
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(batch, *input_shape, generator=gen)
        say(f"exporting to {fmt} ({_EXPORT_HOW[fmt]})")
        with _failures_as(f"{fmt} export failed"):
            data = _EXPORTERS[fmt](model, x, dynamic_batch, provenance)
        say(f"loading the artefact back ({_RUNTIME[fmt]})")
        with _failures_as(f"loading the {fmt} artefact back failed"):
            run = _LOADERS[fmt](data)
        sizes = [batch] + ([batch + 1] if dynamic_batch else [])
        diffs: dict[int, float] = {}
        for n in sizes:
            say(f"checking against eager at batch {n}")
            xi = x if n == batch else torch.randn(n, *input_shape, generator=gen)
            with torch.no_grad():
                want = model(xi)
            with _failures_as(f"running the {fmt} artefact at batch {n} failed"):
                got = run(xi)
            if tuple(got.shape) != tuple(want.shape):
                raise ExportError(f"the {fmt} artefact returned shape {tuple(got.shape)} at "
                                  f"batch {n}; eager returns {tuple(want.shape)}")
            diffs[n] = float((got.float() - want.float()).abs().max())
            if not diffs[n] <= TOLERANCE:  # also catches NaN
                raise ExportError(f"the {fmt} artefact differs from eager by {diffs[n]:.3g} "
                                  f"at batch {n} (tolerance {TOLERANCE:g}); nothing written")
    finally:
        model.train(was_training)
    say(f"writing {os.fspath(path)}")
    out = write_atomic(path, lambda fh: fh.write(data), force=force, inputs=inputs)
    return ExportResult(Path(out), fmt, batch, dynamic_batch, tuple(input_shape), diffs,
                        len(data))


# --- the three formats: model -> bytes, bytes -> a callable on a CPU tensor ------------------

def _batch_dim() -> torch.export.Dim:
    return torch.export.Dim("batch", min=1, max=MAX_BATCH)


def _traceable_example(x: torch.Tensor, dynamic_batch: bool) -> torch.Tensor:
    # torch.export specialises a dimension of size 1 (or 0) to a constant; trace a dynamic
    # batch with two images, whatever batch the user checks.
    return torch.cat([x, x])[:2] if dynamic_batch and x.shape[0] < 2 else x


def _export_program(model: nn.Module, x: torch.Tensor, dynamic_batch: bool,
                    provenance: dict[str, str]) -> bytes:
    shapes = ({0: _batch_dim()},) if dynamic_batch else None
    program = torch.export.export(model, (_traceable_example(x, dynamic_batch),),
                                  dynamic_shapes=shapes, strict=True)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # Weights that share storage (the folded norms' views) are saved once; torch warns
        # that this "may cause issues when your weights are not on CPU": ours are.
        warnings.filterwarnings("ignore", message="No complete tensor found in the group")
        torch.export.save(program, buf, extra_files=provenance)
    return buf.getvalue()


def _no_grad_call(module: Callable[[torch.Tensor], torch.Tensor]
                  ) -> Callable[[torch.Tensor], torch.Tensor]:
    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return module(x)
    return run


def _load_program(data: bytes) -> Callable[[torch.Tensor], torch.Tensor]:
    return _no_grad_call(torch.export.load(io.BytesIO(data)).module())


def _export_torchscript(model: nn.Module, x: torch.Tensor, dynamic_batch: bool,
                        provenance: dict[str, str]) -> bytes:
    # Scripting, not tracing: the artefact keeps every shape symbolic, so any batch works.
    with _quiet():  # TorchScript's deprecation notice: the user asked for a .pt by name
        scripted = torch.jit.script(model)
        buf = io.BytesIO()
        torch.jit.save(scripted, buf, _extra_files=provenance)
    return buf.getvalue()


def _load_torchscript(data: bytes) -> Callable[[torch.Tensor], torch.Tensor]:
    with _quiet():
        return _no_grad_call(torch.jit.load(io.BytesIO(data), map_location="cpu"))


def _export_onnx(model: nn.Module, x: torch.Tensor, dynamic_batch: bool,
                 provenance: dict[str, str]) -> bytes:
    try:
        import onnxscript  # noqa: F401  (torch's dynamo exporter needs it)
    except ImportError as e:
        raise ExportError("ONNX export needs the onnx and onnxscript packages "
                          "(pip install onnx onnxscript onnxruntime)") from e
    shapes = ({0: _batch_dim()},) if dynamic_batch else None
    with _quiet():  # the exporter's progress chatter
        program = torch.onnx.export(model, (_traceable_example(x, dynamic_batch),),
                                    dynamo=True, dynamic_shapes=shapes, verbose=False,
                                    input_names=["input"], output_names=["output"])
    proto = program.model_proto
    for key, value in provenance.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    data = proto.SerializeToString()
    if len(data) > _ONNX_PROTO_LIMIT:
        raise ExportError("the model is over 2 GB, protobuf's limit for one ONNX file")
    return data


def _load_onnx(data: bytes) -> Callable[[torch.Tensor], torch.Tensor]:
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ExportError("checking an ONNX export needs onnxruntime "
                          "(pip install onnxruntime)") from e
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {name: x.contiguous().numpy()})[0])
    return run


@contextmanager
def _failures_as(what: str):
    """Exporters and runtimes raise many types; report which step failed, in one line."""
    try:
        yield
    except ExportError:
        raise
    except Exception as e:
        detail = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ExportError(f"{what}: {type(e).__name__}" + (f": {detail}" if detail else "")
                          ) from e


@contextmanager
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        yield


def _provenance(spec) -> dict[str, str]:
    from .version import __version__
    from .canonical import canonical, content_hash
    from .provenance import SHA256_KEY, SPEC_KEY, VERSION_KEY

    return {SPEC_KEY: canonical(spec), SHA256_KEY: content_hash(spec),
            VERSION_KEY: __version__}


_EXPORT_HOW = {"onnx": "torch.onnx dynamo exporter", "exported_program": "torch.export",
               "torchscript": "torch.jit.script"}
_RUNTIME = {"onnx": "onnxruntime", "exported_program": "torch.export.load",
            "torchscript": "torch.jit.load"}
_EXPORTERS = {"onnx": _export_onnx, "exported_program": _export_program,
              "torchscript": _export_torchscript}
_LOADERS = {"onnx": _load_onnx, "exported_program": _load_program,
            "torchscript": _load_torchscript}
