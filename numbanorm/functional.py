"""Deep-learning normalizations with ``torch.nn.functional`` semantics.

:func:`batch_norm`, :func:`instance_norm`, :func:`layer_norm`,
:func:`group_norm` and :func:`rms_norm` take NumPy arrays (CPU kernels) and
CUDA arrays (anything with ``__cuda_array_interface__``: GPU kernels) and
return the input's array type.  The arguments keep PyTorch's order; the
NumPy extras (``channel_axis``, ``out``, ``return_stats``, ``stream``) are
keyword-only.

How a call runs: a NumPy call first offers its plain arguments to
:mod:`numbanorm.backends.cpu.shortcuts` (small inputs in one serial kernel,
large channels-first or channels-last batch norm per channel), which returns
the result or declines.  Otherwise the general path here validates every
argument (:mod:`numbanorm._validate`), reduces the operation to the backend
primitives of :mod:`numbanorm.backends` on views of ``x`` (the planner in
:mod:`numbanorm._reduce`: no transposing copy for any layout) or to the fused
row primitive (layer and RMS norm; channels-first instance and group norm),
and finalizes the small per-channel parameters on the host
(:mod:`numbanorm._stats`).  A shortcut gives the same bits as the general
path.

Statistics are float64 whatever the input dtype: the moments of each
cache-resident block (one pass of shifted sums, accepted only where their
condition number is bounded, else the exact two-pass) merged with Chan, Golub
& LeVeque's pairwise formula; no variance is computed as
``E[x**2] - E[x]**2``.

References
----------
S. Ioffe, C. Szegedy, "Batch Normalization: Accelerating Deep Network Training
by Reducing Internal Covariate Shift", ICML 2015.
J. L. Ba, J. R. Kiros, G. E. Hinton, "Layer Normalization", arXiv:1607.06450, 2016.
D. Ulyanov, A. Vedaldi, V. Lempitsky, "Instance Normalization: The Missing
Ingredient for Fast Stylization", arXiv:1607.08022, 2016.
Y. Wu, K. He, "Group Normalization", ECCV 2018.
B. Zhang, R. Sennrich, "Root Mean Square Layer Normalization", NeurIPS 2019.
B. P. Welford, "Note on a method for calculating corrected sums of squares and
products", Technometrics 4(3), 1962.
T. F. Chan, G. H. Golub, R. J. LeVeque, "Algorithms for computing the sample
variance: analysis and recommendations", The American Statistician 37(3), 1983.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _validate as V
from ._reduce import (
    FIN_NORM,
    Finish,
    _is_c_contiguous,
    _rounded,
    apply_affine,
    apply_gathered,
    normalize_on_device,
    reduce_moments,
)
from ._stats import batch_norm_params, inv_std_array, running_update
from .backends.cpu import shortcuts

if TYPE_CHECKING:  # annotations only: numpy.typing is not imported at run time
    from collections.abc import Sequence

    from numpy.typing import ArrayLike

__all__ = ["batch_norm", "instance_norm", "layer_norm", "group_norm", "rms_norm"]


def _finish(inp: V.Input, y, user_out, stats=()):
    """Return y as the user's array type, with stats if asked."""
    be = inp.backend
    res = user_out if user_out is not None else be.wrap(y, like=inp.orig)
    if stats is None:
        return res
    return (res, *[be.wrap(be.from_host(s, like=inp.orig), like=inp.orig) for s in stats])


def _rstd(var: np.ndarray, eps: float) -> np.ndarray:
    return inv_std_array(var, eps)


def _write_running(orig, val) -> None:
    """Write the updated running statistic into the user's array, in place."""
    if V.backends.is_cuda_array(orig):
        be = V.backends.backend_for(orig)
        d = be.as_device(orig)
        be.copy_into(d, np.asarray(val).astype(d.dtype))
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


