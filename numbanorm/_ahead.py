"""A cold call's kernels compiled in two processes at once.

numba compiles in one thread, and a cold first call of a per-channel
two-pass op (batch_norm training channels last, standardize, minmax_scale)
compiles three pieces one after the other: its statistics task, its apply
task and the glue that launches both (1.3-1.4 s, 0.5 s and 0.9-1.0 s on the
2-core machine of benchmarks/NOTES.md section 30).  None of them needs
another's code: the glue takes the tasks' addresses as arguments.  So while
this process compiles the apply task and the glue, a helper process
compiles the statistics task into numba's on-disk cache, and this process
then loads it from there (milliseconds) instead of compiling it.

The helper is ``sys.executable`` with this process's ``sys.path``: it
imports numbanorm (0.2-0.3 s), compiles the one task for the argument types it
is given, saves it (the package's cache files, :class:`numbanorm._cache.
KeyedFiles`: concurrent writers never mix entries) and exits.  Whatever
happens to it, this process loads only what the cache holds for the exact
key it needs; a helper that fails, or is not done in ``TIMEOUT`` seconds,
is killed, and the task is compiled here as it would have been without it.

Used only where it can pay (:func:`enabled`): the on-disk cache is on, at
least two CPUs are available to this process, ``sys.executable`` is a
Python interpreter (not a frozen application or a program that embeds
Python), and ``NUMBANORM_COMPILE_AHEAD`` is not ``0`` (``1`` turns it on
whatever the CPU count).  The test suite turns it
off (its two workers keep both cores compiling), and so does ``numbanorm
warmup`` (its ``--jobs`` are the processes).
"""

from __future__ import annotations

import base64
import importlib
import json
import os
import pickle
import subprocess
import sys

# seconds a call waits for a helper before it compiles the task itself (a
# helper takes ~2 s here; a machine that slow is better off without it)
TIMEOUT = 60.0

_enabled: bool | None = None
# helpers started by this process (tests): [((module, name, flags, argtypes), Helper)]
STARTED: list = []


def _interpreter() -> bool:
    """Can this process start a Python like itself?  Not from a frozen
    application or an embedding program (``sys.executable`` is then the
    application: Blender, uWSGI, ...), so only an executable named like a
    Python interpreter."""
    exe = sys.executable
    if getattr(sys, "frozen", False) or not exe or not os.path.isfile(exe):
        return False
    name = os.path.basename(exe).lower()
    return name.startswith(("python", "pypy"))


def enabled() -> bool:
    """Whether cold calls compile their statistics task in a helper process
    (see the module docstring); decided once per process, or by
    :func:`set_enabled`."""
    global _enabled
    if _enabled is None:
        from ._config import CACHE
        from ._threading import available_cpus

        env = os.environ.get("NUMBANORM_COMPILE_AHEAD", "").strip()
        _enabled = bool(env != "0" and CACHE and _interpreter() and (env == "1" or available_cpus() >= 2))
    return _enabled


def set_enabled(flag: bool | None) -> bool | None:
    """Turn compiling ahead on or off for this process (None: decide again
    from the environment); returns the previous setting."""
    global _enabled
    prev = _enabled
    _enabled = None if flag is None else bool(flag)
    return prev


class Helper:
    """A started helper process."""

    def __init__(self, proc: subprocess.Popen):
        self._proc = proc
        self.ok: bool | None = None  # None: not waited for yet

    def wait(self, timeout: float = TIMEOUT) -> bool:
        """Wait until the helper is done (killed after ``timeout`` seconds);
        True when it exited normally (its task is then in the cache, unless
        the cache could not be written: the caller loads or compiles)."""
        if self.ok is None:
            try:
                self.ok = self._proc.wait(timeout) == 0
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
                self.ok = False
        return self.ok


def child_env() -> dict[str, str]:
    """The environment of a process numbanorm starts to compile (a helper,
    ``numbanorm warmup --jobs``): this one's, with

    - ``NUMBANORM_COMPILE_AHEAD=0``: it starts no helper of its own;
    - ``NUMBA_CACHE_DIR``: this process's cache, when set here (numba's
      config may have been set in this process, not in its environment);
    - ``OPENBLAS_NUM_THREADS=1``: OpenBLAS starts no server threads.  A
      process that loads OpenBLAS (numpy's, at its import; SciPy's, which
      numba imports at its first compile to see whether BLAS is there)
      starts one server thread per further core, and each spins about
      0.1 s before it sleeps: a core's time taken from the compiles on a
      2-core machine.  These processes run no BLAS call whose speed
      matters (benchmarks/NOTES.md section 32)."""
    import numba

    env = dict(os.environ)
    env["NUMBANORM_COMPILE_AHEAD"] = "0"
    if numba.config.CACHE_DIR:
        env["NUMBA_CACHE_DIR"] = numba.config.CACHE_DIR
    env["OPENBLAS_NUM_THREADS"] = "1"
    return env


def start(module: str, name: str, flags: dict, argtypes: list) -> Helper | None:
    """Start a helper compiling the :class:`~numbanorm.backends.cpu._tasks.Task`
    held by ``module``'s attribute ``name``, for these flags and numba
    argument types.  None when it could not be started (the caller
    compiles as usual)."""
    request = (module, name, flags, argtypes)
    payload = base64.b64encode(pickle.dumps(request)).decode("ascii")
    env = child_env()
    # (numba imports scipy.linalg at its first compile to see whether BLAS
    # is there, 0.16 s; a helper compiles no BLAS call: if a task made one,
    # its compile would fail and this process would compile it)
    code = (
        "import sys; sys.path[:] = __import__('json').loads(sys.argv[1]); "
        "sys.modules['scipy.linalg.cython_blas'] = None; "
        "import numbanorm._ahead as a; a.main(sys.argv[2])"
    )
    path = json.dumps([p for p in sys.path if isinstance(p, str)])
    try:
        proc = subprocess.Popen(
            # (not -S, which would save 0.04-0.05 s: the site module runs
            # the .pth files, and an editable install's is an import hook
            # that sys.path does not show)
            [sys.executable, "-c", code, path, payload],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            close_fds=True,
        )
    except (OSError, ValueError):
        return None
    helper = Helper(proc)
    STARTED.append((request, helper))
    return helper


def main(payload: str) -> None:
    """The helper: compile the requested task into the cache."""
    module, name, flags, argtypes = pickle.loads(base64.b64decode(payload))
    getattr(importlib.import_module(module), name).compile_for(argtypes, flags)
