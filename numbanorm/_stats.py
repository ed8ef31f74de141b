"""The statistics core: Welford / Chan scalar functions, written once.

Every normalization in numbanorm reduces its groups to ``(count, mean, M2)``
triples and combines partial triples with Chan, Golub & LeVeque's pairwise
formula.  The functions here are plain ``@njit`` functions without explicit
signatures, so the same source is inlined into the ``@njit(parallel=True)`` CPU
kernels *and* callable from ``@cuda.jit`` kernels (numba compiles a device
version on demand).  No code in the package computes a variance as
``E[x^2] - E[x]^2``.  The one sum-of-squares form, ``shifted_moments``, works
on deviations from a shift near the mean, and only on sums whose condition
number the caller has checked against ``SHIFT_MAX_GAIN`` (otherwise the caller
runs the exact two-pass).

References
----------
B. P. Welford, "Note on a method for calculating corrected sums of squares and
products", Technometrics 4(3), 1962.
T. F. Chan, G. H. Golub, R. J. LeVeque, "Algorithms for computing the sample
variance: analysis and recommendations", The American Statistician 37(3), 1983.
D. H. D. West, "Updating mean and variance estimates: an improved method",
Communications of the ACM 22(9), 1979 (weighted update).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, fastmath=False)
def chan_merge(na, ma, qa, nb, mb, qb):
    """Merge two partial (count, mean, M2) triples (Chan et al. 1983, eq. 2.1b)."""
    n = na + nb
    if nb == 0.0:
        return na, ma, qa
    if na == 0.0:
        return nb, mb, qb
    d = mb - ma
    f = nb / n
    return n, ma + d * f, qa + qb + d * d * na * f


@njit(cache=True, fastmath=False)
def two_sum(a, b):
    """Exact sum: ``a + b == s + e`` in real arithmetic (Knuth's TwoSum).

    ``fastmath=False`` is explicit on every function of this module: numba
    compiles a callee with its caller's fast-math flags unless the callee sets
    its own, and 'reassoc' folds ``e`` to 0 (seen: two_sum(1e6, 1e-11) gave
    (1e6, 0.0) when first compiled from a fast-math kernel).  Guarded by
    tests/test_stats_core.py::test_two_sum_exact_inside_fastmath_kernel.
    """
    s = a + b
    bb = s - a
    e = (a - (s - bb)) + (b - bb)
    return s, e


@njit(cache=True, fastmath=False)
def two_prod(a, b):
    """Exact product ``a * b == p + e`` (Dekker's TwoProduct with Veltkamp
    splitting; no FMA needed).  Finite inputs well inside the float64 range."""
    p = a * b
    c = 134217729.0 * a  # 2**27 + 1
    ah = c - (c - a)
    al = a - ah
    c = 134217729.0 * b
    bh = c - (c - b)
    bl = b - bh
    e = ((ah * bh - p) + ah * bl + al * bh) + al * bl
    return p, e


@njit(cache=True, fastmath=False)
def chan_merge_dd(na, ma, ra, qa, nb, mb, rb, qb):
    """Chan's merge with each mean carried as an unevaluated sum ``m + r``.

    A mean of data far from zero (1e6 + randn) rounds to ~1e-10; merging many
    small partials multiplies that into the variance (``2 d delta na nb / n``
    per merge).  Carrying the residual keeps ``d`` exact to rounding of ``d``
    itself, so any split of the data gives the same M2 to ~1e-15 relative
    (tests/test_streaming.py::test_large_mean_small_spread).
    """
    if nb == 0.0:
        return na, ma, ra, qa
    if na == 0.0:
        return nb, mb, rb, qb
    n = na + nb
    d = (mb - ma) + (rb - ra)
    f = nb / n
    hi, lo = two_sum(ma, d * f)
    return n, hi, ra + lo, qa + qb + d * d * na * f


@njit(cache=True, fastmath=False)
def shifted_moments(n, shift, s1, s2):
    """(mean, mean residual, M2) of n values from their shifted sums
    ``s1 = sum(x - shift)`` and ``s2 = sum((x - shift)**2)``.

    ``M2 = s2 - s1**2 / n``, whose relative error is bounded by about
    ``n u K`` with the condition number ``K = s2 / M2 = 1 + (mean - shift)**2
    / var`` (Chan, Golub & LeVeque 1983, section 3: the textbook algorithm on
    shifted data; u = 2**-53).  Callers use it only on sums whose K they have
    checked against SHIFT_MAX_GAIN (``backends.cpu._shift_ok``), so it is as exact as the
    two-pass algorithm to a few bits.  The mean is ``shift + s1/n`` kept as an
    unevaluated sum (see chan_merge_dd).
    """
    q = s1 / n
    hi, lo = two_sum(shift, q)
    # the rounding of q itself, exactly: s1 - q*n (q*n as an exact product;
    # s1 - p is exact by Sterbenz), so a mean of data on a common grid (the
    # usual case: s1 is then an exact sum) is exact to the residual's rounding
    p, e = two_prod(q, n)
    lo += ((s1 - p) - e) / n
    return hi, lo, max(s2 - s1 * s1 / n, 0.0)


@njit(cache=True, fastmath=False)
def welford_push(n, m, q, x, w):
    """Fold one value ``x`` of weight ``w`` into (count, mean, M2) (West 1979)."""
    if w == 0.0:
        return n, m, q
    n2 = n + w
    d = x - m
    m2 = m + d * (w / n2)
    return n2, m2, q + w * d * (x - m2)


@njit(cache=True, fastmath=False)
def variance(n, q, ddof):
    """Variance from a (count, M2) pair; NaN when ``n - ddof <= 0``."""
    dof = n - ddof
    if dof <= 0.0:
        return math.nan
    return q / dof


@njit(cache=True, fastmath=False)
def inv_std(var, eps):
    """``1 / sqrt(var + eps)`` (NaN stays NaN, a zero denominator gives inf)."""
    d = var + eps
    if d == 0.0:
        return math.inf
    return 1.0 / math.sqrt(d)


@njit(cache=True, fastmath=False)
def merge_mid(cnt, mean, res, m2, mn, mx, minmax):
    """Merge (A, M, B) partials over the middle axis into (A, B) arrays (serial).

    Means are carried as ``mean + res`` (see ``chan_merge_dd``).  NaN in a
    min/max partial propagates (a NaN partial means the group saw a NaN and
    NaN was not being skipped).
    """
    A, M, B = cnt.shape
    oc = np.zeros((A, B))
    om = np.zeros((A, B))
    orr = np.zeros((A, B))
    oq = np.zeros((A, B))
    omn = np.full((A, B), np.inf)
    omx = np.full((A, B), -np.inf)
    for a in range(A):
        for j in range(M):
            for b in range(B):
                oc[a, b], om[a, b], orr[a, b], oq[a, b] = chan_merge_dd(
                    oc[a, b],
                    om[a, b],
                    orr[a, b],
                    oq[a, b],
                    cnt[a, j, b],
                    mean[a, j, b],
                    res[a, j, b],
                    m2[a, j, b],
                )
                if minmax:
                    lo = mn[a, j, b]
                    hi = mx[a, j, b]
                    if lo != lo or omn[a, b] != omn[a, b]:
                        omn[a, b] = math.nan
                    elif lo < omn[a, b]:
                        omn[a, b] = lo
                    if hi != hi or omx[a, b] != omx[a, b]:
                        omx[a, b] = math.nan
                    elif hi > omx[a, b]:
                        omx[a, b] = hi
    return oc, om, orr, oq, omn, omx