@V.on_call_stream
def batch_norm(
    x: ArrayLike | Any,
    running_mean: ArrayLike | Any | None = None,
    running_var: ArrayLike | Any | None = None,
    weight: ArrayLike | Any | None = None,
    bias: ArrayLike | Any | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
    *,
    channel_axis: int = 1,
    out: np.ndarray | Any | None = None,
    return_stats: bool = False,
    stream: Any = None,
    # private: lets the layers' host running statistics serve CUDA inputs
    _host_running: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray] | Any:
    """Batch normalization: normalize each channel over all the other axes.

    ``torch.nn.functional.batch_norm`` semantics [1]_: per channel,
    ``y = (x - mean) / sqrt(var + eps) * weight + bias``, the statistics taken
    over every axis but ``channel_axis`` (batch and spatial axes).

    - ``training=True``: the batch's mean and *biased* variance (divided by
      the count n) are used.  Running statistics, when given, are updated in
      place: ``running = (1 - momentum) * running + momentum * batch_stat``,
      with the *unbiased* batch variance (divided by n - 1) for
      ``running_var``.
    - ``training=False``: the running statistics are used (and left
      unchanged); they are then required.

    NaN and Inf are not skipped: they make their channel's output NaN (and,
    when training, its running statistics non-finite), as in PyTorch; the
    other channels are unaffected.  The statistics are float64 (Welford [2]_ / Chan, Golub &
    LeVeque [3]_ moments) whatever the input dtype; float16 input is computed
    in float32 at least.  ``x`` is never modified unless it is ``out``.

    Parameters
    ----------
    x : array_like or CUDA array
        Shape (N, C, *), at least 2 dimensions, the channels on
        ``channel_axis``; float16/32/64, integer or bool.  A NumPy array (any
        strides, read-only allowed), anything ``np.asarray`` takes, or a CUDA
        array (anything with ``__cuda_array_interface__``: CuPy arrays,
        PyTorch CUDA tensors, numba device arrays), which runs on the GPU.
    running_mean, running_var : array_like or CUDA array of shape (C,), optional
        Running statistics of a float dtype, both or neither; required when
        ``training`` is False.  With ``training=True`` they are updated in
        place (the update is computed in float64 and stored in their dtype),
        so they must then be writable NumPy arrays for a NumPy ``x`` and CUDA
        arrays for a CUDA ``x``.
    weight, bias : array_like or CUDA array of shape (C,), optional
        Per-channel scale and shift, of a real dtype, on the host or the
        device; None means 1 and 0.
    training : bool, default False
        Normalize with the batch's statistics (and update the running
        statistics) instead of the running statistics.
    momentum : float, default 0.1
        Weight of the batch statistic in the running update, in [0, 1].
        Unused when nothing is updated, but checked.  (PyTorch's
        ``momentum=None``, a cumulative average, is the
        :class:`~numbanorm.BatchNorm` layer's.)
    eps : float, default 1e-5
        Added to the variance before the square root; finite and >= 0 (with
        0, a zero variance gives an infinite ``rstd``: a constant group
        becomes NaN).
    channel_axis : int, default 1
        Axis of the channels, any axis (negative values count from the end):
        ``-1`` for channels-last input (NLC, NHWC, NDHWC), which is read in
        place, without a transposing copy.
    out : ndarray or CUDA array, optional
        Array the result is written into and returned: ``x``'s shape and the
        result dtype, the same kind of array as ``x`` (a NumPy one writable,
        any strides).  It may be ``x`` itself (in place), but must not
        otherwise overlap ``x``.
    return_stats : bool, default False
        Also return the per-channel ``mean`` and ``rstd`` that were used (what
        a backward pass needs).
    stream : CUDA stream, optional
        For a CUDA ``x``: the stream every launch, copy and allocation of
        the call goes to (a numba, CuPy or PyTorch stream, or a raw
        ``cudaStream_t`` handle).  None: the stream ``x`` reports (CuPy's or
        PyTorch's current stream, a numba array's own stream, else the
        default stream).  The call waits on the device, never on the host,
        for work pending on the streams its arrays report.  Ignored for
        NumPy input.

    Returns
    -------
    y : ndarray or CUDA array
        The normalized ``x`` (``out`` when given), of ``x``'s shape and array
        type; ``x``'s dtype for float16/32/64 input, float64 for integer or
        bool input.
    mean, rstd : ndarray or CUDA array of shape (C,)
        Only with ``return_stats=True``: the mean and ``1 / sqrt(var + eps)``
        used (the batch's when training, else the running ones), float32 for
        float16/32 input and float64 for float64 input, of ``x``'s array type.

    Raises
    ------
    ValueError
        ``x`` has fewer than 2 dimensions or no element; ``channel_axis`` is
        out of range; ``weight``, ``bias``, ``running_mean`` or
        ``running_var`` is not of shape (C,); only one running statistic is
        given, or none with ``training=False``; training with one value per
        channel (as PyTorch); ``eps`` is negative, infinite or NaN;
        ``momentum`` is outside [0, 1]; a running statistic to update is
        read-only or does not live where ``x`` lives; ``out`` has the wrong
        shape or dtype, is read-only, or overlaps ``x`` without being ``x``.
    TypeError
        ``x`` is not an array, is a dask array, or has an unsupported dtype
        (complex, object, string, ...); ``channel_axis`` is not an int;
        ``eps`` or ``momentum`` is not a real number; ``weight`` or ``bias``
        is not of a real dtype; a running statistic is not of a float dtype,
        or is not a NumPy array when it is updated for a NumPy ``x``; ``out``
        is not the same kind of array as ``x``; ``stream`` is not a stream
        (CUDA input).
    RuntimeError
        ``x`` is a CUDA array but no usable CUDA GPU (nor numba's CUDA
        simulator) is found.

    See Also
    --------
    numbanorm.BatchNorm : The layer, with its own running statistics.

    References
    ----------
    .. [1] S. Ioffe, C. Szegedy, "Batch Normalization: Accelerating Deep
       Network Training by Reducing Internal Covariate Shift", ICML 2015.
    .. [2] B. P. Welford, "Note on a method for calculating corrected sums of
       squares and products", Technometrics 4(3), 1962.
    .. [3] T. F. Chan, G. H. Golub, R. J. LeVeque, "Algorithms for computing
       the sample variance: analysis and recommendations", The American
       Statistician 37(3), 1983.

    Examples
    --------
    >>> import numpy as np, numbanorm as nbn
    >>> x = np.array([[1.0, 2.0], [3.0, 6.0]])
    >>> rm, rv = np.zeros(2), np.ones(2)
    >>> nbn.batch_norm(x, rm, rv, training=True, eps=0.0)
    array([[-1., -1.],
           [ 1.,  1.]])

    The running statistics were updated in place (unbiased variance):

    >>> rm, rv
    (array([0.2, 0.4]), array([1.1, 1.7]))

    Evaluation mode normalizes with them:

    >>> nbn.batch_norm(x, rm, rv).round(4)
    array([[0.7628, 1.2271],
           [2.6697, 4.295 ]])

    Channels-last images (N, H, W, C), with the statistics used:

    >>> x = np.random.default_rng(0).standard_normal((8, 4, 4, 3)).astype(np.float32)
    >>> y, mean, rstd = nbn.batch_norm(x, training=True, channel_axis=-1, return_stats=True)
    >>> y.dtype, mean.shape, rstd.dtype
    (dtype('float32'), (3,), dtype('float32'))
    >>> nbn.batch_norm(x, training=True, channel_axis=-1, out=x) is x  # in place
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
    if not training and _on_device(inp, running_mean, running_var):
        rs = (running_mean, running_var)
        return _batch_norm_eval_device(inp, *rs, weight, bias, eps, ca, out, return_stats)
    if training and _train_on_device(inp, running_mean, running_var):
        rs = (running_mean, running_var)
        return _norm_train_device(inp, *rs, weight, bias, mom, eps, ca, out, return_stats, stream)
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


def _on_device(inp: V.Input, running_mean, running_var) -> bool:
    """CUDA x with its running statistics on the device."""
    cuda_array = V.backends.is_cuda_array
    return inp.backend.NAME == "cuda" and cuda_array(running_mean) and cuda_array(running_var)


def _train_on_device(inp: V.Input, running_mean, running_var) -> bool:
    """CUDA x with its running statistics on the device, or none."""
    none = running_mean is None and running_var is None
    return inp.backend.NAME == "cuda" and (none or _on_device(inp, running_mean, running_var))


def _weights_where_they_are(inp: V.Input, weight, bias, C: int):
    """weight, bias: device arrays of a CUDA x kept on the device, the
    others as host float64."""

    def dev(a):
        return inp.backend.NAME == "cuda" and V.backends.is_cuda_array(a)

    w = V.device_array(weight, (C,), "weight", inp) if dev(weight) else V.param(weight, (C,), "weight")
    b = V.device_array(bias, (C,), "bias", inp) if dev(bias) else V.param(bias, (C,), "bias")
    return w, b


def _norm_train_device(
    inp, running_mean, running_var, weight, bias, mom, eps, ca, out, return_stats, stream, per_sample=False
):
    """Training batch_norm (instance_norm with ``per_sample``: groups of the
    kept (N, C)) of a CUDA x with running statistics on the device or none:
    statistics, parameters, running updates and output all on the device
    (``_reduce.normalize_on_device``, the host's arithmetic), so the call
    copies nothing to the host and does not synchronise unless the
    statistics are returned.  Channels-first instance norm without running
    statistics and with host weights keeps the one-read row kernel."""
    C = inp.shape[ca]
    w, b = _weights_where_they_are(inp, weight, bias, C)
    running = None
    if running_mean is not None:
        rm = V.device_array(running_mean, (C,), "running_mean", inp, "f")
        rv = V.device_array(running_var, (C,), "running_var", inp, "f")
        running = (rm, rv, mom)
    inp.require_nonempty()
    kept = (0, ca) if per_sample else (ca,)
    axes = tuple(a for a in range(inp.ndim) if a not in kept)
    if math.prod(inp.shape[a] for a in axes) <= 1:
        what = "spatial element" if per_sample else "value per channel"
        raise ValueError(f"Expected more than 1 {what} when training, got input of shape {inp.shape}")
    y, user_out = V.out_array(out, inp)
    if per_sample and running is None and _fusable(inp, ca, y):
        return _instance_rows(inp, y, user_out, w, b, eps, stream, return_stats)
    if per_sample:
        res = _norm_tiles(inp, y, user_out, ca, w, b, C, eps, running, stream, return_stats)
        if res is not None:
            return res
    with inp.backend.context(stream):
        fin = Finish(FIN_NORM, eps, weight=w, bias=b, channels=C, running=running)
        kw = dict(out=y, skipnan=False, minmax=False, backend=inp.backend)
        stats = normalize_on_device(inp.arr, axes, fin, **kw)
    if not return_stats:
        return _finish(inp, y, user_out, None)
    m = stats()
    sd = V.stats_dtype(inp.dtype)
    return _finish(inp, y, user_out, (m.mean.astype(sd), _rstd(m.m2 / m.count, eps).astype(sd)))


def _row_weights(be, a, fill: float, C: int, shape):
    """Per-channel weights (C,) as the row kernel's (RW, S) ``shape``: host
    (``fill`` where None) or device (kept there; row_norm casts them)."""
    if a is None:
        return np.full(shape, fill)
    if V.backends.is_cuda_array(a):
        return be.reshape(be.ascontiguous(a), shape)
    return a.reshape(shape)


def _instance_rows(inp, y, user_out, w, b, eps, stream, return_stats):
    """Channels-first instance norm as (N*C, spatial) rows, one weight per
    row: one read of x (the row in cache or registers)."""
    N, C = inp.shape[0], inp.shape[1]
    W = _row_weights(inp.backend, w, 1.0, C, (C, 1))
    B = _row_weights(inp.backend, b, 0.0, C, (C, 1))
    mean, rstd = _fused_rows(inp, y, N * C, W, B, eps, stream)
    if not return_stats:  # (CUDA: the statistics stay on the device)
        return _finish(inp, y, user_out, None)
    sd = V.stats_dtype(inp.dtype)
    mean, rstd = inp.backend.to_host(mean), inp.backend.to_host(rstd)
    return _finish(inp, y, user_out, (mean.reshape(N, C).astype(sd), rstd.reshape(N, C).astype(sd)))


def _norm_tiles(inp, y, user_out, ca, w, b, G, eps, running, stream, return_stats):
    """Channels-last instance norm (``G`` = C groups of one channel) or
    group norm of a CUDA x in one kernel that reads x once from HBM
    (``backends.cuda.tile_norm``: a block per (sample, tile of whole
    groups)), running statistics (instance norm) updated on the device: no
    copy to the host and no synchronisation unless the statistics are
    returned.  None, having done nothing, where that kernel does not apply
    (x or y not laid out channels-last, a tile of whole groups past L2):
    the caller takes normalize_on_device."""
    be = inp.backend
    N, C = inp.shape[0], inp.shape[ca]
    with be.context(stream):
        st = be.tile_norm(inp.arr, y, ca, w, b, G, eps)  # (4, N * G) on the device
        if st is None:
            return None
        if running is not None:
            rm, rv, mom = running
            ridx = np.arange(N * C, dtype=np.int64).reshape(N, C).T  # channel c: groups n * C + c
            be.running_update(st, ridx, rm, False, mom)
            be.running_update(st, ridx, rv, True, mom)
        if not return_stats:
            return _finish(inp, y, user_out, None)
        cnt, mu, r, q = (a.reshape(N, G) for a in be.to_host(st))
    m = _rounded(cnt, mu, r, q, None, None, False)
    sd = V.stats_dtype(inp.dtype)
    return _finish(inp, y, user_out, (m.mean.astype(sd), _rstd(m.m2 / m.count, eps).astype(sd)))


def _batch_norm_eval_device(
    inp, running_mean, running_var, weight, bias, eps, ca, out, return_stats, per_sample=False
):
    """Eval batch_norm (instance_norm with ``per_sample``: statistics of
    the kept (N, C)) of a CUDA x with running statistics on the device: the
    parameters are computed there (batch_norm_params' arithmetic) from the
    running statistics and weight/bias (device or host), so the call copies
    nothing to the host and does not synchronise unless the statistics are
    returned."""
    C = inp.shape[ca]
    w, b = _weights_where_they_are(inp, weight, bias, C)
    rm = V.device_array(running_mean, (C,), "running_mean", inp, "f")
    rv = V.device_array(running_var, (C,), "running_var", inp, "f")
    inp.require_nonempty()
    y, user_out = V.out_array(out, inp)
    be = inp.backend
    kept = (0, ca) if per_sample else (ca,)
    axes = tuple(a for a in range(inp.ndim) if a not in kept)

    def gather(be, xv, tv, index):
        # kept-shape index -> channel (instance norm: n * C + c)
        be.batch_norm_eval(xv, tv, index % C, rm, rv, w, b, eps)

    apply_gathered(inp.arr, axes, gather, out=y, backend=be)
    if not return_stats:
        return _finish(inp, y, user_out, None)
    sd = V.stats_dtype(inp.dtype)
    mean = np.asarray(be.to_host(rm), np.float64)
    rstd = _rstd(np.asarray(be.to_host(rv), np.float64), eps)
    if per_sample:
        mean, rstd = (np.broadcast_to(a, (inp.shape[0], C)) for a in (mean, rstd))
    return _finish(inp, y, user_out, (mean.astype(sd), rstd.astype(sd)))


@V.on_call_stream
def instance_norm(
    x: ArrayLike | Any,
    running_mean: ArrayLike | Any | None = None,
    running_var: ArrayLike | Any | None = None,
    weight: ArrayLike | Any | None = None,
    bias: ArrayLike | Any | None = None,
    use_input_stats: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
    *,
    channel_axis: int = 1,
    out: np.ndarray | Any | None = None,
    return_stats: bool = False,
    stream: Any = None,
    # private: lets the layers' host running statistics serve CUDA inputs
    _host_running: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray] | Any:
    """Instance normalization: normalize each (sample, channel) over the spatial axes.

    ``torch.nn.functional.instance_norm`` semantics [1]_: for each sample n
    (axis 0) and channel c (``channel_axis``),
    ``y = (x - mean[n, c]) / sqrt(var[n, c] + eps) * weight[c] + bias[c]``,
    the statistics taken over the spatial axes (every axis but 0 and
    ``channel_axis``).

    - ``use_input_stats=True``: each instance's own mean and *biased*
      variance are used.  Running statistics, when given, are updated in
      place with the batch mean of the per-instance statistics:
      ``running_mean = (1 - momentum) * running_mean + momentum * mean_n(mean[n, c])``
      and likewise ``running_var`` with the per-instance *unbiased* variances.
    - ``use_input_stats=False``: every sample is normalized with the running
      statistics (required then, and left unchanged).

    NaN and Inf are not skipped: they make their instance's output NaN (and
    the updated running statistics of their channel non-finite); other
    instances are unaffected.  The statistics are float64 (Welford [2]_ /
    Chan, Golub & LeVeque [3]_ moments) whatever the input dtype; float16
    input is computed in float32 at least.  ``x`` is never modified unless
    it is ``out``.

    Parameters
    ----------
    x : array_like or CUDA array
        Shape (N, C, *spatial), at least 3 dimensions, the channels on
        ``channel_axis``; float16/32/64, integer or bool.  A NumPy array (any
        strides, read-only allowed), anything ``np.asarray`` takes, or a CUDA
        array (anything with ``__cuda_array_interface__``), which runs on the
        GPU.
    running_mean, running_var : array_like or CUDA array of shape (C,), optional
        Running statistics of a float dtype, both or neither; required when
        ``use_input_stats`` is False.  With ``use_input_stats=True`` they are
        updated in place (computed in float64, stored in their dtype), so
        they must then be writable NumPy arrays for a NumPy ``x`` and CUDA
        arrays for a CUDA ``x``.
    weight, bias : array_like or CUDA array of shape (C,), optional
        Per-channel scale and shift, of a real dtype, on the host or the
        device; None means 1 and 0.
    use_input_stats : bool, default True
        Normalize with each instance's statistics (and update the running
        statistics) instead of the running statistics.
    momentum : float, default 0.1
        Weight of the batch's statistic in the running update, in [0, 1]
        (checked even when nothing is updated).
    eps : float, default 1e-5
        Added to the variance before the square root; finite and >= 0 (with
        0, a zero variance gives an infinite ``rstd``: a constant group
        becomes NaN).
    channel_axis : int, default 1
        Axis of the channels (negative values count from the end), any axis
        but 0 (the batch axis): ``-1`` for channels-last input (NLC, NHWC,
        NDHWC).
    out : ndarray or CUDA array, optional
        Array the result is written into and returned: ``x``'s shape and the
        result dtype, the same kind of array as ``x`` (a NumPy one writable,
        any strides).  It may be ``x`` itself (in place), but must not
        otherwise overlap ``x``.
    return_stats : bool, default False
        Also return the per-instance ``mean`` and ``rstd`` that were used.
    stream : CUDA stream, optional
        For a CUDA ``x``: the stream every launch, copy and allocation of
        the call goes to (a numba, CuPy or PyTorch stream, or a raw
        ``cudaStream_t`` handle).  None: the stream ``x`` reports (CuPy's or
        PyTorch's current stream, a numba array's own stream, else the
        default stream).  The call waits on the device, never on the host,
        for work pending on the streams its arrays report.  Ignored for
        NumPy input.

    Returns
    -------
    y : ndarray or CUDA array
        The normalized ``x`` (``out`` when given), of ``x``'s shape and array
        type; ``x``'s dtype for float16/32/64 input, float64 for integer or
        bool input.
    mean, rstd : ndarray or CUDA array of shape (N, C)
        Only with ``return_stats=True``: the mean and ``1 / sqrt(var + eps)``
        used for each instance (the running statistics repeated over N when
        ``use_input_stats`` is False), float32 for float16/32 input and
        float64 for float64 input, of ``x``'s array type.

    Raises
    ------
    ValueError
        ``x`` has fewer than 3 dimensions or no element; ``channel_axis`` is
        0 or out of range; ``weight``, ``bias``, ``running_mean`` or
        ``running_var`` is not of shape (C,); only one running statistic is
        given, or none with ``use_input_stats=False``; one spatial element
        per instance with ``use_input_stats=True``; ``eps`` is negative,
        infinite or NaN; ``momentum`` is outside [0, 1]; a running statistic
        to update is read-only or does not live where ``x`` lives; ``out``
        has the wrong shape or dtype, is read-only, or overlaps ``x`` without
        being ``x``.
    TypeError
        ``x`` is not an array, is a dask array, or has an unsupported dtype;
        ``channel_axis`` is not an int; ``eps`` or ``momentum`` is not a real
        number; ``weight`` or ``bias`` is not of a real dtype; a running
        statistic is not of a float dtype, or is not a NumPy array when it is
        updated for a NumPy ``x``; ``out`` is not the same kind of array as
        ``x``; ``stream`` is not a stream (CUDA input).
    RuntimeError
        ``x`` is a CUDA array but no usable CUDA GPU (nor numba's CUDA
        simulator) is found.

    See Also
    --------
    numbanorm.InstanceNorm : The layer.

    References
    ----------
    .. [1] D. Ulyanov, A. Vedaldi, V. Lempitsky, "Instance Normalization: The
       Missing Ingredient for Fast Stylization", arXiv:1607.08022, 2016.
    .. [2] B. P. Welford, "Note on a method for calculating corrected sums of
       squares and products", Technometrics 4(3), 1962.
    .. [3] T. F. Chan, G. H. Golub, R. J. LeVeque, "Algorithms for computing
       the sample variance: analysis and recommendations", The American
       Statistician 37(3), 1983.

    Examples
    --------
    >>> import numpy as np, numbanorm as nbn
    >>> x = np.random.default_rng(0).standard_normal((2, 3, 16))
    >>> y, mean, rstd = nbn.instance_norm(x, return_stats=True)
    >>> mean.shape, rstd.dtype
    ((2, 3), dtype('float64'))
    >>> bool(np.allclose(y.mean(axis=-1), 0) and np.allclose(y.std(axis=-1), 1, atol=1e-4))
    True

    With running statistics, updated in place from the two instances:

    >>> x = np.array([[[1.0, 3.0]], [[5.0, 9.0]]])  # (N=2, C=1, L=2)
    >>> rm, rv = np.zeros(1), np.ones(1)
    >>> y = nbn.instance_norm(x, rm, rv, momentum=0.5)
    >>> rm, rv  # 0.5 * old + 0.5 * mean of (2, 7) and of (2, 8)
    (array([2.25]), array([3.]))
    """
    if not return_stats and stream is None:
        args = (running_mean, running_var, weight, bias, use_input_stats, momentum, eps, channel_axis, out)
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
    if not use_input_stats and _on_device(inp, running_mean, running_var):
        rs = (running_mean, running_var)
        return _batch_norm_eval_device(inp, *rs, weight, bias, eps, ca, out, return_stats, per_sample=True)
    if use_input_stats and _train_on_device(inp, running_mean, running_var):
        rs = (running_mean, running_var)
        args = (weight, bias, mom, eps, ca, out, return_stats, stream)
        return _norm_train_device(inp, *rs, *args, per_sample=True)
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
        return _instance_rows(inp, y, user_out, w, b, eps, stream, return_stats)
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


def _row_param(inp: V.Input, p, ns, name: str, pdt):
    """A row op's weight or bias: a CUDA x's device parameter already in the
    kernel's parameter dtype stays on the device (checked for shape and
    device; row_norm casts it there: nothing comes to the host), anything
    else a host array of ``pdt``."""
    if p is not None and inp.backend.NAME == "cuda" and V.backends.is_cuda_array(p):
        if np.dtype(inp.backend.as_device(p).dtype) == pdt:
            return V.device_array(p, ns, name, inp)
    return V.param(p, ns, name, pdt)


def _flat_param(be, a, D: int):
    """A (1, D) view of a row op's parameter, host or device."""
    if V.backends.is_cuda_array(a):
        return be.reshape(be.ascontiguous(a), (1, D))
    return np.ascontiguousarray(a).reshape(1, D)


