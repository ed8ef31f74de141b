"""Parallel work as *tasks*: serial kernels compiled once, run by address.

A parallel kernel here is a serial function ``kernel(t, *args)`` that does
task ``t`` of a split (a range of rows, a block of columns, ...), and one
generic ``prange`` loop that calls it for every ``t``.  The serial kernel is
compiled as a C callback (``numba.cfunc``), once per argument types, and the
loop calls it through its address.

Why not ``@njit(parallel=True, nogil=True)`` around the kernel body, or a ``prange`` over
a call to an ``@njit`` function?  Compile time (benchmarks/NOTES.md section
21).  numba links the LLVM IR of every callee into its caller's module and
optimizes and compiles it again there: a kernel called from a parfor's
outlined body, which is called from its wrapper, which a fused call calls,
was optimized and turned into machine code four times, and its literal
arguments (``False`` at a call site) made further copies.  A cold
channels-last ``batch_norm`` spent 28 s so.  Behind an address, a kernel is
compiled exactly once per argument types and cached on disk once; the
``prange`` loop around it is a few lines (~0.3 s cold).  Calling through a
pointer costs nothing measurable: a task is tens of microseconds of work.
"""

from __future__ import annotations

import threading

import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils, sigutils
from numba.core.ccallback import CFunc
from numba.extending import intrinsic

from ..._cache import PackageCache, kernel
from ..._config import CACHE, MIN_TASK_ELEMS


@intrinsic
def _call(typingctx, addr, t, args):
    """Call the C callback at address ``addr`` as ``void f(int64 t, *args)``.

    The callback must have been compiled for exactly these argument types
    (``Task.address`` guarantees it: it compiles from the types of the
    arrays that are then passed here unchanged).
    """
    if not (
        isinstance(addr, types.Integer) and isinstance(t, types.Integer) and isinstance(args, types.BaseTuple)
    ):
        return None

    def codegen(context, builder, sig, llargs):
        _, tty, argtys = sig.args
        vals = cgutils.unpack_tuple(builder, llargs[2], len(argtys))
        lltys = [context.get_value_type(types.int64)] + [context.get_value_type(a) for a in argtys]
        fnty = ir.FunctionType(context.get_value_type(types.void), lltys)
        fn = builder.inttoptr(llargs[0], fnty.as_pointer())
        builder.call(fn, [context.cast(builder, llargs[1], tty, types.int64), *vals])
        return context.get_dummy_value()

    return types.void(addr, t, args), codegen


@kernel(parallel=True, nogil=True)
def prange_tasks(addr, ntask, args):
    """Run tasks 0 .. ntask-1 of the kernel at ``addr`` on numba's threads.
    ``args``: the tuple of the kernel's arguments (a plain tuple, not
    ``*args``: from Python and from compiled code alike, so that both reach
    one compiled signature; numba types ``*args`` as another tuple type)."""
    for t in prange(ntask):
        _call(addr, t, args)


@kernel(nogil=True)
def serial_tasks(addr, ntask, args):
    """Run tasks 0 .. ntask-1 of the kernel at ``addr`` in this thread (small
    inputs: waking the thread pool costs more than the work)."""
    for t in range(ntask):
        _call(addr, t, args)


try:  # what numba's dispatcher keys its own type cache on (C, ~75 ns)
    from numba._dispatcher import compute_fingerprint as _key
except ImportError:  # pragma: no cover - other numba versions

    def _key(a):
        """What numba's type of argument ``a`` depends on (cheap to compute)."""
        if isinstance(a, np.ndarray):
            f = a.flags
            return (a.dtype.char, a.ndim, f.c_contiguous, f.f_contiguous, f.writeable, f.aligned)
        return type(a)


# kernels (task variants) compiled and loaded from the cache by this process
COUNTS = {"compiled": 0, "loaded": 0}


