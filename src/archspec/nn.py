"""The DenseNet building blocks, named as torchvision (and timm) name them so checkpoints
interchange. Each class takes its widths from the plan (archspec.plan); none computes a
channel count.

Activation modules keep torchvision's names (``relu0``, ``relu1``, ...) whatever the
activation, so module paths stay stable across specs; they hold no parameters.
"""

# No `from __future__ import annotations` here: torch.fx generates code from these
# modules' annotations, and TorchScript reads them; both need real types.
import warnings
from collections import OrderedDict
from contextlib import contextmanager, nullcontext
from math import comb
from typing import Callable, List, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .graph_mode import capturing
from .rules import blur_padding, transition_recomputes
from .schema import Activation, NormSpec, NormType

try:  # SyncBatchNorm's autograd function: the memory-efficient path reuses its backward
    from torch.nn.modules._functions import SyncBatchNorm as _SyncBatchNormFn
except ImportError:  # a torch without it: blocks with SyncBatchNorm take the plain path
    _SyncBatchNormFn = None

__all__ = ["Norm", "make_norm", "make_activation", "activate", "BlurPool2d",
           "DenseLayer", "DenseBlock", "Transition", "imagenet_stem", "cifar_stem",
           "deep_stem"]

Norm = Callable[[int], nn.Module]


def make_norm(spec: NormSpec) -> Norm:
    """channels -> the norm layer the spec asks for (the plan has checked group sizes)."""
    if spec.type == NormType.group:
        return lambda c: nn.GroupNorm(spec.groups, c)
    return nn.BatchNorm2d


def make_activation(kind: Activation) -> Callable[[], nn.Module]:
    if kind == Activation.silu:
        return lambda: nn.SiLU(inplace=True)
    if kind == Activation.gelu:
        return nn.GELU  # no in-place variant
    return lambda: nn.ReLU(inplace=True)


def activate(kind: str, x: Tensor, inplace: bool) -> Tensor:
    """The functional activation for the head and the backbone taps. ``kind`` is the
    spec's value as a plain string, so forwards branch on it (TorchScript compiles that,
    where it cannot call a stored function) and FX names the node after the function
    (``relu``, as in torchvision's graph). GELU has no in-place form."""
    if kind == "relu":
        return F.relu(x, inplace=inplace)
    if kind == "silu":
        return F.silu(x, inplace=inplace)
    return F.gelu(x)


