"""CPU backend: ``@njit(parallel=True)`` kernels for the primitives of
``numbanorm.backends`` (see its docstring for the contract).

Numerical scheme, shared by every kernel: statistics of a cache-resident chunk
(``ROW_CHUNK`` elements of a row, or a block of rows x lanes) are computed
*exactly* with two passes in float64 (sum -> mean, then sum of squared
deviations), and chunks are combined with Chan's merge from
``numbanorm._stats``.  The second pass reads from L1/L2, so the kernels move
the bytes of a one-pass Welford at the speed of a vectorized loop (scalar
Welford is latency-bound, FIELD-NOTES).  Normalization arithmetic is float64:
``(x - mean)`` is formed before scaling so float32 data far from zero keeps its
digits (tests/test_accuracy.py).

Every kernel takes C-contiguous arrays; ``P, R, K`` follow the contract:
x3 is (P, R, K) reduced over R.  float16 has no CPU arithmetic in numba, so it
is widened to float32 on entry (a copy) and narrowed on exit.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import mmap
import threading

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .. import _outbuf
from .._config import (
    CACHE,
    CHAN_PIPE_CACHE_BYTES,
    CHAN_PIPE_MIN_ROW_BYTES,
    COL_BLOCK_BYTES,
    FASTMATH,
    FASTMATH_ELEMENTWISE,
    LANES,
    LINE_BYTES,
    MIN_TASK_ELEMS,
    PIPE_MAX_ROW_BYTES,
    PREFETCH_CHUNK_BYTES,
    PREFETCH_MIN_ROW_BYTES,
    ROW_CHUNK,
    SHIFT_MAX_GAIN,
    STREAM_MIN_BYTES,
)
from .._stats import chan_merge_dd, merge_mid, shifted_moments

_FM = set(FASTMATH)
_FME = set(FASTMATH_ELEMENTWISE)

# Every kernel compiles with error_model="numpy": 1/0 is inf and 0/0 NaN, as
# in NumPy and PyTorch (eps=0 on a constant row gives NaN, not an exception);
# numba's default raises ZeroDivisionError from inside the kernel.


# --------------------------------------------------------------------------
# streaming (non-temporal) stores
# --------------------------------------------------------------------------


@intrinsic
def _stream_store(typingctx, arr, idx, val):
    """``arr[idx] = val`` as a non-temporal store (LLVM ``!nontemporal``).

    ``arr`` 1-D, ``idx`` an integer, never negative (no wraparound).  Only
    for the span ``_stream_span`` returns: its first element is
    LINE_BYTES-aligned and its length is whole lines, so the vector stores
    LLVM makes of the loop (at multiples of their own width from the span's
    start) are aligned as claimed; x86's vector non-temporal stores fault on
    a misaligned address.
    """
    if not (
        isinstance(arr, types.Array)
        and arr.ndim == 1
        and isinstance(idx, types.Integer)
        and isinstance(val, (types.Float, types.Integer))
    ):
        return None

    def codegen(context, builder, sig, args):
        arrty, idxty, valty = sig.args
        ary = context.make_array(arrty)(context, builder, args[0])
        ind = context.cast(builder, args[1], idxty, types.intp)
        ptr = cgutils.get_item_pointer(
            context, builder, arrty, ary, [ind], wraparound=False, boundscheck=False
        )
        store = builder.store(context.cast(builder, args[2], valty, arrty.dtype), ptr, align=LINE_BYTES)
        store.set_metadata("nontemporal", builder.module.add_metadata([ir.IntType(32)(1)]))
        return context.get_dummy_value()

    return types.void(arr, idx, val), codegen


@intrinsic
def _prefetch(typingctx, arr, i, j):
    """Software prefetch of ``arr[i, j]``'s line (a 2-D array: no view of a
    row is made, whose reference counting costs ~50 ns) into L1 for reading
    (LLVM ``llvm.prefetch``, locality 3).  A hint: it never faults, so any
    index of a valid array is safe; indices are never negative."""
    if not (
        isinstance(arr, types.Array)
        and arr.ndim == 2
        and isinstance(i, types.Integer)
        and isinstance(j, types.Integer)
    ):
        return None

    def codegen(context, builder, sig, args):
        arrty, ity, jty = sig.args
        ary = context.make_array(arrty)(context, builder, args[0])
        inds = [
            context.cast(builder, args[1], ity, types.intp),
            context.cast(builder, args[2], jty, types.intp),
        ]
        ptr = cgutils.get_item_pointer(
            context, builder, arrty, ary, inds, wraparound=False, boundscheck=False
        )
        i8p = ir.PointerType(ir.IntType(8))
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        # (address, read, locality 3: keep in all levels, data cache)
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(arr, i, j), codegen


@njit(fastmath=_FM, cache=CACHE, error_model="numpy")
def _stream_span(addr, off, n, isz, stream):
    """(p, m): of n elements of isz bytes at address addr + off, ``[p, m)``
    is the span of whole LINE_BYTES-aligned lines to stream; ``[0, p)`` and
    ``[m, n)`` take ordinary stores.  (n, n): no streaming, when not
    ``stream``, for an unaligned array (address not a multiple of isz) and
    for fewer than 16 lines (three loops instead of one cost more than
    streaming saves)."""
    a = np.int64(addr) + off
    if not stream or a % isz != 0 or n * isz < 16 * LINE_BYTES:
        return n, n
    per = LINE_BYTES // isz
    p = ((LINE_BYTES - a % LINE_BYTES) % LINE_BYTES) // isz
    return p, p + (n - p) // per * per


@njit(cache=CACHE, error_model="numpy", inline="always")
def _line_span(p, m, lo, hi, per):
    """(a, b): the whole lines of a streamed span [p, m) (_stream_span; per
    elements a line) that lie inside [lo, hi), as absolute indices; a == b
    when there are none.  Pieces of a row written one after another (its
    segments, its chunks) stream [a, b) and store the rest ordinarily."""
    a = min(max(p + -(-max(lo - p, 0) // per) * per, lo), hi)
    b = max(min(p + (min(hi, m) - p) // per * per, hi), a)
    return a, b


def _streams(out) -> bool:
    """Write ``out`` with streaming stores (see _config.STREAM_MIN_BYTES)."""
    return out.nbytes >= STREAM_MIN_BYTES and out.flags.aligned


def _in_place(x, out) -> bool:
    """Is ``out`` x itself (out=x)?  In place, an output line was just read
    into the cache, and an ordinary store to it costs no extra read: there
    streaming stores measured slower (batch_norm eval 0.85x, layer norm with
    weights 0.93x the time without them; NOTES.md section 18).  The
    pipelined kernels keep them (without, layer norm took the row-by-row
    kernel at 1.7x the time)."""
    return out.__array_interface__["data"][0] == x.__array_interface__["data"][0]


def _load_mincore():
    try:
        f = ctypes.CDLL(None, use_errno=True).mincore
    except (OSError, AttributeError):  # no mincore (Windows)
        return None
    f.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
    f.restype = ctypes.c_int
    return f


_MINCORE = _load_mincore()


def _resident(a) -> bool:
    """Are the middle and last pages of ``a``'s memory resident?

    False for a fresh allocation that nothing has written yet (its pages are
    faulted in, zeroed, by the first store), and where mincore is missing.
    Not the first page: the allocator writes its header just before the data.
    """
    if _MINCORE is None or a.nbytes == 0:
        return False
    vec = ctypes.c_ubyte(0)
    ps = mmap.PAGESIZE
    for addr in (a.ctypes.data + a.nbytes // 2, a.ctypes.data + a.nbytes - 1):
        vec.value = 0
        if _MINCORE(addr - addr % ps, ps, ctypes.byref(vec)) != 0 or not vec.value & 1:
            return False
    return True


# --------------------------------------------------------------------------
# chunk-level helpers (inlined into the kernels)
# --------------------------------------------------------------------------


# Inner loops index a slice from 0: a loop over ``range(lo, hi)`` keeps
# numba's negative-index wraparound and does not vectorize (measured 4.7 vs
# 48 GB/s for a float32 sum, benchmarks/NOTES.md).


@njit(fastmath=_FM, cache=CACHE, error_model="numpy")
def _shift_ok(n, s1, s2):
    """May n values with shifted sums s1, s2 take ``_stats.shifted_moments``?

    Yes when the sums are finite and the condition number ``s2 / M2`` is at
    most SHIFT_MAX_GAIN, i.e. the shift lies within sqrt(GAIN - 1) standard
    deviations of these values' mean.  Sums over several blocks that each
    pass, about one shift, pass too: the pooled condition number is at most
    the largest block's (the pooled variance is at least the mean
    within-block variance), so accepted blocks are accumulated as plain sums.
    """
    # '&', not 'and': no branch, so a loop over columns vectorizes
    return (s2 < math.inf) & ((s2 - s1 * s1 / n) * SHIFT_MAX_GAIN >= s2)


@njit(fastmath=_FM, cache=CACHE, error_model="numpy")
def _absorb_shifted(n, mean, res, m2, tn, sh, t1, t2):
    """(count, mean, residual, M2) merged with tn values' accepted shifted sums."""
    cm, cr, q = shifted_moments(tn, sh, t1, t2)
    return chan_merge_dd(n, mean, res, m2, tn, cm, cr, q)


@njit(fastmath=_FM, cache=CACHE, error_model="numpy")
def _fold(a, k, L, K):
    """Sum of the lanes of column k: a[k], a[k + K], ... (lane layout, L = m*K)."""
    t = 0.0
    for j in range(k, L, K):
        t += a[j]
    return t


@njit(fastmath=_FM, cache=CACHE, error_model="numpy")
def _fold_into(a, out, m, K):
    """out[k] = a[k] + a[k + K] + ... + a[k + (m-1)K], added in that order
    (as _fold), for all K columns at once."""
    for k in range(K):
        out[k] = a[k]
    for i in range(1, m):
        ai = a[i * K : (i + 1) * K]
        for k in range(K):
            out[k] += ai[k]


@njit(fastmath=_FM, cache=CACHE, error_model="numpy")
def _fold_cols(a, out, m, L, K):
    """out[k] = _fold(a, k, L, K) for every column k."""
    if m <= 16:
        _fold_into(a, out, m, K)
    else:
        for k in range(K):
            out[k] = _fold(a, k, L, K)


@njit(fastmath=_FM, cache=CACHE, error_model="numpy")
def _spread(a, k, L, K, val):
    """Set the lanes of column k to val."""
    for j in range(k, L, K):
        a[j] = val


@njit(fastmath=_FM, cache=CACHE, error_model="numpy")
def _seg_moments(v, lo, hi):
    """(count, mean, mean residual, M2) of v[lo:hi].

    One pass per ROW_CHUNK chunk: shifted sums about a shift near the mean
    (v[lo], then the running mean rounded to v's dtype, so float32
    differences are exact), accumulated over the chunks that ``_shift_ok``
    accepts and turned into moments once (``_stats.shifted_moments``).  A
    chunk it refuses (shift too far from the chunk's mean: drift, sorted data,
    an outlier as v[lo]; or NaN/Inf) takes the corrected two-pass (Chan,
    Golub & LeVeque 1983, eq. 1.7) while it is cache-resident, and the shift
    moves to the running mean.  The second pass also sums the deviations
    ``c = sum(x - cm)``: the chunk mean is ``cm + c/n`` (kept unevaluated)
    and ``M2 = q - c^2/n``.  Parts are combined with ``chan_merge_dd``.
    """
    n = 0.0
    mean = 0.0
    res = 0.0
    m2 = 0.0
    sh = np.float64(v[lo])
    tn = 0.0
    t1 = 0.0
    t2 = 0.0
    for c0 in range(lo, hi, ROW_CHUNK):
        w = v[c0 : min(c0 + ROW_CHUNK, hi)]
        s1, s2 = _shifted_sums(w, sh)
        n, mean, res, m2, sh, tn, t1, t2 = _seg_step(w, s1, s2, n, mean, res, m2, sh, tn, t1, t2)
    if tn > 0.0:
        n, mean, res, m2 = _absorb_shifted(n, mean, res, m2, tn, sh, t1, t2)
    return n, mean, res, m2


