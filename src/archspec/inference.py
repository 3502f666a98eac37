"""``optimize_for_inference``: an eval-only DenseNet with the arithmetic rearranged.

All of it is exact in real arithmetic; in float32 outputs stay within 1e-4 (tested for
every zoo spec, with randomised BatchNorm statistics and affine parameters).

1. BatchNorm in eval is a per-channel affine map ``s*x + b``. Where a conv follows it
   linearly (norm2 after conv1, the stem's norms after their convs) it is folded into the
   conv's weight and bias.
2. ``relu(s*x + b) = s*clamp(x, lo, hi) + b`` per channel, with ``lo = -b/s`` for s > 0
   and ``hi = -b/s`` for s < 0 (infinite otherwise). A 1x1 conv that follows absorbs ``s``
   into its weight and ``b`` into its bias, so each dense layer's norm1+ReLU becomes one
   clamp pass. Not used before a 3x3 conv (plain layers): its zero padding would pad
   ``b``, not 0.
3. A transition's average (or blur) pool is linear per channel and commutes with its
   1x1 conv and the per-channel affine, so it runs first: the conv sees a quarter of the
   pixels.
4. Each dense block writes its layers' outputs into one buffer, allocated per call, and
   every layer reads the prefix it needs as a view: the per-layer ``torch.cat`` (quadratic
   memory traffic in depth) disappears, and the block's output is the buffer itself.
   Nothing is cached between calls, so tracing, exporting or compiling the model cannot
   change what a later call returns, and the state_dict's keys depend on the spec only.
   A call that records gradients (input gradients) concatenates instead: autograd
   cannot keep views of a buffer that later layers write into.
5. channels_last by default (oneDNN's preferred layout on CPU, tensor cores' on CUDA).

Group norm is not folded (its statistics depend on the input), nor are activations other
than ReLU moved through a conv; those specs get the transition reordering and the block
buffer only.
"""

# No `from __future__ import annotations`: TorchScript and torch.fx read these types.

import math
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import feature_buffer
from .folding import FoldedCopy, affine, conv_like, fold_after, per_out
from .cache_blocking import images_per_pass, last_level_cache_bytes
from .graph_mode import capturing
from .memory import kernels
from .nn import BATCH_NORMS, CONVS, BlurPool2d, DenseLayer, Transition, make_activation
from .schema import Activation, NormType

__all__ = ["optimize_for_inference", "native_precision", "InferenceDenseNet",
           "InferenceDenseNetFeatures"]


def _per_in(v: Tensor, w: Tensor) -> Tensor:
    """A per-input-channel vector shaped to scale conv weight ``w``."""
    return v.view(1, -1, *[1] * (w.dim() - 2))


def _spatial_sum(w: Tensor) -> Tensor:
    """A conv weight summed over its kernel: what it does to a constant input."""
    return w.sum(dim=tuple(range(2, w.dim())))


