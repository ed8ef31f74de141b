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

import math
from typing import Any

import numpy as np

from . import _validate as V
from ._reduce import _is_c_contiguous, apply_affine, reduce_moments
from ._stats import batch_norm_params, inv_std, running_update
from .backends.cpu import shortcuts

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
        return inv_std.py_func(var, eps)


def _write_running(orig, val) -> None:
    """Write the updated running statistic into the user's array, in place."""
    if V.backends.is_cuda_array(orig):
        be = V.backends.backend_for(orig)
        be.copy_into(be.as_device(orig), np.asarray(val).astype(be.as_device(orig).dtype))
    else:
        orig[...] = val


def _update_running(orig, host, new, momentum) -> None:
    """running = (1 - momentum) * running + momentum * new, in place."""
    _write_running(orig, running_update.py_func(host, new, momentum))


def _channel_stats(inp, axes):
    m = reduce_moments(inp.arr, axes, skipnan=False, minmax=False, backend=inp.backend)
    var = m.m2 / m.count
    return m.count, m.mean, var, m.m2


_EMPTY = np.empty(0)


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
    if stream is None and not _host_running:
        y = shortcuts.batch_norm(
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
    update = bool(training) and rm is not None
    wk = _EMPTY if w is None else np.ascontiguousarray(w)
    bk = _EMPTY if b is None else np.ascontiguousarray(b)
    rmk = _EMPTY if rm is None else rm
    rvk = _EMPTY if rv is None else rv
    stats = shortcuts.batch_norm_general_small(inp, y, ca, rmk, rvk, wk, bk, bool(training), update, mom, eps)
    if stats is not None:
        mean, rstd = stats
    else:
        with inp.backend.context(stream):
            if training:
                m = reduce_moments(inp.arr, axes, skipnan=False, minmax=False, backend=inp.backend)
                cnt, mu, m2 = m.count, m.mean, m.m2
            else:
                cnt = mu = m2 = _EMPTY
            prm = np.empty((4, C))  # mean, rstd, scale, shift
            batch_norm_params(cnt, mu, m2, rmk, rvk, wk, bk, bool(training), update, mom, eps, *prm)
            mean, rstd, scale, shift = prm
            apply_affine(inp.arr, axes, mean, scale, shift, out=y, backend=inp.backend)
    if update:  # rm, rv: float64 host copies, updated by the kernel
        _write_running(rm_o, rm)
        _write_running(rv_o, rv)
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
    if out is None and not return_stats and stream is None:
        args = (running_mean, running_var, weight, bias, use_input_stats, momentum, eps, channel_axis)
        y = shortcuts.instance_norm(x, *args)
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
        wf, bf = shortcuts.const(1, 1.0, pdt), shortcuts.const(1, 0.0, pdt)
    else:
        wf = shortcuts.const(D, 1.0, pdt) if w is None else np.ascontiguousarray(w).reshape(1, D)
        bf = shortcuts.const(D, 0.0, pdt) if b is None else np.ascontiguousarray(b).reshape(1, D)
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
        y = shortcuts.layer_norm(x, normalized_shape, weight, bias, eps)
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
        y = shortcuts.rms_norm(x, normalized_shape, weight, eps)
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
    if out is None and not return_stats and stream is None:
        y = shortcuts.group_norm(x, num_groups, weight, bias, eps, channel_axis)
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
