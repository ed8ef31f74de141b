"""Standardize an .npy file larger than memory: from Python, then with the command line.

1. Python: the file is memory-mapped and read in chunks of rows.  A
   ``numbanorm.RunningStats`` folds each chunk's exact moments in (Chan's
   merge: any chunking gives the statistics of the whole file), then a second
   pass writes ``(x - mean) / std`` chunk by chunk into an output memmap.
   Memory use is a few chunks, whatever the file's size.
2. The command line does the same in one call (chunked, memory-mapped,
   written to a temporary file and renamed at the end)::

       numbanorm standardize IN.npy -o OUT.npy --chunk-size 64MB

Both results are checked against a float64 NumPy reference (computed chunk
by chunk, so the check fits in memory too); the script fails (exit status 1)
if an error exceeds ``--tolerance``.  The columns of the generated data have
offsets up to 1e6 times their spread: float32 data where a textbook
``E[x^2] - E[x]^2`` loses every digit.

    python examples/out_of_core.py [--out DIR] [--rows 1000000] [--cols 16] [--chunk-rows 65536]

``--rows 50000000`` writes a 3.2 GB file; nothing here holds more than a few chunks.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time

import numpy as np

import numbanorm as nbn
from numbanorm.cli import main as numbanorm_cli


def chunks(n: int, step: int):
    """(start, stop) of consecutive row chunks."""
    for a in range(0, n, step):
        yield a, min(n, a + step)


def write_input(path: str, rows: int, cols: int, step: int, seed: int) -> None:
    """A float32 .npy of offset + scale * randn per column, written chunk by chunk."""
    rng = np.random.default_rng(seed)
    offset = np.logspace(0, 6, cols).astype(np.float32)  # 1 ... 1e6
    scale = np.linspace(0.5, 5.0, cols).astype(np.float32)
    x = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, cols))
    for a, b in chunks(rows, step):
        x[a:b] = offset + scale * rng.standard_normal((b - a, cols), dtype=np.float32)
    x.flush()
    del x


def standardize_in_python(src: str, dst: str, step: int) -> nbn.RunningStats:
    """RunningStats over the chunks of a memmap, then the output pass into a memmap."""
    x = np.load(src, mmap_mode="r")  # nothing is read yet
    rs = nbn.RunningStats()
    for a, b in chunks(x.shape[0], step):
        rs.update(x[a:b], axis=0)  # one parallel pass over the chunk; state is float64
    mean, std = rs.mean, rs.std()  # per column, float64
    std[std == 0] = 1.0  # constant columns: scale 1, as nbn.standardize does
    y = np.lib.format.open_memmap(dst, mode="w+", dtype=x.dtype, shape=x.shape)
    for a, b in chunks(x.shape[0], step):
        # float64 arithmetic on one chunk at a time, rounded once into the float32 output
        y[a:b] = (x[a:b] - mean) / std
    y.flush()
    del y
    return rs


def max_error(src: str, result: str, step: int) -> float:
    """max |result - (x - mean) / std| with mean and std from float64 NumPy (two chunked passes)."""
    x = np.load(src, mmap_mode="r")
    y = np.load(result, mmap_mode="r")
    n = x.shape[0]
    mean = sum(x[a:b].sum(axis=0, dtype=np.float64) for a, b in chunks(n, step)) / n
    ss = sum(((x[a:b] - mean) ** 2).sum(axis=0) for a, b in chunks(n, step))
    std = np.sqrt(ss / n)
    return max(float(np.abs(y[a:b] - (x[a:b] - mean) / std).max()) for a, b in chunks(n, step))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", metavar="DIR", help="where the .npy files go (default: a temporary dir, removed)")
    p.add_argument("--rows", type=int, default=1_000_000, help="rows of the generated file (default 1000000)")
    p.add_argument("--cols", type=int, default=16, help="columns (default 16)")
    p.add_argument("--chunk-rows", type=int, default=65536, help="rows per chunk (default 65536)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tolerance", type=float, default=1e-5, help="max allowed error (default 1e-5)")
    args = p.parse_args(argv)
    if min(args.rows, args.cols, args.chunk_rows) < 1:
        p.error("--rows, --cols and --chunk-rows must be positive")

    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or tmp
        os.makedirs(out, exist_ok=True)
        src = os.path.join(out, "big.npy")
        write_input(src, args.rows, args.cols, args.chunk_rows, args.seed)
        mb = os.path.getsize(src) / 1e6
        print(f"input: {src} ({args.rows} x {args.cols} float32, {mb:.1f} MB)")

        # 1. from Python
        t = time.perf_counter()
        dst = os.path.join(out, "big_z_python.npy")
        rs = standardize_in_python(src, dst, args.chunk_rows)
        print(f"python: RunningStats + output memmap in {time.perf_counter() - t:.2f} s -> {dst}")
        print(f"  column means {rs.mean[[0, -1]]} (first, last), stds {rs.std()[[0, -1]]}")

        # 2. the same with the command line: this command, in a shell, does it all
        dst_cli = os.path.join(out, "big_z_cli.npy")
        chunk_size = f"{max(1, args.chunk_rows * args.cols * 4 // 1000)}KB"  # about --chunk-rows rows
        cmd = ["standardize", src, "-o", dst_cli, "--chunk-size", chunk_size, "--quiet"]
        print("$ numbanorm " + shlex.join(cmd))
        # numbanorm.cli.main is what the `numbanorm` command runs (it returns the exit status);
        # calling it here spares starting a second Python (subprocess.run(["numbanorm", *cmd]) is the same)
        t = time.perf_counter()
        status = numbanorm_cli(cmd)
        if status != 0:
            print(f"error: numbanorm exited with status {status}", file=sys.stderr)
            return 1
        print(f"command line: {time.perf_counter() - t:.2f} s -> {dst_cli}")

        # check both against float64 NumPy
        ok = True
        for name, path in (("python", dst), ("command line", dst_cli)):
            err = max_error(src, path, args.chunk_rows)
            ok &= err <= args.tolerance
            print(f"max |{name} - float64 NumPy| = {err:.2e} (tolerance {args.tolerance:g})")
    if not ok:
        print("error: a result is off the float64 reference", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
