"""Backends: where the x-sized work runs.

The public functions (``numbanorm.functional``, ``numbanorm.preprocessing``,
scalers, layers) validate their arguments and reduce every operation to a few
*primitives* on C-contiguous 2-D/3-D views of ``x``.  A backend implements
those primitives for one kind of array; everything else (parameter checks,
finalizing statistics, running-stat updates) works on small host arrays and is
shared by all backends.

The primitive contract (``P, R, K`` are ints, ``x3`` has shape ``(P, R, K)``,
``x2`` shape ``(R, D)``; all statistics and parameters are host ``float64``
numpy arrays)::

    moments(x3, skipnan, minmax) -> (count, mean, m2, min, max)
        per-(p, k) statistics over axis 1, each (P, K) float64; min/max are
        None when ``minmax`` is False.  ``skipnan`` ignores NaN (per-group
        counts); otherwise NaN/Inf propagate into their group only.
        count == 0 groups give mean 0, m2 0 (callers turn them into NaN).
    apply(x3, out3, center, scale, shift, lo, hi) -> None
        out3[p, r, k] = clip((x3[p, r, k] - center[p, k]) * scale[p, k]
                             + shift[p, k], lo, hi)   (float64 arithmetic;
        lo/hi None = no clipping; NaN is kept).  ``out3`` may be ``x3``.
    row_norm(x2, out2, weight, bias, eps, rms) -> (mean, rstd)
        layer norm (rms=False) or RMS norm (rms=True, mean is zeros) of each
        row, fused: out2[r, d] = (x2[r, d] - mean[r]) * rstd[r] * weight[d] + bias[d]
        weight/bias are float64 (D,) arrays (ones/zeros when absent).
    pnorm(x3, p) -> (P, K) float64: (sum_r |x3[p, r, k]|**p) ** (1/p);
        p == inf gives max |x|; NaN is left out of the norm.
    ascontiguous(x) -> a C-contiguous array of the backend's kind (may copy)
    empty(shape, dtype, like) -> new uninitialized array of the backend's kind
    to_host(a) -> numpy array ; from_host(a, like) -> backend array
    wrap(a, like) -> ``a`` as the array type of the user's input ``like``
    as_device(x) -> the backend's own array for a user array (zero-copy)
    copy_into(dst, host) -> None: write a host array into dst in place
        (running statistics)
    context(stream) -> context manager: the stream every launch of this
        thread uses (CPU: a no-op)

``backend_for(x)`` picks the backend from the type of ``x``.
"""

from __future__ import annotations

from typing import Any


def is_cuda_array(x: Any) -> bool:
    """True for anything the CUDA backend takes: ``__cuda_array_interface__``
    objects (CuPy, PyTorch CUDA tensors, numba device arrays) and the CUDA
    simulator's device arrays (which carry no such attribute)."""
    if hasattr(x, "__cuda_array_interface__"):
        return True
    mod = type(x).__module__
    if mod.startswith("numba") and "simulator" in mod:
        return True
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
