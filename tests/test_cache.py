"""Feature caches: int8 storage, sharded extraction across processes, prefetching."""

from __future__ import annotations

import subprocess
import time

import numpy as np
import pytest
import torch

from brainencoder.inference.cache import CacheSpec, build_feature_cache
from brainencoder.inference.quantize import bytes_per_view, estimate_cache_bytes, quantize_int8
from brainencoder.models.encoder import create_encoder
from brainencoder.util.errors import StoreError
from brainencoder.util.prefetch import prefetch
from conftest import TORCHRUN_2

TINY = {"img_size": 32, "readout": {"hidden_dim": 8, "latent_dim": 4}}


def _model(store):
    torch.manual_seed(0)
    return create_encoder("tiny", store.space, **TINY)


def test_quantize_int8_error_is_half_a_step_per_channel():
    x = torch.randn(3, 5, 7, 7) * torch.logspace(-3, 2, 5)[None, :, None, None]
    q, scale = quantize_int8(x)
    assert q.dtype == torch.int8 and scale.shape == (3, 5) and scale.dtype == torch.float32
    back = q.float() * scale[..., None, None]
    step = scale[..., None, None]
    assert ((back - x).abs() <= 0.5 * step * (1 + 1e-3) + 1e-7).all()
    assert q.abs().max() == 127  # the range is used
    zeros, zero_scale = quantize_int8(torch.zeros(1, 2, 3))
    assert not zeros.any() and not zero_scale.any()


def test_int8_cache_is_half_the_size_and_close_to_float16(store, tmp_path):
    rows = np.arange(store.images.shape[0])
    model = _model(store)
    f16 = build_feature_cache(model, store, rows, CacheSpec(n_views=2), root=tmp_path)
    i8 = build_feature_cache(model, store, rows, CacheSpec(2, dtype="int8"), root=tmp_path)
    assert f16.path != i8.path and i8.dtype == "int8"
    size = {c.dtype: sum(f.stat().st_size for f in c.path.glob("layer*")) for c in (f16, i8)}
    assert size["float16"] == estimate_cache_bytes(model, rows.size, 2)
    assert size["int8"] == estimate_cache_bytes(model, rows.size, 2, "int8")
    assert size["int8"] < 0.65 * size["float16"]  # 2 x 2 maps here: the scales weigh
    reference = [(768, 257)] * 6  # eva02 base: one scale per 257 values
    assert bytes_per_view(reference, "int8") / bytes_per_view(reference, "float16") < 0.51
    views, cached = np.array([0, 1, 1]), np.array([3, 0, rows.size - 1])
    for a, b in zip(f16.get(views, cached), i8.get(views, cached)):
        bound = a.flatten(2).abs().amax(2)[..., None] / 127 * 0.51 + 1e-3
        assert ((a - b).flatten(2).abs() <= bound).all()
    with pytest.raises(StoreError, match="cache dtype must be one of"):
        build_feature_cache(model, store, rows, CacheSpec(dtype="int4"), root=tmp_path)


@pytest.mark.numerics
def test_features_a_cache_would_store_wrongly_are_refused(store, tmp_path, monkeypatch):
    rows = np.arange(8)
    model = _model(store)
    real = model.forward_features
    monkeypatch.setattr(model, "forward_features", lambda x: [f * 1e6 for f in real(x)])
    with pytest.raises(
        StoreError,
        match=r"up to .* for store rows 0..7, beyond float16's 65504.*"
        r"cache_dtype=int8",
    ):
        build_feature_cache(model, store, rows, root=tmp_path / "a")
    big = build_feature_cache(model, store, rows, CacheSpec(dtype="int8"), root=tmp_path / "b")
    (first, *_) = big.get(np.zeros(8, dtype=np.int64), np.arange(8))
    with torch.no_grad():
        (truth, *_) = model.forward_features(model.prepare_images(store.read_images(rows)))
    assert torch.isfinite(first).all() and first.abs().max() > 65504  # int8 keeps them
    torch.testing.assert_close(first, truth, rtol=0, atol=float(truth.abs().max()) / 127)
    monkeypatch.setattr(model, "forward_features", lambda x: [f * float("nan") for f in real(x)])
    with pytest.raises(StoreError, match="layer 0 gave NaN or inf features for store rows 0..7"):
        build_feature_cache(model, store, rows, CacheSpec(dtype="int8"), root=tmp_path / "c")


