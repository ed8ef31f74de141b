"""Correctness of every public op on the GPU at the benchmark's shapes.

For each op of the GPU benchmark (``numbanorm_bench.cases.OPS``: batch_norm
training NCHW and channels-last, batch_norm eval, instance_norm, layer_norm,
group_norm, rms_norm, standardize, minmax_scale, lp_normalize) with the
benchmark's arguments (``case_args``) and data (float32 standard normal, seed
0) at its GPU shapes (``GPU_SHAPES``, "large" by default: 64 Mi elements =
256 MiB float32), given numba device arrays, and CuPy arrays and torch CUDA
tensors where those import: the GPU result against the CPU numbanorm result
of the same call on the same values widened to float64.  Batch-norm training
also compares the updated running mean and variance.

Per case: ``max_abs_err`` = max |gpu - ref| and ``rel_err`` = max_abs_err /
scale, where scale = max |ref| over the output.  A case passes when rel_err <=
``--tol`` (default 1e-5), the non-finite values are in the same places and
the output is float32.

Why 1e-5 of the output's scale for float32: the input is the same float32
values in both, so the only differences are float32 arithmetic and rounding
on the GPU.  Rounding the output alone costs up to 2**-24 ~ 6e-8 of each
value; an apply in float32 ((x - mean) * inv_std * w + b, a few roundings of
values up to ~scale) a few times that; statistics accumulated in float64 add
~1e-15.  1e-5 is ~100x that budget, yet a genuinely wrong statistic (a mean
off by 1e-4 of the standard deviation, a variance with a float32 accumulator
over 64 Mi values, a dropped block or row) shows as 1e-4 or worse.  The CPU
test suite's float32 tolerance is of the same order (2e-5 absolute on O(1)
outputs).

One JSON line per case is written (and flushed) as it finishes, so a run cut
short by a timeout keeps what finished.  Exit status: 0 all passed, 1 any
mismatch or error (or a kind named in --kinds that is unavailable), 2 usage
error, 3 no GPU (and the simulator off).

    python benchmarks/gpu_check.py --out results/gpu-check.jsonl
    # the case logic without a GPU, in the CUDA simulator (tiny shapes):
    NUMBA_ENABLE_CUDASIM=1 python benchmarks/gpu_check.py --quick --ops layer_norm
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

_HERE = Path(__file__).resolve().parent
for _p in (str(_HERE.parent), str(_HERE)):  # numbanorm and numbanorm_bench from this checkout
    if _p not in sys.path:
        sys.path.insert(0, _p)

from numbanorm_bench.cases import CPU_SHAPES, GPU_SHAPES, OPS, Case, case_args  # noqa: E402

KINDS = ("numba", "cupy", "torch")
TRAINING_STATS = ("batch_norm_train", "batch_norm_train_cl")  # running mean/var updated in place


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ops", help=f"comma-separated subset of {','.join(OPS)} (default: all)")
    p.add_argument("--kinds", help=f"comma-separated subset of {','.join(KINDS)} (default: all that import)")
    p.add_argument("--size", choices=("small", "medium", "large"), default="large", help="GPU_SHAPES size")
    p.add_argument("--quick", action="store_true", help="the small shapes (same as --size small)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply each shape's leading dimension by this")
    p.add_argument(
        "--max-mb", type=float, default=256.0, help="cap per input in MiB (shrinks the leading dim)"
    )
    p.add_argument("--tol", type=float, default=1e-5, help="max error / output scale (default 1e-5)")
    p.add_argument("--out", help="append the JSON lines here too (stdout gets one short line per case)")
    return p


def _shape(geometry: str, opts: argparse.Namespace) -> tuple[int, ...]:
    size = "small" if opts.quick else opts.size
    shape = list((CPU_SHAPES if size == "small" else GPU_SHAPES)[size][geometry])
    shape[0] = max(1, round(shape[0] * opts.scale))
    per_lead = math.prod(shape[1:]) * 4  # float32 bytes per leading index
    shape[0] = max(1, min(shape[0], int(opts.max_mb * 2**20 // per_lead)))
    return tuple(shape)


class _Kind:
    """Moving arrays to and from one kind of GPU array."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        if kind == "numba":
            from numba import cuda

            self.cuda = cuda
        elif kind == "cupy":
            import cupy

            self.cp = cupy
            cupy.cuda.runtime.getDeviceCount()  # raises without a usable GPU
        else:
            import torch

            if not torch.cuda.is_available():
                raise RuntimeError("torch has no CUDA here")
            self.torch = torch

    def to_device(self, a: np.ndarray) -> Any:
        if self.kind == "numba":
            return self.cuda.to_device(a)
        if self.kind == "cupy":
            return self.cp.asarray(a)
        return self.torch.from_numpy(a).cuda()

    def to_host(self, a: Any) -> np.ndarray:
        if self.kind == "numba":
            return a.copy_to_host()
        if self.kind == "cupy":
            return self.cp.asnumpy(a)
        return a.detach().cpu().numpy()

    def synchronize(self) -> None:
        if self.kind == "numba":
            self.cuda.synchronize()
        elif self.kind == "cupy":
            self.cp.cuda.runtime.deviceSynchronize()
        else:
            self.torch.cuda.synchronize()