class BlurPool2d(nn.Module):
    """Anti-aliased stride-2 downsampling: a fixed binomial blur, applied per channel
    (Zhang 2019; the layout of timm's BlurPool2d: reflect padding, a non-persistent
    ``filt`` buffer, so state_dicts carry no extra keys)."""

    def __init__(self, channels: int, filter_size: int = 3, stride: int = 2):
        super().__init__()
        self.channels, self.filter_size, self.stride = channels, filter_size, stride
        self.padding = [blur_padding(filter_size, stride)] * 4
        coeffs = torch.tensor([comb(filter_size - 1, k) for k in range(filter_size)],
                              dtype=torch.float32) / 2 ** (filter_size - 1)
        filt = (coeffs[:, None] * coeffs[None, :])[None, None].repeat(channels, 1, 1, 1)
        self.register_buffer("filt", filt, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        x = F.pad(x, self.padding, mode="reflect")
        return F.conv2d(x, self.filt.to(x.dtype), stride=self.stride, groups=self.channels)


class DenseLayer(nn.Module):
    """H_l of the paper: norm-act-Conv1x1(bn_size*k)-norm-act-Conv3x3(k) (DenseNet-B), or
    norm-act-Conv3x3(k) when ``bottleneck_channels`` is None.

    ``forward`` takes the list of all earlier feature maps of its block, concatenates them
    (torchvision's ``cat`` node, so FX feature extractors written for torchvision work) and
    returns its k new channels. The memory-efficient block calls ``new_features`` on a
    prefix of its shared buffer instead.
    """

    bottleneck: torch.jit.Final[bool]  # a constant to TorchScript: plain layers have no conv2
    # Read in eager only (the memory-efficient block's bookkeeping)
    __jit_ignored_attributes__ = ["_norm_stats", "_recomputing"]

    def __init__(self, in_channels: int, bottleneck_channels: Optional[int], growth_rate: int,
                 drop_rate: float, memory_efficient: bool, norm: Norm = nn.BatchNorm2d,
                 act: Callable[[], nn.Module] = lambda: nn.ReLU(inplace=True)):
        super().__init__()
        self.norm1 = norm(in_channels)
        self.relu1 = act()
        if bottleneck_channels is None:
            self.conv1 = nn.Conv2d(in_channels, growth_rate, kernel_size=3, padding=1,
                                   bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, bottleneck_channels, kernel_size=1, bias=False)
            self.norm2 = norm(bottleneck_channels)
            self.relu2 = act()
            self.conv2 = nn.Conv2d(bottleneck_channels, growth_rate, kernel_size=3, padding=1,
                                   bias=False)
        self.in_channels, self.growth_rate = in_channels, growth_rate  # from the plan
        self.bottleneck = bottleneck_channels is not None
        self.drop_rate = float(drop_rate)
        self.memory_efficient = memory_efficient
        # Set by _SharedStorageBlock only, while it runs the layer: the norms' recorded
        # statistics (forward) and whether this is backward's recomputation.
        self._norm_stats: Optional[dict] = None
        self._recomputing = False

    def forward(self, features: List[Tensor]) -> Tensor:
        return self.new_features(torch.cat(features, 1))

    def bottleneck_fn(self, x: Tensor) -> Tensor:
        """norm1-act-conv1 of the concatenated features: the part whose stored inputs grow
        quadratically with depth."""
        return self.conv1(self.relu1(self._norm1(x)))

    def new_features(self, x: Tensor) -> Tensor:
        """The layer's k new channels from the concatenation of the earlier feature maps."""
        return self.tail(self.bottleneck_fn(x))

    def tail(self, b: Tensor) -> Tensor:
        """From conv1's output to the k new channels: dropout, then (DenseNet-B)
        norm2-act-conv2 and dropout again, as the paper's reference code places it."""
        out = self._drop(b)
        if not self.bottleneck:
            return out
        return self._drop(self.conv2(self.relu2(self._norm2(out))))

    def _norm1(self, x: Tensor) -> Tensor:
        if not torch.jit.is_scripting():
            if self._norm_stats is not None:
                return _norm_in_block(self.norm1, x, self._norm_stats, self._recomputing)
        return self.norm1(x)

    def _norm2(self, x: Tensor) -> Tensor:
        if not torch.jit.is_scripting():
            if self._norm_stats is not None:
                return _norm_in_block(self.norm2, x, self._norm_stats, self._recomputing)
        return self.norm2(x)

    def _drop(self, x: Tensor) -> Tensor:
        if self.drop_rate > 0:
            return F.dropout(x, p=self.drop_rate, training=self.training)
        return x


class _SyncStats(NamedTuple):
    """A SyncBatchNorm's global batch statistics, gathered once in the forward."""
    mean: Tensor
    invstd: Tensor
    count: Tensor
    group: object


class _BatchStats(NamedTuple):
    """A BatchNorm's batch statistics from the forward's own kernel (on the CPU), which
    the direct backward reuses instead of computing them again (see _norm_act)."""
    mean: Tensor
    invstd: Tensor


def _norm_in_block(norm: nn.Module, x: Tensor, stats: dict, replay: bool) -> Tensor:
    """A norm inside the shared-storage block (_SharedStorageBlock).

    In the block's forward (``replay`` False) the norm runs as it always does, once: one
    update of the running statistics, and for a SyncBatchNorm one all-gather of the
    ranks' statistics. Its batch statistics are recorded in ``stats``: a synchronised
    SyncBatchNorm's global mean and invstd, or on the CPU a BatchNorm's.
    In backward's recomputation (``replay`` True) it normalises again with the same batch
    statistics and no side effect: BatchNorm with momentum 0, so the running statistics
    do not move; a synchronised SyncBatchNorm with the recorded global statistics, so no
    second all-gather and no local statistics that would differ from the forward's."""
    if replay:
        record = stats.get(id(norm))
        if isinstance(record, _SyncStats):
            return _SyncNormReplay.apply(x, norm.weight, norm.bias, norm.eps, record)
        if isinstance(norm, (nn.BatchNorm2d, nn.SyncBatchNorm)) and norm.training:
            # (a SyncBatchNorm that did not synchronise computed as BatchNorm does)
            return F.batch_norm(x, norm.running_mean, norm.running_var, norm.weight,
                                norm.bias, True, 0.0, norm.eps)
        return norm(x)
    if isinstance(norm, nn.SyncBatchNorm) and norm.training and _distributed():
        # SyncBatchNorm's own forward decides whether to synchronise; when it does, its
        # autograd node holds the global statistics.
        y, node = _run_for_node(norm, x)
        if isinstance(node, _SyncBatchNormFn._backward_cls):
            _, _, mean, invstd, count = node.saved_tensors
            stats[id(norm)] = _SyncStats(mean, invstd, count, node.process_group)
        return y
    if _keeps_statistics(norm, x):
        y, stats[id(norm)] = _batch_norm_keeping_statistics(norm, x)
        return y
    return norm(x)


def _keeps_statistics(norm: nn.Module, x: Tensor) -> bool:
    """Whether the forward records this norm's batch statistics for the direct backward
    to reuse (_norm_act): a training BatchNorm2d on the CPU. On CUDA the backward
    recomputes them, since cuDNN's inference and training kernels need not agree to the
    bit."""
    return type(norm) is nn.BatchNorm2d and x.device.type == "cpu" and _direct_norm(norm, None)


def _run_for_node(norm: nn.Module, x: Tensor) -> tuple[Tensor, object]:
    """norm(x) through the module (its hooks fire, its statistics update once) and the
    autograd node it made, for the batch statistics it saved. The node and the input
    it saved are dropped when the caller is done: only per-channel statistics are kept,
    and the caller's saved-tensor hooks (save_on_cpu, memory counters) never see the
    transient save."""
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(_same, _same):
        y = norm(x.detach().requires_grad_())
    return y.detach(), y.grad_fn


def _batch_norm_keeping_statistics(norm: nn.BatchNorm2d, x: Tensor
                                   ) -> tuple[Tensor, Optional[_BatchStats]]:
    """A training BatchNorm's forward on the CPU, and the batch mean and invstd its kernel
    computed (what autograd's node for it saves)."""
    y, node = _run_for_node(norm, x)
    if type(node).__name__ != "NativeBatchNormBackward0":
        return y, None
    return y, _BatchStats(node._saved_result1, node._saved_result2)


def _same(t: Tensor) -> Tensor:
    return t


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


class _SyncNormReplay(torch.autograd.Function):
    """A synchronised SyncBatchNorm recomputed in backward: the forward's normalisation
    with its recorded global statistics, then SyncBatchNorm's own backward (its one
    all-reduce of the per-channel gradient sums), so the gradients are the plain model's
    and the collectives are the plain model's, in number and in order on every rank."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                eps: float, record: tuple) -> Tensor:
        mean, invstd = record.mean, record.invstd
        # The layouts SyncBatchNorm's forward normalised (it makes other inputs contiguous)
        if not (x.is_contiguous(memory_format=torch.channels_last)
                or x.is_contiguous(memory_format=torch.channels_last_3d)):
            x = x.contiguous()
        if weight is not None:
            weight = weight.contiguous()
        ctx.save_for_backward(x, weight)
        ctx.record = record
        if x.numel() == 0:
            return torch.empty_like(x)
        return torch.batch_norm_elemt(x, weight, bias, mean, invstd, eps)

    @staticmethod
    def backward(ctx, grad_y: Tensor):
        x, weight = ctx.saved_tensors
        r = ctx.record
        saved = _SyncBatchNormContext((x, weight, r.mean, r.invstd, r.count), r.group,
                                      ctx.needs_input_grad[:3])
        grad_x, grad_w, grad_b = _SyncBatchNormFn.backward(saved, grad_y)[:3]
        return grad_x, grad_w, grad_b, None, None


class _SyncBatchNormContext:
    """What SyncBatchNorm's backward reads from the context its forward filled."""

    def __init__(self, saved_tensors: tuple, process_group, needs_input_grad: tuple):
        self.saved_tensors = saved_tensors
        self.process_group = process_group
        self.needs_input_grad = needs_input_grad


class DenseBlock(nn.ModuleDict):
    """Layers ``denselayer1..L``; returns the block input concatenated with every layer's output.

    ``memory_efficient`` (the spec's setting, or timm's ``set_grad_checkpointing``) chooses
    how an eager training forward stores what backward needs:

    - ``False``: plain autograd, as torchvision's default.
    - ``True``: the efficient-DenseNet trade (Pleiss et al., 2017). Features live in one
      shared buffer; the cheap, memory-bound part of each layer (concatenation, norm1,
      activation, and the bottleneck's norm2-activation) is recomputed in backward, and
      the convolutions' outputs are kept, so no convolution runs twice.
    - ``"max"``: only the block's output is kept; backward recomputes every layer,
      convolutions included. The least memory, for the most time.

    Either level gives the plain model's gradients bit for bit and updates BatchNorm's
    statistics once; a SyncBatchNorm also synchronises once (its recomputation reuses
    the gathered statistics). Scripted, traced and exported models, and every forward
    without gradients, take the plain path (the same function); under torch.compile each
    layer's concatenation-norm1-act-conv1 is checkpointed, which dynamo can see through
    (blocks holding a SyncBatchNorm: the plain path). Under ``max``, Transition
    recomputes the same way.
    """

    # TorchScript types attributes it reads; this one (bool or "max") is read in eager only.
    __jit_ignored_attributes__ = ["memory_efficient"]

    def __init__(self, layers: List[DenseLayer], out_channels: int):
        super().__init__(OrderedDict((f"denselayer{j}", layer)
                                     for j, layer in enumerate(layers, start=1)))
        self.out_channels = out_channels  # the plan's; sizes the shared feature buffer
        self.memory_efficient = layers[0].memory_efficient if layers else False

    def forward(self, init_features: Tensor) -> Tensor:
        if not torch.jit.is_scripting():
            if self._recomputes(init_features):
                mode = capturing()
                if mode is None:
                    return self._shared_storage(init_features)
                if mode == "compile" and self.training and not self._holds_sync_batch_norm():
                    return self._checkpointed(init_features)
        features = [init_features]
        for name, layer in self.items():
            new_features = layer(features)
            features.append(new_features)
        return torch.cat(features, 1)

    @torch.jit.unused
    def _recomputes(self, x: Tensor) -> bool:
        """Whether this forward stores less and recomputes in backward: a memory level is
        set, gradients are recorded, and something in the block needs one."""
        if not self.memory_efficient or not torch.is_grad_enabled():
            return False
        if capturing() in ("trace", "fx"):
            return False  # a traced graph is for deployment: the plain function
        if _SyncBatchNormFn is None and self._holds_sync_batch_norm():
            if not getattr(self, "_warned_sync", False):
                self._warned_sync = True
                warnings.warn("memory_efficient is not applied to dense blocks with "
                              "SyncBatchNorm in this torch version (its autograd function "
                              "is not where archspec looks for it): they train on the "
                              "plain path (same gradients, more memory)", stacklevel=3)
            return False
        return x.requires_grad or any(p.requires_grad for p in self.parameters())

    @torch.jit.unused
    def _holds_sync_batch_norm(self) -> bool:
        """SyncBatchNorm (after nn.SyncBatchNorm.convert_sync_batchnorm) normalises with
        statistics all-gathered across ranks. Eager recomputation replays them
        (_norm_in_block); a compiled block takes the plain path instead, since
        checkpointing would run the synchronising norm a second time."""
        return any(isinstance(m, nn.SyncBatchNorm) for m in self.modules())

    @torch.jit.unused
    def _shared_storage(self, x: Tensor) -> Tensor:
        params = [p for p in self.parameters() if p.requires_grad]
        return _SharedStorageBlock.apply(self, self.memory_efficient != "max", x, *params)

    @torch.jit.unused
    def _checkpointed(self, x: Tensor) -> Tensor:
        """The compiled form: torchvision's memory-efficient
        layer, checkpointing concatenation-norm1-act-conv1, which dynamo traces as one
        higher-order op. BatchNorm's update happens in the forward graph only."""
        from torch.utils.checkpoint import checkpoint

        features = [x]
        for layer in self.values():
            b = checkpoint(_cat_bottleneck, layer, *features, use_reentrant=False)
            features.append(layer.tail(b))
        return torch.cat(features, 1)


def _memory_format(x: Tensor) -> torch.memory_format:
    """The layout torch.cat gives the plain path's features: channels_last for a
    channels_last block input (the fast layout for convolutions on GPUs, under AMP
    above all), else contiguous. Where both fit (1x1 maps, one channel) the strides
    decide, as torch's suggest_memory_format does."""
    if (x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
            and x.stride(1) < x.stride(2)):
        return torch.channels_last
    return torch.contiguous_format


def _cat_bottleneck(layer: DenseLayer, *features: Tensor) -> Tensor:
    return layer.bottleneck_fn(torch.cat(features, 1))


def _rng_state(device: torch.device) -> tuple:
    cpu = torch.get_rng_state()
    return (cpu, torch.cuda.get_rng_state(device)) if device.type == "cuda" else (cpu, None)


@contextmanager
def _replayed_rng(device: torch.device, state: tuple):
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.set_rng_state(state[0])
        if state[1] is not None:
            torch.cuda.set_rng_state(state[1], device)
        yield


class _SharedStorageBlock(torch.autograd.Function):
    """A dense block whose features live in one buffer, the block's output.

    Every layer writes its k new channels into one preallocated buffer, so the features
    are never copied into per-layer concatenations that autograd would keep, and the
    buffer is the block's output (which the next transition keeps anyway). Every layer's
    input is a prefix of that buffer, so backward can rebuild it, newest layer first, and
    accumulate the gradients of all features into one shared gradient buffer.

    ``keep_bottleneck`` (``memory_efficient: true``) also keeps each layer's conv1 output
    (the b = bn_size*k bottleneck channels, or the k new channels without a bottleneck):
    backward then recomputes only norm1-act on the prefix and norm2-act on b, which are
    memory-bound, and feeds the kept tensors straight to the convolutions' backward.
    Without it (``"max"``) backward reruns conv1 too; conv2's forward is never rerun
    unless dropout follows it.
    """

    @staticmethod
    def forward(ctx, block: DenseBlock, keep_bottleneck: bool, x: Tensor,
                *params: Tensor) -> Tensor:
        layers = list(block.values())
        n, c0, h, w = x.shape
        fmt = _memory_format(x)
        buf = torch.empty((n, block.out_channels, h, w), dtype=x.dtype, device=x.device,
                          memory_format=fmt)
        buf[:, :c0].copy_(x)
        rng, kept, stats = [], [], []
        for layer in layers:  # layer j reads channels [0, in_channels), adds growth_rate
            c, k = layer.in_channels, layer.growth_rate
            rng.append(_rng_state(x.device) if layer.training and layer.drop_rate > 0 else None)
            stats.append({})
            layer._norm_stats, layer._recomputing = stats[-1], False
            try:
                # A contiguous copy of the prefix in the input's layout, as torch.cat
                # gives the plain path: the same kernels see the same layout, so the
                # gradients are bitwise the plain model's.
                b = layer.bottleneck_fn(buf[:, :c].contiguous(memory_format=fmt))
                if keep_bottleneck:
                    kept.append(b)
                buf[:, c:c + k].copy_(layer.tail(b))
            finally:
                layer._norm_stats = None
        ctx.block, ctx.rng, ctx.c0, ctx.norm_stats = block, rng, c0, stats
        ctx.memory_format = fmt
        ctx.autocast = _autocast_state()
        ctx.save_for_backward(buf, *kept)
        return buf

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):
        buf, *kept = ctx.saved_tensors
        layers = list(ctx.block.values())
        fmt = ctx.memory_format
        grad_buf = grad_out.clone(memory_format=fmt)
        grads: dict[int, Tensor] = {}
        for j in range(len(layers) - 1, -1, -1):
            layer, rng = layers[j], ctx.rng[j]
            c, k = layer.in_channels, layer.growth_rate
            # Dropout replays its forward masks from the saved RNG state; the caller's RNG
            # stream is restored afterwards (fork_rng), as if backward drew nothing.
            replay = _replayed_rng(buf.device, rng) if rng is not None else nullcontext()
            with torch.enable_grad(), replay, _autocast_like(ctx.autocast):
                layer._norm_stats, layer._recomputing = ctx.norm_stats[j], True
                try:
                    # the layer's input, as the forward (and torch.cat) laid it out
                    prefix = buf[:, :c].contiguous(memory_format=fmt)
                    if _direct(layer, ctx.norm_stats[j]):
                        grad_x = _direct_layer_grads(layer, prefix,
                                                     kept[j] if kept else None,
                                                     grad_buf[:, c:c + k], grads,
                                                     ctx.norm_stats[j])
                    elif kept:
                        grad_x = _layer_grads_from_kept(layer, prefix, kept[j],
                                                        grad_buf[:, c:c + k], grads)
                    else:
                        grad_x = _layer_grads_recomputed(layer, prefix,
                                                         grad_buf[:, c:c + k], grads)
                    del prefix
                finally:
                    layer._norm_stats, layer._recomputing = None, False
            grad_buf[:, :c] += grad_x

        block_params = [p for p in ctx.block.parameters() if p.requires_grad]
        grad_x = grad_buf[:, :ctx.c0] if ctx.needs_input_grad[2] else None
        return (None, None, grad_x, *[grads.get(id(p)) for p in block_params])


