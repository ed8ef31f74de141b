"""Parallel work as *tasks*: serial kernels compiled once, run by address.

A parallel kernel here is a serial function ``kernel(t, *args)`` that does
task ``t`` of a split (a range of rows, a block of columns, ...), and one
generic launcher that runs it for every ``t`` on numba's threads.  The
serial kernel is compiled as a C callback (``numba.cfunc``), once per
argument types, and the launcher calls it through its address.

Why not ``@njit(parallel=True, nogil=True)`` around the kernel body, or a
``prange`` over a call to an ``@njit`` function?  Compile time
(benchmarks/NOTES.md section 21).  numba links the LLVM IR of every callee
into its caller's module and optimizes and compiles it again there: a
kernel called from a parfor's outlined body, which is called from its
wrapper, which a fused call calls, was optimized and turned into machine
code four times, and its literal arguments (``False`` at a call site) made
further copies.  A cold channels-last ``batch_norm`` spent 28 s so.  Behind
an address, a kernel is compiled exactly once per argument types and cached
on disk once.

The launcher is not a ``prange`` loop either: numba's parfor pipeline cost
0.35-0.55 s per argument-tuple type even for a loop of one call.  It calls
the threading layer's ``parallel_for`` (the C entry point numba's own
parfors call; same signature in its omp, tbb and workqueue layers) with a
small function generated as LLVM IR, so it compiles like any small function
(~0.15 s, NOTES.md section 21e).  Calling through a pointer costs nothing
measurable: a task is tens of microseconds of work.
"""

from __future__ import annotations

import operator
import os
import sys
import threading
import zlib

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils, sigutils
from numba.core.ccallback import CFunc
from numba.core.compiler_lock import global_compiler_lock
from numba.extending import intrinsic
from numba.np.ufunc import parallel as _parallel
from numba.np.ufunc.parallel import _launch_threads

from ... import _ahead
from ..._cache import PackageCache, kernel
from ..._config import CACHE, MIN_TASK_ELEMS

_threads_up = False


def _ensure_threads() -> None:
    """Start numba's threading layer (once): it registers the symbol
    ``numba_parallel_for`` that compiled launches call, so it must run
    before a launcher is compiled or loaded from the cache (``Task.address``
    runs it before any task's first launch in a process)."""
    global _threads_up
    if not _threads_up:
        _launch_threads()
        _threads_up = True


# the C signature of a threading layer's parallel_for (numba/np/ufunc/
# omppool.cpp, tbbpool.cpp, workqueue.c): fn, args, dims, steps, data,
# inner_ndim, array_count, num_threads
_I8P = ir.IntType(8).as_pointer()
_I64 = ir.IntType(64)
_PARALLEL_FOR = ir.FunctionType(
    ir.VoidType(),
    [_I8P, _I8P.as_pointer(), _I64.as_pointer(), _I64.as_pointer(), _I8P, _I64, _I64, ir.IntType(32)],
)
# the gufunc ABI parallel_for calls: fn(args, dims, steps, data)
_GUFUNC = ir.FunctionType(ir.VoidType(), [_I8P.as_pointer(), _I64.as_pointer(), _I64.as_pointer(), _I8P])


