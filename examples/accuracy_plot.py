"""Accuracy as a picture: layer norm's error against a float64 reference, as the data's offset grows.

The input is float32 ``offset + randn`` (offset 1 to 1e6: a mean up to 1e6
times the spread, as raw sensor counts, timestamps or un-centred features
are).  Each method normalizes every row; its error is the largest
``|y - reference|``, the reference computed in float64 from the very same
float32 values.  Methods: numbanorm, PyTorch's CPU ``layer_norm`` (when
installed), the textbook one-pass formula ``var = E[x^2] - E[x]^2`` in
NumPy float32 (from an offset of 1e4 on, its variance cancels to zero or
below, is clipped to 0, and the output becomes ``(x - mean) / sqrt(eps)``),
and NumPy's float32 two-pass ``(x - mean) / std``.  The dotted line is the
rounding of a float32 output, ``eps32 * max|y|``: no float32 result can do
much better.

The table is printed; the figure is written to ``OUT/accuracy.png`` when
matplotlib is installed (``pip install "numbanorm[plot]"``).  The script
fails (exit status 1) if numbanorm's error exceeds ``--tolerance``.

    python examples/accuracy_plot.py [--out DIR] [--rows 256] [--dim 1024]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

import numbanorm as nbn

EPS = 1e-5  # layer norm's eps, as in torch.nn.functional.layer_norm


def reference(x: np.ndarray) -> np.ndarray:
    """float64 layer norm of the float32 input: the exact answer, to float64 rounding."""
    x = x.astype(np.float64)
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + EPS)


def textbook(x: np.ndarray) -> np.ndarray:
    """One pass of sums in float32: var = E[x^2] - E[x]^2 (cancels catastrophically far from 0)."""
    mean = x.mean(axis=-1, keepdims=True)
    var = (x * x).mean(axis=-1, keepdims=True) - mean * mean
    return (x - mean) / np.sqrt(np.maximum(var, 0) + np.float32(EPS))


def two_pass(x: np.ndarray) -> np.ndarray:
    """NumPy float32 two-pass: the mean itself is rounded to float32 (ulp(1e6) = 0.0625)."""
    mean = x.mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(x.var(axis=-1, keepdims=True) + np.float32(EPS))


def methods(with_torch: bool) -> dict:
    m = {"numbanorm": lambda x: nbn.layer_norm(x, x.shape[-1])}
    try:
        if not with_torch:
            raise ImportError
        import torch

        m[f"PyTorch {torch.__version__.split('+')[0]} (CPU)"] = lambda x: torch.nn.functional.layer_norm(
            torch.from_numpy(x), (x.shape[-1],)
        ).numpy()
    except ImportError:
        print("PyTorch is not installed (or --no-torch): its line is left out")
    m["NumPy float32, textbook E[x²] − E[x]²"] = textbook
    m["NumPy float32, two-pass"] = two_pass
    return m


def plot(path: str, offsets, errors: dict, floor, shape) -> bool:
    """The figure, or False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no window
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.4), dpi=100)
    for (name, err), marker in zip(errors.items(), "osv^D", strict=False):
        ax.loglog(offsets, np.maximum(err, 1e-12), marker=marker, label=name)
    ax.loglog(offsets, floor, ":", color="gray", label="float32 rounding of y (eps32·max|y|)")
    ax.set_xlabel("offset of the data (mean / standard deviation)")
    ax.set_ylabel("max |y − float64 reference|")
    ax.set_title(f"layer_norm of float32 offset + randn, shape {shape}")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})  # no version stamp: the file changes only with the data
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", metavar="DIR", default=".", help="where accuracy.png goes (default: .)")
    p.add_argument("--rows", type=int, default=256, help="rows, each normalized on its own (256)")
    p.add_argument("--dim", type=int, default=1024, help="values per row (1024)")
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out even when installed")
    p.add_argument("--tolerance", type=float, default=1e-5, help="max allowed numbanorm error (1e-5)")
    args = p.parse_args(argv)
    if min(args.rows, args.dim) < 2:
        p.error("--rows and --dim must be at least 2")

    offsets = np.logspace(0, 6, 7)  # 1, 10, ..., 1e6
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((args.rows, args.dim), dtype=np.float32)
    ms = methods(not args.no_torch)
    errors = {name: np.empty(len(offsets)) for name in ms}
    floor = np.empty(len(offsets))
    for i, off in enumerate(offsets):
        x = np.float32(off) + noise
        ref = reference(x)
        floor[i] = np.finfo(np.float32).eps * np.abs(ref).max()
        for name, f in ms.items():
            errors[name][i] = np.abs(f(x).astype(np.float64) - ref).max()

    names = list(errors)
    print(f"max |y - float64 reference|, layer_norm of float32 offset + randn, shape {(args.rows, args.dim)}")
    print("offset  " + "  ".join(f"{n[:24]:>24s}" for n in names))
    for i, off in enumerate(offsets):
        print(f"{off:6.0e}  " + "  ".join(f"{errors[n][i]:24.1e}" for n in names))

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "accuracy.png")
    if plot(path, offsets, errors, floor, (args.rows, args.dim)):
        print(f"figure: {path}")
    else:
        print("matplotlib is not installed: PNG skipped (pip install 'numbanorm[plot]')")
    worst = float(errors["numbanorm"].max())
    if not worst <= args.tolerance:
        print(f"error: numbanorm's error {worst:.1e} exceeds {args.tolerance:g}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
