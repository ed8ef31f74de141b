"""Make numba-cuda's CUDA simulator behave like hardware where it is known to differ.

Test infrastructure only (numbanorm itself never imports this).  ``install()``
patches the simulator of numba-cuda 0.30 in place (idempotent) and returns a
true value that, called, undoes that install (``undo = install(); ...;
undo()``; a no-op when it was installed already); ``uninstall()`` removes the
patches whoever installed them.  Both are no-ops returning False when the
simulator is not enabled (``NUMBA_ENABLE_CUDASIM`` unset or 0: then the tests
run on the real thing).

Emulated (each mirrors the numba-cuda 0.30.4 source named):

* ``FakeCUDAArray.transpose(axes)`` and ``.T`` on the host
  (``cudadrv/devicearray.py``, ``DeviceNDArrayBase.T`` / ``.transpose``, and
  ``kernels/transpose.py``): identity ``axes`` return the array itself; any
  other call on a non-2-D array raises ``NotImplementedError("transposing a
  non-2D DeviceNDArray isn't supported")`` (1-D and ``.T`` of 1-D included);
  a 2-D array with axes that are not a permutation raises ``ValueError("invalid
  axes list ...")``; otherwise the result is a NEW C-contiguous device array
  holding the transposed values (hardware launches a tiled copy kernel), on the
  source's stream, not a view.  That copy kernel is a fresh ``@cuda.jit`` per
  call launched, for an (m, n) source, on ``(int(n/32 + 1), int(m/32 + 1))``
  blocks of 32 x 32 threads (MAX_THREADS_PER_BLOCK = 1024), so it emits the low-occupancy warning below
  on every call below 128 blocks, as hardware does.  Inside a kernel (numba's
  own array ``.T``) the simulator's view is kept: that is a view on hardware.
* The low-occupancy ``NumbaPerformanceWarning`` ("Grid size N will likely
  result in GPU under-utilization due to low occupancy.",
  ``numba.cuda.core.errors.NumbaPerformanceWarning``; ``dispatcher.py``,
  ``_LaunchConfiguration.__init__``): emitted by ``kernel[griddim, blockdim,
  ...]`` when ``config.CUDA_LOW_OCCUPANCY_WARNINGS`` is set, performance
  warnings are not disabled (``config.DISABLE_PERFORMANCE_WARNINGS``) and
  ``gx * gy * gz < 128``.  Hardware builds the configuration through
  ``CUDADispatcher.configure``, a ``functools.lru_cache(maxsize=128)`` method,
  so it warns only the first time a given (kernel, griddim, blockdim[, stream[,
  sharedmem]]) is configured (and a list griddim raises ``TypeError:
  unhashable``); the same cache is used here.  The flags are read when the
  configuration is built, so a configuration first built with the warning off
  stays silent, as on hardware.  Fewer than 2 or more than 4 launch arguments
  raise hardware's ``ValueError``.
* The implicit-copy ``NumbaPerformanceWarning`` ("Host array used in CUDA
  kernel will incur copy overhead to/from device."; ``devicearray.py``,
  ``_to_strided_memory_view``, reached from ``_Kernel._prepare_args`` through
  ``args.wrap_arg``): once per host ``np.ndarray`` argument of a launch (0-d and
  inside tuples too), also for ``cuda.In`` / ``cuda.InOut`` hints (they copy
  in); not for ``cuda.Out``; only while ``config.CUDA_WARN_ON_IMPLICIT_COPY``
  is set and performance warnings are not disabled.
* ``kernel.forall(ntasks, tpb)`` (``dispatcher.py``, ``ForAll``): configured
  at call time; ``ntasks == 0`` launches nothing (no warning); ``tpb > 0``
  launches ``ceil(ntasks / tpb)`` blocks of ``tpb``.
* Warp-level ``cuda.shfl_sync``, ``shfl_up_sync``, ``shfl_down_sync``,
  ``shfl_xor_sync`` and ``cuda.syncwarp(mask=0xFFFFFFFF)`` (absent from the
  simulator).  Semantics are those of ``intrinsics.py`` (mode 0/1/2/3 with
  clamp ``c`` = 0x1F, 0, 0x1F, 0x1F) and PTX ``shfl.sync``: ``b`` is taken
  modulo 32; ``shfl_sync`` reads lane ``src_lane % 32``; ``shfl_up_sync`` reads
  ``lane - delta`` and a lane whose source is below 0 gets its own value;
  ``shfl_down_sync`` reads ``lane + delta`` and a source above 31 gives the own
  value; ``shfl_xor_sync`` reads ``lane ^ lane_mask``.  A lane is ``linear
  thread id % 32`` with ``id = x + y*bdx + z*bdx*bdy``.  The lanes named in
  ``mask`` meet at a per-warp exchange (one round object per (op, mask): every
  lane deposits its value, waits until all have, then reads its partner's).
  Errors, each a clear ``RuntimeError`` from the launch (undefined behaviour
  on hardware): the caller is not in its own mask; a lane reads a lane that is
  not in the mask; with ``STRICT_MASKS`` (the default) the mask names lanes the
  block does not have (the last warp of a block that is not a multiple of 32
  threads) or a lane that returned before joining.  With ``STRICT_MASKS =
  False`` those follow the CUDA guide instead ("all non-exited threads named in
  mask must execute the same intrinsic"): absent and exited lanes are skipped
  and only *reading* one raises.  Divergent waits (a named lane waiting at
  ``syncthreads`` or in another warp op, with no lane of the warp left
  running) raise after 0.5 s instead of hanging; when a lane of the block
  raised, lanes stuck on it end quietly so the launch reports that lane's
  error; an aborted launch (the simulator's own abort flag) frees the waiters.
  Values must be ints or floats (hardware: i32/i64/f32/f64 only, a TypingError);
  bools, complex and non-scalars raise ``TypeError``.

Faster, with the same semantics:

* ``BlockManager.run`` (``kernel.py``) starts a block's threads and then
  spins, polling every live thread's ``is_alive()`` and ``syncthreads_blocked``
  until all are blocked (it releases them) or gone.  The spinning thread holds
  the GIL for its share of every switch interval, so a launch of 256 threads
  spent most of its time polling (13.6 million ``is_alive`` calls in one test
  of 10 small launches: 10.7 of its 17 s).  Here the manager waits on a
  condition that a thread notifies when it blocks in ``syncthreads`` or ends
  (with a 50 ms timeout as a backstop), and does what the original does on
  each wake-up: raise the first exception after aborting the others, release
  the block when every live thread is blocked, stop when none is alive.

Not emulated:

* unsigned ints and float16 passed to a shuffle are accepted: in the simulator
  a value does not carry numba's type (NumPy 2 keeps ``uint32 + 1`` a uint32,
  numba types it int64), so the TypingError hardware gives for a u32/u64/f16
  operand cannot be told apart; the simulator does no type checking at all;
* ``forall`` without ``tpb``: hardware takes the block size from the occupancy
  calculator (``cuOccupancyMaxPotentialBlockSize``), unknown without a GPU; the
  simulator's ``ntasks`` blocks of 1 thread are kept, so it warns only for
  ``ntasks < 128`` (where hardware always warns);
* arguments rewritten by launch ``extensions`` are not checked for host copies;
* other warnings: ``NumbaInvalidConfigWarning`` for ``@cuda.jit(debug=True)``
  with optimisation on (decoration time), float16's nvjitlink LTO warning, NVVM
  and NVRTC log warnings (compile time);
* ``reshape`` of F-contiguous device arrays in C order (hardware reinterprets
  the memory) and of non-contiguous ones (hardware raises);
  ``cuda.as_cuda_array`` synchronising on the producer's stream;
* ``activemask``, ``lanemask_lt``, vote (``all_sync``, ``any_sync``,
  ``eq_sync``, ``ballot_sync``) and ``match_*_sync``;
* the memory model: simulated threads see each other's writes at once, so a
  missing ``syncthreads`` / ``syncwarp`` / ``threadfence`` goes unnoticed;
  launches are synchronous; streams are not ordered.
"""

