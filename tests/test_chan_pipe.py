"""batch_norm training through the channel-pipelined kernel (backends/cpu/channels.py:
bn_pipe_task, apply_row_moments).

Channels-first rows (A*C, S) with rows of at least CHAN_PIPE_MIN_ROW_BYTES
take it when every thread gets two channels and one channel per thread fits
CHAN_PIPE_CACHE_BYTES.  Each row's moments are summed in the loop that writes
another row, so their summation order may differ from the two-pass path's in
the last bits; they must be as exact (Fractions), and everything else (the
parameters, the output formula, running updates, NaN/Inf, out=, in place,
threads) must agree with the two-pass fused path (channels.CHAN_PIPE = False).
"""

from __future__ import annotations

import os
import sys
from fractions import Fraction

import numba
import numpy as np
import pytest

import numbanorm as nbn
from numbanorm._config import ROW_CHUNK
from numbanorm.backends.cpu import affine as cpu_apply
from numbanorm.backends.cpu import axis_stats as cpu_moments
from numbanorm.backends.cpu import channels

try:  # tests/ is not a package: the oracle importable under any import mode
    from reference import exact_moments
except ImportError:  # pragma: no cover - depends on pytest's import mode
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from reference import exact_moments


@pytest.fixture
def launches(monkeypatch):
    """Counts the launches of the pipelined kernel."""
    n = [0]
    orig = channels.bn_pipe

    def wrapped(*a):
        n[0] += 1
        return orig(*a)

    monkeypatch.setattr(channels, "bn_pipe", wrapped)
    return n


@pytest.fixture
def threads():
    prev = numba.get_num_threads()
    yield numba.set_num_threads
    numba.set_num_threads(prev)


def _exact(v):
    """(mean, M2) of v exactly, as Fractions (reference.exact_moments)."""
    return exact_moments(v)[1:]


def _row(kind, n, rng, dtype):
    u = 1e4 + rng.standard_normal(n)
    if kind == "sorted":  # every chunk refused, redone two-pass
        u = np.sort(u)
    elif kind == "outlier_first":  # the first shift 1e9 off
        u[0] = 1e9
    elif kind == "drift":
        u = u + np.linspace(0, 50, n)
    elif kind == "constant":
        u = np.full(n, 3.25)
    return u.astype(dtype)


