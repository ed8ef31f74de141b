"""The figure: throughput relative to the copy floor per op, for numbanorm
and its peers (matplotlib, optional)."""

from __future__ import annotations

import os
from typing import Any

from .cases import DTYPES, OPS, SIZES


def plot(report: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Bars of throughput relative to the copy floor (floor time / time) per
    op, for numbanorm and its peers; one panel per (size, dtype); the highest
    thread count measured.  Raises ImportError without matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["results"]
    if not rows:
        raise ValueError("nothing to plot")
    top = max((r["threads"] or 0) for r in rows)
    rows = [r for r in rows if (r["threads"] or 0) == top]
    sizes = [s for s in SIZES if any(r["size"] == s for r in rows)]
    dtypes = [d for d in DTYPES if any(r["dtype"] == d for r in rows)]
    ops = [o for o in OPS if any(r["op"] == o for r in rows)]
    fig, axes = plt.subplots(
        len(sizes), len(dtypes), figsize=(7.5 * len(dtypes), 3.8 * len(sizes)), squeeze=False
    )
    second = (
        ("numbanorm_out", "numbanorm, out= (no allocation)")
        if report["device"] == "cpu"
        else ("numbanorm_alloc", "numbanorm, allocating")
    )
    first = "numbanorm" if report["device"] == "cpu" else "numbanorm, out= (kernel)"
    series = [
        ("numbanorm", first, "tab:blue"),
        (*second, "lightsteelblue"),
        ("torch", "PyTorch", "tab:orange"),
        ("numpy", "NumPy", "tab:gray"),
    ]
    width = 0.2
    for i, size in enumerate(sizes):
        for j, dtype in enumerate(dtypes):
            ax = axes[i][j]
            byop = {r["op"]: r for r in rows if r["size"] == size and r["dtype"] == dtype}
            for k, (key, label, color) in enumerate(series):
                vals = []
                for op in ops:
                    r = byop.get(op)
                    t = r["times_s"].get(r["primary"] if key == "numbanorm" else key) if r else None
                    floor = r["times_s"].get("floor") if r else None
                    vals.append(floor / t if t and floor else 0.0)
                if any(vals):
                    xs = [p + (k - 1.5) * width for p in range(len(ops))]
                    ax.bar(xs, vals, width, label=label, color=color)
                    if key == "numbanorm":
                        for xpos, v in zip(xs, vals, strict=True):
                            if v:
                                ax.annotate(f"{v:.2f}", (xpos, v), ha="center", va="bottom", fontsize=5.5)
            for p, op in enumerate(ops):
                r = byop.get(op)
                if r:
                    y = 1 / r["targets"]["time_over_floor"]
                    ax.plot([p - 2 * width, p - width], [y, y], color="tab:red", lw=1.5)
            ax.axhline(1.0, color="black", lw=0.8, ls="--")
            ax.set_xticks(range(len(ops)))
            ax.set_xticklabels(ops, rotation=35, ha="right", fontsize=8)
            ax.set_ylabel("throughput / copy floor")
            shape_note = "large" if size == "large" else size
            ax.set_title(f"{shape_note}, {dtype}", fontsize=10)
            ax.grid(axis="y", alpha=0.3)
            if i == 0 and j == 0:
                ax.plot([], [], color="tab:red", lw=1.5, label="numbanorm target")
                ax.plot([], [], color="black", lw=0.8, ls="--", label="copy floor")
                ax.legend(fontsize=7, loc="upper right")
    m = report["machine"]
    where = m.get("gpu") or f"{m.get('cpu')}, {top} thread(s)"
    fig.suptitle(
        f"numbanorm bench ({report['device']}): throughput relative to a copy of the same bytes\n{where}",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
