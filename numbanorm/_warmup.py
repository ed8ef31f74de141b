"""``numbanorm warmup``: compile every kernel into numba's on-disk cache.

A first call compiles the kernels it runs (a few seconds per op with a fresh
cache, see README "First calls"); a Docker image, a CI job or a Dask
worker image pays that once with ``numbanorm warmup`` at build time, and
every later process loads the kernels from the cache in milliseconds.

The warm-up runs every op through every kernel variant it can take (small
and large inputs, rows and channels last, streaming stores into a written
``out=``, in place, NaN, each kind of p, the scalers and ``RunningStats``)
on generated data, per dtype.  With ``--jobs N`` the cases are split over N
processes (numba compiles in one thread per process), then checked in this
one: a kernel another process compiled loads from the cache, anything a
concurrent cache write lost is compiled again.  The cache is numba's:
``NUMBA_CACHE_DIR`` when set, else ``__pycache__`` beside the package (or a
user-wide directory when that is not writable).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np

PROG = "numbanorm warmup"
DTYPES = ("float32", "float64")
# outputs of at least _config.STREAM_MIN_BYTES take streaming stores when
# written before (resident): these cases use such buffers
_STREAM_BYTES = 16 << 20


def _resident(shape, dtype):
    a = np.empty(shape, dtype)
    a.fill(0)
    return a


def cases(dtype: str) -> list[tuple[str, Callable[[], object]]]:
    """(name, call) for every kernel variant, in ``dtype``."""
    import numbanorm as nbn

    dt = np.dtype(dtype)
    rng = np.random.default_rng(0)

    def data(*shape):
        return (rng.standard_normal(shape) * 2 + 10).astype(dt)

    n_big = _STREAM_BYTES // dt.itemsize  # elements of a streamed output
    small = data(8, 16, 16)  # at most MIN_TASK_ELEMS: the serial kernels
    rows = data(256, 1024)  # short rows
    long_rows = data(16, 8192)  # rows longer than ROW_CHUNK
    few = data(2, 200_000)  # few long rows: segmented
    big_rows = data(n_big // 1024, 1024)
    img = data(16, 32, 32, 32)
    nhwc = np.ascontiguousarray(img.transpose(0, 2, 3, 1))
    big_img = data(16, 64, n_big // (16 * 64))
    tab = data(20_000, 32)
    tab_nan = tab.copy()
    tab_nan[5, 3] = np.nan
    w_row, b_row = data(1024), data(1024)
    w_long = data(8192)
    C = img.shape[1]
    rm, rv = np.zeros(C, dt), np.ones(C, dt)
    rm_big, rv_big = np.zeros(64, dt), np.ones(64, dt)

    def ones(x):
        return np.ones(x.shape[1], dt)

    def zeros(x):
        return np.zeros(x.shape[1], dt)

    out: list[tuple[str, Callable[[], object]]] = []

    def add(name, f):
        out.append((name, f))

    def both(name, f, x):
        """f(x) allocating, into a written out= (streaming stores for a large
        x), and in place."""
        add(name, lambda: f(x))
        add(name + " out=", lambda: f(x, out=_resident(x.shape, x.dtype)))
        add(name + " in place", lambda: f(y := x.copy(), out=y))

    def small_both(name, f, x):
        """f(x) allocating and in place for a small x (the serial kernels
        come as (apart, in place) pairs: small.py)."""
        add(name, lambda: f(x))
        add(name + " in place", lambda: f(y := x.copy(), out=y))

    # layer / RMS norm
    for nm, f in (
        ("layer_norm", lambda x, **k: nbn.layer_norm(x, x.shape[-1], **k)),
        ("rms_norm", lambda x, **k: nbn.rms_norm(x, x.shape[-1], **k)),
    ):
        small_both(f"{nm} small", f, small)
        small_both(f"{nm} small rows", f, small.reshape(-1, 256))  # float32: row_norm_short
        add(f"{nm} small stats", lambda f=f: f(small, return_stats=True))
        both(f"{nm} rows", f, rows)
        both(f"{nm} big rows", f, big_rows)
        add(f"{nm} long rows", lambda f=f: f(long_rows))
        add(f"{nm} few long rows", lambda f=f: f(few))
    both("layer_norm affine", lambda x, **k: nbn.layer_norm(x, 1024, w_row, b_row, **k), big_rows)
    add("layer_norm affine rows", lambda: nbn.layer_norm(rows, 1024, w_row, b_row))
    add("layer_norm affine small", lambda: nbn.layer_norm(small.reshape(-1, 16), 16, w_row[:16], b_row[:16]))
    # a user's (writable) weights type the small kernels apart from the
    # read-only identity rows the calls without weights pass
    small_both(
        "layer_norm affine small rows",
        lambda x, **k: nbn.layer_norm(x, 256, w_row[:256], b_row[:256], **k),
        small.reshape(-1, 256),
    )
    small_both(
        "rms_norm weight small rows",
        lambda x, **k: nbn.rms_norm(x, 256, w_row[:256], **k),
        small.reshape(-1, 256),
    )
    add("layer_norm affine long", lambda: nbn.layer_norm(long_rows, 8192, w_long, w_long))
    both("rms_norm weight", lambda x, **k: nbn.rms_norm(x, 1024, w_row, **k), big_rows)
    # instance / group norm
    for nm, f in (
        ("instance_norm", lambda x, **k: nbn.instance_norm(x, **k)),
        ("group_norm", lambda x, **k: nbn.group_norm(x, 4, **k)),
        (
            "group_norm affine",
            lambda x, **k: nbn.group_norm(x, 4, np.ones(x.shape[1]), np.zeros(x.shape[1]), **k),
        ),
        ("group_norm weights", lambda x, **k: nbn.group_norm(x, 4, ones(x), zeros(x), **k)),
    ):
        small_both(f"{nm} small", f, small)
        # float32 group norm: rows of 128, segments of 32: row_norm_groups
        small_both(f"{nm} small rows", f, small.reshape(4, 16, 4, 8))
        add(f"{nm} stats", lambda f=f: f(img, return_stats=True))
        add(f"{nm} long spatial", lambda f=f: f(long_rows.reshape(4, 4, 8192)))
        both(nm, f, big_img)
        add(f"{nm} channels last", lambda f=f: f(nhwc, channel_axis=-1))
    add("instance_norm running", lambda: nbn.instance_norm(img, rm.copy(), rv.copy()))
    add("instance_norm eval", lambda: nbn.instance_norm(img, rm, rv, use_input_stats=False))
    # batch norm
    for layout, x, kw in (("nchw", img, {}), ("nhwc", nhwc, {"channel_axis": -1})):
        small_both(
            f"batch_norm small {layout}",
            lambda x, kw=kw, **k: nbn.batch_norm(x, training=True, **kw, **k),
            small,
        )
        add(f"batch_norm small eval {layout}", lambda kw=kw: nbn.batch_norm(small, rm[:16], rv[:16], **kw))
        add(
            f"batch_norm {layout}",
            lambda x=x, kw=kw: nbn.batch_norm(x, rm.copy(), rv.copy(), training=True, **kw),
        )
        add(f"batch_norm eval {layout}", lambda x=x, kw=kw: nbn.batch_norm(x, rm, rv, **kw))
        add(
            f"batch_norm stats {layout}",
            lambda x=x, kw=kw: nbn.batch_norm(x, training=True, return_stats=True, **kw),
        )
    add("batch_norm few channels", lambda: nbn.batch_norm(data(64, 2, 1024), training=True))
    add("batch_norm small rows", lambda: nbn.batch_norm(data(64, 8, 64), training=True))
    both(
        "batch_norm big",
        lambda x, **k: nbn.batch_norm(x, rm_big.copy(), rv_big.copy(), training=True, **k),
        big_img,
    )
    both("batch_norm big eval", lambda x, **k: nbn.batch_norm(x, rm_big, rv_big, **k), big_img)
    add("batch_norm 5-D", lambda: nbn.batch_norm(img.reshape(16, 32, 4, 8, 32), training=True))
    # preprocessing
    for nm, f in (("standardize", nbn.standardize), ("minmax_scale", nbn.minmax_scale)):
        small_both(f"{nm} small", f, small.reshape(-1, 16))
        both(f"{nm} columns", f, tab)
        add(f"{nm} NaN", lambda f=f: f(tab_nan))
        add(f"{nm} rows", lambda f=f: f(tab, axis=1))
        add(f"{nm} rows NaN", lambda f=f: f(tab_nan, axis=1))
        add(f"{nm} per channel", lambda f=f: f(img, axis=(0, 2, 3)))
        add(f"{nm} channels last", lambda f=f: f(nhwc, axis=(0, 1, 2)))
        add(f"{nm} all", lambda f=f: f(tab, axis=None))
    add("standardize stats", lambda: nbn.standardize(tab, return_stats=True))
    add("minmax_scale clip", lambda: nbn.minmax_scale(tab, (-1, 1), clip=True))
    for p in (2.0, 1.0, np.inf, 3.0):
        small_both(f"lp_normalize p={p} small", lambda x, p=p, **k: nbn.lp_normalize(x, p, **k), small)
        both(f"lp_normalize p={p}", lambda x, p=p, **k: nbn.lp_normalize(x, p, **k), big_rows)
        add(f"lp_normalize p={p} rows", lambda p=p: nbn.lp_normalize(rows, p))
        add(f"lp_normalize p={p} columns", lambda p=p: nbn.lp_normalize(tab, p, axis=0))
        add(f"lp_normalize p={p} few long rows", lambda p=p: nbn.lp_normalize(few, p))
    # streaming statistics and scalers
    add("RunningStats", lambda: nbn.RunningStats().update(tab).update(tab_nan[:100]))
    add("StandardScaler", lambda: nbn.StandardScaler().fit(tab).transform(tab))
    add("StandardScaler partial_fit", lambda: nbn.StandardScaler().partial_fit(small.reshape(-1, 16)))
    add("StandardScaler weights", lambda: nbn.StandardScaler().fit(tab, sample_weight=np.ones(len(tab))))
    add("MinMaxScaler", lambda: nbn.MinMaxScaler().fit(tab).transform(tab))
    add("MinMaxScaler partial_fit", lambda: nbn.MinMaxScaler().partial_fit(small.reshape(-1, 16)))
    # small batches take the serial kernels (backends/cpu/small.py)
    s16 = small.reshape(-1, 16)
    add("RunningStats small", lambda: nbn.RunningStats().update(s16).update(s16[:3]))
    add("StandardScaler small", lambda: nbn.StandardScaler().fit(s16).transform(s16))
    add(
        "StandardScaler weights small",
        lambda: nbn.StandardScaler().fit(s16, sample_weight=np.ones(len(s16))).partial_fit(s16),
    )
    add("MinMaxScaler small", lambda: nbn.MinMaxScaler().fit(s16).transform(s16))
    add("StandardScaler small in place", lambda: nbn.StandardScaler(copy=False).fit(s16).transform(s16 + 0))
    return [(f"{dtype} {name}", f) for name, f in out]


def _all_cases(dtypes):
    return [c for dt in dtypes for c in cases(dt)]


def _kernel_counts() -> tuple[int, int]:
    """(compiled, loaded from the cache) kernels of this process so far."""
    from ._cache import dispatcher_counts
    from .backends.cpu import _tasks

    compiled, loaded = dispatcher_counts()
    return compiled + _tasks.COUNTS["compiled"], loaded + _tasks.COUNTS["loaded"]


class _Progress:
    def __init__(self, total: int, quiet: bool):
        self.total = total
        self.quiet = quiet or not sys.stderr.isatty()
        self.bar = None
        if not self.quiet:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit="case", file=sys.stderr, dynamic_ncols=True)
            except ImportError:
                pass
        self.done = 0

    def step(self, name: str) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.set_postfix_str(name[:40], refresh=False)
            self.bar.update(1)
        elif not self.quiet:
            print(
                f"\r{PROG}: [{self.done}/{self.total}] {name[:60]:<60}", end="", file=sys.stderr, flush=True
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif not self.quiet:
            print(file=sys.stderr)


def _run(selected, progress: _Progress) -> list[str]:
    failed = []
    for name, f in selected:
        try:
            with np.errstate(all="ignore"):
                f()
        except Exception as e:  # a bug: reported, the rest still warmed up
            failed.append(f"{name}: {type(e).__name__}: {e}")
        progress.step(name)
    return failed


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--dtypes", default=",".join(DTYPES), help="comma-separated: float16,float32,float64")
    p.add_argument("--jobs", type=int, default=1, help="processes compiling in parallel (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    p.add_argument("--only", default=None, metavar="TEXT", help="only the cases whose name contains TEXT")
    p.add_argument("--part", default=None, help=argparse.SUPPRESS)  # i/N: a child of --jobs
    return p


def main(argv=None) -> int:
    p = _parser()
    try:
        args = p.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    bad = [d for d in dtypes if d not in ("float16", "float32", "float64")]
    if bad or not dtypes:
        print(f"{PROG}: --dtypes takes float16, float32, float64 (got {args.dtypes!r})", file=sys.stderr)
        return 2
    if args.jobs < 1:
        print(f"{PROG}: --jobs must be at least 1 (got {args.jobs})", file=sys.stderr)
        return 2
    from . import _ahead

    _ahead.set_enabled(False)  # (--jobs says how many processes compile)
    all_cases = _all_cases(dtypes)
    if args.only:
        all_cases = [c for c in all_cases if args.only in c[0]]
    if args.list:
        for name, _ in all_cases:
            print(name)
        return 0
    if args.part is not None:  # a child: every N-th case from i
        i, n = (int(v) for v in args.part.split("/"))
        failed = _run(all_cases[i::n], _Progress(0, True))
        for f in failed:
            print(f"{PROG}: {f}", file=sys.stderr)
        return 1 if failed else 0
    t0 = time.perf_counter()
    if args.jobs > 1:
        env = _ahead.child_env()
        cmd = [sys.executable, "-m", "numbanorm", "warmup", "--dtypes", ",".join(dtypes), "--quiet"]
        if args.only:
            cmd += ["--only", args.only]
        procs = [subprocess.Popen([*cmd, "--part", f"{i}/{args.jobs}"], env=env) for i in range(args.jobs)]
        for pr in procs:
            pr.wait()
    progress = _Progress(len(all_cases), args.quiet)
    failed = _run(all_cases, progress)
    progress.close()
    compiled, loaded = _kernel_counts()
    dt = time.perf_counter() - t0
    print(
        f"{PROG}: {len(all_cases)} cases ({', '.join(dtypes)}) in {dt:.1f} s; "
        f"kernels compiled here: {compiled}, loaded from the cache: {loaded}"
    )
    for f in failed:
        print(f"{PROG}: failed: {f}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
