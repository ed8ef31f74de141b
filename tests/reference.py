"""Readable float64 NumPy reference implementations: the oracle of the test suite.

Every function here takes the same arguments as the public numbanorm function of
the same name (API.md sections 2 and 3) and follows the same semantics:

* deep-learning norms (``batch_norm`` ... ``rms_norm``, ``lp_normalize``) follow
  ``torch.nn.functional``: the biased variance normalizes, the unbiased variance
  goes into ``running_var`` with ``new = (1 - momentum) * old + momentum * stat``;
* preprocessing (``standardize``, ``minmax_scale``) follows scikit-learn: NaN is
  ignored when statistics are computed and kept in the output, a zero variance or
  a zero range gives a scale of 1.

Nothing here is clever or fast.  All arithmetic happens in float64 on the values
of the given input (a float32 input is widened exactly, never re-rounded), with
plain NumPy calls, so that each function can be checked by reading it.

Results are returned in float64.  The output dtype rules of API.md section 7
(float16/32/64 -> same dtype, integers and bool -> float64) are given by
:func:`result_dtype` and checked by the tests, not applied here, so that the
oracle keeps all its digits.  When ``out=`` is given, the float64 result is
written into it (with a cast) and ``out`` is returned, as the public API does.
Running statistics passed in are updated in place, as the public API does.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

__all__ = [
    "result_dtype",
    "batch_norm",
    "instance_norm",
    "layer_norm",
    "group_norm",
    "rms_norm",
    "standardize",
    "minmax_scale",
    "lp_normalize",
    "exact_moments",
]


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def result_dtype(dtype) -> np.dtype:
    """The output dtype of API.md section 7: floats keep theirs, int/bool -> float64."""
    dtype = np.dtype(dtype)
    if dtype in (np.float16, np.float32, np.float64):
        return dtype
    if dtype == np.bool_ or np.issubdtype(dtype, np.integer):
        return np.dtype(np.float64)
    raise TypeError(f"unsupported dtype {dtype}")


def _f64(a):
    """``a`` as a new float64 array (None stays None)."""
    if a is None:
        return None
    return np.array(a, dtype=np.float64)


def _finish(y, out):
    """Return ``y`` (float64), or write it into ``out`` and return ``out``."""
    if out is None:
        return y
    out[...] = y
    return out


def _channel_shape(ndim, axis, c):
    """Shape that broadcasts a (C,) vector along ``axis`` of an ``ndim`` array."""
    shape = [1] * ndim
    shape[axis] = c
    return tuple(shape)


def _norm_axis(axis, ndim):
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} out of range for {ndim}-d input")
    return axis % ndim


def _norm_axes(axis, ndim):
    if isinstance(axis, (int, np.integer)):
        axis = (axis,)
    return tuple(sorted(_norm_axis(int(a), ndim) for a in axis))


def _update_running(running, stat, momentum):
    """PyTorch's update, in place: ``new = (1 - momentum) * old + momentum * stat``."""
    if running is None:
        return
    old = np.asarray(running, dtype=np.float64)
    running[...] = (1.0 - momentum) * old + momentum * stat


# --------------------------------------------------------------------------
# section 2: deep-learning norms (torch.nn.functional semantics)
# --------------------------------------------------------------------------


def batch_norm(
    x,
    running_mean=None,
    running_var=None,
    weight=None,
    bias=None,
    training=False,
    momentum=0.1,
    eps=1e-5,
    *,
    channel_axis=1,
    out=None,
    return_stats=False,
):
    """Per-channel statistics over every axis except ``channel_axis``."""
    x64 = _f64(x)
    ca = _norm_axis(channel_axis, x64.ndim)
    c = x64.shape[ca]
    # (rows, C): one column per channel
    cols = np.moveaxis(x64, ca, -1).reshape(-1, c)
    n = cols.shape[0]

    if training:
        if n <= 1:
            raise ValueError("Expected more than 1 value per channel when training")
        mean = cols.mean(axis=0)
        var = ((cols - mean) ** 2).mean(axis=0)  # biased: normalizes
        unbiased = var * n / (n - 1)  # unbiased: goes into running_var
        _update_running(running_mean, mean, momentum)
        _update_running(running_var, unbiased, momentum)
    else:
        if running_mean is None or running_var is None:
            raise ValueError("running_mean and running_var are required when not training")
        mean = _f64(running_mean)
        var = _f64(running_var)

    rstd = 1.0 / np.sqrt(var + eps)
    bshape = _channel_shape(x64.ndim, ca, c)
    y = (x64 - mean.reshape(bshape)) * rstd.reshape(bshape)
    if weight is not None:
        y = y * _f64(weight).reshape(bshape)
    if bias is not None:
        y = y + _f64(bias).reshape(bshape)
    y = _finish(y, out)
    if return_stats:
        return y, mean, rstd
    return y


