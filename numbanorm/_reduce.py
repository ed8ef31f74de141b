"""Reductions over any set of axes, expressed as backend primitives on views.

Every statistic in numbanorm is "reduce ``x`` over some axes, keep the rest".
This module turns such a request into a C-contiguous ``(P, R, K)`` view of
``x`` (no copy for any layout whose axes can be ordered by stride) on which a
backend primitive reduces axis 1, followed by at most a few Chan merges of
small partial arrays (``merge_mid``).  Channels-last data therefore reduces
without a transposing copy: NHWC batch norm is the (1, N*H*W, C) view.

The same planning serves every backend (NumPy, CUDA) because it only reshapes.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from . import backends
from ._stats import merge_mid, pnorm_finish_array


class Moments(NamedTuple):
    """float64 statistics of the kept shape; min/max None when not asked.

    ``resid`` is the rounding residual of ``mean``: the exact mean is
    ``mean + resid`` to about 1e-16 relative to the spread, which lets a
    streaming merge of many chunks stay exact (``_stats.chan_merge_dd``).
    """

    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray
    min: np.ndarray | None
    max: np.ndarray | None
    resid: np.ndarray | None = None


# A trailing reduced run shorter than this, behind a kept run, is reduced as
# extra columns of the column kernel (then merged) instead of as short rows.
_SHORT_ROW = 256


def short_rows_as_columns(R: int, S: int) -> bool:
    """Does a trailing reduced run of S, behind a kept run and a reduced run
    of R, take the column kernel (R rows of extra columns) instead of short
    rows?  When S is short and fewer than R (_stats_plan; the per-channel
    shortcuts repeat the rows plan only when this is False)."""
    return S < _SHORT_ROW and R > S


def _layout(x, backend):
    """Return (xc, perm): xc C-contiguous with xc == x.transpose(perm).

    When x is a permutation of a C-contiguous array (e.g. a channels-last
    tensor seen as NCHW) this is a view (``backend.permute``: never numba's
    device ``transpose``, a copy on hardware); otherwise the backend copies.
    """
    nd = len(x.shape)
    if nd == 0:
        return x, ()
    strides = getattr(x, "strides", None)
    if strides is not None:
        # size-1 axes carry no layout: sort them last (they are dropped later)
        perm = tuple(sorted(range(nd), key=lambda a: -abs(strides[a]) if x.shape[a] > 1 else np.inf))
        xt = backend.permute(x, perm) if perm != tuple(range(nd)) else x
        if _is_c_contiguous(xt):
            return xt, perm
    return backend.ascontiguous(x), tuple(range(nd))


def _is_c_contiguous(a) -> bool:
    flags = getattr(a, "flags", None)
    if flags is not None:
        try:
            return bool(flags["C_CONTIGUOUS"])
        except Exception:
            return bool(getattr(flags, "c_contiguous", False))
    return bool(getattr(a, "is_c_contiguous", lambda: False)())


def _runs(shape, reduced):
    """Merge adjacent axes of the same kind, dropping size-1 axes.

    Returns a list of [is_reduced, size].
    """
    runs: list[list] = []
    for ax, n in enumerate(shape):
        if n == 1:
            continue
        red = ax in reduced
        if runs and runs[-1][0] == red:
            runs[-1][1] *= n
        else:
            runs.append([red, n])
    return runs


def _prod(runs) -> int:
    p = 1
    for _, n in runs:
        p *= n
    return p


class _Plan(NamedTuple):
    view: tuple[int, int, int]  # (P, R, K) of the C-contiguous x
    part: list  # runs of the (P, K) partial, in order


def _stats_plan(runs) -> _Plan | None:
    """Choose the (P, R, K) view and the partial layout for a reduction."""
    if not runs:
        return _Plan((1, 1, 1), [])
    if not any(r for r, _ in runs):  # nothing reduced: every element its own group
        return _Plan((1, 1, _prod(runs)), [[False, _prod(runs)]])
    last_red, last = runs[-1]
    if last_red:
        # trailing reduced run: rows, unless short and a [R, K] precedes it
        if len(runs) >= 3 and short_rows_as_columns(runs[-3][1], last):
            pre = runs[:-3]
            return _Plan((_prod(pre), runs[-3][1], runs[-2][1] * last), pre + [runs[-2], runs[-1]])
        pre = runs[:-1]
        return _Plan((_prod(pre), last, 1), list(pre))
    pre = runs[:-2]
    return _Plan((_prod(pre), runs[-2][1], last), pre + [runs[-1]])


def _merges(part):
    """(A, M, B) merges that fold the reduced runs of a partial layout away."""
    out = []
    sizes = [n for _, n in part]
    kinds = [r for r, _ in part]
    # fold from the back so earlier indices stay valid
    for i in range(len(part) - 1, -1, -1):
        if kinds[i]:
            a = int(np.prod(sizes[:i], dtype=np.int64))
            b = int(np.prod(sizes[i + 1 :], dtype=np.int64))
            out.append((a, sizes[i], b))
            del sizes[i]
            del kinds[i]
    return out


def normalize_axis(axis, ndim: int, name: str = "axis") -> tuple[int, ...]:
    """Validate ``axis`` (None, int or tuple) into sorted non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (int, np.integer)) and not isinstance(axis, bool):
        axes = (int(axis),)
    else:
        try:
            axes = tuple(axis)
        except TypeError:
            raise TypeError(f"{name} must be an int or a tuple of ints, got {axis!r}") from None
    out = []
    for a in axes:
        if isinstance(a, bool) or not isinstance(a, (int, np.integer)):
            raise TypeError(f"{name} must be an int or a tuple of ints, got {axis!r}")
        if not -ndim <= a < ndim:
            raise ValueError(f"{name}={axis!r} is out of range for an array of {ndim} dimensions")
        out.append(int(a) % ndim if ndim else 0)
    if len(set(out)) != len(out):
        raise ValueError(f"{name}={axis!r} repeats an axis")
    return tuple(sorted(out))


