"""In-place calls (out=x) take the elementwise loops' in-place twins
(backends/cpu/_elementwise.py: ``alias_safe``): one array read and
written, so that LLVM vectorizes them (with two arrays that overlap it ran
scalar code, NOTES.md section 16).  They must give the out-of-place bits,
also with streaming stores and at any element offset; float64 statistics
summed in the pipelined row kernel's loops may round differently in place."""

from __future__ import annotations

import numpy as np
import pytest

import numbanorm as nbn
from numbanorm._config import STREAM_MIN_BYTES
from numbanorm.backends.cpu import _elementwise as ew


def _buf(rng, n, dtype, off):
    """n values at element offset off of a 64-byte-aligned buffer, inside
    guard elements."""
    b = np.full(n + 64, -7.0, dtype)
    a = ((-b.ctypes.data) % 64) // b.itemsize
    v = b[a + off : a + off + n]
    v[:] = rng.standard_normal(n) * 3 + 2
    return b, v


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
# (element offset, streaming stores): streamed spans start on a line
@pytest.mark.parametrize("off,nt", [(0, False), (1, False), (5, False), (0, True)])
def test_in_place_twins_give_the_same_bits(rng, dtype, off, nt):
    T = np.dtype(dtype).type
    n = 1024 + 48  # whole lines from an aligned start
    _, u = _buf(rng, n, dtype, off)
    _, w = _buf(rng, n, dtype, off)
    _, bias = _buf(rng, n, dtype, off)
    L = 256
    hh, sc, sh = (rng.standard_normal(L).astype(dtype) for _ in range(3))
    calls = {
        "map1": lambda same, v, o: ew.map_scalar(
            same, v, o, T(1.5), T(0.25), T(-1), T(-np.inf), T(np.inf), nt, False
        ),
        "map1_clip": lambda same, v, o: ew.map_scalar(
            same, v, o, T(1.5), T(0.25), T(-1), T(-1), T(1), nt, True
        ),
        "mapL": lambda same, v, o: ew.map_lanes(
            same, v[:L], o[:L], hh, sc, sh, T(-np.inf), T(np.inf), nt, False
        ),
        "mapL_clip": lambda same, v, o: ew.map_lanes(same, v[:L], o[:L], hh, sc, sh, T(-1), T(1), nt, True),
        "affine_vec": lambda same, v, o: ew.affine_span(same, v, o, T(2), T(1e-3), T(0.5), w, bias, nt),
        "pipe_scl": lambda same, v, o: ew.pipe_span(same, u, v, o, 2.0, T(2), T(1e-3), T(0.5), T(1), nt),
    }
    for name, f in calls.items():
        bx, x = _buf(rng, n, dtype, off)
        _, o = _buf(rng, n, dtype, off)
        o[:] = x
        want = f(False, o.copy(), o)  # out of place: a copy of x in, o out
        got = f(True, x, x)  # in place
        np.testing.assert_array_equal(x, o, err_msg=name)
        start = ((-bx.ctypes.data) % 64) // bx.itemsize + off
        assert np.all(bx[:start] == -7.0) and np.all(bx[start + n :] == -7.0), name
        if name == "pipe_scl":  # the sums of u: the same loop, the same bits
            assert got == want


OPS = {
    "batch_norm": lambda x, **k: nbn.batch_norm(x, training=True, **k),
    "batch_norm_cl": lambda x, **k: nbn.batch_norm(x, training=True, channel_axis=-1, **k),
    "batch_norm_eval": lambda x, **k: nbn.batch_norm(
        x, np.zeros(x.shape[1]), np.ones(x.shape[1]), training=False, **k
    ),
    "instance_norm": lambda x, **k: nbn.instance_norm(x, **k),
    "layer_norm": lambda x, **k: nbn.layer_norm(x, x.shape[-1], **k),
    "layer_norm_affine": lambda x, **k: nbn.layer_norm(
        x, x.shape[-1], np.linspace(0.5, 2, x.shape[-1]), np.linspace(-1, 1, x.shape[-1]), **k
    ),
    "group_norm": lambda x, **k: nbn.group_norm(x, 4, **k),
    "rms_norm": lambda x, **k: nbn.rms_norm(x, x.shape[-1], **k),
    "standardize": lambda x, **k: nbn.standardize(x, axis=0, **k),
    "minmax_scale": lambda x, **k: nbn.minmax_scale(x, axis=0, **k),
    "lp_normalize": lambda x, **k: nbn.lp_normalize(x, **k),
}