@njit(fastmath=_FM, cache=CACHE, error_model="numpy")
def _seg_step(w, s1, s2, n, mean, res, m2, sh, tn, t1, t2):
    """One chunk w of _seg_moments, given its shifted sums s1, s2 about sh.

    State: (n, mean, res, m2) the merged moments so far, sh the shift, (tn,
    t1, t2) the accepted shifted sums not merged yet; the new state is
    returned.  A chunk that ``_shift_ok`` refuses flushes the accepted sums,
    takes the corrected two-pass over w and moves the shift to the running
    mean (rounded to w's dtype).
    """
    T = w.dtype.type
    cnt = float(w.size)
    if _shift_ok(cnt, s1, s2):
        return n, mean, res, m2, sh, tn + cnt, t1 + s1, t2 + s2
    if tn > 0.0:
        n, mean, res, m2 = _absorb_shifted(n, mean, res, m2, tn, sh, t1, t2)
    s = 0.0
    for i in range(w.size):
        s += np.float64(w[i])
    cm = s / cnt
    q = 0.0
    cc = 0.0
    for i in range(w.size):
        d = np.float64(w[i]) - cm
        q += d * d
        cc += d
    # q >= cc^2/n exactly (Cauchy-Schwarz); rounding may not cross 0
    n, mean, res, m2 = chan_merge_dd(n, mean, res, m2, cnt, cm, cc / cnt, max(q - cc * cc / cnt, 0.0))
    return n, mean, res, m2, np.float64(T(mean)), 0.0, 0.0, 0.0


@njit(fastmath=_FM, cache=CACHE, error_model="numpy")
def _seg_sumsq(w):
    """Sum of squares of w in float64 (RMS norm; no cancellation)."""
    s = 0.0
    for i in range(w.size):
        a = np.float64(w[i])
        s += a * a
    return s


# --------------------------------------------------------------------------
# moments
# --------------------------------------------------------------------------


@njit(parallel=True, fastmath=_FM, cache=CACHE, error_model="numpy")
def _row_moments(x2, nseg, cnt, mean, res, m2):
    """Per-(row, segment) moments of x2 (R, D); outputs are (R, nseg, 1).

    The plain scalar reduction vectorizes with 'reassoc' and reads at about
    3x the speed of the lane kernel for contiguous rows (NOTES.md).
    """
    R, D = x2.shape
    seglen = (D + nseg - 1) // nseg
    for t in prange(R * nseg):
        r = t // nseg
        s = t - r * nseg
        lo = min(D, s * seglen)
        hi = min(D, lo + seglen)
        cnt[r, s, 0], mean[r, s, 0], res[r, s, 0], m2[r, s, 0] = _seg_moments(x2[r], lo, hi)


@njit(fastmath=_FM, cache=CACHE, error_model="numpy")
def _rows4(v, base, L):
    """The four consecutive lane-rows of v starting at base (views)."""
    return (
        v[base : base + L],
        v[base + L : base + 2 * L],
        v[base + 2 * L : base + 3 * L],
        v[base + 3 * L : base + 4 * L],
    )


@njit(fastmath=_FM, cache=CACHE, error_model="numpy")
def _lane_sums(v, f0, f1, L, s):
    """s[j] += sum of v[f0 + i*L + j] over the lane-rows of [f0, f1).

    Four lane-rows per step: the L accumulators (too many for registers) are
    loaded and stored once per four rows instead of every row.
    """
    base = f0
    while base + 4 * L <= f1:
        v0, v1, v2, v3 = _rows4(v, base, L)
        for j in range(L):
            s[j] += (np.float64(v0[j]) + np.float64(v1[j])) + (np.float64(v2[j]) + np.float64(v3[j]))
        base += 4 * L
    for b in range(base, f1, L):
        vb = v[b : min(b + L, f1)]
        for j in range(vb.size):
            s[j] += np.float64(vb[j])


@njit(fastmath=_FM, cache=CACHE, error_model="numpy")
def _lane_devs(v, f0, f1, L, bm, q, dc):
    """q[j] += sum (x - bm[j])^2 and dc[j] += sum (x - bm[j]) over lane-rows."""
    base = f0
    while base + 4 * L <= f1:
        v0, v1, v2, v3 = _rows4(v, base, L)
        for j in range(L):
            m = bm[j]
            d0 = np.float64(v0[j]) - m
            d1 = np.float64(v1[j]) - m
            d2 = np.float64(v2[j]) - m
            d3 = np.float64(v3[j]) - m
            q[j] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3)
            dc[j] += (d0 + d1) + (d2 + d3)
        base += 4 * L
    _lane_shifted(v, base, f1, L, bm, dc, q)


@njit(fastmath=_FM, cache=CACHE, error_model="numpy")
def _lane_shifted(v, f0, f1, L, sh, s1, s2):
    """s1[j] += sum (x - sh[j]) and s2[j] += sum (x - sh[j])^2 over lane-rows:
    the one-pass shifted sums (_stats.shifted_moments).  One lane-row per
    step: unrolling four (as _lane_sums) measured slower here (3.7-3.9 vs
    2.9-3.1 ms for 128 MiB float32, NOTES.md section 11)."""
    for b in range(f0, f1, L):
        vb = v[b : min(b + L, f1)]
        for j in range(vb.size):
            d = np.float64(vb[j]) - sh[j]
            s2[j] += d * d
            s1[j] += d


@njit(fastmath=_FM, cache=CACHE, error_model="numpy")
def _lane_shifted2(v, fa0, fa1, fb0, fb1, L, sh, s1, s2):
    """_lane_shifted over [fa0, fa1) and [fb0, fb1) (each whole lane-rows
    but the last), a lane-row of each per step: the lane arrays are loaded
    and stored once per two lane-rows, and x is read as two sequential
    streams.  Two adjacent lane-rows per step instead (NOTES.md section 17)
    ran at half the speed from memory: the streams must be long (section
    19)."""
    n = min(fa1 - fa0, fb1 - fb0) // L * L
    for i in range(0, n, L):
        va = v[fa0 + i : fa0 + i + L]
        vb = v[fb0 + i : fb0 + i + L]
        for j in range(L):
            da = np.float64(va[j]) - sh[j]
            db = np.float64(vb[j]) - sh[j]
            s2[j] += da * da + db * db
            s1[j] += da + db
    _lane_shifted(v, fa0 + n, fa1, L, sh, s1, s2)
    _lane_shifted(v, fb0 + n, fb1, L, sh, s1, s2)


@njit(fastmath=_FME, cache=CACHE, error_model="numpy")
def _lane_minmax1(v, f0, f1, L, lmn, lmx, lz):
    """_lane_minmax's update over the lane-rows of one range [f0, f1), one
    per step (its ranges' ends, as _lane_shifted is _lane_shifted2's)."""
    for b in range(f0, f1, L):
        vb = v[b : min(b + L, f1)]
        for j in range(vb.size):
            a = vb[j]
            lmn[j] = np.fmin(a, lmn[j])
            lmx[j] = np.fmax(a, lmx[j])
            lz[j] += a - a


@njit(fastmath=_FME, cache=CACHE, error_model="numpy")
def _lane_minmax(v, fa0, fa1, fb0, fb1, L, lmn, lmx, lnan, lz):
    """Lane-wise min/max (NaN not taken) and NaN counts over the lane-rows
    of [fa0, fa1) and [fb0, fb1) (each whole lane-rows but the last).

    lmn, lmx, lz have x's dtype: min and max are exact in it, and float32
    lanes are twice as many per instruction as float64 ones.  A lane-row of
    each range per step (two sequential streams, as _lane_shifted2), and
    ``np.fmin``/``np.fmax`` (LLVM minnum/maxnum: NaN not taken) rather than
    a select: ``a if a < lo else lo`` became a masked store of lo (measured
    3.3 vs 2.7 ms for 128 MiB float32, NOTES.md section 13).  The NaN count
    is a second pass over the cache-resident block, taken only when the
    block holds a NaN or an Inf: ``lz[j] += x - x`` stays 0 otherwise.  No
    'reassoc' here: with it LLVM cancels ``x - x`` to 0 (caught by
    tests/test_kernels.py); every loop is elementwise over lanes and
    vectorizes without it.
    """
    lz[:] = 0
    n = min(fa1 - fa0, fb1 - fb0) // L * L
    for i in range(0, n, L):
        va = v[fa0 + i : fa0 + i + L]
        vb = v[fb0 + i : fb0 + i + L]
        for j in range(L):
            a = va[j]
            b = vb[j]
            lmn[j] = np.fmin(np.fmin(a, b), lmn[j])
            lmx[j] = np.fmax(np.fmax(a, b), lmx[j])
            lz[j] += (a - a) + (b - b)
    _lane_minmax1(v, fa0 + n, fa1, L, lmn, lmx, lz)
    _lane_minmax1(v, fb0 + n, fb1, L, lmn, lmx, lz)
    z = 0.0
    for j in range(L):
        z += np.float64(lz[j])
    if z == 0.0:
        return
    for f0, f1 in ((fa0, fa1), (fb0, fb1)):
        for b in range(f0, f1, L):
            vb = v[b : min(b + L, f1)]
            for j in range(vb.size):
                lnan[j] += 1.0 if vb[j] != vb[j] else 0.0


