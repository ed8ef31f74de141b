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

The files are numba's index and data files, written by :class:`KeyedFiles`
so that processes compiling the same function at once (pytest-xdist workers,
``numbanorm warmup --jobs``, Dask worker processes sharing a cache) never
load one signature's machine code for another; see its docstring.

Beside the cache, how numbanorm's functions are compiled (NOTES.md section
29): :func:`kernel` (cached, called from Python; ``light`` for glue code,
optimized at -O1) and :func:`subroutine` (helpers only compiled code calls:
no wrappers, and IR for their callers only, never machine code of their
own).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import threading

from numba import njit
from numba.core.caching import (
    CompileResultCacheImpl,
    FunctionCache,
    IndexDataCacheFile,
    InTreeCacheLocator,
    UserProvidedCacheLocator,
    UserWideCacheLocator,
)
from numba.core.registry import CPUDispatcher

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


class KeyedFiles:
    """Mixin for numba's ``IndexDataCacheFile`` (CPU and CUDA): entries that
    concurrent processes cannot mix up.

    numba numbers the data files of a function's signatures 1, 2, ... in the
    order they are saved: a saving process reads the index, takes the first
    free number, writes the index back, then the data.  Two processes that
    save different signatures (float32 and float64, two task variants) at
    the same time both take number 1; if one's index write and the other's
    data write land last, the index maps a signature to the other
    signature's machine code, and a later process runs it (wrong results or
    a crash, seen as rare failures of pytest-xdist runs with a fresh cache).
    Here:

    - each signature's data file is named by a hash of its key, so two keys
      never share a file;
    - the data carries its key, and ``load`` returns it only for that key
      (anything else, e.g. a file of numba's own format, is a miss: the
      kernel is compiled again and saved);
    - the index is read, updated and written under an advisory file lock
      (where ``fcntl`` exists), so concurrent saves do not drop each other's
      entries.
    """

    def _keyed_name(self, key) -> str:
        digest = hashlib.sha256(repr(key).encode()).hexdigest()[:15]
        return self._data_name(int(digest, 16))

    @contextlib.contextmanager
    def _index_lock(self):
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: entries may be lost, never mixed
            yield
            return
        with open(self._index_path + ".lock", "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def save(self, key, data):
        name = self._keyed_name(key)
        self._save_data(name, (key, data))
        with self._index_lock():
            overloads = self._load_index()
            if overloads.get(key) != name:
                overloads[key] = name
                self._save_index(overloads)

    def load(self, key):
        name = self._load_index().get(key)
        if name is None:
            return None
        try:
            tagged = self._load_data(name)
        except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError, IndexError):
            return None
        if not (isinstance(tagged, tuple) and len(tagged) == 2 and tagged[0] == key):
            return None
        return tagged[1]


class _KeyedIndexDataCacheFile(KeyedFiles, IndexDataCacheFile):
    pass


class PackageCache(FunctionCache):
    """numba's FunctionCache with the package's source stamp and
    :class:`KeyedFiles`."""

    _impl_class = _PackageCacheImpl

    def __init__(self, py_func):
        super().__init__(py_func)
        self._cache_file = _KeyedIndexDataCacheFile(
            cache_path=self._cache_path,
            filename_base=self._impl.filename_base,
            source_stamp=self._impl.locator.get_source_stamp(),
        )


# every dispatcher made by kernel(): warmup reports their compiles and loads
REGISTRY: list = []


def kernel(light=False, **options):
    """``@njit(**options)``, cached on disk under the package's source stamp
    (unless _config.CACHE is False), without the C-callback wrapper that
    nothing here calls (see :func:`subroutine`).  ``light``: optimized at
    -O1 without vectorization (``_LightLibrary``), for glue code."""

    def deco(pyfunc):
        extra = _LIGHT_PIPELINE if light else {}
        disp = njit(no_cfunc_wrapper=True, **options, **extra)(pyfunc)
        if CACHE:
            disp._cache = PackageCache(pyfunc)
        REGISTRY.append(disp)
        return disp

    return deco


class _CodegenWithoutEnv:
    """A codegen seen through a link-only library: numba sets a compiled
    function's environment pointer in the machine code it made; a
    link-only library makes none (its callers' code holds its functions'
    environments), so that step is skipped."""

    def __init__(self, codegen):
        self._codegen = codegen

    def set_env(self, env_name, env):
        pass

    def __getattr__(self, name):
        return getattr(self._codegen, name)


try:
    from numba.core import config as _numba_config
    from numba.core.codegen import JITCodeLibrary, JITCPUCodegen, remove_redundant_nrt_refct
    from numba.core.compiler import Compiler

    _LIBRARIES = all(
        hasattr(JITCodeLibrary, a)
        for a in ("_optimize_final_module", "_finalize_final_module", "_finalize_dynamic_globals",
                  "_verify_declare_only_symbols", "_get_module_for_linking")
    )  # fmt: skip
except ImportError:  # pragma: no cover - other numba versions
    _LIBRARIES = False

