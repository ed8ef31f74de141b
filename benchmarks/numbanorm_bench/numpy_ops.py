"""Plain NumPy baselines of numbanorm's operations, for the benchmark suite.

Each function is the straightforward vectorized NumPy a user would write for
the op, with the same signature (a subset) as the public ``numbanorm``
function of the same name, so that the suite calls both with the same
arguments.  They compute in the input's dtype ("float64-free": a float32 input
is reduced with NumPy's float32 pairwise sums, never upcast), allocate their
temporaries as NumPy does, and make no attempt at numerical hardening: they
are *speed* baselines, not the float64 oracles of the test suite.

Two simplifications make the baselines faster, never slower, than a
faithful port, so that ratios against them are conservative:

- ``standardize`` and ``minmax_scale`` use ``mean``/``std``/``min``/``max``,
  not the NaN-ignoring ``nan*`` variants that numbanorm's semantics match.
- No argument validation.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.floating]


def _channel_shape(ndim: int, channel_axis: int, c: int) -> tuple[int, ...]:
    shape = [1] * ndim
    shape[channel_axis % ndim] = c
    return tuple(shape)


def batch_norm(
    x: Array,
    running_mean: Array | None = None,
    running_var: Array | None = None,
    weight: Array | None = None,
    bias: Array | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
    *,
    channel_axis: int = 1,
) -> Array:
    """PyTorch ``F.batch_norm`` semantics: biased variance to normalize,
    unbiased variance into ``running_var`` (updated in place)."""
    ax = channel_axis % x.ndim
    c = x.shape[ax]
    cshape = _channel_shape(x.ndim, ax, c)
    if training:
        axes = tuple(i for i in range(x.ndim) if i != ax)
        mean = x.mean(axis=axes, keepdims=True)
        var = x.var(axis=axes, keepdims=True)
        if running_mean is not None and running_var is not None:
            n = x.size // c
            running_mean *= 1.0 - momentum
            running_mean += momentum * mean.reshape(c)
            running_var *= 1.0 - momentum
            running_var += (momentum * n / max(n - 1, 1)) * var.reshape(c)
    else:
        assert running_mean is not None and running_var is not None
        mean = running_mean.reshape(cshape)
        var = running_var.reshape(cshape)
    scale = 1.0 / np.sqrt(var + eps)
    if weight is not None:
        scale = scale * weight.reshape(cshape)
    y = (x - mean) * scale
    if bias is not None:
        y += bias.reshape(cshape)
    return y


def instance_norm(
    x: Array,
    running_mean: Array | None = None,
    running_var: Array | None = None,
    weight: Array | None = None,
    bias: Array | None = None,
    use_input_stats: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
    *,
    channel_axis: int = 1,
) -> Array:
    """Per-(sample, channel) statistics over the spatial axes."""
    ax = channel_axis % x.ndim
    axes = tuple(i for i in range(1, x.ndim) if i != ax)
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps)
    cshape = _channel_shape(x.ndim, ax, x.shape[ax])
    if weight is not None:
        y *= weight.reshape(cshape)
    if bias is not None:
        y += bias.reshape(cshape)
    return y


def _trailing(normalized_shape: int | tuple[int, ...]) -> int:
    return 1 if isinstance(normalized_shape, int) else len(normalized_shape)


def layer_norm(
    x: Array,
    normalized_shape: int | tuple[int, ...],
    weight: Array | None = None,
    bias: Array | None = None,
    eps: float = 1e-5,
) -> Array:
    """Statistics over the trailing ``normalized_shape`` axes."""
    axes = tuple(range(x.ndim - _trailing(normalized_shape), x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps)
    if weight is not None:
        y *= weight
    if bias is not None:
        y += bias
    return y


def group_norm(
    x: Array,
    num_groups: int,
    weight: Array | None = None,
    bias: Array | None = None,
    eps: float = 1e-5,
    *,
    channel_axis: int = 1,
) -> Array:
    """Statistics over (channels of a group) x spatial; NCHW layout only."""
    assert channel_axis % x.ndim == 1, "baseline handles channels-first only"
    n, c = x.shape[:2]
    xg = x.reshape(n, num_groups, -1)
    mean = xg.mean(axis=-1, keepdims=True)
    var = xg.var(axis=-1, keepdims=True)
    y = ((xg - mean) / np.sqrt(var + eps)).reshape(x.shape)
    cshape = _channel_shape(x.ndim, 1, c)
    if weight is not None:
        y *= weight.reshape(cshape)
    if bias is not None:
        y += bias.reshape(cshape)
    return y


def rms_norm(
    x: Array,
    normalized_shape: int | tuple[int, ...],
    weight: Array | None = None,
    eps: float | None = None,
) -> Array:
    """``x / sqrt(mean(x**2) + eps) * weight``; ``eps=None`` is the dtype's eps."""
    if eps is None:
        eps = float(np.finfo(x.dtype).eps)
    axes = tuple(range(x.ndim - _trailing(normalized_shape), x.ndim))
    rstd = 1.0 / np.sqrt(np.mean(x * x, axis=axes, keepdims=True) + eps)
    y = x * rstd
    if weight is not None:
        y *= weight
    return y


def standardize(x: Array, axis: int | tuple[int, ...] = 0) -> Array:
    """z-score over ``axis``; zero variance gives scale 1 (NaN not ignored)."""
    mean = x.mean(axis=axis, keepdims=True)
    std = x.std(axis=axis, keepdims=True)
    std[std == 0] = 1
    return (x - mean) / std


def minmax_scale(
    x: Array,
    feature_range: tuple[float, float] = (0.0, 1.0),
    axis: int | tuple[int, ...] = 0,
) -> Array:
    """scikit-learn's ``minmax_scale`` formula (NaN not ignored)."""
    lo, hi = feature_range
    mn = x.min(axis=axis, keepdims=True)
    rng = x.max(axis=axis, keepdims=True) - mn
    rng[rng == 0] = 1
    scale = (hi - lo) / rng
    return x * scale + (lo - mn * scale)


def lp_normalize(x: Array, p: float = 2.0, axis: int = -1, eps: float = 1e-12) -> Array:
    """``torch.nn.functional.normalize``: ``x / max(||x||_p, eps)``."""
    if p == 2.0:
        norm = np.sqrt(np.sum(x * x, axis=axis, keepdims=True))
    elif p == np.inf:
        norm = np.max(np.abs(x), axis=axis, keepdims=True)
    else:
        norm = np.sum(np.abs(x) ** p, axis=axis, keepdims=True) ** (1.0 / p)
    return x / np.maximum(norm, eps)