from __future__ import annotations

import functools
import math
import operator
import threading
import time
import warnings

import numpy as np

__all__ = ["STRICT_MASKS", "install", "installed", "uninstall"]

# Mask lanes that do not exist or exited before joining a warp op: error
# (True) or skipped until read (False, the CUDA guide's rule).
STRICT_MASKS = True

_FULL_MASK = 0xFFFFFFFF
_WARP = 32
_MIN_GRID = 128  # dispatcher.py: min_grid_size
_MAX_TPB = 1024  # MAX_THREADS_PER_BLOCK of every supported GPU (kernels/transpose.py's tpb)
_POLL_S = 0.02  # how often a lane waiting in a warp op checks for abort / deadlock
_STUCK_S = 0.5  # how long a deadlock must persist before it is reported

_LOCK = threading.Lock()
_ORIG: dict[str, object] = {}
_ADDED: dict[str, object] = {}
_GENERATION = [0]  # installs so far: an undo only undoes its own


def _sim_enabled() -> bool:
    from numba.cuda.core import config

    return bool(config.ENABLE_CUDASIM)


def installed() -> bool:
    return bool(_ORIG)


class _Undo:
    """What ``install()`` returns: true, and calling it undoes that install
    (nothing when the patches were in place already, or were since removed
    and installed again by someone else)."""

    def __init__(self, generation):
        self._generation = generation

    def __bool__(self):
        return True

    def __call__(self) -> bool:
        if self._generation is None or self._generation != _GENERATION[0]:
            return False
        return uninstall()

    def __repr__(self):
        return f"<cudasim_honest undo, owner={self._generation is not None}>"


