"""CUDA backend: the primitives of ``numbanorm.backends`` for GPU arrays.

Takes numba device arrays (also the CUDA simulator's), and anything with
``__cuda_array_interface__`` (CuPy arrays, PyTorch CUDA tensors) through
:func:`as_device`, a zero-copy numba view.  Results are numba device arrays
(over memory of the user's library); :func:`wrap` turns them back into the
user's array type, again zero-copy.  ``moments`` and ``pnorm`` return small
host ``float64`` arrays, as the contract asks; ``row_norm`` and the
``*_device`` primitives leave their statistics on the device.

Launch shapes (kernels in ``_cuda_kernels.py``):

``moments`` / ``pnorm``
    ``x3`` is ``(P, R, K)``, reduced over ``R``.  A block is ``(TX, TY)``
    threads: ``TX = min(K, 32)`` along K (consecutive threads read
    consecutive addresses: channels-last needs no transpose), ``TY`` along R.
    For ``K == 1`` (row reductions) ``TX = 1`` and ``TY`` grows with the row,
    from one warp (short rows) to ``THREADS``.  The grid is
    ``(ceil(K/TX), S, P)``; when ``P * ceil(K/TX)`` blocks cannot fill the GPU
    each row range is split into ``S`` parts whose partial ``(count, mean,
    mean residual, M2, min, max)`` are Chan-merged by a second small kernel.
    A thread loads a chunk of ``_CH`` rows before using any.
``apply``
    ``K < 32``: grid-stride over the flat ``(P, R*K)`` plane, grid
    ``(gx, P)``, with a step that is a multiple of K, so that each thread
    keeps one column and its parameters in registers;
    ``K >= 32``: a thread per column (its parameters in registers), ``TY``
    threads along R, grid ``(ceil(K/32), gy, P)``.  Each thread keeps
    ``_UNROLL`` loads in flight.
``row_norm``
    ``G`` threads per row (``_k.row_launch``): the fewest (a power of two, at
    least a 32-byte sector of consecutive elements per load) whose registers
    hold the row, up to a warp for ``D <= ROW_WARP_MAX_D`` (a short row gets
    part of a warp, so each thread still keeps up to 32 loads in flight),
    up to ``ROW_BLOCK`` beyond; ``ROW_THREADS // G`` rows per block.  The
    row stays in registers when it fits (32 values per thread; 16 for p
    other than 1, 2, inf), so x is read once.  One kernel per statistic
    (layer, RMS, p-norm, other p); the weights per element, per row or per
    row segment (instance, group norm).
``normalize_on_device`` (``_reduce``) primitives
    ``moments_device`` / ``merge_device`` / ``pnorm_device`` /
    ``fold_device`` leave the statistics on the device, ``finish_apply``
    turns them into the apply's parameters there (``_k._finish_prm``: the
    host's arithmetic) and ``running_update`` updates running statistics in
    the user's arrays: statistics-then-apply ops copy nothing to the host.

A call's context (:func:`context`, a ``contextvars`` variable: thread- and
task-local), entered by every public function for its whole call:

- its stream: the ``stream=`` argument (a numba, CuPy or PyTorch stream or a
  raw ``cudaStream_t`` handle), else the stream the user's array reports
  through the CUDA Array Interface v3 (CuPy's and PyTorch's current stream;
  a numba array's own stream, else the default stream).  Every launch, copy
  and allocation of the call goes there.  Arrays are imported without a host
  synchronisation: when one reports another stream, the call's stream waits
  for it with an event, on the device.
- its memory: outputs and temporaries come from the library of the user's
  array (CuPy's memory pool, PyTorch's caching allocator), allocated on the
  call's stream; numba's allocator for numba arrays.

Views are built here, never with numba's device ``transpose`` (a copy on
hardware, FIELD-NOTES): :func:`permute` permutes shape and strides over the
same memory, so a channels-last tensor reduces without a copy.  Other
non-contiguous input is copied by :func:`ascontiguous` on the device.
Launches go through :func:`_launch` (cached configurations, no
low-occupancy warnings for the small grids of small inputs).

The module-level launch parameters (``THREADS`` ...) are read at each call, so
tests set them small to run multi-block and merge paths in the simulator.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import threading
import warnings
from typing import Any, NamedTuple

import numpy as np

try:
    from numba import cuda
    from numba.core import config as _numba_config
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError("numbanorm's CUDA backend needs numba-cuda: pip install 'numbanorm[cuda]'") from exc

from .._reduce import FIN_MINMAX  # noqa: E402
from .._stats import pnorm_finish_array  # noqa: E402
from . import Moments  # noqa: E402

SIMULATOR = bool(_numba_config.ENABLE_CUDASIM)
NAME = "cuda"
# row_norm takes (RW, S) weights: instance and group norm run as rows
ROW_NORM_GROUPED = True


def _require_gpu() -> None:
    """Raise a clear RuntimeError when neither a usable GPU nor the simulator is there."""
    if SIMULATOR:
        return
    try:
        ok = cuda.is_available()
    except Exception:  # pragma: no cover - driver-specific failures
        ok = False
    if not ok:
        raise RuntimeError(
            "numbanorm got a CUDA array but no usable CUDA GPU/driver was found "
            "(numba.cuda.is_available() is False). Install a CUDA driver and "
            "numba-cuda ('pip install \"numbanorm[cuda]\"'), or set "
            "NUMBA_ENABLE_CUDASIM=1 before numba is imported to use numba's CUDA simulator."
        )


_require_gpu()

from . import _cuda_kernels as _k  # noqa: E402  (after the GPU check: a clear error first)

# Launch parameters (host side, read at every call; tests patch them small).
THREADS = 256  # threads per block of moments / pnorm / apply (<= _k._MAX_BLOCK)
WARP_LAUNCH = 32  # smallest block for a row reduction: one warp per short row
ROW_GROUP = 32  # threads per row in warp-per-row row_norm (at most; fewer for short rows)
# threads per block of warp-per-row row_norm: the row kernels take 156-189
# registers, so an SM holds one block of 256 threads but three of 128
ROW_THREADS = 128
ROW_WARP_MAX_D = 1024  # row_norm: warp-per-row up to this D, block-per-row beyond
ROW_BLOCK = 256  # threads per row in block-per-row row_norm (<= _k._MAX_BLOCK)
ROW_BLOCK_P = 512  # lp_normalize rows, other p, float16/32: up to this many beyond (<= _k._ROW_BLOCK_P)
# rows past the registers of ROW_BLOCK (ROW_BLOCK_P) threads: a block of this
# many per row, two blocks per SM at the kernels' 153-212 registers (one
# block's reductions overlap the other's loads; NOTES.md section 27)
ROW_LONG = 128
ROW_MAX_BLOCKS = 65535  # row_norm grid cap (grid-stride over rows beyond)
APPLY_MAX_BLOCKS = 8192  # apply grid cap (grid-stride beyond)
BLOCKS_TARGET = None  # blocks wanted to fill the GPU; None: 4 per SM (4 in the simulator)
MAX_GRID_YZ = 65535  # CUDA limit of gridDim.y / gridDim.z

# ------------------------------------------------------ the call's context


class _Call(NamedTuple):
    """What every launch, copy and allocation of a call uses: its stream (a
    numba stream, 0 for the legacy default stream) and the library of the
    user's arrays ("numba", "cupy", "torch"; ``like`` one of them)."""

    stream: Any
    lib: str
    like: Any