def _clamp_bounds(s: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """lo, hi and the shift to fold, for relu(s*x + b)."""
    inf = torch.full_like(s, float("inf"))
    t = torch.where(s != 0, -b / torch.where(s != 0, s, torch.ones_like(s)), torch.zeros_like(s))
    lo = torch.where(s > 0, t, -inf)
    hi = torch.where(s < 0, t, inf)
    shift = torch.where(s == 0, b.clamp(min=0), b)  # s == 0: the output is relu(b)
    return lo, hi, shift


class _Clamp(nn.Module):
    """x -> clamp(x, lo, hi) per channel, in one pass. Both bounds are always buffers
    (infinite where unused), so the state_dict's keys do not depend on the weights."""

    def __init__(self, lo: Tensor, hi: Tensor, dtype: torch.dtype, dims: int = 2):
        super().__init__()
        shape = (1, -1, *[1] * dims)
        self.register_buffer("lo", lo.to(dtype).view(shape))
        self.register_buffer("hi", hi.to(dtype).view(shape))

    def forward(self, x: Tensor) -> Tensor:
        # Bounds in x's dtype (a no-op in fp32). Under autocast the activations are
        # bf16/fp16 and the bounds fp32: a plain clamp would promote its output to fp32
        # (twice the bytes written) and the next conv would spend a pass casting it back
        # (densenet121 b8 on CPU, bf16 autocast: 0.92x -> 1.14x torchvision's
        # throughput; writing through out= instead was slower there, 0.62x). Rounding a
        # bound moves the clamp by at most x's own rounding. No branch on the dtype: FX
        # cannot trace one.
        return torch.clamp(x, self.lo.to(x.dtype), self.hi.to(x.dtype))


class _PointwiseConv2d(nn.Conv2d):
    """A 1x1 conv (stride 1, no padding, one group) on a channels_last input, computed as
    what it is: one matrix product over the pixels, ``F.linear`` on the NHWC view (no
    copy either way). oneDNN's convolution spends more per call at the small spatial sizes
    of a DenseNet's later blocks: densenet121's 1x1 convs at 7x7 ran in 0.45-0.6x the
    time, at 14x14 0.57-0.87x (batch 1, 2 cores), the whole net at batch 1 1.085x faster
    (POINTWISE_PIXELS says where it is used). Same parameters and state_dict as the conv."""

    def forward(self, x: Tensor) -> Tensor:
        out = F.linear(x.permute(0, 2, 3, 1), self.weight.flatten(1), self.bias)
        return out.permute(0, 3, 1, 2)


class _PointwiseConv3d(nn.Conv3d):
    """_PointwiseConv2d for channels_last_3d volumes."""

    def forward(self, x: Tensor) -> Tensor:
        out = F.linear(x.permute(0, 2, 3, 4, 1), self.weight.flatten(1), self.bias)
        return out.permute(0, 4, 1, 2, 3)


# The largest map (pixels per image, after a transition's pool) whose 1x1 convs run as
# matrix products. Measured on 2 cores, alternating with and without, medians: with this
# limit densenet121 ran 1.085x faster at batch 1, 0.994x at batch 8 (noise), and
# densenet-bc-100-12 1.031x at batch 64; with every 1x1 conv a matrix product, densenet121
# at batch 8 ran 0.95x (oneDNN's convolution is as fast or faster at 28x28 and 56x56).
POINTWISE_PIXELS = 14 * 14


def _as_pointwise(conv: nn.Module) -> nn.Module:
    """``conv`` as a _PointwiseConv2d/3d where it is a plain 1x1 conv, else itself."""
    kinds = {nn.Conv2d: _PointwiseConv2d, nn.Conv3d: _PointwiseConv3d}
    kind = kinds.get(type(conv))
    if kind is None or any(k != 1 for k in conv.kernel_size) or \
            any(s != 1 for s in conv.stride) or any(p != 0 for p in conv.padding) or \
            conv.groups != 1 or conv.padding_mode != "zeros":
        return conv
    new = kind(conv.in_channels, conv.out_channels, conv.kernel_size, bias=conv.bias is not None,
               device=conv.weight.device, dtype=conv.weight.dtype)
    new.load_state_dict(conv.state_dict())
    return new


class _NormAct(nn.Module):
    """norm then activation, unfolded (group norm, or a non-ReLU activation)."""

    def __init__(self, norm: nn.Module, act):
        super().__init__()
        self.norm, self.act = norm, act

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(x))


