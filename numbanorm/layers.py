"""Stateful normalization layers with PyTorch-compatible state.

The layers hold NumPy parameters and buffers under PyTorch's key names
(``weight``, ``bias``, ``running_mean``, ``running_var``,
``num_batches_tracked``), so ``load_state_dict`` accepts a PyTorch module's
``state_dict()`` directly, and they call the functions of
:mod:`numbanorm.functional` exactly as ``torch.nn`` modules call
``torch.nn.functional``.  Inputs may be NumPy, CUDA or Dask arrays;
parameters and buffers stay on the host (they are tiny) and running
statistics are updated there.  On a Dask array a layer returns a lazy
array, and in training mode its running statistics (NumPy buffers) are
updated at call time after an eager statistics pass, as the functional
API's NumPy running statistics are (tests/test_dask.py).

References
----------
S. Ioffe, C. Szegedy, "Batch Normalization: Accelerating Deep Network Training
by Reducing Internal Covariate Shift", ICML 2015.
D. Ulyanov, A. Vedaldi, V. Lempitsky, "Instance Normalization: The Missing
Ingredient for Fast Stylization", arXiv:1607.08022, 2016.
J. L. Ba, J. R. Kiros, G. E. Hinton, "Layer Normalization", arXiv:1607.06450, 2016.
Y. Wu, K. He, "Group Normalization", ECCV 2018.
B. Zhang, R. Sennrich, "Root Mean Square Layer Normalization", NeurIPS 2019.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from . import _validate as V
from . import functional as F

if TYPE_CHECKING:  # annotations only
    from collections.abc import Mapping, Sequence

    from numpy.typing import DTypeLike

__all__ = ["BatchNorm", "InstanceNorm", "LayerNorm", "GroupNorm", "RMSNorm"]


def _to_numpy(v: Any) -> np.ndarray:
    if hasattr(v, "detach"):  # a torch tensor, possibly on a GPU
        v = v.detach().cpu().numpy()
    elif hasattr(v, "copy_to_host"):
        v = v.copy_to_host()
    elif hasattr(v, "get") and type(v).__module__.startswith("cupy"):
        v = v.get()
    return np.asarray(v)


# the type of ``self`` in the shared methods that return it (typing.Self needs 3.11)
_N = TypeVar("_N", bound="_Norm")


class _Norm:
    """State handling shared by the layers: train/eval and state dicts."""

    _params: tuple[str, ...] = ()
    _buffers: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.training = True

    def train(self: _N, mode: bool = True) -> _N:
        """Set training mode (``mode=True``) or evaluation mode; returns self.

        As ``torch.nn.Module.train``: sets the :attr:`training` attribute,
        which only :class:`BatchNorm` and :class:`InstanceNorm` read (batch
        statistics and running-statistics updates in training mode, running
        statistics in evaluation mode when they are tracked).  Layers start in
        training mode.

        Parameters
        ----------
        mode : bool, default True
            True for training mode, False for evaluation mode.

        Returns
        -------
        self
            The layer, so calls can be chained.

        Examples
        --------
        >>> import numbanorm as nbn
        >>> nbn.BatchNorm(3).train(False).training
        False
        """
        self.training = bool(mode)
        return self

    def eval(self: _N) -> _N:
        """Set evaluation mode, ``train(False)``; returns self.

        Returns
        -------
        self
            The layer, so calls can be chained.

        Examples
        --------
        >>> import numbanorm as nbn
        >>> bn = nbn.BatchNorm(3).eval()
        >>> bn.training
        False
        """
        return self.train(False)

    def _state_names(self) -> list[str]:
        return [n for n in (*self._params, *self._buffers) if getattr(self, n, None) is not None]

    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """Return the parameters and buffers under PyTorch's key names.

        Keys in PyTorch's order: ``weight``, ``bias``, then (for the batch
        and instance norms) ``running_mean``, ``running_var``,
        ``num_batches_tracked`` (a 0-d int64 array); entries that the layer
        does not have (no affine parameters, no running statistics, no bias)
        are left out, as in PyTorch.

        Returns
        -------
        collections.OrderedDict of str to ndarray
            Copies: changing them does not change the layer.

        Examples
        --------
        >>> import numbanorm as nbn
        >>> list(nbn.BatchNorm(3).state_dict())
        ['weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked']
        >>> list(nbn.LayerNorm(4, bias=False).state_dict())
        ['weight']
        """
        return OrderedDict((n, np.array(getattr(self, n), copy=True)) for n in self._state_names())

    def load_state_dict(self: _N, state_dict: Mapping[str, Any], strict: bool = True) -> _N:
        """Load parameters and buffers from a mapping of arrays; returns self.

        Accepts anything ``np.asarray`` reads, and PyTorch tensors (CPU or
        CUDA), numba device arrays and CuPy arrays, which are copied to the
        host: a PyTorch module's ``state_dict()`` loads directly.  Each value
        must have the shape of the layer's entry; it is copied and converted
        to that entry's dtype, and replaces the layer's array.  Unlike
        PyTorch, which returns the missing and unexpected keys, this returns
        ``self``.

        Parameters
        ----------
        state_dict : mapping of str to array_like
            Values under the key names of :meth:`state_dict`.
        strict : bool, default True
            Require exactly the keys of :meth:`state_dict`.  With False,
            missing keys keep their current values and unexpected keys are
            ignored.

        Returns
        -------
        self
            The layer, so calls can be chained.

        Raises
        ------
        ValueError
            With ``strict``, a key is missing or unexpected (the message
            lists them); or a value has the wrong shape.  Nothing is loaded
            when the keys do not match; a wrong shape stops the loading at
            that key.

        Examples
        --------
        >>> import numpy as np, numbanorm as nbn
        >>> bn = nbn.BatchNorm(2).load_state_dict({"weight": [2.0, 3.0]}, strict=False)
        >>> bn.weight
        array([2., 3.], dtype=float32)
        """
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

    def __call__(self, x: Any, **kw: Any) -> Any:
        """Apply the layer: ``layer(x, **kw)`` is ``layer.forward(x, **kw)``.

        Parameters
        ----------
        x : array_like or CUDA array
            The input; see the layer's ``forward``.
        **kw
            Keyword arguments of ``forward`` (``out``, ``return_stats``,
            ``stream``).

        Returns
        -------
        array or tuple of arrays
            What ``forward`` returns: ``y``, or ``y`` and the statistics.

        Examples
        --------
        >>> import numpy as np, numbanorm as nbn
        >>> nbn.LayerNorm(2)(np.array([[1.0, 3.0]])).round(3)
        array([[-1.,  1.]])
        """
        return self.forward(x, **kw)

    def forward(self, x: Any, **kw: Any) -> Any:  # pragma: no cover - abstract
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
        """Reset the running statistics in place: mean 0, variance 1, no batch tracked.

        As ``torch.nn.modules.batchnorm._NormBase.reset_running_stats``; does
        nothing without ``track_running_stats``.  ``weight`` and ``bias`` are
        left as they are.

        Examples
        --------
        >>> import numpy as np, numbanorm as nbn
        >>> bn = nbn.BatchNorm(2)
        >>> _ = bn(np.array([[1.0, 2.0], [3.0, 6.0]]))
        >>> bn.reset_running_stats()
        >>> bn.running_mean, int(bn.num_batches_tracked)
        (array([0., 0.], dtype=float32), 0)
        """
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

    Each channel is normalized over every other axis (batch and spatial):
    ``y = (x - mean) / sqrt(var + eps) * weight + bias``, by
    :func:`numbanorm.batch_norm`.  In training mode the batch's statistics
    (biased variance) are used and, with ``track_running_stats``, the running
    statistics are updated in place, PyTorch's way:
    ``running = (1 - momentum) * running + momentum * stat`` with the
    unbiased batch variance for ``running_var``, and ``num_batches_tracked``
    grows by 1.  ``momentum=None`` makes the running statistics a cumulative
    average (``momentum = 1 / num_batches_tracked``).  In evaluation mode the
    running statistics are used; without ``track_running_stats`` the batch's
    statistics are always used.  NaN is not skipped: it makes its channel's
    output (and running statistics) NaN, as in PyTorch.

    Parameters
    ----------
    num_features : int
        Number of channels C.
    eps : float, default 1e-5
        Added to the variance before the square root.
    momentum : float or None, default 0.1
        Weight of the new batch in the running statistics, in [0, 1]; None
        for a cumulative moving average.
    affine : bool, default True
        Learnable-style per-channel ``weight`` (ones) and ``bias`` (zeros).
    track_running_stats : bool, default True
        Keep ``running_mean``, ``running_var`` and ``num_batches_tracked``.
    channel_axis : int, default 1
        Axis of the channels in the input; ``-1`` for channels-last (NHWC).
    dtype : dtype, default float32
        Float dtype of the parameters and buffers.

    Attributes
    ----------
    weight, bias : ndarray of shape (C,) or None
        Affine parameters (None without ``affine``).
    running_mean, running_var : ndarray of shape (C,) or None
        Running statistics, zeros and ones at first (None without
        ``track_running_stats``).  Updated in place on the host, also for
        CUDA inputs.
    num_batches_tracked : ndarray of shape (), int64, or None
        Training batches seen (None without ``track_running_stats``).
    training : bool
        Training mode (True at first); see :meth:`train`, :meth:`eval`.
    num_features, eps, momentum, affine, track_running_stats, channel_axis
        The constructor's arguments (``eps`` as a float).

    Raises
    ------
    ValueError
        ``num_features`` is not a positive int, ``eps`` is negative or
        infinite, ``momentum`` is outside [0, 1].
    TypeError
        ``dtype`` is not a float dtype, ``eps`` or ``momentum`` is not a
        real number.

    See Also
    --------
    numbanorm.batch_norm  : The function this layer calls.

    References
    ----------
    .. [1] S. Ioffe, C. Szegedy, "Batch Normalization: Accelerating Deep
       Network Training by Reducing Internal Covariate Shift", ICML 2015.

    Examples
    --------
    >>> import numpy as np, numbanorm as nbn
    >>> bn = nbn.BatchNorm(3)
    >>> y = bn(np.random.default_rng(0).standard_normal((8, 3, 5)).astype(np.float32))
    >>> int(bn.num_batches_tracked)
    1
    >>> bool(abs(y.mean()) < 1e-6)
    True

    Channels-last input (N, H, W, C):

    >>> bn = nbn.BatchNorm(3, channel_axis=-1).eval()
    >>> bn(np.ones((2, 4, 4, 3), np.float32)).shape
    (2, 4, 4, 3)
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
        dtype: DTypeLike = np.float32,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, channel_axis, dtype)

    def forward(self, x: Any, **kw: Any) -> Any:
        """Normalize ``x`` per channel; in training mode, update the running statistics.

        Parameters
        ----------
        x : array_like or CUDA array
            Shape (N, C, *), the channels on ``channel_axis``; float16/32/64,
            integer or bool; a NumPy array or a CUDA array (anything with
            ``__cuda_array_interface__``).
        **kw
            Keyword arguments of :func:`numbanorm.batch_norm`: ``out`` (the
            result array, may be ``x``), ``return_stats``, ``stream``.

        Returns
        -------
        y : array
            Normalized ``x``, of ``x``'s shape and array type; ``x``'s float
            dtype, float64 for integer or bool input.
        mean, rstd : array of shape (C,)
            Only with ``return_stats=True``: the statistics used (float32
            for float16/32 input, float64 for float64).

        Raises
        ------
        ValueError
            ``x`` has fewer than 2 dimensions, ``channel_axis`` is out of
            range, the parameters or running statistics do not match ``x``'s
            channel count, or training with one value per channel.
        TypeError
            ``x`` has an unsupported dtype.

        Examples
        --------
        >>> import numpy as np, numbanorm as nbn
        >>> bn = nbn.BatchNorm(2, dtype=np.float64)
        >>> bn(np.array([[1.0, 2.0], [3.0, 6.0]])).round(4)
        array([[-1., -1.],
               [ 1.,  1.]])
        >>> bn.running_mean
        array([0.2, 0.4])
        """
        factor = 0.0 if self.momentum is None else self.momentum
        counts = self.training and self.track_running_stats
        if counts and self.momentum is None:
            factor = 1.0 / float(self.num_batches_tracked + 1)
        bn_training = self.training or self.running_mean is None
        use_running = not self.training or self.track_running_stats
        res = F.batch_norm(
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
        if counts:  # (after the call: a rejected x is not a batch seen)
            self.num_batches_tracked += 1
        return res


class InstanceNorm(_BatchLike):
    """Instance normalization layer (``torch.nn.InstanceNorm1d/2d/3d`` in one).

    Each (sample, channel) is normalized over the spatial axes (every axis
    but 0 and ``channel_axis``) by :func:`numbanorm.instance_norm`, with the
    biased variance.  As in PyTorch, there are no affine parameters and no
    running statistics by default.  With ``track_running_stats``, training
    mode updates ``running_mean``/``running_var`` in place with the batch mean
    of the per-instance means and unbiased variances (``num_batches_tracked``
    is kept for state-dict compatibility but not incremented, as in PyTorch;
    ``momentum=None`` leaves the running statistics unchanged), and
    evaluation mode normalizes with them.  NaN is not skipped: it makes its
    instance's output NaN.

    Parameters
    ----------
    num_features : int
        Number of channels C.
    eps : float, default 1e-5
        Added to the variance before the square root.
    momentum : float or None, default 0.1
        Weight of the new batch in the running statistics, in [0, 1].
    affine : bool, default False
        Per-channel ``weight`` (ones) and ``bias`` (zeros).
    track_running_stats : bool, default False
        Keep ``running_mean``, ``running_var`` and ``num_batches_tracked``.
    channel_axis : int, default 1
        Axis of the channels in the input (not 0); ``-1`` for channels-last.
    dtype : dtype, default float32
        Float dtype of the parameters and buffers.

    Attributes
    ----------
    weight, bias : ndarray of shape (C,) or None
        Affine parameters (None without ``affine``).
    running_mean, running_var : ndarray of shape (C,) or None
        Running statistics (None without ``track_running_stats``), on the
        host.
    num_batches_tracked : ndarray of shape (), int64, or None
        Never incremented: 0 unless loaded (None without
        ``track_running_stats``).
    training : bool
        Training mode (True at first); see :meth:`train`, :meth:`eval`.
    num_features, eps, momentum, affine, track_running_stats, channel_axis
        The constructor's arguments (``eps`` as a float).

    Raises
    ------
    ValueError
        ``num_features`` is not a positive int, ``eps`` is negative or
        infinite, ``momentum`` is outside [0, 1].
    TypeError
        ``dtype`` is not a float dtype, ``eps`` or ``momentum`` is not a
        real number.

    See Also
    --------
    numbanorm.instance_norm  : The function this layer calls.

    References
    ----------
    .. [1] D. Ulyanov, A. Vedaldi, V. Lempitsky, "Instance Normalization: The
       Missing Ingredient for Fast Stylization", arXiv:1607.08022, 2016.

    Examples
    --------
    >>> import numpy as np, numbanorm as nbn
    >>> x = np.random.default_rng(0).standard_normal((2, 3, 16))
    >>> y = nbn.InstanceNorm(3)(x)
    >>> bool(np.allclose(y.mean(axis=2), 0) and np.allclose(y.var(axis=2), 1, atol=1e-3))
    True
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = False,
        track_running_stats: bool = False,
        *,
        channel_axis: int = 1,
        dtype: DTypeLike = np.float32,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, channel_axis, dtype)

    def forward(self, x: Any, **kw: Any) -> Any:
        """Normalize each (sample, channel) of ``x`` over its spatial axes.

        Uses the input's statistics in training mode or without
        ``track_running_stats`` (updating the running statistics in the first
        case), the running statistics otherwise.

        Parameters
        ----------
        x : array_like or CUDA array
            Shape (N, C, *spatial) with at least one spatial axis, the
            channels on ``channel_axis``; float16/32/64, integer or bool; a
            NumPy array or a CUDA array.
        **kw
            Keyword arguments of :func:`numbanorm.instance_norm`: ``out``,
            ``return_stats``, ``stream``.

        Returns
        -------
        y : array
            Normalized ``x``, of ``x``'s shape and array type; ``x``'s float
            dtype, float64 for integer or bool input.
        mean, rstd : array of shape (N, C)
            Only with ``return_stats=True``: the statistics used.

        Raises
        ------
        ValueError
            ``x`` has fewer than 3 dimensions, ``channel_axis`` is 0 or out of
            range, the parameters or running statistics do not match ``x``'s
            channel count, or input statistics are taken with one spatial
            element.
        TypeError
            ``x`` has an unsupported dtype.

        Examples
        --------
        >>> import numpy as np, numbanorm as nbn
        >>> inorm = nbn.InstanceNorm(2, track_running_stats=True, dtype=np.float64)
        >>> _ = inorm(np.array([[[0.0, 2.0], [1.0, 5.0]]]))
        >>> inorm.running_mean
        array([0.1, 0.3])
        """
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
    """Layer normalization layer (``torch.nn.LayerNorm``).

    Each sample is normalized over its trailing ``normalized_shape`` axes by
    :func:`numbanorm.layer_norm`:
    ``y = (x - mean) / sqrt(var + eps) * weight + bias`` with the biased
    variance.  There are no running statistics: training and evaluation mode
    compute the same.  NaN is not skipped: it makes its row's output NaN.

    Parameters
    ----------
    normalized_shape : int or sequence of int
        The trailing shape normalized over.
    eps : float, default 1e-5
        Added to the variance before the square root.
    elementwise_affine : bool, default True
        Element-wise ``weight`` (ones) and ``bias`` (zeros) of shape
        ``normalized_shape``.
    bias : bool, default True
        With ``elementwise_affine``, also a ``bias`` (else ``weight`` only).
    dtype : dtype, default float32
        Float dtype of the parameters.

    Attributes
    ----------
    weight, bias : ndarray of shape normalized_shape, or None
        Affine parameters (None when not requested).
    normalized_shape : tuple of int
        The normalized shape, as a tuple.
    training : bool
        Training mode (True at first); does not change the result.
    eps, elementwise_affine
        The constructor's arguments (``eps`` as a float).

    Raises
    ------
    ValueError
        ``eps`` is negative or infinite.
    TypeError
        ``normalized_shape`` is not an int or a non-empty sequence of ints,
        ``dtype`` is not a float dtype, ``eps`` is not a real number.

    See Also
    --------
    numbanorm.layer_norm  : The function this layer calls.

    References
    ----------
    .. [1] J. L. Ba, J. R. Kiros, G. E. Hinton, "Layer Normalization",
       arXiv:1607.06450, 2016.

    Examples
    --------
    >>> import numpy as np, numbanorm as nbn
    >>> ln = nbn.LayerNorm(4)
    >>> ln(np.array([[1.0, 2.0, 3.0, 4.0]], np.float32)).round(3)
    array([[-1.342, -0.447,  0.447,  1.342]], dtype=float32)
    """

    _params = ("weight", "bias")

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        *,
        dtype: DTypeLike = np.float32,
    ) -> None:
        super().__init__()
        self.normalized_shape = V.shape_tuple(normalized_shape)
        dt = _float_dtype(dtype)
        self.eps = V.check_eps(eps)
        self.elementwise_affine = bool(elementwise_affine)
        self.weight = np.ones(self.normalized_shape, dt) if elementwise_affine else None
        self.bias = np.zeros(self.normalized_shape, dt) if elementwise_affine and bias else None

    def forward(self, x: Any, **kw: Any) -> Any:
        """Normalize ``x`` over its trailing ``normalized_shape`` axes.

        Parameters
        ----------
        x : array_like or CUDA array
            Shape ``(*, *normalized_shape)``; float16/32/64, integer or bool;
            a NumPy array or a CUDA array.
        **kw
            Keyword arguments of :func:`numbanorm.layer_norm`: ``out``,
            ``return_stats``, ``stream``.

        Returns
        -------
        y : array
            Normalized ``x``, of ``x``'s shape and array type; ``x``'s float
            dtype, float64 for integer or bool input.
        mean, rstd : array of shape ``x.shape[:-k] + (1,) * k``
            Only with ``return_stats=True`` (``k = len(normalized_shape)``).

        Raises
        ------
        ValueError
            ``x``'s trailing shape is not ``normalized_shape``, or ``x`` is
            empty.
        TypeError
            ``x`` has an unsupported dtype.

        Examples
        --------
        >>> import numpy as np, numbanorm as nbn
        >>> y, mean, rstd = nbn.LayerNorm((2, 3))(np.ones((4, 2, 3)), return_stats=True)
        >>> mean.shape
        (4, 1, 1)
        """
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps, **kw)

    def __repr__(self) -> str:
        return (
            f"LayerNorm({self.normalized_shape}, eps={self.eps}, "
            f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None})"
        )


