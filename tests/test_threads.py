"""Public functions called from 4 Python threads at once (API.md section 7).

Each thread runs every public function, in its own order, on its own inputs
(and its own running statistics); the results must equal the serial results
bit for bit, and nothing may crash or hang.  A crash of the interpreter (e.g. a
threading layer that does not support concurrent launches: numba's
``workqueue`` aborts the process) or a hang cannot be caught inside the pytest
process, so the same workload first runs in a subprocess with a timeout, once
with numba's default threading layer and once with ``workqueue`` forced.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np
import pytest

import numbanorm as nbn

N_THREADS = 4
TIMEOUT = 120  # seconds; the work itself takes well under one


def make_inputs(seed):
    rng = np.random.default_rng(seed)
    big = rng.standard_normal((8, 12, 24, 40)) * 3 + 100.0  # > MIN_TASK_ELEMS: split reductions
    small = rng.standard_normal((5, 6, 7)) + 1.0
    cl = np.ascontiguousarray(big.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)  # channels-last view
    f32 = big.astype(np.float32)
    rows = rng.standard_normal((3, 70000))  # few long rows: segmented layer/RMS norm
    return {"big": big, "small": small, "cl": cl, "f32": f32, "rows": rows}


def run_all(inp, order):
    """Every public function on the inputs; returns name -> list of arrays."""
    big, small, cl, f32, rows = (inp[k] for k in ("big", "small", "cl", "f32", "rows"))
    C = big.shape[1]
    calls = {
        "batch_norm_train": lambda: _bn_train(big),
        "batch_norm_cl": lambda: [nbn.batch_norm(cl, training=True, weight=np.arange(C) + 1.0)],
        "batch_norm_eval": lambda: [nbn.batch_norm(f32, np.full(C, 100.0), np.full(C, 9.0))],
        "instance_norm": lambda: _in_train(big),
        "instance_norm_small": lambda: list(nbn.instance_norm(small, return_stats=True)),
        "layer_norm": lambda: list(nbn.layer_norm(big, (24, 40), return_stats=True)),
        "layer_norm_rows": lambda: [nbn.layer_norm(rows, 70000)],
        "layer_norm_f32": lambda: [nbn.layer_norm(f32, 40, np.ones(40), np.zeros(40))],
        "group_norm": lambda: list(nbn.group_norm(big, 4, return_stats=True)),
        "group_norm_cl": lambda: [nbn.group_norm(cl, 3)],
        "rms_norm": lambda: list(nbn.rms_norm(big, 40, return_stats=True)),
        "rms_norm_rows": lambda: [nbn.rms_norm(rows, 70000, eps=1e-6)],
        "standardize": lambda: list(nbn.standardize(big, axis=(0, 2, 3), return_stats=True)),
        "standardize_2d": lambda: [nbn.standardize(rows.T)],
        "minmax_scale": lambda: [nbn.minmax_scale(cl, axis=(0, 2, 3))],
        "minmax_scale_small": lambda: [nbn.minmax_scale(small, (-1.0, 1.0), axis=-1, clip=True)],
        "lp_normalize": lambda: [nbn.lp_normalize(big, axis=1)],
        "lp_normalize_p3": lambda: [nbn.lp_normalize(f32, 3.0, axis=(2, 3))],
        "lp_normalize_inf": lambda: [nbn.lp_normalize(rows, np.inf)],
    }
    names = sorted(calls)
    k = order % len(names)  # each thread its own order: rotated, every other one reversed
    names = names[k:] + names[:k]
    if order % 2:
        names.reverse()
    out = {}
    for n in names:
        out[n] = [np.array(a, copy=True) for a in calls[n]()]
    return out


def _bn_train(x):
    C = x.shape[1]
    rm, rv = np.zeros(C), np.ones(C)
    y, mean, rstd = nbn.batch_norm(x, rm, rv, training=True, momentum=0.3, return_stats=True)
    return [y, mean, rstd, rm, rv]


def _in_train(x):
    C = x.shape[1]
    rm, rv = np.zeros(C), np.ones(C)
    y = nbn.instance_norm(x, rm, rv, momentum=0.2)
    return [y, rm, rv]


def concurrent_vs_serial(n_threads=N_THREADS, rounds=1, timeout=TIMEOUT):
    """Run the workload serially, then from n_threads threads; compare."""
    inputs = [make_inputs(s) for s in range(n_threads)]
    snapshots = [{k: v.copy() for k, v in inp.items()} for inp in inputs]
    serial = [run_all(inp, 0) for inp in inputs]
    with ThreadPoolExecutor(max_workers=n_threads) as ex:
        futs = [
            (i, ex.submit(run_all, inputs[i], 1 + i + n_threads * r))
            for r in range(rounds)
            for i in range(n_threads)
        ]
        done, not_done = wait([f for _, f in futs], timeout=timeout)
        if not_done:
            for f in not_done:
                f.cancel()
            raise AssertionError(f"{len(not_done)} concurrent calls did not finish in {timeout} s")
        for i, f in futs:
            got = f.result()
            assert got.keys() == serial[i].keys()
            for name, arrs in got.items():
                for a, b in zip(arrs, serial[i][name], strict=True):
                    assert a.dtype == b.dtype and a.shape == b.shape, name
                    np.testing.assert_array_equal(a, b, err_msg=f"thread input {i}: {name}")
    for inp, snap in zip(inputs, snapshots, strict=True):
        for k in inp:
            np.testing.assert_array_equal(inp[k], snap[k], err_msg=f"input {k} was modified")


_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    import test_threads
    test_threads.concurrent_vs_serial()
    print("OK")
    """
)


def run_in_subprocess(layer):
    env = dict(os.environ)
    env["PYTHONWARNINGS"] = "error"
    if layer != "default":
        env["NUMBA_THREADING_LAYER"] = layer
    code = _SCRIPT.format(tests=os.path.dirname(os.path.abspath(__file__)))
    try:
        p = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=TIMEOUT
        )
    except subprocess.TimeoutExpired:
        return f"hung: no result within {TIMEOUT} s"
    if p.returncode != 0 or "OK" not in p.stdout:
        return f"exit status {p.returncode}\nstdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-3000:]}"
    return None


@pytest.fixture(scope="module")
def default_layer_subprocess():
    return run_in_subprocess("default")


def test_concurrent_calls_subprocess_default_layer(default_layer_subprocess):
    assert default_layer_subprocess is None, default_layer_subprocess


def test_concurrent_calls_subprocess_workqueue_layer():
    """numba's fallback layer (no TBB, no OpenMP) must not abort the process."""
    err = run_in_subprocess("workqueue")
    assert err is None, err


def test_concurrent_calls_equal_serial(default_layer_subprocess):
    if default_layer_subprocess is not None:
        pytest.fail("not run in-process: the subprocess run crashed or hung (see the test above)")
    concurrent_vs_serial(rounds=2)
