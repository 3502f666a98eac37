"""The memory levels of a dense block (``memory_efficient: true | max``).

``forward(block, x)`` is the one call nn.DenseBlock makes: it returns the block's output
computed at the block's memory level, or None when the plain path applies (no level set,
no gradients recorded, a graph being captured for deployment, a fast path this torch
lacks). Eagerly the block runs as ``_SharedStorageBlock``; under torch.compile each layer's
concatenation-norm1-act-conv1 is checkpointed instead, which dynamo can see through.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Optional

import torch
from torch import Tensor, nn

from .. import feature_buffer
from ..graph_mode import capturing
from . import direct, kernels
from .norms import NormFn, Recording, Replaying, distributed
from .replay import autocast_like, autocast_state, replayed_rng, rng_state

__all__ = ["forward", "bottleneck", "tail"]


def forward(block: nn.Module, x: Tensor) -> Optional[Tensor]:
    """The block's output at its memory level, or None for the plain path."""
    if not _recomputes(block, x):
        return None
    mode = capturing()
    if mode is None:
        params = [p for p in block.parameters() if p.requires_grad]
        return _SharedStorageBlock.apply(block, block.memory_efficient != "max", x, *params)
    if mode == "compile" and block.training and not _holds_sync_batch_norm(block):
        return _checkpointed(block, x)
    return None


def _recomputes(block: nn.Module, x: Tensor) -> bool:
    """Whether this forward stores less and recomputes in backward: a memory level is
    set, gradients are recorded, and something in the block needs one."""
    if not block.memory_efficient or not torch.is_grad_enabled():
        return False
    if capturing() in ("trace", "fx"):
        return False  # a traced graph is for deployment: the plain function
    if _holds_sync_batch_norm(block) and distributed() and \
            not kernels.usable("sync_batch_norm", x.device):
        return False  # the fallback: the plain path (the self-check has warned)
    return x.requires_grad or any(p.requires_grad for p in block.parameters())


def _holds_sync_batch_norm(block: nn.Module) -> bool:
    """SyncBatchNorm (after nn.SyncBatchNorm.convert_sync_batchnorm) normalises with
    statistics all-gathered across ranks. Eager recomputation replays them
    (norms.Replaying); a compiled block takes the plain path instead, since
    checkpointing would run the synchronising norm a second time."""
    return any(isinstance(m, nn.SyncBatchNorm) for m in block.modules())


# The dense layer (nn.DenseLayer's bottleneck_fn and tail) with its norms run by an
# explicit norm function: the forward's (Recording) or backward's (Replaying).

def bottleneck(layer: nn.Module, x: Tensor, norm: NormFn) -> Tensor:
    """norm1-act-conv1 of the concatenated features."""
    return layer.conv1(layer.relu1(norm(layer.norm1, x)))


def tail(layer: nn.Module, b: Tensor, norm: NormFn) -> Tensor:
    """From conv1's output to the k new channels: dropout, then (DenseNet-B)
    norm2-act-conv2 and dropout again."""
    out = layer._drop(b)
    if not layer.bottleneck:
        return out
    return layer._drop(layer.conv2(layer.relu2(norm(layer.norm2, out))))


def _checkpointed(block: nn.Module, x: Tensor) -> Tensor:
    """The compiled form: torchvision's memory-efficient layer, checkpointing
    concatenation-norm1-act-conv1, which dynamo traces as one higher-order op.
    BatchNorm's update happens in the forward graph only."""
    from torch.utils.checkpoint import checkpoint

    def grow(layer):
        return lambda features: layer.tail(
            checkpoint(_cat_bottleneck, layer, *features, use_reentrant=False))
    return feature_buffer.concatenated(x, [grow(layer) for layer in block.values()])


def _cat_bottleneck(layer: nn.Module, *features: Tensor) -> Tensor:
    return layer.bottleneck_fn(torch.cat(features, 1))


