"""Every public function on Dask arrays against the NumPy path (issue 18).

The oracle is numbanorm's own NumPy path (itself checked against the float64
references of tests/reference.py elsewhere) and, for accuracy, float64
two-pass references with math.fsum.  Shapes are small: chunks of 1 make
hundreds of tasks.
"""

from __future__ import annotations

import math
import threading
import weakref

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

import numbanorm as nbn  # noqa: E402
from numbanorm.backends import dask as dbe  # noqa: E402

# (name, args, kwargs, reduced axes of a (N, C, H, W) x): every public function
OPS4 = [
    ("batch_norm", (None, None, None, None, True), {}),
    ("batch_norm", (None, None, "w", "b", True), {"return_stats": True}),
    ("instance_norm", (), {}),
    ("instance_norm", (None, None, "w", "b"), {"return_stats": True}),
    ("group_norm", (2,), {}),
    ("group_norm", (2, "w", "b"), {"return_stats": True}),
    ("layer_norm", ((3, 4),), {}),
    ("layer_norm", ((3, 4), "w34", "b34"), {"return_stats": True}),
    ("rms_norm", (4,), {"return_stats": True}),
    ("rms_norm", ((3, 4), "w34"), {}),
    ("standardize", (), {"axis": (0, 2, 3), "return_stats": True}),
    ("standardize", (), {"axis": 0, "ddof": 1}),
    ("minmax_scale", ((-1, 2),), {"axis": (0, 2), "clip": True}),
    ("lp_normalize", (), {}),
    ("lp_normalize", (3.0, (1, 3)), {}),
    ("lp_normalize", (np.inf, 0), {}),
]

CASES4 = [
    ((2, 3, 2, 3), np.float16),  # along and across every reduced axis, uneven last chunks
    ((2, 3, 2, 3), np.float32),
    ((2, 3, 2, 3), np.float64),
    ((1, 1, 1, 1), np.float32),  # chunks of 1
    ((5, 4, 3, 4), np.float64),  # whole
    ((5, 2, 3, 4), np.float32),  # whole groups and spatial axes: one pass per chunk
    ((3, 4, 3, 1), np.float64),
]


def _params(args, C=4, rng=None):
    rng = rng or np.random.default_rng(1)
    table = {
        "w": rng.uniform(0.5, 2, C),
        "b": rng.standard_normal(C),
        "w34": rng.uniform(0.5, 2, (3, 4)),
        "b34": rng.standard_normal((3, 4)),
    }
    return tuple(table[a] if isinstance(a, str) else a for a in args)


def _close(a, b, dtype):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    assert a.shape == b.shape
    assert np.array_equal(np.isnan(a), np.isnan(b))
    tol = {np.float16: 2e-2, np.float32: 2e-5, np.float64: 1e-12}[np.dtype(dtype).type]
    scale = max(1.0, float(np.nanmax(np.abs(a))) if np.isfinite(a).any() else 1.0)
    np.testing.assert_allclose(b, a, rtol=0, atol=tol * scale, equal_nan=True)


@pytest.mark.parametrize("chunks, dtype", CASES4, ids=[f"{c}-{np.dtype(d).name}" for c, d in CASES4])
def test_every_function_matches_numpy(chunks, dtype):
    rng = np.random.default_rng(0)
    xn = (rng.standard_normal((5, 4, 3, 4)) * 3 + 10).astype(dtype)
    x = da.from_array(xn, chunks=chunks)
    for name, args, kw in OPS4:
        a = _params(args)
        ref = getattr(nbn, name)(xn, *a, **kw)
        got = getattr(nbn, name)(x, *a, **kw)
        ref = ref if isinstance(ref, tuple) else (ref,)
        got = got if isinstance(got, tuple) else (got,)
        assert isinstance(got[0], da.Array) and got[0].chunks == x.chunks, name
        assert got[0].dtype == ref[0].dtype
        vals = dask.compute(*got, scheduler="sync")
        for r, g in zip(ref, vals, strict=True):
            assert np.asarray(g).dtype == np.asarray(r).dtype, (name, kw)
            _close(r, g, dtype)


