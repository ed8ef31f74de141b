"""Preprocessing with NumPy/scikit-learn conventions: ``axis`` = axes reduced over.

:func:`standardize` (z-score), :func:`minmax_scale` (to a feature range) and
:func:`lp_normalize` (division by the p-norm) take NumPy arrays (CPU kernels)
and CUDA arrays (anything with ``__cuda_array_interface__``: GPU kernels) and
return the input's array type.  A *feature* is an index of the kept shape,
the input's shape without the ``axis`` axes (the columns of a 2-D array with
``axis=0``); ``axis`` is an int, a tuple of ints or None (every axis).

NaN is ignored when statistics are computed (per-feature counts, as
scikit-learn; left out of the p-norm) and stays NaN in the output.

How a call runs: a NumPy call first offers its plain arguments to
:mod:`numbanorm.backends.cpu.shortcuts` (small inputs in one serial kernel,
large ones whose kept axes are contiguous per feature, short rows of
``lp_normalize``), which returns the result or declines.  Otherwise the
general path here validates every argument (:mod:`numbanorm._validate`),
reduces over ``axis`` with the backend primitives of :mod:`numbanorm.backends`
on views of ``x`` (the planner in :mod:`numbanorm._reduce`) and finalizes the
per-feature parameters on the host (:mod:`numbanorm._stats`, where
:func:`constant_features`, re-exported here for the scalers, lives).  A
shortcut gives the same bits as the general path.

References
----------
B. P. Welford, "Note on a method for calculating corrected sums of squares and
products", Technometrics 4(3), 1962.
T. F. Chan, G. H. Golub, R. J. LeVeque, "Algorithms for computing the sample
variance: analysis and recommendations", The American Statistician 37(3), 1983.
F. Pedregosa et al., "Scikit-learn: Machine Learning in Python", JMLR 12, 2011
(``sklearn.preprocessing``: ``scale``, ``minmax_scale``, ``normalize``).
"""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _validate as V
from ._reduce import (
    FIN_LP,
    FIN_MINMAX,
    FIN_STANDARDIZE,
    Finish,
    _is_c_contiguous,
    apply_affine,
    kept_shape,
    normalize_axis,
    normalize_on_device,
    reduce_moments,
    reduce_pnorm,
)
from ._stats import constant_features, minmax_factor, standardize_params
from .backends.cpu import shortcuts
from .functional import rows_fusable

if TYPE_CHECKING:  # annotations only: numpy.typing is not imported at run time
    from numpy.typing import ArrayLike

__all__ = ["standardize", "minmax_scale", "lp_normalize", "constant_features"]


def _prep(x: Any, axis: Any):
    inp = V.Input(x)
    axes = normalize_axis(axis, inp.ndim)
    inp.require_nonempty()
    return inp, axes


def _keep(a: np.ndarray, shape, axes) -> np.ndarray:
    return a.reshape([1 if i in axes else n for i, n in enumerate(shape)])


