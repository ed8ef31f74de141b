"""Static figures of every CUDA kernel for sm_90, without a GPU.

For each kernel signature the backend launches (``launch_signatures()`` in
numbanorm/backends/_cuda_kernels.py): registers and spills (``ptxas -v``),
the global loads and stores in the SASS by width (``cuobjdump -sass``),
resident threads per SM from the registers and the launch's block size,
and the bytes of loads each SM keeps in flight, against what HBM needs by
Little's law (benchmarks/NOTES.md section 23).

Needs NVVM (``pip install "numba-cuda[cu13]"``) and the toolkit's ptxas,
cuobjdump and nvdisasm (``pip install nvidia-cuda-nvcc nvidia-cuda-cuobjdump
nvidia-cuda-nvdisasm``, of the same CUDA version as NVVM: a system ptxas of
an older CUDA rejects the PTX)::

    python benchmarks/cuda_static.py [--dtype float32] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

os.environ["NUMBA_ENABLE_CUDASIM"] = "0"  # before numba is imported

# per SM on sm_90 (H100/H200)
REGS_PER_SM = 65536
MAX_THREADS_PER_SM = 2048
# loads that must be in flight per SM to stream at 4.8 TB/s with ~600 ns
# loaded memory latency, over 132 SMs (Little's law: bandwidth x latency)
NEED_BYTES_PER_SM = 4.8e12 * 600e-9 / 132

# per kernel: threads per block as launched (the streaming kernels; the
# small parameter kernels get registers and spills only)
STREAMING = ("_moments_partial", "_pnorm_partial", "_apply_flat", "_apply_wide")
BLOCK = {n + h: 256 for n in STREAMING for h in ("", "_h")}  # _h: 2-byte dtypes
ROW_KERNELS = ("_row_layer", "_row_rms", "_row_lp", "_row_lpp", "_row_lpp32")
LPP_KERNELS = ("_row_lpp", "_row_lpp32")  # other p: _NREG_P values per thread
BLOCK.update(dict.fromkeys(ROW_KERNELS, 128))  # cuda.ROW_THREADS; D > 1024: _row_launch
# channels-last instance/group norm in one read (_cuda_tiles): blocks of
# cuda.TILE_THREADS (one of 512 when a tile per SM is all L2 holds), figured
# at these (N, S, C, channels per group) shapes as cuda.tile_norm launches them
TILE_KERNELS = ("_tile_norm", "_tile_norm_h")
BLOCK.update(dict.fromkeys(TILE_KERNELS, 256))
TILE_SHAPES = {
    "in 8x64x64x64": (8, 64 * 64, 64, 1),
    "gn 8x64x64x512 G=32": (8, 64 * 64, 512, 16),
    "gn 8x32x32x320 G=32": (8, 32 * 32, 320, 10),
    "gn 64x7x7x512 G=32": (64, 7 * 7, 512, 16),
}
SMS = 132
# cuda.py's defaults TILE_L2_BYTES, TILE_ROW_BYTES, TILE_THREADS,
# TILE_BLOCKS_PER_SM (that module needs a GPU to import)
TILE_LAUNCH = (34 << 20, 32, 256, 2)
# rows past the registers of the row kernels: a block of cuda.ROW_LONG = 128
# threads per row, each chunk's loads in flight (values per thread: the
# kernel's buffer); x read once from HBM, the output pass re-reads the rows
# the resident blocks hold, from L2 while they fit in it
LONG_KERNELS = {
    "_row_long_layer": "_NREG",
    "_row_long_layer_d": "_NREG_P",
    "_row_long_rms": "_NREG",
    "_row_long_lp": "_NREG",
    "_row_long_lpp": "_NREG_P",
}
BLOCK.update(dict.fromkeys(LONG_KERNELS, 128))
LONG_D = (16384, 65536)
SMS = 132  # H100 SXM; H200: 132
L2_BYTES = 50 * 2**20
# row lengths at which the row kernels are figured (threads per row and
# loads per thread depend on D: _cuda_kernels.row_group); 8192: the last
# one-read D of _NREG = 32 and of _row_lpp32 (512 threads of 16), past it for
# _row_lpp's 16; 16384: past every kernel's registers
ROW_D = (256, 1024, 2048, 4096, 8192, 16384)


def _tools():
    """ptxas, cuobjdump, nvdisasm: the nvidia-cuda-* wheels' first, then PATH."""
    here = os.path.join(os.path.dirname(os.__file__), "site-packages", "nvidia", "cu13", "bin")
    found = {}
    for name in ("ptxas", "cuobjdump", "nvdisasm"):
        p = os.path.join(here, name)
        found[name] = p if os.path.exists(p) else shutil.which(name)
    return found


