"""Reuse of large output buffers: allocating calls at the speed of ``out=``.

A new NumPy array of 32 MiB or more is mapped fresh from the operating
system (glibc serves smaller blocks from its heap, which stays resident
after the first ``free``).  Its pages are faulted in and zeroed by the
kernel when the output loop first touches them, and the zeroed lines are
read back before they are overwritten: an allocating ``layer_norm`` of
128 MiB took 1.66x the time of the same call with ``out=`` here
(benchmarks/NOTES.md section 20).

So the CPU backend allocates its large outputs (and large temporaries) as
views of buffers it keeps: a buffer whose every view has been dropped (no
reference left but this module's) is handed out again.  Busy buffers are
never touched, so a result stays valid for as long as the caller holds it
or any view of it.  Only the raw address of an array that is no longer
referenced could see its memory reused, which NumPy does not allow either.

The buffers held (busy or idle) never exceed a byte limit: by default the
smaller of 1 GiB and 1/16 of physical memory, set by the environment
variable ``NUMBANORM_OUTPUT_CACHE_MB`` (0 turns reuse off) or
:func:`set_output_cache`.  Idle buffers are released, least recently used
first, when a new buffer needs their room, and all of them by
:func:`release_output_cache`.  The arrays handed out are ordinary writeable
ndarrays, C- or F-contiguous like those ``np.empty_like`` gives, whose
``base`` is the buffer (``owndata`` is False).

Reuse needs exact reference counts: it is on under CPython with the GIL
and off elsewhere (PyPy, free-threaded builds).
"""

from __future__ import annotations

import math
import os
import sys
import threading
import warnings

import numpy as np

# Smallest output served from the cache: below glibc's largest mmap
# threshold (32 MiB on 64-bit), freed blocks are reused from the heap
# already (an empty+fill of 31 MiB ran 2.9x faster than one of 33 MiB).
MIN_BYTES = 32 << 20
# glibc's dynamic mmap threshold is off once any of these is set (mallopt(3)):
# every block over 128 KiB is then mapped fresh and faulted in again.
# dask.distributed's nanny sets MALLOC_TRIM_THRESHOLD_=65536 in its workers
# (a 7.6 MiB output chunk: 7.3 ms fresh vs 1.8 ms reused; benchmarks/NOTES.md
# section 22b), so there smaller outputs are reused too.
_MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")
if any(os.environ.get(k) for k in _MALLOC_ENV):
    MIN_BYTES = 4 << 20

# Buffer sizes are rounded up to this (the huge-page size), so that outputs
# of slightly different sizes share buffers.
GRANULE = 2 << 20

# Offset of every view into its buffer is a multiple of this (cache lines).
ALIGN = 64

_ENV = "NUMBANORM_OUTPUT_CACHE_MB"