class _FastLayer(nn.Module):
    """A dense layer for inference: pre (clamp, or norm+act) -> conv1 -> [act -> conv2]."""

    def __init__(self, layer: DenseLayer, relu_bn: bool):
        super().__init__()
        # The layer's own activation modules (a PReLU's slope is learned per place)
        self.act = layer.relu2 if layer.bottleneck else nn.Identity()
        self.in_channels, self.growth_rate = layer.in_channels, layer.growth_rate
        norm2_foldable = (layer.bottleneck and isinstance(layer.norm2, BATCH_NORMS)
                          and layer.norm2.affine)
        if relu_bn and layer.bottleneck:
            s, b = affine(layer.norm1)
            lo, hi, shift = _clamp_bounds(s, b)
            w = layer.conv1.weight.double()
            self.pre: nn.Module = _Clamp(lo, hi, layer.norm1.weight.dtype, w.dim() - 2)
            w1 = w * _per_in(s, w)
            b1 = (_spatial_sum(w) @ shift)  # 1x1: W @ shift
            s2, t2 = affine(layer.norm2)
            self.conv1 = conv_like(w1 * per_out(s2, w), b1 * s2 + t2, layer.conv1)
            self.post1: Optional[nn.Module] = None
        else:
            self.pre = _NormAct(layer.norm1, layer.relu1)
            if norm2_foldable:
                self.conv1 = conv_like(*fold_after(layer.conv1, layer.norm2), layer.conv1)
                self.post1 = None
            else:
                self.conv1 = layer.conv1
                self.post1 = layer.norm2 if layer.bottleneck else None
        self.conv2 = layer.conv2 if layer.bottleneck else None
        # The common layer (BN-ReLU folded, a bottleneck, ReLU between the convs) also
        # has a direct eager form, _FastBlock's fast loop
        self.direct = relu_bn and layer.bottleneck and isinstance(self.act, nn.ReLU)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(self.pre(x))
        if self.conv2 is None:
            return out
        if self.post1 is not None:
            out = self.post1(out)
        return self.conv2(self.act(out))


class _FastBlock(nn.Module):
    """Writes every layer's output into one buffer; layers read prefixes of it as views
    (archspec.feature_buffer).

    Widths come from the plan (each layer's ``in_channels`` and ``growth_rate``), so the
    forward has no data-dependent Python: it scripts, traces and exports as it runs."""

    def __init__(self, layers: list[_FastLayer], in_channels: int, out_channels: int,
                 channels_last: bool, dims: int = 2):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.direct = all(layer.direct for layer in layers)
        # Whether eager CPU calls may keep this block's buffer for the next call: only
        # where it cannot leave the model (InferenceDenseNetFeatures turns it off for
        # the blocks whose outputs it returns)
        self.keep_buffer = True
        self.in_channels, self.out_channels = in_channels, out_channels
        self.channels_last = channels_last
        self.dims = dims

    def forward(self, x: Tensor) -> Tensor:
        if not torch.jit.is_scripting():
            if self._records_grad(x):
                return self._concatenated(x)
            if capturing() is None:
                return self._eager(x)
        buf = feature_buffer.allocate(x, self.out_channels, self.channels_last, self.dims)
        for layer in self.layers:
            c, k = layer.in_channels, layer.growth_rate
            buf[:, c:c + k].copy_(layer(buf[:, :c]))
        return buf

    @torch.jit.unused
    def _eager(self, x: Tensor) -> Tensor:
        """The loop as it runs eagerly, with two savings a graph has no use for:
        - on the CPU, the block's buffer kept from call to call where it does not leave
          the model (``keep_buffer``; feature_buffer.kept);
        - a ``direct`` layer with no hooks on it or its parts runs its kernels without
          nn.Module's per-call cost (densenet121 at batch 1: 1.02-1.04x faster, at
          32x32 1.09-1.13x); a hooked one runs as modules, so every hook still sees
          its call."""
        if self.keep_buffer and x.device.type == "cpu":
            buf = feature_buffer.kept(self, x, self.out_channels, self.channels_last, self.dims)
        else:
            buf = feature_buffer.allocate(x, self.out_channels, self.channels_last, self.dims)
        direct = self.direct and not kernels.global_forward_hooks()
        for layer in self.layers:
            c, k = layer.in_channels, layer.growth_rate
            if direct:
                parts = (layer, layer.pre, layer.conv1, layer.act, layer.conv2)
                if not kernels.forward_hooked(parts):
                    buf[:, c:c + k].copy_(_direct_layer(buf[:, :c], *parts[1:]))
                    continue
            buf[:, c:c + k].copy_(layer(buf[:, :c]))
        return buf

    @torch.jit.unused
    def _records_grad(self, x: Tensor) -> bool:
        """Whether autograd records this call (input gradients: saliency maps, adversarial
        examples). The buffer cannot carry them: each layer's write into it bumps the
        version of the prefixes autograd saved. Tracing records the buffer path."""
        if capturing() in ("trace", "fx"):
            return False
        return torch.is_grad_enabled() and x.requires_grad

    @torch.jit.unused
    def _concatenated(self, x: Tensor) -> Tensor:
        return feature_buffer.concatenated(
            x, [_on_concatenation(layer) for layer in self.layers])