class GroupNorm(_Norm):
    """Group normalization layer (``torch.nn.GroupNorm``).

    The C channels are split into ``num_groups`` consecutive groups; each
    (sample, group) is normalized over its channels and the spatial axes by
    :func:`numbanorm.group_norm` (biased variance), then scaled and shifted
    per channel.  There are no running statistics: training and evaluation
    mode compute the same.  NaN is not skipped: it makes its group's output
    NaN.

    Parameters
    ----------
    num_groups : int
        Number of groups G; must divide ``num_channels``.
    num_channels : int
        Number of channels C.
    eps : float, default 1e-5
        Added to the variance before the square root.
    affine : bool, default True
        Per-channel ``weight`` (ones) and ``bias`` (zeros).
    channel_axis : int, default 1
        Axis of the channels in the input (not 0); ``-1`` for channels-last.
    dtype : dtype, default float32
        Float dtype of the parameters.

    Attributes
    ----------
    weight, bias : ndarray of shape (C,) or None
        Affine parameters (None without ``affine``).
    training : bool
        Training mode (True at first); does not change the result.
    num_groups, num_channels, eps, affine, channel_axis
        The constructor's arguments (``eps`` as a float).

    Raises
    ------
    ValueError
        ``num_groups`` or ``num_channels`` is not a positive int, or G does
        not divide C; ``eps`` is negative or infinite.
    TypeError
        ``dtype`` is not a float dtype, ``eps`` is not a real number.

    See Also
    --------
    numbanorm.group_norm  : The function this layer calls.

    References
    ----------
    .. [1] Y. Wu, K. He, "Group Normalization", ECCV 2018.

    Examples
    --------
    >>> import numpy as np, numbanorm as nbn
    >>> gn = nbn.GroupNorm(2, 4)
    >>> y = gn(np.random.default_rng(0).standard_normal((3, 4, 5)).astype(np.float32))
    >>> bool(np.allclose(y.reshape(3, 2, 10).mean(axis=2), 0, atol=1e-6))
    True
    """

    _params = ("weight", "bias")

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        *,
        channel_axis: int = 1,
        dtype: DTypeLike = np.float32,
    ) -> None:
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

    def forward(self, x: Any, **kw: Any) -> Any:
        """Normalize each (sample, group of channels) of ``x``.

        Parameters
        ----------
        x : array_like or CUDA array
            Shape (N, C, *), the channels on ``channel_axis``; float16/32/64,
            integer or bool; a NumPy array or a CUDA array.
        **kw
            Keyword arguments of :func:`numbanorm.group_norm`: ``out``,
            ``return_stats``, ``stream``.

        Returns
        -------
        y : array
            Normalized ``x``, of ``x``'s shape and array type; ``x``'s float
            dtype, float64 for integer or bool input.
        mean, rstd : array of shape (N, G)
            Only with ``return_stats=True``.

        Raises
        ------
        ValueError
            ``x`` has fewer than 2 dimensions, ``channel_axis`` is 0 or out of
            range, or ``x``'s channel count is not divisible by ``num_groups``
            or does not match the parameters.
        TypeError
            ``x`` has an unsupported dtype.

        Examples
        --------
        >>> import numpy as np, numbanorm as nbn
        >>> x = np.random.default_rng(0).standard_normal((2, 6, 5))
        >>> y, mean, rstd = nbn.GroupNorm(3, 6)(x, return_stats=True)
        >>> mean.shape
        (2, 3)
        """
        return F.group_norm(
            x, self.num_groups, self.weight, self.bias, self.eps, channel_axis=self.channel_axis, **kw
        )

    def __repr__(self) -> str:
        return f"GroupNorm({self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine})"


