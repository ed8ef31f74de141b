"""numbanorm on Dask arrays against Dask's own expressions and dask-ml (issue 18).

On a ``dask.distributed.LocalCluster`` (default 2 worker processes x 1
thread), with the data created on the workers (``da.random`` + 1e6, float32,
persisted), times after a warm-up run of each, the runs interleaved (one of
every case per round, ``--repeat`` rounds: a shared machine's load falls on
every case alike), medians and minima:

- statistics: ``nbn.RunningStats().update(x)`` (one tree of numbanorm's
  moments, to the client) and ``nbn.StandardScaler().fit(x)`` against
  ``dask.compute(x.mean(0), x.var(0))`` and dask-ml's ``StandardScaler().fit``;
- standardize: ``nbn.standardize(x)`` against the naive
  ``(x - x.mean(0)) / x.std(0)`` and dask-ml's ``fit_transform``, each
  computed on the workers and summed (no transfer to the client, nothing
  kept); numbanorm also with its output cache off on the workers
  (``set_output_cache(0)``: every output chunk freshly allocated);
- standardize kept: the same three outputs computed on the workers, only
  each chunk's first row sent to the client (no Dask sum after the op: the
  summed runs above also time Dask's own sum, which costs about as much as
  numbanorm's whole standardize here);

and the accuracy of each: the relative variance error against a float64
two-pass reference, the output's largest error against the float64 z-score.
Prints a Markdown table and writes JSON (``--json PATH``).

Usage::

    python benchmarks/dask_bench.py [--rows 6400000] [--cols 10] [--chunk-rows 200000]
                                    [--workers 2] [--threads 1] [--repeat 9] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np


def _interleaved(cases, repeat):
    """Times of every case (name -> list of seconds): a warm-up run of each,
    then ``repeat`` rounds of one run of every case in turn."""
    for c in cases:
        c["fn"]()
    times = {c["name"]: [] for c in cases}
    for _ in range(repeat):
        for c in cases:
            if c.get("before"):
                c["before"]()
            t0 = time.perf_counter()
            c["fn"]()
            times[c["name"]].append(time.perf_counter() - t0)
            if c.get("after"):
                c["after"]()
    return times


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=6_400_000)
    ap.add_argument("--cols", type=int, default=10)
    ap.add_argument("--chunk-rows", type=int, default=200_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import dask
    import dask.array as da
    from distributed import Client, LocalCluster, wait

    import numbanorm as nbn
    import numbanorm.dask

    try:
        from dask_ml.preprocessing import StandardScaler as DaskMLScaler
    except ImportError:  # pragma: no cover
        DaskMLScaler = None

    cluster = LocalCluster(
        n_workers=args.workers, threads_per_worker=args.threads, processes=True, dashboard_address=":0"
    )
    client = Client(cluster)
    try:
        numbanorm.dask.warmup(client, dtypes=("float32",))
        rng = da.random.default_rng(0)
        x = (
            rng.standard_normal((args.rows, args.cols), chunks=(args.chunk_rows, args.cols), dtype=np.float32)
            + np.float32(1e6)
        ).persist()
        wait(x)
        nbytes = x.nbytes
        # float64 references (on the client: a copy of the data), exact to
        # rounding with math.fsum (NumPy's float64 mean along axis 0 of a 2-D
        # array is a plain loop: 1.2e-11 relative variance error here)
        import math

        xh = x.compute().astype(np.float64)
        mean64 = np.array([math.fsum(xh[:, j].tolist()) / len(xh) for j in range(xh.shape[1])])
        var64 = np.array(
            [math.fsum(((xh[:, j] - mean64[j]) ** 2).tolist()) / len(xh) for j in range(xh.shape[1])]
        )
        std64 = np.sqrt(var64)

        def var_err(v):
            return float(np.max(np.abs(np.asarray(v, np.float64) / var64 - 1)))

        def z_err(make):
            yh = client.compute(make(), sync=True)
            return float(np.max(np.abs(yh.astype(np.float64) - (xh - mean64) / std64)))

        def reduced(make):
            # the output's sum: every output chunk is computed on the workers,
            # nothing is kept or sent; the error of a separate run, to the client
            def run():
                make().sum().compute()
                return make

            return run

        def kept(make):
            # every output chunk computed on the workers and only its first
            # row sent to the client (a blockwise slice, fused into the
            # chunk's task): the op's own cost, without the Dask sum that the
            # reduced runs add (a sum of x alone took ~110 ms here, more than
            # numbanorm's statistics).  (Persisting the outputs and releasing
            # them measured the release's timing: 133-500 ms for one case.)
            def run():
                y = make()
                y.map_blocks(lambda b: b[:1], chunks=((1,) * y.numblocks[0], y.chunks[1])).compute()
                return make

            return run

        prev = {}

        def cache_off():
            prev.update(client.run(nbn.set_output_cache, 0))

        def cache_on():
            for addr, v in prev.items():
                client.run(nbn.set_output_cache, v, workers=[addr])

        stats = [
            (
                "numbanorm RunningStats.update",
                lambda: nbn.RunningStats().update(x),
                lambda r: var_err(r.var()),
            ),
            ("numbanorm StandardScaler.fit", lambda: nbn.StandardScaler().fit(x), lambda r: var_err(r.var_)),
            (
                "dask.compute(x.mean(0), x.var(0))",
                lambda: dask.compute(x.mean(0), x.var(0)),
                lambda r: var_err(r[1]),
            ),
        ]
        if DaskMLScaler is not None:
            stats.append(
                ("dask-ml StandardScaler.fit", lambda: DaskMLScaler().fit(x), lambda r: var_err(r.var_))
            )
        std = [
            ("numbanorm standardize", lambda: nbn.standardize(x), None),
            ("numbanorm standardize, output cache off", lambda: nbn.standardize(x), (cache_off, cache_on)),
            ("naive (x - x.mean(0)) / x.std(0)", lambda: (x - x.mean(0)) / x.std(0), None),
        ]
        if DaskMLScaler is not None:
            std.append(
                ("dask-ml StandardScaler.fit_transform", lambda: DaskMLScaler().fit_transform(x), None)
            )
        cases = [{"name": n, "fn": f, "group": "statistics", "acc": a} for n, f, a in stats]
        for n, make, hooks in std:
            c = {"name": n, "fn": reduced(make), "group": "standardize", "make": make}
            if hooks:
                c["before"], c["after"] = hooks
            cases.append(c)
        for n, make, hooks in std:
            if hooks is None:
                c = {"name": n + ", kept", "fn": kept(make), "group": "standardize kept", "make": make}
                cases.append(c)
        times = _interleaved(cases, args.repeat)
        rows = []
        for c in cases:
            if c["group"] == "statistics":
                err = c["acc"](c["fn"]())
            else:
                err = z_err(c["make"])
            ts = times[c["name"]]
            med = statistics.median(ts)
            rows.append(
                {
                    "group": c["group"],
                    "name": c["name"],
                    "ms": med * 1e3,
                    "min_ms": min(ts) * 1e3,
                    "all_ms": [t * 1e3 for t in ts],
                    "GBps": nbytes / med / 1e9,
                    "error": err,
                }
            )
        graph = nbn.standardize(x)
        ntasks = sum(
            1
            for k in graph.__dask_graph__()
            if str(k[0] if isinstance(k, tuple) else k).startswith("numbanorm-")
        )
    finally:
        client.close()
        cluster.close()

    base = {r["name"]: r["ms"] for r in rows}
    print()
    print(
        f"LocalCluster {args.workers} workers x {args.threads} thread(s); x float32 1e6 + randn "
        f"{args.rows} x {args.cols} ({nbytes / 2**20:.0f} MiB), chunks of {args.chunk_rows} rows "
        f"({x.npartitions} chunks); median (min) of {args.repeat} interleaved rounds"
    )
    print(f"numbanorm tasks per chunk (standardize): {ntasks / x.npartitions:.2f}")
    print()
    print("| group | run | median ms | min ms | GB/s | ratio to numbanorm (medians) | error |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        ref = {
            "statistics": base["numbanorm RunningStats.update"],
            "standardize": base["numbanorm standardize"],
            "standardize kept": base["numbanorm standardize, kept"],
        }[r["group"]]
        kind = "var rel." if r["group"] == "statistics" else "z abs."
        print(
            f"| {r['group']} | {r['name']} | {r['ms']:.1f} | {r['min_ms']:.1f} | {r['GBps']:.2f} "
            f"| {r['ms'] / ref:.1f}x | {kind} {r['error']:.2g} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "args": vars(args),
                    "nbytes": nbytes,
                    "chunks": x.npartitions,
                    "tasks_per_chunk": ntasks / x.npartitions,
                    "rows": rows,
                },
                f,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
