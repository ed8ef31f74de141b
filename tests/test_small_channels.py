"""Small-call fast paths of batch_norm, standardize and minmax_scale.

shortcuts.batch_norm and shortcuts.small_view (backends/cpu/shortcuts.py) send small native arrays
to one serial kernel each (backends/cpu.py: _bn_small, _standardize_small,
_minmax_small).  They must give the general path's results (out= and
return_stats always take the general path), update running statistics the
same way, keep NaN/Inf semantics, and leave every error to the general path.
"""

from __future__ import annotations

import numpy as np
import pytest
import reference as ref

import numbanorm as nbn
from numbanorm._config import MIN_TASK_ELEMS
from numbanorm.backends.cpu import shortcuts


def _tol(dtype):
    return dict(rtol=2e-6, atol=2e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)


def _same_nan(a, b, **tol):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    ok = ~np.isnan(a)
    np.testing.assert_allclose(a[ok], b[ok], **tol)


BN_SHAPES = [((4, 3, 5, 5), 1), ((4, 5, 5, 3), -1), ((6, 7), 1), ((2, 3, 7), 1), ((2, 7, 3), 2), ((3, 2), -1)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,ca", BN_SHAPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("rdtype", [np.float32, np.float64, None])
def test_batch_norm_fast_path_matches_general(rng, dtype, shape, ca, training, affine, rdtype):
    C = shape[ca]
    x = (rng.standard_normal(shape) * 2 + 50).astype(dtype)
    w = rng.uniform(0.5, 1.5, C).astype(dtype) if affine else None
    b = rng.uniform(-1, 1, C).astype(dtype) if affine else None
    if rdtype is None:
        if not training:
            return  # running stats are required in eval mode
        rm1 = rv1 = rm2 = rv2 = None
    else:
        rm1 = rng.standard_normal(C).astype(rdtype)
        rv1 = rng.uniform(0.5, 2, C).astype(rdtype)
        rm2, rv2 = rm1.copy(), rv1.copy()
    assert (
        shortcuts.batch_norm(
            x.copy(),
            None if rm1 is None else rm1.copy(),
            None if rv1 is None else rv1.copy(),
            w,
            b,
            training,
            0.1,
            1e-5,
            ca,
            None,
            False,
        )
        is not None
    )
    x0 = x.copy()
    y = nbn.batch_norm(x, rm1, rv1, w, b, training, 0.1, 1e-5, channel_axis=ca)
    g = nbn.batch_norm(x, rm2, rv2, w, b, training, 0.1, 1e-5, channel_axis=ca, out=np.empty_like(x))
    assert np.array_equal(x, x0)
    assert y.dtype == dtype and y.shape == shape
    np.testing.assert_allclose(y, g, **_tol(dtype))
    e = (
        ref.batch_norm(
            x,
            None if rm1 is None else rm2.copy(),
            None if rv1 is None else rv2.copy(),
            w,
            b,
            training=False,
            eps=1e-5,
            channel_axis=ca,
        )
        if not training
        else None
    )
    if e is not None:
        np.testing.assert_allclose(y, np.asarray(e, np.float64), **_tol(dtype))
    if rm1 is not None:
        rt = dict(rtol=1e-6) if rdtype == np.float32 else dict(rtol=1e-13)
        np.testing.assert_allclose(rm1, rm2, **rt)
        np.testing.assert_allclose(rv1, rv2, **rt)


def test_batch_norm_fast_path_train_oracle(rng):
    x = (rng.standard_normal((8, 4, 3, 3)) + 1e4).astype(np.float32)
    rm = np.zeros(4)
    rv = np.ones(4)
    erm, erv = rm.copy(), rv.copy()
    y = nbn.batch_norm(x, rm, rv, training=True, momentum=0.3)
    e = ref.batch_norm(x, erm, erv, training=True, momentum=0.3)
    np.testing.assert_allclose(y, np.asarray(e, np.float64), rtol=2e-6, atol=2e-6)
    np.testing.assert_allclose(rm, erm, rtol=1e-13)
    np.testing.assert_allclose(rv, erv, rtol=1e-13)


def test_batch_norm_fast_path_nan_inf_and_zero_variance(rng):
    x = rng.standard_normal((5, 4, 6)).astype(np.float32)
    x[1, 0, 2] = np.nan
    x[2, 1, 3] = np.inf
    x[:, 2, :] = 3.0  # constant channel: with eps=0, 0/0 -> NaN as in the general path
    for eps in (0.0, 1e-5):
        with np.errstate(all="ignore"):
            y = nbn.batch_norm(x, training=True, eps=eps)
            g = nbn.batch_norm(x, training=True, eps=eps, out=np.empty_like(x))
        _same_nan(y, g, rtol=2e-6, atol=2e-6)
    rm, rv = np.zeros(4), np.array([1.0, 0.0, -1.0, 2.0])  # rstd inf, NaN in eval
    with np.errstate(all="ignore"):
        y = nbn.batch_norm(x, rm, rv, training=False, eps=0.0)
        g = nbn.batch_norm(x, rm, rv, training=False, eps=0.0, out=np.empty_like(x))
    _same_nan(y, g, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize(
    "case",
    [
        dict(x=lambda r: r.standard_normal((4, 3, 5)).astype(np.float16)),
        dict(x=lambda r: r.standard_normal((4, 5, 3))[:, ::2]),
        dict(x=lambda r: r.standard_normal((4, 3, 5)).tolist()),
        dict(x=lambda r: r.standard_normal((4, 3, 5, 2)), channel_axis=2),
        dict(x=lambda r: r.standard_normal((MIN_TASK_ELEMS + 1, 1))),
        dict(x=lambda r: r.standard_normal((4, 3, 5)), weight=[1.0, 2.0, 3.0]),
        dict(
            x=lambda r: r.standard_normal((4, 3, 5)),
            running_mean=np.zeros(3),
            running_var=np.ones(3, np.float16),
        ),
        dict(x=lambda r: r.standard_normal((4, 3, 5)), momentum=1),
        dict(x=lambda r: r.standard_normal((1, 3)), training=True),
    ],
)
def test_batch_norm_inputs_that_need_converting_take_the_general_path(rng, case):
    kw = dict(case)
    x = kw.pop("x")(rng)
    kw.setdefault("training", True)
    args = (
        x,
        kw.pop("running_mean", None),
        kw.pop("running_var", None),
        kw.pop("weight", None),
        None,
        kw.pop("training"),
        kw.pop("momentum", 0.1),
        1e-5,
        kw.pop("channel_axis", 1),
        None,
        False,
    )
    assert shortcuts.batch_norm(*args) is None


@pytest.mark.parametrize(
    "kwargs,exc,word",
    [
        (dict(running_mean=np.zeros(3)), ValueError, "together"),
        (dict(training=False), ValueError, "required"),
        (dict(eps=-1.0), ValueError, "eps"),
        (dict(momentum=2.0), ValueError, "momentum"),
        (dict(channel_axis=5), ValueError, "channel_axis"),
        (dict(weight=np.ones(4)), ValueError, "weight"),
        (
            dict(running_mean=np.zeros(3), running_var=np.ones(3, np.float32)[::-1].copy()[None]),
            ValueError,
            "running_var",
        ),
        (dict(running_mean=np.zeros(3, np.int64), running_var=np.ones(3)), TypeError, "running_mean"),
    ],
)
def test_batch_norm_errors_come_from_the_general_path(rng, kwargs, exc, word):
    x = rng.standard_normal((4, 3, 5)).astype(np.float32)
    kw = dict(training=True)
    kw.update(kwargs)
    with pytest.raises(exc, match=word):
        nbn.batch_norm(x, **kw)


def test_batch_norm_read_only_running_stats_refused():
    x = np.ones((4, 3), np.float32)
    rm, rv = np.zeros(3), np.ones(3)
    rm.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        nbn.batch_norm(x, rm, rv, training=True)


STD_CASES = [
    ((32, 64), 0),
    ((32, 64), -1),
    ((32, 64), 1),
    ((4, 5, 6), 0),
    ((4, 5, 6), 2),
    ((4, 5, 6), None),
    ((7,), 0),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", STD_CASES)
@pytest.mark.parametrize("opts", [dict(), dict(ddof=1), dict(with_mean=False), dict(with_std=False)])
def test_standardize_fast_path_matches_general(rng, dtype, shape, axis, opts):
    x = (rng.standard_normal(shape) * 3 + 100).astype(dtype)
    flat = x.reshape(-1)
    flat[::7] = np.nan  # NaN left out of the statistics
    if x.ndim == 2:
        x[:, 0] = 5.0  # a constant column (std 1) / row
    assert shortcuts.small_view(x, axis) is not None
    x0 = x.copy()
    y = nbn.standardize(x, axis, **opts)
    g = nbn.standardize(x, axis, out=np.empty_like(x), **opts)
    np.testing.assert_array_equal(np.isnan(x), np.isnan(x0))
    _same_nan(y, g, **_tol(dtype))
    if axis is not None:  # the oracle takes an int or a tuple
        with np.errstate(invalid="ignore"):
            e = ref.standardize(x, axis, **opts)
        _same_nan(y, e, **_tol(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", STD_CASES)
@pytest.mark.parametrize("opts", [dict(), dict(feature_range=(-2.0, 3.0)), dict(clip=True)])
def test_minmax_fast_path_matches_general(rng, dtype, shape, axis, opts):
    x = (rng.standard_normal(shape) * 3 + 100).astype(dtype)
    flat = x.reshape(-1)
    flat[::5] = np.nan
    if x.ndim == 2:
        x[:, 0] = 5.0  # zero range: scaled by hi - lo
        x[:, 1] = np.nan  # all NaN: stays NaN
        x[3, 2] = np.inf
    assert shortcuts.small_view(x, axis) is not None
    y = nbn.minmax_scale(x, axis=axis, **opts)
    g = nbn.minmax_scale(x, axis=axis, out=np.empty_like(x), **opts)
    with np.errstate(invalid="ignore"):
        _same_nan(y, g, **_tol(dtype))


def test_standardize_fast_path_not_taken_and_errors(rng):
    x = rng.standard_normal((6, 4, 3))
    assert shortcuts.small_view(x, (0, 2)) == (6, 4, 3)  # a tuple axis keeping axis 1
    assert shortcuts.small_view(x, (0, 1)) == (24, 3, 1)
    assert shortcuts.small_view(x, (1,)) is None  # kept (0, 2): not contiguous
    assert shortcuts.small_view(x, (0, 0)) is None  # repeated: the general path raises
    assert shortcuts.small_view(x, ()) is None
    assert shortcuts.small_view(x, [0, 2]) is None  # not a tuple
    assert shortcuts.small_view(x[:, ::2], 0) is None
    assert shortcuts.small_view(x.astype(np.float16), 0) is None
    assert shortcuts.small_view(np.ones((MIN_TASK_ELEMS + 1,)), 0) is None
    assert shortcuts.small_view(np.ones((0, 3)), 0) is None
    assert shortcuts.small_view(x, 5) is None
    with pytest.raises(ValueError, match="axis"):
        nbn.standardize(x, 5)
    with pytest.raises(ValueError, match="ddof"):
        nbn.standardize(x, 0, ddof=-1)
    with pytest.raises(ValueError, match="feature_range"):
        nbn.minmax_scale(x, (1.0, 0.0))
    with pytest.raises(ValueError):
        nbn.standardize(np.ones((0, 3)), 0)
    # the fast path and the general path of a small call run the same kernel
    np.testing.assert_array_equal(
        nbn.standardize(x, (0, 2)), nbn.standardize(x, (0, 2), out=np.empty_like(x))
    )
    np.testing.assert_array_equal(nbn.standardize(x, (0, 2)), nbn.standardize(x, [2, 0]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_small_calls_give_the_same_bits_with_and_without_out(rng, dtype):
    # the general path of a small contiguous call runs the same kernel
    x = (rng.standard_normal((6, 3, 5)) * 4 + 1e3).astype(dtype)
    rm1, rv1 = np.zeros(3, dtype), np.ones(3, dtype)
    rm2, rv2 = rm1.copy(), rv1.copy()
    y = nbn.batch_norm(x, rm1, rv1, training=True)
    o = np.empty_like(x)
    y2, mean, rstd = nbn.batch_norm(x, rm2, rv2, training=True, out=o, return_stats=True)
    assert y2 is o and np.array_equal(y, o)
    assert np.array_equal(rm1, rm2) and np.array_equal(rv1, rv2)
    st = 1e-7 if dtype == np.float32 else 1e-12  # statistics come in x's float type
    np.testing.assert_allclose(mean, x.astype(np.float64).mean(axis=(0, 2)), rtol=st)
    z = x.copy()
    nbn.batch_norm(z, rm1, rv1, training=False, out=z)  # in place
    assert np.array_equal(z, nbn.batch_norm(x, rm1, rv1, training=False))
    s, m, sd = nbn.standardize(x, 0, return_stats=True)
    assert np.array_equal(s, nbn.standardize(x, 0))
    np.testing.assert_allclose(m[0], x.astype(np.float64).mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(sd[0], x.astype(np.float64).std(axis=0), rtol=1e-10)
    z = x.copy()
    nbn.minmax_scale(z, out=z)
    assert np.array_equal(z, nbn.minmax_scale(x))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(2, 4, 5), (3, 6, 4, 4), (1, 8, 3, 2, 2)])
@pytest.mark.parametrize("affine", [False, True])
def test_instance_and_group_fast_paths(rng, dtype, shape, affine):
    x = (rng.standard_normal(shape) * 2 + 1e3).astype(dtype)
    C = shape[1]
    w = rng.uniform(0.5, 1.5, C).astype(dtype) if affine else None
    b = rng.uniform(-1, 1, C).astype(dtype) if affine else None
    assert shortcuts.groups_small(x, C, w, b, 1e-5) is not None
    y = nbn.instance_norm(x, weight=w, bias=b)
    assert np.array_equal(y, nbn.instance_norm(x, weight=w, bias=b, out=np.empty_like(x)))
    np.testing.assert_allclose(
        y, np.asarray(ref.instance_norm(x, weight=w, bias=b), np.float64), **_tol(dtype)
    )
    for G in (1, 2, C):
        y = nbn.group_norm(x, G, w, b)
        assert np.array_equal(y, nbn.group_norm(x, G, w, b, out=np.empty_like(x)))
        np.testing.assert_allclose(y, np.asarray(ref.group_norm(x, G, w, b), np.float64), **_tol(dtype))


def test_instance_and_group_fast_path_errors(rng):
    x = rng.standard_normal((2, 4, 5)).astype(np.float32)
    with pytest.raises(TypeError, match="channel_axis"):
        nbn.instance_norm(x, channel_axis=True)
    with pytest.raises(TypeError, match="channel_axis"):
        nbn.group_norm(x, 2, channel_axis=True)
    with pytest.raises(ValueError, match="momentum"):
        nbn.instance_norm(x, momentum=2.0)
    with pytest.raises(ValueError, match="eps"):
        nbn.instance_norm(x, eps=-1.0)
    with pytest.raises(ValueError, match="num_groups"):
        nbn.group_norm(x, 3)
    with pytest.raises(ValueError, match="weight"):
        nbn.group_norm(x, 2, np.ones(3, np.float32))
    with pytest.raises(ValueError, match="spatial"):
        nbn.instance_norm(x[:, :, :1])
    assert shortcuts.groups_small(x.astype(np.float16), 4, None, None, 1e-5) is None
    assert (
        shortcuts.groups_small(x, 4, np.ones(4), None, 1e-5) is None
    )  # float64 weight: converted by the general path
    np.testing.assert_allclose(nbn.group_norm(x, 2, np.ones(4)), nbn.group_norm(x, 2), rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", [2, 1.0, 3.5, np.inf])
def test_lp_fast_path(rng, dtype, p):
    x = (rng.standard_normal((7, 33)) * 3).astype(dtype)
    x[2, 4] = np.nan
    x[3] = 0.0
    y = nbn.lp_normalize(x, p)
    assert np.array_equal(y, nbn.lp_normalize(x, p, out=np.empty_like(x)), equal_nan=True)
    with np.errstate(invalid="ignore"):
        e = np.asarray(ref.lp_normalize(x, p), np.float64)
    _same_nan(y, e, **_tol(dtype))
    with pytest.raises(ValueError, match="p must"):
        nbn.lp_normalize(x, -1)
    with pytest.raises(TypeError, match="p must"):
        nbn.lp_normalize(x, True)
    with pytest.raises(ValueError, match="eps"):
        nbn.lp_normalize(x, p, eps=-1.0)
