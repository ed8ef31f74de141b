"""``numbanorm demo``: every norm on generated data, checked against float64.

The data are float32 ``offset + randn`` with a large offset (1e4 by default),
where a naive float32 implementation loses digits; the error column is the max
absolute difference from a float64 NumPy computation on the same float32
input.  With PyTorch installed, its error on the same data is shown beside.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import numbanorm as nbn


def _z(x, axes, eps=0.0):
    x = x.astype(np.float64)
    m = x.mean(axis=axes, keepdims=True)
    return (x - m) / np.sqrt(x.var(axis=axes, keepdims=True) + eps)


def _cases(rng, offset, scale):
    """(name, shape, ours(x), reference(x), torch(x) or None)."""
    N, C, H, W = 16, 32, 32 * scale, 32
    img = (rng.standard_normal((N, C, H, W)) + offset).astype(np.float32)
    nhwc = np.ascontiguousarray(img.transpose(0, 2, 3, 1))
    rows = (rng.standard_normal((256 * scale, 1024)) + offset).astype(np.float32)
    tab = (rng.standard_normal((20000 * scale, 32)) * 3 + offset).astype(np.float32)
    g = 8

    def gref(x):
        xg = x.astype(np.float64).reshape(N, g, -1)
        return _z(xg, (2,), 1e-5).reshape(x.shape)

    def lp_ref(x):
        x64 = x.astype(np.float64)
        return x64 / np.linalg.norm(x64, axis=-1, keepdims=True)

    def rms_ref(x):
        x64 = x.astype(np.float64)
        return x64 / np.sqrt((x64**2).mean(axis=-1, keepdims=True) + np.finfo(np.float32).eps)

    def mm_ref(x):
        x64 = x.astype(np.float64)
        lo, hi = x64.min(axis=0), x64.max(axis=0)
        return (x64 - lo) / (hi - lo)

    try:
        import torch
        import torch.nn.functional as F

        T = torch.from_numpy
    except ImportError:  # torch is optional
        torch = None

    def tt(f):
        return None if torch is None else f

    return [
        (
            "batch_norm (train)",
            img.shape,
            lambda: nbn.batch_norm(img, training=True),
            lambda: _z(img, (0, 2, 3), 1e-5),
            tt(lambda: F.batch_norm(T(img), None, None, training=True).numpy()),
        ),
        (
            "batch_norm NHWC",
            nhwc.shape,
            lambda: nbn.batch_norm(nhwc, training=True, channel_axis=-1),
            lambda: _z(nhwc, (0, 1, 2), 1e-5),
            tt(lambda: F.batch_norm(T(img), None, None, training=True).permute(0, 2, 3, 1).numpy()),
        ),
        (
            "instance_norm",
            img.shape,
            lambda: nbn.instance_norm(img),
            lambda: _z(img, (2, 3), 1e-5),
            tt(lambda: F.instance_norm(T(img)).numpy()),
        ),
        (
            "group_norm (G=8)",
            img.shape,
            lambda: nbn.group_norm(img, g),
            lambda: gref(img),
            tt(lambda: F.group_norm(T(img), g).numpy()),
        ),
        (
            "layer_norm",
            rows.shape,
            lambda: nbn.layer_norm(rows, 1024),
            lambda: _z(rows, (1,), 1e-5),
            tt(lambda: F.layer_norm(T(rows), (1024,)).numpy()),
        ),
        (
            "rms_norm",
            rows.shape,
            lambda: nbn.rms_norm(rows, 1024),
            lambda: rms_ref(rows),
            tt(lambda: F.rms_norm(T(rows), (1024,)).numpy()),
        ),
        ("standardize", tab.shape, lambda: nbn.standardize(tab), lambda: _z(tab, (0,)), None),
        ("minmax_scale", tab.shape, lambda: nbn.minmax_scale(tab), lambda: mm_ref(tab), None),
        (
            "lp_normalize",
            rows.shape,
            lambda: nbn.lp_normalize(rows),
            lambda: lp_ref(rows),
            tt(lambda: F.normalize(T(rows), dim=-1).numpy()),
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="numbanorm demo", description=__doc__)
    ap.add_argument("--offset", type=float, default=1e4, help="mean of the generated data (default 1e4)")
    ap.add_argument("--scale", type=int, default=1, help="multiply the data sizes by this")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    rng = np.random.default_rng(a.seed)
    cases = _cases(rng, a.offset, max(1, a.scale))
    print(
        f"numbanorm {nbn.__version__}: float32 data = {a.offset:g} + randn, "
        "error = max |y - float64 reference|"
    )
    head = (
        f"{'op':<20} {'shape':<20} {'first call':>11} {'time':>10} {'GB/s':>7} {'error':>9} {'torch err':>10}"
    )
    print(head)
    print("-" * len(head))
    worst = 0.0
    rows = []
    for _name, _shape, ours, ref, _ in cases:
        t0 = time.perf_counter()
        y = ours()
        first = time.perf_counter() - t0
        ts = []
        for _ in range(5):
            t0 = time.perf_counter()
            y = ours()
            ts.append(time.perf_counter() - t0)
        err = float(np.max(np.abs(y.astype(np.float64) - ref())))
        worst = max(worst, err)
        rows.append((first, float(np.median(ts)), err, 2 * y.nbytes))
    # PyTorch runs after all timings: its OpenMP threads spin-wait after each
    # call and would steal the cores from the next timed numbanorm call.
    for (name, shape, _, ref, theirs), (first, t, err, nbytes) in zip(cases, rows, strict=True):
        terr = "" if theirs is None else f"{float(np.max(np.abs(theirs().astype(np.float64) - ref()))):10.1e}"
        print(
            f"{name:<20} {str(shape):<20} {first * 1e3:9.1f}ms {t * 1e3:8.2f}ms "
            f"{nbytes / t / 1e9:7.1f} {err:9.1e} {terr:>10}"
        )
    print(
        f"worst error {worst:.1e} ({'ok' if worst < 1e-5 else 'ABOVE 1e-5'}); "
        "first call includes compilation or cache load"
    )
    return 0 if worst < 1e-5 else 1
