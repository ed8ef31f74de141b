"""scikit-learn-compatible scalers on numbanorm's streaming statistics.

:class:`StandardScaler` and :class:`MinMaxScaler` follow scikit-learn's
estimator conventions (``fit`` = reset + ``partial_fit``, fitted attributes
ending in ``_``, ``get_params``/``set_params``, ``__sklearn_tags__``) without
importing scikit-learn: they work in a ``sklearn.pipeline.Pipeline`` and with
``sklearn.base.clone``, and pass ``sklearn.utils.estimator_checks`` where it
applies (tests/test_scalers.py::test_check_estimator).  scikit-learn is only
imported lazily, to build tags and to raise its ``NotFittedError``.

Statistics are accumulated in float64 by :class:`numbanorm.RunningStats`
(one parallel pass over each ``partial_fit`` batch); ``transform`` is one
parallel pass computing ``(x - center) * scale + shift`` and storing in the
input's float dtype.  Batches of at most ``MIN_TASK_ELEMS`` (32768) elements
run one serial kernel per call instead (``backends.cpu.small``: the
statistics folded into the state, or the transform formed in float64 and
rounded once), without waking the thread pool, and the fitted attributes
are formed by one serial kernel: a call on a 32 x 64 batch costs
microseconds, also on a busy machine (tests/test_loose_ends.py).

Masked arrays (``numpy.ma``) are honoured: masked entries are left out of
the statistics as NaN is, and ``transform``/``inverse_transform`` return a
masked array, masked where ``X`` is.

scikit-learn's callbacks (``sklearn.callback``, scikit-learn >= 1.9):
``set_callbacks`` and one fit task per ``fit``/``partial_fit``, as
scikit-learn's own ``StandardScaler``, so a callback set on a ``Pipeline``
reaches the scalers.  scikit-learn is imported only when callbacks are set.

Unlike scikit-learn, both scalers take ``axis=`` (the axes reduced over) for
N-D data, e.g. ``axis=(0, 2, 3)`` for per-channel statistics of an
``(N, C, H, W)`` image stack.

Differences from scikit-learn, all deliberate:

- fitted statistics are float64 for float32 input too (scikit-learn's
  ``MinMaxScaler`` keeps float32 attributes);
- ``transform`` lets ``inf`` through (it becomes ``inf``/``nan`` in its own
  feature) instead of scanning the input for it; ``fit`` still rejects it
  (found for free in the statistics);
- no sparse input (a clear ``TypeError``), no ``feature_names_in_``.

Dask arrays: ``fit``/``partial_fit`` compute the statistics on the scheduler
in use (one tree of numbanorm's moments, each chunk read once) and keep NumPy
fitted attributes, so ``partial_fit`` works batch by batch on Dask arrays too;
``transform``/``inverse_transform``/``fit_transform`` return lazy Dask arrays
with the input's chunks (``copy=False`` cannot write into a Dask array and is
ignored).  ``sample_weight`` takes NumPy input only.
"""

from __future__ import annotations

import inspect
import math
import numbers
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from ._cache import kernel
from ._config import MIN_TASK_ELEMS
from ._reduce import apply_affine, kept_shape, normalize_axis
from ._stats import constant_feature, variance
from ._validate import masked_as_nan
from .backends.cpu import small
from .backends.cpu._intrinsics import in_place
from .backends.cpu.shortcuts import chan_view
from .streaming import RunningStats

if TYPE_CHECKING:  # annotations only: numpy.typing is not imported at run time
    from numpy.typing import ArrayLike

__all__ = ["MinMaxScaler", "NotFittedError", "StandardScaler"]

# the type of ``self`` in the shared methods that return it (typing.Self needs 3.11)
_S = TypeVar("_S", bound="_BaseScaler")


class NotFittedError(ValueError, AttributeError):
    """Raised when a scaler is used before ``fit`` and scikit-learn is absent.

    With scikit-learn installed, its own ``sklearn.exceptions.NotFittedError``
    (also a ``ValueError`` and ``AttributeError``) is raised instead, so
    ``except ValueError`` (or ``AttributeError``) catches either.

    Examples
    --------
    >>> import numbanorm as nbn
    >>> try:
    ...     nbn.StandardScaler().transform([[1.0]])
    ... except ValueError as e:
    ...     print(type(e).__name__)
    NotFittedError
    """


_INF_MSG = "Input X contains infinity or a value too large for dtype('float64')."


def _not_fitted(est: Any) -> Exception:
    msg = (
        f"This {type(est).__name__} instance is not fitted yet. Call 'fit' with "
        "appropriate arguments before using this estimator."
    )
    try:
        from sklearn.exceptions import NotFittedError as SkNotFittedError
    except ImportError:  # pragma: no cover - sklearn is installed in CI
        return NotFittedError(msg)
    return SkNotFittedError(msg)


@kernel(fastmath=False, error_model="numpy", nogil=True)
def _standard_params(cnt, mean, res, m2, with_std, mean_out, var_out, scale_out):
    """StandardScaler's fitted attributes from a RunningStats state, all (F,)
    float64: the mean (NaN where the count is 0), the biased variance and
    the scale (sqrt(var), 1 for features constant to rounding: scikit-learn's
    _is_constant_feature, ``_stats.constant_feature``).  Returns whether every
    count is the same (n_samples_seen_ is then a scalar).  Serial: O(F)."""
    same = True
    for f in range(cnt.shape[0]):
        n = cnt[f]
        same = same and n == cnt[0]
        m = mean[f] + res[f] if n > 0.0 else math.nan
        mean_out[f] = m
        if with_std:
            v = variance(n, m2[f], 0.0)
            var_out[f] = v
            scale_out[f] = 1.0 if constant_feature(v, m, n) else math.sqrt(v)
    return same


