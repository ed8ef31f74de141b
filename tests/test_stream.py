"""Streaming (non-temporal) stores of the CPU output pass (backends/cpu/apply.py, _intrinsics.py).

The apply kernel writes whole, aligned cache lines of large outputs with
``!nontemporal`` stores.  x86's vector non-temporal stores fault on a
misaligned address, and a span that is off by one element would write outside
``out`` or leave a gap, so every test here forces streaming on small arrays
(``STREAM_MIN_BYTES = 0``), places ``out`` at every element offset inside a
guarded buffer, and asks for the exact bits of the ordinary-store result with
the guard bytes untouched.
"""

from __future__ import annotations

import platform
import re

import numpy as np
import pytest
from numba import njit

import numbanorm as nbn
from numbanorm._config import LINE_BYTES, STREAM_MIN_BYTES
from numbanorm.backends import cpu
from numbanorm.backends.cpu import _intrinsics as intr

GUARD = 2 * LINE_BYTES


@pytest.fixture
def streaming(monkeypatch):
    monkeypatch.setattr(intr, "STREAM_MIN_BYTES", 0)


def _placed(shape, dtype, offset_elems):
    """An array of ``shape`` inside a buffer filled with a sentinel, starting
    ``offset_elems`` elements after a 64-byte-aligned address."""
    dt = np.dtype(dtype)
    n = int(np.prod(shape))
    raw = np.empty(n * dt.itemsize + 2 * GUARD + 2 * LINE_BYTES, np.uint8)
    start = (-raw.ctypes.data) % LINE_BYTES + GUARD + offset_elems * dt.itemsize
    raw[:] = 0xA5
    arr = raw[start : start + n * dt.itemsize].view(dt).reshape(shape)
    assert arr.ctypes.data % LINE_BYTES == (offset_elems * dt.itemsize) % LINE_BYTES
    return raw, start, arr


def _guards_intact(raw, start, nbytes):
    return bool((raw[:start] == 0xA5).all() and (raw[start + nbytes :] == 0xA5).all())


def _offsets(dtype):
    return range(LINE_BYTES // np.dtype(dtype).itemsize)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "P,R,K",
    [
        (3, 1000, 1),  # scalar-parameter path, one task per p
        (1, 70000, 1),  # several tasks per p
        (1, 60, 64),  # lanes: L = 256, whole lines per chunk (rotated lanes)
        (2, 61, 16),  # lanes, float64 L*8 = 2 KiB; two planes
        (1, 400, 3),  # L = 258: chunks are not whole lines -> ordinary stores
        (1, 9, 64),  # fewer than two chunks
    ],
)
@pytest.mark.parametrize("clip", [False, True])
def test_apply_streamed_equals_ordinary(streaming, monkeypatch, dtype, P, R, K, clip):
    rng = np.random.default_rng(P * 1000 + R + K)
    x3 = rng.standard_normal((P, R, K)).astype(dtype) * 3 + 1e3
    center = 1e3 + rng.standard_normal((P, K))
    scale = rng.random((P, K)) + 0.5
    shift = rng.standard_normal((P, K))
    lo, hi = (-1.0, 1.5) if clip else (None, None)
    monkeypatch.setattr(intr, "STREAM_MIN_BYTES", 1 << 62)
    ref = np.empty_like(x3)
    cpu.apply(x3, ref, center, scale, shift, lo, hi)
    monkeypatch.setattr(intr, "STREAM_MIN_BYTES", 0)
    for off in _offsets(dtype):
        raw, start, out = _placed(x3.shape, dtype, off)
        assert intr.streams(out)
        cpu.apply(x3, out, center, scale, shift, lo, hi)
        assert np.array_equal(out, ref), f"offset {off}"
        assert _guards_intact(raw, start, out.nbytes), f"offset {off}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_public_ops_streamed(streaming, dtype):
    """batch_norm (NCHW and channels-last, train and eval), standardize and
    minmax_scale (clipped) into streamed out= buffers at every offset."""
    rng = np.random.default_rng(7)
    x4 = (rng.standard_normal((3, 8, 20, 21)) * 2 + 50).astype(dtype)
    xc = (rng.standard_normal((700, 48)) * 2 + 50).astype(dtype)
    rm, rv = rng.standard_normal(8), rng.random(8) + 0.5
    w, b = rng.standard_normal(8).astype(dtype), rng.standard_normal(8).astype(dtype)
    calls = {
        "bn_eval": (x4, lambda o: nbn.batch_norm(x4, rm, rv, w, b, training=False, **o)),
        "bn_train": (x4, lambda o: nbn.batch_norm(x4, None, None, w, b, training=True, **o)),
        "bn_train_cl": (
            x4,
            lambda o: nbn.batch_norm(x4, None, None, None, None, training=True, channel_axis=-1, **o),
        ),
        "standardize": (xc, lambda o: nbn.standardize(xc, **o)),
        "minmax_clip": (xc, lambda o: nbn.minmax_scale(xc, feature_range=(-1, 2), clip=True, **o)),
    }
    for name, (x, call) in calls.items():
        ref = call({})  # fresh output: small, ordinary stores
        for off in _offsets(dtype):
            raw, start, out = _placed(x.shape, dtype, off)
            res = call({"out": out})
            assert res is out or np.shares_memory(res, out), name
            assert np.array_equal(out, ref, equal_nan=True), f"{name} offset {off}"
            assert _guards_intact(raw, start, out.nbytes), f"{name} offset {off}"


