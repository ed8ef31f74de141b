"""The benchmark suite behind ``numbanorm bench``.

Every op is timed against the physical limit of the machine, the *copy
floor*: one read and one write of the bytes of ``x``, measured in the same
run as the fastest of ``np.copyto`` and two ``prange`` copy kernels, one
with ordinary and one with streaming (non-temporal) stores (on a GPU: a
device-to-device copy).  Throughput is reported in GB/s with
``bytes = x.nbytes (read) + y.nbytes (written)``, whatever the op reads in
between, so ``time / floor`` says how far an op is from the bandwidth limit.

Peers, each measured on ordinary allocating calls with the same thread count:
the NumPy baselines of ``benchmarks/numpy_ops.py`` (source checkout only) and
PyTorch's ``torch.nn.functional`` when torch is installed.  All candidates of
one case are interleaved in every repetition (rotating the order), so machine
drift hits all alike, and the reported time is the median of the repetitions
after warm-up.  Targets are those of issues 3 (CPU) and 4 (CUDA).

Run ``numbanorm bench --help`` or see ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numba
import numpy as np
from numba import njit, prange

from .backends import cpu as _cpu

Fn = Callable[[], object]

SCHEMA = "numbanorm-bench/1"

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


class UsageError(Exception):
    """Bad command-line arguments (exit status 2)."""


class BenchError(Exception):
    """The benchmark cannot run here (exit status 1)."""


# --------------------------------------------------------------------------
# the copy floor (CPU)


@njit(parallel=True, cache=True)
def _prange_copy(dst, src):  # (n,) <- (n,)
    """Parallel copy with ordinary stores: one candidate of the CPU floor."""
    for i in prange(src.shape[0]):
        dst[i] = src[i]


_STREAM_BLOCK = 1 << 16  # elements of one task of the streaming copy


@njit(parallel=True, cache=True)
def _prange_stream_copy(dst, src):  # (n,) <- (n,)
    """Parallel copy with streaming stores (no read-for-ownership of the
    destination: one read and one write of the bytes, the true limit); the
    same store the apply kernel uses for large outputs (backends/cpu.py)."""
    n = src.shape[0]
    isz = dst.itemsize
    for t in prange((n + _STREAM_BLOCK - 1) // _STREAM_BLOCK):
        lo = t * _STREAM_BLOCK
        d = dst[lo : min(n, lo + _STREAM_BLOCK)]
        s = src[lo : min(n, lo + _STREAM_BLOCK)]
        a, b = _cpu._stream_span(d.ctypes.data, 0, d.size, isz, True)
        for i in range(a):
            d[i] = s[i]
        if a < d.size:
            ds = d[a:b]
            ss = s[a:b]
            for i in range(ds.size):
                _cpu._stream_store(ds, i, ss[i])
            dt = d[b:]
            st = s[b:]
            for i in range(dt.size):
                dt[i] = st[i]


# --------------------------------------------------------------------------
# cases: the arguments of one op, shared by numbanorm and the NumPy baseline


@dataclass(frozen=True)
class Case:
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


def _case_args(case: Case) -> tuple[tuple[Any, ...], dict[str, Any]]:
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


def _torch_fn(case: Case, xt: Any, tensor: Callable[[Any], Any], torch: Any) -> Fn:
    """The PyTorch peer of ``case`` on tensor ``xt`` (see TORCH_PEER)."""
    F = torch.nn.functional
    args, _ = _case_args(case)
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


def _bind(mod: Any, case: Case, x: Any, convert: Callable[[Any], Any] | None = None) -> Fn:
    """``mod.<func>(x, *args, **kwargs)`` as a zero-argument callable."""
    f = getattr(mod, case.func)
    args, kw = _case_args(case)
    if convert is not None:
        args = tuple(convert(v) if isinstance(v, np.ndarray) else v for v in args)
    return lambda: f(x, *args, **kw)


def _bind_out(mod: Any, case: Case, x: Any, out: Any, convert: Callable[[Any], Any] | None) -> Fn:
    """Like ``_bind`` with ``out=``: the kernel's time without allocating y."""
    f = getattr(mod, case.func)
    args, kw = _case_args(case)
    if convert is not None:
        args = tuple(convert(v) if isinstance(v, np.ndarray) else v for v in args)
    kw = {**kw, "out": out}
    return lambda: f(x, *args, **kw)


# --------------------------------------------------------------------------
# timing


def _wall(fn: Fn, number: int) -> float:
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return time.perf_counter() - t0


def _short(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0] if msg else ''}"[:300]


class QuietGuard:
    """Rejects repetitions during which other processes used the CPU.

    On a shared machine a parallel kernel waits for its slowest thread, so one
    competing process can double its time while a single-threaded peer barely
    notices: the comparison would be biased, not just noisy.  The guard reads
    the machine's busy CPU time (``/proc/stat``) and this process's own
    (``/proc/self/stat``) around each repetition; a repetition in which other
    processes were busy for more than ``max(2 ticks, 10%)`` of its wall time is
    discarded and run again after a pause, at most ``max_retries`` times per
    case.  Linux only; elsewhere it accepts everything."""

    def __init__(self, max_retries: int, pause_s: float = 0.25) -> None:
        self.max_retries, self.pause_s = max_retries, pause_s
        self.hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.enabled = self._snapshot() is not None

    @staticmethod
    def _snapshot() -> tuple[int, int, float] | None:
        try:
            cpu = Path("/proc/stat").read_text().split("\n", 1)[0].split()
            mine = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        # user nice system idle iowait irq softirq steal: busy = all but idle/iowait
        f = [int(v) for v in cpu[1:9]]
        busy = f[0] + f[1] + f[2] + f[5] + f[6] + f[7]
        return busy, int(mine[11]) + int(mine[12]), time.perf_counter()

    def begin(self) -> tuple[int, int, float] | None:
        return self._snapshot() if self.enabled else None

    def quiet(self, start: tuple[int, int, float] | None) -> tuple[bool, float | None]:
        end = self._snapshot() if start is not None else None
        if start is None or end is None:
            return True, None
        wall = max(end[2] - start[2], 1e-9)
        other_ticks = max(0, (end[0] - start[0]) - (end[1] - start[1]))
        return other_ticks <= max(2, 0.1 * wall * self.hz), other_ticks / self.hz / wall