def install():
    """Patch the simulator (idempotent).  Returns False when it is not enabled,
    else a true value that, called, undoes this install (a no-op when it was
    installed already): ``undo = install(); ...; undo()``."""
    if not _sim_enabled():
        return False
    with _LOCK:
        if _ORIG:
            return _Undo(None)
        from numba.cuda.simulator import kernel as sk
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray
        from numba.cuda.simulator.kernelapi import FakeCUDAModule

        _ORIG.update(
            transpose=FakeCUDAArray.__dict__["transpose"],
            T=FakeCUDAArray.__dict__["T"],
            getitem=sk.FakeCUDAKernel.__dict__["__getitem__"],
            call=sk.FakeCUDAKernel.__dict__["__call__"],
            forall=sk.FakeCUDAKernel.__dict__["forall"],
            run=sk.BlockThread.__dict__["run"],
            syncthreads=sk.BlockThread.__dict__["syncthreads"],
            manager_run=sk.BlockManager.__dict__["run"],
        )
        FakeCUDAArray.transpose = _transpose
        FakeCUDAArray.T = property(_T)
        sk.FakeCUDAKernel.__getitem__ = _getitem
        sk.FakeCUDAKernel.__call__ = _call
        sk.FakeCUDAKernel.forall = _forall
        sk.BlockThread.run = _run
        sk.BlockThread.syncthreads = _syncthreads
        sk.BlockManager.run = _manager_run
        _ADDED.update(
            shfl_sync=_shfl_sync,
            shfl_up_sync=_shfl_up_sync,
            shfl_down_sync=_shfl_down_sync,
            shfl_xor_sync=_shfl_xor_sync,
            syncwarp=_syncwarp,
        )
        for name, fn in list(_ADDED.items()):
            if name in FakeCUDAModule.__dict__:  # a later simulator has its own: keep it
                del _ADDED[name]
            else:
                setattr(FakeCUDAModule, name, fn)
        _GENERATION[0] += 1
        return _Undo(_GENERATION[0])


def uninstall() -> bool:
    """Undo ``install()``.  Returns whether anything was undone."""
    with _LOCK:
        if not _ORIG:
            return False
        from numba.cuda.simulator import kernel as sk
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray
        from numba.cuda.simulator.kernelapi import FakeCUDAModule

        FakeCUDAArray.transpose = _ORIG["transpose"]
        FakeCUDAArray.T = _ORIG["T"]
        sk.FakeCUDAKernel.__getitem__ = _ORIG["getitem"]
        sk.FakeCUDAKernel.__call__ = _ORIG["call"]
        sk.FakeCUDAKernel.forall = _ORIG["forall"]
        sk.BlockThread.run = _ORIG["run"]
        sk.BlockThread.syncthreads = _ORIG["syncthreads"]
        sk.BlockManager.run = _ORIG["manager_run"]
        for name, fn in _ADDED.items():
            if FakeCUDAModule.__dict__.get(name) is fn:
                delattr(FakeCUDAModule, name)
        _ORIG.clear()
        _ADDED.clear()
        _configure.cache_clear()
        _GENERATION[0] += 1
        return True


