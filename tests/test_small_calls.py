"""The small-call fast path of layer_norm/rms_norm (backends/cpu/shortcuts.py: rows_small).

It must give the general path's results, be taken only when nothing needs
converting, and leave every error to the general path's validation.
"""

from __future__ import annotations

import numpy as np
import pytest
from reference import layer_norm as ref_layer
from reference import rms_norm as ref_rms

import numbanorm as nbn
from numbanorm._config import MIN_TASK_ELEMS
from numbanorm.backends.cpu import shortcuts


def _general(fn, *args, **kw):
    # return_stats=True never takes the fast path
    return fn(*args, return_stats=True, **kw)[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (32, 64), (2, 3, 17), (MIN_TASK_ELEMS // 128, 128), (5,)])
@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_fast_path_matches_general_path_and_oracle(rng, dtype, shape, affine, offset):
    x = (rng.standard_normal(shape) * 3 + offset).astype(dtype)
    D = shape[-1]
    w = rng.standard_normal(D).astype(dtype) if affine else None
    b = rng.standard_normal(D).astype(dtype) if affine else None
    x0 = x.copy()
    assert shortcuts.rows_small(x, D, w, b, 1e-5, False) is not None  # it is the fast path
    assert shortcuts.rows_small(x, (D,), w, b, 1e-5, False) is not None
    y = nbn.layer_norm(x, D, w, b, 1e-5)
    tol = dict(rtol=1e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    assert y.dtype == dtype and y.shape == shape and y.flags.c_contiguous
    np.testing.assert_allclose(y, _general(nbn.layer_norm, x, D, w, b, 1e-5), **tol)
    np.testing.assert_allclose(y, ref_layer(x, (D,), w, b, 1e-5).astype(dtype), **tol)
    yr = nbn.rms_norm(x, D, w)
    np.testing.assert_allclose(yr, _general(nbn.rms_norm, x, D, w), **tol)
    np.testing.assert_allclose(yr, ref_rms(x, (D,), w, None).astype(dtype), **tol)
    np.testing.assert_array_equal(x, x0)
    assert not np.shares_memory(y, x)


def test_fast_path_keeps_nan_and_inf_in_their_row(rng):
    x = rng.standard_normal((4, 16)).astype(np.float32)
    x[1, 3] = np.nan
    x[2, 5] = np.inf
    y = nbn.layer_norm(x, 16)
    assert np.isnan(y[1]).all() and np.isnan(y[2]).all()
    assert np.isfinite(y[[0, 3]]).all()


@pytest.mark.parametrize(
    "case",
    [
        "noncontig",
        "float16",
        "int",
        "bigendian",
        "tuple2_shape",
        "np_int_shape",
        "int_eps",
        "w_float64",
        "w_list",
        "w_strided",
        "too_big",
    ],
)
def test_inputs_that_need_converting_take_the_general_path(rng, case):
    x = rng.standard_normal((8, 16)).astype(np.float32)
    ns, w, eps = 16, None, 1e-5
    if case == "noncontig":
        x = rng.standard_normal((8, 32)).astype(np.float32)[:, ::2]
    elif case == "float16":
        x = x.astype(np.float16)
    elif case == "int":
        x = (x * 10).astype(np.int32)
    elif case == "bigendian":
        x = x.astype(">f4")
    elif case == "tuple2_shape":
        x = x.reshape(8, 4, 4)
        ns = (4, 4)
    elif case == "np_int_shape":
        ns = np.int64(16)
    elif case == "int_eps":
        eps = 0
    elif case == "w_float64":
        w = np.linspace(0.5, 2, 16)
    elif case == "w_list":
        w = list(np.linspace(0.5, 2, 16))
    elif case == "w_strided":
        w = np.linspace(0.5, 2, 32).astype(np.float32)[::2]
    elif case == "too_big":
        x = rng.standard_normal((MIN_TASK_ELEMS // 16 + 1, 16)).astype(np.float32)
    assert shortcuts.rows_small(x, ns, w, None, eps, False) is None
    # ...and the general path computes it
    y = nbn.layer_norm(x, ns, w, eps=eps)
    xf = np.asarray(x, np.float64)
    ref = ref_layer(
        xf,
        (16,) if x.ndim == 2 else (4, 4),
        None if w is None else np.asarray(w, np.float64),
        None,
        float(eps),
    )
    np.testing.assert_allclose(np.asarray(y, np.float64), ref, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize(
    "kwargs, exc, word",
    [
        (dict(normalized_shape=15), ValueError, "normalized_shape"),
        (dict(weight=np.ones(15, np.float32)), ValueError, "weight"),
        (dict(bias=np.ones((1, 16), np.float32)), ValueError, "bias"),
        (dict(eps=-1.0), ValueError, "eps"),
        (dict(eps=float("inf")), ValueError, "eps"),
        (dict(eps=float("nan")), ValueError, "eps"),
        (dict(normalized_shape=True), TypeError, "normalized_shape"),
    ],
)
def test_errors_come_from_the_general_path(rng, kwargs, exc, word):
    x = rng.standard_normal((8, 16)).astype(np.float32)
    x0 = x.copy()
    args = dict(normalized_shape=16) | kwargs
    with pytest.raises(exc, match=word):
        nbn.layer_norm(x, **args)
    np.testing.assert_array_equal(x, x0)


def test_empty_and_zero_dim_inputs_are_refused_by_the_general_path():
    with pytest.raises(ValueError, match="empty"):
        nbn.layer_norm(np.empty((0, 4), np.float32), 4)
    with pytest.raises(ValueError, match="normalized_shape"):
        nbn.layer_norm(np.float32(1.0) * np.ones((), np.float32), 1)
