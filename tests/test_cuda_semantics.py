"""The CUDA backend where numba's simulator differs from a GPU (issue 16).

Each test pins one defect that the plain simulator hid: numba's device
``transpose`` copies on hardware, numba-cuda warns on small grids, a call's
every step must stay on its stream, torch tensors that require grad, the
warp-shuffle reductions, imports without a host synchronisation, memory from
the user's library, and merges as exact as the CPU's.  The hardware
behaviour is patched into the simulator by tests/cudasim_honest.py; the
rest is checked by recording what the backend does.
"""

from __future__ import annotations

import types
import warnings

import numpy as np
import pytest

cuda = pytest.importorskip("numba.cuda")
from numba.core import config  # noqa: E402

SIM = bool(config.ENABLE_CUDASIM)
if not SIM and not cuda.is_available():
    pytest.skip("no CUDA GPU and the CUDA simulator is off", allow_module_level=True)

import numbanorm as nbn  # noqa: E402
import numbanorm.backends.cuda as cb  # noqa: E402
from numbanorm import backends  # noqa: E402
from numbanorm.backends import _cuda_kernels as kern  # noqa: E402

F32, F64 = np.float32, np.float64

try:
    import cudasim_honest as honest
except ImportError:  # pragma: no cover - run from another directory
    honest = None


@pytest.fixture
def honest_sim():
    """The simulator with hardware's transpose and low-occupancy warnings."""
    if not SIM:
        yield  # real hardware is honest already
        return
    if honest is None:
        pytest.skip("tests/cudasim_honest.py not importable")
    undo = honest.install()
    yield
    if callable(undo):
        undo()


def host(a):
    return a.copy_to_host() if hasattr(a, "copy_to_host") else np.asarray(a)


@pytest.fixture
def small_launch(monkeypatch):
    """Small launch sizes (the simulator runs a Python thread per CUDA
    thread); the paths under test do not depend on them (tests/test_cuda.py
    runs every op at the default sizes too)."""
    small = dict(THREADS=16, WARP_LAUNCH=8, BLOCKS_TARGET=4, ROW_GROUP=4, ROW_WARP_MAX_D=8, ROW_BLOCK=8)
    for name, val in small.items():
        monkeypatch.setattr(cb, name, val)


# ---------------------------------------------------------------- defect 2


TRANSPOSE_CASES = {
    "lp_normalize (1, 8)": (lambda x: nbn.lp_normalize(x, p=2.0, axis=1), (1, 8), False),
    "standardize (1, 8) axis=1": (lambda x: nbn.standardize(x, axis=1), (1, 8), False),
    "eval batch_norm (1, 8)": (
        lambda x: nbn.batch_norm(x, np.zeros(8), np.ones(8), training=False),
        (1, 8),
        False,
    ),
    "standardize transposed (5, 6)": (lambda x: nbn.standardize(x, axis=0), (6, 5), True),
    "layer_norm transposed (6, 5)": (lambda x: nbn.layer_norm(x, 6), (6, 5), True),
    "batch_norm channels-last NCHW view": (
        lambda x: nbn.batch_norm(x, training=True),
        (2, 3, 4, 5),  # stored NHWC, seen as NCHW below
        "nhwc",
    ),
}


def _device_input(shape, how, rng):
    x = rng.standard_normal(shape) * 3 + 1
    if how is True:  # a transposed view of a C-contiguous device array
        d = cb.permute(cuda.to_device(x), (1, 0))
        return x.T, d
    if how == "nhwc":
        n, c, h, w = shape
        xl = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        return xl.transpose(0, 3, 1, 2), cb.permute(cuda.to_device(xl), (0, 3, 1, 2))
    return x, cuda.to_device(x)