def _layer_grads_recomputed(layer: DenseLayer, prefix: Tensor, grad_new: Tensor,
                            grads: dict[int, Tensor]) -> Tensor:
    """``"max"``: rerun the layer from its input prefix (conv1 included) and backpropagate;
    returns the prefix's gradient and accumulates the parameters' into ``grads``."""
    inp = prefix.detach().requires_grad_(True)
    params = [p for p in layer.parameters() if p.requires_grad]
    if layer.bottleneck and layer.drop_rate == 0:
        # conv2's output is not needed for backward, only its input: stop the
        # recomputation there and take conv2's gradients directly.
        z = layer.relu2(layer._norm2(layer.bottleneck_fn(inp)))
        out, grad_new = z, _conv_grads(layer.conv2, z, grad_new, grads)
        params = [p for p in params if p is not layer.conv2.weight]
    else:
        out = layer.new_features(inp)
    got = torch.autograd.grad(out, [inp, *params], grad_new, allow_unused=True)
    _accumulate_all(grads, params, got[1:])
    return got[0]


def _layer_grads_from_kept(layer: DenseLayer, prefix: Tensor, b: Tensor, grad_new: Tensor,
                           grads: dict[int, Tensor]) -> Tensor:
    """``True``: backpropagate through the layer with its conv1 output ``b`` kept from the
    forward. Only norm-act pieces are recomputed; both convolutions go straight to their
    backward kernels (conv2's forward reruns only when dropout follows it)."""
    b = b.detach().requires_grad_(True)
    # The tail, from conv1's output to the new features: gradient w.r.t. b.
    if layer.bottleneck and layer.drop_rate == 0:
        z2 = layer.relu2(layer._norm2(b))
        grad_z2 = _conv_grads(layer.conv2, z2, grad_new, grads)
        tail_params = [p for p in layer.norm2.parameters() if p.requires_grad]
        got = torch.autograd.grad(z2, [b, *tail_params], grad_z2, allow_unused=True)
    elif layer.bottleneck or layer.drop_rate > 0:
        tail = [layer.norm2, layer.conv2] if layer.bottleneck else []
        tail_params = [p for m in tail for p in m.parameters() if p.requires_grad]
        got = torch.autograd.grad(layer.tail(b), [b, *tail_params], grad_new,
                                  allow_unused=True)
    else:  # no bottleneck, no dropout: b is the new features
        tail_params, got = [], (grad_new,)
    _accumulate_all(grads, tail_params, got[1:])
    # The head: norm1-act recomputed from the prefix, conv1 straight to its backward.
    inp = prefix.detach().requires_grad_(True)
    z1 = layer.relu1(layer._norm1(inp))
    grad_z1 = _conv_grads(layer.conv1, z1, got[0], grads)
    head_params = [p for p in layer.norm1.parameters() if p.requires_grad]
    got = torch.autograd.grad(z1, [inp, *head_params], grad_z1, allow_unused=True)
    _accumulate_all(grads, head_params, got[1:])
    return got[0]


