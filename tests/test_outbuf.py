"""The output buffer cache (numbanorm/_outbuf.py): large outputs of
allocating calls are views of buffers handed out again once every view of
them is gone, never while any array still refers to one."""

from __future__ import annotations

import gc
import threading
import warnings

import numpy as np
import pytest

import numbanorm as nbn
from numbanorm import _outbuf

G = _outbuf.GRANULE + _outbuf.ALIGN  # bytes of a one-granule buffer
MIN = 256 * 1024  # cache outputs from 256 KiB on in these tests (default 32 MiB)
LIMIT = 24 * G


@pytest.fixture(autouse=True)
def small_cache(monkeypatch):
    """A private, small cache for each test, restored afterwards."""
    if not _outbuf._supported():
        pytest.skip("output reuse needs exact reference counts (CPython with the GIL)")
    nbn.release_output_cache()
    monkeypatch.setattr(_outbuf, "MIN_BYTES", MIN)
    prev = nbn.set_output_cache(LIMIT)
    yield
    nbn.release_output_cache()
    nbn.set_output_cache(prev)


def cached(a: np.ndarray) -> bool:
    return any(a.base is b for b in _outbuf._bufs)


def rows(seed: int, shape=(128, 1024), dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype) * 3 + 1


def test_dropped_output_is_reused():
    x = rows(0)
    y = nbn.layer_norm(x, 1024)
    assert cached(y) and not y.flags.owndata
    bid = id(y.base)  # (holding y.base would keep the buffer busy)
    del y
    y2 = nbn.layer_norm(rows(1), 1024)
    assert id(y2.base) == bid
    np.testing.assert_array_equal(y2, nbn.layer_norm(rows(1), 1024, out=np.empty_like(x)))
    info = nbn.output_cache_info()
    assert info["buffers"] == 1 and info["idle_buffers"] == 0


def test_live_output_is_never_reused():
    outs, keep = [], []
    for s in range(5):
        y = nbn.rms_norm(rows(s), 1024)
        outs.append(y)
        keep.append(y.copy())
    assert len({id(y.base) for y in outs}) == 5
    gc.collect()
    for s in range(5, 10):
        nbn.rms_norm(rows(s), 1024)
    for y, k in zip(outs, keep, strict=True):
        np.testing.assert_array_equal(y, k)


@pytest.mark.parametrize(
    "hold",
    [
        lambda y: y[3:5],
        lambda y: y.T,
        lambda y: y.reshape(-1),
        lambda y: y.view(np.int32),
        lambda y: memoryview(y),
        lambda y: y.base,
        lambda y: np.lib.stride_tricks.as_strided(y, (4,), (8,)),
        lambda y: np.frombuffer(memoryview(y), np.float32),
    ],
    ids=["slice", "transpose", "reshape", "view", "memoryview", "base", "as_strided", "frombuffer"],
)
def test_views_keep_the_buffer(hold):
    y = nbn.standardize(rows(0))
    ref = np.array(y, copy=True)
    held = hold(y)
    bid = id(y.base)
    del y
    y2 = nbn.standardize(rows(1))
    assert cached(y2) and id(y2.base) != bid
    if id(held) == bid:
        off = -held.ctypes.data % _outbuf.ALIGN
        np.testing.assert_array_equal(held[off : off + ref.nbytes], ref.reshape(-1).view(np.uint8))
    else:
        np.testing.assert_array_equal(np.asarray(held), np.asarray(hold(ref)))


def test_limit_bounds_the_held_bytes():
    nbn.set_output_cache(3 * G)
    ys = [nbn.lp_normalize(rows(s)) for s in range(5)]  # 512 KiB -> one 2 MiB granule each
    assert [cached(y) for y in ys] == [True, True, True, False, False]
    assert ys[4].flags.owndata
    info = nbn.output_cache_info()
    assert info["held_bytes"] == 3 * G and info["idle_buffers"] == 0
    del ys[0]
    y5 = nbn.lp_normalize(rows(5))
    assert cached(y5)


def test_idle_buffers_of_another_size_make_room():
    nbn.set_output_cache(3 * G)
    small = [nbn.layer_norm(rows(s), 1024) for s in range(3)]
    del small
    big = nbn.layer_norm(rows(9, (1024, 1024)), 1024)  # 4 MiB: two idle 2 MiB buffers go
    assert cached(big)
    info = nbn.output_cache_info()
    assert info["buffers"] == 2 and info["held_bytes"] == G + 2 * _outbuf.GRANULE + _outbuf.ALIGN


def test_zero_limit_turns_reuse_off_and_releases():
    y = nbn.layer_norm(rows(0), 1024)
    del y
    assert nbn.output_cache_info()["idle_bytes"] == G
    assert nbn.set_output_cache(0) == LIMIT
    assert nbn.output_cache_info() == {
        "max_bytes": 0,
        "held_bytes": 0,
        "buffers": 0,
        "idle_buffers": 0,
        "idle_bytes": 0,
    }
    y = nbn.layer_norm(rows(0), 1024)
    assert y.flags.owndata


def test_release_frees_idle_and_lets_go_of_busy():
    a = nbn.group_norm(rows(0, (4, 32, 64, 64)), 8)
    b = nbn.group_norm(rows(1, (4, 32, 64, 64)), 8)
    ref = a.copy()
    del b
    assert nbn.release_output_cache() == G
    assert nbn.output_cache_info()["buffers"] == 0
    c = nbn.group_norm(rows(2, (4, 32, 64, 64)), 8)
    assert cached(c) and not cached(a) and c.base is not a.base
    np.testing.assert_array_equal(a, ref)


