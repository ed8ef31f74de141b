"""The Dask backend: every public function on ``dask.array.Array`` input, lazily.

A call validates its arguments at once (the same ``ValueError``/``TypeError``
as the NumPy path, from the same checks of :mod:`numbanorm._validate`),
computes nothing, and returns a lazy Dask array with ``x``'s chunks.  The
graph it builds has one of two shapes:

- **one pass, no tree** (:func:`map_ops`): when the reduced axes of every
  group lie inside single chunks (layer/RMS norm with whole trailing axes,
  ``lp_normalize`` with whole reduced axes, instance/group norm with whole
  spatial axes and chunks of whole groups), each chunk is normalized by the
  NumPy (or CUDA) public function itself: one task per chunk, the NumPy
  path's own kernels and bits for that chunk.
- **statistics, then an output pass**: :func:`moments` is a
  ``da.reduction`` whose chunk step is numbanorm's moments primitive
  (``_reduce.reduce_moments``, the exact float64 moments of the chunk with
  the mean's rounding residual) and whose combine/aggregate steps are the
  Chan merge of the statistics core (``_stats.merge_mid``, i.e.
  ``chan_merge_dd``; no formula of its own).  The partials are NumPy
  structured arrays (:data:`MOMENTS`: count, mean, mean residual, M2, min,
  max) of the kept shape with the reduced axes of size 1, so they travel,
  rechunk and index as ordinary Dask arrays.  The per-feature parameters are
  then computed by the same ``_stats`` functions as on the NumPy path
  (``batch_norm_params``, ``standardize_params``, ``inv_std_array``,
  ``minmax_factor``), one small task per block of features, and
  :func:`apply` writes ``clip((x - center) * scale + shift)`` chunk by chunk
  with the backend's ``apply`` primitive (``_reduce.apply_affine``).

Each input chunk is read once for the statistics.  The output pass reads
``x`` through a clone of its graph (``dask.graph_manipulation.clone``): the
chunks are produced again for the output instead of being held in memory
from the statistics pass until the tree finishes (dask#874: the naive
``(x - x.mean(0)) / x.std(0)`` keeps every chunk alive).  A persisted ``x``
is not recomputed by the clone (its chunks are data).  Tasks: one moments
task per chunk, a tree of merges (:func:`tree_width`: one merge of every
partial when they are at most 64 and 32 MiB), the parameters computed in
the tree's last task, and one output task per chunk.

Numba's threads inside a task are set by :func:`task_threads`.  A task
whose bits depend on how the kernels split their work (the statistics' chunk
step, the p-norms, the one-pass ops: numbanorm's CPU kernels cut a chunk into
``4 x threads`` pieces and merge the pieces' partials) runs with
:func:`exact_threads` numba threads, the same number on every scheduler (1
unless set): results are bitwise identical on the synchronous, threaded,
processes and distributed schedulers.  The output pass (elementwise: its
bits do not depend on the split) runs with :func:`threads_per_task`, cores
divided by the tasks that run at once, so a worker is never oversubscribed.
Every function in a graph is a module-level function (pickled by
reference), and every serial kernel releases the GIL, so the threaded,
processes and distributed schedulers all run the kernels in parallel.

Chunks of CUDA arrays (CuPy's, numba's, torch's) run the CUDA backend
(``backends.backend_for`` on each chunk): the moments and p-norm chunk
steps return host partials (the backend's statistics are host arrays), so
the tree is NumPy's; the output pass and the one-pass ops return chunks of
the input's array type (``meta`` from x's).  Tested with numba device
arrays under the CUDA simulator; not run with CuPy or on a GPU.

References
----------
T. F. Chan, G. H. Golub, R. J. LeVeque, "Algorithms for computing the sample
variance: analysis and recommendations", The American Statistician 37(3), 1983.
M. Rocklin, "Dask: Parallel Computation with Blocked algorithms and Task
Scheduling", Proceedings of the 14th Python in Science Conference, 2015.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import numbers
import os
import threading
from functools import partial
from typing import Any

import dask
import dask.array as da
import numba
import numpy as np
from dask.array.utils import meta_from_array
from dask.graph_manipulation import clone

from .. import _outbuf
from .. import _validate as V
from .._config import MIN_TASK_ELEMS
from .._reduce import apply_affine, kept_shape, normalize_axis, reduce_moments, reduce_pnorm
from .._stats import (
    batch_norm_params,
    inv_std_array,
    merge_mid,
    minmax_factor,
    pnorm_finish_array,
    running_update,
    standardize_params,
)
from .._threading import available_cpus
from . import backend_for, is_cuda_array

__all__ = [
    "MOMENTS",
    "is_dask_array",
    "call",
    "moments",
    "compute_moments",
    "apply",
    "task_threads",
    "threads_per_task",
    "exact_threads",
]

#: The partial statistics of a group: a NumPy structured dtype, so that
#: partials are ordinary (tiny) Dask arrays.  ``mean + resid`` is the exact
#: mean (``_stats.chan_merge_dd``); a group with count 0 has mean, resid and
#: M2 0 and min/max +inf/-inf until finalized (then NaN, as reduce_moments).
MOMENTS = np.dtype(
    [("count", "f8"), ("mean", "f8"), ("resid", "f8"), ("m2", "f8"), ("min", "f8"), ("max", "f8")]
)
# the parameters of the output pass (apply reads center, scale, shift;
# the other fields are what return_stats and running statistics need)
_PRM = np.dtype([("center", "f8"), ("scale", "f8"), ("shift", "f8"), ("stat", "f8"), ("rstd", "f8")])
_BN_PRM = np.dtype(
    [("center", "f8"), ("scale", "f8"), ("shift", "f8"), ("rstd", "f8"), ("rm", "f8"), ("rv", "f8")]
)

#: dask.config key: numba threads per task (default: cores / concurrent tasks)
THREADS_KEY = "numbanorm.threads-per-task"
#: dask.config key: reread x for the output pass through a clone of its graph
REREAD_KEY = "numbanorm.reread"


def is_dask_array(x: Any) -> bool:
    """True for a ``dask.array.Array`` (without importing dask for other types)."""
    return type(x).__module__.startswith("dask.") and isinstance(x, da.Array)


# --------------------------------------------------------------------------
# numba threads inside a task
# --------------------------------------------------------------------------


_cores = available_cpus  # (the CPUs a worker's tasks share)


def _concurrent_tasks() -> int:
    """How many tasks may run at once in this process, as far as it can tell."""
    try:
        from distributed import get_worker

        w = get_worker()
    except (ImportError, ValueError):
        w = None
    if w is not None:
        n = max(1, int(w.state.nthreads))
        # the nanny sets OMP_NUM_THREADS (1 by default) so that native
        # libraries leave the parallelism to the worker's threads
        omp = os.environ.get("OMP_NUM_THREADS", "")
        if omp.isdigit() and int(omp) > 0:
            n = max(n, _cores() // int(omp))
        return n
    if threading.current_thread() is not threading.main_thread():
        # a thread of the threaded scheduler (or of the user's own pool)
        return max(1, int(dask.config.get("num_workers", None) or _cpu_count()))
    if multiprocessing.parent_process() is not None:
        # a worker process of the processes scheduler: one of num_workers
        return max(1, int(dask.config.get("num_workers", None) or _cpu_count()))
    return 1  # the synchronous scheduler (or a plain call)


def _cpu_count() -> int:
    from dask.system import CPU_COUNT

    return CPU_COUNT


def threads_per_task() -> int:
    """Numba threads a numbanorm task uses: ``dask.config`` key
    ``"numbanorm.threads-per-task"`` if set, else the cores of this process
    divided by the tasks that run at once in it (a distributed worker's
    threads, or ``OMP_NUM_THREADS`` set by its nanny; the threaded
    scheduler's ``num_workers``; 1 for the synchronous scheduler), at least 1
    and at most numba's thread count."""
    limit = numba.config.NUMBA_NUM_THREADS
    n = dask.config.get(THREADS_KEY, None)
    if n is None:
        n = _cores() // _concurrent_tasks()
    return int(max(1, min(limit, int(n))))


def exact_threads() -> int:
    """Numba threads of a task whose result depends on the kernels' split
    of the work (statistics, p-norms, one-pass ops): ``dask.config`` key
    ``"numbanorm.threads-per-task"`` if set, else 1 -- the same on every
    scheduler, so that a chunk's bits do not depend on where it runs.

    (numbanorm's CPU kernels cut a chunk's reduction into up to
    ``4 x numba.get_num_threads()`` pieces and Chan-merge their partials:
    at the synchronous scheduler's 2 threads a 1 MiB column chunk was cut
    into 8 pieces, at the distributed worker's 1 thread into 4, and the
    variances differed in the last bit.)"""
    n = dask.config.get(THREADS_KEY, None)
    return 1 if n is None else int(max(1, min(numba.config.NUMBA_NUM_THREADS, int(n))))


@contextlib.contextmanager
def task_threads(size: int | None = None, exact: bool = True):
    """Run the body with :func:`exact_threads` numba threads (``exact``: a
    task whose bits depend on the split) or :func:`threads_per_task`
    (thread-local in numba, restored after); one for a chunk of at most
    ``MIN_TASK_ELEMS`` elements (``size``), which the kernels do in one
    piece anyway: waking numba's pool for it cost ~4 ms per task on a busy
    2-core machine, 0.3 ms with one thread (FIELD-NOTES, Dask)."""
    if size is not None and size <= MIN_TASK_ELEMS:
        n = 1
    else:
        n = exact_threads() if exact else threads_per_task()
    prev = numba.get_num_threads()
    if n == prev:
        yield
        return
    numba.set_num_threads(n)
    try:
        yield
    finally:
        numba.set_num_threads(prev)


def _on_device(block):
    """(backend, the backend's array, context manager) for one chunk."""
    be = backend_for(block)
    if is_cuda_array(block):
        return be, be.as_device(block), be.context(None, like=block)
    return be, np.asarray(block), contextlib.nullcontext()


# --------------------------------------------------------------------------
# statistics: a da.reduction of numbanorm's moments, merged with Chan's formula
# --------------------------------------------------------------------------


def _keep_shape(shape, axes) -> tuple[int, ...]:
    return tuple(1 if i in axes else int(n) for i, n in enumerate(shape))


def _empty_partial(shape) -> np.ndarray:
    p = np.zeros(shape, MOMENTS)
    p["min"] = np.inf
    p["max"] = -np.inf
    return p


def chunk_moments(block, axis, keepdims=True, skipnan=False, minmax=False, want_moments=True, **_):
    """The chunk step: numbanorm's moments of one chunk over ``axis``, as a
    :data:`MOMENTS` partial of the chunk's kept shape (reduced axes size 1)."""
    axes = tuple(axis)
    shape = _keep_shape(block.shape, axes)
    part = _empty_partial(shape)
    if 0 in block.shape:
        return part
    be, arr, ctx = _on_device(block)
    with ctx, task_threads(block.size):
        m = reduce_moments(arr, axes, skipnan=skipnan, minmax=minmax, moments=want_moments, backend=be)
    seen = m.count > 0
    part["count"] = m.count.reshape(shape)
    # a group without values is a neutral partial (reduce_moments says NaN)
    part["mean"] = np.where(seen, m.mean, 0.0).reshape(shape)
    part["resid"] = np.where(seen, 0.0 if m.resid is None else m.resid, 0.0).reshape(shape)
    part["m2"] = np.where(seen, m.m2, 0.0).reshape(shape)
    if minmax:
        part["min"] = np.where(seen, m.min, np.inf).reshape(shape)
        part["max"] = np.where(seen, m.max, -np.inf).reshape(shape)
    return part


def merge_moments(parts, axis, keepdims=True, **_):
    """The combine step: Chan-merge (``_stats.merge_mid``) the partials of
    ``parts`` (concatenated along ``axis``) into one per kept index, in C
    order of the reduced axes (the same order on every scheduler)."""
    axes = tuple(axis)
    kept = [i for i in range(parts.ndim) if i not in axes]
    out = np.empty(_keep_shape(parts.shape, axes), MOMENTS)
    A = math.prod(parts.shape[i] for i in kept)
    M = math.prod(parts.shape[a] for a in axes)
    if A == 0:
        return out
    q = np.ascontiguousarray(parts.transpose(kept + list(axes))).reshape(A, M, 1)
    merged = merge_mid(q["count"], q["mean"], q["resid"], q["m2"], q["min"], q["max"], True)
    for name, a in zip(MOMENTS.names, merged, strict=True):
        out[name] = a.reshape(out.shape)
    return out


def aggregate_moments(parts, axis, keepdims=True, finish=None, **_):
    """The aggregate step: the last merge, then reduce_moments' finish (the
    mean rounded to one float, its residual kept; NaN for empty groups);
    ``finish`` (a function of the statistics: an op's parameters) runs in
    the same task."""
    out = finish_moments(merge_moments(parts, axis))
    return out if finish is None else finish(out)


def finish_moments(out: np.ndarray) -> np.ndarray:
    c, mu, r = out["count"], out["mean"], out["resid"]
    hi = mu + r
    out["resid"] = (mu - hi) + r
    out["mean"] = hi
    empty = c == 0
    if empty.any():
        for name in ("mean", "m2", "min", "max"):
            out[name] = np.where(empty, np.nan, out[name])
        out["resid"] = np.where(empty, 0.0, out["resid"])
    return out


def _moments_block(block, axes, skipnan, minmax, want_moments, finish=None):
    out = finish_moments(chunk_moments(block, axes, True, skipnan, minmax, want_moments))
    return out if finish is None else finish(out)


#: the largest partials one merge task takes at once (bytes), and how many
MERGE_BYTES = 32 << 20
MERGE_MAX = 64


def tree_width(x, axes, itemsize: int = MOMENTS.itemsize):
    """The tree of a reduction of x over ``axes`` whose partials hold
    ``itemsize`` bytes per kept element: flat (one merge task reading every
    partial) when they are at most :data:`MERGE_MAX` and
    :data:`MERGE_BYTES` in all, else that many per merge (Dask's own
    default is 16 per merge, 4 per axis for 2 axes: on a 2-worker
    LocalCluster each level of the tree costs a round of transfers between
    workers)."""
    part = itemsize * math.prod(max(x.chunks[i]) for i in range(x.ndim) if i not in axes)
    n = max(2, min(MERGE_MAX, MERGE_BYTES // max(part, 1)))
    if math.prod(len(x.chunks[a]) for a in axes) <= n:
        return {a: max(2, len(x.chunks[a])) for a in axes}
    return n


def moments(
    x, axes, *, skipnan: bool, minmax: bool, want_moments: bool = True, split_every=None,
    finish=None, dtype=MOMENTS,
):  # fmt: skip
    """Lazy statistics of ``x`` over ``axes``: a :data:`MOMENTS` Dask array of
    x's shape with the reduced axes of size 1 (chunked as x along the kept
    axes), finalized like ``_reduce.reduce_moments`` (NaN for empty groups).

    One task per chunk (numbanorm's moments of the chunk), then a
    ``split_every`` tree of Chan merges; no tree when every group lies in
    one chunk.  ``finish`` (a module-level function, or a partial of one,
    from the statistics to an array of ``dtype`` of the same shape: an op's
    parameters) runs in the last task of the tree.
    """
    axes = tuple(axes)
    meta = meta_from_array(np.empty(0), ndim=x.ndim, dtype=dtype)
    if not axes or all(len(x.chunks[a]) == 1 for a in axes):
        # every group inside one chunk: finalize each chunk's partial, no tree
        chunks = tuple(((1,) if i in axes else c) for i, c in enumerate(x.chunks))
        return da.map_blocks(
            _moments_block, x, axes, skipnan, minmax, want_moments, finish,
            chunks=chunks, dtype=dtype, meta=meta, token="numbanorm-moments",
        )  # fmt: skip
    red = da.reduction(
        x,
        partial(chunk_moments, skipnan=skipnan, minmax=minmax, want_moments=want_moments),
        partial(aggregate_moments, finish=finish),
        axis=axes,
        keepdims=True,
        dtype=MOMENTS,
        combine=merge_moments,
        split_every=split_every or tree_width(x, axes),
        concatenate=True,
        meta=meta_from_array(np.empty(0), ndim=x.ndim, dtype=MOMENTS),
        name="numbanorm-moments",
    )
    if dtype == MOMENTS:
        return red
    # the last task returns ``finish``'s dtype: the same graph, labelled so
    return da.Array(red.dask, red.name, red.chunks, meta=meta)


def compute_moments(x, axes, *, skipnan: bool, minmax: bool, want_moments: bool = True) -> np.ndarray:
    """:func:`moments`, computed now on the scheduler in use (one read of
    each chunk): a NumPy :data:`MOMENTS` array (kept shape, reduced axes 1)."""
    (res,) = dask.compute(moments(x, axes, skipnan=skipnan, minmax=minmax, want_moments=want_moments))
    return np.asarray(res)


# --------------------------------------------------------------------------
# the output pass
# --------------------------------------------------------------------------


def _field(prm, name, shape):
    return np.ascontiguousarray(np.broadcast_to(prm[name], shape), dtype=np.float64)


def apply_block(block, prm, axes, lo=None, hi=None, weight=None, bias=None, block_info=None):
    """One output chunk: ``clip((x - center) * scale + shift, lo, hi)`` with the
    backend's apply primitive; ``prm`` holds the chunk's parameters (reduced
    axes size 1).  ``weight``/``bias`` (layer/RMS norm with affine, reduced
    axes 1-chunked or not): elementwise over the normalized axes, in float64."""
    shape = _keep_shape(block.shape, axes)
    ks = kept_shape(block.shape, axes)
    center, scale, shift = (_field(prm, n, shape).reshape(ks) for n in ("center", "scale", "shift"))
    be, arr, ctx = _on_device(block)
    if weight is not None or bias is not None:
        loc = block_info[0]["array-location"] if block_info else None
        wb = []
        for p in (weight, bias):
            if p is not None and loc is not None:
                # the chunk's part of the normalized axes (size-1 axes broadcast)
                p = p[tuple(slice(*loc[a]) if p.shape[a] > 1 else slice(None) for a in range(len(loc)))]  # noqa: PLW2901
            wb.append(p)
        return _weighted(block, be, center.reshape(shape), scale.reshape(shape), *wb)
    with ctx:
        out = be.empty(block.shape, block.dtype, like=block) if be.NAME != "cpu" else _outbuf.empty_like(arr)
        if 0 not in block.shape:
            with task_threads(block.size, exact=False):
                apply_affine(arr, axes, center, scale, shift, out=out, lo=lo, hi=hi, backend=be)
        return be.wrap(out, like=block)


def _weighted(block, be, c, s, w, b):
    """``(x - c) * s * w + b`` in float64, rounded once to x's dtype (layer/RMS
    norm with affine parameters when the normalized axes span chunks): with
    NumPy's arithmetic for a NumPy chunk, CuPy's for a CuPy chunk (the
    parameters copied to its device), through the host for other device
    arrays (numba's, torch's: no float64 elementwise arithmetic here)."""

    def formula(xa, dev):
        y = (xa.astype(np.float64) - dev(c)) * dev(s)
        if w is not None:
            y = y * dev(w)
        if b is not None:
            y = y + dev(b)
        return y.astype(block.dtype)

    if be.NAME == "cpu":
        return formula(np.asarray(block), np.asarray)
    if type(block).__module__.startswith("cupy"):  # pragma: no cover - no CuPy here
        import cupy

        with block.device:
            return formula(block, cupy.asarray)
    with be.context(None, like=block):
        y = formula(be.to_host(be.as_device(block)), np.asarray)
        return be.wrap(be.from_host(y, like=block), like=block)


def apply_params(x, axes, center, scale, shift, lo=None, hi=None):
    """:func:`apply` with NumPy parameters broadcastable to the kept shape
    (the scalers' fitted statistics): one output task per chunk."""
    axes = tuple(axes)
    ks = kept_shape(x.shape, axes)
    shape = _keep_shape(x.shape, axes)
    prm = np.zeros(shape, _PRM)
    for name, v in (("center", center), ("scale", scale), ("shift", shift)):
        prm[name] = np.broadcast_to(np.asarray(v, dtype=np.float64), ks).reshape(shape)
    return apply(x, axes, prm, lo=lo, hi=hi)


def _persisted(x) -> bool:
    """Is every chunk of x data already (a persisted array: NumPy chunks or
    futures), not a task?"""
    graph = x.__dask_graph__()
    if len(graph) > x.npartitions:
        return False
    try:
        from dask._task_spec import DataNode, GraphNode
    except ImportError:  # pragma: no cover - older dask: clone anyway
        return False
    for v in graph.values():
        if isinstance(v, GraphNode) and not isinstance(v, DataNode):
            return False
    return True


def _reread(x):
    """x for the output pass: a clone of its graph (see the module
    docstring), unless its chunks are data already (persisted: cloning
    them cost ~70 ms on a 244 MiB array on a LocalCluster, NOTES.md §22)."""
    if not dask.config.get(REREAD_KEY, True) or _persisted(x):
        return x
    return clone(x, assume_layers=True)


def apply(x, axes, prm, lo=None, hi=None, weight=None, bias=None):
    """Lazy ``clip((x - center) * scale + shift, lo, hi)`` (times ``weight``
    plus ``bias`` when given: full-shape broadcastable NumPy arrays) with
    ``prm`` a Dask or NumPy array with fields center/scale/shift, of x's
    shape with the reduced ``axes`` of size 1.  x's chunks."""
    axes = tuple(axes)
    if not isinstance(prm, da.Array):
        chunks = tuple(((1,) if i in axes else c) for i, c in enumerate(x.chunks))
        prm = da.from_array(np.ascontiguousarray(prm), chunks=chunks)
    src = _reread(x)
    kw = {}
    if weight is not None or bias is not None:
        kw = {"weight": weight, "bias": bias}
    return da.map_blocks(
        apply_block, src, prm, axes=axes, lo=lo, hi=hi, dtype=x.dtype,
        meta=meta_from_array(x._meta, ndim=x.ndim, dtype=x.dtype), token="numbanorm-apply", **kw,
    )  # fmt: skip


# --------------------------------------------------------------------------
# one pass per chunk: the NumPy/CUDA public function on each chunk
# --------------------------------------------------------------------------


def op_block(block, name, args, kwargs, cslice=None, empty=(), block_info=None):
    """One chunk through the in-memory public function ``name`` (NumPy or
    CUDA kernels); ``cslice``: (axis, params) whose per-channel entries are
    sliced to the chunk's channels (weight, bias) by their names.  An empty
    chunk gives an empty output and, with ``return_stats``, empty statistics
    laid out by ``empty`` (per statistic: dtype, per-axis size rule of
    :func:`_stat_rule`, axes the public function does not return)."""
    from .. import functional, preprocessing

    fn = getattr(functional, name, None) or getattr(preprocessing, name)
    kw = dict(kwargs)
    if cslice is not None and block_info is not None:
        ax, names, per = cslice
        a, b = block_info[0]["array-location"][ax]
        for n in names:
            if kw.get(n) is not None:
                kw[n] = kw[n][a:b]
        if per:  # group_norm: groups in this chunk
            kw["num_groups"] = (b - a) // per
    if 0 in block.shape:
        y = block.astype(block.dtype)
        if not kw.get("return_stats"):
            return y
        be = backend_for(block)
        stats = []
        for dt, rule, drop in empty:
            sizes = zip(block.shape, rule, strict=True)
            shape = [n if r is None else (1 if r == 0 else n // r) for n, r in sizes]
            shape = tuple(n for i, n in enumerate(shape) if i not in drop)
            if be.NAME == "cpu":
                stats.append(np.empty(shape, dt))
            else:
                with be.context(None, like=block):
                    stats.append(be.wrap(be.empty(shape, dt, like=block), like=block))
        return (y, *stats)
    with task_threads(block.size):
        return fn(block, *args, **kw)


def _stat_rule(xchunks, schunks) -> tuple:
    """Per axis, a statistic's chunk size from x's: None the same, 0 one,
    r > 0 x's divided by r (groups of r channels)."""
    rule = []
    for xc, sc in zip(xchunks, schunks, strict=True):
        if tuple(sc) == tuple(xc):
            rule.append(None)
        elif tuple(sc) == (1,):
            rule.append(0)
        else:
            rule.append(next(a // b for a, b in zip(xc, sc, strict=True) if b))
    return tuple(rule)


def _getitem(t, i, expand=()):
    a = t[i]
    return np.expand_dims(a, expand) if expand else a


def map_ops(x, name, args, kwargs, stats=(), cslice=None):
    """``name`` applied to each chunk (one task per chunk); with ``stats``
    (a (dtype, chunks) per statistic, chunks of (N, C)/(N, G) statistics of
    N-D chunks given as x.ndim chunks with 1 on the spatial axes), the
    statistics returned too."""
    meta = meta_from_array(x._meta, ndim=x.ndim, dtype=x.dtype)
    kw = dict(kwargs, return_stats=True) if stats else dict(kwargs)
    common = {"cslice": cslice} if cslice else {}
    if not stats:
        return da.map_blocks(
            op_block, x, name, args, kw, dtype=x.dtype, meta=meta, token=f"numbanorm-{name}", **common
        )
    empty = tuple((dt, _stat_rule(x.chunks, chunks), squeeze) for dt, chunks, squeeze in stats)
    t = da.map_blocks(
        op_block, x, name, args, kw, dtype=object, meta=np.empty((0,) * x.ndim, object),
        token=f"numbanorm-{name}", empty=empty, **common,
    )  # fmt: skip
    outs = [t.map_blocks(_getitem, 0, dtype=x.dtype, meta=meta, chunks=x.chunks)]
    for i, (dt, chunks, squeeze) in enumerate(stats, 1):
        smeta = meta_from_array(x._meta, ndim=x.ndim, dtype=dt)
        a = t.map_blocks(_getitem, i, squeeze, dtype=dt, meta=smeta, chunks=chunks)
        outs.append(da.squeeze(a, axis=squeeze) if squeeze else a)
    return tuple(outs)


def _spatial(x, ca) -> tuple[int, ...]:
    return tuple(a for a in range(1, x.ndim) if a != ca)


def _stat_chunks(x, ca, cchunks):
    """Chunks of (N, C)-like statistics laid out on x's axes (spatial 1)."""
    return tuple(x.chunks[0] if i == 0 else cchunks if i == ca else (1,) for i in range(x.ndim))


def _whole(x, axes) -> bool:
    return all(len(x.chunks[a]) == 1 for a in axes)


# --------------------------------------------------------------------------
# argument checks shared by the ops (the NumPy path's messages)
# --------------------------------------------------------------------------


def as_input(x, name: str = "x"):
    """x as a float Dask array of the result dtype (integers lazily to float64)."""
    if not isinstance(x, da.Array):
        raise TypeError(f"{name} must be a dask.array.Array or an array, got {type(x).__name__}")
    dt = V.result_dtype(x.dtype, name)
    if any(isinstance(n, float) and math.isnan(n) for n in x.shape):
        raise ValueError(
            f"{name} has unknown chunk sizes (shape {x.shape}): call {name}.compute_chunk_sizes()"
        )
    if dt != x.dtype or not np.dtype(x.dtype).isnative:
        x = x.astype(dt.newbyteorder("="))
    return x


def _nonempty(x, name: str = "x") -> None:
    if 0 in x.shape:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}): nothing to normalize")


def _check_out(out, x):
    """Validate ``out=`` for a Dask x: a Dask array of x's shape and result
    dtype, whose graph is replaced by the result's (no memory is written)."""
    if out is None:
        return None
    if not isinstance(out, da.Array):
        raise TypeError(
            f"out must be the same kind of array as x ({type(x).__name__}), got {type(out).__name__}"
        )
    if tuple(out.shape) != tuple(x.shape):
        raise ValueError(f"out must have shape {tuple(x.shape)}, got {tuple(out.shape)}")
    if np.dtype(out.dtype) != x.dtype:
        raise ValueError(f"out must have dtype {x.dtype}, got {np.dtype(out.dtype)}")
    return out


def replace(target, new):
    """Make the Dask array ``target`` stand for ``new`` (its graph, name and
    chunks), as ``dask.array.Array.__setitem__`` does: the user's object is
    updated without any task writing client memory."""
    target._meta = new._meta
    target.dask = new.dask
    target._name = new.name
    target._chunks = new.chunks
    return target


def _finish(y, out):
    return y if out is None else replace(out, y)


def _param(p, shape, name, dtype=np.float64):
    if isinstance(p, da.Array):
        raise TypeError(
            f"{name} must be a NumPy array_like for a dask x (it is small): call .compute() first"
        )
    return V.param(p, shape, name, dtype)


def _running(p, C, name, update):
    """A running statistic for a Dask x: (kind, array) with kind "dask",
    "host" or None; the checks of ``_validate.running``."""
    if p is None:
        return None, None
    if isinstance(p, da.Array):
        dt = np.dtype(p.dtype)
        if dt.kind != "f":
            raise TypeError(f"{name} must be a float array, got dtype {dt}")
        if tuple(p.shape) != (C,):
            raise ValueError(f"{name} must have shape ({C},), got {tuple(p.shape)}")
        return "dask", p
    if is_cuda_array(p):
        if update:
            raise ValueError(f"{name} is updated in place and must live where x lives (a dask array)")
        p = backend_for(p).to_host(backend_for(p).as_device(p))
    if not isinstance(p, np.ndarray):
        if update:
            raise TypeError(
                f"{name} is updated in place and must be a numpy or dask array, got {type(p).__name__}"
            )
        p = np.asarray(p)
    if p.dtype.kind != "f":
        raise TypeError(f"{name} must be a float array, got dtype {p.dtype}")
    if tuple(p.shape) != (C,):
        raise ValueError(f"{name} must have shape ({C},), got {tuple(p.shape)}")
    if update and not p.flags.writeable:
        raise ValueError(f"{name} is updated in place but is read-only")
    return "host", p


def _channel_view(a, ca, ndim):
    """Index inserting size-1 axes around a (C,) Dask array's only axis."""
    return a[tuple(slice(None) if i == ca else None for i in range(ndim))]


# --------------------------------------------------------------------------
# per-op parameter tasks (one per block of features)
# --------------------------------------------------------------------------


def _standardize_prm(s, ddof, with_mean, with_std):
    flat = [np.ascontiguousarray(s[n]).reshape(-1) for n in ("count", "mean", "m2")]
    prm = np.empty((3, flat[0].size))  # center, std, scale
    standardize_params(*flat, float(ddof), bool(with_mean), bool(with_std), *prm)
    out = np.zeros(s.shape, _PRM)
    out["center"] = prm[0].reshape(s.shape)
    out["stat"] = prm[1].reshape(s.shape)
    out["scale"] = prm[2].reshape(s.shape)
    return out


def _minmax_prm(s, lo, hi):
    out = np.zeros(s.shape, _PRM)
    out["center"] = s["min"]
    out["scale"] = minmax_factor.py_func(s["min"], s["max"], lo, hi)
    out["shift"] = lo
    return out


def _pnorm_prm(nrm, eps):
    out = np.zeros(nrm.shape, _PRM)
    with np.errstate(divide="ignore"):
        out["scale"] = 1.0 / np.maximum(nrm, eps) if eps > 0 else 1.0 / nrm
    return out


def _norm_prm(s, eps, rms, ca=None, weight=None, bias=None, block_info=None):
    """layer/RMS/instance norm: center mean (0 for RMS), scale rstd (times
    the channel's weight), shift the channel's bias."""
    out = np.zeros(s.shape, _PRM)
    if rms:
        # mean square from the exact moments: M2/n + mean**2 (no cancellation)
        ms = s["m2"] / s["count"] + s["mean"] * s["mean"]
        rstd = inv_std_array(ms, eps)
    else:
        rstd = inv_std_array(s["m2"] / s["count"], eps)
        out["center"] = s["mean"]
    out["stat"] = s["mean"]
    out["rstd"] = rstd
    scale = rstd
    if ca is not None:
        a, b = block_info[0]["array-location"][ca]
        bshape = [1] * s.ndim
        bshape[ca] = b - a
        if weight is not None:
            scale = scale * weight[a:b].reshape(bshape)
        if bias is not None:
            out["shift"] = np.broadcast_to(bias[a:b].reshape(bshape), s.shape)
    out["scale"] = scale
    return out


def _bn_prm(s, rm, rv, w, b, training, update, momentum, eps, block_info=None):
    """batch_norm's per-channel parameters (s: (C_blk,) moments; rm/rv: the
    chunk's running statistics or empty) with ``_stats.batch_norm_params``;
    rm/rv are copies: the updated values are returned, never written back."""
    C = s.shape[0] if training else (rm.shape[0] if rm.size else s.shape[0])
    if block_info is not None and w.size:
        a, bb = block_info[0]["array-location"][0]
        w = w[a:bb]
    if block_info is not None and b.size:
        a, bb = block_info[0]["array-location"][0]
        b = b[a:bb]
    rmk = np.array(rm, dtype=np.float64) if rm.size else rm
    rvk = np.array(rv, dtype=np.float64) if rv.size else rv
    cnt = np.ascontiguousarray(s["count"]) if training else np.empty(0)
    mu = np.ascontiguousarray(s["mean"]) if training else np.empty(0)
    m2 = np.ascontiguousarray(s["m2"]) if training else np.empty(0)
    prm = np.empty((4, C))
    batch_norm_params(cnt, mu, m2, rmk, rvk, w, b, bool(training), bool(update), momentum, eps, *prm)
    out = np.zeros(C, _BN_PRM)
    out["center"], out["rstd"], out["scale"], out["shift"] = prm
    if update:
        out["rm"], out["rv"] = rmk, rvk
    return out


def _as_1d_dask(a, chunks):
    if a is None:
        return np.empty(0)
    if isinstance(a, da.Array):
        return a.rechunk((chunks,))
    return da.from_array(np.asarray(a), chunks=(chunks,))


# --------------------------------------------------------------------------
# the ops
# --------------------------------------------------------------------------


def standardize(
    x, axis=0, *, ddof=0, with_mean=True, with_std=True, out=None, return_stats=False, stream=None
):
    x = as_input(x)
    axes = normalize_axis(axis, x.ndim)
    _nonempty(x)
    if isinstance(ddof, bool) or not isinstance(ddof, numbers.Integral) or ddof < 0:
        raise ValueError(f"ddof must be a non-negative int, got {ddof!r}")
    _check_out(out, x)
    fin = partial(_standardize_prm, ddof=ddof, with_mean=with_mean, with_std=with_std)
    prm = moments(x, axes, skipnan=True, minmax=False, finish=fin, dtype=_PRM)
    y = _finish(apply(x, axes, prm), out)
    if not return_stats:
        return y
    return y, prm["center"], prm["stat"]


def minmax_scale(x, feature_range=(0.0, 1.0), axis=0, *, clip=False, out=None, stream=None):
    lo, hi = V.feature_range(feature_range)
    x = as_input(x)
    axes = normalize_axis(axis, x.ndim)
    _nonempty(x)
    _check_out(out, x)
    fin = partial(_minmax_prm, lo=lo, hi=hi)
    prm = moments(x, axes, skipnan=True, minmax=True, want_moments=False, finish=fin, dtype=_PRM)
    y = apply(x, axes, prm, lo=lo if clip else None, hi=hi if clip else None)
    return _finish(y, out)


def _chunk_pnorm(block, axis, keepdims=True, p=2.0, **_):
    axes = tuple(axis)
    shape = _keep_shape(block.shape, axes)
    if 0 in block.shape:
        return np.zeros(shape)
    be, arr, ctx = _on_device(block)
    with ctx, task_threads(block.size):
        return np.asarray(reduce_pnorm(arr, axes, p, backend=be), dtype=np.float64).reshape(shape)


def _merge_pnorm(parts, axis, keepdims=True, p=2.0, **_):
    # the merge of _reduce.reduce_pnorm: max for inf, else the p-th power sum
    axes = tuple(axis)
    if np.isinf(p):
        return parts.max(axis=axes, keepdims=True)
    with np.errstate(over="ignore"):
        return pnorm_finish_array((parts**p).sum(axis=axes, keepdims=True), p)


def lp_normalize(x, p=2.0, axis=-1, eps=1e-12, *, out=None, stream=None):
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(f"p must be a positive number or inf, got {p!r}")
    p = float(p)
    if not p > 0:
        raise ValueError(f"p must be > 0, got {p!r}")
    eps = V.check_eps(eps)
    x = as_input(x)
    axes = normalize_axis(axis, x.ndim)
    _nonempty(x)
    _check_out(out, x)
    if _whole(x, axes):
        return _finish(map_ops(x, "lp_normalize", (), {"p": p, "axis": axes, "eps": eps}), out)
    nrm = da.reduction(
        x, partial(_chunk_pnorm, p=p), partial(_merge_pnorm, p=p), axis=axes, keepdims=True,
        dtype=np.float64, combine=partial(_merge_pnorm, p=p), concatenate=True,
        split_every=tree_width(x, axes, 8),
        meta=np.empty((0,) * x.ndim), name="numbanorm-pnorm",
    )  # fmt: skip
    prm = nrm.map_blocks(_pnorm_prm, eps, dtype=_PRM, token="numbanorm-params")
    return _finish(apply(x, axes, prm), out)


def _rows(x, normalized_shape):
    ns = V.shape_tuple(normalized_shape, "normalized_shape")
    k = len(ns)
    if k > x.ndim or tuple(x.shape[x.ndim - k :]) != ns:
        raise ValueError(
            f"normalized_shape={ns} must equal the trailing shape of x; x has shape {tuple(x.shape)}"
        )
    return ns, tuple(range(x.ndim - k, x.ndim))


def _row_op(name, x, normalized_shape, weight, bias, eps, out, return_stats, rms):
    ns, axes = _rows(x, normalized_shape)
    pdt = x.dtype if x.dtype != np.float16 else np.dtype(np.float32)
    w = _param(weight, ns, "weight", pdt)
    b = _param(bias, ns, "bias", pdt) if not rms else None
    _nonempty(x)
    _check_out(out, x)
    sd = V.stats_dtype(x.dtype)
    schunks = tuple(((1,) if i in axes else c) for i, c in enumerate(x.chunks))
    if _whole(x, axes):
        if rms:
            args, kw = (ns, w), {"eps": eps}
        else:
            args, kw = (ns, w, b, eps), {}
        nstat = 1 if rms else 2
        res = map_ops(x, name, args, kw, stats=[(sd, schunks, ())] * nstat if return_stats else ())
        if not return_stats:
            return _finish(res, out)
        return (_finish(res[0], out), *res[1:])
    prm = moments(
        x, axes, skipnan=False, minmax=False, finish=partial(_norm_prm, eps=eps, rms=rms), dtype=_PRM
    )
    full = (1,) * (x.ndim - len(ns)) + ns
    wf = None if w is None else np.asarray(w, np.float64).reshape(full)
    bf = None if b is None else np.asarray(b, np.float64).reshape(full)
    y = _finish(apply(x, axes, prm, weight=wf, bias=bf), out)
    if not return_stats:
        return y
    stats = (prm["rstd"].astype(sd),) if rms else (prm["stat"].astype(sd), prm["rstd"].astype(sd))
    return (y, *stats)


def layer_norm(
    x, normalized_shape, weight=None, bias=None, eps=1e-5, *, out=None, return_stats=False, stream=None
):
    x = as_input(x)
    eps = V.check_eps(eps)
    return _row_op("layer_norm", x, normalized_shape, weight, bias, eps, out, return_stats, False)


def rms_norm(x, normalized_shape, weight=None, eps=None, *, out=None, return_stats=False, stream=None):
    x = as_input(x)
    eps = V.rms_default_eps(x.dtype) if eps is None else V.check_eps(eps)
    return _row_op("rms_norm", x, normalized_shape, weight, None, eps, out, return_stats, True)


def _mean0(a):
    return a.mean(axis=0)


def batch_norm(
    x, running_mean=None, running_var=None, weight=None, bias=None, training=False, momentum=0.1,
    eps=1e-5, *, channel_axis=1, out=None, return_stats=False, stream=None, _host_running=False,
):  # fmt: skip
    x = as_input(x)
    if x.ndim < 2:
        raise ValueError(f"x must have at least 2 dimensions (N, C, ...), got shape {tuple(x.shape)}")
    ca = V.channel_axis(channel_axis, x.ndim)
    C = int(x.shape[ca])
    eps = V.check_eps(eps)
    mom = V.check_momentum(momentum)
    w = _param(weight, (C,), "weight")
    b = _param(bias, (C,), "bias")
    rm_kind, rm = _running(running_mean, C, "running_mean", bool(training))
    rv_kind, rv = _running(running_var, C, "running_var", bool(training))
    if (rm is None) != (rv is None):
        raise ValueError("running_mean and running_var must be given together")
    axes = tuple(a for a in range(x.ndim) if a != ca)
    n = math.prod(x.shape) // C if C else 0
    if not training and rm is None:
        raise ValueError("running_mean and running_var are required when training=False")
    _nonempty(x)
    if training and n <= 1:
        raise ValueError(
            f"Expected more than 1 value per channel when training, got input of shape {tuple(x.shape)}"
        )
    _check_out(out, x)
    update = bool(training) and rm is not None
    wk = np.empty(0) if w is None else np.ascontiguousarray(w)
    bk = np.empty(0) if b is None else np.ascontiguousarray(b)
    cchunks = x.chunks[ca]
    lazy_running = rm_kind == "dask" or rv_kind == "dask"
    if training:
        s = da.squeeze(moments(x, axes, skipnan=False, minmax=False), axis=axes)
        if update and not lazy_running:
            # NumPy running statistics: updated now, after an eager pass of
            # the statistics (no task may write client memory)
            s = da.from_array(np.asarray(s.compute()), chunks=(cchunks,))
    else:
        s = da.zeros(C, dtype=MOMENTS, chunks=(cchunks,))
    rmd = _as_1d_dask(rm, cchunks) if rm is not None else np.empty(0)
    rvd = _as_1d_dask(rv, cchunks) if rv is not None else np.empty(0)
    prm = da.map_blocks(
        _bn_prm, s, rmd, rvd, wk, bk, bool(training), update, mom, eps, dtype=_BN_PRM,
        token="numbanorm-params",
    )  # fmt: skip
    if update and not lazy_running:
        p = prm.compute()
        rm[...] = p["rm"]
        rv[...] = p["rv"]
        prm = da.from_array(p, chunks=(cchunks,))
    elif update:
        for kind, orig, field in ((rm_kind, rm, "rm"), (rv_kind, rv, "rv")):
            new = prm[field].astype(orig.dtype)
            if kind == "dask":
                replace(orig, new.rechunk(orig.chunks))
            else:  # a NumPy one beside a Dask one: updated now
                orig[...] = new.compute()
    y = _finish(apply(x, axes, _channel_view(prm, ca, x.ndim)), out)
    if not return_stats:
        return y
    sd = V.stats_dtype(x.dtype)
    return y, prm["center"].astype(sd), prm["rstd"].astype(sd)


def _channel_prm_block(s, eps, ca, weight, bias, block_info=None):
    return _norm_prm(s, eps, False, ca, weight, bias, block_info)


def instance_norm(
    x, running_mean=None, running_var=None, weight=None, bias=None, use_input_stats=True, momentum=0.1,
    eps=1e-5, *, channel_axis=1, out=None, return_stats=False, stream=None, _host_running=False,
):  # fmt: skip
    x = as_input(x)
    if x.ndim < 3:
        raise ValueError(f"x must have at least 3 dimensions (N, C, *spatial), got shape {tuple(x.shape)}")
    ca = V.channel_axis(channel_axis, x.ndim)
    if ca == 0:
        raise ValueError("channel_axis must not be 0: axis 0 is the batch axis of instance_norm")
    N, C = int(x.shape[0]), int(x.shape[ca])
    eps = V.check_eps(eps)
    mom = V.check_momentum(momentum)
    w = _param(weight, (C,), "weight")
    b = _param(bias, (C,), "bias")
    rm_kind, rm = _running(running_mean, C, "running_mean", bool(use_input_stats))
    rv_kind, rv = _running(running_var, C, "running_var", bool(use_input_stats))
    if (rm is None) != (rv is None):
        raise ValueError("running_mean and running_var must be given together")
    if not use_input_stats and rm is None:
        raise ValueError("running_mean and running_var are required when use_input_stats=False")
    _nonempty(x)
    axes = tuple(a for a in range(1, x.ndim) if a != ca)
    spatial = math.prod(x.shape[a] for a in axes)
    if use_input_stats and spatial <= 1:
        raise ValueError(
            f"Expected more than 1 spatial element when training, got input of shape {tuple(x.shape)}"
        )
    _check_out(out, x)
    sd = V.stats_dtype(x.dtype)
    kchunks = tuple(((1,) if i in axes else c) for i, c in enumerate(x.chunks))
    sq = tuple(a for a in axes)
    if not use_input_stats:
        # the running statistics as constants (or lazily, as Dask arrays)
        cchunks = x.chunks[ca]
        rmd, rvd = _as_1d_dask(rm, cchunks), _as_1d_dask(rv, cchunks)
        s = da.zeros(C, dtype=MOMENTS, chunks=(cchunks,))
        prm = da.map_blocks(
            _bn_prm, s, rmd, rvd, np.empty(0) if w is None else w, np.empty(0) if b is None else b,
            False, False, mom, eps, dtype=_BN_PRM, token="numbanorm-params",
        )  # fmt: skip
        y = _finish(apply(x, axes, _channel_view(prm, ca, x.ndim)), out)
        if not return_stats:
            return y
        shape = (N, C)
        mean = da.broadcast_to(prm["center"].astype(sd)[None, :], shape)
        rstd = da.broadcast_to(prm["rstd"].astype(sd)[None, :], shape)
        return y, mean, rstd
    if rm is None and _whole(x, axes):
        kw = {"weight": w, "bias": b, "momentum": mom, "eps": eps, "channel_axis": ca}
        st = (sd, _stat_chunks(x, ca, x.chunks[ca]), _spatial(x, ca))
        res = map_ops(
            x, "instance_norm", (), kw,
            stats=[st] * 2 if return_stats else (), cslice=(ca, ("weight", "bias"), 0),
        )  # fmt: skip
        if not return_stats:
            return _finish(res, out)
        return (_finish(res[0], out), *res[1:])
    s = moments(x, axes, skipnan=False, minmax=False)  # (N, C) with spatial axes 1
    if rm is not None and rm_kind == "host" and rv_kind == "host":
        s = da.from_array(np.asarray(s.compute()), chunks=kchunks)  # eager: NumPy running stats
    prm = s.map_blocks(_channel_prm_block, eps, ca, w, b, dtype=_PRM, token="numbanorm-params")
    y = _finish(apply(x, axes, prm), out)
    if rm is not None:
        s2 = da.squeeze(s, axis=sq)  # (N, C)
        bmean = da.map_blocks(_mean0, s2["mean"].rechunk({0: -1}), drop_axis=0, dtype=np.float64)
        bvar = da.map_blocks(
            _mean0, (s2["m2"] / (s2["count"] - 1.0)).rechunk({0: -1}), drop_axis=0, dtype=np.float64
        )
        for kind, orig, new in ((rm_kind, rm, bmean), (rv_kind, rv, bvar)):
            if kind == "dask":
                upd = da.map_blocks(
                    running_update.py_func, orig.astype(np.float64).rechunk(new.chunks), new, mom
                )
                replace(orig, upd.astype(orig.dtype).rechunk(orig.chunks))
            else:
                orig[...] = running_update.py_func(np.array(orig, dtype=np.float64), new.compute(), mom)
    if not return_stats:
        return y
    s2 = da.squeeze(prm, axis=sq)
    return y, s2["stat"].astype(sd), s2["rstd"].astype(sd)


def _group_prm(s, G, eps, ca, weight, bias):
    """group_norm's parameters from per-(n, c) moments with whole C: the
    channels of each group Chan-merged (``_stats.merge_mid``)."""
    N, C = s.shape[0], s.shape[ca]
    Cg = C // G
    sc = np.moveaxis(s, ca, 1).reshape(N, C)  # (N, C): the other axes are 1
    q = np.ascontiguousarray(sc).reshape(N * G, Cg, 1)
    c, mu, r, m2, _, _ = merge_mid(q["count"], q["mean"], q["resid"], q["m2"], q["min"], q["max"], False)
    mean = (mu + r).reshape(N, G)
    rstd = inv_std_array((m2 / c).reshape(N, G), eps)
    out = np.zeros((N, C), _PRM)
    out["center"] = np.repeat(mean, Cg, axis=1)
    out["stat"] = out["center"]
    out["rstd"] = np.repeat(rstd, Cg, axis=1)
    out["scale"] = out["rstd"] * (weight if weight is not None else 1.0)
    out["shift"] = np.broadcast_to(bias if bias is not None else np.zeros(C), (N, C))
    return np.moveaxis(out.reshape((N, C) + (1,) * (s.ndim - 2)), 1, ca)


def group_norm(
    x,
    num_groups,
    weight=None,
    bias=None,
    eps=1e-5,
    *,
    channel_axis=1,
    out=None,
    return_stats=False,
    stream=None,
):
    x = as_input(x)
    if x.ndim < 2:
        raise ValueError(f"x must have at least 2 dimensions (N, C, ...), got shape {tuple(x.shape)}")
    ca = V.channel_axis(channel_axis, x.ndim)
    if ca == 0:
        raise ValueError("channel_axis must not be 0: axis 0 is the batch axis of group_norm")
    if isinstance(num_groups, bool) or not isinstance(num_groups, (int, np.integer)):
        raise TypeError(f"num_groups must be an int, got {num_groups!r}")
    C = int(x.shape[ca])
    G = int(num_groups)
    if G <= 0 or C % G:
        raise ValueError(f"num_groups={num_groups} must be positive and divide the number of channels C={C}")
    eps = V.check_eps(eps)
    w = _param(weight, (C,), "weight")
    b = _param(bias, (C,), "bias")
    _nonempty(x)
    _check_out(out, x)
    sd = V.stats_dtype(x.dtype)
    Cg = C // G
    axes = tuple(a for a in range(1, x.ndim) if a != ca)
    if _whole(x, axes) and all(c % Cg == 0 for c in x.chunks[ca]):
        st = (sd, _stat_chunks(x, ca, tuple(c // Cg for c in x.chunks[ca])), _spatial(x, ca))
        res = map_ops(
            x, "group_norm", (), {"num_groups": G, "weight": w, "bias": b, "eps": eps, "channel_axis": ca},
            stats=[st] * 2 if return_stats else (), cslice=(ca, ("weight", "bias"), Cg),
        )  # fmt: skip
        if not return_stats:
            return _finish(res, out)
        return (_finish(res[0], out), *res[1:])
    s = moments(x, axes, skipnan=False, minmax=False).rechunk({ca: -1})
    prm = s.map_blocks(_group_prm, G, eps, ca, w, b, dtype=_PRM, token="numbanorm-params")
    prm = prm.rechunk({ca: x.chunks[ca]})
    y = _finish(apply(x, axes, prm), out)
    if not return_stats:
        return y
    s2 = da.squeeze(prm, axis=axes)  # (N, C)
    return y, s2["stat"][:, ::Cg].astype(sd), s2["rstd"][:, ::Cg].astype(sd)


OPS = {
    "batch_norm": batch_norm,
    "instance_norm": instance_norm,
    "layer_norm": layer_norm,
    "group_norm": group_norm,
    "rms_norm": rms_norm,
    "standardize": standardize,
    "minmax_scale": minmax_scale,
    "lp_normalize": lp_normalize,
}


def call(name: str, bound) -> Any:
    """Run the public function ``name`` on a Dask x (``bound``: its
    ``inspect.BoundArguments``, defaults applied)."""
    return OPS[name](*bound.args, **bound.kwargs)