def _row_op(inp, normalized_shape, weight, bias, eps, out, rms, stream, want_stats):
    """Layer/RMS norm through the fused row primitive (the small-call hot path:
    keep it free of avoidable allocations)."""
    ns, R, D = _rows(inp, normalized_shape)
    # the row kernel computes the output in x's dtype: take parameters in it
    pdt = inp.dtype if inp.dtype != np.float16 else np.float32
    w = _row_param(inp, weight, ns, "weight", pdt)
    b = _row_param(inp, bias, ns, "bias", pdt)
    inp.require_nonempty()
    be = inp.backend
    y, user_out = V.out_array(out, inp)
    xc = be.ascontiguous(inp.arr)
    direct = _is_c_contiguous(y)
    target = y if direct else be.empty(inp.shape, inp.dtype, like=inp.orig)
    with be.context(stream):
        if w is None and b is None and be.ROW_NORM_GROUPED:
            # no affine: one weight for the whole row, so large rows take the
            # pipelined kernel (the arithmetic, * 1 + 0, is the same either way)
            wf, bf = shortcuts.const(1, 1.0, pdt), shortcuts.const(1, 0.0, pdt)
        else:
            wf = shortcuts.const(D, 1.0, pdt) if w is None else _flat_param(be, w, D)
            bf = shortcuts.const(D, 0.0, pdt) if b is None else _flat_param(be, b, D)
        if rms:
            bf = None  # RMS norm has no bias (row_norm: its kernels read none)
        mean, rstd = be.row_norm(xc.reshape(R, D), target.reshape(R, D), wf, bf, eps, rms)
    if not direct:
        be.copy(target, y)
    if not want_stats:
        return y, user_out, None, None
    sshape = inp.shape[: inp.ndim - len(ns)] + (1,) * len(ns)
    sd = V.stats_dtype(inp.dtype)
    # (the row kernel's statistics come to the host only when asked for)
    mean = np.asarray(be.to_host(mean), np.float64).reshape(sshape).astype(sd)
    rstd = np.asarray(be.to_host(rstd), np.float64).reshape(sshape).astype(sd)
    return y, user_out, mean, rstd


