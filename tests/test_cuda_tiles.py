"""Channels-last instance and group norm on CUDA in one kernel that reads x
once (issue 17, item 3): ``backends/_cuda_tiles._tile_norm``, a block per
(sample, tile of whole groups), statistics then the apply re-reading the
tile.  Against the CPU backend in the simulator (the honest one of
tests/cudasim_honest.py, installed by tests/conftest.py): float16/32/64,
NaN, groups and spatial sizes that do not divide the tile or the chunk,
weights on the host and the device, return_stats, running statistics,
out= and in place; the launch chooser at the hardware defaults; and the
fallbacks to the statistics-then-apply path."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

cuda = pytest.importorskip("numba.cuda")
from numba.core import config  # noqa: E402

if not config.ENABLE_CUDASIM and not cuda.is_available():
    pytest.skip("no CUDA GPU and the CUDA simulator is off", allow_module_level=True)

from test_cuda_semantics import _count_host_copies, host  # noqa: E402

import numbanorm as nbn  # noqa: E402
import numbanorm.backends.cuda as cb  # noqa: E402
from numbanorm.backends import _cuda_kernels  # noqa: E402, F401  (imports _cuda_tiles)
from numbanorm.backends import _cuda_tiles as tiles  # noqa: E402

SIM = bool(config.ENABLE_CUDASIM)
F16, F32, F64 = np.float16, np.float32, np.float64
# output tolerances against the CPU: both compute in float64 and round once
# into x's dtype, so float16/32 may differ by an ulp of the output
TOL = {F16: dict(rtol=2e-3, atol=2e-3), F32: dict(rtol=1e-6, atol=1e-6), F64: dict(rtol=1e-12, atol=1e-12)}


@pytest.fixture
def small_tiles(monkeypatch):
    """Small blocks for the simulator (a Python thread per CUDA thread): 16
    threads per block, one SM of two blocks (so blocks walk several tiles
    grid-stride), L2 as on hardware."""
    for name, val in dict(TILE_THREADS=16, TILE_SMS=1, TILE_BLOCKS_PER_SM=2).items():
        monkeypatch.setattr(cb, name, val)


@pytest.fixture
def launches(monkeypatch):
    """The kernels a call launches, with their grid and block."""
    seen = []
    orig = cb._launch
    monkeypatch.setattr(cb, "_launch", lambda k, *a: seen.append((k, a[0], a[1])) or orig(k, *a))
    return seen


def _names(seen):
    """The launched kernels' names (_tile_norm_h is named _tile_norm too)."""
    return [k.__name__ for k, _, _ in seen]


def _data(shape, dtype, rng, loc=3.0):
    return (rng.standard_normal(shape) * 2 + loc).astype(dtype)


# ------------------------------------------------------------ the chooser


def test_tile_launch_at_the_hardware_defaults():
    """(tc, block, grid) as cuda.tile_norm launches on 132 SMs: tiles hold
    whole groups, rows of at least a sector, a full chunk per thread; two
    blocks of 256 per SM while that many tiles fit the L2 budget, else one
    of 512; None past L2 / SMs per tile."""
    L2 = cb.TILE_L2_BYTES
    args = (132, L2, cb.TILE_ROW_BYTES, cb.TILE_THREADS, cb.TILE_BLOCKS_PER_SM)
    # NHWC instance norm 64 x 64 x 64 float32: 8 channels (32 B rows), 128 KB
    # tiles; N = 8: 64 of them, fewer than SMs, so 4 channels (16 B rows):
    # 128 tiles, a block of 512 each; N = 32: 256 tiles of 8 channels
    assert tiles.tile_launch(8, 64 * 64, 64, 1, 4, *args) == (4, (4, 128), 128)
    assert tiles.tile_launch(32, 64 * 64, 64, 1, 4, *args) == (8, (8, 32), 256)
    # narrower only while it adds tiles and rows keep half a sector (float64: 2 channels)
    assert tiles.tile_launch(4, 64 * 64, 16, 1, 8, *args) == (2, (2, 256), 32)
    assert tiles.tile_launch(2, 64 * 64, 8, 4, 4, *args) == (4, (4, 128), 4)
    # group norm C = 512, G = 32 at 64 x 64: 16 channels, 256 KB tiles, one per SM
    assert tiles.tile_launch(8, 64 * 64, 512, 16, 4, *args) == (16, (16, 32), 132)
    # float16: 128 KB tiles, two blocks of 256 per SM (256 tiles: fewer blocks)
    assert tiles.tile_launch(8, 64 * 64, 512, 16, 2, *args) == (16, (16, 16), 256)
    # small maps: more channels per tile until every thread has a full chunk
    assert tiles.tile_launch(64, 7 * 7, 512, 16, 4, *args) == (96, (96, 2), 264)
    assert tiles.tile_launch(64, 7 * 7, 512, 16, 8, *args) == (96, (96, 2), 264)
    assert tiles.tile_launch(64, 7 * 7, 512, 16, 2, *args) == (112, (112, 2), 264)  # chunks of 20
    # one row per sample (x of shape (N, C)): one row of threads
    assert tiles.tile_launch(200, 1, 64, 4, 4, *args) == (64, (64, 1), 200)
    # past L2 per SM: 2 MB tiles of 8 channels; groups of 512 channels
    assert tiles.tile_launch(1, 256 * 256, 64, 1, 4, *args) is None
    assert tiles.tile_launch(8, 64 * 64, 512, 512, 4, *args) is None
    assert tiles.tile_launch(2, 4, 2048, 1024, 4, *args) is None  # a group wider than a block


