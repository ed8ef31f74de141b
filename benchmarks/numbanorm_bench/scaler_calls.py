"""Per-call time of the scalers on a small table (32 x 64): the fixed cost of
``StandardScaler`` / ``MinMaxScaler`` ``fit``, ``transform``,
``partial_fit`` and ``fit_transform`` (issue 19: under 50 us), beside
``nbn.standardize`` / ``nbn.minmax_scale`` on the same array and, when
installed, scikit-learn's scalers.

All calls of one dtype and thread count are interleaved in one
timing.measure loop: ``fit`` refits one estimator, ``transform`` reuses one
fitted estimator, ``partial_fit`` keeps folding the same array into one
estimator (its cost does not depend on how many were folded in).
"""

from __future__ import annotations

import argparse
from types import ModuleType
from typing import Any

import numba
import numpy as np

from .cases import Fn
from .report import fmt
from .timing import measure

SHAPE = (32, 64)
TARGET_US = 50.0
METHODS = ("fit", "transform", "partial_fit", "fit_transform")
TARGET_METHODS = ("fit", "transform", "partial_fit")


def _calls(lib: Any, x: np.ndarray, prefix: str) -> dict[str, Fn]:
    fns: dict[str, Fn] = {}
    for est in ("StandardScaler", "MinMaxScaler"):
        cls = getattr(lib, est)
        fitted = cls().fit(x)
        folding = cls()
        fns[f"{prefix}{est}.fit"] = lambda cls=cls: cls().fit(x)
        fns[f"{prefix}{est}.transform"] = lambda e=fitted: e.transform(x)
        fns[f"{prefix}{est}.partial_fit"] = lambda e=folding: e.partial_fit(x)
        fns[f"{prefix}{est}.fit_transform"] = lambda cls=cls: cls().fit_transform(x)
    return fns


def import_sklearn() -> ModuleType | None:
    try:
        import sklearn.preprocessing
    except ImportError:
        return None
    return sklearn.preprocessing


def run_scalers(nbn: ModuleType, opts: argparse.Namespace, dtype: str) -> dict[str, Any]:
    """One dtype at numba's current thread count: per-call us of every method."""
    x = np.random.default_rng(0).standard_normal(SHAPE).astype(dtype)
    fns = _calls(nbn, x, "")
    fns["standardize"] = lambda: nbn.standardize(x)
    fns["minmax_scale"] = lambda: nbn.minmax_scale(x)
    skl = import_sklearn()
    if skl is not None:
        fns.update(_calls(skl, x, "sklearn:"))
    repeat = max(3, opts.repeat) if opts.quick else max(11, opts.repeat)
    times, errors, info = measure(fns, repeat, 0.002 if opts.quick else 0.005, guard=opts.guard)
    rows = []
    for est in ("StandardScaler", "MinMaxScaler"):
        for m in METHODS:
            nb = times.get(f"{est}.{m}")
            sk = times.get(f"sklearn:{est}.{m}")
            us = None if nb is None else nb * 1e6
            rows.append(
                {
                    "call": f"{est}.{m}",
                    "numbanorm_us": us,
                    "sklearn_us": None if sk is None else sk * 1e6,
                    "target_us": TARGET_US if m in TARGET_METHODS else None,
                    "meets": None if us is None or m not in TARGET_METHODS else us < TARGET_US,
                }
            )
    return {
        "shape": list(SHAPE),
        "dtype": dtype,
        "threads": numba.get_num_threads(),
        "rows": rows,
        "function_us": {k: times[k] * 1e6 for k in ("standardize", "minmax_scale") if k in times},
        "sklearn": None if skl is None else __import__("sklearn").__version__,
        "sampling": info,
        "errors": errors,
    }


def print_scalers(res: dict[str, Any]) -> None:
    fu = res["function_us"]
    print(
        f"scalers {'x'.join(map(str, res['shape']))} {res['dtype']}, {res['threads']} thread(s), us per call "
        f"(target < {TARGET_US:.0f} us for fit, transform, partial_fit; nbn.standardize "
        f"{fmt(fu.get('standardize'), '.1f')} us, nbn.minmax_scale {fmt(fu.get('minmax_scale'), '.1f')} us):"
    )
    for r in res["rows"]:
        flag = " MISSES" if r["meets"] is False else ""
        sk = "" if res["sklearn"] is None else f"   sklearn {fmt(r['sklearn_us'], '8.1f')}"
        print(f"  {r['call']:<28} numbanorm {fmt(r['numbanorm_us'], '8.1f')}{sk}{flag}")
    if res["errors"]:
        print(f"  errors: {res['errors']}")


def markdown(results: list[dict[str, Any]]) -> str:
    if not results:
        return ""
    lines = [
        f"Scalers, per call on {'x'.join(map(str, SHAPE))} (target < {TARGET_US:.0f} us for fit, "
        "transform, partial_fit):\n",
        "| call | dtype | thr | numbanorm (us) | scikit-learn (us) |",
        "|---|---|---|---|---|",
    ]
    for res in results:
        for r in res["rows"]:
            mark = " **miss**" if r["meets"] is False else ""
            lines.append(
                f"| {r['call']} | {res['dtype']} | {res['threads']} | {fmt(r['numbanorm_us'], '.1f')}{mark} "
                f"| {fmt(r['sklearn_us'], '.1f')} |"
            )
    return "\n".join(lines) + "\n"
