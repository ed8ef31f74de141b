"""``numbanorm bench --cold``: the first call of every public op in a new
process whose kernel cache is empty, so every kernel it needs is compiled.

Per op, size and dtype, two child processes share one fresh temporary
``NUMBA_CACHE_DIR`` (removed afterwards): the *cold* one imports numbanorm
and calls the op twice (the first call compiles, the second is the call
alone); the *cached* one, started after it, does the same with the cache the
cold one filled (the first call loads the kernels from disk).  Last, one
``numbanorm demo`` runs end to end in a fresh cache.  A child that fails or
runs past the timeout is an error of its record, not of the run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

from .cases import CPU_SHAPES, OPS, Case, Fn, case_args
from .errors import BenchError
from .machine import machine_info, warn_if_busy
from .report import SCHEMA, definitions, settings
from .startup import child_env

# Op name -> the call: the suite's ops (cases.OPS, on the suite's geometries,
# arguments from cases.case_args) and two estimator calls on (samples,
# features) data, reduced over axis 0 (the "cols" geometry).
COLD_CALLS: dict[str, str] = {
    "batch_norm_train": "batch_norm(x, rm, rv, w, b, training=True)",
    "batch_norm_train_cl": "batch_norm(x, rm, rv, w, b, training=True, channel_axis=-1)",
    "batch_norm_eval": "batch_norm(x, rm, rv, w, b, training=False)",
    "instance_norm": "instance_norm(x)",
    "layer_norm": "layer_norm(x, (D,), w, b)",
    "group_norm": "group_norm(x, C // 2, w, b)",
    "rms_norm": "rms_norm(x, (D,), w)",
    "standardize": "standardize(x, axis=0)",
    "minmax_scale": "minmax_scale(x, axis=0)",
    "lp_normalize": "lp_normalize(x, p=2, axis=-1)",
    "standard_scaler_fit_transform": "StandardScaler().fit_transform(x)",
    "running_stats_update": "RunningStats().update(x, axis=0)",
}

# "small" stands for the shapes of numbanorm demo (numbanorm/_demo.py); the
# other sizes are the suite's (cases.CPU_SHAPES).
DEMO_SHAPES: dict[str, tuple[int, ...]] = {
    "rows": (256, 1024),
    "nchw": (16, 32, 32, 32),
    "nhwc": (16, 32, 32, 32),
    "cols": (20000, 32),
}

# One child process: its last line of output is the JSON of its times.
_CHILD = """
import json, sys, time
t0 = time.perf_counter()
import numbanorm as nbn
t1 = time.perf_counter()
from numbanorm_bench.cold import make_call
call = make_call(nbn, *json.loads(sys.argv[1]))
t2 = time.perf_counter()
call()
t3 = time.perf_counter()
call()
t4 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "first_call_s": t3 - t2, "second_call_s": t4 - t3}))
"""


def _geometry(op: str) -> str:
    return OPS[op][1] if op in OPS else "cols"


def cold_shape(op: str, size: str) -> tuple[int, ...]:
    """The shape of x for ``op`` at ``size`` (small: the demo's shapes)."""
    geometry = _geometry(op)
    return DEMO_SHAPES[geometry] if size == "small" else CPU_SHAPES[size][geometry]


def make_call(nbn: Any, op: str, shape: list[int], dtype: str) -> Fn:
    """The call of ``op`` on a fresh x, as a zero-argument callable (run in
    the child; building x and the arguments is not timed)."""
    x = np.random.default_rng(0).standard_normal(tuple(shape), dtype=np.dtype(dtype))
    if op == "standard_scaler_fit_transform":
        return lambda: nbn.StandardScaler().fit_transform(x)
    if op == "running_stats_update":
        return lambda: nbn.RunningStats().update(x, axis=0)
    f = getattr(nbn, OPS[op][0])
    args, kw = case_args(Case(op, "cold", dtype, tuple(shape)))
    return lambda: f(x, *args, **kw)


def _child(argv: list[str], env: dict[str, str], timeout: float) -> tuple[float, str]:
    """(wall seconds, stdout) of ``python argv`` in ``env``; BenchError with
    one line when it fails or runs past ``timeout`` seconds."""
    t0 = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, *argv], env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"timed out after {timeout:g} s (--cold-timeout)") from None
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        tail = (p.stderr.strip().splitlines() or p.stdout.strip().splitlines() or ["?"])[-1]
        raise BenchError(f"exit status {p.returncode}: {tail.strip()[:300]}")
    return wall, p.stdout


def _fresh_cache() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="numbanorm-cold-cache-", ignore_cleanup_errors=True)


def _cold_case(op: str, size: str, dtype: str, env: dict[str, str], timeout: float) -> dict[str, Any]:
    """The cold and the cached process of one op, size and dtype."""
    shape = cold_shape(op, size)
    res: dict[str, Any] = {
        "op": op,
        "call": COLD_CALLS[op],
        "size": size,
        "dtype": dtype,
        "shape": list(shape),
        "cold": None,
        "cached": None,
        "errors": {},
    }
    spec = json.dumps([op, list(shape), dtype])
    with _fresh_cache() as cache:
        for phase in ("cold", "cached"):
            try:
                wall, out = _child(["-c", _CHILD, spec], {**env, "NUMBA_CACHE_DIR": cache}, timeout)
                res[phase] = {"process_wall_s": wall, **json.loads(out.strip().splitlines()[-1])}
            except (BenchError, ValueError, IndexError) as e:
                res["errors"][phase] = str(e) if isinstance(e, BenchError) else "no result printed"
                break  # without a cold run, a "cached" one would compile too
    return res