# ------------------------------------------------ against the CPU backend


CASES = {
    # name: (shape (channels last), groups; None: instance norm)
    "gn NHWC S=35 G=4": ((2, 5, 7, 12), 4),
    "gn NLC S=40 G=2": ((3, 40, 6), 2),
    "gn NDHWC G=1": ((2, 3, 2, 3, 5), 1),
    "in NHWC C=5": ((2, 6, 7, 5), None),
    "in NLC C=9 S=70": ((2, 70, 9), None),
}


def _op(groups, **kw):
    if groups is None:
        return lambda a, **k: nbn.instance_norm(a, channel_axis=-1, **kw, **k)
    return lambda a, **k: nbn.group_norm(a, groups, channel_axis=-1, **kw, **k)


@pytest.mark.usefixtures("small_tiles")
@pytest.mark.parametrize("dtype", [F16, F32, F64])
@pytest.mark.parametrize("case", list(CASES))
def test_one_kernel_matches_the_cpu(case, dtype, launches, monkeypatch, rng):
    """Output and statistics of one _tile_norm launch (per dtype: _h for
    float16), against the CPU; no host copy without statistics, one with."""
    shape, groups = CASES[case]
    C = shape[-1]
    x = _data(shape, dtype, rng)
    w, b = rng.standard_normal(C), rng.standard_normal(C)
    f = _op(groups)
    n = _count_host_copies(monkeypatch)
    y = f(cuda.to_device(x), weight=w, bias=b)
    assert n == {"d2h": 0, "sync": 0}
    assert [k for k, _, _ in launches] == [tiles._tile_norm_h if dtype == F16 else tiles._tile_norm]
    assert host(y).dtype == dtype
    np.testing.assert_allclose(host(y), f(x, weight=w, bias=b), **TOL[dtype])
    n.update(d2h=0, sync=0)  # (host(y) copied y)
    got = f(cuda.to_device(x), weight=w, bias=b, return_stats=True)
    assert n["d2h"] == 1  # the (4, N*G) statistics, once
    want = f(x, weight=w, bias=b, return_stats=True)
    for g, wnt in zip(got, want, strict=True):
        assert host(g).dtype == wnt.dtype and host(g).shape == wnt.shape
        np.testing.assert_allclose(host(g), wnt, **TOL[dtype])
    # statistics are float64 whatever the dtype: float32-exact for float16/32
    np.testing.assert_allclose(host(got[1]), want[1], rtol=1e-6 if dtype != F64 else 1e-13)
    np.testing.assert_allclose(host(got[2]), want[2], rtol=1e-6 if dtype != F64 else 1e-12)


@pytest.mark.usefixtures("small_tiles")
def test_partial_last_tile_and_grid_stride(monkeypatch, launches, rng):
    """C = 15 in tiles of 6 channels (groups of 3; the last tile 3 channels,
    its threads past C idle), 3 samples x 3 tiles walked by 2 blocks; S = 50
    rows: a full chunk of 16 per thread and a partial one."""
    monkeypatch.setattr(cb, "TILE_ROW_BYTES", 24)  # 6 float32 channels
    monkeypatch.setattr(cb, "TILE_THREADS", 4)  # a full chunk needs S x tc >= 64
    x = _data((3, 5, 10, 15), F32, rng)
    w, b = rng.standard_normal(15), rng.standard_normal(15)
    y = nbn.group_norm(cuda.to_device(x), 5, w, b, channel_axis=-1)
    assert launches == [(tiles._tile_norm, 2, (6, 1))]
    np.testing.assert_allclose(host(y), nbn.group_norm(x, 5, w, b, channel_axis=-1), **TOL[F32])


