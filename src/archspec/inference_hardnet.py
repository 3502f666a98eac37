"""``optimize_for_inference`` for HarDNets: an eval-only copy with every batch norm folded
into the conv before it, in channels_last.

A HarDNet is conv-norm-act throughout (post-activation; the depthwise convs conv-norm), so
each eval-mode BatchNorm becomes its conv's weight scale and bias, as in a VoVNet
(archspec.folding). A harmonic block's concatenations stay: each layer reads a different
set of earlier outputs, so there is no one buffer to write them into as DenseNet's path
does.
"""

# No `from __future__ import annotations`: TorchScript and torch.fx read these types.

from typing import List

from torch import Tensor, nn

from .folding import FoldedCopy, folded_copy
from .nn_hardnet import hardnet_feature_maps

__all__ = ["InferenceHarDNet", "InferenceHarDNetFeatures"]


class InferenceHarDNet(FoldedCopy):
    """Eval-only HarDNet from ``optimize_for_inference``: the classifier model's forward."""

    def __init__(self, model: nn.Module, channels_last: bool):
        super().__init__()
        net = folded_copy(model)
        self.stem, self.features, self.head = net.stem, net.features, net.head
        self._prepare(model, channels_last)

    def forward(self, x: Tensor) -> Tensor:
        return self._as_input(self.head(self.features(self.stem(self._laid_out(x)))), x)


class InferenceHarDNetFeatures(FoldedCopy):
    """Eval-only HarDNet backbone from ``optimize_for_inference``: the feature maps of
    ``feature_info``, as the ``features_only`` model returns them."""

    def __init__(self, model: nn.Module, channels_last: bool):
        super().__init__()
        net = folded_copy(model)
        self.stem, self.features = net.stem, net.features
        self.feature_info, self.out_indices = model.feature_info, model.out_indices
        self._taps: List[int] = list(model._taps)
        self._stop: int = model._stop
        self._prepare(model, channels_last)

    def forward(self, x: Tensor) -> List[Tensor]:
        return self._all_as_input(hardnet_feature_maps(
            self.stem, self.features, self._laid_out(x), self._taps, self._stop), x)