def _batch_and_channel(x64, channel_axis):
    """Move the batch axis (0) and the channel axis to the front: (N, C, *spatial).

    The batch axis is axis 0; ``channel_axis`` may be any other axis.  Returns the
    moved array and the function that moves an array of that layout back.
    """
    ca = _norm_axis(channel_axis, x64.ndim)
    if ca == 0:
        raise ValueError("the reference puts the batch on axis 0; channel_axis must not be 0")
    moved = np.moveaxis(x64, ca, 1)

    def back(a):
        return np.moveaxis(a, 1, ca)

    return moved, back, ca


def instance_norm(
    x,
    running_mean=None,
    running_var=None,
    weight=None,
    bias=None,
    use_input_stats=True,
    momentum=0.1,
    eps=1e-5,
    *,
    channel_axis=1,
    out=None,
    return_stats=False,
):
    """Per-(instance, channel) statistics over the spatial axes."""
    x64 = _f64(x)
    moved, back, ca = _batch_and_channel(x64, channel_axis)
    n, c = moved.shape[:2]
    rows = moved.reshape(n, c, -1)  # (N, C, spatial)
    m = rows.shape[2]

    if use_input_stats:
        mean = rows.mean(axis=2)  # (N, C)
        var = ((rows - mean[:, :, None]) ** 2).mean(axis=2)  # biased: normalizes
        if running_mean is not None or running_var is not None:
            # PyTorch updates one copy of the running stats per instance, each
            # with that instance's stats, then stores their mean over the batch.
            unbiased = var * m / (m - 1) if m > 1 else np.full_like(var, np.nan)
            _update_running(running_mean, mean.mean(axis=0), momentum)
            _update_running(running_var, unbiased.mean(axis=0), momentum)
    else:
        if running_mean is None or running_var is None:
            raise ValueError("running_mean and running_var are required without input stats")
        mean = np.broadcast_to(_f64(running_mean), (n, c)).copy()
        var = np.broadcast_to(_f64(running_var), (n, c)).copy()

    rstd = 1.0 / np.sqrt(var + eps)
    y = (rows - mean[:, :, None]) * rstd[:, :, None]
    if weight is not None:
        y = y * _f64(weight)[None, :, None]
    if bias is not None:
        y = y + _f64(bias)[None, :, None]
    y = back(y.reshape(moved.shape))
    y = _finish(y, out)
    if return_stats:
        return y, mean, rstd
    return y


def _normalized_ndim(x64, normalized_shape):
    if isinstance(normalized_shape, (int, np.integer)):
        normalized_shape = (int(normalized_shape),)
    normalized_shape = tuple(int(s) for s in normalized_shape)
    k = len(normalized_shape)
    if k > x64.ndim or x64.shape[x64.ndim - k :] != normalized_shape:
        raise ValueError(f"normalized_shape {normalized_shape} does not end {x64.shape}")
    return k


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5, *, out=None, return_stats=False):
    """Statistics over the trailing ``normalized_shape`` axes."""
    x64 = _f64(x)
    k = _normalized_ndim(x64, normalized_shape)
    axes = tuple(range(x64.ndim - k, x64.ndim))
    mean = x64.mean(axis=axes, keepdims=True)  # x.shape[:-k] + (1,) * k
    var = ((x64 - mean) ** 2).mean(axis=axes, keepdims=True)
    rstd = 1.0 / np.sqrt(var + eps)
    y = (x64 - mean) * rstd
    if weight is not None:
        y = y * _f64(weight)
    if bias is not None:
        y = y + _f64(bias)
    y = _finish(y, out)
    if return_stats:
        return y, mean, rstd
    return y


