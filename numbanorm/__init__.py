"""numbanorm: exact, bandwidth-bound normalization with Numba kernels.

>>> import numbanorm as nbn

The functions, the layers and :class:`RunningStats` take NumPy arrays (CPU
kernels) and CUDA arrays (anything with ``__cuda_array_interface__``: GPU
kernels; the functions and layers return the input's array type,
:class:`RunningStats` NumPy arrays); the scalers take NumPy array_likes.
float16/32/64 input gives the same dtype out, integer and bool input float64;
other dtypes raise ``TypeError``.

Deep-learning norms (``torch.nn.functional`` semantics)
--------------------------------------------------------
batch_norm
    Per-channel normalization with batch or running statistics (updated in place).
instance_norm
    Per-(sample, channel) normalization over the spatial axes.
layer_norm
    Normalization over the trailing ``normalized_shape`` axes.
group_norm
    Per-(sample, group of channels) normalization.
rms_norm
    Scaling by the reciprocal root mean square of the trailing axes.

Preprocessing (NumPy / scikit-learn conventions; NaN ignored in statistics)
----------------------------------------------------------------------------
standardize
    z-score over ``axis`` (zero variance gives scale 1).
minmax_scale
    Linear scaling of each feature to ``feature_range``.
lp_normalize
    Division by the p-norm along ``axis`` (``torch.nn.functional.normalize``).

Streaming statistics and scalers (imported on first use)
--------------------------------------------------------
RunningStats
    Per-feature count, mean, variance, min, max folded in chunk by chunk.
StandardScaler
    scikit-learn-compatible standardizer with ``partial_fit`` and ``axis=``.
MinMaxScaler
    scikit-learn-compatible min-max scaler with ``partial_fit`` and ``axis=``.

Layers with PyTorch-compatible state (imported on first use)
------------------------------------------------------------
BatchNorm
    ``torch.nn.BatchNorm1d/2d/3d``: running statistics, train/eval, state dicts.
InstanceNorm
    ``torch.nn.InstanceNorm1d/2d/3d``.
LayerNorm
    ``torch.nn.LayerNorm``.
GroupNorm
    ``torch.nn.GroupNorm``.
RMSNorm
    ``torch.nn.RMSNorm``.

Output buffer reuse
-------------------
set_output_cache
    Set the byte limit of the large output buffers kept for reuse.
release_output_cache
    Release the output buffers kept for reuse.
output_cache_info
    Limit, buffers and bytes of the output buffer cache.

Other
-----
__version__
    The package version string.
"""

from __future__ import annotations

from . import _threading  # noqa: F401  (before any parallel launch: the TBB layer)
from ._outbuf import output_cache_info, release_output_cache, set_output_cache
from .functional import batch_norm, group_norm, instance_norm, layer_norm, rms_norm
from .preprocessing import lp_normalize, minmax_scale, standardize

__version__ = "0.1.0"

__all__ = [
    "batch_norm",
    "instance_norm",
    "layer_norm",
    "group_norm",
    "rms_norm",
    "standardize",
    "minmax_scale",
    "lp_normalize",
    "set_output_cache",
    "release_output_cache",
    "output_cache_info",
]


def __getattr__(name: str):
    # streaming/scalers/layers import lazily so `import numbanorm` stays fast
    if name in ("RunningStats",):
        from .streaming import RunningStats

        return RunningStats
    if name in ("StandardScaler", "MinMaxScaler"):
        from . import scalers

        return getattr(scalers, name)
    if name in ("BatchNorm", "InstanceNorm", "LayerNorm", "GroupNorm", "RMSNorm"):
        from . import layers

        return getattr(layers, name)
    raise AttributeError(f"module 'numbanorm' has no attribute {name!r}")
