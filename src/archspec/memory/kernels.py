"""Every private PyTorch API archspec calls, in one module, each behind a self-check.

The memory levels' backward calls ATen's backward kernels directly (no autograd graph per
layer, see direct.py), reuses the batch statistics autograd saved in the forward, and
replays SyncBatchNorm with its own autograd function. None of these is covered by a
deprecation promise. So each fast path below is checked once per process and device type,
the first time a memory level would use it: the private call runs on a tiny input beside
the public autograd computation of the same thing. When the API is missing, raises, or
disagrees, the memory level takes the public path instead and warns once, saying why. A
new torch release may cost speed, never correctness.

========================  ==================================  ===============================
fast path                 private API                         public fallback
========================  ==================================  ===============================
``conv_backward``         ``aten.convolution_backward``       ``torch.nn.grad.conv2d_input``
                                                              and ``conv2d_weight``
``norm_act_backward``     ``aten._batch_norm_impl_index``,    autograd through the layer,
                          ``..._backward``,                   recomputed with momentum 0
                          ``aten.threshold_backward``         (block.py, transition.py)
``batch_statistics``      ``NativeBatchNormBackward0``'s      backward recomputes the batch
                          ``_saved_result1/2`` (the forward's statistics
                          mean and invstd)
``avg_pool_backward``     ``aten.avg_pool2d/3d_backward``     autograd through the recomputed
                                                              transition
``sync_batch_norm``       ``nn.modules._functions.            blocks holding a SyncBatchNorm
                          SyncBatchNorm`` (its backward,      take the plain path
                          its ``_backward_cls``'s saved
                          tensors by position),
                          ``torch.batch_norm_elemt``
``cpu_features``          ``torch.cpu._is_avx512_bf16_``      the kernel's CPU flags in
(optimize_for_inference's ``supported``, ``_is_amx_tile_``    /proc/cpuinfo; without them,
bf16/fp16 path)           ``supported``, ``_is_amx_fp16_``    "not native" (fp32 kept: never
                          ``supported``                       slower)
``forward_hooks``         ``nn.Module._forward_hooks`` and    a hook may run: the optimized
(optimize_for_inference's ``_forward_pre_hooks``, torch.nn.   block calls its modules as
direct eager loop)        modules.module's global hook dicts  modules
========================  ==================================  ===============================

tests/test_memory_kernels.py breaks each private call in turn (missing, or returning
wrong numbers) and checks that the gradients stay the plain model's and one warning says
which path fell back.
"""

from __future__ import annotations

import math
import warnings
from contextlib import nullcontext
from typing import Callable, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["FastPathWarning", "PATHS", "usable", "reset", "conv_backward",
           "batch_norm_train", "batch_norm_with_statistics", "batch_norm_backward",
           "relu_backward", "avg_pool_backward", "batch_statistics_of", "sync_batch_norm",
           "SyncStats", "sync_statistics_of", "sync_normalise", "sync_batch_norm_backward",
           "cpu_features", "global_forward_hooks", "forward_hooked"]


class FastPathWarning(UserWarning):
    """A memory level's fast path is not usable in this torch; it takes the public path."""


class _Path(NamedTuple):
    private: str   # what the fast path calls
    fallback: str  # what runs instead, in the warning's words


PATHS: dict[str, _Path] = {
    "conv_backward": _Path("torch.ops.aten.convolution_backward",
                           "torch.nn.grad.conv2d_input/conv2d_weight (same gradients)"),
    "norm_act_backward": _Path("torch.ops.aten._batch_norm_impl_index[_backward] and "
                               "threshold_backward",
                               "autograd through the recomputed layers (same gradients, "
                               "slower backward)"),
    "batch_statistics": _Path("the _saved_result1/_saved_result2 of autograd's "
                              "NativeBatchNormBackward0 node",
                              "statistics recomputed in backward (same gradients, one "
                              "more pass per norm)"),
    "avg_pool_backward": _Path("torch.ops.aten.avg_pool2d_backward and avg_pool3d_backward",
                               "autograd through the recomputed transition (same "
                               "gradients)"),
    "sync_batch_norm": _Path("torch.nn.modules._functions.SyncBatchNorm and "
                             "torch.batch_norm_elemt",
                             "the plain path for dense blocks holding a SyncBatchNorm "
                             "(same gradients, more memory)"),
}

