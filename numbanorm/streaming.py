"""Streaming statistics: per-feature moments folded in chunk by chunk.

:class:`RunningStats` keeps, for every feature (every index of the *kept*
shape: the input's shape without the reduced axes), the float64 triple
``(count, mean, M2)`` plus min, max and the number of NaN seen.  Each
:meth:`RunningStats.update` reduces its chunk with one parallel pass
(``numbanorm._reduce.reduce_moments``: exact two-pass statistics of
cache-resident blocks, Chan merges between them) and folds the chunk's
triples into the state with Chan's pairwise formula (``_stats.chan_merge``).
A chunk of at most ``MIN_TASK_ELEMS`` elements takes one serial kernel
instead (``backends.cpu.small.fold_moments``: the same statistics and merge,
without waking the thread pool, which cost milliseconds per tiny chunk on a
busy machine).
Because every combination is a Chan merge of exact partial moments, the result
does not depend on how the data was split (tests/test_streaming.py::
test_any_split_equals_whole).

Sample weights take a different kernel: a weighted Welford/West update of each
element (``_stats.welford_push``) on per-thread partials, merged with
``chan_merge``.

References
----------
B. P. Welford, "Note on a method for calculating corrected sums of squares and
products", Technometrics 4(3), 1962.
T. F. Chan, G. H. Golub, R. J. LeVeque, "Algorithms for computing the sample
variance: analysis and recommendations", The American Statistician 37(3), 1983.
D. H. D. West, "Updating mean and variance estimates: an improved method",
Communications of the ACM 22(9), 1979.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numba
import numpy as np
from numba import prange

from . import backends
from ._cache import kernel
from ._config import FASTMATH, MIN_TASK_ELEMS
from ._reduce import kept_shape, lane_partials, normalize_axis, reduce_moments
from ._stats import chan_merge, chan_merge_dd, merge_state_at, minmax_merge, variance, welford_push
from ._validate import masked_as_nan, result_dtype
from .backends.cpu import small
from .backends.cpu._intrinsics import min2
from .backends.cpu.shortcuts import chan_view

if TYPE_CHECKING:  # annotations only: numpy.typing is not imported at run time
    from numpy.typing import ArrayLike

__all__ = ["RunningStats"]

_FM = set(FASTMATH)


# --------------------------------------------------------------------------
# kernels
# --------------------------------------------------------------------------


@kernel(nogil=True)
def _merge_into_state(cnt, mean, res, m2, mn, mx, nans, c2, mu2, r2, q2, mn2, mx2, nans2, minmax):
    """Chan-merge chunk moments (``*2``) into the state in place; all (F,).

    Means are carried with their rounding residuals (``mean + res``,
    ``_stats.chan_merge_dd``): any split of the data gives the same M2 to
    ~1e-15 relative, also when the mean is 1e6 times the spread.  Serial:
    O(features) work, far below a parallel launch's cost per chunk.
    """
    for f in range(cnt.shape[0]):
        merge_state_at(f, cnt, mean, res, m2, mn, mx, c2[f], mu2[f], r2[f], q2[f], mn2, mx2, minmax)
        nans[f] += nans2[f]


@kernel(nogil=True)
def _fold_partials(part, n_red, cnt, mean, res, m2, mn, mx, nans, minmax):
    """Fold the statistics tasks' partials part (6, nseg, F) of a chunk of
    n_red values per feature into the state in place (F,): per feature, the
    partials merged in order (``_stats.merge_into``), the mean + residual
    rounded to one float and an empty feature's statistics NaN
    (``_reduce._rounded``), then the state merge of _merge_into_state: the
    arithmetic of reduce_moments and _merge_into_state in their order, in
    one compiled call instead of two (each costs compile time on a first
    call, NOTES.md section 26)."""
    for f in range(cnt.shape[0]):
        n, mu, r, q = 0.0, 0.0, 0.0, 0.0
        lo, hi = math.inf, -math.inf
        for j in range(part.shape[1]):
            pn, pu, pr, pq = part[0, j, f], part[1, j, f], part[2, j, f], part[3, j, f]
            n, mu, r, q = chan_merge_dd(n, mu, r, q, pn, pu, pr, pq)
            if minmax:
                lo, hi = minmax_merge(lo, hi, part[4, j, f], part[5, j, f])
        m_hi = mu + r
        r = (mu - m_hi) + r
        mu = m_hi
        if n == 0.0:
            mu = q = math.nan
            r = 0.0
            lo = hi = math.nan
        part[4, 0, f] = lo  # (merge_state_at reads min/max from arrays)
        part[5, 0, f] = hi
        merge_state_at(f, cnt, mean, res, m2, mn, mx, n, mu, r, q, part[4, 0], part[5, 0], minmax)
        nans[f] += np.int64(n_red - n)


@kernel(nogil=True)
def _finalize_var(cnt, m2, ddof, out):
    """out[f] = M2 / (count - ddof), NaN where count - ddof <= 0; all (F,)."""
    for f in range(cnt.shape[0]):
        out[f] = variance(cnt[f], m2[f], ddof)


@kernel(parallel=True, fastmath=_FM, nogil=True)
def _weighted_moments(x3, w, nsplit):
    """Weighted (count, mean, M2, min, max, nan) of x3 (N, S, F) over N and S.

    ``w`` (N,) weighs each index of axis 0.  Rows are split into ``nsplit``
    contiguous pieces, one per task; each task folds its elements with the
    weighted Welford/West update into its own (F,) partial (no sharing), then
    the partials are Chan-merged serially.  Latency-bound (a division per
    element, ~3 GB/s, FIELD-NOTES) but only used for sample weights.
    """
    N, S, F = x3.shape
    cnt = np.zeros((nsplit, F))
    mean = np.zeros((nsplit, F))
    m2 = np.zeros((nsplit, F))
    mn = np.full((nsplit, F), np.inf)
    mx = np.full((nsplit, F), -np.inf)
    nans = np.zeros((nsplit, F), dtype=np.int64)
    step = (N + nsplit - 1) // nsplit
    for t in prange(nsplit):
        for n in range(t * step, min2(N, (t + 1) * step)):
            wn = w[n]
            for s in range(S):
                for f in range(F):
                    v = np.float64(x3[n, s, f])
                    if v != v:
                        nans[t, f] += 1
                    elif wn != 0.0:
                        cnt[t, f], mean[t, f], m2[t, f] = welford_push(cnt[t, f], mean[t, f], m2[t, f], v, wn)
                        if v < mn[t, f]:
                            mn[t, f] = v
                        if v > mx[t, f]:
                            mx[t, f] = v
    oc = cnt[0].copy()
    om = mean[0].copy()
    oq = m2[0].copy()
    omn = mn[0].copy()
    omx = mx[0].copy()
    onan = nans[0].copy()
    for t in range(1, nsplit):
        for f in range(F):
            oc[f], om[f], oq[f] = chan_merge(oc[f], om[f], oq[f], cnt[t, f], mean[t, f], m2[t, f])
            if mn[t, f] < omn[f]:
                omn[f] = mn[t, f]
            if mx[t, f] > omx[f]:
                omx[f] = mx[t, f]
            onan[f] += nans[t, f]
    return oc, om, oq, omn, omx, onan


# the same kernel without the thread pool, for chunks of at most
# MIN_TASK_ELEMS elements (prange runs as range): waking the pool for tiny
# work cost ~ms on a busy machine (FIELD-NOTES, tests/test_loose_ends.py)
_weighted_moments_serial = kernel(fastmath=_FM, nogil=True)(_weighted_moments.py_func)


def small_view(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """x (non-empty, at most MIN_TASK_ELEMS elements) as the (A, C, S) view
    the serial kernels of ``backends.cpu.small`` take: statistics per C over A
    and S.  No copy when x is a C-contiguous float32/64 array whose kept axes
    are adjacent (2-D data over axis 0: (rows, features, 1)); otherwise a
    copy with the reduced axes first, (R, F, 1) (float16 widened to float32;
    numba has no float16 arithmetic)."""
    if x.dtype == np.float16:
        x = x.astype(np.float32)
    if x.flags.c_contiguous:
        v = chan_view(x.shape, axes)
        if v is not None:
            return x.reshape(v)
    kept = [a for a in range(x.ndim) if a not in axes]
    xt = np.ascontiguousarray(x.transpose([*axes, *kept]))
    R = math.prod(x.shape[a] for a in axes)
    return xt.reshape(R, x.size // R, 1)


# --------------------------------------------------------------------------
# validation helpers (shared with numbanorm.scalers and numbanorm.cli)
# --------------------------------------------------------------------------


def as_float_array(x: Any, name: str = "x") -> Any:
    """Return ``x`` as a float array the statistics kernels take.

    The dtype rule of the whole package (``_validate.result_dtype``):
    float16/32/64 are returned unchanged (no copy), integer and bool data are
    converted to float64 (a copy).  CUDA arrays (anything with
    ``__cuda_array_interface__``) are passed through untouched; everything
    else goes through ``np.asarray``.  Used by :class:`RunningStats`, the
    scalers and the command line.

    Parameters
    ----------
    x : array_like or CUDA array
        The data.
    name : str, default "x"
        Argument name used in error messages.

    Returns
    -------
    ndarray or CUDA array
        ``x`` itself when it is already a float16/32/64 ndarray (or a
        float32/64 CUDA array), else a float64 ndarray.

    A masked array (``numpy.ma``) becomes a new array of its data with NaN
    where it is masked, so that the statistics leave masked entries out as
    they leave NaN out.

    Raises
    ------
    TypeError
        Complex, object, string or other non-numeric dtypes; CUDA arrays
        that are not float32 or float64.

    Examples
    --------
    >>> import numpy as np
    >>> from numbanorm.streaming import as_float_array
    >>> as_float_array([1, 2])
    array([1., 2.])
    >>> as_float_array(np.ones(2, np.float32)).dtype
    dtype('float32')
    """
    if backends.is_cuda_array(x):
        dt = np.dtype(x.dtype)
        if dt not in (np.float32, np.float64):
            raise TypeError(f"{name}: CUDA arrays must be float32 or float64, got {dt}")
        return x
    if isinstance(x, np.ma.MaskedArray):
        return masked_as_nan(x, name)[0]
    a = np.asarray(x)
    dt = result_dtype(a.dtype, name)
    return a if dt == a.dtype else a.astype(dt)


def _nsplit_rows(n: int, elems_per_row: int) -> int:
    want = 4 * numba.get_num_threads()
    by_size = max(1, (n * elems_per_row) // (64 * 1024))
    return int(max(1, min(n, want, by_size)))


# --------------------------------------------------------------------------
# the accumulator
# --------------------------------------------------------------------------


class RunningStats:
    """Per-feature count, mean, variance, min and max over a stream of chunks.

    A feature is an index of the *kept* shape: the input's shape without the
    reduced axes (the columns of a 2-D array with the default ``axis=0``).
    Each :meth:`update` folds one chunk in, in place (one parallel pass over
    the chunk; one serial pass for chunks of at most 32768 elements);
    :meth:`merge` combines two accumulators.  The state is float64
    whatever the input dtype (float16/32/64, integer or bool; NumPy or CUDA
    arrays).  NaN is ignored: every feature has its own count, and
    :attr:`nan_count` says how many NaN it skipped.  Chunked updates in any
    split give the statistics of the concatenated data (to float64 rounding).
    The results are NumPy arrays (copies) of the kept shape.

    Parameters
    ----------
    minmax : bool, default True
        Also track per-feature min and max (a little extra work per chunk).

    Attributes
    ----------
    shape : tuple of int or None
        The kept shape, fixed by the first update (None before).
    count, nan_count, mean, m2, min, max : ndarray of the kept shape
        Per-feature statistics; see the properties of the same name.

    See Also
    --------
    StandardScaler, MinMaxScaler : Estimators built on these statistics.

    Notes
    -----
    A feature's state is the triple ``(n, mean, M2)`` with ``M2`` the sum of
    squared deviations from the mean.  Two triples combine exactly with Chan,
    Golub & LeVeque's formula ``n = na + nb``,
    ``mean = ma + (mb - ma) nb / n``,
    ``M2 = qa + qb + (mb - ma)^2 na nb / n``; the variance is never formed as
    ``E[x^2] - E[x]^2``, so data whose mean is 1e6 times its spread keeps its
    digits.

    References
    ----------
    .. [1] B. P. Welford, Technometrics 4(3), 1962.
    .. [2] T. F. Chan, G. H. Golub, R. J. LeVeque, The American Statistician
       37(3), 1983.
    .. [3] D. H. D. West, Communications of the ACM 22(9), 1979.

    Examples
    --------
    >>> import numpy as np
    >>> import numbanorm as nbn
    >>> x = np.arange(12.0).reshape(6, 2)
    >>> rs = nbn.RunningStats()
    >>> for chunk in (x[:2], x[2:5], x[5:]):
    ...     _ = rs.update(chunk, axis=0)
    >>> rs.count
    array([6., 6.])
    >>> rs.mean
    array([5., 6.])
    >>> np.allclose(rs.var(), x.var(axis=0))
    True
    >>> rs.min, rs.max
    (array([0., 1.]), array([10., 11.]))
    """

    def __init__(self, *, minmax: bool = True) -> None:
        self._minmax = bool(minmax)
        self._shape: tuple[int, ...] | None = None

    # -- state ---------------------------------------------------------------

    def _init_state(self, shape: tuple[int, ...]) -> None:
        size = math.prod(shape)
        self._shape = tuple(shape)
        self._cnt = np.zeros(size)
        self._mean = np.zeros(size)
        self._res = np.zeros(size)
        self._m2 = np.zeros(size)
        self._mn = np.full(size, np.inf)
        self._mx = np.full(size, -np.inf)
        self._nans = np.zeros(size, dtype=np.int64)

    def _check_shape(self, shape: tuple[int, ...], name: str) -> None:
        if self._shape is None:
            self._init_state(shape)
        elif shape != self._shape:
            raise ValueError(
                f"{name}: expected statistics of shape {self._shape} (the kept shape of "
                f"the first update), got {shape}"
            )

    def reset(self) -> RunningStats:
        """Forget everything seen, the kept shape too; returns self.

        The next :meth:`update` may have any kept shape.  Whether min and
        max are tracked is kept as it is.

        Returns
        -------
        RunningStats
            ``self``, now empty.

        Examples
        --------
        >>> import numpy as np
        >>> import numbanorm as nbn
        >>> rs = nbn.RunningStats().update(np.ones((4, 3)))
        >>> rs.reset().shape is None
        True
        >>> rs.update(np.ones((4, 2))).count
        array([4., 4.])
        """
        self._shape = None
        return self

    def copy(self) -> RunningStats:
        """Return an independent copy of this accumulator.

        The copy has its own state arrays: updating either leaves the other
        unchanged.

        Returns
        -------
        RunningStats
            A new accumulator with the same statistics and ``minmax`` setting.

        Examples
        --------
        >>> import numpy as np
        >>> import numbanorm as nbn
        >>> rs = nbn.RunningStats().update(np.ones((2, 3)))
        >>> c = rs.copy().update(np.ones((1, 3)))
        >>> rs.count, c.count
        (array([2., 2., 2.]), array([3., 3., 3.]))
        """
        new = RunningStats(minmax=self._minmax)
        if self._shape is not None:
            new._init_state(self._shape)
            for k in ("_cnt", "_mean", "_res", "_m2", "_mn", "_mx", "_nans"):
                getattr(new, k)[...] = getattr(self, k)
        return new

    # -- folding data in -----------------------------------------------------

    def update(
        self,
        chunk: Any,
        axis: int | tuple[int, ...] = 0,
        *,
        sample_weight: ArrayLike | None = None,
    ) -> RunningStats:
        """Fold ``chunk`` in, reducing over ``axis``; returns self.

        The state is updated in place; ``chunk`` is never modified.  The
        chunk's exact moments are merged into the state with Chan, Golub &
        LeVeque's pairwise formula [1]_, so the result does not depend on how
        the data was split.  The first update fixes the kept shape; a chunk
        with no element to reduce (e.g. 0 rows) fixes it too and adds nothing.
        NaN values are skipped and counted in :attr:`nan_count`.  A masked
        array (``numpy.ma``) is honoured: its masked entries are left out as
        NaN is (and counted in :attr:`nan_count`).

        Parameters
        ----------
        chunk : array_like, CUDA array or dask.array.Array
            Data of a float16/32/64, integer or bool dtype (a NumPy array,
            anything with ``__cuda_array_interface__`` of float32/64, or a
            Dask array: its statistics are computed now, on the scheduler in
            use, as one tree of numbanorm's moments over its chunks, each
            chunk read once, and merged into this accumulator).  Its
            shape without the ``axis`` axes (the kept shape) must be the same
            for every update.
        axis : int or tuple of int, default 0
            The axes reduced over (negative values count from the end).
        sample_weight : array_like of shape (chunk.shape[0],) or scalar, optional
            Finite, non-negative weight of each index along axis 0, which must
            then be among the reduced axes (NumPy chunks only).  Counts become
            sums of weights and elements are folded in with West's weighted
            update [2]_; values of weight 0 are left out (of min and max too).
            NaN is still skipped, and counted unweighted in :attr:`nan_count`.

        Returns
        -------
        RunningStats
            ``self``, so updates can be chained.

        Raises
        ------
        ValueError
            The kept shape differs from the first update's, ``axis`` is out of
            range or repeats an axis, or ``sample_weight`` has the wrong shape,
            negative or non-finite values, or axis 0 is not reduced.
        TypeError
            An unsupported dtype (complex, object, ...), a non-integer
            ``axis``, or ``sample_weight`` with a CUDA or Dask chunk.

        References
        ----------
        .. [1] T. F. Chan, G. H. Golub, R. J. LeVeque, "Algorithms for
           computing the sample variance: analysis and recommendations", The
           American Statistician 37(3), 1983.
        .. [2] D. H. D. West, "Updating mean and variance estimates: an
           improved method", Communications of the ACM 22(9), 1979.

        Examples
        --------
        >>> import numpy as np
        >>> import numbanorm as nbn
        >>> rs = nbn.RunningStats().update(np.ones((4, 3, 5)), axis=(0, 2))
        >>> rs.count
        array([20., 20., 20.])

        Weights count like repeated rows:

        >>> w = nbn.RunningStats().update(np.array([[1.0], [3.0]]), sample_weight=[1, 3])
        >>> w.count, w.mean
        (array([4.]), array([2.5]))
        """
        if type(chunk).__module__.startswith("dask."):
            return self._update_dask(chunk, axis, sample_weight)
        x = as_float_array(chunk, "chunk")
        shape = tuple(x.shape)
        axes = normalize_axis(axis, len(shape))
        kshape = kept_shape(shape, axes)
        if sample_weight is not None:
            return self._update_weighted(x, axes, kshape, sample_weight)
        self._check_shape(kshape, "chunk")
        n_red = math.prod(shape[a] for a in axes)
        if n_red == 0:
            return self
        if isinstance(x, np.ndarray) and 0 < x.size <= MIN_TASK_ELEMS:
            self._fold_small(x, axes, False)
            return self
        part = lane_partials(x, axes, self._minmax) if isinstance(x, np.ndarray) else None
        if part is not None:
            _fold_partials(
                part, float(n_red), self._cnt, self._mean, self._res, self._m2,
                self._mn, self._mx, self._nans, self._minmax,
            )  # fmt: skip
            return self
        mom = reduce_moments(x, axes, skipnan=True, minmax=self._minmax)
        cnt = mom.count.reshape(-1)
        res = np.zeros_like(cnt) if mom.resid is None else mom.resid.reshape(-1)
        nans = (n_red - cnt).astype(np.int64)
        mn = mom.min.reshape(-1) if self._minmax else cnt
        mx = mom.max.reshape(-1) if self._minmax else cnt
        _merge_into_state(
            self._cnt, self._mean, self._res, self._m2, self._mn, self._mx, self._nans,
            cnt, mom.mean.reshape(-1), res, mom.m2.reshape(-1), mn, mx, nans, self._minmax,
        )  # fmt: skip
        return self

    def _fold_small(self, x: np.ndarray, axes: tuple[int, ...], reject_inf: bool) -> bool:
        """Fold a small non-empty ndarray chunk (at most MIN_TASK_ELEMS
        elements, kept shape already checked) into the state with one serial
        kernel (``small.fold_moments``), without the thread pool.  With
        ``reject_inf``, a chunk whose statistics are not finite is left out
        and False returned (the scalers' infinity check)."""
        return small.fold_moments(
            small_view(x, axes), self._minmax, reject_inf,
            self._cnt, self._mean, self._res, self._m2, self._mn, self._mx, self._nans,
        )  # fmt: skip

    def _update_dask(self, chunk, axis, sample_weight) -> RunningStats:
        """update() of a Dask array: the statistics tree (one read of each
        chunk, numbanorm's moments merged with Chan's formula) computed now on
        the scheduler in use, then merged into the state here."""
        from .backends import dask as dask_backend

        x = dask_backend.as_input(chunk, "chunk")
        if sample_weight is not None:
            raise TypeError("sample_weight: weighted updates take NumPy arrays only (not dask arrays)")
        shape = tuple(int(n) for n in x.shape)
        axes = normalize_axis(axis, len(shape))
        self._check_shape(kept_shape(shape, axes), "chunk")
        n_red = math.prod(shape[a] for a in axes)
        if n_red == 0 or x.size == 0:
            return self
        mom = dask_backend.compute_moments(x, axes, skipnan=True, minmax=self._minmax)
        f = {name: np.ascontiguousarray(mom[name]).reshape(-1) for name in mom.dtype.names}
        cnt = f["count"]
        nans = (n_red - cnt).astype(np.int64)
        _merge_into_state(
            self._cnt, self._mean, self._res, self._m2, self._mn, self._mx, self._nans,
            cnt, f["mean"], f["resid"], f["m2"], f["min"], f["max"], nans, self._minmax,
        )  # fmt: skip
        return self

    def _update_weighted(self, x, axes, kshape, sample_weight) -> RunningStats:
        if backends.is_cuda_array(x):
            raise TypeError("sample_weight: weighted updates take NumPy arrays only")
        if 0 not in axes:
            raise ValueError(f"sample_weight weighs axis 0, which must be reduced; got axis={axes}")
        w = np.asarray(sample_weight, dtype=np.float64)
        if w.ndim == 0:
            w = np.full(x.shape[0], float(w))
        if w.shape != (x.shape[0],):
            raise ValueError(
                f"sample_weight: expected shape ({x.shape[0]},) (one weight per index "
                f"of axis 0), got {w.shape}"
            )
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError("sample_weight: weights must be finite and non-negative")
        self._check_shape(kshape, "chunk")
        if x.size == 0:
            return self
        if x.dtype == np.float16:
            x = x.astype(np.float32)
        others = [a for a in axes if a != 0]
        kept = [a for a in range(x.ndim) if a not in axes]
        S = math.prod(x.shape[a] for a in others)
        F = math.prod(x.shape[a] for a in kept)
        # (N, S, F); a view for the usual layouts, a copy otherwise
        x3 = x.transpose([0, *others, *kept]).reshape(x.shape[0], S, F)
        if x.size <= MIN_TASK_ELEMS:  # one task: no thread pool
            c, mu, q, mn, mx, nans = _weighted_moments_serial(x3, np.ascontiguousarray(w), 1)
        else:
            nsplit = _nsplit_rows(x.shape[0], S * F)
            c, mu, q, mn, mx, nans = _weighted_moments(x3, np.ascontiguousarray(w), nsplit)
        _merge_into_state(
            self._cnt, self._mean, self._res, self._m2, self._mn, self._mx, self._nans,
            c, mu, np.zeros_like(mu), q, mn, mx, nans, self._minmax,
        )  # fmt: skip
        return self

    def merge(self, other: RunningStats) -> RunningStats:
        """Fold another accumulator's statistics into this one; returns self.

        ``self.merge(b)`` gives the statistics of the data of both, as if
        every chunk of ``b`` had been passed to ``self.update`` (Chan, Golub &
        LeVeque's parallel formula [1]_).  ``self`` is updated in place;
        ``other`` is not modified.  Merging an empty accumulator changes
        nothing; an empty ``self`` takes ``other``'s kept shape.  If either
        side does not track min and max, the result no longer does either
        (:attr:`min` and :attr:`max` become None).

        Parameters
        ----------
        other : RunningStats
            The accumulator whose statistics are added.

        Returns
        -------
        RunningStats
            ``self``, so merges can be chained.

        Raises
        ------
        ValueError
            ``other`` has a different kept shape.
        TypeError
            ``other`` is not a :class:`RunningStats`.

        References
        ----------
        .. [1] T. F. Chan, G. H. Golub, R. J. LeVeque, The American
           Statistician 37(3), 1983.

        Examples
        --------
        >>> import numpy as np
        >>> import numbanorm as nbn
        >>> x = np.random.default_rng(0).normal(size=(100, 3))
        >>> a = nbn.RunningStats().update(x[:30])
        >>> b = nbn.RunningStats().update(x[30:])
        >>> bool(np.allclose(a.merge(b).var(), x.var(axis=0)))
        True
        """
        if not isinstance(other, RunningStats):
            raise TypeError(f"other: expected a RunningStats, got {type(other).__name__}")
        if other._shape is None:
            return self
        self._check_shape(other._shape, "other")
        minmax = self._minmax and other._minmax
        _merge_into_state(
            self._cnt, self._mean, self._res, self._m2, self._mn, self._mx, self._nans,
            other._cnt, other._mean, other._res, other._m2, other._mn, other._mx, other._nans, minmax,
        )  # fmt: skip
        self._minmax = minmax
        return self

    # -- results ---------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, ...] | None:
        """The kept shape: the shape of every statistic (None before the first update).

        Examples
        --------
        >>> import numpy as np
        >>> import numbanorm as nbn
        >>> nbn.RunningStats().update(np.ones((2, 3, 4)), axis=(0, 2)).shape
        (3,)
        """
        return self._shape

    def _out(self, name: str, empty_nan: bool = True) -> np.ndarray:
        if self._shape is None:
            return np.full((), np.nan) if empty_nan else np.zeros(())
        a = getattr(self, name).copy()
        if empty_nan:
            a[self._cnt == 0] = np.nan
        return a.reshape(self._shape)

    @property
    def count(self) -> np.ndarray:
        """Per-feature number of non-NaN values (sum of weights when weighted).

        A float64 array of the kept shape (a copy); a 0-d ``0.0`` before the
        first update.

        Examples
        --------
        >>> import numpy as np
        >>> import numbanorm as nbn
        >>> nbn.RunningStats().update(np.array([[1.0, np.nan], [2.0, 3.0]])).count
        array([2., 1.])
        """
        return self._out("_cnt", empty_nan=False)

    @property
    def nan_count(self) -> np.ndarray:
        """Per-feature number of NaN values skipped.

        An int64 array of the kept shape (a copy); a 0-d ``0`` before the
        first update.  NaN is counted once per value, also when weighted.

        Examples
        --------
        >>> import numpy as np
        >>> import numbanorm as nbn
        >>> nbn.RunningStats().update(np.array([[1.0, np.nan], [2.0, np.nan]])).nan_count
        array([0, 2])
        """
        if self._shape is None:
            return np.zeros((), dtype=np.int64)
        return self._nans.reshape(self._shape).copy()

    @property
    def mean(self) -> np.ndarray:
        """Per-feature mean of the non-NaN values (weighted mean when weighted).

        A float64 array of the kept shape; NaN where the count is 0, and a
        0-d NaN before the first update.  The mean is carried internally with
        its rounding residual, which is added here.

        Examples
        --------
        >>> import numpy as np
        >>> import numbanorm as nbn
        >>> nbn.RunningStats().update(np.array([[1.0, np.nan], [2.0, np.nan]])).mean
        array([1.5, nan])
        """
        m = self._out("_mean")
        return m + self._res.reshape(m.shape) if self._shape is not None else m

    @property
    def m2(self) -> np.ndarray:
        """Per-feature sum of squared deviations from the mean, ``M2``.

        ``var(ddof) == m2 / (count - ddof)``.  A float64 array of the kept
        shape; NaN where the count is 0, and a 0-d NaN before the first
        update.

        Examples
        --------
        >>> import numpy as np
        >>> import numbanorm as nbn
        >>> nbn.RunningStats().update(np.array([[1.0], [3.0]])).m2
        array([2.])
        """
        return self._out("_m2")

    def _extreme(self, name: str) -> np.ndarray | None:
        if not self._minmax:
            return None
        return self._out(name)

    @property
    def min(self) -> np.ndarray | None:
        """Per-feature minimum of the non-NaN values, or None if not tracked.

        A float64 array of the kept shape; NaN where the count is 0, and a
        0-d NaN before the first update.  None when the accumulator was made
        with ``minmax=False`` or merged with one that was.

        Examples
        --------
        >>> import numpy as np
        >>> import numbanorm as nbn
        >>> nbn.RunningStats().update(np.array([[1.0, np.nan], [-2.0, np.nan]])).min
        array([-2., nan])
        >>> nbn.RunningStats(minmax=False).update(np.ones((2, 2))).min is None
        True
        """
        return self._extreme("_mn")

    @property
    def max(self) -> np.ndarray | None:
        """Per-feature maximum of the non-NaN values, or None if not tracked.

        As :attr:`min`: float64, NaN where the count is 0, None when min and
        max are not tracked.

        Examples
        --------
        >>> import numpy as np
        >>> import numbanorm as nbn
        >>> nbn.RunningStats().update(np.array([[1.0, 5.0], [-2.0, 4.0]])).max
        array([1., 5.])
        """
        return self._extreme("_mx")

    def var(self, ddof: float = 0) -> np.ndarray:
        """Per-feature variance ``M2 / (count - ddof)``; NaN where ``count <= ddof``.

        ``ddof=0`` (the default, NumPy's) is the biased variance, ``ddof=1``
        the unbiased one.  With weights, ``count`` is the sum of weights
        (frequency weights).

        Parameters
        ----------
        ddof : float, default 0
            Delta degrees of freedom.

        Returns
        -------
        ndarray
            The variances, float64, of the kept shape (a 0-d NaN before the
            first update).

        Examples
        --------
        >>> import numpy as np
        >>> import numbanorm as nbn
        >>> nbn.RunningStats().update(np.array([[1.0], [3.0]])).var(ddof=1)
        array([2.])
        """
        if self._shape is None:
            return np.full((), np.nan)
        out = np.empty_like(self._m2)
        _finalize_var(self._cnt, self._m2, float(ddof), out)
        return out.reshape(self._shape)

    def std(self, ddof: float = 0) -> np.ndarray:
        """Per-feature standard deviation, ``sqrt(var(ddof))``.

        Parameters
        ----------
        ddof : float, default 0
            Delta degrees of freedom, as in :meth:`var`.

        Returns
        -------
        ndarray
            The standard deviations, float64, of the kept shape; NaN where
            ``count <= ddof``.

        Examples
        --------
        >>> import numpy as np
        >>> import numbanorm as nbn
        >>> nbn.RunningStats().update(np.array([[1.0], [3.0]])).std()
        array([1.])
        """
        return np.sqrt(self.var(ddof))

    def __repr__(self) -> str:
        if self._shape is None:
            return "RunningStats(<empty>)"
        n = self._cnt
        lo, hi = (n.min(), n.max()) if n.size else (0.0, 0.0)
        seen = f"{lo:g}" if lo == hi else f"{lo:g}..{hi:g}"
        return f"RunningStats(shape={self._shape}, count={seen})"
