"""The medium-size section (64 KiB - 8 MiB inputs) and the small-input ONNX
Runtime comparison: numbanorm against ONNX Runtime, PyTorch and a
cache-resident copy floor, optionally idle against busy (``--busy``).

Sizes are of ``x`` in its dtype (``1M`` = 1 MiB of float32 or of float64).
For each size the shapes spread over row lengths (``rows``: layer, RMS and
Lp norms), channel counts (``nchw`` / ``nhwc``: batch, instance and group
norms) and feature counts (``cols``: standardize, minmax_scale); ``default``
shapes take one of each (row length 1024, 64 channels, 256 features).

Every case times, interleaved in each repetition (timing.measure): the
numbanorm call (allocating; ``numbanorm_out`` with ``out=``), the ONNX
Runtime session (onnx_peer.py), the PyTorch peer (cases.torch_fn), the
plain NumPy baseline (numpy_ops.py; medium sizes, unless ``--no-numpy``) and
the floor: the fastest of the suite's three copies of the same bytes (floors.py),
which at these sizes run from the caches, as the ops do.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from .cases import CPU_SHAPES, OPS, Case, Fn, bind, bind_out, torch_fn
from .floors import prange_copy, prange_stream_copy
from .onnx_peer import OrtPeers, peer_fns
from .report import fmt, ratio
from .timing import measure, measure_idle_busy

MEDIUM_SIZES = ("64K", "256K", "1M", "4M", "8M")
QUICK_MEDIUM_SIZES = ("1M",)  # --quick: one size, to keep the quick run short
ROW_LENGTHS = (64, 256, 1024, 4096, 16384)
CHANNELS = (16, 64, 256)
FEATURES = (64, 256, 1024)
DEFAULT_SPREAD = {"rows": 1024, "nchw": 64, "nhwc": 64, "cols": 256}
MAX_SPATIAL = 32 * 32  # image geometries: H x W up to 32 x 32, then more images

# Issue 19's targets at medium sizes (float32 and float64, 2 threads)
TARGET_VS_ORT_MEDIUM = 1.5  # ort time / numbanorm time >= 1.5
# inputs over 8 MiB (``--medium-sizes 128M``): the large-input target, never
# slower than ONNX Runtime (it runs layer/RMS norm near the copy floor there)
MEDIUM_MAX_BYTES = 8 << 20
TARGET_VS_ORT_LARGE = 1.0
TARGET_VS_ORT_SMALL = 1.0  # small inputs: never slower than session.run
TARGET_VS_TORCH_MEDIUM = 1.0  # never slower than PyTorch CPU
TARGET_BUSY_OVER_IDLE = 1.5  # busy median <= 1.5 x idle median
# what bounds busy/idle (NOTES.md section 31): with the neighbour on the
# other core, two threads take about one thread's time, so busy/idle cannot
# go under one thread's idle time over two threads' (T1/T2); ``--busy``
# times both (meets.busy_bound: busy/idle <= max(1.5, T1/T2))
PEERS = ("numbanorm", "ort", "torch", "floor")

_UNITS = {"": 1, "K": 1 << 10, "KIB": 1 << 10, "M": 1 << 20, "MIB": 1 << 20, "G": 1 << 30, "GIB": 1 << 30}


def parse_size(text: str) -> int:
    """``64K``, ``1M``, ``1MiB``, ``65536`` -> bytes (ValueError otherwise)."""
    m = re.fullmatch(r"\s*(\d+)\s*([KkMmGg](?:[Ii][Bb])?)?\s*", text)
    if not m or int(m.group(1)) <= 0:
        raise ValueError(f"not a size: {text!r} (e.g. 64K, 1M, 8MiB)")
    n = int(m.group(1)) * _UNITS[(m.group(2) or "").upper()]
    if n > 1 << 30:
        raise ValueError(f"size {text!r} is over 1 GiB")
    return n


def size_label(nbytes: int) -> str:
    """Bytes as ``64KiB``, ``1MiB``, ``1536B``."""
    for unit, mult in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes % mult == 0:
            return f"{nbytes // mult}{unit}"
    return f"{nbytes}B"


def shapes_for(geometry: str, nbytes: int, dtype: str, spread: bool) -> list[tuple[int, ...]]:
    """The shapes of ``x`` (``nbytes`` in ``dtype``, rounded down to whole
    rows or images) of one geometry; those that do not fit are left out."""
    n = nbytes // np.dtype(dtype).itemsize
    if geometry == "rows":
        lengths = ROW_LENGTHS if spread else (DEFAULT_SPREAD["rows"],)
        return [(n // d, d) for d in lengths if n // d >= 1]
    if geometry == "cols":
        feats = FEATURES if spread else (DEFAULT_SPREAD["cols"],)
        return [(n // f, f) for f in feats if n // f >= 2]
    shapes = []
    for c in CHANNELS if spread else (DEFAULT_SPREAD[geometry],):
        spatial = min(MAX_SPATIAL, n // c)
        if spatial < 4:
            continue
        h = math.isqrt(spatial)
        while spatial % h:
            h -= 1
        w = spatial // h
        batch = n // (c * h * w)
        shapes.append((batch, c, h, w) if geometry == "nchw" else (batch, h, w, c))
    return shapes


def medium_cases(ops: list[str], sizes: list[int], dtypes: list[str], spread: bool) -> list[Case]:
    """Every op x size x dtype x shape of the medium-size section."""
    cases = []
    for nbytes in sizes:
        for dtype in dtypes:
            for op in ops:
                for shape in shapes_for(OPS[op][1], nbytes, dtype, spread):
                    cases.append(Case(op, size_label(nbytes), dtype, shape))
    return cases


def small_cases(ops: list[str], dtypes: list[str]) -> list[Case]:
    """Every op at the suite's small shapes (32x64, 2x16x8x8, ...)."""
    return [Case(op, "small", dt, CPU_SHAPES["small"][OPS[op][1]]) for dt in dtypes for op in ops]


