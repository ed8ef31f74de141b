"""RunningStats: chunked updates equal one update, merges are associative,
NaN is skipped per feature, weights follow West's update."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numbanorm.streaming import RunningStats


def _ref(x, axis):
    """float64 NumPy oracle of count/mean/var/min/max ignoring NaN."""
    x = np.asarray(x, dtype=np.float64)
    valid = ~np.isnan(x)
    cnt = valid.sum(axis=axis).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(valid, x, 0).sum(axis=axis) / cnt
        dev = np.where(valid, x - np.expand_dims(mean, axis), 0)
        var = (dev**2).sum(axis=axis) / cnt
    mn = np.where(valid, x, np.inf).min(axis=axis)
    mx = np.where(valid, x, -np.inf).max(axis=axis)
    mn = np.where(cnt > 0, mn, np.nan)
    mx = np.where(cnt > 0, mx, np.nan)
    return cnt, mean, var, mn, mx


def _assert_same(a: RunningStats, b: RunningStats, rtol=1e-12):
    np.testing.assert_array_equal(a.count, b.count)
    np.testing.assert_array_equal(a.nan_count, b.nan_count)
    np.testing.assert_allclose(a.mean, b.mean, rtol=rtol, atol=0)
    np.testing.assert_allclose(a.var(), b.var(), rtol=rtol, atol=0)
    np.testing.assert_array_equal(a.min, b.min)
    np.testing.assert_array_equal(a.max, b.max)


@pytest.mark.parametrize("chunk", [1, 11, 20, 37])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_any_split_equals_whole(rng, chunk, dtype):
    x = (3.0 + rng.normal(size=(203, 6))).astype(dtype)
    x[rng.random(x.shape) < 0.05] = np.nan
    whole = RunningStats().update(x)
    rs = RunningStats()
    for i in range(0, len(x), chunk):
        rs.update(x[i : i + chunk])
    _assert_same(rs, whole)
    cnt, mean, var, mn, mx = _ref(x, 0)
    np.testing.assert_array_equal(rs.count, cnt)
    np.testing.assert_allclose(rs.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(rs.var(), var, rtol=1e-12)
    np.testing.assert_array_equal(rs.min, mn)
    np.testing.assert_array_equal(rs.max, mx)


@pytest.mark.parametrize("chunk", [11, 20, 37])
def test_large_mean_small_spread(rng, chunk):
    # mean 1e6 x the spread: no E[x^2] - E[x]^2 anywhere, so digits survive.
    x = 1e6 + rng.normal(size=(1001, 5))
    exact = np.var(x.astype(np.longdouble) - np.longdouble(1e6), axis=0).astype(np.float64)
    rs = RunningStats()
    for i in range(0, len(x), chunk):
        rs.update(x[i : i + chunk])
    whole = RunningStats().update(x)
    np.testing.assert_allclose(whole.var(), exact, rtol=1e-12)
    np.testing.assert_allclose(rs.mean, whole.mean, rtol=1e-15)
    # A float64 mean of 1e6 + randn is rounded to ~1e-10; Chan's d^2 term would
    # turn that into ~1e-11 relative variance error for 11..37-row chunks.  The
    # kernels return each mean's rounding residual and the merges carry it
    # (_stats.chan_merge_dd), which is what this bound (the issue's) checks.
    np.testing.assert_allclose(rs.var(), exact, rtol=1e-12)
    np.testing.assert_allclose(rs.var(), whole.var(), rtol=1e-12)


def test_nd_axes_and_kept_shape(rng):
    x = rng.normal(size=(7, 3, 5, 4))
    rs = RunningStats()
    for part in np.array_split(x, 3, axis=0):
        rs.update(part, axis=(0, 2, 3))
    assert rs.shape == (3,)
    np.testing.assert_allclose(rs.mean, x.mean(axis=(0, 2, 3)), rtol=1e-13)
    np.testing.assert_allclose(rs.var(ddof=1), x.var(axis=(0, 2, 3), ddof=1), rtol=1e-13)
    np.testing.assert_allclose(rs.std(), x.std(axis=(0, 2, 3)), rtol=1e-13)
    # negative axes, a kept leading axis
    r2 = RunningStats().update(x, axis=(-1, 1))
    assert r2.shape == (7, 5)
    np.testing.assert_allclose(r2.mean, x.mean(axis=(1, 3)), rtol=1e-13)


def test_nan_counts_and_empty_features():
    x = np.array([[1.0, np.nan, np.nan], [3.0, 2.0, np.nan], [np.nan, 4.0, np.nan]])
    rs = RunningStats().update(x[:1]).update(x[1:])
    np.testing.assert_array_equal(rs.count, [2, 2, 0])
    np.testing.assert_array_equal(rs.nan_count, [1, 1, 3])
    np.testing.assert_array_equal(rs.mean[:2], [2, 3])
    assert np.isnan(rs.mean[2]) and np.isnan(rs.var()[2]) and np.isnan(rs.min[2])
    np.testing.assert_array_equal(rs.var(), [1, 1, np.nan])
    assert np.isnan(rs.var(ddof=2)).all()


def test_integer_bool_and_float16_inputs():
    xi = np.arange(12, dtype=np.int16).reshape(6, 2)
    rs = RunningStats().update(xi).update(xi.astype(bool))
    assert rs.mean.dtype == np.float64
    ref = np.concatenate([xi, xi.astype(bool)]).astype(float)
    np.testing.assert_allclose(rs.var(), ref.var(axis=0), rtol=1e-14)
    h = RunningStats().update(np.array([[1.0], [2.0]], dtype=np.float16))
    np.testing.assert_array_equal(h.mean, [1.5])


def test_shape_errors_name_the_argument():
    rs = RunningStats().update(np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"chunk: expected statistics of shape \(3,\).*\(2,\)"):
        rs.update(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="other"):
        rs.merge(RunningStats().update(np.zeros((2, 5))))
    with pytest.raises(TypeError, match="other"):
        rs.merge(np.zeros(3))
    with pytest.raises(TypeError, match="chunk"):
        rs.update(np.zeros((2, 3), dtype=complex))
    with pytest.raises(ValueError, match="axis"):
        rs.update(np.zeros((2, 3)), axis=2)
    with pytest.raises(ValueError, match=r"sample_weight: expected shape \(4,\)"):
        rs.update(np.zeros((4, 3)), sample_weight=np.ones(3))
    with pytest.raises(ValueError, match="sample_weight"):
        rs.update(np.zeros((4, 3)), axis=1, sample_weight=np.ones(4))
    with pytest.raises(ValueError, match="non-negative"):
        rs.update(np.zeros((4, 3)), sample_weight=-np.ones(4))
    # nothing was folded in by the failed calls
    np.testing.assert_array_equal(rs.count, [4, 4, 4])


def test_empty_accumulator_and_empty_chunk():
    rs = RunningStats()
    assert rs.shape is None and rs.count == 0 and np.isnan(rs.mean)
    rs.update(np.zeros((0, 3)))
    assert rs.shape == (3,)
    np.testing.assert_array_equal(rs.count, [0, 0, 0])
    other = RunningStats().update(np.ones((2, 3)))
    rs.merge(other).merge(RunningStats())
    np.testing.assert_array_equal(rs.mean, [1, 1, 1])
    np.testing.assert_array_equal(other.count, [2, 2, 2])  # other unchanged
    c = rs.copy().update(np.ones((1, 3)))
    np.testing.assert_array_equal(rs.count, [2, 2, 2])
    np.testing.assert_array_equal(c.count, [3, 3, 3])
    assert "shape=(3,)" in repr(rs)
    assert RunningStats(minmax=False).update(np.ones((2, 2))).min is None


def test_weighted_equals_repeated_rows(rng):
    x = rng.normal(size=(40, 3)) + 100.0
    x[3, 1] = np.nan
    w = rng.integers(0, 4, size=40)
    rs = RunningStats().update(x[:17], sample_weight=w[:17]).update(x[17:], sample_weight=w[17:])
    rep = RunningStats().update(np.repeat(x, w, axis=0))
    np.testing.assert_allclose(rs.count, rep.count, rtol=1e-15)
    np.testing.assert_allclose(rs.mean, rep.mean, rtol=1e-13)
    np.testing.assert_allclose(rs.var(), rep.var(), rtol=1e-10)
    np.testing.assert_array_equal(rs.min, rep.min)
    np.testing.assert_array_equal(rs.nan_count, [0, 1, 0])  # NaN counted unweighted


def test_weighted_matches_numpy_average(rng):
    x = rng.normal(size=(6, 2, 3, 4)).astype(np.float32)  # per-channel, weights per image
    w = rng.random(6)
    rs = RunningStats().update(x, axis=(0, 2, 3), sample_weight=w)
    x64 = x.astype(np.float64)
    ww = np.broadcast_to(w[:, None, None, None], x.shape)
    mean = np.average(x64, axis=(0, 2, 3), weights=ww)
    var = np.average((x64 - mean[None, :, None, None]) ** 2, axis=(0, 2, 3), weights=ww)
    np.testing.assert_allclose(rs.count, np.full(2, w.sum() * 12), rtol=1e-13)
    np.testing.assert_allclose(rs.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(rs.var(), var, rtol=1e-12)
    ones = RunningStats().update(x, axis=(0, 2, 3), sample_weight=1.0)
    _assert_same(ones, RunningStats().update(x, axis=(0, 2, 3)), rtol=1e-12)


# -- hypothesis properties ---------------------------------------------------

_floats = st.floats(-1e3, 1e3, allow_nan=False, width=64)


@st.composite
def _data_and_splits(draw):
    n = draw(st.integers(1, 60))
    f = draw(st.integers(1, 4))
    vals = draw(st.lists(_floats, min_size=n * f, max_size=n * f))
    x = np.array(vals).reshape(n, f)
    nan_mask = draw(st.lists(st.booleans(), min_size=n * f, max_size=n * f))
    x[np.array(nan_mask).reshape(n, f) & (np.arange(n * f).reshape(n, f) % 3 == 0)] = np.nan
    cuts = sorted(set(draw(st.lists(st.integers(0, n), max_size=6))))
    return x, cuts


def _close(a, b, scale):
    np.testing.assert_array_equal(a.count, b.count)
    np.testing.assert_array_equal(a.min, b.min)
    np.testing.assert_array_equal(a.max, b.max)
    np.testing.assert_allclose(a.mean, b.mean, rtol=1e-12, atol=1e-12 * scale)
    np.testing.assert_allclose(a.var(), b.var(), rtol=1e-12, atol=1e-12 * scale**2)


@settings(max_examples=30, deadline=None)
@given(_data_and_splits())
def test_property_any_chunking_equals_whole(data):
    x, cuts = data
    rs = RunningStats()
    for part in np.split(x, cuts):
        rs.update(part)
    _close(rs, RunningStats().update(x), 1e3)


@settings(max_examples=30, deadline=None)
@given(_data_and_splits())
def test_property_merge_is_associative(data):
    x, cuts = data
    parts = np.split(x, sorted((cuts + [0, 0])[:2]))  # three parts, some maybe empty
    a, b, c = (RunningStats().update(p) for p in parts)
    left = a.copy().merge(b).merge(c)
    right = a.copy().merge(b.copy().merge(c))
    _close(left, right, 1e3)
    _close(left, RunningStats().update(x), 1e3)


@pytest.mark.parametrize("minmax", [True, False])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize(
    "shape,axis,fast",
    [
        ((6000, 7), 0, True),
        ((150, 40, 6), (0, 1), True),
        ((300, 9, 20), 0, True),
        ((40000,), 0, True),
        ((5, 9000), 0, True),
        ((10, 900, 5), 1, False),  # the (10, 900, 5) view: merged over the batch too
        ((9000, 5), "F", False),  # Fortran order: another layout
    ],
)
def test_update_folds_partials_with_the_general_bits(monkeypatch, minmax, dtype, shape, axis, fast):
    """A large chunk whose reduction is one (1, R, K) view folds the
    statistics tasks' partials into the state in one compiled call
    (streaming._fold_partials); the state after two updates has the bits of
    reduce_moments followed by the state merge, empty features, NaN and a
    drifting start (refused blocks) included; other layouts take the
    general path."""
    from numbanorm import streaming

    rng = np.random.default_rng(7)
    x = (rng.standard_normal(shape) * 3 + 1e3).astype(dtype)
    x.reshape(-1)[::113] = np.nan
    if axis == "F":
        x, axis = np.asfortranarray(x), 0
    if x.ndim == 2 and fast:
        x[:, 2] = np.nan  # a feature with no values
        x[:60] -= 500  # the first rows far from the rest
    taken = []
    orig = streaming._fold_partials

    def fold(*a):
        taken.append(True)
        return orig(*a)

    monkeypatch.setattr(streaming, "_fold_partials", fold)
    y = x[::-1] * dtype(0.5)
    a = RunningStats(minmax=minmax).update(x, axis=axis).update(y, axis=axis)
    assert bool(taken) == fast
    monkeypatch.setattr(streaming, "lane_partials", lambda *a: None)
    b = RunningStats(minmax=minmax).update(x, axis=axis).update(y, axis=axis)
    for k in ("_cnt", "_mean", "_res", "_m2", "_mn", "_mx", "_nans"):
        u, v = getattr(a, k), getattr(b, k)
        assert np.array_equal(u, v, equal_nan=u.dtype.kind == "f"), k
