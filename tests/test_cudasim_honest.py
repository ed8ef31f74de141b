"""Tests of tests/cudasim_honest.py: the simulator made to behave like hardware
(transpose copies, launch warnings, warp shuffles).  Simulator only."""

from __future__ import annotations

import contextlib
import warnings

import cudasim_honest
import numpy as np
import pytest
from numba import cuda
from numba.cuda.core import config
from numba.cuda.core.errors import NumbaPerformanceWarning

pytestmark = pytest.mark.skipif(not config.ENABLE_CUDASIM, reason="tests the CUDA simulator's emulation")

FULL = 0xFFFFFFFF
LOW_OCC = "Grid size 1 will likely result in GPU under-utilization due to low occupancy"


@pytest.fixture(autouse=True, scope="module")
def honest():
    """Installed for this module only (undone after it): until conftest
    installs it for the whole session, other modules keep the plain simulator."""
    undo = cudasim_honest.install()
    yield
    undo()


def test_install_is_idempotent_and_undoable():
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray
    from numba.cuda.simulator.kernelapi import FakeCUDAModule

    assert cudasim_honest.installed()
    again = cudasim_honest.install()
    assert again and not again()  # installed already: its undo does nothing
    assert cudasim_honest.installed() and hasattr(FakeCUDAModule, "shfl_down_sync")
    patched = FakeCUDAArray.__dict__["transpose"]
    assert cudasim_honest.uninstall()
    try:
        assert not hasattr(FakeCUDAModule, "shfl_down_sync")
        assert FakeCUDAArray.__dict__["transpose"] is not patched
        assert not cudasim_honest.uninstall()
    finally:
        undo = cudasim_honest.install()
    assert FakeCUDAArray.__dict__["transpose"] is patched
    assert undo and cudasim_honest.installed()


@pytest.fixture
def quiet(monkeypatch):
    """No launch warnings (these tests launch 1-2 blocks)."""
    monkeypatch.setattr(config, "CUDA_LOW_OCCUPANCY_WARNINGS", 0)
    monkeypatch.setattr(config, "CUDA_WARN_ON_IMPLICIT_COPY", 0)


@pytest.fixture
def strict(monkeypatch):
    monkeypatch.setattr(cudasim_honest, "STRICT_MASKS", True)


@pytest.fixture
def lenient(monkeypatch):
    monkeypatch.setattr(cudasim_honest, "STRICT_MASKS", False)


@contextlib.contextmanager
def _no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# --------------------------------------------------------------- transpose


def test_transpose_2d_is_a_new_copy(quiet):
    h = np.arange(12.0).reshape(3, 4)
    d = cuda.to_device(h)
    for t in (d.T, d.transpose(), d.transpose((1, 0))):
        assert t is not d and t.shape == (4, 3)
        assert t.is_c_contiguous()
        np.testing.assert_array_equal(t.copy_to_host(), h.T)
        t[0, 0] = -1.0  # a write into the result ...
        t.copy_to_device(np.zeros((4, 3)))
        np.testing.assert_array_equal(d.copy_to_host(), h)  # ... leaves the source alone
    # an F-ordered source: its .T is C-contiguous already, still a copy
    f = cuda.to_device(np.asfortranarray(h))
    t = f.T
    t[1, 1] = 99.0
    np.testing.assert_array_equal(f.copy_to_host(), h)


def test_transpose_shapes_and_errors(quiet):
    d2 = cuda.to_device(np.zeros((2, 3)))
    assert d2.transpose((0, 1)) is d2  # identity axes: the array itself
    with pytest.raises(ValueError, match=r"invalid axes list \(1, 0, 2\)"):
        d2.transpose((1, 0, 2))
    d3 = cuda.to_device(np.zeros((2, 3, 4)))
    msg = "transposing a non-2D DeviceNDArray isn't supported"
    with pytest.raises(NotImplementedError, match=msg):
        d3.transpose((2, 1, 0))
    with pytest.raises(NotImplementedError, match=msg):
        _ = d3.T
    assert d3.transpose((0, 1, 2)) is d3
    d1 = cuda.to_device(np.zeros(5))
    with pytest.raises(NotImplementedError, match=msg):
        _ = d1.T  # NumPy's 1-D .T is the array itself; hardware raises
    assert d1.transpose((0,)) is d1


def test_transpose_launches_a_kernel_that_warns(monkeypatch):
    d = cuda.to_device(np.zeros((40, 50)))
    with pytest.warns(NumbaPerformanceWarning, match="Grid size 4 will"):  # (50/32+1) * (40/32+1) blocks
        _ = d.T
    with pytest.warns(NumbaPerformanceWarning, match="Grid size 4 will"):  # a fresh kernel each call
        _ = d.T
    monkeypatch.setattr(config, "CUDA_LOW_OCCUPANCY_WARNINGS", 0)
    with _no_warnings():
        _ = d.T


