"""The fused large paths of batch_norm, standardize and minmax_scale.

A large native C-contiguous array whose general plan is rows (A*C, S) or
channels last (1, A*C) takes the per-channel fast path
(backends/cpu/channels.py): the moments tasks, the merges, the parameters
and the apply task, without the general path's planning.  It repeats the
general path step by step, so it must give the same bits, statistics and
running updates included; everything else must still take the general path.

batch_norm training over long channels-first rows normally takes the
channel-pipelined kernel instead (channels.bn_pipe_task, tests/test_chan_pipe.py);
these tests switch it off, so that they test the two-pass fused path.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest

import numbanorm as nbn
from numbanorm.backends.cpu import channels, shortcuts


def _same(a, b):
    a = a if isinstance(a, tuple) else (a,)
    b = b if isinstance(b, tuple) else (b,)
    assert len(a) == len(b)
    for u, v in zip(a, b, strict=True):
        assert type(u) is type(v)
        assert u.shape == v.shape and u.dtype == v.dtype
        assert np.array_equal(u, v, equal_nan=True)


def _close(a, b):
    """As _same, but within 4 units in the last place (see the standardize
    tests: a rare last-bit difference)."""
    for u, v in zip(a, b, strict=True):
        assert type(u) is type(v) and u.shape == v.shape and u.dtype == v.dtype
        np.testing.assert_array_equal(np.isnan(u), np.isnan(v))
        ok = ~np.isnan(u)
        np.testing.assert_allclose(u[ok], v[ok], rtol=4 * np.finfo(u.dtype).eps, atol=0)


@pytest.fixture(autouse=True)
def _two_pass(monkeypatch):
    monkeypatch.setattr(channels, "CHAN_PIPE", False)


@pytest.fixture
def count(monkeypatch):
    """Counts the calls of the fused kernels' host functions."""
    n = {"bn_large": 0, "standardize_large": 0, "minmax_large": 0}
    fns = {"bn_large": "batch_norm", "standardize_large": "standardize", "minmax_large": "minmax_scale"}
    for name, fn in fns.items():
        orig = getattr(channels, fn)

        def wrapped(*a, _orig=orig, _name=name):
            n[_name] += 1
            return _orig(*a)

        monkeypatch.setattr(channels, fn, wrapped)
    return n


def _both(monkeypatch, f):
    """f() through the fused path, then through the general one."""
    got = f()
    monkeypatch.setattr(shortcuts, "FUSED", False)
    want = f()
    monkeypatch.setattr(shortcuts, "FUSED", True)
    return got, want


def _data(rng, shape, dtype, offset=0.0):
    x = rng.standard_normal(shape) * 3.0 + offset
    return x.astype(dtype)


# (shape, channel_axis): rows with a batch, rows of one sample, few long rows
# (several segments per row), channels last, a 2-D (N, C)
BN_CASES = [
    ((4, 6, 40, 50), 1),
    ((1, 5, 9000), 1),
    ((2, 2, 300_000), 1),
    ((300, 7, 5, 6), -1),
    ((9000, 5), 1),
    ((3, 70_000), -1),
    # short rows (S < 256) no fewer than the batch: the general plan's rows too
    ((16, 64, 7, 7), 1),
    ((8, 256, 16, 8), 1),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,ca", BN_CASES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_fused_gives_the_general_paths_bits(
    monkeypatch, count, rng, dtype, shape, ca, training, affine
):
    x = _data(rng, shape, dtype, offset=1e4)  # the center does not round to x's dtype
    C = shape[ca]
    w = rng.uniform(0.5, 2.0, C).astype(dtype) if affine else None
    b = rng.standard_normal(C).astype(dtype) if affine else None
    rm0 = rng.standard_normal(C).astype(np.float32)
    rv0 = rng.uniform(0.5, 2.0, C).astype(np.float32)
    x0 = x.copy()

    def call():
        rm, rv = rm0.copy(), rv0.copy()
        y, mean, rstd = nbn.batch_norm(
            x, rm, rv, w, b, training, 0.1, 1e-5, channel_axis=ca, return_stats=True
        )
        return y, mean, rstd, rm, rv

    got, want = _both(monkeypatch, call)
    _same(got, want)
    assert count["bn_large"] == 1
    np.testing.assert_array_equal(x, x0)