def thread_count_setter() -> Callable[[int], None]:
    """``numba.set_num_threads`` without its checks: numba's own setter of
    the launched threading layer (0.2 us a call, the public one 1 us), else
    the public one."""
    import numba

    numba.set_num_threads(numba.get_num_threads())  # (launches the threading layer)
    try:
        from numba.np.ufunc import parallel

        fast = parallel._set_num_threads
    except (ImportError, AttributeError):  # pragma: no cover - other numba versions
        fast = None
    return fast if callable(fast) else numba.set_num_threads


def on_threads(fn: Fn, k: int, back: int, setter: Callable[[int], None]) -> Fn:
    """``fn`` run on ``k`` numba threads, the count set back to ``back`` after."""

    def call() -> None:
        setter(k)
        try:
            fn()
        finally:
            setter(back)

    return call


def run_case(
    case: Case,
    section: str,
    nbn: ModuleType,
    torch: ModuleType | None,
    peers: OrtPeers | None,
    opts: argparse.Namespace,
    threads: int,
    neighbour: Any,
    npo: ModuleType | None = None,
) -> dict[str, Any]:
    """One row: numbanorm, ONNX Runtime, torch (and, in the medium section,
    NumPy (``npo``, numpy_ops) and the floor), interleaved; idle and busy
    when ``neighbour`` is given."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(case.shape, dtype=np.dtype(case.dtype))
    out = np.empty_like(x)
    xf, df = x.reshape(-1), out.reshape(-1)
    small = section == "small"
    fns: dict[str, Fn] = {"numbanorm": bind(nbn, case, x)}
    if opts.out and not small:
        fns["numbanorm_out"] = bind_out(nbn, case, x, out, None)
    ort_fns, ort_info, errors, session = peer_fns(
        peers, case, x, bind(nbn, case, x), threads, feeds_too=small
    )
    fns.update(ort_fns)
    if torch is not None:
        fns["torch"] = torch_fn(case, torch.from_numpy(x), torch.from_numpy, torch)
    if npo is not None and not small:
        fns["numpy"] = bind(npo, case, x)
    if neighbour is not None and not small and threads > 1:
        # busy/idle's bound T1/T2: the allocating call on one thread and on
        # ``threads``, each with the same two thread-count settings around it
        # (0.4 us a call; the same in both, so the ratio errs low if anything)
        setter = thread_count_setter()
        fns["numbanorm_1t"] = on_threads(bind(nbn, case, x), 1, threads, setter)
        fns["numbanorm_2t"] = on_threads(bind(nbn, case, x), threads, threads, setter)
    floor_names = () if small else ("copyto", "prange_copy", "stream_copy")
    if not small:
        fns["copyto"] = lambda: np.copyto(out, x)
        fns["prange_copy"] = lambda: prange_copy(df, xf)
        fns["stream_copy"] = lambda: prange_stream_copy(df, xf)
    min_sample = 0.002 if opts.quick else 0.005
    busy_times = None
    if neighbour is not None:
        times, busy_times, errs, info = measure_idle_busy(fns, opts.repeat, min_sample, neighbour, opts.guard)
    else:
        times, errs, info = measure(fns, opts.repeat, min_sample, guard=opts.guard)
    errors.update(errs)
    del session  # the ONNX Runtime session lived while its candidate was timed
    return record(case, section, threads, times, busy_times, floor_names, errors, ort_info, info)


def _with_floor(times: dict[str, float] | None, floor_names: tuple[str, ...]) -> dict[str, float] | None:
    if times is None:
        return None
    out = dict(times)
    floors = [times[n] for n in floor_names if n in times]
    if floors:
        out["floor"] = min(floors)
    if "ort" in times and "ort_run" in times:
        out["ort_best"] = min(times["ort"], times["ort_run"])
    return out


def record(
    case: Case,
    section: str,
    threads: int,
    times: dict[str, float],
    busy_times: dict[str, float] | None,
    floor_names: tuple[str, ...],
    errors: dict[str, str],
    ort_info: dict[str, Any] | None,
    info: dict[str, Any],
) -> dict[str, Any]:
    """The JSON record of one row (see README, "Medium sizes, ONNX Runtime, busy")."""
    t = _with_floor(times, floor_names) or {}
    tb = _with_floor(busy_times, floor_names)
    nb = t.get("numbanorm")
    small = section == "small"
    ort = t.get("ort_best" if small else "ort")
    ratios = {
        "numbanorm_over_floor": ratio(nb, t.get("floor")),
        "out_over_floor": ratio(t.get("numbanorm_out"), t.get("floor")),
        "ort_over_numbanorm": ratio(ort, nb),
        # small inputs: issue 19's own target is session.run (ort_run); the
        # row above compares the stricter faster call
        "ort_run_over_numbanorm": ratio(t.get("ort_run"), nb) if small else None,
        "torch_over_numbanorm": ratio(t.get("torch"), nb),
        "numpy_over_numbanorm": ratio(t.get("numpy"), nb),
        "ort_over_floor": ratio(t.get("ort"), t.get("floor")),
        "torch_over_floor": ratio(t.get("torch"), t.get("floor")),
        # --busy: one thread's idle time over ``threads`` threads' (see TARGET_BUSY_OVER_IDLE)
        "t1_over_t2": ratio(t.get("numbanorm_1t"), t.get("numbanorm_2t")),
    }
    if small:
        target_ort = TARGET_VS_ORT_SMALL
    else:
        target_ort = TARGET_VS_ORT_MEDIUM if case.nbytes // 2 <= MEDIUM_MAX_BYTES else TARGET_VS_ORT_LARGE
    busy_over_idle = None
    if tb is not None:
        busy_over_idle = {k: ratio(tb.get(k), t.get(k)) for k in t if tb.get(k) is not None}
    meets: dict[str, bool | None] = {
        "ort": None if ratios["ort_over_numbanorm"] is None else ratios["ort_over_numbanorm"] >= target_ort,
        "ort_run": None
        if ratios["ort_run_over_numbanorm"] is None
        else ratios["ort_run_over_numbanorm"] >= TARGET_VS_ORT_SMALL,
        "torch": None
        if ratios["torch_over_numbanorm"] is None
        else ratios["torch_over_numbanorm"] >= TARGET_VS_TORCH_MEDIUM,
        "busy": None
        if busy_over_idle is None or busy_over_idle.get("numbanorm") is None
        else busy_over_idle["numbanorm"] <= TARGET_BUSY_OVER_IDLE,
        "busy_bound": None
        if busy_over_idle is None or busy_over_idle.get("numbanorm") is None or ratios["t1_over_t2"] is None
        else busy_over_idle["numbanorm"] <= max(TARGET_BUSY_OVER_IDLE, ratios["t1_over_t2"]),
    }
    return {
        "op": case.op,
        "function": case.func,
        "section": section,
        "size": case.size,
        "x_bytes": case.nbytes // 2,
        "dtype": case.dtype,
        "shape": list(case.shape),
        "geometry": OPS[case.op][1],
        "threads": threads,
        "bytes": case.nbytes,
        "times_s": t,
        "busy_times_s": tb,
        "busy_over_idle": busy_over_idle,
        "gbps": {k: case.nbytes / v / 1e9 for k, v in t.items() if v > 0},
        "ratios": ratios,
        "targets": {
            "ort_over_numbanorm": target_ort,
            "torch_over_numbanorm": TARGET_VS_TORCH_MEDIUM,
            "busy_over_idle": TARGET_BUSY_OVER_IDLE,
        },
        "meets": meets,
        "ort": ort_info,
        "sampling": info,
        "errors": errors,
    }


def _us(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v * 1e3:.2f}ms" if v >= 1e-3 else f"{v * 1e6:.1f}us"


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def head(section: str, busy: bool) -> str:
    """The header of the printed rows (``row``)."""
    h = f"{'op':<20} {'size':<7} {'dtype':<7} {'shape':<17} {'thr':>3}"
    h += f" {'numbanorm':>9} {'ort':>9} {'torch':>9}"
    h += f" {'floor':>9} {'nbn/flr':>7}" if section == "medium" else f" {'ort_run':>9}"
    h += f" {'ort/nbn':>7} {'trch/nbn':>8}"
    h += f" {'np/nbn':>7}" if section == "medium" else ""
    if busy:
        h += f"  {'busy/idle: nbn':>14} {'ort':>5} {'torch':>5}"
        h += f" {'floor':>5} {'T1/T2':>5}" if section == "medium" else ""
    return h


def row(res: dict[str, Any]) -> str:
    """One printed line: times, ratios, busy/idle; ``!`` marks missed targets."""
    t, r = res["times_s"], res["ratios"]
    shape = "x".join(map(str, res["shape"]))
    s = (
        f"{res['op']:<20} {res['size']:<7} {res['dtype']:<7} {shape:<17} {res['threads']:>3} "
        f"{_us(t.get('numbanorm')):>9} {_us(t.get('ort')):>9} {_us(t.get('torch')):>9}"
    )
    medium = res["section"] == "medium"
    s += (
        f" {_us(t.get('floor')):>9} {_x(r['numbanorm_over_floor']):>7}"
        if medium
        else f" {_us(t.get('ort_run')):>9}"
    )
    miss = lambda k: "!" if res["meets"][k] is False else " "  # noqa: E731
    s += f" {_x(r['ort_over_numbanorm']):>6}{miss('ort')} {_x(r['torch_over_numbanorm']):>7}{miss('torch')}"
    s += f" {_x(r.get('numpy_over_numbanorm')):>7}" if medium else ""
    b = res["busy_over_idle"]
    if b is not None:
        s += f"  {_x(b.get('numbanorm')):>13}{miss('busy')} {_x(b.get('ort')):>5} {_x(b.get('torch')):>5}"
        s += f" {_x(b.get('floor')):>5} {_x(r.get('t1_over_t2')):>5}" if medium else ""
    ort = res["ort"] or {}
    if ort.get("node") and "ort" not in t and not res["errors"].get("ort"):
        s += f"  (no ONNX Runtime time: {ort.get('note', '')[:100]})"
    if res["errors"]:
        s += f"  errors: {res['errors']}"
    return s


def definitions() -> dict[str, Any]:
    """What the medium-size and small-input sections' numbers mean."""
    return {
        "sizes": "x.nbytes in its dtype (1MiB = 262144 float32 or 131072 float64 elements); bytes = x + y",
        "shapes": {
            "rows": f"(x.nbytes / itemsize / D, D) for row lengths D in {list(ROW_LENGTHS)}",
            "nchw": f"(N, C, H, W), C in {list(CHANNELS)}, H x W up to 32 x 32, N = what remains",
            "nhwc": "the nchw shapes with channels last",
            "cols": f"(samples, F) for F in {list(FEATURES)}",
            "default": f"one shape per geometry: {DEFAULT_SPREAD}",
        },
        "numbanorm": "the public call, allocating (numbanorm_out: with out=)",
        "ort": "ONNX Runtime single-node model, run_with_iobinding (see onnx)",
        "ort_run": "small inputs: session.run(None, feeds) with reused feeds",
        "ort_best": "small inputs: the faster of ort and ort_run (the one ort_over_numbanorm compares)",
        "ort_run_over_numbanorm": "small inputs: ort_run time / numbanorm time; issue 19's target "
        f">= {TARGET_VS_ORT_SMALL} (never slower than session.run); meets.ort_run",
        "torch": "torch.nn.functional peer on torch.from_numpy(x), same thread count",
        "numpy": "medium sizes: the plain NumPy baseline (numpy_ops.py: what a user would write, "
        "in x's dtype, one thread), allocating",
        "numpy_over_numbanorm": "numpy time / numbanorm time (no target)",
        "floor": "fastest of np.copyto, numba prange copy, prange streaming copy of the same bytes, "
        "same run, into a preallocated buffer (at these sizes: from and to the caches)",
        "numbanorm_over_floor": "numbanorm time / floor time",
        "ort_over_numbanorm": "ONNX Runtime time / numbanorm time (> 1: numbanorm faster); "
        f"target >= {TARGET_VS_ORT_MEDIUM} (medium, x up to 8 MiB), >= {TARGET_VS_ORT_LARGE} (larger x), "
        f">= {TARGET_VS_ORT_SMALL} against ort_best (small)",
        "torch_over_numbanorm": f"torch time / numbanorm time; target >= {TARGET_VS_TORCH_MEDIUM}",
        "busy_times_s": "--busy: medians of the repetitions with the busy neighbour spinning",
        "busy_over_idle": f"--busy: busy median / idle median per candidate; target (numbanorm) <= "
        f"{TARGET_BUSY_OVER_IDLE}",
        "numbanorm_1t, numbanorm_2t": "--busy, medium, 2+ threads: the allocating call on 1 and on the row's "
        "thread count, each with numba's thread count set before and after the call (0.4 us)",
        "t1_over_t2": "--busy: numbanorm_1t / numbanorm_2t idle: what bounds busy/idle (with the neighbour "
        "on the other core two threads take about one thread's time, NOTES.md section 31); meets.busy_bound: "
        f"busy/idle <= max({TARGET_BUSY_OVER_IDLE}, t1_over_t2)",
    }