@pytest.mark.parametrize("channel_axis", [1, -1])
def test_channels_last_and_one_value_chunks(channel_axis):
    rng = np.random.default_rng(2)
    xn = rng.standard_normal((3, 5, 6) if channel_axis == -1 else (3, 6, 5)).astype(np.float32)
    for chunks in [(1, 2, 3), (2, 5, 1), (3, 1, 6)]:
        x = da.from_array(xn, chunks=chunks)
        for name, args in [
            ("batch_norm", (None, None, None, None, True)),
            ("instance_norm", ()),
            ("group_norm", (3,)),
        ]:
            ref = getattr(nbn, name)(xn, *args, channel_axis=channel_axis)
            got = getattr(nbn, name)(x, *args, channel_axis=channel_axis).compute()
            _close(ref, got, np.float32)


def test_bitwise_in_one_chunk():
    """One chunk: the same kernels and merges as the NumPy path (beyond the
    small-input kernels, whose loops may round differently)."""
    rng = np.random.default_rng(3)
    xn = (rng.standard_normal((5000, 7)) + 1e3).astype(np.float32)
    x = da.from_array(xn, chunks=-1)
    for name, kw in [
        ("standardize", {}),
        ("minmax_scale", {}),
        ("layer_norm", {"normalized_shape": 7}),
        ("batch_norm", {"training": True}),
    ]:
        ref = getattr(nbn, name)(xn, **kw)
        assert np.array_equal(getattr(nbn, name)(x, **kw).compute(), ref), name


def test_nan_and_empty_chunks():
    rng = np.random.default_rng(4)
    xn = rng.standard_normal((7, 5))
    xn[:, 1] = np.nan
    xn[2, 3] = np.nan
    x = da.from_array(xn, chunks=((2, 0, 4, 0, 1), (1, 0, 4)))
    for name, kw in [
        ("standardize", {}),
        ("standardize", {"axis": 1}),
        ("minmax_scale", {}),
        ("lp_normalize", {"axis": 0}),
        ("lp_normalize", {}),
        ("batch_norm", {"training": True}),
        ("layer_norm", {"normalized_shape": 5}),
    ]:
        ref = getattr(nbn, name)(xn, **kw)
        got = getattr(nbn, name)(x, **kw)
        assert got.chunks == x.chunks
        _close(ref, got.compute(), np.float64)
    rs = nbn.RunningStats().update(x)
    ref = nbn.RunningStats().update(xn)
    for attr in ("count", "nan_count", "min", "max"):
        np.testing.assert_array_equal(getattr(rs, attr), getattr(ref, attr))
    np.testing.assert_allclose(rs.mean, ref.mean, rtol=1e-14)
    np.testing.assert_allclose(rs.var(), ref.var(), rtol=1e-14)


def test_integer_input_is_float64():
    xn = np.arange(24).reshape(6, 4)
    got = nbn.standardize(da.from_array(xn, chunks=2))
    assert got.dtype == np.float64
    np.testing.assert_allclose(got.compute(), nbn.standardize(xn), rtol=0, atol=1e-15)


# --------------------------------------------------------------------------
# accuracy on 1e6 + randn, float32
# --------------------------------------------------------------------------


def _exact_var(col):
    v = np.asarray(col, np.float64)
    m = math.fsum(v) / v.size
    return math.fsum((v - m) ** 2) / v.size, m


@pytest.mark.parametrize(
    "shape, chunks, axis",
    [
        ((200_000,), (10_000,), 0),
        ((40_000, 4), (1_000, 3), 0),
        ((40_000, 4), (40_000, 4), 0),
        ((16, 3, 40, 40), (3, 2, 17, 40), (0, 2, 3)),
    ],
    ids=["1d", "per-column", "one-chunk", "per-channel"],
)
def test_accuracy_large_mean(shape, chunks, axis):
    rng = np.random.default_rng(5)
    xn = (1e6 + rng.standard_normal(shape)).astype(np.float32)
    x = da.from_array(xn, chunks=chunks)
    axes = (axis,) if isinstance(axis, int) else axis
    kept = [a for a in range(xn.ndim) if a not in axes]
    flat = np.moveaxis(xn, kept, list(range(len(kept)))).reshape(math.prod(xn.shape[a] for a in kept), -1)
    ref = [_exact_var(row) for row in flat]
    rs = nbn.RunningStats().update(x, axis=axes)
    var = rs.var().reshape(-1)
    for (v, _), got in zip(ref, var, strict=True):
        assert abs(got / v - 1) <= 1e-10
    y, mean, std = nbn.standardize(x, axis=axes, return_stats=True)
    mean, std, y = dask.compute(mean, std, y)
    x64 = xn.astype(np.float64)
    refy = (x64 - np.asarray([m for _, m in ref]).reshape(mean.shape)) / np.sqrt(
        np.asarray([v for v, _ in ref]).reshape(std.shape)
    )
    assert np.abs(y - refy).max() <= 1e-5