def measure(
    fns: dict[str, Fn],
    repeat: int,
    min_sample_s: float,
    clocks: dict[str, Callable[[Fn, int], float]] | None = None,
    guard: QuietGuard | None = None,
) -> tuple[dict[str, float], dict[str, str], dict[str, Any]]:
    """Median seconds per call of every candidate, errors of those that
    failed, and how the sampling went (``calls_per_sample``, contention).

    Each candidate is warmed up (two calls: compilation and first touch),
    calibrated to ``number`` calls per sample of at least ``min_sample_s``,
    then sampled ``repeat`` times; in each repetition all candidates run once,
    in an order rotated by one per repetition, so slow drift (frequency,
    other load) hits all alike.  ``clocks`` maps a name to its timer
    ``(fn, number) -> seconds`` (default: wall clock); ``guard`` re-runs
    repetitions disturbed by other processes."""
    clocks = clocks or {}
    live: dict[str, Fn] = {}
    errors: dict[str, str] = {}
    number: dict[str, int] = {}
    for name, fn in fns.items():
        clock = clocks.get(name, _wall)
        try:
            fn()
            fn()
            t = clock(fn, 1)
        except Exception as e:  # noqa: BLE001 - any failure of a candidate is reported
            errors[name] = _short(e)
            continue
        live[name] = fn
        number[name] = max(1, min(100_000, math.ceil(min_sample_s / max(t, 1e-9))))
    samples: dict[str, list[float]] = {n: [] for n in live}
    names = list(live)
    rejected = 0
    others: list[float] = []
    r = 0
    while r < repeat and names:
        k = r % len(names)
        start = guard.begin() if guard is not None else None
        rep = {}
        for name in names[k:] + names[:k]:
            clock = clocks.get(name, _wall)
            rep[name] = clock(live[name], number[name]) / number[name]
        if guard is not None:
            ok, load = guard.quiet(start)
            if not ok and rejected < guard.max_retries:
                rejected += 1
                time.sleep(guard.pause_s)
                continue
            if load is not None:
                others.append(load)
        for name, v in rep.items():
            samples[name].append(v)
        r += 1
    info = {
        "calls_per_sample": number,
        "repetitions": repeat,
        "rejected_repetitions": rejected,
        "other_processes_cores": None if not others else round(statistics.median(others), 3),
    }
    return {n: statistics.median(v) for n, v in samples.items()}, errors, info


# --------------------------------------------------------------------------
# results


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den <= 0:
        return None
    return num / den


def _result(
    case: Case,
    threads: int | None,
    times: dict[str, float],
    errors: dict[str, str],
    floor_names: Sequence[str],
    target_floor: float,
    target_torch: float,
    info: dict[str, Any],
    primary: str = "numbanorm",
) -> dict[str, Any]:
    floors = [times[n] for n in floor_names if n in times]
    floor = min(floors) if floors else None
    t = times.get(primary)
    gbps = {n: case.nbytes / v / 1e9 for n, v in times.items() if v > 0}
    if floor is not None:
        gbps["floor"] = case.nbytes / floor / 1e9
    ratios = {
        "time_over_floor": _ratio(t, floor),
        "torch_over_numbanorm": _ratio(times.get("torch"), t),
        "numpy_over_numbanorm": _ratio(times.get("numpy"), t),
    }
    ratios["over_floor"] = {n: _ratio(v, floor) for n, v in times.items() if n not in floor_names}
    # out= writes the floor's own destination: the like-for-like ratio
    ratios["out_over_floor"] = _ratio(times.get(primary + "_out"), floor)
    meets: dict[str, bool | None] = {
        "floor": None if ratios["time_over_floor"] is None else ratios["time_over_floor"] <= target_floor,
        "floor_out": None if ratios["out_over_floor"] is None else ratios["out_over_floor"] <= target_floor,
        "torch": None
        if ratios["torch_over_numbanorm"] is None
        else ratios["torch_over_numbanorm"] >= target_torch,
    }
    if "numpy" in times or "numpy" in errors:
        r = ratios["numpy_over_numbanorm"]
        meets["numpy"] = None if r is None else r >= TARGET_VS_NUMPY
    times_out = dict(times)
    if floor is not None:
        times_out["floor"] = floor
    return {
        "op": case.op,
        "function": case.func,
        "size": case.size,
        "dtype": case.dtype,
        "shape": list(case.shape),
        "threads": threads,
        "bytes": case.nbytes,
        "primary": primary,
        "times_s": times_out,
        "gbps": gbps,
        "ratios": ratios,
        "targets": {"time_over_floor": target_floor, "torch_over_numbanorm": target_torch},
        "meets": meets,
        "torch_peer": TORCH_PEER[case.op],
        "sampling": info,
        "errors": errors,
    }


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _times(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


_HEAD = (
    f"{'op':<20} {'size':<6} {'dtype':<7} {'shape':<18} {'thr':>3} {'time':>10} "
    f"{'GB/s':>7} {'floor':>7} {'t/floor':>8} {'target':>6} {'vs torch':>8} {'vs numpy':>8}"
)


def _row(res: dict[str, Any]) -> str:
    t = res["times_s"].get(res["primary"])
    if t is None:
        err = res["errors"].get(res["primary"], "not measured")
        return f"{res['op']:<20} {res['size']:<6} {res['dtype']:<7} FAILED: {err}"
    tstr = f"{t * 1e3:.3f} ms" if t >= 1e-3 else f"{t * 1e6:.2f} us"
    r = res["ratios"]
    flag = "" if res["meets"]["floor"] in (True, None) else " *"
    busy = res["sampling"].get("other_processes_cores")
    if busy is not None and busy > 0.25:
        flag += f" (busy: {busy:.1f} cores used by other processes)"
    shape = "x".join(map(str, res["shape"]))
    return (
        f"{res['op']:<20} {res['size']:<6} {res['dtype']:<7} {shape:<18} {res['threads'] or '':>3} "
        f"{tstr:>10} {res['gbps'].get(res['primary'], 0):7.1f} {_fmt(res['gbps'].get('floor'), '7.1f')} "
        f"{_fmt(r['time_over_floor'], '8.2f')} {res['targets']['time_over_floor']:6.2f} "
        f"{_times(r['torch_over_numbanorm']):>8} {_times(r['numpy_over_numbanorm']):>8}{flag}"
    )


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0 or not out.stdout.strip():
        return None
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "."],
        cwd=Path(__file__).resolve().parent,
        capture_output=True,
        text=True,
        timeout=5,
    ).stdout.strip()
    return out.stdout.strip() + ("+dirty" if dirty else "")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # not available on this platform
        return None


