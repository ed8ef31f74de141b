"""The CUDA backend's primitives against plain float64 NumPy, one by one.

Runs in numba's CUDA simulator when there is no GPU (tests/conftest.py sets
NUMBA_ENABLE_CUDASIM=1), on tiny shapes with tiny blocks so that multi-block,
split-row + merge and grid-stride paths all run.  On a real GPU
(``NUMBA_ENABLE_CUDASIM=0 python -m pytest tests/test_cuda*.py``) every test
also runs with the default launch sizes, which is what exercises the warp
shuffle paths the simulator cannot run.
"""

from __future__ import annotations

import contextvars
import threading

import numpy as np
import pytest

cuda = pytest.importorskip("numba.cuda")
from numba.core import config  # noqa: E402

SIM = bool(config.ENABLE_CUDASIM)
if not SIM and not cuda.is_available():
    pytest.skip("no CUDA GPU and the CUDA simulator is off", allow_module_level=True)

import numbanorm.backends._cuda_kernels as K  # noqa: E402
import numbanorm.backends.cuda as cb  # noqa: E402

F16, F32, F64 = np.float16, np.float32, np.float64

# The simulator runs kernels on NumPy scalars, which warn on inf - inf or
# 0 * inf (the project runs pytest -W error); a GPU computes the same NaN
# silently.  Only tests that feed NaN/Inf on purpose allow these warnings.
nan_inputs = pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")

# Small launch sizes: several blocks per row (BLOCKS_TARGET > rows), several
# column tiles (THREADS < K), row_norm with 4-thread "warps" up to D = 16 and
# 8-thread blocks per row beyond, grid-stride loops (capped grids).
SMALL = dict(
    THREADS=16,
    WARP_LAUNCH=8,
    BLOCKS_TARGET=4,
    ROW_GROUP=4,
    ROW_WARP_MAX_D=16,
    ROW_BLOCK=8,
    ROW_MAX_BLOCKS=2,
    APPLY_MAX_BLOCKS=4,
)


@pytest.fixture(autouse=True, params=["small"] if SIM else ["small", "default"])
def launch(request, monkeypatch):
    """Small blocks everywhere (the simulator); on a GPU also the real defaults."""
    if request.param == "small":
        for name, val in SMALL.items():
            monkeypatch.setattr(cb, name, val)
    return request.param


def dev(a):
    return cuda.to_device(np.ascontiguousarray(a))


def ref_moments(x, skipnan):
    """float64 NumPy reference: (count, mean, M2, min, max) over axis 1."""
    x = x.astype(np.float64)
    if skipnan:
        ok = ~np.isnan(x)
        c = ok.sum(1).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            m = np.where(c > 0, np.nansum(x, 1) / np.maximum(c, 1), 0.0)
        q = np.nansum(np.where(ok, (x - m[:, None, :]) ** 2, 0.0), 1)
        lo = np.where(c > 0, np.nanmin(np.where(ok, x, np.inf), 1), np.inf)
        hi = np.where(c > 0, np.nanmax(np.where(ok, x, -np.inf), 1), -np.inf)
        return c, m, q, lo, hi
    m = x.mean(1)
    with np.errstate(invalid="ignore"):
        q = ((x - m[:, None, :]) ** 2).sum(1)
    return np.full(m.shape, float(x.shape[1])), m, q, x.min(1), x.max(1)


def check_moments(got, want, rtol=1e-12):
    got, want = got[:5], want[:5]  # (the sixth array, the mean residual: test_backend_contract.py)
    names = ("count", "mean", "m2", "min", "max")[: len(got)]
    for name, g, w in zip(names, got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=rtol, atol=1e-12, err_msg=name)
        assert g.dtype == np.float64 and isinstance(g, np.ndarray)


# ------------------------------------------------------------------ moments

