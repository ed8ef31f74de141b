"""Stateful normalization layers with PyTorch-compatible state.

The layers hold NumPy parameters and buffers under PyTorch's key names
(``weight``, ``bias``, ``running_mean``, ``running_var``,
``num_batches_tracked``), so ``load_state_dict`` accepts a PyTorch module's
``state_dict()`` directly, and they call the functions of
:mod:`numbanorm.functional` exactly as ``torch.nn`` modules call
``torch.nn.functional``.  Inputs may be NumPy or CUDA arrays; parameters and
buffers stay on the host (they are tiny) and running statistics are updated
there.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

from . import _validate as V
from . import functional as F

__all__ = ["BatchNorm", "InstanceNorm", "LayerNorm", "GroupNorm", "RMSNorm"]


def _to_numpy(v: Any) -> np.ndarray:
    if hasattr(v, "detach"):  # a torch tensor, possibly on a GPU
        v = v.detach().cpu().numpy()
    elif hasattr(v, "copy_to_host"):
        v = v.copy_to_host()
    elif hasattr(v, "get") and type(v).__module__.startswith("cupy"):
        v = v.get()
    return np.asarray(v)


class _Norm:
    """State handling shared by the layers: train/eval and state dicts."""

    _params: tuple[str, ...] = ()
    _buffers: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.training = True

    def train(self, mode: bool = True):
        self.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    def _state_names(self) -> list[str]:
        return [n for n in (*self._params, *self._buffers) if getattr(self, n, None) is not None]

    def state_dict(self) -> OrderedDict:
        """Parameters and buffers under PyTorch's key names (copies)."""
        return OrderedDict((n, np.array(getattr(self, n), copy=True)) for n in self._state_names())

    def load_state_dict(self, state_dict: Any, strict: bool = True):
        """Load parameters/buffers from a mapping of arrays (a PyTorch state dict too)."""
        names = self._state_names()
        keys = set(state_dict.keys())
        missing = [n for n in names if n not in keys]
        unexpected = sorted(keys - set(names))
        if strict and (missing or unexpected):
            raise ValueError(
                f"state_dict does not match {type(self).__name__}: missing keys {missing}, "
                f"unexpected keys {unexpected}"
            )
        for n in names:
            if n not in keys:
                continue
            cur = getattr(self, n)
            new = _to_numpy(state_dict[n])
            if new.shape != cur.shape:
                raise ValueError(f"state_dict[{n!r}] must have shape {cur.shape}, got {new.shape}")
            setattr(self, n, new.astype(cur.dtype, copy=True))
        return self

    def __call__(self, x: Any, **kw: Any):
        return self.forward(x, **kw)

    def forward(self, x: Any, **kw: Any):  # pragma: no cover - abstract
        raise NotImplementedError


def _check_features(n: Any, name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise ValueError(f"{name} must be a positive int, got {n!r}")
    return int(n)


def _float_dtype(dtype: Any) -> np.dtype:
    dt = np.dtype(dtype)
    if dt.kind != "f":
        raise TypeError(f"dtype must be a float dtype, got {dt}")
    return dt


class _BatchLike(_Norm):
    _params = ("weight", "bias")
    _buffers = ("running_mean", "running_var", "num_batches_tracked")

    def __init__(self, num_features, eps, momentum, affine, track_running_stats, channel_axis, dtype):
        super().__init__()
        C = _check_features(num_features, "num_features")
        dt = _float_dtype(dtype)
        self.num_features = C
        self.eps = V.check_eps(eps)
        self.momentum = None if momentum is None else V.check_momentum(momentum)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        self.channel_axis = channel_axis
        self.weight = np.ones(C, dt) if affine else None
        self.bias = np.zeros(C, dt) if affine else None
        if track_running_stats:
            self.running_mean = np.zeros(C, dt)
            self.running_var = np.ones(C, dt)
            self.num_batches_tracked = np.array(0, dtype=np.int64)
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, track_running_stats={self.track_running_stats}, "
            f"channel_axis={self.channel_axis})"
        )