def _norm_act(norm: nn.BatchNorm2d, x: Tensor, kept: Optional[_BatchStats] = None
              ) -> tuple[Tensor, tuple]:
    """relu(norm(x)) recomputed for backward, with what its backward kernel needs.

    Without ``kept`` the batch statistics are recomputed with momentum 0, so the running
    ones do not move again; ``_batch_norm_impl_index`` picks native, cuDNN or MIOpen as
    F.batch_norm does, so the output and the backward below are bitwise autograd's.

    With ``kept`` (the forward's statistics, on the CPU) no reduction runs again: the
    same kernel normalises in eval mode with running mean = the batch mean, running var
    = v where v + eps == 1 exactly (so its invstd is 1) and weight = invstd * weight. The
    kernel's per-channel scale and shift, weight*invstd and bias - mean*scale, are then
    the training forward's to the bit, and so is the output. That saves a pass over the
    layer's input per norm (densenet121's `true` step on 2 CPU cores: see
    docs/benchmarks.md); the bitwise tests of both levels check it."""
    unit = _unit_variance(norm.eps, norm.weight.dtype) if kept is not None else None
    if unit is not None:
        y = torch.ops.aten._batch_norm_impl_index(
            x, kept.invstd * norm.weight, norm.bias, kept.mean,
            torch.full_like(kept.invstd, unit), False, 0.0, norm.eps,
            torch.backends.cudnn.enabled)[0]
        return torch.relu_(y), (kept.mean, kept.invstd, x.new_empty(0), 0)
    y, mean, invstd, reserve, impl = torch.ops.aten._batch_norm_impl_index(
        x, norm.weight, norm.bias, norm.running_mean, norm.running_var, True, 0.0, norm.eps,
        torch.backends.cudnn.enabled)
    return torch.relu_(y), (mean, invstd, reserve, impl)


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


