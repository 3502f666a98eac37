"""Batch norm folded into a convolution, the arithmetic both inference paths share
(archspec.inference for DenseNet, archspec.inference_vovnet): an eval-mode BatchNorm is a
per-channel affine map, computed in float64 and written into the conv's weight and
bias in the conv's own dtype."""

# No `from __future__ import annotations`: TorchScript reads the modules these make.

from typing import List, Optional

import torch
from torch import Tensor, nn

__all__ = ["affine", "per_out", "fold_after", "conv_like", "fold_batch_norms", "folded_copy",
           "FoldedCopy"]


def affine(bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """(s, b) in float64 with bn(x) == s*x + b in eval."""
    s = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    return s, bn.bias.double() - bn.running_mean.double() * s


def per_out(v: Tensor, w: Tensor) -> Tensor:
    """A per-output-channel vector shaped to scale conv weight ``w`` (1, 2 or 3D)."""
    return v.view(-1, *[1] * (w.dim() - 1))


def fold_after(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Weight and bias of conv followed by bn."""
    s, b = affine(bn)
    w = conv.weight.double() * per_out(s, conv.weight)
    bias = b if conv.bias is None else conv.bias.double() * s + b
    return w, bias


def conv_like(weight: Tensor, bias: Optional[Tensor], like: nn.Conv2d) -> nn.Conv2d:
    """A conv with ``like``'s geometry, dtype and device holding ``weight`` and ``bias``
    (float64 from the folding), rounded once, to ``like``'s dtype."""
    conv = type(like)(weight.shape[1] * like.groups, weight.shape[0], like.kernel_size,
                      like.stride, like.padding, like.dilation, like.groups,
                      bias=bias is not None, device=like.weight.device,
                      dtype=like.weight.dtype)
    conv.weight.data.copy_(weight)
    if bias is not None:
        conv.bias.data.copy_(bias)
    return conv


#: (conv, norm) attribute pairs of the post-activation units: timm's VoVNet (``conv`` or
#: the separable ``conv_pw``, then ``bn``) and HarDNet's reference (``conv`` or the
#: depthwise ``dwconv``, then ``norm``).
_UNITS = (("conv_pw", "bn"), ("conv", "bn"), ("conv", "norm"), ("dwconv", "norm"))


def fold_batch_norms(model: nn.Module) -> int:
    """Fold, in place, every affine BatchNorm that follows a conv in a conv-norm[-act]
    unit (_UNITS) into that conv; returns how many were folded."""
    from .nn import BATCH_NORMS, CONVS

    folded = 0
    for unit in list(model.modules()):
        for name, norm in _UNITS:
            conv, bn = getattr(unit, name, None), getattr(unit, norm, None)
            if not isinstance(conv, CONVS) or \
                    not isinstance(bn, BATCH_NORMS) or not bn.affine or \
                    not bn.track_running_stats:
                continue
            setattr(unit, name, conv_like(*fold_after(conv, bn), conv))
            setattr(unit, norm, nn.Identity())
            folded += 1
            break
    return folded


def folded_copy(model: nn.Module) -> nn.Module:
    """An eval-mode deep copy of ``model`` with every conv-norm unit's BatchNorm folded."""
    import copy

    net = copy.deepcopy(model).eval()
    with torch.no_grad():
        fold_batch_norms(net)
    return net


class FoldedCopy(nn.Module):
    """What every optimize_for_inference copy shares (DenseNet's InferenceDenseNet and the
    post-activation members' VoVNet, HarDNet and PeleeNet copies): eval-only, no
    gradients, channels_last, the dtype= casts, the source's input check."""

    precision_cast: bool

    def _prepare(self, model: nn.Module, channels_last: bool) -> None:
        """For a copy whose modules are all in place: _start and _finish at once."""
        self._start(model, channels_last)
        self._finish()

    def _start(self, model: nn.Module, channels_last: bool) -> None:
        """The source's plan and layout, before the copy's modules are made."""
        self.plan = model.plan
        self.dims: int = model.plan.dims
        self.channels_last = channels_last and self.dims in (2, 3)
        # What the copy computes in (`.to(dtype)` moves it with the weights; not state),
        # and whether inputs are cast to it and outputs back: only when
        # optimize_for_inference's dtype= asked (else a call behaves as the model's).
        self.precision_cast = False
        self.register_buffer("compute_dtype_probe",
                             torch.empty(0, dtype=next(model.parameters()).dtype,
                                         device=next(model.parameters()).device),
                             persistent=False)

    def _finish(self) -> None:
        """Eval-only, frozen, on the probe's device, in the copy's memory layout."""
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)
        self.to(self.compute_dtype_probe.device)
        if self.channels_last:
            self.to(memory_format=torch.channels_last_3d if self.dims == 3
                    else torch.channels_last)

    @torch.jit.unused  # eager only, as the source model's check
    def _check_input(self, x: Tensor) -> None:
        from .builder import check_input  # the builder imports torch modules this one's users need

        check_input(self.plan, x)

    def _laid_out(self, x: Tensor) -> Tensor:
        if not torch.jit.is_scripting():
            self._check_input(x)
        if self.precision_cast:
            x = x.to(self.compute_dtype_probe.dtype)
        if self.channels_last:
            if self.dims == 3:
                return x.contiguous(memory_format=torch.channels_last_3d)
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def _as_input(self, out: Tensor, x: Tensor) -> Tensor:
        """``out`` in the caller's dtype when dtype= was asked for: results do not depend
        on what the copy computes in (the dtype, or float32 where that falls back)."""
        return out.to(x.dtype) if self.precision_cast else out

    def _all_as_input(self, outs: List[Tensor], x: Tensor) -> List[Tensor]:
        if self.precision_cast:
            return [out.to(x.dtype) for out in outs]
        return outs

    def train(self, mode: bool = True):
        if mode:
            raise RuntimeError("an optimize_for_inference model is eval-only; train the "
                               "original model")
        return super().train(False)