class RMSNorm(_Norm):
    """RMS normalization layer (``torch.nn.RMSNorm``).

    Each sample is scaled over its trailing ``normalized_shape`` axes by
    :func:`numbanorm.rms_norm`: ``y = x / sqrt(mean(x**2) + eps) * weight``
    (no centering, no bias).  There are no running statistics: training and
    evaluation mode compute the same.  NaN is not skipped: it makes its row's
    output NaN.

    Parameters
    ----------
    normalized_shape : int or sequence of int
        The trailing shape normalized over.
    eps : float or None, default None
        Added to the mean square; None uses the default of
        :func:`numbanorm.rms_norm` (PyTorch 2.13's: float32's epsilon for
        float16 input, ``np.finfo(x.dtype).eps`` otherwise).
    elementwise_affine : bool, default True
        Element-wise ``weight`` (ones) of shape ``normalized_shape``.
    dtype : dtype, default float32
        Float dtype of the parameter.

    Attributes
    ----------
    weight : ndarray of shape normalized_shape, or None
        Scale parameter (None without ``elementwise_affine``).
    normalized_shape : tuple of int
        The normalized shape, as a tuple.
    training : bool
        Training mode (True at first); does not change the result.
    eps, elementwise_affine
        The constructor's arguments (``eps`` as a float).

    Raises
    ------
    ValueError
        ``eps`` is negative or infinite.
    TypeError
        ``normalized_shape`` is not an int or a non-empty sequence of ints,
        ``dtype`` is not a float dtype, ``eps`` is not a real number or None.

    See Also
    --------
    numbanorm.rms_norm  : The function this layer calls.

    References
    ----------
    .. [1] B. Zhang, R. Sennrich, "Root Mean Square Layer Normalization",
       NeurIPS 2019.

    Examples
    --------
    >>> import numpy as np, numbanorm as nbn
    >>> nbn.RMSNorm(2, eps=0.0)(np.array([[3.0, 4.0]])).round(4)
    array([[0.8485, 1.1314]])
    """

    _params = ("weight",)

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float | None = None,
        elementwise_affine: bool = True,
        *,
        dtype: DTypeLike = np.float32,
    ) -> None:
        super().__init__()
        self.normalized_shape = V.shape_tuple(normalized_shape)
        dt = _float_dtype(dtype)
        self.eps = None if eps is None else V.check_eps(eps)
        self.elementwise_affine = bool(elementwise_affine)
        self.weight = np.ones(self.normalized_shape, dt) if elementwise_affine else None

    def forward(self, x: Any, **kw: Any) -> Any:
        """Scale ``x`` by the reciprocal root mean square of its trailing axes.

        Parameters
        ----------
        x : array_like or CUDA array
            Shape ``(*, *normalized_shape)``; float16/32/64, integer or bool;
            a NumPy array or a CUDA array.
        **kw
            Keyword arguments of :func:`numbanorm.rms_norm`: ``out``,
            ``return_stats``, ``stream``.

        Returns
        -------
        y : array
            Normalized ``x``, of ``x``'s shape and array type; ``x``'s float
            dtype, float64 for integer or bool input.
        rstd : array of shape ``x.shape[:-k] + (1,) * k``
            Only with ``return_stats=True`` (``k = len(normalized_shape)``).

        Raises
        ------
        ValueError
            ``x``'s trailing shape is not ``normalized_shape``, or ``x`` is
            empty.
        TypeError
            ``x`` has an unsupported dtype.

        Examples
        --------
        >>> import numpy as np, numbanorm as nbn
        >>> y, rstd = nbn.RMSNorm(4)(np.full((2, 4), 2.0, np.float32), return_stats=True)
        >>> y
        array([[1., 1., 1., 1.],
               [1., 1., 1., 1.]], dtype=float32)
        """
        return F.rms_norm(x, self.normalized_shape, self.weight, self.eps, **kw)

    def __repr__(self) -> str:
        return (
            f"RMSNorm({self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine})"
        )
