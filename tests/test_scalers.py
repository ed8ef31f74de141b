"""StandardScaler / MinMaxScaler: scikit-learn's values and conventions."""

from __future__ import annotations

import pickle
import sys
import warnings

import numpy as np
import pytest

from numbanorm.scalers import MinMaxScaler, StandardScaler

RTOL = 1e-10


def _data(rng, n=97, nan=True):
    # features: plain, scaled+shifted, constant, mean 1e4 x spread, all-NaN (below)
    X = rng.normal(size=(n, 5)) * [1.0, 10.0, 0.0, 0.1, 1.0] + [0.0, 1e3, 5.0, 1e3, -2.0]
    if nan:
        X[rng.random(X.shape) < 0.1] = np.nan
        X[:, 4] = np.nan  # a feature with no value at all
    return X


def _same(a, b, atol=1e-25):  # atol: sklearn leaves ~1e-32 variances of constants
    if a is None or b is None:
        assert a is None and b is None
        return
    a, b = np.asarray(a, float), np.asarray(b, float)
    np.testing.assert_allclose(a, b, rtol=RTOL, atol=atol, equal_nan=True)


# Transformed values near 0 carry the rounding of the fitted mean (both
# libraries round sums at the data's magnitude), hence an absolute floor.
ATOL_T = 1e-10


def _sk():
    return pytest.importorskip("sklearn.preprocessing")


@pytest.mark.parametrize("with_mean,with_std", [(True, True), (False, True), (True, False), (False, False)])
def test_standard_matches_sklearn(rng, with_mean, with_std):
    skp = _sk()
    X = _data(rng)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # sklearn on the all-NaN feature
        ref = skp.StandardScaler(with_mean=with_mean, with_std=with_std).fit(X)
        ref_t = ref.transform(X)
        ref_inv = ref.inverse_transform(ref_t)
    ours = StandardScaler(with_mean=with_mean, with_std=with_std).fit(X)
    for k in ("mean_", "var_", "scale_", "n_samples_seen_"):
        _same(getattr(ours, k), getattr(ref, k))
    assert np.asarray(ours.n_samples_seen_).dtype == np.asarray(ref.n_samples_seen_).dtype
    assert ours.n_features_in_ == ref.n_features_in_ == 5
    _same(ours.transform(X), ref_t, ATOL_T)
    _same(ours.inverse_transform(ref_t), ref_inv, ATOL_T)


@pytest.mark.parametrize("chunk", [11, 20, 37])
def test_standard_partial_fit_matches_sklearn(rng, chunk):
    skp = _sk()
    X = _data(rng, nan=False)
    X[5, 1] = np.nan
    ref, ours = skp.StandardScaler(), StandardScaler()
    for i in range(0, len(X), chunk):
        ref.partial_fit(X[i : i + chunk])
        ours.partial_fit(X[i : i + chunk])
    for k in ("mean_", "var_", "scale_", "n_samples_seen_"):
        _same(getattr(ours, k), getattr(ref, k))
    full = StandardScaler().fit(X)
    _same(ours.var_, full.var_)


def test_standard_sample_weight_matches_sklearn(rng):
    skp = _sk()
    X = _data(rng, nan=False)
    X[3, 0] = np.nan
    w = rng.random(len(X))
    with warnings.catch_warnings():
        # sklearn's weighted variance of the constant feature can round to
        # -1e-46 (numpy 2.4), and its sqrt then warns
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = skp.StandardScaler().fit(X, sample_weight=w)
    ours = StandardScaler().fit(X, sample_weight=w)
    for k in ("mean_", "var_", "scale_", "n_samples_seen_"):
        _same(getattr(ours, k), getattr(ref, k))
    # mixing weighted and unweighted batches
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = skp.StandardScaler().partial_fit(X[:40], sample_weight=w[:40]).partial_fit(X[40:])
    ours = StandardScaler().partial_fit(X[:40], sample_weight=w[:40]).partial_fit(X[40:])
    for k in ("mean_", "var_", "n_samples_seen_"):
        _same(getattr(ours, k), getattr(ref, k))
    with pytest.raises(ValueError, match="non-zero"):
        StandardScaler().fit(X, sample_weight=np.zeros(len(X)))
    with pytest.raises(ValueError, match="sample_weight.shape"):
        StandardScaler().fit(X, sample_weight=np.ones(3))