def _norm_act_conv_backward(norm: nn.BatchNorm2d, x: Tensor, z: Tensor, stats: tuple,
                            conv: nn.Conv2d, grad_out: Tensor, grads: dict[int, Tensor]
                            ) -> Tensor:
    """The gradient of conv(z), z = relu(norm(x)), w.r.t. x; the norm's and the conv's
    parameter gradients are accumulated into ``grads``. Every kernel is the one autograd
    would call, called directly: no autograd-engine run per layer, which is most of the
    recomputation's cost at small batches (densenet-bc-100-12 b8 on CPU: 1.28x ->
    1.14-1.17x the plain step, `benchmarks/run.py --quick --section steps`)."""
    mean, invstd, reserve, impl = stats
    weight, bias = norm.weight, norm.bias
    grad_z = _conv_grads(conv, z, grad_out, grads)
    grad_y = torch.ops.aten.threshold_backward(grad_z, z, 0)
    grad_x, grad_w, grad_b = torch.ops.aten._batch_norm_impl_index_backward(
        impl, x, grad_y, weight, norm.running_mean, norm.running_var, mean, invstd, True,
        norm.eps, [True, weight.requires_grad, bias.requires_grad], reserve)
    if weight.requires_grad:
        _accumulate(grads, weight, grad_w)
    if bias.requires_grad:
        _accumulate(grads, bias, grad_b)
    return grad_x


