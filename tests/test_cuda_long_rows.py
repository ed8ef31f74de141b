"""Rows past the registers of the CUDA row kernels: the long-row kernels.

``cuda.row_norm`` keeps a row in the registers of its threads while it fits
(``G x nreg``); a longer row takes a block of ``ROW_LONG`` threads
(``_row_long_*``): the statistics by chunks of ``nreg`` loads per thread
(layer norm: each chunk's corrected two-pass, Chan-merged with the mean
carried as an unevaluated sum), then the output pass re-reading the row.

In the simulator (no GPU) the launch sizes are patched small so that rows
of a few hundred elements take several chunks of 8 threads; the kernels'
chunk stays their compiled ``_NREG`` (32) or ``_NREG_P`` (16) values.
Compared with the CPU backend (numbanorm's own exact kernels) and with
float64 NumPy.
"""

from __future__ import annotations

import numpy as np
import pytest

cuda = pytest.importorskip("numba.cuda")
from numba.core import config  # noqa: E402

SIM = bool(config.ENABLE_CUDASIM)
if not SIM and not cuda.is_available():
    pytest.skip("no CUDA GPU and the CUDA simulator is off", allow_module_level=True)

import numbanorm as nbn  # noqa: E402
import numbanorm.backends._cuda_kernels as K  # noqa: E402
import numbanorm.backends.cuda as cb  # noqa: E402

nan_inputs = pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")


@pytest.fixture
def small(monkeypatch):
    """Row groups of at most 8 threads (8 x 32 = 256 values in registers);
    longer rows: blocks of 8 threads (simulator), the default on a GPU."""
    if SIM:
        for name, val in dict(
            ROW_GROUP=4, ROW_WARP_MAX_D=16, ROW_BLOCK=8, ROW_BLOCK_P=8, ROW_MAX_BLOCKS=2
        ).items():
            monkeypatch.setattr(cb, name, val)
    launches = []
    orig = cb._launch
    monkeypatch.setattr(cb, "_launch", lambda k, *a: launches.append((k.__name__, a[1])) or orig(k, *a))
    return launches


def _host(a):
    return a.copy_to_host() if hasattr(a, "copy_to_host") else np.asarray(a)


def _long_d(base):
    """A length past the registers of the largest row group at these launch
    sizes (the simulator's 8 threads x 32, a GPU's 256 x 32)."""
    return base if SIM else 8192 + base


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("op", ["layer", "rms"])
def test_layer_and_rms_norm_long_rows_match_the_cpu(op, dtype, small, rng):
    D = _long_d(700)  # 3 chunks of 8 x 32 (the last one ragged)
    x = (rng.standard_normal((5, D)) * 2 + 3).astype(dtype)
    w = rng.standard_normal(D).astype(dtype)
    b = rng.standard_normal(D).astype(dtype)
    f = nbn.layer_norm if op == "layer" else nbn.rms_norm
    args = (w, b) if op == "layer" else (w,)
    got = f(cuda.to_device(x), D, *args, return_stats=True)
    want = f(x, D, *args, return_stats=True)  # layer: (y, mean, rstd); rms: (y, rstd)
    d64 = "_row_long_layer_d" if dtype == np.float64 and op == "layer" else f"_row_long_{op}"
    assert [k for k, _ in small] == [d64]
    G = cb.long_row_threads()
    assert small[0][1] == (G, 1)
    tol = {np.float16: 4e-3, np.float32: 2e-6, np.float64: 1e-12}[dtype]
    y = _host(got[0])
    assert y.dtype == dtype
    np.testing.assert_allclose(y.astype(np.float64), want[0].astype(np.float64), rtol=tol, atol=tol)
    for a, e in zip(got[1:], want[1:], strict=True):
        np.testing.assert_allclose(_host(a), e, rtol=max(tol, 1e-12), atol=tol)


@pytest.mark.parametrize("p", [1.0, 2.0, np.inf, 3.5])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@nan_inputs
def test_lp_normalize_long_rows_match_the_cpu(p, dtype, small, rng):
    D = _long_d(600)
    x = (rng.standard_normal((4, D)) * 3).astype(dtype)
    x[0, 11] = np.nan  # left out of the norm, kept in its place
    x[2] = 0.0  # a zero row: x / eps
    y = _host(nbn.lp_normalize(cuda.to_device(x), p, axis=-1))
    assert [k for k, _ in small] == ["_row_long_lp" if p in (1.0, 2.0, np.inf) else "_row_long_lpp"]
    ye = nbn.lp_normalize(x, p, axis=-1)
    tol = 2e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, ye, rtol=tol, atol=1e-15)
    assert np.isnan(y[0, 11]) and np.isnan(y).sum() == 1
    assert (y[2] == 0).all()


