"""The NumPy shortcuts of the public functions, one place for all.

Each public op first offers its arguments here; a shortcut takes only
plain, already-valid arguments (a native float32/64 C-contiguous ndarray,
parameters of its dtype or None, scalars of the right Python type) and
returns the result, or None: the general path (numbanorm.functional,
numbanorm.preprocessing) then validates everything, raises the errors and
runs the backend primitives through the planner.  What a shortcut runs:

- small inputs (at most MIN_TASK_ELEMS elements): one serial kernel for the
  whole call (``small``), without the thread pool or any conversion;
- batch_norm, standardize and minmax_scale of a large input whose general
  plan is rows (A*C, S) or channels last (1, A*C): the per-channel path
  (``channels``), the same bits as the general path without its planning;
- lp_normalize of small rows: the row kernel without the dispatch.

The general paths call ``small_bn_view`` / ``general_small_view`` too, so a
small call gives the same bits with or without ``out=``.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from ... import _outbuf
from ..._config import MIN_TASK_ELEMS
from ..._reduce import short_rows_as_columns
from ..._validate import overlaps, stats_dtype
from . import channels, rows, small
from ._intrinsics import in_place

EMPTY = np.empty(0)
# the per-channel fast paths of batch_norm, standardize and minmax_scale
# (tests turn them off to compare with the general path)
FUSED = True
FAST_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
FINFO_EPS = {dt: float(np.finfo(dt).eps) for dt in FAST_DTYPES}
# lp_normalize's unit weight and zero bias in each dtype (row_norm's (RW, S))
UNIT = {dt: np.ones((1, 1), dt) for dt in FAST_DTYPES}


def fast_chan(p, C: int, writable: bool = False):
    """p when the small-call paths take it as is: a (C,) C-contiguous
    float32/64 ndarray (writable when updated in place); the empty array for
    None; else False (the general path then validates and converts)."""
    if p is None:
        return EMPTY
    if type(p) is not np.ndarray or p.shape != (C,) or p.dtype not in FAST_DTYPES:
        return False
    f = p.flags  # (one flags object: each p.flags makes one)
    if not f.c_contiguous or (writable and not f.writeable):
        return False
    return p


def fast_out_same(x: np.ndarray, out):
    """(y, same): the output of a fast path and whether it is x itself (in
    place), with at most one memory-bounds test (0.2 us).

    y is a new array like x for None, else ``out`` when it is a writable
    C-contiguous ndarray of x's shape and dtype that is x itself or does not
    overlap it (x itself runs in place: every kernel a fast path calls reads
    all a group's values before writing any, as the general path, which runs
    the same kernels on a validated out=, relies on); None for anything else
    (the general path then validates it).  In place, the kernels take their
    in-place loops (``same``: one array read and written, _elementwise)."""
    if out is None:
        return _outbuf.empty_like(x), False
    if (
        type(out) is not np.ndarray
        or out.shape != x.shape
        or out.dtype != x.dtype
        or not out.flags.c_contiguous
        or not out.flags.writeable
    ):
        return None, False
    if out is x:
        return out, True
    if not np.may_share_memory(out, x):
        return out, False
    # x's memory: x itself through another array object, else an overlap
    return (None, False) if overlaps(out, x) else (out, True)


def chan_fusable(A: int, C: int, S: int) -> bool:
    """Does the general plan of x viewed (A, C, S), statistics per C, run
    the views of the per-channel path (channels.py)?  Rows (A*C, S): the
    general plan (_reduce._stats_plan) takes them unless it reduces the
    batch as columns (_reduce.short_rows_as_columns: short rows, fewer than
    the batch); channels last (S == 1) need a batch (A >= 2); and C >= 2
    (else the reduced axes merge into one)."""
    if C < 2:
        return False
    return not short_rows_as_columns(A, S) if S > 1 else A >= 2


def small_array(x: Any) -> bool:
    return (
        type(x) is np.ndarray
        and x.dtype in FAST_DTYPES
        and x.flags.c_contiguous
        and x.ndim > 0
        and 0 < x.size <= MIN_TASK_ELEMS
    )


def simple_axes(nd: int, axis: Any):
    """``axis`` as a sorted tuple when it is an int in range, None, or a
    non-empty tuple of distinct ints in range; else None (the general path
    then validates it)."""
    if type(axis) is int:
        return (axis % nd,) if -nd <= axis < nd else None
    if axis is None:
        return tuple(range(nd))
    if type(axis) is not tuple or not axis:
        return None
    for a in axis:
        if type(a) is not int:  # (not bool, nor NumPy's integers)
            return None
    return _int_axes(nd, axis)


@functools.lru_cache(maxsize=256)
def _int_axes(nd: int, axis: tuple) -> tuple | None:
    """simple_axes of a tuple of plain ints (a cached pure function: 1.8 ->
    0.4 us for (0, 2, 3), NOTES.md section 32d)."""
    if not all(-nd <= a < nd for a in axis):
        return None
    axes = tuple(sorted(a % nd for a in axis))
    return axes if len(set(axes)) == len(axes) else None


def chan_view(shape, axes):
    """(A, C, S) of ``shape`` reduced over ``axes`` when the kept axes are
    contiguous (else None)."""
    if type(shape) is tuple and type(axes) is tuple:
        return _chan_view(shape, axes)
    return _chan_view.__wrapped__(shape, axes)


@functools.lru_cache(maxsize=256)
def _chan_view(shape, axes):
    """chan_view, cached (a pure function of the two tuples' values: 0.9
    -> 0.18 us a call, NOTES.md section 32d)."""
    kept = [i for i in range(len(shape)) if i not in axes]
    if kept and kept[-1] - kept[0] + 1 != len(kept):
        return None
    k0, k1 = (kept[0], kept[-1] + 1) if kept else (0, 0)
    A = math.prod(shape[:k0])
    C = math.prod(shape[k0:k1])
    n = math.prod(shape)
    return A, C, n // (A * C)


def small_view(x: Any, axis: Any):
    """(A, C, S) when ``x`` is a small native float32/64 C-contiguous ndarray
    and ``axis`` (simple_axes) keeps contiguous axes: x as
    (reduced prefix, kept, reduced suffix), statistics per kept position.
    None otherwise: the general path then validates and raises the errors."""
    if not small_array(x):
        return None
    axes = simple_axes(x.ndim, axis)
    return None if axes is None else chan_view(x.shape, axes)


def large_view(x: Any, axis: Any):
    """((A, C, S), axes) when ``x`` is a large native float32/64 C-contiguous
    ndarray and ``axis`` an int or a tuple of ints (simple_axes) whose kept
    axes are contiguous and whose general plan the fused kernels repeat
    (functional._chan_fusable): e.g. axis=(0, 2, 3), per channel of NCHW
    images.  None otherwise (the general path)."""
    if not (
        FUSED
        and type(x) is np.ndarray
        and x.dtype in FAST_DTYPES
        and x.flags.c_contiguous
        and x.size > MIN_TASK_ELEMS
    ):
        return None
    axes = simple_axes(x.ndim, axis)
    v = None if axes is None else chan_view(x.shape, axes)
    if v is None or not chan_fusable(*v):  # (axis=None: C == 1, not fusable)
        return None
    return v, axes


def fused_views(x, v, out):
    """(x2, y, y2, C, rows, same) for the fused kernels: x and the output
    (None when ``out`` is not one the fast path takes) as (A*C, S) rows or
    (1, A*C) with channels last; ``same``: in place (fast_out_same)."""
    y, same = fast_out_same(x, out)
    if y is None:
        return None
    A, C, S = v
    shape = (A * C, S) if S > 1 else (1, A * C)
    return x.reshape(shape), y, y.reshape(shape), C, S > 1, same


def general_small_view(inp, axes, y):
    """chan_view for the general path of a small host call, when x and y
    are C-contiguous (the same kernel as the fast path: the same bits with or
    without out=)."""
    if not small_array(inp.arr) or type(y) is not np.ndarray or not y.flags.c_contiguous:
        return None
    return chan_view(inp.arr.shape, axes)


@functools.lru_cache(maxsize=64)
def const(D: int, value: float, dtype: Any) -> np.ndarray:
    """Read-only (1, D) row of ones/zeros: the identity weight/bias."""
    a = np.full((1, D), value, dtype=dtype)
    a.flags.writeable = False
    return a


def fast_param(p, D: int, dt, default: float):
    """p as a (1, D) row when it is exactly what the small-call path takes
    (None: the identity row of ``default``), else None."""
    if p is None:
        return const(D, default, dt)
    if type(p) is np.ndarray and p.dtype == dt and p.shape == (D,) and p.flags.c_contiguous:
        return p.reshape(1, D)
    return None


def batch_norm(
    x, running_mean, running_var, weight, bias, training, momentum, eps, channel_axis, out, return_stats
):
    """The fast paths of batch_norm, or None to take the general one (which
    then validates everything and raises the errors).

    Only a native float32/64 C-contiguous ndarray with channels on axis 1 or
    last, float momentum/eps in range, parameters that fast_chan takes, and
    ``out`` None or a C-contiguous writable ndarray like x:

    - at most MIN_TASK_ELEMS elements (and no stats): the whole call
      (statistics, running update, output) is one serial kernel, without
      the thread pool;
    - larger: the per-channel path (channels.batch_norm): in training for
      the views whose general plan it repeats (chan_fusable), same bits; in
      eval (no statistics) for every view: the output is elementwise with
      the same lowered parameters whatever the view, so the same bits.
    """
    if (
        not FUSED
        or type(x) is not np.ndarray
        or type(eps) is not float
        or type(momentum) is not float
        or type(training) is not bool
        or type(channel_axis) is not int
    ):
        return None
    shape = x.shape
    nd = len(shape)
    if (
        x.dtype not in FAST_DTYPES
        or nd < 2
        or not x.flags.c_contiguous
        or not 0.0 <= eps < math.inf
        or not 0.0 <= momentum <= 1.0
        or not -nd <= channel_axis < nd
    ):
        return None
    size = x.size
    if size == 0:
        return None
    is_small = size <= MIN_TASK_ELEMS
    if is_small and return_stats:
        return None  # the general path runs the same kernel (small_bn_view)
    ca = channel_axis % nd
    if ca == 1:
        A = shape[0]
    elif ca == nd - 1:
        A = math.prod(shape[:ca])
    else:
        return None
    C = shape[ca]
    S = size // (A * C)
    if training and A * S <= 1:
        return None
    rows = S > 1
    if not is_small and training and not chan_fusable(A, C, S):
        return None  # (eval: no statistics, any view gives the same bits)
    if (running_mean is None) != (running_var is None) or (running_mean is None and not training):
        return None
    rm = fast_chan(running_mean, C, training)
    rv = fast_chan(running_var, C, training)
    w = fast_chan(weight, C)
    b = fast_chan(bias, C)
    if rm is False or rv is False or w is False or b is False:
        return None
    if training and running_mean is not None and np.shares_memory(running_mean, running_var):
        return None  # the general path's update order is the reference
    y, same = fast_out_same(x, out)
    if y is None:
        return None
    update = training and running_mean is not None
    if is_small:
        v = (A, C, S)
        mean, rstd = np.empty(C), np.empty(C)  # (the kernel writes them; no stats asked)
        small.batch_norm_small[same](
            x.reshape(v), y.reshape(v), rm, rv, w, b, training, update, momentum, eps, mean, rstd
        )
        return y
    v = (A * C, S) if rows else (1, A * C)
    stats = channels.batch_norm(
        x.reshape(v), y.reshape(v), C, rows, rm, rv, w, b, training, update, momentum, eps, same
    )
    if return_stats:
        sd = stats_dtype(x.dtype)
        return y, stats[0].astype(sd), stats[1].astype(sd)
    return y


def small_bn_view(inp, y, ca):
    """(A, C, S) when the general path may run batch_norm through the small
    kernel (so that a small call gives the same bits with or without out=):
    a host float32/64 x of at most MIN_TASK_ELEMS elements, x and y
    C-contiguous, channels on axis 1 or last.  Else None."""
    x = inp.arr
    nd = x.ndim
    if (
        type(x) is not np.ndarray
        or type(y) is not np.ndarray
        or x.dtype not in FAST_DTYPES
        or x.size > MIN_TASK_ELEMS
        or not (x.flags.c_contiguous and y.flags.c_contiguous)
        or (ca != 1 and ca != nd - 1)
    ):
        return None
    A = math.prod(x.shape[:ca])
    C = x.shape[ca]
    return A, C, x.size // (A * C)


def groups_small(x: np.ndarray, G: int, weight, bias, eps, out=None):
    """The fast path of instance_norm (G = C) and group_norm: the (N*G,
    C/G*spatial) rows of a channels-first x through the row kernel the
    general path takes (rows.row_norm; small inputs: its serial kernel
    directly), without the general path's validation: the same bits.  None
    when anything needs converting (out= included: fast_out_same): the general
    path then validates and raises the errors."""
    dt = x.dtype
    if (
        dt not in FAST_DTYPES
        or not x.flags.c_contiguous
        or x.size == 0
        or type(eps) is not float
        or not 0.0 <= eps < math.inf
    ):
        return None
    N, C = x.shape[0], x.shape[1]
    W = fast_param(weight, C, dt, 1.0)
    B = fast_param(bias, C, dt, 0.0)
    if W is None or B is None:
        return None
    y, same = fast_out_same(x, out)
    if y is None:
        return None
    W = W.reshape(G, C // G)  # group g's weights, one per channel = row segment
    B = B.reshape(G, C // G)
    R = N * G
    D = x.size // R
    if x.size <= MIN_TASK_ELEMS:
        small.row_norm_serial(x.reshape(R, D), y.reshape(R, D), W, B, eps, 0.0, False, EMPTY, EMPTY, same)
    else:
        rows.norm_rows(x.reshape(R, D), y.reshape(R, D), W, B, eps, False, None, same)
    return y


def rows_small(x, normalized_shape, weight, bias, eps, rms, out=None):
    """The fast path of layer_norm/rms_norm, or None to take the general one
    (which then validates everything and raises the errors).

    Only a native float32/64 C-contiguous ndarray, an int (or 1-tuple of
    int) normalized_shape equal to its last dimension, weight/bias None or
    (D,) arrays of x's dtype, and a finite float eps >= 0: then no argument
    needs converting.  At most MIN_TASK_ELEMS elements the whole call is
    one serial kernel; larger, the general path's row_norm call with the
    parameters it passes (one weight per row when there are none: the
    pipelined kernel for large rows), so the same bits.
    """
    if type(x) is not np.ndarray or type(eps) is not float:
        return None
    ns = normalized_shape
    if type(ns) is tuple and len(ns) == 1:
        ns = ns[0]  # (D,): the form torch code writes
    dt = x.dtype
    if (
        type(ns) is not int
        or x.ndim == 0
        or dt not in FAST_DTYPES
        or not x.flags.c_contiguous
        or x.size == 0
        or x.shape[-1] != ns
        or not 0.0 <= eps < math.inf
    ):
        return None
    D = ns
    small_call = x.size <= MIN_TASK_ELEMS
    if weight is None and bias is None and not small_call:
        w, b = const(1, 1.0, dt), const(1, 0.0, dt)  # (functional._row_op's choice)
    else:
        w = fast_param(weight, D, dt, 1.0)
        b = fast_param(bias, D, dt, 0.0)
    y, same = fast_out_same(x, out) if w is not None and b is not None else (None, False)
    if y is None:
        return None
    # (a matrix is its own (R, D) view: two reshapes are 0.25 us of a 7 us call)
    x2, y2 = (x, y) if x.ndim == 2 else (x.reshape(-1, D), y.reshape(-1, D))
    if small_call:
        small.row_norm_serial(x2, y2, w, b, eps, 1.0 if rms else 0.0, False, EMPTY, EMPTY, same)
    else:
        rows.norm_rows(x2, y2, w, None if rms else b, eps, rms, None, same)
    return y


# --------------------------------------------------------------------------
# the shortcut of each op: the result, or None (the general path)
# --------------------------------------------------------------------------


def instance_norm(
    x, running_mean, running_var, weight, bias, use_input_stats, momentum, eps, channel_axis, out=None
):
    """instance_norm of a small channels-first x without running stats."""
    if (
        running_mean is None
        and running_var is None
        and use_input_stats is True
        and type(channel_axis) is int
        and channel_axis == 1
        and type(momentum) is float
        and 0.0 <= momentum <= 1.0
        and type(x) is np.ndarray
        and x.ndim >= 3
        and x.size > 2 * x.shape[0] * x.shape[1]  # spatial > 1 (else the general error)
    ):
        return groups_small(x, x.shape[1], weight, bias, eps, out)
    return None


def group_norm(x, num_groups, weight, bias, eps, channel_axis, out=None):
    """group_norm of a small channels-first x."""
    if (
        type(channel_axis) is int
        and channel_axis == 1
        and type(num_groups) is int
        and type(x) is np.ndarray
        and x.ndim >= 2
        and num_groups > 0
        and x.shape[1] % num_groups == 0
    ):
        return groups_small(x, num_groups, weight, bias, eps, out)
    return None


def layer_norm(x, normalized_shape, weight, bias, eps, out=None):
    """layer_norm of a small x."""
    return rows_small(x, normalized_shape, weight, bias, eps, False, out)


def rms_norm(x, normalized_shape, weight, eps, out=None):
    """rms_norm of a small x (eps None: the dtype's machine epsilon)."""
    e = FINFO_EPS.get(getattr(x, "dtype", None)) if eps is None else eps
    return rows_small(x, normalized_shape, weight, None, e, True, out)


def per_channel(x, axis, out):
    """(axes, x2, y, y2, C, rows) when a large x reduced over ``axis`` takes
    the per-channel path (large_view, fused_views), else None."""
    lv = large_view(x, axis)
    f = fused_views(x, lv[0], out) if lv is not None else None
    return None if f is None else (lv[1], *f)


def standardize(x, axis, ddof, with_mean, with_std, out, return_stats):
    """standardize of a small x, or of a large one per channel."""
    if type(ddof) is not int or ddof < 0 or type(with_mean) is not bool or type(with_std) is not bool:
        return None
    if not return_stats:
        v = small_view(x, axis)
        y, same = (None, False) if v is None else fast_out_same(x, out)
        if y is not None:
            C = v[1]
            center, sd = np.empty(C), np.empty(C)
            small.standardize_small[same](
                x.reshape(v), y.reshape(v), float(ddof), with_mean, with_std, center, sd
            )
            return y
    f = per_channel(x, axis, out)
    if f is None:
        return None
    axes, x2, y, y2, C, rows_, same = f
    if not return_stats:
        channels.standardize(x2, y2, C, rows_, ddof, with_mean, with_std, None, None, same)
        return y
    mean, std = np.empty(C), np.empty(C)
    channels.standardize(x2, y2, C, rows_, ddof, with_mean, with_std, mean, std, same)
    kshape = [1 if i in axes else n for i, n in enumerate(x.shape)]
    return y, mean.reshape(kshape), std.reshape(kshape)


def standardize_general_small(inp, axes, y, ddof, with_mean, with_std):
    """(mean, std) (C,) of the small kernel run for the general path, or None."""
    v = general_small_view(inp, axes, y)
    if v is None:
        return None
    mean, std = np.empty(v[1]), np.empty(v[1])
    small.standardize_small[in_place(inp.arr, y)](
        inp.arr.reshape(v), y.reshape(v), float(ddof), bool(with_mean), bool(with_std), mean, std
    )
    return mean, std


def minmax_scale(x, lo, hi, axis, clip, out):
    """minmax_scale of a small x, or of a large one per channel."""
    if type(clip) is not bool:
        return None
    v = small_view(x, axis)
    y, same = (None, False) if v is None else fast_out_same(x, out)
    if y is not None:
        small.minmax_small[same](x.reshape(v), y.reshape(v), lo, hi, clip)
        return y
    f = per_channel(x, axis, out)
    if f is None:
        return None
    _, x2, y, y2, C, rows_, same = f
    channels.minmax_scale(x2, y2, C, rows_, lo, hi, clip, same)
    return y


def minmax_general_small(inp, axes, y, lo, hi, clip) -> bool:
    """The small kernel for the general path, when it applies."""
    v = general_small_view(inp, axes, y)
    if v is None:
        return False
    small.minmax_small[in_place(inp.arr, y)](inp.arr.reshape(v), y.reshape(v), lo, hi, bool(clip))
    return True


def lp_normalize(x, p, axis, eps, out=None):
    """lp_normalize of rows along the last axis of a plain C-contiguous x,
    any size: the general path's row kernel call, without its validation
    and dispatch (the same bits)."""
    if not (
        type(p) in (float, int)
        and p > 0
        and type(eps) is float
        and 0.0 <= eps < math.inf
        and type(axis) is int
        and type(x) is np.ndarray
        and x.dtype in FAST_DTYPES
        and x.flags.c_contiguous
        and x.ndim > 0
        and x.size > 0
        and axis in (-1, x.ndim - 1)
    ):
        return None
    y, same = fast_out_same(x, out)
    if y is None:
        return None
    D = x.shape[-1]
    rows.norm_rows(x.reshape(-1, D), y.reshape(-1, D), UNIT[x.dtype], None, eps, False, float(p), same)
    return y


def batch_norm_general_small(inp, y, ca, rm, rv, w, b, training, update, momentum, eps):
    """(mean, rstd) of batch_norm through the small kernel for the general
    path (validated arguments; rm/rv float64 host copies, updated in place),
    or None when it does not apply (see small_bn_view)."""
    v = small_bn_view(inp, y, ca)
    if v is None:
        return None
    C = v[1]
    mean, rstd = np.empty(C), np.empty(C)
    args = (rm, rv, w, b, training, update, momentum, eps, mean, rstd)
    small.batch_norm_small[in_place(inp.arr, y)](inp.arr.reshape(v), y.reshape(v), *args)
    return mean, rstd
