"""Deep-learning normalizations with ``torch.nn.functional`` semantics.

Each function validates its arguments, reduces the operation to the backend
primitives of :mod:`numbanorm.backends` on views of ``x`` (see
:mod:`numbanorm._reduce`), and finalizes the small statistics arrays on the
host.  Statistics are exact: float64 two-pass moments of cache-resident chunks
merged with Chan et al.'s formula.

References
----------
S. Ioffe, C. Szegedy, "Batch Normalization", ICML 2015.
J. L. Ba, J. R. Kiros, G. E. Hinton, "Layer Normalization", arXiv:1607.06450.
D. Ulyanov, A. Vedaldi, V. Lempitsky, "Instance Normalization", arXiv:1607.08022.
Y. Wu, K. He, "Group Normalization", ECCV 2018.
B. Zhang, R. Sennrich, "Root Mean Square Layer Normalization", NeurIPS 2019.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from . import _outbuf
from . import _validate as V
from ._config import MIN_TASK_ELEMS
from ._reduce import _SHORT_ROW, _is_c_contiguous, apply_affine, reduce_moments
from .backends.cpu import channels as _channels
from .backends.cpu import small as _small

__all__ = ["batch_norm", "instance_norm", "layer_norm", "group_norm", "rms_norm"]


def _finish(inp: V.Input, y, user_out, stats=()):
    """Return y as the user's array type, with stats if asked."""
    be = inp.backend
    res = user_out if user_out is not None else be.wrap(y, like=inp.orig)
    if stats is None:
        return res
    return (res, *[be.wrap(be.from_host(s, like=inp.arr), like=inp.orig) for s in stats])


