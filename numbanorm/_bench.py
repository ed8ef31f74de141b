"""``numbanorm bench``: forwards to the benchmark suite.

The suite lives outside the package, in ``benchmarks/numbanorm_bench`` of the
source tree, and installs beside numbanorm as the top-level package
``numbanorm_bench`` (pyproject.toml); see ``benchmarks/README.md``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``numbanorm bench``; returns the exit status (0 ok, 1 failure, 2 usage error)."""
    try:
        from numbanorm_bench.cli import main as bench_main
    except ModuleNotFoundError as e:
        if e.name != "numbanorm_bench":
            raise
        print(
            "numbanorm bench: error: the benchmark suite (numbanorm_bench) is not installed: "
            "install numbanorm from its source tree (pip install . or pip install -e .)",
            file=sys.stderr,
        )
        return 1
    return bench_main(argv)