@pytest.mark.parametrize("op", OPS)
def test_large_in_place_calls_give_the_out_of_place_bits(rng, op):
    # past STREAM_MIN_BYTES (streaming stores into resident pages), rows of
    # 32 KiB (prefetching row kernels), 8 channels
    shape = (64, 8, 4096)
    assert np.prod(shape) * 8 >= STREAM_MIN_BYTES
    x = rng.standard_normal(shape) * 2 + 5
    want = OPS[op](x)
    out = np.zeros_like(x)
    OPS[op](x, out=out)  # out= pages resident: streaming
    xi = x.copy()
    assert OPS[op](xi, out=xi) is xi
    for got in (out, xi):
        if op in SUMS:
            # float64 statistics: into resident pages the pipelined row
            # kernel sums whole rows (a fresh output takes the row-by-row
            # kernel, NOTES.md section 13), and its in-place loop may
            # vectorize into another summation order; all within the
            # one-pass bound n u K (section 11)
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max())
        else:
            np.testing.assert_array_equal(got, want)


# ops whose statistics a pipelined kernel sums in the loop that writes (the
# row kernel; batch_norm training's channel kernel, whose in-place loop may
# also vectorize into another order, as CI's fresh build showed)
SUMS = {"batch_norm", "instance_norm", "layer_norm", "group_norm", "rms_norm", "lp_normalize"}


# the small kernels' (apart, in place) pairs, whose index is "in place"
SMALL_PAIRS = (
    "row_norm_small",
    "row_norm_short",
    "row_norm_groups",
    "batch_norm_small",
    "standardize_small",
    "minmax_small",
)
ROW_OPS = {"instance_norm", "layer_norm", "layer_norm_affine", "group_norm", "rms_norm", "lp_normalize"}


# (medium float64 left out: the same flags and loops as float32, compiled
# again at ~1 s a kernel variant in a cold test run)
@pytest.mark.parametrize("size,dtype", [("small", np.float32), ("small", np.float64), ("medium", np.float32)])
@pytest.mark.parametrize("op", OPS)
def test_in_place_calls_take_the_in_place_loops(monkeypatch, rng, op, size, dtype):
    # out=x at the sizes of the serial kernels (at most MIN_TASK_ELEMS) and
    # of the row tasks: the in-place kernels and loops run (before, they ran
    # their loops on two arrays that overlap: 1.6-2.2x the out= time), and
    # give the out-of-place bits
    from numbanorm.backends.cpu import rows, small

    seen = []
    for name in SMALL_PAIRS:
        pair = getattr(small, name)
        spied = tuple(lambda *a, f=f, i=i: (seen.append(bool(i)), f(*a))[1] for i, f in enumerate(pair))
        monkeypatch.setattr(small, name, spied)
    for name in ("run", "run_serial"):
        f = getattr(rows, name)

        def launch(kernel, ntask, *a, f=f, **flags):
            seen.append(flags["same"])
            return f(kernel, ntask, *a, **flags)

        monkeypatch.setattr(rows, name, launch)
    shape = (2, 8, 8, 128) if size == "small" else (4, 8, 64, 128)
    x = (rng.standard_normal(shape) * 2 + 5).astype(dtype)
    want = OPS[op](x)
    seen.clear()
    xi = x.copy()
    assert OPS[op](xi, out=xi) is xi
    np.testing.assert_array_equal(xi, want)
    if size == "small" or op in ROW_OPS:
        assert seen and all(s is True for s in seen), seen