class _SharedStorageBlock(torch.autograd.Function):
    """A dense block whose features live in one buffer, the block's output
    (feature_buffer).

    The features are never copied into per-layer concatenations that autograd would
    keep, and the buffer is the block's output (which the next transition keeps anyway).
    Every layer's input is a prefix of that buffer, so backward can rebuild it, newest
    layer first, and accumulate the gradients of all features into one shared gradient
    buffer.

    ``keep_bottleneck`` (``memory_efficient: true``) also keeps each layer's conv1 output
    (the b = bn_size*k bottleneck channels, or the k new channels without a bottleneck):
    backward then recomputes only norm1-act on the prefix and norm2-act on b, which are
    memory-bound, and feeds the kept tensors straight to the convolutions' backward.
    Without it (``"max"``) backward reruns conv1 too; conv2's forward is never rerun
    unless dropout follows it.
    """

    @staticmethod
    def forward(ctx, block: nn.Module, keep_bottleneck: bool, x: Tensor,
                *params: Tensor) -> Tensor:
        layers = list(block.values())
        fmt = feature_buffer.memory_format_like(x)
        buf = feature_buffer.allocate(x, block.out_channels,
                                      fmt != torch.contiguous_format, x.dim() - 2)
        rng, kept, stats = [], [], []
        for layer in layers:  # layer j reads channels [0, in_channels), adds growth_rate
            c, k = layer.in_channels, layer.growth_rate
            rng.append(rng_state(x.device) if layer.training and layer.drop_rate > 0 else None)
            norm = Recording()
            stats.append(norm.stats)
            # A contiguous copy of the prefix in the input's layout, as torch.cat gives
            # the plain path: the same kernels see the same layout, so the gradients are
            # bitwise the plain model's.
            b = bottleneck(layer, buf[:, :c].contiguous(memory_format=fmt), norm)
            if keep_bottleneck:
                kept.append(b)
            buf[:, c:c + k].copy_(tail(layer, b, norm))
        ctx.block, ctx.rng, ctx.c0, ctx.norm_stats = block, rng, x.shape[1], stats
        ctx.memory_format = fmt
        ctx.autocast = autocast_state()
        ctx.save_for_backward(buf, *kept)
        return buf

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):
        buf, *kept = ctx.saved_tensors
        layers = list(ctx.block.values())
        fmt = ctx.memory_format
        grad_buf = grad_out.clone(memory_format=fmt)
        grads: direct.Grads = {}
        for j in range(len(layers) - 1, -1, -1):
            layer, rng, stats = layers[j], ctx.rng[j], ctx.norm_stats[j]
            c, k = layer.in_channels, layer.growth_rate
            # Dropout replays its forward masks from the saved RNG state.
            replay = replayed_rng(buf.device, rng) if rng is not None else nullcontext()
            with torch.enable_grad(), replay, autocast_like(ctx.autocast):
                # the layer's input, as the forward (and torch.cat) laid it out
                prefix = buf[:, :c].contiguous(memory_format=fmt)
                b = kept[j] if kept else None
                grad_new = grad_buf[:, c:c + k]
                if direct.layer_direct(layer, stats, buf.device):
                    grad_x = direct.layer_grads(layer, prefix, b, grad_new, grads, stats)
                elif b is not None:
                    grad_x = _layer_grads_from_kept(layer, prefix, b, grad_new, grads,
                                                    Replaying(stats))
                else:
                    grad_x = _layer_grads_recomputed(layer, prefix, grad_new, grads,
                                                     Replaying(stats))
                del prefix
            grad_buf[:, :c] += grad_x

        block_params = [p for p in ctx.block.parameters() if p.requires_grad]
        grad_x = grad_buf[:, :ctx.c0] if ctx.needs_input_grad[2] else None
        return (None, None, grad_x, *[grads.get(id(p)) for p in block_params])


def _layer_grads_recomputed(layer: nn.Module, prefix: Tensor, grad_new: Tensor,
                            grads: direct.Grads, norm: NormFn) -> Tensor:
    """``"max"`` through autograd: rerun the layer from its input prefix (conv1 included)
    and backpropagate; returns the prefix's gradient and accumulates the parameters'
    into ``grads``."""
    inp = prefix.detach().requires_grad_(True)
    params = [p for p in layer.parameters() if p.requires_grad]
    if layer.bottleneck and layer.drop_rate == 0:
        # conv2's output is not needed for backward, only its input: stop the
        # recomputation there and take conv2's gradients directly.
        z = layer.relu2(norm(layer.norm2, bottleneck(layer, inp, norm)))
        out, grad_new = z, direct.conv_grads(layer.conv2, z, grad_new, grads)
        params = [p for p in params if p is not layer.conv2.weight]
    else:
        out = tail(layer, bottleneck(layer, inp, norm), norm)
    got = torch.autograd.grad(out, [inp, *params], grad_new, allow_unused=True)
    direct.accumulate_all(grads, params, got[1:])
    return got[0]


def _layer_grads_from_kept(layer: nn.Module, prefix: Tensor, b: Tensor, grad_new: Tensor,
                           grads: direct.Grads, norm: NormFn) -> Tensor:
    """``True`` through autograd, with the layer's conv1 output ``b`` kept from the
    forward. Only norm-act pieces are recomputed; both convolutions go straight to their
    backward kernels (conv2's forward reruns only when dropout follows it)."""
    b = b.detach().requires_grad_(True)
    # The tail, from conv1's output to the new features: gradient w.r.t. b.
    if layer.bottleneck and layer.drop_rate == 0:
        z2 = layer.relu2(norm(layer.norm2, b))
        grad_z2 = direct.conv_grads(layer.conv2, z2, grad_new, grads)
        tail_params = _params(layer.norm2, layer.relu2)
        got = torch.autograd.grad(z2, [b, *tail_params], grad_z2, allow_unused=True)
    elif layer.bottleneck or layer.drop_rate > 0:
        parts = [layer.norm2, layer.relu2, layer.conv2] if layer.bottleneck else []
        tail_params = _params(*parts)
        got = torch.autograd.grad(tail(layer, b, norm), [b, *tail_params], grad_new,
                                  allow_unused=True)
    else:  # no bottleneck, no dropout: b is the new features
        tail_params, got = [], (grad_new,)
    direct.accumulate_all(grads, tail_params, got[1:])
    # The head: norm1-act recomputed from the prefix, conv1 straight to its backward.
    inp = prefix.detach().requires_grad_(True)
    z1 = layer.relu1(norm(layer.norm1, inp))
    grad_z1 = direct.conv_grads(layer.conv1, z1, got[0], grads)
    head_params = _params(layer.norm1, layer.relu1)
    got = torch.autograd.grad(z1, [inp, *head_params], grad_z1, allow_unused=True)
    direct.accumulate_all(grads, head_params, got[1:])
    return got[0]


def _params(*modules: nn.Module) -> list:
    """The parameters that need gradients of the modules a recomputed piece runs: its
    norms and, for a learned activation (PReLU), the activation's slope."""
    return [p for m in modules for p in m.parameters() if p.requires_grad]
