"""Property-based tests (hypothesis) of the statistics core and the public norms.

* ``chan_merge`` is commutative and associative (to rounding), and merging the
  partial moments of any split of the data gives the moments of the whole;
* chunking a reduction (chunks of 11, 20, 37 rows) does not change its result;
* ``normalize(a * x + b) == sign(a) * normalize(x)`` for every norm with a mean;
* NaN / Inf stay inside their own normalization group, for every op and axis;
* standardize / minmax_scale ignore NaN per feature;
* ``reduce_moments`` / ``apply_affine`` on random axes and memory layouts equal NumPy.

Rounding bounds.  Exact references are computed with ``fractions.Fraction``.  A
Chan merge is exact up to a few ulps *given* its input triples, but a partial
mean ``m_i`` stored in float64 is itself rounded by up to ``ulp(m_i) / 2``, and
the merged M2 depends linearly on it (``dM2/dm_i = 2 n_i (m_i - m)``).  So the
bound on a merged M2 is ``1e-12 * M2 + 4 eps sum_i n_i |m_i - m| |m_i|``: the
second term is 0 when the partial means are exact and is what any merge of
float64 partials must allow when the mean is 1e6 x the spread.
"""

from __future__ import annotations

import math
import os
import sys
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import numbanorm as nbn
from numbanorm._reduce import apply_affine, kept_shape, reduce_moments
from numbanorm._stats import chan_merge, merge_mid

try:  # tests/ is not a package: the oracle importable under any import mode
    from reference import exact_moments
except ImportError:  # pragma: no cover - depends on pytest's import mode
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from reference import exact_moments

EPS = np.finfo(np.float64).eps

# deterministic (derandomize), no example database written, no deadline (JIT)
PROPS = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def few(n):
    return settings(PROPS, max_examples=n)


# --------------------------------------------------------------------------
# exact moments
# --------------------------------------------------------------------------


def float_moments(v):
    """Correctly rounded (n, mean, M2) triple of v: the best a partial can be."""
    n, mean, m2 = exact_moments(v)
    return float(n), float(mean), float(m2)


def assert_moments_close(got, exact, parts):
    """got = (n, mean, M2) floats; exact = Fractions; parts = the merged float triples."""
    n, mean, m2 = exact
    assert got[0] == n
    fm = float(mean)
    assert abs(Fraction(got[1]) - mean) <= 1e-12 * abs(fm) + 4 * EPS * max(abs(p[1]) for p in parts)
    prop = sum(p[0] * abs(p[1] - fm) * abs(p[1]) for p in parts)
    tol = 1e-12 * float(m2) + 4 * EPS * prop + 1e-300
    assert abs(Fraction(got[2]) - m2) <= Fraction(tol), (got, float(mean), float(m2), tol)


offsets = st.sampled_from([0.0, 1.0, -3.0, 1e3, 1e6, -1e6])
spreads = st.sampled_from([1e-3, 1.0, 7.0, 1e4])


@st.composite
def datasets(draw, min_size=2, max_size=60):
    """float64 data with mean up to 1e6 x its spread."""
    n = draw(st.integers(min_size, max_size))
    z = draw(st.lists(st.floats(-3.0, 3.0, allow_nan=False, allow_infinity=False), min_size=n, max_size=n))
    off, sp = draw(offsets), draw(spreads)
    return np.asarray(z) * sp + off * sp


def merge(a, b):
    return tuple(float(v) for v in chan_merge(*a, *b))


# --------------------------------------------------------------------------
# Chan merge
# --------------------------------------------------------------------------


@PROPS
@given(datasets(min_size=3), st.data())
def test_merge_of_any_split_equals_whole(v, data):
    cuts = sorted(data.draw(st.lists(st.integers(1, len(v) - 1), min_size=1, max_size=4, unique=True)))
    pieces = np.split(v, cuts)
    parts = [float_moments(p) for p in pieces]
    acc = (0.0, 0.0, 0.0)
    for p in parts:
        acc = merge(acc, p)
    assert_moments_close(acc, exact_moments(v), parts)
    # the package's serial merge of a partial array gives the same
    arr = [np.array(c, dtype=np.float64).reshape(1, len(parts), 1) for c in zip(*parts, strict=True)]
    zero = np.zeros_like(arr[1])  # no mean residuals: plain float64 partials
    c, m, _, q, _, _ = merge_mid(arr[0], arr[1], zero, arr[2], arr[0], arr[0], False)
    assert_moments_close((c[0, 0], m[0, 0], q[0, 0]), exact_moments(v), parts)