def _direct_layer(x: Tensor, pre: "_Clamp", conv1: nn.Module, act: nn.Module,
                  conv2: nn.Module) -> Tensor:
    """_FastLayer.forward of a ``direct`` layer (its parts passed in) with the kernels
    called without nn.Module's call machinery: the same ops on the same tensors, so the
    same result bit for bit. ``act`` is a ReLU, run in place on conv1's fresh output."""
    lo, hi = pre.lo, pre.hi
    if lo.dtype != x.dtype:  # under autocast: bounds in the activations' dtype (_Clamp)
        lo, hi = lo.to(x.dtype), hi.to(x.dtype)
    return conv2.forward(torch.relu_(conv1.forward(torch.clamp(x, lo, hi))))


def _on_concatenation(layer: _FastLayer):
    return lambda features: layer(torch.cat(features, 1))


class _FastTransition(nn.Module):
    """pre (clamp or norm+act) -> pool -> 1x1 conv (scale and shift folded in)."""

    def __init__(self, t: Transition, relu_bn: bool):
        super().__init__()
        self.pool = t.pool
        if relu_bn:
            s, b = affine(t.norm)
            lo, hi, shift = _clamp_bounds(s, b)
            w = t.conv.weight.double()
            self.pre: nn.Module = _Clamp(lo, hi, t.norm.weight.dtype, w.dim() - 2)
            self.conv = conv_like(w * _per_in(s, w), _spatial_sum(w) @ shift, t.conv)
        else:
            self.pre = _NormAct(t.norm, t.relu)
            self.conv = t.conv
        if isinstance(self.pool, BlurPool2d):  # the blur now runs on the input's channels
            self.pool = BlurPool2d(t.conv.in_channels, t.pool.filter_size, t.pool.stride)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.pool(self.pre(x)))