# --------------------------------------------------------------------------
# laziness, reads, memory, graph size
# --------------------------------------------------------------------------

_LOCK = threading.Lock()


class _Source:
    """A chunk source that counts reads and the chunks alive at once."""

    def __init__(self, xn):
        self.xn = xn
        self.reads = {}
        self.alive = 0
        self.max_alive = 0

    def _gone(self):
        with _LOCK:
            self.alive -= 1

    def block(self, block_info=None):
        loc = block_info[None]["array-location"]
        key = tuple(a for a, _ in loc)
        out = self.xn[tuple(slice(a, b) for a, b in loc)].copy()
        with _LOCK:
            self.reads[key] = self.reads.get(key, 0) + 1
            self.alive += 1
            self.max_alive = max(self.max_alive, self.alive)
        weakref.finalize(out, self._gone)
        return out

    def array(self, chunks):
        return da.map_blocks(
            self.block, dtype=self.xn.dtype, chunks=chunks, meta=np.empty((0,) * self.xn.ndim)
        )


@pytest.fixture
def source():
    rng = np.random.default_rng(6)
    xn = (rng.standard_normal((4000, 6)) + 5).astype(np.float32)
    return _Source(xn)


def test_no_computation_at_call_time(source):
    x = source.array(((400,) * 10, (3, 3)))
    x4 = da.from_array(np.ones((4, 4, 3, 3)), chunks=2).map_blocks(source.block, dtype=float)
    calls = [
        lambda: nbn.standardize(x, return_stats=True),
        lambda: nbn.minmax_scale(x),
        lambda: nbn.lp_normalize(x, axis=0),
        lambda: nbn.lp_normalize(x),
        lambda: nbn.batch_norm(x, training=True, return_stats=True),
        lambda: nbn.layer_norm(x, 6, return_stats=True),
        lambda: nbn.rms_norm(x, 6),
        lambda: nbn.instance_norm(x4, return_stats=True),
        lambda: nbn.group_norm(x4, 2, return_stats=True),
        lambda: nbn.StandardScaler().fit(source.xn).transform(x),
    ]
    for c in calls:
        c()
    assert source.reads == {}


def test_statistics_read_each_chunk_once(source):
    x = source.array(((400,) * 10, (2, 4)))
    nbn.RunningStats().update(x)
    assert set(source.reads.values()) == {1} and len(source.reads) == 20
    source.reads.clear()
    sc = nbn.StandardScaler().fit(x)
    assert set(source.reads.values()) == {1} and len(source.reads) == 20
    np.testing.assert_allclose(sc.mean_, source.xn.astype(np.float64).mean(0), rtol=1e-15)


@pytest.mark.parametrize("scheduler, workers", [("sync", 1), ("threads", 2)])
def test_standardize_reads_twice_bounded_memory(source, scheduler, workers):
    x = source.array(((200,) * 20, (6,)))
    y = nbn.standardize(x)
    with dask.config.set(scheduler=scheduler, num_workers=workers):
        y.sum().compute()  # (the output is not kept: only source chunks count)
    assert len(source.reads) == 20 and max(source.reads.values()) <= 2
    assert source.max_alive <= workers + 1
    # persisted: the output pass reads the persisted chunks, not the source
    xp = x.persist(scheduler="sync")
    source.reads.clear()
    nbn.standardize(xp).compute(scheduler=scheduler)
    assert source.reads == {}


def _numbanorm_tasks(arr) -> int:
    keys = arr.__dask_graph__().keys()
    return sum(1 for k in keys if (k[0] if isinstance(k, tuple) else k).startswith("numbanorm-"))