def compare(got: np.ndarray, ref: np.ndarray, chunk: int = 1 << 20) -> dict[str, Any]:
    """max |got - ref|, that over max |ref| (the output's scale), and the
    count of places where got and ref differ in being non-finite (inf must
    match inf, NaN NaN).  In chunks: no array-sized temporaries."""
    got, ref = np.asarray(got), np.asarray(ref, dtype=np.float64)
    if got.shape != ref.shape:
        return {"shape_mismatch": [list(got.shape), list(ref.shape)], "rel_err": math.inf}
    g, r = got.reshape(-1), ref.reshape(-1)
    max_abs = scale = 0.0
    nonfinite_mismatch = 0
    with np.errstate(invalid="ignore", over="ignore"):
        for i in range(0, g.size, chunk):
            gc, rc = g[i : i + chunk].astype(np.float64), r[i : i + chunk]
            d = np.abs(gc - rc)
            m = float(d.max())
            if math.isfinite(m):  # then gc and rc are finite throughout (the usual case)
                max_abs, scale = max(max_abs, m), max(scale, float(np.abs(rc).max()))
                continue
            both = np.isfinite(gc) & np.isfinite(rc)
            same = (gc == rc) | (np.isnan(gc) & np.isnan(rc))  # inf == inf; NaN where NaN
            nonfinite_mismatch += int(np.count_nonzero(~both & ~same))
            if both.any():
                max_abs = max(max_abs, float(d[both].max()))
            fin_r = np.isfinite(rc)
            if fin_r.any():
                scale = max(scale, float(np.abs(rc[fin_r]).max()))
    rel = max_abs / scale if scale > 0 else max_abs
    return {
        "max_abs_err": max_abs,
        "scale": scale,
        "rel_err": rel if nonfinite_mismatch == 0 else math.inf,
        "nonfinite_mismatch": nonfinite_mismatch,
    }


def _call(nbn: Any, case: Case, x: Any, convert: Any) -> tuple[Any, list[Any]]:
    """``nbn.<func>(x, *args, **kw)`` with the benchmark's arguments, arrays
    passed through ``convert``; returns the result and the converted args."""
    args, kw = case_args(case)
    conv = [convert(a) if isinstance(a, np.ndarray) else a for a in args]
    return getattr(nbn, case.func)(x, *conv, **kw), conv