def _trampoline(context, module, argtys):
    """The gufunc-ABI function that runs this tuple type's tasks: it is
    called with ``data`` pointing to ``{addr, ntask, nsched, args}`` and
    ``args[0] = data + r0`` for its ``dims[0]`` schedule entries r0, r0+1,
    ...; entry r runs tasks [r*ntask/nsched, (r+1)*ntask/nsched).  (Every
    threading layer offsets ``args[0]`` by ``steps[0] * first entry`` and
    passes the number of entries in ``dims[0]``; ``steps[0]`` is 1.)"""
    lltup = context.get_value_type(argtys)
    frame = ir.LiteralStructType([_I64, _I64, _I64, lltup])
    # module-local (internal linkage); one per tuple type in a module (a
    # name shared by another tuple type, a crc32 collision, takes a suffix)
    base = f"numbanorm_tasks.{zlib.crc32(str(argtys).encode()):08x}"
    for k in range(1 << 16):
        name = base if k == 0 else f"{base}.{k}"
        fn = module.globals.get(name)
        if fn is None:
            break
        if getattr(fn, "numbanorm_argtys", None) == argtys:
            return fn, frame
    fn = ir.Function(module, _GUFUNC, name=name)
    fn.numbanorm_argtys = argtys
    fn.linkage = "internal"
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    pargs, pdims, _, data = fn.args
    r0 = b.sub(b.ptrtoint(b.load(pargs), _I64), b.ptrtoint(data, _I64))
    count = b.load(pdims)
    st = b.bitcast(data, frame.as_pointer())
    zero = ir.Constant(ir.IntType(32), 0)
    field = lambda i: b.load(b.gep(st, [zero, ir.Constant(ir.IntType(32), i)]))  # noqa: E731
    addr, ntask, nsched, tup = field(0), field(1), field(2), field(3)
    vals = cgutils.unpack_tuple(b, tup, len(argtys))
    task_ty = ir.FunctionType(ir.VoidType(), [_I64] + [context.get_value_type(a) for a in argtys])
    task_fn = b.inttoptr(addr, task_ty.as_pointer())
    with cgutils.for_range(b, count, intp=_I64) as loop:
        r = b.add(r0, loop.index)
        lo = b.sdiv(b.mul(r, ntask), nsched)
        hi = b.sdiv(b.mul(b.add(r, _I64(1)), ntask), nsched)
        with cgutils.for_range_slice(b, lo, hi, _I64(1), inc=True) as (t, _):
            b.call(task_fn, [t, *vals])
    b.ret_void()
    return fn, frame


def _unowned(context, builder, argtys, tup):
    """The argument tuple with every array's meminfo (and parent) set to
    NULL, as numba's own parfor gufuncs rebuild their arrays: a task's
    slices and views then make no atomic reference-count updates on the
    caller's arrays (which the caller keeps alive until the tasks are
    done).  With the caller's meminfo, every row view of a row task
    incremented and decremented one shared counter: the two threads of a
    256-row layer_norm contended for its cache line and ran no faster than
    one (51.5 us against 32.5 us before, NOTES.md section 21e)."""
    for i, ty in enumerate(argtys):
        if isinstance(ty, types.Array):
            ary = context.make_array(ty)(context, builder, value=builder.extract_value(tup, i))
            ary.meminfo = cgutils.get_null_value(ary.meminfo.type)
            ary.parent = cgutils.get_null_value(ary.parent.type)
            tup = builder.insert_value(tup, ary._getvalue(), i)
    return tup


@intrinsic
def _run_tasks(typingctx, addr, ntask, nthreads, args):
    """Run tasks 0 .. ntask-1 of the C callback at ``addr`` (compiled as
    ``void f(int64 t, *args)`` for exactly these argument types, which
    ``Task.address`` guarantees) on ``nthreads`` threads: through the
    threading layer's ``parallel_for`` when nthreads > 1 and there are two
    tasks or more, else in this thread."""
    if not (
        isinstance(addr, types.Integer)
        and isinstance(ntask, types.Integer)
        and isinstance(nthreads, types.Integer)
        and isinstance(args, types.BaseTuple)
    ):
        return None

    def codegen(context, builder, sig, llargs):
        _ensure_threads()
        argtys = sig.args[3]
        tramp, frame = _trampoline(context, builder.module, argtys)
        a = context.cast(builder, llargs[0], sig.args[0], types.int64)
        n = context.cast(builder, llargs[1], sig.args[1], types.int64)
        nt = context.cast(builder, llargs[2], sig.args[2], types.int64)
        one = _I64(1)
        # schedule entries: one per thread, never more than the tasks
        nsched = builder.select(builder.icmp_signed("<", nt, n), nt, n)
        nsched = builder.select(builder.icmp_signed("<", nsched, one), one, nsched)
        st = cgutils.alloca_once(builder, frame)
        zero = ir.Constant(ir.IntType(32), 0)
        for i, v in enumerate((a, n, nsched, _unowned(context, builder, argtys, llargs[3]))):
            builder.store(v, builder.gep(st, [zero, ir.Constant(ir.IntType(32), i)]))
        data = builder.bitcast(st, _I8P)
        pargs = cgutils.alloca_once(builder, _I8P)
        builder.store(data, pargs)
        dims = cgutils.alloca_once(builder, _I64)
        builder.store(nsched, dims)
        steps = cgutils.alloca_once(builder, _I64)
        builder.store(one, steps)
        with builder.if_else(builder.icmp_signed(">", nsched, one)) as (par, ser):
            with par:
                pfor = cgutils.get_or_insert_function(builder.module, _PARALLEL_FOR, "numba_parallel_for")
                builder.call(
                    pfor,
                    [
                        builder.bitcast(tramp, _I8P),
                        pargs,
                        dims,
                        steps,
                        data,
                        _I64(0),
                        one,
                        builder.trunc(nt, ir.IntType(32)),
                    ],
                )
            with ser:
                builder.call(tramp, [pargs, dims, steps, data])
        return context.get_dummy_value()

    return types.void(addr, ntask, nthreads, args), codegen