# ----------------------------------------------------------------- warnings


def _perf_warnings_on(flag: str) -> bool:
    from numba.cuda.core import config

    return bool(getattr(config, flag)) and not config.DISABLE_PERFORMANCE_WARNINGS


def _warn_low_occupancy(griddim) -> None:
    # dispatcher.py, _LaunchConfiguration.__init__
    if _perf_warnings_on("CUDA_LOW_OCCUPANCY_WARNINGS"):
        grid_size = griddim[0] * griddim[1] * griddim[2]
        if grid_size < _MIN_GRID:
            from numba.cuda.core.errors import NumbaPerformanceWarning

            msg = f"Grid size {grid_size} will likely result in GPU under-utilization due to low occupancy."
            warnings.warn(NumbaPerformanceWarning(msg), stacklevel=3)


@functools.lru_cache(maxsize=128)
def _configure(kernel, griddim, blockdim, stream=0, sharedmem=0):
    """CUDADispatcher.configure: lru-cached, so each configuration warns once."""
    from numba.cuda.errors import normalize_kernel_dimensions

    griddim, blockdim = normalize_kernel_dimensions(griddim, blockdim)
    _warn_low_occupancy(griddim)
    return griddim, blockdim


def _getitem(self, configuration):
    if len(configuration) not in [2, 3, 4]:
        raise ValueError("must specify at least the griddim and blockdim")
    _configure(self, *configuration)
    return _ORIG["getitem"](self, configuration)


def _warn_host_copies(arg) -> None:
    # args.wrap_arg -> In/InOut.to_device -> _to_strided_memory_view(copy=True)
    from numba.cuda.simulator.args import ArgHint, In, InOut

    if isinstance(arg, (In, InOut)):
        arg = arg.value
    elif isinstance(arg, ArgHint):  # Out: no copy in
        return
    if isinstance(arg, np.ndarray):
        from numba.cuda.core.errors import NumbaPerformanceWarning

        msg = "Host array used in CUDA kernel will incur copy overhead to/from device."
        warnings.warn(NumbaPerformanceWarning(msg), stacklevel=4)
    elif isinstance(arg, tuple):
        for a in arg:
            _warn_host_copies(a)


def _call(self, *args):
    from numba.cuda.simulator import kernel as sk

    launching = not (self._device or sk._kernel_context)
    if launching and not self.extensions and _perf_warnings_on("CUDA_WARN_ON_IMPLICIT_COPY"):
        for a in args:
            _warn_host_copies(a)
    return _ORIG["call"](self, *args)


class _ForAll:
    """dispatcher.py ForAll: configures at call time; nothing for 0 tasks."""

    def __init__(self, kernel, ntasks, tpb, stream, sharedmem):
        self.kernel, self.ntasks, self.tpb = kernel, ntasks, tpb
        self.stream, self.sharedmem = stream, sharedmem

    def __call__(self, *args):
        if self.ntasks == 0:
            return None
        if self.tpb:
            grid = (self.ntasks + self.tpb - 1) // self.tpb
            return self.kernel[grid, self.tpb, self.stream, self.sharedmem](*args)
        return self.kernel[self.ntasks, 1, self.stream, self.sharedmem](*args)


def _forall(self, ntasks, tpb=0, stream=0, sharedmem=0):
    if ntasks < 0:
        raise ValueError(f"Can't create ForAll with negative task count: {ntasks}")
    return _ForAll(self, ntasks, tpb, stream, sharedmem)


# ---------------------------------------------------------------- transpose


def _in_kernel() -> bool:
    from numba.cuda.simulator.kernel import BlockThread

    return isinstance(threading.current_thread(), BlockThread)


