"""Min/max over the middle axis of a ``(P, R, K)`` frame, NaN not taken:
the lane min/max (:func:`col_minmax`), the row min/max (:func:`row_minmax`,
every frame over rows), and the lane moments with the min/max in one read
(:func:`col_moments_minmax`).  Run by axis_stats.partials and the
per-channel glue (channels.py)."""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..._config import FASTMATH_ELEMENTWISE
from ._intrinsics import max2, min2
from ._tasks import task
from .chunks import _NS, finish_lane_task, lane_blocks, row_item, row_items, shifted_block, start_lane_task

_FME = set(FASTMATH_ELEMENTWISE)


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
def col_minmax(t, xf, of, K, L, nseg, rb, skipnan, lo, hi, part, lanes, acc, stop, prm, rot, rg):
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


# row_minmax takes every row length.  Its scalar loop (a select per element:
# the min/max reduction does not vectorize without fast-math's 'nnan') serves
# segments shorter than ROW_MINMAX_LANES_MIN; longer ones run lane_minmax
# with ROW_MINMAX_LANES lanes, which vectorizes, from the task's own scratch.
# Before, rows of 512 elements or more took col_minmax, a lane task per row
# with 256 lanes to set up and fold: minmax_scale over (0, 2, 3) of
# 32x64x32x32 float32 took 4x standardize (NOTES.md section 31).
ROW_MINMAX_LANES = 32
ROW_MINMAX_LANES_MIN = 256
# segments of at least this many elements take 256 lanes: with 32, the
# lane loop's per-lane-row slicing cost a row of 50176 elements 1.2x the
# time of col_minmax's 256 lanes
ROW_MINMAX_WIDE_MIN = 32768
ROW_MINMAX_WIDE_LANES = 256


@task(fastmath=_FME)
def row_minmax(t, xf, of, K, L, nseg, rb, skipnan, lo, hi, part, lanes, acc, stop, prm, rot, rg):
    """Task t (frame; K == 1, with rot and lanes scratch of at least
    ROW_MINMAX_WIDE_LANES lanes: lanes_for(1)) of row_group's tasks: col_minmax for rows, for
    each of its items (segment s of row r of xf (P, R)): min/max into
    part[4, r, s, 0], part[5, r, s, 0] (NaN when the segment holds a NaN and
    NaN is not skipped), the non-NaN count (every value unless skipnan) into
    part[0, r, s, 0]."""
    i0, i1 = row_items(xf, nseg, rg, t)
    for i in range(i0, i1):
        r, s, a, b = row_item(xf, nseg, i)
        if b - a >= ROW_MINMAX_LANES_MIN:
            # W lanes of the task's scratch; the segment's two halves as
            # lane_minmax's two streams; folded as col_minmax folds
            W = ROW_MINMAX_WIDE_LANES if b - a >= ROW_MINMAX_WIDE_MIN else ROW_MINMAX_LANES
            lmn = rot[t, 0, :W]
            lmx = rot[t, 1, :W]
            nan = lanes[t, 0, :W]
            lmn[:] = np.inf
            lmx[:] = -np.inf
            nan[:] = 0.0
            half = (b - a) // 2 // W * W
            lane_minmax(xf[r], a, a + half, a + half, b, W, lmn, lmx, rot[t, 2, :W], nan)
            fold_minmax(lmn, lmx, nan, 1, W, skipnan, r, s, float(b - a), part, True)
            continue
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
def col_moments_minmax(t, xf, of, K, L, nseg, rb, skipnan, lo, hi, part, lanes, acc, stop, prm, rot, rg):
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