def _rstd(var: np.ndarray, eps: float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 / np.sqrt(var + eps)


def _update_running(orig, host, new, momentum) -> None:
    """running = (1 - momentum) * running + momentum * new, in place."""
    val = (1.0 - momentum) * host + momentum * new
    if V.backends.is_cuda_array(orig):
        be = V.backends.backend_for(orig)
        be.copy_into(be.as_device(orig), val.astype(be.as_device(orig).dtype))
    else:
        orig[...] = val


def _channel_stats(inp, axes):
    m = reduce_moments(inp.arr, axes, skipnan=False, minmax=False, backend=inp.backend)
    var = m.m2 / m.count
    return m.count, m.mean, var, m.m2


_EMPTY = np.empty(0)
# the fast paths of batch_norm (tests turn them off to compare with the general path)
_FUSED = True


def _fast_chan(p, C: int, writable: bool = False):
    """p when the small-call paths take it as is: a (C,) C-contiguous
    float32/64 ndarray (writable when updated in place); the empty array for
    None; else False (the general path then validates and converts)."""
    if p is None:
        return _EMPTY
    if (
        type(p) is np.ndarray
        and p.dtype in _FAST_DTYPES
        and p.shape == (C,)
        and p.flags.c_contiguous
        and (p.flags.writeable or not writable)
    ):
        return p
    return False


def _fast_out(x: np.ndarray, out):
    """The output of a fast path: a new array like x for None, else ``out``
    when it is a writable C-contiguous ndarray of x's shape and dtype that is
    x itself or does not overlap it; None for anything else (the general path
    then validates it)."""
    if out is None:
        return _outbuf.empty_like(x)
    if (
        type(out) is not np.ndarray
        or out.shape != x.shape
        or out.dtype != x.dtype
        or not out.flags.c_contiguous
        or not out.flags.writeable
        or V.overlaps(out, x)
    ):
        return None
    return out


def _chan_fusable(A: int, C: int, S: int) -> bool:
    """Does the general plan of x viewed (A, C, S), statistics per C, run
    the views of the fused large kernels (backends/cpu.py: _chan_stats_large)?
    Rows (A*C, S) need S >= _reduce._SHORT_ROW (shorter rows take another
    plan there); channels last (S == 1) a batch (A >= 2); and C >= 2 (else
    the reduced axes merge into one)."""
    if C < 2:
        return False
    return S >= _SHORT_ROW if S > 1 else A >= 2


def _fast_bn(
    x, running_mean, running_var, weight, bias, training, momentum, eps, channel_axis, out, return_stats
):
    """The fast paths of batch_norm, or None to take the general one (which
    then validates everything and raises the errors).

    Only a native float32/64 C-contiguous ndarray with channels on axis 1 or
    last, float momentum/eps in range, parameters that _fast_chan takes, and
    ``out`` None or a C-contiguous writable ndarray like x:

    - at most MIN_TASK_ELEMS elements (and no out=/stats): the whole call
      (statistics, running update, output) is one serial kernel, without
      the thread pool;
    - larger: one compiled call runs both passes (cpu.bn_large), for the
      views whose general plan it repeats (_chan_fusable), same bits.
    """
    if (
        type(x) is not np.ndarray
        or type(eps) is not float
        or type(momentum) is not float
        or type(training) is not bool
        or type(channel_axis) is not int
    ):
        return None
    nd = x.ndim
    if (
        x.dtype not in _FAST_DTYPES
        or nd < 2
        or not x.flags.c_contiguous
        or x.size == 0
        or not 0.0 <= eps < math.inf
        or not 0.0 <= momentum <= 1.0
        or not -nd <= channel_axis < nd
    ):
        return None
    small = x.size <= MIN_TASK_ELEMS
    if small and (out is not None or return_stats):
        return None  # the general path runs the same kernel (_small_bn_view)
    ca = channel_axis % nd
    if ca != 1 and ca != nd - 1:
        return None
    C = x.shape[ca]
    A = math.prod(x.shape[:ca])
    S = x.size // (A * C)
    if training and A * S <= 1:
        return None
    rows = S > 1
    if not small and not _chan_fusable(A, C, S):
        return None
    if (running_mean is None) != (running_var is None) or (running_mean is None and not training):
        return None
    rm = _fast_chan(running_mean, C, training)
    rv = _fast_chan(running_var, C, training)
    w = _fast_chan(weight, C)
    b = _fast_chan(bias, C)
    if rm is False or rv is False or w is False or b is False:
        return None
    if training and running_mean is not None and np.shares_memory(running_mean, running_var):
        return None  # the general path's update order is the reference
    y = _fast_out(x, out)
    if y is None:
        return None
    update = training and running_mean is not None
    mean, rstd = np.empty(C), np.empty(C)
    if small:
        v = (A, C, S)
        _small.batch_norm_small(
            x.reshape(v), y.reshape(v), rm, rv, w, b, training, update, momentum, eps, mean, rstd
        )
        return y
    v = (A * C, S) if rows else (1, A * C)
    _channels.batch_norm(
        x.reshape(v), y.reshape(v), C, rows, rm, rv, w, b, training, update, momentum, eps, mean, rstd
    )
    if return_stats:
        sd = V.stats_dtype(x.dtype)
        return y, mean.astype(sd), rstd.astype(sd)
    return y


def _small_bn_view(inp, y, ca):
    """(A, C, S) when the general path may run batch_norm through the small
    kernel (so that a small call gives the same bits with or without out=):
    a host float32/64 x of at most MIN_TASK_ELEMS elements, x and y
    C-contiguous, channels on axis 1 or last.  Else None."""
    x = inp.arr
    nd = x.ndim
    if (
        type(x) is not np.ndarray
        or type(y) is not np.ndarray
        or x.dtype not in _FAST_DTYPES
        or x.size > MIN_TASK_ELEMS
        or not (x.flags.c_contiguous and y.flags.c_contiguous)
        or (ca != 1 and ca != nd - 1)
    ):
        return None
    A = math.prod(x.shape[:ca])
    C = x.shape[ca]
    return A, C, x.size // (A * C)


def batch_norm(
    x: Any,
    running_mean: Any = None,
    running_var: Any = None,
    weight: Any = None,
    bias: Any = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
    *,
    channel_axis: int = 1,
    out: Any = None,
    return_stats: bool = False,
    stream: Any = None,
    _host_running: bool = False,
):
    """Batch normalization (``torch.nn.functional.batch_norm`` semantics).

    Parameters
    ----------
    x : array, shape (N, C, *) (or channels anywhere: ``channel_axis``)
    running_mean, running_var : array (C,), optional
        Required when ``training`` is False.  With ``training=True`` they are
        updated in place: ``new = (1 - momentum) * old + momentum * stat`` with
        the unbiased batch variance for ``running_var``.
    weight, bias : array (C,), optional
    training : bool
        Normalize with the batch's statistics (biased variance) instead of the
        running ones.
    momentum, eps : float
    channel_axis : int
        Axis of the channels; ``-1`` for channels-last (NHWC).  No transposing
        copy is made for any layout.
    out : array, optional
        Result array of x's shape and dtype (may be x: in place).
    return_stats : bool
        Also return ``mean`` and ``rstd`` (shape (C,)) actually used.
    stream : optional
        CUDA stream for device inputs.

    Returns
    -------
    y, or (y, mean, rstd)

    Examples
    --------
    >>> import numpy as np, numbanorm as nbn
    >>> x = np.random.default_rng(0).standard_normal((8, 3, 4, 4)).astype(np.float32)
    >>> y = nbn.batch_norm(x, training=True)
    >>> bool(abs(y.mean()) < 1e-6)
    True
    """
    if stream is None and not _host_running and _FUSED:
        y = _fast_bn(
            x,
            running_mean,
            running_var,
            weight,
            bias,
            training,
            momentum,
            eps,
            channel_axis,
            out,
            return_stats,
        )
        if y is not None:
            return y
    inp = V.Input(x)
    if inp.ndim < 2:
        raise ValueError(f"x must have at least 2 dimensions (N, C, ...), got shape {inp.shape}")
    ca = V.channel_axis(channel_axis, inp.ndim)
    C = inp.shape[ca]
    eps = V.check_eps(eps)
    mom = V.check_momentum(momentum)
    w = V.param(weight, (C,), "weight")
    b = V.param(bias, (C,), "bias")
    rm_o, rm = V.running(running_mean, C, "running_mean", inp, bool(training), _host_running)
    rv_o, rv = V.running(running_var, C, "running_var", inp, bool(training), _host_running)
    if (rm is None) != (rv is None):
        raise ValueError("running_mean and running_var must be given together")
    axes = tuple(a for a in range(inp.ndim) if a != ca)
    n = inp.arr.size // C if C else 0
    if not training and rm is None:
        raise ValueError("running_mean and running_var are required when training=False")
    inp.require_nonempty()
    if training and n <= 1:
        raise ValueError(
            f"Expected more than 1 value per channel when training, got input of shape {inp.shape}"
        )
    y, user_out = V.out_array(out, inp)
    v = _small_bn_view(inp, y, ca)
    if v is not None:
        # the small-call kernel, on host float64 copies of the parameters
        mean, rstd = np.empty(C), np.empty(C)
        update = training and rm is not None
        wk = _EMPTY if w is None else np.ascontiguousarray(w)
        bk = _EMPTY if b is None else np.ascontiguousarray(b)
        _small.batch_norm_small(
            inp.arr.reshape(v), y.reshape(v),
            _EMPTY if rm is None else rm, _EMPTY if rv is None else rv,
            wk, bk, bool(training), update, mom, eps, mean, rstd,
        )  # fmt: skip
        if update:  # rm, rv: float64 host copies, updated by the kernel
            rm_o[...] = rm
            rv_o[...] = rv
        sd = V.stats_dtype(inp.dtype)
        return _finish(inp, y, user_out, (mean.astype(sd), rstd.astype(sd)) if return_stats else None)
    with inp.backend.context(stream):
        if training:
            cnt, mean, var, m2 = _channel_stats(inp, axes)
            rstd = _rstd(var, eps)
            if rm is not None:
                _update_running(rm_o, rm, mean, mom)
                _update_running(rv_o, rv, m2 / (cnt - 1.0), mom)
        else:
            mean = rm
            rstd = _rstd(rv, eps)
        scale = rstd * (w if w is not None else 1.0)
        shift = b if b is not None else np.zeros(C)
        apply_affine(inp.arr, axes, mean, scale, shift, out=y, backend=inp.backend)
    sd = V.stats_dtype(inp.dtype)
    return _finish(inp, y, user_out, (mean.astype(sd), rstd.astype(sd)) if return_stats else None)


def instance_norm(
    x: Any,
    running_mean: Any = None,
    running_var: Any = None,
    weight: Any = None,
    bias: Any = None,
    use_input_stats: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
    *,
    channel_axis: int = 1,
    out: Any = None,
    return_stats: bool = False,
    stream: Any = None,
    _host_running: bool = False,
):
    """Instance normalization (``torch.nn.functional.instance_norm`` semantics).

    Each (sample, channel) is normalized over the spatial axes (every axis but
    0 and ``channel_axis``).  With ``use_input_stats`` and running stats given,
    they are updated in place with the batch mean of the per-instance mean and
    unbiased variance.  ``return_stats`` gives ``mean``, ``rstd`` of shape (N, C).

    Examples
    --------
    >>> import numpy as np, numbanorm as nbn
    >>> x = np.random.default_rng(0).standard_normal((2, 3, 16))
    >>> y, mean, rstd = nbn.instance_norm(x, return_stats=True)
    >>> mean.shape
    (2, 3)
    """
    if (
        out is None
        and not return_stats
        and stream is None
        and running_mean is None
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
        y = _small_groups(x, x.shape[1], weight, bias, eps)
        if y is not None:
            return y
    inp = V.Input(x)
    if inp.ndim < 3:
        raise ValueError(f"x must have at least 3 dimensions (N, C, *spatial), got shape {inp.shape}")
    ca = V.channel_axis(channel_axis, inp.ndim)
    if ca == 0:
        raise ValueError("channel_axis must not be 0: axis 0 is the batch axis of instance_norm")
    N, C = inp.shape[0], inp.shape[ca]
    eps = V.check_eps(eps)
    mom = V.check_momentum(momentum)
    w = V.param(weight, (C,), "weight")
    b = V.param(bias, (C,), "bias")
    rm_o, rm = V.running(running_mean, C, "running_mean", inp, bool(use_input_stats), _host_running)
    rv_o, rv = V.running(running_var, C, "running_var", inp, bool(use_input_stats), _host_running)
    if (rm is None) != (rv is None):
        raise ValueError("running_mean and running_var must be given together")
    if not use_input_stats and rm is None:
        raise ValueError("running_mean and running_var are required when use_input_stats=False")
    inp.require_nonempty()
    axes = tuple(a for a in range(1, inp.ndim) if a != ca)
    spatial = int(np.prod([inp.shape[a] for a in axes]))
    if use_input_stats and spatial <= 1:
        raise ValueError(
            f"Expected more than 1 spatial element when training, got input of shape {inp.shape}"
        )
    y, user_out = V.out_array(out, inp)
    if use_input_stats and rm is None and _fusable(inp, ca, y):
        # (N*C, spatial) rows, one weight per row: one read of x (row in cache)
        W = (w if w is not None else np.ones(C)).reshape(C, 1)
        B = (b if b is not None else np.zeros(C)).reshape(C, 1)
        mean, rstd = _fused_rows(inp, y, N * C, W, B, eps, stream)
        sd = V.stats_dtype(inp.dtype)
        stats = (mean.reshape(N, C).astype(sd), rstd.reshape(N, C).astype(sd))
        return _finish(inp, y, user_out, stats if return_stats else None)
    with inp.backend.context(stream):
        if use_input_stats:
            cnt, mean, var, m2 = _channel_stats(inp, axes)  # (N, C)
            rstd = _rstd(var, eps)
            if rm is not None:
                _update_running(rm_o, rm, mean.mean(axis=0), mom)
                _update_running(rv_o, rv, (m2 / (cnt - 1.0)).mean(axis=0), mom)
        else:
            mean = np.broadcast_to(rm, (N, C))
            rstd = np.broadcast_to(_rstd(rv, eps), (N, C))
        scale = rstd * (w if w is not None else 1.0)
        shift = np.broadcast_to(b if b is not None else np.zeros(C), (N, C))
        apply_affine(inp.arr, axes, mean, scale, shift, out=y, backend=inp.backend)
    sd = V.stats_dtype(inp.dtype)
    return _finish(inp, y, user_out, (mean.astype(sd), rstd.astype(sd)) if return_stats else None)


def rows_fusable(inp: V.Input, y) -> bool:
    """C-contiguous x and y on a backend with the grouped fused row kernel."""
    return inp.backend.ROW_NORM_GROUPED and _is_c_contiguous(inp.arr) and _is_c_contiguous(y)


def _fusable(inp: V.Input, ca: int, y) -> bool:
    """Channels-first: each (sample, channel/group) is one contiguous row."""
    return ca == 1 and rows_fusable(inp, y)


def _fused_rows(inp: V.Input, y, R: int, W, B, eps: float, stream):
    D = math.prod(inp.shape) // R
    with inp.backend.context(stream):
        return inp.backend.row_norm(inp.arr.reshape(R, D), y.reshape(R, D), W, B, eps, False)


def _rows(inp: V.Input, normalized_shape: Any, name: str = "normalized_shape"):
    ns = V.shape_tuple(normalized_shape, name)
    k = len(ns)
    if k > inp.ndim or inp.shape[inp.ndim - k :] != ns:
        raise ValueError(f"{name}={ns} must equal the trailing shape of x; x has shape {inp.shape}")
    return ns, math.prod(inp.shape[: inp.ndim - k]), math.prod(ns)


@functools.lru_cache(maxsize=64)
def _const(D: int, value: float, dtype: Any) -> np.ndarray:
    """Read-only (1, D) row of ones/zeros: the identity weight/bias."""
    a = np.full((1, D), value, dtype=dtype)
    a.flags.writeable = False
    return a


_FAST_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_FINFO_EPS = {dt: float(np.finfo(dt).eps) for dt in _FAST_DTYPES}


def _small_groups(x: np.ndarray, G: int, weight, bias, eps):
    """The small-call fast path of instance_norm (G = C) and group_norm: the
    (N*G, C/G*spatial) rows of a channels-first x through the serial row
    kernel that the general path also takes for small inputs (the same bits
    with or without out=).  None when anything needs converting: the general
    path then validates and raises the errors."""
    dt = x.dtype
    if (
        dt not in _FAST_DTYPES
        or not x.flags.c_contiguous
        or not 0 < x.size <= MIN_TASK_ELEMS
        or type(eps) is not float
        or not 0.0 <= eps < math.inf
    ):
        return None
    N, C = x.shape[0], x.shape[1]
    W = _fast_param(weight, C, dt, 1.0)
    B = _fast_param(bias, C, dt, 0.0)
    if W is None or B is None:
        return None
    W = W.reshape(G, C // G)  # group g's weights, one per channel = row segment
    B = B.reshape(G, C // G)
    R = N * G
    D = x.size // R
    y = np.empty_like(x)
    _small.row_norm_small(x.reshape(R, D), y.reshape(R, D), W, B, eps, 0.0, False, _EMPTY, _EMPTY)
    return y


def _fast_param(p, D: int, dt, default: float):
    """p as a (1, D) row when it is exactly what the small-call path takes
    (None: the identity row of ``default``), else None."""
    if p is None:
        return _const(D, default, dt)
    if type(p) is np.ndarray and p.dtype == dt and p.shape == (D,) and p.flags.c_contiguous:
        return p.reshape(1, D)
    return None


def _small_row_op(x, normalized_shape, weight, bias, eps, rms):
    """The small-call fast path of layer_norm/rms_norm, or None to take the
    general one (which then validates everything and raises the errors).

    Only a native float32/64 C-contiguous ndarray of at most MIN_TASK_ELEMS
    elements, an int (or 1-tuple of int) normalized_shape equal to its last dimension, weight/bias
    None or (D,) arrays of x's dtype, and a finite float eps >= 0: then no
    argument needs converting and the whole call is one serial kernel.
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
        or dt not in _FAST_DTYPES
        or not x.flags.c_contiguous
        or not 0 < x.size <= MIN_TASK_ELEMS
        or x.shape[-1] != ns
        or not 0.0 <= eps < math.inf
    ):
        return None
    D = ns
    w = _fast_param(weight, D, dt, 1.0)
    b = _fast_param(bias, D, dt, 0.0)
    if w is None or b is None:
        return None
    y = np.empty_like(x)
    _small.row_norm_small(
        x.reshape(-1, D), y.reshape(-1, D), w, b, eps, 1.0 if rms else 0.0, False, _EMPTY, _EMPTY
    )
    return y


def _row_op(inp, normalized_shape, weight, bias, eps, out, rms, stream, want_stats):
    """Layer/RMS norm through the fused row primitive (the small-call hot path:
    keep it free of avoidable allocations)."""
    ns, R, D = _rows(inp, normalized_shape)
    # the row kernel computes the output in x's dtype: take parameters in it
    pdt = inp.dtype if inp.dtype != np.float16 else np.float32
    w = V.param(weight, ns, "weight", pdt)
    b = V.param(bias, ns, "bias", pdt)
    inp.require_nonempty()
    be = inp.backend
    y, user_out = V.out_array(out, inp)
    xc = be.ascontiguous(inp.arr)
    direct = _is_c_contiguous(y)
    target = y if direct else be.empty(inp.shape, inp.dtype, like=xc)
    if w is None and b is None and be.ROW_NORM_GROUPED:
        # no affine: one weight for the whole row, so large rows take the
        # pipelined kernel (the arithmetic, * 1 + 0, is the same either way)
        wf, bf = _const(1, 1.0, pdt), _const(1, 0.0, pdt)
    else:
        wf = _const(D, 1.0, pdt) if w is None else np.ascontiguousarray(w).reshape(1, D)
        bf = _const(D, 0.0, pdt) if b is None else np.ascontiguousarray(b).reshape(1, D)
    with be.context(stream):
        mean, rstd = be.row_norm(xc.reshape(R, D), target.reshape(R, D), wf, bf, eps, rms)
    if not direct:
        y[...] = target
    if not want_stats:
        return y, user_out, None, None
    sshape = inp.shape[: inp.ndim - len(ns)] + (1,) * len(ns)
    sd = V.stats_dtype(inp.dtype)
    mean = np.asarray(mean, np.float64).reshape(sshape).astype(sd)
    rstd = np.asarray(rstd, np.float64).reshape(sshape).astype(sd)
    return y, user_out, mean, rstd


def layer_norm(
    x: Any,
    normalized_shape: Any,
    weight: Any = None,
    bias: Any = None,
    eps: float = 1e-5,
    *,
    out: Any = None,
    return_stats: bool = False,
    stream: Any = None,
):
    """Layer normalization over the trailing ``normalized_shape`` axes.

    ``torch.nn.functional.layer_norm`` semantics; ``weight``/``bias`` have
    shape ``normalized_shape``.  ``return_stats`` gives ``mean``, ``rstd`` of
    shape ``x.shape[:-k] + (1,) * k``.  Statistics and output are fused per row:
    x is read from memory once.

    Examples
    --------
    >>> import numpy as np, numbanorm as nbn
    >>> x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32) + 1e4
    >>> y = nbn.layer_norm(x, 64)
    >>> bool(np.allclose(y.std(axis=-1), 1, atol=1e-3))
    True
    """
    if out is None and not return_stats and stream is None:
        y = _small_row_op(x, normalized_shape, weight, bias, eps, False)
        if y is not None:
            return y
    inp = V.Input(x)
    eps = V.check_eps(eps)
    y, user_out, mean, rstd = _row_op(
        inp, normalized_shape, weight, bias, eps, out, False, stream, return_stats
    )
    return _finish(inp, y, user_out, (mean, rstd) if return_stats else None)


def rms_norm(
    x: Any,
    normalized_shape: Any,
    weight: Any = None,
    eps: float | None = None,
    *,
    out: Any = None,
    return_stats: bool = False,
    stream: Any = None,
):
    """RMS normalization over the trailing ``normalized_shape`` axes.

    ``y = x / sqrt(mean(x**2) + eps) * weight`` (``torch.nn.functional.rms_norm``);
    ``eps=None`` uses ``np.finfo(x.dtype).eps``.  ``return_stats`` gives ``rstd``.

    Examples
    --------
    >>> import numpy as np, numbanorm as nbn
    >>> y = nbn.rms_norm(np.ones((2, 8), np.float32), 8)
    >>> bool(np.allclose(y, 1, atol=1e-6))
    True
    """
    if out is None and not return_stats and stream is None:
        e = _FINFO_EPS.get(getattr(x, "dtype", None)) if eps is None else eps
        y = _small_row_op(x, normalized_shape, weight, None, e, True)
        if y is not None:
            return y
    inp = V.Input(x)
    eps = float(np.finfo(inp.dtype).eps) if eps is None else V.check_eps(eps)
    y, user_out, _, rstd = _row_op(inp, normalized_shape, weight, None, eps, out, True, stream, return_stats)
    return _finish(inp, y, user_out, (rstd,) if return_stats else None)


def group_norm(
    x: Any,
    num_groups: int,
    weight: Any = None,
    bias: Any = None,
    eps: float = 1e-5,
    *,
    channel_axis: int = 1,
    out: Any = None,
    return_stats: bool = False,
    stream: Any = None,
):
    """Group normalization (``torch.nn.functional.group_norm`` semantics).

    The C channels are split into ``num_groups`` consecutive groups; each
    (sample, group) is normalized over its channels and the spatial axes.
    ``weight``/``bias`` are per channel (C,).  ``return_stats`` gives ``mean``,
    ``rstd`` of shape (N, G).  Channels-last (``channel_axis=-1``) reduces in
    place, without a transposing copy.

    Examples
    --------
    >>> import numpy as np, numbanorm as nbn
    >>> x = np.random.default_rng(0).standard_normal((2, 6, 5))
    >>> y, mean, rstd = nbn.group_norm(x, 3, return_stats=True)
    >>> mean.shape
    (2, 3)
    """
    if (
        out is None
        and not return_stats
        and stream is None
        and type(channel_axis) is int
        and channel_axis == 1
        and type(num_groups) is int
        and type(x) is np.ndarray
        and x.ndim >= 2
        and num_groups > 0
        and x.shape[1] % num_groups == 0
    ):
        y = _small_groups(x, num_groups, weight, bias, eps)
        if y is not None:
            return y
    inp = V.Input(x)
    if inp.ndim < 2:
        raise ValueError(f"x must have at least 2 dimensions (N, C, ...), got shape {inp.shape}")
    ca = V.channel_axis(channel_axis, inp.ndim)
    if ca == 0:
        raise ValueError("channel_axis must not be 0: axis 0 is the batch axis of group_norm")
    if isinstance(num_groups, bool) or not isinstance(num_groups, (int, np.integer)):
        raise TypeError(f"num_groups must be an int, got {num_groups!r}")
    N, C = inp.shape[0], inp.shape[ca]
    G = int(num_groups)
    if G <= 0 or C % G:
        raise ValueError(f"num_groups={num_groups} must be positive and divide the number of channels C={C}")
    eps = V.check_eps(eps)
    w = V.param(weight, (C,), "weight")
    b = V.param(bias, (C,), "bias")
    inp.require_nonempty()
    y, user_out = V.out_array(out, inp)
    be = inp.backend
    if _fusable(inp, ca, y):
        # (N*G, C/G*spatial) rows, weights per channel = per row segment
        W = (w if w is not None else np.ones(C)).reshape(G, C // G)
        B = (b if b is not None else np.zeros(C)).reshape(G, C // G)
        mean, rstd = _fused_rows(inp, y, N * G, W, B, eps, stream)
        sd = V.stats_dtype(inp.dtype)
        stats = (mean.reshape(N, G).astype(sd), rstd.reshape(N, G).astype(sd))
        return _finish(inp, y, user_out, stats if return_stats else None)
    # split the channel axis into (G, C/G): a view for any layout with the
    # channel axis contiguous in memory order (NCHW and NHWC alike)
    xc = inp.arr
    gshape = inp.shape[:ca] + (G, C // G) + inp.shape[ca + 1 :]
    try:
        xg = xc.reshape(gshape)
    except Exception:
        xg = be.ascontiguous(xc).reshape(gshape)
    gaxes = tuple(a for a in range(1, len(gshape)) if a != ca)
    with be.context(stream):
        m = reduce_moments(xg, gaxes, skipnan=False, minmax=False, backend=be)  # (N, G)
        mean = m.mean
        rstd = _rstd(m.m2 / m.count, eps)
        cmean = np.repeat(mean, C // G, axis=1)
        scale = np.repeat(rstd, C // G, axis=1) * (w if w is not None else 1.0)
        shift = np.broadcast_to(b if b is not None else np.zeros(C), (N, C))
        axes = tuple(a for a in range(1, inp.ndim) if a != ca)
        apply_affine(inp.arr, axes, cmean, scale, shift, out=y, backend=be)
    sd = V.stats_dtype(inp.dtype)
    return _finish(inp, y, user_out, (mean.astype(sd), rstd.astype(sd)) if return_stats else None)
