"""The CPU runner: throughput of every case against the copy floor and the
peers, and the small-input latency of layer_norm."""

from __future__ import annotations

import argparse
import time
from types import ModuleType
from typing import Any

import numba
import numpy as np

from . import medium, numpy_ops
from .busy import BusyNeighbour
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
from .onnx_peer import SESSION_SETTINGS, OrtPeers, import_ort, ort_version
from .report import HEAD, SCHEMA, definitions, fmt, ratio, result, row, settings
from .scaler_calls import print_scalers, run_scalers
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


def _suite(
    nbn: ModuleType,
    npo: ModuleType | None,
    torch: ModuleType | None,
    opts: argparse.Namespace,
    nthreads: int,
    results: list[dict[str, Any]],
    latency: list[dict[str, Any]],
) -> None:
    """The throughput suite (small, medium, large) and the small-input latency."""
    print(HEAD)
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


def _peer_section(
    section: str,
    cases: list[Case],
    nbn: ModuleType,
    torch: ModuleType | None,
    peers: OrtPeers | None,
    opts: argparse.Namespace,
    nthreads: int,
    neighbour: BusyNeighbour | None,
    rows: list[dict[str, Any]],
    npo: ModuleType | None = None,
) -> None:
    """The medium-size section or the small-input ONNX Runtime comparison."""
    what = (
        "medium sizes: numbanorm vs ONNX Runtime vs PyTorch vs NumPy vs the copy floor"
        if section == "medium"
        else "small inputs: numbanorm vs ONNX Runtime (io binding; ort_run = session.run) vs PyTorch"
    )
    print(
        f"\n{what}, {nthreads} thread(s); median per call" + (", idle vs busy neighbour" if neighbour else "")
    )
    print(medium.head(section, neighbour is not None))
    for case in cases:
        res = medium.run_case(case, section, nbn, torch, peers, opts, nthreads, neighbour, npo)
        rows.append(res)
        print(medium.row(res), flush=True)


def run_cpu(opts: argparse.Namespace) -> dict[str, Any]:
    """Every section of the run at every thread count (the throughput suite,
    medium sizes, small inputs against ONNX Runtime, scalers; --busy with a
    busy neighbour), the start-up, as the report's dict (also printed)."""
    import numbanorm as nbn

    npo = None if opts.no_numpy else numpy_ops
    torch = None if opts.no_torch else import_torch()
    sections = set(opts.sections)
    results: list[dict[str, Any]] = []
    latency: list[dict[str, Any]] = []
    medium_rows: list[dict[str, Any]] = []
    small_rows: list[dict[str, Any]] = []
    scalers: list[dict[str, Any]] = []
    peers: OrtPeers | None = None
    ort = None
    ort_note = None
    if sections & {"medium", "small-ort"}:
        if opts.onnx:
            ort, onnx, ort_note = import_ort()
            peers = None if ort is None else OrtPeers(ort, onnx)
        else:
            ort_note = "--no-onnx: ONNX Runtime column skipped"
        if ort_note:
            print(f"note: {ort_note}")
    load_before = warn_if_busy("before the run")
    print(
        f"numbanorm bench (cpu): bytes = x read + y written; time = median of {opts.repeat} interleaved runs"
    )
    print("vs torch / vs numpy = peer time / numbanorm time; * = misses the issue-3 floor target")
    if opts.guard is not None:
        print("repetitions disturbed by other processes are re-run (--no-quiet-check keeps them)")
    neighbour = BusyNeighbour() if opts.busy else None
    try:
        if neighbour is not None:
            neighbour.start()
            where = f"pinned to CPU {neighbour.cpu}" if neighbour.pinned else f"not pinned: {neighbour.note}"
            print(
                f"busy neighbour: process {neighbour.pid}, {where}; "
                "stopped for idle, running for busy repetitions"
            )
        for nthreads in opts.threads:
            numba.set_num_threads(nthreads)
            if torch is not None:
                torch.set_num_threads(nthreads)
            if "suite" in sections:
                _suite(nbn, npo, torch, opts, nthreads, results, latency)
            if "medium" in sections:
                cases = medium.medium_cases(opts.ops, opts.medium_sizes, opts.dtypes, opts.medium_spread)
                _peer_section("medium", cases, nbn, torch, peers, opts, nthreads, neighbour, medium_rows, npo)
            if "small-ort" in sections:
                cases = medium.small_cases(opts.ops, opts.dtypes)
                _peer_section("small", cases, nbn, torch, peers, opts, nthreads, neighbour, small_rows)
            if "scalers" in sections:
                print()
                for dtype in opts.dtypes:
                    res = run_scalers(nbn, opts, dtype)
                    scalers.append(res)
                    print_scalers(res)
    finally:
        if neighbour is not None:
            neighbour.stop()
    numba.set_num_threads(max(opts.threads))
    load_after = warn_if_busy("during the run")
    peer_defs = medium.definitions() if sections & {"medium", "small-ort"} else None
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "device": "cpu",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(torch),
        "settings": settings(opts),
        "definitions": definitions("cpu"),
        "results": results,
        "latency": latency,
        "medium": None
        if "medium" not in sections
        else {
            "sizes": [medium.size_label(n) for n in opts.medium_sizes],
            "shapes": "spread" if opts.medium_spread else "default",
            "busy": neighbour is not None,
            "definitions": peer_defs,
            "results": medium_rows,
        },
        "small_ort": None
        if "small-ort" not in sections
        else {"busy": neighbour is not None, "definitions": peer_defs, "results": small_rows},
        "scalers": None if "scalers" not in sections else scalers,
        "onnxruntime": None
        if not sections & {"medium", "small-ort"}
        else {"version": ort_version(ort), "note": ort_note, "session": SESSION_SETTINGS},
        "busy_neighbour": None if neighbour is None else neighbour.info(),
        "startup": None,
        "load_average": {"before": load_before, "after": load_after},
    }
    if opts.startup and "suite" in sections:
        st = measure_startup(opts)
        report["startup"] = st
        print_startup(st)
    return report