def test_prefetch_keeps_order_and_runs_ahead():
    started = []

    def slow(i):
        started.append(i)
        time.sleep(0.01)
        return i * i

    out = prefetch(slow, range(10), workers=3)
    assert next(out) == 0
    time.sleep(0.05)
    assert len(started) >= 3  # the next items were already being prepared
    assert list(out) == [i * i for i in range(1, 10)]
    assert list(prefetch(slow, range(4), workers=0)) == [0, 1, 4, 9]


def test_prefetch_error_drops_the_queued_work():
    started = []

    def fail_on_two(i):
        started.append(i)
        time.sleep(0.02)
        if i == 2:
            raise ValueError("item 2 is corrupt")
        return i

    with pytest.raises(ValueError, match="item 2 is corrupt"):
        list(prefetch(fail_on_two, range(100), workers=2))
    assert max(started) <= 5  # at most workers + 1 items ahead of the failure ran


_SHARDED = """
import logging, sys, numpy as np, torch, torch.distributed as dist
from brainencoder.data.store import Store
from brainencoder.inference.cache import CacheOptions, CacheSpec, build_feature_cache
from brainencoder.models.encoder import create_encoder
logging.basicConfig(level=logging.INFO)
dist.init_process_group("gloo")
store = Store(sys.argv[1])
torch.manual_seed(0)
model = create_encoder("tiny", store.space, img_size=32, readout={"hidden_dim": 8, "latent_dim": 4})
for dtype in ("float16", "int8"):
    cache = build_feature_cache(
        model, store, np.arange(store.images.shape[0]), CacheSpec(3, batch_size=16, dtype=dtype),
        root=sys.argv[2], options=CacheOptions(shard=(dist.get_rank(), 2), sync=dist.barrier),
    )
    print(dist.get_rank(), dtype, cache.path)
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_two_processes_extract_byte_identical_caches(store, tmp_path):
    rows = np.arange(store.images.shape[0])
    single = {
        d: build_feature_cache(
            _model(store), store, rows, CacheSpec(3, batch_size=16, dtype=d), root=tmp_path / "one"
        )
        for d in ("float16", "int8")
    }
    script = tmp_path / "sharded.py"
    script.write_text(_SHARDED)
    cmd = [
        *TORCHRUN_2,
        str(script),
        str(store.path),
        str(tmp_path / "two"),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "process 1 of 2 extracts" in result.stderr and "process 0 of 2" in result.stderr
    for cache in single.values():
        other = tmp_path / "two" / cache.path.name  # the same key: the same cache
        files = sorted(p.name for p in cache.path.glob("layer*"))
        assert files and files == sorted(p.name for p in other.glob("layer*"))
        for name in files:
            assert (cache.path / name).read_bytes() == (other / name).read_bytes(), name
        assert (other / "manifest.json").exists() and not (other / "chunks").exists()


def test_a_vit_with_and_without_prefix_tokens_gets_its_own_cache(store, tmp_path):
    """Class tokens change the feature shapes: the two must never share a cache."""
    rows = np.arange(4)
    caches = []
    for prefix in (False, True):
        torch.manual_seed(0)
        model = create_encoder(
            "tiny", store.space, trunk="test_vit", layers=[0], img_size=32, prefix_tokens=prefix
        )
        cache = build_feature_cache(model, store, rows, root=tmp_path)
        feats = cache.get(np.zeros(2, np.int64), np.arange(2))
        assert tuple(feats[0].shape[1:]) == tuple(model.feature_shapes[0])
        caches.append(cache.path)
    assert caches[0] != caches[1]
