"""Statistics over the middle axis of a ``(P, R, K)`` view: count, mean (with
its rounding residual) and M2, and min/max; the primitive ``moments``.

Two layouts:

- rows (``K == 1``, no NaN skipping, no min/max): each row split into
  ``nseg`` segments, each a task (:func:`row_moments`), read at the speed of
  a vectorized scalar reduction;
- lanes (any ``K``): ``m`` rows of the ``(R, K)`` matrix side by side form
  ``L = m*K`` lanes, so every inner loop is an elementwise update of ``L``
  accumulators: it vectorizes without reassociation, for any K, also when
  NaN is skipped.  Each task takes a range of rows and reads it as blocks of
  ``rb`` rows from two sequential streams (its two halves side by side).

The numerical scheme (benchmarks/NOTES.md section 11): per cache-resident
block, one pass of sums *shifted* by a value near the mean, accepted when
their condition number is at most SHIFT_MAX_GAIN (``shift_ok``) and then
accumulated as plain sums; a refused block (NaN, Inf, drift, an outlier as
the shift) is redone exactly while it is in L2 (the corrected two-pass:
sums about 0 give the block mean, sums about the block mean the moments),
and the shift moves to the running mean.  The common case compiles only the
common code: a lane task stops at its first refused block, and the exact
task (:func:`col_moments_exact`), compiled on first need, resumes there from
the state the first left in its scratch arrays.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..._config import COL_BLOCK_BYTES, FASTMATH, FASTMATH_ELEMENTWISE, LANES, ROW_TASK_MIN_ELEMS
from ..._stats import chan_merge_dd, merge_partials, shifted_moments
from .. import Moments
from ._intrinsics import max2, min2
from ._tasks import _key, nsplit, run, task, widen
from .segments import absorb_shifted, segment_moments, segment_moments_nan, shift_ok

_FM = set(FASTMATH)
_FME = set(FASTMATH_ELEMENTWISE)

# scratch rows of a lane task: (NLANE, L) float64 lanes and (NACC, K) float64
# per-column state, so that the exact task can resume where the first stopped
_S1, _S2, _NS, _SH, _BM = range(5)
NLANE = 5
_AN, _AM, _AR, _AQ, _TN, _T1, _T2, _C1, _C2, _BAD = range(10)
NACC = 10

# The frame: every task of the two-pass ops (moments, min/max and the
# output pass, over rows and lanes) takes the same arguments, so one
# compiled prange driver per dtype serves them all (each driver signature
# costs ~0.3 s cold, NOTES.md section 21).  See :func:`frame`:
#   xf, of      (P, R*K) x and the output (x's dtype)
#   K, L        columns of the (R, K) matrix of each p, lanes (K == 1: rows)
#   nseg, rb    tasks per p, rows per cache block (the lane moments)
#   skipnan     NaN left out of the statistics
#   lo, hi      clip bounds of the output (x's dtype)
#   part        (6, P, nseg, K) float64 partials: count, mean, mean residual,
#               M2, min, max of each task
#   lanes, acc, stop: the lane moments' state, (ntask, NLANE, L) and (ntask,
#               NACC, K) float64, (ntask,) int64
#   prm         (3, P, L) the output's parameters (center, scale, shift) in
#               x's dtype, lane-replicated (L = 1: one set per p)
#   rot         (ntask, 3, L) x's dtype scratch (rotated parameters, min/max)


@njit(error_model="numpy")
def row_group(P, R, nseg):
    """(items per task, tasks) of the row tasks (row_moments, apply_rows)
    over P rows of R elements in nseg segments each: item i is segment i %
    nseg of row i // nseg; consecutive items share a task until it holds
    ROW_TASK_MIN_ELEMS elements (one item each for long rows)."""
    per = (R + nseg - 1) // nseg
    g = max2(1, ROW_TASK_MIN_ELEMS // max2(per, 1))
    n = P * nseg
    return g, (n + g - 1) // g


@njit(error_model="numpy", inline="always")
def row_items(xf, nseg, t):
    """[i0, i1): the items of row task t over xf (P, R) (row_group)."""
    P, R = xf.shape
    g, _ = row_group(P, R, nseg)
    return t * g, min2(P * nseg, (t + 1) * g)


@njit(error_model="numpy", inline="always")
def row_item(xf, nseg, i):
    """(row r, segment s, [a, b)) of item i of the row tasks over xf (P, R)
    (whole rows, every short row among them, without a division)."""
    R = xf.shape[1]
    if nseg == 1:
        return i, 0, 0, R
    seglen = (R + nseg - 1) // nseg
    r = i // nseg
    s = i - r * nseg
    a = min2(R, s * seglen)
    return r, s, a, min2(R, a + seglen)


@task(fastmath=_FM, variants=("nan",))
def row_moments(nan):
    """Task t (frame; K == 1) of row_group's tasks: for each of its items,
    the moments of segment s of row r of xf (P, R), into part[:4, r, s, 0];
    ``nan``: NaN left out (segment_moments_nan; the frame's skipnan)."""

    def row_moments_task(t, xf, of, K, L, nseg, rb, skipnan, lo, hi, part, lanes, acc, stop, prm, rot):
        i0, i1 = row_items(xf, nseg, t)
        for i in range(i0, i1):
            r, s, a, b = row_item(xf, nseg, i)
            if nan:  # (a compile-time flag: one of the two is compiled)
                m = segment_moments_nan(xf[r], a, b)
            else:
                m = segment_moments(xf[r], a, b)
            part[0, r, s, 0], part[1, r, s, 0], part[2, r, s, 0], part[3, r, s, 0] = m

    return row_moments_task


# --------------------------------------------------------------------------
# chunk helpers: lanes
# --------------------------------------------------------------------------


@njit(fastmath=_FM, error_model="numpy", inline="always")
def lane_sums(v, fa0, fa1, fb0, fb1, L, sh, s1, s2):
    """s1[j] += sum(x - sh[j]), s2[j] += sum((x - sh[j])**2) over the
    lane-rows of [fa0, fa1) and [fb0, fb1) (whole lane-rows but the last).

    A lane-row of each range per step: the lane arrays are loaded and stored
    once per two lane-rows, and x is read as two long sequential streams
    (two adjacent lane-rows per step ran at half the speed from memory:
    NOTES.md sections 17, 19).  The rest of the longer range, one lane-row
    per step (unrolling four measured slower, section 11).
    """
    n = min2(fa1 - fa0, fb1 - fb0) // L * L
    for i in range(0, n, L):
        va = v[fa0 + i : fa0 + i + L]
        vb = v[fb0 + i : fb0 + i + L]
        for j in range(L):
            da = np.float64(va[j]) - sh[j]
            db = np.float64(vb[j]) - sh[j]
            s2[j] += da * da + db * db
            s1[j] += da + db
    for f0, f1 in ((fa0 + n, fa1), (fb0 + n, fb1)):
        for b in range(f0, f1, L):
            vb = v[b : min2(b + L, f1)]
            for j in range(vb.size):
                d = np.float64(vb[j]) - sh[j]
                s2[j] += d * d
                s1[j] += d


@njit(fastmath=_FM, error_model="numpy", inline="always")
def lane_totals(a, out, m, K):
    """out[k] = a[k] + a[k + K] + ... + a[k + (m-1)K]: the m lane groups
    folded into K columns.  Few groups (K >= 16): contiguous loops over the
    columns, added in that order (a strided sum per column cost ~3.5 us per
    block at K = 256, NOTES.md section 13).  Many groups (small K): a
    strided sum per column, which 'reassoc' vectorizes into several partial
    sums (more accurate than one running sum of 256 lanes: K = 1 is the
    lane path of a row with NaN skipped, tests/test_shifted.py)."""
    if m <= 16:
        for k in range(K):
            out[k] = a[k]
        for i in range(1, m):
            ai = a[i * K : (i + 1) * K]
            for k in range(K):
                out[k] += ai[k]
    else:
        for k in range(K):
            t = 0.0
            for j in range(k, m * K, K):
                t += a[j]
            out[k] = t


@njit(error_model="numpy", nogil=True)
def lane_fill(a, k, K, val):
    """Set the lanes of column k (a[k], a[k + K], ...) to val."""
    for j in range(k, a.size, K):
        a[j] = val


@njit(error_model="numpy", inline="always")
def lane_rows(xf, K, L, nchunk, t):
    """(p, c, r0, r1): lane task t's row p of xf (P, R*K), its chunk c and
    rows [r0, r1) of the (R, K) matrix, a multiple of m = L // K rows (the
    last chunk shorter)."""
    R = xf.shape[1] // K
    m = L // K
    rows_per = (R + nchunk - 1) // nchunk
    rows_per = ((rows_per + m - 1) // m) * m
    p = t // nchunk
    c = t - p * nchunk
    r0 = min2(R, c * rows_per)
    return p, c, r0, min2(R, r0 + rows_per)


@njit(error_model="numpy", inline="always")
def lane_blocks(xf, K, L, nchunk, rb, t):
    """Geometry of lane task t over xf (P, R*K): (p, c, r0, r1, rm, hb): the
    task's rows [r0, r1) (lane_rows) in two halves split at rm, and the rows
    per half-block hb (block i is half-block i of each half: rb rows in all,
    a multiple of m = L // K)."""
    m = L // K
    p, c, r0, r1 = lane_rows(xf, K, L, nchunk, t)
    rm = min2(r1, r0 + ((r1 - r0 + 1) // 2 + m - 1) // m * m)
    hb = max2(m, (rb // 2) // m * m)
    return p, c, r0, r1, rm, hb


@njit(fastmath=_FM, error_model="numpy", nogil=True)
def shifted_block(v, fa0, fa1, fb0, fb1, L, K, nb, lanes, acc):
    """One block's shifted sums about the lane shifts, folded into columns;
    the columns that ``shift_ok`` accepts add them to their accepted sums.
    Returns the number of refused columns (flagged in acc[_BAD]).

    Branch-free over the columns (selects), so the loop vectorizes; a
    refused column adds 0 (NaN or Inf sums are never added).
    """
    s1 = lanes[_S1]
    s2 = lanes[_S2]
    s1[:] = 0.0
    s2[:] = 0.0
    lane_sums(v, fa0, fa1, fb0, fb1, L, lanes[_SH], s1, s2)
    c1 = acc[_C1]
    c2 = acc[_C2]
    m = L // K
    lane_totals(s1, c1, m, K)
    lane_totals(s2, c2, m, K)
    tn = acc[_TN]
    t1 = acc[_T1]
    t2 = acc[_T2]
    bad = acc[_BAD]
    nbad = 0
    for k in range(K):
        q1 = c1[k]
        q2 = c2[k]
        ok = shift_ok(nb, q1, q2)
        bad[k] = 0.0 if ok else 1.0
        tn[k] += nb if ok else 0.0
        t1[k] += q1 if ok else 0.0
        t2[k] += q2 if ok else 0.0
        nbad += 0 if ok else 1
    return nbad


@njit(fastmath=_FM, error_model="numpy", inline="always")
def finish_lane_task(lanes, acc, K, p, c, part):
    """Merge each column's remaining accepted sums; write its (count, mean,
    residual, M2) to part[:4, p, c]."""
    sh = lanes[_SH]
    an, am, ar, aq, tn, t1, t2 = acc[_AN], acc[_AM], acc[_AR], acc[_AQ], acc[_TN], acc[_T1], acc[_T2]
    for k in range(K):
        if tn[k] > 0.0:
            an[k], am[k], ar[k], aq[k] = absorb_shifted(
                an[k], am[k], ar[k], aq[k], tn[k], sh[k], t1[k], t2[k]
            )
        part[0, p, c, k] = an[k]
        part[1, p, c, k] = am[k]
        part[2, p, c, k] = ar[k]
        part[3, p, c, k] = aq[k]


@njit(error_model="numpy", inline="always")
def start_lane_task(v, r0, r1, K, lanes, acc):
    """Zero the task's state; each column's shift is its first value."""
    acc[:] = 0.0
    sh = lanes[_SH]
    for j in range(sh.size):
        sh[j] = np.float64(v[r0 * K + j % K]) if r1 > r0 else 0.0


@task(fastmath=_FM)
def col_moments(t, xf, of, K, L, nseg, rb, skipnan, lo, hi, part, lanes, acc, stop, prm, rot):
    """Task t (frame) of the lane moments of xf (P, R*K) seen as (P, R, K),
    into part[:4].  Stops at its first refused block: stop[t] is that
    block's index (part is then not written), else -1."""
    p, c, r0, r1, rm, hb = lane_blocks(xf, K, L, nseg, rb, t)
    v = xf[p]
    ln = lanes[t]
    ac = acc[t]
    start_lane_task(v, r0, r1, K, ln, ac)
    stop[t] = -1
    i = 0
    for a0 in range(r0, rm, hb):
        a1 = min2(rm, a0 + hb)
        g0 = min2(r1, rm + (a0 - r0))
        g1 = min2(r1, g0 + hb)
        nb = float((a1 - a0) + (g1 - g0))
        if shifted_block(v, a0 * K, a1 * K, g0 * K, g1 * K, L, K, nb, ln, ac) > 0:
            stop[t] = i
            return
        i += 1
    finish_lane_task(ln, ac, K, p, c, part)


@njit(fastmath=_FM, error_model="numpy", nogil=True)
def counted_sums(v, f0, f1, L, sh, s1, s2, ns, skipnan):
    """s1[j] += sum(x - sh[j]), s2[j] += sum((x - sh[j])**2), ns[j] += count
    over the lane-rows of [f0, f1); NaN left out (not counted) when skipnan."""
    for b in range(f0, f1, L):
        vb = v[b : min2(b + L, f1)]
        for j in range(vb.size):
            a = np.float64(vb[j])
            ok = (a == a) | (not skipnan)
            d = a - sh[j] if ok else 0.0
            s1[j] += d
            s2[j] += d * d
            ns[j] += 1.0 if ok else 0.0


@njit(fastmath=_FM, error_model="numpy", nogil=True)
def exact_block(v, fa0, fa1, fb0, fb1, L, K, skipnan, lanes, acc):
    """The refused columns of a block (acc[_BAD]), exactly: their accepted
    sums merged first, then two NaN-aware passes over the cache-resident
    block (sums about 0: the block mean; sums about it: the moments,
    ``shifted_moments`` with condition number ~1), merged per column (one
    column's NaN or drift never changes another's arithmetic); their shift
    moves to the running mean, rounded to x's dtype."""
    T = v.dtype.type
    m = L // K
    s1, s2, ns, sh, bm = lanes[_S1], lanes[_S2], lanes[_NS], lanes[_SH], lanes[_BM]
    an, am, ar, aq = acc[_AN], acc[_AM], acc[_AR], acc[_AQ]
    tn, t1, t2, c1, c2, bad = acc[_TN], acc[_T1], acc[_T2], acc[_C1], acc[_C2], acc[_BAD]
    for k in range(K):
        if bad[k] != 0.0 and tn[k] > 0.0:
            an[k], am[k], ar[k], aq[k] = absorb_shifted(
                an[k], am[k], ar[k], aq[k], tn[k], sh[k], t1[k], t2[k]
            )
            tn[k] = 0.0
            t1[k] = 0.0
            t2[k] = 0.0
    bm[:] = 0.0
    for ps in range(2):
        second = ps == 1
        s1[:] = 0.0
        s2[:] = 0.0
        ns[:] = 0.0
        counted_sums(v, fa0, fa1, L, bm, s1, s2, ns, skipnan)
        counted_sums(v, fb0, fb1, L, bm, s1, s2, ns, skipnan)
        lane_totals(s1, c1, m, K)
        lane_totals(s2, c2, m, K)
        for k in range(K):
            if bad[k] == 0.0:
                continue
            nn = 0.0
            for j in range(k, L, K):
                nn += ns[j]
            if not second:
                lane_fill(bm, k, K, c1[k] / nn if nn > 0.0 else 0.0)
            elif nn > 0.0:
                mh, ml, q = shifted_moments(nn, bm[k], c1[k], c2[k])
                an[k], am[k], ar[k], aq[k] = chan_merge_dd(an[k], am[k], ar[k], aq[k], nn, mh, ml, q)
    for k in range(K):
        if bad[k] != 0.0:
            lane_fill(sh, k, K, np.float64(T(am[k])))


@task(fastmath=_FM)
def col_moments_exact(t, xf, of, K, L, nseg, rb, skipnan, lo, hi, part, lanes, acc, stop, prm, rot):
    """Task t (frame) of the lane moments from block stop[t] on, where
    col_moments stopped it (a task it finished, stop[t] = -1, is left as it
    is), with the exact two-pass for refused blocks, the NaN left out when
    ``skipnan``."""
    p, c, r0, r1, rm, hb = lane_blocks(xf, K, L, nseg, rb, t)
    v = xf[p]
    ln = lanes[t]
    ac = acc[t]
    first = stop[t]
    if first < 0:  # col_moments finished this task: its partials are written
        return
    a00 = r0 + first * hb
    for a0 in range(a00, rm, hb):
        a1 = min2(rm, a0 + hb)
        g0 = min2(r1, rm + (a0 - r0))
        g1 = min2(r1, g0 + hb)
        nb = float((a1 - a0) + (g1 - g0))
        # the block col_moments stopped at: its accepted columns are already
        # summed (acc[_BAD] flags the refused ones)
        resumed = a0 == a00
        if resumed or shifted_block(v, a0 * K, a1 * K, g0 * K, g1 * K, L, K, nb, ln, ac) > 0:
            exact_block(v, a0 * K, a1 * K, g0 * K, g1 * K, L, K, skipnan, ln, ac)
    finish_lane_task(ln, ac, K, p, c, part)


# --------------------------------------------------------------------------
# min/max
# --------------------------------------------------------------------------


@njit(fastmath=_FME, error_model="numpy", inline="always")
def lane_minmax(v, fa0, fa1, fb0, fb1, L, lmn, lmx, lz, lnan):
    """Lane-wise min/max (NaN not taken) and NaN counts over the lane-rows
    of [fa0, fa1) and [fb0, fb1) (each whole lane-rows but the last).

    lmn, lmx, lz have x's dtype: min and max are exact in it, and float32
    lanes are twice as many per instruction as float64 ones.  A lane-row of
    each range per step (two sequential streams, as lane_sums), and
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
    n = min2(fa1 - fa0, fb1 - fb0) // L * L
    for i in range(0, n, L):
        va = v[fa0 + i : fa0 + i + L]
        vb = v[fb0 + i : fb0 + i + L]
        for j in range(L):
            a = va[j]
            b = vb[j]
            lmn[j] = np.fmin(np.fmin(a, b), lmn[j])
            lmx[j] = np.fmax(np.fmax(a, b), lmx[j])
            lz[j] += (a - a) + (b - b)
    for f0, f1 in ((fa0 + n, fa1), (fb0 + n, fb1)):
        for b in range(f0, f1, L):
            vb = v[b : min2(b + L, f1)]
            for j in range(vb.size):
                a = vb[j]
                lmn[j] = np.fmin(a, lmn[j])
                lmx[j] = np.fmax(a, lmx[j])
                lz[j] += a - a
    z = 0.0
    for j in range(L):
        z += np.float64(lz[j])
    if z == 0.0:
        return
    for f0, f1 in ((fa0, fa1), (fb0, fb1)):
        for b in range(f0, f1, L):
            vb = v[b : min2(b + L, f1)]
            for j in range(vb.size):
                lnan[j] += 1.0 if vb[j] != vb[j] else 0.0


@task(fastmath=_FME)
def col_minmax(t, xf, of, K, L, nseg, rb, skipnan, lo, hi, part, lanes, acc, stop, prm, rot):
    """Task t (frame) of the lane min/max of xf (P, R*K) seen as (P, R, K),
    NaN not taken (a NaN makes the column's min/max NaN unless
    ``skipnan``), into part[4], part[5]; part[0]: the non-NaN count (every
    value, unless skipnan).  rot[t] holds the x-dtype lanes, lanes[t, 0]
    the NaN counts."""
    p, c, r0, r1, rm, hb = lane_blocks(xf, K, L, nseg, rb, t)
    v = xf[p]
    lmn = rot[t, 0]
    lmx = rot[t, 1]
    lz = rot[t, 2]
    nan = lanes[t, 0]
    lmn[:] = np.inf
    lmx[:] = -np.inf
    nan[:] = 0.0
    for a0 in range(r0, rm, hb):
        a1 = min2(rm, a0 + hb)
        g0 = min2(r1, rm + (a0 - r0))
        g1 = min2(r1, g0 + hb)
        lane_minmax(v, a0 * K, a1 * K, g0 * K, g1 * K, L, lmn, lmx, lz, nan)
    fold_minmax(lmn, lmx, nan, K, L, skipnan, p, c, float(r1 - r0), part, True)


@njit(fastmath=_FME, error_model="numpy", inline="always")
def segment_minmax(v, a, b):
    """(min, max, NaN count) of v[a:b] in float64, NaN not taken."""
    mn = math.inf
    mx = -math.inf
    nn = 0.0
    for i in range(a, b):
        e = np.float64(v[i])
        ok = e == e
        el = e if ok else math.inf
        eh = e if ok else -math.inf
        mn = el if el < mn else mn
        mx = eh if eh > mx else mx
        nn += 0.0 if ok else 1.0
    return mn, mx, nn


# row_minmax's scalar loop (a select per element: the min/max reduction does
# not vectorize without fast-math's 'nnan') beats the lane min/max, one task
# per row, only for short rows (NOTES.md section 27)
ROW_MINMAX_MAX_ELEMS = 512


def row_minmax_ok(R: int, nseg: int) -> bool:
    """Do rows of R in nseg segments take row_minmax (else col_minmax)?"""
    return (R + nseg - 1) // nseg < ROW_MINMAX_MAX_ELEMS


@task(fastmath=_FME)
def row_minmax(t, xf, of, K, L, nseg, rb, skipnan, lo, hi, part, lanes, acc, stop, prm, rot):
    """Task t (frame; K == 1) of row_group's tasks: col_minmax for rows, for
    each of its items (segment s of row r of xf (P, R)): min/max into
    part[4, r, s, 0], part[5, r, s, 0] (NaN when the segment holds a NaN and
    NaN is not skipped), the non-NaN count (every value unless skipnan) into
    part[0, r, s, 0]."""
    i0, i1 = row_items(xf, nseg, t)
    for i in range(i0, i1):
        r, s, a, b = row_item(xf, nseg, i)
        mn, mx, nn = segment_minmax(xf[r], a, b)
        if nn > 0.0 and not skipnan:
            mn = math.nan
            mx = math.nan
        part[4, r, s, 0] = mn
        part[5, r, s, 0] = mx
        part[0, r, s, 0] = float(b - a) - nn if skipnan else float(b - a)


@njit(error_model="numpy", inline="always")
def fold_minmax(lmn, lmx, nan, K, L, skipnan, p, c, nrows, part, counts):
    """Each column's min/max from its lanes into part[4], part[5] (NaN when
    the column holds a NaN and NaN is not skipped); with ``counts``, its
    non-NaN count (every value unless skipnan) into part[0]."""
    for k in range(K):
        mn = np.inf
        mx = -np.inf
        nk = 0.0
        for j in range(k, L, K):
            mn = min2(mn, np.float64(lmn[j]))
            mx = max2(mx, np.float64(lmx[j]))
            nk += nan[j]
        if nk > 0.0 and not skipnan:
            mn = math.nan
            mx = math.nan
        part[4, p, c, k] = mn
        part[5, p, c, k] = mx
        if counts:
            part[0, p, c, k] = nrows - nk if skipnan else nrows


@task(fastmath=_FME)
def col_moments_minmax(t, xf, of, K, L, nseg, rb, skipnan, lo, hi, part, lanes, acc, stop, prm, rot):
    """col_moments and col_minmax of task t (frame) in one read of x: each
    block's min/max lanes are taken while it is cache-resident after its
    shifted sums.  The moments stop at the first refused block as in
    col_moments (stop[t]; col_moments_exact resumes there), the min/max go
    on to the task's end.  Compiled without 'reassoc' as col_minmax is (its
    NaN test); the shifted sums keep theirs (shifted_block is compiled on
    its own).  The NaN counts use the lanes row the exact task only uses as
    scratch."""
    p, c, r0, r1, rm, hb = lane_blocks(xf, K, L, nseg, rb, t)
    v = xf[p]
    ln = lanes[t]
    ac = acc[t]
    start_lane_task(v, r0, r1, K, ln, ac)
    lmn = rot[t, 0]
    lmx = rot[t, 1]
    lz = rot[t, 2]
    nan = ln[_NS]
    lmn[:] = np.inf
    lmx[:] = -np.inf
    nan[:] = 0.0
    stopped = -1
    i = 0
    for a0 in range(r0, rm, hb):
        a1 = min2(rm, a0 + hb)
        g0 = min2(r1, rm + (a0 - r0))
        g1 = min2(r1, g0 + hb)
        if stopped < 0:
            nb = float((a1 - a0) + (g1 - g0))
            if shifted_block(v, a0 * K, a1 * K, g0 * K, g1 * K, L, K, nb, ln, ac) > 0:
                stopped = i
        lane_minmax(v, a0 * K, a1 * K, g0 * K, g1 * K, L, lmn, lmx, lz, nan)
        i += 1
    stop[t] = stopped
    if stopped < 0:
        finish_lane_task(ln, ac, K, p, c, part)
    fold_minmax(lmn, lmx, nan, K, L, skipnan, p, c, float(r1 - r0), part, False)


# --------------------------------------------------------------------------
# the primitive
# --------------------------------------------------------------------------


def lanes_for(K: int) -> int:
    """Lanes of the lane layout for K columns: K replicated m = ceil(LANES /
    K) times, so the inner loops are long enough to vectorize for K = 1..3."""
    return max(1, -(-LANES // K)) * K


def col_split(P: int, R: int, K: int, isz: int):
    """(nseg, L, rb) of the lane kernels for x3 (P, R, K): segments per p,
    lanes, rows per cache block; nseg is also the apply kernel's nchunk for
    the same view."""
    nseg = max(1, min(nsplit(P, R * K), R))
    L = lanes_for(K)
    m = L // K
    return nseg, L, max(m, (COL_BLOCK_BYTES // (L * isz)) * m)


_NONE = {}


def _none(shape, dtype):
    """An empty array standing in for an unused frame slot (cached)."""
    key = (shape, np.dtype(dtype))
    a = _NONE.get(key)
    if a is None:
        a = _NONE[key] = np.empty(shape, dtype)
    return a


def frame(
    xf, K, L, nseg, rb=1, *, skipnan=False, stats=False, of=None, lo=None, hi=None, La=None,
    rot=True, lanes=True,
):  # fmt: skip
    """The frame tuple of the tasks over xf (P, R*K) (see FRAME above):
    scratch for the statistics when ``stats``; the output ``of`` with
    parameters prm (3, P, La) and clip bounds lo/hi when given.  Unused
    slots hold empty arrays of the same types.  ``rot``/``lanes`` False:
    no task of the call reads rot, or lanes, acc and stop (the row moments
    and apply tasks read none of them): empty ones take their slots."""
    P = xf.shape[0]
    ntask = P * nseg
    dt = xf.dtype
    if stats:
        part = np.empty((6, P, nseg, K))
        part[:4] = 0.0
        part[4] = np.inf
        part[5] = -np.inf
    else:
        part = _none((0, 0, 0, 0), np.float64)
    if stats and lanes:
        lanes = np.empty((ntask, NLANE, L))
        acc = np.empty((ntask, NACC, K))
        stop = np.empty(ntask, np.int64)
    else:
        lanes, acc, stop = _none((0, 0, 0), np.float64), _none((0, 0, 0), np.float64), _none((0,), np.int64)
    if of is None:
        of, prm = _none((0, 0), dt), _none((0, 0, 0), dt)
    else:
        prm = np.empty((3, P, L if La is None else La), dt)
    rot = np.empty((ntask, 3, L), dt) if rot and (stats or of is not None) else _none((0, 0, 0), dt)
    lo = dt.type(-np.inf if lo is None else lo)
    hi = dt.type(np.inf if hi is None else hi)
    return (xf, of, K, L, nseg, rb, bool(skipnan), lo, hi, part, lanes, acc, stop, prm, rot)


# frame slots read back by the callers
F_PART, F_STOP, F_PRM = 9, 12, 13


def frame_key(fr):
    """A key of a frame's argument types for ``Task.address``: every slot's
    type follows from x's and the output's (the others are float64/int64
    scratch, Python ints and a bool, and lo/hi scalars of x's dtype)."""
    return ("frame", _key(fr[0]), _key(fr[1]))


def run_moments(fr, ntask):
    """The moments tasks of a frame: rows (K == 1; NaN left out when the
    frame skips it), or the lane moments, then the exact task for the lane
    tasks that stopped."""
    K, skipnan = fr[2], fr[6]
    if K == 1:
        run(row_moments, row_group(fr[0].shape[0], fr[0].shape[1], fr[4])[1], *fr, nan=bool(skipnan))
        return
    run(col_moments, ntask, *fr)
    if fr[F_STOP].max() >= 0:
        run(col_moments_exact, ntask, *fr)


def partials(x3, skipnan, minmax, want_moments=True):
    """The statistics tasks' partials of x3 (P, R, K) over R: (6, P, nseg,
    K) float64, count, mean, mean residual, M2, min, max of each task's
    rows, in the order the segments merge (:func:`moments` merges them;
    RunningStats folds them into its state, streaming._fold_partials).
    min/max are +-inf unless ``minmax``; see :func:`moments` for
    ``want_moments``.  x3 has elements."""
    x3 = widen(x3)
    P, R, K = x3.shape
    nseg, L, rb = col_split(P, R, K, x3.itemsize)
    fr = frame(x3.reshape(P, R * K), K, L, nseg, rb, skipnan=skipnan, stats=True)
    if want_moments and minmax and (K > 1 or skipnan):
        # lanes: moments and min/max in one read (the exact task resumes
        # the moments of the tasks that stopped; the min/max are complete)
        run(col_moments_minmax, P * nseg, *fr)
        if fr[F_STOP].max() >= 0:
            run(col_moments_exact, P * nseg, *fr)
    elif want_moments:
        run_moments(fr, P * nseg)
    if minmax and not (want_moments and (K > 1 or skipnan)):
        # (its counts are per lane task: keep the moments' own, whose segments
        # may be cut elsewhere; min and max merge whatever the cut)
        cnt = fr[F_PART][0].copy() if want_moments else None
        if K == 1 and row_minmax_ok(R, nseg):  # (short rows several to a task)
            run(row_minmax, row_group(P, R, nseg)[1], *fr)
        else:
            run(col_minmax, P * nseg, *fr)
        if cnt is not None:
            fr[F_PART][0] = cnt
    return fr[F_PART]


def moments(x3, skipnan, minmax, want_moments=True):
    """Per-(p, k) (count, mean, M2, min, max, mean residual) of x3 (P, R, K)
    over R, each (P, K) float64 (min/max None unless ``minmax``).

    ``want_moments=False`` (with ``minmax``) computes only counts and
    min/max (mean and M2 are then zeros): one pass, for min-max scaling.
    """
    P, R, K = x3.shape
    if P * R * K == 0:
        z = np.zeros((P, K))
        lo = np.full((P, K), np.inf) if minmax else None
        hi = np.full((P, K), -np.inf) if minmax else None
        return Moments(z, z.copy(), z.copy(), lo, hi, z.copy())
    part = partials(x3, skipnan, minmax, want_moments)
    c, mu, r, q, lo, hi = merge_partials(*part[:4], *((part[4], part[5]) if minmax else ()))
    return Moments(c, mu, q, lo, hi, r)


__all__ = ["moments", "partials", "col_split", "lanes_for", "frame", "run_moments", "segment_moments"]