# (the default is a NamedTuple: immutable)
_CALL: contextvars.ContextVar = contextvars.ContextVar(
    "numbanorm_cuda_call",
    default=_Call(0, "numba", None),  # noqa: B039
)

# numba stream objects for raw handles, built once per handle (CAI v3 also
# names the legacy and per-thread default streams 1 and 2: valid driver
# handles, CU_STREAM_LEGACY and CU_STREAM_PER_THREAD)
_EXTERNAL: dict = {}


def _external(ptr: int):
    s = _EXTERNAL.get(ptr)
    if s is None:
        if len(_EXTERNAL) > 256:
            _EXTERNAL.clear()
        s = _EXTERNAL[ptr] = cuda.external_stream(ptr)
    return s


def _as_numba_stream(stream: Any):
    """A numba stream for a numba/CuPy/PyTorch stream or a raw handle (0: default)."""
    if stream is None:
        return 0
    if isinstance(stream, (int, np.integer)) and not isinstance(stream, bool):
        return _external(int(stream)) if stream else 0
    ptr = getattr(stream, "ptr", None)  # CuPy
    if ptr is None:
        ptr = getattr(stream, "cuda_stream", None)  # PyTorch
    if ptr is not None:
        return _external(int(ptr)) if ptr else 0
    if hasattr(stream, "synchronize"):  # a numba stream (also the simulator's)
        return stream
    raise TypeError(
        f"stream must be a numba, CuPy or PyTorch CUDA stream or a handle, got {type(stream).__name__}"
    )


def _library(x: Any) -> str:
    mod = type(x).__module__
    if mod.startswith("cupy"):
        return "cupy"
    if mod.startswith("torch"):
        return "torch"
    return "numba"


def _handle(s) -> int:
    """The raw handle of a numba stream (0 for the legacy default stream)."""
    if not s:
        return 0
    h = getattr(s, "handle", None)
    if h is None:  # the simulator's streams have no handle
        return id(s)
    h = getattr(h, "value", h)  # a ctypes or cuda-bindings handle
    try:
        return int(h or 0)
    except TypeError:
        return int(s)


def _detached(x: Any) -> Any:
    """torch refuses the interface on tensors that require grad: detach them."""
    if type(x).__module__.startswith("torch") and getattr(x, "requires_grad", False):
        return x.detach()
    return x


def _cai_stream(desc: dict):
    """The stream a CUDA Array Interface v3 description reports: None (no
    ordering needed), 0 (1: the legacy default stream) or a numba stream."""
    ptr = desc.get("stream")
    if ptr is None:
        return None
    return 0 if ptr == 1 else _external(int(ptr))


def _producer_stream(x: Any):
    """The stream a user's array was produced on (0 when none is reported),
    for ``x`` of any library."""
    if _is_numba_device_array(x):
        return getattr(x, "stream", 0) or 0
    s = _cai_stream(_detached(x).__cuda_array_interface__)
    return 0 if s is None else s


