"""Elementwise loops of the output passes, each safe to run in place.

An output loop reads ``v`` and writes ``o``.  LLVM vectorizes it behind a
runtime check that the two do not overlap; in place (``out=x``) they do,
and the check sends every element down the scalar fallback (a 5x slower
in-place layer_norm, NOTES.md section 16).  :func:`alias_safe` compiles a
loop twice, once as written and once with ``o`` read and written through
the same variable (LLVM then sees one array and needs no check), and gives
one entry point that picks the variant: ``loop_io(same, v, o, ...)``.

Every loop takes ``nt``: streaming (non-temporal) stores, for a span that
starts on a cache line and is whole lines (``_intrinsics.stream_span``).
"""

from __future__ import annotations

import inspect

import numpy as np
from numba import njit

from ..._config import FASTMATH, FASTMATH_ELEMENTWISE
from ._intrinsics import stream_store

_FM = set(FASTMATH)
_FME = set(FASTMATH_ELEMENTWISE)


def alias_safe(loop, fastmath, read="v", write="o"):
    """``io(same, *args)`` running ``loop(*args)``, and when ``same`` (the
    ``read`` and ``write`` arrays are one: in place) ``loop`` with the
    written array passed for both, which vectorizes without an overlap
    check.  Both are inlined into the caller (numba IR), so LLVM sees one
    array in the second; a separate function would be optimized again in
    every caller anyway (NOTES.md section 21).  Inlined code takes the
    caller's fast-math flags: callers must have ``fastmath``'s."""
    names = list(inspect.signature(loop).parameters)
    args = ", ".join(names)
    same_args = ", ".join(write if n == read else n for n in names)
    inlined = njit(fastmath=fastmath, error_model="numpy", inline="always")(loop)
    ns = {"inlined": inlined}
    exec(  # explicit argument lists: numba's inliner takes no *args
        f"def io(same_, {args}):\n"
        f"    if same_:\n        return inlined({same_args})\n"
        f"    return inlined({args})\n"
        f"def in_place({args}):\n    return inlined({same_args})\n",
        ns,
    )
    io = njit(fastmath=fastmath, error_model="numpy", inline="always")(ns["io"])
    in_place = njit(fastmath=fastmath, error_model="numpy", inline="always")(ns["in_place"])
    io.__doc__ = f"{loop.__name__} (alias_safe: ``same`` selects the in-place variant)."
    # for a caller that knows ``same`` when it is compiled (a task variant):
    # only the loop it runs is compiled
    io.variant = lambda same: in_place if same else inlined
    return io


@njit(error_model="numpy", inline="always")
def same_memory(v, o):
    """Are 1-D arrays v and o the same memory (an in-place call)?"""
    return v.ctypes.data == o.ctypes.data and v.strides == o.strides


def _map_scalar(v, o, h0, s0, t0, lo, hi, nt, clip):
    """o = (v - h0) * s0 + t0 with one parameter set, clipped to [lo, hi]
    when ``clip`` (NaN is kept: it compares false).  Callers pass ``clip``
    as a compile-time flag: the clamps cost ~15 % of an apply pass that
    clips nothing (two compares and selects per element; NOTES.md 21c)."""
    if clip:
        if nt:
            for j in range(v.size):
                y = (v[j] - h0) * s0 + t0
                y = lo if y < lo else y
                stream_store(o, j, hi if y > hi else y)
        else:
            for j in range(v.size):
                y = (v[j] - h0) * s0 + t0
                y = lo if y < lo else y
                o[j] = hi if y > hi else y
    elif nt:
        for j in range(v.size):
            stream_store(o, j, (v[j] - h0) * s0 + t0)
    else:
        for j in range(v.size):
            o[j] = (v[j] - h0) * s0 + t0


def _map_lanes(v, o, hh, sc, sh, lo, hi, nt, clip):
    """o = (v - hh) * sc + sh lane by lane (v.size <= hh.size), clipped to
    [lo, hi] when ``clip`` (a compile-time flag, as in _map_scalar)."""
    if clip:
        if nt:
            for j in range(v.size):
                y = (v[j] - hh[j]) * sc[j] + sh[j]
                y = lo if y < lo else y
                stream_store(o, j, hi if y > hi else y)
        else:
            for j in range(v.size):
                y = (v[j] - hh[j]) * sc[j] + sh[j]
                y = lo if y < lo else y
                o[j] = hi if y > hi else y
    elif nt:
        for j in range(v.size):
            stream_store(o, j, (v[j] - hh[j]) * sc[j] + sh[j])
    else:
        for j in range(v.size):
            o[j] = (v[j] - hh[j]) * sc[j] + sh[j]