@V.on_call_stream
def layer_norm(
    x: ArrayLike | Any,
    normalized_shape: int | Sequence[int],
    weight: ArrayLike | Any | None = None,
    bias: ArrayLike | Any | None = None,
    eps: float = 1e-5,
    *,
    out: np.ndarray | Any | None = None,
    return_stats: bool = False,
    stream: Any = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray] | Any:
    """Layer normalization over the trailing ``normalized_shape`` axes.

    ``torch.nn.functional.layer_norm`` semantics [1]_: each sample (an index
    of the leading ``x.ndim - k`` axes, ``k = len(normalized_shape)``) is
    normalized over its trailing k axes,
    ``y = (x - mean) / sqrt(var + eps) * weight + bias``, with the *biased*
    variance.  There are no running statistics.

    NaN and Inf are not skipped: they make their sample's output NaN; other
    samples are unaffected.  The statistics are float64 whatever the input
    dtype; the output is computed in ``x``'s dtype (float32 for float16
    input), into which ``weight`` and ``bias`` are converted.  ``x`` is never
    modified unless it is ``out``.

    Parameters
    ----------
    x : array_like or CUDA array
        Shape ``(*, *normalized_shape)``; float16/32/64, integer or bool.  A
        NumPy array (any strides, read-only allowed), anything ``np.asarray``
        takes, or a CUDA array (anything with ``__cuda_array_interface__``),
        which runs on the GPU.
    normalized_shape : int or sequence of int
        The trailing shape normalized over: an int (the last axis) or a
        non-empty sequence of ints, equal to ``x.shape[-k:]``.
    weight, bias : array_like or CUDA array of shape ``normalized_shape``, optional
        Element-wise scale and shift, of a real dtype, on the host or the
        device; None means 1 and 0.
    eps : float, default 1e-5
        Added to the variance before the square root; finite and >= 0 (with
        0, a zero variance gives an infinite ``rstd``: a constant group
        becomes NaN).
    out : ndarray or CUDA array, optional
        Array the result is written into and returned: ``x``'s shape and the
        result dtype, the same kind of array as ``x`` (a NumPy one writable,
        any strides).  It may be ``x`` itself (in place), but must not
        otherwise overlap ``x``.
    return_stats : bool, default False
        Also return each sample's ``mean`` and ``rstd``.
    stream : CUDA stream, optional
        For a CUDA ``x``: the stream every launch, copy and allocation of
        the call goes to (a numba, CuPy or PyTorch stream, or a raw
        ``cudaStream_t`` handle).  None: the stream ``x`` reports (CuPy's or
        PyTorch's current stream, a numba array's own stream, else the
        default stream).  The call waits on the device, never on the host,
        for work pending on the streams its arrays report.  Ignored for
        NumPy input.

    Returns
    -------
    y : ndarray or CUDA array
        The normalized ``x`` (``out`` when given), of ``x``'s shape and array
        type; ``x``'s dtype for float16/32/64 input, float64 for integer or
        bool input.
    mean, rstd : ndarray or CUDA array of shape ``x.shape[:-k] + (1,) * k``
        Only with ``return_stats=True``: each sample's mean and
        ``1 / sqrt(var + eps)``, float32 for float16/32 input and float64 for
        float64 input, of ``x``'s array type.

    Raises
    ------
    ValueError
        ``normalized_shape`` is not the trailing shape of ``x``; ``x`` has no
        element; ``weight`` or ``bias`` is not of shape ``normalized_shape``;
        ``eps`` is negative, infinite or NaN; ``out`` has the wrong shape or
        dtype, is read-only, or overlaps ``x`` without being ``x``.
    TypeError
        ``x`` is not an array, is a dask array, or has an unsupported dtype;
        ``normalized_shape`` is not an int or a non-empty sequence of ints;
        ``eps`` is not a real number; ``weight`` or ``bias`` is not of a real
        dtype; ``out`` is not the same kind of array as ``x``; ``stream`` is
        not a stream (CUDA input).
    RuntimeError
        ``x`` is a CUDA array but no usable CUDA GPU (nor numba's CUDA
        simulator) is found.

    See Also
    --------
    numbanorm.LayerNorm : The layer.
    rms_norm : Scaling without centering.

    References
    ----------
    .. [1] J. L. Ba, J. R. Kiros, G. E. Hinton, "Layer Normalization",
       arXiv:1607.06450, 2016.

    Examples
    --------
    >>> import numpy as np, numbanorm as nbn
    >>> nbn.layer_norm(np.array([[1.0, 3.0], [2.0, 2.0]]), 2).round(4)
    array([[-1.,  1.],
           [ 0.,  0.]])

    A large mean next to the spread costs no accuracy in float32:

    >>> x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32) + 1e4
    >>> y = nbn.layer_norm(x, 64)
    >>> bool(np.allclose(y.std(axis=-1), 1, atol=1e-3))
    True

    Over the last two axes, with the statistics:

    >>> x = np.random.default_rng(1).standard_normal((2, 3, 4, 5))
    >>> y, mean, rstd = nbn.layer_norm(x, (4, 5), return_stats=True)
    >>> mean.shape
    (2, 3, 1, 1)
    """
    if not return_stats and stream is None:
        y = shortcuts.layer_norm(x, normalized_shape, weight, bias, eps, out)
        if y is not None:
            return y
    inp = V.Input(x)
    eps = V.check_eps(eps)
    y, user_out, mean, rstd = _row_op(
        inp, normalized_shape, weight, bias, eps, out, False, stream, return_stats
    )
    return _finish(inp, y, user_out, (mean, rstd) if return_stats else None)


