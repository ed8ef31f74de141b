"""Loose ends found when the library was tried as users would (issue 20).

- masked arrays (numpy.ma): honoured by the functions that leave NaN out of
  their statistics, the scalers and RunningStats; refused with a TypeError
  naming the argument by the deep-learning norms, the layers, parameters,
  running statistics and ``out=``;
- ``rms_norm(eps=None)`` on float16: float32's machine epsilon (PyTorch 2.13);
- small batches of the scalers and RunningStats run serially (no thread
  pool), with the statistics of the parallel path;
- scikit-learn's callback protocol on the scalers (scikit-learn >= 1.9).
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest

import numbanorm as nbn
from numbanorm import _validate as V
from numbanorm import scalers, streaming
from numbanorm.backends.cpu import _tasks

# --------------------------------------------------------------------------
# masked arrays
# --------------------------------------------------------------------------


def _masked(rng, shape=(9, 4), dtype=np.float64, frac=0.3):
    data = (rng.normal(size=shape) * 3 + 1).astype(dtype)
    mask = rng.random(shape) < frac
    mask.flat[0] = True
    data.flat[0] = 1e30 if np.dtype(dtype).kind == "f" else 100  # under the mask: must not count
    return np.ma.MaskedArray(data, mask=mask)


def _nan_filled(m):
    a = np.ma.getdata(m).astype(V.result_dtype(m.dtype))
    a[np.ma.getmaskarray(m)] = np.nan
    return a


PREPROC = [
    ("standardize", lambda x, **k: nbn.standardize(x, **k)),
    ("standardize axis=1 ddof=1", lambda x, **k: nbn.standardize(x, axis=1, ddof=1, **k)),
    ("minmax_scale", lambda x, **k: nbn.minmax_scale(x, (-1, 2), **k)),
    ("minmax_scale clip axis=None", lambda x, **k: nbn.minmax_scale(x, axis=None, clip=True, **k)),
    ("lp_normalize", lambda x, **k: nbn.lp_normalize(x, **k)),
    ("lp_normalize p=1 axis=0", lambda x, **k: nbn.lp_normalize(x, 1.0, axis=0, **k)),
]


@pytest.mark.parametrize("name,fn", PREPROC, ids=[p[0] for p in PREPROC])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_masked_preprocessing_leaves_masked_out(rng, name, fn, dtype):
    m = _masked(rng, dtype=dtype)
    before = (m.data.copy(), m.mask.copy())
    y = fn(m)
    assert isinstance(y, np.ma.MaskedArray)
    np.testing.assert_array_equal(np.ma.getmaskarray(y), m.mask)
    ref = fn(_nan_filled(m))  # masked entries count as NaN: left out of the statistics
    assert y.dtype == ref.dtype == V.result_dtype(dtype)
    np.testing.assert_array_equal(y.data[~m.mask], ref[~m.mask])
    other = m.copy()
    other.data[m.mask] = -7  # the values under the mask are never used
    np.testing.assert_array_equal(fn(other).data[~m.mask], y.data[~m.mask])
    np.testing.assert_array_equal(m.data, before[0])  # x untouched
    np.testing.assert_array_equal(m.mask, before[1])
    assert y.mask is not m.mask  # a mask of its own
    # out=: a plain ndarray, returned viewed as masked
    out = np.empty(m.shape, ref.dtype)
    y2 = fn(m, out=out)
    assert isinstance(y2, np.ma.MaskedArray) and np.shares_memory(y2.data, out)
    np.testing.assert_array_equal(out[~m.mask], ref[~m.mask])
    with pytest.raises(TypeError, match=r"^out must not be a numpy\.ma\.MaskedArray"):
        fn(m, out=np.ma.MaskedArray(np.empty(m.shape, ref.dtype)))


def test_masked_standardize_stats_and_nomask(rng):
    m = _masked(rng)
    y, mean, std = nbn.standardize(m, return_stats=True)
    f = _nan_filled(m)
    np.testing.assert_allclose(mean.ravel(), np.nanmean(f, axis=0), rtol=1e-12)
    np.testing.assert_allclose(std.ravel(), np.nanstd(f, axis=0), rtol=1e-12)
    assert isinstance(y, np.ma.MaskedArray) and not isinstance(mean, np.ma.MaskedArray)
    plain = np.ma.MaskedArray(m.data[:, 1:])  # mask = nomask
    y = nbn.standardize(plain)
    assert isinstance(y, np.ma.MaskedArray) and not y.mask.any()
    np.testing.assert_array_equal(y.data, nbn.standardize(np.ascontiguousarray(m.data[:, 1:])))


DL = [
    ("batch_norm", lambda x: nbn.batch_norm(x, training=True)),
    ("instance_norm", lambda x: nbn.instance_norm(x)),
    ("layer_norm", lambda x: nbn.layer_norm(x, x.shape[-1])),
    ("group_norm", lambda x: nbn.group_norm(x, 2)),
    ("rms_norm", lambda x: nbn.rms_norm(x, x.shape[-1])),
]


@pytest.mark.parametrize("name,fn", DL, ids=[d[0] for d in DL])
def test_masked_deep_learning_norms_refuse(rng, name, fn):
    m = _masked(rng, shape=(3, 4, 5))
    with pytest.raises(TypeError, match=rf"^x is a numpy\.ma\.MaskedArray, which {name} refuses"):
        fn(m)


LAYERS = [
    lambda: nbn.BatchNorm(4),
    lambda: nbn.InstanceNorm(4),
    lambda: nbn.LayerNorm(5),
    lambda: nbn.GroupNorm(2, 4),
    lambda: nbn.RMSNorm(5),
]


LAYER_IDS = ["BatchNorm", "InstanceNorm", "LayerNorm", "GroupNorm", "RMSNorm"]


@pytest.mark.parametrize("make", LAYERS, ids=LAYER_IDS)
def test_masked_layers_refuse(rng, make):
    m = _masked(rng, shape=(3, 4, 5), dtype=np.float32)
    layer = make()
    with pytest.raises(TypeError, match=r"^x is a numpy\.ma\.MaskedArray"):
        layer(m)
    layer.eval()
    with pytest.raises(TypeError, match=r"^x is a numpy\.ma\.MaskedArray"):
        layer(m)


def test_masked_parameters_refuse(rng):
    x = rng.normal(size=(3, 4, 5))
    w = np.ma.MaskedArray(np.ones(5), mask=[1, 0, 0, 0, 0])
    with pytest.raises(TypeError, match=r"^weight must not be a numpy\.ma\.MaskedArray"):
        nbn.layer_norm(x, 5, weight=w)
    with pytest.raises(TypeError, match=r"^bias must not be a numpy\.ma\.MaskedArray"):
        nbn.layer_norm(x, 5, bias=np.ma.MaskedArray(np.zeros(5)))
    rm = np.ma.MaskedArray(np.zeros(4))
    with pytest.raises(TypeError, match=r"^running_mean must not be a numpy\.ma\.MaskedArray"):
        nbn.batch_norm(x, rm, np.ones(4), training=True)
    with pytest.raises(TypeError, match=r"^out must not be a numpy\.ma\.MaskedArray"):
        nbn.layer_norm(x, 5, out=np.ma.MaskedArray(np.empty_like(x)))
    # the shared validation refuses them too, for any path that reaches it
    with pytest.raises(TypeError, match=r"^x must not be a numpy\.ma\.MaskedArray"):
        V.Input(np.ma.MaskedArray(x))


@pytest.mark.parametrize("cls", [nbn.StandardScaler, nbn.MinMaxScaler])
@pytest.mark.parametrize("shape,axis", [((40, 5), 0), ((6, 3, 5, 4), (0, 2, 3))])
def test_masked_scalers(rng, cls, shape, axis):
    m = _masked(rng, shape=shape)
    f = _nan_filled(m)
    before = m.data.copy()
    ours, ref = cls(axis=axis).fit(m), cls(axis=axis).fit(f)
    for k in ("mean_", "var_", "scale_", "n_samples_seen_", "data_min_", "data_max_", "min_"):
        if hasattr(ref, k):
            np.testing.assert_array_equal(getattr(ours, k), getattr(ref, k))
    for method in ("transform", "inverse_transform"):
        y = getattr(ours, method)(m)
        assert isinstance(y, np.ma.MaskedArray)
        np.testing.assert_array_equal(y.mask, m.mask)
        r = getattr(ref, method)(f)
        np.testing.assert_array_equal(y.data[~m.mask], r[~m.mask])
    y = cls(axis=axis, copy=False).fit_transform(m)  # copy=False: a masked X is not overwritten
    assert isinstance(y, np.ma.MaskedArray)
    np.testing.assert_array_equal(m.data, before)
    pf = cls(axis=axis).partial_fit(m[:3]).partial_fit(m[3:])
    np.testing.assert_allclose(pf.scale_, ref.scale_, rtol=1e-12)


def test_masked_running_stats(rng):
    m = _masked(rng, shape=(20, 3, 4))
    rs = nbn.RunningStats().update(m[:7], axis=(0, 2)).update(m[7:], axis=(0, 2))
    f = _nan_filled(m)
    np.testing.assert_allclose(rs.mean, np.nanmean(f, axis=(0, 2)), rtol=1e-12)
    np.testing.assert_allclose(rs.var(), np.nanvar(f, axis=(0, 2)), rtol=1e-12)
    np.testing.assert_array_equal(rs.max, np.nanmax(f, axis=(0, 2)))
    np.testing.assert_array_equal(rs.nan_count, m.mask.sum(axis=(0, 2)))  # masked count as NaN


# --------------------------------------------------------------------------
# rms_norm's default eps
# --------------------------------------------------------------------------


def test_rms_norm_default_eps():
    f32 = float(np.finfo(np.float32).eps)
    assert V.rms_default_eps(np.float16) == f32  # PyTorch 2.13: the op's math type, float32
    assert V.rms_default_eps(np.float32) == f32
    assert V.rms_default_eps(np.float64) == float(np.finfo(np.float64).eps)
    assert V.rms_default_eps(np.int32) == V.rms_default_eps(np.bool_) == float(np.finfo(np.float64).eps)


@pytest.mark.parametrize("shape", [(4, 16), (3, 5, 40)])
def test_rms_norm_float16_eps_none(rng, shape):
    # rms ~0.01: float16's own epsilon (9.8e-4) would change the result ~3x
    x = (0.01 * rng.normal(size=shape)).astype(np.float16)
    D = shape[-1]
    y = nbn.rms_norm(x, D)
    np.testing.assert_array_equal(y, nbn.rms_norm(x, D, eps=float(np.finfo(np.float32).eps)))
    assert not np.allclose(y, nbn.rms_norm(x, D, eps=float(np.finfo(np.float16).eps)), rtol=0.1)
    np.testing.assert_array_equal(nbn.RMSNorm(D, dtype=np.float16)(x), y)
    x64 = x.astype(np.float64)
    ref = x64 / np.sqrt((x64 * x64).mean(-1, keepdims=True) + np.finfo(np.float32).eps)
    np.testing.assert_allclose(y.astype(np.float64), ref, rtol=2e-3, atol=1e-3)
    torch = pytest.importorskip("torch")
    t = torch.nn.functional.rms_norm(torch.from_numpy(x), (D,), eps=None).numpy()
    np.testing.assert_allclose(y.astype(np.float64), t.astype(np.float64), rtol=2e-3, atol=2e-3)


# --------------------------------------------------------------------------
# small batches run serially
# --------------------------------------------------------------------------


@pytest.fixture
def no_thread_pool(monkeypatch):
    """Every parallel launch of the CPU backend, and the parallel weighted
    kernel, raise: a call that runs here used no thread pool."""

    def refuse(*args, **kwargs):
        raise AssertionError("a parallel kernel was launched")

    monkeypatch.setattr(_tasks, "launch", refuse)
    monkeypatch.setattr(streaming, "_weighted_moments", refuse)
    return refuse


SMALL_CASES = [
    ((1, 30), 0),
    ((32, 64), 0),
    ((7, 3, 5), (0, 2)),  # kept axes adjacent: a view
    ((7, 3, 5), (1,)),  # kept axes apart: a transposed copy
    ((5, 4, 3, 2), (0, 2, 3)),
]


@pytest.mark.parametrize("shape,axis", SMALL_CASES)
def test_small_calls_use_no_thread_pool(rng, no_thread_pool, shape, axis):
    for dt in (np.float16, np.float32, np.float64):
        x = rng.normal(size=shape).astype(dt)
        for sc in (nbn.StandardScaler(axis=axis), nbn.MinMaxScaler(axis=axis)):
            sc.fit(x).partial_fit(x)
            sc.transform(x)
            sc.inverse_transform(np.asfortranarray(x))
            sc.fit_transform(x)
        nbn.StandardScaler(axis=0).fit(x.reshape(x.shape[0], -1), sample_weight=np.ones(x.shape[0]))
        nbn.RunningStats().update(x, axis).update(x, axis)
        nbn.RunningStats().update(x, 0, sample_weight=np.arange(x.shape[0]))
    big = rng.normal(size=(300, 200))
    with pytest.raises(AssertionError, match="parallel kernel"):  # the guard itself works
        nbn.StandardScaler().fit(big)


ATTRS = ("mean_", "var_", "scale_", "n_samples_seen_", "data_min_", "data_max_", "data_range_", "min_")


def _general(monkeypatch):
    monkeypatch.setattr(scalers, "MIN_TASK_ELEMS", 0)
    monkeypatch.setattr(streaming, "MIN_TASK_ELEMS", 0)


def _data(rng, shape, dtype, offset=0.0):
    x = rng.normal(size=shape) * 2.0 + offset
    x[rng.random(shape) < 0.1] = np.nan
    x[..., 0] = 7.25  # a constant feature (in the 2-D cases)
    return x.astype(dtype)


def _assert_affine(y, x, center, scale, shift, axes):
    """y == (x - center) * scale + shift (parameters of the kept shape)
    formed in float64 and rounded once to y's dtype: within the rounding
    of the float64 terms and one rounding of the result."""
    kshape = [1 if a in axes else n for a, n in enumerate(x.shape)]
    c, s, h = (np.reshape(np.asarray(v, float), kshape) if np.ndim(v) else v for v in (center, scale, shift))
    xd = x.astype(np.float64)
    ref = (xd - c) * s + h
    terms = np.abs(xd - c) * np.abs(s) + np.abs(h)
    bound = 2 * np.finfo(y.dtype).eps * np.abs(ref) + 8 * np.finfo(np.float64).eps * terms + 1e-300
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ref))
    ok = ~np.isnan(ref)
    err = np.abs(y[ok].astype(np.float64) - ref[ok])
    assert (err <= bound[ok]).all(), float((err / bound[ok]).max())


@pytest.mark.parametrize("shape,axis", SMALL_CASES[1:])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("offset", [0.0, 1e6])
def test_small_path_matches_general_path(rng, monkeypatch, shape, axis, dtype, offset):
    """The serial small path gives the statistics of the parallel one (to
    float64 rounding), and outputs formed in float64, rounded once."""
    if dtype == np.float16 and offset:
        offset = 1e3
    x = _data(rng, shape, dtype, offset)
    axes = (axis,) if isinstance(axis, int) else axis
    xs = np.array_split(x, 3) if 0 in axes else [x]
    small, general = {}, {}
    for store in (small, general):
        if store is general:
            _general(monkeypatch)
        for cls in (nbn.StandardScaler, nbn.MinMaxScaler):
            sc = cls(axis=axis)
            for b in xs:
                sc.partial_fit(b)
            store[cls] = (sc, cls(axis=axis).fit(x))
        rs = nbn.RunningStats()
        for b in xs:
            rs.update(b, axis)
        store["rs"] = rs
    monkeypatch.undo()  # the small path again
    for cls in (nbn.StandardScaler, nbn.MinMaxScaler):
        (a, fa), (b, _) = small[cls], general[cls]
        for k in ATTRS:
            if hasattr(b, k):
                assert type(getattr(a, k)) is type(getattr(b, k)), k
                np.testing.assert_allclose(getattr(a, k), getattr(b, k), rtol=1e-12, atol=0, err_msg=k)
                np.testing.assert_allclose(getattr(fa, k), getattr(b, k), rtol=1e-12, atol=0, err_msg=k)
        if cls is nbn.StandardScaler:
            fwd, inv = (a.mean_, 1.0 / a.scale_, 0.0), (0.0, a.scale_, a.mean_)
        else:
            lo = a.min_ + a.data_min_ * a.scale_  # X * scale_ + min_ as (X - data_min_) * scale_ + lo
            fwd, inv = (a.data_min_, a.scale_, lo), (lo, 1.0 / a.scale_, a.data_min_)
        t = a.transform(x)
        assert t.dtype == dtype
        _assert_affine(t, x, *fwd, axes)
        _assert_affine(a.inverse_transform(t), t, *inv, axes)
    ra, rb = small["rs"], general["rs"]
    for k in ("count", "nan_count", "min", "max"):
        np.testing.assert_array_equal(getattr(ra, k), getattr(rb, k))
    # means to rounding of the data's magnitude (near-zero means: not relative)
    np.testing.assert_allclose(ra.mean, rb.mean, rtol=1e-15, atol=1e-15 * (2.0 + offset))
    np.testing.assert_allclose(ra.m2, rb.m2, rtol=1e-12)


def test_small_batch_with_inf_is_rejected_whole(rng):
    x = rng.normal(size=(20, 3))
    for cls in (nbn.StandardScaler, nbn.MinMaxScaler):
        sc = cls().partial_fit(x)
        state = {k: np.copy(v) for k, v in vars(sc).items() if k.endswith("_") and v is not None}
        bad = x[:5].copy()
        bad[2, 1] = np.inf
        with pytest.raises(ValueError, match="infinity"):
            sc.partial_fit(bad)
        for k, v in state.items():
            np.testing.assert_array_equal(getattr(sc, k), v)
        np.testing.assert_array_equal(sc.transform(x), cls().fit(x).transform(x))
        with pytest.raises(ValueError, match="infinity"):
            cls().fit(bad)


def test_small_transform_in_place_and_layouts(rng):
    x = rng.normal(size=(12, 5)).astype(np.float32)
    sc = nbn.StandardScaler(copy=False).fit(x)
    ref = sc.transform(x.copy())
    xc = x.copy()
    assert sc.transform(xc) is xc
    np.testing.assert_array_equal(xc, ref)
    xf = np.asfortranarray(x)
    y = sc.transform(xf)
    assert y is xf
    np.testing.assert_array_equal(y, ref)
    v = np.repeat(x, 2, axis=1)[:, ::2]  # a strided view
    np.testing.assert_array_equal(nbn.StandardScaler().fit(v).transform(v), ref)
    mm = nbn.MinMaxScaler(clip=True).fit(x[:6])
    y = mm.transform(x)
    assert y.min() >= 0.0 and y.max() <= 1.0


# --------------------------------------------------------------------------
# scikit-learn callbacks
# --------------------------------------------------------------------------


@pytest.mark.parametrize("fit_method", ["fit", "partial_fit"])
def test_sklearn_standard_scaler_callback_support(monkeypatch, fit_method):
    """scikit-learn 1.9's own test, run against numbanorm's StandardScaler
    (its module's StandardScaler swapped, as when its scaler tests are run
    against numbanorm)."""
    pytest.importorskip("sklearn.callback")
    td = pytest.importorskip("sklearn.preprocessing.tests.test_data")
    monkeypatch.setattr(td, "StandardScaler", nbn.StandardScaler)
    td.test_standard_scaler_callback_support(fit_method)


@pytest.mark.parametrize("cls", [nbn.StandardScaler, nbn.MinMaxScaler])
def test_callbacks_hooks_and_pipeline(rng, cls):
    pytest.importorskip("sklearn.callback")
    from sklearn.callback.tests._utils import (
        FailingCallback,
        RecordingAutoPropagatedCallback,
        RecordingCallback,
    )
    from sklearn.pipeline import make_pipeline

    X = rng.normal(size=(30, 3))
    cb = RecordingCallback()
    sc = cls().set_callbacks(cb)
    sc.fit(X).partial_fit(X)
    sc.transform(X)  # not a fit task
    hooks = ("setup", "on_fit_task_begin", "on_fit_task_end", "teardown")
    assert [cb.count_hooks(h) for h in hooks] == [2] * 4
    end = [r for r in cb.record if r["name"] == "on_fit_task_end"][-1]
    np.testing.assert_array_equal(end["kwargs"]["fitted_estimator"].transform(X), sc.transform(X))
    assert sc.set_callbacks() is sc and not hasattr(sc, "_skl_callbacks")
    with pytest.raises(TypeError, match="FitCallback"):
        cls().set_callbacks(object())
    # teardown runs when fit raises
    cb = RecordingCallback()
    with pytest.raises(ValueError, match="infinity"):
        cls().set_callbacks(cb).fit(np.array([[1.0], [np.inf]]))
    assert cb.count_hooks("setup") == cb.count_hooks("teardown") == 1
    # a callback set on a Pipeline reaches the scaler (scikit-learn warns if it cannot)
    auto = RecordingAutoPropagatedCallback()
    pipe = make_pipeline(cls(), cls()).set_callbacks(auto)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "does not support callbacks" when a step has none
        pipe.fit(X)
    ends = [r["estimator"] for r in auto.record if r["name"] == "on_fit_task_end"]
    assert sum(isinstance(e, cls) for e in ends) == 2  # both steps (the first via fit_transform)
    assert not any(hasattr(s, "_parent_callback_ctx") or hasattr(s, "_skl_callbacks") for _, s in pipe.steps)
    # a callback that fails stops the fit with its error
    with pytest.raises(Exception):  # noqa: B017 - whatever the failing hook raises
        cls().set_callbacks(FailingCallback(fail_at="on_fit_task_end")).fit(X)


def test_callbacks_without_sklearn(monkeypatch, rng):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.callback", None)
    X = rng.normal(size=(8, 2))
    sc = nbn.StandardScaler().fit(X)  # no callbacks: scikit-learn is never imported
    assert sc.transform(X).shape == X.shape
    with pytest.raises(ImportError, match="set_callbacks needs scikit-learn"):
        sc.set_callbacks()


@pytest.mark.parametrize("n", [300, 30_000])  # the serial path and the parallel one
def test_minmax_float32_far_from_zero_is_accurate(rng, n):
    """MinMaxScaler forms X * scale_ + min_ as (X - data_min_) * scale_ + lo:
    float32 data at 1e5 keep their digits (X * scale_ + min_ in float32
    cancelled to ~1e-4), on every path, the Dask one included."""
    x = (rng.standard_normal((n, 5)) * 4 + 1e5).astype(np.float32)
    sc = nbn.MinMaxScaler().fit(x)
    ref = x.astype(np.float64) * sc.scale_ + sc.min_
    t = sc.transform(x)
    assert t.dtype == np.float32
    np.testing.assert_allclose(t, ref, rtol=0, atol=5e-7)
    np.testing.assert_allclose(sc.inverse_transform(t), x, rtol=2e-7)
    da = pytest.importorskip("dask.array")
    td = sc.transform(da.from_array(x, chunks=(n // 3, 2))).compute()
    np.testing.assert_allclose(td, ref, rtol=0, atol=5e-7)
