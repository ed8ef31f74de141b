"""Streaming row kernels (backends/cpu/rows.py, pipelined.py; NOTES.md section 13).

An out= buffer whose pages are resident is written with streaming stores by
the row kernels: the software-pipelined ``pipe_task`` (rows with fewer
weights than elements: instance/group norm, lp_normalize p=2, layer/RMS norm
of other geometries) and the row-by-row ``row_task`` (one weight per
element: layer/RMS norm).  Every test forces the path on small arrays
(``STREAM_MIN_BYTES = 0``), checks that it was taken, places ``out`` at
element offsets inside a guarded buffer, and compares with the ordinary path
and with the float64 reference.
"""

from __future__ import annotations

import mmap

import numpy as np
import pytest
import reference as ref

import numbanorm as nbn
from numbanorm._config import LINE_BYTES, PREFETCH_MIN_ROW_BYTES
from numbanorm.backends.cpu import _intrinsics as intr
from numbanorm.backends.cpu import _tasks, pipelined, rows, shortcuts
from numbanorm.backends.cpu import affine as cpu_apply

GUARD = 2 * LINE_BYTES


@pytest.fixture
def streaming(monkeypatch):
    """Streaming and the threaded kernels for small inputs, two tasks."""
    monkeypatch.setattr(intr, "STREAM_MIN_BYTES", 0)
    monkeypatch.setattr(shortcuts, "MIN_TASK_ELEMS", 0)  # (no small-call fast path)
    for mod in (_tasks, rows):
        monkeypatch.setattr(mod, "MIN_TASK_ELEMS", 0)
        monkeypatch.setattr(mod, "threads", lambda: 2)


@pytest.fixture
def spy(monkeypatch):
    """Counts launches of the two row kernels."""
    calls = {"pipe": 0, "rows": 0, "stream": []}

    def wrap(name, kernel):
        def launched(*args):
            calls[name] += 1
            calls["stream"].append(bool(args[-1]))
            return kernel(*args)

        return launched

    monkeypatch.setattr(pipelined, "run_pipe", wrap("pipe", pipelined.run_pipe))
    monkeypatch.setattr(rows, "run_rows", wrap("rows", rows.run_rows))
    return calls


def _placed(shape, dtype, offset_elems):
    dt = np.dtype(dtype)
    n = int(np.prod(shape))
    raw = np.empty(n * dt.itemsize + 2 * GUARD + 2 * LINE_BYTES, np.uint8)
    start = (-raw.ctypes.data) % LINE_BYTES + GUARD + offset_elems * dt.itemsize
    raw[:] = 0xA5
    return raw, start, raw[start : start + n * dt.itemsize].view(dt).reshape(shape)


def _guards_intact(raw, start, nbytes):
    return bool((raw[:start] == 0xA5).all() and (raw[start + nbytes :] == 0xA5).all())


def _tol(dtype):
    return {"rtol": 2e-6, "atol": 2e-6} if np.dtype(dtype) == np.float32 else {"rtol": 1e-12, "atol": 1e-12}


def _same_nan(got, expect, dtype):
    """NaN where expect has NaN, close to it elsewhere."""
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expect))
    ok = ~np.isnan(expect)
    np.testing.assert_allclose(got[ok], expect[ok], **_tol(dtype))


