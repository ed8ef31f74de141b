"""The public API on CUDA arrays: same results as the CPU path of the same call.

Inputs are ``numba.cuda.to_device`` arrays, so the tests run in numba's CUDA
simulator without a GPU (tests/conftest.py sets NUMBA_ENABLE_CUDASIM=1) and
unchanged on a real one (``NUMBA_ENABLE_CUDASIM=0 python -m pytest
tests/test_cuda*.py``).  Launch sizes are patched small so that the tiny shapes
still take multi-block and split-row + merge paths.
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
import numbanorm.backends.cuda as cb  # noqa: E402

F16, F32, F64 = np.float16, np.float32, np.float64
TOL = {F64: dict(rtol=1e-9, atol=1e-9), F32: dict(rtol=0, atol=2e-5), F16: dict(rtol=0, atol=4e-3)}

SMALL = dict(
    THREADS=16,
    WARP_LAUNCH=8,
    BLOCKS_TARGET=4,
    ROW_GROUP=4,
    ROW_WARP_MAX_D=8,
    ROW_BLOCK=8,
    ROW_MAX_BLOCKS=2,
    APPLY_MAX_BLOCKS=4,
)


@pytest.fixture(autouse=True)
def small_launch(request, monkeypatch):
    """Small launch sizes, so that tiny shapes take multi-block and merge
    paths (tests marked ``default_launch`` keep the module's own sizes: the
    launches a GPU gets)."""
    if request.node.get_closest_marker("default_launch"):
        return
    for name, val in SMALL.items():
        monkeypatch.setattr(cb, name, val)


# op name -> call; x is (N, C, L) = (2, 6, 7): C divisible by the 3 groups,
# layer/rms norm rows of 7 or 42 (warp-per-row and block-per-row paths).
OPS = {
    "batch_norm": lambda x: nbn.batch_norm(x, training=True, return_stats=True),
    "batch_norm_channels_last": lambda x: nbn.batch_norm(x, training=True, channel_axis=-1),
    "instance_norm": lambda x: nbn.instance_norm(x, return_stats=True),
    "layer_norm": lambda x: nbn.layer_norm(x, 7, return_stats=True),
    "layer_norm_2d": lambda x: nbn.layer_norm(x, (6, 7)),
    "group_norm": lambda x: nbn.group_norm(x, 3, return_stats=True),
    "rms_norm": lambda x: nbn.rms_norm(x, (6, 7), return_stats=True),
    "standardize": lambda x: nbn.standardize(x, axis=(0, 2), return_stats=True),
    "minmax_scale": lambda x: nbn.minmax_scale(x, (-1, 1), axis=0, clip=True),
    "lp_normalize": lambda x: nbn.lp_normalize(x, p=3.0, axis=1),
}


def host(a):
    return a.copy_to_host() if hasattr(a, "copy_to_host") else np.asarray(a)


def as_tuple(r):
    return r if isinstance(r, tuple) else (r,)


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("op", list(OPS))
def test_matches_cpu(op, dtype, rng):
    x = (rng.standard_normal((2, 6, 7)) * 3 + 2).astype(dtype)
    d = cuda.to_device(x)
    got = as_tuple(OPS[op](d))
    want = as_tuple(OPS[op](x.copy()))
    assert type(got[0]) is type(d)  # the input's array type comes back
    assert got[0].dtype == want[0].dtype == dtype
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(host(g), w, **TOL[dtype])
    np.testing.assert_array_equal(d.copy_to_host(), x)  # input not modified


@pytest.mark.default_launch
# (batch_norm's default-size path, moments over rows with warp shuffles and
# the rows apply, is test_cuda_semantics.py::test_warp_shuffle_paths and
# test_apply_kernels_by_column_count; here it cost ~27 s of emulated shuffles)
@pytest.mark.parametrize("op", [op for op in OPS if op != "batch_norm"])
def test_matches_cpu_at_default_launch_sizes(op, rng):
    """The launch sizes a GPU gets (256-thread blocks, warp-per-row rows)."""
    x = (rng.standard_normal((2, 6, 7)) * 3 + 2).astype(F32)
    got = as_tuple(OPS[op](cuda.to_device(x)))
    want = as_tuple(OPS[op](x.copy()))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(host(g), w, **TOL[F32])


@pytest.mark.parametrize("op", list(OPS))
def test_float16(op, rng):
    """float16 runs the streaming kernels' _h builds (more loads in flight
    per thread: _cuda_kernels.streaming)."""
    x = (rng.standard_normal((2, 6, 7)) + 1).astype(F16)
    got = as_tuple(OPS[op](cuda.to_device(x)))[0]
    want = as_tuple(OPS[op](x))[0]
    assert got.dtype == F16
    np.testing.assert_allclose(host(got).astype(F64), want.astype(F64), **TOL[F16])


@pytest.mark.parametrize("dtype", [F16, F32])
def test_streaming_kernels_whole_chunks_and_wide_columns(dtype, rng, monkeypatch):
    """Enough rows for whole chunks of every dtype's moments kernel (32 rows
    of float16 per thread, 16 of float32), 33 columns (the wide apply) and
    3 (the flat one), NaN skipped: against the CPU (standardize: moments
    and apply; lp_normalize: p-norm and apply)."""
    import numbanorm.backends._cuda_kernels as k

    picked = []
    real = k.streaming
    monkeypatch.setattr(k, "streaming", lambda name, isz: picked.append(name) or real(name, isz))
    for K in (33, 3):
        x = (rng.standard_normal((70, K)) * 2 + 5).astype(dtype)  # 2 splits of 35 rows
        x[7, 1] = np.nan
        d = cuda.to_device(x)
        for f in (lambda a: nbn.standardize(a, axis=0), lambda a: nbn.lp_normalize(a, p=3.0, axis=0)):
            got = host(f(d)).astype(F64)
            want = f(x).astype(F64)
            np.testing.assert_allclose(got, want, **TOL[dtype])
    assert {"_moments_partial", "_pnorm_partial", "_apply_flat", "_apply_wide"} <= set(picked)
    if dtype == F16:
        assert real("_apply_wide", 2) is k._apply_wide_h
        assert real("_moments_partial", 2) is k._moments_partial_h


def test_integer_input_gives_float64(rng):
    x = rng.integers(0, 9, (4, 5))
    got = nbn.standardize(cuda.to_device(x))
    assert got.dtype == F64
    np.testing.assert_allclose(host(got), nbn.standardize(x), **TOL[F64])


def test_affine_parameters_from_host_and_device(rng):
    x = rng.standard_normal((3, 6, 5))
    w, b = rng.standard_normal(6), rng.standard_normal(6)
    want = nbn.group_norm(x, 2, w, b)
    got = nbn.group_norm(cuda.to_device(x), 2, cuda.to_device(w), b)
    np.testing.assert_allclose(host(got), want, **TOL[F64])
    w2 = rng.standard_normal(5)
    got = nbn.layer_norm(cuda.to_device(x), 5, w2, cuda.to_device(w2))
    np.testing.assert_allclose(host(got), nbn.layer_norm(x, 5, w2, w2), **TOL[F64])


@pytest.mark.parametrize("op", ["batch_norm", "instance_norm"])
def test_running_stats_on_device_updated_in_place(op, rng):
    x = rng.standard_normal((3, 4, 5)) + 1
    rm, rv = rng.standard_normal(4).astype(F32), rng.random(4).astype(F32) + 0.5
    rm_c, rv_c = rm.copy(), rv.copy()
    rm_d, rv_d = cuda.to_device(rm), cuda.to_device(rv)
    f = getattr(nbn, op)
    kw = {"training": True} if op == "batch_norm" else {"use_input_stats": True}
    y = f(cuda.to_device(x), rm_d, rv_d, momentum=0.3, **kw)
    y_c = f(x, rm_c, rv_c, momentum=0.3, **kw)
    np.testing.assert_allclose(host(y), y_c, **TOL[F64])
    assert not np.array_equal(rm_c, rm)  # the CPU call did update
    np.testing.assert_allclose(rm_d.copy_to_host(), rm_c, **TOL[F32])
    np.testing.assert_allclose(rv_d.copy_to_host(), rv_c, **TOL[F32])
    assert rm_d.dtype == F32


def test_eval_mode_uses_device_running_stats(rng):
    x = rng.standard_normal((3, 4, 5))
    rm, rv = rng.standard_normal(4), rng.random(4) + 0.5
    got = nbn.batch_norm(cuda.to_device(x), cuda.to_device(rm), cuda.to_device(rv))
    np.testing.assert_allclose(host(got), nbn.batch_norm(x, rm, rv), **TOL[F64])


@pytest.mark.parametrize("op", ["batch_norm", "instance_norm"])
def test_host_running_stats_with_device_x_is_value_error(op, rng):
    x = cuda.to_device(rng.standard_normal((3, 4, 5)))
    kw = {"training": True} if op == "batch_norm" else {"use_input_stats": True}
    with pytest.raises(ValueError, match="running_mean"):
        getattr(nbn, op)(x, np.zeros(4), np.ones(4), **kw)


def test_out_is_x_in_place_and_out_given(rng):
    x = rng.standard_normal((4, 9))
    d = cuda.to_device(x)
    r = nbn.layer_norm(d, 9, out=d)
    assert r is d
    np.testing.assert_allclose(d.copy_to_host(), nbn.layer_norm(x, 9), **TOL[F64])
    o = cuda.device_array((4, 9), F64)
    r = nbn.standardize(cuda.to_device(x), axis=1, out=o)
    assert r is o
    np.testing.assert_allclose(o.copy_to_host(), nbn.standardize(x, axis=1), **TOL[F64])


def test_noncontiguous_device_input(rng):
    x = rng.standard_normal((4, 6, 10))
    d = cuda.to_device(x)[:, ::2, 1:]
    np.testing.assert_allclose(host(nbn.group_norm(d, 3)), nbn.group_norm(x[:, ::2, 1:], 3), **TOL[F64])


@pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")  # simulator: NumPy scalars
def test_nan_ignored_in_statistics_and_kept_in_output(rng):
    x = rng.standard_normal((9, 4))
    x[2, 1] = np.nan
    got = host(nbn.standardize(cuda.to_device(x)))
    want = nbn.standardize(x)
    np.testing.assert_allclose(got, want, **TOL[F64])  # NaN positions compare equal
    assert np.isnan(got[2, 1]) and np.isfinite(np.delete(got.ravel(), 2 * 4 + 1)).all()


def test_bad_input_raises_before_launch(rng):
    d = cuda.to_device(rng.standard_normal((2, 6, 7)))
    with pytest.raises(ValueError, match="num_groups"):
        nbn.group_norm(d, 4)
    with pytest.raises(ValueError, match="weight"):
        nbn.layer_norm(d, 7, weight=np.ones(6))
    with pytest.raises(TypeError):
        nbn.standardize(cuda.to_device(np.zeros(3, np.complex128)))


def test_stream_keyword(rng):
    x = rng.standard_normal((3, 4, 5))
    s = cuda.stream()
    got = nbn.instance_norm(cuda.to_device(x), stream=s)
    s.synchronize()
    np.testing.assert_allclose(host(got), nbn.instance_norm(x), **TOL[F64])
