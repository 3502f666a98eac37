"""How many images an optimized DenseNet takes through its CPU forward at a time.

Every layer of a dense block reads the whole prefix of the block's buffer (its norm1 and
ReLU pass, then its 1x1 conv), so a block moves about L^2 / 2 buffer-widths of memory. Once
a batch's buffers outgrow the last-level cache, those passes run at DRAM speed and the
convolutions wait for them: densenet-bc-100-12 at batch 64 (54 MB of block-1 buffer) ran
at 45-50% of the machine's matmul throughput, densenet121 at batch 8 (24.5 MB, inside a
32 MB L3) at 96%. Taking the batch in passes whose buffers fit the cache ran the first
1.31-1.36x faster than one pass and densenet121 at batch 16 1.10-1.11x (2 cores, 32 MB L3;
`python benchmarks/cpu_inference.py --blocking`, docs/benchmarks.md). Where the batch
already fits, or the cache size is not known, the forward takes the batch whole: never
slower than before.

torch-free: the rule is arithmetic on byte counts, the cache size comes from the OS.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

__all__ = ["last_level_cache_bytes", "images_per_pass"]


@functools.lru_cache(maxsize=None)
def last_level_cache_bytes() -> int:
    """The largest CPU cache's size in bytes (the L3 of most x86 and Arm servers), read
    from Linux's sysfs, else glibc's sysconf; 0 where neither says (blocking is off)."""
    best = 0
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            if (index / "type").read_text().strip() == "Instruction":
                continue
            best = max(best, _size_bytes((index / "size").read_text()))
        except (OSError, ValueError):
            continue
    if best:
        return best
    for name in ("SC_LEVEL3_CACHE_SIZE", "SC_LEVEL2_CACHE_SIZE"):
        try:
            value = os.sysconf(name)
        except (ValueError, OSError):
            continue
        if value and value > 0:
            return int(value)
    return 0


def _size_bytes(text: str) -> int:
    """sysfs's "32768K" (or "1M", or a plain byte count) in bytes."""
    text = text.strip().upper()
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    return int(text.rstrip("KMG")) * scale


def images_per_pass(batch: int, bytes_per_image: int, cache_bytes: int) -> int:
    """Images per forward pass: the whole batch while its block buffers fit the cache
    (or the cache is unknown); else passes of equal size whose buffers take at most half
    of it (the other half holds each layer's normalised input and the weights). Measured
    on 2 cores with a 32 MB L3: densenet-bc-100-12 at batch 64 was fastest with 10-14 MB
    of buffer a pass, densenet121 at batch 16 with 12-18 MB; densenet121, -169 and -201
    at batch 8 (24.5 MB, fitting) gained nothing from passes of 4 and lost up to 5%."""
    if cache_bytes <= 0 or bytes_per_image <= 0 or batch * bytes_per_image <= cache_bytes:
        return batch
    most = max(1, cache_bytes // 2 // bytes_per_image)
    passes = math.ceil(batch / most)
    return math.ceil(batch / passes)