@pytest.mark.parametrize("case", list(TRANSPOSE_CASES))
def test_layouts_with_hardware_transpose(case, honest_sim, small_launch, rng):
    f, shape, how = TRANSPOSE_CASES[case]
    x, d = _device_input(shape, how, rng)
    got = host(f(d))
    want = f(np.array(x))
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def test_permute_is_a_view_of_the_same_memory(rng):
    x = rng.standard_normal((2, 3, 4))
    d = cuda.to_device(x)
    v = cb.permute(d, (2, 0, 1))
    assert v.shape == (4, 2, 3)
    assert v.strides == tuple(d.strides[a] for a in (2, 0, 1))
    np.testing.assert_array_equal(host(v), x.transpose(2, 0, 1))
    if SIM:  # the same memory: a write through the source shows in the view
        d[1, 2, 3] = 42.0
        assert host(v)[3, 1, 2] == 42.0


def test_no_device_transpose_anywhere(monkeypatch, small_launch, rng):
    """No code path calls numba's device transpose (a copy on hardware)."""
    if not SIM:
        pytest.skip("patches the simulator's array class")
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

    def refuse(self, axes=None):
        raise AssertionError("numba's device transpose called")

    monkeypatch.setattr(FakeCUDAArray, "transpose", refuse)
    x = rng.standard_normal((2, 3, 4, 5))
    xl = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    d = cb.permute(cuda.to_device(xl), (0, 3, 1, 2))
    np.testing.assert_allclose(host(nbn.batch_norm(d, training=True)), nbn.batch_norm(x, training=True))
    np.testing.assert_allclose(host(nbn.instance_norm(d)), nbn.instance_norm(x))
    np.testing.assert_allclose(host(nbn.standardize(d, axis=(0, 2, 3))), nbn.standardize(x, axis=(0, 2, 3)))


# ---------------------------------------------------------------- defect 1