class InferenceDenseNet(FoldedCopy):
    """Eval-only DenseNet from ``optimize_for_inference``; ``plan`` as the source model's.
    ``forward`` returns what the source model's does (logits, or pooled features for a
    headless model); InferenceDenseNetFeatures is the backbone's counterpart."""

    taps: List[int]
    precision_cast: bool
    buffer_per_pixel: float
    cache_bytes: int

    def __init__(self, model: nn.Module, channels_last: bool):
        super().__init__()
        plan = model.plan
        spec = plan.spec
        # plan, dims, dtype= state; channels_last for images, channels_last_3d for
        # volumes (1D has no such layout)
        self._start(model, channels_last)
        channels_last = self.channels_last
        # The CPU forward takes large batches in passes whose block buffers fit this
        # cache (archspec.cache_blocking; 0 turns it off): the largest block buffer's
        # elements per input pixel, and the machine's last-level cache in bytes.
        blocks = [s for s in plan.stages if s.kind == "block"]
        self.buffer_per_pixel = max((s.out_channels * math.prod(s.out_size) for s in blocks),
                                    default=0) / math.prod(plan.stages[0].in_size)
        self.cache_bytes = last_level_cache_bytes()
        # Every tensor an activation sees here is fresh (a norm's or a conv's output), so
        # the model's in-place activation modules serve as they are. The head's is
        # features.relu5 where the activation is learned, else a fresh one.
        feats = dict(model.features.named_children())
        act = feats["relu5"] if "relu5" in feats else make_activation(spec.activation)()
        # ReLU after an affine batch norm: folded into clamps and the next conv
        relu_bn = (spec.activation.type == Activation.relu and spec.norm.type == NormType.batch
                   and spec.norm.is_affine)
        names = list(feats)
        stem: list[nn.Module] = []
        i = 0
        while names[i].startswith(("conv", "norm", "relu")):
            name, mod = names[i], feats[names[i]]
            nxt = names[i + 1] if i + 1 < len(names) else ""
            if isinstance(mod, CONVS) and nxt.startswith("norm") and \
                    isinstance(feats[nxt], BATCH_NORMS) and feats[nxt].affine:
                stem.append(conv_like(*fold_after(mod, feats[nxt]), mod))
                i += 2
                continue
            stem.append(mod)
            i += 1
        self.stem = nn.Sequential(*stem)  # up to the stem's activated norm (a backbone tap)
        self.stem_pool = feats["pool0"] if names[i] == "pool0" else nn.Identity()
        body: list[nn.Module] = []
        for name in names[i:]:
            mod = feats[name]
            if name.startswith("denseblock"):
                stage = plan.stage(name)
                layers = [_FastLayer(layer, relu_bn) for layer in mod.values()]
                body.append(_FastBlock(layers, stage.in_channels, stage.out_channels,
                                       channels_last, plan.dims))
            elif name.startswith("transition"):
                body.append(_FastTransition(mod, relu_bn))
        if channels_last:  # small maps' 1x1 convs: a matrix product on the NHWC view
            stages = [plan.stage(n) for n in names[i:]
                      if n.startswith(("denseblock", "transition"))]
            for mod, stage in zip(body, stages):
                if math.prod(stage.out_size) > POINTWISE_PIXELS:
                    continue
                units = mod.layers if isinstance(mod, _FastBlock) else [mod]
                for unit in units:
                    for name in ("conv", "conv1"):  # a transition's, a layer's first
                        if hasattr(unit, name):
                            setattr(unit, name, _as_pointwise(getattr(unit, name)))
        self.body = nn.ModuleList(body)
        norm5 = feats["norm5"]
        if not hasattr(model, "classifier"):
            # The backbone's taps as positions here: -1 the stem (before its pool), i the
            # output of body[i], len(body) the activated norm5.
            self.feature_info = model.feature_info
            self.out_indices = model.out_indices
            body_names = [n for n in names[i:] if n.startswith(("denseblock", "transition"))]

            def position(module: str) -> int:
                name = module.split(".", 1)[1]
                if name == "norm5":
                    return len(body_names)
                return body_names.index(name) if name in body_names else -1
            self.taps: List[int] = sorted(position(f["module"]) for f in model.feature_info)
            for j in self.taps:  # a returned block output must not be the kept buffer
                if 0 <= j < len(body) and isinstance(body[j], _FastBlock):
                    body[j].keep_buffer = False
            self.head_pre: nn.Module = _NormAct(norm5, act)
            self.classifier: nn.Module = nn.Identity()
        elif relu_bn and isinstance(model.classifier, nn.Linear):
            self.taps = []
            # head: relu(bn5(x)) -> mean -> linear == linear'(mean(clamp(x)))
            s, b = affine(norm5)
            lo, hi, shift = _clamp_bounds(s, b)
            self.head_pre = _Clamp(lo, hi, norm5.weight.dtype, plan.dims)
            w = model.classifier.weight.double()
            self.classifier = nn.Linear(w.shape[1], w.shape[0]).to(model.classifier.weight.dtype)
            self.classifier.weight.data.copy_(w * s.view(1, -1))
            self.classifier.bias.data.copy_(model.classifier.bias.double() + w @ shift)
        else:
            self.taps = []
            self.head_pre = _NormAct(norm5, act)
            self.classifier = model.classifier
        self._finish()

    def forward(self, x: Tensor) -> Tensor:
        if not torch.jit.is_scripting():
            parts = self._passes(x)
            if parts is not None:  # a large CPU batch: passes that stay in the cache
                return torch.cat([self._forward(part) for part in parts])
        return self._forward(x)

    @torch.jit.unused
    def _passes(self, x: Tensor) -> Optional[List[Tensor]]:
        """x split into the passes archspec.cache_blocking asks for, or None for one pass
        (always on GPUs, in graph captures, and where the cache size is unknown: a
        captured graph must not depend on the machine that captured it)."""
        if capturing() is not None or self.cache_bytes <= 0 or x.device.type != "cpu" \
                or x.dim() != self.dims + 2:
            return None
        itemsize = (self.compute_dtype_probe.element_size() if self.precision_cast
                    else x.element_size())
        per_image = math.ceil(self.buffer_per_pixel * math.prod(x.shape[2:])) * itemsize
        n = images_per_pass(x.shape[0], per_image, self.cache_bytes)
        return None if n >= x.shape[0] else list(x.split(n))

    def _forward(self, x: Tensor) -> Tensor:
        h = self._laid_out(x)
        h = self.stem_pool(self.stem(h))
        for mod in self.body:
            h = mod(h)
        h = self.head_pre(h)
        if self.dims == 2:
            h = F.adaptive_avg_pool2d(h, 1)
        elif self.dims == 3:
            h = F.adaptive_avg_pool3d(h, 1)
        else:
            h = F.adaptive_avg_pool1d(h, 1)
        return self._as_input(self.classifier(torch.flatten(h, 1)), x)


