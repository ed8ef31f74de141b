"""CPU kernel plumbing: parallel drivers stay parallel, serial ones serial."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from numba.extending import intrinsic

from numbanorm.backends import cpu
from numbanorm.backends.cpu import _tasks, rows


@_tasks.task(fastmath=False)
def _thread_ids(t, ids):
    """Task t records the numba thread that ran it."""
    ids[t] = numba.get_thread_id()


def test_parallel_and_serial_runs_give_the_same_bits():
    # one launcher runs the tasks on the threading layer's threads or in
    # this thread; the two must agree bit for bit
    x = np.random.default_rng(0).standard_normal((4, 8))
    w = np.ones((1, 8))
    b = np.zeros((1, 8))
    outs = []
    for runner in (_tasks.run, _tasks.run_serial):
        y, mean, rstd = np.empty_like(x), np.empty(4), np.empty(4)
        runner(
            rows.row_task,
            4,
            x,
            y,
            w,
            b,
            1e-5,
            2.0,
            1,
            mean,
            rstd,
            stat=rows.MEAN,
            stream=False,
            same=False,
            short=True,
        )
        outs.append(y)
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_allclose(
        outs[0], (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + 1e-5)
    )


@pytest.mark.parametrize("ntask", [0, 1, 2, 3, 7, 64])
def test_tasks_run_once_each_on_the_threads(ntask):
    # every task runs exactly once: parallel on all threads (one contiguous
    # range each when there are enough tasks), serial in this thread only
    nt = numba.get_num_threads()
    for runner, want in ((_tasks.run, min(nt, ntask)), (_tasks.run_serial, min(1, ntask))):
        ids = np.full(ntask, -1, np.int64)
        runner(_thread_ids, ntask, ids)
        assert (ids >= 0).all()
        if numba.threading_layer() != "tbb":  # (tbb schedules by work stealing)
            assert len(set(ids.tolist())) == want
            assert (np.diff(ids) >= 0).all()


@intrinsic
def _meminfo_of(typingctx, a):
    """The address of array ``a``'s meminfo (0 for an unowned view)."""
    if not isinstance(a, numba.types.Array):
        return None

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, value=args[0])
        return builder.ptrtoint(ary.meminfo, context.get_value_type(numba.types.int64))

    return numba.types.int64(a), codegen


@_tasks.task(fastmath=False)
def _meminfos(t, x, out):
    """Task t records the meminfo its arrays arrive with."""
    out[t] = _meminfo_of(x) + _meminfo_of(out)


def test_tasks_get_arrays_without_reference_counts():
    # the launcher hands tasks unowned arrays (as numba's parfors do): with
    # the caller's meminfo, every view a task made updated one shared atomic
    # count, and two threads ran a 256-row layer_norm no faster than one
    out = np.full(8, -1, np.int64)
    for runner in (_tasks.run, _tasks.run_serial):
        runner(_meminfos, 8, np.ones(3), out)
        assert (out == 0).all()


def test_run_tasks_has_no_parfor():
    # the launcher calls the threading layer itself: no prange to compile
    assert not _tasks.run_tasks.targetoptions.get("parallel")


