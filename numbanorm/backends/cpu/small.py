"""Small calls: each op on an input of at most MIN_TASK_ELEMS elements as one
serial kernel, without the thread pool (waking it costs more than the work:
NOTES.md sections 10 and 13).  Statistics are a plain corrected two-pass in
float64 (the data are cache-resident); outputs are formed in float64 and
rounded once.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..._cache import kernel
from ..._config import FASTMATH, FASTMATH_ELEMENTWISE
from ..._stats import (
    constant_feature,
    inv_std,
    merge_state_at,
    minmax_factor,
    pnorm_finish,
    running_update,
    two_sum,
    variance,
)
from ._elementwise import alias_safe
from ._intrinsics import max2
from .rows import MEAN, RMS, row_two_pass, short_row_affine_apart, short_row_stats

_FM = set(FASTMATH)
_FME = set(FASTMATH_ELEMENTWISE)

# float32 rows of at least this many elements take row_norm_short (its
# float32 output pass and one-pass statistics win there; shorter rows gain
# more from row_norm_small's single loop nest: NOTES.md section 33)
SHORT_MIN_D = 128
# ... and rows with one weight per segment (group norm) when the segments
# have at least this many elements (in a prototype, segments of 4 took
# 0.82x row_norm_small's time, of 1 element 1.7x: NOTES.md section 34)
SHORT_MIN_SEG = 4


def _row_norm_small(x2, o2, W, B, eps, mode, store, mean_out, rstd_out):
    """Layer/RMS/instance/group norm of a small x2 (R, D), serial, in one loop nest.

    For inputs below MIN_TASK_ELEMS, where _row_norm_serial's per-row helper
    calls cost ~100 ns a row (NOTES.md section 10).  Statistics are a plain
    two-pass in float64 (rows this short are cache-resident); the output is
    formed in float64 as ``(x - mean) * (rstd * w) + b`` and rounded once, so
    there is no hi/lo mean split for 'reassoc' to fold: the whole kernel can
    take FASTMATH and LLVM keeps it in one vectorized nest.

    ``mode``: 0 layer norm, 1 RMS norm, -2 the 2-norm (lp_normalize p=2, NaN
    left out of the norm).  RMS norm and the 2-norm have no mean and no bias
    (B is not read: rows.row_norm) and write ``x * (rstd * w)``, the same
    value but -0.0 where ``... + 0`` gives +0.0.

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
                rs = inv_std(s / D, eps)
            else:
                if s != s:  # NaN left out of the norm (API section 3)
                    s = 0.0
                    for d in range(D):
                        a = np.float64(x2[r, d])
                        s += a * a if a == a else 0.0
                rs = 1.0 / max2(pnorm_finish(s, 2.0), eps)
        else:
            cm, q = row_two_pass(x2, r)
            rs = inv_std(q / D, eps)
        if store:
            mean_out[r] = cm
            rstd_out[r] = rs
        if mode != 0.0:
            if seg == 1:
                for d in range(D):
                    o2[r, d] = np.float64(x2[r, d]) * (rs * np.float64(W[rw, d]))
            else:
                for k in range(S):
                    a = rs * np.float64(W[rw, k])
                    base = k * seg
                    for j in range(seg):
                        o2[r, base + j] = np.float64(x2[r, base + j]) * a
        elif seg == 1:
            for d in range(D):
                o2[r, d] = (np.float64(x2[r, d]) - cm) * (rs * np.float64(W[rw, d])) + np.float64(B[rw, d])
        else:
            for k in range(S):
                a = rs * np.float64(W[rw, k])
                b = np.float64(B[rw, k])
                base = k * seg
                for j in range(seg):
                    o2[r, base + j] = (np.float64(x2[r, base + j]) - cm) * a + b


