"""The CUDA runner (``--device cuda``): kernel time of every case by CUDA
events against the device copy floor and PyTorch CUDA, and the per-call
time of small inputs."""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from .cases import (
    CPU_SHAPES,
    GPU_SHAPES,
    GPU_SMALL_MAX_VS_TORCH,
    GPU_TARGET_FLOOR,
    GPU_TARGET_VS_TORCH,
    OPS,
    SIZES,
    Case,
    Fn,
    bind,
    bind_out,
    import_torch,
    torch_fn,
)
from .errors import BenchError, short
from .floors import cuda_copy_kernel
from .machine import dist_version, machine_info
from .report import HEAD, SCHEMA, definitions, fmt, ratio, result, row, settings
from .timing import measure


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
            info[key] = f"unavailable ({short(e)})"
    info["numba_cuda"] = dist_version("numba-cuda")
    info["cupy"] = dist_version("cupy") or dist_version("cupy-cuda12x") or dist_version("cupy-cuda13x")
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
    try:
        from numba import cuda
    except ImportError as e:  # pragma: no cover - numba ships numba.cuda
        raise BenchError(f"--device cuda: numba.cuda does not import ({short(e)})") from e
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


def run_cuda(opts: argparse.Namespace) -> dict[str, Any]:
    """Every op, size and dtype on the GPU (CUDA-event times) and the
    small-input per-call times, as the report's dict (also printed)."""
    cuda, simulator = _check_cuda()
    import numbanorm as nbn

    torch = None if opts.no_torch else import_torch()
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
    print(HEAD)
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "device": "cuda",
        "simulator": simulator,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": _gpu_info(cuda, torch, kind) if not simulator else machine_info(torch),
        "settings": settings(opts),
        "definitions": definitions("cuda"),
        "results": results,
        "latency": [],
        "startup": None,
    }
    for size in opts.sizes:
        for dtype in opts.dtypes:
            for op in opts.ops:
                case = Case(op, size, dtype, shapes[size][OPS[op][1]])
                res = _cuda_case(case, nbn, gpu, torch, opts, simulator)
                results.append(res)
                print(row(res), flush=True)
                _write_partial(opts.json, report)
                gc.collect()
    report["latency"] = _cuda_latency(nbn, gpu, torch, opts) if opts.latency else []
    return report


def _write_partial(path: str | None, report: dict[str, Any]) -> None:
    """The report so far, marked ``"partial": true``, so that a run cut short
    (a timeout, a crash) keeps its finished cases; the complete report
    (written by cli.main) replaces it.  Written to a temporary file and
    renamed, so the file is always whole JSON."""
    if not path:
        return
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(f"{path}.tmp")
        tmp.write_text(json.dumps({**report, "partial": True}, indent=1, allow_nan=False, default=str) + "\n")
        os.replace(tmp, path)
    except (OSError, ValueError) as e:  # never fail the run over a progress file
        print(f"note: partial report not written ({short(e)})", file=sys.stderr)


def _cuda_case(
    case: Case,
    nbn: ModuleType,
    gpu: _Gpu,
    torch: ModuleType | None,
    opts: argparse.Namespace,
    simulator: bool,
) -> dict[str, Any]:
    """One case: numbanorm (out= and allocating), the floor candidates and
    torch, timed by CUDA events."""
    host = np.random.default_rng(0).standard_normal(case.shape, dtype=np.dtype(case.dtype))
    x = gpu.to_device(host)
    dst, out = gpu.empty_like(x), gpu.empty_like(x)
    xf, df = gpu.flat(x), gpu.flat(dst)
    copy_kernel = cuda_copy_kernel(gpu.cuda)
    threads = 256
    blocks = max(1, min(math.ceil(xf.shape[0] / threads), 4 if simulator else 65535))
    nclock = _numba_event_clock(gpu.cuda, simulator)
    fns: dict[str, Fn] = {
        "numbanorm": bind_out(nbn, case, x, out, gpu.to_device),
        "numbanorm_alloc": bind(nbn, case, x, gpu.to_device),
        "memcpy": lambda: gpu.memcpy(dst, x),
        "copy_kernel": lambda: copy_kernel[blocks, threads](df, xf),
    }
    clocks = dict.fromkeys(fns, nclock)
    if torch is not None:
        xt = torch.as_tensor(x, device="cuda")
        fns["torch"] = torch_fn(case, xt, lambda a: torch.from_numpy(a).cuda(), torch)
        clocks["torch"] = _torch_event_clock(torch)
    times, errors, info = measure(fns, opts.repeat, 0.002, clocks)
    return result(
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
        fns: dict[str, Fn] = {"numbanorm": bind(nbn, case, x, gpu.to_device)}
        if torch is not None:
            xt = torch.as_tensor(x, device="cuda")
            fns["torch"] = torch_fn(case, xt, lambda a: torch.from_numpy(a).cuda(), torch)

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
        vs_torch = ratio(us.get("numbanorm"), us.get("torch"))
        out.append(
            {
                "op": op,
                "shape": list(case.shape),
                "dtype": "float32",
                "per_call_us": us,
                "numbanorm_over_torch": vs_torch,
                "target": f"numbanorm_over_torch <= {GPU_SMALL_MAX_VS_TORCH}",
                "meets": None if vs_torch is None else vs_torch <= GPU_SMALL_MAX_VS_TORCH,
                "errors": errors,
            }
        )
        nb, pt = fmt(us.get("numbanorm"), "8.2f"), fmt(us.get("torch"), "8.2f")
        print(
            f"  {op:<20} numbanorm {nb} us   torch {pt} us" + (f"   {errors}" if errors else ""),
            flush=True,
        )
    return out
