"""numbanorm: exact, bandwidth-bound normalization with Numba kernels.

>>> import numbanorm as nbn

Deep-learning norms (``torch.nn.functional`` semantics): :func:`batch_norm`,
:func:`instance_norm`, :func:`layer_norm`, :func:`group_norm`,
:func:`rms_norm`.  Preprocessing (NumPy/scikit-learn conventions):
:func:`standardize`, :func:`minmax_scale`, :func:`lp_normalize`.
"""

from __future__ import annotations

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