@pytest.mark.usefixtures("small_tiles")
def test_nan_and_inf_stay_in_their_group(launches, rng):
    x = _data((3, 4, 6, 8), F64, rng)
    x[1, 2, 3, 2] = np.nan  # sample 1, group 1 (channels 2, 3)
    x[2, 0, 0, 7] = np.inf  # sample 2, group 3
    with warnings.catch_warnings():
        # inf - inf: NaN on a GPU, a NumPy warning in the simulator's threads
        warnings.simplefilter("ignore", RuntimeWarning)
        y = host(nbn.group_norm(cuda.to_device(x), 4, channel_axis=-1))
    with np.errstate(invalid="ignore"):
        want = nbn.group_norm(x, 4, channel_axis=-1)
    assert _names(launches) == ["_tile_norm"]
    bad = np.zeros(x.shape, bool)
    bad[1, ..., 2:4] = True
    bad[2, ..., 6:8] = True
    assert np.isnan(y[bad]).all() and np.isfinite(y[~bad]).all()
    assert np.isnan(want[bad]).all()
    np.testing.assert_allclose(y[~bad], want[~bad], **TOL[F64])


@pytest.mark.usefixtures("small_tiles")
def test_large_mean_is_as_exact_as_the_cpu(rng):
    """1e6 + randn over several chunks and threads per group: the chunk
    two-pass and the mean's residual (chan_merge_dd) keep the variance to
    ~1e-13 of the exact (longdouble) one, as the CPU."""
    x = rng.standard_normal((2, 100, 4)) + 1e6
    _, mean, rstd = nbn.group_norm(cuda.to_device(x), 2, channel_axis=-1, return_stats=True, eps=0.0)
    g = x.reshape(2, 100, 2, 2).transpose(0, 2, 1, 3).reshape(2, 2, -1)
    exact_var = np.array([[np.var(np.longdouble(v) - 1e6) for v in s] for s in g], dtype=F64)
    np.testing.assert_allclose(host(mean), g.mean(-1), rtol=1e-15)
    np.testing.assert_allclose(host(rstd), 1 / np.sqrt(exact_var), rtol=1e-13)


