"""A/B in one process: the CPU kernels of an old revision (default befb257,
the single-module backend before issue 15) against the working tree's.

Same 128 MiB float32 buffers with ``out=``, interleaved (the order rotated
every round), medians and the median of per-round new/old ratios, each op
also against the streaming copy of the same bytes; checks that old and new
give identical output bits.  benchmarks/NOTES.md section 21c.

    python3 benchmarks/ab_old_kernels.py [REV] [op,op,...]   # ROUNDS=61

The old revision's backend is extracted with ``git show`` into a temporary
package; run it from a checkout of the repository.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REV = sys.argv[1] if len(sys.argv) > 1 else "befb257"
OPS = sys.argv[2].split(",") if len(sys.argv) > 2 else None
ROUNDS = int(os.environ.get("ROUNDS", "61"))
f32 = np.float32
C = 64


def load_old(rev: str):
    """The old backend module (cpu.py and what it imports) as _ab_old.cpu."""
    d = tempfile.mkdtemp()
    os.makedirs(f"{d}/_ab_old")
    files = [
        ("numbanorm/backends/cpu.py", "cpu.py"),
        ("numbanorm/_stats.py", "_stats.py"),
        ("numbanorm/_config.py", "_config.py"),
        ("numbanorm/_outbuf.py", "_outbuf.py"),
    ]
    for src, dst in files:
        show = ["git", "-C", REPO, "show", f"{rev}:{src}"]
        txt = subprocess.run(show, capture_output=True, text=True, check=True).stdout
        txt = txt.replace("from .. import _outbuf", "from . import _outbuf")
        txt = txt.replace("from .._config", "from ._config").replace("from .._stats", "from ._stats")
        with open(f"{d}/_ab_old/{dst}", "w") as f:
            f.write(txt)
    open(f"{d}/_ab_old/__init__.py", "w").close()
    sys.path.insert(0, d)
    return importlib.import_module("_ab_old.cpu")


def cases(old):
    """op -> (y, old call, new call)."""
    from numbanorm.backends.cpu import channels, rows

    rng = np.random.default_rng(0)

    def make(shape):
        return rng.standard_normal(shape, dtype=f32) + 3.0

    img, nhwc, rws, tab = (
        make((32, 64, 128, 128)),
        make((32, 128, 128, 64)),
        make((8192, 4096)),
        make((131072, 256)),
    )
    y_img, y_nhwc, y_rws, y_tab = (np.zeros_like(a) for a in (img, nhwc, rws, tab))
    rm, rv = np.zeros(C, f32), np.ones(C, f32)
    mean, rstd = np.empty(C), np.empty(C)
    w = np.linspace(0.5, 1.5, C, dtype=f32)
    b = np.linspace(-0.5, 0.5, C, dtype=f32)

    def bn(fn, x, y, as_rows, training):
        A = x.shape[0]
        x2, y2 = (
            (x.reshape(A * C, -1), y.reshape(A * C, -1)) if as_rows else (x.reshape(1, -1), y.reshape(1, -1))
        )
        return lambda: fn(x2, y2, C, as_rows, rm, rv, w, b, training, training, 0.1, 1e-5, mean, rstd)

    def rown(mod, x, y, R, W, B, rms=False, p=None):
        x2, y2 = x.reshape(R, -1), y.reshape(R, -1)
        return lambda: mod.row_norm(x2, y2, W, B, 1e-5, rms, p)

    one, zero = np.ones((1, 1), f32), np.zeros((1, 1), f32)
    Wc, Bc = np.ones((C, 1), f32), np.zeros((C, 1), f32)
    Wg, Bg = np.ones((32, 2), f32), np.zeros((32, 2), f32)
    wD = np.linspace(0.5, 2, 4096, dtype=f32).reshape(1, -1)
    bD = np.linspace(-1, 1, 4096, dtype=f32).reshape(1, -1)
    ms, sd = np.empty(256), np.empty(256)
    t2, yt2 = tab.reshape(1, -1), y_tab.reshape(1, -1)
    return {
        "batch_norm_train": (
            img,
            y_img,
            bn(old.bn_large, img, y_img, True, True),
            bn(channels.batch_norm, img, y_img, True, True),
        ),
        "batch_norm_train_cl": (
            nhwc,
            y_nhwc,
            bn(old.bn_large, nhwc, y_nhwc, False, True),
            bn(channels.batch_norm, nhwc, y_nhwc, False, True),
        ),
        "batch_norm_eval": (
            img,
            y_img,
            bn(old.bn_large, img, y_img, True, False),
            bn(channels.batch_norm, img, y_img, True, False),
        ),
        "instance_norm": (
            img,
            y_img,
            rown(old, img, y_img, 32 * C, Wc, Bc),
            rown(rows, img, y_img, 32 * C, Wc, Bc),
        ),
        "group_norm": (
            img,
            y_img,
            rown(old, img, y_img, 32 * 32, Wg, Bg),
            rown(rows, img, y_img, 32 * 32, Wg, Bg),
        ),
        "layer_norm": (rws, y_rws, rown(old, rws, y_rws, 8192, wD, bD), rown(rows, rws, y_rws, 8192, wD, bD)),
        "rms_norm": (
            rws,
            y_rws,
            rown(old, rws, y_rws, 8192, wD, 0 * wD, True),
            rown(rows, rws, y_rws, 8192, wD, 0 * wD, True),
        ),
        "lp_normalize": (
            rws,
            y_rws,
            rown(old, rws, y_rws, 8192, one, zero, False, 2.0),
            rown(rows, rws, y_rws, 8192, one, zero, False, 2.0),
        ),
        "standardize": (
            tab,
            y_tab,
            lambda: old.standardize_large(t2, yt2, 256, False, 0, True, True, ms, sd),
            lambda: channels.standardize(t2, yt2, 256, False, 0, True, True, ms, sd),
        ),
        "minmax_scale": (
            tab,
            y_tab,
            lambda: old.minmax_large(t2, yt2, 256, False, 0.0, 1.0, False),
            lambda: channels.minmax_scale(t2, yt2, 256, False, 0.0, 1.0, False),
        ),
    }


def main() -> None:
    old = load_old(REV)
    from numbanorm_bench.floors import prange_stream_copy

    print(f"A/B {REV} (old) vs working tree (new), 128 MiB float32, out=, {ROUNDS} rounds, medians")
    print("floor = streaming copy of the same bytes; per-rnd = median of the per-round new/old ratios")
    cols = ("old ms", "new ms", "copy ms", "old/floor", "new/floor", "new/old", "per-rnd")
    print(f"{'op':22s} " + " ".join(f"{c:>9s}" for c in cols) + "  bits")
    for name, (x, y, fo, fn) in cases(old).items():
        if OPS and name not in OPS:
            continue
        xf, yf = x.reshape(-1), y.reshape(-1)

        def copy(xf=xf, yf=yf):
            prange_stream_copy(yf, xf)

        fo()
        yo = y.copy()
        fn()
        same = np.array_equal(yo, y)
        copy()
        t = {"old": [], "new": [], "copy": []}
        for r in range(ROUNDS):
            order = [("old", fo), ("new", fn), ("copy", copy)]
            for k, f in order[r % 3 :] + order[: r % 3]:
                t0 = time.perf_counter()
                f()
                t[k].append(time.perf_counter() - t0)
        mo, mn, mc = (np.median(t[k]) * 1e3 for k in ("old", "new", "copy"))
        rr = np.median(np.array(t["new"]) / np.array(t["old"]))
        bits = "same" if same else "differ"
        vals = (mo, mn, mc, mo / mc, mn / mc, mn / mo, rr)
        print(f"{name:22s} " + " ".join(f"{v:9.3f}" for v in vals) + f"  {bits}")


if __name__ == "__main__":
    main()