# In place (out=x) one array is read and written, so that the loops
# vectorize without an overlap check (_elementwise.alias_safe).  Each small
# kernel comes as a pair, ``kernel[same]``: (apart, in place), two compiled
# functions of which a process compiles only the one it calls (one kernel
# with both loop nests took 1.3-2.6x the first call's compile time; a
# choice per row inside the nest cost rows of 64 1.2-1.5x the run time).
# The apart kernels are the bodies themselves (a kernel that inlines its
# body compiled 0.1-0.5 s longer); the inlined variants are module globals
# (numba's cache keys them by name).
row_norm_small_apart = kernel(fastmath=_FM, error_model="numpy", nogil=True)(_row_norm_small)
_row_norm_small_same = alias_safe(_row_norm_small, _FM, read="x2", write="o2").variant(True)


@kernel(fastmath=_FM, error_model="numpy", nogil=True)
def row_norm_small_in_place(x2, o2, W, B, eps, mode, store, mean_out, rstd_out):
    """_row_norm_small with o2 x2 itself (x2 is not read)."""
    _row_norm_small_same(x2, o2, W, B, eps, mode, store, mean_out, rstd_out)


row_norm_small = (row_norm_small_apart, row_norm_small_in_place)


@njit(fastmath=_FME, error_model="numpy", inline="always")
def short_row_segments(x2, o2, r, mu, rs, W, B, rw):
    """o2[r] = ((x2[r] - mh) - ml) * (rs * w) + b with one weight and bias
    per segment of the row (group norm: W, B (RW, S)), in x's dtype with the
    mean split hi/lo, as the row tasks' segments (rows.affine_row)."""
    T = x2.dtype.type
    mh = T(mu)
    ml = T(mu - mh)
    rr = T(rs)
    S = W.shape[1]
    seg = x2.shape[1] // S
    for k in range(S):
        a = rr * W[rw, k]
        b = B[rw, k]
        base = k * seg
        for j in range(seg):
            o2[r, base + j] = ((x2[r, base + j] - mh) - ml) * a + b


def _row_norm_short(x2, o2, W, B, eps, centred, store, mean_out, rstd_out):
    """Layer norm (``centred``) or RMS norm of a small x2 (R, D) with the
    row tasks' short-row code, serial: statistics in one shifted float64 pass
    (rows.short_row_stats, guarded, else the exact two-pass), the output in
    x's dtype (rows.short_row_affine).  For float32 rows of SHORT_MIN_D or
    more it takes 0.55-0.8x row_norm_small's time (NOTES.md section 33).
    W, B: (RW, 1) or (RW, D).  ``store``: as row_norm_small."""
    R = x2.shape[0]
    RW = W.shape[0]
    stat = MEAN if centred else RMS
    for r in range(R):
        mu, rs = short_row_stats(x2, r, stat, eps)
        if store:
            mean_out[r] = mu
            rstd_out[r] = rs
        short_row_affine_apart(x2, o2, r, mu, rs, W, B, r % RW, centred)


row_norm_short_apart = kernel(fastmath=_FME, error_model="numpy", nogil=True)(_row_norm_short)
_row_norm_short_same = alias_safe(_row_norm_short, _FME, read="x2", write="o2").variant(True)


@kernel(fastmath=_FME, error_model="numpy", nogil=True)
def row_norm_short_in_place(x2, o2, W, B, eps, centred, store, mean_out, rstd_out):
    """_row_norm_short with o2 x2 itself (x2 is not read)."""
    _row_norm_short_same(x2, o2, W, B, eps, centred, store, mean_out, rstd_out)


row_norm_short = (row_norm_short_apart, row_norm_short_in_place)


def _row_norm_groups(x2, o2, W, B, eps, store, mean_out, rstd_out):
    """Group norm of a small x2 (R, D), one weight and bias per D/S-long
    segment (W, B (RW, S)), with the row tasks' short-row code, serial:
    row_norm_short's statistics, the output by short_row_segments.  A
    kernel of its own, so that layer norm's first call does not compile the
    segment loop (0.05-0.15 s there).  For float32 rows of SHORT_MIN_D or
    more and segments of SHORT_MIN_SEG or more: 0.55-0.85x row_norm_small's
    time (NOTES.md section 34).  ``store``: as row_norm_small."""
    R = x2.shape[0]
    RW = W.shape[0]
    for r in range(R):
        mu, rs = short_row_stats(x2, r, MEAN, eps)
        if store:
            mean_out[r] = mu
            rstd_out[r] = rs
        short_row_segments(x2, o2, r, mu, rs, W, B, r % RW)