@kernel(fastmath=False, error_model="numpy", nogil=True)
def _minmax_params(cnt, mn, mx, lo, hi, dmin, dmax, drange, scale, shift):
    """MinMaxScaler's fitted attributes from a RunningStats state, all (F,)
    float64: data min/max (NaN where the count is 0), their range, and the
    map ``x * scale + shift`` onto [lo, hi]; a range below 10 float64 eps
    counts as 1 (scikit-learn's _handle_zeros_in_scale).  Serial: O(F)."""
    tiny = 10.0 * np.finfo(np.float64).eps
    for f in range(cnt.shape[0]):
        a = mn[f] if cnt[f] > 0.0 else math.nan
        b = mx[f] if cnt[f] > 0.0 else math.nan
        r = b - a
        dmin[f] = a
        dmax[f] = b
        drange[f] = r
        sc = (hi - lo) / (1.0 if r < tiny else r)
        scale[f] = sc
        shift[f] = lo - a * sc


_NO_ARRAY = np.empty(0)


def _flat_param(p: Any, F: int) -> np.ndarray:
    """A transform parameter (a float or a kept-shape float64 array) as the
    (F,) float64 array the serial kernel takes."""
    if type(p) is np.ndarray and p.dtype == np.float64 and p.size == F and p.flags.c_contiguous:
        return p.reshape(F)
    return np.ascontiguousarray(np.broadcast_to(np.asarray(p, dtype=np.float64).reshape(-1), (F,)))


def _is_sparse(X: Any) -> bool:
    mod = type(X).__module__ or ""
    return mod.startswith("scipy.sparse") or (hasattr(X, "tocsr") and hasattr(X, "nnz"))