@PROPS
@given(datasets(min_size=3), st.data())
def test_merge_commutative_and_associative(v, data):
    i, j = sorted(data.draw(st.lists(st.integers(1, len(v) - 1), min_size=2, max_size=2, unique=True)))
    a, b, c = (float_moments(p) for p in (v[:i], v[i:j], v[j:]))
    ab, ba = merge(a, b), merge(b, a)
    assert ab[0] == ba[0]
    assert_moments_close(ab, exact_moments(v[:j]), [a, b])
    assert_moments_close(ba, exact_moments(v[:j]), [a, b])
    assert math.isclose(ab[1], ba[1], rel_tol=4 * EPS, abs_tol=4 * EPS * max(abs(a[1]), abs(b[1])))
    left = merge(ab, c)
    right = merge(a, merge(b, c))
    other = merge(merge(c, a), b)
    whole = exact_moments(v)
    for got in (left, right, other):
        assert_moments_close(got, whole, [a, b, c])


@few(20)
@given(datasets(min_size=1, max_size=20))
def test_merge_with_empty_partial_is_identity(v):
    a = float_moments(v)
    assert merge(a, (0.0, 0.0, 0.0)) == a
    assert merge((0.0, 0.0, 0.0), a) == a
    # an empty partial whose mean/M2 are NaN (count-0 groups) is ignored too
    assert merge(a, (0.0, math.nan, math.nan)) == a
    assert merge((0.0, math.nan, math.nan), a) == a


@few(25)
@given(datasets(min_size=2, max_size=200), st.integers(1, 4))
def test_reduce_moments_exact_on_uncentred_data(v, k):
    x = np.tile(v[:, None], (1, k))
    m = reduce_moments(x, (0,), skipnan=False, minmax=True)
    whole = exact_moments(v)
    for j in range(k):
        assert_moments_close((m.count[j], m.mean[j], m.m2[j]), whole, [float_moments(v)])
    np.testing.assert_array_equal(m.min, v.min())
    np.testing.assert_array_equal(m.max, v.max())


# --------------------------------------------------------------------------
# chunking does not change a reduction
# --------------------------------------------------------------------------