def test_transpose_inside_a_kernel_stays_a_view(quiet):
    @cuda.jit
    def k(a):
        t = a.T
        t[2, 1] = 7.0

    d = cuda.to_device(np.zeros((2, 3)))
    k[1, 1](d)
    assert d.copy_to_host()[1, 2] == 7.0


# ----------------------------------------------------------------- warnings


def test_low_occupancy_warning(monkeypatch):
    @cuda.jit
    def k(out):
        out[0] = 1.0

    out = cuda.device_array(1)
    with pytest.warns(NumbaPerformanceWarning, match=LOW_OCC):
        k[1, 1](out)
    assert out.copy_to_host()[0] == 1.0
    # configure() is lru-cached on hardware: the same configuration warns once
    with _no_warnings():
        k[1, 1](out)
    with pytest.warns(NumbaPerformanceWarning, match="Grid size 6 will"):
        k[(2, 3), 1](out)
    with pytest.raises(TypeError, match="unhashable"):  # hardware's lru_cache key
        k[[2, 3], 1]
    with pytest.raises(ValueError, match="must specify at least the griddim and blockdim"):
        k[1, 1, 0, 0, 0]
    with _no_warnings():
        k[128, 1](out)  # 128 blocks: no warning


@pytest.mark.parametrize("flag", ["CUDA_LOW_OCCUPANCY_WARNINGS", "DISABLE_PERFORMANCE_WARNINGS"])
def test_low_occupancy_warning_off(monkeypatch, flag):
    @cuda.jit
    def k(out):
        out[0] = 1.0

    monkeypatch.setattr(config, flag, 1 - getattr(config, flag))
    out = cuda.device_array(1)
    with _no_warnings():
        k[1, 1](out)


def test_host_array_copy_warning(monkeypatch):
    monkeypatch.setattr(config, "CUDA_LOW_OCCUPANCY_WARNINGS", 0)

    @cuda.jit
    def k(a):
        a[0] = 2.0

    h = np.zeros(3)
    with pytest.warns(NumbaPerformanceWarning, match="Host array used in CUDA kernel will incur copy"):
        k[1, 1](h)
    assert h[0] == 2.0
    with pytest.warns(NumbaPerformanceWarning, match="Host array used"):
        k[1, 1](cuda.In(np.zeros(3)))
    with _no_warnings():
        k[1, 1](cuda.Out(h))  # no copy in
        k[1, 1](cuda.to_device(h))
    monkeypatch.setattr(config, "CUDA_WARN_ON_IMPLICIT_COPY", 0)
    with _no_warnings():
        k[1, 1](h)


def test_forall(monkeypatch):
    @cuda.jit
    def k(out):
        i = cuda.grid(1)
        if i < out.size:
            out[i] = i

    out = cuda.device_array(70)
    with _no_warnings():
        k.forall(0)(out)  # no tasks: no launch, no warning
    with pytest.warns(NumbaPerformanceWarning, match="Grid size 3 will"):
        k.forall(70, tpb=32)(out)  # ceil(70 / 32) blocks of 32, as on hardware
    np.testing.assert_array_equal(out.copy_to_host(), np.arange(70))


# ------------------------------------------------------------ warp shuffles


