"""Norms of contiguous rows, statistics and output fused: layer norm, RMS
norm, instance and group norm (channels first) and p-norms; the primitive
``row_norm``.

A row (at most a few hundred KiB) stays in L1/L2 between its statistics and
its output loop, so x is read from memory once and y written once.  The
affine parameters come as ``(RW, S)`` arrays: row r uses ``W[r % RW]``, and
its D elements fall into S equal segments with one weight each.  Layer/RMS
norm: W (1, D) (segment length 1); instance norm (NCHW): W (C, 1); group
norm (NCHW): W (G, C/G) over H*W-long segments.

The chooser (:func:`row_norm`) picks one of three kernels: row by row
(:func:`row_task`, here), pipelined (``pipelined.pipe_task``: the next row
summed while this one is written) and, for few long rows, a segmented
output pass after the moments (:func:`segment_task`).  Inputs below
MIN_TASK_ELEMS take ``small.row_norm_serial`` or the row task in this thread.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit

from ..._cache import subroutine
from ..._config import (
    FASTMATH,
    FASTMATH_ELEMENTWISE,
    LINE_BYTES,
    MIN_TASK_ELEMS,
    PIPE_MAX_ROW_BYTES,
    PREFETCH_CHUNK_BYTES,
    PREFETCH_MIN_ROW_BYTES,
    PREFETCH_MIN_X_BYTES,
    ROW_CHUNK,
    ROW_TASK_MIN_ELEMS,
)
from ..._stats import inv_std, inv_std_array, pnorm_finish
from ._elementwise import (
    affine_span_apart,
    affine_span_in_place,
    alias_safe,
    scale_span_apart,
    scale_span_in_place,
    seg_affine_apart,
    seg_affine_in_place,
    seg_scale_apart,
    seg_scale_in_place,
)
from ._intrinsics import in_place, max2, min2, prefetch, resident, stream_span, streams
from ._tasks import nsplit, run, run_serial, task, threads, widen
from .segments import segment_moments, shift_ok

_FM = set(FASTMATH)
_FME = set(FASTMATH_ELEMENTWISE)

# row statistics, a compile-time variant of the row kernels
# The row tasks (row_task, segment_task, pipelined.pipe_task) take the same
# arguments, (x2, o2, W, B, eps, p, nseg, mean, rstd), so one compiled prange
# driver per dtype serves them all (NOTES.md section 21); row_task reads the
# nseg slot as its rows per task.

MEAN = 0  # layer norm: (mean, 1/std)
RMS = 1  # RMS norm: (0, 1/rms)
PNORM = 2  # lp_normalize: (0, 1/max(||x||_p, eps))


@subroutine(fastmath=_FM, error_model="numpy", nogil=True)
def sum_squares(w):
    """Sum of squares of w in float64 (RMS norm; no cancellation)."""
    s = 0.0
    for i in range(w.size):
        a = np.float64(w[i])
        s += a * a
    return s


@subroutine(fastmath=_FM, error_model="numpy", nogil=True)
def row_pnorm(v, p):
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
        s = sum_squares(v)
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
    return pnorm_finish(s, p)


@njit(fastmath=_FME, error_model="numpy", inline="always")
def row_stats(v, stat, eps, p):
    """(mean, rstd) of row v: layer norm (MEAN), RMS norm (RMS) or
    1/max(||v||_p, eps) (PNORM)."""
    D = v.size
    if stat == PNORM:
        return 0.0, 1.0 / max2(row_pnorm(v, p), eps)
    if stat == RMS:
        return 0.0, inv_std(sum_squares(v) / D, eps)
    _, mu, _, q = segment_moments(v, 0, D)
    return mu, inv_std(q / D, eps)


@njit(fastmath=_FM, error_model="numpy", inline="always")
def row_two_pass(x2, r):
    """(mean, M2) of row r of x2 by the plain two-pass in float64 (2-D
    indexing: no row view)."""
    D = x2.shape[1]
    s = 0.0
    for d in range(D):
        s += np.float64(x2[r, d])
    cm = s / D
    q = 0.0
    for d in range(D):
        e = np.float64(x2[r, d]) - cm
        q += e * e
    return cm, q


@subroutine(fastmath=_FM, error_model="numpy", nogil=True)
def short_row_stats(x2, r, stat, eps):
    """row_stats for a short row r of x2 with 2-D indexing: a view per row
    costs reference-count updates that dominated short rows (~135 ns per
    64-element row, NOTES.md).  One pass of sums shifted by the row's first
    value; the exact two-pass when ``shift_ok`` refuses (first value an
    outlier, NaN/Inf).  PNORM: the 2-norm only (row_pnorm's sums, NaN
    left out; run_rows sends no other p here)."""
    D = x2.shape[1]
    s = 0.0
    if stat != MEAN:
        for d in range(D):
            a = np.float64(x2[r, d])
            s += a * a
        if stat == RMS:
            return 0.0, inv_std(s / D, eps)
        if s != s:  # a NaN: summed again without it (API section 3)
            s = 0.0
            for d in range(D):
                a = np.float64(x2[r, d])
                s += a * a if a == a else 0.0
        return 0.0, 1.0 / max2(pnorm_finish(s, 2.0), eps)
    sh = np.float64(x2[r, 0])
    s2 = 0.0
    for d in range(D):
        e = np.float64(x2[r, d]) - sh
        s += e
        s2 += e * e
    if shift_ok(float(D), s, s2):
        return sh + s / D, inv_std(max2(s2 - s * s / D, 0.0) / D, eps)
    cm, q = row_two_pass(x2, r)
    return cm, inv_std(q / D, eps)


def _short_row_affine(x2, o2, r, mu, rs, W, B, rw, centred):
    """o2[r] = (x2[r] - mu) * rs * w + b with 2-D indexing (weights per
    element, or one per row); no 'reassoc' (see _affine_row_for).  Not
    ``centred`` (a compile-time flag): see _affine_row_for."""
    T = x2.dtype.type
    mh = T(mu)
    ml = T(mu - mh)
    rr = T(rs)
    D = x2.shape[1]
    if not centred:
        if W.shape[1] == 1:
            a = rr * W[rw, 0]
            for d in range(D):
                o2[r, d] = x2[r, d] * a
        else:
            for d in range(D):
                o2[r, d] = x2[r, d] * (rr * W[rw, d])
        return
    if W.shape[1] == 1:
        a = rr * W[rw, 0]
        b = B[rw, 0]
        for d in range(D):
            o2[r, d] = ((x2[r, d] - mh) - ml) * a + b
    else:
        for d in range(D):
            o2[r, d] = ((x2[r, d] - mh) - ml) * (rr * W[rw, d]) + B[rw, d]


# in place (``same``): one array read and written (_elementwise.alias_safe)
short_row_affine = alias_safe(_short_row_affine, _FME, read="x2", write="o2")
# (the row task picks one with its compile-time ``same``: module globals,
# which numba's cache keys by name)
short_row_affine_apart = short_row_affine.variant(False)
short_row_affine_in_place = short_row_affine.variant(True)


def _affine_row_for(same, centred):
    """affine_row for one (``same``, ``centred``): both are compile-time
    constants of its body (closure values), so only the loops it runs are
    typed and compiled."""

    def affine_row(v, o, mu, rs, wr, br, stream, x2, nr):
        """o = (v - mu) * rs * w + b for one row; w, b (x's dtype) per segment.

        Arithmetic in x's dtype (float32 data: twice the SIMD width of
        float64), exact for data far from zero: mu is split into hi + lo
        parts of that dtype and ``(v - hi) - lo`` is formed first (``v -
        hi`` is exact by Sterbenz's lemma when v is near mu).  No 'reassoc'
        here (_config).  ``stream``: streaming stores for the whole aligned
        lines of a row with one weight per element (stream_span).
        ``x2[nr]``: the next row (nr < 0: none); a row of >=
        PREFETCH_MIN_ROW_BYTES with one weight per element is written in
        chunks of PREFETCH_CHUNK_BYTES, each after a prefetch of the next
        row's matching lines (NOTES.md section 15).  ``same``: in place.

        Not ``centred`` (RMS norm and p-norms, where mu is 0 and the biases
        are zeros): o = v * (rs * w), the same values without the mean's two
        subtractions and the bias's load and add (one load and two
        operations fewer per element), except that a zero product stays
        -0.0 where ``... * a + 0`` gives +0.0.
        """
        T = v.dtype.type
        mh = T(mu)
        ml = T(mu - mh)
        r = T(rs)
        S = wr.size
        seg = v.size // S
        if seg > 1:
            for s in range(S):
                a = r * wr[s]
                b = br[s]
                vs = v[s * seg : (s + 1) * seg]
                os = o[s * seg : (s + 1) * seg]
                if centred:
                    if same:
                        seg_affine_in_place(vs, os, mh, ml, a, b)
                    else:
                        seg_affine_apart(vs, os, mh, ml, a, b)
                elif same:
                    seg_scale_in_place(vs, os, a)
                else:
                    seg_scale_apart(vs, os, a)
            return
        n = v.size
        isz = v.itemsize
        # pieces: [0, p) ordinary, [p, m) streamed when ``stream`` (in
        # chunks, each after prefetching the next row's matching lines, for
        # long rows), [m, n) ordinary
        p, m = stream_span(o.ctypes.data, 0, n, isz, stream) if stream else (0, n)
        long = nr >= 0 and n * isz >= PREFETCH_MIN_ROW_BYTES
        ch = PREFETCH_CHUNK_BYTES // isz if long else max2(m - p, 1)
        per = LINE_BYTES // isz
        c0 = 0
        while c0 < n:
            c1 = p if c0 < p else (min2(m, c0 + ch) if c0 < m else n)
            mid = p <= c0 and c1 <= m
            if mid and long:
                for j in range(c0, c1, per):
                    prefetch(x2, nr, j)
            nt = mid and stream
            if centred:
                if same:
                    affine_span_in_place(v[c0:c1], o[c0:c1], mh, ml, r, wr[c0:c1], br[c0:c1], nt)
                else:
                    affine_span_apart(v[c0:c1], o[c0:c1], mh, ml, r, wr[c0:c1], br[c0:c1], nt)
            elif same:
                scale_span_in_place(v[c0:c1], o[c0:c1], r, wr[c0:c1], nt)
            else:
                scale_span_apart(v[c0:c1], o[c0:c1], r, wr[c0:c1], nt)
            c0 = c1

    return njit(fastmath=_FME, error_model="numpy", inline="always")(affine_row)


# (module globals: numba's cache keys them by name)
affine_row_apart = _affine_row_for(False, True)
affine_row_in_place = _affine_row_for(True, True)
scale_row_apart = _affine_row_for(False, False)
scale_row_in_place = _affine_row_for(True, False)


@task(fastmath=_FME, variants=("stat", "stream", "same", "short"))
def row_task(stat, stream, same, short):
    """Task t: statistics and output of rows t * nrows .. (t + 1) * nrows - 1
    of x2 (R, D), fused; mean and rstd written to mean_out[r], rstd_out[r].

    Variants: ``stat`` (MEAN, RMS, PNORM), ``stream`` (streaming stores for
    rows with one weight per element), ``same`` (in place), ``short`` (rows
    of at most ROW_CHUNK elements that do not prefetch the next row (under
    PREFETCH_MIN_ROW_BYTES, or the input under PREFETCH_MIN_X_BYTES), one
    weight per element or per row, PNORM only for p = 2: 2-D indexing, no row views).
    ``p``: the p of PNORM.

    Compiled with FASTMATH_ELEMENTWISE (its output arithmetic is inlined
    here); the reductions are separate functions with FASTMATH.
    """

    centred = stat == MEAN  # RMS norm and p-norms write x * (rstd * w)

    def row_kernel(t, x2, o2, W, B, eps, p, nrows, mean_out, rstd_out):
        # task t: rows [t * |nrows|, (t + 1) * |nrows|) (short rows several
        # to a task: run_rows); nrows < 0: long rows without prefetching the
        # next row (a runtime flag in the count's sign: the tasks' argument
        # types, and so their compiled driver, stay those of segment_task)
        RW = W.shape[0]
        R = x2.shape[0]
        pf = nrows > 0
        nrows = abs(nrows)
        for r in range(t * nrows, min2(R, (t + 1) * nrows)):
            if short:
                mu, rs = short_row_stats(x2, r, stat, eps)
                mean_out[r] = mu
                rstd_out[r] = rs
                if same:
                    short_row_affine_in_place(x2, o2, r, mu, rs, W, B, r % RW, centred)
                else:
                    short_row_affine_apart(x2, o2, r, mu, rs, W, B, r % RW, centred)
                continue
            mu, rs = row_stats(x2[r], stat, eps, p)
            mean_out[r] = mu
            rstd_out[r] = rs
            # the next row's lines are prefetched while this row is written
            # (the last row prefetches itself: already cached); nxt = -1: none
            nxt = min2(r + 1, R - 1) if pf else -1
            v, o, w, b = x2[r], o2[r], W[r % RW], B[r % RW]
            if centred:
                if same:
                    affine_row_in_place(v, o, mu, rs, w, b, stream, x2, nxt)
                else:
                    affine_row_apart(v, o, mu, rs, w, b, stream, x2, nxt)
            elif same:
                scale_row_in_place(v, o, mu, rs, w, b, stream, x2, nxt)
            else:
                scale_row_apart(v, o, mu, rs, w, b, stream, x2, nxt)

    return row_kernel


@task(fastmath=_FME, variants=("same", "centred"))
def segment_task(same, centred):
    """Output pass for few long rows: task t writes segment t % nseg of row
    t // nseg of x2 (R, D) with the row's mean and rstd; segments aligned to
    the weight segments (a row with one weight, S == 1, splits anywhere).
    ``centred``: False for RMS norm and p-norms (_affine_row_for)."""

    def segment_kernel(t, x2, o2, W, B, eps, p, nseg, mean, rstd):
        R, D = x2.shape
        RW, S = W.shape
        units = D if S == 1 else S
        seg = 1 if S == 1 else D // S
        per = (units + nseg - 1) // nseg
        r = t // nseg
        k = t - r * nseg
        u0 = min2(units, k * per)
        u1 = min2(units, u0 + per)
        v = x2[r, u0 * seg : u1 * seg]
        o = o2[r, u0 * seg : u1 * seg]
        w = W[r % RW, 0:1] if S == 1 else W[r % RW, u0:u1]
        b = B[r % RW, 0:1] if S == 1 else B[r % RW, u0:u1]
        # (no streaming; no prefetch: the tasks of a row run side by side)
        if centred:
            if same:
                affine_row_in_place(v, o, mean[r], rstd[r], w, b, False, x2, -1)
            else:
                affine_row_apart(v, o, mean[r], rstd[r], w, b, False, x2, -1)
        elif same:
            scale_row_in_place(v, o, mean[r], rstd[r], w, b, False, x2, -1)
        else:
            scale_row_apart(v, o, mean[r], rstd[r], w, b, False, x2, -1)

    return segment_kernel


_DEPS = None


def _deps():
    """row_norm's callees in modules that import this one (imported once: an
    import statement in the function cost ~1 us of a 7 us small call)."""
    global _DEPS
    from . import pipelined, small
    from .axis_stats import moments
    from .pnorms import pnorm

    _DEPS = (pipelined, small, moments, pnorm)
    return _DEPS


def row_norm(x2, out2, weight, bias, eps, rms, p=None):
    """The backend primitive (backends.Backend.row_norm): :func:`norm_rows`
    testing in place itself."""
    return norm_rows(x2, out2, weight, bias, eps, rms, p, None)


def norm_rows(x2, out2, weight, bias, eps, rms, p, same):
    """Fused row normalization of x2 (R, D); weight/bias (D,) or (RW, S).

    ``rms``: RMS norm instead of layer norm; ``p``: lp_normalize with this p
    (``x / max(||x||_p, eps)``, NaN left out of the norm) instead of either.
    ``bias`` None: none.  RMS norm and p-norms have none (their callers pass
    None): their kernels write ``x * (rstd * w)`` and read no bias
    (_affine_row_for); one given to them anyway is added after the kernel.
    ``same``: whether out2 is x2 (in place), or None to test it here (a
    caller that knows saves ~2 us: reading two data addresses).
    Returns (mean, rstd), (R,) float64 (mean 0 for RMS norm and p-norms).
    """
    pipelined, small, moments, pnorm = _DEPS or _deps()
    R, D = x2.shape
    narrow = None
    if x2.dtype == np.float16:
        x2 = x2.astype(np.float32)
        narrow, out2 = out2, np.empty(x2.shape, np.float32)
    # the output arithmetic runs in x's dtype (see _affine_row_for)
    W = weight if weight.dtype == x2.dtype else weight.astype(x2.dtype)
    if W.ndim == 1:
        W = W.reshape(1, -1)
    stat = PNORM if p is not None else (RMS if rms else MEAN)
    late = None  # a bias added after an RMS/p-norm kernel
    if stat == MEAN and bias is not None:
        B = bias if bias.dtype == x2.dtype else bias.astype(x2.dtype)
        B = B.reshape(W.shape)
    else:
        # (the kernels that read B see the zeros it stands for)
        B = zeros(W.shape, x2.dtype)
        late = bias if stat != MEAN else None
    mean = np.zeros(R)  # stays 0 for RMS norm and p-norms
    rstd = np.empty(R)
    if narrow is not None:
        same = False  # (out2 is a float32 temporary)
    elif same is None:
        same = in_place(x2, out2)
    pf = float(p) if p is not None else 2.0
    eps = float(eps)
    S = W.shape[1]
    if R * D == 0:
        rstd[:] = np.nan
    elif R * D <= MIN_TASK_ELEMS:
        # small: no threads (decided first: nsplit asks numba for threads)
        if stat != PNORM or pf == 2.0:
            mode = -2.0 if stat == PNORM else (1.0 if stat == RMS else 0.0)
            small.row_norm_serial(x2, out2, W, B, eps, mode, True, mean, rstd, same)
        else:
            run_rows(x2, out2, W, B, eps, pf, mean, rstd, stat, same, False, serial=True)
    elif (nseg := min(nsplit(R, D), S if S > 1 else D)) > 1:
        # few long rows: the statistics split over tasks, then the output
        if stat == PNORM:
            rstd[:] = 1.0 / np.maximum(pnorm(x2.reshape(R, D, 1), pf)[:, 0], eps)
        else:
            cnt, mu, q, _, _, _ = moments(x2.reshape(R, D, 1), False, False)
            cnt, mu, q = cnt[:, 0], mu[:, 0], q[:, 0]
            with np.errstate(invalid="ignore", divide="ignore"):
                if rms:
                    # E[x^2] = M2/n + mean^2: a sum of non-negatives, no cancellation
                    rstd[:] = inv_std_array(q / cnt + mu * mu, eps)
                else:
                    mean[:] = mu
                    rstd[:] = inv_std_array(q / cnt, eps)
        run(
            segment_task,
            R * nseg,
            *(x2, out2, W, B, eps, pf, nseg, mean, rstd),
            same=same,
            centred=stat == MEAN,
        )
    else:
        # streaming stores only into an out= buffer written before
        # (_config.PIPE_MAX_ROW_BYTES); then the pipelined kernel for rows
        # with fewer weights than elements (NOTES.md section 13)
        stream = streams(out2) and resident(out2)
        if stream and S < D and (stat != PNORM or pf == 2.0) and D * x2.itemsize <= PIPE_MAX_ROW_BYTES:
            # R >= 4 threads here, so every block has >= 4 rows
            pipelined.run_pipe(x2, out2, W, B, eps, stat, mean, rstd, threads(), same, True)
        else:
            # (in place the row-by-row kernel takes ordinary stores, see in_place)
            run_rows(x2, out2, W, B, eps, pf, mean, rstd, stat, same, stream and not same)
    if late is not None:
        Bl = np.repeat(np.asarray(late, out2.dtype).reshape(-1, S), D // S, axis=1)
        out2 += Bl[np.arange(R) % Bl.shape[0]]
    if narrow is not None:
        narrow[...] = out2
    return mean, rstd


@functools.lru_cache(maxsize=64)
def zeros(shape, dtype):
    """A read-only array of zeros, cached: no bias."""
    z = np.zeros(shape, dtype)
    z.flags.writeable = False
    return z


def run_rows(x2, o2, W, B, eps, p, mean, rstd, stat, same, stream, serial=False):
    """row_task over every row of x2 (R, D), in parallel (or in this thread:
    ``serial``); the variant follows from the arguments."""
    R, D = x2.shape
    S = W.shape[1]
    stream = stream and S == D and S > 1
    # long rows prefetch the next row only from inputs past the last-level
    # cache (PREFETCH_MIN_X_BYTES; the sign of nrows tells row_task)
    pf = x2.nbytes >= PREFETCH_MIN_X_BYTES
    # rows of up to ROW_CHUNK elements take the short-row code (2-D indexing,
    # one shifted pass) unless they would prefetch the next row
    short = (
        not stream
        and D <= ROW_CHUNK
        and (D * x2.itemsize < PREFETCH_MIN_ROW_BYTES or not pf)
        and (stat != PNORM or p == 2.0)
        and (S == 1 or S == D)
    )
    # rows per task: a task holds at least ROW_TASK_MIN_ELEMS elements (a
    # task's launch costs ~70 ns: NOTES.md section 27)
    nrows = max(1, ROW_TASK_MIN_ELEMS // max(D, 1))
    ntask = (R + nrows - 1) // nrows
    args = (x2, o2, W, B, eps, p, nrows if pf else -nrows, mean, rstd)
    (run_serial if serial else run)(row_task, ntask, *args, stat=stat, stream=stream, same=same, short=short)


__all__ = ["row_norm", "row_pnorm", "MEAN", "RMS", "PNORM", "widen"]
