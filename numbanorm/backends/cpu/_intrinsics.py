"""Machine-level helpers of the CPU kernels: streaming (non-temporal) stores,
software prefetch, the aligned spans they may touch, and the host-side tests
that decide whether to stream (output size, residency, in place)."""

from __future__ import annotations

import ctypes
import mmap
import operator
import sys

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils, typing
from numba.extending import intrinsic

from ... import _outbuf
from ..._config import FASTMATH, LINE_BYTES, STREAM_MIN_BYTES

_FM = set(FASTMATH)


# --------------------------------------------------------------------------
# min and max of two numbers
# --------------------------------------------------------------------------


def _select(cmp):
    """An intrinsic ``f(a, b)``: ``b if cmp(b, a) else a`` in the two
    numbers' common type, the comparison and select of numba's own min/max
    (Python's choice: the first argument unless the second is strictly
    less (min) or greater (max), so a NaN first argument is returned)."""

    def impl(typingctx, a, b):
        if not (isinstance(a, types.Number) and isinstance(b, types.Number)):
            return None
        ty = typingctx.unify_pairs(a, b)

        def codegen(context, builder, sig, args):
            x = context.cast(builder, args[0], a, ty)
            y = context.cast(builder, args[1], b, ty)
            pick = context.get_function(cmp, typing.signature(types.boolean, ty, ty))(builder, (y, x))
            return builder.select(pick, y, x)

        return ty(a, b), codegen

    return intrinsic(impl)


# min(a, b) and max(a, b) in kernels.  numba 0.68 implements the builtins as
# an @overload whose implementation is compiled as a function of its own
# per argument types, 0.05-0.1 s each on a cold first call
# (benchmarks/NOTES.md section 21c); an intrinsic is emitted in place.
min2 = _select(operator.lt)
max2 = _select(operator.gt)


# --------------------------------------------------------------------------
# streaming (non-temporal) stores
# --------------------------------------------------------------------------


@intrinsic
def stream_store(typingctx, arr, idx, val):
    """``arr[idx] = val`` as a non-temporal store (LLVM ``!nontemporal``).

    ``arr`` 1-D, ``idx`` an integer, never negative (no wraparound).  Only
    for the span ``stream_span`` returns: its first element is
    LINE_BYTES-aligned and its length is whole lines, so the vector stores
    LLVM makes of the loop (at multiples of their own width from the span's
    start) are aligned as claimed; x86's vector non-temporal stores fault on
    a misaligned address.
    """
    if not (
        isinstance(arr, types.Array)
        and arr.ndim == 1
        and isinstance(idx, types.Integer)
        and isinstance(val, (types.Float, types.Integer))
    ):
        return None

    def codegen(context, builder, sig, args):
        arrty, idxty, valty = sig.args
        ary = context.make_array(arrty)(context, builder, args[0])
        ind = context.cast(builder, args[1], idxty, types.intp)
        ptr = cgutils.get_item_pointer(
            context, builder, arrty, ary, [ind], wraparound=False, boundscheck=False
        )
        store = builder.store(context.cast(builder, args[2], valty, arrty.dtype), ptr, align=LINE_BYTES)
        store.set_metadata("nontemporal", builder.module.add_metadata([ir.IntType(32)(1)]))
        return context.get_dummy_value()

    return types.void(arr, idx, val), codegen


@intrinsic
def prefetch(typingctx, arr, i, j):
    """Software prefetch of ``arr[i, j]``'s line (a 2-D array: no view of a
    row is made, whose reference counting costs ~50 ns) into L1 for reading
    (LLVM ``llvm.prefetch``, locality 3).  A hint: it never faults, so any
    index of a valid array is safe; indices are never negative."""
    if not (
        isinstance(arr, types.Array)
        and arr.ndim == 2
        and isinstance(i, types.Integer)
        and isinstance(j, types.Integer)
    ):
        return None

    def codegen(context, builder, sig, args):
        arrty, ity, jty = sig.args
        ary = context.make_array(arrty)(context, builder, args[0])
        inds = [
            context.cast(builder, args[1], ity, types.intp),
            context.cast(builder, args[2], jty, types.intp),
        ]
        ptr = cgutils.get_item_pointer(
            context, builder, arrty, ary, inds, wraparound=False, boundscheck=False
        )
        i8p = ir.PointerType(ir.IntType(8))
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        # (address, read, locality 3: keep in all levels, data cache)
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(arr, i, j), codegen


