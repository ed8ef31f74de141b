"""Backends: where the x-sized work runs.

The public functions (``numbanorm.functional``, ``numbanorm.preprocessing``,
scalers, layers) validate their arguments and reduce every operation to a few
*primitives* on C-contiguous 2-D/3-D views of ``x`` (``numbanorm._reduce``
plans the views).  A backend implements those primitives for one kind of
array; everything else (parameter checks, finalizing statistics, running-stat
updates) works on small host arrays and is shared by all backends.

:class:`Backend` is the contract, checked for both backends by
tests/test_backend_contract.py: ``backends.cpu`` (NumPy arrays) and
``backends.cuda`` (CUDA arrays).  ``P, R, K`` are ints, ``x3`` has shape
``(P, R, K)``, ``x2`` shape ``(R, D)``; all statistics and parameters are host
``float64`` NumPy arrays.  ``backend_for(x)`` picks the backend from the type
of ``x``.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np


class Moments(NamedTuple):
    """What ``Backend.moments`` returns: float64 (P, K) host arrays.

    ``resid`` is the rounding residual of ``mean`` (the exact mean is ``mean
    + resid``, see ``_stats.chan_merge_dd``); zeros where a backend does not
    carry it.  ``min``/``max`` are None unless asked for.  A group with count
    0 has mean 0, M2 0 and min/max +inf/-inf (callers turn them into NaN).
    """

    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray
    min: np.ndarray | None
    max: np.ndarray | None
    resid: np.ndarray


@runtime_checkable
class Backend(Protocol):
    """The primitives every backend provides, with these exact signatures."""

    NAME: str
    #: row_norm takes weights of any (RW, S) shape (rows r use W[r % RW], S
    #: equal segments per row: instance/group norm as rows); else only (1, D)
    #: and (1, 1).
    ROW_NORM_GROUPED: bool

    def moments(self, x3: Any, skipnan: bool, minmax: bool, want_moments: bool = True) -> Moments:
        """Per-(p, k) statistics of x3 over axis 1.  ``skipnan`` ignores NaN
        (per-group counts); otherwise NaN/Inf propagate into their group
        only.  ``want_moments=False`` (with ``minmax``) may skip the moments
        (count, min and max are then exact, mean and M2 zeros)."""
        ...

    def apply(self, x3: Any, out3: Any, center, scale, shift, lo=None, hi=None) -> None:
        """out3[p, r, k] = clip((x3[p, r, k] - center[p, k]) * scale[p, k] +
        shift[p, k], lo, hi) (float64-exact parameters; lo/hi None: no
        clipping; NaN is kept).  ``out3`` may be ``x3``."""
        ...

    def row_norm(self, x2: Any, out2: Any, weight, bias, eps: float, rms: bool, p: float | None = None):
        """Fused norm of each row: out2[r] = (x2[r] - mean[r]) * rstd[r] *
        weight + bias, returning (mean, rstd), each (R,) float64 arrays of
        the backend (device arrays on CUDA: ``to_host`` when needed).  The
        statistic: layer norm (rms False, p None), RMS norm (rms True: mean
        0, rstd 1/rms) or ``1/max(||x2[r]||_p, eps)`` (p given: mean 0, NaN
        left out of the norm).  weight/bias: (RW, S) arrays of x's dtype
        (see ROW_NORM_GROUPED); bias None: none (what RMS norm and the
        p-norms pass)."""
        ...

    def pnorm(self, x3: Any, p: float) -> np.ndarray:
        """(P, K) float64: (sum_r |x3[p, r, k]|**p) ** (1/p); p = inf gives
        max |x|; NaN is left out of the norm."""
        ...

    def ascontiguous(self, x: Any) -> Any:
        """A C-contiguous array of the backend's kind (may copy)."""
        ...

    def empty(self, shape, dtype, like: Any = None) -> Any:
        """A new uninitialized array of the backend's kind."""
        ...

    def to_host(self, a: Any) -> np.ndarray: ...

    def from_host(self, a: Any, like: Any = None) -> Any: ...

    def wrap(self, a: Any, like: Any) -> Any:
        """``a`` as the array type of the user's input ``like``."""
        ...

    def as_device(self, x: Any) -> Any:
        """The backend's own array for a user array (zero-copy)."""
        ...

    def copy_into(self, dst: Any, host: Any) -> None:
        """Write a host array into dst in place (running statistics)."""
        ...

    def device_of(self, x: Any) -> int | None:
        """The device ordinal of a user's array (None: the host, or not
        known): running statistics must live on x's device."""
        ...

    def permute(self, x: Any, perm: tuple) -> Any:
        """A view of ``x`` (the backend's array) with its axes in the order
        ``perm``: the same memory, shape and strides permuted (never a copy:
        numba's device ``transpose`` copies 2-D arrays and raises beyond)."""
        ...

    def copy(self, src: Any, dst: Any) -> None:
        """dst[...] = src for two arrays of the backend of one shape, any
        strides (on the call's stream)."""
        ...

    def context(self, stream: Any = None, like: Any = None):
        """Context manager: the stream and the memory of every launch, copy
        and allocation of this thread inside (CPU: a no-op).  ``stream``
        None: the stream the user's array ``like`` reports (CUDA Array
        Interface v3: CuPy's and PyTorch's current stream), else the
        enclosing call's; outputs and temporaries come from ``like``'s
        library (CuPy's pool, PyTorch's caching allocator)."""
        ...


def is_cuda_array(x: Any) -> bool:
    """True for anything the CUDA backend takes: ``__cuda_array_interface__``
    objects (CuPy, PyTorch CUDA tensors, numba device arrays) and the CUDA
    simulator's device arrays (which carry no such attribute)."""
    mod = type(x).__module__
    if mod.startswith("torch"):
        # a tensor that requires grad raises RuntimeError (not AttributeError)
        # from hasattr(x, "__cuda_array_interface__"): ask torch instead
        return bool(getattr(x, "is_cuda", False))
    if mod.startswith("numba") and "simulator" in mod:
        return True
    try:
        return hasattr(x, "__cuda_array_interface__")
    except Exception:  # a property that raises something else than AttributeError
        return False


def cpu_backend():
    """The NumPy backend (imported on first use)."""
    from . import cpu as _cpu

    return _cpu


def backend_for(x: Any):
    """Return the backend module that runs operations on ``x``."""
    if is_cuda_array(x):
        from . import cuda as _cuda  # imported lazily: numba.cuda is optional

        return _cuda
    from . import cpu as _cpu

    return _cpu
