"""CLI standardize throughput against a plain chunked copy of the same file.

Both read the input through per-chunk memory maps and write a preallocated
temporary .npy through per-chunk maps, then fsync and rename (the CLI's
output path), so the ratio isolates the statistics pass and the arithmetic.
The copy reads each byte once, standardize twice (statistics, then output).

    python benchmarks/cli_throughput.py [--size-mb 1024] [--chunk-size 64MB] [--dir /tmp]

Prints GB/s (input bytes / wall time) and the peak RSS of the CLI child.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from numbanorm import cli


def chunked_copy(src: str, dst: str, chunk_bytes: int) -> None:
    npy = cli._Npy(src)
    out = cli._Output(dst, npy.shape, npy.out_dtype, npy.fortran)
    try:
        for start, stop in npy.chunks(chunk_bytes):
            a = npy.read(start, stop)
            b = out.write_view(start, stop)
            b[...] = a
            del a, b
        out.commit()
    finally:
        out.discard()


_HWM = (
    "import sys\n"
    "from numbanorm.cli import main\n"
    "rc = main(sys.argv[1:])\n"
    "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
    "print(int(hwm) * 1024, file=sys.stderr)\n"
    "sys.exit(rc)\n"
)


def run_cli(argv: list[str]) -> tuple[float, int]:
    """Wall time and peak RSS (the child's own VmHWM; ru_maxrss would include
    the parent's pages between fork and exec)."""
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _HWM, *argv], capture_output=True, text=True)
    dt = time.perf_counter() - t
    assert proc.returncode == 0, proc.stderr
    return dt, int(proc.stderr.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--chunk-size", default="64MB")
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    d = tempfile.mkdtemp(dir=a.dir)
    src, dst = os.path.join(d, "x.npy"), os.path.join(d, "y.npy")
    cols = 1024
    rows = a.size_mb * 2**20 // (4 * cols)
    x = np.lib.format.open_memmap(src, mode="w+", dtype=np.float32, shape=(rows, cols))
    rng = np.random.default_rng(0)
    block = (1e3 + rng.normal(size=(4096, cols))).astype(np.float32)
    for i in range(0, rows, 4096):
        x[i : i + 4096] = block[: rows - i]
    x.flush()
    del x
    nbytes = os.path.getsize(src)
    chunk = cli.parse_size(a.chunk_size)
    # warm-up: page cache and numba's on-disk cache
    chunked_copy(src, dst, chunk)
    run_cli(["standardize", src, "-o", dst, "-q", "--chunk-size", a.chunk_size])
    copies, stds, rss = [], [], 0
    for _ in range(a.repeat):
        t = time.perf_counter()
        chunked_copy(src, dst, chunk)
        copies.append(time.perf_counter() - t)
        dt, r = run_cli(["standardize", src, "-o", dst, "-q", "--chunk-size", a.chunk_size])
        stds.append(dt)
        rss = max(rss, r)
    _, base_rss = run_cli(["stats", src, "-q", "--chunk-size", "1MB", "--json"])
    c, s = min(copies), min(stds)
    print(f"file {nbytes / 1e9:.2f} GB float32 ({rows}x{cols}), chunk {a.chunk_size}, {os.cpu_count()} CPUs")
    print(f"chunked copy (in-process):      {nbytes / c / 1e9:6.2f} GB/s  ({c:.2f} s)")
    print(f"numbanorm standardize (process): {nbytes / s / 1e9:6.2f} GB/s  ({s:.2f} s, incl. start-up)")
    print(f"ratio standardize / copy time:   {s / c:.2f}")
    print(
        f"peak RSS standardize {rss / 2**20:.0f} MiB (stats run with 1MB chunks: {base_rss / 2**20:.0f} MiB)"
    )
    os.remove(src)
    if os.path.exists(dst):
        os.remove(dst)
    os.rmdir(d)


if __name__ == "__main__":
    main()