@kernel(light=True, nogil=True)
def run_tasks(addr, ntask, nthreads, args):
    """Run tasks 0 .. ntask-1 of the kernel at ``addr`` on ``nthreads``
    threads (1: in this thread; small inputs, where waking the thread pool
    costs more than the work).  ``args``: the tuple of the kernel's
    arguments (a plain tuple, not ``*args``: from Python and from compiled
    code alike, so that both reach one compiled signature; numba types
    ``*args`` as another tuple type).  No ``parallel=True``: the threads are
    the threading layer's, called directly (NOTES.md section 21e), so this
    compiles in a fraction of a ``prange`` loop's time."""
    _run_tasks(addr, ntask, nthreads, args)


try:  # what numba's dispatcher keys its own type cache on (C, ~75 ns)
    from numba._dispatcher import compute_fingerprint as _key
except ImportError:  # pragma: no cover - other numba versions

    def _key(a):
        """What numba's type of argument ``a`` depends on (cheap to compute)."""
        if isinstance(a, np.ndarray):
            f = a.flags
            return (a.dtype.char, a.ndim, f.c_contiguous, f.f_contiguous, f.writeable, f.aligned)
        return type(a)


@global_compiler_lock
def _load_cached(cb) -> bool:
    """Load a C callback from its on-disk cache without compiling it when
    it is not there (numba's ``CFunc.compile`` less its compile); True when
    it loaded."""
    if not CACHE:
        return False
    if not os.path.exists(cb._cache._cache_file._index_path):
        return False  # (nothing of this function is cached: no need to set numba's target up to look)
    cres = cb._cache.load_overload(cb._sig, cb._targetdescr.target_context)
    if cres is None:
        return False
    cb._cache_hits += 1
    cb._library = cres.library
    cb._wrapper_name = cres.fndesc.llvm_cfunc_wrapper_name
    cb._wrapper_address = cb._library.get_pointer_to_function(cb._wrapper_name)
    return True


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
        # the flags' values in variant order (an itemgetter: 0.34 -> ~0.1 us
        # a lookup with four variants)
        n = len(self.variants)
        get = operator.itemgetter(*self.variants) if n else None
        self._flag_values = (lambda f: ()) if n == 0 else ((lambda f: (get(f),)) if n == 1 else get)
        self._options = {"fastmath": fastmath, "error_model": "numpy"}
        self._kernels: dict = {}
        self._addresses: dict = {}
        self._compiled: dict = {}  # keeps every callback (and its code) alive
        self._helpers: dict = {}  # key -> _ahead.Helper compiling it
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

    def _callback(self, argtypes, flags) -> CFunc:
        """The C callback of the kernel for these argument types and flags
        (not compiled yet), cached on disk."""
        sig = types.void(types.int64, *argtypes)
        cb = CFunc(self.kernel(**flags), sigutils.normalize_signature(sig), locals={}, options=self._options)
        if CACHE:
            cb._cache = PackageCache(cb._pyfunc)  # (numba's cfunc(cache=True), see _cache)
        return cb

    def _keep(self, key, cb) -> int:
        """Record a compiled or loaded callback under ``key``; its address."""
        COUNTS["loaded" if cb._cache_hits else "compiled"] += 1
        self._compiled[key] = cb
        addr = self._addresses[key] = cb.address
        return addr

    def address(self, args, types_key=None, **flags) -> int:
        """The callback's address for arguments like ``args`` (and flags).
        ``types_key``: a key that determines the types of every argument
        (a frame's: axis_stats.frame_key), so that a lookup need not key
        all of them (15 arguments: 1.9 us).  A helper process compiling it
        (:meth:`ahead`) is waited for first; the callback then loads from
        the cache."""
        key = self._key(args, types_key, flags)
        addr = self._addresses.get(key)
        if addr is None:
            _ensure_threads()  # (a kernel may call the layer: numba.get_thread_id)
            with self._lock:
                addr = self._addresses.get(key)
                if addr is None:
                    helper = self._helpers.pop(key, None)
                    if helper is not None:
                        helper.wait()
                    cb = self._callback([numba.typeof(a) for a in args], flags)
                    cb.compile()
                    addr = self._keep(key, cb)
        return addr

    def ahead(self, args, types_key=None, **flags) -> bool:
        """Get the callback for arguments like ``args`` ready before its
        :meth:`address` is asked for: from the cache when it is there, else
        compiled by a helper process (numbanorm._ahead) while this one
        compiles the call's other kernels.  True when a helper was started
        (or is running) for it."""
        key = self._key(args, types_key, flags)
        if key in self._helpers:
            return True
        if key in self._addresses or not _ahead.enabled():
            return False
        _ensure_threads()
        with self._lock:
            if key in self._addresses:
                return False
            module = self._make.__module__
            if getattr(sys.modules.get(module), self.__name__, None) is not self:
                return False  # (a helper finds a task by its module's attribute)
            argtypes = [numba.typeof(a) for a in args]
            cb = self._callback(argtypes, flags)
            if _load_cached(cb):
                self._keep(key, cb)
                return False
            helper = _ahead.start(module, self.__name__, flags, argtypes)
            if helper is None:
                return False
            self._helpers[key] = helper
            return True

    def compile_for(self, argtypes, flags) -> None:
        """Compile (or load) the callback for these numba argument types and
        flags, into the cache (a helper process's work)."""
        _ensure_threads()
        with self._lock:
            self._callback(list(argtypes), flags).compile()

    def address_if_compiled(self, args, types_key=None, **flags) -> int:
        """The callback's address for arguments like ``args`` when this
        process has it already (compiled or loaded), else 0: for a compiled
        caller that runs the task only on some inputs and asks for it when
        it needs it (channels.py: the exact lane moments)."""
        return self._addresses.get(self._key(args, types_key, flags), 0)

    def _key(self, args, types_key, flags) -> tuple:
        """The address cache's key: the flags, then the argument types (their
        fingerprints, or ``types_key`` standing for them)."""
        types_part = map(_key, args) if types_key is None else types_key
        return (self._flag_values(flags), *types_part)

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
    _ensure_threads()
    with _LAUNCH_LOCK:
        res = kernel(*args)
        try:
            _layer_threadsafe = numba.threading_layer() != "workqueue"
        except ValueError:  # no parallel region has run yet
            pass
        return res


def run(kernel: Task, ntask: int, *args, **flags) -> None:
    """Run tasks 0 .. ntask-1 of ``kernel`` (the variant ``flags``) in parallel."""
    launch(run_tasks, kernel.address(args, **flags), ntask, threads(), args)


def run_serial(kernel: Task, ntask: int, *args, **flags) -> None:
    """Run tasks 0 .. ntask-1 of ``kernel`` (the variant ``flags``) in this thread."""
    run_tasks(kernel.address(args, **flags), ntask, 1, args)


def threads() -> int:
    """numba's thread count for this thread (``numba.get_num_threads()``,
    whose own check that the layer is up cost ~1.5 us of a 1 MiB call that
    asks three times)."""
    _ensure_threads()
    n = _parallel._get_num_threads()
    return n if n > 0 else numba.get_num_threads()


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