def markdown(rows: list[dict[str, Any]], title: str) -> str:
    """The rows of a section as a Markdown table."""
    if not rows:
        return ""
    busy = any(r["busy_over_idle"] for r in rows)
    medium = rows[0]["section"] == "medium"
    h = "| op | size | dtype | shape | thr | numbanorm | ONNX Runtime | PyTorch |"
    h += " floor | numbanorm/floor |" if medium else " ORT session.run |"
    h += " ORT/numbanorm | torch/numbanorm |"
    h += " NumPy | NumPy/numbanorm |" if medium else ""
    if busy:
        h += " busy/idle numbanorm | busy/idle ORT | busy/idle torch |"
        h += " numbanorm 1 thread / 2, idle |" if medium else ""
    lines = [f"{title}\n", h, "|" + "---|" * (h.count("|") - 1)]
    for r in rows:
        t, q = r["times_s"], r["ratios"]
        mark = lambda v, k, r=r: _x(v) + (" **miss**" if r["meets"][k] is False else "")  # noqa: E731
        cells = [r["op"], r["size"], r["dtype"], "x".join(map(str, r["shape"])), str(r["threads"])]
        cells += [_us(t.get("numbanorm")), _us(t.get("ort")), _us(t.get("torch"))]
        cells += [_us(t.get("floor")), _x(q["numbanorm_over_floor"])] if medium else [_us(t.get("ort_run"))]
        cells += [mark(q["ort_over_numbanorm"], "ort"), mark(q["torch_over_numbanorm"], "torch")]
        if medium:
            cells += [_us(t.get("numpy")), _x(q.get("numpy_over_numbanorm"))]
        if busy:
            b = r["busy_over_idle"] or {}
            cells += [mark(b.get("numbanorm"), "busy"), _x(b.get("ort")), _x(b.get("torch"))]
            cells += [_x(q.get("t1_over_t2"))] if medium else []
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def summary(rows: list[dict[str, Any]], what: str) -> list[str]:
    """Lines naming the rows that miss a target of issue 19."""
    out = []
    best = " (the faster of io binding and session.run)" if what == "small inputs" else ""
    for key, words in (
        ("ort", "vs ONNX Runtime" + best),
        ("ort_run", "vs ONNX Runtime's session.run (issue 19's target)"),
        ("torch", "vs PyTorch"),
        ("busy", "busy/idle"),
        ("busy_bound", "busy/idle within max(1.5, one thread's idle time / two threads')"),
    ):
        bad = [r for r in rows if r["meets"].get(key) is False]
        have = [r for r in rows if r["meets"].get(key) is not None]
        if not have:
            continue
        out.append(f"  {what} {words}: {len(have) - len(bad)}/{len(have)} rows meet the target")
        for r in bad[:12]:
            shape = "x".join(map(str, r["shape"]))
            busy = key.startswith("busy")
            v = r["busy_over_idle"]["numbanorm"] if busy else r["ratios"][f"{key}_over_numbanorm"]
            t12 = r["ratios"].get("t1_over_t2")
            bound = f" (T1/T2 {fmt(t12, '.2f')})" if busy and t12 is not None else ""
            where = f"{r['op']} {r['size']} {r['dtype']} {shape} t={r['threads']}"
            out.append(f"    {where}: {fmt(v, '.2f')}{bound}")
        if len(bad) > 12:
            out.append(f"    ... and {len(bad) - 12} more")
    return out


def report_markdown(report: dict[str, Any]) -> str:
    """The medium-size, small-input and scaler sections of a report as
    Markdown (run_cpu.py appends it to the headline table)."""
    from .scaler_calls import markdown as scalers_markdown

    parts = []
    where = report["machine"].get("cpu")
    ort = (report.get("onnxruntime") or {}).get("version")
    note = (report.get("onnxruntime") or {}).get("note")
    peers = f"ONNX Runtime {ort}" if ort else f"no ONNX Runtime ({note})"
    nb = report.get("busy_neighbour")
    busy = "" if not nb else f"; busy/idle = with one CPU-bound process on CPU {nb['cpu']} / without"
    for key, title in (("medium", "Medium sizes"), ("small_ort", "Small inputs")):
        sec = report.get(key)
        if sec and sec["results"]:
            parts.append(
                markdown(
                    sec["results"],
                    f"{title}, {where}, {peers}, torch {report['machine'].get('torch')}{busy}:",
                )
            )
    if report.get("scalers"):
        parts.append(scalers_markdown(report["scalers"]))
    return "\n".join(parts)