@pytest.mark.usefixtures("small_tiles")
def test_constant_group_with_eps_zero_is_nan_as_the_cpu(rng):
    x = _data((2, 5, 4), F32, rng)
    x[0, :, :2] = 1.5  # sample 0, group 0 constant: rstd inf, output NaN
    with warnings.catch_warnings():
        # 0 * inf: NaN on a GPU, a NumPy warning in the simulator's threads
        warnings.simplefilter("ignore", RuntimeWarning)
        got = nbn.group_norm(cuda.to_device(x), 2, channel_axis=-1, eps=0.0, return_stats=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        want = nbn.group_norm(x, 2, channel_axis=-1, eps=0.0, return_stats=True)
    assert np.isinf(host(got[2])[0, 0]) and np.isnan(host(got[0])[0, :, :2]).all()
    for g, wnt in zip(got, want, strict=True):
        np.testing.assert_allclose(host(g), wnt, **TOL[F32])


@pytest.mark.usefixtures("small_tiles")
@pytest.mark.parametrize("where", ["host", "device"])
@pytest.mark.parametrize("dtype", [F32, F64])
def test_instance_norm_running_statistics(where, dtype, launches, monkeypatch, rng):
    """Training with running statistics (any float dtype, in place on the
    device, weights host or device): one _tile_norm and the two running
    updates, no host copy; the same running statistics as the CPU; eval
    with them afterwards as the CPU."""
    C = 6
    x = _data((3, 4, 5, C), dtype, rng)
    w, b = rng.standard_normal(C), rng.standard_normal(C)
    dw, db = (cuda.to_device(w), cuda.to_device(b)) if where == "device" else (w, b)
    rm, rv = rng.standard_normal(C).astype(F32), (rng.random(C) + 0.5).astype(F32)
    d_rm, d_rv = cuda.to_device(rm), cuda.to_device(rv)
    n = _count_host_copies(monkeypatch)
    y = nbn.instance_norm(cuda.to_device(x), d_rm, d_rv, dw, db, momentum=0.3, channel_axis=-1)
    assert n == {"d2h": 0, "sync": 0}
    ks = _names(launches)
    assert ks[-3:] == ["_tile_norm", "_running_stat", "_running_stat"]
    assert all(k == "_copy1" for k in ks[:-3]) and len(ks) == (5 if where == "device" else 3)
    want = nbn.instance_norm(x, rm, rv, w, b, momentum=0.3, channel_axis=-1)
    np.testing.assert_allclose(host(y), want, **TOL[dtype])
    np.testing.assert_allclose(host(d_rm), rm, rtol=2e-7)
    np.testing.assert_allclose(host(d_rv), rv, rtol=2e-7)
    kw = dict(use_input_stats=False, channel_axis=-1)
    got = nbn.instance_norm(cuda.to_device(x), d_rm, d_rv, dw, db, **kw)
    np.testing.assert_allclose(host(got), nbn.instance_norm(x, rm, rv, w, b, **kw), **TOL[dtype])


@pytest.mark.usefixtures("small_tiles")
def test_out_and_in_place(launches, rng):
    x = _data((2, 6, 8), F32, rng)
    want = nbn.group_norm(x, 4, channel_axis=-1)
    out = cuda.device_array(x.shape, F32)
    d = cuda.to_device(x)
    assert nbn.group_norm(d, 4, channel_axis=-1, out=out) is out
    np.testing.assert_allclose(host(out), want, **TOL[F32])
    np.testing.assert_array_equal(host(d), x)  # x untouched
    assert nbn.group_norm(d, 4, channel_axis=-1, out=d) is d
    np.testing.assert_allclose(host(d), want, **TOL[F32])
    assert _names(launches) == ["_tile_norm", "_tile_norm"]


@pytest.mark.usefixtures("small_tiles")
def test_channels_last_memory_seen_as_nchw(launches, rng):
    """An NCHW view of NHWC memory (channel_axis=1): the tile kernel when out
    shares x's layout (in place); a C-contiguous NCHW result (out=None)
    cannot be written through x's view: the statistics-then-apply path."""
    xl = _data((2, 3, 4, 6), F64, rng)  # NHWC memory
    x = xl.transpose(0, 3, 1, 2)  # NCHW view
    want = nbn.instance_norm(x)
    d = cb.permute(cuda.to_device(xl), (0, 3, 1, 2))
    y = nbn.instance_norm(d)
    assert "_tile_norm" not in _names(launches)
    np.testing.assert_allclose(host(y), want, **TOL[F64])
    launches.clear()
    assert nbn.instance_norm(d, out=d) is d
    assert _names(launches) == ["_tile_norm"]
    np.testing.assert_allclose(host(d), want, **TOL[F64])


@pytest.mark.usefixtures("small_tiles")
def test_fallbacks_keep_the_statistics_then_apply_path(monkeypatch, launches, rng):
    """A tile past TILE_L2_BYTES / SMs, and channels-first memory: today's
    path (moments, finish, apply on the device), the same results."""
    x = _data((2, 5, 6, 4), F32, rng)
    monkeypatch.setattr(cb, "TILE_L2_BYTES", 5 * 6 * 4 * 4 - 1)  # one tile of 4 channels: 480 B
    y = nbn.group_norm(cuda.to_device(x), 2, channel_axis=-1)
    assert "_tile_norm" not in _names(launches) and "_finish_prm" in _names(launches)
    np.testing.assert_allclose(host(y), nbn.group_norm(x, 2, channel_axis=-1), **TOL[F32])
    monkeypatch.setattr(cb, "TILE_L2_BYTES", 5 * 6 * 4 * 4)
    launches.clear()
    nbn.group_norm(cuda.to_device(x), 2, channel_axis=-1)
    assert _names(launches) == ["_tile_norm"]
    # channels first with running statistics: not channels-last memory
    launches.clear()
    xf = _data((2, 4, 7), F32, rng)
    rm, rv = np.zeros(4, F32), np.ones(4, F32)
    d_rm, d_rv = cuda.to_device(rm), cuda.to_device(rv)
    y = nbn.instance_norm(cuda.to_device(xf), d_rm, d_rv)
    assert "_tile_norm" not in _names(launches)
    np.testing.assert_allclose(host(y), nbn.instance_norm(xf, rm, rv), **TOL[F32])
    np.testing.assert_allclose(host(d_rm), rm, rtol=2e-7)


def test_channels_last_view():
    d = cuda.to_device(np.zeros((2, 3, 4, 5)))
    assert cb.channels_last_view(d, 3).shape == (2, 12, 5)
    assert cb.channels_last_view(d, 1) is None  # channels not innermost
    v = cb.permute(d, (0, 3, 1, 2))  # NCHW view of this memory
    assert cb.channels_last_view(v, 1).shape == (2, 12, 5)
    w = cb.permute(d, (0, 2, 1, 3))  # spatial axes swapped: still one run
    assert cb.channels_last_view(w, 3).shape == (2, 12, 5)
    assert cb.channels_last_view(d[:, :, :, :3], 3) is None  # strided channels