def run(opts: argparse.Namespace, emit: Any) -> int:
    from numba.core import config

    import numbanorm as nbn

    simulator = bool(config.ENABLE_CUDASIM)
    from numba import cuda

    if not simulator and not cuda.is_available():
        print("gpu_check: no usable CUDA GPU (numba.cuda.is_available() is False)", file=sys.stderr)
        return 3
    ops = [o.strip() for o in opts.ops.split(",")] if opts.ops else list(OPS)
    kinds = [k.strip() for k in opts.kinds.split(",")] if opts.kinds else list(KINDS)
    bad = [o for o in ops if o not in OPS] + [k for k in kinds if k not in KINDS]
    if bad:
        print(f"gpu_check: unknown {bad}; ops: {','.join(OPS)}; kinds: {','.join(KINDS)}", file=sys.stderr)
        return 2
    live: dict[str, _Kind] = {}
    failed = 0
    for k in kinds:
        try:
            live[k] = _Kind(k)
        except Exception as e:  # noqa: BLE001 - an optional library: say why and go on
            emit({"kind": k, "skipped": f"{type(e).__name__}: {e}"[:300], "asked_for": bool(opts.kinds)})
            failed += bool(opts.kinds)  # named in --kinds: its absence is a failure
    emit({"header": True, "simulator": simulator, "tol": opts.tol, "kinds": list(live), "ops": ops})
    for op in ops:
        shape = _shape(OPS[op][1], opts)
        case = Case(op, "check", "float32", shape)
        host = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        t0 = time.perf_counter()
        try:  # the reference: CPU numbanorm on the same values in float64
            # the same float32 parameters, widened (not float64 draws of the seed)
            ref_y, ref_args = _call(nbn, case, host.astype(np.float64), lambda a: a.astype(np.float64))
            ref_y = np.asarray(ref_y, dtype=np.float64)
        except Exception as e:  # noqa: BLE001 - reported as a failed case
            emit({"op": op, "kind": "reference", "shape": list(shape), "ok": False, "error": repr(e)[:1000]})
            failed += 1
            continue
        ref_s = time.perf_counter() - t0
        for k, kind in live.items():
            line: dict[str, Any] = {"op": op, "kind": k, "shape": list(shape), "dtype": "float32"}
            t0 = time.perf_counter()
            try:
                y, args = _call(nbn, case, kind.to_device(host), kind.to_device)
                kind.synchronize()
                y_host = kind.to_host(y)
                line["out_dtype"] = str(y_host.dtype)  # float32 in, float32 out
                line.update(compare(y_host, ref_y))
                if y_host.dtype != np.float32:
                    line["rel_err"] = math.inf
                if op in TRAINING_STATS:  # running_mean, running_var updated in place
                    for name, j in (("running_mean", 0), ("running_var", 1)):
                        c = compare(kind.to_host(args[j]), np.asarray(ref_args[j], np.float64))
                        line[name] = c
                        line["rel_err"] = max(line["rel_err"], c["rel_err"])
                line["ok"] = bool(line["rel_err"] <= opts.tol)
            except Exception as e:  # noqa: BLE001 - reported as a failed case
                line.update(ok=False, error=f"{type(e).__name__}: {e}"[:1000])
            line["seconds"] = round(time.perf_counter() - t0, 3)
            line["reference_seconds"] = round(ref_s, 3)
            failed += not line["ok"]
            emit(line)
    emit({"summary": True, "failed": failed})
    return 1 if failed else 0


def _finite(v: Any) -> Any:
    """Strict JSON: a non-finite float as its string ("inf", "nan")."""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite(x) for x in v]
    return v


def main(argv: list[str] | None = None) -> int:
    try:
        opts = _parser().parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    if not (opts.scale > 0 and opts.max_mb > 0 and opts.tol > 0):
        print("gpu_check: --scale, --max-mb and --tol must be > 0", file=sys.stderr)
        return 2
    sink = open(opts.out, "a") if opts.out else None  # closed below

    def emit(rec: dict[str, Any]) -> None:
        text = json.dumps(_finite(rec), default=str)
        if sink is not None:
            sink.write(text + "\n")
            sink.flush()
            os.fsync(sink.fileno())
            if "op" in rec:
                status = "ok  " if rec.get("ok") else "FAIL"
                detail = rec.get("error") or f"rel_err {rec.get('rel_err', math.nan):.2e}"
                print(f"{status} {rec['op']:<20} {rec['kind']:<9} {rec['shape']}  {detail}", flush=True)
            else:
                print(text, flush=True)
        else:
            print(text, flush=True)

    try:
        return run(opts, emit)
    finally:
        if sink is not None:
            sink.close()


if __name__ == "__main__":
    raise SystemExit(main())
