"""Issue 17: parameters that live on the device stay there.

A GPU user's weight and bias are device arrays (a model's parameters on the
GPU).  The row ops (layer and RMS norm; channels-first instance and group
norm) take them as they are: ``cuda.row_norm`` casts them to float64 on the
device, so a call that asks for no statistics copies nothing to the host and
does not synchronise, and gives the bits of the same call with host
parameters.  A device parameter in another dtype than the kernel computes in
(float64 weights for float32 x) is rounded as the host path rounds it: it
comes to the host first, as before.
"""

from __future__ import annotations

import numpy as np
import pytest

cuda = pytest.importorskip("numba.cuda")
from numba.core import config  # noqa: E402

if not config.ENABLE_CUDASIM and not cuda.is_available():
    pytest.skip("no CUDA GPU and the CUDA simulator is off", allow_module_level=True)

from test_cuda_semantics import _count_host_copies, host  # noqa: E402

import numbanorm as nbn  # noqa: E402
import numbanorm.backends.cuda as cb  # noqa: E402


@pytest.fixture
def launches(monkeypatch):
    seen = []
    orig = cb._launch
    monkeypatch.setattr(cb, "_launch", lambda k, *a: seen.append(k.__name__) or orig(k, *a))
    return seen


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("op", ["layer_norm", "rms_norm", "layer_norm_2d", "layer_norm_w_only"])
def test_row_ops_with_device_parameters_copy_nothing_to_the_host(op, dtype, monkeypatch, rng, launches):
    x = (rng.standard_normal((4, 3, 6)) * 2 + 1).astype(dtype)
    ns = (3, 6) if op == "layer_norm_2d" else (6,)
    w, b = (rng.standard_normal(ns).astype(dtype) for _ in range(2))
    f = nbn.rms_norm if op == "rms_norm" else nbn.layer_norm
    args = (w,) if op in ("rms_norm", "layer_norm_w_only") else (w, b)
    d_args = tuple(cuda.to_device(a) for a in args)
    d = cuda.to_device(x)
    n = _count_host_copies(monkeypatch)
    y = f(d, ns, *d_args)
    assert n == {"d2h": 0, "sync": 0}
    # each device parameter cast into row_norm's float64 array on the device
    assert [k[:5] for k in launches] == ["_copy"] * len(args) + ["_row_"]
    got = host(y)
    np.testing.assert_array_equal(got, host(f(cuda.to_device(x), ns, *args)))  # host parameters: same bits
    tol = 2e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, f(x, ns, *args), rtol=tol, atol=tol)
    for a, da in zip(args, d_args, strict=True):
        np.testing.assert_array_equal(host(da), a)  # the user's parameters untouched


def test_device_parameters_in_another_dtype_round_as_the_host_path(rng):
    """float64 device weights of a float32 x are rounded to float32 first,
    as host float64 weights are (the kernel computes with x's dtype's
    parameters)."""
    x = rng.standard_normal((3, 8)).astype(np.float32)
    w = rng.standard_normal(8) * (1 + 1e-9)
    b = rng.standard_normal(8)
    y = host(nbn.layer_norm(cuda.to_device(x), 8, cuda.to_device(w), cuda.to_device(b)))
    np.testing.assert_array_equal(y, host(nbn.layer_norm(cuda.to_device(x), 8, w, b)))


def test_device_parameters_are_checked(rng):
    d = cuda.to_device(rng.standard_normal((3, 8)).astype(np.float32))
    with pytest.raises(ValueError, match="weight must have shape"):
        nbn.layer_norm(d, 8, cuda.to_device(np.ones(7, np.float32)))
    with pytest.raises(ValueError, match="bias must have shape"):
        nbn.layer_norm(d, 8, cuda.to_device(np.ones(8, np.float32)), cuda.to_device(np.ones(9, np.float32)))


def test_strided_device_parameters(rng, monkeypatch):
    """A strided device weight (every other element of a longer array) is
    gathered on the device."""
    x = rng.standard_normal((5, 6))
    wl = rng.standard_normal(12)
    n = _count_host_copies(monkeypatch)
    y = nbn.layer_norm(cuda.to_device(x), 6, cuda.to_device(wl)[::2])
    assert n == {"d2h": 0, "sync": 0}
    np.testing.assert_allclose(host(y), nbn.layer_norm(x, 6, wl[::2]), rtol=1e-12, atol=1e-12)


def test_row_params_shapes():
    """row_norm's parameter array: (S,) or (RW, S), None as ones/zeros of
    the other's shape, S dividing D; mixed host and device."""
    wb = cb._row_params(None, None, 6)
    assert wb.shape == (2, 1, 1) and wb.copy_to_host().ravel().tolist() == [1.0, 0.0]
    wb = cb._row_params(cuda.to_device(np.arange(3.0)), None, 6).copy_to_host()
    np.testing.assert_array_equal(wb, [[[0.0, 1.0, 2.0]], [[0.0, 0.0, 0.0]]])
    wb = cb._row_params(np.ones((2, 3)), cuda.to_device(np.full((2, 3), 5.0, np.float32)), 6).copy_to_host()
    np.testing.assert_array_equal(wb, [np.ones((2, 3)), np.full((2, 3), 5.0)])
    with pytest.raises(ValueError, match="S dividing D=7"):
        cb._row_params(np.ones(3), None, 7)
    with pytest.raises(ValueError, match="must be"):
        cb._row_params(np.ones(3), np.ones(2), 6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("op", ["instance_norm", "group_norm", "instance_norm_w_only", "group_norm_b_only"])
def test_channels_first_groups_with_device_weights_take_the_row_kernel(op, dtype, monkeypatch, rng, launches):
    """Channels-first instance and group norm with device weights run as
    rows (one read of x), as with host weights, not the statistics-then-apply
    path; nothing comes to the host."""
    C = 6
    x = (rng.standard_normal((3, C, 5, 4)) * 3 - 2).astype(dtype)
    w, b = rng.standard_normal(C), rng.standard_normal(C)
    w = None if op.endswith("b_only") else w
    b = None if op.endswith("w_only") else b

    def call(a, w, b):
        if op.startswith("group"):
            return nbn.group_norm(a, 3, w, b)
        return nbn.instance_norm(a, weight=w, bias=b)

    dw, db = (None if a is None else cuda.to_device(a) for a in (w, b))
    d = cuda.to_device(x)
    n = _count_host_copies(monkeypatch)
    y = call(d, dw, db)
    assert n == {"d2h": 0, "sync": 0}
    assert launches == ["_copy2"] * ((w is not None) + (b is not None)) + ["_row_layer"]
    got = host(y)
    np.testing.assert_array_equal(got, host(call(cuda.to_device(x), w, b)))  # host weights: same bits
    tol = 2e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, call(x, w, b), rtol=tol, atol=tol)