@njit(parallel=True, fastmath=_FM, cache=CACHE, error_model="numpy")
def _col_moments(xf, K, L, nchunk, rb, skipnan, minmax, want_moments, cnt, mean, res, m2, mn, mx):
    """Per-(p, chunk, k) moments of xf (P, R*K) seen as (P, R, K) over R.

    Lane layout: L = m*K lanes (m rows side by side; K = 1 is a row
    reduction), so every inner loop is an elementwise update of L lane
    accumulators: it vectorizes without reassociation, also for the
    NaN-skipping sums and the NaN-aware min/max.  Moments are one pass of
    shifted sums per block of ``rb`` rows (multiple of m), accumulated while
    every column's block passes ``_shift_ok`` (see _seg_moments); a refused
    block (NaN, Inf, drift) is redone with the exact two-pass while it is
    cache-resident, and the shifts move to the running means.  Outputs are
    (P, nchunk, K).
    """
    T = xf.dtype.type
    P, N = xf.shape
    R = N // K
    m = L // K
    rows_per = (R + nchunk - 1) // nchunk
    rows_per = ((rows_per + m - 1) // m) * m
    for t in prange(P * nchunk):
        p = t // nchunk
        c = t - p * nchunk
        r0 = min(R, c * rows_per)
        r1 = min(R, r0 + rows_per)
        v = xf[p]
        an = np.zeros(K)
        am = np.zeros(K)
        ar = np.zeros(K)
        aq = np.zeros(K)
        s = np.empty(L)
        ns = np.empty(L)
        q = np.empty(L)
        dc = np.empty(L)
        bm = np.empty(L)
        bn = np.empty(K)
        okc = np.zeros(K, dtype=np.bool_)
        cs = np.empty(K)
        cq = np.empty(K)
        colnan = np.zeros(K, dtype=np.bool_)
        ssel = np.empty(L)
        qsel = np.empty(L)
        dcsel = np.empty(L)
        # shifts (replicated into lanes) and the accepted shifted sums
        bsh = np.empty(L)
        for k in range(K):
            _spread(bsh, k, L, K, np.float64(v[r0 * K + k]) if r1 > r0 else 0.0)
        tn = np.zeros(K)
        t1 = np.zeros(K)
        t2 = np.zeros(K)
        lmn = np.empty(L, xf.dtype)
        lmx = np.empty(L, xf.dtype)
        lz = np.empty(L, xf.dtype)
        lmn[:] = np.inf
        lmx[:] = -np.inf
        lnan = np.zeros(L)
        # the task's rows in two halves [r0, rm), [rm, r1), read side by
        # side: block i is half-block i of each (rb rows in all), so x is
        # read as two long sequential streams (_lane_shifted2)
        rm = min(r1, r0 + ((r1 - r0 + 1) // 2 + m - 1) // m * m)
        hb = max(m, (rb // 2) // m * m)
        for a0 in range(r0, rm, hb):
            a1 = min(rm, a0 + hb)
            g0 = min(r1, rm + (a0 - r0))
            g1 = min(r1, g0 + hb)
            fa0 = a0 * K
            fa1 = a1 * K
            fb0 = g0 * K
            fb1 = g1 * K
            if minmax:
                _lane_minmax(v, fa0, fa1, fb0, fb1, L, lmn, lmx, lnan, lz)
            if not want_moments:
                continue
            # one pass of shifted sums about each column's shift, accumulated
            # while every column's block passes _shift_ok
            s[:] = 0.0
            q[:] = 0.0
            _lane_shifted2(v, fa0, fa1, fb0, fb1, L, bsh, s, q)
            nb = float((a1 - a0) + (g1 - g0))
            # fold the m lane groups into columns.  Few groups (K >= 16):
            # contiguous loops over the columns, in the order of a sequential
            # _fold (a strided _fold per column cost ~3.5 us per block at
            # K = 256, NOTES.md section 13).  Many groups (small K): _fold per
            # column, which LLVM vectorizes into several partial sums.
            _fold_cols(s, cs, m, L, K)
            _fold_cols(q, cq, m, L, K)
            # branch-free (selects), so the column loop vectorizes; a column
            # that is not accepted adds 0 (NaN or Inf sums are never added)
            nbad = 0
            for k in range(K):
                ss = cs[k]
                qq = cq[k]
                ok = _shift_ok(nb, ss, qq)
                okc[k] = ok
                tn[k] += nb if ok else 0.0
                t1[k] += ss if ok else 0.0
                t2[k] += qq if ok else 0.0
                nbad += 0 if ok else 1
            refused = nbad > 0
            if not refused:
                continue
            # a refused column: flush its accepted sums, then take its block
            # exactly (per column, so one column's NaN or drift never changes
            # the arithmetic of another: results stay bitwise independent)
            for k in range(K):
                if tn[k] > 0.0 and not okc[k]:
                    an[k], am[k], ar[k], aq[k] = _absorb_shifted(
                        an[k], am[k], ar[k], aq[k], tn[k], bsh[k], t1[k], t2[k]
                    )
                    tn[k] = 0.0
                    t1[k] = 0.0
                    t2[k] = 0.0
            # refused (NaN/Inf, or a block far from the running mean): the
            # exact two-pass on the cache-resident block.  Pass 1: lane sums.
            # NaN-skipping needs a select per element; it runs only for a
            # block where some column's plain sum shows a NaN (rare), and only
            # that column takes its result.
            s[:] = 0.0
            _lane_sums(v, fa0, fa1, L, s)
            _lane_sums(v, fb0, fb1, L, s)
            nanblock = False
            for k in range(K):
                ss = _fold(s, k, L, K)
                colnan[k] = skipnan and ss != ss
                nanblock = nanblock or colnan[k]
            if nanblock:
                ssel[:] = 0.0
                ns[:] = 0.0
                for f0, f1 in ((fa0, fa1), (fb0, fb1)):
                    for base in range(f0, f1, L):
                        vb = v[base : min(base + L, f1)]
                        for j in range(vb.size):
                            a = np.float64(vb[j])
                            ok = a == a
                            ssel[j] += a if ok else 0.0
                            ns[j] += 1.0 if ok else 0.0
            # fold lanes -> per-column block mean, replicated back into lanes
            for k in range(K):
                if colnan[k]:
                    ss = _fold(ssel, k, L, K)
                    nn = _fold(ns, k, L, K)
                else:
                    ss = _fold(s, k, L, K)
                    nn = nb
                bn[k] = nn
                _spread(bm, k, L, K, ss / nn if nn > 0.0 else 0.0)
            # pass 2 (cache-resident): squared deviations about the block mean
            # and their plain sum, the correction term of the corrected
            # two-pass algorithm (see _seg_moments)
            q[:] = 0.0
            dc[:] = 0.0
            _lane_devs(v, fa0, fa1, L, bm, q, dc)
            _lane_devs(v, fb0, fb1, L, bm, q, dc)
            if nanblock:
                qsel[:] = 0.0
                dcsel[:] = 0.0
                for f0, f1 in ((fa0, fa1), (fb0, fb1)):
                    for base in range(f0, f1, L):
                        vb = v[base : min(base + L, f1)]
                        for j in range(vb.size):
                            a = np.float64(vb[j])
                            d = a - bm[j] if a == a else 0.0
                            qsel[j] += d * d
                            dcsel[j] += d
            for k in range(K):
                if okc[k]:
                    continue
                if colnan[k]:
                    qq = _fold(qsel, k, L, K)
                    cc = _fold(dcsel, k, L, K)
                else:
                    qq = _fold(q, k, L, K)
                    cc = _fold(dc, k, L, K)
                nn = bn[k]
                if nn > 0.0:
                    an[k], am[k], ar[k], aq[k] = chan_merge_dd(
                        an[k], am[k], ar[k], aq[k], nn, bm[k], cc / nn, max(qq - cc * cc / nn, 0.0)
                    )
                # its next blocks shift about its running mean (x's dtype)
                _spread(bsh, k, L, K, np.float64(T(am[k])))
        for k in range(K):
            if tn[k] > 0.0:
                an[k], am[k], ar[k], aq[k] = _absorb_shifted(
                    an[k], am[k], ar[k], aq[k], tn[k], bsh[k], t1[k], t2[k]
                )
        if not want_moments:
            # min/max only: the count is what the NaN tally leaves
            for k in range(K):
                nk = 0.0
                for j in range(k, L, K):
                    nk += lnan[j]
                an[k] = float(r1 - r0) - nk if skipnan else float(r1 - r0)
        for k in range(K):
            cnt[p, c, k] = an[k]
            mean[p, c, k] = am[k]
            res[p, c, k] = ar[k]
            m2[p, c, k] = aq[k]
            if minmax:
                lo = np.inf
                hi = -np.inf
                nan = 0.0
                for j in range(k, L, K):
                    lo = min(lo, np.float64(lmn[j]))
                    hi = max(hi, np.float64(lmx[j]))
                    nan += lnan[j]
                if nan > 0.0 and not skipnan:
                    lo = math.nan
                    hi = math.nan
                mn[p, c, k] = lo
                mx[p, c, k] = hi


# numba's fallback 'workqueue' threading layer aborts the process when two
# Python threads launch parallel kernels at once (API: calls may run
# concurrently).  Launches are serialized until the layer in use is known to
# be thread-safe (OpenMP, TBB); guarded by tests/test_threads.py.
_LAUNCH_LOCK = threading.Lock()
_layer_threadsafe = False


def _launch(kernel, *args):
    global _layer_threadsafe
    if _layer_threadsafe:
        return kernel(*args)
    with _LAUNCH_LOCK:
        res = kernel(*args)
        try:
            _layer_threadsafe = numba.threading_layer() != "workqueue"
        except ValueError:  # no parallel region has run yet
            pass
        return res


def _threads() -> int:
    return numba.get_num_threads()


def _nsplit(outer: int, inner: int) -> int:
    """Pieces to cut each of ``outer`` items of ``inner`` elements into so
    that all threads are busy but no piece is smaller than MIN_TASK_ELEMS."""
    want = 4 * _threads()
    if outer >= want or inner <= MIN_TASK_ELEMS:
        return 1
    by_size = max(1, inner // MIN_TASK_ELEMS)
    return int(max(1, min(by_size, -(-want // max(outer, 1)))))


def _lanes(K: int) -> int:
    m = max(1, -(-LANES // K))
    return m * K


def _widen(x: np.ndarray) -> np.ndarray:
    """float16 has no numba CPU arithmetic: widen to float32 (a copy)."""
    if x.dtype == np.float16:
        return x.astype(np.float32)
    return x


def _col_split(P: int, R: int, K: int, isz: int):
    """(nseg, L, rb) of the moments kernel for x3 (P, R, K): segments per
    (p), lanes, rows per cache block; nseg is also the apply kernel's
    nchunk for the same view."""
    nseg = max(1, min(_nsplit(P, R * K), R))
    L = _lanes(K)
    m = L // K
    return nseg, L, max(m, (COL_BLOCK_BYTES // (L * isz)) * m)


@njit(cache=CACHE, error_model="numpy")
def _partials(P, nseg, K):
    """The moments kernel's (P, nseg, K) outputs: count, mean, residual, M2
    zero, min +inf, max -inf."""
    sh3 = (P, nseg, K)
    return (
        np.zeros(sh3),
        np.zeros(sh3),
        np.zeros(sh3),
        np.zeros(sh3),
        np.full(sh3, np.inf),
        np.full(sh3, -np.inf),
    )


def moments(x3, skipnan, minmax, want_moments=True):
    """Per-(p, k) (count, mean, M2[, min, max], mean residual) of x3 (P, R, K) over R.

    ``want_moments=False`` (with ``minmax``) computes only counts and min/max:
    one pass, for min-max scaling.
    """
    x3 = _widen(x3)
    P, R, K = x3.shape
    if P * R * K == 0:
        z = np.zeros((P, K))
        return z, z.copy(), z.copy(), np.full((P, K), np.inf), np.full((P, K), -np.inf), z.copy()
    nseg, L, rb = _col_split(P, R, K, x3.itemsize)
    cnt, mean, res, m2, mn, mx = _partials(P, nseg, K)
    if K == 1 and not skipnan and not minmax and want_moments:
        _launch(_row_moments, x3.reshape(P, R), nseg, cnt, mean, res, m2)
    else:
        _launch(
            _col_moments,
            x3.reshape(P, R * K),
            K,
            L,
            nseg,
            rb,
            skipnan,
            minmax,
            want_moments,
            cnt,
            mean,
            res,
            m2,
            mn,
            mx,
        )
    c, mu, r, q, lo, hi = merge_mid(cnt, mean, res, m2, mn, mx, minmax)
    if not minmax:
        lo = hi = None
    return c, mu, q, lo, hi, r


# --------------------------------------------------------------------------
# apply
# --------------------------------------------------------------------------


@njit(cache=CACHE, error_model="numpy", inline="always")
def _same(v, o):
    """Are 1-D arrays v and o the same memory (an in-place call)?"""
    return v.ctypes.data == o.ctypes.data and v.strides == o.strides


def _map1_py(vb, ob, h0, s0, t0, clip, lo, hi, nt):
    """ob = clip((vb - h0) * s0 + t0); streaming stores when ``nt``.

    In place (``vb`` is ``ob``) the loops read ob: LLVM then sees one
    array, where two that may overlap make it fall back to scalar code (a
    5x slower in-place layer_norm, NOTES.md section 16).
    """
    if nt:
        if clip:
            for j in range(vb.size):
                y = (vb[j] - h0) * s0 + t0
                y = lo if y < lo else y
                _stream_store(ob, j, hi if y > hi else y)
        else:
            for j in range(vb.size):
                _stream_store(ob, j, (vb[j] - h0) * s0 + t0)
    elif clip:
        for j in range(vb.size):
            y = (vb[j] - h0) * s0 + t0
            y = lo if y < lo else y
            ob[j] = hi if y > hi else y
    else:
        for j in range(vb.size):
            ob[j] = (vb[j] - h0) * s0 + t0


_map1 = njit(fastmath=_FME, cache=CACHE, error_model="numpy")(_map1_py)
_map1_one = njit(fastmath=_FME, error_model="numpy", inline="always")(_map1_py)


@njit(fastmath=_FME, cache=CACHE, error_model="numpy")
def _map1_same(ob, h0, s0, t0, clip, lo, hi, nt):
    """_map1 in place: ob is read and written by the same variable."""
    _map1_one(ob, ob, h0, s0, t0, clip, lo, hi, nt)


@njit(fastmath=_FME, error_model="numpy", inline="always")
def _map1_io(same, vb, ob, h0, s0, t0, clip, lo, hi, nt):
    """_map1, or _map1_same when ``same`` (in place, see _same)."""
    if same:
        _map1_same(ob, h0, s0, t0, clip, lo, hi, nt)
    else:
        _map1(vb, ob, h0, s0, t0, clip, lo, hi, nt)


def _mapL_py(vb, ob, hh, sc, sh, clip, lo, hi, nt):
    """ob = clip((vb - hh) * sc + sh) lane by lane (vb.size <= hh.size).

    In place (``vb`` is ``ob``) the loops read ob: LLVM then sees one
    array, where two that may overlap make it fall back to scalar code (a
    5x slower in-place layer_norm, NOTES.md section 16).
    """
    if nt:
        if clip:
            for j in range(vb.size):
                y = (vb[j] - hh[j]) * sc[j] + sh[j]
                y = lo if y < lo else y
                _stream_store(ob, j, hi if y > hi else y)
        else:
            for j in range(vb.size):
                _stream_store(ob, j, (vb[j] - hh[j]) * sc[j] + sh[j])
    elif clip:
        for j in range(vb.size):
            y = (vb[j] - hh[j]) * sc[j] + sh[j]
            y = lo if y < lo else y
            ob[j] = hi if y > hi else y
    else:
        for j in range(vb.size):
            ob[j] = (vb[j] - hh[j]) * sc[j] + sh[j]


_mapL = njit(fastmath=_FME, cache=CACHE, error_model="numpy")(_mapL_py)
_mapL_one = njit(fastmath=_FME, error_model="numpy", inline="always")(_mapL_py)


@njit(fastmath=_FME, cache=CACHE, error_model="numpy")
def _mapL_same(ob, hh, sc, sh, clip, lo, hi, nt):
    """_mapL in place: ob is read and written by the same variable."""
    _mapL_one(ob, ob, hh, sc, sh, clip, lo, hi, nt)


@njit(fastmath=_FME, error_model="numpy", inline="always")
def _mapL_io(same, vb, ob, hh, sc, sh, clip, lo, hi, nt):
    """_mapL, or _mapL_same when ``same`` (in place, see _same)."""
    if same:
        _mapL_same(ob, hh, sc, sh, clip, lo, hi, nt)
    else:
        _mapL(vb, ob, hh, sc, sh, clip, lo, hi, nt)


@njit(fastmath=_FME, cache=CACHE, error_model="numpy")
def _apply_row(v, o, ch, sc, sh, clip, lo, hi, stream):
    """o = clip((v - ch) * sc + sh) for one span with one parameter set (the
    apply kernel's formula, x's dtype); whole aligned lines by streaming
    stores when ``stream``."""
    p, m = _stream_span(o.ctypes.data, 0, v.size, o.itemsize, stream)
    same = _same(v, o)
    _map1_io(same, v[:p], o[:p], ch, sc, sh, clip, lo, hi, False)
    if p < v.size:
        _map1_io(same, v[p:m], o[p:m], ch, sc, sh, clip, lo, hi, True)
        _map1_io(same, v[m:], o[m:], ch, sc, sh, clip, lo, hi, False)


@njit(fastmath=_FM, cache=CACHE, error_model="numpy")
def _rotated(a, q):
    """a rolled left by q: lane j of the result is lane (j + q) % L of a."""
    L = a.size
    r = np.empty_like(a)
    for j in range(L):
        k = j + q
        r[j] = a[k - L if k >= L else k]
    return r


@njit(parallel=True, fastmath=_FME, cache=CACHE, error_model="numpy")
def _apply(xf, of, K, L, nchunk, ch, scale, shift, clip, lo, hi, stream):
    """of = clip((x - ch) * scale + shift) over xf (P, R*K) as (P, R, K).

    Parameters are lane-replicated (P, L) arrays of x's dtype: lane j holds
    column j % K, so the inner loop is L long and vectorizes for any K.  ``ch``
    is the center rounded to x's dtype (``x - ch`` is exact near the center);
    the rest of the center is folded into ``shift`` on the host.

    ``stream``: write whole aligned lines of ``of`` with streaming stores
    (_stream_span).  The lane path then starts its L-chunks at the first
    aligned element, with the lane parameters rotated to match, so that every
    full chunk is whole lines (when L * itemsize is a multiple of a line).
    """
    P, N = xf.shape
    R = N // K
    m = L // K
    isz = of.itemsize
    rows_per = (R + nchunk - 1) // nchunk
    rows_per = ((rows_per + m - 1) // m) * m
    for t in prange(P * nchunk):
        p = t // nchunk
        c = t - p * nchunk
        f0 = min(R, c * rows_per) * K
        f1 = min(R, c * rows_per + rows_per) * K
        v = xf[p]
        o = of[p]
        hh = ch[p]
        sc = scale[p]
        sh = shift[p]
        if K == 1:
            # one parameter set per (p): scalar parameters, no lane arrays
            _apply_row(v[f0:f1], o[f0:f1], hh[0], sc[0], sh[0], clip, lo, hi, stream)
            continue
        same = _same(v, o)
        q = 0
        lines = stream and (L * isz) % LINE_BYTES == 0 and f1 - f0 >= 2 * L
        if lines:
            q, _ = _stream_span(o.ctypes.data, f0 * isz, L, isz, True)
            if q >= L:  # no aligned element: ordinary stores
                lines = False
                q = 0
            elif q > 0:
                _mapL_io(same, v[f0 : f0 + q], o[f0 : f0 + q], hh, sc, sh, clip, lo, hi, False)
                hh = _rotated(hh, q)
                sc = _rotated(sc, q)
                sh = _rotated(sh, q)
        for base in range(f0 + q, f1, L):
            vb = v[base : min(base + L, f1)]
            ob = o[base : min(base + L, f1)]
            # a full chunk is whole lines; the last, partial one ordinary
            _mapL_io(same, vb, ob, hh, sc, sh, clip, lo, hi, lines and vb.size == L)


def apply(x3, out3, center, scale, shift, lo=None, hi=None):
    """out3 = clip((x3 - center) * scale + shift, lo, hi); params (P, K) float64."""
    P, R, K = x3.shape
    if P * R * K == 0:
        return
    narrow = None
    if x3.dtype == np.float16:
        x3 = x3.astype(np.float32)
        narrow, out3 = out3, np.empty(x3.shape, np.float32)
    dt = x3.dtype
    L = _lanes(K) if K > 1 else 1  # K == 1 takes the kernel's scalar path
    rep = L // K

    def lanes(a):
        return a if rep == 1 else np.ascontiguousarray(np.tile(a, (1, rep)))

    c64 = np.asarray(center, np.float64).reshape(P, K)
    s64 = np.asarray(scale, np.float64).reshape(P, K)
    ch = c64.astype(dt)
    # (x - c) * s + t == (x - ch) * s + (t - (c - ch) * s): the part of the
    # center that x's dtype cannot hold moves into the shift, in float64
    with np.errstate(invalid="ignore", over="ignore"):
        # (an exactly representable center moves nothing: 0 * inf is no NaN)
        t64 = np.asarray(shift, np.float64).reshape(P, K) - np.where(c64 == ch, 0.0, (c64 - ch) * s64)
    nchunk = max(1, min(_nsplit(P, R * K), R))
    clip = lo is not None or hi is not None
    _launch(
        _apply,
        x3.reshape(P, R * K),
        out3.reshape(P, R * K),
        K,
        L,
        nchunk,
        lanes(ch),
        lanes(s64.astype(dt)),
        lanes(t64.astype(dt)),
        clip,
        dt.type(-np.inf if lo is None else lo),
        dt.type(np.inf if hi is None else hi),
        # streaming only into resident pages, as in row_norm: into a fresh
        # output it measured 11 % slower (NOTES.md section 13); and not in
        # place (_in_place)
        narrow is None and _streams(out3) and _resident(out3) and not _in_place(x3, out3),
    )
    if narrow is not None:
        narrow[...] = out3


# --------------------------------------------------------------------------
# fused layer / RMS norm
# --------------------------------------------------------------------------


# row_norm takes the affine parameters as (RW, S) arrays: row r uses
# W[r % RW], and its D elements fall into S equal segments with one weight
# each.  Layer/RMS norm: W (1, D) (segment length 1); instance norm (NCHW):
# W (C, 1); group norm (NCHW): W (G, C/G) over H*W-long segments.  One fused
# kernel therefore serves the four norms whose groups are contiguous rows.
ROW_NORM_GROUPED = True


@njit(fastmath=_FME, cache=CACHE, error_model="numpy")
def _affine_row(v, o, mu, rs, wr, br, stream, x2, nr):
    """o = (v - mu) * rs * w + b for one row; w, b (x's dtype) per segment.

    Arithmetic in x's dtype (float32 data: twice the SIMD width of float64),
    exact for data far from zero: mu is split into hi + lo parts of that
    dtype and ``(v - hi) - lo`` is formed first (``v - hi`` is exact by
    Sterbenz's lemma when v is near mu).  No 'reassoc' here (_config).
    ``stream``: streaming stores for the whole aligned lines of a row with
    one weight per element (_stream_span).  ``x2[nr]``: the next row (nr <
    0: none); a row of >= PREFETCH_MIN_ROW_BYTES with one weight per element
    is written in chunks of PREFETCH_CHUNK_BYTES, each after a prefetch of
    the next row's matching lines (NOTES.md section 15).
    """
    T = v.dtype.type
    mh = T(mu)
    ml = T(mu - mh)
    r = T(rs)
    S = wr.size
    seg = v.size // S
    same = _same(v, o)
    if seg == 1:
        n = v.size
        p, m = _stream_span(o.ctypes.data, 0, n, o.itemsize, True) if stream else (0, n)
        _affine_vec_io(same, v[:p], o[:p], mh, ml, r, wr[:p], br[:p], False)
        if nr >= 0 and n * v.itemsize >= PREFETCH_MIN_ROW_BYTES:
            ch = PREFETCH_CHUNK_BYTES // v.itemsize  # whole lines
            per = LINE_BYTES // v.itemsize
            for c0 in range(p, m, ch):
                c1 = min(m, c0 + ch)
                for j in range(c0, c1, per):
                    _prefetch(x2, nr, j)
                _affine_vec_io(same, v[c0:c1], o[c0:c1], mh, ml, r, wr[c0:c1], br[c0:c1], stream)
        else:
            _affine_vec_io(same, v[p:m], o[p:m], mh, ml, r, wr[p:m], br[p:m], stream)
        _affine_vec_io(same, v[m:], o[m:], mh, ml, r, wr[m:], br[m:], False)
    else:
        for s in range(S):
            a = r * wr[s]
            b = br[s]
            vs = v[s * seg : (s + 1) * seg]
            os = o[s * seg : (s + 1) * seg]
            for d in range(vs.size):
                os[d] = ((vs[d] - mh) - ml) * a + b


def _affine_vec_py(v, o, mh, ml, r, w, b, nt):
    """o = ((v - mh) - ml) * (r * w) + b element by element; streaming
    stores when ``nt`` (o then starts on a line and is whole lines).

    In place (``v`` is ``o``) the loops read o: LLVM then sees one
    array, where two that may overlap make it fall back to scalar code (a
    5x slower in-place layer_norm, NOTES.md section 16).
    """
    if nt:
        for d in range(v.size):
            _stream_store(o, d, ((v[d] - mh) - ml) * (r * w[d]) + b[d])
    else:
        for d in range(v.size):
            o[d] = ((v[d] - mh) - ml) * (r * w[d]) + b[d]


_affine_vec = njit(fastmath=_FME, cache=CACHE, error_model="numpy")(_affine_vec_py)
_affine_vec_one = njit(fastmath=_FME, error_model="numpy", inline="always")(_affine_vec_py)


@njit(fastmath=_FME, cache=CACHE, error_model="numpy")
def _affine_vec_same(o, mh, ml, r, w, b, nt):
    """_affine_vec in place: o is read and written by the same variable."""
    _affine_vec_one(o, o, mh, ml, r, w, b, nt)


@njit(fastmath=_FME, error_model="numpy", inline="always")
def _affine_vec_io(same, v, o, mh, ml, r, w, b, nt):
    """_affine_vec, or _affine_vec_same when ``same`` (in place, see _same)."""
    if same:
        _affine_vec_same(o, mh, ml, r, w, b, nt)
    else:
        _affine_vec(v, o, mh, ml, r, w, b, nt)


@njit(fastmath=_FM, cache=CACHE, error_model="numpy")
def _row_pnorm(v, p):
    """p-norm of one row with NaN left out (API section 3).

    The plain sum vectorizes; only a row whose sum shows a NaN is summed
    again with the NaN test (a select in a reduction does not vectorize).
    """
    s = 0.0
    if p == np.inf:
        for i in range(v.size):
            a = abs(np.float64(v[i]))
            s = a if a > s else s  # NaN compares False: left out
        return s
    if p == 2.0:
        for i in range(v.size):
            a = np.float64(v[i])
            s += a * a
    elif p == 1.0:
        for i in range(v.size):
            s += abs(np.float64(v[i]))
    else:
        for i in range(v.size):
            s += abs(np.float64(v[i])) ** p
    if s != s:
        s = 0.0
        for i in range(v.size):
            a = abs(np.float64(v[i]))
            if a == a:
                s += a * a if p == 2.0 else (a if p == 1.0 else a**p)
    if p == 1.0:
        return s
    if p == 2.0:
        return math.sqrt(s)
    return s ** (1.0 / p)


@njit(fastmath=_FM, cache=CACHE, error_model="numpy")
def _row_stats_direct(x2, r, mode, eps):
    """(mean, rstd) of row r of x2 with 2-D indexing: no array views.

    ``mode``: 0 layer norm (mean, 1/std), > 0 RMS norm (0, 1/rms).

    For rows of one ROW_CHUNK: a view per row costs reference-count updates
    that dominated short rows (~135 ns per 64-element row, NOTES.md).
    """
    D = x2.shape[1]
    s = 0.0
    if mode > 0.0:
        for d in range(D):
            a = np.float64(x2[r, d])
            s += a * a
        return 0.0, 1.0 / math.sqrt(s / D + eps)
    # one pass of sums shifted by the row's first value (_seg_moments); the
    # exact two-pass when _shift_ok refuses (first value an outlier, NaN/Inf)
    sh = np.float64(x2[r, 0])
    s2 = 0.0
    for d in range(D):
        e = np.float64(x2[r, d]) - sh
        s += e
        s2 += e * e
    if _shift_ok(float(D), s, s2):
        return sh + s / D, 1.0 / math.sqrt(max(s2 - s * s / D, 0.0) / D + eps)
    s = 0.0
    for d in range(D):
        s += np.float64(x2[r, d])
    cm = s / D
    q = 0.0
    for d in range(D):
        e = np.float64(x2[r, d]) - cm
        q += e * e
    return cm, 1.0 / math.sqrt(q / D + eps)


@njit(fastmath=_FME, cache=CACHE, error_model="numpy")
def _affine_direct(x2, o2, r, mu, rs, W, B, rw):
    """_affine_row for row r with 2-D indexing (weights per element, or one
    per row); no 'reassoc' (see _affine_row)."""
    T = x2.dtype.type
    mh = T(mu)
    ml = T(mu - mh)
    rr = T(rs)
    D = x2.shape[1]
    if W.shape[1] == 1:
        a = rr * W[rw, 0]
        b = B[rw, 0]
        for d in range(D):
            o2[r, d] = ((x2[r, d] - mh) - ml) * a + b
    else:
        for d in range(D):
            o2[r, d] = ((x2[r, d] - mh) - ml) * (rr * W[rw, d]) + B[rw, d]


@njit(fastmath=_FM, cache=CACHE, error_model="numpy")
def _row_norm_one(x2, o2, W, B, eps, mode, mean_out, rstd_out, r, stream):
    """Statistics and output of row r of x2 (R, D), fused.

    ``mode``: 0 layer norm, > 0 RMS norm, -p lp_normalize with that p.
    ``stream``: streaming stores for the whole aligned lines of a row with
    one weight per element (_affine_row).

    The row (<= a few hundred KiB) stays in L1/L2 between the statistics and
    the output loop, so x is read from DRAM once and y written once.
    """
    D = x2.shape[1]
    S = W.shape[1]
    stream = stream and S == D and S > 1
    if (
        not stream
        and D <= ROW_CHUNK
        and D * x2.itemsize < PREFETCH_MIN_ROW_BYTES
        and mode >= 0.0
        and (S == 1 or S == D)
    ):
        mu, rs = _row_stats_direct(x2, r, mode, eps)
        mean_out[r] = mu
        rstd_out[r] = rs
        _affine_direct(x2, o2, r, mu, rs, W, B, r % W.shape[0])
        return
    v = x2[r]
    if mode < 0.0:
        # lp_normalize: mode holds -p
        mu = 0.0
        rs = 1.0 / max(_row_pnorm(v, -mode), eps)
    elif mode > 0.0:
        mu = 0.0
        rs = 1.0 / math.sqrt(_seg_sumsq(v) / D + eps)
    else:
        n, mu, _, q = _seg_moments(v, 0, D)
        rs = 1.0 / math.sqrt(q / D + eps)
    mean_out[r] = mu
    rstd_out[r] = rs
    RW = W.shape[0]
    # the next row's lines are prefetched while this row is written (the last
    # row prefetches itself: already cached)
    nxt = min(r + 1, x2.shape[0] - 1)
    _affine_row(v, o2[r], mu, rs, W[r % RW], B[r % RW], stream, x2, nxt)


@njit(parallel=True, fastmath=_FM, cache=CACHE, error_model="numpy")
def _row_norm(x2, o2, W, B, eps, mode, mean_out, rstd_out, stream):
    """Layer/RMS/instance/group norm of the rows of x2 (R, D), rows in parallel."""
    for r in prange(x2.shape[0]):
        _row_norm_one(x2, o2, W, B, eps, mode, mean_out, rstd_out, r, stream)


# Small inputs run without threads: waking the pool costs more than the work.
# A separate function, not njit(_row_norm.py_func): two dispatchers of one
# py_func share one on-disk cache entry, and the serial build was then loaded
# for large inputs too (found by the benchmark suite; tests/test_kernels.py).
@njit(fastmath=_FM, cache=CACHE, error_model="numpy")
def _row_norm_serial(x2, o2, W, B, eps, mode, mean_out, rstd_out):
    """Serial twin of _row_norm for inputs below MIN_TASK_ELEMS."""
    for r in range(x2.shape[0]):
        _row_norm_one(x2, o2, W, B, eps, mode, mean_out, rstd_out, r, False)


@njit(fastmath=_FM, cache=CACHE, error_model="numpy")
def _row_norm_small(x2, o2, W, B, eps, mode, store, mean_out, rstd_out):
    """Layer/RMS/instance/group norm of a small x2 (R, D), serial, in one loop nest.

    For inputs below MIN_TASK_ELEMS, where _row_norm_serial's per-row helper
    calls cost ~100 ns a row (NOTES.md section 10).  Statistics are a plain
    two-pass in float64 (rows this short are cache-resident); the output is
    formed in float64 as ``(x - mean) * (rstd * w) + b`` and rounded once, so
    there is no hi/lo mean split for 'reassoc' to fold: the whole kernel can
    take FASTMATH and LLVM keeps it in one vectorized nest.

    ``mode``: 0 layer norm, 1 RMS norm, -2 the 2-norm (lp_normalize p=2, NaN
    left out of the norm).

    W, B: (RW, S), S dividing D (one weight per D/S-long segment).  ``store``:
    write mean/rstd (else mean_out/rstd_out are never touched).
    """
    R, D = x2.shape
    RW, S = W.shape
    seg = D // S
    for r in range(R):
        rw = r % RW
        s = 0.0
        if mode != 0.0:
            for d in range(D):
                a = np.float64(x2[r, d])
                s += a * a
            cm = 0.0
            if mode > 0.0:
                rs = 1.0 / math.sqrt(s / D + eps)
            else:
                if s != s:  # NaN left out of the norm (API section 3)
                    s = 0.0
                    for d in range(D):
                        a = np.float64(x2[r, d])
                        s += a * a if a == a else 0.0
                rs = 1.0 / max(math.sqrt(s), eps)
        else:
            for d in range(D):
                s += np.float64(x2[r, d])
            cm = s / D
            q = 0.0
            for d in range(D):
                e = np.float64(x2[r, d]) - cm
                q += e * e
            rs = 1.0 / math.sqrt(q / D + eps)
        if store:
            mean_out[r] = cm
            rstd_out[r] = rs
        if seg == 1:
            for d in range(D):
                o2[r, d] = (np.float64(x2[r, d]) - cm) * (rs * np.float64(W[rw, d])) + np.float64(B[rw, d])
        else:
            for k in range(S):
                a = rs * np.float64(W[rw, k])
                b = np.float64(B[rw, k])
                base = k * seg
                for j in range(seg):
                    o2[r, base + j] = (np.float64(x2[r, base + j]) - cm) * a + b


@njit(parallel=True, fastmath=_FM, cache=CACHE, error_model="numpy")
def _row_norm_seg(x2, o2, W, B, nseg, mean, rstd):
    """Output pass for few long rows: each row split into ``nseg`` tasks
    aligned to its weight segments."""
    R, D = x2.shape
    RW, S = W.shape
    # task boundaries in whole weight segments; a row with one weight (S == 1)
    # splits anywhere
    units = D if S == 1 else S
    seg = 1 if S == 1 else D // S
    per = (units + nseg - 1) // nseg
    for t in prange(R * nseg):
        r = t // nseg
        k = t - r * nseg
        u0 = min(units, k * per)
        u1 = min(units, u0 + per)
        _affine_row(
            x2[r, u0 * seg : u1 * seg],
            o2[r, u0 * seg : u1 * seg],
            mean[r],
            rstd[r],
            W[r % RW, 0:1] if S == 1 else W[r % RW, u0:u1],
            B[r % RW, 0:1] if S == 1 else B[r % RW, u0:u1],
            False,
            x2,
            -1,  # no prefetch: the tasks of a row run side by side
        )


# --------------------------------------------------------------------------
# software-pipelined row kernel: statistics of row r+1 in the loop that
# writes row r (benchmarks/NOTES.md section 13)
# --------------------------------------------------------------------------


@njit(fastmath=_FME, cache=CACHE, error_model="numpy")
def _hilo(v, mh, ml, a, b):
    """((v - mh) - ml) * a + b without 'reassoc', which could fold the mean's
    hi/lo split into one rounded subtraction (see _affine_row).  Called per
    element from 'reassoc' loops: LLVM inlines it and keeps its flags."""
    return ((v - mh) - ml) * a + b


def _pipe_scl_py(u, v, o, sh, mh, ml, a, b, nt):
    """Shifted sums (s1, s2) of u about sh, while o = ((v - mu) * a + b with
    one weight a = r * w and bias b for the whole span; streaming stores when
    ``nt``.

    In place (``v`` is ``o``) the loops read o: LLVM then sees one
    array, where two that may overlap make it fall back to scalar code (a
    5x slower in-place layer_norm, NOTES.md section 16).
    """
    s1 = 0.0
    s2 = 0.0
    if nt:
        for d in range(u.size):
            e = np.float64(u[d]) - sh
            s1 += e
            s2 += e * e
            _stream_store(o, d, _hilo(v[d], mh, ml, a, b))
    else:
        for d in range(u.size):
            e = np.float64(u[d]) - sh
            s1 += e
            s2 += e * e
            o[d] = _hilo(v[d], mh, ml, a, b)
    return s1, s2


_pipe_scl = njit(fastmath=_FM, cache=CACHE, error_model="numpy")(_pipe_scl_py)
_pipe_scl_one = njit(fastmath=_FM, error_model="numpy", inline="always")(_pipe_scl_py)


@njit(fastmath=_FM, cache=CACHE, error_model="numpy")
def _pipe_scl_same(u, o, sh, mh, ml, a, b, nt):
    """_pipe_scl in place: o is read and written by the same variable."""
    return _pipe_scl_one(u, o, o, sh, mh, ml, a, b, nt)


@njit(fastmath=_FM, error_model="numpy", inline="always")
def _pipe_scl_io(same, u, v, o, sh, mh, ml, a, b, nt):
    """_pipe_scl, or _pipe_scl_same when ``same`` (in place, see _same)."""
    if same:
        return _pipe_scl_same(u, o, sh, mh, ml, a, b, nt)
    return _pipe_scl(u, v, o, sh, mh, ml, a, b, nt)


@njit(fastmath=_FM, cache=CACHE, error_model="numpy")
def _pipe_row(u, v, o, sh, mu, rs, wr, br, stream, x2, nn):
    """Shifted sums of row u while row v is normalized into o.

    wr, br: the row's (S,) weights, one per D/S-long segment (row_norm sends
    rows with fewer weights than elements here; one weight per element takes
    the row-by-row kernel, NOTES.md section 13).  Whole aligned lines of o
    take streaming stores when ``stream`` (_stream_span), the rest ordinary
    ones.  ``x2[nn]``: the row after u; rows of >= PREFETCH_MIN_ROW_BYTES
    stream in PREFETCH_CHUNK_BYTES chunks, each after a prefetch of its
    matching lines (as _affine_row; NOTES.md section 15).
    """
    T = v.dtype.type
    mh = T(mu)
    ml = T(mu - mh)
    rr = T(rs)
    n = v.size
    p, m = _stream_span(o.ctypes.data, 0, n, o.itemsize, stream)
    S = wr.size
    seg = n // S
    per = LINE_BYTES // o.itemsize
    pf = n * o.itemsize >= PREFETCH_MIN_ROW_BYTES
    same = _same(v, o)
    s1 = 0.0
    s2 = 0.0
    for k in range(S):
        lo = k * seg
        a = rr * wr[k]
        b = br[k]
        uk = u[lo : lo + seg]
        vk = v[lo : lo + seg]
        ok = o[lo : lo + seg]
        # the streamed part of the segment: its whole lines inside [p, m)
        pk, mk = _line_span(p, m, lo, lo + seg, per)
        pk -= lo
        mk -= lo
        t1, t2 = _pipe_scl_io(same, uk[:pk], vk[:pk], ok[:pk], sh, mh, ml, a, b, False)
        s1 += t1
        s2 += t2
        # the streamed part in chunks, each after prefetching nn's lines (or
        # in one piece: short rows)
        ch = PREFETCH_CHUNK_BYTES // o.itemsize if pf else max(mk - pk, 1)
        for c0 in range(pk, mk, ch):
            c1 = min(mk, c0 + ch)
            if pf:
                for j in range(lo + c0, lo + c1, per):
                    _prefetch(x2, nn, j)
            t1, t2 = _pipe_scl_io(same, uk[c0:c1], vk[c0:c1], ok[c0:c1], sh, mh, ml, a, b, True)
            s1 += t1
            s2 += t2
        t1, t2 = _pipe_scl_io(same, uk[mk:], vk[mk:], ok[mk:], sh, mh, ml, a, b, False)
        s1 += t1
        s2 += t2
    return s1, s2


@njit(fastmath=_FM, cache=CACHE, error_model="numpy")
def _shifted_sums(u, sh):
    """(sum(u - sh), sum((u - sh)**2)) in float64."""
    s1 = 0.0
    s2 = 0.0
    for d in range(u.size):
        e = np.float64(u[d]) - sh
        s1 += e
        s2 += e * e
    return s1, s2


@njit(fastmath=_FM, cache=CACHE, error_model="numpy")
def _pipe_shift(u, mode):
    """The shift of row u's sums: its first value (layer norm), 0 (sums of
    squares: RMS norm, the 2-norm)."""
    return np.float64(u[0]) if mode == 0.0 else 0.0


@njit(fastmath=_FM, cache=CACHE, error_model="numpy")
def _pipe_stats(u, mode, eps, sh, s1, s2):
    """(mean, rstd) of row u from its sums about sh (_pipe_row).

    ``mode``: 0 layer norm, 1 RMS norm, -2 the 2-norm (lp_normalize).  Layer
    norm takes the one-pass shifted moments when ``_shift_ok`` accepts them,
    else the exact ``_seg_moments`` of the row (still in L2); a 2-norm with NaN
    is summed again without the NaN (_row_pnorm).
    """
    D = float(u.size)
    if mode > 0.0:
        return 0.0, 1.0 / math.sqrt(s2 / D + eps)
    if mode < 0.0:
        if s2 != s2:
            return 0.0, 1.0 / max(_row_pnorm(u, 2.0), eps)
        return 0.0, 1.0 / max(math.sqrt(s2), eps)
    if _shift_ok(D, s1, s2):
        return sh + s1 / D, 1.0 / math.sqrt(max(s2 - s1 * s1 / D, 0.0) / D + eps)
    _, mu, _, q = _seg_moments(u, 0, u.size)
    return mu, 1.0 / math.sqrt(q / D + eps)


@njit(parallel=True, fastmath=_FM, cache=CACHE, error_model="numpy")
def _row_norm_pipe(x2, o2, W, B, eps, mode, mean_out, rstd_out, ntask, stream):
    """Layer/RMS/instance/group norm and the 2-norm of the rows of x2 (R, D),
    software-pipelined: each task walks a block of rows and, in one loop per
    row, sums row r+1 (from memory) while writing row r (from L1/L2).  Reads
    of x and writes of y interleave finely, as in a copy; a row-by-row kernel
    has a read-only phase and a write-only phase per row instead (NOTES.md
    section 13).  ``stream``: streaming stores for whole aligned lines.
    """
    R = x2.shape[0]
    RW = W.shape[0]
    per = (R + ntask - 1) // ntask
    for t in prange(ntask):
        r0 = t * per
        r1 = min(R, r0 + per)
        if r0 >= r1:
            continue
        u = x2[r0]
        sh = _pipe_shift(u, mode)
        s1, s2 = _shifted_sums(u, sh)
        mu, rs = _pipe_stats(u, mode, eps, sh, s1, s2)
        for r in range(r0, r1):
            mean_out[r] = mu
            rstd_out[r] = rs
            # the block's last row sums itself (from L1), and the sums are unused
            u = x2[min(r + 1, r1 - 1)]
            sh = _pipe_shift(u, mode)
            # the row after next is prefetched while this one is written
            s1, s2 = _pipe_row(
                u, x2[r], o2[r], sh, mu, rs, W[r % RW], B[r % RW], stream, x2, min(r + 2, r1 - 1)
            )
            mu, rs = _pipe_stats(u, mode, eps, sh, s1, s2)


# --------------------------------------------------------------------------
# small per-channel calls: one serial kernel each (NOTES.md section 13)
# --------------------------------------------------------------------------


@njit(fastmath=_FM, cache=CACHE, error_model="numpy")
def _chan_moments_small(x3, skipnan, cnt, mean, m2):
    """Per-channel (count, mean, M2) of x3 (A, C, S) over A and S: the
    corrected two-pass in float64 (Chan, Golub & LeVeque 1983, eq. 1.7),
    NaN left out when ``skipnan``.  A channel with no values gets NaN."""
    A, C, S = x3.shape
    cnt[:] = 0.0
    mean[:] = 0.0
    m2[:] = 0.0
    dc = np.zeros(C)
    if S == 1:
        # channels last: the inner loops run along the channels (vectorize)
        x2 = x3.reshape(A, C)
        for a in range(A):
            for c in range(C):
                v = np.float64(x2[a, c])
                ok = v == v or not skipnan
                mean[c] += v if ok else 0.0
                cnt[c] += 1.0 if ok else 0.0
        for c in range(C):
            mean[c] = mean[c] / cnt[c] if cnt[c] > 0.0 else math.nan
        for a in range(A):
            for c in range(C):
                v = np.float64(x2[a, c])
                d = v - mean[c] if (v == v or not skipnan) else 0.0
                m2[c] += d * d
                dc[c] += d
    else:
        for a in range(A):
            for c in range(C):
                s = 0.0
                k = 0.0
                for j in range(S):
                    v = np.float64(x3[a, c, j])
                    ok = v == v or not skipnan
                    s += v if ok else 0.0
                    k += 1.0 if ok else 0.0
                mean[c] += s
                cnt[c] += k
        for c in range(C):
            mean[c] = mean[c] / cnt[c] if cnt[c] > 0.0 else math.nan
        for a in range(A):
            for c in range(C):
                mu = mean[c]
                q = 0.0
                d1 = 0.0
                for j in range(S):
                    v = np.float64(x3[a, c, j])
                    d = v - mu if (v == v or not skipnan) else 0.0
                    q += d * d
                    d1 += d
                m2[c] += q
                dc[c] += d1
    for c in range(C):
        if cnt[c] > 0.0:
            corr = dc[c] / cnt[c]
            # q >= dc^2/n exactly (Cauchy-Schwarz); rounding may not cross 0.
            # A select, not max(): max(NaN, 0) may give 0 (Inf data -> NaN)
            q = m2[c] - dc[c] * corr
            m2[c] = 0.0 if q < 0.0 else q
            mean[c] += corr
        else:
            m2[c] = math.nan


@njit(fastmath=_FME, cache=CACHE, error_model="numpy")
def _chan_apply_small(x3, y3, center, scale, shift, clip, lo, hi):
    """y3 = clip((x3 - center) * scale + shift) per channel of x3 (A, C, S),
    formed in float64 and rounded once (parameters (C,) float64)."""
    A, C, S = x3.shape
    if S == 1:
        x2 = x3.reshape(A, C)
        y2 = y3.reshape(A, C)
        for a in range(A):
            for c in range(C):
                y = (np.float64(x2[a, c]) - center[c]) * scale[c] + shift[c]
                if clip:
                    y = lo if y < lo else y
                    y = hi if y > hi else y
                y2[a, c] = y
        return
    for a in range(A):
        for c in range(C):
            m = center[c]
            f = scale[c]
            t = shift[c]
            for j in range(S):
                y = (np.float64(x3[a, c, j]) - m) * f + t
                if clip:
                    y = lo if y < lo else y
                    y = hi if y > hi else y
                y3[a, c, j] = y


@njit(fastmath=_FM, cache=CACHE, error_model="numpy")
def _bn_small(x3, y3, rm, rv, w, b, training, update, momentum, eps, mean, rstd):
    """Batch norm of a small x3 (A, C, S) with channels on axis 1, one serial
    kernel: batch statistics (training) or the running ones, the running
    update in place (``update``: rm/rv given), and the output.  w, b: (C,) or
    empty (identity).  Same formulas as functional.batch_norm; the mean and
    rstd used are written to ``mean``, ``rstd`` (C,)."""
    A, C, S = x3.shape
    n = float(A * S)
    scale = np.empty(C)
    shift = np.empty(C)
    if training:
        cnt = np.empty(C)
        m2 = np.empty(C)
        _chan_moments_small(x3, False, cnt, mean, m2)
        for c in range(C):
            scale[c] = 1.0 / math.sqrt(m2[c] / n + eps)
            if update:
                rm[c] = (1.0 - momentum) * np.float64(rm[c]) + momentum * mean[c]
                rv[c] = (1.0 - momentum) * np.float64(rv[c]) + momentum * (m2[c] / (n - 1.0))
    else:
        for c in range(C):
            mean[c] = np.float64(rm[c])
            scale[c] = 1.0 / math.sqrt(np.float64(rv[c]) + eps)
    for c in range(C):
        rstd[c] = scale[c]
        if w.size:
            scale[c] *= np.float64(w[c])
        shift[c] = np.float64(b[c]) if b.size else 0.0
    _chan_apply_small(x3, y3, mean, scale, shift, False, 0.0, 0.0)


# --------------------------------------------------------------------------
# large per-channel normalizations in one call (no Python between the passes)
# --------------------------------------------------------------------------
#
# batch_norm, standardize and minmax_scale of a large C-contiguous x viewed as
# (A*C, S) rows (channels in the middle, S >= 256 elements per row) or
# (1, A*C) (channels last) run as one compiled call: the moments kernel, the
# merges, the parameters and the apply kernel.  Cold host code between the two
# passes cost 0.4-0.6 ms per call (benchmarks/NOTES.md section 14).  Every
# step is the one the general path (reduce_moments, apply_affine, apply)
# takes for these views, in the same order and arithmetic (these functions
# compile without fastmath, as NumPy computes): the same bits
# (tests/test_fused.py; one unexplained last-bit exception, NOTES.md 14).


@njit(cache=CACHE, error_model="numpy")
def _chan_stats_large(x2, C, rows, skipnan, minmax, want_moments, nseg, rb, L, cnt, mean, m2, mn, mx):
    """Per-channel (C,) count, mean, M2 and min/max as reduce_moments gives
    them: partials of the moments kernel merged over the segments, then over
    the batch (rows), the mean's residual rounded in, an empty channel NaN."""
    P = x2.shape[0]
    K = 1 if rows else C
    pc, pm, pr, pq, plo, phi = _partials(P, nseg, K)
    if K == 1 and not skipnan and not minmax and want_moments:
        _row_moments(x2, nseg, pc, pm, pr, pq)
    else:
        _col_moments(x2, K, L, nseg, rb, skipnan, minmax, want_moments, pc, pm, pr, pq, plo, phi)
    c1, u1, r1, q1, lo1, hi1 = merge_mid(pc, pm, pr, pq, plo, phi, minmax)
    if rows and P > C:  # then over the batch: (A*C, 1) -> (1, A, C)
        A = P // C
        c3 = c1.reshape(1, A, C)
        c1, u1, r1, q1, lo1, hi1 = merge_mid(
            c3, u1.reshape(1, A, C), r1.reshape(1, A, C), q1.reshape(1, A, C),
            lo1.reshape(1, A, C), hi1.reshape(1, A, C), minmax,
        )  # fmt: skip
    n1 = c1.reshape(C)
    u = u1.reshape(C)
    r = r1.reshape(C)
    q = q1.reshape(C)
    lo = lo1.reshape(C)
    hi = hi1.reshape(C)
    for c in range(C):
        empty = n1[c] == 0.0
        cnt[c] = n1[c]
        mean[c] = math.nan if empty else u[c] + r[c]
        m2[c] = math.nan if empty else q[c]
        if minmax:
            mn[c] = math.nan if empty else lo[c]
            mx[c] = math.nan if empty else hi[c]


@njit(cache=CACHE, error_model="numpy")
def _lowered(center, scale, shift, T):
    """apply()'s parameters in x's dtype T for one channel: the center
    rounded to T, the part of it T cannot hold moved into the shift, in
    float64 (``(x - c) * s + t == (x - ch) * s + (t - (c - ch) * s)``)."""
    ch = T(center)
    if np.float64(ch) != center:
        shift = shift - (center - np.float64(ch)) * scale
    return ch, T(scale), T(shift)


@njit(cache=CACHE, error_model="numpy")
def _bn_chan(c, n, mu, m2, rm, rv, w, b, training, update, momentum, eps, mean, rstd):
    """batch_norm's parameters for channel c (functional.batch_norm's
    formulas): from the batch's count n, mean mu and M2 when training (the
    running stats updated when ``update``), else from the running stats.
    Writes the mean and rstd used to ``mean[c]``, ``rstd[c]``; returns the
    affine (scale, shift) in float64."""
    if training:
        rs = 1.0 / np.sqrt(m2 / n + eps)
        if update:
            rm[c] = (1.0 - momentum) * np.float64(rm[c]) + momentum * mu
            rv[c] = (1.0 - momentum) * np.float64(rv[c]) + momentum * (m2 / (n - 1.0))
    else:
        mu = np.float64(rm[c])
        rs = 1.0 / np.sqrt(np.float64(rv[c]) + eps)
    mean[c] = mu
    rstd[c] = rs
    return rs * (np.float64(w[c]) if w.size else 1.0), np.float64(b[c]) if b.size else 0.0


@njit(cache=CACHE, error_model="numpy")
def _chan_apply_large(x2, o2, C, rows, center, scale, shift, clip, lo, hi, nchunk, L, stream):
    """apply() with per-channel float64 parameters (C,): the center rounded
    to x's dtype, the rest of it moved into the shift, the parameters laid
    out as the apply kernel reads them (rows: one per (a, c) row; channels
    last: lane j holds channel j % C)."""
    P = x2.shape[0]
    T = x2.dtype.type
    ch = np.empty(C, x2.dtype)
    sc = np.empty(C, x2.dtype)
    sh = np.empty(C, x2.dtype)
    for c in range(C):
        ch[c], sc[c], sh[c] = _lowered(center[c], scale[c], shift[c], T)
    chP = np.empty((P, L), x2.dtype)
    scP = np.empty((P, L), x2.dtype)
    shP = np.empty((P, L), x2.dtype)
    for r in range(P):
        for j in range(L):
            c = r % C if rows else j % C
            chP[r, j] = ch[c]
            scP[r, j] = sc[c]
            shP[r, j] = sh[c]
    _apply(x2, o2, 1 if rows else C, L, nchunk, chP, scP, shP, clip, lo, hi, stream)


@njit(cache=CACHE, error_model="numpy")
def _bn_large(
    x2,
    o2,
    C,
    rows,
    rm,
    rv,
    w,
    b,
    training,
    update,
    momentum,
    eps,
    nseg,
    rb,
    Lm,
    La,
    lo,
    hi,
    stream,
    mean,
    rstd,
):
    """batch_norm (functional.batch_norm's formulas); rm/rv/w/b (C,) or
    empty, the running stats updated in place (``update``), the mean and
    rstd used written to ``mean``, ``rstd``."""
    cnt = np.empty(C)
    m2 = np.empty(C)
    if training:
        _chan_stats_large(x2, C, rows, False, False, True, nseg, rb, Lm, cnt, mean, m2, cnt, cnt)
    scale = np.empty(C)
    shift = np.empty(C)
    for c in range(C):
        scale[c], shift[c] = _bn_chan(
            c, cnt[c], mean[c], m2[c], rm, rv, w, b, training, update, momentum, eps, mean, rstd
        )
    _chan_apply_large(x2, o2, C, rows, mean, scale, shift, False, lo, hi, nseg, La, stream)


@njit(fastmath=_FM, cache=CACHE, error_model="numpy")
def _apply_row_moments(u, v, o, ch, sc, sh, stream):
    """_apply_row(v, o, ...) while the moments of row u (as long as v) are
    summed in the same loops: (count, mean, residual, M2) of u by
    _seg_moments' algorithm (ROW_CHUNK chunks of shifted sums, _seg_step),
    with u's reads from memory interleaved with o's writes as in a copy."""
    T = v.dtype.type
    S = v.size
    per = LINE_BYTES // o.itemsize
    p, m = _stream_span(o.ctypes.data, 0, S, o.itemsize, stream)
    zero = T(0)
    same = _same(v, o)
    n = 0.0
    mean = 0.0
    res = 0.0
    m2 = 0.0
    shu = np.float64(u[0])
    tn = 0.0
    t1 = 0.0
    t2 = 0.0
    for c0 in range(0, S, ROW_CHUNK):
        c1 = min(S, c0 + ROW_CHUNK)
        # the chunk's streamed part: its whole lines inside [p, m)
        a, b = _line_span(p, m, c0, c1, per)
        s1, s2 = _pipe_scl_io(same, u[c0:a], v[c0:a], o[c0:a], shu, ch, zero, sc, sh, False)
        r1, r2 = _pipe_scl_io(same, u[a:b], v[a:b], o[a:b], shu, ch, zero, sc, sh, True)
        s1 += r1
        s2 += r2
        r1, r2 = _pipe_scl_io(same, u[b:c1], v[b:c1], o[b:c1], shu, ch, zero, sc, sh, False)
        s1 += r1
        s2 += r2
        n, mean, res, m2, shu, tn, t1, t2 = _seg_step(u[c0:c1], s1, s2, n, mean, res, m2, shu, tn, t1, t2)
    if tn > 0.0:
        n, mean, res, m2 = _absorb_shifted(n, mean, res, m2, tn, shu, t1, t2)
    return n, mean, res, m2


@njit(parallel=True, cache=CACHE, error_model="numpy")
def _bn_pipe(x2, o2, C, ntask, rm, rv, w, b, update, momentum, eps, stream, mean, rstd):
    """batch_norm training over channels-first rows x2 (A*C, S), pipelined
    over channels (NOTES.md section 16).

    Each of ``ntask`` tasks owns a range of channels.  It sums its first
    channel alone; then, channel by channel, the loop that writes row (a, c)
    from the cache (it was read while channel c-1 was written) sums row
    (a, c+1) from memory.  So x is read from memory once, and its reads
    interleave with y's writes as in a copy, where the two-pass reads it
    twice, in a read-only and a write-only pass.  Each row's moments are
    _seg_moments' (the summation order within a chunk may differ in the last
    bits), merged over the batch in order as the general path does; the
    parameters are _bn_chan's and the output formula the apply kernel's.
    Compiled without fastmath, like _bn_large.
    """
    P, S = x2.shape
    A = P // C
    T = x2.dtype.type
    for t in prange(ntask):
        # channel ranges as even as they go (9 over 4 tasks: 2, 2, 2, 3)
        c0 = t * C // ntask
        c1 = (t + 1) * C // ntask
        if c0 >= c1:
            continue
        n = 0.0
        u = 0.0
        r = 0.0
        q = 0.0
        for a in range(A):
            rn, ru, rr, rq = _seg_moments(x2[a * C + c0], 0, S)
            n, u, r, q = chan_merge_dd(n, u, r, q, rn, ru, rr, rq)
        for c in range(c0, c1):
            scale, shift = _bn_chan(c, n, u + r, q, rm, rv, w, b, True, update, momentum, eps, mean, rstd)
            ch, sc, sh = _lowered(mean[c], scale, shift, T)
            n = 0.0
            u = 0.0
            r = 0.0
            q = 0.0
            for a in range(A):
                v = x2[a * C + c]
                o = o2[a * C + c]
                if c + 1 < c1:
                    rn, ru, rr, rq = _apply_row_moments(x2[a * C + c + 1], v, o, ch, sc, sh, stream)
                    n, u, r, q = chan_merge_dd(n, u, r, q, rn, ru, rr, rq)
                else:
                    _apply_row(v, o, ch, sc, sh, False, T(0), T(0), stream)


def bn_pipe_ok(P: int, C: int, S: int, isz: int) -> bool:
    """Does batch_norm training over rows x2 (P = A*C, S) take _bn_pipe?
    Every thread needs channels (at least two each), one channel per thread
    must fit CHAN_PIPE_CACHE_BYTES, and rows must be at least
    CHAN_PIPE_MIN_ROW_BYTES (_config)."""
    nt = _threads()
    return (
        C >= 2 * nt
        and S * isz >= CHAN_PIPE_MIN_ROW_BYTES
        and (P // C) * S * isz * nt <= CHAN_PIPE_CACHE_BYTES
    )


@njit(cache=CACHE, error_model="numpy")
def _standardize_large(
    x2, o2, C, rows, ddof, with_mean, with_std, nseg, rb, Lm, La, lo, hi, stream, center, sd
):
    """standardize (preprocessing._standardize_general's formulas); the mean
    and std used written to ``center``, ``sd``."""
    cnt = np.empty(C)
    mean = np.empty(C)
    m2 = np.empty(C)
    _chan_stats_large(x2, C, rows, True, False, True, nseg, rb, Lm, cnt, mean, m2, cnt, cnt)
    eps = np.finfo(np.float64).eps
    scale = np.empty(C)
    for c in range(C):
        n = cnt[c]
        var = m2[c] / (n - ddof) if n - ddof > 0 else math.nan
        std = np.sqrt(var)
        t = n * mean[c] * eps
        if var <= n * eps * var + t * t:  # preprocessing.constant_features
            std = 1.0
        center[c] = mean[c] if with_mean else 0.0
        sd[c] = std if with_std else 1.0
        scale[c] = 1.0 / sd[c]
    _chan_apply_large(x2, o2, C, rows, center, scale, np.zeros(C), False, lo, hi, nseg, La, stream)


@njit(cache=CACHE, error_model="numpy")
def _minmax_large(x2, o2, C, rows, flo, fhi, clip, nseg, rb, Lm, La, lo, hi, stream):
    """minmax_scale (preprocessing.minmax_scale's formulas) to [flo, fhi],
    clipped to [lo, hi] when ``clip``."""
    cnt = np.empty(C)
    mn = np.empty(C)
    mx = np.empty(C)
    _chan_stats_large(x2, C, rows, True, True, False, nseg, rb, Lm, cnt, np.empty(C), np.empty(C), mn, mx)
    scale = np.empty(C)
    for c in range(C):
        r = mx[c] - mn[c]
        scale[c] = (fhi - flo) / (1.0 if r == 0.0 else r)
    _chan_apply_large(x2, o2, C, rows, mn, scale, np.full(C, flo), clip, lo, hi, nseg, La, stream)


# batch_norm training may take the channel-pipelined kernel (tests compare it
# with the two-pass by setting this False)
CHAN_PIPE = True


def _large_plan(x2, o2, C, rows, lo=None, hi=None):
    """The split sizes the general path chooses for this view (moments:
    nseg, rb, lanes; apply: nchunk == nseg, lanes), the clip bounds in x's
    dtype and the streaming decision: the trailing arguments of the
    _*_large kernels."""
    P, N = x2.shape
    R, K = (N, 1) if rows else (N // C, C)
    nseg, Lm, rb = _col_split(P, R, K, x2.itemsize)
    dt = x2.dtype.type
    return (
        nseg, rb, Lm, Lm if K > 1 else 1,
        dt(-np.inf if lo is None else lo), dt(np.inf if hi is None else hi),
        _streams(o2) and _resident(o2) and not _in_place(x2, o2),
    )  # fmt: skip


def bn_large(x2, o2, C, rows, rm, rv, w, b, training, update, momentum, eps, mean, rstd):
    """functional.batch_norm's fused path (see _chan_stats_large); training
    over rows that bn_pipe_ok takes runs the channel-pipelined _bn_pipe."""
    if CHAN_PIPE and training and rows and bn_pipe_ok(x2.shape[0], C, x2.shape[1], x2.itemsize):
        # streaming stores also into a fresh output: there they measured
        # 0.86-0.90x the time of ordinary ones (the two-pass's apply kernel
        # streams only into resident pages; NOTES.md section 16)
        stream = _streams(o2)
        _launch(_bn_pipe, x2, o2, C, _threads(), rm, rv, w, b, update, momentum, eps, stream, mean, rstd)
        return
    plan = _large_plan(x2, o2, C, rows)
    _launch(_bn_large, x2, o2, C, rows, rm, rv, w, b, training, update, momentum, eps, *plan, mean, rstd)


def standardize_large(x2, o2, C, rows, ddof, with_mean, with_std, center, sd):
    """preprocessing.standardize's fused path (see _chan_stats_large)."""
    plan = _large_plan(x2, o2, C, rows)
    _launch(_standardize_large, x2, o2, C, rows, float(ddof), with_mean, with_std, *plan, center, sd)


def minmax_large(x2, o2, C, rows, flo, fhi, clip):
    """preprocessing.minmax_scale's fused path (see _chan_stats_large)."""
    plan = _large_plan(x2, o2, C, rows, flo if clip else None, fhi if clip else None)
    _launch(_minmax_large, x2, o2, C, rows, flo, fhi, clip, *plan)


@njit(fastmath=_FM, cache=CACHE, error_model="numpy")
def _standardize_small(x3, y3, ddof, with_mean, with_std, center, sd):
    """preprocessing.standardize of a small x3 (A, C, S) over A and S, one
    serial kernel (NaN left out of the statistics; constant features, by
    scikit-learn's bound as in preprocessing.constant_features, get std 1).
    The mean and std used are written to ``center``, ``sd`` (C,)."""
    C = x3.shape[1]
    cnt = np.empty(C)
    mean = np.empty(C)
    m2 = np.empty(C)
    _chan_moments_small(x3, True, cnt, mean, m2)
    center[:] = 0.0
    sd[:] = 1.0
    scale = np.ones(C)
    eps = np.finfo(np.float64).eps
    for c in range(C):
        n = cnt[c]
        d = n - ddof
        var = m2[c] / d if d > 0.0 else math.nan
        std = math.sqrt(var)
        if var <= n * eps * var + (n * mean[c] * eps) ** 2:
            std = 1.0
        if with_mean:
            center[c] = mean[c]
        if with_std:
            sd[c] = std
            scale[c] = 1.0 / std
    _chan_apply_small(x3, y3, center, scale, np.zeros(C), False, 0.0, 0.0)


@njit(fastmath=_FME, cache=CACHE, error_model="numpy")
def _minmax_small(x3, y3, lo, hi, clip):
    """preprocessing.minmax_scale of a small x3 (A, C, S) over A and S, one
    serial kernel (NaN left out of min/max; a zero range counts as 1)."""
    A, C, S = x3.shape
    mn = np.full(C, np.inf)
    mx = np.full(C, -np.inf)
    cnt = np.zeros(C)
    if S == 1:
        x2 = x3.reshape(A, C)
        for a in range(A):
            for c in range(C):
                v = np.float64(x2[a, c])
                mn[c] = np.fmin(v, mn[c])
                mx[c] = np.fmax(v, mx[c])
                cnt[c] += 1.0 if v == v else 0.0
    else:
        for a in range(A):
            for c in range(C):
                lo_c = mn[c]
                hi_c = mx[c]
                k = 0.0
                for j in range(S):
                    v = np.float64(x3[a, c, j])
                    lo_c = v if v < lo_c else lo_c
                    hi_c = v if v > hi_c else hi_c
                    k += 1.0 if v == v else 0.0
                mn[c] = lo_c
                mx[c] = hi_c
                cnt[c] += k
    scale = np.empty(C)
    for c in range(C):
        if cnt[c] == 0.0:
            mn[c] = math.nan
            mx[c] = math.nan
        r = mx[c] - mn[c]
        scale[c] = (hi - lo) / (1.0 if r == 0.0 else r)
    _chan_apply_small(x3, y3, mn, scale, np.full(C, lo), clip, lo, hi)


_NO_STATS = np.empty(0)


def row_norm_small(x2, out2, weight, bias, eps, rms):
    """row_norm for float32/64 x2 (R, D) with R * D <= MIN_TASK_ELEMS and
    weight/bias (RW, S) of x's dtype (as row_norm), statistics not returned:
    the small-call fast path of layer/RMS/instance/group norm (the caller has
    checked all of this)."""
    _row_norm_small(x2, out2, weight, bias, eps, 1.0 if rms else 0.0, False, _NO_STATS, _NO_STATS)


def row_norm(x2, out2, weight, bias, eps, rms, p=None):
    """Fused row normalization of x2 (R, D); weight/bias (D,) or (RW, S).

    ``rms``: RMS norm instead of layer norm; ``p``: lp_normalize with this p
    (``x / max(||x||_p, eps)``, NaN left out of the norm) instead of either.
    """
    R, D = x2.shape
    narrow = None
    if x2.dtype == np.float16:
        x2 = x2.astype(np.float32)
        narrow, out2 = out2, np.empty(x2.shape, np.float32)
    # the output arithmetic runs in x's dtype (see _affine_row)
    W = weight if weight.dtype == x2.dtype else weight.astype(x2.dtype)
    B = bias if bias.dtype == x2.dtype else bias.astype(x2.dtype)
    if W.ndim == 1:
        W = W.reshape(1, -1)
        B = B.reshape(1, -1)
    mean = np.zeros(R)  # stays 0 for RMS norm and p-norms
    rstd = np.empty(R)
    # one float selects the statistic: 0 layer norm, 1 RMS, -p the p-norm
    mode = -float(p) if p is not None else (1.0 if rms else 0.0)
    if R * D == 0:
        rstd[:] = np.nan
    else:
        small = R * D <= MIN_TASK_ELEMS  # decided first: _nsplit asks numba for threads (~2 us)
        nseg = 1 if small else _nsplit(R, D)
        if W.shape[1] > 1:
            nseg = min(nseg, W.shape[1])
        if p is not None and nseg > 1:
            # few long rows: the norm through pnorm, then the segmented output pass
            rstd[:] = 1.0 / np.maximum(pnorm(x2.reshape(R, D, 1), p)[:, 0], eps)
            _launch(_row_norm_seg, x2, out2, W, B, nseg, mean, rstd)
        elif small and (mode >= 0.0 or mode == -2.0):
            _row_norm_small(x2, out2, W, B, float(eps), mode, True, mean, rstd)
        elif small:
            _row_norm_serial(x2, out2, W, B, float(eps), mode, mean, rstd)
        elif nseg == 1:
            # streaming stores only into an out= buffer written before
            # (_config.PIPE_MAX_ROW_BYTES); then the pipelined kernel for
            # rows with fewer weights than elements (NOTES.md section 13)
            stream = _streams(out2) and _resident(out2)
            S = W.shape[1]
            if stream and S < D and (mode >= 0.0 or mode == -2.0) and D * x2.itemsize <= PIPE_MAX_ROW_BYTES:
                # nseg == 1: R >= 4 threads, so every block has >= 4 rows
                _launch(_row_norm_pipe, x2, out2, W, B, float(eps), mode, mean, rstd, _threads(), True)
            else:
                # (in place the row-by-row kernel takes ordinary stores, see _in_place)
                stream = stream and not _in_place(x2, out2)
                _launch(_row_norm, x2, out2, W, B, float(eps), mode, mean, rstd, stream)
        else:
            cnt, mu, q, _, _, _ = moments(x2.reshape(R, D, 1), False, False)
            cnt, mu, q = cnt[:, 0], mu[:, 0], q[:, 0]
            with np.errstate(invalid="ignore", divide="ignore"):
                if rms:
                    # E[x^2] = M2/n + mean^2: a sum of non-negatives, no cancellation
                    rstd[:] = 1.0 / np.sqrt(q / cnt + mu * mu + eps)
                else:
                    mean[:] = mu
                    rstd[:] = 1.0 / np.sqrt(q / cnt + eps)
            _launch(_row_norm_seg, x2, out2, W, B, nseg, mean, rstd)
    if narrow is not None:
        narrow[...] = out2
    return mean, rstd


# --------------------------------------------------------------------------
# p-norms
# --------------------------------------------------------------------------


@njit(parallel=True, fastmath=_FM, cache=CACHE, error_model="numpy")
def _col_pnorm(xf, K, L, nchunk, p, out):
    """Partial sums of |x|^p (or max |x| for p=inf) of xf (P, R*K) over R, NaN ignored.

    out is (P, nchunk, K); lanes as in _col_moments.
    """
    P, N = xf.shape
    R = N // K
    m = L // K
    rows_per = (R + nchunk - 1) // nchunk
    rows_per = ((rows_per + m - 1) // m) * m
    for t in prange(P * nchunk):
        pp = t // nchunk
        c = t - pp * nchunk
        f0 = min(R, c * rows_per) * K
        f1 = min(R, c * rows_per + rows_per) * K
        v = xf[pp]
        acc = np.zeros(L)
        # NaN is ignored (API section 3): a select per lane, still vectorized
        for base in range(f0, f1, L):
            vb = v[base : min(base + L, f1)]
            if p == 2.0:
                for j in range(vb.size):
                    a = np.float64(vb[j])
                    acc[j] += a * a if a == a else 0.0
            elif p == 1.0:
                for j in range(vb.size):
                    a = abs(np.float64(vb[j]))
                    acc[j] += a if a == a else 0.0
            elif p == np.inf:
                for j in range(vb.size):
                    a = abs(np.float64(vb[j]))
                    acc[j] = a if a > acc[j] else acc[j]
            else:
                for j in range(vb.size):
                    a = abs(np.float64(vb[j]))
                    acc[j] += a**p if a == a else 0.0
        for k in range(K):
            r = 0.0
            for j in range(k, L, K):
                if p == np.inf:
                    r = max(r, acc[j])
                else:
                    r += acc[j]
            out[pp, c, k] = r


def pnorm(x3, p):
    """(P, K) p-norms of x3 (P, R, K) over R; p = inf gives max |x|."""
    x3 = _widen(x3)
    P, R, K = x3.shape
    p = float(p)
    if P * R * K == 0:
        return np.zeros((P, K))
    L = _lanes(K)
    nchunk = max(1, min(_nsplit(P, R * K), R))
    part = np.empty((P, nchunk, K))
    _launch(_col_pnorm, x3.reshape(P, R * K), K, L, nchunk, p, part)
    if p == np.inf:
        return part.max(axis=1)
    tot = part.sum(axis=1)
    if p == 1.0:
        return tot
    if p == 2.0:
        return np.sqrt(tot)
    with np.errstate(over="ignore"):  # tiny p: the norm overflows to inf, as in torch
        return tot ** (1.0 / p)


# --------------------------------------------------------------------------
# array helpers of the contract
# --------------------------------------------------------------------------


def ascontiguous(x):
    return np.ascontiguousarray(x)


def empty(shape, dtype, like=None):
    return _outbuf.empty(shape, dtype)


def to_host(a):
    return np.asarray(a)


def from_host(a, like=None):
    return np.asarray(a)


def wrap(a, like=None):
    return a


def as_device(x):
    return np.asarray(x)


def copy_into(dst, host):
    dst[...] = host


def context(stream=None):
    return contextlib.nullcontext()