row_norm_groups_apart = kernel(fastmath=_FME, error_model="numpy", nogil=True)(_row_norm_groups)
_row_norm_groups_same = alias_safe(_row_norm_groups, _FME, read="x2", write="o2").variant(True)


@kernel(fastmath=_FME, error_model="numpy", nogil=True)
def row_norm_groups_in_place(x2, o2, W, B, eps, store, mean_out, rstd_out):
    """_row_norm_groups with o2 x2 itself (x2 is not read)."""
    _row_norm_groups_same(x2, o2, W, B, eps, store, mean_out, rstd_out)


row_norm_groups = (row_norm_groups_apart, row_norm_groups_in_place)


def row_norm_serial(x2, o2, W, B, eps, mode, store, mean_out, rstd_out, same):
    """A small row norm in this thread: row_norm_small, or where they are
    faster, for float32 rows of at least SHORT_MIN_D elements,
    row_norm_short (layer or RMS norm, one weight per element or per row)
    and row_norm_groups (group norm, one weight per segment of at least
    SHORT_MIN_SEG elements).  ``same``: o2 is x2 (in place)."""
    # (float32: itemsize 4, float16 having been widened; the cheap tests first)
    if mode >= 0.0 and x2.itemsize == 4 and (D := x2.shape[1]) >= SHORT_MIN_D:
        S = W.shape[1]
        if S == 1 or S == D:
            row_norm_short[same](x2, o2, W, B, eps, mode == 0.0, store, mean_out, rstd_out)
            return
        if mode == 0.0 and D // S >= SHORT_MIN_SEG:
            row_norm_groups[same](x2, o2, W, B, eps, store, mean_out, rstd_out)
            return
    row_norm_small[same](x2, o2, W, B, eps, mode, store, mean_out, rstd_out)


@kernel(fastmath=_FM, error_model="numpy", nogil=True)
def channel_moments(x3, skipnan, cnt, mean, m2, res):
    """Per-channel (count, mean, M2) of x3 (A, C, S) over A and S: the
    corrected two-pass in float64 (Chan, Golub & LeVeque 1983, eq. 1.7),
    NaN left out when ``skipnan``; ``res``: the rounding residual of the
    mean's correction (``_stats.two_sum``).  A channel with no values gets
    NaN (residual 0)."""
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
            mean[c], res[c] = two_sum(mean[c], corr)
        else:
            m2[c] = math.nan
            res[c] = 0.0


def _channel_apply(x3, y3, center, scale, shift, clip, lo, hi):
    """y3 = clip((x3 - center) * scale + shift) per channel of x3 (A, C, S),
    formed in float64 and rounded once (parameters (C,) float64)."""
    A, C, S = x3.shape
    if S == 1:
        # (3-D indexing: reshaped views of one array are not known to be one
        # array, and the in-place variant would take the overlap check)
        for a in range(A):
            for c in range(C):
                y = (np.float64(x3[a, c, 0]) - center[c]) * scale[c] + shift[c]
                if clip:
                    y = lo if y < lo else y
                    y = hi if y > hi else y
                y3[a, c, 0] = y
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


channel_apply = kernel(fastmath=_FME, error_model="numpy", nogil=True)(_channel_apply)
_channel_apply_same = alias_safe(_channel_apply, _FME, read="x3", write="y3").variant(True)


@kernel(fastmath=_FME, error_model="numpy", nogil=True)
def channel_apply_in_place(x3, y3, center, scale, shift, clip, lo, hi):
    """channel_apply with y3 x3 itself (x3 is not read)."""
    _channel_apply_same(x3, y3, center, scale, shift, clip, lo, hi)


