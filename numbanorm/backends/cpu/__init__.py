"""The CPU backend: ``numbanorm.backends``' primitives for NumPy arrays.

Layout (one purpose per module; each op's chooser beside the kernels it picks):

==================  =========================================================
``_tasks``          parallel work: serial kernels compiled once (C callbacks)
                    and run over numba's threads by address; splits, threads
``_intrinsics``     streaming stores, prefetch, aligned spans, residency
``_elementwise``    the output loops, each safe in place (``alias_safe``)
``segments``        exact moments of one row segment (shifted sums, two-pass)
``chunks``          a task's share of a frame (row items, lane blocks) and
                    the lane tasks' shared steps (shifted sums of a block)
``minmax``          min/max over an axis (lanes, short rows, with the moments)
``axis_stats``      count/mean/M2 and min/max over an axis: the frame, the
                    moments tasks, ``moments``
``affine``          the output pass of per-group ops: ``apply``
``rows``            fused row norms (layer/RMS/instance/group, p-norms):
                    ``row_norm``
``pipelined``       the row kernel that sums row r+1 while writing row r
``pnorms``          p-norms over an axis: ``pnorm``
``channels``        per-channel batch_norm/standardize/minmax_scale of large
                    inputs, the channel-pipelined batch_norm
``small``           every op on small inputs as one serial kernel
``shortcuts``       the NumPy fast paths of the public functions
==================  =========================================================

Numerical scheme, shared by every kernel: statistics of a cache-resident chunk
are exact float64 moments (shifted sums accepted by their condition number,
else the corrected two-pass), combined with Chan's merge from
``numbanorm._stats``; outputs are formed from an exact ``x - mean_hi`` in x's
dtype.  float16 has no numba CPU arithmetic: it is widened to float32 on
entry (a copy) and narrowed on exit.
"""

from __future__ import annotations

import contextlib

import numpy as np

from ... import _outbuf
from .affine import apply
from .axis_stats import moments
from .pnorms import pnorm
from .rows import row_norm

__all__ = [
    "moments",
    "apply",
    "row_norm",
    "pnorm",
    "ascontiguous",
    "empty",
    "to_host",
    "from_host",
    "wrap",
    "as_device",
    "copy_into",
    "context",
]

NAME = "cpu"

# row_norm takes (RW, S) weights (instance/group norm as rows, see rows.py)
ROW_NORM_GROUPED = True


def ascontiguous(x):
    return np.ascontiguousarray(x)


def empty(shape, dtype, like=None):
    return _outbuf.empty(shape, dtype)


def to_host(a):
    return np.asarray(a)


def from_host(a, like=None):
    return np.asarray(a)


def wrap(a, like):
    return a


def as_device(x):
    return np.asarray(x)


def copy_into(dst, host):
    dst[...] = host


def device_of(x):
    return None


def permute(x, perm):
    return x.transpose(perm)


def copy(src, dst):
    np.copyto(dst, src)


def context(stream=None, like=None):
    return contextlib.nullcontext()