KINDS = ["iid", "sorted", "outlier_first", "drift", "constant"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [700, ROW_CHUNK, 3 * ROW_CHUNK + 123])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("stream", [False, True])
def test_row_moments_summed_while_writing_are_exact(rng, kind, n, dtype, stream):
    u = _row(kind, n, rng, dtype)
    v = (rng.standard_normal(n) * 5 - 2).astype(dtype)
    T = np.dtype(dtype).type
    ch, sc, sh = T(-2.5), T(0.75), T(0.125)
    # the output at an element offset inside guard elements: streamed spans
    # must start on a line whatever the offset
    for off in (0, 1, 3):
        buf = np.full(n + 32, 7.0, dtype)
        o = buf[off : off + n]
        cnt, mean, res, m2 = channels.apply_row_moments(u, v, o, ch, sc, sh, stream, False)
        want = np.empty(n, dtype)
        cpu_apply.apply_span(v, want, ch, sc, sh, T(-np.inf), T(np.inf), False, False, False)
        np.testing.assert_array_equal(o, want)
        assert np.all(buf[:off] == 7.0) and np.all(buf[off + n :] == 7.0)
        em, eq = _exact(u.astype(np.float64))
        assert cnt == n
        got_mean = Fraction(float(mean)) + Fraction(float(res))
        assert abs(float(got_mean - em)) <= 1e-15 * max(1.0, float(eq / n) ** 0.5)
        assert abs(float(Fraction(float(m2)) - eq)) <= (1e-14 * float(eq) if eq else 0.0)
        # the same algorithm as segment_moments: within both results' error bounds
        ref = cpu_moments.segment_moments(u, 0, n)
        np.testing.assert_allclose([mean + res, m2], [ref[1] + ref[2], ref[3]], rtol=2e-14, atol=0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", [0, ROW_CHUNK + 5, -1])
def test_row_moments_non_finite(rng, bad, where):
    n = 2 * ROW_CHUNK + 10
    u = 5.0 + rng.standard_normal(n)
    u[where] = bad
    o = np.empty(n)
    cnt, mean, _, m2 = channels.apply_row_moments(u, u.copy(), o, 0.0, 1.0, 0.0, False, False)
    assert cnt == n and not np.isfinite(m2) and not np.isfinite(mean)
    if np.isnan(bad):
        assert np.isnan(mean)
    np.testing.assert_array_equal(o, u)  # o = (v - 0) * 1 + 0, v a copy of u


def _scale(y, mean, rstd, w):
    """The size the output's rounding is relative to: |x - mean| * rstd * |w|
    can be small where mean * rstd is not (data far from zero)."""
    return 1.0 + float(np.max(np.abs(y))) + float(np.max(np.abs(mean * rstd * (1.0 if w is None else w))))


def _agree(got, want, w, ulps=8):
    """Pipelined vs two-pass: statistics and running stats within a few
    ulps of float64 (their stats dtype's when narrower), outputs within a few
    ulps of the output's scale; NaN where the other has NaN."""
    y, mean, rstd, rm, rv = got
    y0, mean0, rstd0, rm0, rv0 = want
    # a mean's rounding is relative to the spread, not to the mean (which
    # may be ~0); a spread's relative to itself
    sd = 1.0 / np.abs(rstd0.astype(np.float64))
    for a, b, spread in ((mean, mean0, sd), (rstd, rstd0, None), (rm, rm0, sd), (rv, rv0, None)):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        ok = np.isfinite(b) & (np.isfinite(spread) if spread is not None else True)
        size = np.abs(b[ok]) + (spread[ok] if spread is not None else 0.0)
        assert np.all(np.abs(a[ok] - b[ok]) <= ulps * np.finfo(a.dtype).eps * size)
        bad = ~np.isfinite(b)
        np.testing.assert_array_equal(a[bad], b[bad])
    assert y.dtype == y0.dtype and y.shape == y0.shape
    np.testing.assert_array_equal(np.isnan(y), np.isnan(y0))
    ok = np.isfinite(y0)
    np.testing.assert_array_equal(y[~ok], y0[~ok])
    good = np.isfinite(mean0) & np.isfinite(rstd0)
    if ok.any() and good.any():
        tol = ulps * np.finfo(y.dtype).eps * _scale(y0[ok], mean0[good], rstd0[good], w)
        np.testing.assert_allclose(y[ok], y0[ok], rtol=0, atol=tol)


def _bn(x, rm0, rv0, w, b, **kw):
    rm = None if rm0 is None else rm0.copy()
    rv = None if rv0 is None else rv0.copy()
    y, mean, rstd = nbn.batch_norm(x, rm, rv, w, b, True, 0.1, 1e-5, return_stats=True, **kw)
    return y, mean, rstd, rm if rm is not None else mean, rv if rv is not None else rstd


def _both(monkeypatch, f):
    got = f()
    monkeypatch.setattr(channels, "CHAN_PIPE", False)
    want = f()
    monkeypatch.setattr(channels, "CHAN_PIPE", True)
    return got, want


# (A, C, S...): a batch of images, one sample, uneven channel splits (C = 7,
# 5 over two threads), long rows of several chunks, rows of exactly 2 KiB
# (all above MIN_TASK_ELEMS: smaller calls take the small serial kernel)
CASES = [(4, 6, 40, 50), (1, 8, 5000), (3, 7, 2100), (2, 5, 9000), (20, 4, 512)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", CASES)
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_batch_norm_pipelined_agrees_with_the_two_pass(
    monkeypatch, launches, threads, rng, dtype, shape, affine, offset
):
    threads(2)
    if int(np.prod(shape[2:])) * np.dtype(dtype).itemsize < 2048:
        pytest.skip("rows shorter than CHAN_PIPE_MIN_ROW_BYTES")
    x = (rng.standard_normal(shape) * 3.0 + offset).astype(dtype)
    C = shape[1]
    w = rng.uniform(0.5, 2.0, C).astype(dtype) if affine else None
    b = rng.standard_normal(C).astype(dtype) if affine else None
    rm0 = rng.standard_normal(C).astype(np.float32)
    rv0 = rng.uniform(0.5, 2.0, C).astype(np.float32)
    x0 = x.copy()
    got, want = _both(monkeypatch, lambda: _bn(x, rm0, rv0, w, b))
    assert launches[0] == 1
    _agree(got, want, w)
    np.testing.assert_array_equal(x, x0)
    # no running stats; out= gives the call's own bits, in place too up to
    # the summation order its loop may vectorize into (tests/test_in_place.py)
    y = nbn.batch_norm(x, training=True)
    out = np.full_like(x, np.nan)
    assert nbn.batch_norm(x, training=True, out=out) is out
    np.testing.assert_array_equal(out, y)
    xi = x.copy()
    assert nbn.batch_norm(xi, training=True, out=xi) is xi
    tol = 8 * np.finfo(dtype).eps * (1 + np.abs(y).max() + abs(offset) / 3.0)
    np.testing.assert_allclose(xi, y, rtol=0, atol=tol)
    assert launches[0] == 4


@pytest.mark.parametrize("nt", [1, 2])
@pytest.mark.parametrize("C", [2, 3, 4, 9])
def test_batch_norm_pipelined_any_thread_split(monkeypatch, launches, threads, rng, nt, C):
    threads(nt)
    x = (rng.standard_normal((5, C, 4096)) + 2.0).astype(np.float32)
    got, want = _both(monkeypatch, lambda: _bn(x, None, None, None, None))
    assert launches[0] == (1 if C >= 2 * nt else 0)
    _agree(got, want, None)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_norm_pipelined_nan_inf_constant(monkeypatch, launches, threads, rng, dtype):
    threads(2)
    x = (rng.standard_normal((3, 6, 2000)) + 1.0).astype(dtype)
    x[1, 1, 777] = np.nan  # channel 1: NaN statistics and output
    x[2, 2, 5] = np.inf  # channel 2: Inf
    x[0, 3, 4100 % 2000] = -np.inf
    x[:, 4] = 2.5  # a constant channel: rstd = 1/sqrt(eps)
    got, want = _both(monkeypatch, lambda: _bn(x, None, None, None, None))
    assert launches[0] == 1
    _agree(got, want, None)
    assert np.isnan(got[1][1]) and np.all(np.isnan(got[0][:, 1]))
    np.testing.assert_array_equal(got[0][:, 4], 0.0)
    # eps = 0: the constant channel's rstd is inf and its output NaN (0 * inf),
    # as on the two-pass path
    got, want = _both(monkeypatch, lambda: nbn.batch_norm(x, training=True, eps=0.0, return_stats=True))
    assert np.isinf(got[2][4]) and np.all(np.isnan(got[0][:, 4]))
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))