@njit(fastmath=_FM, error_model="numpy", inline="always")
def _batch_norm_params(x3, rm, rv, w, b, training, update, momentum, eps, mean, rstd):
    """batch_norm_small's statistics: (scale, shift) (C,), ``mean`` and
    ``rstd`` written, the running statistics updated (``update``)."""
    A, C, S = x3.shape
    n = float(A * S)
    scale = np.empty(C)
    shift = np.empty(C)
    if training:
        cnt = np.empty(C)
        m2 = np.empty(C)
        channel_moments(x3, False, cnt, mean, m2, np.empty(C))
        for c in range(C):
            scale[c] = inv_std(m2[c] / n, eps)
            if update:
                rm[c] = running_update(np.float64(rm[c]), mean[c], momentum)
                rv[c] = running_update(np.float64(rv[c]), m2[c] / (n - 1.0), momentum)
    else:
        for c in range(C):
            mean[c] = np.float64(rm[c])
            scale[c] = inv_std(np.float64(rv[c]), eps)
    for c in range(C):
        rstd[c] = scale[c]
        if w.size:
            scale[c] *= np.float64(w[c])
        shift[c] = np.float64(b[c]) if b.size else 0.0
    return scale, shift


@kernel(fastmath=_FM, error_model="numpy", nogil=True)
def batch_norm_small_apart(x3, y3, rm, rv, w, b, training, update, momentum, eps, mean, rstd):
    """Batch norm of a small x3 (A, C, S) with channels on axis 1, one serial
    kernel: batch statistics (training) or the running ones, the running
    update in place (``update``: rm/rv given), and the output.  w, b: (C,) or
    empty (identity).  Same formulas as functional.batch_norm; the mean and
    rstd used are written to ``mean``, ``rstd`` (C,)."""
    scale, shift = _batch_norm_params(x3, rm, rv, w, b, training, update, momentum, eps, mean, rstd)
    channel_apply(x3, y3, mean, scale, shift, False, 0.0, 0.0)


@kernel(fastmath=_FM, error_model="numpy", nogil=True)
def batch_norm_small_in_place(x3, y3, rm, rv, w, b, training, update, momentum, eps, mean, rstd):
    """batch_norm_small_apart with y3 x3 itself."""
    scale, shift = _batch_norm_params(x3, rm, rv, w, b, training, update, momentum, eps, mean, rstd)
    channel_apply_in_place(x3, y3, mean, scale, shift, False, 0.0, 0.0)


batch_norm_small = (batch_norm_small_apart, batch_norm_small_in_place)


@njit(fastmath=_FM, error_model="numpy", inline="always")
def _standardize_params(x3, ddof, with_mean, with_std, center, sd):
    """standardize_small's statistics: the scale (C,), ``center`` and ``sd``
    written."""
    C = x3.shape[1]
    cnt = np.empty(C)
    mean = np.empty(C)
    m2 = np.empty(C)
    channel_moments(x3, True, cnt, mean, m2, np.empty(C))
    center[:] = 0.0
    sd[:] = 1.0
    scale = np.ones(C)
    for c in range(C):
        n = cnt[c]
        var = variance(n, m2[c], ddof)
        std = 1.0 if constant_feature(var, mean[c], n) else math.sqrt(var)
        if with_mean:
            center[c] = mean[c]
        if with_std:
            sd[c] = std
            scale[c] = 1.0 / std
    return scale


@kernel(fastmath=_FM, error_model="numpy", nogil=True)
def standardize_small_apart(x3, y3, ddof, with_mean, with_std, center, sd):
    """preprocessing.standardize of a small x3 (A, C, S) over A and S, one
    serial kernel (NaN left out of the statistics; constant features, by
    scikit-learn's bound as in preprocessing.constant_features, get std 1).
    The mean and std used are written to ``center``, ``sd`` (C,)."""
    scale = _standardize_params(x3, ddof, with_mean, with_std, center, sd)
    channel_apply(x3, y3, center, scale, np.zeros(x3.shape[1]), False, 0.0, 0.0)