@contextlib.contextmanager
def context(stream: Any = None, like: Any = None):
    """Every launch, copy and allocation of this thread inside the block:
    on ``stream`` (None: the stream ``like`` reports, else the enclosing
    call's), with memory from ``like``'s library (else the enclosing
    call's).  A contextvars variable: thread- and task-local."""
    cur = _CALL.get()
    if stream is None and like is None:
        yield
        return
    lib = cur.lib if like is None else _library(like)
    if stream is not None:
        s = _as_numba_stream(stream)
    elif like is not None:
        s = _producer_stream(like)
    else:
        s = cur.stream
    token = _CALL.set(_Call(s, lib, cur.like if like is None else like))
    try:
        yield
    finally:
        _CALL.reset(token)


def _stream():
    return _CALL.get().stream


def _sync(stream) -> None:
    """Wait for ``stream`` (after an asynchronous device-to-host copy)."""
    if stream:
        stream.synchronize()


# one event per thread, re-recorded for each ordering (a wait enqueued on a
# stream keeps the state of the event at the time of the wait)
_EVENT = threading.local()


def _order_after(producer) -> None:
    """Make the call's stream wait for the work enqueued so far on
    ``producer`` (a numba stream or 0), without blocking the host: the
    consumer's duty under the CUDA Array Interface v3 (its ``stream``)."""
    ours = _stream()
    if _handle(producer) == _handle(ours) or SIMULATOR:
        return
    ev = getattr(_EVENT, "ev", None)
    if ev is None:
        ev = _EVENT.ev = cuda.event(timing=False)
    ev.record(producer)
    ev.wait(ours)


# ------------------------------------------------------------ launches

try:  # numba-cuda's own class (not numba's: a filter naming that one misses it)
    from numba.cuda.core.errors import NumbaPerformanceWarning as _PerfWarning
except ImportError:  # pragma: no cover - older numba-cuda
    from numba.core.errors import NumbaPerformanceWarning as _PerfWarning

# configured launches, by (kernel, grid, block, stream handle)
_LAUNCHES: dict = {}


def _launch(kernel, grid, block, *args) -> None:
    """``kernel[grid, block, stream](*args)`` on the call's stream.

    numba-cuda warns (NumbaPerformanceWarning) when it configures a launch of
    fewer than 128 blocks: every launch of a small input, by design here, and
    an error under ``-W error``.  The warning is about the caller's choice of
    grid, which is ours: it is silenced while the configuration is built,
    once per key (configurations are cached)."""
    s = _stream()
    key = (kernel, grid, block, _handle(s))
    # (the simulator configures the kernel object itself: nothing to cache)
    cfg = None if SIMULATOR else _LAUNCHES.get(key)
    if cfg is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", _PerfWarning)
            cfg = kernel[grid, block, s]
        if not SIMULATOR:
            if len(_LAUNCHES) > 1024:
                _LAUNCHES.clear()
            _LAUNCHES[key] = cfg
    cfg(*args)


# ------------------------------------------------------------ array helpers


def _is_numba_device_array(x: Any) -> bool:
    if SIMULATOR:
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

        return isinstance(x, FakeCUDAArray)
    return bool(getattr(x, "__cuda_ndarray__", False))


def as_device(x: Any):
    """``x`` as a numba device array, zero-copy (numba arrays are returned as
    is).  A CuPy array or PyTorch tensor is imported without synchronising:
    the call's stream is ordered after the stream it reports (CUDA Array
    Interface v3) with an event, on the device."""
    if _is_numba_device_array(x):
        return x
    x = _detached(x)
    try:
        desc = x.__cuda_array_interface__
    except AttributeError:
        raise TypeError(f"expected a CUDA array, got {type(x).__name__}") from None
    if SIMULATOR:
        raise TypeError(
            f"the CUDA simulator cannot use {type(x).__name__} "
            "(__cuda_array_interface__ needs a real GPU); pass numba.cuda.to_device arrays"
        )
    d = cuda.from_cuda_array_interface(desc, owner=x, sync=False)
    producer = _cai_stream(desc)
    if producer is not None:
        _order_after(producer)
    return d


def _is_c_contiguous(a) -> bool:
    return bool(a.is_c_contiguous())


def _launch_1d(n: int) -> tuple[int, int]:
    return max(1, min(math.ceil(n / THREADS), APPLY_MAX_BLOCKS)), THREADS


def _copy_nd(src, dst) -> None:
    """Elementwise device copy between same-shape arrays of any strides."""
    if src.size == 0:
        return
    if src.ndim == 0:
        src, dst = src.reshape(1), dst.reshape(1)
    if src.ndim > 3:
        for idx in np.ndindex(*src.shape[:-3]):
            _copy_nd(src[idx], dst[idx])
        return
    kern = (_k._copy1, _k._copy2, _k._copy3)[src.ndim - 1]
    blocks, threads = _launch_1d(src.size)
    _launch(kern, blocks, threads, src, dst)


def permute(x: Any, perm) -> Any:
    """A view of the device array ``x`` with axes in the order ``perm``: the
    same memory with shape and strides permuted.  Built here because numba's
    device ``transpose`` copies 2-D arrays into new memory (and raises beyond
    2-D), where the simulator returns a view (FIELD-NOTES)."""
    d = as_device(x)
    perm = tuple(int(a) for a in perm)
    if perm == tuple(range(d.ndim)):
        return d
    shape = tuple(d.shape[a] for a in perm)
    strides = tuple(d.strides[a] for a in perm)
    if SIMULATOR:
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

        return FakeCUDAArray(np.lib.stride_tricks.as_strided(d._ary, shape, strides), stream=d.stream)
    from numba.cuda.cudadrv.devicearray import DeviceNDArray

    return DeviceNDArray(shape, strides, d.dtype, stream=d.stream, gpu_data=d.gpu_data)


