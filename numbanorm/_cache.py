"""numba's on-disk kernel cache, keyed on the source of the whole package.

numba keys a cached function on its own file only: a kernel in
``backends/cpu/rows.py`` that inlines a helper from ``axis_stats.py`` kept
loading the old helper's code after ``axis_stats.py`` changed (seen while the
backend was split into modules; the same held for ``_stats.py`` before).
Every cached kernel of numbanorm therefore takes a cache whose source stamp
is a hash of all of numbanorm's ``.py`` files: any change to the package
recompiles every kernel once.  A user's installed files do not change, so
this costs nothing there; cache locations (``NUMBA_CACHE_DIR``, ``__pycache__``
beside the module, the user-wide directory) are numba's own.
"""

from __future__ import annotations

import hashlib
import os
import threading

from numba import njit
from numba.core.caching import (
    CompileResultCacheImpl,
    FunctionCache,
    InTreeCacheLocator,
    UserProvidedCacheLocator,
    UserWideCacheLocator,
)

from ._config import CACHE

_ROOT = os.path.dirname(os.path.abspath(__file__))
_stamp: str | None = None
_lock = threading.Lock()


def package_stamp() -> str:
    """sha256 of the paths and contents of every .py file of the package."""
    global _stamp
    if _stamp is None:
        with _lock:
            h = hashlib.sha256()
            for dirpath, dirnames, filenames in os.walk(_ROOT):
                dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
                for name in sorted(filenames):
                    if name.endswith(".py"):
                        path = os.path.join(dirpath, name)
                        h.update(os.path.relpath(path, _ROOT).encode())
                        with open(path, "rb") as f:
                            h.update(f.read())
            _stamp = h.hexdigest()
    return _stamp


class _PackageStamp:
    def get_source_stamp(self):
        return package_stamp()


class _UserProvided(_PackageStamp, UserProvidedCacheLocator):
    pass


class _InTree(_PackageStamp, InTreeCacheLocator):
    pass


class _UserWide(_PackageStamp, UserWideCacheLocator):
    pass


class _PackageCacheImpl(CompileResultCacheImpl):
    _locator_classes = [_UserProvided, _InTree, _UserWide]


class PackageCache(FunctionCache):
    """numba's FunctionCache with the package's source stamp."""

    _impl_class = _PackageCacheImpl


# every dispatcher made by kernel(): warmup reports their compiles and loads
REGISTRY: list = []


def kernel(**options):
    """``@njit(**options)``, cached on disk under the package's source stamp
    (unless _config.CACHE is False)."""

    def deco(pyfunc):
        disp = njit(**options)(pyfunc)
        if CACHE:
            disp._cache = PackageCache(pyfunc)
        REGISTRY.append(disp)
        return disp

    return deco


def dispatcher_counts() -> tuple[int, int]:
    """(compiled, loaded from the cache) signatures of kernel() dispatchers
    in this process."""
    compiled = sum(sum(d._cache_misses.values()) for d in REGISTRY)
    loaded = sum(sum(d._cache_hits.values()) for d in REGISTRY)
    return compiled, loaded
