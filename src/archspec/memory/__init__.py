"""The memory levels (``memory_efficient: true | max``): what a training forward keeps
for backward, and how backward rebuilds the rest, with the plain model's gradients bit
for bit.

- ``block``: a dense block's levels (shared feature storage, recomputation in backward,
  the checkpointed form under torch.compile); nn.DenseBlock calls ``block.forward``.
- ``transition``: a transition under ``max``; nn.Transition calls ``transition.forward``.
- ``stem``: a pooling stem under ``max``; nn.Features calls ``stem.forward``.
- ``norms``: the norm functions the recomputation runs a layer with (record in the
  forward, replay in backward: BatchNorm, SyncBatchNorm's global statistics).
- ``direct``: the backward from ATen's kernels, without an autograd graph per layer.
- ``kernels``: every private PyTorch API these call, each behind a self-check with a
  public fallback.
- ``replay``: RNG and autocast state, replayed in backward.
"""

from . import block, stem, transition

__all__ = ["block", "stem", "transition"]
