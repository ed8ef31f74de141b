"""Per-channel two-pass ops on large C-contiguous inputs: batch_norm,
standardize and minmax_scale with statistics per channel, for the two views
whose plan needs no reshuffling: ``(A*C, S)`` rows (channels in the middle,
S >= 256 elements per row) and ``(1, A*C)`` (channels last).

Each is the general path without its planning: the moments (or min/max)
tasks, the merges over segments and batch, the parameters, the apply task.
batch_norm training over rows may instead take the channel-pipelined kernel
(:func:`bn_pipe_task`), which reads x from memory once.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..._config import (
    CHAN_PIPE_CACHE_BYTES,
    CHAN_PIPE_MIN_ROW_BYTES,
    FASTMATH,
    FASTMATH_ELEMENTWISE,
    LINE_BYTES,
    ROW_CHUNK,
)
from ..._stats import (
    batch_norm_params,
    chan_merge_dd,
    inv_std,
    merge_mid,
    minmax_params,
    running_update,
    standardize_params,
)
from ._elementwise import pipe_span
from ._intrinsics import in_place, line_span, stream_span, streams
from ._tasks import run, task, threads
from .affine import apply, apply_span, lowered_param
from .axis_stats import absorb_shifted, moments, segment_moments, segment_step

_FM = set(FASTMATH)
_FME = set(FASTMATH_ELEMENTWISE)

# batch_norm training may take the channel-pipelined kernel (tests compare it
# with the two-pass by setting this False)
CHAN_PIPE = True


def channel_stats(x2, C, rows, skipnan, minmax=False, want_moments=True):
    """Per-channel (C,) float64 (count, mean, M2, min, max) of x2: (A*C, S)
    rows (``rows``) or (1, A*C) channels last; merged over the segments of
    the moments tasks, then over the batch, the mean's residual rounded in,
    an empty channel NaN (as _reduce.reduce_moments gives them)."""
    P = x2.shape[0]
    x3 = x2.reshape(P, -1, 1) if rows else x2.reshape(1, -1, C)
    c, u, q, lo, hi, r = moments(x3, skipnan, minmax, want_moments)
    if rows and P > C:  # then over the batch: (A*C, 1) -> (1, A, C)
        A = P // C
        v = [a.reshape(1, A, C) for a in (c, u, r, q)]
        if minmax:
            c, u, r, q, lo, hi = merge_mid(*v, lo.reshape(1, A, C), hi.reshape(1, A, C), True)
        else:
            c, u, r, q, _, _ = merge_mid(*v, v[0], v[0], False)
    c, u, r, q = (a.reshape(C) for a in (c, u, r, q))
    empty = c == 0.0
    mean = np.where(empty, np.nan, u + r)
    m2 = np.where(empty, np.nan, q)
    if minmax:
        lo = np.where(empty, np.nan, lo.reshape(C))
        hi = np.where(empty, np.nan, hi.reshape(C))
    return c, mean, m2, lo, hi


def channel_apply(x2, o2, C, rows, center, scale, shift, lo=None, hi=None):
    """o2 = clip((x2 - center) * scale + shift) with per-channel float64
    parameters (C,), for the views of channel_stats."""
    P = x2.shape[0]
    if rows:
        A = P // C
        tile = [np.tile(a, A).reshape(P, 1) for a in (center, scale, shift)]
        apply(x2.reshape(P, -1, 1), o2.reshape(P, -1, 1), *tile, lo, hi)
    else:
        apply(
            x2.reshape(1, -1, C),
            o2.reshape(1, -1, C),
            *(a.reshape(1, C) for a in (center, scale, shift)),
            lo,
            hi,
        )


def bn_pipe_ok(P: int, C: int, S: int, isz: int) -> bool:
    """Does batch_norm training over rows x2 (P = A*C, S) take bn_pipe_task?
    Every thread needs channels (at least two each), one channel per thread
    must fit CHAN_PIPE_CACHE_BYTES, and rows must be at least
    CHAN_PIPE_MIN_ROW_BYTES (_config)."""
    nt = threads()
    return (
        C >= 2 * nt
        and S * isz >= CHAN_PIPE_MIN_ROW_BYTES
        and (P // C) * S * isz * nt <= CHAN_PIPE_CACHE_BYTES
    )


@njit(fastmath=_FM, error_model="numpy")
def apply_row_moments(u, v, o, ch, sc, sh, stream, same):
    """apply_span(v, o, ...) while the moments of row u (as long as v) are
    summed in the same loops: (count, mean, residual, M2) of u by
    segment_moments' algorithm (ROW_CHUNK chunks of shifted sums,
    segment_step), with u's reads from memory interleaved with o's writes as
    in a copy.  ``same``: v is o (in place)."""
    T = v.dtype.type
    S = v.size
    per = LINE_BYTES // o.itemsize
    p, m = stream_span(o.ctypes.data, 0, S, o.itemsize, stream)
    zero = T(0)
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
        a, b = line_span(p, m, c0, c1, per)
        s1 = 0.0
        s2 = 0.0
        for piece in range(3):
            lo = c0 if piece == 0 else (a if piece == 1 else b)
            hi = a if piece == 0 else (b if piece == 1 else c1)
            r1, r2 = pipe_span(same, u[lo:hi], v[lo:hi], o[lo:hi], shu, ch, zero, sc, sh, piece == 1)
            s1 += r1
            s2 += r2
        n, mean, res, m2, shu, tn, t1, t2 = segment_step(u[c0:c1], s1, s2, n, mean, res, m2, shu, tn, t1, t2)
    if tn > 0.0:
        n, mean, res, m2 = absorb_shifted(n, mean, res, m2, tn, shu, t1, t2)
    return n, mean, res, m2


@task(fastmath=_FME, variants=("stream", "same"))
def bn_pipe_task(stream, same):
    """Task t of batch_norm training over channels-first rows x2 (A*C, S),
    pipelined over channels (NOTES.md section 16).

    Each of ``ntask`` tasks owns a range of channels.  It sums its first
    channel alone; then, channel by channel, the loop that writes row (a, c)
    from the cache (it was read while channel c-1 was written) sums row
    (a, c+1) from memory.  So x is read from memory once, and its reads
    interleave with y's writes as in a copy, where the two-pass reads it
    twice, in a read-only and a write-only pass.  Each row's moments are
    segment_moments' (the summation order within a chunk may differ in the
    last bits), merged over the batch in order as the general path does;
    the parameters are batch_norm_params', the output formula the apply
    kernel's.  ``stream``: streaming stores; ``same``: in place.  Compiled
    with FASTMATH_ELEMENTWISE (the apply loop is inlined here), which leaves
    its own arithmetic (no a*b+c) as NumPy's.
    """

    def bn_pipe_kernel(t, x2, o2, C, ntask, rm, rv, w, b, update, momentum, eps, mean, rstd):
        P, S = x2.shape
        A = P // C
        T = x2.dtype.type
        lo = T(-np.inf)
        hi = T(np.inf)
        # channel ranges as even as they go (9 over 4 tasks: 2, 2, 2, 3)
        c0 = t * C // ntask
        c1 = (t + 1) * C // ntask
        if c0 >= c1:
            return
        n = 0.0
        u = 0.0
        r = 0.0
        q = 0.0
        for a in range(A):
            rn, ru, rr, rq = segment_moments(x2[a * C + c0], 0, S)
            n, u, r, q = chan_merge_dd(n, u, r, q, rn, ru, rr, rq)
        for c in range(c0, c1):
            mu = u + r
            rs = inv_std(q / n, eps)
            if update:
                rm[c] = running_update(np.float64(rm[c]), mu, momentum)
                rv[c] = running_update(np.float64(rv[c]), q / (n - 1.0), momentum)
            mean[c] = mu
            rstd[c] = rs
            ch, sc, sh = lowered_param(
                mu, rs * (np.float64(w[c]) if w.size else 1.0), b[c] if b.size else 0.0, T
            )
            n = 0.0
            u = 0.0
            r = 0.0
            q = 0.0
            for a in range(A):
                v = x2[a * C + c]
                o = o2[a * C + c]
                if c + 1 < c1:
                    rn, ru, rr, rq = apply_row_moments(x2[a * C + c + 1], v, o, ch, sc, sh, stream, same)
                    n, u, r, q = chan_merge_dd(n, u, r, q, rn, ru, rr, rq)
                else:
                    apply_span(v, o, ch, sc, sh, lo, hi, stream, same)

    return bn_pipe_kernel


def bn_pipe(x2, o2, C, ntask, rm, rv, w, b, update, momentum, eps, stream, mean, rstd):
    """batch_norm training over rows x2 (A*C, S) through bn_pipe_task in
    ``ntask`` tasks; streaming stores when ``stream`` (not in place)."""
    same = in_place(x2, o2)
    args = (x2, o2, C, ntask, rm, rv, w, b, update, momentum, eps, mean, rstd)
    run(bn_pipe_task, ntask, *args, stream=stream and not same, same=same)


def batch_norm(x2, o2, C, rows, rm, rv, w, b, training, update, momentum, eps, mean, rstd):
    """batch_norm of a large x2 (see the module docstring): rm/rv/w/b (C,)
    arrays or empty, the running stats updated in place (``update``), the
    mean and rstd used written to ``mean``, ``rstd`` (C,).  Training over
    rows that bn_pipe_ok takes runs the channel-pipelined kernel."""
    if CHAN_PIPE and training and rows and bn_pipe_ok(x2.shape[0], C, x2.shape[1], x2.itemsize):
        # streaming stores also into a fresh output: there they measured
        # 0.86-0.90x the time of ordinary ones (the two-pass's apply kernel
        # streams only into resident pages; NOTES.md section 16)
        bn_pipe(x2, o2, C, threads(), rm, rv, w, b, update, momentum, eps, streams(o2), mean, rstd)
        return
    if training:
        cnt, mu, m2, _, _ = channel_stats(x2, C, rows, False)
    else:
        cnt = mu = m2 = None
    scale, shift = batch_norm_params(cnt, mu, m2, rm, rv, w, b, training, update, momentum, eps, mean, rstd)
    channel_apply(x2, o2, C, rows, mean, scale, shift)


def standardize(x2, o2, C, rows, ddof, with_mean, with_std, center, sd):
    """standardize of a large x2 per channel; the mean and std used written
    to ``center``, ``sd`` (C,)."""
    cnt, mu, m2, _, _ = channel_stats(x2, C, rows, True)
    center[...], sd[...], scale = standardize_params(cnt, mu, m2, ddof, with_mean, with_std)
    channel_apply(x2, o2, C, rows, center, scale, np.zeros(C))


def minmax_scale(x2, o2, C, rows, flo, fhi, clip):
    """minmax_scale of a large x2 per channel to [flo, fhi], clipped there
    when ``clip``."""
    _, _, _, mn, mx = channel_stats(x2, C, rows, True, True, False)
    scale = minmax_params(mn, mx, flo, fhi)
    lo, hi = (flo, fhi) if clip else (None, None)
    channel_apply(x2, o2, C, rows, mn, scale, np.full(C, flo), lo, hi)


__all__ = ["batch_norm", "standardize", "minmax_scale", "channel_stats", "bn_pipe_ok"]
