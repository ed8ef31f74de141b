"""The copy floors: a copy of the same bytes as an op (one read of x, one
write of y), the physical limit every op is measured against.

CPU candidates: ``np.copyto`` (in cpu.py) and the two ``prange`` kernels
here, with ordinary and with streaming stores; GPU: a device-to-device
memcpy and the grid-stride copy kernel here.
"""

from __future__ import annotations

from typing import Any

from numba import njit, prange

# The one dependency of the suite on numbanorm's kernels: the streaming
# (non-temporal) store intrinsic and the span of a block it may write.
from numbanorm.backends.cpu._intrinsics import stream_span as _stream_span
from numbanorm.backends.cpu._intrinsics import stream_store as _stream_store

# --------------------------------------------------------------------------
# the CPU floor's copy kernels


@njit(parallel=True, cache=True)
def prange_copy(dst, src):  # (n,) <- (n,)
    """Parallel copy with ordinary stores: one candidate of the CPU floor."""
    for i in prange(src.shape[0]):
        dst[i] = src[i]


_STREAM_BLOCK = 1 << 16  # elements of one task of the streaming copy


@njit(parallel=True, cache=True)
def prange_stream_copy(dst, src):  # (n,) <- (n,)
    """Parallel copy with streaming stores (no read-for-ownership of the
    destination: one read and one write of the bytes, the true limit); the
    same store the apply kernel uses for large outputs (numbanorm/backends/cpu/_intrinsics.py)."""
    n = src.shape[0]
    isz = dst.itemsize
    for t in prange((n + _STREAM_BLOCK - 1) // _STREAM_BLOCK):
        lo = t * _STREAM_BLOCK
        d = dst[lo : min(n, lo + _STREAM_BLOCK)]
        s = src[lo : min(n, lo + _STREAM_BLOCK)]
        a, b = _stream_span(d.ctypes.data, 0, d.size, isz, True)
        for i in range(a):
            d[i] = s[i]
        if a < d.size:
            ds = d[a:b]
            ss = s[a:b]
            for i in range(ds.size):
                _stream_store(ds, i, ss[i])
            dt = d[b:]
            st = s[b:]
            for i in range(dt.size):
                dt[i] = st[i]


# --------------------------------------------------------------------------
# the GPU floor's copy kernel (its other candidate, a device-to-device memcpy,
# is cuda.py's _Gpu.memcpy)

# numba.cuda, set by cuda_copy_kernel only when --device cuda runs.  A module
# global (not a closure) so that the CUDA simulator can swap it inside kernels.
cuda: Any = None
_copy_kernel: Any = None


def cuda_copy_kernel(numba_cuda: Any) -> Any:
    """The grid-stride copy kernel of the GPU floor (compiled once)."""
    global cuda, _copy_kernel
    if _copy_kernel is None:
        cuda = numba_cuda

        @cuda.jit
        def _copy(dst, src):  # (n,) <- (n,)
            """Grid-stride copy: the kernel half of the GPU floor."""
            i = cuda.grid(1)
            stride = cuda.gridsize(1)
            while i < src.shape[0]:
                dst[i] = src[i]
                i += stride

        _copy_kernel = _copy
    return _copy_kernel
