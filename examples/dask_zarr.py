"""Standardize a Zarr store per feature on a dask.distributed cluster, and write it back.

A ``LocalCluster`` of worker processes (or a running cluster: ``--scheduler
ADDRESS``) generates a float32 Zarr array whose columns sit at offsets up to
1e6, then ``nbn.standardize`` turns the lazy array read from the store into a
lazy z-score array with the same chunks, written to a second store.  The
statistics are one tree of numbanorm's float64 moments (each chunk read
once, merged with Chan's formula), the output pass one task per chunk.  The
result is checked against float64 NumPy; the script fails (exit status 1)
above ``--tolerance``.  The cluster's dashboard address is printed: open it
while the script runs (``--linger SECONDS`` keeps the cluster up a while).

The same from the command line, on the same cluster::

    numbanorm standardize IN.zarr -o OUT.zarr --scheduler ADDRESS

    python examples/dask_zarr.py [--out DIR] [--workers 2] [--rows 400000] [--cols 8]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import sys
import tempfile
import time

import numpy as np

import numbanorm as nbn


def cluster_client(args):
    """A Client of a new LocalCluster of worker processes (or of the cluster at --scheduler)."""
    from distributed import Client, LocalCluster

    stack = contextlib.ExitStack()
    if args.scheduler:
        client = stack.enter_context(Client(args.scheduler))
    else:
        cluster = stack.enter_context(
            LocalCluster(
                n_workers=args.workers,
                threads_per_worker=args.threads,
                processes=True,
                # ":0": any free port, so that several clusters never clash (None would still take 8787)
                dashboard_address=":0",
            )
        )
        client = stack.enter_context(Client(cluster))
    print(f"dashboard: {client.dashboard_link}")
    if importlib.util.find_spec("bokeh") is None:
        print("  (bokeh is not installed: that page only says to install it, pip install 'bokeh>=3.1')")
    return stack, client


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", metavar="DIR", help="where the Zarr stores go (default: a temp dir, removed)")
    p.add_argument("--workers", type=int, default=2, help="worker processes of the LocalCluster (2)")
    p.add_argument("--threads", type=int, default=1, help="threads per worker (1)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="a running cluster (its workers must see --out)")
    p.add_argument("--rows", type=int, default=400_000, help="rows of the generated array (400000)")
    p.add_argument("--cols", type=int, default=8, help="columns (features, 8)")
    p.add_argument("--chunk-rows", type=int, default=50_000, help="rows per chunk (50000)")
    p.add_argument("--warmup", action="store_true", help="load numbanorm's kernels on every worker first")
    p.add_argument("--linger", type=float, default=0.0, help="keep the cluster up this long (s) at the end")
    p.add_argument("--tolerance", type=float, default=1e-5, help="max allowed error (default 1e-5)")
    args = p.parse_args(argv)
    if min(args.workers, args.threads, args.rows, args.cols, args.chunk_rows) < 1:
        p.error("--workers, --threads, --rows, --cols and --chunk-rows must be positive")
    try:
        import dask.array as da
        import distributed  # noqa: F401
        import zarr  # noqa: F401
    except ImportError as e:
        print(f"{e.name} is not installed (pip install 'numbanorm[dask]'): nothing to show")
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or tmp
        os.makedirs(out, exist_ok=True)
        src, dst = os.path.join(out, "features.zarr"), os.path.join(out, "features_z.zarr")
        stack, client = cluster_client(args)
        with stack:
            n = len(client.scheduler_info()["workers"])
            print(f"cluster: {client.scheduler.address}, {n} workers")
            if args.warmup:  # else each worker loads (or compiles) the kernels on its first task
                import numbanorm.dask

                numbanorm.dask.warmup(client, dtypes=("float32",))

            # input: generated on the workers, written chunk by chunk (a Client is the default scheduler)
            rng = da.random.default_rng(0)
            shape, chunks = (args.rows, args.cols), (args.chunk_rows, args.cols)
            offset = np.logspace(0, 6, args.cols).astype(np.float32)  # 1 ... 1e6
            x = rng.standard_normal(shape, chunks=chunks, dtype=np.float32) * np.float32(3) + offset
            x.to_zarr(src, overwrite=True)

            t = time.perf_counter()
            x = da.from_zarr(src)  # lazy: nothing read yet
            z = nbn.standardize(x, axis=0)  # lazy z-scores per column, x's chunks, float32
            z.to_zarr(dst, overwrite=True)  # statistics tree + output pass, on the cluster
            print(f"standardized {src} -> {dst} in {time.perf_counter() - t:.2f} s ({x.npartitions} chunks)")

            # check, chunk by chunk on the cluster: float64 two-pass reference (NumPy's formula on each chunk)
            x64, z = x.astype(np.float64), da.from_zarr(dst)
            mean = x64.mean(axis=0).compute()
            std = np.sqrt(((x64 - mean) ** 2).mean(axis=0).compute())
            err = float(abs(z - (x64 - mean) / std).max().compute())
            print(f"output {z.dtype} {z.shape}: largest |column mean| {float(abs(z.mean(axis=0)).max()):.1e}")
            print(f"max |numbanorm on Dask - float64 NumPy| = {err:.2e} (tolerance {args.tolerance:g})")
            if args.linger > 0:
                print(f"cluster kept up for {args.linger:g} s")
                time.sleep(args.linger)
    if not err <= args.tolerance:
        print("error: the result is off the float64 reference", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # needed: worker processes import this file
    sys.exit(main())
