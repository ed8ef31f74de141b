"""Dask helpers: warm the workers, choose numba's threads per task.

Every public function of numbanorm takes a ``dask.array.Array`` and returns a
lazy one (:mod:`numbanorm.backends.dask`); this module holds what a Dask user
configures around that.  Dask is imported by this module, never by
``import numbanorm`` (``pip install "numbanorm[dask]"``).

Functions
---------
warmup
    Load (or compile) numbanorm's kernels once in every worker process.
threads_per_task
    The numba threads of an output-pass task where it runs.
exact_threads
    The numba threads of a task whose bits depend on the kernels' split of
    the work (statistics, p-norms, one-pass ops): the same on every
    scheduler, so that results are bitwise identical on all of them.

Configuration (``dask.config``)
-------------------------------
``"numbanorm.threads-per-task"``
    numba threads per task, for every numbanorm task (default: 1 for the
    statistics, p-norms and one-pass ops, see :func:`exact_threads`; the
    process's cores divided by the tasks that run at once in it for the
    output pass, see :func:`threads_per_task`).  Set it to the same value
    wherever the graph may run to keep results bitwise identical.
``"numbanorm.reread"``
    True (default): the output pass of a two-pass op reads ``x`` through a
    clone of its graph, recomputing each chunk once more instead of holding
    every chunk from the statistics pass (set False for an ``x`` whose chunks
    are costly to produce and fit in memory, or ``x.persist()`` first).

Examples
--------
>>> import dask.array as da, numbanorm as nbn
>>> x = da.random.default_rng(0).standard_normal((10_000, 8), chunks=(1_000, 8)) + 1e6
>>> z = nbn.standardize(x)             # lazy, x's chunks
>>> bool(abs(float(z.std(axis=0).max().compute()) - 1) < 1e-6)
True
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from .backends.dask import REREAD_KEY, THREADS_KEY, exact_threads, threads_per_task

__all__ = ["warmup", "threads_per_task", "exact_threads", "THREADS_KEY", "REREAD_KEY"]


def _task_cases(dtype: str) -> list:
    """The kernels Dask tasks run: the moments (rows and lanes, NaN skipped
    or not, min/max), the output pass, the fused rows and the p-norms, on a
    small and a large chunk."""
    import numpy as np

    from ._reduce import apply_affine, reduce_moments, reduce_pnorm
    from .functional import layer_norm

    rng = np.random.default_rng(0)
    cases = []
    for shape in ((64, 8), (4096, 64)):
        x = (rng.standard_normal(shape) + 3).astype(dtype)
        k = np.zeros(shape[1])

        def run(x=x, k=k):
            for skipnan, minmax in ((False, False), (True, False), (True, True)):
                reduce_moments(x, (0,), skipnan=skipnan, minmax=minmax)
            reduce_moments(x, (1,), skipnan=False, minmax=False)
            apply_affine(x, (0,), k, k + 1, k, out=np.empty_like(x))
            reduce_pnorm(x, (0,), 2.0)
            layer_norm(x, x.shape[1])

        cases.append(run)
    return cases


def _warm(dtypes: Sequence[str], full: bool = False) -> dict[str, Any]:
    """Run the warm-up cases in this process."""
    from . import _warmup
    from ._cache import dispatcher_counts
    from .backends.cpu import _tasks

    t0 = time.perf_counter()
    for dt in dtypes:
        calls = [c for _, c in _warmup.cases(dt)] if full else _task_cases(dt)
        for call in calls:
            call()
    compiled, loaded = dispatcher_counts()
    return {
        "seconds": round(time.perf_counter() - t0, 3),
        "compiled": compiled + _tasks.COUNTS["compiled"],
        "loaded": loaded + _tasks.COUNTS["loaded"],
    }


def warmup(client: Any = None, *, dtypes: Sequence[str] = ("float32", "float64"), full: bool = False) -> dict:
    """Load numbanorm's kernels once in every Dask worker process.

    A process's first call of an op loads its kernels from numba's on-disk
    cache (or compiles them: a few seconds per op with a cold cache, see the
    README's "First calls").  On a cluster each worker process pays that on
    its first numbanorm task; ``warmup`` pays it up front, in parallel on
    every worker, so that timings and task durations are steady from the
    first graph (workers that join later warm up on their first task, or
    when this is called again).  With a shared file system (or ``numbanorm warmup`` baked
    into the workers' image) the workers load, not compile.

    Parameters
    ----------
    client : distributed.Client, optional
        The cluster's client: every worker runs the warm-up
        (``client.run``).  None warms this process (the threaded and
        synchronous schedulers run here).
    dtypes : sequence of str, default ("float32", "float64")
        The dtypes whose kernels are loaded.
    full : bool, default False
        Every kernel variant (the cases of ``numbanorm warmup``: also the
        NumPy-only paths, ~1-2 min per process with a cold cache) instead of
        the kernels Dask tasks run (statistics, output pass, fused rows,
        p-norms).

    Returns
    -------
    dict
        Per worker address (``"local"`` without a client): the seconds it
        took and how many kernels that process compiled and loaded so far.

    Examples
    --------
    >>> import numbanorm.dask
    >>> info = numbanorm.dask.warmup(dtypes=("float32",))
    >>> sorted(info["local"])
    ['compiled', 'loaded', 'seconds']
    """
    dts = tuple(str(d) for d in dtypes)
    if client is None:
        return {"local": _warm(dts, full)}
    return client.run(_warm, dts, full)
