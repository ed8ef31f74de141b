"""Argument checks shared by every public function.

Everything here runs before any kernel: a bad argument gives a ValueError or
TypeError naming the argument and the expected and given values, and leaves x
and the running statistics untouched.

Masked arrays (``numpy.ma``): standardize, minmax_scale and lp_normalize
(which leave NaN out of their statistics) leave masked entries out the same
way and return their result masked where x was; the deep-learning norms, and
every parameter, running statistic or ``out=``, refuse them with a TypeError
naming the argument (MASK_SKIPPING, _masked_call).
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from typing import Any

import numpy as np

from . import _outbuf, backends

_FLOATS = (np.float16, np.float32, np.float64)


def result_dtype(dtype: Any, name: str = "x") -> np.dtype:
    """float16/32/64 stay; integers and bool become float64; others TypeError."""
    dt = np.dtype(dtype)
    if dt.type in _FLOATS:
        return dt
    if dt.kind in "biu":
        return np.dtype(np.float64)
    raise TypeError(f"{name} must have a float16, float32, float64, integer or bool dtype, got {dt}")


def rms_default_eps(dtype: Any) -> float:
    """``rms_norm``'s ``eps=None``: PyTorch 2.13's default, the machine
    epsilon of the op's math type: float32's for float16 input (PyTorch
    computes float16 in float32), the dtype's own for float32/float64, and
    float64's for integer or bool input (computed in float64).  One home for
    every backend (tests/test_loose_ends.py::test_rms_norm_default_eps)."""
    dt = result_dtype(dtype)
    return float(np.finfo(np.float32 if dt == np.float16 else dt).eps)


def stats_dtype(dt: np.dtype) -> np.dtype:
    """Dtype of returned statistics: float32 for float16/32 inputs (as
    PyTorch's CUDA kernels), float64 for float64."""
    return np.dtype(np.float64) if dt == np.float64 else np.dtype(np.float32)


# Masked arrays (numpy.ma).  The functions that leave NaN out of their
# statistics (section 3 of the API) take them: masked entries are left out
# like NaN and the output is masked where x was.  The deep-learning norms do
# not skip NaN (a NaN makes its group's output NaN), so a mask has no meaning
# for them: a TypeError naming x (np.asarray would silently use the values
# under the mask).  The scalers and RunningStats honour masks too
# (scalers._validate, streaming.as_float_array).  Guarded by
# tests/test_loose_ends.py.
MASK_SKIPPING = frozenset({"standardize", "minmax_scale", "lp_normalize"})

_MASK_HINT = (
    "standardize, minmax_scale, lp_normalize, the scalers and RunningStats take masked "
    "arrays: masked entries are left out of the statistics like NaN and the output is masked"
)


def is_masked(x: Any) -> bool:
    """Is ``x`` a ``numpy.ma.MaskedArray``?"""
    return isinstance(x, np.ma.MaskedArray)


def refuse_masked(x: Any, name: str, why: str) -> None:
    """TypeError naming ``name`` when ``x`` is a masked array where a mask
    cannot be honoured (a parameter, a running statistic, ``out=``)."""
    if isinstance(x, np.ma.MaskedArray):
        raise TypeError(
            f"{name} must not be a numpy.ma.MaskedArray ({why}): pass np.ma.getdata({name}) "
            f"or {name}.filled(value) to use its values as they are"
        )


def masked_as_nan(x: Any, name: str = "x") -> tuple[np.ndarray, np.ndarray]:
    """(data, mask) of a masked array: its data as a new array of the result
    dtype (float16/32/64 kept, integer and bool to float64) with NaN where
    masked, and its boolean mask as a new array of x's shape.  x is not
    modified."""
    data = np.ma.getdata(x)
    dt = result_dtype(data.dtype, name).newbyteorder("=")
    mask = np.array(np.ma.getmaskarray(x), dtype=bool, copy=True)
    a = np.array(data, dtype=dt, copy=True)
    a[mask] = np.nan
    return a, mask


def _masked_call(fn, x: Any, args: tuple, kwargs: dict) -> Any:
    """A public function on a masked array: the functions of MASK_SKIPPING
    run on its data with NaN where masked and return the result masked where
    x was (``out=`` a plain ndarray, then viewed as masked); the others raise
    a TypeError naming x."""
    name = fn.__name__
    if name not in MASK_SKIPPING:
        raise TypeError(
            f"x is a numpy.ma.MaskedArray, which {name} refuses: it does not leave masked (or "
            f"NaN) values out of its statistics.  Pass np.ma.getdata(x) or x.filled(value) to "
            f"normalize the values as they are.  {_MASK_HINT}."
        )
    refuse_masked(kwargs.get("out"), "out", "the result is written into a plain array and returned masked")
    data, mask = masked_as_nan(x)
    res = fn(data, *args, **kwargs)
    if isinstance(res, tuple):
        return (np.ma.MaskedArray(res[0], mask=mask, copy=False), *res[1:])
    return np.ma.MaskedArray(res, mask=mask, copy=False)


class Input:
    """A validated input array: ``arr`` is float16/32/64 on its backend."""

    __slots__ = ("arr", "backend", "dtype", "orig", "shape", "ndim")

    def __init__(self, x: Any, name: str = "x"):
        self.orig = x
        if type(x) is np.ndarray and x.dtype.isnative and x.dtype.type in _FLOATS:
            # the common case first, with nothing to convert (small-call path)
            self.backend = backends.cpu_backend()
            self.arr = x
            self.dtype = x.dtype
            self.shape = x.shape
            self.ndim = x.ndim
            return
        if backends.is_cuda_array(x):
            self.backend = backends.backend_for(x)
            arr = self.backend.as_device(x)
            dt = result_dtype(arr.dtype, name)
            if dt != arr.dtype:
                arr = self.backend.from_host(self.backend.to_host(arr).astype(dt), like=x)
        else:
            self.backend = backends.backend_for(np.empty(0))
            # (the public functions honour or refuse masks first: _masked_call)
            refuse_masked(x, name, "this function does not skip masked values")
            if isinstance(x, np.ndarray):
                arr = x
            elif _is_dask(x):
                # the public functions send Dask arrays to backends.dask before
                # any check here (on_call_stream); this path takes in-memory arrays
                raise TypeError(
                    f"{name} is a dask array: this path takes in-memory arrays "
                    "(the public functions take dask arrays lazily)"
                )
            else:
                try:
                    arr = np.asarray(x)
                except Exception as e:  # ragged lists etc.
                    raise TypeError(f"{name} must be an array, got {type(x).__name__}: {e}") from None
            dt = result_dtype(arr.dtype, name)
            if dt != arr.dtype or not arr.dtype.isnative:
                # promotion, or a byte-swapped float (numba computes native order only)
                arr = arr.astype(dt.newbyteorder("="))
        self.arr = arr
        self.dtype = np.dtype(arr.dtype)
        self.shape = tuple(int(n) for n in arr.shape)
        self.ndim = len(self.shape)

    def require_nonempty(self, name: str = "x") -> None:
        if 0 in self.shape:
            raise ValueError(f"{name} is empty (shape {self.shape}): nothing to normalize")


def on_call_stream(fn):
    """Decorator of the public functions: a call on CUDA arrays runs whole
    inside its backend's context (``backend.context(stream, like=x)``):
    every launch, copy and allocation on the call's stream (``stream=``,
    else the one x reports), memory from x's library.  NumPy input passes
    straight through."""

    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def call(x, *args, **kwargs):
        if type(x) is np.ndarray:
            return fn(x, *args, **kwargs)
        if isinstance(x, np.ma.MaskedArray):
            return _masked_call(fn, x, args, kwargs)
        if _is_dask(x):
            return _dask_call(fn.__name__, sig, x, args, kwargs)
        if not backends.is_cuda_array(x):
            return fn(x, *args, **kwargs)
        with backends.backend_for(x).context(kwargs.get("stream"), like=x):
            return fn(x, *args, **kwargs)

    return call


def _is_dask(x: Any) -> bool:
    return type(x).__module__.startswith("dask.")


def _dask_call(name: str, sig: inspect.Signature, x: Any, args: tuple, kwargs: dict) -> Any:
    """A public function on a Dask collection: its Dask implementation
    (``numbanorm.backends.dask``, imported here: dask stays optional), with
    the arguments bound by the public signature (the same TypeError for a
    wrong call)."""
    from .backends import dask as dask_backend

    if not dask_backend.is_dask_array(x):
        raise TypeError(f"x must be an array (a dask.array.Array for dask input), got {type(x).__name__}")
    try:
        bound = sig.bind(x, *args, **kwargs)
    except TypeError as e:  # the message of a direct call
        raise TypeError(f"{name}() {e}") from None
    bound.apply_defaults()
    return dask_backend.call(name, bound)


def check_eps(eps: Any, name: str = "eps") -> float:
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {eps!r}")
    e = float(eps)
    if not (e >= 0.0) or math.isinf(e):
        raise ValueError(f"{name} must be a finite number >= 0, got {eps!r}")
    return e


def check_momentum(momentum: Any) -> float:
    if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real):
        raise TypeError(f"momentum must be a real number, got {momentum!r}")
    m = float(momentum)
    if not 0.0 <= m <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum!r}")
    return m


