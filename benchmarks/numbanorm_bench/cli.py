"""The command line ``numbanorm bench``: options, validation, the run, and
the report written as JSON, plot and summary."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numba

from .cases import DTYPES, OPS, SIZES
from .cold import COLD_CALLS, run_cold
from .cpu import run_cpu
from .cuda import run_cuda
from .errors import BenchError
from .medium import MEDIUM_SIZES, QUICK_MEDIUM_SIZES, parse_size
from .medium import summary as peer_summary
from .plot import plot
from .report import print_summary
from .timing import QuietGuard

_COLD_ONLY = [op for op in COLD_CALLS if op not in OPS]
SECTIONS = ("suite", "medium", "small-ort", "scalers")


class UsageError(Exception):
    """Bad command-line arguments (exit status 2)."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="numbanorm bench",
        description=(
            "Throughput of every numbanorm op against the copy floor (one read + one write of x, "
            "measured in the same run), NumPy and PyTorch. See benchmarks/README.md."
        ),
    )
    p.add_argument("--quick", action="store_true", help="small+medium sizes, few repeats (CI smoke, < 60 s)")
    p.add_argument("--json", metavar="PATH", help="write the full report as JSON")
    p.add_argument("--plot", metavar="PATH", help="draw throughput / floor per op (needs matplotlib)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument(
        "--ops",
        metavar="A,B",
        help=f"comma-separated subset of: {','.join(OPS)} (with --cold also: {','.join(_COLD_ONLY)})",
    )
    p.add_argument("--sizes", metavar="S,M", help="of small,medium,large (cpu default: all; cuda: large)")
    p.add_argument("--dtypes", metavar="D", help="of float32,float64 (default: both)")
    p.add_argument("--repeat", type=int, metavar="N", help="timed repetitions per case (default 11; quick 3)")
    p.add_argument("--threads", metavar="T,T", help="numba (and torch) thread counts to run the set with")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch peer")
    p.add_argument("--no-numpy", action="store_true", help="skip the NumPy baseline")
    p.add_argument("--no-out", dest="out", action="store_false", help="skip the out= (non-allocating) timing")
    p.add_argument("--no-latency", dest="latency", action="store_false", help="skip the small-input latency")
    p.add_argument("--no-startup", dest="startup", action="store_false", help="skip the start-up measurement")
    p.add_argument(
        "--no-cold-startup",
        dest="cold_startup",
        action="store_false",
        help="skip only the cold-cache start-up",
    )
    p.add_argument(
        "--no-quiet-check",
        dest="quiet_check",
        action="store_false",
        help="keep repetitions during which other processes used the CPU (default: re-run them)",
    )
    p.add_argument(
        "--cold",
        action="store_true",
        help="instead of throughput: each op's first call in new processes with a fresh, empty kernel "
        "cache, then with that cache; sizes small (= the demo's shapes),large; float32",
    )
    p.add_argument(
        "--cold-timeout",
        type=float,
        default=300.0,
        metavar="S",
        help="--cold: seconds allowed per process before it counts as failed (default 300)",
    )
    p.add_argument(
        "--no-demo",
        dest="demo",
        action="store_false",
        help="--cold: skip timing numbanorm demo end to end in a fresh cache",
    )
    p.add_argument(
        "--sections",
        metavar="A,B",
        help=f"cpu: comma-separated subset of {','.join(SECTIONS)} (default: all). suite = the throughput "
        "table (--sizes), latency and start-up; medium = 64 KiB-8 MiB inputs vs ONNX Runtime, PyTorch "
        "and the copy floor; small-ort = the small shapes vs ONNX Runtime; scalers = per-call cost",
    )
    p.add_argument(
        "--medium-sizes",
        metavar="S,S",
        help="sizes of x for the medium section, e.g. 64K,1M,8M (default "
        f"{','.join(MEDIUM_SIZES)}; --quick {','.join(QUICK_MEDIUM_SIZES)})",
    )
    p.add_argument(
        "--medium-shapes",
        choices=("spread", "default"),
        help="medium section: a spread of row lengths, channel and feature counts, or one shape per "
        "geometry (default: spread; --quick: default)",
    )
    p.add_argument("--no-onnx", dest="onnx", action="store_false", help="skip the ONNX Runtime peer")
    p.add_argument(
        "--busy",
        action="store_true",
        help="medium and small-ort sections: time every case idle and with one CPU-bound process "
        "pinned to another core (interleaved), and report busy/idle",
    )
    p.add_argument(
        "--gpu-array",
        choices=("auto", "numba", "cupy", "torch"),
        default="auto",
        help="array type for --device cuda (auto: cupy if installed, else numba device arrays)",
    )
    return p


def _split(value: str | None, allowed: Sequence[str], default: Sequence[str], what: str) -> list[str]:
    if value is None:
        return list(default)
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise UsageError(f"--{what}: unknown {bad or value!r}; choose from {','.join(allowed)}")
    return list(dict.fromkeys(items))


