"""Accuracy on un-centred float32 data: numbanorm vs PyTorch CPU, for the README.

For float32 inputs ``offset + randn`` (offset 1e2, 1e4, 1e6) prints the max
absolute error of the normalized output of ``layer_norm`` and ``batch_norm``
(training, batch statistics) against a float64 reference computed from the very
same float32 values (``tests/reference.py``, the test suite's oracle).  The
issue's bar is 1e-5.

    python benchmarks/accuracy_table.py            # full table (~1 min, ~2 GB)
    python benchmarks/accuracy_table.py --quick    # small shapes only

PyTorch is optional: without it its column reads "n/a".
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

import numpy as np

import numbanorm as nbn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import reference as ref  # noqa: E402

try:
    import torch
except ImportError:  # pragma: no cover - optional
    torch = None

OFFSETS = (1e2, 1e4, 1e6)

# (op, shape, values per normalization group)
FULL = [
    ("layer_norm", (1024, 64), 64),
    ("layer_norm", (256, 4096), 4096),
    ("layer_norm", (4, 10**6), 10**6),
    ("batch_norm", (64, 16, 32, 32), 64 * 32 * 32),
    ("batch_norm", (10, 2, 10**6), 10**7),
]
QUICK = [
    ("layer_norm", (1024, 64), 64),
    ("layer_norm", (64, 4096), 4096),
    ("batch_norm", (16, 16, 32, 32), 16 * 32 * 32),
]


def hard(shape, offset, seed=0):
    rng = np.random.default_rng(seed)
    return np.float32(offset) + rng.standard_normal(shape, dtype=np.float32)


def errors(op, x):
    """(numbanorm error, PyTorch error) of ``op`` on float32 ``x`` vs the float64 oracle."""
    if op == "layer_norm":
        d = x.shape[-1]
        exp = ref.layer_norm(x, d)
        got = nbn.layer_norm(x, d)
        tgot = None if torch is None else torch.nn.functional.layer_norm(torch.from_numpy(x), (d,))
    else:
        exp = ref.batch_norm(x, training=True)
        got = nbn.batch_norm(x, training=True)
        tgot = (
            None
            if torch is None
            else torch.nn.functional.batch_norm(torch.from_numpy(x), None, None, training=True)
        )
    e_nbn = float(np.max(np.abs(got.astype(np.float64) - exp)))
    e_torch = None if tgot is None else float(np.max(np.abs(tgot.numpy().astype(np.float64) - exp)))
    return e_nbn, e_torch


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes only")
    args = parser.parse_args(argv)
    cases = QUICK if args.quick else FULL

    tv = "not installed" if torch is None else torch.__version__
    print(f"numbanorm {nbn.__version__}, PyTorch {tv}, NumPy {np.__version__}, {platform.machine()}")
    print("max |y - y_ref| of float32 outputs; y_ref: float64 from the same float32 inputs\n")
    print("| op | shape | values per group | offset | numbanorm | PyTorch CPU |")
    print("|---|---|---:|---:|---:|---:|")
    for op, shape, per_group in cases:
        for offset in OFFSETS:
            x = hard(shape, offset)
            e_nbn, e_torch = errors(op, x)
            et = "n/a" if e_torch is None else f"{e_torch:.1e}"
            print(f"| {op} | {shape} | {per_group:,} | {offset:.0e} | {e_nbn:.1e} | {et} |", flush=True)


if __name__ == "__main__":
    main()
