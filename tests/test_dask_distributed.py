"""numbanorm on a dask.distributed LocalCluster of two worker processes.

One cluster for the module (starting one takes a few seconds); each test is
a few small graphs.  Functions in the graphs pickle by reference (a kernel
defined in __main__ would be pickled by value and compiled on each worker).
"""

from __future__ import annotations

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
da = pytest.importorskip("dask.array")
import dask  # noqa: E402

import numbanorm as nbn  # noqa: E402
import numbanorm.dask  # noqa: E402
from numbanorm.backends import dask as dbe  # noqa: E402


@pytest.fixture(scope="module")
def client():
    with (
        dask.config.set({"distributed.worker.daemon": False, "distributed.admin.tick.limit": "10s"}),
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", memory_limit="2GiB"
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


def _probe(b):
    return np.full(b.shape, dbe.threads_per_task(), np.int64)


def _split_sensitive():
    """Chunks whose kernels cut the work by numba's thread count (1.2 MiB
    column chunks; rows of 140000 values, two per chunk): at the synchronous
    scheduler's old default (2 threads on this 2-core machine) standardize's
    std and layer_norm's output differed from the workers' (1 thread)."""
    rng = np.random.default_rng(0)
    xn = (rng.standard_normal((120_000, 5)) + 1e6).astype(np.float32)
    x = da.from_array(xn, chunks=(60_000, 5))
    rn = (rng.standard_normal((4, 140_000)) * 3 + 1e3).astype(np.float32)
    r = da.from_array(rn, chunks=(2, -1))
    small = da.from_array(xn[:3000], chunks=(333, 2))  # odd chunks, a tree of merges
    return [
        *nbn.standardize(x, return_stats=True),  # the std's last bits too
        nbn.batch_norm(x, training=True),
        nbn.minmax_scale(x),
        nbn.lp_normalize(x, axis=0),
        nbn.layer_norm(r, 140_000),
        nbn.standardize(small),
        nbn.layer_norm(small, 5),
    ]


def test_distributed_bitwise_and_warm(client):
    info = numbanorm.dask.warmup(client, dtypes=("float32",))
    assert len(info) == 2 and all("seconds" in v for v in info.values())
    ys = _split_sensitive()
    ref = dask.compute(*ys, scheduler="sync")  # default settings on both sides
    got = client.compute(ys, sync=True)
    for i, (a, b) in enumerate(zip(ref, got, strict=True)):
        assert np.array_equal(a, b), i
    # one numba thread per task: the nanny's OMP_NUM_THREADS=1, one thread per worker
    threads = client.compute(da.zeros(4, chunks=1).map_blocks(_probe, dtype=np.int64), sync=True)
    assert set(threads) == {1}
    # (one test: with pytest-xdist, tests of a module may go to two processes,
    # each of which would start a cluster)
    _scaler_and_running_stats(client)


def _scaler_and_running_stats(client):
    rng = np.random.default_rng(1)
    xn = (rng.standard_normal((2000, 4)) * 3 + 1e5).astype(np.float32)
    x = da.from_array(xn, chunks=(300, 4)).persist()
    sc = nbn.StandardScaler().partial_fit(x[:1000]).partial_fit(x[1000:])
    ref = nbn.StandardScaler().fit(xn)
    np.testing.assert_allclose(sc.var_, ref.var_, rtol=1e-12)
    t = client.compute(sc.transform(x), sync=True)
    np.testing.assert_allclose(t, ref.transform(xn), atol=1e-5)
    rm = da.zeros(4, chunks=2)
    rv = da.ones(4, chunks=2)
    y = nbn.batch_norm(x, rm, rv, training=True)
    rm_ref, rv_ref = np.zeros(4), np.ones(4)
    y_ref = nbn.batch_norm(xn, rm_ref, rv_ref, training=True)
    y, rm_v, rv_v = client.compute([y, rm, rv], sync=True)
    np.testing.assert_allclose(rm_v, rm_ref, rtol=1e-12)
    np.testing.assert_allclose(rv_v, rv_ref, rtol=1e-12)
    np.testing.assert_allclose(y, y_ref, atol=1e-5)