@pytest.mark.parametrize(
    "call",
    [
        lambda x: nbn.standardize(x),
        lambda x: nbn.minmax_scale(x),
        lambda x: nbn.batch_norm(x, training=True),
        lambda x: nbn.lp_normalize(x, axis=0),
        lambda x: nbn.layer_norm(x, 6),
    ],
)
def test_tasks_per_chunk(call):
    x = da.zeros((6400, 6), chunks=(100, 3), dtype=np.float32)  # 128 chunks
    y = call(x)
    assert _numbanorm_tasks(y) / x.npartitions <= 2.5


# --------------------------------------------------------------------------
# validation: the NumPy path's errors, at call time
# --------------------------------------------------------------------------

BAD = [
    ("standardize", (), {"axis": 5}),
    ("standardize", (), {"axis": "a"}),
    ("standardize", (), {"ddof": -1}),
    ("minmax_scale", ((1, 0),), {}),
    ("minmax_scale", ("ab",), {}),
    ("lp_normalize", (0.0,), {}),
    ("lp_normalize", (True,), {}),
    ("lp_normalize", (), {"eps": -1.0}),
    ("batch_norm", (), {}),
    ("batch_norm", (None, None, np.ones(3)), {"training": True}),
    ("batch_norm", (np.zeros(4), None), {"training": True}),
    ("batch_norm", (np.zeros(4), np.ones(4)), {"momentum": 2.0}),
    ("batch_norm", (), {"training": True, "channel_axis": 7}),
    ("instance_norm", (), {"channel_axis": 0}),
    ("instance_norm", (None, None, None, None, False), {}),
    ("group_norm", (3,), {}),
    ("group_norm", (True,), {}),
    ("layer_norm", (5,), {}),
    ("layer_norm", ((3, 4), np.ones(4)), {}),
    ("layer_norm", ((3, 4),), {"eps": float("nan")}),
    ("rms_norm", ("x",), {}),
    ("rms_norm", (4,), {"bogus": 1}),
]


@pytest.mark.parametrize("name, args, kw", BAD, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(BAD)])
def test_same_errors_as_numpy(name, args, kw):
    xn = np.ones((5, 4, 3, 4), np.float32)
    x = da.from_array(xn, chunks=2)
    with pytest.raises((TypeError, ValueError)) as ref:
        getattr(nbn, name)(xn, *args, **kw)
    with pytest.raises(ref.type) as got:
        getattr(nbn, name)(x, *args, **kw)
    assert str(got.value) == str(ref.value)


def test_errors_of_their_own():
    x = da.ones((4, 3), chunks=2)
    with pytest.raises(TypeError, match="complex"):
        nbn.standardize(x.astype(np.complex64))
    with pytest.raises(ValueError, match="empty"):
        nbn.standardize(da.ones((0, 3), chunks=2))
    with pytest.raises(ValueError, match="unknown chunk sizes"):
        nbn.standardize(x[x[:, 0] > 0])
    with pytest.raises(TypeError, match="same kind of array"):
        nbn.standardize(x, out=np.empty((4, 3)))
    with pytest.raises(ValueError, match="out must have shape"):
        nbn.standardize(x, out=da.ones((3, 3)))
    with pytest.raises(TypeError, match="NumPy array_like"):
        nbn.layer_norm(x, 3, weight=da.ones(3))


def test_out_is_replaced_lazily():
    xn = np.random.default_rng(7).standard_normal((6, 4))
    x = da.from_array(xn, chunks=3)
    out = da.zeros((6, 4), chunks=3)
    assert nbn.standardize(x, out=out) is out
    np.testing.assert_allclose(out.compute(), nbn.standardize(xn), atol=1e-15)
    assert nbn.layer_norm(x, 4, out=x) is x  # in place: x now stands for the result
    np.testing.assert_allclose(x.compute(), nbn.layer_norm(xn, 4), atol=1e-15)


# --------------------------------------------------------------------------
# running statistics
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name, flag", [("batch_norm", "training"), ("instance_norm", "use_input_stats")])
def test_running_stats_dask_are_replaced_lazily(name, flag):
    rng = np.random.default_rng(8)
    xn = rng.standard_normal((6, 4, 5)).astype(np.float32) + 3
    x = da.from_array(xn, chunks=(2, 3, 2))
    rm, rv = np.zeros(4, np.float32), np.ones(4, np.float32)
    rmd, rvd = da.from_array(rm.copy(), chunks=2), da.from_array(rv.copy(), chunks=2)
    ref = getattr(nbn, name)(xn, rm, rv, **{flag: True})
    y = getattr(nbn, name)(x, rmd, rvd, **{flag: True})
    assert isinstance(rmd, da.Array) and rmd.dtype == np.float32 and rmd.chunks == ((2, 2),)
    np.testing.assert_allclose(rmd.compute(), rm, rtol=1e-6)
    np.testing.assert_allclose(rvd.compute(), rv, rtol=1e-6)
    np.testing.assert_allclose(y.compute(), ref, atol=2e-6)
    # evaluation with the lazy running statistics
    ev = getattr(nbn, name)(x, rmd, rvd, **{flag: False})
    np.testing.assert_allclose(ev.compute(), getattr(nbn, name)(xn, rm, rv, **{flag: False}), atol=2e-6)