def test_bad_limits():
    with pytest.raises(TypeError, match="max_bytes"):
        nbn.set_output_cache(1.5)
    with pytest.raises(TypeError, match="max_bytes"):
        nbn.set_output_cache(True)
    with pytest.raises(ValueError, match="max_bytes"):
        nbn.set_output_cache(-1)
    assert nbn.output_cache_info()["max_bytes"] == LIMIT


@pytest.mark.parametrize(
    "raw, want",
    [("0", 0), ("64", 64 << 20), ("0.5", 1 << 19), (" ", None), ("many", None), ("-3", None), ("nan", None)],
)
def test_environment_limit(monkeypatch, raw, want):
    monkeypatch.setenv("NUMBANORM_OUTPUT_CACHE_MB", raw)
    if want is None:
        if raw.strip():
            with pytest.warns(RuntimeWarning, match="NUMBANORM_OUTPUT_CACHE_MB"):
                got = _outbuf._env_limit()
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                got = _outbuf._env_limit()
        assert got == _outbuf._default_limit()
    else:
        assert _outbuf._env_limit() == want
    assert 0 < _outbuf._default_limit() <= 1 << 30


def test_layout_alignment_and_dtype():
    for dt in (np.float32, np.float64):
        x = rows(0, (96, 2048), dt)
        y = nbn.layer_norm(x, 2048)
        assert cached(y) and y.dtype == dt and y.flags.c_contiguous and y.flags.writeable
        assert y.ctypes.data % 64 == 0
        xf = np.asfortranarray(rows(1, (2048, 96), dt))
        z = nbn.standardize(xf)
        assert cached(z) and z.flags.f_contiguous
        np.testing.assert_allclose(z, nbn.standardize(np.ascontiguousarray(xf)), rtol=0, atol=1e-5)
    e = _outbuf.empty((5, 7, 4096), np.float64, "F")
    assert cached(e) and e.shape == (5, 7, 4096) and e.flags.f_contiguous
    assert _outbuf.empty(3, np.float32).flags.owndata  # small: plain np.empty


def test_small_outputs_and_subclasses_are_plain():
    y = nbn.layer_norm(rows(0, (8, 64)), 64)
    assert y.flags.owndata
    m = np.memmap  # a subclass keeps np.empty_like's behaviour
    assert type(_outbuf.empty_like(rows(0).view(m))) is m


def _cases():
    x4 = rows(3, (4, 16, 32, 64))
    C = 16
    rm, rv = np.zeros(C, np.float32), np.ones(C, np.float32)
    return {
        "batch_norm_train": lambda: nbn.batch_norm(x4, training=True),
        "batch_norm_eval": lambda: nbn.batch_norm(x4, rm, rv),
        "batch_norm_cl": lambda: nbn.batch_norm(
            np.ascontiguousarray(x4.transpose(0, 2, 3, 1)), training=True, channel_axis=-1
        ),
        "instance_norm": lambda: nbn.instance_norm(x4),
        "layer_norm": lambda: nbn.layer_norm(x4, (32, 64), np.ones((32, 64), np.float32)),
        "group_norm": lambda: nbn.group_norm(x4, 4),
        "rms_norm": lambda: nbn.rms_norm(x4, 64),
        "standardize": lambda: nbn.standardize(x4.reshape(-1, 64)),
        "standardize_axes": lambda: nbn.standardize(x4, axis=(0, 2, 3)),
        "minmax_scale": lambda: nbn.minmax_scale(x4.reshape(-1, 64)),
        "lp_normalize": lambda: nbn.lp_normalize(x4, p=1.0),
        "stats": lambda: nbn.layer_norm(x4, 64, return_stats=True)[0],
    }


@pytest.mark.parametrize("op", list(_cases()))
def test_every_op_allocates_from_the_cache(op):
    f = _cases()[op]
    y = f()
    assert cached(y)
    ref = y.copy()
    bid = id(y.base)
    del y
    again = f()
    assert id(again.base) == bid
    np.testing.assert_array_equal(again, ref)


def test_concurrent_calls_from_threads():
    xs = [rows(s) for s in range(8)]
    want = [nbn.layer_norm(x, 1024, out=np.empty_like(x)) for x in xs]
    errors = []

    def work(k):
        try:
            for i in range(12):
                j = (k + i) % len(xs)
                y = nbn.layer_norm(xs[j], 1024)
                z = nbn.layer_norm(xs[(j + 1) % len(xs)], 1024)
                np.testing.assert_array_equal(y, want[j])
                np.testing.assert_array_equal(z, want[(j + 1) % len(xs)])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    ts = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors[0]
    assert nbn.output_cache_info()["held_bytes"] <= LIMIT


def test_smaller_outputs_reused_where_glibc_maps_every_block():
    # dask.distributed workers run with MALLOC_TRIM_THRESHOLD_ set, which turns
    # glibc's dynamic mmap threshold off: outputs from 4 MiB are reused there
    import os
    import subprocess
    import sys

    code = "from numbanorm import _outbuf; print(_outbuf.MIN_BYTES)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}

    def min_bytes(env):
        run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        return int(run.stdout)

    assert min_bytes(env) == 32 << 20
    assert min_bytes({**env, "MALLOC_TRIM_THRESHOLD_": "65536"}) == 4 << 20
