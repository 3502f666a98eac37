"""optimize_for_inference takes large CPU batches in passes whose block buffers fit the
last-level cache (archspec.cache_blocking): the rule, the cache size read from the OS, and
a copy that gives the one-pass outputs, in eager mode only (graph captures stay one pass
so that they do not depend on the machine that captured them)."""

from __future__ import annotations

import os

import pytest
import torch

import archspec
from archspec import cache_blocking
from archspec.cache_blocking import images_per_pass

torch.set_num_threads(2)

MB = 1 << 20


def test_the_batch_stays_whole_while_it_fits_or_the_cache_is_unknown():
    assert images_per_pass(8, 3 * MB, 32 * MB) == 8       # 24 MB fits a 32 MB L3
    assert images_per_pass(64, 3 * MB, 0) == 64           # cache unknown: never blocked
    assert images_per_pass(1, 300 * MB, 32 * MB) == 1     # one image cannot be split


def test_passes_are_equal_and_take_at_most_half_the_cache():
    # densenet-bc-100-12 at batch 64: 0.84 MB a picture -> 19 fit in 16 MB -> 4 x 16
    assert images_per_pass(64, 885_000, 32 * MB) == 16
    # densenet121 at batch 16: 3.06 MB a picture -> 5 fit -> 4 passes of 4, not 5+5+5+1
    assert images_per_pass(16, 3_211_264, 32 * MB) == 4
    for batch in range(1, 200):
        n = images_per_pass(batch, MB, 8 * MB)
        assert 1 <= n <= batch
        assert batch * MB <= 8 * MB or n * MB <= 4 * MB


def test_the_cache_size_comes_from_sysfs_else_sysconf_else_zero(monkeypatch, tmp_path):
    assert cache_blocking._size_bytes("32768K\n") == 32 * MB
    assert cache_blocking._size_bytes("2M") == 2 * MB
    assert cache_blocking._size_bytes("4096") == 4096
    fake = tmp_path / "cache"
    for i, (kind, size) in enumerate([("Data", "48K"), ("Instruction", "999M"),
                                      ("Unified", "2048K"), ("Unified", "36M")]):
        (fake / f"index{i}").mkdir(parents=True)
        (fake / f"index{i}" / "type").write_text(kind + "\n")
        (fake / f"index{i}" / "size").write_text(size + "\n")
    real_path = cache_blocking.Path
    monkeypatch.setattr(cache_blocking, "Path", lambda p: fake if "cache" in str(p)
                        else real_path(p))
    cache_blocking.last_level_cache_bytes.cache_clear()
    try:
        assert cache_blocking.last_level_cache_bytes() == 36 * MB  # not the instruction cache
        monkeypatch.setattr(cache_blocking, "Path", lambda p: tmp_path / "none")
        cache_blocking.last_level_cache_bytes.cache_clear()
        monkeypatch.setattr(os, "sysconf", lambda name: {"SC_LEVEL3_CACHE_SIZE": 8 * MB}[name])
        assert cache_blocking.last_level_cache_bytes() == 8 * MB
        cache_blocking.last_level_cache_bytes.cache_clear()

        def unknown(name):
            raise ValueError(f"unrecognized configuration name {name}")
        monkeypatch.setattr(os, "sysconf", unknown)
        assert cache_blocking.last_level_cache_bytes() == 0
    finally:
        cache_blocking.last_level_cache_bytes.cache_clear()


def _tiny(**extra) -> archspec.Plan:
    text = ("name: tiny\ngrowth_rate: 8\nblock_config: [3, 3]\nbn_size: 2\n"
            "num_classes: 5\ninput: {channels: 3, height: 32, width: 32}\n"
            "stem: {type: cifar, channels: 16}\n")
    text += "".join(f"{k}: {v}\n" for k, v in extra.items())
    return archspec.loads(text)


def _with_random_norms(model):
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
    return model.eval()


@pytest.mark.parametrize("features_only", [False, True])
def test_a_large_batch_runs_in_passes_with_the_one_pass_outputs(features_only):
    model = _with_random_norms(archspec.build(_tiny(), seed=0, features_only=features_only))
    fast = archspec.optimize_for_inference(model)
    whole = archspec.optimize_for_inference(model)
    whole.cache_bytes = 0
    # block 1's buffer: 16 + 3 * 8 = 40 channels at 32x32 = 160 KB a picture in fp32;
    # a 1 MB "cache" takes 3 pictures a pass, so a batch of 10 runs as 4 passes of 3, 3, 3, 1
    # (equal sizes: ceil(10 / ceil(10 / 3)) = 3)
    fast.cache_bytes = 1 * MB
    x = torch.randn(10, 3, 32, 32)
    calls = []
    fast.stem.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    with torch.no_grad():
        got, want, plain = fast(x), whole(x), model(x)
    assert calls == [3, 3, 3, 1]
    if features_only:
        assert [g.shape for g in got] == [w.shape for w in want]
        for g, w, p in zip(got, want, plain):
            torch.testing.assert_close(g, w)  # oneDNN may pick another kernel per batch
            torch.testing.assert_close(g, p, rtol=1e-4, atol=1e-4)
    else:
        assert got.shape == (10, 5)
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(got, plain, rtol=1e-4, atol=1e-4)


def test_passes_count_the_compute_dtype_and_are_eager_only():
    model = _with_random_norms(archspec.build(_tiny(), seed=0))
    fast = archspec.optimize_for_inference(model)
    fast.cache_bytes = 1 * MB
    x = torch.randn(10, 3, 32, 32)
    assert len(fast._passes(x)) == 4
    assert len(fast._passes(x.double())) == 10      # 8-byte elements: one a pass
    # a graph capture takes the batch whole: the traced graph runs any batch in one pass
    traced = torch.jit.trace(fast, x[:2])
    with torch.no_grad():
        torch.testing.assert_close(traced(x), fast(x), rtol=1e-5, atol=1e-5)
    gm = torch.fx.symbolic_trace(fast)
    assert "split" not in gm.code and "cat" not in gm.code
    # a tensor off the CPU never blocks (meta here; CUDA likewise: a GPU's memory system
    # is another story)
    assert fast._passes(x.to("meta")) is None