def kept_shape(shape, axes) -> tuple[int, ...]:
    return tuple(n for i, n in enumerate(shape) if i not in axes)


def reduce_moments(x, axis, *, skipnan: bool, minmax: bool, moments: bool = True, backend=None) -> Moments:
    """Moments of ``x`` over ``axis`` (tuple of non-negative ints), kept shape.

    One parallel pass over x.  Groups with count 0 get mean NaN and m2 NaN.
    ``moments=False`` asks only for counts and min/max (mean/m2 are then not
    meaningful; a backend may compute them anyway).
    """
    be = backend or backends.backend_for(x)
    axes = tuple(axis)
    kshape = kept_shape(x.shape, axes)
    xc, perm = _layout(x, be)
    red = {perm.index(a) for a in axes}
    shape = tuple(xc.shape)
    runs = _runs(shape, red)
    plan = _stats_plan(runs)
    P, R, K = plan.view
    c, mu, q, lo, hi, r = be.moments(xc.reshape(P, R, K), skipnan, minmax, moments or not minmax)
    for a, m, b in _merges(plan.part):
        args = [np.asarray(arr).reshape(a, m, b) for arr in (c, mu, r, q)]
        if minmax:
            # a count-0 partial has min/max +-inf here (NaN only once finalized)
            c, mu, r, q, lo, hi = merge_mid(*args, lo.reshape(a, m, b), hi.reshape(a, m, b), True)
        else:
            c, mu, r, q, _, _ = merge_mid(*args, args[0], args[0], False)
    # partial is now in the order of xc's kept axes; map back to x's order
    kept_perm = [a for a in perm if a not in axes]  # x-axes in xc order
    kshape_c = tuple(x.shape[a] for a in kept_perm)
    order = np.argsort(kept_perm) if kept_perm else []

    def fin(a):
        if a is None:
            return None
        a = np.asarray(a, dtype=np.float64).reshape(kshape_c)
        return np.ascontiguousarray(a.transpose(order)) if len(order) > 1 else a.reshape(kshape)

    return _rounded(*(fin(a) for a in (c, mu, r, q, lo, hi)), minmax)