def _ops(rng, dtype, shape):
    """(name, call(x, out), reference(x), kernel) for the row ops on ``shape``."""
    c = shape[1]
    d = shape[-1]
    wl = rng.uniform(0.5, 1.5, d).astype(dtype)
    bl = rng.uniform(-0.5, 0.5, d).astype(dtype)
    wc = rng.uniform(0.5, 1.5, c).astype(dtype)
    bc = rng.uniform(-0.5, 0.5, c).astype(dtype)
    return [
        (
            "layer",
            lambda x, o: nbn.layer_norm(x, (d,), wl, bl, out=o),
            lambda x: ref.layer_norm(x, (d,), wl, bl),
            "rows",
        ),
        (
            "layer_noaffine",
            lambda x, o: nbn.layer_norm(x, (d,), out=o),
            lambda x: ref.layer_norm(x, (d,)),
            None,
        ),
        ("rms", lambda x, o: nbn.rms_norm(x, (d,), wl, out=o), lambda x: ref.rms_norm(x, (d,), wl), "rows"),
        ("lp2", lambda x, o: nbn.lp_normalize(x, out=o), lambda x: ref.lp_normalize(x), "pipe"),
        (
            "instance",
            lambda x, o: nbn.instance_norm(x, weight=wc, bias=bc, out=o),
            lambda x: ref.instance_norm(x, weight=wc, bias=bc),
            "pipe",
        ),
        (
            "group",
            lambda x, o: nbn.group_norm(x, 2, wc, bc, out=o),
            lambda x: ref.group_norm(x, 2, wc, bc),
            "pipe",
        ),
    ]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "shape",
    [
        (16, 4, 256),  # rows of whole lines
        (16, 4, 257),  # rows not whole lines: every row starts at another offset
        (13, 2, 600),  # group norm segments of 600 elements (not whole lines)
    ],
)
def test_streamed_rows_match_ordinary_and_reference(streaming, spy, monkeypatch, dtype, shape):
    rng = np.random.default_rng(sum(shape))
    x = (rng.standard_normal(shape) * 2 + 100).astype(dtype)
    for name, call, refcall, kernel in _ops(rng, dtype, shape):
        expect = np.asarray(refcall(x), np.float64)
        for off in (0, 1, 3) if np.dtype(dtype) == np.float32 else (0, 1):
            raw, start, out = _placed(shape, dtype, off)
            spy["pipe"] = spy["rows"] = 0
            spy["stream"].clear()
            call(x, out)
            if kernel is not None:
                assert spy[kernel] == 1, (name, spy)
                assert spy["stream"] == [True], (name, spy)
            assert _guards_intact(raw, start, out.nbytes), (name, off)
            plain = call(x, None)  # a fresh output: not resident -> ordinary stores
            np.testing.assert_allclose(out, plain, **_tol(dtype), err_msg=f"{name} offset {off}")
            np.testing.assert_allclose(out, expect, **_tol(dtype), err_msg=f"{name} offset {off}")


@pytest.mark.parametrize(
    "dtype,d",
    [
        (np.float32, 2048),  # 8 KiB rows: the smallest that prefetch
        (np.float32, 2085),  # chunks and lines that do not divide the row
        (np.float64, 1100),
        (np.float32, 5000),  # longer than ROW_CHUNK
    ],
)
def test_prefetching_rows_match_reference_streamed_or_not(streaming, spy, monkeypatch, dtype, d):
    # rows of >= PREFETCH_MIN_ROW_BYTES are written in PREFETCH_CHUNK_BYTES
    # chunks, prefetching the next row (rows.affine_row) or the row after next
    # (the pipelined kernel, pipelined.pipe_row); the row-by-row kernel does
    # so only for inputs of >= PREFETCH_MIN_X_BYTES: here for any
    monkeypatch.setattr(rows, "PREFETCH_MIN_X_BYTES", 0)
    assert d * np.dtype(dtype).itemsize >= PREFETCH_MIN_ROW_BYTES
    shape = (32, d)  # above MIN_TASK_ELEMS (no small-call kernel), one task per row
    rng = np.random.default_rng(d)
    x = (rng.standard_normal(shape) * 2 + 1e3).astype(dtype)
    w = rng.uniform(0.5, 1.5, d).astype(dtype)
    b = rng.uniform(-0.5, 0.5, d).astype(dtype)
    wc = rng.uniform(0.5, 1.5, 8).astype(dtype)
    bc = rng.uniform(-0.5, 0.5, 8).astype(dtype)
    x3 = x.reshape(4, 8, d)
    ops = [  # (call, reference, kernel): the row-by-row kernel and the pipelined one
        (lambda x, o: nbn.layer_norm(x, (d,), w, b, out=o), ref.layer_norm(x, (d,), w, b), "rows"),
        (lambda x, o: nbn.rms_norm(x, (d,), w, out=o), ref.rms_norm(x, (d,), w), "rows"),
        (lambda x, o: nbn.lp_normalize(x, out=o), ref.lp_normalize(x), "pipe"),
        (
            lambda x, o: nbn.instance_norm(
                x.reshape(x3.shape), weight=wc, bias=bc, out=None if o is None else o.reshape(x3.shape)
            ).reshape(shape),
            ref.instance_norm(x3, weight=wc, bias=bc).reshape(shape),
            "pipe",
        ),
        (
            lambda x, o: nbn.group_norm(
                x.reshape(x3.shape), 2, wc, bc, out=None if o is None else o.reshape(x3.shape)
            ).reshape(shape),
            ref.group_norm(x3, 2, wc, bc).reshape(shape),
            "pipe",
        ),
    ]
    for call, expect, kernel in ops:
        plain = call(x, None)  # fresh output: ordinary stores (row-by-row kernel)
        np.testing.assert_allclose(plain, expect, **_tol(dtype))
        for off in (0, 1, 3):
            raw, start, out = _placed(shape, dtype, off)
            spy["stream"].clear()
            spy["pipe"] = spy["rows"] = 0
            call(x, out)
            assert spy["stream"] == [True] and spy[kernel] == 1, (kernel, spy)
            assert _guards_intact(raw, start, out.nbytes), off
            if kernel == "rows":
                np.testing.assert_array_equal(out, plain)  # the same arithmetic
            else:  # the pipelined statistics may differ in the last bits
                np.testing.assert_allclose(out, expect, **_tol(dtype))