class BatchNorm(_BatchLike):
    """Batch normalization layer (``torch.nn.BatchNorm1d/2d/3d`` in one).

    ``momentum=None`` is a cumulative moving average of the per-batch
    statistics, as in PyTorch.

    Examples
    --------
    >>> import numpy as np, numbanorm as nbn
    >>> bn = nbn.BatchNorm(3)
    >>> y = bn(np.random.default_rng(0).standard_normal((8, 3, 5)).astype(np.float32))
    >>> int(bn.num_batches_tracked)
    1
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        *,
        channel_axis: int = 1,
        dtype: Any = np.float32,
    ):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, channel_axis, dtype)

    def forward(self, x: Any, **kw: Any):
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked += 1
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        bn_training = self.training or self.running_mean is None
        use_running = not self.training or self.track_running_stats
        return F.batch_norm(
            x,
            self.running_mean if use_running else None,
            self.running_var if use_running else None,
            self.weight,
            self.bias,
            bn_training,
            factor,
            self.eps,
            channel_axis=self.channel_axis,
            _host_running=True,
            **kw,
        )


class InstanceNorm(_BatchLike):
    """Instance normalization layer (``torch.nn.InstanceNorm1d/2d/3d`` in one)."""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = False,
        track_running_stats: bool = False,
        *,
        channel_axis: int = 1,
        dtype: Any = np.float32,
    ):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, channel_axis, dtype)

    def forward(self, x: Any, **kw: Any):
        return F.instance_norm(
            x,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            self.training or not self.track_running_stats,
            self.momentum if self.momentum is not None else 0.0,
            self.eps,
            channel_axis=self.channel_axis,
            _host_running=True,
            **kw,
        )


class LayerNorm(_Norm):
    """Layer normalization layer (``torch.nn.LayerNorm``)."""

    _params = ("weight", "bias")

    def __init__(
        self,
        normalized_shape: Any,
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        *,
        dtype: Any = np.float32,
    ):
        super().__init__()
        self.normalized_shape = V.shape_tuple(normalized_shape)
        dt = _float_dtype(dtype)
        self.eps = V.check_eps(eps)
        self.elementwise_affine = bool(elementwise_affine)
        self.weight = np.ones(self.normalized_shape, dt) if elementwise_affine else None
        self.bias = np.zeros(self.normalized_shape, dt) if elementwise_affine and bias else None

    def forward(self, x: Any, **kw: Any):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps, **kw)

    def __repr__(self) -> str:
        return (
            f"LayerNorm({self.normalized_shape}, eps={self.eps}, "
            f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None})"
        )


class GroupNorm(_Norm):
    """Group normalization layer (``torch.nn.GroupNorm``)."""

    _params = ("weight", "bias")

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        *,
        channel_axis: int = 1,
        dtype: Any = np.float32,
    ):
        super().__init__()
        C = _check_features(num_channels, "num_channels")
        G = _check_features(num_groups, "num_groups")
        if C % G:
            raise ValueError(f"num_groups={G} must divide num_channels={C}")
        dt = _float_dtype(dtype)
        self.num_groups, self.num_channels = G, C
        self.eps = V.check_eps(eps)
        self.affine = bool(affine)
        self.channel_axis = channel_axis
        self.weight = np.ones(C, dt) if affine else None
        self.bias = np.zeros(C, dt) if affine else None

    def forward(self, x: Any, **kw: Any):
        return F.group_norm(
            x, self.num_groups, self.weight, self.bias, self.eps, channel_axis=self.channel_axis, **kw
        )

    def __repr__(self) -> str:
        return f"GroupNorm({self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine})"


class RMSNorm(_Norm):
    """RMS normalization layer (``torch.nn.RMSNorm``)."""

    _params = ("weight",)

    def __init__(
        self,
        normalized_shape: Any,
        eps: float | None = None,
        elementwise_affine: bool = True,
        *,
        dtype: Any = np.float32,
    ):
        super().__init__()
        self.normalized_shape = V.shape_tuple(normalized_shape)
        dt = _float_dtype(dtype)
        self.eps = None if eps is None else V.check_eps(eps)
        self.elementwise_affine = bool(elementwise_affine)
        self.weight = np.ones(self.normalized_shape, dt) if elementwise_affine else None

    def forward(self, x: Any, **kw: Any):
        return F.rms_norm(x, self.normalized_shape, self.weight, self.eps, **kw)

    def __repr__(self) -> str:
        return (
            f"RMSNorm({self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine})"
        )