def copy(src: Any, dst: Any) -> None:
    """dst[...] = src on the device, any strides, on the call's stream."""
    _copy_nd(as_device(src), as_device(dst))


def _alloc(shape, dtype):
    """A new device array (numba view) from the call's library: CuPy's memory
    pool or PyTorch's caching allocator when the user's arrays are theirs
    (on the call's stream, which their pools order reuse by), numba's
    allocator otherwise."""
    dtype = np.dtype(dtype)
    call = _CALL.get()
    shape = tuple(int(n) for n in np.atleast_1d(shape)) if not isinstance(shape, int) else (shape,)
    if call.lib == "cupy":
        import cupy

        h = _handle(call.stream)
        st = cupy.cuda.ExternalStream(h) if h else cupy.cuda.Stream.null
        with cupy.cuda.Device(call.like.device.id), st:
            a = cupy.empty(shape, dtype)
        return cuda.from_cuda_array_interface(a.__cuda_array_interface__, owner=a, sync=False)
    if call.lib == "torch":
        import torch

        dev = call.like.device
        h = _handle(call.stream)
        st = torch.cuda.ExternalStream(h, device=dev) if h else torch.cuda.default_stream(dev)
        tdt = torch.from_numpy(np.empty(0, dtype)).dtype
        with torch.cuda.stream(st):
            a = torch.empty(shape, dtype=tdt, device=dev)
        return cuda.from_cuda_array_interface(a.__cuda_array_interface__, owner=a, sync=False)
    return cuda.device_array(shape, dtype, stream=call.stream)


def ascontiguous(x: Any):
    """A C-contiguous numba device array with the values of ``x`` (copies
    only if strided; the copy on the call's stream, from its library)."""
    d = as_device(x)
    if _is_c_contiguous(d):
        return d
    out = _alloc(d.shape, d.dtype)
    _copy_nd(d, out)
    return out


def reshape(a: Any, shape) -> Any:
    """Zero-copy reshape of a C-contiguous device array."""
    return as_device(a).reshape(shape)


def empty(shape, dtype, like: Any = None):
    """A new uninitialized device array (a numba view), from the library of
    ``like`` (else the call's): CuPy's pool, PyTorch's allocator, numba's."""
    if like is not None and _CALL.get().like is None and not _is_numba_device_array(like):
        with context(like=like):
            return _alloc(shape, dtype)
    return _alloc(shape, dtype)


def device_of(x: Any) -> int | None:
    """The CUDA device ordinal of a user's array (None: not known)."""
    mod = type(x).__module__
    if mod.startswith("cupy"):
        return int(x.device.id)
    if mod.startswith("torch"):
        return int(x.device.index) if x.device.index is not None else None
    if SIMULATOR:
        return None
    ctx = getattr(getattr(x, "gpu_data", None), "context", None)
    dev = getattr(ctx, "device", None)
    return int(dev.id) if dev is not None else None


def to_host(a: Any) -> np.ndarray:
    """A host numpy copy of a device array (numpy input is returned as an array)."""
    if isinstance(a, np.ndarray):
        return a
    s = _stream()
    h = as_device(a).copy_to_host(stream=s)
    _sync(s)
    return h


def from_host(a: Any, like: Any = None):
    """A device copy of host array ``a`` (memory from the call's library)."""
    h = np.ascontiguousarray(a)
    d = empty(h.shape, h.dtype, like=like)
    if h.size:
        d.copy_to_device(h, stream=_stream())
    return d


def wrap(a: Any, like: Any):
    """``a`` (a numba device array) as the array type of the user's input
    ``like``, zero-copy (its memory came from that library: see _alloc)."""
    mod = type(like).__module__
    if mod.startswith("cupy"):
        import cupy

        return cupy.asarray(a)
    if mod.startswith("torch"):
        import torch

        return torch.as_tensor(a, device=like.device)
    return a


def copy_into(dst: Any, host: Any) -> None:
    """Write host values into the existing device array ``dst`` (in-place running stats)."""
    d = as_device(dst)
    h = np.ascontiguousarray(np.asarray(host, dtype=d.dtype).reshape(d.shape))
    s = _stream()
    if _is_c_contiguous(d):
        d.copy_to_device(h, stream=s)
    else:
        _copy_nd(from_host(h), d)
    _sync(s)


# -------------------------------------------------------------- primitives