@pytest.mark.parametrize(
    "call",
    [
        lambda d: nbn.layer_norm(d, 7),
        lambda d: nbn.batch_norm(d, training=True),
        lambda d: nbn.minmax_scale(d, axis=0),
        lambda d: nbn.lp_normalize(d, p=3.0, axis=1),
    ],
    ids=["layer_norm", "batch_norm", "minmax_scale", "lp_normalize"],
)
def test_small_launches_do_not_warn(call, honest_sim, small_launch, rng):
    """numba-cuda warns on grids under 128 blocks; tests turn warnings into
    errors, and users should not see warnings about our launch choices."""
    d = cuda.to_device(rng.standard_normal((2, 6, 7)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        call(d)


def test_the_emulated_warning_is_live(honest_sim):
    """The honest simulator does warn on a small grid launched directly (so
    the test above can fail)."""
    if not SIM:
        pytest.skip("checks the simulator patch")
    a = cuda.to_device(np.zeros(4))
    with pytest.warns(Warning, match="under-utilization"):
        kern._copy1[1, 4](a, a)


# ---------------------------------------------------------------- defect 4


def test_every_step_of_a_call_runs_on_its_stream(monkeypatch, rng):
    seen = []
    orig_launch, orig_alloc = cb._launch, cb._alloc

    def launch(k, grid, block, *args):
        seen.append(("launch", k.__name__ if hasattr(k, "__name__") else str(k), cb._stream()))
        return orig_launch(k, grid, block, *args)

    def alloc(shape, dtype):
        seen.append(("alloc", shape, cb._stream()))
        return orig_alloc(shape, dtype)

    monkeypatch.setattr(cb, "_launch", launch)
    monkeypatch.setattr(cb, "_alloc", alloc)
    x = rng.standard_normal((6, 5))
    s = cuda.stream()
    # a transposed x (ascontiguous copies it) and a transposed out (the
    # result is copied into it): steps that ran outside the stream before
    d = cb.permute(cuda.to_device(np.ascontiguousarray(x.T)), (1, 0))
    o = cb.permute(cuda.device_array((5, 6)), (1, 0))
    nbn.layer_norm(d, 5, out=o, stream=s)
    s.synchronize()
    np.testing.assert_allclose(host(o), nbn.layer_norm(x, 5), rtol=1e-9, atol=1e-9)
    assert any(k == "launch" and "copy" in n for k, n, _ in seen)  # the copies ran
    assert seen and all(st is s for *_, st in seen), seen


def test_stream_none_keeps_the_arrays_stream(rng):
    """stream=None runs on the stream x reports (a numba array's own)."""
    s = cuda.stream()
    d = cuda.to_device(rng.standard_normal((3, 4)), stream=s)
    if getattr(d, "stream", 0) is not s:  # the simulator's to_device drops it
        d.stream = s
    with cb.context(like=d):
        assert cb._stream() is s
    with cb.context(None, like=cuda.to_device(np.zeros(2))):
        assert not cb._stream()


# ---------------------------------------------------------------- defect 5


def test_torch_tensor_that_requires_grad_is_recognised_without_raising():
    torch = pytest.importorskip("torch")
    t = torch.zeros(3, 4, requires_grad=True)
    assert backends.is_cuda_array(t) is False  # a CPU tensor; no RuntimeError
    with pytest.raises(TypeError, match="x must be an array"):
        nbn.layer_norm(t, 4)


def test_as_device_detaches_a_tensor_that_requires_grad(monkeypatch):
    """The CUDA import path reads the interface of the detached tensor."""
    calls = []

    class FakeTensor:  # a CUDA tensor that requires grad, as torch behaves
        __module__ = "torch"
        requires_grad = True
        is_cuda = True

        @property
        def __cuda_array_interface__(self):
            raise RuntimeError("Can't get __cuda_array_interface__ on Variable that requires grad")

        def detach(self):
            t = types.SimpleNamespace(requires_grad=False)
            t.__cuda_array_interface__ = {"stream": None}
            calls.append("detach")
            return t

    monkeypatch.setattr(cb, "SIMULATOR", False)
    monkeypatch.setattr(cb, "_is_numba_device_array", lambda x: False)
    monkeypatch.setattr(
        cb.cuda, "from_cuda_array_interface", lambda desc, owner, sync: ("view", sync), raising=False
    )
    assert backends.is_cuda_array(FakeTensor())  # was: RuntimeError from hasattr
    assert cb.as_device(FakeTensor()) == ("view", False)
    assert calls == ["detach"]


# ---------------------------------------------------------------- defect 3


def test_import_does_not_synchronise_and_orders_the_stream(monkeypatch):
    """A CuPy/torch array is imported with sync=False; when it reports
    another stream, the call's stream waits for it with an event."""
    ordered, got = [], {}

    class Producer:
        __cuda_array_interface__ = {"stream": 777, "shape": (2,), "typestr": "<f4", "version": 3}

    def fake_from_cai(desc, owner, sync):
        got["sync"] = sync
        return "view"

    monkeypatch.setattr(cb, "SIMULATOR", False)
    monkeypatch.setattr(cb, "_is_numba_device_array", lambda x: False)
    monkeypatch.setattr(cb.cuda, "from_cuda_array_interface", fake_from_cai, raising=False)
    monkeypatch.setattr(cb, "_external", lambda ptr: ("stream", ptr))
    monkeypatch.setattr(cb, "_order_after", lambda s: ordered.append(s))
    assert cb.as_device(Producer()) == "view"
    assert got["sync"] is False
    assert ordered == [("stream", 777)]


def test_order_after_waits_on_the_device_only(monkeypatch):
    events = []

    class Ev:
        def record(self, stream):
            events.append(("record", stream))

        def wait(self, stream):
            events.append(("wait", stream))

    monkeypatch.setattr(cb, "SIMULATOR", False)
    monkeypatch.setattr(cb.cuda, "event", lambda timing=False: Ev())
    monkeypatch.setattr(cb, "_EVENT", types.SimpleNamespace())
    monkeypatch.setattr(cb, "_handle", lambda s: s if isinstance(s, int) else s[1])
    ours = ("ours", 5)
    token = cb._CALL.set(cb._Call(ours, "numba", None))
    try:
        cb._order_after(("theirs", 9))
        cb._order_after(("same", 5))  # the call's own stream: nothing to do
    finally:
        cb._CALL.reset(token)
    assert events == [("record", ("theirs", 9)), ("wait", ours)]


# ---------------------------------------------------------------- defect 7


def test_outputs_and_temporaries_come_from_the_users_library(monkeypatch):
    """CuPy input: memory from cupy.empty on the call's stream (its pool)."""
    pool = []

    class CupyArray:
        __module__ = "cupy"

        def __init__(self, shape, dtype):
            self.buf = np.zeros(shape, dtype)
            self.device = types.SimpleNamespace(id=0)
            self.__cuda_array_interface__ = {"stream": None}

    class Ctx:
        def __init__(self, *a):
            pass

        def __enter__(self):
            pool.append("enter")

        def __exit__(self, *a):
            return False

    fake = types.ModuleType("cupy")
    fake.empty = lambda shape, dtype: pool.append((shape, np.dtype(dtype))) or CupyArray(shape, dtype)
    null = types.SimpleNamespace(null=Ctx())
    fake.cuda = types.SimpleNamespace(Device=Ctx, ExternalStream=Ctx, Stream=null)
    monkeypatch.setitem(__import__("sys").modules, "cupy", fake)
    view = lambda desc, owner, sync: ("numba view of", owner)  # noqa: E731
    monkeypatch.setattr(cb.cuda, "from_cuda_array_interface", view, raising=False)
    like = CupyArray((1,), np.float32)
    v = cb.empty((3, 4), np.float32, like=like)
    assert v[0] == "numba view of" and isinstance(v[1], CupyArray)
    assert ((3, 4), np.dtype(np.float32)) in pool
    # inside a call on CuPy input, temporaries too
    pool.clear()
    monkeypatch.setattr(cb, "_producer_stream", lambda x: 0)
    with cb.context(like=like):
        cb._alloc((6, 2, 1, 3), np.float64)
    assert ((6, 2, 1, 3), np.dtype(np.float64)) in pool


def test_numba_input_uses_numba_memory(rng):
    d = cuda.to_device(rng.standard_normal((2, 6, 7)))
    y = nbn.layer_norm(d, 7)
    assert type(y) is type(d)


# ---------------------------------------------------------------- defect 6


def test_warp_shuffle_paths(monkeypatch, rng):
    """The shuffle reductions (moments over rows, row_norm's sub-warp
    groups) at the default launch sizes, with shuffles emulated in the
    simulator."""
    if SIM:
        if honest is None or not hasattr(honest, "install"):
            pytest.skip("tests/cudasim_honest.py not importable")
        undo = honest.install()
        monkeypatch.setattr(kern, "_HAVE_SHFL", True)
    else:
        undo = None
    try:
        x = rng.standard_normal((2, 300)) * 2 + 1e3
        m = cb.moments(cuda.to_device(x.reshape(2, 300, 1)), False, True)
        np.testing.assert_allclose(m.mean[:, 0] + m.resid[:, 0], x.mean(1), rtol=1e-15)
        np.testing.assert_allclose(m.m2[:, 0], ((x - x.mean(1, keepdims=True)) ** 2).sum(1), rtol=1e-12)
        np.testing.assert_array_equal(m.min[:, 0], x.min(1))
        # short rows: 4 threads per row (sub-warp butterflies), 32 rows per block
        xr = rng.standard_normal((3, 40))
        got = host(nbn.layer_norm(cuda.to_device(xr), 40))
        np.testing.assert_allclose(got, nbn.layer_norm(xr, 40), rtol=1e-10, atol=1e-10)
        got = host(nbn.lp_normalize(cuda.to_device(xr), 3.0, axis=-1))  # _row_lpp
        np.testing.assert_allclose(got, nbn.lp_normalize(xr, 3.0, axis=-1), rtol=1e-12, atol=1e-14)
    finally:
        if callable(undo):
            undo()


# ---------------------------------------------------------------- defect 8


def test_gpu_moments_carry_the_mean_residual_as_the_cpu(rng):
    from numbanorm.backends import cpu as cpu_backend

    x = rng.standard_normal((2, 200, 3)) + 1e6
    g = cb.moments(cuda.to_device(x), False, False)
    c = cpu_backend.moments(x, False, False)
    np.testing.assert_array_equal(g.count, c.count)
    # the exact mean as an unevaluated sum: equal to ~1e-16 of the spread
    np.testing.assert_allclose((g.mean - c.mean) + (g.resid - c.resid), 0.0, atol=1e-15)
    assert np.any(g.resid != 0.0)
    np.testing.assert_allclose(g.m2, c.m2, rtol=1e-13)


def test_running_stats_fed_gpu_chunks_are_exact(monkeypatch, rng):
    """Chunks merged into RunningStats from the GPU as exactly as from the
    CPU (~1e-15 relative on 1e6 + randn; 1e-11 before the residual)."""
    monkeypatch.setattr(cb, "THREADS", 16)
    monkeypatch.setattr(cb, "BLOCKS_TARGET", 4)
    x = rng.standard_normal((3000, 2)) + 1e6
    gpu, cpu = nbn.RunningStats(), nbn.RunningStats()
    for i in range(0, 3000, 300):
        gpu.update(cuda.to_device(x[i : i + 300]), axis=0)
        cpu.update(x[i : i + 300], axis=0)
    exact = np.array([np.var(np.longdouble(x[:, j]) - np.longdouble(1e6)) for j in range(2)], dtype=F64)
    np.testing.assert_allclose(cpu.var(), exact, rtol=1e-14)
    np.testing.assert_allclose(gpu.var(), exact, rtol=1e-14)


def test_running_stats_on_another_device_are_a_value_error(monkeypatch, rng):
    x = cuda.to_device(rng.standard_normal((3, 4, 5)))
    rm, rv = cuda.to_device(np.zeros(4)), cuda.to_device(np.ones(4))
    monkeypatch.setattr(cb, "device_of", lambda a: 1 if a is rm else 0)
    with pytest.raises(ValueError, match="running_mean is on CUDA device 1 but x is on device 0"):
        nbn.batch_norm(x, rm, rv, training=True)
    np.testing.assert_array_equal(rm.copy_to_host(), np.zeros(4))  # untouched


# ------------------------------------------------------- kernel shapes (17)


@pytest.mark.parametrize("K", [1, 3, 31, 32, 33, 70])
@pytest.mark.parametrize("clip", [False, True])
def test_apply_kernels_by_column_count(K, clip, small_launch, rng):
    """rows (K == 1), flat with shared parameters (K < 32), a thread per
    column (K >= 32): each against the CPU, with clipping and NaN."""
    x = rng.standard_normal((3, 37, K)) * 2
    x[1, 5, 0] = np.nan
    c, s, h = (rng.standard_normal((3, K)) for _ in range(3))
    lo, hi = (-0.5, 0.5) if clip else (None, None)
    from numbanorm.backends import cpu as cpu_backend

    want = np.empty_like(x)
    cpu_backend.apply(x, want, c, s, h, lo, hi)
    out = cuda.device_array(x.shape)
    cb.apply(cuda.to_device(x), out, c, s, h, lo, hi)
    np.testing.assert_allclose(host(out), want, rtol=1e-14, atol=1e-14)
    assert np.isnan(host(out)[1, 5, 0])


def _count_host_copies(monkeypatch):
    """Count device-to-host copies and stream synchronisations."""
    n = {"d2h": 0, "sync": 0}
    if SIM:
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray as Arr
    else:
        from numba.cuda.cudadrv.devicearray import DeviceNDArray as Arr
    orig = Arr.copy_to_host

    def copy_to_host(self, *a, **k):
        n["d2h"] += 1
        return orig(self, *a, **k)

    monkeypatch.setattr(Arr, "copy_to_host", copy_to_host)
    orig_sync = cb._sync

    def sync(s):
        n["sync"] += 1
        return orig_sync(s)

    monkeypatch.setattr(cb, "_sync", sync)
    return n


@pytest.mark.parametrize(
    "call",
    [
        lambda d: nbn.layer_norm(d, 7),
        lambda d: nbn.layer_norm(d, 7, np.ones(7), np.zeros(7)),
        lambda d: nbn.rms_norm(d, 7),
        lambda d: nbn.lp_normalize(d, axis=-1),
        lambda d: nbn.lp_normalize(d, p=np.inf, axis=-1),
    ],
    ids=["layer_norm", "layer_norm_affine", "rms_norm", "lp_normalize", "lp_inf"],
)
def test_row_ops_without_stats_make_no_host_copy(call, monkeypatch, rng):
    x = rng.standard_normal((2, 6, 7))
    d = cuda.to_device(x)
    n = _count_host_copies(monkeypatch)
    y = call(d)
    assert n == {"d2h": 0, "sync": 0}
    np.testing.assert_allclose(y.copy_to_host(), call(x), rtol=1e-10, atol=1e-12)


def test_row_stats_come_to_the_host_when_asked(monkeypatch, rng):
    d = cuda.to_device(rng.standard_normal((3, 7)))
    n = _count_host_copies(monkeypatch)
    nbn.layer_norm(d, 7, return_stats=True)
    assert n["d2h"] >= 2


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0, np.inf])
def test_lp_normalize_rows_in_one_kernel(p, monkeypatch, rng):
    """lp_normalize over the last axis: one launch (the row kernel) for p =
    1, 2, inf; other p: the p-norms, then apply."""
    launches = []
    orig = cb._launch
    monkeypatch.setattr(cb, "_launch", lambda k, *a: launches.append(k.__name__) or orig(k, *a))
    x = rng.standard_normal((4, 9))
    x[1, 3] = np.nan
    x[2] = 0.0
    with warnings.catch_warnings():
        # 0 * inf of the zero row: NaN on a GPU, a NumPy warning in the simulator
        warnings.simplefilter("ignore", RuntimeWarning)
        y = nbn.lp_normalize(cuda.to_device(x), p=p, axis=-1, eps=0.0)
    assert launches == (["_row_lp"] if p != 3.0 else ["_row_lpp"])
    with np.errstate(invalid="ignore", divide="ignore"):
        want = nbn.lp_normalize(x, p=p, axis=-1, eps=0.0)
    np.testing.assert_allclose(y.copy_to_host(), want, rtol=1e-12, atol=1e-14)