SHAPES = [(3, 37, 5), (2, 300, 1), (1, 5, 40), (4, 1, 1), (2, 70, 33), (5, 7, 1)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_moments_float64(shape, rng):
    x = rng.standard_normal(shape) * 3 + 1
    check_moments(cb.moments(dev(x), False, True), ref_moments(x, False))


@pytest.mark.parametrize("dtype", [F16, F32], ids=str)
@pytest.mark.parametrize("shape", [(3, 37, 5), (2, 300, 1)], ids=str)
def test_moments_low_precision_inputs(shape, dtype, rng):
    # the reference widens the same low-precision values: float64 accumulation
    # inside the kernel makes the statistics agree to float64 rounding
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    check_moments(cb.moments(dev(x), False, True), ref_moments(x, False))


def test_moments_without_minmax_returns_none(rng):
    x = rng.standard_normal((2, 9, 3))
    c, m, q, lo, hi, _ = cb.moments(dev(x), True, False)
    assert lo is None and hi is None
    check_moments((c, m, q), ref_moments(x, True)[:3])


def test_moments_split_rows_are_merged(launch, rng, monkeypatch):
    """The split-R path (partials + Chan merge kernel) equals one block per row."""
    R = 300 if launch == "small" else 3000  # long enough to split at either size
    x = rng.standard_normal((2, R, 1)) + 50
    monkeypatch.setattr(cb, "BLOCKS_TARGET", 1)
    assert cb._tiling(2, R, 1, 4)[3] == 1
    one = cb.moments(dev(x), False, True)
    monkeypatch.setattr(cb, "BLOCKS_TARGET", 8)
    assert cb._tiling(2, R, 1, 4)[3] > 1  # several blocks per row really happen
    many = cb.moments(dev(x), False, True)
    check_moments(many, one, rtol=1e-13)


@nan_inputs
@pytest.mark.parametrize("skipnan", [False, True])
def test_moments_nan_and_inf_stay_in_their_group(skipnan, rng):
    x = rng.standard_normal((3, 37, 5))
    x[0, 3, 1] = np.nan
    x[0, 30, 1] = np.nan
    x[1, 36, 4] = np.inf
    x[2, :, 2] = np.nan  # a group that is all NaN
    got = cb.moments(dev(x), skipnan, True)
    want = ref_moments(x, skipnan)
    clean = np.ones((3, 5), bool)
    clean[0, 1] = clean[1, 4] = clean[2, 2] = False
    for g, w in zip(got[:5], want, strict=True):
        np.testing.assert_allclose(g[clean], w[clean], rtol=1e-12, atol=1e-12)
    c, m, q, lo, hi, _ = got
    # an Inf mean becomes NaN once Chan's merge subtracts it (inf - inf): either
    # way the group is non-finite and no other group is touched
    assert not np.isfinite(m[1, 4]) and np.isnan(q[1, 4]) and hi[1, 4] == np.inf
    if skipnan:
        assert c[0, 1] == 35 and np.isclose(m[0, 1], want[1][0, 1], rtol=1e-12)
        assert c[2, 2] == 0 and m[2, 2] == 0 and q[2, 2] == 0
        assert lo[2, 2] == np.inf and hi[2, 2] == -np.inf
    else:
        assert c[0, 1] == 37
        for a in (m, q, lo, hi):
            assert np.isnan(a[0, 1]) and np.isnan(a[2, 2])


def test_moments_empty():
    c, m, q, lo, hi, _ = cb.moments(dev(np.zeros((2, 0, 3))), False, True)
    assert c.shape == (2, 3) and not c.any() and not m.any() and not q.any()
    assert (lo == np.inf).all() and (hi == -np.inf).all()
    assert cb.moments(dev(np.zeros((0, 4, 3))), False, False)[0].shape == (0, 3)


# -------------------------------------------------------------------- apply


@pytest.mark.parametrize("dtype", [F16, F32, F64], ids=str)
def test_apply(dtype, rng):
    x = rng.standard_normal((3, 37, 5)).astype(dtype)
    c, s, b = (rng.standard_normal((3, 5)) for _ in range(3))
    out = cuda.device_array(x.shape, dtype)
    cb.apply(dev(x), out, c, s, b)
    want = ((x.astype(np.float64) - c[:, None]) * s[:, None] + b[:, None]).astype(dtype)
    tol = {F16: 2e-3, F32: 1e-6, F64: 1e-13}[dtype]
    np.testing.assert_allclose(out.copy_to_host(), want, rtol=tol, atol=tol)


@nan_inputs
def test_apply_in_place_clip_nan(rng):
    x = rng.standard_normal((2, 11, 3)) * 4
    x[1, 5, 2] = np.nan
    d = dev(x)
    cb.apply(d, d, np.zeros((2, 3)), np.ones((2, 3)), np.zeros((2, 3)), -1.0, 1.0)
    want = np.clip(x, -1, 1)
    np.testing.assert_array_equal(d.copy_to_host(), want)  # NaN kept by clip too
    assert np.isnan(d.copy_to_host()[1, 5, 2])


def test_apply_integer_input_float_output(rng):
    x = rng.integers(-5, 5, (2, 6, 1))
    out = cuda.device_array(x.shape, np.float64)
    cb.apply(dev(x), out, np.full((2, 1), 0.5), np.full((2, 1), 2.0), np.zeros((2, 1)))
    np.testing.assert_array_equal(out.copy_to_host(), (x - 0.5) * 2.0)


# ----------------------------------------------------------------- row_norm


def ref_row_norm(x, w, b, eps, rms):
    x = x.astype(np.float64)
    if rms:
        m = np.zeros(x.shape[0])
        r = 1 / np.sqrt((x**2).mean(1) + eps)
    else:
        m = x.mean(1)
        r = 1 / np.sqrt(x.var(1) + eps)
    return (x - m[:, None]) * r[:, None] * w + b, m, r


# D <= 16: 4-thread groups (warp-per-row path), D > 16: block-per-row
@pytest.mark.parametrize("D", [1, 2, 15, 16, 17, 33, 70])
@pytest.mark.parametrize("rms", [False, True], ids=["layer", "rms"])
def test_row_norm(D, rms, rng):
    x = rng.standard_normal((5, D)) * 2 + 3
    w, b = rng.standard_normal(D), rng.standard_normal(D)
    out = cuda.device_array(x.shape, np.float64)
    m, r = map(cb.to_host, cb.row_norm(dev(x), out, w, b, 1e-5, rms))
    y, mw, rw = ref_row_norm(x, w, b, 1e-5, rms)
    np.testing.assert_allclose(out.copy_to_host(), y, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(m, mw, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(r, rw, rtol=1e-12)


@pytest.mark.parametrize("dtype", [F16, F32], ids=str)
def test_row_norm_low_precision_in_place(dtype, rng):
    x = (rng.standard_normal((4, 20)) + 1).astype(dtype)
    d = dev(x)
    m, r = cb.row_norm(d, d, np.ones(20), np.zeros(20), 1e-5, False)  # out aliases x
    y, mw, rw = ref_row_norm(x, np.ones(20), np.zeros(20), 1e-5, False)
    tol = 4e-3 if dtype == F16 else 2e-6
    np.testing.assert_allclose(d.copy_to_host(), y, atol=tol)
    np.testing.assert_allclose(m, mw, rtol=1e-12)


@pytest.mark.skipif(not SIM, reason="register count is frozen at compile time on a GPU")
def test_row_norm_rows_longer_than_registers(rng, monkeypatch):
    """Rows that do not fit in the group's registers are re-read from memory."""
    monkeypatch.setattr(K, "_NREG", 2)
    x = rng.standard_normal((3, 40))
    for D in (9, 40):  # 4 threads x 2 registers < 9; 8 threads x 2 < 40
        out = cuda.device_array((3, D), np.float64)
        m, r = map(cb.to_host, cb.row_norm(dev(x[:, :D]), out, np.ones(D), np.zeros(D), 1e-5, False))
        y = ref_row_norm(x[:, :D], np.ones(D), np.zeros(D), 1e-5, False)[0]
        np.testing.assert_allclose(out.copy_to_host(), y, rtol=1e-10, atol=1e-12)


@pytest.mark.skipif(SIM, reason="block-per-row at default sizes needs D > 1024: GPU only")
def test_row_norm_long_rows_default_sizes(rng):
    for D in (1025, 3000, 9000):  # block-per-row, in registers up to 8192, re-read beyond
        x = rng.standard_normal((3, D)) + 5
        out = cuda.device_array(x.shape, np.float64)
        cb.row_norm(dev(x), out, np.ones(D), np.zeros(D), 1e-5, False)
        y = ref_row_norm(x, np.ones(D), np.zeros(D), 1e-5, False)[0]
        np.testing.assert_allclose(out.copy_to_host(), y, rtol=1e-10, atol=1e-10)


@nan_inputs
def test_row_norm_nan_stays_in_its_row(rng):
    x = rng.standard_normal((4, 10))
    x[2, 3] = np.nan
    out = cuda.device_array(x.shape, np.float64)
    cb.row_norm(dev(x), out, np.ones(10), np.zeros(10), 1e-5, False)
    y = out.copy_to_host()
    assert np.isnan(y[2]).all() and np.isfinite(np.delete(y, 2, 0)).all()


def test_row_norm_empty():
    z = dev(np.zeros((0, 4)))
    m, r = map(cb.to_host, cb.row_norm(z, z, np.ones(4), np.zeros(4), 1e-5, False))
    assert m.shape == r.shape == (0,)


# ----------------------------------------------------------- accuracy bar


def test_accuracy_float32_large_mean(rng):
    """float32 data 1e4 + randn: normalized output within 1e-5 of float64 (the bar)."""
    x = (1e4 + rng.standard_normal((2, 300, 1))).astype(F32)
    c, m, q, _, _, _ = cb.moments(dev(x), False, False)
    r = 1 / np.sqrt(q / c)
    out = cuda.device_array(x.shape, F32)
    cb.apply(dev(x), out, m, r, np.zeros_like(m))
    x64 = x.astype(np.float64)
    want = (x64 - x64.mean(1, keepdims=True)) / x64.std(1, keepdims=True)
    assert np.abs(out.copy_to_host() - want).max() < 1e-5
    # a million-fold mean: statistics still to float64 rounding
    x = (1e6 + rng.standard_normal((1, 64, 3))).astype(F32)
    check_moments(cb.moments(dev(x), False, True), ref_moments(x, False), rtol=1e-9)


def test_accuracy_row_norm_float32_large_mean(rng):
    x = (1e4 + rng.standard_normal((3, 50))).astype(F32)
    out = cuda.device_array(x.shape, F32)
    cb.row_norm(dev(x), out, np.ones(50), np.zeros(50), 0.0, False)
    x64 = x.astype(np.float64)
    want = (x64 - x64.mean(1, keepdims=True)) / x64.std(1, keepdims=True)
    assert np.abs(out.copy_to_host() - want).max() < 1e-5


# -------------------------------------------------------------------- pnorm


@pytest.mark.parametrize("p", [1.0, 2.0, np.inf, 0.5, 3.0])
@pytest.mark.parametrize("shape", [(3, 37, 5), (2, 300, 1)], ids=str)
def test_pnorm(shape, p, rng):
    x = rng.standard_normal(shape)
    got = cb.pnorm(dev(x), p)
    want = np.abs(x).max(1) if np.isinf(p) else (np.abs(x) ** p).sum(1) ** (1 / p)
    np.testing.assert_allclose(got, want, rtol=1e-12)


@nan_inputs
def test_pnorm_nan_and_float16(rng):
    x = rng.standard_normal((2, 9, 3)).astype(F16)
    x[1, 4, 0] = np.nan
    for p in (2.0, np.inf):
        got = cb.pnorm_nan(dev(x), p, skipnan=False)  # NaN propagated on request
        assert np.isnan(got[1, 0]) and np.isfinite(np.delete(got.ravel(), 3)).all()
        x64 = x.astype(np.float64)
        want = np.abs(x64).max(1) if np.isinf(p) else np.sqrt((x64**2).sum(1))
        ok = ~np.isnan(want)
        np.testing.assert_allclose(got[ok], want[ok], rtol=1e-12)
        skipped = cb.pnorm(dev(x), p)  # the contract's default: NaN left out of the norm
        want = np.nanmax(np.abs(x64), 1) if np.isinf(p) else np.sqrt(np.nansum(x64**2, 1))
        np.testing.assert_allclose(skipped, want, rtol=1e-12)


# ------------------------------------------------------------------ helpers


@pytest.mark.parametrize(
    "index",
    [np.s_[::2], np.s_[:, ::-1], np.s_[1:, :, ::2], np.s_[:, :, :, 1:3], np.s_[..., ::3]],
    ids=["1d", "2d", "3d", "4d", "4d-last"],
)
def test_ascontiguous_copies_strided_views(index, rng):
    base = rng.standard_normal((3, 4, 5, 6))
    if index == np.s_[::2]:
        base = base.ravel()
    elif index == np.s_[:, ::-1]:
        base = base.reshape(12, 30)
    elif index == np.s_[1:, :, ::2]:
        base = base.reshape(3, 20, 6)
    view = dev(base)[index]
    assert not view.is_c_contiguous()
    c = cb.ascontiguous(view)
    assert c.is_c_contiguous()
    np.testing.assert_array_equal(c.copy_to_host(), base[index])


def test_ascontiguous_and_reshape_are_zero_copy_for_contiguous(rng):
    d = dev(rng.standard_normal((2, 3, 4)))
    assert cb.ascontiguous(d) is d
    r = cb.reshape(d, (6, 4))
    cb.copy_into(r, np.zeros((6, 4)))  # writes through the view
    assert not d.copy_to_host().any()


def test_host_round_trip_empty_wrap(rng):
    a = rng.standard_normal((3, 2))
    d = cb.from_host(a)
    np.testing.assert_array_equal(cb.to_host(d), a)
    assert cb.to_host(a) is a
    e = cb.empty((4, 5), F32, like=d)
    assert e.shape == (4, 5) and e.dtype == F32
    assert cb.wrap(e, like=d) is e
    assert cb.as_device(d) is d
    with pytest.raises(TypeError, match="CUDA array"):
        cb.as_device(a)


def test_copy_into_contiguous_and_strided(rng):
    d = dev(np.zeros((4, 6), F32))
    cb.copy_into(d, np.arange(24.0).reshape(4, 6))
    np.testing.assert_array_equal(d.copy_to_host(), np.arange(24.0).reshape(4, 6))
    col = d[:, 1]  # strided (4,) view
    cb.copy_into(col, np.full(4, -1.0))
    assert (d.copy_to_host()[:, 1] == -1).all() and (d.copy_to_host()[:, 0] == np.arange(0, 24, 6)).all()


def test_stream_context(rng):
    x = rng.standard_normal((2, 9, 3))
    s = cuda.stream()
    with cb.context(s):
        assert cb._stream() is s
        got = cb.moments(dev(x), False, False)
    assert cb._stream() == 0
    check_moments(got[:3], ref_moments(x, False)[:3])
    with cb.context(None):
        assert cb._stream() == 0
    with pytest.raises(TypeError, match="stream"):
        with cb.context(object()):
            pass


def test_stream_context_is_per_thread():
    s = cuda.stream()
    seen = []
    with cb.context(s):
        t = threading.Thread(target=lambda: seen.append(cb._stream()))
        t.start()
        t.join()
        assert contextvars.copy_context().run(cb._stream) is s
    assert seen == [0]


def test_missing_gpu_is_a_clear_runtime_error(monkeypatch):
    monkeypatch.setattr(cb, "SIMULATOR", False)
    monkeypatch.setattr(cb.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="no usable CUDA GPU.*NUMBA_ENABLE_CUDASIM"):
        cb._require_gpu()


# ------------------------------------------- warp shuffles, emulated (simulator)


class _WarpExchange:
    """Warp shuffles for the simulator: the 32 lanes of a warp meet at a barrier.

    Proves the *logic* of the shuffle reductions (which lanes combine, which
    lane holds the result, the cross-warp step); only a GPU proves that they
    compile and that the hardware shuffles behave the same."""

    def __init__(self):
        self.lock = threading.Lock()
        self.slots = {}
        self.calls = 0

    def _slot(self, key):
        with self.lock:
            if key not in self.slots:
                self.slots[key] = (threading.Barrier(32, timeout=60), [None] * 32)
            return self.slots[key]

    def shuffle(self, val, src_of):
        t = threading.current_thread()  # the simulator's BlockThread
        self.calls += 1
        lane = t.thread_id % 32
        barrier, vals = self._slot((tuple(t.blockIdx), t.thread_id // 32))
        vals[lane] = val
        barrier.wait()
        src = src_of(lane)
        got = vals[src] if 0 <= src < 32 else val  # out of range: own value, as on hardware
        barrier.wait()
        return got


@pytest.fixture
def emulated_shuffles(monkeypatch):
    from numba.cuda.simulator.kernelapi import FakeCUDAModule

    ex = _WarpExchange()
    monkeypatch.setattr(
        FakeCUDAModule, "shfl_down_sync", lambda self, m, v, d: ex.shuffle(v, lambda i: i + d), raising=False
    )
    monkeypatch.setattr(
        FakeCUDAModule, "shfl_xor_sync", lambda self, m, v, d: ex.shuffle(v, lambda i: i ^ d), raising=False
    )
    monkeypatch.setattr(K, "_HAVE_SHFL", True)
    for name, val in dict(THREADS=64, WARP_LAUNCH=32, ROW_GROUP=32, ROW_BLOCK=64, ROW_WARP_MAX_D=32).items():
        monkeypatch.setattr(cb, name, val)
    return ex


@pytest.mark.skipif(not SIM, reason="on a GPU the real shuffles run in every test")
def test_shuffle_reductions_emulated(emulated_shuffles, launch, rng):
    # moments, K == 1: TY = 64 -> two warps: warp merge, then the cross-warp merge
    x = rng.standard_normal((2, 600, 1)) * 2 + 7
    x[1, 17, 0] = -50.0  # min/max through the shuffles too
    assert cb._tiling(2, 600, 1, 4)[0] == (1, 64)
    check_moments(cb.moments(dev(x), False, True), ref_moments(x, False))
    assert emulated_shuffles.calls > 0  # the shuffle branch ran, not the shared-memory tree
    # row_norm: D = 20 warp-per-row (xor butterfly), D = 50 block-per-row (64 threads)
    for D, R in ((20, 3), (50, 2)):
        xr = rng.standard_normal((R, D)) + 2
        w, b = rng.standard_normal(D), rng.standard_normal(D)
        for rms in (False, True):
            out = cuda.device_array((R, D), np.float64)
            m, r = map(cb.to_host, cb.row_norm(dev(xr), out, w, b, 1e-5, rms))
            y, mw, rw = ref_row_norm(xr, w, b, 1e-5, rms)
            np.testing.assert_allclose(out.copy_to_host(), y, rtol=1e-10, atol=1e-10)
            np.testing.assert_allclose(r, rw, rtol=1e-12)
            assert emulated_shuffles.calls > 0
            emulated_shuffles.calls = 0