def _affine_span(v, o, mh, ml, r, w, b, nt):
    """o = ((v - mh) - ml) * (r * w) + b element by element (row norms: a
    weight and bias per element; the mean split into hi + lo parts of x's
    dtype, see rows._affine_row_for)."""
    if nt:
        for d in range(v.size):
            stream_store(o, d, ((v[d] - mh) - ml) * (r * w[d]) + b[d])
    else:
        for d in range(v.size):
            o[d] = ((v[d] - mh) - ml) * (r * w[d]) + b[d]


def _scale_span(v, o, r, w, nt):
    """o = v * (r * w) element by element (RMS norm: a weight per element,
    no mean, no bias)."""
    if nt:
        for d in range(v.size):
            stream_store(o, d, v[d] * (r * w[d]))
    else:
        for d in range(v.size):
            o[d] = v[d] * (r * w[d])


def _seg_affine(v, o, mh, ml, a, b):
    """o = ((v - mh) - ml) * a + b with one weight a and bias b (a row
    segment; the mean split as in _affine_span)."""
    for d in range(v.size):
        o[d] = ((v[d] - mh) - ml) * a + b


def _seg_scale(v, o, a):
    """o = v * a (a row segment of RMS norm or a p-norm)."""
    for d in range(v.size):
        o[d] = v[d] * a


@njit(fastmath=_FME, error_model="numpy", nogil=True)
def hilo_affine(v, mh, ml, a, b):
    """((v - mh) - ml) * a + b without 'reassoc', which could fold the mean's
    hi/lo split into one rounded subtraction.  Called per element from
    'reassoc' loops: LLVM inlines it and keeps its flags (numba's inline=
    "always" would not: inlined code takes its caller's flags)."""
    return ((v - mh) - ml) * a + b


def _pipe_span(u, v, o, sh, mh, ml, a, b, nt):
    """(s1, s2) = the shifted sums of u about sh, while o = ((v - mh) - ml)
    * a + b with one weight a and bias b for the whole span: the loop of the
    software-pipelined kernels (the next row's statistics summed while this
    row is written)."""
    s1 = 0.0
    s2 = 0.0
    if nt:
        for d in range(u.size):
            e = np.float64(u[d]) - sh
            s1 += e
            s2 += e * e
            stream_store(o, d, hilo_affine(v[d], mh, ml, a, b))
    else:
        for d in range(u.size):
            e = np.float64(u[d]) - sh
            s1 += e
            s2 += e * e
            o[d] = hilo_affine(v[d], mh, ml, a, b)
    return s1, s2


def _pipe_scale(u, v, o, sh, a, nt):
    """_pipe_span for RMS norm and the 2-norm: o = v * a (no mean, no bias)."""
    s1 = 0.0
    s2 = 0.0
    if nt:
        for d in range(u.size):
            e = np.float64(u[d]) - sh
            s1 += e
            s2 += e * e
            stream_store(o, d, v[d] * a)
    else:
        for d in range(u.size):
            e = np.float64(u[d]) - sh
            s1 += e
            s2 += e * e
            o[d] = v[d] * a
    return s1, s2


# Elementwise loops take FASTMATH_ELEMENTWISE (no 'reassoc': it may fold
# ``(x - hi) - lo`` into ``x - (hi + lo)``); the pipelined loop takes FASTMATH
# for its sums, its output through hilo_affine.
map_scalar = alias_safe(_map_scalar, _FME)
map_lanes = alias_safe(_map_lanes, _FME)
# (for tasks compiled per ``same``: module globals, which numba's cache keys
# by name; a closure over them would be keyed by the objects' pickles, which
# differ in every process, and never be found in the cache again)
map_lanes_apart = map_lanes.variant(False)
map_lanes_in_place = map_lanes.variant(True)
affine_span = alias_safe(_affine_span, _FME)
scale_span = alias_safe(_scale_span, _FME)
seg_affine = alias_safe(_seg_affine, _FME)
seg_scale = alias_safe(_seg_scale, _FME)
# their variants, for callers that know ``same`` when compiled (the io
# functions above type both variants wherever ``same`` is an argument:
# ~0.2 s of a row task's first compile each)
affine_span_apart, affine_span_in_place = affine_span.variant(False), affine_span.variant(True)
scale_span_apart, scale_span_in_place = scale_span.variant(False), scale_span.variant(True)
seg_affine_apart, seg_affine_in_place = seg_affine.variant(False), seg_affine.variant(True)
seg_scale_apart, seg_scale_in_place = seg_scale.variant(False), seg_scale.variant(True)
pipe_span = alias_safe(_pipe_span, _FM)
pipe_scale = alias_safe(_pipe_scale, _FM)
pipe_span_apart, pipe_span_in_place = pipe_span.variant(False), pipe_span.variant(True)
pipe_scale_apart, pipe_scale_in_place = pipe_scale.variant(False), pipe_scale.variant(True)