class InferenceDenseNetFeatures(InferenceDenseNet):
    """``optimize_for_inference`` of a ``features_only`` backbone: the same list of feature
    maps (``feature_info`` and ``out_indices`` carried over)."""

    def forward(self, x: Tensor) -> List[Tensor]:  # type: ignore[override]
        if not torch.jit.is_scripting():
            parts = self._passes(x)
            if parts is not None:  # each level's maps, pass by pass, joined
                outs = [self._features(part) for part in parts]
                return [torch.cat([o[i] for o in outs]) for i in range(len(outs[0]))]
        return self._features(x)

    def _features(self, x: Tensor) -> List[Tensor]:
        h = self._laid_out(x)
        h = self.stem(h)
        out: List[Tensor] = []
        if -1 in self.taps:
            out.append(h)
        h = self.stem_pool(h)
        j = 0
        for mod in self.body:
            h = mod(h)
            if j in self.taps:
                out.append(h)
            j += 1
        if len(self.body) in self.taps:
            out.append(self.head_pre(h))
        return self._all_as_input(out, x)


def optimize_for_inference(model: nn.Module, *, channels_last: bool = True,
                           example_input: Optional[Tensor] = None,
                           dtype: Optional[torch.dtype] = None) -> nn.Module:
    """An eval-only copy of an archspec model (DenseNet, VoVNet, HarDNet or PeleeNet, or a
    ``features_only`` backbone), rearranged for speed (see the module docstring). The
    original model is left untouched; weights are copied at call time.

    ``dtype`` (torch.bfloat16, torch.float16) makes the copy compute in that precision,
    its weights folded in float64 and rounded once. It takes inputs of any float dtype and
    returns outputs in the input's dtype. Where the device has no native arithmetic for
    it (a CPU without AVX512-BF16, AMX or Arm's BF16/FP16, where it would run slower than
    float32) the copy stays in float32 and a warning says so (:func:`native_precision`).

    With ``example_input`` (a batch on the model's device, in the dtype and under the
    autocast state calls will use) the copy's forward is also recorded as a CUDA graph
    and replayed for calls of that shape or a smaller batch: a
    :class:`archspec.capture.CapturedInference`, for small batches where launch
    overhead dominates."""
    if dtype is not None and (not isinstance(dtype, torch.dtype)
                              or not dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch.dtype such as torch.bfloat16, "
                        f"not {dtype!r}")
    fast = _optimized(model, channels_last)
    if dtype is not None:
        fast = _in_precision(fast, dtype)
    return fast if example_input is None else _captured(fast, example_input)