class Task:
    """A serial kernel ``f(t, *args)`` compiled on first use for each set
    of argument types, as a C callback cached on disk.

    ``variants`` names compile-time flags: the task is then written as a
    factory ``make(**flags)`` returning the kernel (a closure over the
    flags), and each combination of flags a call asks for is compiled on
    first use.  A branch on a flag is then resolved by the compiler, so a
    call compiles only the code it runs: a first call that does not stream
    its stores or run in place does not pay for those loops (NOTES.md
    section 21).  numba's cache keys a closure's entries by the values it
    closes over, so variants never mix on disk.
    """

    def __init__(self, make, fastmath, variants=()):
        self._make = make
        self.__name__ = make.__name__
        self.__doc__ = make.__doc__
        self.variants = tuple(variants)
        self._options = {"fastmath": fastmath, "error_model": "numpy"}
        self._kernels: dict = {}
        self._addresses: dict = {}
        self._compiled: dict = {}  # keeps every callback (and its code) alive
        self._lock = threading.Lock()

    def kernel(self, **flags):
        """The Python kernel for these flags (the factory's closure)."""
        key = tuple(flags[v] for v in self.variants)
        fn = self._kernels.get(key)
        if fn is None:
            fn = self._make(*key) if self.variants else self._make
            # numba's cache keys a closure by its cells' pickles: a cell that
            # holds anything but plain values (a function, a dispatcher)
            # pickles differently in every process and the kernel would be
            # compiled again in each (use module globals for those)
            cells = [c.cell_contents for c in fn.__closure__ or ()]
            if not all(type(c) in (bool, int, float, str) for c in cells):
                raise TypeError(f"task {self.__name__}: closure cells must be plain values, got {cells!r}")
            self._kernels[key] = fn
        return fn

    def address(self, args, **flags) -> int:
        """The callback's address for arguments like ``args`` (and flags)."""
        key = (tuple(flags[v] for v in self.variants), *map(_key, args))
        addr = self._addresses.get(key)
        if addr is None:
            with self._lock:
                sig = types.void(types.int64, *[numba.typeof(a) for a in args])
                cb = CFunc(
                    self.kernel(**flags), sigutils.normalize_signature(sig), locals={}, options=self._options
                )
                if CACHE:
                    cb._cache = PackageCache(cb._pyfunc)  # (numba's cfunc(cache=True), see _cache)
                cb.compile()
                COUNTS["loaded" if cb._cache_hits else "compiled"] += 1
                self._compiled[key] = cb
                addr = self._addresses[key] = cb.address
        return addr

    def __repr__(self) -> str:
        return f"<task {self.__name__}: {len(self._compiled)} compiled>"


def task(*, fastmath, variants=()):
    """Decorator: ``@task(fastmath=...)`` makes a :class:`Task` of a kernel
    (of a kernel factory, with ``variants``)."""
    return lambda make: Task(make, fastmath, variants)


# numba's fallback 'workqueue' threading layer aborts the process when two
# Python threads launch parallel kernels at once (API: calls may run
# concurrently).  Launches are serialized until the layer in use is known to
# be thread-safe (OpenMP, TBB); guarded by tests/test_threads.py.
_LAUNCH_LOCK = threading.Lock()
_layer_threadsafe = False


def launch(kernel, *args):
    """``kernel(*args)`` for a compiled function that runs parallel loops."""
    global _layer_threadsafe
    if _layer_threadsafe:
        return kernel(*args)
    with _LAUNCH_LOCK:
        res = kernel(*args)
        try:
            _layer_threadsafe = numba.threading_layer() != "workqueue"
        except ValueError:  # no parallel region has run yet
            pass
        return res


def run(kernel: Task, ntask: int, *args, **flags) -> None:
    """Run tasks 0 .. ntask-1 of ``kernel`` (the variant ``flags``) in parallel."""
    launch(prange_tasks, kernel.address(args, **flags), ntask, args)


def run_serial(kernel: Task, ntask: int, *args, **flags) -> None:
    """Run tasks 0 .. ntask-1 of ``kernel`` (the variant ``flags``) in this thread."""
    serial_tasks(kernel.address(args, **flags), ntask, args)


def threads() -> int:
    return numba.get_num_threads()


def nsplit(outer: int, inner: int) -> int:
    """Pieces to cut each of ``outer`` items of ``inner`` elements into so
    that all threads are busy but no piece is smaller than MIN_TASK_ELEMS."""
    if inner <= MIN_TASK_ELEMS:  # (first: asking numba for threads costs ~3 us)
        return 1
    want = 4 * threads()
    if outer >= want:
        return 1
    by_size = max(1, inner // MIN_TASK_ELEMS)
    return int(max(1, min(by_size, -(-want // max(outer, 1)))))


def widen(x: np.ndarray) -> np.ndarray:
    """float16 has no numba CPU arithmetic: widen to float32 (a copy)."""
    if x.dtype == np.float16:
        return x.astype(np.float32)
    return x
