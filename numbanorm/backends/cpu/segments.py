"""Exact moments of one contiguous segment of a row: the statistics every
row kernel (layer/RMS/instance/group norm, the row moments, the channel
pipeline) computes for a cache-resident piece of data.

Per ROW_CHUNK chunk, one pass of sums *shifted* by a value near the mean,
accepted when their condition number is at most SHIFT_MAX_GAIN
(:func:`shift_ok`) and then accumulated as plain sums; a refused chunk
(NaN, Inf, drift, an outlier as the shift) takes the corrected two-pass
while it is in L1/L2, and the shift moves to the running mean
(benchmarks/NOTES.md section 11).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..._cache import subroutine
from ..._config import FASTMATH, ROW_CHUNK, SHIFT_MAX_GAIN
from ..._stats import chan_merge_dd, shifted_moments
from ._intrinsics import max2, min2

_FM = set(FASTMATH)


@njit(fastmath=_FM, error_model="numpy", inline="always")
def shift_ok(n, s1, s2):
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


@njit(fastmath=_FM, error_model="numpy", inline="always")
def absorb_shifted(n, mean, res, m2, tn, sh, t1, t2):
    """(count, mean, residual, M2) merged with tn values' accepted shifted sums."""
    cm, cr, q = shifted_moments(tn, sh, t1, t2)
    return chan_merge_dd(n, mean, res, m2, tn, cm, cr, q)


@subroutine(fastmath=_FM, error_model="numpy", nogil=True)
def shifted_sums(u, sh):
    """(sum(u - sh), sum((u - sh)**2)) in float64."""
    s1 = 0.0
    s2 = 0.0
    for d in range(u.size):
        e = np.float64(u[d]) - sh
        s1 += e
        s2 += e * e
    return s1, s2


@subroutine(fastmath=_FM, error_model="numpy", nogil=True)
def segment_step(w, s1, s2, n, mean, res, m2, sh, tn, t1, t2):
    """One chunk w of :func:`segment_moments`, given its shifted sums s1, s2 about sh.

    State: (n, mean, res, m2) the merged moments so far, sh the shift, (tn,
    t1, t2) the accepted shifted sums not merged yet; the new state is
    returned.  A chunk that ``shift_ok`` refuses flushes the accepted sums,
    takes the corrected two-pass over w (Chan, Golub & LeVeque 1983, eq.
    1.7: the deviations' plain sum ``c`` corrects mean and M2) and moves the
    shift to the running mean, rounded to w's dtype (float32 differences
    about it are exact).
    """
    T = w.dtype.type
    cnt = float(w.size)
    if shift_ok(cnt, s1, s2):
        return n, mean, res, m2, sh, tn + cnt, t1 + s1, t2 + s2
    if tn > 0.0:
        n, mean, res, m2 = absorb_shifted(n, mean, res, m2, tn, sh, t1, t2)
    s = 0.0
    for i in range(w.size):
        s += np.float64(w[i])
    cm = s / cnt
    cc, q = shifted_sums(w, cm)
    # q >= cc^2/n exactly (Cauchy-Schwarz); rounding may not cross 0
    n, mean, res, m2 = chan_merge_dd(n, mean, res, m2, cnt, cm, cc / cnt, max2(q - cc * cc / cnt, 0.0))
    return n, mean, res, m2, np.float64(T(mean)), 0.0, 0.0, 0.0


@subroutine(fastmath=_FM, error_model="numpy", nogil=True)
def segment_moments(v, lo, hi):
    """(count, mean, mean residual, M2) of v[lo:hi]: shifted sums per
    ROW_CHUNK chunk about a shift near the mean (v[lo], then the running
    mean), accumulated while ``shift_ok`` accepts them (segment_step)."""
    n = 0.0
    mean = 0.0
    res = 0.0
    m2 = 0.0
    sh = np.float64(v[lo])
    tn = 0.0
    t1 = 0.0
    t2 = 0.0
    for c0 in range(lo, hi, ROW_CHUNK):
        w = v[c0 : min2(c0 + ROW_CHUNK, hi)]
        s1, s2 = shifted_sums(w, sh)
        n, mean, res, m2, sh, tn, t1, t2 = segment_step(w, s1, s2, n, mean, res, m2, sh, tn, t1, t2)
    if tn > 0.0:
        n, mean, res, m2 = absorb_shifted(n, mean, res, m2, tn, sh, t1, t2)
    return n, mean, res, m2


@subroutine(fastmath=_FM, error_model="numpy", nogil=True)
def counted_shifted_sums(u, sh):
    """(count, sum(u - sh), sum((u - sh)**2)) over u's values that are not
    NaN, in float64 (branch-free: the loop vectorizes)."""
    n = 0.0
    s1 = 0.0
    s2 = 0.0
    for d in range(u.size):
        a = np.float64(u[d])
        ok = a == a
        e = a - sh if ok else 0.0
        s1 += e
        s2 += e * e
        n += 1.0 if ok else 0.0
    return n, s1, s2


@subroutine(fastmath=_FM, error_model="numpy", nogil=True)
def segment_moments_nan(v, lo, hi):
    """:func:`segment_moments` of v[lo:hi] with NaN left out (not counted):
    a chunk without NaN takes segment_moments' own step (so a row without
    NaN gets its bits); one with NaN, counted shifted sums about the first
    value that is not NaN (then the running mean), accepted while
    ``shift_ok`` takes them, else the corrected two-pass over its values
    that are not NaN.  (0, 0, 0, 0) when every value is NaN."""
    T = v.dtype.type
    n = 0.0
    mean = 0.0
    res = 0.0
    m2 = 0.0
    sh = 0.0
    for i in range(lo, hi):
        a = np.float64(v[i])
        if a == a:
            sh = a
            break
    tn = 0.0
    t1 = 0.0
    t2 = 0.0
    for c0 in range(lo, hi, ROW_CHUNK):
        w = v[c0 : min2(c0 + ROW_CHUNK, hi)]
        s1, s2 = shifted_sums(w, sh)
        if s1 == s1 and s2 == s2:
            # no NaN: segment_moments' step (the same bits as without skipping)
            n, mean, res, m2, sh, tn, t1, t2 = segment_step(w, s1, s2, n, mean, res, m2, sh, tn, t1, t2)
            continue
        cnt, s1, s2 = counted_shifted_sums(w, sh)
        if cnt == 0.0:
            continue
        if shift_ok(cnt, s1, s2):
            tn += cnt
            t1 += s1
            t2 += s2
            continue
        if tn > 0.0:
            n, mean, res, m2 = absorb_shifted(n, mean, res, m2, tn, sh, t1, t2)
            tn = 0.0
            t1 = 0.0
            t2 = 0.0
        _, s, _ = counted_shifted_sums(w, 0.0)
        cm = s / cnt
        _, cc, q = counted_shifted_sums(w, cm)
        # the corrected two-pass (segment_step's), over the values counted
        n, mean, res, m2 = chan_merge_dd(n, mean, res, m2, cnt, cm, cc / cnt, max2(q - cc * cc / cnt, 0.0))
        sh = np.float64(T(mean))
    if tn > 0.0:
        n, mean, res, m2 = absorb_shifted(n, mean, res, m2, tn, sh, t1, t2)
    return n, mean, res, m2