def _warn_if_busy(when: str) -> list[float] | None:
    """The 1/5/15-minute load averages; a warning when other work competes
    for the cores (parallel kernels wait for their slowest thread, so a busy
    machine inflates numbanorm's times far more than single-threaded peers')."""
    load = _loadavg()
    cores = os.cpu_count() or 1
    if load is not None and load[0] > 0.5 * cores:
        print(
            f"warning: load average {load[0]:.2f} on {cores} cores {when}: other processes compete "
            "for the CPU; results are unreliable (run on a quiet machine)",
            file=sys.stderr,
        )
    return load


def machine_info(torch: ModuleType | None) -> dict[str, Any]:
    """Host, CPU and library versions for the JSON report."""
    import numbanorm

    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel region has run yet
        layer = None
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "numba_threads": numba.get_num_threads(),
        "numba_max_threads": numba.config.NUMBA_NUM_THREADS,
        "threading_layer": layer,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "torch": None if torch is None else torch.__version__,
        "numbanorm": getattr(numbanorm, "__version__", None) or _version("numbanorm"),
        "numbanorm_commit": _git_commit(),
    }


def host_slug(machine: dict[str, Any]) -> str:
    """A file-name-safe machine name: CPU model and core count (container
    hostnames are random), e.g. ``amd-epyc-2c``."""
    cpu = re.sub(r"\(.*?\)|processor|cpu|\d+-core", " ", str(machine.get("cpu", "")), flags=re.I)
    slug = re.sub(r"[^a-z0-9]+", "-", cpu.lower()).strip("-") or "cpu"
    return f"{slug[:40].strip('-')}-{machine.get('cores')}c"


# --------------------------------------------------------------------------
# the NumPy baselines and torch, both optional


def load_numpy_ops() -> ModuleType | None:
    """``benchmarks/numpy_ops.py`` of the source checkout, or None."""
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "numpy_ops.py"
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location("_numbanorm_bench_numpy_ops", path)
    if spec is None or spec.loader is None:
        return None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _import_torch() -> ModuleType | None:
    try:
        import torch
    except ImportError:
        return None
    return torch


# --------------------------------------------------------------------------
# CPU suite


def _cpu_case(
    case: Case,
    nbn: ModuleType,
    npo: ModuleType | None,
    torch: ModuleType | None,
    opts: argparse.Namespace,
    threads: int,
) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(case.shape, dtype=np.dtype(case.dtype))
    # The floor copies into the very buffer that out= calls write: on this
    # kind of VM the same bytes run at ~44 or ~75 GB/s depending on where a
    # buffer landed in host memory (benchmarks/NOTES.md section 11), so the
    # floor and the out= call must share both x and the destination.
    out = np.empty_like(x)
    xf, df = x.reshape(-1), out.reshape(-1)
    fns: dict[str, Fn] = {"numbanorm": _bind(nbn, case, x)}
    if opts.out:
        fns["numbanorm_out"] = _bind_out(nbn, case, x, out, None)
    fns["copyto"] = lambda: np.copyto(out, x)
    fns["prange_copy"] = lambda: _prange_copy(df, xf)
    fns["stream_copy"] = lambda: _prange_stream_copy(df, xf)
    # Not part of the floor: an allocating copy shows what a fresh output
    # costs (page faults on first touch) next to the preallocated floor.
    fns["copy_alloc"] = x.copy
    if npo is not None:
        fns["numpy"] = _bind(npo, case, x)
    if torch is not None:
        fns["torch"] = _torch_fn(case, torch.from_numpy(x), torch.from_numpy, torch)
    min_sample = 0.002 if opts.quick else 0.005
    times, errors, info = measure(fns, opts.repeat, min_sample, guard=opts.guard)
    return _result(
        case,
        threads,
        times,
        errors,
        ("copyto", "prange_copy", "stream_copy"),
        CPU_TARGET_FLOOR[case.op],
        TARGET_VS_TORCH,
        info,
    )