def _default_limit() -> int:
    try:
        ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        ram = 0
    if ram <= 0:
        return 1 << 30
    return min(1 << 30, ram // 16)


def _env_limit() -> int:
    raw = os.environ.get(_ENV)
    if raw is None or raw.strip() == "":
        return _default_limit()
    try:
        mb = float(raw)
        if not (math.isfinite(mb) and mb >= 0):
            raise ValueError
    except ValueError:
        warnings.warn(
            f"{_ENV}={raw!r} is not a non-negative number of MiB; using the default",
            RuntimeWarning,
            stacklevel=2,
        )
        return _default_limit()
    return int(mb * (1 << 20))


def _supported() -> bool:
    if sys.implementation.name != "cpython":
        return False
    gil = getattr(sys, "_is_gil_enabled", None)
    return gil is None or bool(gil())


_lock = threading.Lock()
_bufs: list[np.ndarray] = []  # owned uint8 buffers, least recently used first
_limit = _env_limit() if _supported() else 0


def _refs(bufs: list[np.ndarray], i: int) -> int:
    return sys.getrefcount(bufs[i])


# references to a buffer that only the list holds (its slot, and the
# argument of getrefcount), counted through the same code as every test
_IDLE_REFS = _refs([np.empty(1, np.uint8)], 0)


def _idle_at(bufs: list[np.ndarray], i: int) -> bool:
    return _refs(bufs, i) <= _IDLE_REFS


def _size_class(nbytes: int) -> int:
    """Bytes of the buffer that serves nbytes: whole granules, and room to
    align the view."""
    return -(-nbytes // GRANULE) * GRANULE + ALIGN


def _held() -> int:
    return sum(b.nbytes for b in _bufs)


def _evict_idle(target: int) -> int:
    """Release idle buffers, least recently used first, until the bytes held
    are at most ``target``; under _lock.  Returns the bytes released."""
    freed = 0
    i = 0
    while _held() > target and i < len(_bufs):
        if _idle_at(_bufs, i):
            freed += _bufs.pop(i).nbytes
        else:
            i += 1
    return freed


def _take(nbytes: int) -> np.ndarray | None:
    """An idle or new buffer of nbytes' size class (most recently used
    now), or None when the limit leaves no room; under _lock."""
    size = _size_class(nbytes)
    for i in range(len(_bufs) - 1, -1, -1):
        if _bufs[i].nbytes == size and _idle_at(_bufs, i):
            buf = _bufs.pop(i)
            _bufs.append(buf)
            return buf
    if size > _limit:
        return None
    _evict_idle(_limit - size)
    if _held() + size > _limit:
        return None
    buf = np.empty(size, np.uint8)
    _bufs.append(buf)
    return buf


def empty(shape, dtype, order: str = "C") -> np.ndarray:
    """``np.empty(shape, dtype, order)``, from a reused buffer when large."""
    dt = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    nbytes = math.prod(shape) * dt.itemsize
    if nbytes < MIN_BYTES or nbytes + ALIGN > _limit or dt.hasobject:
        return np.empty(shape, dt, order)
    with _lock:
        buf = _take(nbytes)
        if buf is None:
            return np.empty(shape, dt, order)
        off = -buf.ctypes.data % ALIGN
        return buf[off : off + nbytes].view(dt).reshape(shape, order=order)


def empty_like(a: np.ndarray) -> np.ndarray:
    """``np.empty_like(a)`` (same memory layout, same subclass) for the
    contiguous ndarrays the cache serves, ``np.empty_like`` for the rest."""
    if type(a) is np.ndarray and a.nbytes >= MIN_BYTES:
        if a.flags.c_contiguous:
            return empty(a.shape, a.dtype, "C")
        if a.flags.f_contiguous:
            return empty(a.shape, a.dtype, "F")
    return np.empty_like(a)


def set_output_cache(max_bytes: int) -> int:
    """Limit the bytes of output buffers numbanorm keeps for reuse; return the previous limit.

    On the CPU, outputs of 32 MiB or more (results of calls without ``out=``,
    and large temporaries) are allocated as views of buffers that are handed
    out again once every view of them has been dropped, so that a loop of
    allocating calls runs at the speed of ``out=`` calls instead of paying
    for fresh pages each time.  A buffer still referenced by any array is
    never reused.  The limit bounds all buffers held, busy or idle: lowering
    it releases idle buffers (least recently used first) and then lets go of
    busy ones until the rest fits (those stay with their arrays and are
    freed with them); 0 turns reuse off.  The default is the smaller of
    1 GiB and 1/16 of physical memory, or ``NUMBANORM_OUTPUT_CACHE_MB`` (MiB)
    when set.  Reuse is always off where reference counts are not exact
    (PyPy, free-threaded CPython): there the limit stays 0.  Thread-safe.

    Parameters
    ----------
    max_bytes : int
        The new limit in bytes, >= 0.

    Returns
    -------
    int
        The previous limit in bytes.

    Raises
    ------
    TypeError
        ``max_bytes`` is not an int (bool included).
    ValueError
        ``max_bytes`` is negative.

    See Also
    --------
    release_output_cache, output_cache_info

    Examples
    --------
    >>> import numbanorm as nbn
    >>> prev = nbn.set_output_cache(256 << 20)  # keep at most 256 MiB
    >>> nbn.output_cache_info()["max_bytes"]
    268435456
    >>> _ = nbn.set_output_cache(prev)  # restore the previous limit
    """
    global _limit
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer)):
        raise TypeError(f"max_bytes must be an int, got {type(max_bytes).__name__}")
    if max_bytes < 0:
        raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
    with _lock:
        prev = _limit
        _limit = int(max_bytes) if _supported() else 0
        _trim(_limit)
    return prev


def _trim(limit: int) -> int:
    """Release idle buffers until the bytes held fit ``limit``, then let go
    of busy ones (they stay with their arrays and are freed with them);
    under _lock.  Returns the idle bytes released."""
    freed = _evict_idle(limit)
    while _bufs and _held() > limit:
        _bufs.pop(0)
    return freed


def release_output_cache() -> int:
    """Release every output buffer numbanorm keeps for reuse; return the idle bytes released.

    Idle buffers (no array refers to them) are freed now.  Busy ones are
    dropped from the cache but stay with the arrays that use them, and are
    freed with them; results already handed out stay valid.  The limit set
    by :func:`set_output_cache` is unchanged, so later calls fill the cache
    again.  Thread-safe.

    Returns
    -------
    int
        Bytes of the idle buffers released (busy buffers are not counted).

    See Also
    --------
    set_output_cache, output_cache_info

    Examples
    --------
    >>> import numbanorm as nbn
    >>> freed = nbn.release_output_cache()
    >>> nbn.output_cache_info()["buffers"]
    0
    """
    with _lock:
        return _trim(-1)


def output_cache_info() -> dict[str, int]:
    """Describe the output buffer cache: its limit, and the buffers and bytes it holds.

    A snapshot taken under the cache's lock.  A buffer is idle when no
    array refers to it any more (it can be handed out again), busy
    otherwise.

    Returns
    -------
    dict of str to int
        ``max_bytes``: the limit (:func:`set_output_cache`);
        ``held_bytes``: bytes of all buffers held, busy or idle;
        ``buffers``: their number; ``idle_buffers`` and ``idle_bytes``:
        the number and bytes of the idle ones.

    See Also
    --------
    set_output_cache, release_output_cache

    Examples
    --------
    >>> import numbanorm as nbn
    >>> sorted(nbn.output_cache_info())
    ['buffers', 'held_bytes', 'idle_buffers', 'idle_bytes', 'max_bytes']
    """
    with _lock:
        idle = [i for i in range(len(_bufs)) if _idle_at(_bufs, i)]
        return {
            "max_bytes": _limit,
            "held_bytes": _held(),
            "buffers": len(_bufs),
            "idle_buffers": len(idle),
            "idle_bytes": sum(_bufs[i].nbytes for i in idle),
        }
