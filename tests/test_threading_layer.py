"""numbanorm runs on numba's TBB layer where the tbb package is installed
(numbanorm/_threading.py), and leaves a layer the user chose alone."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata

import pytest

_PROBE = (
    "import numpy as np, numba, numbanorm as nbn\n"
    "nbn.layer_norm(np.ones((256, 1024), np.float32), (1024,))\n"
    "print(numba.threading_layer())\n"
)


def _has_tbb() -> bool:
    try:
        return any(f.name == "libtbb.so.12" for f in metadata.files("tbb") or [])
    except metadata.PackageNotFoundError:
        return False


def _layer(env_layer: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    if env_layer is not None:
        env["NUMBA_THREADING_LAYER"] = env_layer
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.skipif(
    not (sys.platform == "linux" and platform.machine() == "x86_64" and _has_tbb()),
    reason="the tbb package (a dependency on Linux x86-64) is not installed",
)
def test_tbb_layer_by_default_and_omp_on_request():
    assert _layer(None) == "tbb"
    assert _layer("omp") == "omp"


def test_a_running_layer_is_left_alone():
    # a layer numba already runs (user code launched first) is not changed
    code = (
        "import numba, numpy as np\n"
        "from numba import njit, prange\n"
        "@njit(parallel=True)\n"
        "def f(a):\n"
        "    for i in prange(a.size): a[i] += 1\n"
        "f(np.zeros(1000))\n"
        "first = numba.threading_layer()\n"
        "import numbanorm as nbn\n"
        "nbn.layer_norm(np.ones((256, 1024), np.float32), (1024,))\n"
        "assert numba.threading_layer() == first, first\n"
        "from numbanorm import _threading\n"
        "assert _threading.TBB_LIBRARY is None\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr


_FORK = (
    "import os, numpy as np, numbanorm as nbn\n"
    "x = np.random.default_rng(0).standard_normal((2048, 1024)).astype(np.float32)\n"
    "y = nbn.layer_norm(x, (1024,))\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    z = nbn.layer_norm(x, (1024,))\n"
    "    os._exit(0 if (z == y).all() else 3)\n"
    "_, st = os.waitpid(pid, 0)\n"
    "assert os.waitstatus_to_exitcode(st) == 0, st\n"
    "assert (nbn.layer_norm(x, (1024,)) == y).all()\n"
    "print('ok')\n"
)


@pytest.mark.skipif(
    not (sys.platform == "linux" and platform.machine() == "x86_64" and _has_tbb()),
    reason="the tbb package (a dependency on Linux x86-64) is not installed",
)
def test_parallel_calls_after_fork():
    # OpenMP (GNU) terminates a forked child that runs a parallel region
    # after its parent did ("fork() called from a process already using GNU
    # OpenMP"); the TBB layer re-initialises in the child
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    out = subprocess.run([sys.executable, "-c", _FORK], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stdout + out.stderr
