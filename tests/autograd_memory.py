"""What a training forward keeps for backward, counted by autograd's saved_tensors_hooks:
deterministic and independent of the allocator (shared by the memory tests)."""

import torch


def saved_bytes(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct activation storages one training forward keeps for backward.
    Parameters autograd saves (a convolution keeps its weight) are not activations and
    are left out, as the plan's estimate leaves them out; backward's recomputation is
    transient and runs outside the hooks."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            seen[ptr] = t.untyped_storage().nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    out.sum().backward()
    return sum(seen.values())
