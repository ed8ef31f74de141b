"""One-pass shifted moments (backends/cpu/segments.py, axis_stats.py):
accepted blocks and refused blocks (drift, sorted data, an outlier as the
shift, NaN/Inf) must all give the exact moments to a few ulps."""

from __future__ import annotations

import os
import sys
from fractions import Fraction

import numpy as np
import pytest

import numbanorm as nbn
from numbanorm._stats import merge_mid
from numbanorm.backends import cpu
from numbanorm.backends.cpu import axis_stats as cpu_moments
from numbanorm.backends.cpu._tasks import run

try:  # tests/ is not a package: the oracle importable under any import mode
    from reference import exact_moments
except ImportError:  # pragma: no cover - depends on pytest's import mode
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from reference import exact_moments


def _exact(v):
    """(mean, M2) of v exactly, as Fractions (reference.exact_moments)."""
    return exact_moments(v)[1:]


def _data(kind, shape, rng, dtype):
    R = shape[1]
    x = 1e4 + rng.standard_normal(shape)
    if kind == "sorted":  # every block's mean far from the running mean
        x = np.sort(x, axis=1)
    elif kind == "outlier_first":  # the first value, the first shift, 1e9 off
        x[:, 0] = 1e9
    elif kind == "near_limit":  # first value 3.5 sd off: K ~ 13 < 16, accepted
        x[:, 0] = 1e4 + 3.5
    elif kind == "steps":  # piecewise constant levels, jumps of 1e3 sd
        x = x + 1e3 * (np.arange(R) * 7 // R)[None, :, None]
    elif kind == "drift":
        x = x + np.linspace(0, 50, R)[None, :, None]
    elif kind == "constant":
        x = np.full(shape, 3.25)
    return x.astype(dtype)


KINDS = ["iid", "sorted", "outlier_first", "near_limit", "steps", "drift", "constant"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("K", [1, 3, 64, 256])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_moments_exact_whatever_the_path(rng, kind, K, dtype):
    # K = 1 rows take _seg_moments (chunks of ROW_CHUNK), K > 1 the lane
    # kernel (blocks of COL_BLOCK_BYTES): both span several chunks/blocks
    R = {1: 30000, 3: 30000, 64: 5000, 256: 1500}[K]
    x = _data(kind, (1, R, K), rng, dtype)
    for skipnan in (False, True):
        cnt, mean, m2, _, _, res = cpu.moments(x, skipnan, False)
        for k in sorted({0, K // 2, K - 1}):
            col = x[0, :, k].astype(np.float64)
            em, eq = _exact(col)
            assert cnt[0, k] == R
            got_mean = Fraction(float(mean[0, k])) + Fraction(float(res[0, k]))
            assert abs(float(got_mean - em)) <= 1e-15 * max(1.0, float(eq / R) ** 0.5)
            tol = 1e-14 * float(eq) if eq else 0.0
            assert abs(float(Fraction(float(m2[0, k])) - eq)) <= tol, (kind, k)


@pytest.mark.parametrize("K", [1, 64])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", [0, 1, -1])
def test_non_finite_values_in_any_block(rng, K, bad, where):
    R = 30000 if K == 1 else 5000
    x = 5.0 + rng.standard_normal((1, R, K))
    pos = {0: 0, 1: R // 2, -1: R - 1}[where]
    x[0, pos, 0] = bad
    cnt, mean, m2, _, _, _ = cpu.moments(x, False, False)
    # the column's statistics are not finite (Inf's mean may be Inf or NaN:
    # inf - inf in the deviations), and nothing else is touched
    assert not np.isfinite(m2[0, 0]) and not np.isfinite(mean[0, 0])
    if np.isnan(bad):
        assert np.isnan(mean[0, 0])
    # the other columns are untouched by column 0's value
    if K > 1:
        em, eq = _exact(x[0, :, 1])
        assert abs(float(Fraction(float(m2[0, 1])) - eq)) <= 1e-14 * float(eq)
    if np.isnan(bad):
        # NaN skipped: the moments of the other values, exactly
        cnt, mean, m2, _, _, res = cpu.moments(x, True, False)
        col = np.delete(x[0, :, 0], pos)
        em, eq = _exact(col)
        assert cnt[0, 0] == R - 1
        assert abs(float(Fraction(float(m2[0, 0])) - eq)) <= 1e-14 * float(eq)
        assert abs(float(Fraction(float(mean[0, 0])) + Fraction(float(res[0, 0])) - em)) <= 1e-15


@pytest.mark.parametrize("K", [3, 64])
def test_a_column_never_changes_another_columns_arithmetic(rng, K):
    # column 0 drifts (its blocks are refused and redone two-pass); a NaN in
    # column 1 (skipped) must not change column 0's or column 2's bits
    R = 20000 if K == 3 else 5000
    x = rng.standard_normal((R, K))
    x[:, 0] += np.linspace(0, 1e3, R)
    y0 = nbn.standardize(x)
    xb = x.copy()
    xb[R * 3 // 4, 1] = np.nan
    y1 = nbn.standardize(xb)
    np.testing.assert_array_equal(y0[:, 0], y1[:, 0])
    np.testing.assert_array_equal(y0[:, 2:], y1[:, 2:])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_an_outlier_in_a_tasks_first_rows_is_not_its_shift(rng, dtype):
    # a lane task's shift per column is the median of its first three
    # values: one far value among them (6 and 40 sd here, in two columns;
    # the first value alone was the shift and refused the block, sending
    # the task down the exact path) leaves every block accepted, and the
    # moments stay exact
    P, R, K = 1, 3000, 64
    x = (1e3 + rng.standard_normal((P, R, K))).astype(dtype)
    for nchunk in (1, 3):
        xs = x.copy()
        rows = [c * (-(-R // nchunk)) for c in range(nchunk)]  # each task's first row
        for r in rows:
            xs[0, r, 5] = 1e3 + 6.0
            xs[0, r + 1, 9] = 1e3 - 40.0
        L = cpu_moments.lanes_for(K)
        fr = cpu_moments.frame(xs.reshape(P, R * K), K, L, nchunk, 256, skipnan=False, stats=True)
        run(cpu_moments.col_moments, P * nchunk, *fr)
        assert fr[cpu_moments.F_STOP].max() < 0
        c, u, r_, q, _, _ = _kernel_moments(xs, nchunk, 256, False, False)
        for k in (5, 9, 10):
            col = xs[0, :, k].astype(np.float64)
            em, eq = _exact(col)
            got = Fraction(float(u[0, k])) + Fraction(float(r_[0, k]))
            assert abs(float(got - em)) <= 1e-15 * abs(float(em))
            assert abs(float(Fraction(float(q[0, k])) - eq)) <= 1e-14 * float(eq)


def _kernel_moments(x3, nchunk, rb, skipnan, minmax, want_moments=True):
    """The lane tasks run directly with a chosen task count and block size
    (moments() picks them from the shape), merged as moments() does."""
    P, R, K = x3.shape
    L = cpu_moments.lanes_for(K)
    fr = cpu_moments.frame(x3.reshape(P, R * K), K, L, nchunk, rb, skipnan=skipnan, stats=True)
    if want_moments:
        run(cpu_moments.col_moments, P * nchunk, *fr)
        if fr[cpu_moments.F_STOP].max() >= 0:
            run(cpu_moments.col_moments_exact, P * nchunk, *fr)
    if minmax:
        cnt = fr[cpu_moments.F_PART][0].copy()
        run(cpu_moments.col_minmax, P * nchunk, *fr)
        if want_moments:
            fr[cpu_moments.F_PART][0] = cnt
    part = fr[cpu_moments.F_PART]
    return merge_mid(*part[:4], part[4], part[5], minmax)


@pytest.mark.parametrize("kind", ["iid", "sorted", "outlier_first", "steps", "drift", "constant"])
@pytest.mark.parametrize("K", [1, 3, 64, 256])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_two_stream_blocks_exact(rng, kind, K, dtype):
    # Each task reads its rows as two halves side by side (block i = half-block
    # i of each, lane_sums/lane_minmax): many small blocks per task, odd
    # row counts (a half shorter than the other, a partial last lane-row),
    # a refused block's exact redo over both halves, and a NaN skipped in the
    # second half must all give the exact moments and min/max
    L = cpu_moments.lanes_for(K)
    m = L // K
    R = {1: 4 * L + 77, 3: 9 * m + 5, 64: 23 * m + 3, 256: 41}[K]
    x = _data(kind, (1, R, K), rng, dtype)
    for nchunk in (1, 2, 3):
        for rb in (m, 2 * m, 6 * m):
            for skipnan in (False, True):
                xs = x.copy()
                if skipnan:
                    xs[0, R - 2, K - 1] = np.nan  # in the second half of the last task
                c, u, r, q, lo, hi = _kernel_moments(xs, nchunk, rb, skipnan, True)
                for k in sorted({0, K // 2, K - 1}):
                    col = xs[0, :, k].astype(np.float64)
                    col = col[~np.isnan(col)]
                    em, eq = _exact(col)
                    assert c[0, k] == col.size, (nchunk, rb, k)
                    got = Fraction(float(u[0, k])) + Fraction(float(r[0, k]))
                    assert abs(float(got - em)) <= 1e-15 * max(1.0, abs(float(em))), (nchunk, rb, k)
                    tol = 1e-14 * float(eq) if eq else 0.0
                    assert abs(float(Fraction(float(q[0, k])) - eq)) <= tol, (nchunk, rb, k)
                    assert lo[0, k] == col.min() and hi[0, k] == col.max(), (nchunk, rb, k)
                # min/max alone (min-max scaling's one pass): same counts and bounds
                c2, _, _, _, lo2, hi2 = _kernel_moments(xs, nchunk, rb, skipnan, True, False)
                np.testing.assert_array_equal(c2, c)
                np.testing.assert_array_equal(lo2, lo)
                np.testing.assert_array_equal(hi2, hi)


@pytest.mark.parametrize("kind", ["iid", "sorted", "outlier_first", "steps", "drift", "nan", "inf"])
@pytest.mark.parametrize("K", [3, 64])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_moments_and_minmax_in_one_read_equal_the_two_passes(rng, kind, K, dtype):
    # moments(minmax=True) runs col_moments_minmax (one read) where it used
    # to run col_moments then col_minmax: the same counts, min and max, and
    # the same moments to a few ulps, whichever blocks the moments refuse
    # (and the exact task resumes), NaN skipped or not.  (Not always the
    # same bits when one task was loaded from the cache and the other
    # compiled in this process: 1 ulp seen in cold parallel runs, NOTES.md
    # section 21d.)
    R = 20000 if K == 3 else 3000
    x = _data("iid" if kind in ("nan", "inf") else kind, (2, R, K), rng, dtype)
    if kind == "nan":
        x[0, R // 3, 0] = np.nan
        x[1, R - 1, K - 1] = np.nan
    elif kind == "inf":
        x[0, R // 2, 1] = np.inf
        x[1, 0, 0] = -np.inf
    nchunk = 3
    rb = max(64 // K, 1) * (cpu_moments.lanes_for(K) // K)  # many small blocks per task
    for skipnan in (False, True):
        sep = _kernel_moments(x, nchunk, rb, skipnan, True)
        L = cpu_moments.lanes_for(K)
        fr = cpu_moments.frame(x.reshape(2, R * K), K, L, nchunk, rb, skipnan=skipnan, stats=True)
        run(cpu_moments.col_moments_minmax, 2 * nchunk, *fr)
        stopped = fr[cpu_moments.F_STOP].max() >= 0
        if stopped:
            run(cpu_moments.col_moments_exact, 2 * nchunk, *fr)
        part = fr[cpu_moments.F_PART]
        fused = merge_mid(*part[:4], part[4], part[5], True)
        _same_moments(sep, fused)
        if kind in ("sorted", "nan", "inf"):
            assert stopped  # the resumed path is the one under test
        # and moments() itself takes that path
        got = cpu.moments(x, skipnan, True)
        want = cpu.moments(x, skipnan, False)
        mm = cpu.moments(x, skipnan, True, want_moments=False)
        np.testing.assert_array_equal(got.count, want.count)
        np.testing.assert_allclose(got.mean + got.resid, want.mean + want.resid, rtol=4e-16, atol=0)
        np.testing.assert_allclose(got.m2, want.m2, rtol=1e-15, atol=0)
        np.testing.assert_array_equal(got.min, mm.min)
        np.testing.assert_array_equal(got.max, mm.max)


def _same_moments(a, b):
    """(count, mean, residual, M2, min, max) of two merges: counts, min and
    max identical, mean + residual and M2 to a few ulps (NaN where NaN)."""
    cnt, mu, r, q, lo, hi = a
    cnt2, mu2, r2, q2, lo2, hi2 = b
    np.testing.assert_array_equal(cnt, cnt2)
    np.testing.assert_array_equal(lo, lo2)
    np.testing.assert_array_equal(hi, hi2)
    np.testing.assert_allclose(mu + r, mu2 + r2, rtol=4e-16, atol=0)
    np.testing.assert_allclose(q, q2, rtol=1e-15, atol=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("where", ["first", "middle", "a_whole_chunk", "all", "none"])
def test_rows_skipping_nan_are_exact(rng, where, dtype):
    """Rows (K = 1) with NaN left out (standardize's rows) take the row
    moments with NaN skipped (segments.segment_moments_nan): exact over the
    values that are not NaN, wherever the NaN are, including the first
    value (the shift) and a whole chunk; a row without NaN gets the bits of
    the path that does not skip."""
    from numbanorm._config import ROW_CHUNK

    R = 3 * ROW_CHUNK + 17
    x = (1e4 + rng.standard_normal((1, R, 1))).astype(dtype)
    if where == "first":
        x[0, 0, 0] = np.nan
    elif where == "middle":
        x[0, R // 2 :: 97, 0] = np.nan
    elif where == "a_whole_chunk":
        x[0, ROW_CHUNK : 2 * ROW_CHUNK, 0] = np.nan
    elif where == "all":
        x[:] = np.nan
    cnt, mean, m2, _, _, res = cpu.moments(x, True, False)
    col = x[0, :, 0].astype(np.float64)
    col = col[~np.isnan(col)]
    assert cnt[0, 0] == col.size
    if col.size == 0:
        return
    em, eq = _exact(col)
    got_mean = Fraction(float(mean[0, 0])) + Fraction(float(res[0, 0]))
    assert abs(float(got_mean - em)) <= 1e-15 * max(1.0, float(eq / col.size) ** 0.5)
    assert abs(float(Fraction(float(m2[0, 0])) - eq)) <= 1e-14 * float(eq)
    if where == "none":
        plain = cpu.moments(x, False, False)
        assert (plain[0] == cnt).all() and (plain[1] == mean).all() and (plain[2] == m2).all()


@pytest.mark.parametrize("R", [1, 49, 511, 512, 3000])
@pytest.mark.parametrize("skipnan", [False, True])
def test_row_minmax_of_short_and_long_rows(rng, R, skipnan):
    """Min/max of rows (K = 1), all through row_minmax: short segments
    by its scalar loop, long ones (ROW_MINMAX_LANES_MIN and more) by the
    lane min/max; both give NumPy's min/max (NaN propagated unless
    skipnan, then left out and not counted), +-inf and a count of 0 for an
    all-NaN row."""
    P = 300
    x = rng.standard_normal((P, R, 1)) * 10
    x[3, R // 2, 0] = np.nan
    x[5] = np.nan
    x[7, 0, 0] = -np.inf
    m = cpu.moments(x, skipnan, True, want_moments=False)
    v = x[:, :, 0]
    with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning) if skipnan else _nowarn():
        lo = np.nanmin(v, axis=1) if skipnan else v.min(axis=1)
        hi = np.nanmax(v, axis=1) if skipnan else v.max(axis=1)
    if skipnan:  # (rows of NaN only: row 5, and row 3 when R == 1)
        empty = np.isnan(v).all(axis=1)
        lo[empty], hi[empty] = np.inf, -np.inf
    np.testing.assert_array_equal(m.min[:, 0], lo)
    np.testing.assert_array_equal(m.max[:, 0], hi)
    cnt = (~np.isnan(v)).sum(axis=1) if skipnan else np.full(P, R)
    np.testing.assert_array_equal(m.count[:, 0], cnt)


class _nowarn:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False