# views whose statistics the general path plans otherwise (chan_fusable
# refuses them): short rows (S < 256), a lone channel, channels last without
# a batch, lanes of (A, C*S) where A > S
BN_EVAL_CASES = [
    ((16, 64, 7, 7), 1),
    ((8, 256, 16, 8), 1),
    ((64, 1, 30, 30), 1),
    ((1, 40_000), -1),
    ((300, 40, 2, 2), 1),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,ca", BN_EVAL_CASES)
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("inplace", [False, True])
def test_batch_norm_eval_fused_for_any_view(monkeypatch, count, rng, dtype, shape, ca, affine, inplace):
    """Eval computes no statistics: the per-channel path takes every view
    and gives the general path's bits (output and the returned mean/rstd)."""
    x0 = _data(rng, shape, dtype, offset=1e4)
    C = shape[ca]
    w = rng.uniform(0.5, 2.0, C).astype(dtype) if affine else None
    b = rng.standard_normal(C).astype(dtype) if affine else None
    rm = (1e4 + rng.standard_normal(C)).astype(np.float32)
    rv = rng.uniform(0.5, 2.0, C).astype(np.float32)

    def call():
        x = x0.copy()
        y, mean, rstd = nbn.batch_norm(
            x, rm, rv, w, b, False, 0.1, 1e-5, channel_axis=ca, out=x if inplace else None, return_stats=True
        )
        assert (y is x) == inplace
        return y, mean, rstd

    got, want = _both(monkeypatch, call)
    _same(got, want)
    assert count["bn_large"] == 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,ca", BN_CASES[:4])
def test_batch_norm_fused_out_and_in_place(monkeypatch, count, rng, dtype, shape, ca):
    x = _data(rng, shape, dtype, offset=-50.0)
    want = nbn.batch_norm(x, training=True, channel_axis=ca)
    out = np.full_like(x, np.nan)
    got = nbn.batch_norm(x, training=True, channel_axis=ca, out=out)
    assert got is out
    _same(got, want)
    xi = x.copy()
    got = nbn.batch_norm(xi, training=True, channel_axis=ca, out=xi)
    assert got is xi
    _same(got, want)
    assert count["bn_large"] == 3
    monkeypatch.setattr(shortcuts, "FUSED", False)
    _same(nbn.batch_norm(x, training=True, channel_axis=ca), want)


def test_batch_norm_fused_running_stats_float64_and_no_running(monkeypatch, count, rng):
    x = _data(rng, (3, 4, 50, 60), np.float32, offset=7.0)
    rm0, rv0 = rng.standard_normal(4), rng.uniform(1, 2, 4)

    def call():
        rm, rv = rm0.copy(), rv0.copy()
        return nbn.batch_norm(x, rm, rv, training=True, momentum=0.3, return_stats=True) + (rm, rv)

    got, want = _both(monkeypatch, call)
    _same(got, want)
    got, want = _both(monkeypatch, lambda: nbn.batch_norm(x, training=True, eps=0.0))
    _same(got, want)
    assert count["bn_large"] == 2


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_norm_fused_nan_inf_and_constant_channels(monkeypatch, rng, dtype):
    x = _data(rng, (4, 5, 30, 40), dtype)
    x[1, 0, 3, 4] = np.nan
    x[2, 1, 0, 0] = np.inf
    x[:, 2] = 3.5  # constant channel: variance 0
    x[:, 3, :, :5] = -np.inf
    with np.errstate(invalid="ignore"):
        for eps in (1e-5, 0.0):
            got, want = _both(
                monkeypatch, lambda eps=eps: nbn.batch_norm(x, training=True, eps=eps, return_stats=True)
            )
            _same(got, want)
    y = got[0]
    assert np.isnan(y[:, 0]).all() and np.isnan(y[:, 1]).all() and np.isnan(y[:, 3]).all()
    assert np.isnan(y[:, 2]).all()  # eps=0 on a constant channel: 0 * inf
    assert np.isfinite(y[:, 4]).all()


@pytest.mark.parametrize("threads", [1, 2])
def test_batch_norm_fused_with_one_thread(monkeypatch, rng, threads):
    if threads > numba.config.NUMBA_NUM_THREADS:
        pytest.skip("fewer threads than asked")
    x = _data(rng, (2, 3, 400, 300), np.float32, offset=100.0)
    prev = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        got, want = _both(monkeypatch, lambda: nbn.batch_norm(x, training=True))
    finally:
        numba.set_num_threads(prev)
    _same(got, want)


@pytest.mark.parametrize(
    "make",
    [
        # rows of 100 < 256, fewer than the batch: the general plan's lanes
        lambda r: r.standard_normal((200, 6, 10, 10)).astype(np.float32),
        lambda r: r.standard_normal((40, 1, 2000)).astype(np.float32),  # one channel
        lambda r: r.standard_normal((6, 40, 300)).astype(np.float16),
        lambda r: r.standard_normal((40, 6, 300)).astype(np.float32)[:, :, ::2],  # strided
        lambda r: np.asfortranarray(r.standard_normal((3000, 20))),
    ],
)
def test_batch_norm_views_the_fused_path_does_not_repeat_take_the_general_path(count, rng, make):
    x = make(rng)
    y = nbn.batch_norm(x, training=True)
    assert count["bn_large"] == 0
    assert y.shape == x.shape and np.isfinite(y).all()


def test_batch_norm_fused_leaves_odd_outputs_and_params_to_the_general_path(count, rng):
    x = _data(rng, (4, 6, 40, 50), np.float32)
    with pytest.raises(ValueError, match="out must have dtype"):
        nbn.batch_norm(x, training=True, out=np.empty(x.shape))
    with pytest.raises(ValueError, match="out is read-only"):
        ro = np.empty_like(x)
        ro.flags.writeable = False
        nbn.batch_norm(x, training=True, out=ro)
    with pytest.raises(ValueError, match="weight must have shape"):
        nbn.batch_norm(x, training=True, weight=np.ones(5, np.float32))
    # a non-contiguous out= is filled by the general path
    big = np.empty((4, 6, 40, 100), np.float32)
    got = nbn.batch_norm(x, training=True, out=big[..., ::2])
    _same(np.ascontiguousarray(got), nbn.batch_norm(x, training=True))
    assert count["bn_large"] == 1  # the last, reference call


# standardize / minmax_scale: (shape, axis): channels last with a batch (2-D
# columns, a 3-D leading axis, two leading axes), rows (the last axis
# reduced) and rows with a batch (per channel of NCHW: partials merged over
# the batch)
PP_CASES = [
    ((5000, 13), 0),
    ((3000, 4, 5), 0),
    ((600, 7, 9), (0, 1)),
    ((13, 5000), 1),
    ((3, 5, 3000), -1),
    ((40, 6, 300), 2),
    ((6, 5, 40, 40), (0, 2, 3)),
    ((40, 6, 300), (-1, 0)),
    ((16, 64, 7, 7), (0, 2, 3)),  # short rows, no fewer than the batch
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", PP_CASES)
@pytest.mark.parametrize(
    "kw",
    [{}, {"ddof": 1}, {"with_mean": False}, {"with_std": False}, {"with_mean": False, "with_std": False}],
)
def test_standardize_fused_gives_the_general_paths_bits(monkeypatch, count, rng, dtype, shape, axis, kw):
    x = _data(rng, shape, dtype, offset=1e4)
    x.reshape(-1)[::97] = np.nan
    x0 = x.copy()
    # Same bits in every run here but two of about ten full test-suite runs:
    # there, rows with NaN (the last axis reduced) differed in the last bit of
    # a few statistics or outputs, in a fresh process; not reproduced since
    # (benchmarks/NOTES.md section 14).  Hence the tolerance of a few ulps.
    got, want = _both(monkeypatch, lambda: nbn.standardize(x, axis, return_stats=True, **kw))
    _close(got, want)
    got, want = _both(monkeypatch, lambda: nbn.standardize(x, axis, **kw))
    _close((got,), (want,))
    assert count["standardize_large"] == 2
    np.testing.assert_array_equal(x, x0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_standardize_fused_constant_and_empty_features(monkeypatch, rng, dtype):
    x = _data(rng, (8000, 6), dtype)
    x[:, 1] = 1e6  # constant: std 1 (scikit-learn's bound)
    x[:, 2] = np.nan  # no values: NaN statistics
    x[:3, 3] = np.nan
    x[:, 4] = np.inf
    with np.errstate(invalid="ignore"):
        got, want = _both(monkeypatch, lambda: nbn.standardize(x, 0, return_stats=True))
    _same(got, want)
    y, mean, std = got
    assert std[0, 1] == 1.0 and (y[:, 1] == 0.0).all()
    assert np.isnan(mean[0, 2]) and np.isnan(y[:, 2]).all()
    assert np.isnan(y[:3, 3]).all() and np.isfinite(y[3:, 3]).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", PP_CASES)
@pytest.mark.parametrize(
    "kw", [{}, {"feature_range": (-1.0, 2.0)}, {"clip": True, "feature_range": (-3.0, 0.5)}]
)
def test_minmax_fused_gives_the_general_paths_bits(monkeypatch, count, rng, dtype, shape, axis, kw):
    x = _data(rng, shape, dtype, offset=-2e3)
    x.reshape(-1)[::89] = np.nan
    got, want = _both(monkeypatch, lambda: nbn.minmax_scale(x, axis=axis, **kw))
    _same(got, want)
    assert count["minmax_large"] == 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_minmax_fused_zero_range_empty_and_out(monkeypatch, count, rng, dtype):
    x = _data(rng, (8000, 6), dtype)
    x[:, 1] = 5.0  # zero range: scaled by the range's width, to feature_range[0]
    x[:, 2] = np.nan
    with np.errstate(invalid="ignore"):
        got, want = _both(monkeypatch, lambda: nbn.minmax_scale(x, (2.0, 3.0), axis=0))
    _same(got, want)
    assert (got[:, 1] == 2.0).all() and np.isnan(got[:, 2]).all()
    out = np.empty_like(x)
    with np.errstate(invalid="ignore"):
        assert nbn.minmax_scale(x, (2.0, 3.0), axis=0, out=out) is out
    _same(out, want)
    assert count["minmax_large"] == 2


def test_preprocessing_views_the_fused_path_does_not_repeat_take_the_general_path(count, rng):
    x = rng.standard_normal((40, 6, 300))
    nbn.standardize(x, axis=None)  # nothing kept
    nbn.standardize(x[:, :, :100].copy(), axis=(0, 2))  # small (24,000 elements)
    nbn.minmax_scale(x, axis=2)  # kept axes (0, 1) ... rows of 300: fused
    nbn.minmax_scale(x[:, :, ::2], axis=0)  # strided
    nbn.standardize(x.astype(np.float16), axis=0)
    nbn.minmax_scale(x, axis=1)  # kept (0, 2) not contiguous
    nbn.minmax_scale(x, axis=[0, 2])  # a list: the general path takes it
    assert count == {"bn_large": 0, "standardize_large": 0, "minmax_large": 1}
    with pytest.raises(ValueError, match="repeats an axis"):
        nbn.standardize(x, axis=(0, 0))
    with pytest.raises(ValueError, match="out of range"):
        nbn.standardize(x, axis=(0, 3))
    with pytest.raises(TypeError, match="axis must be"):
        nbn.standardize(x, axis=(0, 1.0))


@pytest.mark.parametrize("op", ["standardize", "batch_norm_nhwc"])
def test_refused_blocks_compile_the_exact_task_then_finish(monkeypatch, count, rng, op):
    """The fused glue runs the statistics tasks itself; a lane task that
    stops at a refused block (here the first rows far from the rest, so the
    shift, the first value, is far from the mean) needs the exact task,
    compiled on first need: the glue returns, the host compiles it and calls
    the glue again to finish.  Both ways give the general path's bits."""
    from numbanorm.backends.cpu import axis_stats

    x = _data(rng, (40000, 5), np.float64, offset=1e6)
    x[:50] -= 1e6
    if op == "standardize":
        x[30000, 4] = np.nan
        f = lambda: nbn.standardize(x, 0, return_stats=True)  # noqa: E731
        glue = channels._standardize_glue
    else:
        x = x.reshape(4000, 10, 1, 5)
        f = lambda: nbn.batch_norm(x, training=True, channel_axis=-1, return_stats=True)  # noqa: E731
        glue = channels._bn_glue
    xaddrs = []
    orig = channels.launch

    def launch(kernel, *a):
        if kernel is glue:
            xaddrs.append(a[6])  # (part, fin, rows, C, prm, maddr, xaddr, ...)
        return orig(kernel, *a)

    monkeypatch.setattr(channels, "launch", launch)
    # as in a process that has not compiled the exact task yet (and no
    # cached plan that knows its address)
    monkeypatch.setattr(axis_stats.col_moments_exact, "_addresses", {})
    channels.clear_plans()
    got, want = _both(monkeypatch, f)
    _same(got, want)
    assert xaddrs[0] == 0 and xaddrs[1] != 0 and len(xaddrs) == 2
    got, want = _both(monkeypatch, f)  # now compiled: one glue call
    _same(got, want)
    assert len(xaddrs) == 3 and xaddrs[2] == xaddrs[1]
    assert count["standardize_large" if op == "standardize" else "bn_large"] == 2


def test_cached_plans_rebind_release_and_stay_per_thread(rng):
    """A medium two-pass call reuses this thread's plan for the same shapes
    and variant (channels._plan): the second call gives the first's bits,
    in place and out of place alternate correctly, the plan keeps neither x
    nor the output alive, the cache stays bounded, and threads never share a
    plan's scratch."""
    import gc
    import weakref
    from concurrent.futures import ThreadPoolExecutor

    channels.clear_plans()
    x = (rng.standard_normal((3000, 40)) * 2 + 50).astype(np.float32)
    first = nbn.standardize(x, 0)
    assert len(channels._PLANS.plans) == 1
    np.testing.assert_array_equal(nbn.standardize(x, 0), first)
    xi = x.copy()
    assert nbn.standardize(xi, 0, out=xi) is xi  # another variant: its own plan
    np.testing.assert_array_equal(xi, first)
    np.testing.assert_array_equal(nbn.standardize(x, 0), first)
    # a cached plan's scratch is reused without a reset: every task writes
    # what the glue reads (poisoned here, the same bits come back)
    for f in (
        lambda a: nbn.standardize(a, 0),
        lambda a: nbn.minmax_scale(a, axis=0),
        lambda a: nbn.batch_norm(a.reshape(300, 10, 40), training=True, channel_axis=-1),
        lambda a: nbn.batch_norm(a.reshape(60, 2, 1000), training=True),  # rows, two-pass (C < 2 threads)
    ):
        channels.clear_plans()
        want = f(x)
        assert len(channels._PLANS.plans) == 1
        for plan in channels._PLANS.plans.values():
            for a in (*plan.tail, plan.fin):
                if isinstance(a, np.ndarray) and a.size:
                    a[...] = np.nan if a.dtype.kind == "f" else 7
        np.testing.assert_array_equal(f(x), want)
    # neither x nor y is kept by the cached plans
    x2 = x.copy()
    rx = weakref.ref(x2)
    y = nbn.standardize(x2, 0)
    ry = weakref.ref(y)
    del x2, y
    gc.collect()
    assert rx() is None and ry() is None
    # bounded: one plan per shape, the oldest dropped
    for n in range(channels.PLAN_CACHE_ENTRIES + 3):
        nbn.minmax_scale(x[: 2000 + n], axis=0)
    assert len(channels._PLANS.plans) == channels.PLAN_CACHE_ENTRIES
    # two threads, the same shapes, different data: each its own scratch
    data = [(rng.standard_normal((3000, 40)) * (t + 1) + 10 * t).astype(np.float32) for t in range(2)]
    want = [nbn.standardize(d, 0) for d in data]

    def work(t):
        return all(np.array_equal(nbn.standardize(data[t], 0), want[t]) for _ in range(100))

    with ThreadPoolExecutor(2) as pool:
        assert all(pool.map(work, range(2)))


def test_plan_cache_keeps_wide_plans_within_its_byte_budget():
    # a wide matrix's plan holds MBs of lane scratch (64x4096 float32: 1.7
    # MB); it is kept (rebuilt per call it cost 33 us to make again),
    # and the plans kept hold at most PLAN_CACHE_TOTAL_BYTES in all
    from numbanorm.backends.cpu import channels

    channels.clear_plans()
    for n in range(6):
        nbn.standardize(np.ones((64, 4096 + 64 * n), np.float32), 0)
    sizes = [p.scratch_bytes() for p in channels._PLANS.plans.values()]
    assert all(1 << 20 < s <= channels.PLAN_CACHE_SCRATCH_BYTES for s in sizes)
    assert 1 < len(sizes) < 6 and sum(sizes) <= channels.PLAN_CACHE_TOTAL_BYTES
    # the first ones are kept (a wide plan drops no other), and calls find them
    kept = dict(channels._PLANS.plans)
    for n in range(6):
        x = np.random.default_rng(n).standard_normal((64, 4096 + 64 * n)).astype(np.float32)
        nbn.standardize(x, 0)
        assert channels._PLANS.plans == kept
    assert [k[0] for k in kept] == [(1, 64 * (4096 + 64 * n)) for n in range(len(kept))]
    # a small plan is kept, dropping the oldest where the budget needs it
    nbn.standardize(np.ones((4096, 64), np.float32), 0)
    plans = channels._PLANS.plans
    assert any(k[0] == (1, 4096 * 64) for k in plans)
    assert sum(p.scratch_bytes() for p in plans.values()) <= channels.PLAN_CACHE_TOTAL_BYTES
    channels.clear_plans()
