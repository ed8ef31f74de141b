"""The software-pipelined row kernel: the statistics of row r+1 are summed in
the loop that writes row r (benchmarks/NOTES.md section 13).

Reads of x and writes of y then interleave finely, as in a copy, where a
row-by-row kernel has a read-only phase and a write-only phase per row.
``rows.row_norm`` sends here rows with fewer weights than elements (one per
row or per segment: instance/group norm, layer/RMS norm without affine)
written with streaming stores into an out= buffer written before.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..._config import FASTMATH, LINE_BYTES, PREFETCH_CHUNK_BYTES, PREFETCH_MIN_ROW_BYTES
from ..._stats import inv_std, pnorm_finish
from ._elementwise import pipe_scale_apart, pipe_scale_in_place, pipe_span_apart, pipe_span_in_place
from ._intrinsics import line_span, max2, min2, prefetch, stream_span
from ._tasks import run, task
from .rows import MEAN, PNORM, RMS, row_pnorm
from .segments import segment_moments, shift_ok, shifted_sums

_FM = set(FASTMATH)


def _pipe_row_for(same, centred):
    """pipe_row for one (``same``, ``centred``), both compile-time constants
    of its body, so only the loops it runs are typed (rows._affine_row_for)."""

    def pipe_row(u, v, o, sh, mu, rs, wr, br, x2, nn):
        """Shifted sums of row u while row v is normalized into o.

        wr, br: the row's (S,) weights, one per D/S-long segment.  Whole
        aligned lines of o take streaming stores (stream_span), the rest
        ordinary ones.  ``x2[nn]``: the row after u; rows of >=
        PREFETCH_MIN_ROW_BYTES stream in PREFETCH_CHUNK_BYTES chunks, each
        after a prefetch of its matching lines (as rows._affine_row_for; NOTES.md
        section 15).  ``same``: in place.  Not ``centred`` (RMS norm and the
        2-norm): ``v * (rs * w)``, ``br`` unread (rows.row_norm: they have
        no bias).
        """
        T = v.dtype.type
        mh = T(mu)
        ml = T(mu - mh)
        rr = T(rs)
        n = v.size
        isz = o.itemsize
        p, m = stream_span(o.ctypes.data, 0, n, isz, True)
        S = wr.size
        seg = n // S
        per = LINE_BYTES // isz
        pf = n * isz >= PREFETCH_MIN_ROW_BYTES
        s1 = 0.0
        s2 = 0.0
        for k in range(S):
            lo = k * seg
            a = rr * wr[k]
            b = br[k]
            # the segment's pieces: before its streamed lines, the streamed
            # lines (in chunks after prefetching nn's, for long rows), after
            pk, mk = line_span(p, m, lo, lo + seg, per)
            ch = PREFETCH_CHUNK_BYTES // isz if pf else max2(mk - pk, 1)
            c0 = lo
            while c0 < lo + seg:
                c1 = pk if c0 < pk else (min2(mk, c0 + ch) if c0 < mk else lo + seg)
                mid = pk <= c0 and c1 <= mk
                if mid and pf:
                    for j in range(c0, c1, per):
                        prefetch(x2, nn, j)
                uc, vc, oc = u[c0:c1], v[c0:c1], o[c0:c1]
                if centred:
                    if same:
                        t1, t2 = pipe_span_in_place(uc, vc, oc, sh, mh, ml, a, b, mid)
                    else:
                        t1, t2 = pipe_span_apart(uc, vc, oc, sh, mh, ml, a, b, mid)
                elif same:
                    t1, t2 = pipe_scale_in_place(uc, vc, oc, sh, a, mid)
                else:
                    t1, t2 = pipe_scale_apart(uc, vc, oc, sh, a, mid)
                s1 += t1
                s2 += t2
                c0 = c1
        return s1, s2

    return njit(fastmath=_FM, error_model="numpy", inline="always")(pipe_row)


# (module globals: numba's cache keys them by name)
pipe_row_apart = _pipe_row_for(False, True)
pipe_row_in_place = _pipe_row_for(True, True)
pipe_scale_row_apart = _pipe_row_for(False, False)
pipe_scale_row_in_place = _pipe_row_for(True, False)


@njit(fastmath=_FM, error_model="numpy", inline="always")
def pipe_stats(u, stat, eps, sh, s1, s2):
    """(mean, rstd) of row u from its sums about sh (pipe_row).

    Layer norm takes the one-pass shifted moments when ``shift_ok`` accepts
    them, else the exact ``segment_moments`` of the row (still in L2); a
    2-norm with NaN is summed again without the NaN (row_pnorm).
    """
    D = float(u.size)
    if stat == RMS:
        return 0.0, inv_std(s2 / D, eps)
    if stat == PNORM:
        if s2 != s2:
            return 0.0, 1.0 / max2(row_pnorm(u, 2.0), eps)
        return 0.0, 1.0 / max2(pnorm_finish(s2, 2.0), eps)
    if shift_ok(D, s1, s2):
        return sh + s1 / D, inv_std(max2(s2 - s1 * s1 / D, 0.0) / D, eps)
    _, mu, _, q = segment_moments(u, 0, u.size)
    return mu, inv_std(q / D, eps)


@task(fastmath=_FM, variants=("stat", "same"))
def pipe_task(stat, same):
    """Task t of the pipelined kernel over x2 (R, D): a block of rows; in
    one loop per row, it sums row r+1 (from memory) while writing row r
    (from L1/L2).  ``stat``: MEAN (layer norm: sums shifted by the row's
    first value), RMS, PNORM (the 2-norm): sums of squares.  ``same``: in
    place."""

    def pipe_kernel(t, x2, o2, W, B, eps, p, ntask, mean_out, rstd_out):
        R = x2.shape[0]
        RW = W.shape[0]
        per = (R + ntask - 1) // ntask
        r0 = t * per
        r1 = min2(R, r0 + per)
        if r0 >= r1:
            return
        u = x2[r0]
        sh = np.float64(u[0]) if stat == MEAN else 0.0
        s1, s2 = shifted_sums(u, sh)
        mu, rs = pipe_stats(u, stat, eps, sh, s1, s2)
        for r in range(r0, r1):
            mean_out[r] = mu
            rstd_out[r] = rs
            # the block's last row sums itself (from L1), and the sums are unused
            u = x2[min2(r + 1, r1 - 1)]
            sh = np.float64(u[0]) if stat == MEAN else 0.0
            # the row after next is prefetched while this one is written
            v, o, w, b, nn = x2[r], o2[r], W[r % RW], B[r % RW], min2(r + 2, r1 - 1)
            if stat == MEAN:
                if same:
                    s1, s2 = pipe_row_in_place(u, v, o, sh, mu, rs, w, b, x2, nn)
                else:
                    s1, s2 = pipe_row_apart(u, v, o, sh, mu, rs, w, b, x2, nn)
            elif same:
                s1, s2 = pipe_scale_row_in_place(u, v, o, sh, mu, rs, w, b, x2, nn)
            else:
                s1, s2 = pipe_scale_row_apart(u, v, o, sh, mu, rs, w, b, x2, nn)
            mu, rs = pipe_stats(u, stat, eps, sh, s1, s2)

    return pipe_kernel


def run_pipe(x2, o2, W, B, eps, stat, mean, rstd, ntask, same, stream=True):
    """The pipelined kernel over x2 (R, D) in ``ntask`` blocks of rows (its
    stores always stream: ``stream`` must be True)."""
    assert stream
    run(pipe_task, ntask, x2, o2, W, B, eps, 2.0, ntask, mean, rstd, stat=stat, same=same)