def _direct_layer_grads(layer: DenseLayer, x: Tensor, b: Optional[Tensor],
                        grad_new: Tensor, grads: dict[int, Tensor], stats: dict) -> Tensor:
    """Both levels' backward for a BatchNorm-ReLU layer without dropout, with no autograd
    graph: ``x`` is the layer's input (the prefix, laid out as in the forward), ``b`` the
    kept conv1 output (``true``), or None to recompute it (``max``); ``stats`` what the
    forward recorded (_norm_in_block)."""
    with torch.no_grad():  # the backward's own arithmetic: nothing here is recorded
        z1, stats1 = _norm_act(layer.norm1, x, stats.get(id(layer.norm1)))
        if layer.bottleneck:
            if b is None:
                b = layer.conv1(z1)
            z2, stats2 = _norm_act(layer.norm2, b, stats.get(id(layer.norm2)))
            grad_new = _norm_act_conv_backward(layer.norm2, b, z2, stats2, layer.conv2,
                                               grad_new, grads)
        return _norm_act_conv_backward(layer.norm1, x, z1, stats1, layer.conv1, grad_new,
                                       grads)


def _direct(layer: DenseLayer, recorded: dict) -> bool:
    """Whether the layer's backward can call its kernels directly: training BatchNorm
    with ReLU, no dropout, no norm that synchronised across ranks (anything else goes
    through autograd on a recomputed graph)."""
    norms = [(layer.norm1, layer.relu1)]
    if layer.bottleneck:
        norms.append((layer.norm2, layer.relu2))
    return layer.drop_rate == 0 and all(
        _direct_norm(n, a) and not isinstance(recorded.get(id(n)), _SyncStats)
        for n, a in norms)