@pytest.mark.parametrize("name, flag", [("batch_norm", "training"), ("instance_norm", "use_input_stats")])
def test_running_stats_numpy_are_updated_at_call_time(name, flag):
    rng = np.random.default_rng(11)
    src = _Source((rng.standard_normal((8, 6, 500)) + 2).astype(np.float32))
    x = src.array(((3, 5), (4, 2), (250, 250)))
    rm, rv = np.zeros(6), np.ones(6)
    rm2, rv2 = rm.copy(), rv.copy()
    ref = getattr(nbn, name)(src.xn, rm2, rv2, **{flag: True})
    y = getattr(nbn, name)(x, rm, rv, **{flag: True})
    assert set(src.reads.values()) == {1} and len(src.reads) == 8  # the eager statistics pass
    np.testing.assert_allclose(rm, rm2, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(rv, rv2, rtol=1e-12)
    np.testing.assert_allclose(y.compute(), ref, atol=1e-5)
    with pytest.raises(ValueError, match="read-only"):
        rm.flags.writeable = False
        getattr(nbn, name)(x, rm, rv, **{flag: True})


def test_scalers_on_dask():
    rng = np.random.default_rng(9)
    xn = (rng.standard_normal((3000, 5)) * 4 + 1e5).astype(np.float32)
    xn[7, 2] = np.nan
    x = da.from_array(xn, chunks=(701, 2))
    for cls in (nbn.StandardScaler, nbn.MinMaxScaler):
        ref = cls().fit(xn)
        got = cls().partial_fit(x[:1000]).partial_fit(x[1000:])
        for attr in ("n_samples_seen_", "mean_", "var_", "scale_", "data_min_", "data_max_", "min_"):
            if hasattr(ref, attr):
                np.testing.assert_allclose(getattr(got, attr), getattr(ref, attr), rtol=1e-12)
                assert isinstance(getattr(got, attr), (np.ndarray, np.number, float, int))
        t = got.transform(x)
        assert isinstance(t, da.Array) and t.chunks == x.chunks
        np.testing.assert_allclose(t.compute(), ref.transform(xn), atol=1e-5)
        back = got.inverse_transform(t)
        np.testing.assert_allclose(back.compute(), xn, rtol=1e-6)
        ft = cls().fit_transform(x)
        assert isinstance(ft, da.Array)
    with pytest.raises(TypeError, match="NumPy"):
        nbn.StandardScaler().fit(x, sample_weight=np.ones(3000))
    with pytest.raises(ValueError, match="features"):
        nbn.StandardScaler().fit(x).transform(x[:, :3])


def _layers():
    rng = np.random.default_rng(12)
    out = [
        nbn.BatchNorm(4),
        nbn.BatchNorm(4, momentum=None, dtype=np.float64),
        nbn.BatchNorm(4, track_running_stats=False),
        nbn.BatchNorm(3, channel_axis=-1),
        nbn.InstanceNorm(4),
        nbn.InstanceNorm(4, affine=True, track_running_stats=True),
        nbn.LayerNorm((5, 3)),
        nbn.GroupNorm(2, 4),
        nbn.RMSNorm(3),
    ]
    for layer in out:  # trained-looking affine parameters
        for name in ("weight", "bias"):
            p = getattr(layer, name, None)
            if p is not None:
                p[...] = rng.uniform(0.5, 2, p.shape)
    return out


@pytest.mark.parametrize("i", range(9), ids=lambda i: repr(_layers()[i]).split("(")[0] + str(i))
def test_layers_on_dask(i):
    """Every layer class on Dask input, training then eval then training:
    lazy outputs equal to the same layer's on the NumPy array; running
    statistics (NumPy buffers) updated at call time, as for the functional
    API's NumPy running statistics, once per call however often y is
    computed; num_batches_tracked as on NumPy."""
    ref, lay = _layers()[i], _layers()[i]
    rng = np.random.default_rng(13)
    xn = (rng.standard_normal((6, 4, 5, 3)) * 2 + 3).astype(np.float32)
    x = da.from_array(xn, chunks=(2, 2, 3, 2))  # chunks across every reduced axis
    for mode in (True, False, True):
        ref.train(mode)
        lay.train(mode)
        want = ref(xn)
        got = lay(x)
        assert isinstance(got, da.Array) and got.chunks == x.chunks
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            a, b = getattr(ref, name, None), getattr(lay, name, None)
            assert (a is None) == (b is None), name
            if a is not None:
                assert type(b) is np.ndarray and b.dtype == a.dtype, name
                np.testing.assert_allclose(b, a, rtol=1e-6, err_msg=name)
        before = None if getattr(lay, "running_mean", None) is None else lay.running_mean.copy()
        _close(want, got.compute(), np.float32)
        got.compute()
        if before is not None:
            assert np.array_equal(lay.running_mean, before)  # no update by computing
    got = lay(x, return_stats=True)
    want = ref(xn, return_stats=True)
    assert len(got) == len(want)
    _close(want[0], got[0].compute(), np.float32)
    for a, b in zip(want[1:], got[1:], strict=True):  # mean and rstd, or rstd
        np.testing.assert_allclose(np.asarray(b), a, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------
# threads, schedulers
# --------------------------------------------------------------------------


def _probe(b):
    return np.full(b.shape, dbe.threads_per_task(), np.int64)


def _probe_exact(b):
    return np.full(b.shape, dbe.exact_threads(), np.int64)


def test_numba_threads_per_task():
    z = da.zeros((4,), chunks=1).map_blocks(_probe, dtype=np.int64)
    ze = da.zeros((4,), chunks=1).map_blocks(_probe_exact, dtype=np.int64)
    cores = dbe._cores()
    limit = __import__("numba").config.NUMBA_NUM_THREADS
    assert set(z.compute(scheduler="sync")) == {max(1, min(limit, cores))}
    with dask.config.set(num_workers=2):
        assert set(z.compute(scheduler="threads")) == {max(1, min(limit, cores // 2))}
    # split-dependent tasks: the same count on every scheduler
    assert set(ze.compute(scheduler="sync")) == {1}
    assert set(ze.compute(scheduler="threads")) == {1}
    with dask.config.set({dbe.THREADS_KEY: 1}):
        assert set(z.compute(scheduler="sync")) == {1}
    with dask.config.set({dbe.THREADS_KEY: limit}):
        assert set(ze.compute(scheduler="sync")) == {limit}


def _split_sensitive():
    """Graphs whose chunk kernels cut their work by numba's thread count:
    1.2 MiB column chunks (the moments and p-norms cut them into 4 pieces
    with one thread, 8 with two) and rows of 140000 values, two per chunk
    (layer_norm's rows split over 2 or 4 tasks).  With 1 and 2 numba
    threads per task, standardize's std and layer_norm's output differed
    in their last bits (the float32 outputs of the column ops did not)."""
    rng = np.random.default_rng(10)
    xn = (rng.standard_normal((120_000, 5)) + 1e6).astype(np.float32)
    x = da.from_array(xn, chunks=(60_000, 5))
    rn = (rng.standard_normal((4, 140_000)) * 3 + 1e3).astype(np.float32)
    r = da.from_array(rn, chunks=(2, -1))
    return [
        *nbn.standardize(x, return_stats=True),  # the std's last bits too
        nbn.batch_norm(x, training=True),
        nbn.minmax_scale(x),
        nbn.lp_normalize(x, axis=0),
        nbn.layer_norm(r, 140_000),
    ]


def test_bitwise_on_local_schedulers():
    """Default settings: the synchronous scheduler's task runs numba with as
    many threads as the distributed worker's (exact_threads), so the chunk
    kernels cut the work the same way and the bits agree."""
    ys = _split_sensitive()
    ref = dask.compute(*ys, scheduler="sync")
    for sched, n in (("threads", 2), ("threads", 1), ("processes", 2)):
        with dask.config.set(num_workers=n):
            got = dask.compute(*ys, scheduler=sched)
        for i, (a, b) in enumerate(zip(ref, got, strict=True)):
            assert np.array_equal(a, b), (sched, n, i)


def test_serial_kernels_release_the_gil():
    """Every CPU entry kernel compiles with nogil=True (two threads calling a
    small op then run in parallel; measured in benchmarks/NOTES.md §22)."""
    import numbanorm.backends.cpu  # noqa: F401  (registers the kernels)
    import numbanorm.streaming  # noqa: F401
    from numbanorm._cache import REGISTRY

    mods = ("numbanorm.backends.cpu", "numbanorm.streaming")
    entry = [d for d in REGISTRY if d.py_func.__module__.startswith(mods)]
    assert entry
    held = [d.py_func.__qualname__ for d in entry if not d.targetoptions.get("nogil")]
    assert held == []


def _python_gap_during(call):
    """Run ``call`` in a second thread (one numba thread: a core of its own)
    while this thread loops in Python reading the clock; return the call's
    seconds and the longest stretch inside it in which this thread did not
    run.  A kernel that held the GIL would stop this thread for the whole
    kernel; one that releases it stops it only as long as the OS does."""
    import time

    import numba

    stamps, span = [], []
    done = threading.Event()

    def work():
        numba.set_num_threads(1)  # thread-local
        t0 = time.perf_counter()
        call()
        span.extend((t0, time.perf_counter()))
        done.set()

    th = threading.Thread(target=work)
    th.start()
    while not done.is_set():
        stamps.append(time.perf_counter())
    th.join()
    t0, t1 = span
    pts = [t0, *(t for t in stamps if t0 < t < t1), t1]
    return t1 - t0, max(b - a for a, b in zip(pts, pts[1:], strict=False))


def test_kernels_run_while_python_runs():
    """Measured, not just the flags: while one thread is inside numbanorm's
    kernels -- the parallel entry (lp_normalize with p=3 over 4M values: a
    pow per value, ~0.1-0.2 s in one kernel) and the serial one that small
    inputs take (the same rows through ``run_rows(serial=True)``) -- another
    thread keeps running Python.  Held, the GIL would leave a gap of about
    the whole call; the bound is half of it (best of 3 tries: a shared
    machine's scheduler may pause a thread too)."""
    from numbanorm.backends.cpu import rows

    x = (np.random.default_rng(14).standard_normal((2048, 2048)) + 1).astype(np.float32)
    o = np.empty_like(x)
    W, B = np.ones((1, 1), np.float32), np.zeros((1, 1), np.float32)
    mean, rstd = np.zeros(2048), np.empty(2048)
    calls = {
        "parallel entry": lambda: nbn.lp_normalize(x, p=3.0, axis=0, out=o),
        "serial entry": lambda: rows.run_rows(
            x, o, W, B, 1e-12, 3.0, mean, rstd, rows.PNORM, False, False, serial=True
        ),
    }
    import numba

    @numba.njit  # the control: the same work holding the GIL
    def held(x, out):
        for i in range(x.size):
            out.flat[i] = abs(x.flat[i]) ** 3.0

    held(x, o)  # compiled before timing
    secs, gap = _python_gap_during(lambda: held(x, o))
    assert gap > 0.5 * secs, (gap, secs)  # the detector sees a held GIL
    for name, call in calls.items():
        call()  # compiled or loaded before timing
        ratios = []
        for _ in range(3):
            secs, gap = _python_gap_during(call)
            ratios.append(gap / secs)
            if gap < 0.5 * secs:
                break
        assert min(ratios) < 0.5, (name, ratios)
    # the serial path computed what the public function does
    np.testing.assert_allclose(o, nbn.lp_normalize(x, p=3.0, axis=1), rtol=1e-6)


# --------------------------------------------------------------------------
# chunks of CUDA arrays (numba device arrays; the CUDA simulator without a GPU)
# --------------------------------------------------------------------------


def _to_device(b):
    from numba import cuda

    return cuda.to_device(np.ascontiguousarray(b))


def _to_host_checked(b):
    from numbanorm.backends import is_cuda_array

    assert is_cuda_array(b), type(b)  # the output chunk stayed on the device
    return b.copy_to_host()


def test_device_chunks_run_the_cuda_backend(monkeypatch):
    """Chunks that are CUDA arrays run the CUDA backend's primitives (counted)
    and give device chunks back: statistics tree (moments, min/max,
    p-norms), output pass, one-pass ops, layer norm with weights across
    chunks, statistics; values as the NumPy path's."""
    from numbanorm.backends import cuda as cb

    small = dict(THREADS=16, WARP_LAUNCH=8, BLOCKS_TARGET=4, ROW_GROUP=4, ROW_WARP_MAX_D=8, ROW_BLOCK=8)
    for name, val in small.items():  # (the simulator runs a Python thread per CUDA thread)
        monkeypatch.setattr(cb, name, val)
    calls = {}
    for prim in ("moments", "apply", "row_norm", "pnorm"):
        orig = getattr(cb, prim)

        def spy(*a, _orig=orig, _name=prim, **k):
            calls[_name] = calls.get(_name, 0) + 1
            return _orig(*a, **k)

        monkeypatch.setattr(cb, prim, spy)
    rng = np.random.default_rng(15)
    xn = (rng.standard_normal((8, 4)) * 2 + 100).astype(np.float32)
    x = da.from_array(xn, chunks=(4, 2)).map_blocks(_to_device, dtype=xn.dtype)
    w, b = rng.uniform(0.5, 2, 4), rng.standard_normal(4)
    cases = [
        (lambda a: nbn.standardize(a, return_stats=True), "moments"),
        (lambda a: nbn.minmax_scale(a), "moments"),
        (lambda a: nbn.lp_normalize(a, axis=0), "pnorm"),
        (lambda a: nbn.batch_norm(a, training=True), "apply"),
        (lambda a: nbn.layer_norm(a, 4, w, b), None),  # rows across chunks: weighted pass
        (lambda a: nbn.layer_norm(a, 4, w, b, return_stats=True), "row_norm"),
    ]
    xw = da.from_array(xn, chunks=(4, 4)).map_blocks(_to_device, dtype=xn.dtype)  # whole rows
    for i, (make, prim) in enumerate(cases):
        calls.clear()
        want = make(xn)
        got = make(xw if i == len(cases) - 1 else x)
        want = want if isinstance(want, tuple) else (want,)
        got = got if isinstance(got, tuple) else (got,)
        y = got[0].map_blocks(_to_host_checked, dtype=xn.dtype).compute(scheduler="sync")
        _close(want[0], y, np.float32)
        for a, s in zip(want[1:], got[1:], strict=True):
            s = s.map_blocks(lambda c: c.copy_to_host() if hasattr(c, "copy_to_host") else c)
            np.testing.assert_allclose(np.asarray(s.compute(scheduler="sync")), a, rtol=1e-5)
        if prim:
            assert calls.get(prim), (prim, calls)
        assert "moments" in calls or "pnorm" in calls or "row_norm" in calls  # never the CPU


def test_empty_chunks_with_statistics():
    """A chunk of no rows in a one-pass op with return_stats: empty output
    and statistics laid out like the others'."""
    rng = np.random.default_rng(16)
    xn = rng.standard_normal((8, 3))
    x = da.from_array(xn, chunks=((4, 0, 4), (3,)))
    for got, want in zip(
        nbn.layer_norm(x, 3, return_stats=True), nbn.layer_norm(xn, 3, return_stats=True), strict=True
    ):
        np.testing.assert_array_equal(got.compute(), want)
    xi = rng.standard_normal((4, 4, 3))
    x = da.from_array(xi, chunks=((2, 0, 2), 2, 3))
    for name, args in (("instance_norm", ()), ("group_norm", (2,))):
        got = getattr(nbn, name)(x, *args, return_stats=True)
        want = getattr(nbn, name)(xi, *args, return_stats=True)
        for g, v in zip(got, want, strict=True):
            _close(v, g.compute(), np.float64)  # (chunks of 2 samples: the small kernels)


def test_rms_norm_default_eps_matches_numpy_for_float16(rng):
    # eps=None: float32's epsilon for float16 input (API.md), on Dask as on NumPy
    x = (rng.standard_normal((6, 16)) * 0.02).astype(np.float16)
    y = nbn.rms_norm(da.from_array(x, chunks=(2, 16)), 16).compute()
    np.testing.assert_array_equal(y, nbn.rms_norm(x, 16))
