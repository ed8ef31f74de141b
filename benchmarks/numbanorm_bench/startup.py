"""Start-up: a new process imports numbanorm and calls the five DL norms
once, with the on-disk kernel cache warm and cold."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numbanorm
import numbanorm_bench

from .errors import BenchError, short

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


def child_env() -> dict[str, str]:
    """The environment of a measured child process: this one's, with the JIT
    on and numbanorm and this suite importable from where this process found
    them (a source checkout on ``sys.path`` need not be installed)."""
    env = dict(os.environ)
    env.pop("NUMBA_DISABLE_JIT", None)
    roots = [str(Path(m.__file__).resolve().parent.parent) for m in (numbanorm, numbanorm_bench)]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(filter(None, [*roots, env.get("PYTHONPATH")])))
    return env


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


def measure_startup(opts: argparse.Namespace) -> dict[str, Any]:
    """A new process imports numbanorm and calls the five DL norms once on
    small float32 inputs: with the on-disk cache warm (issue 3: <= 0.8 s in
    all) and with a cold cache (NUMBA_CACHE_DIR = a fresh directory)."""
    env = child_env()
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
        res["error"] = short(e)
    return res


def print_startup(st: dict[str, Any]) -> None:
    """The start-up lines of the printed report."""
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