def _nreg(name, k):
    return k._NREG_P if name in LPP_KERNELS else k._NREG


def _row_launch(name, k, itemsize, D):
    """(threads per row, rows per block) as numbanorm/backends/cuda.py
    launches them with its defaults (ROW_WARP_MAX_D 1024, ROW_GROUP 32,
    ROW_BLOCK 256, ROW_THREADS 128; _row_lpp32: ROW_BLOCK_P 512)."""
    if name == "_row_lpp32":  # hardware: shuffles (ROW_BLOCK_P 512)
        return k.row_launch_lpp32(D, itemsize, _nreg(name, k), 1024, 32, 256, 128, 512, True)
    return k.row_launch(D, itemsize, _nreg(name, k), 1024, 32, 256, 128)


def _in_flight(name, k, itemsize, D=None):
    """Loads of x a thread issues before using any (a full chunk or step;
    row kernels: the thread's part of a row of D, all loaded first, while
    the row fits the group's registers; longer rows are launched as the
    long-row kernels: None).  Long-row kernels: their chunk, the buffer's
    values per thread, all loaded before any is used."""
    if name in LONG_KERNELS:
        return getattr(k, LONG_KERNELS[name])
    if name in ROW_KERNELS:
        nreg = _nreg(name, k)
        g = _row_launch(name, k, itemsize, D)[0]
        if D > g * nreg:
            return None  # launched as the long-row kernel
        return min(nreg, -(-D // g))
    return {
        "_moments_partial": k._CH,
        "_pnorm_partial": k._UNROLL,
        "_apply_flat": k._UNROLL,
        "_apply_wide": k._UNROLL,
        "_moments_partial_h": k._CH_H,
        "_pnorm_partial_h": k._UNROLL_H,
        "_apply_flat_h": k._UNROLL_FLAT_H,
        "_apply_wide_h": k._UNROLL_WIDE_H,
        "_tile_norm": _tiles().tile_chunk(itemsize),
        "_tile_norm_h": _tiles().tile_chunk(itemsize),
    }.get(name)


def _tiles():
    from numbanorm.backends import (
        _cuda_kernels,  # noqa: F401  (first: it imports _cuda_tiles)
        _cuda_tiles,
    )

    return _cuda_tiles


def _tile_rows(name, k, itemsize, regs):
    """The tile kernel at TILE_SHAPES as numbanorm/backends/cuda.py launches
    it on SMS SMs: tile channels, block, grid, resident threads per SM,
    loads in flight per thread (a chunk, or the thread's rows of a small
    tile), bytes in flight per SM and the L2 held by the live tiles."""
    tiles = _tiles()
    out = {}
    per_warp = -(-regs * 32 // 256) * 256
    warps = min(REGS_PER_SM // per_warp, MAX_THREADS_PER_SM // 32)
    for label, (N, S, C, cpg) in TILE_SHAPES.items():
        plan = tiles.tile_launch(N, S, C, cpg, itemsize, SMS, *TILE_LAUNCH)
        if plan is None:
            out[f"{name} {label}"] = {"tile": None}
            continue
        tc, (tx, ty), grid = plan
        block = tx * ty
        blocks = min(warps // -(-block // 32), -(-grid // SMS))
        n = min(tiles.tile_chunk(itemsize), -(-S // ty))
        tile = S * tc * itemsize
        out[f"{name} {label}"] = {
            "tile_channels": tc,
            "block": [tx, ty],
            "grid": grid,
            "tile_bytes": tile,
            "l2_bytes": grid * tile,
            "blocks_per_sm": blocks,
            "threads_per_sm": blocks * block,
            "loads_in_flight": n,
            "bytes_in_flight_per_sm": blocks * block * n * itemsize,
            "of_need": round(blocks * block * n * itemsize / NEED_BYTES_PER_SM, 2),
        }
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="float32", choices=["float16", "float32", "float64"])
    ap.add_argument("--json", help="write the table as JSON here")
    args = ap.parse_args(argv)
    import numba.cuda.dispatcher as disp
    from numba import cuda

    class _Dev:  # numba-cuda asks the current device while compiling
        compute_capability = (9, 0)

    disp.get_current_device = lambda: _Dev()
    from numbanorm.backends import _cuda_kernels as k

    tools = _tools()
    if not all(tools.values()):
        print(f"needs ptxas, cuobjdump and nvdisasm: {tools}", file=sys.stderr)
        return 2
    env = {**os.environ, "PATH": os.path.dirname(tools["nvdisasm"]) + os.pathsep + os.environ["PATH"]}
    itemsize = {"float16": 2, "float32": 4, "float64": 8}[args.dtype]
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, sigs in k.launch_signatures().items():
            sig = next((s for s in sigs if args.dtype in str(s[0])), None)
            if sig is None:
                if name in BLOCK:
                    continue  # another dtype's kernel (_row_lpp: float64 only; _h: float16)
                sig = sigs[0]
            kern = getattr(k, name)
            lb = kern.targetoptions.get("launch_bounds")
            ptx, _ = cuda.compile_ptx(kern.py_func, sig, cc=(9, 0), launch_bounds=lb)
            f = os.path.join(tmp, name + ".ptx")
            with open(f, "w") as fh:
                fh.write(ptx)
            cubin = f[:-4] + ".cubin"
            cmd = [tools["ptxas"], "-arch=sm_90", "-v", f, "-o", cubin]
            r = subprocess.run(cmd, capture_output=True, text=True)
            regs = int(re.search(r"Used (\d+) registers", r.stderr).group(1))
            spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", r.stderr)
            sass = subprocess.run(
                [tools["cuobjdump"], "-sass", cubin], capture_output=True, text=True, env=env
            ).stdout
            ldg, stg = {}, {}
            for pat, d in ((r"LDG\.E((?:\.[A-Z0-9]+)*)", ldg), (r"STG\.E((?:\.[A-Z0-9]+)*)", stg)):
                for m in re.finditer(pat, sass):
                    w = m.group(1) or ".32"
                    d[w] = d.get(w, 0) + 1
            spilled = [int(spill.group(1)), int(spill.group(2))] if spill else None
            row = {"registers": regs, "spill_bytes": spilled}
            row.update(ldg=ldg, stg=stg)
            block = BLOCK.get(name)
            Ds = ROW_D if name in ROW_KERNELS else (LONG_D if name in LONG_KERNELS else (None,))
            for D in Ds:
                r_ = dict(row)
                key = name if D is None else f"{name} D={D}"
                if name in ROW_KERNELS and D > _row_launch(name, k, itemsize, D)[0] * _nreg(name, k):
                    print(key, "-> the long-row kernel")
                    continue
                if block:
                    n = _in_flight(name, k, itemsize, D)
                    if name in ROW_KERNELS:
                        g, rpb = _row_launch(name, k, itemsize, D)
                        block = g * rpb
                    elif name in LONG_KERNELS:
                        g = block
                    per_warp = -(-regs * 32 // 256) * 256  # allocated in units of 256 per warp
                    warps = min(REGS_PER_SM // per_warp, MAX_THREADS_PER_SM // 32)
                    blocks = warps // (block // 32)
                    threads = blocks * block
                    r_.update(blocks_per_sm=blocks, threads_per_sm=threads, loads_in_flight=n)
                    if name in ROW_KERNELS:
                        r_["threads_per_row"] = g
                        r_["one_read"] = True  # the row kept in registers
                    elif name in LONG_KERNELS:
                        # the rows the resident blocks work on, re-read by
                        # the output pass: from L2 while they fit
                        foot = SMS * blocks * D * itemsize
                        r_.update(threads_per_row=g, l2_footprint_mb=round(foot / 2**20, 1))
                        r_["reread_from"] = "L2" if foot <= L2_BYTES else "HBM (partly)"
                    if n is not None:
                        r_["bytes_in_flight_per_sm"] = threads * n * itemsize
                        r_["of_need"] = round(threads * n * itemsize / NEED_BYTES_PER_SM, 2)
                rows[key] = r_
                print(key, r_)
            if name in TILE_KERNELS:
                for key, r_ in _tile_rows(name, k, itemsize, regs).items():
                    rows[key] = r_
                    print(key, r_)
    if args.json:
        with open(args.json, "w") as fh:
            out = {"dtype": args.dtype, "need_bytes_per_sm": NEED_BYTES_PER_SM, "kernels": rows}
            json.dump(out, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
