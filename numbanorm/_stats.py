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

from ._cache import kernel, subroutine


@subroutine(fastmath=False)
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


@subroutine(fastmath=False)
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


@subroutine(fastmath=False)
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


@subroutine(fastmath=False)
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


@subroutine(fastmath=False)
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
    m2 = s2 - s1 * s1 / n
    return hi, lo, 0.0 if m2 < 0.0 else m2  # max(m2, 0.0), NaN kept (no overload compiled)


@njit(fastmath=False, inline="always")
def merge_state_at(f, cnt, mean, res, m2, mn, mx, n2, mu2, r2, q2, lo2, hi2, minmax):
    """Merge a partial (count n2, mean mu2 + r2, M2 q2; with ``minmax`` also
    lo2[f], hi2[f]) into feature f of a streaming state's arrays, in place:
    ``chan_merge_dd``, and min/max by explicit comparisons (NaN never
    reaches a partial with a count > 0).  An empty partial changes nothing.
    The one state merge of RunningStats and the scalers (streaming.py,
    backends/cpu/small.py); inlined by numba (as a function of its own it
    added 0.05-0.3 s to a cold StandardScaler call, NOTES.md section 21d;
    its one call, to chan_merge_dd, keeps that function's own flags)."""
    if n2 > 0.0:
        cnt[f], mean[f], res[f], m2[f] = chan_merge_dd(cnt[f], mean[f], res[f], m2[f], n2, mu2, r2, q2)
        if minmax:
            if lo2[f] < mn[f]:
                mn[f] = lo2[f]
            if hi2[f] > mx[f]:
                mx[f] = hi2[f]


@subroutine(fastmath=False)
def welford_push(n, m, q, x, w):
    """Fold one value ``x`` of weight ``w`` into (count, mean, M2) (West 1979)."""
    if w == 0.0:
        return n, m, q
    n2 = n + w
    d = x - m
    m2 = m + d * (w / n2)
    return n2, m2, q + w * d * (x - m2)


@subroutine(fastmath=False)
def variance(n, q, ddof):
    """Variance from a (count, M2) pair; NaN when ``n - ddof <= 0``."""
    dof = n - ddof
    if dof <= 0.0:
        return math.nan
    return q / dof


@subroutine(fastmath=False, error_model="numpy")
def inv_std(var, eps):
    """``1 / sqrt(var + eps)``, the rstd of every norm (NaN stays NaN, a zero
    denominator gives inf).  Scalars, in CPU kernels and CUDA device code
    (``math.sqrt``: numba-cuda has no ``np.sqrt`` on scalars, caught by the
    PTX compile test); arrays take :func:`inv_std_array`, the same IEEE
    operations elementwise."""
    return 1.0 / math.sqrt(var + eps)