def test_group_and_instance_norm_long_rows_weights_by_segment(small, rng):
    """Instance and group norm (channels first) run as rows whose weights
    come by segment: a group of C/G channels, each of HW elements."""
    N, C, G = 2, 6, 3
    HW = _long_d(300) // 2  # a group row: 2 channels x HW, past the registers
    x = rng.standard_normal((N, C, HW)) * 4 - 1
    w, b = rng.standard_normal(C), rng.standard_normal(C)
    y = _host(nbn.group_norm(cuda.to_device(x), G, w, b))
    assert [k for k, _ in small] == ["_row_long_layer_d"]
    np.testing.assert_allclose(y, nbn.group_norm(x, G, w, b), rtol=1e-12, atol=1e-12)
    small.clear()
    x1 = rng.standard_normal((N, C, _long_d(500))) + 7
    y = _host(nbn.instance_norm(cuda.to_device(x1), weight=w, bias=b))
    assert [k for k, _ in small] == ["_row_long_layer_d"]
    np.testing.assert_allclose(y, nbn.instance_norm(x1, weight=w, bias=b), rtol=1e-12, atol=1e-12)


def test_long_rows_large_mean_stay_exact(small, rng):
    """Data far from zero (1e8 + N(0, 1)): each chunk's corrected two-pass
    and the merges with the mean's residual keep the variance to float64
    rounding (E[x^2] - E[x]^2 would lose every digit)."""
    D = _long_d(1000)
    x = 1e8 + rng.standard_normal((3, D))
    out = cuda.device_array(x.shape)
    m, r = map(cb.to_host, cb.row_norm(cuda.to_device(x), out, np.ones((1, 1)), np.zeros((1, 1)), 0.0, False))
    xl = x.astype(np.longdouble)
    mean = xl.mean(axis=1)
    var = ((xl - mean[:, None]) ** 2).mean(axis=1)
    np.testing.assert_allclose(m, mean.astype(np.float64), rtol=1e-15)
    np.testing.assert_allclose(r, (1 / np.sqrt(var)).astype(np.float64), rtol=1e-12)
    want = ((xl - mean[:, None]) / np.sqrt(var[:, None])).astype(np.float64)
    np.testing.assert_allclose(out.copy_to_host(), want, atol=1e-8)


@nan_inputs
def test_long_rows_nan_and_constant_rows(small, rng):
    """NaN stays in its row; a constant row with eps = 0 gives rstd inf (the
    short-row kernels' rule), one with eps > 0 gives zeros."""
    D = _long_d(400)
    x = rng.standard_normal((4, D))
    x[1, 5] = np.nan
    x[2] = 3.0
    x[3] = 3.0
    out = cuda.device_array(x.shape)
    one, zero = np.ones((1, 1)), np.zeros((1, 1))
    m, r = map(cb.to_host, cb.row_norm(cuda.to_device(x[:3]), out[:3], one, zero, 0.0, False))
    y = out.copy_to_host()[:3]
    assert np.isnan(y[1]).all() and not np.isnan(y[0]).any()
    assert np.isinf(r[2])
    out2 = cuda.device_array((1, D))
    cb.row_norm(cuda.to_device(x[3:]), out2, np.ones((1, 1)), np.zeros((1, 1)), 1e-5, False)
    assert (out2.copy_to_host() == 0).all()


def test_long_rows_in_place_and_grid_stride(small, rng):
    """out aliasing x (each chunk is read before it is written, and the
    statistics pass reads the row before the output pass writes it), and
    more rows than the capped grid (grid-stride over rows)."""
    D = _long_d(300)
    x = rng.standard_normal((5, D)).astype(np.float32)
    d = cuda.to_device(x)
    nbn.layer_norm(d, D, out=d)
    np.testing.assert_allclose(d.copy_to_host(), nbn.layer_norm(x, D), rtol=2e-6, atol=2e-6)
    if SIM:
        assert small[-1][0] == "_row_long_layer" and cb.ROW_MAX_BLOCKS < 5


def test_long_row_threads_is_a_power_of_two_within_the_block(monkeypatch):
    monkeypatch.setattr(cb, "ROW_LONG", 128)
    monkeypatch.setattr(cb, "ROW_BLOCK", 256)
    assert cb.long_row_threads() == 128
    monkeypatch.setattr(cb, "ROW_BLOCK", 96)
    assert cb.long_row_threads() == 64
    monkeypatch.setattr(cb, "ROW_LONG", 1024)
    monkeypatch.setattr(cb, "ROW_BLOCK", 1024)
    assert cb.long_row_threads() == K._MAX_BLOCK_LONG
