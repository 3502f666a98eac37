"""``optimize_for_inference`` for PeleeNets: an eval-only copy with every batch norm folded
into the conv before it, in channels_last.

A PeleeNet is conv-norm-act throughout (post-activation), so each eval-mode BatchNorm
becomes its conv's weight scale and bias (archspec.folding). Its dense blocks still
concatenate per layer; DenseNet's one-buffer trick relies on pre-activation layers that
read the buffer through a folded norm, which PeleeNet's layers do not have, so the
concatenations stay.
"""

# No `from __future__ import annotations`: TorchScript and torch.fx read these types.

from typing import List

from torch import Tensor, nn

from .folding import FoldedCopy, folded_copy
from .nn_peleenet import peleenet_feature_maps

__all__ = ["InferencePeleeNet", "InferencePeleeNetFeatures"]


class InferencePeleeNet(FoldedCopy):
    """Eval-only PeleeNet from ``optimize_for_inference``: the classifier model's forward."""

    def __init__(self, model: nn.Module, channels_last: bool):
        super().__init__()
        net = folded_copy(model)
        self.features, self.classifier = net.features, net.classifier
        self.spatial: List[int] = list(net.spatial)
        self._prepare(model, channels_last)

    def forward(self, x: Tensor) -> Tensor:
        return self._as_input(
            self.classifier(self.features(self._laid_out(x)).mean(self.spatial)), x)


class InferencePeleeNetFeatures(FoldedCopy):
    """Eval-only PeleeNet backbone from ``optimize_for_inference``: the feature maps of
    ``feature_info``, as the ``features_only`` model returns them."""

    def __init__(self, model: nn.Module, channels_last: bool):
        super().__init__()
        net = folded_copy(model)
        self.features = net.features
        self.feature_info, self.out_indices = model.feature_info, model.out_indices
        self._taps: List[int] = list(model._taps)
        self._stop: int = model._stop
        self._prepare(model, channels_last)

    def forward(self, x: Tensor) -> List[Tensor]:
        return self._all_as_input(peleenet_feature_maps(
            self.features, self._laid_out(x), self._taps, self._stop), x)