def _direct_norm(norm: nn.Module, act: Optional[nn.Module]) -> bool:
    """A training BatchNorm with ReLU (``act`` None: any), whose backward
    _norm_act_conv_backward computes. A SyncBatchNorm qualifies when it did not
    synchronise: then it ran F.batch_norm, as BatchNorm2d does."""
    return (type(norm) in (nn.BatchNorm2d, nn.SyncBatchNorm) and norm.training
            and norm.affine and norm.track_running_stats
            and (act is None or type(act) is nn.ReLU))


def _accumulate_all(grads: dict[int, Tensor], params: List[Tensor], got) -> None:
    for p, g in zip(params, got):
        if g is not None:
            _accumulate(grads, p, g)


def _accumulate(grads: dict[int, Tensor], p: Tensor, g: Tensor) -> None:
    grads[id(p)] = g if id(p) not in grads else grads[id(p)] + g


def _conv_grads(conv: nn.Conv2d, x: Tensor, grad_out: Tensor, grads: dict[int, Tensor]
                ) -> Tensor:
    """Gradient of conv(x) w.r.t. x (returned) and its weight (accumulated), without
    running the convolution forward."""
    weight = conv.weight
    x = x.detach()
    g_in, g_w, _ = torch.ops.aten.convolution_backward(
        grad_out.to(x.dtype), x, weight.to(x.dtype), None, list(conv.stride),
        list(conv.padding), list(conv.dilation), False, [0, 0], conv.groups,
        [True, weight.requires_grad, False])
    if weight.requires_grad:
        _accumulate(grads, weight, g_w.to(weight.dtype))
    return g_in


def _autocast_state() -> list:
    """The autocast state a forward runs under, for _autocast_like to re-enter."""
    return [(dev, torch.is_autocast_enabled(dev), torch.get_autocast_dtype(dev))
            for dev in ("cpu", "cuda")]


class _autocast_like:
    """Re-enter the autocast state the forward ran under, for the recomputation."""

    def __init__(self, states):
        self.ctxs = [torch.autocast(dev, dtype=dtype) for dev, on, dtype in states if on]

    def __enter__(self):
        for c in self.ctxs:
            c.__enter__()

    def __exit__(self, *exc):
        for c in reversed(self.ctxs):
            c.__exit__(*exc)


class Transition(nn.Sequential):
    """norm-act-Conv1x1-(Dropout)-pool between two dense blocks; the pool is the paper's
    2x2/2 average pool, or a stride-2 blur pool (anti-aliasing).

    Under ``memory_efficient: max`` a training forward keeps only the transition's input,
    the block output its dense block keeps anyway: backward recomputes norm-act (batch
    statistics with momentum 0, so the running ones move once) and calls the
    convolution's and the pool's backward kernels directly, as the dense layers do. The
    plain transition keeps the activation and the convolution's output besides, as much
    again as the block's output. This applies to the paper's transition (BatchNorm,
    ReLU, average pool, no dropout); any other takes the plain path, as do ``true``, which
    trades no time here, and scripted, traced, exported and compiled models."""

    # TorchScript types attributes it reads; this one (bool or "max") is read in eager only.
    __jit_ignored_attributes__ = ["memory_efficient"]

    def __init__(self, in_channels: int, out_channels: int, drop_rate: float,
                 norm: Norm = nn.BatchNorm2d,
                 act: Callable[[], nn.Module] = lambda: nn.ReLU(inplace=True),
                 blur_filter: Optional[int] = None, memory_efficient=False):
        super().__init__()
        self.norm = norm(in_channels)
        self.relu = act()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
        if drop_rate > 0:  # no parameters: state_dict keys are unchanged
            self.drop = nn.Dropout(drop_rate)
        self.pool = (BlurPool2d(out_channels, blur_filter) if blur_filter
                     else nn.AvgPool2d(kernel_size=2, stride=2))
        self.memory_efficient = memory_efficient

    def forward(self, x: Tensor) -> Tensor:
        if not torch.jit.is_scripting():
            if self._recomputes(x):
                return self._recomputed(x)
        for module in self:
            x = module(x)
        return x

    @torch.jit.unused
    def _recomputed(self, x: Tensor) -> Tensor:
        params = [p for p in self.parameters() if p.requires_grad]
        return _RecomputedTransition.apply(self, x, *params)

    @torch.jit.unused
    def _recomputes(self, x: Tensor) -> bool:
        if self.memory_efficient != "max" or not torch.is_grad_enabled():
            return False
        if capturing() is not None:
            return False
        if not transition_recomputes(batch_norm=_direct_norm(self.norm, None),
                                     relu=type(self.relu) is nn.ReLU,
                                     average_pool=type(self.pool) is nn.AvgPool2d,
                                     dropout=len(self) != 4):
            return False
        if isinstance(self.norm, nn.SyncBatchNorm) and _distributed():
            return False  # it may synchronise: its statistics are not recomputed locally
        return x.requires_grad or any(p.requires_grad for p in self.parameters())


