"""CUDA backend: the primitives of ``numbanorm.backends`` for GPU arrays.

Takes numba device arrays (also the CUDA simulator's), and anything with
``__cuda_array_interface__`` (CuPy arrays, PyTorch CUDA tensors) through
:func:`as_device`, a zero-copy numba view.  Results are numba device arrays;
:func:`wrap` turns them back into the user's array type, again zero-copy.
Statistics come back as small host ``float64`` arrays, as the contract asks.

Launch shapes (kernels in ``_cuda_kernels.py``):

``moments`` / ``pnorm``
    ``x3`` is ``(P, R, K)``, reduced over ``R``.  A block is ``(TX, TY)``
    threads: ``TX = min(K, 32)`` along K (consecutive threads read
    consecutive addresses: channels-last needs no transpose), ``TY`` along R.
    For ``K == 1`` (row reductions) ``TX = 1`` and ``TY`` grows with the row,
    from one warp (short rows) to ``THREADS``.  The grid is
    ``(ceil(K/TX), S, P)``; when ``P * ceil(K/TX)`` blocks cannot fill the GPU
    each row range is split into ``S`` parts whose partial
    ``(count, mean, M2, min, max)`` are Chan-merged by a second small kernel.
``apply``
    grid-stride elementwise over the ``(P, R*K)`` view; grid ``(gx, P)``.
``row_norm``
    ``D <= ROW_WARP_MAX_D``: warp-per-row (``ROW_GROUP`` = 32 threads per row,
    ``THREADS // 32`` rows per block), beyond: block-per-row (``ROW_BLOCK``
    threads); the row stays in registers when it fits (32 values per thread).

Streams: ``with context(stream):`` makes every launch and copy of the calling
thread (a ``contextvars`` variable: thread- and task-local) go to ``stream``
(a numba stream, a CuPy stream, a PyTorch stream or a raw ``cudaStream_t``
handle); the default stream otherwise.

Non-contiguous device input: :func:`ascontiguous` copies it on the device
(numba arrays of up to 3 dimensions in one launch, more dimensions with one
launch per leading index; CuPy/PyTorch inputs with their own contiguous copy).
Reshaping a contiguous device array is a zero-copy view.

The module-level launch parameters (``THREADS`` ...) are read at each call, so
tests set them small to run multi-block and merge paths in the simulator.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Any

import numpy as np

try:
    from numba import cuda
    from numba.core import config as _numba_config
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError("numbanorm's CUDA backend needs numba-cuda: pip install 'numbanorm[cuda]'") from exc

from .._stats import pnorm_finish  # noqa: E402
from . import Moments  # noqa: E402

SIMULATOR = bool(_numba_config.ENABLE_CUDASIM)
NAME = "cuda"
# row_norm takes (1, D) weights only (per-row/segment weights: not fused here)
ROW_NORM_GROUPED = False


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
ROW_GROUP = 32  # threads per row in warp-per-row row_norm
ROW_WARP_MAX_D = 1024  # row_norm: warp-per-row up to this D, block-per-row beyond
ROW_BLOCK = 256  # threads per row in block-per-row row_norm (<= _k._MAX_BLOCK)
ROW_MAX_BLOCKS = 65535  # row_norm grid cap (grid-stride over rows beyond)
APPLY_MAX_BLOCKS = 8192  # apply grid cap (grid-stride beyond)
BLOCKS_TARGET = None  # blocks wanted to fill the GPU; None: 4 per SM (4 in the simulator)
MAX_GRID_YZ = 65535  # CUDA limit of gridDim.y / gridDim.z

_STREAM: contextvars.ContextVar = contextvars.ContextVar("numbanorm_cuda_stream", default=0)


# ----------------------------------------------------------------- streams


def _as_numba_stream(stream: Any):
    """A numba stream for a numba/CuPy/PyTorch stream or a raw handle (0: default)."""
    if stream is None:
        return 0
    if isinstance(stream, (int, np.integer)):
        return cuda.external_stream(int(stream)) if stream else 0
    ptr = getattr(stream, "ptr", None)  # CuPy
    if ptr is None:
        ptr = getattr(stream, "cuda_stream", None)  # PyTorch
    if ptr is not None:
        return cuda.external_stream(int(ptr)) if ptr else 0
    if hasattr(stream, "synchronize"):  # a numba stream (also the simulator's)
        return stream
    raise TypeError(
        f"stream must be a numba, CuPy or PyTorch CUDA stream or a handle, got {type(stream).__name__}"
    )


@contextlib.contextmanager
def context(stream: Any = None):
    """Run every launch and copy of this thread inside the block on ``stream``."""
    token = _STREAM.set(_as_numba_stream(stream))
    try:
        yield
    finally:
        _STREAM.reset(token)


def _stream():
    return _STREAM.get()


def _sync(stream) -> None:
    """Wait for ``stream`` (after an asynchronous device-to-host copy)."""
    if stream:
        stream.synchronize()


# ------------------------------------------------------------ array helpers


def _is_numba_device_array(x: Any) -> bool:
    if SIMULATOR:
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

        return isinstance(x, FakeCUDAArray)
    return bool(getattr(x, "__cuda_ndarray__", False))


def as_device(x: Any):
    """``x`` as a numba device array, zero-copy (numba arrays are returned as is)."""
    if _is_numba_device_array(x):
        return x
    if hasattr(x, "__cuda_array_interface__"):
        if SIMULATOR:
            raise TypeError(
                f"the CUDA simulator cannot use {type(x).__name__} "
                "(__cuda_array_interface__ needs a real GPU); pass numba.cuda.to_device arrays"
            )
        if type(x).__module__.startswith("torch") and getattr(x, "requires_grad", False):
            x = x.detach()  # torch refuses the interface on tensors that require grad
        return cuda.as_cuda_array(x)
    raise TypeError(f"expected a CUDA array, got {type(x).__name__}")


def _is_c_contiguous(a) -> bool:
    return bool(a.is_c_contiguous())


def _launch_1d(n: int) -> tuple[int, int]:
    return max(1, min(math.ceil(n / THREADS), APPLY_MAX_BLOCKS)), THREADS


def _copy_nd(src, dst) -> None:
    """Elementwise device copy between same-shape arrays of any strides."""
    if src.size == 0:
        return
    s = _stream()
    if src.ndim == 0:
        src, dst = src.reshape(1), dst.reshape(1)
    if src.ndim > 3:
        for idx in np.ndindex(*src.shape[:-3]):
            _copy_nd(src[idx], dst[idx])
        return
    kern = (_k._copy1, _k._copy2, _k._copy3)[src.ndim - 1]
    blocks, threads = _launch_1d(src.size)
    kern[blocks, threads, s](src, dst)


def ascontiguous(x: Any):
    """A C-contiguous numba device array with the values of ``x`` (copies only if strided)."""
    mod = type(x).__module__
    if not _is_numba_device_array(x) and x.ndim > 3:
        # one library-native copy instead of one launch per leading index
        if mod.startswith("torch"):
            x = x.contiguous()
        elif mod.startswith("cupy"):
            import cupy

            x = cupy.ascontiguousarray(x)
    d = as_device(x)
    if _is_c_contiguous(d):
        return d
    out = cuda.device_array(d.shape, d.dtype, stream=_stream())
    _copy_nd(d, out)
    return out


def reshape(a: Any, shape) -> Any:
    """Zero-copy reshape of a C-contiguous device array."""
    return as_device(a).reshape(shape)


def empty(shape, dtype, like: Any = None):
    """A new uninitialized device array; memory from CuPy/PyTorch when ``like`` is theirs."""
    dtype = np.dtype(dtype)
    mod = type(like).__module__ if like is not None else ""
    if mod.startswith("cupy"):
        import cupy

        with cupy.cuda.Device(like.device.id):
            return as_device(cupy.empty(shape, dtype))
    if mod.startswith("torch"):
        import torch

        tdt = torch.from_numpy(np.empty(0, dtype)).dtype
        return as_device(torch.empty(shape, dtype=tdt, device=like.device))
    return cuda.device_array(shape, dtype, stream=_stream())


def to_host(a: Any) -> np.ndarray:
    """A host numpy copy of a device array (numpy input is returned as an array)."""
    if isinstance(a, np.ndarray):
        return a
    s = _stream()
    h = as_device(a).copy_to_host(stream=s)
    _sync(s)
    return h


def from_host(a: Any, like: Any = None):
    """A numba device copy of host array ``a``."""
    return cuda.to_device(np.ascontiguousarray(a), stream=_stream())


def wrap(a: Any, like: Any):
    """``a`` (a numba device array) as the array type of the user's input ``like``, zero-copy."""
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
        _copy_nd(cuda.to_device(h, stream=s), d)
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