def _pow2_ceil(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


_SM_COUNT: list[int] = []


def _blocks_target() -> int:
    if BLOCKS_TARGET is not None:
        return int(BLOCKS_TARGET)
    if SIMULATOR:
        return 4
    if not _SM_COUNT:
        _SM_COUNT.append(int(cuda.get_current_device().MULTIPROCESSOR_COUNT))
    return 4 * _SM_COUNT[0]


def _tiling(P: int, R: int, K: int, itemsize: int):
    """Block (TX, TY), grid (kt, S, Pg) and rows per split for a (P, R, K)
    reduction of x of ``itemsize`` bytes (a thread's chunk: _k.chunk_rows)."""
    threads = min(THREADS, _k._MAX_BLOCK)
    ch = _k.chunk_rows(itemsize)
    if K == 1:
        # row reduction: one warp for short rows, up to `threads` for long ones
        tx = 1
        ty = min(threads, max(min(WARP_LAUNCH, threads), _pow2_ceil(math.ceil(R / ch))))
    else:
        tx = min(K, 32, threads)
        ty = max(1, threads // tx)
    kt = math.ceil(K / tx)
    tiles = kt * P
    splits = 1
    target = _blocks_target()
    if tiles < target:
        # too few blocks to fill the GPU: split R, merge the partials after
        splits = max(1, min(math.ceil(target / tiles), math.ceil(R / (ty * ch)), MAX_GRID_YZ))
    rows = math.ceil(R / splits)
    splits = math.ceil(R / rows)
    return (tx, ty), (kt, splits, min(P, MAX_GRID_YZ)), rows, splits


def moments(x3: Any, skipnan: bool, minmax: bool, want_moments: bool = True) -> Moments:
    """Per-(p, k) count, mean, M2 (and min, max) over axis 1 of a (P, R, K) device array.

    Returns host float64 (P, K) arrays as :class:`numbanorm.backends.Moments`;
    min/max are None unless ``minmax``.  Accumulation is float64 with the
    CPU's statistics core: an exact two-pass per thread chunk
    (``shifted_moments``), then merges across threads, warps, blocks and row
    splits with each mean carried as an unevaluated sum (``chan_merge_dd``;
    Chan, Golub & LeVeque 1983), so ``resid`` is the mean's rounding
    residual as on the CPU.  The moments are always computed
    (``want_moments`` is accepted for the contract).
    """
    x3 = as_device(x3)
    P, R, K = x3.shape
    if P * K == 0 or R == 0:
        res = np.zeros((6, P, K))
        res[4] = np.inf
        res[5] = -np.inf
    else:
        s = _stream()
        res = moments_device(x3, skipnan, minmax).copy_to_host(stream=s)
        _sync(s)
    # rows: count, mean, residual, M2, min, max (the CPU's partials); the
    # mean + residual rounded to one float, the rest kept (Fast2Sum)
    hi = res[1] + res[2]
    res[2] = (res[1] - hi) + res[2]
    res[1] = hi
    if minmax:
        return Moments(res[0], res[1], res[3], res[4], res[5], res[2])
    return Moments(res[0], res[1], res[3], None, None, res[2])


def moments_device(x3: Any, skipnan: bool, minmax: bool):
    """:func:`moments`' statistics left on the device: a (6, P, K) float64
    device array of count, mean, mean residual (the mean not yet rounded
    with it), M2, min, max of each (p, k) over R (R > 0)."""
    x3 = as_device(x3)
    P, R, K = x3.shape
    block, grid, rows, splits = _tiling(P, R, K, x3.dtype.itemsize)
    part = _alloc((6, P, splits, K), np.float64)
    kern = _k.streaming("_moments_partial", x3.dtype.itemsize)
    _launch(kern, grid, block, x3, bool(skipnan), bool(minmax), rows, part)
    if splits == 1:
        return part.reshape(6, P, K)
    return merge_device(part)


def merge_device(part: Any):
    """(6, A, M, B) partial statistics (count, mean, residual, M2, min, max)
    Chan-merged over M in order on the device (the host's ``merge_mid``):
    (6, A, B)."""
    _, A, M, B = part.shape
    res = _alloc((6, A, B), np.float64)
    if A * B:
        blocks, threads = _launch_1d(A * B)
        _launch(_k._moments_merge, blocks, threads, part, res)
    return res


def _f64_rows(arrays, fill, C) -> Any:
    """A (len(arrays), *C) float64 device array (C: an int or a shape) of
    host or device arrays of C's size (None: ``fill[i]``): the host ones in
    one upload, the device ones cast into their rows on the device."""
    shape = (C,) if isinstance(C, (int, np.integer)) else tuple(C)
    host = np.empty((len(arrays), *shape))
    on_device = []
    for i, a in enumerate(arrays):
        if a is None:
            host[i] = fill[i]
        elif isinstance(a, np.ndarray):
            host[i] = a.reshape(shape)
        else:
            host[i] = 0.0
            on_device.append((i, as_device(a)))
    rows = from_host(host)
    for i, a in on_device:
        _copy_nd(a, rows[i] if a.ndim == len(shape) else rows[i].reshape(a.shape))
    return rows


def finish_apply(x3: Any, out3: Any, st: Any, idx, fin):
    """The apply of a (P, R, K) view with parameters computed on the device
    from group statistics ``st`` ((6, J) device float64, of moments_device /
    merge_device): entry (p, k) takes group ``idx[0, p, k]`` and channel
    ``idx[1, p, k]`` (host int64 (2, P, K)); ``fin`` (``_reduce.Finish``)
    names the arithmetic (``_k.FIN_*``), its constants and the per-channel
    weight and bias (host or device (C,) arrays, or None).  No copy to the
    host, no synchronisation.  Returns the (3, P, K) device parameters
    (center, scale, shift)."""
    x3 = as_device(x3)
    out3 = as_device(out3)
    P, R, K = x3.shape
    prm = _alloc((3, P, K), np.float64)
    if P * K == 0:
        return prm
    wb = _f64_rows((fin.weight, fin.bias), (1.0, 0.0), max(1, int(fin.channels)))
    blocks, threads = _launch_1d(P * K)
    consts = (float(fin.eps), float(fin.ddof), float(fin.lo), float(fin.hi), float(fin.p))
    flags = (bool(fin.with_mean), bool(fin.with_std))
    idx_d = from_host(np.asarray(idx, np.int64))
    _launch(_k._finish_prm, blocks, threads, st, idx_d, wb, int(fin.kind), *consts, *flags, prm)
    clip = fin.kind == FIN_MINMAX and fin.clip  # (only minmax_scale clips)
    if R:
        _apply_prm(x3, out3, prm, fin.lo if clip else None, fin.hi if clip else None)
    return prm


# tile_norm's launch (read at every call; tests patch them): the tiles of all
# live blocks within TILE_L2_BYTES, 34 MiB of the 50 MB L2 of an H100/H200
# (the output lines written through L2 replace the tile's as it is re-read;
# 34 MiB, not 32, so that a 64 x 64 float32 tile of 16 channels, group
# norm's common C = 512, G = 32, fits on 132 SMs); a tile row of at least
# TILE_ROW_BYTES (a whole 32-byte sector); TILE_THREADS per block (two
# blocks of 256 per SM at the kernel's 128 registers, or one of 512 when
# only one tile per SM fits); TILE_SMS None: the device's SM count (1 in
# the simulator).
TILE_L2_BYTES = 34 << 20
TILE_ROW_BYTES = 32
TILE_THREADS = 256
TILE_BLOCKS_PER_SM = 2
TILE_SMS = None


def _sm_count() -> int:
    if TILE_SMS is not None:
        return int(TILE_SMS)
    if SIMULATOR:
        return 1
    if not _SM_COUNT:
        _SM_COUNT.append(int(cuda.get_current_device().MULTIPROCESSOR_COUNT))
    return _SM_COUNT[0]


def channels_last_view(a: Any, ca: int):
    """A C-contiguous (N, S, C) view of the device array ``a`` with its
    channels on axis ``ca`` (S: the other axes but 0, in the order of their
    strides), or None when ``a``'s memory is not laid out so (channels
    innermost, the spatial axes one run, the samples outermost)."""
    d = as_device(a)
    nd = d.ndim
    if nd < 2 or ca == 0:
        return None
    spatial = sorted((x for x in range(1, nd) if x != ca), key=lambda x: -d.strides[x])
    v = permute(d, (0, *spatial, ca))
    if not _is_c_contiguous(v):
        return None
    N, C = d.shape[0], d.shape[ca]
    return v.reshape(N, d.size // (N * C) if N * C else 0, C)


def tile_norm(x: Any, out: Any, ca: int, weight, bias, groups: int, eps: float):
    """Instance norm (``groups`` = C) or group norm of a device array with
    its channels on axis ``ca`` in one kernel that reads x once from HBM
    (``_cuda_tiles._tile_norm``: a block per (sample, tile of whole groups)
    takes the tile's statistics, then applies them re-reading the tile from
    L2); ``out`` may be ``x``; ``weight``, ``bias``: (C,) host or device
    arrays, or None.  Returns the (4, N * groups) float64 device statistics
    (count, mean, mean residual, M2 of group n * groups + g; nothing copied
    to the host), or None, having done nothing, when x or out is not laid
    out channels-last (:func:`channels_last_view`) or a tile of whole groups
    does not fit L2 (``_cuda_tiles.tile_launch``): the caller then takes
    the statistics-then-apply path."""
    from . import _cuda_tiles as tiles

    x3 = channels_last_view(x, ca)
    o3 = channels_last_view(out, ca) if x3 is not None else None
    if o3 is None:
        return None
    N, S, C = x3.shape
    G = int(groups)
    if G <= 0 or C % G or N * S * C == 0:
        return None
    itemsize = x3.dtype.itemsize
    sms = _sm_count()
    plan = tiles.tile_launch(
        N, S, C, C // G, itemsize, sms, TILE_L2_BYTES, TILE_ROW_BYTES, TILE_THREADS, TILE_BLOCKS_PER_SM
    )
    if plan is None:
        return None
    _, block, grid = plan
    wb = _f64_rows((weight, bias), (1.0, 0.0), C)
    st = _alloc((4, N * G), np.float64)
    _launch(tiles.tile_kernel(itemsize), grid, block, x3, o3, wb, C // G, float(eps), st)
    return st


def pnorm_device(x3: Any, p: float, skipnan: bool = True):
    """:func:`pnorm_nan`'s sums left on the device, not yet finished: a (P,
    K) float64 device array of sum |x|**p over R (max |x| for p = inf), NaN
    left out unless ``skipnan`` is False."""
    x3 = as_device(x3)
    P, R, K = x3.shape
    p = float(p)
    if P * K == 0 or R == 0:
        return from_host(np.zeros((P, K)))
    mode = 0 if p == 1.0 else 1 if p == 2.0 else 2 if math.isinf(p) else 3
    block, grid, rows, splits = _tiling(P, R, K, x3.dtype.itemsize)
    acc = _alloc((P, splits, K), np.float64)
    kern = _k.streaming("_pnorm_partial", x3.dtype.itemsize)
    _launch(kern, grid, block, x3, mode, p, bool(skipnan), rows, acc)
    if splits == 1:
        return acc.reshape(P, K)
    return fold_device(acc, mode == 2)


def fold_device(part: Any, is_max: bool):
    """(A, M, B) partial sums (maxima with ``is_max``, NaN kept) folded over
    M in order on the device: (A, B)."""
    A, M, B = part.shape
    res = _alloc((A, B), np.float64)
    if A * B:
        blocks, threads = _launch_1d(A * B)
        _launch(_k._fold_sum, blocks, threads, part, bool(is_max), res)
    return res


def running_update(st: Any, ridx, running: Any, unbiased_var: bool, momentum: float) -> None:
    """``running`` (the user's (C,) device array, any float dtype) updated
    in place on the device from group statistics ``st`` (6, J): channel c
    averages groups ``ridx[c]`` (host int64 (C, Ns)); see _k._running_stat."""
    r = as_device(running)
    C = int(r.shape[0])
    if C == 0:
        return
    blocks, threads = _launch_1d(C)
    ridx = from_host(np.asarray(ridx, np.int64))
    _launch(_k._running_stat, blocks, threads, st, ridx, bool(unbiased_var), float(momentum), r)


def apply(x3: Any, out3: Any, center, scale, shift, lo=None, hi=None) -> None:
    """out3 = clip((x3 - center) * scale + shift, lo, hi) on the device; out3 may be x3."""
    x3 = as_device(x3)
    out3 = as_device(out3)
    P, R, K = x3.shape
    if x3.size == 0:
        return
    prm = np.empty((3, P, K))
    prm[0] = center
    prm[1] = scale
    prm[2] = shift
    _apply_prm(x3, out3, from_host(prm), lo, hi)


def batch_norm_eval(x3: Any, out3: Any, index, rm, rv, w, b, eps: float) -> None:
    """Eval batch_norm with device running statistics: the parameters of the
    (P, R, K) view (entry (p, k) takes channel ``index[p, k]``, host int64)
    computed on the device from ``rm``, ``rv`` (the user's device arrays,
    any float dtype) and ``w``, ``b`` (device or host (C,) arrays, or None),
    then the apply: no copy to the host, no synchronisation."""
    x3 = as_device(x3)
    out3 = as_device(out3)
    P, R, K = x3.shape
    # rm, rv, w, b as float64 (4, C)
    chans = _f64_rows((rm, rv, w, b), (0.0, 0.0, 1.0, 0.0), int(rm.shape[0]))
    prm = _alloc((3, P, K), np.float64)
    idx = from_host(np.ascontiguousarray(index, np.int64))
    blocks, threads = _launch_1d(P * K)
    _launch(_k._bn_eval_prm, blocks, threads, idx, chans, float(eps), prm)
    _apply_prm(x3, out3, prm, None, None)


def _apply_prm(x3, out3, prm_d, lo, hi) -> None:
    """The apply kernels with device parameters prm_d (3, P, K) float64."""
    P, R, K = x3.shape
    clip = lo is not None or hi is not None
    lo = -math.inf if lo is None else float(lo)
    hi = math.inf if hi is None else float(hi)
    if K >= _k._WIDE_K:
        # a thread per column (its parameters in registers), TY threads along R
        tx = min(32, THREADS)
        ty = max(1, THREADS // tx)
        kt = math.ceil(K / tx)
        gz = min(P, MAX_GRID_YZ)
        gy = max(1, min(math.ceil(_blocks_target() / (kt * gz)), math.ceil(R / ty), MAX_GRID_YZ))
        gy = max(1, min(gy, APPLY_MAX_BLOCKS // max(1, kt * gz)))
        kern = _k.streaming("_apply_wide", x3.dtype.itemsize)
        _launch(kern, (kt, gy, gz), (tx, ty), x3, out3, prm_d, clip, lo, hi)
        return
    # flat over the R*K plane, a grid-stride step that is a multiple of K
    # (so at least K threads)
    gy = min(P, MAX_GRID_YZ)
    gx = max(1, math.ceil(K / THREADS), min(math.ceil(R * K / THREADS), APPLY_MAX_BLOCKS // gy))
    x2, o2 = x3.reshape(P, R * K), out3.reshape(P, R * K)
    _launch(_k.streaming("_apply_flat", x3.dtype.itemsize), (gx, gy), THREADS, x2, o2, prm_d, clip, lo, hi)


def row_norm(x2: Any, out2: Any, weight, bias, eps: float, rms: bool, p: float | None = None):
    """Fused layer norm (rms=False), RMS norm, or with ``p`` ``x /
    max(||x||_p, eps)`` (NaN left out of the norm) of each row of a (R, D)
    device array, in one kernel: one read of x while a row fits the
    registers of its threads (_NREG = 32 values each: D <= 8192; p other
    than 1, 2 and inf _NREG_P = 16: D <= 4096, float16/32 8192).  Longer
    rows take a block per row (_row_long_*): the statistics by chunks of
    the same loads in flight, x read once for them, then the output pass
    re-reading the row the block has just read (from L2).  Threads per row: _k.row_launch.  weight/bias:
    (RW, S) host arrays: row r takes row r % RW, in S equal segments
    (ROW_NORM_GROUPED: instance norm RW = C, S = 1; group norm RW = G,
    S = C/G; layer norm (1, D)).

    Returns ``(mean, rstd)`` as (R,) float64 *device* arrays (mean 0 for RMS
    and p-norms): nothing is copied to the host unless the caller asks
    (``to_host``).
    """
    x2 = as_device(x2)
    out2 = as_device(out2)
    R, D = x2.shape
    stats = _alloc((2, R), np.float64)
    if R == 0 or D == 0:
        return stats[0], stats[1]
    # one kernel per statistic (the others' code not compiled in); p other
    # than 1, 2, inf: its own (the pow is a call: fewer values per thread)
    if p is None:
        kern, nreg, extra = (_k._row_rms if rms else _k._row_layer), _k._NREG, ()
    elif float(p) in (1.0, 2.0, math.inf):
        kern, nreg, extra = _k._row_lp, _k._NREG, (float(p),)
    else:
        # float16/32: _row_lpp32, bounded to 128 registers (two blocks of 256
        # per SM: a D = 4096 row 1.5x the bytes in flight HBM needs, not
        # 0.75x; one of 512 threads keeps D <= 8192 in registers); float64
        # unbounded (it would spill; 154 registers: blocks of <= 256)
        kern = _k._row_lpp if x2.dtype == np.float64 else _k._row_lpp32
        nreg, extra = _k._NREG_P, (float(p),)
    wb_d = _row_params(weight, bias, D)
    launch = (D, x2.dtype.itemsize, nreg, ROW_WARP_MAX_D, ROW_GROUP, ROW_BLOCK, min(THREADS, ROW_THREADS))
    if kern is _k._row_lpp32:
        # rows past ROW_BLOCK x 16 values: up to ROW_BLOCK_P threads per row
        # (one read up to D = 8192 instead of two)
        group, rows_per_block = _k.row_launch_lpp32(*launch, ROW_BLOCK_P, _k._HAVE_SHFL)
    else:
        group, rows_per_block = _k.row_launch(*launch)
    if group * nreg < D:
        # past the registers of any row group: a block per row, the row read
        # by chunks (statistics), then again from L2 (the output)
        kern, group, rows_per_block = _LONG_ROWS[kern][x2.dtype == np.float64], long_row_threads(), 1
    blocks = max(1, min(math.ceil(R / rows_per_block), ROW_MAX_BLOCKS))
    _launch(kern, blocks, (group, rows_per_block), x2, out2, wb_d, float(eps), *extra, stats)
    return stats[0], stats[1]


def _row_params(weight, bias, D: int):
    """row_norm's (2, RW, S) float64 device array of weight and bias, each
    (RW, S) or (S,), host or device (None: ones, zeros of the other's
    shape; _f64_rows: host values in one upload, device values cast on the
    device, so a call with device parameters copies nothing to the host)."""

    def shape2(a):
        sh = tuple(int(n) for n in a.shape)
        return (1, sh[0]) if len(sh) < 2 else sh

    shapes = [shape2(a) for a in (weight, bias) if a is not None]
    shp = shapes[0] if shapes else (1, 1)
    if any(sh != shp for sh in shapes) or len(shp) != 2 or shp[1] == 0 or D % shp[1]:
        got = [None if a is None else tuple(a.shape) for a in (weight, bias)]
        raise ValueError(f"row_norm: weight and bias {got} must be (RW, S), S dividing D={D}")
    return _f64_rows((weight, bias), (1.0, 0.0), shp)


def long_row_threads() -> int:
    """Threads per row (and block) of the long-row kernels: ROW_LONG, at
    most ROW_BLOCK, a power of two (their block reductions are trees) within
    _k._MAX_BLOCK_LONG."""
    g = 1
    while 2 * g <= min(int(ROW_LONG), int(ROW_BLOCK), _k._MAX_BLOCK_LONG):
        g *= 2
    return g


# the long-row kernels of each row kernel (same arguments), for float16/32
# and for float64 (layer norm: 16 float64 per chunk, 32 spilled)
_LONG_ROWS = {
    _k._row_layer: (_k._row_long_layer, _k._row_long_layer_d),
    _k._row_rms: (_k._row_long_rms, _k._row_long_rms),
    _k._row_lp: (_k._row_long_lp, _k._row_long_lp),
    _k._row_lpp: (_k._row_long_lpp, _k._row_long_lpp),
    _k._row_lpp32: (_k._row_long_lpp, _k._row_long_lpp),
}


def pnorm(x3: Any, p: float) -> np.ndarray:
    """``(sum_r |x3[p, r, k]|**p) ** (1/p)`` (max |x| for p = inf) as host
    float64 (P, K), NaN left out of the norm (the contract, API section 3)."""
    return pnorm_nan(x3, p, True)


def pnorm_nan(x3: Any, p: float, skipnan: bool) -> np.ndarray:
    """``(sum_r |x3[p, r, k]|**p) ** (1/p)`` (max |x| for p = inf) as host float64 (P, K).

    NaN is left out of the norm (the contract, API section 3); ``skipnan=False``
    propagates it instead.
    """
    x3 = as_device(x3)
    P, R, K = x3.shape
    p = float(p)
    if P * K == 0 or R == 0:
        return np.zeros((P, K))
    s = _stream()
    tot = pnorm_device(x3, p, skipnan).copy_to_host(stream=s)
    _sync(s)
    if math.isinf(p):
        return tot
    with np.errstate(over="ignore"):
        return pnorm_finish_array(tot, p)
