"""The threading layer numbanorm's parallel kernels run on.

numbanorm launches its tasks through numba's threading layer (``_tasks``).
numba picks the layer at the first parallel launch, TBB first when its
library loads, then OpenMP, then its own workqueue.  On Linux the ``tbb``
package (a dependency there) installs ``libtbb.so.12`` under the
environment's ``lib`` directory, where the dynamic loader does not look, so
numba would fall back to OpenMP; :func:`load_tbb` loads it by path first.

Why TBB: OpenMP splits a launch among its threads up front and waits at the
end for every one of them.  With another busy process on this 2-core
machine, the thread scheduled behind it starts late and a 1-8 MiB call took
~2x (up to 4x) its idle time; TBB's threads take work as they arrive (work
stealing), so the caller does not wait for one that has not started:
busy/idle ~1.0-1.6 for most ops, and idle calls no slower (benchmarks/
NOTES.md section 25).  ``NUMBA_THREADING_LAYER=omp`` (or ``workqueue``)
chooses another layer; numbanorm leaves a layer that is already running
alone.
"""

from __future__ import annotations

import ctypes
import os
import sys


def load_tbb() -> str | None:
    """Load the ``tbb`` package's ``libtbb.so.12`` so that numba can use its
    TBB layer (Linux; unless ``NUMBA_THREADING_LAYER`` names another layer
    or numba's layer is already chosen).  The path loaded, or None."""
    if sys.platform != "linux":
        return None
    layer = os.environ.get("NUMBA_THREADING_LAYER", "default").lower()
    if layer not in ("default", "tbb", "threadsafe", "safe"):
        return None
    try:
        from numba.np.ufunc import parallel

        if parallel._is_initialized:
            return None
        from importlib import metadata

        files = metadata.files("tbb") or []
    except Exception:  # no tbb distribution (or another numba): numba chooses
        return None
    for f in files:
        if f.name == "libtbb.so.12":
            path = os.path.realpath(str(f.locate()))
            try:
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            except OSError:
                return None
            return path
    return None


def available_cpus() -> int:
    """CPUs this process may run on (its affinity where the system says)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


TBB_LIBRARY = load_tbb()
