"""RMS norm and the 2-norm write ``x * (rstd * w)``: no mean, no bias."""

from __future__ import annotations

import numpy as np
import pytest

import numbanorm as nbn
from numbanorm.backends.cpu import _intrinsics as intr

# (shape, what takes it): the small serial kernel, short rows (2-D
# indexing), long rows (a row view per row, affine_row), few long rows
ROW_SHAPES = [((16, 64), "small"), ((96, 1024), "short"), ((24, 4096), "long"), ((2, 40000), "segments")]


def _with_zeros(shape, dtype, rng):
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    x[:, 1] = -0.0
    x[:, 2] = 0.0
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,path", ROW_SHAPES)
def test_rms_norm_is_x_times_rstd_times_w(shape, path, dtype):
    rng = np.random.default_rng(3)
    x = _with_zeros(shape, dtype, rng)
    D = shape[-1]
    w = rng.uniform(0.5, 1.5, D).astype(dtype)
    w[2] = -1.0  # +0.0 * -1 is -0.0
    for weight in (w, None):
        y, rstd = nbn.rms_norm(x, D, weight=weight, return_stats=True)
        y2 = nbn.rms_norm(x, D, weight=weight)  # the shortcut, same kernels
        ref_w = np.ones(D, dtype) if weight is None else w
        # in x's dtype: rstd rounded to it, times w, times x (the row kernels'
        # arithmetic exactly; the small kernel forms it in float64 and rounds once)
        ref = x * (rstd.astype(dtype) * ref_w)
        if path == "small":
            ref = (x.astype(np.float64) * (rstd.astype(np.float64) * ref_w)).astype(dtype)
            np.testing.assert_allclose(y, ref, rtol=4 * np.finfo(dtype).eps, atol=0)
        else:
            np.testing.assert_array_equal(y, ref)
        np.testing.assert_array_equal(y2, y)
        # zeros keep their sign as in x * (rstd * w) (torch's too): the form
        # ``(x - 0) * a + 0`` would make every zero +0.0
        zero = y == 0
        assert zero.any()
        np.testing.assert_array_equal(np.signbit(y[zero]), np.signbit(ref[zero]))
        assert np.signbit(y[:, 1]).all()  # -0.0 times a positive weight
        assert np.signbit(y[:, 2]).all() == (weight is not None)  # +0.0 times -1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,path", ROW_SHAPES)
def test_lp_normalize_keeps_the_sign_of_zeros(shape, path, dtype):
    x = _with_zeros(shape, dtype, np.random.default_rng(4))
    y = nbn.lp_normalize(x)
    assert np.signbit(y[:, 1]).all() and not np.signbit(y[:, 2]).any()
    n = np.sqrt((x.astype(np.float64) ** 2).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(y, x / n, rtol=8 * np.finfo(dtype).eps, atol=0)


@pytest.mark.skipif(intr._MINCORE is None, reason="no mincore on this platform")
def test_rms_norm_pipelined_kernel_reads_no_bias():
    # rows without weights into a reused, resident buffer of >= 16 MiB take
    # the pipelined kernel (streaming stores): the same form there
    x = _with_zeros((1024, 4096), np.float32, np.random.default_rng(5))
    out = np.ones_like(x)  # written: resident
    y, rstd = nbn.rms_norm(x, 4096, out=out, return_stats=True)
    assert y is out
    np.testing.assert_array_equal(y, x * rstd.astype(np.float32))
    assert np.signbit(y[:, 1]).all() and not np.signbit(y[:, 2]).any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("D", [16, 64, 1024])
def test_lp_normalize_short_rows_leave_nan_out_of_the_norm(monkeypatch, dtype, D):
    # threaded 2-norms of short rows take the short-row code (2-D indexing,
    # no row views: 0.62-0.79x the time, NOTES.md section 34e), with
    # row_pnorm's NaN rule: a NaN is left out of its row's norm
    from numbanorm.backends.cpu import rows

    flags = []
    run = rows.run

    def spy(kernel, ntask, *a, **f):
        flags.append(f)
        return run(kernel, ntask, *a, **f)

    monkeypatch.setattr(rows, "run", spy)
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((65536 // D, D)) * 3 + 1).astype(dtype)
    x[3, 1] = np.nan
    x[4, :] = np.nan  # no value left: norm 0, then eps
    x[5, 2] = np.inf
    x[6, :] = 0.0
    y = nbn.lp_normalize(x)
    assert flags and all(f.get("short") for f in flags), flags
    xd = x.astype(np.float64)
    n = np.sqrt(np.nansum(xd * xd, axis=1, keepdims=True))
    with np.errstate(invalid="ignore"):
        ref = xd / np.maximum(n, 1e-12)
    np.testing.assert_allclose(y, ref, rtol=4 * np.finfo(dtype).eps, atol=0)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ref))
    assert np.isnan(y[4]).all() and (y[6] == 0).all()
    # p other than 2 keeps the row views (row_pnorm): same rule
    flags.clear()
    y1 = nbn.lp_normalize(x, p=1.0)
    assert flags and not any(f.get("short") for f in flags), flags
    n1 = np.nansum(np.abs(xd), axis=1, keepdims=True)  # (summed in another order: 16 eps)
    with np.errstate(invalid="ignore"):
        np.testing.assert_allclose(y1, xd / np.maximum(n1, 1e-12), rtol=16 * np.finfo(dtype).eps, atol=0)