@njit(fastmath=_FM, error_model="numpy", inline="always")
def stream_span(addr, off, n, isz, stream):
    """(p, m): of n elements of isz bytes at address addr + off, ``[p, m)``
    is the span of whole LINE_BYTES-aligned lines to stream; ``[0, p)`` and
    ``[m, n)`` take ordinary stores.  (n, n): no streaming, when not
    ``stream``, for an unaligned array (address not a multiple of isz) and
    for fewer than 16 lines (three loops instead of one cost more than
    streaming saves)."""
    a = np.int64(addr) + off
    if not stream or a % isz != 0 or n * isz < 16 * LINE_BYTES:
        return n, n
    per = LINE_BYTES // isz
    p = ((LINE_BYTES - a % LINE_BYTES) % LINE_BYTES) // isz
    return p, p + (n - p) // per * per


@njit(error_model="numpy", inline="always")
def line_span(p, m, lo, hi, per):
    """(a, b): the whole lines of a streamed span [p, m) (stream_span; per
    elements a line) that lie inside [lo, hi), as absolute indices; a == b
    when there are none.  Pieces of a row written one after another (its
    segments, its chunks) stream [a, b) and store the rest ordinarily."""
    a = min2(max2(p + -(-max2(lo - p, 0) // per) * per, lo), hi)
    b = max2(min2(p + (min2(hi, m) - p) // per * per, hi), a)
    return a, b


def streams(out) -> bool:
    """Write ``out`` with streaming stores (see _config.STREAM_MIN_BYTES)."""
    return out.nbytes >= STREAM_MIN_BYTES and out.flags.aligned


def in_place(x, out) -> bool:
    """Is ``out`` x itself (out=x)?  In place, an output line was just read
    into the cache, and an ordinary store to it costs no extra read: there
    streaming stores measured slower (batch_norm eval 0.85x, layer norm with
    weights 0.93x the time without them; NOTES.md section 18).  The
    pipelined kernels keep them (without, layer norm took the row-by-row
    kernel at 1.7x the time).  Memory bounds first (0.2 us): an output that
    shares none is not x, and reading both data addresses costs 2 us."""
    if out is x:
        return True
    if not np.may_share_memory(out, x):
        return False
    return out.__array_interface__["data"][0] == x.__array_interface__["data"][0]


def _load_libc(name, argtypes):
    try:
        f = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):  # not there (Windows)
        return None
    f.argtypes = argtypes
    f.restype = ctypes.c_int
    return f


_MINCORE = _load_libc("mincore", (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p))
_MADVISE = None
if sys.platform == "linux":
    _MADVISE = _load_libc("madvise", (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int))
_MADV_POPULATE_WRITE = 23  # (Linux 5.14; older kernels answer EINVAL)
_POPULATE_MAX_BYTES = _outbuf._default_limit()


def populate(a) -> bool:
    """Fault in ``a``'s pages, writable, without changing what they hold
    (Linux's ``madvise(MADV_POPULATE_WRITE)``): the first stores into a
    fresh output then find its pages there.  False where that is not
    available (other systems, kernels before 5.14) or failed, and for more
    than the output cache's default share of memory (the smaller of 1 GiB
    and 1/16 of physical memory: an ``out=`` mapped from a file larger
    than memory would be read in twice).  ``a``: contiguous."""
    if _MADVISE is None or a.nbytes == 0 or a.nbytes > _POPULATE_MAX_BYTES:
        return False
    ps = mmap.PAGESIZE
    lo = a.ctypes.data - a.ctypes.data % ps
    hi = a.ctypes.data + a.nbytes
    return _MADVISE(lo, hi - lo, _MADV_POPULATE_WRITE) == 0


def resident(a) -> bool:
    """Are the middle and last pages of ``a``'s memory resident?

    False for a fresh allocation that nothing has written yet (its pages are
    faulted in, zeroed, by the first store), and where mincore is missing.
    Not the first page: the allocator writes its header just before the data.
    """
    if _MINCORE is None or a.nbytes == 0:
        return False
    vec = ctypes.c_ubyte(0)
    ps = mmap.PAGESIZE
    for addr in (a.ctypes.data + a.nbytes // 2, a.ctypes.data + a.nbytes - 1):
        vec.value = 0
        if _MINCORE(addr - addr % ps, ps, ctypes.byref(vec)) != 0 or not vec.value & 1:
            return False
    return True