def test_batch_norm_pipelined_streams_large_outputs(monkeypatch, launches, threads, rng):
    # >= STREAM_MIN_BYTES: streaming stores, rows of 4004 bytes (not whole
    # lines), out= at an element offset inside guard elements, fresh or not
    threads(2)
    x = (rng.standard_normal((16, 16, 17001)) + 3.0).astype(np.float32)
    want = nbn.batch_norm(x, training=True)
    assert launches[0] == 1
    buf = np.full(x.size + 40, -9.0, np.float32)
    out = buf[1 : 1 + x.size].reshape(x.shape)
    for _ in range(2):  # the second call writes resident pages
        assert nbn.batch_norm(x, training=True, out=out) is out
        np.testing.assert_array_equal(out, want)
        assert buf[0] == -9.0 and np.all(buf[1 + x.size :] == -9.0)
    monkeypatch.setattr(channels, "CHAN_PIPE", False)
    y0 = nbn.batch_norm(x, training=True)
    np.testing.assert_allclose(want, y0, rtol=0, atol=8 * np.finfo(np.float32).eps * (1 + np.abs(y0).max()))


def test_batch_norm_pipelined_only_where_it_pays(launches, threads, rng, monkeypatch):
    threads(2)
    x = rng.standard_normal((4, 8, 2048)).astype(np.float32)
    nbn.batch_norm(x, training=True)
    assert launches[0] == 1
    # eval, channels last, rows under 2 KiB, too few channels: the two-pass
    nbn.batch_norm(x, np.zeros(8), np.ones(8), training=False)
    nbn.batch_norm(np.ascontiguousarray(x.transpose(0, 2, 1)), training=True, channel_axis=-1)
    nbn.batch_norm(rng.standard_normal((64, 8, 256)).astype(np.float32), training=True)
    nbn.batch_norm(rng.standard_normal((8, 3, 4096)).astype(np.float32), training=True)
    assert launches[0] == 1
    # a channel per thread must fit CHAN_PIPE_CACHE_BYTES
    assert channels.bn_pipe_ok(4 * 8, 8, 2048, 4)
    monkeypatch.setattr(channels, "CHAN_PIPE_CACHE_BYTES", 4 * 2048 * 4 * 2 - 1)
    assert not channels.bn_pipe_ok(4 * 8, 8, 2048, 4)
    nbn.batch_norm(x, training=True)
    assert launches[0] == 1


@pytest.mark.parametrize("ntask", [1, 3, 4, 7, 9, 11])
def test_batch_norm_pipelined_any_number_of_tasks(monkeypatch, rng, ntask):
    # more tasks than this machine's threads: the channel ranges are as even
    # as they go and cover every channel once, whatever ntask
    C = 9
    x = (rng.standard_normal((3, C, 1024)) * 2 + 7).astype(np.float64)
    x2 = x.reshape(3 * C, 1024)
    y = np.full_like(x2, np.nan)
    mean, rstd = np.full(C, np.nan), np.full(C, np.nan)
    e = np.empty(0)
    channels.bn_pipe(x2, y, C, ntask, e, e, e, e, False, 0.1, 1e-5, False, mean, rstd)
    monkeypatch.setattr(channels, "CHAN_PIPE", False)
    y0, m0, r0 = nbn.batch_norm(x, training=True, return_stats=True)
    np.testing.assert_allclose(mean, m0, rtol=0, atol=1e-14 * 7)
    np.testing.assert_allclose(rstd, r0, rtol=1e-14)
    np.testing.assert_allclose(y.reshape(x.shape), y0, rtol=0, atol=1e-13)
