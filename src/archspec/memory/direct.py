"""The direct backward: a BatchNorm-ReLU-conv step's gradients from ATen's backward
kernels, called one after another with no autograd graph. Every kernel is the one
autograd would call, so the gradients are autograd's to the bit; skipping the engine's
per-layer graph is most of the recomputation's cost at small batches
(densenet-bc-100-12 b8 on CPU: 1.28x -> 1.14-1.17x the plain step,
``benchmarks/run.py --quick --section steps``). The private calls are kernels.py's."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from . import kernels
from .kernels import BatchNormSaved
from .norms import BatchStats, trains_batch_norm

__all__ = ["Grads", "usable", "layer_direct", "layer_grads", "norm_act", "norm_act_conv_backward",
           "conv_grads", "accumulate", "accumulate_all"]

Grads = dict  # id(parameter) -> its gradient so far


def usable(device: torch.device) -> bool:
    """Whether the direct backward's kernels passed their self-check on this device."""
    return kernels.usable("norm_act_backward", device)


def layer_direct(layer: nn.Module, recorded: dict, device: torch.device) -> bool:
    """Whether a dense layer's backward can call its kernels directly: training BatchNorm
    with ReLU, no dropout, no norm that synchronised across ranks, kernels that passed
    their self-check (anything else goes through autograd on a recomputed graph)."""
    pairs = [(layer.norm1, layer.relu1)]
    if layer.bottleneck:
        pairs.append((layer.norm2, layer.relu2))
    return layer.drop_rate == 0 and all(
        trains_batch_norm(n) and type(a) is nn.ReLU
        and (recorded.get(id(n)) is None or isinstance(recorded[id(n)], BatchStats))
        for n, a in pairs) and usable(device)


def norm_act(norm: nn.BatchNorm2d, x: Tensor, kept: Optional[BatchStats] = None
             ) -> tuple[Tensor, BatchNormSaved]:
    """relu(norm(x)) recomputed for backward, with what its backward kernel needs: with
    ``kept`` (the forward's statistics, on the CPU) no reduction runs again
    (kernels.batch_norm_with_statistics: a pass over the input saved per norm);
    without, the statistics are recomputed with momentum 0."""
    if kept is not None:
        got = kernels.batch_norm_with_statistics(x, norm.weight, norm.bias, kept.mean,
                                                 kept.invstd, norm.eps)
        if got is not None:
            return torch.relu_(got[0]), got[1]
    y, saved = kernels.batch_norm_train(x, norm.weight, norm.bias, norm.running_mean,
                                        norm.running_var, norm.eps)
    return torch.relu_(y), saved


def norm_act_conv_backward(norm: nn.BatchNorm2d, x: Tensor, z: Tensor, saved: BatchNormSaved,
                           conv: nn.Conv2d, grad_out: Tensor, grads: Grads) -> Tensor:
    """The gradient of conv(z), z = relu(norm(x)), w.r.t. x; the norm's and the conv's
    parameter gradients are accumulated into ``grads``."""
    weight, bias = norm.weight, norm.bias
    grad_z = conv_grads(conv, z, grad_out, grads)
    grad_x, grad_w, grad_b = kernels.batch_norm_backward(
        x, kernels.relu_backward(grad_z, z), weight, norm.running_mean, norm.running_var,
        norm.eps, saved, weight.requires_grad, bias.requires_grad)
    if weight.requires_grad:
        accumulate(grads, weight, grad_w)
    if bias.requires_grad:
        accumulate(grads, bias, grad_b)
    return grad_x


def layer_grads(layer: nn.Module, x: Tensor, b: Optional[Tensor], grad_new: Tensor,
                grads: Grads, stats: dict) -> Tensor:
    """Both levels' backward for a BatchNorm-ReLU dense layer without dropout: ``x`` is
    the layer's input (the prefix, laid out as in the forward), ``b`` the kept conv1
    output (``true``), or None to recompute it (``max``); ``stats`` what the forward
    recorded (norms.Recording). Returns the gradient w.r.t. x."""
    with torch.no_grad():  # the backward's own arithmetic: nothing here is recorded
        z1, saved1 = norm_act(layer.norm1, x, stats.get(id(layer.norm1)))
        if layer.bottleneck:
            if b is None:
                b = layer.conv1(z1)
            z2, saved2 = norm_act(layer.norm2, b, stats.get(id(layer.norm2)))
            grad_new = norm_act_conv_backward(layer.norm2, b, z2, saved2, layer.conv2,
                                              grad_new, grads)
        return norm_act_conv_backward(layer.norm1, x, z1, saved1, layer.conv1, grad_new,
                                      grads)


def conv_grads(conv: nn.Conv2d, x: Tensor, grad_out: Tensor, grads: Grads) -> Tensor:
    """Gradient of conv(x) w.r.t. x (returned) and its weight (accumulated), without
    running the convolution forward."""
    weight = conv.weight
    x = x.detach()
    g_in, g_w = kernels.conv_backward(x, weight.to(x.dtype), grad_out.to(x.dtype),
                                      conv.stride, conv.padding, conv.dilation, conv.groups,
                                      weight.requires_grad)
    if weight.requires_grad:
        accumulate(grads, weight, g_w.to(weight.dtype))
    return g_in


def accumulate_all(grads: Grads, params, got) -> None:
    for p, g in zip(params, got):
        if g is not None:
            accumulate(grads, p, g)


def accumulate(grads: Grads, p: Tensor, g: Tensor) -> None:
    grads[id(p)] = g if id(p) not in grads else grads[id(p)] + g