@pytest.mark.skipif(intr._MINCORE is None, reason="no mincore on this platform")
def test_fresh_output_is_not_streamed(streaming, spy, no_output_cache):
    # 64 MiB: an allocation this large is a fresh mapping (glibc's mmap
    # threshold is at most 32 MiB), its pages not yet resident
    x = np.ones((64, 4, 1 << 16), np.float32)
    y = nbn.instance_norm(x)
    assert spy["pipe"] == 0 and spy["stream"] == [False]
    assert np.abs(y).max() == 0


@pytest.mark.skipif(intr._MINCORE is None, reason="no mincore on this platform")
def test_reused_output_buffer_is_streamed(streaming, spy):
    # the output buffer cache (numbanorm/_outbuf.py) hands the dropped
    # output's buffer to the next allocating call: resident, so it streams
    prev = nbn.set_output_cache(256 << 20)
    try:
        nbn.release_output_cache()
        x = np.ones((64, 4, 1 << 16), np.float32)
        y = nbn.instance_norm(x)
        assert spy["stream"] == [False]
        y[...] = 7
        del y
        y = nbn.instance_norm(x)
        assert spy["stream"] == [False, True] and spy["pipe"] == 1
        assert np.abs(y).max() == 0
    finally:
        nbn.release_output_cache()
        nbn.set_output_cache(prev)


@pytest.mark.skipif(intr._MINCORE is None, reason="no mincore on this platform")
def test_resident():
    big = np.empty(64 << 20, np.uint8)  # an untouched anonymous mapping
    assert not intr.resident(big), "fresh"
    big[:: mmap.PAGESIZE] = 1
    big[-1] = 1
    assert intr.resident(big), "written"
    assert not intr.resident(np.empty(0))
    small = np.ones(1000)
    assert intr.resident(small)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ntask", [1, 2, 3, 5, 13])