def _T(self):
    return self.transpose()


def _transpose(self, axes=None):
    if _in_kernel():  # numba's array .T / transpose inside a kernel: a view
        return _ORIG["transpose"](self, axes)
    # cudadrv/devicearray.py, DeviceNDArrayBase.transpose, line for line
    if axes and tuple(axes) == tuple(range(self.ndim)):
        return self
    elif self.ndim != 2:
        msg = "transposing a non-2D DeviceNDArray isn't supported"
        raise NotImplementedError(msg)
    elif axes is not None and set(axes) != set(range(self.ndim)):
        raise ValueError(f"invalid axes list {axes!r}")
    return _transpose_copy(self)


def _transpose_copy(a):
    """kernels/transpose.py: a new C-contiguous (rows, cols) array, filled by a
    tiled kernel launched on a's stream."""
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

    cols, rows = a.shape
    tile_width = int(math.pow(2, math.log(_MAX_TPB, 2) / 2))
    tile_height = int(_MAX_TPB / tile_width)
    blocks = int(rows / tile_height + 1), int(cols / tile_width + 1)
    _warn_low_occupancy((*blocks, 1))  # a fresh @cuda.jit per call: configured anew each time
    src = a._ary
    out = np.empty((rows, cols), dtype=src.dtype)
    out[...] = src.T
    return FakeCUDAArray(out, stream=getattr(a, "stream", 0))


# ------------------------------------------------------------ warp exchange


class _LaneAborted(BaseException):
    """Ends a simulated thread quietly (caught in _run): the launch reports the
    error of the lane that really failed, or has already been aborted."""


class _Round:
    __slots__ = ("op", "mask", "values", "gone", "done")

    def __init__(self, op, mask, gone):
        self.op, self.mask = op, mask
        self.values: dict[int, object] = {}
        self.gone = set(gone)  # lanes skipped (STRICT_MASKS off): absent or exited
        self.done = False


class _Warp:
    def __init__(self, block, index, nlanes):
        self.block, self.index, self.nlanes = block, index, nlanes
        self.base = index * _WARP
        self.exists = (1 << nlanes) - 1
        self.cond = threading.Condition(threading.Lock())
        self.rounds: dict[tuple, _Round] = {}
        self.waiting: dict[int, _Round] = {}


