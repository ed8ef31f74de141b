"""Preprocessing with NumPy/scikit-learn conventions: ``axis`` = axes reduced over.

NaN is ignored when statistics are computed (per-feature counts, as
scikit-learn) and stays NaN in the output.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from . import _validate as V
from ._reduce import apply_affine, kept_shape, normalize_axis, reduce_moments, reduce_pnorm
from ._stats import constant_features, minmax_factor, standardize_params
from .backends.cpu import shortcuts
from .functional import rows_fusable

__all__ = ["standardize", "minmax_scale", "lp_normalize", "constant_features"]


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
    if stream is None:
        y = shortcuts.standardize(x, axis, ddof, with_mean, with_std, out, return_stats)
        if y is not None:
            return y
    inp, axes = _prep(x, axis)
    if isinstance(ddof, bool) or not isinstance(ddof, numbers.Integral) or ddof < 0:
        raise ValueError(f"ddof must be a non-negative int, got {ddof!r}")
    y, user_out = V.out_array(out, inp)
    be = inp.backend
    small = shortcuts.standardize_general_small(inp, axes, y, ddof, with_mean, with_std)
    if small is not None:
        mean, std = (a.reshape(kept_shape(inp.shape, axes)) for a in small)
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
        flat = [np.ascontiguousarray(a).reshape(-1) for a in (m.count, m.mean, m.m2)]
        prm = np.empty((3, flat[0].size))  # center, std, scale
        standardize_params(*flat, float(ddof), bool(with_mean), bool(with_std), *prm)
        mean, std, scale = (a.reshape(m.mean.shape) for a in prm)
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
    if stream is None:
        y = shortcuts.minmax_scale(x, lo, hi, axis, clip, out)
        if y is not None:
            return y
    inp, axes = _prep(x, axis)
    y, user_out = V.out_array(out, inp)
    be = inp.backend
    if shortcuts.minmax_general_small(inp, axes, y, lo, hi, clip):
        return user_out if user_out is not None else y
    with be.context(stream):
        m = reduce_moments(inp.arr, axes, skipnan=True, minmax=True, moments=False, backend=be)
        scale = minmax_factor.py_func(m.min, m.max, lo, hi)
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
    if out is None and stream is None:
        y = shortcuts.lp_normalize(x, p, axis, eps)
        if y is not None:
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