# (path, device type) -> None when usable, else why not
_VERDICTS: dict[tuple[str, str], Optional[str]] = {}


def usable(path: str, device) -> bool:
    """Whether the fast path ``path`` agrees with the public computation on this device
    type. The self-check runs once per process and device type; a failure warns once."""
    key = (path, torch.device(device).type)
    if key not in _VERDICTS:
        _VERDICTS[key] = _self_check(path, torch.device(device))
        if _VERDICTS[key] is not None:
            p = PATHS[path]
            warnings.warn(
                f"archspec's memory levels: the fast path '{path}' ({p.private}) is not "
                f"usable on {key[1]} with torch {torch.__version__}: {_VERDICTS[key]}. "
                f"Using {p.fallback} instead.", FastPathWarning, stacklevel=2)
    return _VERDICTS[key] is None


def reset() -> None:
    """Forget the verdicts: the next use of each fast path checks it again."""
    _VERDICTS.clear()


# The private calls. The fast paths in direct.py, norms.py and transition.py call these
# wrappers only; the self-checks below call the same wrappers.

def _convolution_backward(*args):
    return torch.ops.aten.convolution_backward(*args)


def _batch_norm_impl_index(*args):
    return torch.ops.aten._batch_norm_impl_index(*args)


def _batch_norm_impl_index_backward(*args):
    return torch.ops.aten._batch_norm_impl_index_backward(*args)


def _threshold_backward(grad: Tensor, z: Tensor, threshold: float) -> Tensor:
    return torch.ops.aten.threshold_backward(grad, z, threshold)


def _avg_pool2d_backward(*args):
    return torch.ops.aten.avg_pool2d_backward(*args)


def _avg_pool3d_backward(*args):
    return torch.ops.aten.avg_pool3d_backward(*args)


def _batch_norm_elemt(*args):
    return torch.batch_norm_elemt(*args)


def sync_batch_norm():
    """torch's SyncBatchNorm autograd function (None if it is not where it used to be)."""
    try:
        from torch.nn.modules._functions import SyncBatchNorm
    except ImportError:
        return None
    return SyncBatchNorm


def conv_backward(x: Tensor, weight: Tensor, grad_out: Tensor, stride, padding, dilation,
                  groups: int, weight_grad: bool) -> tuple[Tensor, Optional[Tensor]]:
    """The gradients of conv1d/2d/3d(x, weight) (no bias) w.r.t. x and, if asked, the
    weight, without running the convolution's forward."""
    dims = weight.dim() - 2
    if usable("conv_backward", x.device):
        g_in, g_w, _ = _convolution_backward(
            grad_out, x, weight, None, list(stride), list(padding), list(dilation), False,
            [0] * dims, groups, [True, weight_grad, False])
        return g_in, g_w
    conv_input, conv_weight = _PUBLIC_CONV_GRADS[dims]
    g_in = conv_input(x.shape, weight, grad_out, stride, padding, dilation, groups)
    g_w = (conv_weight(x, weight.shape, grad_out, stride, padding, dilation, groups)
           if weight_grad else None)
    return g_in, g_w


_PUBLIC_CONV_GRADS = {1: (torch.nn.grad.conv1d_input, torch.nn.grad.conv1d_weight),
                      2: (torch.nn.grad.conv2d_input, torch.nn.grad.conv2d_weight),
                      3: (torch.nn.grad.conv3d_input, torch.nn.grad.conv3d_weight)}