def channel_axis(ca: Any, ndim: int, name: str = "channel_axis") -> int:
    if isinstance(ca, bool) or not isinstance(ca, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {ca!r}")
    if not -ndim <= ca < ndim:
        raise ValueError(f"{name}={ca} is out of range for x with {ndim} dimensions")
    return int(ca) % ndim


def param(p: Any, shape: tuple[int, ...], name: str, dtype: Any = np.float64):
    """A weight/bias-like parameter as a host array of ``shape`` (float64, or
    ``dtype`` where the caller computes in x's dtype)."""
    if p is None:
        return None
    if type(p) is np.ndarray and p.shape == shape and p.dtype == dtype:
        return p
    refuse_masked(p, name, "parameters take no mask")
    if backends.is_cuda_array(p):
        a = np.asarray(backends.backend_for(p).to_host(backends.backend_for(p).as_device(p)))
    else:
        a = np.asarray(p)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real array, got dtype {a.dtype}")
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(a.shape)}")
    return a.astype(dtype)


def device_array(p: Any, shape: tuple[int, ...], name: str, inp: Input, kinds: str = "biuf"):
    """A CUDA array argument kept on the device (no copy to the host):
    checked for shape, dtype kind and x's device; returns it as is."""
    be = backends.backend_for(p)
    d = be.as_device(p)
    dt = np.dtype(d.dtype)
    if dt.kind not in kinds:
        what = "a float" if kinds == "f" else "a real"
        raise TypeError(f"{name} must be {what} array, got dtype {dt}")
    if tuple(d.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(d.shape)}")
    same_device(p, inp, name)
    return d


