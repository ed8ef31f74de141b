"""The machine a run measured: host, CPU, library versions and load."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numba
import numpy as np

import numbanorm


def _git_commit() -> str | None:
    """The commit of numbanorm's source tree (``+dirty`` when the package has
    uncommitted changes), or None outside a git checkout."""
    here = Path(numbanorm.__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0 or not out.stdout.strip():
        return None
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "."],
        cwd=here,
        capture_output=True,
        text=True,
        timeout=5,
    ).stdout.strip()
    return out.stdout.strip() + ("+dirty" if dirty else "")


def dist_version(dist: str) -> str | None:
    """The installed version of a distribution, or None."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # not available on this platform
        return None


def warn_if_busy(when: str) -> list[float] | None:
    """The 1/5/15-minute load averages; a warning when other work competes
    for the cores (parallel kernels wait for their slowest thread, so a busy
    machine inflates numbanorm's times far more than single-threaded peers')."""
    load = _loadavg()
    cores = os.cpu_count() or 1
    if load is not None and load[0] > 0.5 * cores:
        print(
            f"warning: load average {load[0]:.2f} on {cores} cores {when}: other processes compete "
            "for the CPU; results are unreliable (run on a quiet machine)",
            file=sys.stderr,
        )
    return load


def machine_info(torch: ModuleType | None) -> dict[str, Any]:
    """Host, CPU and library versions for the JSON report."""
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel region has run yet
        layer = None
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "numba_threads": numba.get_num_threads(),
        "numba_max_threads": numba.config.NUMBA_NUM_THREADS,
        "threading_layer": layer,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "torch": None if torch is None else torch.__version__,
        "onnxruntime": dist_version("onnxruntime"),
        "onnx": dist_version("onnx"),
        "scikit-learn": dist_version("scikit-learn"),
        "numbanorm": getattr(numbanorm, "__version__", None) or dist_version("numbanorm"),
        "numbanorm_commit": _git_commit(),
    }


def host_slug(machine: dict[str, Any]) -> str:
    """A file-name-safe machine name: CPU model and core count (container
    hostnames are random), e.g. ``amd-epyc-2c``."""
    cpu = re.sub(r"\(.*?\)|processor|cpu|\d+-core", " ", str(machine.get("cpu", "")), flags=re.I)
    slug = re.sub(r"[^a-z0-9]+", "-", cpu.lower()).strip("-") or "cpu"
    return f"{slug[:40].strip('-')}-{machine.get('cores')}c"