class BatchNormSaved(NamedTuple):
    """What a training batch norm's backward kernel needs from its forward."""
    mean: Tensor
    invstd: Tensor
    reserve: Tensor
    impl: int


def batch_norm_train(x: Tensor, weight: Tensor, bias: Tensor, running_mean: Tensor,
                     running_var: Tensor, eps: float) -> tuple[Tensor, BatchNormSaved]:
    """Training-mode batch norm with momentum 0 (the running statistics do not move):
    the kernel F.batch_norm picks (native, cuDNN, MIOpen), and what its backward needs."""
    y, mean, invstd, reserve, impl = _batch_norm_impl_index(
        x, weight, bias, running_mean, running_var, True, 0.0, eps,
        torch.backends.cudnn.enabled)
    return y, BatchNormSaved(mean, invstd, reserve, impl)


def batch_norm_with_statistics(x: Tensor, weight: Tensor, bias: Tensor, mean: Tensor,
                               invstd: Tensor, eps: float
                               ) -> Optional[tuple[Tensor, BatchNormSaved]]:
    """Batch norm with the forward's batch statistics and no reduction: the eval kernel
    with running mean = the batch mean, running var = v where v + eps == 1 exactly (its
    invstd is then 1) and weight = invstd * weight. Its per-channel scale and shift,
    weight*invstd and bias - mean*scale, are the training forward's to the bit, and so is
    the output (on the CPU, where the statistics are kept). None if no such v exists."""
    unit = _unit_variance(eps, weight.dtype)
    if unit is None:
        return None
    y = _batch_norm_impl_index(x, invstd * weight, bias, mean, torch.full_like(invstd, unit),
                               False, 0.0, eps, torch.backends.cudnn.enabled)[0]
    return y, BatchNormSaved(mean, invstd, x.new_empty(0), 0)


def batch_norm_backward(x: Tensor, grad_y: Tensor, weight: Tensor, running_mean: Tensor,
                        running_var: Tensor, eps: float, saved: BatchNormSaved,
                        weight_grad: bool, bias_grad: bool) -> tuple[Tensor, Tensor, Tensor]:
    """A training batch norm's backward kernel: gradients w.r.t. x, weight and bias."""
    return _batch_norm_impl_index_backward(
        saved.impl, x, grad_y, weight, running_mean, running_var, saved.mean, saved.invstd,
        True, eps, [True, weight_grad, bias_grad], saved.reserve)


def relu_backward(grad_z: Tensor, z: Tensor) -> Tensor:
    """ReLU's backward from its output z (autograd's kernel)."""
    return _threshold_backward(grad_z, z, 0)


def avg_pool_backward(grad_y: Tensor, like: Tensor, kernel_size, stride, padding,
                      ceil_mode: bool, count_include_pad: bool, divisor_override) -> Tensor:
    """avg_pool2d's or avg_pool3d's backward (by ``like``'s rank); ``like`` stands in for
    its input (only its geometry is read)."""
    if like.dim() == 5:
        return _avg_pool3d_backward(grad_y, like, _triple(kernel_size), _triple(stride),
                                    _triple(padding), ceil_mode, count_include_pad,
                                    divisor_override)
    return _avg_pool2d_backward(grad_y, like, _pair(kernel_size), _pair(stride),
                                _pair(padding), ceil_mode, count_include_pad,
                                divisor_override)


def batch_statistics_of(node) -> Optional[tuple[Tensor, Tensor]]:
    """The batch mean and invstd a CPU batch norm's autograd node saved (None if the node
    is not the kind that saves them where archspec looks)."""
    if type(node).__name__ != "NativeBatchNormBackward0":
        return None
    try:
        return node._saved_result1, node._saved_result2
    except RuntimeError:  # freed (a torch that releases them early): recompute instead
        return None


class SyncStats(NamedTuple):
    """A SyncBatchNorm's global batch statistics, gathered once in the forward."""
    mean: Tensor
    invstd: Tensor
    count: Tensor
    group: object