class _BaseScaler:
    """Parameters, cloning, tags and validation shared by the scalers."""

    # -- scikit-learn estimator API (duck-typed) -----------------------------

    @classmethod
    def _get_param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return sorted(p.name for p in sig.parameters.values() if p.name != "self")

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Return the constructor parameters of this estimator, by name.

        The names are those of ``__init__`` (sorted); the values are the
        current attributes, as scikit-learn's ``clone`` and ``Pipeline``
        expect.

        Parameters
        ----------
        deep : bool, default True
            Accepted for scikit-learn compatibility; there are no
            sub-estimators, so it changes nothing.

        Returns
        -------
        dict of str to object
            Parameter names mapped to their values.

        Examples
        --------
        >>> import numbanorm as nbn
        >>> nbn.StandardScaler(with_mean=False).get_params()
        {'axis': 0, 'copy': True, 'with_mean': False, 'with_std': True}
        """
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self: _S, **params: Any) -> _S:
        """Set constructor parameters by name; returns self.

        Only the names are checked here; the values are checked when they are
        used (at fit or transform time), as in scikit-learn.  Fitted
        attributes are left as they are: call :meth:`fit` again.

        Parameters
        ----------
        **params
            New values of parameters named as in ``__init__``.

        Returns
        -------
        self
            The estimator, so calls can be chained.

        Raises
        ------
        ValueError
            A name is not a parameter of this estimator.

        Examples
        --------
        >>> import numbanorm as nbn
        >>> nbn.StandardScaler().set_params(with_mean=False, axis=(0, 2))
        StandardScaler(with_mean=False, axis=(0, 2))
        """
        valid = self._get_param_names()
        for key, value in params.items():
            if key not in valid:
                raise ValueError(
                    f"Invalid parameter {key!r} for estimator {self}. Valid parameters are: {valid!r}."
                )
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        sig = inspect.signature(type(self).__init__)
        shown = []
        for p in sig.parameters.values():
            if p.name == "self":
                continue
            v = getattr(self, p.name)
            default = p.default
            try:
                same = v is default or (type(v) is type(default) and bool(v == default))
            except Exception:
                same = False
            if not same:
                shown.append(f"{p.name}={v!r}")
        return f"{type(self).__name__}({', '.join(shown)})"

    def __sklearn_tags__(self) -> Any:
        """scikit-learn tags (imports scikit-learn, so only called by it)."""
        from sklearn.utils import InputTags, Tags, TargetTags, TransformerTags

        return Tags(
            estimator_type=None,
            target_tags=TargetTags(required=False),
            transformer_tags=TransformerTags(preserves_dtype=["float64", "float32"]),
            input_tags=InputTags(allow_nan=True, sparse=False),
        )

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "n_samples_seen_")

    # -- scikit-learn's callbacks (sklearn.callback, scikit-learn >= 1.9) -------

    def set_callbacks(self: _S, *callbacks: Any) -> _S:
        """Set scikit-learn callbacks (``sklearn.callback``) run while fitting; returns self.

        scikit-learn's callback protocol (scikit-learn >= 1.9, which is
        imported here: it stays optional otherwise).  Each :meth:`fit` or
        :meth:`partial_fit` call is one fit task: the callbacks' ``setup``,
        ``on_fit_task_begin``, ``on_fit_task_end`` (``fitted_estimator`` is
        a copy of the fitted scaler) and ``teardown`` hooks are called once,
        as for scikit-learn's ``StandardScaler``.  Callbacks set on a
        meta-estimator (e.g. a progress bar on a ``Pipeline``) reach the
        scalers the same way.  No argument removes the callbacks.

        Parameters
        ----------
        *callbacks : sklearn.callback.FitCallback
            Callback instances.

        Returns
        -------
        self
            The estimator, so calls can be chained.

        Raises
        ------
        TypeError
            A callback does not follow scikit-learn's ``FitCallback``
            protocol.
        ImportError
            scikit-learn (>= 1.9, with ``sklearn.callback``) is not installed.

        Examples
        --------
        >>> import numbanorm as nbn
        >>> class Report:  # a FitCallback: these four hooks
        ...     def setup(self, estimator, context): pass
        ...     def teardown(self, estimator, context): pass
        ...     def on_fit_task_begin(self, estimator, context, **kw): pass
        ...     def on_fit_task_end(self, estimator, context, *, fitted_estimator=None):
        ...         print("fitted", fitted_estimator.mean_)
        >>> _ = nbn.StandardScaler().set_callbacks(Report()).fit([[1.0], [3.0]])
        fitted [2.]
        """
        try:
            from sklearn.callback import CallbackSupportMixin
        except ImportError:
            raise ImportError(
                "set_callbacks needs scikit-learn >= 1.9 (sklearn.callback), which is not installed"
            ) from None
        return CallbackSupportMixin.set_callbacks(self, *callbacks)

    def _callbacks_active(self) -> bool:
        # callbacks set on this scaler, or a meta-estimator's context to join
        d = self.__dict__
        return "_skl_callbacks" in d or "_parent_callback_ctx" in d

    def _fit_task(self: _S, fit: Any, X: Any, y: Any, sample_weight: Any = None) -> _S:
        """Run ``fit(X, y, sample_weight)`` as one task of scikit-learn's
        callback protocol (its own CallbackSupportMixin and with_callbacks:
        setup, task begin and end, teardown even when fit raises)."""
        from sklearn.callback import CallbackSupportMixin, with_callbacks

        def task(est: Any) -> Any:
            ctx = CallbackSupportMixin._init_callback_context(est)
            meta = {"sample_weight": sample_weight}
            ctx.call_on_fit_task_begin(estimator=est, X=X, y=y, metadata=meta)
            fit(X, y, sample_weight)
            ctx.call_on_fit_task_end(estimator=est, X=X, y=y, metadata=meta, reconstruction_attributes={})
            return est

        return with_callbacks(task)(self)

    def _check_is_fitted(self) -> None:
        if not self.__sklearn_is_fitted__():
            raise _not_fitted(self)

    def fit_transform(self, X: ArrayLike, y: Any = None, **fit_params: Any) -> np.ndarray:
        """Fit to ``X`` from scratch, then transform it.

        Equivalent to ``self.fit(X, y, **fit_params).transform(X)``.

        Parameters
        ----------
        X : array_like
            Data, at least 2-D.
        y : None
            Ignored (scikit-learn API).
        **fit_params
            Passed to :meth:`fit` (``sample_weight`` for
            :class:`StandardScaler`).

        Returns
        -------
        ndarray
            The transformed ``X``: same shape, same dtype for float16/32/64
            input, float64 otherwise.

        Raises
        ------
        ValueError, TypeError
            As :meth:`fit`.

        Examples
        --------
        >>> import numbanorm as nbn
        >>> nbn.StandardScaler().fit_transform([[1.0], [3.0]])
        array([[-1.],
               [ 1.]])
        """
        return self.fit(X, y, **fit_params).transform(X)

    def get_feature_names_out(self, input_features: ArrayLike | None = None) -> np.ndarray:
        """Return the output feature names: the input's, ``x0``, ``x1``, ... by default.

        Features are counted over the flattened kept shape
        (``n_features_in_`` of them).

        Parameters
        ----------
        input_features : array_like of str, optional
            Names of the input features, returned as they are.

        Returns
        -------
        ndarray of object
            One name per feature.

        Raises
        ------
        ValueError
            ``input_features`` does not have ``n_features_in_`` names, or the
            estimator is not fitted (:class:`NotFittedError`).

        Examples
        --------
        >>> import numbanorm as nbn
        >>> nbn.StandardScaler().fit([[1.0, 2.0], [3.0, 4.0]]).get_feature_names_out()
        array(['x0', 'x1'], dtype=object)
        """
        self._check_is_fitted()
        n = self.n_features_in_
        if input_features is None:
            return np.asarray([f"x{i}" for i in range(n)], dtype=object)
        names = np.asarray(input_features, dtype=object)
        if len(names) != n:
            raise ValueError(
                f"input_features should have length equal to number of features ({n}), got {len(names)}"
            )
        return names

    # -- validation --------------------------------------------------------------

    def _validate(self, X: Any, *, reset: bool) -> tuple[np.ndarray, tuple[int, ...]]:
        """Return (x, axes): ``x`` a float ndarray, ``axes`` normalized.

        ``reset`` records the kept shape (first fit); otherwise the kept shape
        must match the fitted one.
        """
        name = type(self).__name__
        if type(X).__module__.startswith("dask."):
            return self._validate_dask(X, reset=reset)
        if _is_sparse(X):
            raise TypeError(f"{name} does not support sparse input: pass a dense array (e.g. X.toarray()).")
        if isinstance(X, np.ma.MaskedArray):
            # masked entries are left out of the statistics like NaN (a copy)
            return self._check_shapes(masked_as_nan(X, "X")[0], reset=reset)
        x = np.asarray(X)
        if x.dtype.kind == "O":
            x = x.astype(np.float64)  # TypeError for non-numbers, as np.asarray(float)
        return self._check_shapes(x, reset=reset)

    def _validate_dask(self, X: Any, *, reset: bool) -> tuple[Any, tuple[int, ...]]:
        """_validate for a Dask array: the same checks on its dtype and shape
        (nothing is computed); the data stays a lazy Dask array."""
        from .backends import dask as dask_backend

        if not dask_backend.is_dask_array(X):
            raise TypeError(f"{type(self).__name__}: expected a dask.array.Array, got {type(X).__name__}")
        if any(isinstance(n, float) and math.isnan(n) for n in X.shape):
            raise ValueError(f"X has unknown chunk sizes (shape {X.shape}): call X.compute_chunk_sizes()")
        return self._check_shapes(X, reset=reset)

    def _check_shapes(self, x: Any, *, reset: bool) -> tuple[Any, tuple[int, ...]]:
        name = type(self).__name__
        dt = np.dtype(x.dtype)
        if dt.kind == "c":
            raise ValueError(f"Complex data not supported\n{x}\n")
        if dt.kind not in "fiub":
            raise TypeError(f"{name}: unsupported dtype {x.dtype}")
        if dt.kind != "f" or dt.itemsize > 8:
            x = x.astype(np.float64)
        if x.ndim < 2:
            raise ValueError(
                f"Expected 2D array, got {x.ndim}D array instead:\narray={x}.\n"
                "Reshape your data either using array.reshape(-1, 1) if your data has a "
                "single feature or array.reshape(1, -1) if it contains a single sample."
            )
        axes = normalize_axis(self.axis, x.ndim)
        kshape = kept_shape(x.shape, axes)
        n_samples = math.prod(x.shape[a] for a in axes)
        if n_samples == 0:
            raise ValueError(
                f"Found array with 0 sample(s) (shape={x.shape}) while a minimum of 1 is required by {name}."
            )
        if math.prod(kshape) == 0:
            raise ValueError(
                f"Found array with 0 feature(s) (shape={x.shape}) while a minimum of 1 is required by {name}."
            )
        if reset:
            self._kshape = kshape
            self.n_features_in_ = math.prod(kshape)
        elif kshape != self._kshape:
            if len(kshape) == 1 and len(self._kshape) == 1:
                raise ValueError(
                    f"X has {kshape[0]} features, but {name} is expecting "
                    f"{self._kshape[0]} features as input."
                )
            raise ValueError(
                f"X has kept shape {kshape} (shape {x.shape} reduced over axis={axes}), "
                f"but {name} was fitted on kept shape {self._kshape}."
            )
        return x, axes

    def _fold(self, x: Any, axes: tuple[int, ...], minmax: bool, sample_weight: Any = None) -> None:
        """Fold one validated batch into ``self._rs`` (made on the first
        batch); ``inf`` is rejected before anything is merged.  A small NumPy
        batch is folded by one serial kernel; others get the batch's own
        RunningStats (parallel kernels, Dask, weights), checked, then merged."""
        first = "_rs" not in self.__dict__
        if sample_weight is None and isinstance(x, np.ndarray) and 0 < x.size <= MIN_TASK_ELEMS:
            rs = RunningStats(minmax=minmax) if first else self._rs
            rs._check_shape(self._kshape, "X")
            if not rs._fold_small(x, axes, True):
                raise ValueError(_INF_MSG)
            self._rs = rs
            return
        rs = RunningStats(minmax=minmax).update(x, axes, sample_weight=sample_weight)
        probe = (rs.min, rs.max) if minmax else (rs.mean,)
        seen = rs.count > 0
        for p in probe:
            if not np.all(np.isfinite(p[seen])):
                raise ValueError(_INF_MSG)
        if first:
            self._rs = rs
        else:
            self._rs.merge(rs)

    def _affine(self, X: Any, copy: bool | None, center, scale, shift, lo=None, hi=None) -> np.ndarray:
        """Validate ``X`` against the fit and return clip((X - center) * scale + shift)."""
        self._check_is_fitted()
        x, axes = self._validate(X, reset=False)
        if type(x).__module__.startswith("dask."):
            # lazy: one output task per chunk (copy=False cannot write a Dask array)
            from .backends import dask as dask_backend

            return dask_backend.apply_params(x, axes, center, scale, shift, lo=lo, hi=hi)
        copy = self.copy if copy is None else copy
        inplace = not copy and x is X and x.flags.writeable
        out = x if inplace else np.empty_like(x)
        if x.size <= MIN_TASK_ELEMS:
            self._apply_small(x, axes, out, center, scale, shift, lo, hi)
        else:
            apply_affine(x, axes, center, scale, shift, out=out, lo=lo, hi=hi)
        if isinstance(X, np.ma.MaskedArray):
            return np.ma.MaskedArray(out, mask=np.ma.getmaskarray(X).copy(), copy=False)
        return out

    def _apply_small(self, x, axes, out, center, scale, shift, lo, hi) -> None:
        """out = clip((x - center) * scale + shift) for a small x, by one
        serial kernel (``small.channel_apply``: formed in float64, rounded
        once) on x's (A, C, S) view, or on a copy with the reduced axes first
        whose result goes back through the same transpose."""
        F = math.prod(self._kshape)
        ps = [_flat_param(p, F) for p in (center, scale, shift)]
        clip = lo is not None
        lo, hi = (float(lo), float(hi)) if clip else (0.0, 0.0)
        xw = x.astype(np.float32) if x.dtype == np.float16 else x  # no float16 arithmetic in numba
        v = chan_view(x.shape, axes) if xw.flags.c_contiguous else None
        if v is not None:
            x3 = xw.reshape(v)
            if out.dtype == xw.dtype and out.flags.c_contiguous:  # (out may be x: elementwise, safe)
                apply = small.channel_apply_in_place if in_place(xw, out) else small.channel_apply
                apply(x3, out.reshape(v), *ps, clip, lo, hi)
            else:
                y3 = np.empty_like(x3)
                small.channel_apply(x3, y3, *ps, clip, lo, hi)
                out[...] = y3.reshape(x.shape)
            return
        order = [*axes, *(a for a in range(x.ndim) if a not in axes)]
        xt = np.ascontiguousarray(xw.transpose(order))
        x3 = xt.reshape(-1, F, 1)
        y3 = np.empty_like(x3)
        small.channel_apply(x3, y3, *ps, clip, lo, hi)
        out.transpose(order)[...] = y3.reshape(xt.shape)


class StandardScaler(_BaseScaler):
    """Standardize features: ``z = (x - mean_) / scale_``, scikit-learn style.

    Statistics are per feature, where a feature is an index of the input's
    shape without the ``axis`` axes (the columns of a 2-D array by default).
    They are accumulated in float64 by :class:`~numbanorm.RunningStats`
    (exact per-batch moments, Chan merges between batches), so
    :meth:`partial_fit` over batches equals :meth:`fit` on their
    concatenation.  NaN is ignored when fitting (per-feature counts) and kept
    by ``transform``; infinity is rejected by ``fit``.  Near-constant features
    (variance within rounding of 0, scikit-learn's test) get ``scale_`` 1.
    ``transform`` keeps float16/32/64 dtypes and returns float64 for other
    input.  A masked array (``numpy.ma``) is honoured: masked entries are
    left out of the statistics like NaN, and ``transform`` and
    ``inverse_transform`` return a masked array, masked where ``X`` is.

    Parameters
    ----------
    with_mean : bool, default True
        Center the data before scaling.
    with_std : bool, default True
        Scale the data to unit variance (biased, ``ddof=0``, variance).
    copy : bool, default True
        False lets ``transform`` work in place when the input is a writable
        float array (otherwise a new array is returned anyway).
    axis : int or tuple of int, default 0
        The axes reduced over.  ``axis=(0, 2, 3)`` gives per-channel
        statistics of an ``(N, C, H, W)`` stack.

    Attributes
    ----------
    mean_ : ndarray of the kept shape, float64, or None
        Per-feature mean (None when ``with_mean=False`` and ``with_std=False``).
    var_ : ndarray of the kept shape, float64, or None
        Per-feature biased variance (None when ``with_std=False``).
    scale_ : ndarray of the kept shape, float64, or None
        ``sqrt(var_)``, 1 for near-constant features (None when
        ``with_std=False``).
    n_samples_seen_ : numpy scalar or ndarray
        Per-feature number of non-NaN values (sum of weights with
        ``sample_weight``), a scalar when every feature has the same count.
        float64, except int64 when ``with_mean=False`` and ``with_std=False``
        (scikit-learn 1.9's types).
    n_features_in_ : int
        Number of features (product of the kept shape).

    See Also
    --------
    MinMaxScaler, numbanorm.standardize, numbanorm.RunningStats

    References
    ----------
    .. [1] T. F. Chan, G. H. Golub, R. J. LeVeque, "Algorithms for computing
       the sample variance: analysis and recommendations", The American
       Statistician 37(3), 1983.
    .. [2] D. H. D. West, "Updating mean and variance estimates: an improved
       method", Communications of the ACM 22(9), 1979.

    Examples
    --------
    >>> import numpy as np
    >>> import numbanorm as nbn
    >>> X = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
    >>> sc = nbn.StandardScaler().fit(X)
    >>> sc.mean_, sc.var_
    (array([0.5, 0.5]), array([0.25, 0.25]))
    >>> sc.transform([[2.0, 2.0]])
    array([[3., 3.]])

    Per-channel statistics of an image stack:

    >>> imgs = np.random.default_rng(0).normal(size=(8, 3, 4, 4)).astype(np.float32)
    >>> sc = nbn.StandardScaler(axis=(0, 2, 3)).fit(imgs)
    >>> sc.mean_.shape, sc.transform(imgs).dtype
    ((3,), dtype('float32'))
    """

    def __init__(
        self,
        with_mean: bool = True,
        with_std: bool = True,
        copy: bool = True,
        *,
        axis: int | tuple[int, ...] = 0,
    ) -> None:
        self.with_mean = with_mean
        self.with_std = with_std
        self.copy = copy
        self.axis = axis

    def _reset(self) -> None:
        for k in (
            "n_samples_seen_",
            "mean_",
            "var_",
            "scale_",
            "n_features_in_",
            "_rs",
            "_kshape",
            "_n_total",
        ):
            self.__dict__.pop(k, None)

    def fit(self, X: ArrayLike, y: Any = None, sample_weight: ArrayLike | None = None) -> StandardScaler:
        """Compute the per-feature mean and variance of ``X``, from scratch.

        Forgets any earlier fit, then calls :meth:`partial_fit`.  NaN values
        are left out of the statistics.

        Parameters
        ----------
        X : array_like
            Data, at least 2-D, of a float, integer or bool dtype (object
            arrays of numbers too); statistics are taken over ``axis``.
        y : None
            Ignored (scikit-learn API).
        sample_weight : array_like of shape (X.shape[0],) or scalar, optional
            Finite, non-negative weight of each sample (index of axis 0,
            which must then be reduced), not all zero.  Counts become sums of
            weights, as in scikit-learn.

        Returns
        -------
        StandardScaler
            ``self``, fitted.

        Raises
        ------
        ValueError
            ``X`` has fewer than 2 dimensions, no sample or no feature,
            contains infinity or complex numbers; ``axis`` is out of range;
            ``sample_weight`` has the wrong shape, bad values or is all zero.
        TypeError
            Sparse input, or a dtype that is not numeric.

        Examples
        --------
        >>> import numbanorm as nbn
        >>> sc = nbn.StandardScaler().fit([[1.0, 2.0], [3.0, 4.0]], sample_weight=[1, 3])
        >>> sc.mean_, float(sc.n_samples_seen_)
        (array([2.5, 3.5]), 4.0)
        """
        self._reset()
        return self.partial_fit(X, y, sample_weight)

    def partial_fit(
        self, X: ArrayLike, y: Any = None, sample_weight: ArrayLike | None = None
    ) -> StandardScaler:
        """Fold a batch into the statistics (Chan, Golub & LeVeque's parallel formula).

        Equivalent to fitting on the concatenation of every batch seen since
        the last :meth:`fit` (or since construction).  The fitted attributes
        are recomputed after each batch.  The first batch fixes the kept
        shape; later batches must have the same.

        Parameters
        ----------
        X : array_like
            A batch, at least 2-D; statistics are taken over ``axis``.
        y : None
            Ignored (scikit-learn API).
        sample_weight : array_like of shape (X.shape[0],) or scalar, optional
            As in :meth:`fit`.

        Returns
        -------
        StandardScaler
            ``self``, fitted.

        Raises
        ------
        ValueError
            As :meth:`fit`, and a kept shape different from the first
            batch's.  A rejected batch leaves the statistics unchanged.
        TypeError
            As :meth:`fit`.

        Examples
        --------
        >>> import numpy as np
        >>> import numbanorm as nbn
        >>> X = np.arange(20.0).reshape(10, 2)
        >>> sc = nbn.StandardScaler()
        >>> for batch in np.array_split(X, 3):
        ...     _ = sc.partial_fit(batch)
        >>> bool(np.allclose(sc.var_, X.var(axis=0)))
        True
        """
        if self._callbacks_active():
            return self._fit_task(self._partial_fit, X, y, sample_weight)
        return self._partial_fit(X, y, sample_weight)

    def _partial_fit(self, X: Any, y: Any, sample_weight: Any) -> StandardScaler:
        first = not hasattr(self, "n_samples_seen_")
        x, axes = self._validate(X, reset=first)
        sw = None
        if sample_weight is not None:
            sw = _check_sample_weight(sample_weight, x.shape[0])
        self._fold(x, axes, False, sw)
        n = math.prod(x.shape[a] for a in axes)
        self._n_total = n if first else self._n_total + n
        self._finalize()
        return self

    def _finalize(self) -> None:
        rs = self._rs
        if not self.with_mean and not self.with_std:
            # scikit-learn counts non-NaN values (unweighted, int64) in this case
            counts = self._n_total - rs.nan_count
            flat = counts.reshape(-1)
            self.n_samples_seen_ = flat[0] if flat.min() == flat.max() else counts
            self.mean_ = None
            self.var_ = None
            self.scale_ = None
            return
        # counts: float64, sums of weights when weighted (as sklearn)
        F, k = rs._cnt.shape[0], rs._shape
        mean = np.empty(F)
        var, scale = (np.empty(F), np.empty(F)) if self.with_std else (_NO_ARRAY, _NO_ARRAY)
        same = _standard_params(rs._cnt, rs._mean, rs._res, rs._m2, bool(self.with_std), mean, var, scale)
        self.n_samples_seen_ = rs._cnt[0] if same else rs._cnt.reshape(k).copy()
        self.mean_ = mean.reshape(k)
        self.var_ = var.reshape(k) if self.with_std else None
        self.scale_ = scale.reshape(k) if self.with_std else None

    def transform(self, X: ArrayLike, copy: bool | None = None) -> np.ndarray:
        """Standardize ``X`` with the fitted statistics; NaN stays NaN.

        Computes ``(X - mean_) / scale_`` (without the centering when
        ``with_mean=False``, without the scaling when ``with_std=False``) in
        one parallel pass, in float64, stored in ``X``'s float dtype.
        Infinity passes through (it is not scanned for).  With ``copy=False``
        and a writable float16/32/64 ndarray ``X``, ``X`` is overwritten and
        returned; otherwise a new array is returned.

        Parameters
        ----------
        X : array_like
            At least 2-D, with the same kept shape as the fitted data.
        copy : bool, optional
            Overrides ``self.copy`` for this call.

        Returns
        -------
        ndarray
            Same shape as ``X``; same dtype for float16/32/64 input, float64
            otherwise.

        Raises
        ------
        NotFittedError
            The scaler is not fitted (a ``ValueError``).
        ValueError
            ``X``'s kept shape differs from the fitted one, or ``X`` is
            invalid as in :meth:`fit`.
        TypeError
            Sparse input, or a dtype that is not numeric.

        Examples
        --------
        >>> import numpy as np
        >>> import numbanorm as nbn
        >>> sc = nbn.StandardScaler().fit([[1.0], [3.0]])
        >>> sc.transform(np.array([[2.0], [np.nan], [5.0]], dtype=np.float32))
        array([[ 0.],
               [nan],
               [ 3.]], dtype=float32)
        """
        self._check_is_fitted()
        center = self.mean_ if self.with_mean else 0.0
        scale = 1.0 / self.scale_ if self.with_std else 1.0
        return self._affine(X, copy, center, scale, 0.0)

    def inverse_transform(self, X: ArrayLike, copy: bool | None = None) -> np.ndarray:
        """Undo :meth:`transform`: ``X * scale_ + mean_``.

        Each factor is left out when its option (``with_std``,
        ``with_mean``) is off.  Dtypes, NaN and ``copy`` behave as in
        :meth:`transform`.

        Parameters
        ----------
        X : array_like
            Standardized data, at least 2-D, with the fitted kept shape.
        copy : bool, optional
            Overrides ``self.copy`` for this call.

        Returns
        -------
        ndarray
            Same shape as ``X``; same dtype for float16/32/64 input, float64
            otherwise.

        Raises
        ------
        NotFittedError, ValueError, TypeError
            As :meth:`transform`.

        Examples
        --------
        >>> import numbanorm as nbn
        >>> sc = nbn.StandardScaler().fit([[1.0], [3.0]])
        >>> sc.inverse_transform([[-1.0], [3.0]])
        array([[1.],
               [5.]])
        """
        self._check_is_fitted()
        scale = self.scale_ if self.with_std else 1.0
        shift = self.mean_ if self.with_mean else 0.0
        return self._affine(X, copy, 0.0, scale, shift)


class MinMaxScaler(_BaseScaler):
    """Scale features to ``feature_range`` from their min and max, scikit-learn style.

    ``X_scaled = X * scale_ + min_`` with
    ``scale_ = (hi - lo) / (data_max_ - data_min_)`` and
    ``min_ = lo - data_min_ * scale_``.  Features whose range is (within
    rounding of) 0 get ``scale_ = hi - lo``.  Statistics are per feature
    (an index of the input's shape without the ``axis`` axes), float64,
    folded batch by batch by :class:`~numbanorm.RunningStats`.  NaN is
    ignored when fitting and kept by ``transform``; infinity is rejected by
    ``fit``.  ``transform`` keeps float16/32/64 dtypes and returns float64
    for other input.  A masked array (``numpy.ma``) is honoured as by
    :class:`StandardScaler`: masked entries are left out like NaN and the
    outputs are masked where ``X`` is.

    Parameters
    ----------
    feature_range : tuple (lo, hi), default (0, 1)
        Desired range of the transformed data; ``lo < hi`` (checked when
        fitting, and by ``transform`` when ``clip``).
    clip : bool, default False
        Clip transformed values to ``feature_range`` (for data outside the
        fitted range).
    copy : bool, default True
        False lets ``transform`` work in place when the input is a writable
        float array.
    axis : int or tuple of int, default 0
        The axes reduced over.

    Attributes
    ----------
    data_min_, data_max_, data_range_ : ndarray of the kept shape, float64
        Per-feature minimum, maximum and their difference (NaN ignored).
    scale_, min_ : ndarray of the kept shape, float64
        The affine map applied by :meth:`transform`.
    n_samples_seen_ : int
        Number of samples (values per feature, NaN included) seen.
    n_features_in_ : int
        Number of features (product of the kept shape).

    See Also
    --------
    StandardScaler, numbanorm.minmax_scale

    Examples
    --------
    >>> import numpy as np
    >>> import numbanorm as nbn
    >>> X = np.array([[-1.0, 2.0], [-0.5, 6.0], [0.0, 10.0], [1.0, 18.0]])
    >>> sc = nbn.MinMaxScaler().fit(X)
    >>> sc.data_max_
    array([ 1., 18.])
    >>> sc.transform(X)
    array([[0.  , 0.  ],
           [0.25, 0.25],
           [0.5 , 0.5 ],
           [1.  , 1.  ]])
    >>> sc.transform([[2.0, 2.0]])
    array([[1.5, 0. ]])
    """

    def __init__(
        self,
        feature_range: tuple[float, float] = (0, 1),
        clip: bool = False,
        copy: bool = True,
        *,
        axis: int | tuple[int, ...] = 0,
    ) -> None:
        self.feature_range = feature_range
        self.clip = clip
        self.copy = copy
        self.axis = axis

    def _reset(self) -> None:
        for k in (
            "n_samples_seen_", "data_min_", "data_max_", "data_range_", "scale_", "min_",
            "n_features_in_", "_rs", "_kshape",
        ):  # fmt: skip
            self.__dict__.pop(k, None)

    def _range(self) -> tuple[float, float]:
        fr = self.feature_range
        try:
            lo, hi = (float(v) for v in fr)
        except (TypeError, ValueError):
            raise ValueError(f"feature_range must be a pair (min, max), got {fr!r}") from None
        if not lo < hi:
            raise ValueError(f"Minimum of desired feature range must be smaller than maximum. Got {fr}.")
        return lo, hi

    def fit(self, X: ArrayLike, y: Any = None) -> MinMaxScaler:
        """Compute the per-feature min and max of ``X``, from scratch; returns self.

        Forgets any earlier fit, then calls :meth:`partial_fit`.  NaN values
        are left out of the min and max.

        Parameters
        ----------
        X : array_like
            Data, at least 2-D, of a float, integer or bool dtype (object
            arrays of numbers too); statistics are taken over ``axis``.
        y : None
            Ignored (scikit-learn API).

        Returns
        -------
        MinMaxScaler
            ``self``, fitted.

        Raises
        ------
        ValueError
            ``feature_range`` is not a pair with ``lo < hi``; ``X`` has fewer
            than 2 dimensions, no sample or no feature, contains infinity or
            complex numbers; ``axis`` is out of range.
        TypeError
            Sparse input, or a dtype that is not numeric.

        Examples
        --------
        >>> import numbanorm as nbn
        >>> sc = nbn.MinMaxScaler().fit([[1.0, -2.0], [3.0, 2.0]])
        >>> sc.scale_, sc.min_
        (array([0.5 , 0.25]), array([-0.5,  0.5]))
        """
        self._reset()
        return self.partial_fit(X, y)

    def partial_fit(self, X: ArrayLike, y: Any = None) -> MinMaxScaler:
        """Fold a batch into the per-feature min and max; returns self.

        Equivalent to fitting on the concatenation of every batch seen since
        the last :meth:`fit` (or since construction); the fitted attributes
        are recomputed after each batch.  ``n_samples_seen_`` grows by the
        number of values per feature in the batch, NaN included.

        Parameters
        ----------
        X : array_like
            A batch, at least 2-D, with the kept shape of the first batch.
        y : None
            Ignored (scikit-learn API).

        Returns
        -------
        MinMaxScaler
            ``self``, fitted.

        Raises
        ------
        ValueError
            As :meth:`fit`, and a kept shape different from the first
            batch's.  A rejected batch leaves the statistics unchanged.
        TypeError
            As :meth:`fit`.

        Examples
        --------
        >>> import numpy as np
        >>> import numbanorm as nbn
        >>> sc = nbn.MinMaxScaler(feature_range=(-1, 1))
        >>> sc = sc.partial_fit([[0.0], [2.0]]).partial_fit([[4.0]])
        >>> sc.data_min_, sc.data_max_, sc.n_samples_seen_
        (array([0.]), array([4.]), 3)
        """
        if self._callbacks_active():
            return self._fit_task(self._partial_fit, X, y)
        return self._partial_fit(X, y)

    def _partial_fit(self, X: Any, y: Any, sample_weight: Any = None) -> MinMaxScaler:
        lo, hi = self._range()
        first = not hasattr(self, "n_samples_seen_")
        x, axes = self._validate(X, reset=first)
        self._fold(x, axes, True)
        n = math.prod(x.shape[a] for a in axes)
        self.n_samples_seen_ = n if first else self.n_samples_seen_ + n
        rs = self._rs
        F, k = rs._cnt.shape[0], rs._shape
        dmin, dmax, drange, scale, shift = (np.empty(F) for _ in range(5))
        # (scikit-learn's _handle_zeros_in_scale: a range below 10 eps counts as 1)
        _minmax_params(rs._cnt, rs._mn, rs._mx, lo, hi, dmin, dmax, drange, scale, shift)
        self.data_min_ = dmin.reshape(k)
        self.data_max_ = dmax.reshape(k)
        self.data_range_ = drange.reshape(k)
        self.scale_ = scale.reshape(k)
        self.min_ = shift.reshape(k)
        return self

    def transform(self, X: ArrayLike) -> np.ndarray:
        """Scale ``X`` to ``feature_range`` (clipped when ``clip``); NaN stays NaN.

        Computes ``X * scale_ + min_`` (as ``(X - data_min_) * scale_ + lo``,
        without cancellation) in one parallel pass, in float64,
        stored in ``X``'s float dtype; values outside the fitted range land
        outside ``feature_range`` unless ``clip``.  Infinity passes through.
        With ``copy=False`` and a writable float16/32/64 ndarray ``X``, ``X``
        is overwritten and returned; otherwise a new array is returned.

        Parameters
        ----------
        X : array_like
            At least 2-D, with the same kept shape as the fitted data.

        Returns
        -------
        ndarray
            Same shape as ``X``; same dtype for float16/32/64 input, float64
            otherwise.

        Raises
        ------
        NotFittedError
            The scaler is not fitted (a ``ValueError``).
        ValueError
            ``X``'s kept shape differs from the fitted one, ``X`` is invalid
            as in :meth:`fit`, or (with ``clip``) ``feature_range`` is invalid.
        TypeError
            Sparse input, or a dtype that is not numeric.

        Examples
        --------
        >>> import numbanorm as nbn
        >>> sc = nbn.MinMaxScaler(clip=True).fit([[0.0], [4.0]])
        >>> sc.transform([[1.0], [8.0]])
        array([[0.25],
               [1.  ]])
        """
        self._check_is_fitted()
        lo, hi = self._range() if self.clip else (None, None)
        return self._affine(X, None, self.data_min_, self.scale_, self._lo(), lo, hi)

    def inverse_transform(self, X: ArrayLike) -> np.ndarray:
        """Undo :meth:`transform`: ``(X - min_) / scale_``.

        Clipping is not undone.  Dtypes, NaN and ``copy`` behave as in
        :meth:`transform`.

        Parameters
        ----------
        X : array_like
            Scaled data, at least 2-D, with the fitted kept shape.

        Returns
        -------
        ndarray
            Same shape as ``X``; same dtype for float16/32/64 input, float64
            otherwise.

        Raises
        ------
        NotFittedError, ValueError, TypeError
            As :meth:`transform`.

        Examples
        --------
        >>> import numbanorm as nbn
        >>> sc = nbn.MinMaxScaler(feature_range=(-1, 1)).fit([[0.0], [4.0]])
        >>> sc.inverse_transform([[-1.0], [0.5]])
        array([[0.],
               [3.]])
        """
        self._check_is_fitted()
        return self._affine(X, None, self._lo(), 1.0 / self.scale_, self.data_min_)

    def _lo(self) -> np.ndarray:
        """``min_ + data_min_ * scale_`` (lo, to rounding): ``X * scale_ +
        min_`` is computed as ``(X - data_min_) * scale_ + _lo()``, whose
        difference is exact in X's dtype for X near the data (float32 at
        1e5 + randn: ``X * scale_ + min_`` cancels to ~1e-4 absolute error,
        this gives ~1e-7; tests/test_loose_ends.py)."""
        return self.min_ + self.data_min_ * self.scale_


def _check_sample_weight(sample_weight: Any, n_samples: int) -> np.ndarray:
    """scikit-learn's sample-weight rules: scalar or 1-D of length n_samples,
    not all zero."""
    if isinstance(sample_weight, numbers.Number):
        w = np.full(n_samples, float(sample_weight))
    else:
        w = np.asarray(sample_weight, dtype=np.float64)
        if w.ndim != 1:
            raise ValueError(
                f"Sample weights must be 1D array or scalar, got {w.ndim}D array. Expected "
                f"either a scalar value or a 1D array of length {n_samples}."
            )
        if w.shape != (n_samples,):
            raise ValueError(f"sample_weight.shape == {w.shape}, expected {(n_samples,)}!")
    if np.all(w == 0):
        raise ValueError("Sample weights must contain at least one non-zero number.")
    return w
