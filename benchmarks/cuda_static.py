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

# per kernel: threads per block as launched, loads of x in flight per thread
# (a full chunk/step), and what x's elements are
BLOCK = {"_moments_partial": 256, "_pnorm_partial": 256, "_apply_rows": 256, "_apply_cols": 256}
BLOCK.update({"_apply_wide": 256, "_row_layer": 256, "_row_rms": 256, "_row_lp": 256})


def _tools():
    """ptxas, cuobjdump, nvdisasm: the nvidia-cuda-* wheels' first, then PATH."""
    here = os.path.join(os.path.dirname(os.__file__), "site-packages", "nvidia", "cu13", "bin")
    found = {}
    for name in ("ptxas", "cuobjdump", "nvdisasm"):
        p = os.path.join(here, name)
        found[name] = p if os.path.exists(p) else shutil.which(name)
    return found


def _in_flight(name, k):
    """Loads of x a thread issues before using any (a full chunk or step)."""
    return {
        "_moments_partial": k._CH,
        "_pnorm_partial": k._UNROLL,
        "_apply_rows": k._UNROLL,
        "_apply_cols": k._UNROLL_COLS,
        "_apply_wide": k._UNROLL,
        "_row_layer": k._NREG,
        "_row_rms": k._NREG,
        "_row_lp": k._NREG,
    }.get(name)


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
            sig = next((s for s in sigs if args.dtype in str(s[0])), sigs[0])
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
            n = _in_flight(name, k)
            if block:
                per_warp = -(-regs * 32 // 256) * 256  # allocated in units of 256 per warp
                warps = min(REGS_PER_SM // per_warp, MAX_THREADS_PER_SM // 32)
                blocks = warps // (block // 32)
                threads = blocks * block
                row.update(blocks_per_sm=blocks, threads_per_sm=threads, loads_in_flight=n)
                row["bytes_in_flight_per_sm"] = threads * n * itemsize
                row["of_need"] = round(threads * n * itemsize / NEED_BYTES_PER_SM, 2)
            rows[name] = row
            print(name, row)
    if args.json:
        with open(args.json, "w") as fh:
            out = {"dtype": args.dtype, "need_bytes_per_sm": NEED_BYTES_PER_SM, "kernels": rows}
            json.dump(out, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
