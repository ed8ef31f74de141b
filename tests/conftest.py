"""Test session set-up.

Without a GPU, the CUDA tests run in numba's CUDA simulator: the variable must
be set before numba is first imported, which is why it happens here, at the
top of the first module pytest loads.  Set NUMBA_ENABLE_CUDASIM=0 explicitly to
run the CUDA tests on real hardware.
"""

from __future__ import annotations

import os
import shutil


def _has_gpu() -> bool:
    return os.path.exists("/dev/nvidia0") or shutil.which("nvidia-smi") is not None


if "NUMBA_ENABLE_CUDASIM" not in os.environ and not _has_gpu():
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

# No helper processes compiling a cold call's statistics task (numbanorm/
# _ahead.py): the suite's two workers keep both cores compiling already, and
# a helper would only add its start-up to theirs.  tests/test_ahead.py runs
# them; set NUMBANORM_COMPILE_AHEAD=1 to run the whole suite with them.
os.environ.setdefault("NUMBANORM_COMPILE_AHEAD", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    # The simulator made honest where it is known to differ from a GPU
    # (tests/cudasim_honest.py): numba's device transpose copies, small grids
    # warn (an error here: filterwarnings), warp shuffles exist.  The kernels
    # then take their shuffle reductions wherever a GPU would (the module
    # reads _HAVE_SHFL live in the simulator), so no test depends on
    # simulator-only behaviour.
    import cudasim_honest  # noqa: E402

    if cudasim_honest.install():
        from numbanorm.backends import _cuda_kernels

        _cuda_kernels._HAVE_SHFL = True


@pytest.fixture
def rng():
    return np.random.default_rng(20261124)


@pytest.fixture
def no_output_cache():
    """Allocating calls get fresh memory (numbanorm/_outbuf.py off) for the
    test, as they would without the output buffer cache."""
    import numbanorm as nbn

    prev = nbn.set_output_cache(0)
    yield
    nbn.set_output_cache(prev)