def _tiling(P: int, R: int, K: int):
    """Block (TX, TY), grid (kt, S, Pg) and rows per split for a (P, R, K) reduction."""
    threads = min(THREADS, _k._MAX_BLOCK)
    if K == 1:
        # row reduction: one warp for short rows, up to `threads` for long ones
        tx = 1
        ty = min(threads, max(min(WARP_LAUNCH, threads), _pow2_ceil(math.ceil(R / _k._CH))))
    else:
        tx = min(K, 32, threads)
        ty = max(1, threads // tx)
    kt = math.ceil(K / tx)
    tiles = kt * P
    splits = 1
    target = _blocks_target()
    if tiles < target:
        # too few blocks to fill the GPU: split R, merge the partials after
        splits = max(1, min(math.ceil(target / tiles), math.ceil(R / (ty * _k._CH)), MAX_GRID_YZ))
    rows = math.ceil(R / splits)
    splits = math.ceil(R / rows)
    return (tx, ty), (kt, splits, min(P, MAX_GRID_YZ)), rows, splits


def moments(x3: Any, skipnan: bool, minmax: bool, want_moments: bool = True) -> Moments:
    """Per-(p, k) count, mean, M2 (and min, max) over axis 1 of a (P, R, K) device array.

    Returns host float64 (P, K) arrays as :class:`numbanorm.backends.Moments`;
    min/max are None unless ``minmax``.  Accumulation is float64 (two-pass per
    thread chunk, Chan merges across threads and blocks; Chan, Golub & LeVeque
    1983).  The mean's residual is carried by the merge of the row splits
    (``chan_merge_dd``); within a block the merges carry none yet (zeros when
    a row is not split).  The moments are always computed (``want_moments``
    is accepted for the contract).
    """
    x3 = as_device(x3)
    P, R, K = x3.shape
    if P * K == 0 or R == 0:
        res = np.zeros((6, P, K))
        res[3] = np.inf
        res[4] = -np.inf
    else:
        s = _stream()
        block, grid, rows, splits = _tiling(P, R, K)
        part = cuda.device_array((5, P, splits, K), np.float64, stream=s)
        _k._moments_partial[grid, block, s](x3, bool(skipnan), bool(minmax), rows, part)
        if splits > 1:
            fin = cuda.device_array((6, P, K), np.float64, stream=s)
            blocks, threads = _launch_1d(P * K)
            _k._moments_merge[blocks, threads, s](part, fin)
            res = fin.copy_to_host(stream=s)
        else:
            res = np.zeros((6, P, K))
            res[:5] = part.reshape(5, P, K).copy_to_host(stream=s)
        _sync(s)
    if minmax:
        return Moments(res[0], res[1], res[2], res[3], res[4], res[5])
    return Moments(res[0], res[1], res[2], None, None, res[5])


def apply(x3: Any, out3: Any, center, scale, shift, lo=None, hi=None) -> None:
    """out3 = clip((x3 - center) * scale + shift, lo, hi) on the device; out3 may be x3."""
    x3 = as_device(x3)
    out3 = as_device(out3)
    P, R, K = x3.shape
    if x3.size == 0:
        return
    s = _stream()
    prm = np.empty((3, P, K))
    prm[0] = center
    prm[1] = scale
    prm[2] = shift
    prm_d = cuda.to_device(prm, stream=s)
    clip = lo is not None or hi is not None
    lo = -math.inf if lo is None else float(lo)
    hi = math.inf if hi is None else float(hi)
    gy = min(P, MAX_GRID_YZ)
    gx = max(1, min(math.ceil(R * K / THREADS), APPLY_MAX_BLOCKS // gy))
    _k._apply[(gx, gy), THREADS, s](x3.reshape(P, R * K), out3.reshape(P, R * K), prm_d, clip, lo, hi)


def row_norm(x2: Any, out2: Any, weight, bias, eps: float, rms: bool, p: float | None = None):
    """Fused layer norm (rms=False) or RMS norm of each row of a (R, D) device
    array; with ``p``, ``x / max(||x||_p, eps)`` (the p-norms by ``pnorm``,
    then ``apply``: two passes).  weight/bias: (1, D) or (1, 1) host arrays
    (ROW_NORM_GROUPED is False here).

    Returns host float64 ``(mean, rstd)`` of shape (R,) (mean is zeros for RMS
    and p-norms).
    """
    x2 = as_device(x2)
    out2 = as_device(out2)
    R, D = x2.shape
    if R == 0 or D == 0:
        nan = np.full(R, np.nan)
        return (np.zeros(R) if (rms or p is not None) else nan.copy()), nan
    if p is not None:
        with np.errstate(divide="ignore"):
            rstd = 1.0 / np.maximum(pnorm(x2.reshape(R, D, 1), p)[:, 0], eps)
        zero = np.zeros((R, 1))
        apply(x2.reshape(R, D, 1), out2.reshape(R, D, 1), zero, rstd.reshape(R, 1), zero)
        return np.zeros(R), rstd
    s = _stream()
    wb = np.empty((2, D))
    wb[0] = 1.0 if weight is None else np.asarray(weight, np.float64).reshape(-1)
    wb[1] = 0.0 if bias is None else np.asarray(bias, np.float64).reshape(-1)
    wb_d = cuda.to_device(wb, stream=s)
    stats = cuda.device_array((2, R), np.float64, stream=s)
    if D <= ROW_WARP_MAX_D:
        group = min(ROW_GROUP, _k._MAX_BLOCK)
        rows_per_block = max(1, min(THREADS, _k._MAX_BLOCK) // group)
    else:
        group = min(ROW_BLOCK, _k._MAX_BLOCK)
        rows_per_block = 1
    blocks = max(1, min(math.ceil(R / rows_per_block), ROW_MAX_BLOCKS))
    _k._row_norm[blocks, (group, rows_per_block), s](x2, out2, wb_d, float(eps), bool(rms), stats)
    res = stats.copy_to_host(stream=s)
    _sync(s)
    return res[0], res[1]


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
    mode = 0 if p == 1.0 else 1 if p == 2.0 else 2 if math.isinf(p) else 3
    s = _stream()
    block, grid, rows, splits = _tiling(P, R, K)
    acc = cuda.device_array((P, splits, K), np.float64, stream=s)
    _k._pnorm_partial[grid, block, s](x3, mode, p, bool(skipnan), rows, acc)
    part = acc.copy_to_host(stream=s)
    _sync(s)
    # the S partials of a row are few: merged here (np.max propagates NaN)
    if mode == 2:
        return part.max(axis=1)
    with np.errstate(over="ignore"):
        return pnorm_finish.py_func(part.sum(axis=1), p)