def _cpu_latency(nbn: ModuleType, torch: ModuleType | None, opts: argparse.Namespace) -> dict[str, Any]:
    """Per-call time of the public layer_norm on (32, 64) float32, validation
    included, against torch's F.layer_norm (issue 3: no slower)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 64), dtype=np.float32)
    w = rng.uniform(0.5, 1.5, 64).astype(np.float32)
    b = rng.uniform(-0.5, 0.5, 64).astype(np.float32)
    fns: dict[str, Fn] = {"numbanorm": lambda: nbn.layer_norm(x, (64,), w, b)}
    if torch is not None:
        F = torch.nn.functional
        xt, wt, bt = (torch.from_numpy(a) for a in (x, w, b))
        fns["torch"] = lambda: F.layer_norm(xt, (64,), wt, bt)
    repeat = 7 if opts.quick else 31
    times, errors, info = measure(fns, repeat, 0.005 if opts.quick else 0.02, guard=opts.guard)
    us = {k: v * 1e6 for k, v in times.items()}
    ratio = _ratio(us.get("numbanorm"), us.get("torch"))
    return {
        "op": "layer_norm",
        "shape": [32, 64],
        "dtype": "float32",
        "affine": True,
        "threads": numba.get_num_threads(),
        "per_call_us": us,
        "numbanorm_over_torch": ratio,
        "target": "numbanorm_over_torch <= 1",
        "meets": None if ratio is None else ratio <= 1.0,
        "sampling": info,
        "errors": errors,
    }


_STARTUP_SCRIPT = """
import json, time
t0 = time.perf_counter()
import numpy as np
import numbanorm as nbn
t1 = time.perf_counter()
rng = np.random.default_rng(0)
x4 = rng.standard_normal((2, 8, 4, 4), dtype=np.float32)
x2 = rng.standard_normal((32, 64), dtype=np.float32)
nbn.batch_norm(x4, training=True)
nbn.instance_norm(x4)
nbn.layer_norm(x2, 64)
nbn.group_norm(x4, 4)
nbn.rms_norm(x2, 64)
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "calls_s": t2 - t1}))
"""


def _startup_once(env: dict[str, str]) -> dict[str, Any]:
    t0 = time.perf_counter()
    p = subprocess.run(
        [sys.executable, "-c", _STARTUP_SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        tail = (p.stderr.strip().splitlines() or ["?"])[-1]
        raise BenchError(f"start-up subprocess failed: {tail}")
    inner = json.loads(p.stdout.strip().splitlines()[-1])
    return {"process_wall_s": wall, **inner}


def _startup(opts: argparse.Namespace) -> dict[str, Any]:
    """A new process imports numbanorm and calls the five DL norms once on
    small float32 inputs: with the on-disk cache warm (issue 3: <= 0.8 s in
    all) and with a cold cache (NUMBA_CACHE_DIR = a fresh directory)."""
    env = dict(os.environ)
    env.pop("NUMBA_DISABLE_JIT", None)
    # Make the package importable from a source checkout, as it is here.
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    res: dict[str, Any] = {"script": _STARTUP_SCRIPT.strip(), "target_warm_s": 0.8}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
    res["python_startup_s"] = time.perf_counter() - t0
    try:
        _startup_once(env)  # fill the default on-disk cache
        runs = [_startup_once(env) for _ in range(1 if opts.quick else 3)]
        best = min(runs, key=lambda r: r["process_wall_s"])
        res["warm"] = {
            **best,
            "runs": len(runs),
            "cache": env.get("NUMBA_CACHE_DIR", "default (__pycache__)"),
        }
        res["meets_warm"] = best["process_wall_s"] <= 0.8
        if opts.quick or not opts.cold_startup:
            res["cold"] = None
            res["cold_skipped"] = "--quick" if opts.quick else "--no-cold-startup"
        else:
            with tempfile.TemporaryDirectory(prefix="numbanorm-cold-cache-") as d:
                res["cold"] = _startup_once({**env, "NUMBA_CACHE_DIR": d})
    except (BenchError, subprocess.SubprocessError, ValueError) as e:
        res["error"] = _short(e)
    return res


def _run_cpu(opts: argparse.Namespace) -> dict[str, Any]:
    import numbanorm as nbn

    npo = None if opts.no_numpy else load_numpy_ops()
    if npo is None and not opts.no_numpy:
        print(
            "note: NumPy baselines skipped: benchmarks/numpy_ops.py not found (run from a source checkout)",
            file=sys.stderr,
        )
    torch = None if opts.no_torch else _import_torch()
    results: list[dict[str, Any]] = []
    latency: list[dict[str, Any]] = []
    load_before = _warn_if_busy("before the run")
    print(
        f"numbanorm bench (cpu): bytes = x read + y written; time = median of {opts.repeat} interleaved runs"
    )
    print("vs torch / vs numpy = peer time / numbanorm time; * = misses the issue-3 floor target")
    if opts.guard is not None:
        print("repetitions disturbed by other processes are re-run (--no-quiet-check keeps them)")
    print(_HEAD)
    for nthreads in opts.threads:
        numba.set_num_threads(nthreads)
        if torch is not None:
            torch.set_num_threads(nthreads)
        for size in opts.sizes:
            for dtype in opts.dtypes:
                for op in opts.ops:
                    case = Case(op, size, dtype, CPU_SHAPES[size][OPS[op][1]])
                    res = _cpu_case(case, nbn, npo, torch, opts, nthreads)
                    results.append(res)
                    print(_row(res), flush=True)
        if opts.latency:
            lat = _cpu_latency(nbn, torch, opts)
            latency.append(lat)
            us = lat["per_call_us"]
            print(
                f"small-input latency, layer_norm 32x64 float32, {nthreads} thread(s): "
                f"numbanorm {_fmt(us.get('numbanorm'), '.2f')} us, torch {_fmt(us.get('torch'), '.2f')} us"
                + (f"  {lat['errors']}" if lat["errors"] else ""),
                flush=True,
            )
    numba.set_num_threads(max(opts.threads))
    load_after = _warn_if_busy("during the run")
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "device": "cpu",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(torch),
        "settings": _settings(opts),
        "definitions": _definitions("cpu"),
        "results": results,
        "latency": latency,
        "startup": None,
        "load_average": {"before": load_before, "after": load_after},
    }
    if opts.startup:
        st = _startup(opts)
        report["startup"] = st
        _print_startup(st)
    return report


def _print_startup(st: dict[str, Any]) -> None:
    if "error" in st:
        print(f"start-up: FAILED: {st['error']}")
        return
    w = st["warm"]
    print(
        f"start-up, warm cache: {w['process_wall_s']:.3f} s per process "
        f"(import {w['import_s']:.3f} s + five first calls {w['calls_s']:.3f} s; "
        f"bare python {st['python_startup_s']:.3f} s), target <= 0.8 s"
    )
    c = st.get("cold")
    if c:
        print(
            f"start-up, cold cache: {c['process_wall_s']:.3f} s per process "
            f"(import {c['import_s']:.3f} s + five first calls {c['calls_s']:.3f} s)"
        )
    else:
        print(f"start-up, cold cache: skipped ({st.get('cold_skipped')})")


def _settings(opts: argparse.Namespace) -> dict[str, Any]:
    return {
        "device": opts.device,
        "quick": opts.quick,
        "ops": list(opts.ops),
        "sizes": list(opts.sizes),
        "dtypes": list(opts.dtypes),
        "repeat": opts.repeat,
        "threads": list(opts.threads),
        "quiet_check": bool(opts.guard),
        "argv": list(opts.argv),
    }


def _definitions(device: str) -> dict[str, Any]:
    shapes = CPU_SHAPES if device == "cpu" else GPU_SHAPES
    return {
        "bytes": "x.nbytes (read once) + y.nbytes (written once)",
        "gbps": "bytes / median time / 1e9",
        "floor": (
            "min(np.copyto(out, x), numba prange copy, numba prange copy with streaming stores) "
            "over the same bytes, same run, into the buffer the out= call writes"
            if device == "cpu"
            else "min(device-to-device memcpy, copy kernel) over the same bytes, same run"
        ),
        "time_over_floor": "numbanorm time / floor time (1.0 = copy speed)",
        "out_over_floor": "numbanorm out= time / floor time: the same bytes into the same buffer",
        "torch_over_numbanorm": "torch time / numbanorm time (> 1: numbanorm faster)",
        "numpy_over_numbanorm": "NumPy baseline time / numbanorm time",
        **(
            {
                "numbanorm": "ordinary allocating call (wall clock): the headline time",
                "numbanorm_out": "the same call with a preallocated out= (no allocation)",
                "copy_alloc": "x.copy(): an allocating copy, for scale (not part of the floor)",
            }
            if device == "cpu"
            else {
                "numbanorm": "call with a preallocated out= (kernel time by CUDA events): the headline time",
                "numbanorm_alloc": "ordinary allocating call (CUDA events)",
            }
        ),
        "shapes": {size: {OPS_GEOM: list(s) for OPS_GEOM, s in d.items()} for size, d in shapes.items()},
        "op_geometry": {op: g for op, (_, g) in OPS.items()},
        "op_arguments": {
            "batch_norm_*": "running_mean, running_var, weight, bias; channels-last: channel_axis=-1",
            "instance_norm": "no weight/bias, use_input_stats",
            "layer_norm": "normalized_shape=(D,), weight, bias",
            "group_norm": "num_groups = C // 2, weight, bias",
            "rms_norm": "normalized_shape=(D,), weight, eps=None",
            "standardize": "axis=0",
            "minmax_scale": "axis=0, feature_range=(0, 1)",
            "lp_normalize": "p=2, axis=-1",
        },
    }


# --------------------------------------------------------------------------
# CUDA suite


class _Gpu:
    """Array handling for one kind of GPU array (numba, cupy or torch)."""

    def __init__(self, kind: str, cuda: Any, torch: ModuleType | None) -> None:
        self.kind, self.cuda, self.torch = kind, cuda, torch
        if kind == "cupy":
            import cupy

            self.cp = cupy

    def to_device(self, a: np.ndarray) -> Any:
        if self.kind == "cupy":
            return self.cp.asarray(a)
        if self.kind == "torch":
            assert self.torch is not None
            return self.torch.from_numpy(a).cuda()
        return self.cuda.to_device(a)

    def empty_like(self, a: Any) -> Any:
        if self.kind == "cupy":
            return self.cp.empty_like(a)
        if self.kind == "torch":
            assert self.torch is not None
            return self.torch.empty_like(a)
        return self.cuda.device_array(a.shape, a.dtype)

    def flat(self, a: Any) -> Any:
        return a.reshape(-1) if self.kind != "numba" else a.reshape(a.size)

    def memcpy(self, dst: Any, src: Any) -> None:
        """Device-to-device memcpy (cuMemcpyDtoD / cudaMemcpy)."""
        if self.kind == "cupy":
            dst.data.copy_from_device(src.data, src.nbytes)
        elif self.kind == "torch":
            dst.copy_(src)
        else:
            dst.copy_to_device(src)

    def synchronize(self) -> None:
        self.cuda.synchronize()
        if self.torch is not None and self.kind == "torch":
            self.torch.cuda.synchronize()


# numba.cuda, imported by _check_cuda only when --device cuda runs.  A module
# global (not a closure) so that the CUDA simulator can swap it inside kernels.
cuda: Any = None


_copy_kernel: Any = None


def _cuda_copy_kernel() -> Any:
    """The grid-stride copy kernel of the GPU floor (compiled once)."""
    global _copy_kernel
    if _copy_kernel is None:

        @cuda.jit
        def _copy(dst, src):  # (n,) <- (n,)
            """Grid-stride copy: the kernel half of the GPU floor."""
            i = cuda.grid(1)
            stride = cuda.gridsize(1)
            while i < src.shape[0]:
                dst[i] = src[i]
                i += stride

        _copy_kernel = _copy
    return _copy_kernel


def _numba_event_clock(cuda: Any, simulator: bool) -> Callable[[Fn, int], float]:
    def clock(fn: Fn, number: int) -> float:
        if simulator:  # simulator events record no time
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            return time.perf_counter() - t0
        start, end = cuda.event(), cuda.event()
        start.record()
        for _ in range(number):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3

    return clock


def _torch_event_clock(torch: Any) -> Callable[[Fn, int], float]:
    def clock(fn: Fn, number: int) -> float:
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(number):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3

    return clock


def _gpu_info(cuda: Any, torch: ModuleType | None, kind: str) -> dict[str, Any]:
    info: dict[str, Any] = machine_info(torch)
    dev = cuda.get_current_device()
    name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
    info["gpu"] = name
    info["array_kind"] = kind
    for key, getter in (
        ("compute_capability", lambda: list(dev.compute_capability)),
        ("multiprocessors", lambda: dev.MULTIPROCESSOR_COUNT),
        ("driver_cuda_version", lambda: list(cuda.cudadrv.driver.driver.get_version())),
        ("runtime_cuda_version", lambda: list(cuda.runtime.get_version())),
    ):
        try:
            info[key] = getter()
        except Exception as e:  # noqa: BLE001 - informative only
            info[key] = f"unavailable ({_short(e)})"
    info["numba_cuda"] = _version("numba-cuda")
    info["cupy"] = _version("cupy") or _version("cupy-cuda12x") or _version("cupy-cuda13x")
    info["torch_cuda"] = getattr(getattr(torch, "version", None), "cuda", None) if torch else None
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        info["nvidia_smi"] = smi.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["nvidia_smi"] = None
    return info


def _check_cuda() -> tuple[Any, bool]:
    """numba.cuda if a usable GPU (or, for testing the suite itself only, the
    simulator with NUMBANORM_BENCH_ALLOW_SIMULATOR=1), else BenchError."""
    simulator = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")
    if simulator and os.environ.get("NUMBANORM_BENCH_ALLOW_SIMULATOR") != "1":
        raise BenchError(
            "--device cuda: NUMBA_ENABLE_CUDASIM is set: the CUDA simulator's timings mean nothing; "
            "unset it and run on a machine with an NVIDIA GPU"
        )
    global cuda
    try:
        from numba import cuda as numba_cuda
    except ImportError as e:  # pragma: no cover - numba ships numba.cuda
        raise BenchError(f"--device cuda: numba.cuda does not import ({_short(e)})") from e
    cuda = numba_cuda
    if not simulator and not cuda.is_available():
        reason = ""
        try:
            cuda.current_context()
        except Exception as e:  # noqa: BLE001 - only its message is wanted
            reason = " (" + " ".join(str(e).split())[:200] + ")"
        raise BenchError(
            "--device cuda: no usable CUDA GPU here: numba.cuda.is_available() is False"
            f"{reason}; on a GPU machine run benchmarks/run_gpu.sh "
            '(needs an NVIDIA driver and numba-cuda: pip install "numbanorm[cuda]")'
        )
    return cuda, simulator


def _run_cuda(opts: argparse.Namespace) -> dict[str, Any]:
    cuda, simulator = _check_cuda()
    import numbanorm as nbn

    torch = None if opts.no_torch else _import_torch()
    if torch is not None and not torch.cuda.is_available():
        print("note: torch has no CUDA here: PyTorch peer skipped", file=sys.stderr)
        torch = None
    kind = opts.gpu_array
    if kind == "auto":
        kind = "cupy" if importlib.util.find_spec("cupy") is not None else "numba"
    if kind == "torch" and torch is None:
        raise BenchError("--gpu-array torch needs torch with CUDA")
    gpu = _Gpu(kind, cuda, torch)
    shapes = GPU_SHAPES if not simulator else {s: CPU_SHAPES["small"] for s in SIZES}
    results: list[dict[str, Any]] = []
    print(f"numbanorm bench (cuda, {kind} arrays): kernel time by CUDA events, median of {opts.repeat}")
    print("time = numbanorm with out= (kernel only); allocating calls are in the JSON as 'numbanorm_alloc'")
    print(_HEAD)
    for size in opts.sizes:
        for dtype in opts.dtypes:
            for op in opts.ops:
                case = Case(op, size, dtype, shapes[size][OPS[op][1]])
                res = _cuda_case(case, nbn, gpu, torch, opts, simulator)
                results.append(res)
                print(_row(res), flush=True)
                gc.collect()
    latency = _cuda_latency(nbn, gpu, torch, opts) if opts.latency else []
    return {
        "schema": SCHEMA,
        "device": "cuda",
        "simulator": simulator,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": _gpu_info(cuda, torch, kind) if not simulator else machine_info(torch),
        "settings": _settings(opts),
        "definitions": _definitions("cuda"),
        "results": results,
        "latency": latency,
        "startup": None,
    }


def _cuda_case(
    case: Case,
    nbn: ModuleType,
    gpu: _Gpu,
    torch: ModuleType | None,
    opts: argparse.Namespace,
    simulator: bool,
) -> dict[str, Any]:
    host = np.random.default_rng(0).standard_normal(case.shape, dtype=np.dtype(case.dtype))
    x = gpu.to_device(host)
    dst, out = gpu.empty_like(x), gpu.empty_like(x)
    xf, df = gpu.flat(x), gpu.flat(dst)
    copy_kernel = _cuda_copy_kernel()
    threads = 256
    blocks = max(1, min(math.ceil(xf.shape[0] / threads), 4 if simulator else 65535))
    nclock = _numba_event_clock(cuda, simulator)
    fns: dict[str, Fn] = {
        "numbanorm": _bind_out(nbn, case, x, out, gpu.to_device),
        "numbanorm_alloc": _bind(nbn, case, x, gpu.to_device),
        "memcpy": lambda: gpu.memcpy(dst, x),
        "copy_kernel": lambda: copy_kernel[blocks, threads](df, xf),
    }
    clocks = dict.fromkeys(fns, nclock)
    if torch is not None:
        xt = torch.as_tensor(x, device="cuda")
        fns["torch"] = _torch_fn(case, xt, lambda a: torch.from_numpy(a).cuda(), torch)
        clocks["torch"] = _torch_event_clock(torch)
    times, errors, info = measure(fns, opts.repeat, 0.002, clocks)
    return _result(
        case,
        None,
        times,
        errors,
        ("memcpy", "copy_kernel"),
        GPU_TARGET_FLOOR[case.op],
        GPU_TARGET_VS_TORCH,
        info,
    )


def _cuda_latency(
    nbn: ModuleType, gpu: _Gpu, torch: ModuleType | None, opts: argparse.Namespace
) -> list[dict[str, Any]]:
    """Per-call wall time of every op on small inputs (a loop of calls, then
    one synchronize), against torch (issue 4: at most 2x torch's)."""
    out: list[dict[str, Any]] = []
    print("small-input per-call time (wall clock, loop of calls + synchronize):")
    for op in opts.ops:
        case = Case(op, "small", "float32", CPU_SHAPES["small"][OPS[op][1]])
        host = np.random.default_rng(0).standard_normal(case.shape, dtype=np.float32)
        x = gpu.to_device(host)
        fns: dict[str, Fn] = {"numbanorm": _bind(nbn, case, x, gpu.to_device)}
        if torch is not None:
            xt = torch.as_tensor(x, device="cuda")
            fns["torch"] = _torch_fn(case, xt, lambda a: torch.from_numpy(a).cuda(), torch)

        def synced(fn: Fn, number: int) -> float:
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            gpu.synchronize()
            if torch is not None:
                torch.cuda.synchronize()
            return time.perf_counter() - t0

        times, errors, _ = measure(fns, 7 if opts.quick else 21, 0.01, dict.fromkeys(fns, synced))
        us = {k: v * 1e6 for k, v in times.items()}
        ratio = _ratio(us.get("numbanorm"), us.get("torch"))
        out.append(
            {
                "op": op,
                "shape": list(case.shape),
                "dtype": "float32",
                "per_call_us": us,
                "numbanorm_over_torch": ratio,
                "target": f"numbanorm_over_torch <= {GPU_SMALL_MAX_VS_TORCH}",
                "meets": None if ratio is None else ratio <= GPU_SMALL_MAX_VS_TORCH,
                "errors": errors,
            }
        )
        nb, pt = _fmt(us.get("numbanorm"), "8.2f"), _fmt(us.get("torch"), "8.2f")
        print(
            f"  {op:<20} numbanorm {nb} us   torch {pt} us" + (f"   {errors}" if errors else ""),
            flush=True,
        )
    return out


# --------------------------------------------------------------------------
# plot


def plot(report: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Bars of throughput relative to the copy floor (floor time / time) per
    op, for numbanorm and its peers; one panel per (size, dtype); the highest
    thread count measured.  Raises ImportError without matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["results"]
    if not rows:
        raise ValueError("nothing to plot")
    top = max((r["threads"] or 0) for r in rows)
    rows = [r for r in rows if (r["threads"] or 0) == top]
    sizes = [s for s in SIZES if any(r["size"] == s for r in rows)]
    dtypes = [d for d in DTYPES if any(r["dtype"] == d for r in rows)]
    ops = [o for o in OPS if any(r["op"] == o for r in rows)]
    fig, axes = plt.subplots(
        len(sizes), len(dtypes), figsize=(7.5 * len(dtypes), 3.8 * len(sizes)), squeeze=False
    )
    second = (
        ("numbanorm_out", "numbanorm, out= (no allocation)")
        if report["device"] == "cpu"
        else ("numbanorm_alloc", "numbanorm, allocating")
    )
    first = "numbanorm" if report["device"] == "cpu" else "numbanorm, out= (kernel)"
    series = [
        ("numbanorm", first, "tab:blue"),
        (*second, "lightsteelblue"),
        ("torch", "PyTorch", "tab:orange"),
        ("numpy", "NumPy", "tab:gray"),
    ]
    width = 0.2
    for i, size in enumerate(sizes):
        for j, dtype in enumerate(dtypes):
            ax = axes[i][j]
            byop = {r["op"]: r for r in rows if r["size"] == size and r["dtype"] == dtype}
            for k, (key, label, color) in enumerate(series):
                vals = []
                for op in ops:
                    r = byop.get(op)
                    t = r["times_s"].get(r["primary"] if key == "numbanorm" else key) if r else None
                    floor = r["times_s"].get("floor") if r else None
                    vals.append(floor / t if t and floor else 0.0)
                if any(vals):
                    xs = [p + (k - 1.5) * width for p in range(len(ops))]
                    ax.bar(xs, vals, width, label=label, color=color)
                    if key == "numbanorm":
                        for xpos, v in zip(xs, vals, strict=True):
                            if v:
                                ax.annotate(f"{v:.2f}", (xpos, v), ha="center", va="bottom", fontsize=5.5)
            for p, op in enumerate(ops):
                r = byop.get(op)
                if r:
                    y = 1 / r["targets"]["time_over_floor"]
                    ax.plot([p - 2 * width, p - width], [y, y], color="tab:red", lw=1.5)
            ax.axhline(1.0, color="black", lw=0.8, ls="--")
            ax.set_xticks(range(len(ops)))
            ax.set_xticklabels(ops, rotation=35, ha="right", fontsize=8)
            ax.set_ylabel("throughput / copy floor")
            shape_note = "large" if size == "large" else size
            ax.set_title(f"{shape_note}, {dtype}", fontsize=10)
            ax.grid(axis="y", alpha=0.3)
            if i == 0 and j == 0:
                ax.plot([], [], color="tab:red", lw=1.5, label="numbanorm target")
                ax.plot([], [], color="black", lw=0.8, ls="--", label="copy floor")
                ax.legend(fontsize=7, loc="upper right")
    m = report["machine"]
    where = m.get("gpu") or f"{m.get('cpu')}, {top} thread(s)"
    fig.suptitle(
        f"numbanorm bench ({report['device']}): throughput relative to a copy of the same bytes\n{where}",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------
# command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="numbanorm bench",
        description=(
            "Throughput of every numbanorm op against the copy floor (one read + one write of x, "
            "measured in the same run), NumPy and PyTorch. See benchmarks/README.md."
        ),
    )
    p.add_argument("--quick", action="store_true", help="small+medium sizes, few repeats (CI smoke, < 60 s)")
    p.add_argument("--json", metavar="PATH", help="write the full report as JSON")
    p.add_argument("--plot", metavar="PATH", help="draw throughput / floor per op (needs matplotlib)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--ops", metavar="A,B", help=f"comma-separated subset of: {','.join(OPS)}")
    p.add_argument("--sizes", metavar="S,M", help="of small,medium,large (cpu default: all; cuda: large)")
    p.add_argument("--dtypes", metavar="D", help="of float32,float64 (default: both)")
    p.add_argument("--repeat", type=int, metavar="N", help="timed repetitions per case (default 11; quick 3)")
    p.add_argument("--threads", metavar="T,T", help="numba (and torch) thread counts to run the set with")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch peer")
    p.add_argument("--no-numpy", action="store_true", help="skip the NumPy baseline")
    p.add_argument("--no-out", dest="out", action="store_false", help="skip the out= (non-allocating) timing")
    p.add_argument("--no-latency", dest="latency", action="store_false", help="skip the small-input latency")
    p.add_argument("--no-startup", dest="startup", action="store_false", help="skip the start-up measurement")
    p.add_argument(
        "--no-cold-startup",
        dest="cold_startup",
        action="store_false",
        help="skip only the cold-cache start-up",
    )
    p.add_argument(
        "--no-quiet-check",
        dest="quiet_check",
        action="store_false",
        help="keep repetitions during which other processes used the CPU (default: re-run them)",
    )
    p.add_argument(
        "--gpu-array",
        choices=("auto", "numba", "cupy", "torch"),
        default="auto",
        help="array type for --device cuda (auto: cupy if installed, else numba device arrays)",
    )
    return p


def _split(value: str | None, allowed: Sequence[str], default: Sequence[str], what: str) -> list[str]:
    if value is None:
        return list(default)
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise UsageError(f"--{what}: unknown {bad or value!r}; choose from {','.join(allowed)}")
    return list(dict.fromkeys(items))


def parse_options(argv: Sequence[str]) -> argparse.Namespace:
    """Parsed and validated options (UsageError on bad values; SystemExit
    from argparse on malformed ones)."""
    opts = _parser().parse_args(list(argv))
    opts.argv = list(argv)
    cuda = opts.device == "cuda"
    default_sizes = (
        (("medium",) if cuda else ("small", "medium")) if opts.quick else (("large",) if cuda else SIZES)
    )
    opts.ops = _split(opts.ops, tuple(OPS), tuple(OPS), "ops")
    opts.sizes = _split(opts.sizes, SIZES, default_sizes, "sizes")
    opts.dtypes = _split(opts.dtypes, DTYPES, DTYPES, "dtypes")
    if opts.repeat is None:
        opts.repeat = (3 if opts.quick else 11) if not cuda else (5 if opts.quick else 21)
    if opts.repeat < 1:
        raise UsageError("--repeat: must be >= 1")
    maxt = numba.config.NUMBA_NUM_THREADS
    if opts.threads is None:
        opts.threads = [numba.get_num_threads()]
    else:
        try:
            opts.threads = list(dict.fromkeys(int(t) for t in opts.threads.split(",") if t.strip()))
        except ValueError:
            raise UsageError(f"--threads: not integers: {opts.threads!r}") from None
        if not opts.threads or not all(1 <= t <= maxt for t in opts.threads):
            raise UsageError(f"--threads: each must be in 1..{maxt} (NUMBA_NUM_THREADS)")
    opts.guard = None
    if opts.quiet_check and not cuda:
        guard = QuietGuard(max_retries=opts.repeat if opts.quick else 4 * opts.repeat)
        opts.guard = guard if guard.enabled else None
    if cuda and opts.threads != [numba.get_num_threads()]:
        raise UsageError("--threads applies to --device cpu only")
    return opts


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``numbanorm bench``; returns the exit status (0 ok, 1 failure or a
    failed measurement, 2 usage error)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        opts = parse_options(argv)
    except SystemExit as e:  # argparse: --help (0) or a malformed command line (2)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    except UsageError as e:
        print(f"numbanorm bench: error: {e}", file=sys.stderr)
        return 2
    try:
        report = _run_cuda(opts) if opts.device == "cuda" else _run_cpu(opts)
    except BenchError as e:
        print(f"numbanorm bench: error: {e}", file=sys.stderr)
        return 1
    failed = [f"{r['op']}/{r['size']}/{r['dtype']}: {r['errors']}" for r in report["results"] if r["errors"]]
    failed += [f"latency {r['op']}: {r['errors']}" for r in report["latency"] if r["errors"]]
    if report.get("startup") and "error" in report["startup"]:
        failed.append(f"startup: {report['startup']['error']}")
    _print_summary(report)
    status = 0
    if opts.json:
        Path(opts.json).parent.mkdir(parents=True, exist_ok=True)
        Path(opts.json).write_text(json.dumps(report, indent=1, allow_nan=False, default=str) + "\n")
        print(f"wrote {opts.json}")
    if opts.plot:
        try:
            plot(report, opts.plot)
            print(f"wrote {opts.plot}")
        except ImportError:
            print(
                "numbanorm bench: plot skipped: matplotlib is not installed (pip install matplotlib)",
                file=sys.stderr,
            )
        except ValueError as e:
            print(f"numbanorm bench: plot skipped: {e}", file=sys.stderr)
    if failed:
        print(f"numbanorm bench: {len(failed)} measurement(s) failed:", file=sys.stderr)
        for f in failed:
            print(f"  {f}", file=sys.stderr)
        status = 1
    return status


def _mark(v: float | None, ok: bool | None) -> str:
    return "-" if v is None else f"{v:.2f}" + (" **miss**" if ok is False else "")


def markdown_table(report: dict[str, Any], size: str = "large", dtype: str = "float32") -> str:
    """The headline table of a report (one size and dtype, the highest thread
    count) as Markdown: GB/s, time/floor against its target, and the peers."""
    rows = [r for r in report["results"] if r["size"] == size and r["dtype"] == dtype]
    if not rows:
        return ""
    top = max((r["threads"] or 0) for r in rows)
    rows = [r for r in rows if (r["threads"] or 0) == top]
    cpu = report["device"] == "cpu"
    vs = TARGET_VS_TORCH if cpu else GPU_TARGET_VS_TORCH
    head = (
        "| op | shape | time | GB/s | floor GB/s | out=/floor (target) | allocating/floor "
        f"| x.copy()/floor | torch/numbanorm (>= {vs}) |"
    )
    head += f" numpy/numbanorm (>= {TARGET_VS_NUMPY}) |" if cpu else ""
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        t = r["times_s"].get(r["primary"])
        if t is None:
            lines.append(f"| {r['op']} | failed: {r['errors'].get(r['primary'], '?')} |")
            continue
        ratios, meets = r["ratios"], r["meets"]

        cells = [
            r["op"],
            "x".join(map(str, r["shape"])),
            f"{t * 1e3:.2f} ms",
            f"{r['gbps'][r['primary']]:.1f}",
            _fmt(r["gbps"].get("floor"), ".1f"),
            f"{_mark(ratios.get('out_over_floor'), meets.get('floor_out'))} "
            f"({r['targets']['time_over_floor']:.2f})",
            _mark(ratios["time_over_floor"], meets["floor"]),
            _fmt(ratios["over_floor"].get("copy_alloc"), ".2f"),
            _mark(ratios["torch_over_numbanorm"], meets["torch"]),
        ]
        if cpu:
            cells.append(_mark(ratios["numpy_over_numbanorm"], meets.get("numpy")))
        lines.append("| " + " | ".join(cells) + " |")
    where = report["machine"].get("gpu") or report["machine"].get("cpu")
    thr = f", {top} thread(s)" if top else ""
    return f"{size} {dtype}, {where}{thr}:\n\n" + "\n".join(lines) + "\n"


def _print_summary(report: dict[str, Any]) -> None:
    """The targets of the issues for the largest size and float32 measured."""
    rows = report["results"]
    if not rows:
        return
    size = max((r["size"] for r in rows), key=SIZES.index)
    top = max((r["threads"] or 0) for r in rows)
    pick = [r for r in rows if r["size"] == size and r["dtype"] == "float32" and (r["threads"] or 0) == top]
    if not pick:
        return
    vs = TARGET_VS_TORCH if report["device"] == "cpu" else GPU_TARGET_VS_TORCH
    print(f"\ntargets ({report['device']}, {size}, float32): time/floor <= target; vs torch >= {vs}x", end="")
    print(f"; vs numpy >= {TARGET_VS_NUMPY}x" if report["device"] == "cpu" else "")
    for r in pick:
        misses = [k for k, v in r["meets"].items() if v is False]
        state = (
            "ok"
            if not misses and r["times_s"].get(r["primary"])
            else ("MISSES " + ", ".join(misses) if misses else "n/a")
        )
        print(f"  {r['op']:<20} {state}")