class _Block:
    def __init__(self, manager):
        bx, by, bz = tuple(manager._block_dim)
        n = bx * by * bz
        self.nthreads = n
        self.threads: dict[int, object] = {}  # linear id -> BlockThread, once started
        self.warps = [_Warp(self, w, min(_WARP, n - w * _WARP)) for w in range((n + _WARP - 1) // _WARP)]

    def failed(self) -> bool:
        return any(t.exception for t in list(self.threads.values()))


def _block_of(manager) -> _Block:
    b = manager.__dict__.get("_honest_block")
    if b is None:
        with _LOCK:
            b = manager.__dict__.get("_honest_block")
            if b is None:
                b = manager._honest_block = _Block(manager)
    return b


def _run(self):
    """BlockThread.run: registers the thread with its block's warp state."""
    block = _block_of(self._manager)
    block.threads[self.thread_id] = self
    try:
        _ORIG["run"](self)
    except _LaneAborted:
        pass
    finally:
        self._honest_exited = True
        warp = block.warps[self.thread_id // _WARP]
        with warp.cond:
            warp.cond.notify_all()
        _wake_manager(self)


# ------------------------------------------------------- the block manager


def _wake_manager(t):
    """Tell t's block manager (when it is _manager_run's) that t changed."""
    cond = t._manager.__dict__.get("_honest_wake")
    if cond is not None:
        with cond:
            cond.notify()


def _syncthreads(self):
    """BlockThread.syncthreads (kernel.py), notifying the manager once this
    thread is blocked."""
    if self.abort:
        raise RuntimeError("abort flag set on syncthreads call")
    self.syncthreads_blocked = True
    _wake_manager(self)
    self.syncthreads_event.wait()
    self.syncthreads_event.clear()
    if self.abort:
        raise RuntimeError("abort flag set on syncthreads clear")


def _manager_run(self, grid_point, *args):
    """BlockManager.run (kernel.py) waiting on a condition instead of
    spinning: on each wake-up, as the original on each poll, the first live
    thread's exception aborts the block and is raised; when every live thread
    is blocked in syncthreads, all are released; it returns when none is
    alive (after raising any exception set before its thread ended)."""
    from numba.cuda.simulator.kernel import BlockThread

    wake = self._honest_wake = threading.Condition(threading.Lock())
    threads = []
    for block_point in np.ndindex(*self._block_dim):

        def target():
            self._f(*args)

        t = BlockThread(target, self, grid_point, block_point, self._debug)
        t.start()
        threads.append(t)
    live = threads
    with wake:
        while live:
            for t in live:
                if t.exception:
                    for other in threads:
                        other.abort = True
                        other.syncthreads_blocked = False
                        other.syncthreads_event.set()
                    raise t.exception[0].with_traceback(t.exception[1])
            live = [t for t in live if t.is_alive() and not getattr(t, "_honest_exited", False)]
            if live and all(t.syncthreads_blocked for t in live):
                for t in live:
                    t.syncthreads_blocked = False
                    t.syncthreads_event.set()
                continue
            if live:
                wake.wait(0.05)
    for t in threads:
        if t.exception:
            raise t.exception[0].with_traceback(t.exception[1])


def _lanes(mask):
    return [lane for lane in range(_WARP) if mask >> lane & 1]


def _lane_state(warp, lane):
    """'absent' | 'pending' | 'exited' | 'failed' | 'syncthreads' | 'warp' | 'running'."""
    if lane >= warp.nlanes:
        return "absent", None
    t = warp.block.threads.get(warp.base + lane)
    if t is None:
        return "pending", None  # not started yet
    if getattr(t, "_honest_exited", False):
        return ("failed" if t.exception else "exited"), t
    if t.syncthreads_blocked:
        return "syncthreads", t
    r = warp.waiting.get(lane)
    if r is not None and not r.done:
        return "warp", r
    return "running", t


def _describe(op, mask, warp):
    return f"cuda.{op}(mask={mask:#010x}) in warp {warp.index} (lanes 0..{warp.nlanes - 1})"


def _advance(warp, r):
    """Under warp.cond: complete r when every lane it waits for has come (or is
    skipped).  Returns (error message or None, whether the error is final)."""
    missing = [lane for lane in _lanes(r.mask) if lane not in r.values and lane not in r.gone]
    reasons, final, across = [], True, False
    for lane in missing:
        state, obj = _lane_state(warp, lane)
        if state in ("pending", "running"):
            return None, False
        if state == "failed":
            raise _LaneAborted
        if state == "exited":
            if STRICT_MASKS:
                reasons.append(f"lane {lane} returned without calling it")
            else:
                r.gone.add(lane)
        elif state == "syncthreads":
            reasons.append(f"lane {lane} is waiting at cuda.syncthreads()")
            final = False
        elif state == "warp":
            reasons.append(f"lane {lane} is waiting in cuda.{obj.op}(mask={obj.mask:#010x})")
            final = across = False
    if not reasons:
        r.done = True
        if warp.rounds.get((r.op, r.mask)) is r:
            del warp.rounds[(r.op, r.mask)]
        warp.cond.notify_all()
        return None, False
    if across:  # a lane of the warp still running could yet release those others
        for lane in range(warp.nlanes):
            if _lane_state(warp, lane)[0] in ("pending", "running"):
                return None, False
    if warp.block.failed():
        raise _LaneAborted
    return f"{_describe(r.op, r.mask, warp)} cannot complete: " + "; ".join(reasons), final


def _exchange(op, mask, value):
    """Deposit value in this warp's round for (op, mask); wait for the others.
    Returns (round, lane)."""
    from numba.cuda.simulator.kernel import BlockThread

    t = threading.current_thread()
    if not isinstance(t, BlockThread):
        raise RuntimeError(f"cuda.{op}() called outside a simulated kernel")
    block = _block_of(t._manager)
    lane = t.thread_id % _WARP
    warp = block.warps[t.thread_id // _WARP]
    mask = operator.index(mask) & _FULL_MASK
    if not mask >> lane & 1:
        raise RuntimeError(
            f"cuda.{op}: lane {lane} called with mask {mask:#010x}, which does not name its own lane "
            "(undefined behaviour on hardware)"
        )
    absent = mask & ~warp.exists
    if absent and STRICT_MASKS:
        raise RuntimeError(
            f"cuda.{op}: mask {mask:#010x} names lanes {_lanes(absent)} of warp {warp.index}, which this "
            f"block of {block.nthreads} threads does not have (only lanes 0..{warp.nlanes - 1}); "
            "undefined on hardware: build the mask from the lanes that exist"
        )
    key = (op, mask)
    with warp.cond:
        r = warp.rounds.get(key)
        if r is None:
            r = warp.rounds[key] = _Round(op, mask, _lanes(absent))
        r.values[lane] = value
        warp.waiting[lane] = r
        try:
            stuck_since = None
            while True:
                msg, final = _advance(warp, r)
                if r.done:
                    break
                if msg is None:
                    stuck_since = None
                else:
                    now = time.monotonic()
                    stuck_since = stuck_since or now
                    if final or now - stuck_since >= _STUCK_S:
                        raise RuntimeError(msg)
                warp.cond.wait(_POLL_S)
                if t.abort:  # the launch failed elsewhere and was aborted
                    raise _LaneAborted
        finally:
            warp.waiting.pop(lane, None)
    return r, lane


def _check_shfl_value(op, value):
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if ok and isinstance(value, np.generic) and value.dtype.itemsize > 8:
        ok = False
    if not ok:
        raise TypeError(
            f"cuda.{op}: shfl_sync only supports 32- and 64-bit ints and floats, got {type(value).__name__}"
        )


def _shfl(op, mode, c, mask, value, b):
    """PTX shfl.sync: mode 0 idx, 1 up, 2 down, 3 bfly; c = clamp | segmask << 8."""
    _check_shfl_value(op, value)
    b = operator.index(b)
    r, lane = _exchange(op, mask, value)
    bval, cval, segmask = b & 0x1F, c & 0x1F, (c >> 8) & 0x1F
    max_lane = (lane & segmask) | (cval & ~segmask & 0x1F)
    min_lane = lane & segmask
    if mode == 1:
        j = lane - bval
        pval = j >= max_lane
    elif mode == 2:
        j = lane + bval
        pval = j <= max_lane
    elif mode == 3:
        j = lane ^ bval
        pval = j <= max_lane
    else:
        j = min_lane | (bval & ~segmask & 0x1F)
        pval = j <= max_lane
    if not pval or j == lane:
        return value
    if not r.mask >> j & 1:
        raise RuntimeError(
            f"cuda.{op}: lane {lane} reads lane {j}, which is not in mask {r.mask:#010x} "
            "(the value is undefined on hardware)"
        )
    if j in r.gone:
        raise RuntimeError(
            f"cuda.{op}: lane {lane} reads lane {j}, which does not exist or has exited "
            "(the value is undefined on hardware)"
        )
    return r.values[j]


# Methods of the simulator's FakeCUDAModule (the `cuda` a kernel sees);
# intrinsics.py: shfl_sync mode 0 c 0x1F, shfl_up_sync 1 / 0, shfl_down_sync
# 2 / 0x1F, shfl_xor_sync 3 / 0x1F.
def _shfl_sync(self, mask, value, src_lane):
    return _shfl("shfl_sync", 0, 0x1F, mask, value, src_lane)


def _shfl_up_sync(self, mask, value, delta):
    return _shfl("shfl_up_sync", 1, 0, mask, value, delta)


def _shfl_down_sync(self, mask, value, delta):
    return _shfl("shfl_down_sync", 2, 0x1F, mask, value, delta)


def _shfl_xor_sync(self, mask, value, lane_mask):
    return _shfl("shfl_xor_sync", 3, 0x1F, mask, value, lane_mask)


def _syncwarp(self, mask=_FULL_MASK):
    _exchange("syncwarp", mask, None)