@V.on_call_stream
def rms_norm(
    x: ArrayLike | Any,
    normalized_shape: int | Sequence[int],
    weight: ArrayLike | Any | None = None,
    eps: float | None = None,
    *,
    out: np.ndarray | Any | None = None,
    return_stats: bool = False,
    stream: Any = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray] | Any:
    """RMS normalization: scale by the reciprocal root mean square of the trailing axes.

    ``torch.nn.functional.rms_norm`` semantics [1]_: each sample (an index of
    the leading ``x.ndim - k`` axes, ``k = len(normalized_shape)``) becomes
    ``y = x / sqrt(mean(x**2) + eps) * weight``, the mean taken over its
    trailing k axes.  No centering, no bias, no running statistics.

    NaN and Inf are not skipped: they make their sample's output NaN; other
    samples are unaffected.  The mean square is float64 whatever the input
    dtype; the output is computed in ``x``'s dtype (float32 for float16
    input), into which ``weight`` is converted.  ``x`` is never modified
    unless it is ``out``.

    Parameters
    ----------
    x : array_like or CUDA array
        Shape ``(*, *normalized_shape)``; float16/32/64, integer or bool.  A
        NumPy array (any strides, read-only allowed), anything ``np.asarray``
        takes, or a CUDA array (anything with ``__cuda_array_interface__``),
        which runs on the GPU.
    normalized_shape : int or sequence of int
        The trailing shape normalized over: an int (the last axis) or a
        non-empty sequence of ints, equal to ``x.shape[-k:]``.
    weight : array_like or CUDA array of shape ``normalized_shape``, optional
        Element-wise scale, of a real dtype, on the host or the device; None
        means 1.
    eps : float or None, default None
        Added to the mean square before the square root; finite and >= 0
        (with 0, an all-zero sample becomes NaN).  None uses PyTorch 2.13's
        default, the machine epsilon of the type the op computes in:
        float32's (``np.finfo(np.float32).eps``, about 1.2e-7) for float16
        input, ``np.finfo(x.dtype).eps`` for float32/float64 input, and
        float64's for integer or bool input (converted to float64).
    out : ndarray or CUDA array, optional
        Array the result is written into and returned: ``x``'s shape and the
        result dtype, the same kind of array as ``x`` (a NumPy one writable,
        any strides).  It may be ``x`` itself (in place), but must not
        otherwise overlap ``x``.
    return_stats : bool, default False
        Also return each sample's ``rstd``.
    stream : CUDA stream, optional
        For a CUDA ``x``: the stream every launch, copy and allocation of
        the call goes to (a numba, CuPy or PyTorch stream, or a raw
        ``cudaStream_t`` handle).  None: the stream ``x`` reports (CuPy's or
        PyTorch's current stream, a numba array's own stream, else the
        default stream).  The call waits on the device, never on the host,
        for work pending on the streams its arrays report.  Ignored for
        NumPy input.

    Returns
    -------
    y : ndarray or CUDA array
        The normalized ``x`` (``out`` when given), of ``x``'s shape and array
        type; ``x``'s dtype for float16/32/64 input, float64 for integer or
        bool input.
    rstd : ndarray or CUDA array of shape ``x.shape[:-k] + (1,) * k``
        Only with ``return_stats=True`` (the result is then ``(y, rstd)``):
        each sample's ``1 / sqrt(mean(x**2) + eps)``, float32 for float16/32
        input and float64 for float64 input, of ``x``'s array type.

    Raises
    ------
    ValueError
        ``normalized_shape`` is not the trailing shape of ``x``; ``x`` has no
        element; ``weight`` is not of shape ``normalized_shape``; ``eps`` is
        negative, infinite or NaN; ``out`` has the wrong shape or dtype, is
        read-only, or overlaps ``x`` without being ``x``.
    TypeError
        ``x`` is not an array, is a dask array, or has an unsupported dtype;
        ``normalized_shape`` is not an int or a non-empty sequence of ints;
        ``eps`` is not a real number or None; ``weight`` is not of a real
        dtype; ``out`` is not the same kind of array as ``x``; ``stream`` is
        not a stream (CUDA input).
    RuntimeError
        ``x`` is a CUDA array but no usable CUDA GPU (nor numba's CUDA
        simulator) is found.

    See Also
    --------
    numbanorm.RMSNorm : The layer.
    layer_norm : Centering and scaling.

    References
    ----------
    .. [1] B. Zhang, R. Sennrich, "Root Mean Square Layer Normalization",
       NeurIPS 2019.

    Examples
    --------
    >>> import numpy as np, numbanorm as nbn
    >>> nbn.rms_norm(np.array([[3.0, 4.0]]), 2, eps=0.0).round(4)
    array([[0.8485, 1.1314]])
    >>> y, rstd = nbn.rms_norm(np.ones((2, 3, 8), np.float32), 8, return_stats=True)
    >>> bool(np.allclose(y, 1, atol=1e-6)), rstd.shape
    (True, (2, 3, 1))
    """
    if not return_stats and stream is None:
        y = shortcuts.rms_norm(x, normalized_shape, weight, eps, out)
        if y is not None:
            return y
    inp = V.Input(x)
    eps = V.rms_default_eps(inp.dtype) if eps is None else V.check_eps(eps)
    y, user_out, _, rstd = _row_op(inp, normalized_shape, weight, None, eps, out, True, stream, return_stats)
    return _finish(inp, y, user_out, (rstd,) if return_stats else None)


