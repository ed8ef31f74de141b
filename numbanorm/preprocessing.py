"""Preprocessing with NumPy/scikit-learn conventions: ``axis`` = axes reduced over.

NaN is ignored when statistics are computed (per-feature counts, as
scikit-learn) and stays NaN in the output.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from . import _validate as V
from . import functional as _functional
from ._config import MIN_TASK_ELEMS
from ._reduce import apply_affine, kept_shape, normalize_axis, reduce_moments, reduce_pnorm
from ._stats import constant_features
from .backends.cpu import channels as _channels
from .backends.cpu import rows as _cpu_rows
from .backends.cpu import small as _small
from .functional import _FAST_DTYPES, _chan_fusable, _fast_out, rows_fusable

__all__ = ["standardize", "minmax_scale", "lp_normalize", "constant_features"]


# lp_normalize's unit weight and zero bias in each dtype (row_norm's (RW, S))
_UNIT = {dt: (np.ones((1, 1), dt), np.zeros((1, 1), dt)) for dt in _FAST_DTYPES}


def _small_view(x: Any, axis: Any):
    """(A, C, S) when ``x`` is a small native float32/64 C-contiguous ndarray
    and ``axis`` (_simple_axes) keeps contiguous axes: x as
    (reduced prefix, kept, reduced suffix), statistics per kept position.
    None otherwise: the general path then validates and raises the errors."""
    if not _small_array(x):
        return None
    axes = _simple_axes(x.ndim, axis)
    return None if axes is None else _chan_view(x.shape, axes)


def _simple_axes(nd: int, axis: Any):
    """``axis`` as a sorted tuple when it is an int in range, None, or a
    non-empty tuple of distinct ints in range; else None (the general path
    then validates it)."""
    if type(axis) is int:
        return (axis % nd,) if -nd <= axis < nd else None
    if axis is None:
        return tuple(range(nd))
    if type(axis) is not tuple or not axis or any(type(a) is not int or not -nd <= a < nd for a in axis):
        return None
    axes = tuple(sorted(a % nd for a in axis))
    return axes if len(set(axes)) == len(axes) else None


def _large_view(x: Any, axis: Any):
    """((A, C, S), axes) when ``x`` is a large native float32/64 C-contiguous
    ndarray and ``axis`` an int or a tuple of ints (_simple_axes) whose kept
    axes are contiguous and whose general plan the fused kernels repeat
    (functional._chan_fusable): e.g. axis=(0, 2, 3), per channel of NCHW
    images.  None otherwise (the general path)."""
    if not (
        _functional._FUSED
        and type(x) is np.ndarray
        and x.dtype in _FAST_DTYPES
        and x.flags.c_contiguous
        and x.size > MIN_TASK_ELEMS
    ):
        return None
    axes = _simple_axes(x.ndim, axis)
    v = None if axes is None else _chan_view(x.shape, axes)
    if v is None or not _chan_fusable(*v):  # (axis=None: C == 1, not fusable)
        return None
    return v, axes


def _fused(x, v, out):
    """(x2, y, y2, C, rows) for the fused kernels: x and the output (None
    when ``out`` is not one the fast path takes) as (A*C, S) rows or
    (1, A*C) with channels last."""
    y = _fast_out(x, out)
    if y is None:
        return None
    A, C, S = v
    shape = (A * C, S) if S > 1 else (1, A * C)
    return x.reshape(shape), y, y.reshape(shape), C, S > 1


def _small_array(x: Any) -> bool:
    return (
        type(x) is np.ndarray
        and x.dtype in _FAST_DTYPES
        and x.flags.c_contiguous
        and x.ndim > 0
        and 0 < x.size <= MIN_TASK_ELEMS
    )


def _chan_view(shape, axes):
    """(A, C, S) of ``shape`` reduced over ``axes`` when the kept axes are
    contiguous (else None)."""
    kept = [i for i in range(len(shape)) if i not in axes]
    if kept and kept[-1] - kept[0] + 1 != len(kept):
        return None
    k0, k1 = (kept[0], kept[-1] + 1) if kept else (0, 0)
    A = math.prod(shape[:k0])
    C = math.prod(shape[k0:k1])
    n = math.prod(shape)
    return A, C, n // (A * C)


def _general_small_view(inp, axes, y):
    """_chan_view for the general path of a small host call, when x and y
    are C-contiguous (the same kernel as the fast path: the same bits with or
    without out=)."""
    if not _small_array(inp.arr) or type(y) is not np.ndarray or not y.flags.c_contiguous:
        return None
    return _chan_view(inp.arr.shape, axes)


def _prep(x: Any, axis: Any):
    inp = V.Input(x)
    axes = normalize_axis(axis, inp.ndim)
    inp.require_nonempty()
    return inp, axes


def _keep(a: np.ndarray, shape, axes) -> np.ndarray:
    return a.reshape([1 if i in axes else n for i, n in enumerate(shape)])


def standardize(
    x: Any,
    axis: Any = 0,
    *,
    ddof: int = 0,
    with_mean: bool = True,
    with_std: bool = True,
    out: Any = None,
    return_stats: bool = False,
    stream: Any = None,
):
    """Z-score ``x`` over ``axis``: ``(x - mean) / std``.

    Parameters
    ----------
    x : array
    axis : int or tuple of ints, default 0
        Axes the statistics are computed over (0: per column of a 2-D array).
    ddof : int
        Delta degrees of freedom of the standard deviation.
    with_mean, with_std : bool
        Center, scale (scikit-learn's StandardScaler options).
    out : array, optional
        Result array (may be x).
    return_stats : bool
        Also return ``mean`` and ``std`` actually used, with x's number of
        dimensions (reduced axes of size 1).  Constant features (variance 0 up
        to rounding) get std 1.

    Examples
    --------
    >>> import numpy as np, numbanorm as nbn
    >>> y = nbn.standardize(np.array([[1.0, 10.0], [3.0, 10.0]]))
    >>> y.tolist()
    [[-1.0, 0.0], [1.0, 0.0]]
    """
    if out is None and not return_stats and stream is None and type(ddof) is int and ddof >= 0:
        v = _small_view(x, axis)
        if v is not None and type(with_mean) is bool and type(with_std) is bool:
            y = np.empty_like(x)
            _small.standardize_small(
                x.reshape(v), y.reshape(v), float(ddof), with_mean, with_std, np.empty(v[1]), np.empty(v[1])
            )
            return y
    if (
        stream is None
        and type(ddof) is int
        and ddof >= 0
        and type(with_mean) is bool
        and type(with_std) is bool
    ):
        lv = _large_view(x, axis)
        f = _fused(x, lv[0], out) if lv is not None else None
        if f is not None:
            # one compiled call for both passes (backends/cpu.py: _standardize_large)
            x2, y, y2, C, rows = f
            mean, std = np.empty(C), np.empty(C)
            _channels.standardize(x2, y2, C, rows, ddof, with_mean, with_std, mean, std)
            if not return_stats:
                return y
            kshape = [1 if i in lv[1] else n for i, n in enumerate(x.shape)]
            return y, mean.reshape(kshape), std.reshape(kshape)
    inp, axes = _prep(x, axis)
    if isinstance(ddof, bool) or not isinstance(ddof, numbers.Integral) or ddof < 0:
        raise ValueError(f"ddof must be a non-negative int, got {ddof!r}")
    y, user_out = V.out_array(out, inp)
    be = inp.backend
    v = _general_small_view(inp, axes, y)
    if v is not None:
        mean, std = np.empty(v[1]), np.empty(v[1])
        _small.standardize_small(
            inp.arr.reshape(v), y.reshape(v), float(ddof), bool(with_mean), bool(with_std), mean, std
        )
        mean = mean.reshape(kept_shape(inp.shape, axes))
        std = std.reshape(mean.shape)
    else:
        mean, std = _standardize_general(inp, axes, y, ddof, with_mean, with_std, be, stream)
    res = user_out if user_out is not None else be.wrap(y, like=inp.orig)
    if not return_stats:
        return res
    sh = inp.shape
    return res, _keep(mean, sh, axes), _keep(std, sh, axes)


def _standardize_general(inp, axes, y, ddof, with_mean, with_std, be, stream):
    """standardize through the backend primitives; returns the mean and std used."""
    with be.context(stream):
        m = reduce_moments(inp.arr, axes, skipnan=True, minmax=False, backend=be)
        with np.errstate(invalid="ignore", divide="ignore"):
            var = np.where(m.count - ddof > 0, m.m2 / (m.count - ddof), np.nan)
        std = np.sqrt(var)
        std = np.where(constant_features(var, m.mean, m.count), 1.0, std)
        mean = m.mean if with_mean else np.zeros_like(m.mean)
        if not with_std:
            std = np.ones_like(std)
        with np.errstate(divide="ignore"):
            scale = 1.0 / std
        apply_affine(inp.arr, axes, mean, scale, np.zeros_like(mean), out=y, backend=be)
    return mean, std


def minmax_scale(
    x: Any,
    feature_range: tuple[float, float] = (0.0, 1.0),
    axis: Any = 0,
    *,
    clip: bool = False,
    out: Any = None,
    stream: Any = None,
):
    """Scale ``x`` linearly so that its min/max over ``axis`` map to ``feature_range``.

    ``y = (x - min) * (hi - lo) / (max - min) + lo``; a zero range scales by
    ``hi - lo`` (scikit-learn: range treated as 1).  ``clip`` clips to the
    feature range (useful with statistics from other data).

    Examples
    --------
    >>> import numpy as np, numbanorm as nbn
    >>> nbn.minmax_scale(np.array([[0.0], [5.0], [10.0]])).ravel().tolist()
    [0.0, 0.5, 1.0]
    """
    try:
        lo, hi = (float(v) for v in feature_range)
    except (TypeError, ValueError):
        raise TypeError(f"feature_range must be a pair of numbers, got {feature_range!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"feature_range must be finite with min < max, got {tuple(feature_range)!r}")
    if out is None and stream is None and type(clip) is bool:
        v = _small_view(x, axis)
        if v is not None:
            y = np.empty_like(x)
            _small.minmax_small(x.reshape(v), y.reshape(v), lo, hi, clip)
            return y
    if stream is None and type(clip) is bool:
        lv = _large_view(x, axis)
        f = _fused(x, lv[0], out) if lv is not None else None
        if f is not None:
            # one compiled call for both passes (backends/cpu.py: _minmax_large)
            x2, y, y2, C, rows = f
            _channels.minmax_scale(x2, y2, C, rows, lo, hi, clip)
            return y
    inp, axes = _prep(x, axis)
    y, user_out = V.out_array(out, inp)
    be = inp.backend
    v = _general_small_view(inp, axes, y)
    if v is not None:
        _small.minmax_small(inp.arr.reshape(v), y.reshape(v), lo, hi, bool(clip))
        return user_out if user_out is not None else y
    with be.context(stream):
        m = reduce_moments(inp.arr, axes, skipnan=True, minmax=True, moments=False, backend=be)
        rng = m.max - m.min
        rng = np.where(rng == 0.0, 1.0, rng)
        scale = (hi - lo) / rng
        apply_affine(
            inp.arr,
            axes,
            m.min,
            scale,
            np.full_like(scale, lo),
            out=y,
            lo=lo if clip else None,
            hi=hi if clip else None,
            backend=be,
        )
    return user_out if user_out is not None else be.wrap(y, like=inp.orig)


def lp_normalize(
    x: Any,
    p: float = 2.0,
    axis: Any = -1,
    eps: float = 1e-12,
    *,
    out: Any = None,
    stream: Any = None,
):
    """Divide ``x`` by its p-norm over ``axis``: ``x / max(||x||_p, eps)``.

    ``torch.nn.functional.normalize`` semantics; ``p`` may be any positive
    number or ``inf``.  NaN is ignored in the norm (API section 3) and stays
    NaN in the output, so a NaN does not wipe out the rest of its group.

    Examples
    --------
    >>> import numpy as np, numbanorm as nbn
    >>> nbn.lp_normalize(np.array([[3.0, 4.0]])).tolist()
    [[0.6, 0.8]]
    """
    if (
        out is None
        and stream is None
        and type(p) in (float, int)
        and p > 0
        and type(eps) is float
        and 0.0 <= eps < math.inf
        and type(axis) is int
        and _small_array(x)
        and axis in (-1, x.ndim - 1)
    ):
        # small rows: the general path's row kernel call, without its
        # validation and dispatch (the same bits)
        D = x.shape[-1]
        y = np.empty_like(x)
        one, zero = _UNIT[x.dtype]
        _cpu_rows.row_norm(x.reshape(-1, D), y.reshape(-1, D), one, zero, eps, False, p=float(p))
        return y
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(f"p must be a positive number or inf, got {p!r}")
    p = float(p)
    if not p > 0:
        raise ValueError(f"p must be > 0, got {p!r}")
    eps = V.check_eps(eps)
    inp, axes = _prep(x, axis)
    y, user_out = V.out_array(out, inp)
    be = inp.backend
    if axes == (inp.ndim - 1,) and rows_fusable(inp, y):
        # rows along the last axis: norm and output fused per cache-resident row
        D = inp.shape[-1]
        R = inp.arr.size // D
        one, zero = np.ones((1, 1)), np.zeros((1, 1))
        with be.context(stream):
            be.row_norm(inp.arr.reshape(R, D), y.reshape(R, D), one, zero, eps, False, p=p)
        return user_out if user_out is not None else be.wrap(y, like=inp.orig)
    with be.context(stream):
        nrm = reduce_pnorm(inp.arr, axes, p, backend=be)
        scale = 1.0 / np.maximum(nrm, eps) if eps > 0 else 1.0 / nrm
        z = np.zeros_like(nrm)
        with np.errstate(divide="ignore"):
            apply_affine(inp.arr, axes, z, scale, z, out=y, backend=be)
    return user_out if user_out is not None else be.wrap(y, like=inp.orig)
