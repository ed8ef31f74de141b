"""The report: one record per case, the printed table, the JSON's settings
and definitions, the Markdown headline table and the summary of targets."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from .cases import (
    CPU_SHAPES,
    GPU_SHAPES,
    GPU_TARGET_VS_TORCH,
    OPS,
    SIZES,
    TARGET_VS_NUMPY,
    TARGET_VS_TORCH,
    TORCH_PEER,
    Case,
)

SCHEMA = "numbanorm-bench/1"


# --------------------------------------------------------------------------
# one result record: times, GB/s, ratios to the floor and the peers, targets


def ratio(num: float | None, den: float | None) -> float | None:
    """num / den, or None when either is missing or den <= 0."""
    if num is None or den is None or den <= 0:
        return None
    return num / den


def result(
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
    """The JSON record of one case: ``times`` (median seconds per call of each
    candidate) against the fastest of ``floor_names`` and the targets."""
    floors = [times[n] for n in floor_names if n in times]
    floor = min(floors) if floors else None
    t = times.get(primary)
    gbps = {n: case.nbytes / v / 1e9 for n, v in times.items() if v > 0}
    if floor is not None:
        gbps["floor"] = case.nbytes / floor / 1e9
    ratios = {
        "time_over_floor": ratio(t, floor),
        "torch_over_numbanorm": ratio(times.get("torch"), t),
        "numpy_over_numbanorm": ratio(times.get("numpy"), t),
    }
    ratios["over_floor"] = {n: ratio(v, floor) for n, v in times.items() if n not in floor_names}
    # out= writes the floor's own destination: the like-for-like ratio
    ratios["out_over_floor"] = ratio(times.get(primary + "_out"), floor)
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


# --------------------------------------------------------------------------
# the printed table


def fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _times(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


HEAD = (
    f"{'op':<20} {'size':<6} {'dtype':<7} {'shape':<18} {'thr':>3} {'time':>10} "
    f"{'GB/s':>7} {'floor':>7} {'t/floor':>8} {'target':>6} {'vs torch':>8} {'vs numpy':>8}"
)


def row(res: dict[str, Any]) -> str:
    """One line of the printed table (HEAD is its header)."""
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
        f"{tstr:>10} {res['gbps'].get(res['primary'], 0):7.1f} {fmt(res['gbps'].get('floor'), '7.1f')} "
        f"{fmt(r['time_over_floor'], '8.2f')} {res['targets']['time_over_floor']:6.2f} "
        f"{_times(r['torch_over_numbanorm']):>8} {_times(r['numpy_over_numbanorm']):>8}{flag}"
    )


# --------------------------------------------------------------------------
# what the JSON says about the run


def settings(opts: argparse.Namespace) -> dict[str, Any]:
    """The options of the run."""
    return {
        "device": opts.device,
        "quick": opts.quick,
        "ops": list(opts.ops),
        "sizes": list(opts.sizes),
        "dtypes": list(opts.dtypes),
        "repeat": opts.repeat,
        "threads": list(opts.threads),
        "quiet_check": bool(opts.guard),
        "sections": list(getattr(opts, "sections", ["suite"])),
        "medium_sizes": list(getattr(opts, "medium_sizes", [])),
        "medium_shapes": "spread" if getattr(opts, "medium_spread", False) else "default",
        "onnx": bool(getattr(opts, "onnx", False)),
        "busy": bool(getattr(opts, "busy", False)),
        "argv": list(opts.argv),
    }


def definitions(device: str) -> dict[str, Any]:
    """What every number of the report means, the shapes, the op arguments."""
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
# summaries: Markdown headline table, targets met and missed


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
            fmt(r["gbps"].get("floor"), ".1f"),
            f"{_mark(ratios.get('out_over_floor'), meets.get('floor_out'))} "
            f"({r['targets']['time_over_floor']:.2f})",
            _mark(ratios["time_over_floor"], meets["floor"]),
            fmt(ratios["over_floor"].get("copy_alloc"), ".2f"),
            _mark(ratios["torch_over_numbanorm"], meets["torch"]),
        ]
        if cpu:
            cells.append(_mark(ratios["numpy_over_numbanorm"], meets.get("numpy")))
        lines.append("| " + " | ".join(cells) + " |")
    where = report["machine"].get("gpu") or report["machine"].get("cpu")
    thr = f", {top} thread(s)" if top else ""
    return f"{size} {dtype}, {where}{thr}:\n\n" + "\n".join(lines) + "\n"


def print_summary(report: dict[str, Any]) -> None:
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
