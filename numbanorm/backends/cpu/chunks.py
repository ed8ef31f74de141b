"""How a task finds its share of a ``(P, R, K)`` frame, and the lane tasks'
chunk helpers (axis_stats.py describes the layouts).

- the row tasks (``K == 1``): items, each a segment of a row, several short
  rows to a task (:func:`row_group`, :func:`row_items`, :func:`row_item`);
- the lane tasks: a range of rows of the ``(R, K)`` matrix of one p
  (:func:`lane_rows`) read as cache blocks from its two halves
  (:func:`lane_blocks`), their scratch layout (``NLANE`` lanes, ``NACC``
  per-column rows) and the steps every lane statistics task shares: the
  shifted sums of a block (:func:`shifted_block`), their totals per column,
  a task's start and finish.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..._cache import subroutine
from ..._config import FASTMATH, ROW_TASK_MIN_ELEMS, ROW_TASKS_PER_THREAD
from ._intrinsics import max2, min2
from .segments import absorb_shifted, shift_ok

_FM = set(FASTMATH)

# scratch rows of a lane task: (NLANE, L) float64 lanes and (NACC, K) float64
# per-column state, so that the exact task can resume where the first stopped
_S1, _S2, _NS, _SH, _BM = range(5)
NLANE = 5
_AN, _AM, _AR, _AQ, _TN, _T1, _T2, _C1, _C2, _BAD = range(10)
NACC = 10
# (axis_stats.py and minmax.py index the scratch rows by these names)

# --------------------------------------------------------------------------
# the row tasks' items
# --------------------------------------------------------------------------


def row_group(P: int, R: int, nseg: int, nthreads: int) -> tuple[int, int]:
    """(items per task, tasks) of the row tasks (row_moments, row_minmax,
    apply_rows) over P rows of R elements in nseg segments each, for a
    launch on ``nthreads`` threads: item i is segment i % nseg of row i //
    nseg; consecutive items share a task until it holds ROW_TASK_MIN_ELEMS
    elements, and many long items go several to a task so that there are
    about ROW_TASKS_PER_THREAD tasks a thread.  The items per task reach the
    tasks as the frame's ``rg`` (axis_stats.frame).  Every row task writes
    each item's partials to the item's own slot, so the grouping changes no
    result."""
    per = (R + nseg - 1) // nseg
    n = P * nseg
    g = max(1, ROW_TASK_MIN_ELEMS // max(per, 1), n // (ROW_TASKS_PER_THREAD * max(nthreads, 1)))
    return g, (n + g - 1) // g


@njit(error_model="numpy", inline="always")
def row_items(xf, nseg, rg, t):
    """[i0, i1): the items of row task t over xf (P, R), ``rg`` items a
    task (row_group)."""
    P = xf.shape[0]
    return t * rg, min2(P * nseg, (t + 1) * rg)


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


# --------------------------------------------------------------------------
# the lane tasks
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


@subroutine(error_model="numpy", nogil=True)
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


@subroutine(fastmath=_FM, error_model="numpy", nogil=True)
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


@subroutine(error_model="numpy")
def lane_shifts(v, r0, r1, K, sh):
    """sh[:K]: each column's shift: the median of its first three values in
    rows [r0, r1) of v (R, K) flattened (its first value with fewer rows;
    0 without rows).  A value of x, near the column's mean in most data and
    robust to one outlier among those rows.  Branch-free over the columns
    (contiguous rows, selects), so the loop vectorizes: per-column work
    here is paid by every task, and wide inputs have thousands of columns.
    A subroutine without fast-math: every task that inlines
    start_lane_task takes the same shifts."""
    f = r0 * K
    if r1 - r0 < 3:
        for k in range(K):
            sh[k] = np.float64(v[f + k]) if r1 > r0 else 0.0
        return
    for k in range(K):
        x = np.float64(v[f + k])
        y = np.float64(v[f + K + k])
        z = np.float64(v[f + 2 * K + k])
        lo = x if x < y else y
        hi = y if x < y else x
        m = hi if hi < z else z
        sh[k] = m if m > lo else lo


@njit(error_model="numpy", inline="always")
def start_lane_task(v, r0, r1, K, lanes, acc):
    """Zero the task's state; each column's shift is the median of its
    first three values (lane_shifts), replicated over the lanes."""
    acc[:] = 0.0
    sh = lanes[_SH]
    lane_shifts(v, r0, r1, K, sh)
    for j in range(K, sh.size):
        sh[j] = sh[j - K]