def parse_options(argv: Sequence[str]) -> argparse.Namespace:
    """Parsed and validated options (UsageError on bad values; SystemExit
    from argparse on malformed ones)."""
    opts = _parser().parse_args(list(argv))
    opts.argv = list(argv)
    cuda = opts.device == "cuda"
    default_sizes = (
        (("medium",) if cuda else ("small", "medium")) if opts.quick else (("large",) if cuda else SIZES)
    )
    ops = tuple(COLD_CALLS) if opts.cold else tuple(OPS)
    default_dtypes = DTYPES
    if opts.cold:
        default_sizes, default_dtypes = (("small",) if opts.quick else ("small", "large")), ("float32",)
        if cuda:
            raise UsageError("--cold applies to --device cpu only")
        if not opts.cold_timeout > 0:
            raise UsageError("--cold-timeout: must be > 0")
    opts.ops = _split(opts.ops, ops, ops, "ops")
    opts.sizes = _split(opts.sizes, SIZES, default_sizes, "sizes")
    opts.dtypes = _split(opts.dtypes, DTYPES, default_dtypes, "dtypes")
    if opts.repeat is None:
        opts.repeat = (3 if opts.quick else 11) if not cuda else (5 if opts.quick else 21)
    if opts.repeat < 1:
        raise UsageError("--repeat: must be >= 1")
    maxt = numba.config.NUMBA_NUM_THREADS
    if opts.threads is None:
        opts.threads = [numba.get_num_threads()]
    else:
        try:
            opts.threads = list(dict.fromkeys(int(t) for t in opts.threads.split(",") if t.strip()))
        except ValueError:
            raise UsageError(f"--threads: not integers: {opts.threads!r}") from None
        if not opts.threads or not all(1 <= t <= maxt for t in opts.threads):
            raise UsageError(f"--threads: each must be in 1..{maxt} (NUMBA_NUM_THREADS)")
    opts.guard = None
    if opts.quiet_check and not cuda:
        guard = QuietGuard(max_retries=opts.repeat if opts.quick else 4 * opts.repeat)
        opts.guard = guard if guard.enabled else None
    if cuda and opts.threads != [numba.get_num_threads()]:
        raise UsageError("--threads applies to --device cpu only")
    if cuda or opts.cold:
        if opts.busy or opts.sections is not None or opts.medium_sizes is not None:
            raise UsageError("--busy, --sections and --medium-sizes apply to the cpu throughput run only")
    opts.sections = _split(
        opts.sections, SECTIONS, SECTIONS if not (cuda or opts.cold) else ("suite",), "sections"
    )
    try:
        sizes = opts.medium_sizes.split(",") if opts.medium_sizes is not None else None
        opts.medium_sizes = list(
            dict.fromkeys(
                parse_size(v) for v in (sizes or (QUICK_MEDIUM_SIZES if opts.quick else MEDIUM_SIZES))
            )
        )
    except ValueError as e:
        raise UsageError(f"--medium-sizes: {e}") from None
    opts.medium_spread = (opts.medium_shapes or ("default" if opts.quick else "spread")) == "spread"
    if opts.busy and not set(opts.sections) & {"medium", "small-ort"}:
        raise UsageError("--busy needs the medium or small-ort section (--sections)")
    if opts.cold and len(opts.threads) > 1:
        raise UsageError("--cold takes one --threads value (the children's NUMBA_NUM_THREADS)")
    return opts


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``numbanorm bench``; returns the exit status (0 ok, 1 failure or a
    failed measurement, 2 usage error)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        opts = parse_options(argv)
    except SystemExit as e:  # argparse: --help (0) or a malformed command line (2)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    except UsageError as e:
        print(f"numbanorm bench: error: {e}", file=sys.stderr)
        return 2
    try:
        if opts.cold:
            report = run_cold(opts)
        else:
            report = run_cuda(opts) if opts.device == "cuda" else run_cpu(opts)
    except BenchError as e:
        print(f"numbanorm bench: error: {e}", file=sys.stderr)
        return 1
    failed = [f"{r['op']}/{r['size']}/{r['dtype']}: {r['errors']}" for r in report["results"] if r["errors"]]
    failed += [f"latency {r['op']}: {r['errors']}" for r in report["latency"] if r["errors"]]
    for key in ("medium", "small_ort"):
        for r in (report.get(key) or {}).get("results", []):
            if r["errors"]:
                failed.append(f"{key} {r['op']}/{r['size']}/{r['dtype']}/{r['shape']}: {r['errors']}")
    for r in report.get("scalers") or []:
        if r["errors"]:
            failed.append(f"scalers {r['dtype']}: {r['errors']}")
    if report.get("startup") and "error" in report["startup"]:
        failed.append(f"startup: {report['startup']['error']}")
    if report.get("cold"):
        cold = report["cold"]
        for r in cold["results"]:
            if r["errors"]:
                failed.append(f"cold {r['op']}/{r['size']}/{r['dtype']}: {r['errors']}")
        if cold["demo"] and cold["demo"]["error"]:
            failed.append(f"cold demo: {cold['demo']['error']}")
    print_summary(report)
    lines = []
    for key, what in (("medium", "medium sizes"), ("small_ort", "small inputs")):
        if report.get(key):
            lines += peer_summary(report[key]["results"], what)
    for r in report.get("scalers") or []:
        bad = [x["call"] for x in r["rows"] if x["meets"] is False]
        lines.append(
            f"  scalers {r['dtype']} ({r['threads']} thr) < 50 us per call: "
            + ("ok" if not bad else "MISSES " + ", ".join(bad))
        )
    if lines:
        print("\ntargets (issue 19):")
        print("\n".join(lines))
    status = 0
    if opts.json:
        Path(opts.json).parent.mkdir(parents=True, exist_ok=True)
        Path(opts.json).write_text(json.dumps(report, indent=1, allow_nan=False, default=str) + "\n")
        print(f"wrote {opts.json}")
    if opts.plot:
        try:
            plot(report, opts.plot)
            print(f"wrote {opts.plot}")
        except ImportError:
            print(
                "numbanorm bench: plot skipped: matplotlib is not installed (pip install matplotlib)",
                file=sys.stderr,
            )
        except ValueError as e:
            print(f"numbanorm bench: plot skipped: {e}", file=sys.stderr)
    if failed:
        print(f"numbanorm bench: {len(failed)} measurement(s) failed:", file=sys.stderr)
        for f in failed:
            print(f"  {f}", file=sys.stderr)
        status = 1
    return status