def lane_partials(x, axes, minmax: bool):
    """The CPU statistics tasks' partials of ndarray ``x`` over ``axes``
    (non-negative, sorted), NaN skipped, as (6, nseg, K) float64 (see
    ``backends.cpu.axis_stats.partials``; K the kept size, in C order), when
    :func:`reduce_moments` would merge them over the tasks' segments only:
    its plan a single (1, R, K) view of x as laid out.  Else None.

    RunningStats folds such partials straight into its state in one
    compiled call (``streaming._fold_partials``: the same merges, in the same
    order, as reduce_moments and the state merge)."""
    be = backends.backend_for(x)
    if be is not backends.cpu_backend() or x.size == 0:
        return None
    xc, perm = _layout(x, be)
    if perm != tuple(range(x.ndim)):
        return None
    plan = _stats_plan(_runs(tuple(xc.shape), set(axes)))
    P, R, K = plan.view
    if P != 1 or _merges(plan.part):
        return None
    from .backends.cpu.axis_stats import partials

    return partials(xc.reshape(P, R, K), True, minmax)[:, 0]


def _rounded(c, mu, r, q, lo, hi, minmax) -> Moments:
    """Moments of merged kept-shape partials: the unevaluated mean + residual
    rounded to one float (the residual what is left), groups of count 0 with
    mean, M2 (and min, max) NaN."""
    m_hi = mu + r
    r = (mu - m_hi) + r
    mu = m_hi
    empty = c == 0
    if empty.any():
        mu = np.where(empty, np.nan, mu)
        q = np.where(empty, np.nan, q)
        if minmax:
            lo = np.where(empty, np.nan, lo)
            hi = np.where(empty, np.nan, hi)
    return Moments(c, mu, q, lo, hi, np.where(empty, 0.0, r) if empty.any() else r)


# What a device finish makes of a group's statistics (Finish.kind; the CUDA
# kernel _finish_prm): the host's batch_norm_params, standardize_params and
# minmax_factor arithmetic.
FIN_NORM = 0  # batch/instance/group norm: center mean, scale inv_std(M2 / n, eps) * weight, shift bias
FIN_STANDARDIZE = 1  # standardize: center mean (or 0), scale 1 / std (ddof; constant: 1), shift 0
FIN_MINMAX = 2  # minmax_scale: center min, scale minmax_factor(min, max, lo, hi), shift lo
FIN_LP = 3  # lp_normalize: center 0, scale 1 / max(||x||_p, eps), shift 0


class Finish(NamedTuple):
    """The statistics-to-parameters step of :func:`normalize_on_device`.

    Kept-shape flat index ``i`` (C order of the kept axes of ``x``) takes
    channel ``i % channels`` (weight, bias) and the statistics group ``i``,
    or, with ``groups`` (group norm, statistics of shape (N, groups)),
    ``(i // channels) * groups + (i % channels) // (channels // groups)``.
    ``running``: ``(running_mean, running_var, momentum)``, the user's
    device arrays of shape (channels,), updated in place with the batch mean
    and unbiased variance averaged over the groups of each channel
    (instance norm: over the samples)."""

    kind: int
    eps: float = 0.0
    ddof: float = 0.0
    with_mean: bool = True
    with_std: bool = True
    lo: float = 0.0
    hi: float = 1.0
    clip: bool = False
    weight: Any = None
    bias: Any = None
    channels: int = 0
    groups: int = 0
    running: tuple | None = None
    p: float = 2.0