def sync_statistics_of(node) -> Optional[SyncStats]:
    """The global statistics a synchronised SyncBatchNorm's autograd node saved (its
    forward saves input, weight, mean, invstd, count), or None if the node is not that
    function's or does not hold them as expected."""
    fn = sync_batch_norm()
    if fn is None or not isinstance(node, fn._backward_cls):
        return None
    try:
        saved = node.saved_tensors
    except RuntimeError:  # freed (a torch that releases them early): rerun instead
        return None
    if len(saved) != 5:
        return None
    _, _, mean, invstd, count = saved
    if mean.dim() != 1 or invstd.shape != mean.shape:
        return None
    return SyncStats(mean, invstd, count, node.process_group)


def sync_normalise(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                   mean: Tensor, invstd: Tensor, eps: float) -> Tensor:
    """SyncBatchNorm's elementwise normalisation with given statistics."""
    return _batch_norm_elemt(x, weight, bias, mean, invstd, eps)


class _SyncBatchNormContext:
    """What SyncBatchNorm's backward reads from the context its forward filled."""

    def __init__(self, saved_tensors: tuple, process_group, needs_input_grad: tuple):
        self.saved_tensors = saved_tensors
        self.process_group = process_group
        self.needs_input_grad = needs_input_grad


def sync_batch_norm_backward(x: Tensor, weight: Optional[Tensor], record: SyncStats,
                             grad_y: Tensor, needs_input_grad: tuple) -> tuple:
    """SyncBatchNorm's own backward (its one all-reduce of the per-channel gradient
    sums), fed the forward's recorded statistics: gradients w.r.t. x, weight, bias."""
    ctx = _SyncBatchNormContext((x, weight, record.mean, record.invstd, record.count),
                                record.group, needs_input_grad)
    return sync_batch_norm().backward(ctx, grad_y)[:3]


# CPU features -> (torch.cpu's private probe, the /proc/cpuinfo flags that mean the same)
_CPU_FEATURES = {"avx512_bf16": ("_is_avx512_bf16_supported", ("avx512_bf16",)),
                 "amx_bf16": ("_is_amx_tile_supported", ("amx_bf16",)),
                 "amx_fp16": ("_is_amx_fp16_supported", ("amx_fp16",)),
                 # Arm's BF16 and FP16 arithmetic (Neoverse V1/V2, Apple M2+): no probe
                 "arm_bf16": ("", ("bf16",)),
                 "arm_fp16": ("", ("asimdhp",))}


def cpu_features() -> frozenset[str]:
    """The reduced-precision arithmetic this CPU has natively, among _CPU_FEATURES' keys:
    torch's own probe where it has one (what its oneDNN kernels dispatch on), else the
    kernel's flags in /proc/cpuinfo (Linux). An unknown CPU has none of them, so callers
    keep float32: never slower."""
    found = set()
    flags = _cpuinfo_flags()
    for name, (probe, flag_names) in _CPU_FEATURES.items():
        fn = getattr(torch.cpu, probe, None) if probe else None
        try:
            have = bool(fn()) if fn is not None else bool(flags & set(flag_names))
        except Exception:  # a probe that moved or broke: the flags decide
            have = bool(flags & set(flag_names))
        if have:
            found.add(name)
    return frozenset(found)


def _cpuinfo_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            text = f.read(1 << 20)
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return set(value.split())
    return set()


def global_forward_hooks() -> bool:
    """Whether a forward hook registered for every module (register_module_forward_hook
    or _pre_hook) would run: torch keeps them in private dicts; without those, assume so."""
    module = torch.nn.modules.module
    try:
        return bool(module._global_forward_hooks or module._global_forward_pre_hooks)
    except AttributeError:
        return True


def forward_hooked(modules) -> bool:
    """Whether any of ``modules`` has a forward (pre-)hook of its own, so that calling its
    ``forward`` directly would skip it; without torch's private dicts, assume so."""
    try:
        for m in modules:  # a loop, not any(genexpr): this runs once a layer per call
            if m._forward_hooks or m._forward_pre_hooks:
                return True
        return False
    except AttributeError:
        return True