def same_device(p: Any, inp: Input, name: str) -> None:
    """ValueError when the CUDA array ``p`` is on another device than x."""
    be = backends.backend_for(p)
    dx, dp = be.device_of(inp.orig), be.device_of(p)
    if dx is not None and dp is not None and dx != dp:
        raise ValueError(f"{name} is on CUDA device {dp} but x is on device {dx}")


def feature_range(fr: Any) -> tuple[float, float]:
    """(lo, hi) of a min-max scaling: finite numbers with lo < hi."""
    try:
        lo, hi = (float(v) for v in fr)
    except (TypeError, ValueError):
        raise TypeError(f"feature_range must be a pair of numbers, got {fr!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"feature_range must be finite with min < max, got {tuple(fr)!r}")
    return lo, hi


def running(p: Any, C: int, name: str, inp: Input, update: bool, host_ok: bool = False):
    """A running-stat array of shape (C,); returns (original, host float64 copy).

    ``host_ok`` lets host buffers serve device inputs (the layers keep theirs
    on the host); the public functions require them where x lives."""
    if p is None:
        return None, None
    refuse_masked(p, name, "running statistics take no mask")
    on_dev = backends.is_cuda_array(p)
    x_dev = backends.is_cuda_array(inp.orig)
    if update and on_dev != x_dev and not (host_ok and not on_dev):
        where = "a CUDA device" if x_dev else "the host"
        raise ValueError(f"{name} is updated in place and must live where x lives ({where})")
    if on_dev:
        be = backends.backend_for(p)
        if x_dev:
            same_device(p, inp, name)
        d = be.as_device(p)
        host = np.asarray(be.to_host(d))
        dt = np.dtype(d.dtype)
    else:
        if not isinstance(p, np.ndarray):
            if update:
                raise TypeError(
                    f"{name} is updated in place and must be a numpy array, got {type(p).__name__}"
                )
            p = np.asarray(p)
        host = p
        dt = p.dtype
    if dt.kind != "f":
        raise TypeError(f"{name} must be a float array, got dtype {dt}")
    if tuple(host.shape) != (C,):
        raise ValueError(f"{name} must have shape ({C},), got {tuple(host.shape)}")
    if update and not on_dev and not p.flags.writeable:
        raise ValueError(f"{name} is updated in place but is read-only")
    return p, np.array(host, dtype=np.float64)


def out_array(out: Any, inp: Input, name: str = "out"):
    """Validate ``out=`` (shape, dtype, kind of array) or allocate a result."""
    be = inp.backend
    if out is None:
        if isinstance(inp.arr, np.ndarray):
            # keep x's memory layout (a channels-last x gets a channels-last y),
            # so the kernels write y through the same view as they read x
            return _outbuf.empty_like(inp.arr), None
        return be.empty(inp.shape, inp.dtype, like=inp.orig), None
    refuse_masked(out, name, "the result is written into a plain array")
    if backends.is_cuda_array(out) != backends.is_cuda_array(inp.orig):
        raise TypeError(
            f"{name} must be the same kind of array as x ({type(inp.orig).__name__}), "
            f"got {type(out).__name__}"
        )
    o = be.as_device(out) if backends.is_cuda_array(out) else out
    if not backends.is_cuda_array(out) and not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(out).__name__}")
    if tuple(o.shape) != inp.shape:
        raise ValueError(f"{name} must have shape {inp.shape}, got {tuple(o.shape)}")
    if np.dtype(o.dtype) != inp.dtype:
        raise ValueError(f"{name} must have dtype {inp.dtype}, got {np.dtype(o.dtype)}")
    if isinstance(o, np.ndarray) and not o.flags.writeable:
        raise ValueError(f"{name} is read-only")
    if isinstance(o, np.ndarray) and isinstance(inp.orig, np.ndarray) and overlaps(o, inp.orig):
        raise ValueError(f"{name} overlaps x without being x: pass x itself (in place) or a separate array")
    return o, out


def overlaps(out: np.ndarray, x: np.ndarray) -> bool:
    """Does ``out`` share memory with ``x`` without being the same view of it
    (same address and strides: in place)?  The kernels read x while writing
    out element by element, so any other overlap would read values already
    overwritten.  Memory bounds only (np.may_share_memory), so a disjoint
    interleaved view also counts."""
    if out is x:
        return False
    if not np.may_share_memory(out, x):
        return False
    ax = x.__array_interface__["data"][0]
    return not (out.__array_interface__["data"][0] == ax and out.strides == x.strides)


def shape_tuple(normalized_shape: Any, name: str = "normalized_shape") -> tuple[int, ...]:
    if isinstance(normalized_shape, (int, np.integer)) and not isinstance(normalized_shape, bool):
        return (int(normalized_shape),)
    try:
        t = tuple(normalized_shape)
    except TypeError:
        raise TypeError(f"{name} must be an int or a tuple of ints, got {normalized_shape!r}") from None
    if not t or any(isinstance(n, bool) or not isinstance(n, (int, np.integer)) for n in t):
        raise TypeError(f"{name} must be an int or a non-empty tuple of ints, got {normalized_shape!r}")
    return tuple(int(n) for n in t)