@cuda.jit
def _warp_sums(x, tree, fly, bcast, up):
    # x: (64,) -> tree: (2,) per-warp sums at lane 0; fly: (64,) the warp sum at
    # every lane; bcast: (64,) lane 5's value; up: (64,) inclusive scan per warp
    i = cuda.threadIdx.x
    lane = i % 32
    v = x[i]
    off = 16
    while off > 0:
        v += cuda.shfl_down_sync(0xFFFFFFFF, v, off)
        off //= 2
    if lane == 0:
        tree[i // 32] = v
    w = x[i]
    off = 1
    while off < 32:
        w += cuda.shfl_xor_sync(0xFFFFFFFF, w, off)
        off *= 2
    fly[i] = w
    bcast[i] = cuda.shfl_sync(0xFFFFFFFF, x[i], 5)
    s = x[i]
    off = 1
    while off < 32:
        n = cuda.shfl_up_sync(0xFFFFFFFF, s, off)
        if lane >= off:
            s += n
        off *= 2
    up[i] = s
    cuda.syncwarp()


def test_shuffle_reductions(quiet, rng):
    x = rng.standard_normal(64)
    tree, fly, bcast, up = (cuda.device_array(n) for n in (2, 64, 64, 64))
    _warp_sums[1, 64](cuda.to_device(x), tree, fly, bcast, up)
    w = x.reshape(2, 32)
    np.testing.assert_allclose(tree.copy_to_host(), w.sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(fly.copy_to_host(), np.repeat(w.sum(axis=1), 32), rtol=1e-12)
    np.testing.assert_array_equal(bcast.copy_to_host(), np.repeat(w[:, 5], 32))
    np.testing.assert_allclose(up.copy_to_host(), np.cumsum(w, axis=1).ravel(), rtol=1e-12)


@cuda.jit
def _lane_sources(out, delta):
    # out: (4, nthreads) what shfl_down / up / xor / idx return with delta, as
    # lane numbers (each lane shuffles its own lane id); 2-D block
    i = cuda.threadIdx.x + cuda.threadIdx.y * cuda.blockDim.x
    lane = i % 32
    out[0, i] = cuda.shfl_down_sync(0xFFFFFFFF, lane, delta)
    out[1, i] = cuda.shfl_up_sync(0xFFFFFFFF, lane, delta)
    out[2, i] = cuda.shfl_xor_sync(0xFFFFFFFF, lane, delta)
    out[3, i] = cuda.shfl_sync(0xFFFFFFFF, lane, lane + delta)


@pytest.mark.parametrize("delta", [3, 35])  # b is taken modulo 32 (PTX: b[4:0])
def test_shuffle_source_lanes(quiet, delta):
    out = cuda.device_array((4, 32), np.int64)
    _lane_sources[1, (8, 4)](out, delta)  # lane = x + y * 8
    lane = np.arange(32)
    d = delta % 32
    got = out.copy_to_host()
    np.testing.assert_array_equal(got[0], np.where(lane + d < 32, lane + d, lane))  # own value past 31
    np.testing.assert_array_equal(got[1], np.where(lane - d >= 0, lane - d, lane))  # own value below 0
    np.testing.assert_array_equal(got[2], lane ^ d)
    np.testing.assert_array_equal(got[3], (lane + d) % 32)  # shfl_sync wraps


@cuda.jit
def _half_warp(out):
    # lanes 0..15 and 16..31 shuffle in two groups with their own masks
    i = cuda.threadIdx.x
    if i < 16:
        out[i] = cuda.shfl_xor_sync(0x0000FFFF, i, 1)
    else:
        out[i] = cuda.shfl_down_sync(0xFFFF0000, i, 4)


def test_shuffle_partial_masks(quiet):
    out = cuda.device_array(32, np.int64)
    _half_warp[1, 32](out)
    lane = np.arange(32)
    np.testing.assert_array_equal(out.copy_to_host()[:16], lane[:16] ^ 1)
    np.testing.assert_array_equal(
        out.copy_to_host()[16:], np.where(lane[16:] + 4 < 32, lane[16:] + 4, lane[16:])
    )


@cuda.jit
def _full_mask_down(out):
    i = cuda.threadIdx.x
    out[i] = cuda.shfl_down_sync(0xFFFFFFFF, i, 1)


def test_full_mask_in_a_partial_warp_strict(quiet, strict):
    # 40 threads: warp 1 has lanes 0..7 only
    with pytest.raises(RuntimeError, match=r"names lanes \[8, .*31\] of warp 1.*only lanes 0..7"):
        _full_mask_down[1, 40](cuda.device_array(40, np.int64))


def test_full_mask_in_a_partial_warp_lenient(quiet, lenient):
    # the CUDA guide's rule: absent lanes are skipped; reading one is an error
    with pytest.raises(RuntimeError, match="lane 7 reads lane 8, which does not exist"):
        _full_mask_down[1, 40](cuda.device_array(40, np.int64))


@cuda.jit
def _exited_lane(out, strict):
    i = cuda.threadIdx.x
    if i == 31:
        return
    out[i] = cuda.shfl_xor_sync(0xFFFFFFFF, i, 2)


def test_exited_lane(quiet, monkeypatch):
    monkeypatch.setattr(cudasim_honest, "STRICT_MASKS", True)
    with pytest.raises(RuntimeError, match="lane 31 returned without calling it"):
        _exited_lane[1, 32](cuda.device_array(32, np.int64), True)
    monkeypatch.setattr(cudasim_honest, "STRICT_MASKS", False)
    with pytest.raises(RuntimeError, match="lane 29 reads lane 31, which does not exist or has exited"):
        _exited_lane[1, 32](cuda.device_array(32, np.int64), False)


@cuda.jit
def _bad_masks(out, which):
    i = cuda.threadIdx.x
    if which == 0:  # the caller (lane 1) is not in its own mask
        if i == 1:  # (one caller: with all 32, lane 0 reading lane 1 could be reported first)
            out[i] = cuda.shfl_down_sync(0x1, i, 1)
    elif which == 1:  # lane 3 reads lane 4, outside the mask
        if i < 4:
            out[i] = cuda.shfl_down_sync(0xF, i, 1)
    else:  # a bool: hardware's typing refuses it
        out[i] = cuda.shfl_sync(0xFFFFFFFF, i > 3, 0)


def test_bad_masks_and_values(quiet):
    out = cuda.device_array(32, np.int64)
    with pytest.raises(RuntimeError, match="does not name its own lane"):
        _bad_masks[1, 32](out, 0)
    with pytest.raises(RuntimeError, match="lane 3 reads lane 4, which is not in mask 0x0000000f"):
        _bad_masks[1, 32](out, 1)
    with pytest.raises(TypeError, match="only supports 32- and 64-bit ints and floats, got bool"):
        _bad_masks[1, 32](out, 2)


@cuda.jit
def _divergent(out, which):
    i = cuda.threadIdx.x
    if which == 0:  # lane 0 at a block barrier, the others in a shuffle
        if i == 0:
            cuda.syncthreads()
        else:
            out[i] = cuda.shfl_xor_sync(0xFFFFFFFF, i, 1)
    else:  # lane 5 raises while the others wait in a shuffle
        if i == 5:
            out[100] = 1
        out[i] = cuda.shfl_xor_sync(0xFFFFFFFF, i, 1)


def test_divergence_is_reported_not_hung(quiet):
    out = cuda.device_array(32, np.int64)
    with pytest.raises(RuntimeError, match="lane 0 is waiting at cuda.syncthreads"):
        _divergent[1, 32](out, 0)
    # the failing lane's own error comes out, not the waiters'
    with pytest.raises(IndexError, match=r"tid=\[5, 0, 0\]"):
        _divergent[1, 32](out, 1)


# ------------------------------------------------------- the block manager


def test_block_manager_waits_instead_of_spinning(quiet, monkeypatch):
    """Barriers in a loop, syncthreads_count/and/or, threads that return
    early (a barrier then counts only the live ones, as the original
    manager does), with a handful of is_alive() calls instead of polling."""
    from numba.cuda.simulator import kernel as sk

    assert sk.BlockManager.run is cudasim_honest._manager_run
    calls = [0]
    orig = sk.BlockThread.is_alive
    monkeypatch.setattr(sk.BlockThread, "is_alive", lambda t: calls.__setitem__(0, calls[0] + 1) or orig(t))

    @cuda.jit
    def k(out, counts):
        i = cuda.threadIdx.x
        sm = cuda.shared.array(64, np.float64)
        sm[i] = i
        for step in range(5):
            cuda.syncthreads()
            out[step, i] = sm[(i + 1) % 64]
            cuda.syncthreads()
            sm[i] = out[step, i]
        counts[0, i] = cuda.syncthreads_count(i % 3 == 0)
        counts[1, i] = cuda.syncthreads_and(i < 64)
        counts[2, i] = cuda.syncthreads_or(i == 5)
        if i >= 60:
            return
        cuda.syncthreads()
        counts[3, i] = 1

    out = np.zeros((5, 64))
    counts = np.zeros((4, 64), np.int64)
    k[2, 64](out, counts)
    want = np.arange(64.0)
    for step in range(5):
        want = np.roll(want, -1)
        np.testing.assert_array_equal(out[step], want)
    np.testing.assert_array_equal(counts[:3], np.array([[22], [1], [1]]) * np.ones(64, np.int64))
    np.testing.assert_array_equal(counts[3], (np.arange(64) < 60).astype(np.int64))
    # the original spins: ~1e5-1e6 calls for a launch like this one
    assert calls[0] < 20_000, calls[0]


def test_block_manager_raises_a_threads_error_and_frees_the_others(quiet):
    """One thread raises while the others wait at a barrier: the launch
    raises that error (with its thread and block) instead of hanging."""

    @cuda.jit
    def k(out):
        i = cuda.threadIdx.x
        cuda.syncthreads()
        if i == 7:
            raise ValueError("lane seven")
        cuda.syncthreads()
        out[i] = 1.0

    with pytest.raises(ValueError, match=r"tid=\[7, 0, 0\] ctaid=\[0, 0, 0\]: lane seven"):
        k[1, 32](np.zeros(32))