def _pair(v) -> list[int]:
    return list(v) if isinstance(v, (tuple, list)) else [v, v]


def _triple(v) -> list[int]:
    return list(v) if isinstance(v, (tuple, list)) else [v, v, v]


_UNIT_VARIANCE: dict = {}


def _unit_variance(eps: float, dtype: torch.dtype) -> Optional[float]:
    """The ``dtype`` value v with v + eps == 1 in ``dtype`` arithmetic (BatchNorm's
    kernel adds eps to the running var in the parameters' type), or None if there is
    none near 1 - eps."""
    key = (eps, dtype)
    if key not in _UNIT_VARIANCE:
        one = torch.ones((), dtype=dtype)
        v, found = one - eps, None
        for step in (0, 1, -1, 2, -2):
            cand = v
            for _ in range(abs(step)):
                cand = torch.nextafter(cand, one * 2 if step > 0 else one * 0)
            if (cand + eps).item() == 1.0:
                found = cand.item()
                break
        _UNIT_VARIANCE[key] = found
    return _UNIT_VARIANCE[key]


# --- the self-checks: each fast path against the public autograd path -------------------

def _self_check(path: str, device: torch.device) -> Optional[str]:
    """None when the fast path agrees with the public one on ``device``, else why not.
    Runs on fixed tiny inputs (no RNG drawn), outside autocast, with saved-tensor hooks
    of the caller's (memory counters, offloading) masked."""
    # (autocast is left alone unless it is on: entering it costs a device-module lookup
    # that some backends, and test stand-ins for them, do not provide)
    no_autocast = (torch.autocast(device.type, enabled=False)
                   if torch.is_autocast_enabled(device.type) else nullcontext())
    try:
        with no_autocast, torch.autograd.graph.saved_tensors_hooks(_same, _same):
            return _CHECKS[path](device)
    except Exception as e:  # a moved, renamed or changed API: the reason is the message
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")


def _same(t: Tensor) -> Tensor:
    return t


def _data(*shape: int, device: torch.device, phase: float = 0.0) -> Tensor:
    n = math.prod(shape)
    t = torch.sin(torch.arange(n, dtype=torch.float64) * 0.7 + phase) * 2
    return t.to(torch.float32).view(shape).to(device)


def _disagree(fast, public) -> Optional[str]:
    for i, (a, b) in enumerate(zip(fast, public)):
        if a is None or b is None or a.shape != b.shape or \
                not torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-5):
            return f"its result {i} differs from the public computation's"
    return None


def _check_conv_backward(device: torch.device) -> Optional[str]:
    x, w = _data(2, 3, 6, 6, device=device), _data(4, 3, 3, 3, device=device, phase=1.0)
    g = _data(2, 4, 3, 3, device=device, phase=2.0)
    args = ((2, 2), (1, 1), (1, 1), 1)
    fast = _convolution_backward(g, x, w, None, *[list(a) for a in args[:3]], False,
                                 [0, 0], 1, [True, True, False])[:2]
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    with torch.enable_grad():
        public = torch.autograd.grad(F.conv2d(xr, wr, None, *args), (xr, wr), g)
    return _disagree(fast, public)


def _check_norm_act_backward(device: torch.device) -> Optional[str]:
    x = _data(3, 4, 5, 5, device=device)
    w, b = _data(4, device=device, phase=1.0) + 2, _data(4, device=device, phase=2.0)
    rm, rv = torch.zeros(4, device=device), torch.ones(4, device=device)
    g = _data(3, 4, 5, 5, device=device, phase=3.0)
    y, saved = batch_norm_train(x, w, b, rm, rv, 1e-5)
    z = torch.relu(y)
    fast = (z, *batch_norm_backward(x, relu_backward(g, z), w, rm, rv, 1e-5, saved, True,
                                     True))
    if not (torch.equal(rm, torch.zeros_like(rm)) and torch.equal(rv, torch.ones_like(rv))):
        return "it moved the running statistics at momentum 0"
    xr, wr, br = (t.clone().requires_grad_() for t in (x, w, b))
    with torch.enable_grad():
        zr = torch.relu(F.batch_norm(xr, rm.clone(), rv.clone(), wr, br, True, 0.0, 1e-5))
        public = (zr.detach(), *torch.autograd.grad(zr, (xr, wr, br), g))
    return _disagree(fast, public)