def normalize_on_device(
    x, axis, fin: Finish, *, out, skipnan: bool, minmax: bool, stats_x=None, stats_axis=None, backend=None
):
    """Statistics of ``stats_x`` (default x) over ``stats_axis`` (default
    ``axis``), then ``out = (x - center) * scale + shift`` over ``axis``
    with parameters that ``fin`` makes of them, all on the backend's device
    (CUDA: moments_device, merge_device, finish_apply, running_update): no
    copy to the host and no synchronisation.  The same (P, R, K) plans as
    :func:`reduce_moments` and :func:`apply_affine`, so the statistics are
    the ones reduce_moments would give, to the mean's last-bit rounding.

    Returns ``stats()``: the kept-shape statistics of stats_x as host
    :class:`Moments` (one copy to the host; call it only when they are
    asked for; not for FIN_LP, whose statistics are p-norm sums)."""
    be = backend or backends.backend_for(x)
    sx = x if stats_x is None else stats_x
    saxes = tuple(axis if stats_axis is None else stats_axis)
    kshape = kept_shape(sx.shape, saxes)
    xc, perm = _layout(sx, be)
    red = {perm.index(a) for a in saxes}
    plan = _stats_plan(_runs(tuple(xc.shape), red))
    P, R, K = plan.view
    J = int(np.prod(kshape, dtype=np.int64))
    if fin.kind == FIN_LP:
        # the p-norms' sums (max |x| for p = inf), merged, finished once
        st = be.pnorm_device(xc.reshape(P, R, K), fin.p)
        for a, m, b in _merges(plan.part):
            st = be.fold_device(st.reshape(a, m, b), np.isinf(fin.p))
        st = st.reshape(1, J)
    else:
        st = be.moments_device(xc.reshape(P, R, K), skipnan, minmax)
        for a, m, b in _merges(plan.part):
            st = be.merge_device(st.reshape(6, a, m, b))
        st = st.reshape(6, J)
    # group of kept index (x order) -> its column in st (xc's kept order)
    kept_perm = [a for a in perm if a not in saxes]
    pos = np.arange(J).reshape(tuple(sx.shape[a] for a in kept_perm))
    pos = pos.transpose(np.argsort(kept_perm)).reshape(-1) if len(kept_perm) > 1 else pos.reshape(-1)
    C = int(fin.channels) or 1
    G = int(fin.groups)

    def gather(be, xv, tv, index):
        group = index if not G else (index // C) * G + (index % C) // (C // G)
        be.finish_apply(xv, tv, st, np.stack([pos[group], index % C]), fin)

    apply_gathered(x, axis, gather, out=out, backend=be)
    if fin.running is not None:
        rm, rv, mom = fin.running
        ridx = pos.reshape(-1, C).T  # channel c: the groups n * C + c
        be.running_update(st, ridx, rm, False, mom)
        be.running_update(st, ridx, rv, True, mom)

    def stats() -> Moments:
        h = be.to_host(st)[:, pos]
        c, mu, r, q, lo, hi = (a.reshape(kshape) for a in h)
        return _rounded(c, mu, r, q, lo if minmax else None, hi if minmax else None, minmax)

    return stats


def _apply_view(runs):
    """(P, R, K) view for a broadcast apply (params constant along R), and
    how many runs go to (P, R, K)."""
    if not runs:
        return (1, 1, 1), (0, 0, 0)
    n = len(runs)
    last_red, last = runs[-1]
    if last_red:
        if last < 16 and n >= 3:
            return (_prod(runs[:-3]), runs[-3][1], runs[-2][1] * last), (n - 3, 1, 2)
        return (_prod(runs[:-1]), last, 1), (n - 1, 1, 0)
    if n == 1:
        return (1, 1, last), (0, 0, 1)
    return (_prod(runs[:-2]), runs[-2][1], last), (n - 2, 1, 1)


def _params(params, x_shape, axes, perm, runs, groups, view):
    """Materialize kept-shape params as (n, P, K) float64 arrays of a view.

    ``params`` is a sequence of arrays broadcastable to the kept shape; they
    are stacked and moved to the view's layout together (one pass of small
    reshapes/transposes instead of one per parameter: small calls).
    """
    P, R, K = view
    kshape = kept_shape(x_shape, axes)
    n = len(params)
    arr = np.empty((n, *kshape))
    for i, a in enumerate(params):
        arr[i] = a
    # x order with reduced axes as size 1 -> xc order -> squeeze size-1 axes of xc
    arr = arr.reshape([n] + [1 if i in axes else m for i, m in enumerate(x_shape)])
    arr = arr.transpose([0] + [a + 1 for a in perm])
    shape_c = [x_shape[i] for i in perm]
    arr = arr.reshape([n] + [d for d, m in zip(arr.shape[1:], shape_c, strict=True) if m > 1])
    # merge the axes of each run (reduced runs are size 1 in arr)
    full, i = [], 0
    sizes_c = [m for m in shape_c if m > 1]
    run_arr_shape = []
    for red, m in runs:
        k = 1
        cnt = 0
        while k < m:
            k *= sizes_c[i + cnt]
            cnt += 1
        run_arr_shape.append(1 if red else m)
        full.append(m)
        i += cnt
    gp, gr, gk = groups
    sel = arr.reshape([n] + run_arr_shape[:gp] + run_arr_shape[gp + gr :])
    tgt = [n] + full[:gp] + full[gp + gr :]
    return np.ascontiguousarray(np.broadcast_to(sel, tgt)).reshape(n, P, K)


def apply_affine(x, axis, center, scale, shift, *, out, lo=None, hi=None, backend=None):
    """out = clip((x - center) * scale + shift, lo, hi), params of the kept shape.

    ``out`` must have x's shape and dtype; it may be x itself.  Returns out.
    """

    def launch(be, xv, tv, layout):
        ps = layout((center, scale, shift))
        be.apply(xv, tv, ps[0], ps[1], ps[2], lo, hi)

    return _apply_view_of(x, axis, out, backend, launch)


def apply_gathered(x, axis, gather, *, out, backend=None):
    """out = (x - c) * s + h with parameters that live on the backend: the
    planner gives ``gather(be, xv, tv, index)`` the apply view of x and out
    and ``index`` (P, K) int64, the flat kept-shape index (C order) of each
    view entry's parameters, so that the backend lays them out itself (the
    CUDA backend without a copy to the host).  Returns out."""

    def launch(be, xv, tv, layout):
        kshape = kept_shape(x.shape, tuple(axis))
        idx = np.arange(int(np.prod(kshape, dtype=np.int64)), dtype=np.float64).reshape(kshape)
        gather(be, xv, tv, layout((idx,))[0].astype(np.int64))

    return _apply_view_of(x, axis, out, backend, launch)


def _apply_view_of(x, axis, out, backend, launch):
    """The (P, R, K) apply view of x and out (no copy for layouts ordered by
    stride; out through x's layout, else a temporary copied back), then
    ``launch(be, x view, out view, layout)``, where ``layout(params)`` lays
    kept-shape arrays out as the view's (n, P, K)."""
    be = backend or backends.backend_for(x)
    axes = tuple(axis)
    xc, perm = _layout(x, be)
    shape_c = tuple(xc.shape)
    if 0 in shape_c:
        return out
    # out must share xc's layout to be written through the same view
    oc = be.permute(out, perm) if perm != tuple(range(len(perm))) else out
    direct = _is_c_contiguous(oc)
    target = oc if direct else be.empty(shape_c, xc.dtype, like=xc)
    red = {perm.index(a) for a in axes}
    runs = _runs(shape_c, red)
    view, groups = _apply_view(runs)
    launch(
        be,
        xc.reshape(view),
        target.reshape(view),
        lambda params: _params(params, tuple(x.shape), axes, perm, runs, groups, view),
    )
    if not direct:
        be.copy(target, oc)
    return out


def reduce_pnorm(x, axis, p, *, backend=None) -> np.ndarray:
    """p-norm of x over ``axis`` (tuple), float64 of the kept shape."""
    be = backend or backends.backend_for(x)
    axes = tuple(axis)
    kshape = kept_shape(x.shape, axes)
    xc, perm = _layout(x, be)
    red = {perm.index(a) for a in axes}
    runs = _runs(tuple(xc.shape), red)
    plan = _stats_plan(runs)
    P, R, K = plan.view
    nrm = np.asarray(be.pnorm(xc.reshape(P, R, K), p), dtype=np.float64)
    for a, m, b in _merges(plan.part):
        v = nrm.reshape(a, m, b)
        if np.isinf(p):
            nrm = v.max(axis=1)
        else:
            with np.errstate(over="ignore"):
                nrm = pnorm_finish_array((v**p).sum(axis=1), p)
    kept_perm = [a for a in perm if a not in axes]
    nrm = nrm.reshape(tuple(x.shape[a] for a in kept_perm))
    if len(kept_perm) > 1:
        nrm = np.ascontiguousarray(nrm.transpose(np.argsort(kept_perm)))
    return nrm.reshape(kshape)