@V.on_call_stream
def group_norm(
    x: ArrayLike | Any,
    num_groups: int,
    weight: ArrayLike | Any | None = None,
    bias: ArrayLike | Any | None = None,
    eps: float = 1e-5,
    *,
    channel_axis: int = 1,
    out: np.ndarray | Any | None = None,
    return_stats: bool = False,
    stream: Any = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray] | Any:
    """Group normalization: normalize each (sample, group of channels).

    ``torch.nn.functional.group_norm`` semantics [1]_: the C channels are
    split into ``num_groups`` groups G of C/G consecutive channels; for each
    sample n (axis 0) and group g, the mean and *biased* variance are taken
    over the group's channels and all the spatial axes, and
    ``y = (x - mean[n, g]) / sqrt(var[n, g] + eps) * weight[c] + bias[c]``
    with the per-channel ``weight`` and ``bias``.  There are no running
    statistics.  A group of a single element normalizes to ``bias``
    (PyTorch raises instead when ``N * C/G`` times the spatial size is 1).

    NaN and Inf are not skipped: they make their (sample, group)'s output
    NaN; other groups are unaffected.  The statistics are float64 (Welford
    [2]_ / Chan, Golub & LeVeque [3]_ moments) whatever the input dtype;
    float16 input is computed in float32 at least.  ``x`` is never modified
    unless it is ``out``.

    Parameters
    ----------
    x : array_like or CUDA array
        Shape (N, C, *), at least 2 dimensions, the channels on
        ``channel_axis``; float16/32/64, integer or bool.  A NumPy array (any
        strides, read-only allowed), anything ``np.asarray`` takes, or a CUDA
        array (anything with ``__cuda_array_interface__``), which runs on the
        GPU.
    num_groups : int
        Number of groups G, positive and dividing C.
    weight, bias : array_like or CUDA array of shape (C,), optional
        Per-channel scale and shift, of a real dtype, on the host or the
        device; None means 1 and 0.
    eps : float, default 1e-5
        Added to the variance before the square root; finite and >= 0 (with
        0, a zero variance gives an infinite ``rstd``: a constant group
        becomes NaN).
    channel_axis : int, default 1
        Axis of the channels (negative values count from the end), any axis
        but 0 (the batch axis): ``-1`` for channels-last input (NLC, NHWC,
        NDHWC).  Groups are consecutive channels whatever the layout.
    out : ndarray or CUDA array, optional
        Array the result is written into and returned: ``x``'s shape and the
        result dtype, the same kind of array as ``x`` (a NumPy one writable,
        any strides).  It may be ``x`` itself (in place), but must not
        otherwise overlap ``x``.
    return_stats : bool, default False
        Also return the ``mean`` and ``rstd`` of each (sample, group).
    stream : CUDA stream, optional
        For a CUDA ``x``: the stream every launch, copy and allocation of
        the call goes to (a numba, CuPy or PyTorch stream, or a raw
        ``cudaStream_t`` handle).  None: the stream ``x`` reports (CuPy's or
        PyTorch's current stream, a numba array's own stream, else the
        default stream).  The call waits on the device, never on the host,
        for work pending on the streams its arrays report.  Ignored for
        NumPy input.

    Returns
    -------
    y : ndarray or CUDA array
        The normalized ``x`` (``out`` when given), of ``x``'s shape and array
        type; ``x``'s dtype for float16/32/64 input, float64 for integer or
        bool input.
    mean, rstd : ndarray or CUDA array of shape (N, G)
        Only with ``return_stats=True``: each (sample, group)'s mean and
        ``1 / sqrt(var + eps)``, float32 for float16/32 input and float64 for
        float64 input, of ``x``'s array type.

    Raises
    ------
    ValueError
        ``x`` has fewer than 2 dimensions or no element; ``channel_axis`` is
        0 or out of range; ``num_groups`` is not positive or does not divide
        C; ``weight`` or ``bias`` is not of shape (C,); ``eps`` is negative,
        infinite or NaN; ``out`` has the wrong shape or dtype, is read-only,
        or overlaps ``x`` without being ``x``.
    TypeError
        ``x`` is not an array, is a dask array, or has an unsupported dtype;
        ``num_groups`` or ``channel_axis`` is not an int (bool included);
        ``eps`` is not a real number; ``weight`` or ``bias`` is not of a real
        dtype; ``out`` is not the same kind of array as ``x``; ``stream`` is
        not a stream (CUDA input).
    RuntimeError
        ``x`` is a CUDA array but no usable CUDA GPU (nor numba's CUDA
        simulator) is found.

    See Also
    --------
    numbanorm.GroupNorm : The layer.
    instance_norm : One channel per group, with optional running statistics.

    References
    ----------
    .. [1] Y. Wu, K. He, "Group Normalization", ECCV 2018.
    .. [2] B. P. Welford, "Note on a method for calculating corrected sums of
       squares and products", Technometrics 4(3), 1962.
    .. [3] T. F. Chan, G. H. Golub, R. J. LeVeque, "Algorithms for computing
       the sample variance: analysis and recommendations", The American
       Statistician 37(3), 1983.

    Examples
    --------
    >>> import numpy as np, numbanorm as nbn
    >>> x = np.random.default_rng(0).standard_normal((2, 6, 5))
    >>> y, mean, rstd = nbn.group_norm(x, 3, return_stats=True)
    >>> mean.shape
    (2, 3)

    Channels-last (N, L, C) gives the same numbers, transposed:

    >>> yl = nbn.group_norm(np.moveaxis(x, 1, -1), 3, channel_axis=-1)
    >>> bool(np.allclose(np.moveaxis(yl, -1, 1), y))
    True
    """
    if not return_stats and stream is None:
        y = shortcuts.group_norm(x, num_groups, weight, bias, eps, channel_axis, out)
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
    w, b = _weights_where_they_are(inp, weight, bias, C)
    inp.require_nonempty()
    y, user_out = V.out_array(out, inp)
    be = inp.backend
    if _fusable(inp, ca, y):
        # (N*G, C/G*spatial) rows, weights per channel = per row segment
        # (host or device weights: row_norm takes both)
        W = _row_weights(be, w, 1.0, C, (G, C // G))
        B = _row_weights(be, b, 0.0, C, (G, C // G))
        mean, rstd = _fused_rows(inp, y, N * G, W, B, eps, stream)
        if not return_stats:  # (CUDA: the statistics stay on the device)
            return _finish(inp, y, user_out, None)
        sd = V.stats_dtype(inp.dtype)
        mean, rstd = be.to_host(mean), be.to_host(rstd)
        return _finish(inp, y, user_out, (mean.reshape(N, G).astype(sd), rstd.reshape(N, G).astype(sd)))
    # split the channel axis into (G, C/G): a view for any layout with the
    # channel axis contiguous in memory order (NCHW and NHWC alike)
    xc = inp.arr
    gshape = inp.shape[:ca] + (G, C // G) + inp.shape[ca + 1 :]
    try:
        xg = xc.reshape(gshape)
    except Exception:
        xg = be.ascontiguous(xc).reshape(gshape)
    gaxes = tuple(a for a in range(1, len(gshape)) if a != ca)
    axes = tuple(a for a in range(1, inp.ndim) if a != ca)
    if be.NAME == "cuda":
        # channels-last: one kernel, x read once (a block per sample and tile
        # of whole groups); else statistics of the (N, G) groups, parameters
        # and output on the device: no copy to the host unless the
        # statistics are returned
        res = _norm_tiles(inp, y, user_out, ca, w, b, G, eps, None, stream, return_stats)
        if res is not None:
            return res
        with be.context(stream):
            fin = Finish(FIN_NORM, eps, weight=w, bias=b, channels=C, groups=G)
            kw = dict(out=y, skipnan=False, minmax=False, backend=be)
            stats = normalize_on_device(inp.arr, axes, fin, stats_x=xg, stats_axis=gaxes, **kw)
        if not return_stats:
            return _finish(inp, y, user_out, None)
        m = stats()
        sd = V.stats_dtype(inp.dtype)
        return _finish(inp, y, user_out, (m.mean.astype(sd), _rstd(m.m2 / m.count, eps).astype(sd)))
    with be.context(stream):
        m = reduce_moments(xg, gaxes, skipnan=False, minmax=False, backend=be)  # (N, G)
        mean = m.mean
        rstd = _rstd(m.m2 / m.count, eps)
        cmean = np.repeat(mean, C // G, axis=1)
        scale = np.repeat(rstd, C // G, axis=1) * (w if w is not None else 1.0)
        shift = np.broadcast_to(b if b is not None else np.zeros(C), (N, C))
        apply_affine(inp.arr, axes, cmean, scale, shift, out=y, backend=be)
    sd = V.stats_dtype(inp.dtype)
    return _finish(inp, y, user_out, (mean.astype(sd), rstd.astype(sd)) if return_stats else None)