@pytest.mark.parametrize("feature_range,clip", [((0, 1), False), ((-3, 2), True)])
def test_minmax_matches_sklearn(rng, feature_range, clip):
    skp = _sk()
    X = _data(rng)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = skp.MinMaxScaler(feature_range=feature_range, clip=clip).partial_fit(X[:50]).partial_fit(X[50:])
        Y = X * 1.5 - 0.2  # values outside the fitted range exercise clip
        ref_t = ref.transform(Y)
        ref_inv = ref.inverse_transform(ref_t)
    ours = MinMaxScaler(feature_range=feature_range, clip=clip).partial_fit(X[:50]).partial_fit(X[50:])
    for k in ("data_min_", "data_max_", "data_range_", "scale_", "min_"):
        _same(getattr(ours, k), getattr(ref, k))
    assert ours.n_samples_seen_ == ref.n_samples_seen_ == len(X)
    _same(ours.transform(Y), ref_t, ATOL_T)
    _same(ours.inverse_transform(ref_t), ref_inv, ATOL_T)


def test_float32_stays_float32_and_copy(rng):
    X = rng.normal(size=(30, 4)).astype(np.float32)
    for sc in (StandardScaler(), MinMaxScaler()):
        Y = sc.fit_transform(X)
        assert Y.dtype == np.float32 and Y is not X
        assert sc.scale_.dtype == np.float64
        np.testing.assert_allclose(sc.inverse_transform(Y), X, rtol=1e-5, atol=1e-5)
    Xc = X.copy()
    sc = StandardScaler(copy=False).fit(Xc)
    Y = sc.transform(Xc)
    assert Y is Xc  # in place
    np.testing.assert_allclose(Y.mean(axis=0), 0, atol=1e-6)
    Xi = np.arange(12).reshape(6, 2)
    assert StandardScaler(copy=False).fit_transform(Xi).dtype == np.float64
    ro = X.copy()
    ro.flags.writeable = False
    assert StandardScaler(copy=False).fit(ro).transform(ro) is not ro