def inv_std_array(var, eps):
    """:func:`inv_std` of NumPy arrays (or scalars): ``1 / sqrt(var + eps)``
    elementwise, NaN kept, a zero denominator giving inf without a warning."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 / np.sqrt(np.add(var, eps))


@subroutine(fastmath=False)
def running_update(old, new, momentum):
    """PyTorch's running-statistic update, ``(1 - momentum) * old + momentum *
    new`` (momentum weighs the new batch).  Its ``py_func`` serves arrays."""
    return (1.0 - momentum) * old + momentum * new


@subroutine(fastmath=False)
def pnorm_finish(s, p):
    """``||x||_p`` from ``s = sum |x|**p`` (finite p > 0; p = inf is a max,
    not a sum), of scalars in CPU kernels and CUDA device code
    (``math.sqrt``: numba-cuda has no ``np.sqrt`` of scalars); arrays take
    :func:`pnorm_finish_array`, the same operations elementwise."""
    if p == 1.0:
        return s
    if p == 2.0:
        return math.sqrt(s)
    return s ** (1.0 / p)


def pnorm_finish_array(s, p):
    """:func:`pnorm_finish` of NumPy arrays (overflow to inf, as torch)."""
    if p == 1.0:
        return s
    if p == 2.0:
        return np.sqrt(s)
    return s ** (1.0 / p)


@njit(fastmath=False, inline="always")
def minmax_merge(lo, hi, pl, ph):
    """(lo, hi) merged with a partial's min pl and max ph; a NaN on either
    side propagates (a NaN partial saw NaN that was not skipped).  The one
    min/max merge of the partials (merge_into, the per-channel glue,
    RunningStats' fold)."""
    lo = math.nan if (pl != pl or lo != lo) else (pl if pl < lo else lo)
    hi = math.nan if (ph != ph or hi != hi) else (ph if ph > hi else hi)
    return lo, hi


@kernel(fastmath=False)
def merge_into(cnt, mean, res, m2, mn, mx, minmax, oc, om, orr, oq, omn, omx):
    """Merge (A, M, B) partials over the middle axis into the (A, B) outputs
    (serial; the outputs are overwritten).

    Means are carried as ``mean + res`` (see ``chan_merge_dd``).  NaN in a
    min/max partial propagates (a NaN partial means the group saw a NaN and
    NaN was not being skipped).  mn, mx, omn, omx are read and written only
    when ``minmax`` (else any float64 arrays of their rank).
    """
    A, M, B = cnt.shape
    for a in range(A):
        for b in range(B):
            n, mu, r, q = 0.0, 0.0, 0.0, 0.0
            lo, hi = math.inf, -math.inf
            for j in range(M):
                n, mu, r, q = chan_merge_dd(
                    n, mu, r, q, cnt[a, j, b], mean[a, j, b], res[a, j, b], m2[a, j, b]
                )
                if minmax:
                    lo, hi = minmax_merge(lo, hi, mn[a, j, b], mx[a, j, b])
            oc[a, b], om[a, b], orr[a, b], oq[a, b] = n, mu, r, q
            if minmax:
                omn[a, b] = lo
                omx[a, b] = hi


_NO_MINMAX = np.zeros((0, 0, 0))


def merge_mid(cnt, mean, res, m2, mn, mx, minmax):
    """(count, mean, residual, M2, min, max) of (A, M, B) partials merged
    over the middle axis, each (A, B) float64 (min/max +-inf when not
    ``minmax``)."""
    A, _, B = cnt.shape
    out = [np.empty((A, B)) for _ in range(4)]
    omn, omx = np.full((A, B), np.inf), np.full((A, B), -np.inf)
    if not minmax:
        mn = mx = _NO_MINMAX
    f = np.ascontiguousarray
    merge_into(f(cnt), f(mean), f(res), f(m2), f(mn), f(mx), bool(minmax), *out, omn, omx)
    return (*out, omn, omx)


def merge_partials(cnt, mean, res, m2, mn=None, mx=None):
    """merge_mid with min/max only when given (None otherwise)."""
    minmax = mn is not None
    c, mu, r, q, lo, hi = merge_mid(cnt, mean, res, m2, mn, mx, minmax)
    return c, mu, r, q, (lo if minmax else None), (hi if minmax else None)


# --------------------------------------------------------------------------
# statistics into the parameters of the output pass: the general paths (from
# Python) and the per-channel fast paths (backends/cpu/channels.py, compiled
# in) call the same functions, so both give the same bits
# --------------------------------------------------------------------------

_EPS = float(np.finfo(np.float64).eps)


@subroutine(fastmath=False)
def constant_feature(var, mean, n):
    """True where a variance is indistinguishable from 0 by rounding.

    The bound is scikit-learn's ``_is_constant_feature``: the rounding error of
    the mean of ``n`` equal values can leave a variance of order
    ``(n * mean * eps)**2`` instead of 0; such features get scale 1.  Its
    ``py_func`` serves arrays (constant_features).
    """
    e = n * mean * _EPS  # (e*e, not e**2: numba compiles a power function for **)
    return var <= n * _EPS * var + e * e


def constant_features(var, mean, n):
    """constant_feature over arrays."""
    with np.errstate(invalid="ignore", over="ignore"):
        return constant_feature.py_func(var, mean, n)


@subroutine(fastmath=False, error_model="numpy")
def minmax_factor(mn, mx, lo, hi):
    """minmax_scale's scale, ``(hi - lo) / (max - min)``, a zero range
    counting as 1 (scikit-learn).  Its ``py_func`` serves arrays."""
    r = mx - mn
    return (hi - lo) / (r + (r == 0.0))


@kernel(fastmath=False, error_model="numpy", inline="always")
def batch_norm_params(cnt, mu, m2, rm, rv, w, b, training, update, momentum, eps, mean, rstd, scale, shift):
    """batch_norm's per-channel parameters, written to the (C,) float64
    outputs mean, rstd, scale (rstd * weight) and shift (bias).

    Training: from the batch's count, mean and M2 (biased variance), the
    running stats rm/rv updated in place when ``update`` (the unbiased
    variance, PyTorch's momentum); else from the running stats (cnt, mu, m2
    unread).  w/b: (C,) arrays or empty (identity).
    """
    for c in range(mean.size):
        if training:
            m = mu[c]
            rs = inv_std(m2[c] / cnt[c], eps)
            if update:
                rm[c] = running_update(np.float64(rm[c]), m, momentum)
                rv[c] = running_update(np.float64(rv[c]), m2[c] / (cnt[c] - 1.0), momentum)
        else:
            m = np.float64(rm[c])
            rs = inv_std(np.float64(rv[c]), eps)
        mean[c] = m
        rstd[c] = rs
        scale[c] = rs * np.float64(w[c]) if w.size else rs
        shift[c] = np.float64(b[c]) if b.size else 0.0


@kernel(fastmath=False, error_model="numpy", inline="always")
def standardize_params(cnt, mean, m2, ddof, with_mean, with_std, center, sd, scale):
    """standardize's per-feature center, std and scale (1/std), float64
    outputs: the variance with ``ddof`` (NaN without degrees of freedom), std
    1 for constant features (scikit-learn), center 0 / std 1 when not
    with_mean / with_std."""
    for c in range(cnt.size):
        var = variance(cnt[c], m2[c], ddof)
        std = 1.0 if constant_feature(var, mean[c], cnt[c]) else np.sqrt(var)
        center[c] = mean[c] if with_mean else 0.0
        sd[c] = std if with_std else 1.0
        scale[c] = 1.0 / sd[c]