def _check_batch_statistics(device: torch.device) -> Optional[str]:
    x = _data(3, 4, 5, 5, device=device)
    w, b = _data(4, device=device, phase=1.0) + 2, _data(4, device=device, phase=2.0)
    with torch.enable_grad():
        xr = x.clone().requires_grad_()
        y = F.batch_norm(xr, torch.zeros(4, device=device), torch.ones(4, device=device),
                         w, b, True, 0.1, 1e-5)
        stats = batch_statistics_of(y.grad_fn)
    if stats is None:
        return "the batch norm's autograd node is not NativeBatchNormBackward0"
    mean, invstd = stats
    public_mean = x.mean((0, 2, 3))
    public_invstd = torch.rsqrt(x.var((0, 2, 3), unbiased=False) + 1e-5)
    again = batch_norm_with_statistics(x, w, b, mean, invstd, 1e-5)
    if again is None:
        return "no unit variance for eps 1e-5"
    return _disagree((mean, invstd, again[0]), (public_mean, public_invstd, y.detach()))


def _check_avg_pool_backward(device: torch.device) -> Optional[str]:
    # images and volumes: the transitions of 2D and 3D nets
    for shape, pool in (((2, 3, 6, 6), F.avg_pool2d), ((2, 3, 4, 6, 6), F.avg_pool3d)):
        x = _data(*shape, device=device)
        g = _data(*shape[:2], *[n // 2 for n in shape[2:]], device=device, phase=1.0)
        fast = avg_pool_backward(g, torch.empty_like(x), 2, 2, 0, False, True, None)
        xr = x.clone().requires_grad_()
        with torch.enable_grad():
            public = torch.autograd.grad(pool(xr, 2, 2), xr, g)
        wrong = _disagree((fast,), public)
        if wrong:
            return f"{pool.__name__}: {wrong}"
    return None


def _check_sync_batch_norm(device: torch.device) -> Optional[str]:
    fn = sync_batch_norm()
    if fn is None:
        return "torch.nn.modules._functions.SyncBatchNorm is gone"
    if not (isinstance(getattr(fn, "_backward_cls", None), type)
            and callable(getattr(fn, "backward", None))):
        return "its autograd function has no _backward_cls or backward"
    if not callable(getattr(torch, "batch_norm_elemt", None)):
        return "torch.batch_norm_elemt is gone"
    if device.type != "cuda":  # the elementwise kernel exists for GPUs only
        return None
    x = _data(3, 4, 5, 5, device=device)
    w, b = _data(4, device=device, phase=1.0) + 2, _data(4, device=device, phase=2.0)
    mean = x.mean((0, 2, 3))
    invstd = torch.rsqrt(x.var((0, 2, 3), unbiased=False) + 1e-5)
    public = F.batch_norm(x, mean, invstd.pow(-2) - 1e-5, w, b, False, 0.0, 1e-5)
    return _disagree((sync_normalise(x.contiguous(), w, b, mean, invstd, 1e-5),), (public,))


_CHECKS: dict[str, Callable[[torch.device], Optional[str]]] = {
    "conv_backward": _check_conv_backward,
    "norm_act_backward": _check_norm_act_backward,
    "batch_statistics": _check_batch_statistics,
    "avg_pool_backward": _check_avg_pool_backward,
    "sync_batch_norm": _check_sync_batch_norm,
}
