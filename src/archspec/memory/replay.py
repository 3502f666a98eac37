"""What a recomputation in backward must replay from its forward: the RNG state (dropout
masks) and the autocast state (the same low-precision kernels)."""

from __future__ import annotations

from contextlib import contextmanager

import torch

__all__ = ["rng_state", "replayed_rng", "autocast_state", "autocast_like"]


def rng_state(device: torch.device) -> tuple:
    cpu = torch.get_rng_state()
    return (cpu, torch.cuda.get_rng_state(device)) if device.type == "cuda" else (cpu, None)


@contextmanager
def replayed_rng(device: torch.device, state: tuple):
    """Draw as the forward drew from ``state``; the caller's RNG stream is restored
    afterwards (fork_rng), as if backward drew nothing."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.set_rng_state(state[0])
        if state[1] is not None:
            torch.cuda.set_rng_state(state[1], device)
        yield


def autocast_state() -> list:
    """The autocast state a forward runs under, for autocast_like to re-enter."""
    return [(dev, torch.is_autocast_enabled(dev), torch.get_autocast_dtype(dev))
            for dev in ("cpu", "cuda")]


class autocast_like:
    """Re-enter the autocast state the forward ran under, for the recomputation."""

    def __init__(self, states):
        self.ctxs = [torch.autocast(dev, dtype=dtype) for dev, on, dtype in states if on]

    def __enter__(self):
        for c in self.ctxs:
            c.__enter__()

    def __exit__(self, *exc):
        for c in reversed(self.ctxs):
            c.__exit__(*exc)