def native_precision(dtype: torch.dtype, device) -> tuple[bool, str]:
    """Whether ``device`` computes ``dtype`` natively (so a model in it runs faster than
    in float32), and what that verdict rests on."""
    device = torch.device(device)
    if dtype in (torch.float32, torch.float64):
        return True, f"{dtype} is computed as is everywhere"
    if device.type == "cuda":
        if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            return False, "this GPU has no bfloat16 arithmetic"
        return True, f"CUDA computes {dtype} natively"
    if device.type != "cpu":
        return True, f"{device.type} is trusted to compute {dtype}"
    from .memory.kernels import cpu_features

    have = cpu_features()
    wanted = {torch.bfloat16: ("avx512_bf16", "amx_bf16", "arm_bf16"),
              torch.float16: ("amx_fp16", "arm_fp16")}.get(dtype, ())
    found = [f for f in wanted if f in have]
    if found:
        return True, f"the CPU has {', '.join(found)}"
    return False, (f"the CPU has none of {', '.join(wanted) or 'the instructions for it'}: "
                   f"{dtype} would be emulated, slower than float32")


def _in_precision(fast: nn.Module, dtype: torch.dtype) -> nn.Module:
    fast.precision_cast = True  # inputs cast to what it computes in, outputs back
    device = next(fast.parameters()).device
    native, why = native_precision(dtype, device)
    if not native:
        import warnings

        keep = next(fast.parameters()).dtype
        warnings.warn(f"optimize_for_inference(dtype={dtype}): {why}; the copy computes in "
                      f"{keep} instead (same interface, outputs in the input's dtype)",
                      stacklevel=3)
        return fast
    return fast.to(dtype)


def _optimized(model: nn.Module, channels_last: bool) -> nn.Module:
    family = getattr(getattr(model, "plan", None), "family", None)
    if family == "vovnet" and hasattr(model, "stages"):
        from .inference_vovnet import InferenceVoVNet, InferenceVoVNetFeatures

        cls = InferenceVoVNet if hasattr(model, "head") else InferenceVoVNetFeatures
        return cls(model, channels_last)
    if family == "hardnet" and hasattr(model, "stem"):
        from .inference_hardnet import InferenceHarDNet, InferenceHarDNetFeatures

        cls = InferenceHarDNet if hasattr(model, "head") else InferenceHarDNetFeatures
        return cls(model, channels_last)
    if family == "peleenet" and hasattr(model, "features"):
        from .inference_peleenet import InferencePeleeNet, InferencePeleeNetFeatures

        cls = InferencePeleeNet if hasattr(model, "classifier") else InferencePeleeNetFeatures
        return cls(model, channels_last)
    if not hasattr(model, "plan") or not hasattr(model, "features"):
        raise TypeError("optimize_for_inference takes a model built by archspec.build "
                        "(a DenseNet, VoVNet, HarDNet or PeleeNet, or a features_only backbone), not "
                        f"{type(model).__name__}")
    import copy

    hooked = [name or "the model" for name, m in model.named_modules()
              if m._forward_hooks or m._forward_pre_hooks]
    if hooked:
        import warnings

        warnings.warn(f"optimize_for_inference: the forward hooks on {', '.join(hooked[:3])}"
                      f"{' and more' if len(hooked) > 3 else ''} are not carried over (the "
                      "optimized model is made of other modules); register them on the "
                      "result if it has what they need", stacklevel=3)
    cls = InferenceDenseNet if hasattr(model, "classifier") else InferenceDenseNetFeatures
    with torch.no_grad():  # folded weights and bounds are constants, not graph nodes
        return cls(copy.deepcopy(model).eval(), channels_last)


def _captured(fast: nn.Module, example_input: Tensor) -> nn.Module:
    """``fast`` recorded as a CUDA graph for ``example_input``'s shape."""
    if not isinstance(example_input, Tensor):
        raise TypeError(f"example_input must be a tensor, not {type(example_input).__name__}")
    device = next(fast.parameters()).device
    if example_input.device != device:
        raise ValueError(f"example_input is on {example_input.device}, the model on "
                         f"{device}: record on the device calls will use")
    from .capture import CapturedInference  # only here: most callers never record

    return CapturedInference(fast, example_input)