@V.on_call_stream
def standardize(
    x: ArrayLike | Any,
    axis: int | tuple[int, ...] | None = 0,
    *,
    ddof: int = 0,
    with_mean: bool = True,
    with_std: bool = True,
    out: np.ndarray | Any | None = None,
    return_stats: bool = False,
    stream: Any = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray] | Any:
    """Standardize ``x`` per feature over ``axis``: ``(x - mean) / std`` (z-score).

    scikit-learn's ``StandardScaler``/``scale`` conventions [3]_, in one call:
    for each feature (an index of the axes not in ``axis``), ``mean`` is the
    mean over ``axis`` and ``std = sqrt(M2 / (n - ddof))`` the standard
    deviation about it (``ddof=0``: the biased one, as scikit-learn).

    - NaN is ignored: each feature's count n, mean and std are those of its
      non-NaN values, and NaN stays NaN in the output.  Inf is not skipped:
      it makes its feature's output NaN.
    - Features whose variance is 0 up to rounding (scikit-learn's
      ``_is_constant_feature`` test) get ``std = 1``, so they become
      ``x - mean`` (about 0) instead of NaN.
    - A feature with ``n - ddof <= 0`` (e.g. all NaN) gets std NaN: its
      output is NaN.
    - ``with_mean=False`` does not center (``mean = 0`` is used; the std is
      still taken about the mean, as scikit-learn); ``with_std=False`` does
      not scale (``std = 1``).

    The statistics are float64 (Welford [1]_ / Chan, Golub & LeVeque [2]_
    moments) whatever the input dtype.  ``x`` is never modified unless it is
    ``out``.

    Parameters
    ----------
    x : array_like or CUDA array
        Data of a float16/32/64, integer or bool dtype.  A NumPy array (any
        strides, read-only allowed), anything ``np.asarray`` takes, or a CUDA
        array (anything with ``__cuda_array_interface__``), which runs on the
        GPU.  A masked array (``numpy.ma``) is honoured: masked entries are
        left out like NaN and the result is masked where ``x`` is (``out``
        must then be a plain ndarray).
    axis : int, tuple of int or None, default 0
        The axes reduced over (0: per column of a 2-D array), an int or a
        tuple of ints, negative values counting from the end; None reduces
        over every axis.  Statistics are per feature, an index of the other
        axes.
    ddof : int, default 0
        Delta degrees of freedom of the variance, a non-negative int.
    with_mean : bool, default True
        Subtract the mean.
    with_std : bool, default True
        Divide by the standard deviation.
    out : ndarray or CUDA array, optional
        Array the result is written into and returned: ``x``'s shape and the
        result dtype, the same kind of array as ``x`` (a NumPy one writable,
        any strides).  It may be ``x`` itself (in place), but must not
        otherwise overlap ``x``.
    return_stats : bool, default False
        Also return the ``mean`` and ``std`` that were used.
    stream : CUDA stream, optional
        For a CUDA ``x``: the stream every launch, copy and allocation of
        the call goes to (a numba, CuPy or PyTorch stream, or a raw
        ``cudaStream_t`` handle).  None: the stream ``x`` reports (CuPy's or
        PyTorch's current stream, a numba array's own stream, else the
        default stream).  The call waits on the device, never on the host,
        for work pending on the streams its arrays report.  Ignored for
        NumPy input.

    Returns
    -------
    y : ndarray or CUDA array
        The standardized ``x`` (``out`` when given), of ``x``'s shape and
        array type; ``x``'s dtype for float16/32/64 input, float64 for
        integer or bool input.
    mean, std : ndarray
        Only with ``return_stats=True``: the center and scale used (0 without
        ``with_mean``, 1 without ``with_std`` or for a constant feature), as
        float64 NumPy arrays with ``x``'s number of dimensions, the reduced
        axes of size 1 (so they broadcast against ``x``); NumPy arrays for a
        CUDA ``x`` too.

    Raises
    ------
    ValueError
        ``x`` has no element; ``axis`` is out of range or repeats an axis;
        ``ddof`` is not a non-negative int (a float or a bool included);
        ``out`` has the wrong shape or dtype, is read-only, or overlaps ``x``
        without being ``x``.
    TypeError
        ``x`` is not an array, is a dask array, or has an unsupported dtype
        (complex, object, string, ...); ``axis`` is not an int, a sequence of
        ints or None; ``out`` is not the same kind of array as ``x``;
        ``stream`` is not a stream (CUDA input).
    RuntimeError
        ``x`` is a CUDA array but no usable CUDA GPU (nor numba's CUDA
        simulator) is found.

    See Also
    --------
    numbanorm.StandardScaler : The same statistics fitted once (or batch by
        batch) and applied to other data.

    References
    ----------
    .. [1] B. P. Welford, "Note on a method for calculating corrected sums of
       squares and products", Technometrics 4(3), 1962.
    .. [2] T. F. Chan, G. H. Golub, R. J. LeVeque, "Algorithms for computing
       the sample variance: analysis and recommendations", The American
       Statistician 37(3), 1983.
    .. [3] scikit-learn, ``sklearn.preprocessing.StandardScaler`` and
       ``sklearn.preprocessing.scale``; F. Pedregosa et al., "Scikit-learn:
       Machine Learning in Python", JMLR 12, 2011.

    Examples
    --------
    >>> import numpy as np, numbanorm as nbn
    >>> y = nbn.standardize(np.array([[1.0, 10.0], [3.0, 10.0]]))
    >>> y.tolist()  # the constant column gets std 1
    [[-1.0, 0.0], [1.0, 0.0]]

    NaN is left out of the statistics and kept:

    >>> nbn.standardize(np.array([[1.0], [np.nan], [3.0]])).ravel().tolist()
    [-1.0, nan, 1.0]

    Per channel of an image stack (N, C, H, W), with the statistics used:

    >>> x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    >>> y, mean, std = nbn.standardize(x, axis=(0, 2, 3), return_stats=True)
    >>> y.dtype, mean.shape, std.dtype
    (dtype('float32'), (1, 3, 1, 1), dtype('float64'))
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
        args = (ddof, with_mean, with_std, be, stream, return_stats)
        mean, std = _standardize_general(inp, axes, y, *args)
    res = user_out if user_out is not None else be.wrap(y, like=inp.orig)
    if not return_stats:
        return res
    sh = inp.shape
    return res, _keep(mean, sh, axes), _keep(std, sh, axes)


def _standardize_general(inp, axes, y, ddof, with_mean, with_std, be, stream, want_stats=True):
    """standardize through the backend primitives; returns the mean and std
    used (CUDA: all on the device, the statistics brought to the host only
    when ``want_stats``; else None, None)."""
    with be.context(stream):
        if be.NAME == "cuda":
            flags = dict(with_mean=bool(with_mean), with_std=bool(with_std))
            fin = Finish(FIN_STANDARDIZE, ddof=float(ddof), **flags)
            stats = normalize_on_device(inp.arr, axes, fin, out=y, skipnan=True, minmax=False, backend=be)
            if not want_stats:
                return None, None
            m = stats()
        else:
            m = reduce_moments(inp.arr, axes, skipnan=True, minmax=False, backend=be)
        flat = [np.ascontiguousarray(a).reshape(-1) for a in (m.count, m.mean, m.m2)]
        prm = np.empty((3, flat[0].size))  # center, std, scale
        standardize_params(*flat, float(ddof), bool(with_mean), bool(with_std), *prm)
        mean, std, scale = (a.reshape(m.mean.shape) for a in prm)
        if be.NAME != "cuda":
            apply_affine(inp.arr, axes, mean, scale, np.zeros_like(mean), out=y, backend=be)
    return mean, std


@V.on_call_stream
def minmax_scale(
    x: ArrayLike | Any,
    feature_range: tuple[float, float] = (0.0, 1.0),
    axis: int | tuple[int, ...] | None = 0,
    *,
    clip: bool = False,
    out: np.ndarray | Any | None = None,
    stream: Any = None,
) -> np.ndarray | Any:
    """Scale ``x`` linearly per feature so that its min and max over ``axis`` map to ``feature_range``.

    scikit-learn's ``minmax_scale``/``MinMaxScaler`` conventions [1]_: with
    ``(lo, hi) = feature_range``, each feature (an index of the axes not in
    ``axis``) becomes ``y = (x - min) * (hi - lo) / (max - min) + lo``.

    - NaN is ignored: min and max are those of the feature's non-NaN values,
      and NaN stays NaN in the output (a feature of NaN only stays NaN).
      Inf is not skipped: it becomes its feature's min or max.
    - A constant feature (``max == min``) has its range counted as 1, as in
      scikit-learn: it maps to ``lo``.

    ``x`` is never modified unless it is ``out``.

    Parameters
    ----------
    x : array_like or CUDA array
        Data of a float16/32/64, integer or bool dtype.  A NumPy array (any
        strides, read-only allowed), anything ``np.asarray`` takes, or a CUDA
        array (anything with ``__cuda_array_interface__``), which runs on the
        GPU.  A masked array (``numpy.ma``) is honoured: masked entries are
        left out like NaN and the result is masked where ``x`` is (``out``
        must then be a plain ndarray).
    feature_range : (float, float), default (0.0, 1.0)
        The target ``(lo, hi)``: finite numbers with ``lo < hi``.
    axis : int, tuple of int or None, default 0
        The axes reduced over (0: per column of a 2-D array), an int or a
        tuple of ints, negative values counting from the end; None reduces
        over every axis.  Statistics are per feature, an index of the other
        axes.
    clip : bool, default False
        Clip the result to ``[lo, hi]`` (NaN stays NaN).  The statistics come
        from ``x`` itself, so this only removes rounding overshoot.
    out : ndarray or CUDA array, optional
        Array the result is written into and returned: ``x``'s shape and the
        result dtype, the same kind of array as ``x`` (a NumPy one writable,
        any strides).  It may be ``x`` itself (in place), but must not
        otherwise overlap ``x``.
    stream : CUDA stream, optional
        For a CUDA ``x``: the stream every launch, copy and allocation of
        the call goes to (a numba, CuPy or PyTorch stream, or a raw
        ``cudaStream_t`` handle).  None: the stream ``x`` reports (CuPy's or
        PyTorch's current stream, a numba array's own stream, else the
        default stream).  The call waits on the device, never on the host,
        for work pending on the streams its arrays report.  Ignored for
        NumPy input.

    Returns
    -------
    ndarray or CUDA array
        The scaled ``x`` (``out`` when given), of ``x``'s shape and array
        type; ``x``'s dtype for float16/32/64 input, float64 for integer or
        bool input.

    Raises
    ------
    ValueError
        ``feature_range`` is not finite with ``lo < hi``; ``x`` has no
        element; ``axis`` is out of range or repeats an axis; ``out`` has the
        wrong shape or dtype, is read-only, or overlaps ``x`` without being
        ``x``.
    TypeError
        ``feature_range`` is not a pair of numbers; ``x`` is not an array, is
        a dask array, or has an unsupported dtype; ``axis`` is not an int, a
        sequence of ints or None; ``out`` is not the same kind of array as
        ``x``; ``stream`` is not a stream (CUDA input).
    RuntimeError
        ``x`` is a CUDA array but no usable CUDA GPU (nor numba's CUDA
        simulator) is found.

    See Also
    --------
    numbanorm.MinMaxScaler : The same statistics fitted once (or batch by
        batch) and applied to other data.

    References
    ----------
    .. [1] scikit-learn, ``sklearn.preprocessing.minmax_scale`` and
       ``sklearn.preprocessing.MinMaxScaler``; F. Pedregosa et al.,
       "Scikit-learn: Machine Learning in Python", JMLR 12, 2011.

    Examples
    --------
    >>> import numpy as np, numbanorm as nbn
    >>> nbn.minmax_scale(np.array([[0.0], [5.0], [10.0]])).ravel().tolist()
    [0.0, 0.5, 1.0]

    A constant column maps to ``lo``; NaN is left out and kept:

    >>> nbn.minmax_scale(np.array([[1.0, 2.0], [1.0, np.nan], [1.0, 4.0]]), (-1, 1)).tolist()
    [[-1.0, -1.0], [-1.0, nan], [-1.0, 1.0]]
    """
    lo, hi = V.feature_range(feature_range)
    if stream is None:
        y = shortcuts.minmax_scale(x, lo, hi, axis, clip, out)
        if y is not None:
            return y
    inp, axes = _prep(x, axis)
    y, user_out = V.out_array(out, inp)
    be = inp.backend
    if shortcuts.minmax_general_small(inp, axes, y, lo, hi, clip):
        return user_out if user_out is not None else y
    if be.NAME == "cuda":
        # min, max, parameters and output on the device: no copy to the host
        with be.context(stream):
            fin = Finish(FIN_MINMAX, lo=float(lo), hi=float(hi), clip=bool(clip))
            normalize_on_device(inp.arr, axes, fin, out=y, skipnan=True, minmax=True, backend=be)
        return user_out if user_out is not None else be.wrap(y, like=inp.orig)
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


def _rows_on_device(inp, y) -> bool:
    """C-contiguous CUDA x and y: lp_normalize over the last axis takes the
    fused row kernel (the norm of a row while it is in registers)."""
    return inp.backend.NAME == "cuda" and _is_c_contiguous(inp.arr) and _is_c_contiguous(y)


@V.on_call_stream
def lp_normalize(
    x: ArrayLike | Any,
    p: float = 2.0,
    axis: int | tuple[int, ...] | None = -1,
    eps: float = 1e-12,
    *,
    out: np.ndarray | Any | None = None,
    stream: Any = None,
) -> np.ndarray | Any:
    """Divide ``x`` by its p-norm over ``axis``: ``x / max(||x||_p, eps)``.

    ``torch.nn.functional.normalize`` semantics [1]_ (``axis`` is its
    ``dim``), with ``||x||_p = (sum |x|**p) ** (1/p)`` over ``axis`` for each
    index of the other axes, and ``max |x|`` for ``p = inf``.  ``eps``
    guards against division by zero: a zero slice stays zero.  A norm that
    overflows to inf gives zeros, as in PyTorch.

    NaN is left out of the norm (numbanorm's rule for statistics, unlike
    PyTorch, where a NaN makes its whole slice NaN) and stays NaN in the
    output, so a NaN does not wipe out the rest of its slice.  ``x`` is never
    modified unless it is ``out``.

    Parameters
    ----------
    x : array_like or CUDA array
        Data of a float16/32/64, integer or bool dtype.  A NumPy array (any
        strides, read-only allowed), anything ``np.asarray`` takes, or a CUDA
        array (anything with ``__cuda_array_interface__``), which runs on the
        GPU.  A masked array (``numpy.ma``) is honoured: masked entries are
        left out like NaN and the result is masked where ``x`` is (``out``
        must then be a plain ndarray).
    p : float, default 2.0
        The exponent of the norm: any positive real number, or ``inf``.
    axis : int, tuple of int or None, default -1
        The axes the norm is taken over (-1: each row of a 2-D array); a
        tuple for several, None for all of them.
    eps : float, default 1e-12
        Lower bound of the norm, finite and >= 0; with 0, a zero slice
        becomes NaN (0/0).
    out : ndarray or CUDA array, optional
        Array the result is written into and returned: ``x``'s shape and the
        result dtype, the same kind of array as ``x`` (a NumPy one writable,
        any strides).  It may be ``x`` itself (in place), but must not
        otherwise overlap ``x``.
    stream : CUDA stream, optional
        For a CUDA ``x``: the stream every launch, copy and allocation of
        the call goes to (a numba, CuPy or PyTorch stream, or a raw
        ``cudaStream_t`` handle).  None: the stream ``x`` reports (CuPy's or
        PyTorch's current stream, a numba array's own stream, else the
        default stream).  The call waits on the device, never on the host,
        for work pending on the streams its arrays report.  Ignored for
        NumPy input.

    Returns
    -------
    ndarray or CUDA array
        The normalized ``x`` (``out`` when given), of ``x``'s shape and array
        type; ``x``'s dtype for float16/32/64 input, float64 for integer or
        bool input.

    Raises
    ------
    ValueError
        ``p`` is not > 0 (NaN included); ``eps`` is negative, infinite or
        NaN; ``x`` has no element; ``axis`` is out of range or repeats an
        axis; ``out`` has the wrong shape or dtype, is read-only, or overlaps
        ``x`` without being ``x``.
    TypeError
        ``p`` is not a real number (a bool included); ``eps`` is not a real
        number; ``x`` is not an array, is a dask array, or has an unsupported
        dtype; ``axis`` is not an int, a sequence of ints or None; ``out`` is
        not the same kind of array as ``x``; ``stream`` is not a stream (CUDA
        input).
    RuntimeError
        ``x`` is a CUDA array but no usable CUDA GPU (nor numba's CUDA
        simulator) is found.

    References
    ----------
    .. [1] PyTorch, ``torch.nn.functional.normalize``; scikit-learn,
       ``sklearn.preprocessing.normalize`` (the same for p = 1, 2, inf over
       the rows, ``eps`` aside).

    Examples
    --------
    >>> import numpy as np, numbanorm as nbn
    >>> nbn.lp_normalize(np.array([[3.0, 4.0]])).round(6).tolist()
    [[0.6, 0.8]]
    >>> nbn.lp_normalize(np.array([[3.0, -4.0]]), p=1).round(6).tolist()
    [[0.428571, -0.571429]]
    >>> nbn.lp_normalize(np.array([[3.0, -4.0]]), p=np.inf).tolist()
    [[0.75, -1.0]]

    NaN is left out of the norm; a zero row stays zero:

    >>> nbn.lp_normalize(np.array([[3.0, np.nan, 4.0], [0.0, 0.0, 0.0]])).round(6).tolist()
    [[0.6, nan, 0.8], [0.0, 0.0, 0.0]]

    Over the columns instead (``axis=0``):

    >>> nbn.lp_normalize(np.array([[3.0], [4.0]]), axis=0).round(6).ravel().tolist()
    [0.6, 0.8]
    """
    if stream is None:
        y = shortcuts.lp_normalize(x, p, axis, eps, out)
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
    if axes == (inp.ndim - 1,) and (rows_fusable(inp, y) or _rows_on_device(inp, y)):
        # rows along the last axis: norm and output fused per cache-resident
        # row (CPU) or per row kept in registers (CUDA): one read of x
        D = inp.shape[-1]
        R = inp.arr.size // D
        with be.context(stream):
            be.row_norm(inp.arr.reshape(R, D), y.reshape(R, D), np.ones((1, 1)), None, eps, False, p=p)
        return user_out if user_out is not None else be.wrap(y, like=inp.orig)
    if be.NAME == "cuda":
        # the p-norms' sums, 1 / max(norm, eps) and the output on the device
        with be.context(stream):
            fin = Finish(FIN_LP, eps, p=p)
            normalize_on_device(inp.arr, axes, fin, out=y, skipnan=True, minmax=False, backend=be)
        return user_out if user_out is not None else be.wrap(y, like=inp.orig)
    with be.context(stream):
        nrm = reduce_pnorm(inp.arr, axes, p, backend=be)
        scale = 1.0 / np.maximum(nrm, eps) if eps > 0 else 1.0 / nrm
        z = np.zeros_like(nrm)
        with np.errstate(divide="ignore"):
            apply_affine(inp.arr, axes, z, scale, z, out=y, backend=be)
    return user_out if user_out is not None else be.wrap(y, like=inp.orig)
