"""The same numbanorm calls on the GPU: CuPy arrays and PyTorch CUDA tensors, with ``stream=``.

A CUDA array in gives the same type of array out, zero-copy: the calls below
take CuPy arrays and PyTorch CUDA tensors exactly as they take NumPy arrays,
run on the stream given by ``stream=`` (a CuPy or PyTorch stream; else the
stream the input reports), and take their memory from the input's library.
Running statistics updated in place (``batch_norm`` training) live on the
device with ``x``; weights and biases may be host arrays.  Each result is
compared with the same call on the NumPy copy of the input.

Needs numba-cuda (``pip install "numbanorm[cuda]"``), a CUDA GPU and driver,
and CuPy and/or PyTorch with CUDA (numba device arrays are used when neither
is installed).  Without a GPU it says so and exits with status 0; numba's
CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) is not a GPU, and is reported as
none unless ``--simulator`` asks for it explicitly (numba device arrays, tiny
shapes: it checks the calls, it measures nothing).

    python examples/gpu.py [--rows 4096] [--dim 1024]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np


def no_gpu_reason(simulator_ok: bool) -> str | None:
    """Why the CUDA calls cannot run here (None: they can)."""
    from numba.core import config  # reads NUMBA_ENABLE_CUDASIM (cheaper than importing numba.cuda)

    sim = bool(getattr(config, "ENABLE_CUDASIM", 0))
    if sim and not simulator_ok:
        return "NUMBA_ENABLE_CUDASIM=1 selects numba's CUDA simulator, which runs on the CPU and is not a GPU"
    try:
        from numba import cuda
    except ImportError:
        return "numba-cuda is not installed (pip install 'numbanorm[cuda]')"
    if sim:
        return None
    try:
        ok = cuda.is_available()
    except Exception:  # a broken driver installation
        ok = False
    return None if ok else "no CUDA GPU or driver found (numba.cuda.is_available() is False)"


class Lib:
    """How one array library moves data and makes streams (CuPy, PyTorch or numba)."""

    def __init__(self, name, to_device, to_host, stream, sync):
        self.name, self.to_device, self.to_host = name, to_device, to_host
        self.stream, self.sync = stream, sync  # a new stream; wait for one


def libraries(simulator: bool) -> list[Lib]:
    """The libraries with CUDA arrays installed here."""
    from numba import cuda

    libs = []
    if not simulator:  # the simulator takes numba's own arrays only
        try:
            import cupy as cp

            stream = lambda: cp.cuda.Stream(non_blocking=True)  # noqa: E731
            libs.append(Lib("CuPy", cp.asarray, cp.asnumpy, stream, lambda s: s.synchronize()))
        except ImportError:
            pass
        try:
            import torch

            if torch.cuda.is_available():
                libs.append(
                    Lib(
                        "PyTorch",
                        lambda a: torch.from_numpy(a).cuda(),
                        lambda t: t.cpu().numpy(),
                        torch.cuda.Stream,
                        lambda s: s.synchronize(),
                    )
                )
        except ImportError:
            pass
    if not libs:
        host = lambda d: d.copy_to_host()  # noqa: E731
        libs.append(Lib("numba", cuda.to_device, host, cuda.stream, lambda s: s.synchronize()))
    return libs


def run(lib: Lib, rows: int, dim: int, images: tuple[int, ...]) -> float:
    """The calls on ``lib``'s arrays on a stream of its own; returns the largest difference from NumPy."""
    import numbanorm as nbn

    rng = np.random.default_rng(0)
    x_h = (100 + rng.standard_normal((rows, dim), dtype=np.float32)).astype(np.float32)
    img_h = rng.standard_normal(images, dtype=np.float32)
    C = images[1]
    w_h = rng.uniform(0.5, 1.5, dim).astype(np.float32)  # weights may stay on the host
    b_h = rng.standard_normal(dim, dtype=np.float32)

    x, img = lib.to_device(x_h), lib.to_device(img_h)
    rm, rv = lib.to_device(np.zeros(C, np.float32)), lib.to_device(np.ones(C, np.float32))
    s = lib.stream()
    got = {  # every launch, copy and allocation of a call goes to stream s
        "layer_norm": nbn.layer_norm(x, dim, w_h, b_h, stream=s),
        "rms_norm": nbn.rms_norm(x, dim, w_h, stream=s),
        "group_norm": nbn.group_norm(img, 2, stream=s),
        # training: running statistics on the device, updated in place
        "batch_norm": nbn.batch_norm(img, rm, rv, training=True, stream=s),
        "standardize": nbn.standardize(x, axis=0, stream=s),
    }
    lib.sync(s)  # the results are ready once the stream is done (the host never waited before)

    rm_h, rv_h = np.zeros(C, np.float32), np.ones(C, np.float32)
    want = {
        "layer_norm": nbn.layer_norm(x_h, dim, w_h, b_h),
        "rms_norm": nbn.rms_norm(x_h, dim, w_h),
        "group_norm": nbn.group_norm(img_h, 2),
        "batch_norm": nbn.batch_norm(img_h, rm_h, rv_h, training=True),
        "standardize": nbn.standardize(x_h, axis=0),
    }
    worst = 0.0
    for op, y in got.items():
        d = float(np.abs(lib.to_host(y) - want[op]).max())
        worst = max(worst, d)
        kind = f"{type(y).__module__}.{type(y).__name__}"
        print(f"  {op:12s} {kind} {tuple(y.shape)}: max |GPU - NumPy| {d:.1e}")
    d = max(float(np.abs(lib.to_host(rm) - rm_h).max()), float(np.abs(lib.to_host(rv) - rv_h).max()))
    print(f"  running statistics updated on the device: max |GPU - NumPy| {d:.1e}")
    return max(worst, d)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=4096, help="rows of the (rows, dim) input (4096)")
    p.add_argument("--dim", type=int, default=1024, help="features per row (1024)")
    p.add_argument("--simulator", action="store_true", help="run in numba's CUDA simulator (tiny shapes)")
    p.add_argument("--tolerance", type=float, default=1e-4, help="max allowed |GPU - NumPy| (1e-4)")
    args = p.parse_args(argv)
    if args.simulator:
        # must be set before numba is imported; tiny shapes (one Python thread per CUDA thread)
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
        args.rows, args.dim = 4, 32
    why = no_gpu_reason(simulator_ok=args.simulator)
    if why is not None:
        print(f"no GPU: {why}; nothing to run.")
        return 0
    images = (2, 4, 3, 3) if args.simulator else (32, 64, 28, 28)
    worst = 0.0
    for lib in libraries(args.simulator):
        where = "CUDA simulator (not a GPU)" if args.simulator else "GPU"
        print(f"{lib.name} arrays on the {where}, stream=<{lib.name} stream>:")
        worst = max(worst, run(lib, args.rows, args.dim, images))
    if not worst <= args.tolerance:
        print(f"error: a GPU result differs from NumPy by {worst:.2e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
