"""A dense block's features laid out in one buffer: the rule, written once.

Layer l of a dense block reads the concatenation of the block input and every earlier
layer's output, and adds ``growth_rate`` channels. Concatenating per layer copies the
features over and over (quadratic traffic in depth). Instead the block allocates its
output once, ``(N, out_channels, *spatial)``, copies its input into the first channels,
and each layer reads the prefix it needs and writes its new channels after it. The
memory levels (archspec.memory.block) and the inference block
(archspec.inference._FastBlock) both lay their features out this way; where a buffer
cannot be used (autograd keeping views of it, a compiled graph) both fall back to
``concatenated``, the per-layer loop.

The functions that run inside a scripted or traced forward (``allocate``) are
TorchScript-compatible; the others (``kept``, the optimized copy's CPU buffers kept from
call to call) are eager-only.
"""

# No `from __future__ import annotations`: TorchScript reads these annotations.

import threading
import weakref
from typing import Callable, List

import torch
from torch import Tensor

__all__ = ["allocate", "kept", "channels_last_like", "memory_format_like", "concatenated"]


def allocate(x: Tensor, channels: int, channels_last: bool, dims: int = 2) -> Tensor:
    """The block's output buffer, ``channels`` wide, in x's dtype, device and spatial size,
    with x copied into its first channels. ``dims`` (1, 2 or 3) is the number of spatial
    axes, known when the model is built; ``channels_last`` means channels_last (2D) or
    channels_last_3d (3D)."""
    size = [x.shape[0], channels] + [x.shape[2 + i] for i in range(dims)]  # FX traces it
    if channels_last and dims == 2:
        buf = torch.empty(size, dtype=x.dtype, device=x.device,
                          memory_format=torch.channels_last)
    elif channels_last and dims == 3:
        buf = torch.empty(size, dtype=x.dtype, device=x.device,
                          memory_format=torch.channels_last_3d)
    else:
        buf = torch.empty(size, dtype=x.dtype, device=x.device)
    buf[:, :x.shape[1]].copy_(x)
    return buf


# owner module -> its buffers, per thread: {key: buffer}, at most _KEPT_SHAPES keys
_KEPT: "weakref.WeakKeyDictionary[object, threading.local]" = weakref.WeakKeyDictionary()
_KEPT_LOCK = threading.Lock()
# two shapes: a batch taken in cache-sized passes ends with a smaller one
_KEPT_SHAPES = 2


def kept(owner: object, x: Tensor, channels: int, channels_last: bool, dims: int = 2) -> Tensor:
    """``allocate``, with the buffer kept for ``owner``'s next call on this thread (eager,
    CPU only). A fresh buffer of tens of MB is fresh memory from the OS every call, a page
    fault and a zeroing per 4 KiB (densenet121's optimized copy at batch 8: 1.07x faster
    with its block buffers kept; ONNX Runtime keeps an arena for the same reason). The
    caller must not let the buffer escape: its contents are overwritten by the next call.
    Buffers are per thread (concurrent calls never share one) and go with the owner."""
    key = (x.shape[0], channels, tuple(x.shape[2:]), x.dtype, x.device, channels_last,
           torch.is_inference_mode_enabled())
    local = _KEPT.get(owner)
    if local is None:
        with _KEPT_LOCK:
            local = _KEPT.setdefault(owner, threading.local())
    buffers = local.__dict__.setdefault("buffers", {})
    buf = buffers.get(key)
    if buf is None:
        if len(buffers) >= _KEPT_SHAPES:
            buffers.pop(next(iter(buffers)))  # the oldest shape
        buf = buffers[key] = allocate(x, channels, channels_last, dims)
        return buf
    buf[:, :x.shape[1]].copy_(x)
    return buf


def channels_last_like(x: Tensor) -> bool:
    """Whether torch.cat gives a block whose input is ``x`` channels_last features (the
    fast layout for convolutions on GPUs, under AMP above all; channels_last_3d for
    volumes). Where both layouts fit (1x1 maps, one channel) the strides decide, as
    torch's suggest_memory_format does."""
    if x.dim() == 4:
        return x.is_contiguous(memory_format=torch.channels_last) and x.stride(1) < x.stride(2)
    if x.dim() == 5:
        return (x.is_contiguous(memory_format=torch.channels_last_3d)
                and x.stride(1) < x.stride(2))
    return False


def memory_format_like(x: Tensor) -> torch.memory_format:
    """The layout of torch.cat's output for a block whose input is ``x``."""
    if not channels_last_like(x):
        return torch.contiguous_format
    return torch.channels_last if x.dim() == 4 else torch.channels_last_3d


def concatenated(x: Tensor, layers: List[Callable[[List[Tensor]], Tensor]]) -> Tensor:
    """The per-layer loop without a buffer: each of ``layers`` maps the list of features
    so far to its new features; returns all of them concatenated."""
    features = [x]
    for layer in layers:
        features.append(layer(features))
    return torch.cat(features, 1)