@pytest.mark.parametrize("mode", [0.0, 1.0, -2.0])
def test_pipe_kernel_blocks(dtype, ntask, mode):
    """Every block size (the last block shorter, one-row blocks) gives the
    row-by-row kernel's statistics and output."""
    rng = np.random.default_rng(ntask)
    R, D = 13, 320
    x = (rng.standard_normal((R, D)) * 3 + 50).astype(dtype)
    W = rng.uniform(0.5, 1.5, (3, 4)).astype(dtype)  # per segment of 80, three weight rows
    B = rng.uniform(-0.5, 0.5, (3, 4)).astype(dtype)
    m1, r1 = np.zeros(R), np.empty(R)
    m2, r2 = np.zeros(R), np.empty(R)
    raw, start, o1 = _placed((R, D), dtype, 0)
    o2 = np.empty((R, D), dtype)
    stat = {0.0: rows.MEAN, 1.0: rows.RMS, -2.0: rows.PNORM}[mode]
    pipelined.run_pipe(x, o1, W, B, 1e-5, stat, m1, r1, ntask, False, True)
    _tasks.run_serial(
        rows.row_task, R, x, o2, W, B, 1e-5, 2.0, 1, m2, r2, stat=stat, stream=False, same=False, short=False
    )
    assert _guards_intact(raw, start, o1.nbytes)
    np.testing.assert_allclose(m1, m2, rtol=1e-14, atol=1e-12)
    np.testing.assert_allclose(r1, r2, rtol=1e-13)
    np.testing.assert_allclose(o1, o2, **_tol(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pipe_refused_shift_nan_inf(streaming, spy, dtype):
    """Rows whose first value is an outlier (the one-pass shift refused: exact
    two-pass instead), rows with NaN and Inf, a zero row for the 2-norm."""
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((12, 8, 64)) + 1e3).astype(dtype)
    x[1, 0, 0] = 1e7  # instance row 8: outlier first value
    x[2, 3, 5] = np.nan
    x[3, 2, 9] = np.inf
    out = np.ones_like(x)
    nbn.instance_norm(x, out=out)
    assert spy["pipe"] == 1
    with np.errstate(invalid="ignore"):
        expect = np.asarray(ref.instance_norm(x), np.float64)
    _same_nan(out, expect, dtype)
    # lp_normalize p=2: NaN is left out of the norm; a zero row stays zero
    y = x.reshape(96, 64).copy()
    y[5] = 0
    o2 = np.ones_like(y)
    nbn.lp_normalize(y, out=o2)
    assert spy["pipe"] == 2
    with np.errstate(invalid="ignore"):
        e2 = np.asarray(ref.lp_normalize(y), np.float64)
    _same_nan(o2, e2, dtype)
    assert (o2[5] == 0).all()


def test_pipe_far_from_zero_float32(streaming):
    """float32 data at 1e4 with unit spread: the mean's hi/lo split keeps the
    digits (no 'reassoc' folding in the pipelined output)."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((16, 4, 512)) + 1e4).astype(np.float32)
    out = np.empty_like(x)
    out[...] = 0  # resident
    nbn.instance_norm(x, out=out)
    expect = np.asarray(ref.instance_norm(x), np.float64)
    # a single float32 rounding of the output (|y| < 6): ~4e-7; a folded
    # mean (rounded to float32 at 1e4) would be off by up to ~5e-4
    assert np.abs(out - expect).max() < 2e-6


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layer_and_rms_without_weights_take_the_pipeline(streaming, spy, dtype):
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((40, 300)) * 2 + 1e3).astype(dtype)
    for call, refcall in [
        (lambda o: nbn.layer_norm(x, 300, out=o), lambda: ref.layer_norm(x, (300,))),
        (lambda o: nbn.rms_norm(x, 300, out=o), lambda: ref.rms_norm(x, (300,))),
    ]:
        spy["pipe"] = 0
        out = np.zeros_like(x)
        call(out)
        assert spy["pipe"] == 1
        np.testing.assert_allclose(out, np.asarray(refcall(), np.float64), **_tol(dtype))
        np.testing.assert_allclose(out, call(None), **_tol(dtype))


@pytest.mark.skipif(intr._MINCORE is None, reason="no mincore on this platform")
@pytest.mark.parametrize("fused", [False, True])
def test_apply_streams_only_into_resident_outputs(monkeypatch, fused, no_output_cache):
    flags = []
    # both paths (fused: the per-channel fast path) ask the apply tasks for
    # the variant that streams or not
    if not fused:
        monkeypatch.setattr(shortcuts, "FUSED", False)
    for task in (cpu_apply.apply_rows, cpu_apply.apply_lanes):
        real = task.address

        def spy(args, types_key=None, _real=real, **variant):
            flags.append(bool(variant["stream"]))
            return _real(args, types_key, **variant)

        monkeypatch.setattr(task, "address", spy)
    # 64 MiB (a fresh mapping when allocated), 8 channels of 2 MiB planes
    x = np.ones((1, 8, 1 << 19, 4), np.float32)
    rm, rv = np.zeros(8, np.float32), np.ones(8, np.float32)
    nbn.batch_norm(x, rm, rv)  # allocating: fresh pages, ordinary stores
    out = np.zeros_like(x)  # written: resident
    nbn.batch_norm(x, rm, rv, out=out)
    assert flags == [False, True]
    assert (out == nbn.batch_norm(x, rm, rv)).all()


@pytest.mark.parametrize("nbytes_min,prefetch", [(None, False), (0, True)])
def test_long_rows_prefetch_only_from_inputs_past_the_cache(monkeypatch, nbytes_min, prefetch):
    """The row-by-row kernel prefetches the next row only for inputs of at
    least PREFETCH_MIN_X_BYTES (the sign of its rows-per-task argument);
    the output is the same either way."""
    seen = []
    orig = rows.run

    def run(kernel, ntask, *args, **flags):
        if kernel is rows.row_task:
            seen.append(args[6])  # nrows: < 0 without prefetching
        return orig(kernel, ntask, *args, **flags)

    monkeypatch.setattr(rows, "run", run)
    if nbytes_min is not None:
        monkeypatch.setattr(rows, "PREFETCH_MIN_X_BYTES", nbytes_min)
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((64, 4096)) * 2 + 1e3).astype(np.float32)  # 1 MiB, rows of 16 KiB
    w = rng.uniform(0.5, 1.5, 4096).astype(np.float32)
    y = nbn.layer_norm(x, (4096,), w, w)
    assert len(seen) == 1 and (seen[0] > 0) == prefetch, seen
    np.testing.assert_allclose(y, ref.layer_norm(x, (4096,), w, w), **_tol(np.float32))