class _RecomputedTransition(torch.autograd.Function):
    """A transition under ``memory_efficient: max`` (see Transition): saves its input
    only."""

    @staticmethod
    def forward(ctx, t: Transition, x: Tensor, *params: Tensor) -> Tensor:
        # the modules' own forwards: one statistics update
        if _keeps_statistics(t.norm, x):
            y, ctx.kept = _batch_norm_keeping_statistics(t.norm, x)
        else:
            y, ctx.kept = t.norm(x), None
        c = t.conv(t.relu(y))
        ctx.t, ctx.conv_out = t, (c.size(), c.stride(), c.dtype)
        ctx.autocast = _autocast_state()
        ctx.save_for_backward(x)
        return t.pool(c)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y: Tensor):
        x, = ctx.saved_tensors
        t, (size, stride, dtype) = ctx.t, ctx.conv_out
        pool = t.pool
        # The pool's backward reads only its input's geometry: an uninitialised stand-in
        # with the convolution output's size and strides, alive for this call only.
        like = torch.empty_strided(size, stride, dtype=dtype, device=x.device)
        grads: dict[int, Tensor] = {}
        with torch.no_grad(), _autocast_like(ctx.autocast):
            grad_c = torch.ops.aten.avg_pool2d_backward(
                grad_y, like, _pair(pool.kernel_size), _pair(pool.stride),
                _pair(pool.padding), pool.ceil_mode, pool.count_include_pad,
                pool.divisor_override)
            del like
            z, stats = _norm_act(t.norm, x, ctx.kept)
            grad_x = _norm_act_conv_backward(t.norm, x, z, stats, t.conv, grad_c, grads)
        params = [p for p in t.parameters() if p.requires_grad]
        return (None, grad_x if ctx.needs_input_grad[1] else None,
                *[grads.get(id(p)) for p in params])


def _pair(v) -> List[int]:
    return list(v) if isinstance(v, (tuple, list)) else [v, v]


def _stem_pool(channels: int, blur_filter: Optional[int]) -> nn.Module:
    if blur_filter:  # timm: max pool at stride 1, then the blur does the downsampling
        return nn.Sequential(nn.MaxPool2d(kernel_size=3, stride=1, padding=1),
                             BlurPool2d(channels, blur_filter))
    return nn.MaxPool2d(kernel_size=3, stride=2, padding=1)


def imagenet_stem(in_channels: int, channels: int, norm: Norm, act: Callable[[], nn.Module],
                  blur_filter: Optional[int] = None) -> list[tuple[str, nn.Module]]:
    """conv0 7x7/2, norm0, relu0, pool0 3x3/2 (pad 1): torchvision's stem."""
    return [
        ("conv0", nn.Conv2d(in_channels, channels, kernel_size=7, stride=2, padding=3,
                            bias=False)),
        ("norm0", norm(channels)),
        ("relu0", act()),
        ("pool0", _stem_pool(channels, blur_filter)),
    ]


def deep_stem(in_channels: int, widths: tuple[int, ...], channels: int, norm: Norm,
              act: Callable[[], nn.Module], blur_filter: Optional[int] = None
              ) -> list[tuple[str, nn.Module]]:
    """timm's deep stem: conv0 3x3/2, conv1 3x3, conv2 3x3, each with norm and act, pool0."""
    c1, c2 = widths
    return [
        ("conv0", nn.Conv2d(in_channels, c1, 3, stride=2, padding=1, bias=False)),
        ("norm0", norm(c1)), ("relu0", act()),
        ("conv1", nn.Conv2d(c1, c2, 3, stride=1, padding=1, bias=False)),
        ("norm1", norm(c2)), ("relu1", act()),
        ("conv2", nn.Conv2d(c2, channels, 3, stride=1, padding=1, bias=False)),
        ("norm2", norm(channels)), ("relu2", act()),
        ("pool0", _stem_pool(channels, blur_filter)),
    ]


def cifar_stem(in_channels: int, channels: int) -> list[tuple[str, nn.Module]]:
    """conv0 3x3/1 (pad 1) and nothing after it, as in the paper's CIFAR nets."""
    return [("conv0", nn.Conv2d(in_channels, channels, kernel_size=3, padding=1, bias=False))]
