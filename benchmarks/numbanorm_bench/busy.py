"""The busy neighbour of ``--busy``: one CPU-bound process on another core.

A parallel kernel waits at the end of each parallel region for its slowest
thread; when another process holds one of the cores, that thread may not run
for a whole scheduler slice.  ``--busy`` measures this: one child process
spinning in a Python loop, pinned (``os.sched_setaffinity``) to the last core
this process may use (or merely started where pinning is impossible), is
*stopped* (SIGSTOP) for the idle repetitions and *continued* (SIGCONT) for
the busy ones, so idle and busy times come from the same run, interleaved.

The child is always killed: by :meth:`BusyNeighbour.stop` (``with``-block or
``try/finally`` of the caller, also on Ctrl-C), and, should this process die
without running its ``finally`` (SIGKILL), by the kernel (Linux
``PR_SET_PDEATHSIG``) or by the child itself, which exits once its parent is
gone (it checks every few milliseconds while it runs).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

from .errors import BenchError

# Spins until its parent changes (the parent died).  On Linux the kernel also
# kills it with the parent (PR_SET_PDEATHSIG = 1), which covers the case of a
# stopped child whose parent was killed.
_CHILD = """
import os, sys
ppid = int(sys.argv[1])
try:
    import ctypes, signal
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)
except Exception:
    pass
while os.getppid() == ppid:
    for _ in range(100000):
        pass
"""

SETTLE_S = 0.002  # after SIGSTOP / SIGCONT, before the next timed repetition


class BusyNeighbour:
    """``start()`` the spinning child, ``busy()`` / ``idle()`` it, ``stop()``
    it (kill and reap; idempotent).  Also a context manager."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        self.cpu: int | None = None
        self.pinned = False
        self.note: str | None = None
        self.running = False
        self.returncode: int | None = None

    def start(self) -> BusyNeighbour:
        """Start the child, pinned where possible, stopped (idle) at first."""
        if self.proc is not None:
            raise RuntimeError("the busy neighbour is already started")
        if not hasattr(signal, "SIGSTOP"):
            raise BenchError("--busy needs POSIX signals (SIGSTOP/SIGCONT), not available here")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(os.getpid())],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.pid = self.proc.pid
        self.running = True
        try:
            self.idle()
            allowed = sorted(os.sched_getaffinity(0))
            if len(allowed) >= 2:
                self.cpu = allowed[-1]
                os.sched_setaffinity(self.pid, {self.cpu})
                self.pinned = True
            else:
                self.note = "one core available: the neighbour shares it (not pinned)"
        except AttributeError:
            self.note = "os.sched_setaffinity is not available here: the neighbour is not pinned"
        except OSError as e:
            self.note = f"pinning failed ({e}): the neighbour is not pinned"
        except BaseException:
            self.stop()
            raise
        return self

    def _signal(self, sig: int, until: int) -> None:
        """Send ``sig`` and wait until the child reports the change
        (``waitpid`` with WUNTRACED / WCONTINUED): a signal is acted on only
        when the child next runs, which on a loaded machine takes a while."""
        assert self.proc is not None
        os.kill(self.proc.pid, sig)
        try:
            os.waitpid(self.proc.pid, until)
        except ChildProcessError:  # it died (and was reaped): stop() copes
            pass
        time.sleep(SETTLE_S)

    def busy(self) -> None:
        """Let the child spin (SIGCONT)."""
        if self.proc is not None and not self.running:
            self._signal(signal.SIGCONT, os.WCONTINUED)
            self.running = True

    def idle(self) -> None:
        """Stop the child (SIGSTOP): it uses no CPU until ``busy()``."""
        if self.proc is not None and self.running:
            self._signal(signal.SIGSTOP, os.WUNTRACED)
            self.running = False

    def stop(self) -> None:
        """Kill the child and reap it (SIGKILL also ends a stopped process)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            proc.kill()
        except ProcessLookupError:
            pass
        self.returncode = proc.wait()
        self.running = False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def info(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "command": "python -c 'while parent alive: spin' (one CPU-bound process)",
            "cpu": self.cpu,
            "pinned": self.pinned,
            "note": self.note,
            "how": "SIGSTOP for the idle repetitions, SIGCONT for the busy ones, interleaved; "
            "killed at the end of the run (also on errors and Ctrl-C)",
            "returncode": self.returncode,
        }

    def __enter__(self) -> BusyNeighbour:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
