"""p-norms over the middle axis of a ``(P, R, K)`` view; the primitive
``pnorm`` (lp_normalize over axes that are not contiguous rows)."""

from __future__ import annotations

import numpy as np

from ..._config import FASTMATH
from ..._stats import pnorm_finish_array
from ._intrinsics import max2, min2
from ._tasks import nsplit, run, task, widen
from .axis_stats import lanes_for
from .chunks import lane_rows

_FM = set(FASTMATH)

# the kind of p, a compile-time variant of the p-norm task
P2, P1, PINF, PANY = 2, 1, 0, -1


def p_kind(p: float) -> int:
    return P2 if p == 2.0 else (P1 if p == 1.0 else (PINF if p == np.inf else PANY))


@task(fastmath=_FM, variants=("kind",))
def pnorm_task(kind):
    """Task t: partial sums of |x|^p (max |x| for p = inf) of xf (P, R*K)
    seen as (P, R, K), over chunk t % nchunk of row t // nchunk, NaN left
    out (API section 3: a select per lane, still vectorized); written to
    out[p, chunk, k].  Lanes as in axis_stats.col_moments; ``acc`` (ntask, L)
    scratch."""

    def pnorm_kernel(t, xf, K, L, nchunk, p, acc, out):
        pp, c, r0, r1 = lane_rows(xf, K, L, nchunk, t)
        f0 = r0 * K
        f1 = r1 * K
        v = xf[pp]
        a = acc[t]
        a[:] = 0.0
        for base in range(f0, f1, L):
            vb = v[base : min2(base + L, f1)]
            for j in range(vb.size):
                x = abs(np.float64(vb[j]))
                if kind == PINF:
                    a[j] = x if x > a[j] else a[j]  # NaN compares False: left out
                elif kind == P2:
                    a[j] += x * x if x == x else 0.0
                elif kind == P1:
                    a[j] += x if x == x else 0.0
                else:
                    a[j] += x**p if x == x else 0.0
        for k in range(K):
            r = 0.0
            for j in range(k, L, K):
                r = max2(r, a[j]) if kind == PINF else r + a[j]
            out[pp, c, k] = r

    return pnorm_kernel


def pnorm(x3, p):
    """(P, K) p-norms of x3 (P, R, K) over R; p = inf gives max |x|."""
    x3 = widen(x3)
    P, R, K = x3.shape
    p = float(p)
    if P * R * K == 0:
        return np.zeros((P, K))
    L = lanes_for(K)
    nchunk = max(1, min(nsplit(P, R * K), R))
    part = np.empty((P, nchunk, K))
    ntask = P * nchunk
    run(pnorm_task, ntask, x3.reshape(P, R * K), K, L, nchunk, p, np.empty((ntask, L)), part, kind=p_kind(p))
    if p == np.inf:
        return part.max(axis=1)
    return pnorm_finish_array(part.sum(axis=1), p)
