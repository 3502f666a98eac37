"""Static-shape inference without launch overhead: ``optimize_for_inference(model,
example_input=x)``.

At batch 1-8 a DenseNet on a GPU is launch-bound: densenet121 issues some 600 kernels
per forward, each a few microseconds of work behind Python's and the driver's overhead
(7-14 ms per batch of 8 on an H100, for torchvision and archspec alike). A CUDA graph
records those launches once and replays them with one call, so only the kernels' own
time is left.

``CapturedInference`` wraps an optimized model with one graph, recorded for the example
input's shape, dtype, device and autocast state. A call that matches (the same
per-sample shape, a batch no larger than the example's) copies its input into the
graph's static input, replays, and returns a copy of the static output: results never
alias the next call's. A smaller batch is padded (in eval every sample is independent,
so the padding rows cannot change the others). Any other call runs the optimized model
eagerly, as do tracing, scripting, exporting and compiling, so the wrapper changes no
result, only how it is computed.

On the CPU there is no graph to record: the same static buffers are used and the
"replay" runs the model eagerly on them (same results, same contract, no speed-up; a
warning says so). That is what lets the wrapper's logic be tested on machines without a
GPU; the speed is only on CUDA.
"""

# No `from __future__ import annotations`: TorchScript reads this module's types.

import threading
import warnings
from typing import Any, Callable, List, Optional, Union

import torch
from torch import Tensor, nn

from .graph_mode import capturing

__all__ = ["CapturedInference"]

Output = Union[Tensor, List[Tensor]]


def _autocast_state(device_type: str) -> tuple:
    """What decides the kernels a forward runs besides its input: autocast on or off and
    its dtype, for the input's device type."""
    if not torch.is_autocast_enabled(device_type):
        return (False, None)
    return (True, torch.get_autocast_dtype(device_type))


class CapturedInference(nn.Module):
    """An optimized model with one recorded forward (see the module docstring).

    ``model`` is the optimized model (the module that actually runs); ``plan``,
    ``feature_info`` and other attributes are read through from it. ``state_dict`` and
    ``load_state_dict`` are the model's own (same keys); loading copies into the tensors
    the graph reads, so new weights take effect in the next replay. ``torch.jit.script``
    scripts the model. One replay at a time: calls from several threads are serialised.
    """

    def __init__(self, model: nn.Module, example_input: Tensor, warmup: int = 3):
        super().__init__()
        if not isinstance(example_input, Tensor) or example_input.dim() < 1 \
                or example_input.shape[0] < 1:
            raise ValueError("example_input must be a tensor with a batch dimension, e.g. "
                             "torch.randn(8, 3, 224, 224, device='cuda')")
        self.model = model
        self._lock = threading.Lock()
        self._graph: Any = None
        self._replay: Optional[Callable[[], None]] = None
        with torch.no_grad():
            self._record(example_input.detach(), warmup)

    # --- recording ----------------------------------------------------------------------

    def _record(self, example: Tensor, warmup: int) -> None:
        device = example.device
        self._device = device
        self._autocast = _autocast_state(device.type)
        self._static_in = example.clone()
        if device.type != "cuda":
            warnings.warn(f"example_input is on {device.type}: CUDA graphs record only "
                          "CUDA work, so this model runs eagerly through static buffers "
                          "(same results, no speed-up)", stacklevel=5)
            self._static_out = self._run()
            self._replay = self._rerun
            return
        # Warm up on a side stream (cuDNN picks its algorithms, the allocator settles),
        # then record. Autocast's weight-cast cache must be off while recording: a cached
        # cast would be freed when the caller's autocast context exits, under the graph.
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(warmup):
                self._run()
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._static_out = self._run()
        self._graph = graph
        self._replay = graph.replay

    def _run(self) -> Output:
        enabled, dtype = self._autocast
        if not enabled:
            return self.model(self._static_in)
        with torch.autocast(self._device.type, dtype=dtype, cache_enabled=False):
            return self.model(self._static_in)

    def _rerun(self) -> None:
        """The CPU's replay: the model again on the static input, into the static output."""
        for static, new in zip(_flat(self._static_out), _flat(self._run())):
            static.copy_(new)

    # --- calls --------------------------------------------------------------------------

    @property
    def captured(self) -> bool:
        """Whether calls that match the example replay a CUDA graph (False on the CPU,
        and after the model was moved or cast)."""
        return self._graph is not None

    def replays(self, x: Any) -> bool:
        """Whether a call with ``x`` goes through the recorded forward."""
        if self._replay is None or not isinstance(x, Tensor):
            return False
        if capturing() is not None:
            return False  # those record the model's own graph; a replay is opaque to them
        if x.requires_grad and torch.is_grad_enabled():
            return False  # a replay has no autograd graph; eager gives input gradients
        static = self._static_in
        return (x.device == static.device and x.dtype == static.dtype
                and x.dim() == static.dim() and x.shape[1:] == static.shape[1:]
                and 1 <= x.shape[0] <= static.shape[0]
                and _autocast_state(x.device.type) == self._autocast)

    def forward(self, x: Tensor) -> Output:
        if not self.replays(x):
            return self.model(x)
        n = x.shape[0]
        with self._lock, torch.no_grad():
            self._static_in[:n].copy_(x)
            assert self._replay is not None
            self._replay()
            out = [t[:n].clone() for t in _flat(self._static_out)]
        return out[0] if isinstance(self._static_out, Tensor) else out

    # --- the model's own interface ------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "model":
                raise
            return getattr(self.model, name)

    def __prepare_scriptable__(self) -> nn.Module:
        return self.model  # TorchScript cannot hold a CUDA graph: script the model

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        return self.model.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False
                        ) -> Any:
        if assign:
            raise ValueError("assign=True would replace the tensors the recorded graph "
                             "reads; load with assign=False (the values are copied in)")
        return self.model.load_state_dict(state_dict, strict=strict)

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> "CapturedInference":
        # .to(), .cuda(), .half() make new tensors; the graph would go on reading the old
        # ones. Drop it: calls run the model eagerly until optimize_for_inference is
        # called again with an example on the new device or dtype.
        super()._apply(fn, *args, **kwargs)
        if self._replay is not None:
            warnings.warn("moving or casting a captured model drops its recorded graph; "
                          "call optimize_for_inference(..., example_input=...) again",
                          stacklevel=3)
        self._graph, self._replay = None, None
        return self


def _flat(out: Output) -> List[Tensor]:
    return [out] if isinstance(out, Tensor) else list(out)