@PROPS
@given(
    st.integers(1, 140),
    st.sampled_from([1, 2, 3, 5, 17]),
    st.sampled_from([11, 20, 37]),
    st.sampled_from([0.0, 1e3, 1e6]),
    st.booleans(),
    st.integers(0, 2**32 - 1),
)
def test_chunked_reduction_equals_whole(R, K, chunk, off, nan, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((R, K)) + off
    if nan:
        x[rng.random((R, K)) < 0.2] = np.nan
    whole = reduce_moments(x, (0,), skipnan=True, minmax=True)
    parts = [reduce_moments(x[i : i + chunk], (0,), skipnan=True, minmax=True) for i in range(0, R, chunk)]
    fields = ("count", "mean", "resid", "m2", "min", "max")
    stack = [np.stack([getattr(p, f) for p in parts])[None] for f in fields]
    # reduce_moments reports a count-0 group's min/max as NaN, which merge_mid reads
    # as "saw a NaN": give such partials the identities of min/max before merging
    empty = stack[0] == 0
    stack[4] = np.where(empty, np.inf, stack[4])
    stack[5] = np.where(empty, -np.inf, stack[5])
    stack[1] = np.where(empty, 0.0, stack[1])  # a count-0 partial's mean is NaN
    c, m, _, q, lo, hi = merge_mid(*stack, True)
    np.testing.assert_array_equal(c[0], whole.count)
    ok = whole.count > 0
    np.testing.assert_allclose(m[0][ok], whole.mean[ok], rtol=1e-12, atol=1e-12)
    # M2 relative to its size, plus the rounding of the partial means (module docstring)
    dev = np.abs(x - np.where(np.isnan(whole.mean), 0.0, whole.mean))
    spread = np.max(np.where(np.isnan(x), 0.0, dev), axis=0)
    tol = 1e-12 * whole.m2 + 8 * EPS * whole.count * spread * (abs(off) + 5)
    assert (np.abs(q[0] - whole.m2)[ok] <= tol[ok] + 1e-300).all()
    np.testing.assert_array_equal(lo[0][ok], whole.min[ok])
    np.testing.assert_array_equal(hi[0][ok], whole.max[ok])
    # the same with a Python loop of scalar merges, chunk by chunk
    for j in range(K):
        acc = (0.0, 0.0, 0.0)
        for p in parts:
            acc = merge(acc, (p.count[j], p.mean[j], p.m2[j]))
        assert acc[0] == whole.count[j]
        if acc[0]:
            assert math.isclose(acc[1], whole.mean[j], rel_tol=1e-12, abs_tol=1e-12)
            assert abs(acc[2] - whole.m2[j]) <= tol[j] + 1e-300


# --------------------------------------------------------------------------
# normalize(a * x + b) == sign(a) * normalize(x)
# --------------------------------------------------------------------------


@st.composite
def nchw(draw, min_nd=3, max_nd=4):
    nd = draw(st.integers(min_nd, max_nd))
    shape = tuple(draw(st.integers(2, 5)) for _ in range(nd))
    return shape


AFFINE_OPS = ["batch_norm", "instance_norm", "group_norm", "layer_norm", "standardize"]


def _run(op, x, ca, k, eps=0.0):
    if op == "batch_norm":
        return nbn.batch_norm(x, training=True, eps=eps, channel_axis=ca)
    if op == "instance_norm":
        return nbn.instance_norm(x, eps=eps, channel_axis=ca)
    if op == "group_norm":
        C = x.shape[ca]
        G = max(g for g in (1, 2, 3, 5) if C % g == 0)
        return nbn.group_norm(x, G, eps=eps, channel_axis=ca)
    if op == "layer_norm":
        return nbn.layer_norm(x, x.shape[x.ndim - k :], eps=eps)
    if op == "standardize":
        axes = tuple(a for a in range(x.ndim) if a != ca)
        return nbn.standardize(x, axis=axes)
    raise AssertionError(op)


@PROPS
@given(
    st.sampled_from(AFFINE_OPS),
    nchw(),
    st.data(),
    st.floats(1e-3, 1e3),
    st.sampled_from([-1.0, 1.0]),
    st.one_of(st.just(0.0), st.floats(-1e6, 1e6)),
    st.integers(0, 2**32 - 1),
)
def test_affine_equivariance(op, shape, data, a, sgn, b, seed):
    nd = len(shape)
    ca = (
        data.draw(st.integers(1, nd - 1))
        if op in ("instance_norm", "group_norm")
        else data.draw(st.integers(0, nd - 1))
    )
    k = data.draw(st.integers(1, nd - 1))
    a = a * sgn
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * data.draw(st.sampled_from([1e-2, 1.0, 1e2]))
    y = _run(op, x, ca, k)
    y2 = _run(op, a * x + b, ca, k)
    # rounding of a * x + b relative to the smallest group spread
    tol = 1e-12 + 64 * EPS * (abs(a) * np.abs(x).max() + abs(b)) / (abs(a) * _min_group_std(op, x, ca, k))
    np.testing.assert_allclose(y2, np.sign(a) * y, rtol=0, atol=tol, err_msg=f"{op} a={a} b={b}")


def _min_group_std(op, x, ca, k):
    nd = x.ndim
    if op in ("batch_norm", "standardize"):
        s = x.std(axis=tuple(i for i in range(nd) if i != ca))
    elif op == "instance_norm":
        s = x.std(axis=tuple(i for i in range(1, nd) if i != ca))
    elif op == "group_norm":
        C = x.shape[ca]
        G = max(g for g in (1, 2, 3, 5) if C % g == 0)
        xg = np.moveaxis(x, ca, 1).reshape(x.shape[0], G, -1)
        s = xg.std(axis=2)
    else:
        s = x.reshape(-1, int(np.prod(x.shape[nd - k :]))).std(axis=1)
    return float(s.min())


@PROPS
@given(nchw(2, 4), st.floats(1e-3, 1e3), st.sampled_from([-1.0, 1.0]), st.floats(-1e6, 1e6), st.data())
def test_scale_equivariance_rms_lp_minmax(shape, a, sgn, b, data):
    a = a * sgn
    x = np.random.default_rng(len(shape)).standard_normal(shape)
    k = data.draw(st.integers(1, len(shape)))
    ns = shape[len(shape) - k :]
    np.testing.assert_allclose(
        nbn.rms_norm(a * x, ns, eps=0.0), np.sign(a) * nbn.rms_norm(x, ns, eps=0.0), rtol=1e-12, atol=1e-13
    )
    ax = data.draw(st.integers(-len(shape), len(shape) - 1))
    np.testing.assert_allclose(
        nbn.lp_normalize(a * x, axis=ax, eps=0.0),
        np.sign(a) * nbn.lp_normalize(x, axis=ax, eps=0.0),
        rtol=1e-12,
        atol=1e-13,
    )
    # minmax: an increasing map keeps the scaled values, a decreasing one mirrors them
    y = nbn.minmax_scale(x, axis=ax)
    y2 = nbn.minmax_scale(a * x + b, axis=ax)
    want = y if a > 0 else 1.0 - y
    rng_min = np.ptp(x, axis=ax).min()
    assert rng_min > 0  # every axis has >= 2 random values
    tol = 1e-12 + 64 * EPS * (abs(a) * np.abs(x).max() + abs(b)) / (abs(a) * rng_min)
    np.testing.assert_allclose(y2, want, rtol=0, atol=tol)


# --------------------------------------------------------------------------
# NaN / Inf stay in their group
# --------------------------------------------------------------------------


GROUP_OPS = [
    "batch_norm",
    "batch_norm_eval",
    "instance_norm",
    "instance_norm_eval",
    "group_norm",
    "layer_norm",
    "rms_norm",
    "standardize",
    "minmax_scale",
    "lp_normalize",
]


def _group_ids(op, shape, ca, k, G, axes):
    """An int array of x's shape: the normalization group of every element."""
    idx = np.indices(shape)
    nd = len(shape)
    if op == "batch_norm":
        return idx[ca]
    if op in ("batch_norm_eval", "instance_norm_eval"):
        return np.arange(int(np.prod(shape))).reshape(shape)
    if op == "instance_norm":
        return idx[0] * shape[ca] + idx[ca]
    if op == "group_norm":
        return idx[0] * G + idx[ca] // (shape[ca] // G)
    if op in ("layer_norm", "rms_norm"):
        lead = shape[: nd - k]
        return np.ravel_multi_index(tuple(idx[: nd - k]), lead) if lead else np.zeros(shape, int)
    kept = [a for a in range(nd) if a not in axes]
    if not kept:
        return np.zeros(shape, int)
    return np.ravel_multi_index(tuple(idx[kept]), tuple(shape[a] for a in kept))


def _call(op, x, ca, k, G, axes, rm=None, rv=None):
    C = x.shape[ca] if x.ndim > 1 else 1
    if op == "batch_norm":
        return nbn.batch_norm(x, rm, rv, training=True, channel_axis=ca)
    if op == "batch_norm_eval":
        return nbn.batch_norm(x, np.linspace(-1, 1, C), np.linspace(0.5, 2, C), channel_axis=ca)
    if op == "instance_norm":
        return nbn.instance_norm(x, rm, rv, channel_axis=ca)
    if op == "instance_norm_eval":
        return nbn.instance_norm(
            x, np.linspace(-1, 1, C), np.linspace(0.5, 2, C), use_input_stats=False, channel_axis=ca
        )
    if op == "group_norm":
        return nbn.group_norm(x, G, channel_axis=ca)
    if op == "layer_norm":
        return nbn.layer_norm(x, x.shape[x.ndim - k :])
    if op == "rms_norm":
        return nbn.rms_norm(x, x.shape[x.ndim - k :])
    if op == "standardize":
        return nbn.standardize(x, axis=axes)
    if op == "minmax_scale":
        return nbn.minmax_scale(x, axis=axes)
    if op == "lp_normalize":
        return nbn.lp_normalize(x, axis=axes)
    raise AssertionError(op)


@settings(PROPS, max_examples=120)
@given(
    st.sampled_from(GROUP_OPS),
    st.integers(2, 5),
    st.data(),
    st.sampled_from([np.nan, np.inf, -np.inf]),
    st.sampled_from([np.float64, np.float32]),
    st.integers(0, 2**32 - 1),
)
def test_nan_inf_stay_in_their_group(op, nd, data, bad, dtype, seed):
    needs_batch = op in ("instance_norm", "instance_norm_eval", "group_norm")
    if needs_batch:
        nd = max(nd, 3)
    shape = tuple(data.draw(st.integers(1, 5), label=f"dim{i}") for i in range(nd))
    ca = data.draw(st.integers(1 if needs_batch else 0, nd - 1), label="channel_axis")
    k = data.draw(st.integers(1, nd), label="k")
    axes = tuple(sorted(data.draw(st.sets(st.integers(0, nd - 1), min_size=1), label="axes")))
    C = shape[ca]
    G = data.draw(st.sampled_from([g for g in range(1, C + 1) if C % g == 0]), label="G")
    if op == "batch_norm":
        assume(np.prod(shape) // C > 1)
    if op == "instance_norm":
        assume(np.prod([n for i, n in enumerate(shape) if i not in (0, ca)]) > 1)
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 2 + 3).astype(dtype)
    if data.draw(st.booleans(), label="channels_last"):
        x = np.moveaxis(np.ascontiguousarray(np.moveaxis(x, ca, -1)), -1, ca)
    pos = tuple(int(rng.integers(n)) for n in shape)
    xb = x.copy(order="K")  # same memory layout: same reduction path
    xb[pos] = bad
    C = shape[ca]
    running = op in ("batch_norm", "instance_norm")
    rm0, rv0 = (np.zeros(C), np.ones(C)) if running else (None, None)
    rm1, rv1 = (np.zeros(C), np.ones(C)) if running else (None, None)
    y = _call(op, x, ca, k, G, axes, rm0, rv0)
    with np.errstate(all="ignore"):
        yb = _call(op, xb, ca, k, G, axes, rm1, rv1)
    gid = _group_ids(op, shape, ca, k, G, axes)
    other = gid != gid[pos]
    assert np.isfinite(y).all()
    assert np.isfinite(yb[other]).all(), f"{op}: non-finite output outside the group of {pos}"
    np.testing.assert_array_equal(yb[other], y[other], err_msg=f"{op} outside the group of {pos}")
    assert not np.isfinite(yb[pos]), f"{op}: {bad} at {pos} gave a finite output {yb[pos]}"
    if running:  # running statistics: only the bad channel changes
        keep = np.arange(C) != pos[ca]
        np.testing.assert_array_equal(rm1[keep], rm0[keep])
        np.testing.assert_array_equal(rv1[keep], rv0[keep])
        assert np.isfinite(rm1[keep]).all() and np.isfinite(rv1[keep]).all()


# --------------------------------------------------------------------------
# standardize / minmax_scale ignore NaN per feature
# --------------------------------------------------------------------------


@PROPS
@given(
    st.integers(2, 40),
    st.integers(1, 6),
    st.floats(0.0, 0.6),
    st.sampled_from([0.0, 1e4]),
    st.integers(0, 2**32 - 1),
)
def test_preprocessing_ignores_nan_per_feature(n, K, frac, off, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, K)) * 3 + off
    nan = rng.random((n, K)) < frac
    nan[rng.integers(n, size=K), np.arange(K)] = False  # every feature keeps a value
    x[nan] = np.nan
    ys, mean, std = nbn.standardize(x, return_stats=True)
    ym = nbn.minmax_scale(x, (-2.0, 3.0))
    assert np.isnan(ys[nan]).all() and np.isnan(ym[nan]).all()
    for j in range(K):
        col = x[~nan[:, j], j]
        y1, m1, s1 = nbn.standardize(col[:, None], return_stats=True)
        np.testing.assert_allclose(ys[~nan[:, j], j], y1[:, 0], rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(mean[0, j], m1[0, 0], rtol=1e-13)
        np.testing.assert_allclose(std[0, j], s1[0, 0], rtol=1e-11)
        np.testing.assert_allclose(mean[0, j], np.mean(col), rtol=1e-13)
        if np.ptp(col) > 0:
            np.testing.assert_allclose(std[0, j], np.std(col), rtol=1e-9)
        np.testing.assert_allclose(
            ym[~nan[:, j], j], nbn.minmax_scale(col[:, None], (-2.0, 3.0))[:, 0], rtol=1e-13, atol=1e-13
        )


@few(25)
@given(st.integers(0, 2**32 - 1), st.floats(0.0, 0.5))
def test_preprocessing_ignores_nan_per_channel_nd(seed, frac):
    """The same over axis=(0, 2, 3) of an image stack: NaN dropped per channel."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3, 4, 5, 2)) + 10
    nan = rng.random(x.shape) < frac
    nan[0, :, 0, 0] = False
    x[nan] = np.nan
    ys = nbn.standardize(x, axis=(0, 2, 3))
    ym = nbn.minmax_scale(x, axis=(0, 2, 3))
    for c in range(4):
        sel = ~nan[:, c]
        col = x[:, c][sel]
        np.testing.assert_allclose(ys[:, c][sel], nbn.standardize(col), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(ym[:, c][sel], nbn.minmax_scale(col), rtol=1e-13, atol=1e-13)
    assert np.isnan(ys[nan]).all() and np.isnan(ym[nan]).all()


# --------------------------------------------------------------------------
# random axes x random memory layouts vs NumPy
# --------------------------------------------------------------------------


@st.composite
def strided_arrays(draw):
    """(values in C order, a view with the same values in a random layout)."""
    nd = draw(st.integers(1, 5))
    shape = tuple(draw(st.integers(1, 6)) for _ in range(nd))
    seed = draw(st.integers(0, 2**32 - 1))
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    rng = np.random.default_rng(seed)
    perm = tuple(draw(st.permutations(range(nd))))
    flips = [draw(st.booleans()) for _ in range(nd)]
    steps = [draw(st.sampled_from([1, 1, 2, 3])) for _ in range(nd)]
    # storage: a C array of the permuted, enlarged shape
    inv = np.argsort(perm)
    big_shape = tuple(shape[p] * steps[p] + 1 for p in perm)
    store = (rng.standard_normal(big_shape) * 5 + 50).astype(dtype)
    view = store.transpose(inv)  # axes back in x order
    sl = []
    for ax in range(nd):
        n, s = shape[ax], steps[ax]
        if flips[ax]:
            sl.append(slice(n * s, 0, -s) if n * s else slice(0, 0))
        else:
            sl.append(slice(1, 1 + n * s, s))
    view = view[tuple(sl)]
    assert view.shape == shape, (view.shape, shape)
    return np.ascontiguousarray(view), view


@settings(PROPS, max_examples=150)
@given(strided_arrays(), st.data())
def test_reduce_and_apply_random_layouts(arrs, data):
    xc, x = arrs
    nd = x.ndim
    axes = tuple(sorted(data.draw(st.sets(st.integers(0, nd - 1)))))
    m = reduce_moments(x, axes, skipnan=False, minmax=True)
    x64 = xc.astype(np.float64)
    ks = kept_shape(x.shape, axes)
    assert m.mean.shape == ks
    np.testing.assert_allclose(m.mean, np.mean(x64, axis=axes), rtol=1e-13)
    np.testing.assert_allclose(m.m2 / m.count, np.var(x64, axis=axes), rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(m.min, np.min(x64, axis=axes))
    np.testing.assert_array_equal(m.max, np.max(x64, axis=axes))
    # NaN-skipping counts
    m2 = reduce_moments(x, axes, skipnan=True, minmax=False)
    np.testing.assert_array_equal(m2.count, m.count)
    # apply_affine through the same layouts, into a fresh and an in-place output
    rng = np.random.default_rng(nd)
    c, s, b = (rng.standard_normal(ks) for _ in range(3))
    keep = [1 if i in axes else n for i, n in enumerate(x.shape)]
    want = (x64 - c.reshape(keep)) * s.reshape(keep) + b.reshape(keep)
    tol = 2e-6 if x.dtype == np.float32 else 1e-12
    out = np.empty(x.shape, x.dtype)
    apply_affine(x, axes, c, s, b, out=out)
    np.testing.assert_allclose(out, want.astype(x.dtype), rtol=tol, atol=tol * 50)
    apply_affine(x, axes, c, s, b, out=x)  # in place, through the strided view
    np.testing.assert_allclose(x, want.astype(x.dtype), rtol=tol, atol=tol * 50)


@pytest.mark.parametrize("off", [1e2, 1e4, 1e6])
def test_merge_float32_partials_far_from_zero(off):
    """A deterministic companion of the properties: float32 data at large offsets."""
    rng = np.random.default_rng(int(off))
    x = (rng.standard_normal((2003, 3)) + off).astype(np.float32)
    whole = reduce_moments(x, (0,), skipnan=False, minmax=False)
    ex = [exact_moments(x[:, j].astype(np.float64)) for j in range(3)]
    for j in range(3):
        assert_moments_close((whole.count[j], whole.mean[j], whole.m2[j]), ex[j], [float_moments(x[:, j])])
