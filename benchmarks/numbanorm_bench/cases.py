"""What is benchmarked: the ops, their shapes and targets, the arguments of
one call (shared by numbanorm and the NumPy baseline) and the PyTorch peers."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

Fn = Callable[[], object]  # one timed call

# Op name -> (public function, geometry of x).  Geometries: "rows" = (rows, D)
# normalized along the last axis; "nchw" / "nhwc" = image batches, channels
# first / last; "cols" = (samples, features) reduced over axis 0.
OPS: dict[str, tuple[str, str]] = {
    "batch_norm_train": ("batch_norm", "nchw"),
    "batch_norm_train_cl": ("batch_norm", "nhwc"),
    "batch_norm_eval": ("batch_norm", "nchw"),
    "instance_norm": ("instance_norm", "nchw"),
    "layer_norm": ("layer_norm", "rows"),
    "group_norm": ("group_norm", "nchw"),
    "rms_norm": ("rms_norm", "rows"),
    "standardize": ("standardize", "cols"),
    "minmax_scale": ("minmax_scale", "cols"),
    "lp_normalize": ("lp_normalize", "rows"),
}

# Shapes of x per geometry and size.  small = 2048 elements (32 x 64);
# medium = 1 Mi elements (4 MiB float32: cache-sized); large = 32 Mi
# elements (128 MiB float32, 256 MiB float64) on the CPU, 64 Mi (256 MiB
# float32) on a GPU.
CPU_SHAPES: dict[str, dict[str, tuple[int, ...]]] = {
    "small": {"rows": (32, 64), "nchw": (2, 16, 8, 8), "nhwc": (2, 8, 8, 16), "cols": (32, 64)},
    "medium": {
        "rows": (1024, 1024),
        "nchw": (16, 64, 32, 32),
        "nhwc": (16, 32, 32, 64),
        "cols": (4096, 256),
    },
    "large": {
        "rows": (8192, 4096),
        "nchw": (32, 64, 128, 128),
        "nhwc": (32, 128, 128, 64),
        "cols": (131072, 256),
    },
}
GPU_SHAPES: dict[str, dict[str, tuple[int, ...]]] = {
    "small": CPU_SHAPES["small"],
    "medium": CPU_SHAPES["medium"],
    "large": {
        "rows": (16384, 4096),
        "nchw": (64, 64, 128, 128),
        "nhwc": (64, 128, 128, 64),
        "cols": (262144, 256),
    },
}
SIZES = ("small", "medium", "large")
DTYPES = ("float32", "float64")

# Issue 3 (CPU): time <= target x floor; >= 2x torch; >= 3x NumPy.
_FUSED = 1.25  # one read + one write of x
_TWO_READS = 1.75  # statistics over the batch need a second read of x
CPU_TARGET_FLOOR: dict[str, float] = {
    "batch_norm_train": _TWO_READS,
    "batch_norm_train_cl": _TWO_READS,
    "batch_norm_eval": _FUSED,
    "instance_norm": _FUSED,
    "layer_norm": _FUSED,
    "group_norm": _FUSED,
    "rms_norm": _FUSED,
    "standardize": _TWO_READS,
    "minmax_scale": _TWO_READS,
    "lp_normalize": _FUSED,
}
TARGET_VS_TORCH = 2.0
TARGET_VS_NUMPY = 3.0
# Issue 4 (CUDA): bandwidth >= 85% of the floor's (75% for batch statistics),
# i.e. time <= floor / 0.85; never slower than torch; small calls <= 2x torch.
GPU_TARGET_FLOOR: dict[str, float] = {
    op: 1 / 0.75 if t == _TWO_READS else 1 / 0.85 for op, t in CPU_TARGET_FLOOR.items()
}
GPU_TARGET_VS_TORCH = 1.0
GPU_SMALL_MAX_VS_TORCH = 2.0

TORCH_PEER: dict[str, str] = {
    "batch_norm_train": "F.batch_norm(training=True)",
    "batch_norm_train_cl": "F.batch_norm(training=True) on a channels_last tensor",
    "batch_norm_eval": "F.batch_norm(training=False)",
    "instance_norm": "F.instance_norm",
    "layer_norm": "F.layer_norm",
    "group_norm": "F.group_norm",
    "rms_norm": "F.rms_norm",
    "standardize": "F.batch_norm(training=True) on (samples, features): per-column z-score",
    "minmax_scale": "torch.aminmax + (x - min) / range (no F equivalent)",
    "lp_normalize": "F.normalize",
}


# --------------------------------------------------------------------------
# cases: the arguments of one op, shared by numbanorm and the NumPy baseline


@dataclass(frozen=True)
class Case:
    """One benchmarked call: an op on an ``x`` of one size and dtype."""

    op: str
    size: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def func(self) -> str:
        return OPS[self.op][0]

    @property
    def nbytes(self) -> int:
        """Bytes of one read and one write of x."""
        return 2 * math.prod(self.shape) * np.dtype(self.dtype).itemsize


def case_args(case: Case) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Fresh (positional args after x, keyword args) for ``case.func``.

    Called once per candidate so that running statistics updated in place are
    not shared; the seed makes every candidate's parameters equal."""
    rng = np.random.default_rng(1)
    dt = np.dtype(case.dtype)
    geometry = OPS[case.op][1]
    c = case.shape[-1] if geometry in ("nhwc", "rows", "cols") else case.shape[1]

    def param(lo: float, hi: float) -> np.ndarray:
        return rng.uniform(lo, hi, c).astype(dt)

    w, b = param(0.5, 1.5), param(-0.5, 0.5)
    if case.op in ("batch_norm_train", "batch_norm_train_cl", "batch_norm_eval"):
        rm, rv = param(-0.1, 0.1), param(0.5, 2.0)
        kw = {"channel_axis": -1} if geometry == "nhwc" else {}
        return (rm, rv, w, b, case.op != "batch_norm_eval"), kw
    if case.op == "instance_norm":
        return (), {}
    if case.op == "layer_norm":
        return ((c,), w, b), {}
    if case.op == "group_norm":
        return (c // 2, w, b), {}
    if case.op == "rms_norm":
        return ((c,), w), {}
    if case.op in ("standardize", "minmax_scale"):
        return (), {"axis": 0}
    if case.op == "lp_normalize":
        return (), {"p": 2.0, "axis": -1}
    raise AssertionError(case.op)


def torch_fn(case: Case, xt: Any, tensor: Callable[[Any], Any], torch: Any) -> Fn:
    """The PyTorch peer of ``case`` on tensor ``xt`` (see TORCH_PEER)."""
    F = torch.nn.functional
    args, _ = case_args(case)
    a = [tensor(v) if isinstance(v, np.ndarray) else v for v in args]
    if case.func == "batch_norm":
        rm, rv, w, b, training = a
        # NHWC memory viewed as NCHW: a channels_last tensor, no copy.
        x4 = xt.permute(0, 3, 1, 2) if case.op == "batch_norm_train_cl" else xt
        return lambda: F.batch_norm(x4, rm, rv, w, b, training)
    if case.op == "instance_norm":
        return lambda: F.instance_norm(xt)
    if case.op == "layer_norm":
        return lambda: F.layer_norm(xt, a[0], a[1], a[2])
    if case.op == "group_norm":
        return lambda: F.group_norm(xt, a[0], a[1], a[2])
    if case.op == "rms_norm":
        return lambda: F.rms_norm(xt, list(a[0]), a[1])
    if case.op == "standardize":
        return lambda: F.batch_norm(xt, None, None, training=True)
    if case.op == "minmax_scale":

        def minmax() -> Any:
            lo, hi = torch.aminmax(xt, dim=0, keepdim=True)
            return (xt - lo) / (hi - lo)

        return minmax
    if case.op == "lp_normalize":
        return lambda: F.normalize(xt, p=2.0, dim=-1)
    raise AssertionError(case.op)


def bind(mod: Any, case: Case, x: Any, convert: Callable[[Any], Any] | None = None) -> Fn:
    """``mod.<func>(x, *args, **kwargs)`` as a zero-argument callable."""
    f = getattr(mod, case.func)
    args, kw = case_args(case)
    if convert is not None:
        args = tuple(convert(v) if isinstance(v, np.ndarray) else v for v in args)
    return lambda: f(x, *args, **kw)


def bind_out(mod: Any, case: Case, x: Any, out: Any, convert: Callable[[Any], Any] | None) -> Fn:
    """Like ``bind`` with ``out=``: the kernel's time without allocating y."""
    f = getattr(mod, case.func)
    args, kw = case_args(case)
    if convert is not None:
        args = tuple(convert(v) if isinstance(v, np.ndarray) else v for v in args)
    kw = {**kw, "out": out}
    return lambda: f(x, *args, **kw)


def import_torch() -> ModuleType | None:
    """torch if installed (an optional peer), else None."""
    try:
        import torch
    except ImportError:
        return None
    return torch
