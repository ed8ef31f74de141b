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

import numpy as np  # noqa: E402
import pytest  # noqa: E402


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
