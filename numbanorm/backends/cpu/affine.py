"""The output pass of the per-group ops: ``out = clip((x - center) * scale +
shift, lo, hi)`` over a ``(P, R, K)`` view, parameters per (p, k); the
primitive ``apply``.

Parameters reach the kernel lane-replicated, ``(P, L)`` arrays of x's dtype
in which lane j holds column j % K, so the inner loop is L long and
vectorizes for any K; with K == 1 the kernel takes scalar parameters.  The
arithmetic runs in x's dtype (float32: twice the SIMD width of float64); the
center is rounded to that dtype (``x - ch`` is exact near the center) and
the part it cannot hold moves into the shift, in float64
(:func:`lowered_params`), so float32 data far from zero keeps its digits.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..._cache import subroutine
from ..._config import FASTMATH_ELEMENTWISE, LINE_BYTES
from ._elementwise import map_lanes_apart, map_lanes_in_place, map_scalar
from ._intrinsics import in_place, min2, resident, stream_span, streams
from ._tasks import run, task
from .axis_stats import F_PRM, col_split, frame, row_tasks
from .chunks import lane_rows, row_item, row_items

_FME = set(FASTMATH_ELEMENTWISE)


@njit(fastmath=_FME, error_model="numpy", inline="always")
def apply_span(v, o, ch, sc, sh, lo, hi, stream, same, clip):
    """o = (v - ch) * sc + sh for one span with one parameter set (x's
    dtype), clipped to [lo, hi] when ``clip``; whole aligned lines by
    streaming stores when ``stream``: three pieces, [0, p) and [m, n)
    ordinary, [p, m) streamed.  ``same``: v is o (in place)."""
    n = v.size
    p, m = stream_span(o.ctypes.data, 0, n, o.itemsize, stream)
    for piece in range(3):
        a = 0 if piece == 0 else (p if piece == 1 else m)
        b = p if piece == 0 else (m if piece == 1 else n)
        if a < b:
            map_scalar(same, v[a:b], o[a:b], ch, sc, sh, lo, hi, piece == 1, clip)


@task(fastmath=_FME, variants=("stream", "same", "clip"))
def apply_rows(stream, same, clip):
    """Task t (frame, K == 1) of of = clip((x - ch) * scale + shift) over
    the rows of xf (P, R), one parameter set per row, prm (3, P, 1): the
    items of task t in chunks.row_group (item i: chunk i % nseg of row
    i // nseg; short rows several to a task).  ``stream``: whole aligned lines by streaming
    stores; ``same``: in place (xf is of); ``clip``: clipped to [lo, hi]."""

    def apply_rows_task(t, xf, of, K, L, nseg, rb, skipnan, lo, hi, part, lanes, acc, stop, prm, rot, rg):
        i0, i1 = row_items(xf, nseg, rg, t)
        for i in range(i0, i1):
            # (a row view, then its span: 1-D slices of rows cost far less
            # per short row than a 2-D slice xf[p, f0:f1]; one call site of
            # apply_span keeps one copy of its loop to compile, NOTES.md 28b)
            p, _, f0, f1 = row_item(xf, nseg, i)
            v = xf[p]
            o = of[p]
            ch, sc, sh = prm[0, p, 0], prm[1, p, 0], prm[2, p, 0]
            apply_span(v[f0:f1], o[f0:f1], ch, sc, sh, lo, hi, stream, same, clip)

    return apply_rows_task


@task(fastmath=_FME, variants=("stream", "same", "clip"))
def apply_lanes(stream, same, clip):
    """Task t (frame, K > 1) of of = clip((x - ch) * scale + shift) over xf
    (P, R*K) as (P, R, K): chunk t % nseg of row t // nseg.  Parameters prm
    (3, P, L), lanes of x's dtype; rot[t] scratch; ``same``: in place;
    ``clip``: clipped to [lo, hi].

    ``stream``: write whole aligned lines of ``of`` with streaming stores
    (stream_span).  The lane path then starts its L-chunks at the first
    aligned element, with the lane parameters rotated to match, so that every
    full chunk is whole lines (when L * itemsize is a multiple of a line).
    """

    def apply_lanes_task(t, xf, of, K, L, nseg, rb, skipnan, lo, hi, part, lanes, acc, stop, prm, rot, rg):
        isz = of.itemsize
        p, _, r0, r1 = lane_rows(xf, K, L, nseg, t)
        f0 = r0 * K
        f1 = r1 * K
        v = xf[p]
        o = of[p]
        hh = prm[0, p]
        sc = prm[1, p]
        sh = prm[2, p]
        q = 0
        lines = False
        if stream:  # (a compile-time flag: without it, none of this is compiled)
            # the first chunk's parameters: the unaligned prefix of q
            # elements when streaming needs one takes the lanes as laid out,
            # the L-chunks from the first aligned element the rotated ones
            ph = hh
            ps = sc
            pt = sh
            lines = (L * isz) % LINE_BYTES == 0 and f1 - f0 >= 2 * L
            if lines:
                q, _ = stream_span(o.ctypes.data, f0 * isz, L, isz, lines)
                if q >= L:  # no aligned element: ordinary stores
                    lines = False
                    q = 0
                elif q > 0:
                    # lane j of a rotated row is lane (j + q) % L of the original
                    r = rot[t]
                    for j in range(L):
                        k = j + q
                        k = k - L if k >= L else k
                        r[0, j] = hh[k]
                        r[1, j] = sc[k]
                        r[2, j] = sh[k]
                    hh = r[0]
                    sc = r[1]
                    sh = r[2]
        if stream:
            # one call site of the loop for the prefix and the chunks (each
            # inlined copy costs compile time: the prefix's own was 0.15-0.2 s
            # of the streaming variant); a full chunk is whole lines, the
            # prefix and the last, partial chunk ordinary.  (``same`` is a
            # compile-time flag: only one of the calls is compiled)
            base = f0
            n = q if q > 0 else L
            while base < f1:
                end = min2(base + n, f1)
                vb = v[base:end]
                ob = o[base:end]
                if same:
                    map_lanes_in_place(vb, ob, ph, ps, pt, lo, hi, lines and vb.size == L, clip)
                else:
                    map_lanes_apart(vb, ob, ph, ps, pt, lo, hi, lines and vb.size == L, clip)
                base = end
                n = L
                ph = hh
                ps = sc
                pt = sh
        else:  # (ordinary stores: the streaming loop is not compiled)
            for base in range(f0, f1, L):
                vb = v[base : min2(base + L, f1)]
                ob = o[base : min2(base + L, f1)]
                if same:
                    map_lanes_in_place(vb, ob, hh, sc, sh, lo, hi, False, clip)
                else:
                    map_lanes_apart(vb, ob, hh, sc, sh, lo, hi, False, clip)

    return apply_lanes_task


@subroutine(error_model="numpy", nogil=True)
def lowered_param(center, scale, shift, T):
    """One parameter set in x's dtype T, as lane_params lowers them: the
    center rounded to T, the part of it T cannot hold moved into the shift,
    in float64 (compiled without fast-math, as NumPy computes)."""
    ch = T(center)
    if np.float64(ch) != center:
        shift = shift - (center - np.float64(ch)) * scale
    return ch, T(scale), T(shift)


def lane_params(center, scale, shift, K, prm):
    """Fill prm (3, P, L) with (P, K) float64 parameters as the apply tasks
    read them: x's dtype (prm's), replicated into L lanes; the center
    rounded to it and the part of it the dtype cannot hold moved into the
    shift, in float64: ``(x - c) * s + t == (x - ch) * s + (t - (c - ch) * s)``."""
    dt = prm.dtype
    P, L = prm.shape[1], prm.shape[2]
    c64 = np.asarray(center, np.float64).reshape(P, K)
    s64 = np.asarray(scale, np.float64).reshape(P, K)
    ch = c64.astype(dt)
    with np.errstate(invalid="ignore", over="ignore"):
        # (an exactly representable center moves nothing: 0 * inf is no NaN)
        t64 = np.asarray(shift, np.float64).reshape(P, K) - np.where(c64 == ch, 0.0, (c64 - ch) * s64)
    rep = L // K
    for i, a in enumerate((ch, s64, t64)):
        prm[i].reshape(P, rep, K)[...] = a.reshape(P, 1, K)


def apply(x3, out3, center, scale, shift, lo=None, hi=None):
    """out3 = clip((x3 - center) * scale + shift, lo, hi); params (P, K) float64."""
    P, R, K = x3.shape
    if P * R * K == 0:
        return
    narrow = None
    if x3.dtype == np.float16:
        x3 = x3.astype(np.float32)
        narrow, out3 = out3, np.empty(x3.shape, np.float32)
    nseg, L, _ = col_split(P, R, K, x3.itemsize)
    La = L if K > 1 else 1  # K == 1: scalar parameters per row
    fr = frame(x3.reshape(P, R * K), K, La, nseg, of=out3.reshape(P, R * K), lo=lo, hi=hi)
    lane_params(center, scale, shift, K, fr[F_PRM])
    same = in_place(x3, out3)
    # streaming only into resident pages: into a fresh output it measured
    # 11 % slower (NOTES.md section 13); and not in place (in_place)
    stream = narrow is None and not same and streams(out3) and resident(out3)
    clip = lo is not None or hi is not None
    ntask = row_tasks(fr) if K == 1 else P * nseg
    run(apply_rows if K == 1 else apply_lanes, ntask, *fr, stream=stream, same=same, clip=clip)
    if narrow is not None:
        narrow[...] = out3