@kernel(fastmath=_FM, error_model="numpy", nogil=True)
def standardize_small_in_place(x3, y3, ddof, with_mean, with_std, center, sd):
    """standardize_small_apart with y3 x3 itself."""
    scale = _standardize_params(x3, ddof, with_mean, with_std, center, sd)
    channel_apply_in_place(x3, y3, center, scale, np.zeros(x3.shape[1]), False, 0.0, 0.0)


standardize_small = (standardize_small_apart, standardize_small_in_place)


@njit(fastmath=_FME, error_model="numpy", inline="always")
def _minmax_params(x3, lo, hi):
    """minmax_small's (min, scale) per channel (C,) (NaN left out of
    min/max; a zero range counts as 1)."""
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
        scale[c] = minmax_factor(mn[c], mx[c], lo, hi)
    return mn, scale


@kernel(fastmath=_FME, error_model="numpy", nogil=True)
def minmax_small_apart(x3, y3, lo, hi, clip):
    """preprocessing.minmax_scale of a small x3 (A, C, S) over A and S, one
    serial kernel (NaN left out of min/max; a zero range counts as 1)."""
    mn, scale = _minmax_params(x3, lo, hi)
    channel_apply(x3, y3, mn, scale, np.full(x3.shape[1], lo), clip, lo, hi)


@kernel(fastmath=_FME, error_model="numpy", nogil=True)
def minmax_small_in_place(x3, y3, lo, hi, clip):
    """minmax_small_apart with y3 x3 itself."""
    mn, scale = _minmax_params(x3, lo, hi)
    channel_apply_in_place(x3, y3, mn, scale, np.full(x3.shape[1], lo), clip, lo, hi)


minmax_small = (minmax_small_apart, minmax_small_in_place)


@kernel(fastmath=_FM, error_model="numpy", nogil=True)
def fold_moments(x3, minmax, reject_inf, cnt, mean, res, m2, mn, mx, nans):
    """Fold a small x3 (A, C, S) into a streaming state, serially: each
    channel's (count, mean + residual, M2, min, max, NaN count) over A and S
    (``channel_moments``, NaN left out), Chan-merged into the
    (C,) float64 state (``_stats.chan_merge_dd``; nans int64) in place.

    The small-input twin of ``numbanorm._reduce.reduce_moments`` +
    ``streaming._merge_into_state`` for RunningStats and the scalers (no
    thread pool: NOTES.md section 10, tests/test_loose_ends.py).  With
    ``reject_inf``, a chunk with a channel whose mean (min or max with
    ``minmax``) is not finite is not merged and False is returned (the
    scalers' "Input X contains infinity"); else True.
    """
    A, C, S = x3.shape
    c2 = np.empty(C)
    mu = np.empty(C)
    q = np.empty(C)
    r = np.empty(C)
    channel_moments(x3, True, c2, mu, q, r)
    lo = np.full(C, np.inf)
    hi = np.full(C, -np.inf)
    if minmax:  # comparisons, not min(): NaN is never taken
        x2 = x3.reshape(A * C, S)
        for a in range(A):
            for c in range(C):
                tl = lo[c]
                th = hi[c]
                for j in range(S):
                    v = np.float64(x2[a * C + c, j])
                    tl = v if v < tl else tl
                    th = v if v > th else th
                lo[c] = tl
                hi[c] = th
    if reject_inf:
        for c in range(C):
            if c2[c] > 0.0:
                if minmax:
                    bad = not (math.isfinite(lo[c]) and math.isfinite(hi[c]))
                else:
                    bad = not math.isfinite(mu[c])
                if bad:
                    return False
    n_red = float(A * S)
    for c in range(C):
        merge_state_at(c, cnt, mean, res, m2, mn, mx, c2[c], mu[c], r[c], q[c], lo, hi, minmax)
        nans[c] += np.int64(n_red - c2[c])
    return True