def test_few_long_rows_take_the_segmented_path_correctly():
    # 3 rows of 70000: more work than rows for the threads, so each row is
    # split into segments (mean stays 0 for RMS and p-norms there)
    import numbanorm as nbn

    x = np.random.default_rng(1).standard_normal((3, 70000)) + 2.0
    for _ in range(2):  # fresh scratch arrays each call
        np.testing.assert_allclose(
            nbn.lp_normalize(x, np.inf), x / np.abs(x).max(-1, keepdims=True), rtol=1e-12
        )
        np.testing.assert_allclose(
            nbn.rms_norm(x, 70000, eps=0.0), x / np.sqrt((x * x).mean(-1, keepdims=True)), rtol=1e-10
        )
        ref = (x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True)
        np.testing.assert_allclose(nbn.layer_norm(x, 70000, eps=0.0), ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("D", [1024, 2048, 4096])
def test_rows_up_to_row_chunk_take_the_short_code_unless_they_prefetch(monkeypatch, dtype, D):
    # rows of 8-32 KiB: the short-row code (2-D indexing, one shifted pass)
    # below PREFETCH_MIN_X_BYTES of input, the long-row code (row views,
    # prefetching the next row) from it; both give the layer norm of
    # offset data to the float64 reference's accuracy
    seen = []
    run = _tasks.run

    def spy(kernel, ntask, *args, **flags):
        if kernel is rows.row_task:
            seen.append((flags["short"], args[6] > 0))  # (short, prefetching)
        return run(kernel, ntask, *args, **flags)

    monkeypatch.setattr(rows, "run", spy)
    rng = np.random.default_rng(D)
    x = (rng.standard_normal((40, D)) + 1e4).astype(dtype)
    x64 = x.astype(np.float64)
    ref = (x64 - x64.mean(1, keepdims=True)) / np.sqrt(x64.var(1, keepdims=True) + 1e-5)
    tol = 1e-5 if dtype == np.float32 else 1e-9
    short_row = D * x.itemsize < rows.PREFETCH_MIN_ROW_BYTES
    for limit, want in ((rows.PREFETCH_MIN_X_BYTES, (True, False)), (0, (short_row, True))):
        monkeypatch.setattr(rows, "PREFETCH_MIN_X_BYTES", limit)
        seen.clear()
        y = np.empty_like(x)
        rows.row_norm(x, y, np.ones(D, dtype), np.zeros(D, dtype), 1e-5, False)
        assert seen == [want]
        np.testing.assert_allclose(y, ref, atol=tol, rtol=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("K", [1, 3, 64, 256])
def test_lane_minmax_nan_inf_blocks(dtype, K):
    # min/max lanes in x's dtype; the NaN count runs only for blocks whose
    # x - x sum shows a NaN or an Inf: an Inf-only block, a NaN in one late
    # block, an all-NaN column, and -0.0/0.0 all keep numpy's nanmin/nanmax
    rng = np.random.default_rng(K)
    R = 3000
    x = rng.standard_normal((1, R, K)).astype(dtype)
    x[0, 5, 0] = np.inf
    x[0, 7, K - 1] = -np.inf
    x[0, R - 3, K // 2] = np.nan
    if K > 2:
        x[0, :, 1] = np.nan
    for skipnan in (True, False):
        cnt, _, _, mn, mx, _ = cpu.moments(x, skipnan, True, want_moments=False)
        with np.errstate(invalid="ignore"), __import__("warnings").catch_warnings():
            __import__("warnings").simplefilter("ignore", RuntimeWarning)
            emn = np.nanmin(x[0].astype(np.float64), axis=0)
            emx = np.nanmax(x[0].astype(np.float64), axis=0)
        nans = np.isnan(x[0]).sum(axis=0)
        if skipnan:
            np.testing.assert_array_equal(cnt[0], R - nans)
            # an all-NaN column: count 0 and the empty min/max (inf, -inf);
            # the caller turns it into NaN
            empty = nans == R
            emn[empty], emx[empty] = np.inf, -np.inf
            np.testing.assert_array_equal(mn[0], emn)
            np.testing.assert_array_equal(mx[0], emx)
        else:
            has = nans > 0
            assert np.isnan(mn[0][has]).all() and np.isnan(mx[0][has]).all()
            np.testing.assert_array_equal(mn[0][~has], emn[~has])
            np.testing.assert_array_equal(mx[0][~has], emx[~has])


@pytest.mark.parametrize("shape", [(4, 8), (64, 2048)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_eps_zero_on_constant_rows_gives_nan_not_an_exception(shape, dtype):
    # 0 * (1 / sqrt(0)) = NaN, as in NumPy and PyTorch: the kernels compile
    # with error_model="numpy" (numba's default raised ZeroDivisionError in
    # the small-call kernels)
    import numbanorm as nbn

    x = np.full(shape, 3.0, dtype)  # constant rows: zero variance
    z = np.zeros(shape, dtype)  # zero rows: zero RMS and 2-norm
    D = shape[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        for y in (
            nbn.layer_norm(x, D, eps=0.0),
            nbn.rms_norm(z, D, eps=0.0),
            nbn.lp_normalize(z, eps=0.0),
            nbn.instance_norm(x.reshape(2, -1, 8), eps=0.0),
            nbn.group_norm(x.reshape(2, -1, 8), 1, eps=0.0),
            nbn.batch_norm(x, training=True, eps=0.0),
        ):
            assert np.isnan(y).all()
    # constant non-zero rows: RMS norm and the 2-norm have no centering
    np.testing.assert_allclose(nbn.rms_norm(x, D, eps=0.0), 1.0, rtol=1e-6)
    np.testing.assert_allclose(nbn.lp_normalize(x, eps=0.0), 1.0 / np.sqrt(D), rtol=1e-6)


def test_frame_key_determines_every_slot_type():
    """Task.address keys the two-pass ops' frames by axis_stats.frame_key
    (x's and the output's types only): two frames with one key must have the
    same numba type in every slot, or a task compiled for one would be run
    on the other's arguments."""
    from numbanorm.backends.cpu import axis_stats

    seen = {}
    for dt in (np.float32, np.float64):
        for ro in (False, True):
            x = np.ones((3, 600), dt)
            x.flags.writeable = not ro
            for K in (1, 4):
                for stats in (False, True):
                    for with_out in (False, True):
                        for lo in (None, -1.0):
                            nseg, L, rb = axis_stats.col_split(3, 600 // K, K, x.itemsize)
                            out = np.empty_like(x) if with_out else None
                            fr = axis_stats.frame(
                                x, K, L, nseg, rb, skipnan=stats, stats=stats, of=out, lo=lo, hi=lo, La=L
                            )
                            types = tuple(numba.typeof(a) for a in fr)
                            assert seen.setdefault(axis_stats.frame_key(fr), types) == types
    assert len(seen) == 4  # 2 dtypes x read-only x or not (an absent output is an empty one)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("R", [300, 1024, 40000])
def test_row_minmax_lanes_match_a_scalar_reference(dtype, R) -> None:
    """row_minmax's lane path (segments of >= 256 elements; 256 lanes from
    32768) gives each segment's min, max and non-NaN count exactly, NaN not
    taken (NaN for the segment unless skipnan), with Inf, -0.0 and an
    all-NaN segment among them."""
    from numbanorm.backends.cpu import axis_stats
    from numbanorm.backends.cpu.minmax import ROW_MINMAX_LANES_MIN

    rng = np.random.default_rng(R)
    P = 5
    x = (rng.standard_normal((P, R)) * 100).astype(dtype)
    x[1, 7] = np.nan
    x[1, R - 3] = np.inf
    x[2, :] = np.nan  # every value of a row
    x[3, 5] = -np.inf
    x[3, R // 2] = -0.0
    x[4, ::3] = np.nan
    assert R >= ROW_MINMAX_LANES_MIN
    for skipnan in (False, True):
        part = axis_stats.partials(x.reshape(P, R, 1), skipnan, minmax=True, want_moments=False)
        nseg = part.shape[2]
        seglen = -(-R // nseg)
        for p in range(P):
            for s in range(nseg):
                seg = x[p, s * seglen : min(R, (s + 1) * seglen)].astype(np.float64)
                ok = seg[~np.isnan(seg)]
                has_nan = ok.size < seg.size
                if has_nan and not skipnan:
                    assert np.isnan(part[4, p, s, 0]) and np.isnan(part[5, p, s, 0])
                elif ok.size == 0:  # (count 0: the merge makes it NaN)
                    assert part[4, p, s, 0] == np.inf and part[5, p, s, 0] == -np.inf
                else:
                    assert part[4, p, s, 0] == ok.min() and part[5, p, s, 0] == ok.max()
                assert part[0, p, s, 0] == (ok.size if skipnan else seg.size)
