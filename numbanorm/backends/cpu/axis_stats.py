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

Each task's share of the frame and the lane tasks' shared steps are in
chunks.py; the min/max tasks in minmax.py.
"""

from __future__ import annotations

import numpy as np

from ..._cache import subroutine
from ..._config import COL_BLOCK_BYTES, FASTMATH, LANE_TASK_MIN_ROWS, LANES
from ..._stats import chan_merge_dd, merge_partials, shifted_moments
from .. import Moments
from ._intrinsics import min2
from ._tasks import _key, nsplit, run, task, threads, widen
from .chunks import (
    _AM,
    _AN,
    _AQ,
    _AR,
    _BAD,
    _BM,
    _C1,
    _C2,
    _NS,
    _S1,
    _S2,
    _SH,
    _T1,
    _T2,
    _TN,
    NACC,
    NLANE,
    finish_lane_task,
    lane_blocks,
    lane_fill,
    lane_totals,
    row_group,
    row_item,
    row_items,
    shifted_block,
    start_lane_task,
)  # fmt: skip
from .minmax import col_minmax, col_moments_minmax, row_minmax
from .segments import absorb_shifted, segment_moments, segment_moments_nan

_FM = set(FASTMATH)

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
#   rg          items per row task (K == 1: chunks.row_group), 1 otherwise
#               (frame computes it)


@task(fastmath=_FM, variants=("nan",))
def row_moments(nan):
    """Task t (frame; K == 1) of row_group's tasks: for each of its items,
    the moments of segment s of row r of xf (P, R), into part[:4, r, s, 0];
    ``nan``: NaN left out (segment_moments_nan; the frame's skipnan)."""

    def row_moments_task(t, xf, of, K, L, nseg, rb, skipnan, lo, hi, part, lanes, acc, stop, prm, rot, rg):
        i0, i1 = row_items(xf, nseg, rg, t)
        for i in range(i0, i1):
            r, s, a, b = row_item(xf, nseg, i)
            if nan:  # (a compile-time flag: one of the two is compiled)
                m = segment_moments_nan(xf[r], a, b)
            else:
                m = segment_moments(xf[r], a, b)
            part[0, r, s, 0], part[1, r, s, 0], part[2, r, s, 0], part[3, r, s, 0] = m

    return row_moments_task


@task(fastmath=_FM)
def col_moments(t, xf, of, K, L, nseg, rb, skipnan, lo, hi, part, lanes, acc, stop, prm, rot, rg):
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


@subroutine(fastmath=_FM, error_model="numpy", nogil=True)
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


@subroutine(fastmath=_FM, error_model="numpy", nogil=True)
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
def col_moments_exact(t, xf, of, K, L, nseg, rb, skipnan, lo, hi, part, lanes, acc, stop, prm, rot, rg):
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
    if K > 1 and nseg > 1 and R // nseg < LANE_TASK_MIN_ROWS:
        # few rows per task: each task's per-column finish would outweigh
        # its data (LANE_TASK_MIN_ROWS); one task per thread at most
        nseg = min(nseg, max(threads(), R // LANE_TASK_MIN_ROWS))
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
    rot=True, lanes=True, row_scratch=False,
):  # fmt: skip
    """The frame tuple of the tasks over xf (P, R*K) (see FRAME above):
    scratch for the statistics when ``stats``; the output ``of`` with
    parameters prm (3, P, La) and clip bounds lo/hi when given.  Unused
    slots hold empty arrays of the same types.  ``rot``/``lanes`` False:
    no task of the call reads rot, or lanes, acc and stop (the row moments
    and apply tasks read none of them): empty ones take their slots.
    K == 1: the row tasks take ``rg`` items each (chunks.row_group, for
    numba's thread count), and ``row_scratch`` sizes lanes, acc, stop and
    rot for them (one row per row task) instead of one row per lane task
    (P * nseg), for a call whose scratch only row tasks use."""
    P = xf.shape[0]
    rg = row_group(P, xf.shape[1], nseg, threads())[0] if K == 1 else 1
    ntask = -(-P * nseg // rg) if row_scratch else P * nseg
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
    return (xf, of, K, L, nseg, rb, bool(skipnan), lo, hi, part, lanes, acc, stop, prm, rot, int(rg))


# frame slots read back by the callers
F_PART, F_STOP, F_PRM, F_RG = 9, 12, 13, 15


def row_tasks(fr) -> int:
    """The number of row tasks of a frame (K == 1): its items, P * nseg,
    ``rg`` to a task (chunks.row_group)."""
    n = fr[0].shape[0] * fr[4]
    return -(-n // fr[F_RG])


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
        run(row_moments, row_tasks(fr), *fr, nan=bool(skipnan))
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
        if K == 1:  # (rows: rg to a task)
            run(row_minmax, row_tasks(fr), *fr)
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