def _cold_demo(env: dict[str, str], timeout: float) -> dict[str, Any]:
    """``numbanorm demo`` end to end in a new process with a fresh cache."""
    res: dict[str, Any] = {"command": "python -m numbanorm demo", "process_wall_s": None, "error": None}
    with _fresh_cache() as cache:
        try:
            res["process_wall_s"], _ = _child(
                ["-m", "numbanorm", "demo"], {**env, "NUMBA_CACHE_DIR": cache}, timeout
            )
        except BenchError as e:
            res["error"] = str(e)
    return res


def _secs(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.2f} s" if v >= 1 else f"{v * 1e3:.2f} ms" if v >= 1e-3 else f"{v * 1e6:.0f} us"


_HEAD = (
    f"{'op':<30} {'size':<6} {'dtype':<7} {'shape':<16} {'import':>9} {'first':>9} {'second':>9}"
    f"   {'cached: import':>14} {'first':>9}"
)


def _row(res: dict[str, Any]) -> str:
    shape = "x".join(map(str, res["shape"]))
    c, w = res["cold"] or {}, res["cached"] or {}
    line = (
        f"{res['op']:<30} {res['size']:<6} {res['dtype']:<7} {shape:<16} {_secs(c.get('import_s')):>9} "
        f"{_secs(c.get('first_call_s')):>9} {_secs(c.get('second_call_s')):>9}   "
        f"{_secs(w.get('import_s')):>14} {_secs(w.get('first_call_s')):>9}"
    )
    return line + "".join(f"  FAILED ({k}): {v}" for k, v in res["errors"].items())


def cold_definitions() -> dict[str, Any]:
    """What every number of the ``cold`` section means."""
    return {
        "cold": "a new process with NUMBA_CACHE_DIR = a fresh, empty directory: nothing compiled before "
        "is reused",
        "cached": "a second new process with the same directory, as the cold process left it",
        "compile_ahead": "whether the processes started helper processes compiling a cold call's statistics "
        "task into the cache (numbanorm/_ahead.py; NUMBANORM_COMPILE_AHEAD)",
        "import_s": "import numbanorm (numpy and numba included)",
        "first_call_s": "the op's first call: compilation (cold) or loading from the cache (cached), "
        "and the call",
        "second_call_s": "the same call again in the same process",
        "process_wall_s": "the child's wall time: interpreter start, import, building x, both calls",
        "demo": "python -m numbanorm demo in a new process with a fresh cache: process wall time",
        "shapes": {
            "small": {g: list(s) for g, s in DEMO_SHAPES.items()},
            **{size: {g: list(s) for g, s in d.items()} for size, d in CPU_SHAPES.items() if size != "small"},
        },
        "op_geometry": {op: _geometry(op) for op in COLD_CALLS},
        "calls": dict(COLD_CALLS),
    }


def _compile_ahead() -> bool:
    """Whether the measured processes (this one's environment and
    interpreter) start helper processes for a cold call's statistics task."""
    from numbanorm import _ahead

    prev = _ahead.set_enabled(None)
    try:
        return _ahead.enabled()
    finally:
        _ahead.set_enabled(prev)


def run_cold(opts: argparse.Namespace) -> dict[str, Any]:
    """Every op, size and dtype cold and cached, then the demo: the report's
    dict with its ``cold`` section (also printed)."""
    threads = opts.threads[0]
    env = {**child_env(), "NUMBA_NUM_THREADS": str(threads)}
    load_before = warn_if_busy("before the run")
    print(
        "numbanorm bench --cold: each op's first and second call in a new process with a fresh, empty "
        "kernel cache (NUMBA_CACHE_DIR, removed afterwards),"
    )
    print(
        f"then the first call again in a second process with that cache ('cached'); {threads} numba "
        f"thread(s), at most {opts.cold_timeout:g} s per process"
    )
    ahead = _compile_ahead()
    var = os.environ.get("NUMBANORM_COMPILE_AHEAD", "")
    print(
        f"helper processes compiling a cold call's statistics task (numbanorm/_ahead.py): "
        f"{'on' if ahead else 'off'} (NUMBANORM_COMPILE_AHEAD={var!r})"
    )
    print(_HEAD)
    results = []
    for size in opts.sizes:
        for dtype in opts.dtypes:
            for op in opts.ops:
                res = _cold_case(op, size, dtype, env, opts.cold_timeout)
                results.append(res)
                print(_row(res), flush=True)
    demo = None
    if opts.demo:
        demo = _cold_demo(env, opts.cold_timeout)
        state = _secs(demo["process_wall_s"]) if demo["error"] is None else f"FAILED: {demo['error']}"
        print(f"numbanorm demo, fresh cache, end to end: {state}", flush=True)
    load_after = warn_if_busy("during the run")
    return {
        "schema": SCHEMA,
        "device": "cpu",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(None),
        "settings": settings(opts),
        "definitions": definitions("cpu"),
        "results": [],
        "latency": [],
        "startup": None,
        "load_average": {"before": load_before, "after": load_after},
        "cold": {
            "definitions": cold_definitions(),
            "script": _CHILD.strip(),
            "threads": threads,
            "compile_ahead": ahead,
            "timeout_s": opts.cold_timeout,
            "results": results,
            "demo": demo,
        },
    }