def test_nd_axis_per_channel(rng):
    imgs = rng.normal(size=(6, 3, 5, 4)) * [[[1.0]], [[2.0]], [[3.0]]] + 10
    imgs[0, 1, 0, 0] = np.nan
    sc = StandardScaler(axis=(0, 2, 3))
    for batch in np.array_split(imgs, 4):
        sc.partial_fit(batch)
    assert sc.mean_.shape == (3,) and sc.n_features_in_ == 3
    np.testing.assert_allclose(sc.mean_, np.nanmean(imgs, axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(sc.var_, np.nanvar(imgs, axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_array_equal(sc.n_samples_seen_, [120, 119, 120])
    z = sc.transform(imgs[:2])
    ref = (imgs[:2] - sc.mean_[:, None, None]) / sc.scale_[:, None, None]
    np.testing.assert_allclose(z, ref, rtol=1e-12, equal_nan=True)
    w = rng.random(6)
    sw = StandardScaler(axis=(0, 2, 3)).fit(imgs, sample_weight=w)
    ww = np.broadcast_to(w[:, None, None, None], imgs.shape)
    ok = ~np.isnan(imgs)
    mean = (np.where(ok, imgs, 0) * ww).sum(axis=(0, 2, 3)) / (ww * ok).sum(axis=(0, 2, 3))
    np.testing.assert_allclose(sw.mean_, mean, rtol=1e-12)
    mm = MinMaxScaler(axis=(0, 2, 3)).fit(imgs)
    np.testing.assert_array_equal(mm.data_max_, np.nanmax(imgs, axis=(0, 2, 3)))
    assert mm.n_samples_seen_ == 120
    with pytest.raises(ValueError, match="X has 4 features, but StandardScaler is expecting 3"):
        sc.transform(rng.normal(size=(2, 4, 5, 4)))


def test_errors_and_unfitted(rng):
    X = rng.normal(size=(10, 3))
    sc = StandardScaler()
    with pytest.raises(ValueError, match="not fitted") as e:
        sc.transform(X)
    assert isinstance(e.value, AttributeError)
    sc.fit(X)
    with pytest.raises(ValueError, match="X has 2 features, but StandardScaler is expecting 3"):
        sc.transform(X[:, :2])
    with pytest.raises(ValueError, match="Reshape your data"):
        sc.transform(X[0])
    with pytest.raises(ValueError, match="infinity"):
        StandardScaler().fit(np.array([[1.0], [np.inf]]))
    with pytest.raises(ValueError, match="infinity"):
        MinMaxScaler().fit(np.array([[1.0], [-np.inf]]))
    with pytest.raises(ValueError, match="Minimum of desired feature range"):
        MinMaxScaler(feature_range=(1, 0)).fit(X)
    with pytest.raises(ValueError, match="0 sample"):
        StandardScaler().fit(np.empty((0, 3)))
    with pytest.raises(ValueError, match="Complex"):
        StandardScaler().fit(X + 1j)


def test_not_fitted_error_without_sklearn(monkeypatch):
    from numbanorm import scalers

    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.exceptions", None)
    with pytest.raises(scalers.NotFittedError):
        MinMaxScaler().transform(np.ones((2, 2)))


def test_params_repr_pickle(rng):
    sc = MinMaxScaler(feature_range=(-1, 1), axis=(0, 1))
    assert repr(sc) == "MinMaxScaler(feature_range=(-1, 1), axis=(0, 1))"
    assert repr(StandardScaler()) == "StandardScaler()"
    assert sc.get_params() == {"axis": (0, 1), "clip": False, "copy": True, "feature_range": (-1, 1)}
    assert sc.set_params(clip=True) is sc and sc.clip is True
    with pytest.raises(ValueError, match="Invalid parameter 'nope'"):
        sc.set_params(nope=1)
    X = rng.normal(size=(8, 2, 3))
    sc.fit(X)
    again = pickle.loads(pickle.dumps(sc))
    np.testing.assert_array_equal(again.transform(X), sc.transform(X))
    assert list(StandardScaler().fit(X[:, 0]).get_feature_names_out()) == ["x0", "x1", "x2"]


def test_pipeline_and_clone(rng):
    pytest.importorskip("sklearn")
    from sklearn.base import clone
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline

    X = rng.normal(size=(50, 3)) * 100 + 7
    y = X @ [1.0, -2.0, 0.5] + 3
    pipe = make_pipeline(StandardScaler(), MinMaxScaler(feature_range=(-1, 1)), LinearRegression())
    pipe.fit(X, y)
    np.testing.assert_allclose(pipe.predict(X), y, rtol=1e-9)
    c = clone(StandardScaler(with_mean=False, axis=0))
    assert c.get_params()["with_mean"] is False and not hasattr(c, "mean_")


@pytest.mark.parametrize("est", [StandardScaler(), MinMaxScaler()], ids=repr)
def test_check_estimator(est):
    pytest.importorskip("sklearn")
    from sklearn.utils.estimator_checks import check_estimator

    with warnings.catch_warnings():
        # "does not inherit from BaseEstimator": deliberate, scikit-learn is optional
        warnings.filterwarnings("ignore", message=".*does not inherit from", category=UserWarning)
        results = check_estimator(est, on_skip=None, on_fail=None)
    failed = [(r["check_name"], r["exception"]) for r in results if r["status"] == "failed"]
    assert not failed
    assert sum(r["status"] == "passed" for r in results) >= 40


def test_kept_shape_mismatch_message(rng):
    sc = MinMaxScaler(axis=0).fit(rng.normal(size=(4, 2, 3)))
    with pytest.raises(ValueError, match=r"kept shape \(3, 2\).*fitted on kept shape \(2, 3\)"):
        sc.transform(rng.normal(size=(4, 3, 2)))
