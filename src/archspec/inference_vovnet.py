"""``optimize_for_inference`` for VoVNets: an eval-only copy with every batch norm folded
into the conv before it, in channels_last.

A VoVNet is conv-norm-act throughout (post-activation), so each eval-mode BatchNorm is a
per-channel affine map right after a conv: it becomes the conv's weight scale and bias
(exact in real arithmetic; float32 outputs within 1e-5 of the outputs' scale, tested for
every zoo VoVNet with randomised BatchNorm statistics and affine parameters). What DenseNet's inference path
does besides (clamps for pre-activation, the transition pool moved before its conv, one
buffer per dense block) has nothing to act on here: an OSA block concatenates once, and no
norm precedes a conv. Group, instance and layer norms are kept as they are.
"""

# No `from __future__ import annotations`: TorchScript and torch.fx read these types.

from typing import List

from torch import Tensor, nn

from .folding import FoldedCopy, folded_copy
from .nn_vovnet import feature_maps

__all__ = ["InferenceVoVNet", "InferenceVoVNetFeatures"]


class InferenceVoVNet(FoldedCopy):
    """Eval-only VoVNet from ``optimize_for_inference``: the classifier model's forward."""

    def __init__(self, model: nn.Module, channels_last: bool):
        super().__init__()
        net = folded_copy(model)
        self.stem, self.stages, self.head = net.stem, net.stages, net.head
        self._prepare(model, channels_last)

    def forward(self, x: Tensor) -> Tensor:
        return self._as_input(self.head(self.stages(self.stem(self._laid_out(x)))), x)


class InferenceVoVNetFeatures(FoldedCopy):
    """Eval-only VoVNet backbone from ``optimize_for_inference``: the feature maps of
    ``feature_info``, as the ``features_only`` model returns them."""

    def __init__(self, model: nn.Module, channels_last: bool):
        super().__init__()
        net = folded_copy(model)
        self.stem, self.stages = net.stem, net.stages
        self.feature_info, self.out_indices = model.feature_info, model.out_indices
        self._taps: List[int] = list(model._taps)
        self._stop: int = model._stop
        self._prepare(model, channels_last)

    def forward(self, x: Tensor) -> List[Tensor]:
        return self._all_as_input(
            feature_maps(self.stem, self.stages, self._laid_out(x), self._taps, self._stop), x)
