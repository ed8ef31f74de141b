"""The CPU runner: throughput of every case against the copy floor and the
peers, and the small-input latency of layer_norm."""

from __future__ import annotations

import argparse
import time
from types import ModuleType
from typing import Any

import numba
import numpy as np

from . import numpy_ops
from .cases import (
    CPU_SHAPES,
    CPU_TARGET_FLOOR,
    OPS,
    TARGET_VS_TORCH,
    Case,
    Fn,
    bind,
    bind_out,
    import_torch,
    torch_fn,
)
from .floors import prange_copy, prange_stream_copy
from .machine import machine_info, warn_if_busy
from .report import HEAD, SCHEMA, definitions, fmt, ratio, result, row, settings
from .startup import measure_startup, print_startup
from .timing import measure


def _cpu_case(
    case: Case,
    nbn: ModuleType,
    npo: ModuleType | None,
    torch: ModuleType | None,
    opts: argparse.Namespace,
    threads: int,
) -> dict[str, Any]:
    """One case: numbanorm (allocating and out=), the floor candidates and
    the peers, interleaved (timing.measure)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(case.shape, dtype=np.dtype(case.dtype))
    # The floor copies into the very buffer that out= calls write: on this
    # kind of VM the same bytes run at ~44 or ~75 GB/s depending on where a
    # buffer landed in host memory (benchmarks/NOTES.md section 11), so the
    # floor and the out= call must share both x and the destination.
    out = np.empty_like(x)
    xf, df = x.reshape(-1), out.reshape(-1)
    fns: dict[str, Fn] = {"numbanorm": bind(nbn, case, x)}
    if opts.out:
        fns["numbanorm_out"] = bind_out(nbn, case, x, out, None)
    fns["copyto"] = lambda: np.copyto(out, x)
    fns["prange_copy"] = lambda: prange_copy(df, xf)
    fns["stream_copy"] = lambda: prange_stream_copy(df, xf)
    # Not part of the floor: an allocating copy shows what a fresh output
    # costs (page faults on first touch) next to the preallocated floor.
    fns["copy_alloc"] = x.copy
    if npo is not None:
        fns["numpy"] = bind(npo, case, x)
    if torch is not None:
        fns["torch"] = torch_fn(case, torch.from_numpy(x), torch.from_numpy, torch)
    min_sample = 0.002 if opts.quick else 0.005
    times, errors, info = measure(fns, opts.repeat, min_sample, guard=opts.guard)
    return result(
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
    vs_torch = ratio(us.get("numbanorm"), us.get("torch"))
    return {
        "op": "layer_norm",
        "shape": [32, 64],
        "dtype": "float32",
        "affine": True,
        "threads": numba.get_num_threads(),
        "per_call_us": us,
        "numbanorm_over_torch": vs_torch,
        "target": "numbanorm_over_torch <= 1",
        "meets": None if vs_torch is None else vs_torch <= 1.0,
        "sampling": info,
        "errors": errors,
    }


def run_cpu(opts: argparse.Namespace) -> dict[str, Any]:
    """Every op, size and dtype at every thread count, the small-input
    latency and the start-up, as the report's dict (also printed)."""
    import numbanorm as nbn

    npo = None if opts.no_numpy else numpy_ops
    torch = None if opts.no_torch else import_torch()
    results: list[dict[str, Any]] = []
    latency: list[dict[str, Any]] = []
    load_before = warn_if_busy("before the run")
    print(
        f"numbanorm bench (cpu): bytes = x read + y written; time = median of {opts.repeat} interleaved runs"
    )
    print("vs torch / vs numpy = peer time / numbanorm time; * = misses the issue-3 floor target")
    if opts.guard is not None:
        print("repetitions disturbed by other processes are re-run (--no-quiet-check keeps them)")
    print(HEAD)
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
                    print(row(res), flush=True)
        if opts.latency:
            lat = _cpu_latency(nbn, torch, opts)
            latency.append(lat)
            us = lat["per_call_us"]
            print(
                f"small-input latency, layer_norm 32x64 float32, {nthreads} thread(s): "
                f"numbanorm {fmt(us.get('numbanorm'), '.2f')} us, torch {fmt(us.get('torch'), '.2f')} us"
                + (f"  {lat['errors']}" if lat["errors"] else ""),
                flush=True,
            )
    numba.set_num_threads(max(opts.threads))
    load_after = warn_if_busy("during the run")
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "device": "cpu",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(torch),
        "settings": settings(opts),
        "definitions": definitions("cpu"),
        "results": results,
        "latency": latency,
        "startup": None,
        "load_average": {"before": load_before, "after": load_after},
    }
    if opts.startup:
        st = measure_startup(opts)
        report["startup"] = st
        print_startup(st)
    return report