def group_norm(
    x,
    num_groups,
    weight=None,
    bias=None,
    eps=1e-5,
    *,
    channel_axis=1,
    out=None,
    return_stats=False,
):
    """Per-(instance, group) statistics; group g holds channels g*C/G .. (g+1)*C/G - 1."""
    x64 = _f64(x)
    moved, back, ca = _batch_and_channel(x64, channel_axis)
    n, c = moved.shape[:2]
    g = int(num_groups)
    if g <= 0 or c % g:
        raise ValueError(f"num_groups {g} does not divide {c} channels")
    groups = moved.reshape(n, g, -1)  # (N, G, C/G * spatial)
    mean = groups.mean(axis=2)  # (N, G)
    var = ((groups - mean[:, :, None]) ** 2).mean(axis=2)
    rstd = 1.0 / np.sqrt(var + eps)
    y = ((groups - mean[:, :, None]) * rstd[:, :, None]).reshape(moved.shape)
    pshape = (1, c) + (1,) * (moved.ndim - 2)
    if weight is not None:
        y = y * _f64(weight).reshape(pshape)
    if bias is not None:
        y = y + _f64(bias).reshape(pshape)
    y = _finish(back(y), out)
    if return_stats:
        return y, mean, rstd
    return y


def rms_norm(x, normalized_shape, weight=None, eps=None, *, out=None, return_stats=False):
    """``x / sqrt(mean(x**2) + eps)`` over the trailing axes; eps=None -> finfo eps."""
    x = np.asarray(x)
    if eps is None:
        eps = float(np.finfo(result_dtype(x.dtype)).eps)
    x64 = _f64(x)
    k = _normalized_ndim(x64, normalized_shape)
    axes = tuple(range(x64.ndim - k, x64.ndim))
    ms = (x64 * x64).mean(axis=axes, keepdims=True)
    rstd = 1.0 / np.sqrt(ms + eps)
    y = x64 * rstd
    if weight is not None:
        y = y * _f64(weight)
    y = _finish(y, out)
    if return_stats:
        return y, rstd
    return y


# --------------------------------------------------------------------------
# section 3: preprocessing (scikit-learn / NumPy semantics)
# --------------------------------------------------------------------------