@pytest.mark.skipif(SIM, reason="numba-cuda's disk cache needs a GPU to compile")
def test_a_second_process_loads_the_kernels_from_disk(tmp_path):
    import subprocess
    import sys

    code = (
        "import numpy as np; from numba import cuda; import numbanorm as nbn;"
        "from numbanorm.backends import _cuda_kernels as k;"
        "nbn.layer_norm(cuda.to_device(np.ones((4, 8), np.float32)), 8);"
        "print(sum(k._row_norm._cache_hits.values()), sum(k._row_norm._cache_misses.values()))"
    )
    env = {**__import__("os").environ, "NUMBA_CACHE_DIR": str(tmp_path), "NUMBA_ENABLE_CUDASIM": "0"}
    cmd = [sys.executable, "-c", code]
    runs = [subprocess.run(cmd, capture_output=True, text=True, env=env) for _ in "12"]
    hits_misses = [tuple(map(int, r.stdout.split())) for r in runs]
    assert hits_misses[0] == (0, 1) and hits_misses[1] == (1, 0), (hits_misses, runs[1].stderr[-500:])


@pytest.mark.parametrize("op", ["instance_norm", "group_norm", "group_norm_affine", "instance_norm_affine"])
def test_instance_and_group_norm_in_one_kernel(op, monkeypatch, rng):
    """Channels-first instance/group norm: rows with weights per row or per
    row segment, one launch of the row kernel, no host copy."""
    launches = []
    orig = cb._launch
    monkeypatch.setattr(cb, "_launch", lambda k, *a: launches.append(k.__name__) or orig(k, *a))
    x = rng.standard_normal((2, 6, 5)) * 2 + 1
    w, b = rng.standard_normal(6), rng.standard_normal(6)
    f = {
        "instance_norm": lambda a: nbn.instance_norm(a),
        "instance_norm_affine": lambda a: nbn.instance_norm(a, weight=w, bias=b),
        "group_norm": lambda a: nbn.group_norm(a, 3),
        "group_norm_affine": lambda a: nbn.group_norm(a, 3, w, b),
    }[op]
    n = _count_host_copies(monkeypatch)
    y = f(cuda.to_device(x))
    assert n == {"d2h": 0, "sync": 0}
    assert launches == ["_row_layer"]
    np.testing.assert_allclose(y.copy_to_host(), f(x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("layout", ["nchw", "nhwc", "2d"])
@pytest.mark.parametrize("params", ["none", "host", "device"])
def test_eval_batch_norm_with_device_running_stats_stays_on_the_device(layout, params, monkeypatch, rng):
    """Running statistics (and weights) on the device: the parameters are
    computed there; no copy to the host, no synchronisation, the CPU's bits
    to rounding."""
    C = 6
    shape = {"nchw": (2, C, 5), "nhwc": (2, 5, C), "2d": (7, C)}[layout]
    ca = -1 if layout == "nhwc" else 1
    x = rng.standard_normal(shape) * 2 + 1
    rm = rng.standard_normal(C).astype(F32)
    rv = (rng.random(C) + 0.5).astype(F32)
    w = rng.standard_normal(C) if params != "none" else None
    b = rng.standard_normal(C) if params != "none" else None
    dw = cuda.to_device(w) if params == "device" else w
    db = cuda.to_device(b) if params == "device" else b
    d_rm, d_rv = cuda.to_device(rm), cuda.to_device(rv)
    n = _count_host_copies(monkeypatch)
    y = nbn.batch_norm(cuda.to_device(x), d_rm, d_rv, dw, db, training=False, channel_axis=ca)
    assert n == {"d2h": 0, "sync": 0}
    want = nbn.batch_norm(x, rm, rv, w, b, training=False, channel_axis=ca)
    np.testing.assert_allclose(y.copy_to_host(), want, rtol=1e-12, atol=1e-12)
    got = nbn.batch_norm(cuda.to_device(x), d_rm, d_rv, dw, db, channel_axis=ca, return_stats=True)
    want = nbn.batch_norm(x, rm, rv, w, b, channel_axis=ca, return_stats=True)
    for g, wnt in zip(got, want, strict=True):
        np.testing.assert_allclose(host(g), wnt, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(d_rm.copy_to_host(), rm)  # eval: untouched


def test_eval_batch_norm_device_running_stats_errors(rng):
    x = cuda.to_device(rng.standard_normal((2, 4, 3)))
    good = cuda.to_device(np.ones(4))
    with pytest.raises(ValueError, match=r"running_mean must have shape \(4,\), got \(5,\)"):
        nbn.batch_norm(x, cuda.to_device(np.ones(5)), good)
    with pytest.raises(TypeError, match="running_var must be a float array"):
        nbn.batch_norm(x, good, cuda.to_device(np.ones(4, np.int32)))
    with pytest.raises(ValueError, match=r"weight must have shape \(4,\)"):
        nbn.batch_norm(x, good, good, cuda.to_device(np.ones(3)))


@pytest.mark.parametrize("ca", [1, -1])
def test_instance_norm_eval_with_device_running_stats_stays_on_the_device(ca, monkeypatch, rng):
    C = 4
    x = rng.standard_normal((3, C, 5) if ca == 1 else (3, 5, C)) + 2
    rm, rv = rng.standard_normal(C), rng.random(C) + 0.5
    w, b = rng.standard_normal(C), rng.standard_normal(C)
    d_rm, d_rv = cuda.to_device(rm), cuda.to_device(rv)
    kw = dict(use_input_stats=False, channel_axis=ca)
    n = _count_host_copies(monkeypatch)
    y = nbn.instance_norm(cuda.to_device(x), d_rm, d_rv, cuda.to_device(w), b, **kw)
    assert n == {"d2h": 0, "sync": 0}
    np.testing.assert_allclose(
        y.copy_to_host(), nbn.instance_norm(x, rm, rv, w, b, **kw), rtol=1e-12, atol=1e-12
    )
    got = nbn.instance_norm(cuda.to_device(x), d_rm, d_rv, w, b, return_stats=True, **kw)
    want = nbn.instance_norm(x, rm, rv, w, b, return_stats=True, **kw)
    for g, wnt in zip(got, want, strict=True):
        np.testing.assert_allclose(host(g), wnt, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shfl", [False, True])
@pytest.mark.parametrize("D", [512, 500, 1000])
def test_row_lpp32_block_per_row_matches_the_cpu(D, shfl, monkeypatch, rng, request):
    """lp_normalize over float32 rows for p other than 1, 2, inf: _row_lpp32
    (128 registers: two blocks of 256 per SM, or one of 512) at its D = 4096
    and D = 8192 launch shapes, scaled down: one row per block, a block of G
    threads per row (here 32 for ROW_BLOCK 256, 64 for ROW_BLOCK_P 512),
    each thread holding _NREG_P = 16 values loaded before use (D = 512: all
    full; 500 and 1000: the last loads masked); without shuffles a row past
    ROW_BLOCK x 16 takes the long-row kernel (a block per row, the row read
    by chunks, then re-read for the output).  NaN left out, a
    zero row; shared-memory tree or warp shuffles (the honest simulator,
    tests/conftest.py)."""
    if shfl:
        request.getfixturevalue("honest_sim")
    monkeypatch.setattr(kern, "_HAVE_SHFL", shfl)
    for name, val in dict(
        ROW_GROUP=8, ROW_WARP_MAX_D=64, ROW_BLOCK=32, ROW_BLOCK_P=64, ROW_THREADS=32
    ).items():
        monkeypatch.setattr(cb, name, val)
    # the default shapes (hardware: shuffles)
    default = (4, kern._NREG_P, 1024, 32, 256, 128, 512)
    assert kern.row_launch_lpp32(4096, *default, True) == (256, 1)
    assert kern.row_launch_lpp32(8192, *default, True) == (512, 1)
    assert kern.row_launch_lpp32(8192, *default, False) == (256, 1)
    assert kern.row_launch_lpp32(8193, *default, True) == (256, 1)  # past 512 x 16: re-read
    assert kern.row_launch_lpp32(1024, *default, True) == (64, 2)
    G = 64 if (D > 512 and shfl) else 32
    assert kern.row_launch_lpp32(D, 4, kern._NREG_P, 64, 8, 32, 32, 64, shfl) == (G, 1)
    launches = []
    orig = cb._launch
    monkeypatch.setattr(cb, "_launch", lambda k, *a: launches.append((k.__name__, a[0], a[1])) or orig(k, *a))
    x = (rng.standard_normal((3, D)) * 3).astype(np.float32)
    x[0, 7] = np.nan
    x[2] = 0.0
    y = host(nbn.lp_normalize(cuda.to_device(x), 3.5, axis=-1))
    # past G x 16 (no shuffles, D = 1000): the long-row kernel, ROW_BLOCK threads
    assert launches == [("_row_lpp32" if D <= G * 16 else "_row_long_lpp", 3, (G, 1))]
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, nbn.lp_normalize(x, 3.5, axis=-1), rtol=2e-6, atol=1e-7)
    assert np.isnan(y[0, 7]) and not np.isnan(np.delete(y[0], 7)).any()
    assert (y[2] == 0).all()
    launches.clear()
    y64 = host(nbn.lp_normalize(cuda.to_device(x.astype(np.float64)), 3.5, axis=-1))
    # float64: unbounded _row_lpp (it would spill at 128), blocks of ROW_BLOCK
    # at most; past 32 x 16, the long-row kernel
    assert launches == [("_row_lpp" if D <= 512 else "_row_long_lpp", 3, (32, 1))]
    np.testing.assert_allclose(
        y64, nbn.lp_normalize(x.astype(np.float64), 3.5, axis=-1), rtol=1e-12, atol=1e-15
    )