def test_unaligned_out_is_not_streamed(streaming):
    """An out= whose address is not a multiple of its itemsize (a view of a
    byte buffer at an odd offset) takes ordinary stores, with the same bits."""
    raw = np.zeros(4 * 3000 + 8, np.uint8)
    out = raw[1 : 1 + 4 * 3000].view(np.float32).reshape(1, 3000, 1)
    assert not out.flags.aligned and not intr.streams(out)
    x3 = np.linspace(-5, 5, 3000, dtype=np.float32).reshape(1, 3000, 1)
    ref = np.empty_like(x3)
    cpu.apply(x3, ref, np.array([[0.5]]), np.array([[2.0]]), np.array([[1.0]]))
    cpu.apply(x3, out, np.array([[0.5]]), np.array([[2.0]]), np.array([[1.0]]))
    assert np.array_equal(out, ref)


def test_stream_threshold():
    assert STREAM_MIN_BYTES >= 4 << 20  # never for cache-sized outputs
    assert intr.streams(np.empty(STREAM_MIN_BYTES, np.uint8))
    assert not intr.streams(np.empty(STREAM_MIN_BYTES - 1, np.uint8))


def test_stream_span():
    isz = 4
    per = LINE_BYTES // isz
    for addr in range(0, 2 * LINE_BYTES, isz):
        for n in (0, 5, 16 * per - 1, 16 * per, 16 * per + 7, 1000):
            p, m = intr.stream_span(addr, 0, n, isz, True)
            if n * isz < 16 * LINE_BYTES:
                assert (p, m) == (n, n)
                continue
            assert 0 <= p < per and (addr + p * isz) % LINE_BYTES == 0
            assert (m - p) % per == 0 and 0 <= n - m < per
    assert intr.stream_span(64, 0, 1000, 4, False) == (1000, 1000)
    assert intr.stream_span(66, 0, 1000, 4, True) == (1000, 1000)  # unaligned
    assert intr.stream_span(0, 60, 1000, 4, True)[0] == 1  # offset counts


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86 mnemonics")
def test_stream_store_emits_nontemporal_vector_stores():
    """The intrinsic reaches the machine code as vector non-temporal stores
    (the loop still vectorizes)."""

    @njit
    def scaled(x, o, a):
        for i in range(x.size):
            intr.stream_store(o, i, x[i] * a)

    x = np.ones(1024, np.float32)
    raw, start, o = _placed((1024,), np.float32, 0)
    scaled(x, o, np.float32(2.0))
    assert (o == 2.0).all() and _guards_intact(raw, start, o.nbytes)
    asm = scaled.inspect_asm(scaled.signatures[0])
    assert re.search(r"\bv?movntp[sd]\b", asm), "no vector non-temporal store"


@pytest.mark.parametrize("n", [1, 100, 4096, 70_001])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bench_stream_copy(dtype, n):
    """The floor's streaming copy copies every element, at every offset."""
    from numbanorm_bench.floors import prange_stream_copy as _prange_stream_copy

    src = np.arange(n, dtype=dtype)
    for off in _offsets(dtype):
        raw, start, dst = _placed((n,), dtype, off)
        _prange_stream_copy(dst, src)
        assert np.array_equal(dst, src) and _guards_intact(raw, start, dst.nbytes)