def _nan_stats_mean_var(x64, axes, ddof):
    """NaN-ignoring mean and variance over ``axes`` (keepdims), constant -> var 0."""
    valid = ~np.isnan(x64)
    count = valid.sum(axis=axes, keepdims=True).astype(np.float64)
    filled = np.where(valid, x64, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = filled.sum(axis=axes, keepdims=True) / count
        dev = np.where(valid, x64 - mean, 0.0)
        var = (dev * dev).sum(axis=axes, keepdims=True) / (count - ddof)
    var = np.where(count - ddof > 0, var, np.nan)
    # A feature whose non-NaN values are all equal has variance exactly 0, even
    # when its mean is not representable (0.1 + 0.1 + 0.1 != 0.3).
    if x64.size:
        lo = np.where(valid, x64, np.inf).min(axis=axes, keepdims=True)
        hi = np.where(valid, x64, -np.inf).max(axis=axes, keepdims=True)
        constant = (lo == hi) & np.isfinite(lo)
        mean = np.where(constant, lo, mean)
        var = np.where(constant & (count - ddof > 0), 0.0, var)
    return mean, var


def standardize(x, axis=0, *, ddof=0, with_mean=True, with_std=True, out=None, return_stats=False):
    """z-score over ``axis`` like sklearn's StandardScaler: NaN ignored, var 0 -> scale 1.

    With ``return_stats=True`` returns ``(y, mean, std)`` with keepdims shapes
    (API.md is silent here; this is the package's documented choice, the
    scikit-learn ``mean_`` / ``scale_`` pair): the statistics actually applied,
    ``mean`` 0 when ``with_mean=False``, ``std`` 1 when ``with_std=False`` or
    the variance is 0.
    """
    x64 = _f64(x)
    axes = _norm_axes(axis, x64.ndim)
    mean, var = _nan_stats_mean_var(x64, axes, ddof)
    scale = np.sqrt(var)
    scale = np.where(scale == 0.0, 1.0, scale)  # zero variance -> scale 1
    used_mean = mean if with_mean else np.zeros_like(mean)
    used_std = scale if with_std else np.ones_like(scale)
    y = _finish((x64 - used_mean) / used_std, out)
    if return_stats:
        return y, used_mean, used_std
    return y


def minmax_scale(x, feature_range=(0.0, 1.0), axis=0, *, clip=False, out=None):
    """Scale each feature to ``feature_range`` like sklearn: NaN ignored, range 0 -> scale 1."""
    x64 = _f64(x)
    axes = _norm_axes(axis, x64.ndim)
    lo, hi = float(feature_range[0]), float(feature_range[1])
    valid = ~np.isnan(x64)
    dmin = np.where(valid, x64, np.inf).min(axis=axes, keepdims=True)
    dmax = np.where(valid, x64, -np.inf).max(axis=axes, keepdims=True)
    with np.errstate(invalid="ignore"):
        drange = dmax - dmin
    drange = np.where(drange == 0.0, 1.0, drange)  # zero range -> scale 1 (sklearn)
    with np.errstate(invalid="ignore"):
        y = (x64 - dmin) * ((hi - lo) / drange) + lo
    if clip:
        y = np.clip(y, lo, hi)  # NaN stays NaN
    return _finish(y, out)


def lp_normalize(x, p=2.0, axis=-1, eps=1e-12, *, out=None):
    """``x / max(||x||_p, eps)`` along ``axis`` (torch ``F.normalize``); NaN ignored in the norm."""
    x64 = _f64(x)
    axes = _norm_axes(axis, x64.ndim)
    a = np.abs(np.where(np.isnan(x64), 0.0, x64))
    if p == np.inf:
        norm = a.max(axis=axes, keepdims=True) if a.size else np.zeros(a.shape)
    elif p == 1:
        norm = a.sum(axis=axes, keepdims=True)
    elif p == 2:
        norm = np.sqrt((a * a).sum(axis=axes, keepdims=True))
    else:
        norm = (a**p).sum(axis=axes, keepdims=True) ** (1.0 / p)
    y = x64 / np.maximum(norm, eps)
    return _finish(y, out)


def exact_moments(v):
    """(n, mean, M2) of the finite float values v exactly, as Fractions:
    the mean and the sum of squared deviations about it.

    Every float is an integer times a power of two, ``a_i = A_i * 2**e``
    with one common (smallest) exponent e, so
    ``mean = (sum A) / n * 2**e`` and
    ``M2 = (n * sum A**2 - (sum A)**2) / n * 2**(2e)``, in Python integers:
    the same rationals as summing ``Fraction(a_i)`` and ``(a_i - mean)**2``,
    in a small fraction of the time."""
    a = np.asarray(v, np.float64).ravel()
    n = a.size
    if n == 0 or not np.all(np.isfinite(a)):
        raise ValueError("exact_moments takes a non-empty array of finite values")
    frac, ex = np.frexp(a)  # a = frac * 2**ex, |frac| in [0.5, 1) or 0
    mant = (frac * 2.0**53).astype(np.int64)  # exact: frac has at most 53 bits
    ex = ex.astype(np.int64) - 53
    e = int(ex.min())
    ints = [int(m) << int(s) for m, s in zip(mant.tolist(), (ex - e).tolist(), strict=True)]
    s1 = sum(ints)
    s2 = sum(i * i for i in ints)
    scale = Fraction(2) ** e
    return n, Fraction(s1, n) * scale, Fraction(n * s2 - s1 * s1, n) * scale * scale