if _LIBRARIES:

    class _LinkOnlyLibrary(JITCodeLibrary):
        """The code library of a subroutine's signature: its IR, never its
        own machine code.  numba optimizes a library's whole module and
        turns it into machine code when it is finalized, and a caller
        finalizes every library it links (to link its IR); the caller then
        optimizes the linked copy again, inlined, in its own module and
        makes its own machine code of it.  The subroutine's own optimized
        module and machine code were never run: shifted_block spent 0.25 of
        its 0.43 s of native lowering on them (NOTES.md section 29).  So
        this library stops at the function passes numba runs on every
        module it adds; its callers optimize and compile it."""

        @property
        def codegen(self):
            return _CodegenWithoutEnv(self._codegen)

        def _optimize_final_module(self):
            pass  # (the caller's module optimization runs over the linked copy)

        def _finalize_final_module(self):
            self._finalize_dynamic_globals()
            self._verify_declare_only_symbols()
            self._finalized = True

        def get_pointer_to_function(self, name):
            self._ensure_finalized()
            return 0  # (no machine code of its own; callers link its IR)

    class _LightLibrary(JITCodeLibrary):
        """The code library of a light kernel's signature: its module
        optimized at LLVM's -O1 without loop or SLP vectorization, instead
        of numba's -O3 pipeline.  For the glue between parallel launches
        (per-channel merges and parameters, a few launches): no hot loop,
        and its optimization was 0.13-0.23 s of a cold batch_norm training
        call (NOTES.md section 29).  -O1 keeps what those loops need
        (registers for variables, inlining); at -O0 a 1 MiB standardize
        took 1.2x the time.  Without fast-math (the glues have none) every
        level gives the same bits."""

        def _optimize_final_module(self):
            try:
                mpm, mpb = self._codegen._module_pass_manager(
                    loop_vectorize=False, slp_vectorize=False, opt=1, cost="cheap"
                )
            except (TypeError, ValueError, AttributeError):  # pragma: no cover - other numba versions
                return super()._optimize_final_module()
            with self._recorded_timings.record("Module passes (light optimization)", mpb):
                mpm.run(self._final_module, mpb)
            if not _numba_config.LLVM_REFPRUNE_PASS:
                self._final_module = remove_redundant_nrt_refct(self._final_module)

    def _compiler_into(library_class):
        """numba's nopython pipeline, lowering into a ``library_class`` on
        the CPU target (the CUDA target compiles some of these functions
        too, into its own libraries)."""

        class _Compiler(Compiler):
            def __init__(self, typingctx, targetctx, library, args, return_type, flags, locals):
                if library is None and isinstance(targetctx.codegen(), JITCPUCodegen):
                    library = library_class(targetctx.codegen(), "numbanorm" + library_class.__name__)
                    library.enable_object_caching()
                super().__init__(typingctx, targetctx, library, args, return_type, flags, locals)

        return _Compiler

    _SUBROUTINE_PIPELINE = {"pipeline_class": _compiler_into(_LinkOnlyLibrary)}
    _LIGHT_PIPELINE = {"pipeline_class": _compiler_into(_LightLibrary)}
else:  # pragma: no cover - other numba versions
    _SUBROUTINE_PIPELINE = _LIGHT_PIPELINE = {}


# the options subroutine() adds to a helper's own
_WRAPPERLESS = {"nopython": True, "no_cpython_wrapper": True, "no_cfunc_wrapper": True}


class Subroutine(CPUDispatcher):
    """The dispatcher of a function that compiled code calls, made by
    :func:`subroutine`: its compiled signatures have no Python wrapper and
    no C-callback wrapper.  Called from Python (tests, the CUDA simulator's
    kernels, a debugger), it runs a twin dispatcher of the same function
    compiled with them, on first use (numba's own call of a wrapper-less
    entry crashes the process)."""

    def __call__(self, *args, **kwargs):
        twin = self.__dict__.get("_twin")
        if twin is None:
            # (the options from targetoptions: they survive pickling, which
            # rebuilds the dispatcher from them in another process)
            opts = {k: v for k, v in self.targetoptions.items() if k not in _WRAPPERLESS}
            twin = self._twin = njit(**opts)(self.py_func)
        return twin(*args, **kwargs)


def subroutine(**options):
    """``@njit(**options)`` for a helper that only compiled code calls.

    numba compiles every signature of a dispatcher on its own, whoever calls
    it, with two wrappers: one that unboxes Python arguments (for a call
    from Python) and one with the C calling convention (for a first-class
    function value).  Compiled callers call the function's native entry and
    use neither, but each was lowered, optimized and turned into machine
    code for every helper of every cold call (an array-taking helper's
    Python wrapper unboxes each array).  A subroutine is compiled without
    both (numba's ``no_cpython_wrapper``/``no_cfunc_wrapper``, as numba
    compiles its own internal functions): two_sum 0.033 -> 0.021 s; cold
    first calls 0.1-0.4 s shorter (benchmarks/NOTES.md section 29).  Its
    signatures are compiled into a :class:`_LinkOnlyLibrary` (IR for its
    callers to link, no machine code of its own) where numba's internals
    allow it.  Not cached on its own: a cached caller holds the code it
    links in."""

    def deco(pyfunc):
        opts = {**options, **_WRAPPERLESS}
        return Subroutine(py_func=pyfunc, locals={}, targetoptions=opts, **_SUBROUTINE_PIPELINE)

    return deco


def dispatcher_counts() -> tuple[int, int]:
    """(compiled, loaded from the cache) signatures of kernel() dispatchers
    in this process."""
    compiled = sum(sum(d._cache_misses.values()) for d in REGISTRY)
    loaded = sum(sum(d._cache_hits.values()) for d in REGISTRY)
    return compiled, loaded
