"""Where a cold first call's time goes: what numba compiles, and for how long.

Runs one op's first call in a new process with a new, empty kernel cache
(as ``numbanorm bench --cold`` does, the same calls and shapes) and prints

- every dispatcher numba compiled, nested as the compiles nested (numba's
  ``numba:compile`` events: a callee compiled while its caller is typed
  shows under it), with seconds inclusive of what is nested;
- every task (C callback, ``backends/cpu/_tasks.Task``) compiled, which
  numba reports no event for;
- the call's wall time, and what was outside those compiles.

With ``--llvm`` also the LLVM time of each task's library by stage
(function passes, module optimization, machine code), from numba's
``NUMBA_LLVM_PASS_TIMINGS``.  benchmarks/NOTES.md sections 21c, 26 and 29
were measured this way::

    python benchmarks/compile_profile.py batch_norm_train_cl [--size large] [--dtype float64] [--llvm]
    python benchmarks/compile_profile.py --list
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

_HERE = os.path.dirname(os.path.abspath(__file__))

# The child: the op's first call with compile events recorded and the tasks'
# compiles timed; prints one JSON line.
_CHILD = r"""
import json, sys, time
op, size, dtype, llvm = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
import numbanorm as nbn
from numba.core import event
from numbanorm.backends.cpu import _tasks
from numbanorm_bench.cold import cold_shape, make_call

tasks = []
address = _tasks.Task.address


def timed_address(self, *args, **kwargs):
    known = len(self._compiled)
    t = time.perf_counter()
    addr = address(self, *args, **kwargs)
    if len(self._compiled) > known:  # compiled (or loaded) just now
        cb = list(self._compiled.values())[-1]
        rec = {"task": self.__name__, "s": time.perf_counter() - t, "loaded": bool(cb._cache_hits)}
        if llvm:
            lib = cb._library
            rec["llvm"] = [[name, t.get_total_time()] for name, t in lib.recorded_timings]
        tasks.append(rec)
    return addr


_tasks.Task.address = timed_address
call = make_call(nbn, op, list(cold_shape(op, size)), dtype)
with event.install_recorder("numba:compile") as rec:
    t0 = time.perf_counter()
    call()
    wall = time.perf_counter() - t0
stack, compiles = [], []
for ts, ev in rec.buffer:
    name = ev.data["dispatcher"].py_func.__qualname__
    if ev.is_start:
        stack.append((name, ts))
    else:
        _, start = stack.pop()
        compiles.append({"name": name, "depth": len(stack), "start": start - t0, "s": ts - start})
compiles.sort(key=lambda c: c["start"])
print(json.dumps({"wall_s": wall, "compiles": compiles, "tasks": tasks}))
"""


def profile(op: str, size: str, dtype: str, llvm: bool, timeout: float = 600.0, ahead: bool = False) -> dict:
    """The child's record for ``op``'s first call (fresh process, fresh
    cache; ``ahead``: with numbanorm's helper processes, numbanorm/_ahead.py,
    else everything compiled in the child)."""
    with tempfile.TemporaryDirectory(prefix="numbanorm-compile-") as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, NUMBANORM_COMPILE_AHEAD="1" if ahead else "0")
        env.pop("NUMBA_DISABLE_JIT", None)
        if llvm:
            env["NUMBA_LLVM_PASS_TIMINGS"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_HERE, env.get("PYTHONPATH")]))
        p = subprocess.run(
            [sys.executable, "-c", _CHILD, op, size, dtype, "1" if llvm else "0"],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    if p.returncode != 0:
        tail = (p.stderr.strip().splitlines() or ["?"])[-1]
        raise SystemExit(f"compile_profile: the child failed: {tail}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def report(res: dict, op: str, size: str, dtype: str) -> str:
    """The printed profile."""
    lines = [f"{op} ({size}, {dtype}): first call {res['wall_s']:.2f} s in a fresh process and cache"]
    lines.append("numba dispatchers compiled (inclusive seconds, callees indented):")
    for c in res["compiles"]:
        lines.append(f"  {'  ' * c['depth']}{c['s']:6.3f}  {c['name']}")
    lines.append("tasks (C callbacks) compiled, with the dispatchers they compiled inside:")
    for t in res["tasks"]:
        how = "  (a helper's, loaded from the cache: the time is the wait)" if t.get("loaded") else ""
        lines.append(f"  {t['s']:6.3f}  {t['task']}{how}")
        for name, secs in t.get("llvm", []):
            lines.append(f"          {secs:6.3f}  LLVM {name[:60]}")
    top = sum(c["s"] for c in res["compiles"] if c["depth"] == 0)
    ts = sum(t["s"] for t in res["tasks"])
    lines.append(
        f"outermost dispatcher compiles {top:.2f} s (those inside a task count in its time too); "
        f"tasks {ts:.2f} s; the call {res['wall_s']:.2f} s"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, _HERE)
    from numbanorm_bench.cold import COLD_CALLS

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("op", nargs="?", help="an op of numbanorm bench --cold")
    ap.add_argument("--size", choices=("small", "large"), default="small", help="small: the demo's shapes")
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    ap.add_argument("--llvm", action="store_true", help="also each task's LLVM time by stage")
    ap.add_argument(
        "--ahead", action="store_true", help="with numbanorm's helper processes (default: one process)"
    )
    ap.add_argument("--json", metavar="PATH", help="also write the record as JSON")
    ap.add_argument("--list", action="store_true", help="list the ops")
    opts = ap.parse_args(argv)
    if opts.list:
        print("\n".join(COLD_CALLS))
        return 0
    if opts.op not in COLD_CALLS:
        ap.error(f"op must be one of {', '.join(COLD_CALLS)} (got {opts.op!r})")
    res = profile(opts.op, opts.size, opts.dtype, opts.llvm, ahead=opts.ahead)
    print(report(res, opts.op, opts.size, opts.dtype))
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump({"op": opts.op, "size": opts.size, "dtype": opts.dtype, **res}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
