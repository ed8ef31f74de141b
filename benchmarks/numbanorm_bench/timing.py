"""Timing: interleaved, calibrated sampling of candidate calls, and the
guard that re-runs repetitions disturbed by other processes."""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .cases import Fn
from .errors import short


def _wall(fn: Fn, number: int) -> float:
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return time.perf_counter() - t0


SAMPLE_CAP = 20  # a sample stops after SAMPLE_CAP x min_sample_s (see _capped)


def _capped(fn: Fn, number: int, cap_s: float) -> tuple[float, int]:
    """(seconds, calls) of up to ``number`` calls, stopping at the first of
    eight checkpoints past ``cap_s``: on a loaded machine a call calibrated
    at microseconds can take a scheduler slice, and a sample of thousands of
    such calls would run for minutes.  The mean per call stays exact."""
    step = max(1, number // 8)
    done = 0
    t0 = time.perf_counter()
    while done < number:
        k = min(step, number - done)
        for _ in range(k):
            fn()
        done += k
        if time.perf_counter() - t0 > cap_s:
            break
    return time.perf_counter() - t0, done


class QuietGuard:
    """Rejects repetitions during which other processes used the CPU.

    On a shared machine a parallel kernel waits for its slowest thread, so one
    competing process can double its time while a single-threaded peer barely
    notices: the comparison would be biased, not just noisy.  The guard reads
    the machine's busy CPU time (``/proc/stat``) and this process's own
    (``/proc/self/stat``) around each repetition; a repetition in which other
    processes were busy for more than ``max(2 ticks, 10%)`` of its wall time is
    discarded and run again after a pause, at most ``max_retries`` times per
    case.  Linux only; elsewhere it accepts everything."""

    def __init__(self, max_retries: int, pause_s: float = 0.25) -> None:
        self.max_retries, self.pause_s = max_retries, pause_s
        self.hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.enabled = self._snapshot() is not None

    @staticmethod
    def _snapshot() -> tuple[int, int, float] | None:
        try:
            cpu = Path("/proc/stat").read_text().split("\n", 1)[0].split()
            mine = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        # user nice system idle iowait irq softirq steal: busy = all but idle/iowait
        f = [int(v) for v in cpu[1:9]]
        busy = f[0] + f[1] + f[2] + f[5] + f[6] + f[7]
        return busy, int(mine[11]) + int(mine[12]), time.perf_counter()

    def begin(self) -> tuple[int, int, float] | None:
        return self._snapshot() if self.enabled else None

    def quiet(self, start: tuple[int, int, float] | None) -> tuple[bool, float | None]:
        end = self._snapshot() if start is not None else None
        if start is None or end is None:
            return True, None
        wall = max(end[2] - start[2], 1e-9)
        other_ticks = max(0, (end[0] - start[0]) - (end[1] - start[1]))
        return other_ticks <= max(2, 0.1 * wall * self.hz), other_ticks / self.hz / wall


def _calibrate(
    fns: dict[str, Fn], min_sample_s: float, clocks: dict[str, Callable[[Fn, int], float]]
) -> tuple[dict[str, Fn], dict[str, int], dict[str, str]]:
    """Warm up every candidate (two calls: compilation, first touch) and find
    its calls per sample (>= ``min_sample_s``); failures become errors."""
    live: dict[str, Fn] = {}
    errors: dict[str, str] = {}
    number: dict[str, int] = {}
    for name, fn in fns.items():
        clock = clocks.get(name, _wall)
        try:
            fn()
            fn()
            t = clock(fn, 1)
        except Exception as e:  # noqa: BLE001 - any failure of a candidate is reported
            errors[name] = short(e)
            continue
        live[name] = fn
        number[name] = max(1, min(100_000, math.ceil(min_sample_s / max(t, 1e-9))))
    return live, number, errors


def _repetition(
    live: dict[str, Fn],
    number: dict[str, int],
    clocks: dict[str, Callable[[Fn, int], float]],
    k: int,
    cap_s: float,
) -> dict[str, float]:
    """One repetition: every candidate once, in the order rotated by ``k``."""
    names = list(live)
    k %= len(names)
    rep = {}
    for name in names[k:] + names[:k]:
        if name in clocks:
            rep[name] = clocks[name](live[name], number[name]) / number[name]
        else:
            secs, calls = _capped(live[name], number[name], cap_s)
            rep[name] = secs / calls
    return rep


def measure(
    fns: dict[str, Fn],
    repeat: int,
    min_sample_s: float,
    clocks: dict[str, Callable[[Fn, int], float]] | None = None,
    guard: QuietGuard | None = None,
) -> tuple[dict[str, float], dict[str, str], dict[str, Any]]:
    """Median seconds per call of every candidate, errors of those that
    failed, and how the sampling went (``calls_per_sample``, contention).

    Each candidate is warmed up (two calls: compilation and first touch),
    calibrated to ``number`` calls per sample of at least ``min_sample_s``,
    then sampled ``repeat`` times; in each repetition all candidates run once,
    in an order rotated by one per repetition, so slow drift (frequency,
    other load) hits all alike.  ``clocks`` maps a name to its timer
    ``(fn, number) -> seconds`` (default: wall clock); ``guard`` re-runs
    repetitions disturbed by other processes."""
    clocks = clocks or {}
    live, number, errors = _calibrate(fns, min_sample_s, clocks)
    samples: dict[str, list[float]] = {n: [] for n in live}
    rejected = 0
    others: list[float] = []
    r = 0
    while r < repeat and live:
        start = guard.begin() if guard is not None else None
        rep = _repetition(live, number, clocks, r, SAMPLE_CAP * min_sample_s)
        if guard is not None:
            ok, load = guard.quiet(start)
            if not ok and rejected < guard.max_retries:
                rejected += 1
                time.sleep(guard.pause_s)
                continue
            if load is not None:
                others.append(load)
        for name, v in rep.items():
            samples[name].append(v)
        r += 1
    info = {
        "calls_per_sample": number,
        "repetitions": repeat,
        "rejected_repetitions": rejected,
        "other_processes_cores": None if not others else round(statistics.median(others), 3),
    }
    return {n: statistics.median(v) for n, v in samples.items()}, errors, info


def measure_idle_busy(
    fns: dict[str, Fn],
    repeat: int,
    min_sample_s: float,
    neighbour: Any,
    guard: QuietGuard | None = None,
) -> tuple[dict[str, float], dict[str, float], dict[str, str], dict[str, Any]]:
    """Like :func:`measure`, with every repetition run twice, once with the
    busy neighbour stopped (``neighbour.idle()``) and once with it spinning
    (``neighbour.busy()``), the order of the two alternating; returns (idle
    medians, busy medians, errors, sampling info).  Calibration runs idle;
    ``guard`` re-runs idle repetitions disturbed by other processes (the
    busy ones record how many cores the others used, the neighbour included)."""
    neighbour.idle()
    live, number, errors = _calibrate(fns, min_sample_s, {})
    samples: dict[str, dict[str, list[float]]] = {p: {n: [] for n in live} for p in ("idle", "busy")}
    rejected = 0
    others: dict[str, list[float]] = {"idle": [], "busy": []}
    probe = guard if guard is not None else QuietGuard(0)
    r = 0
    try:
        while r < repeat and live:
            phases = ("idle", "busy") if r % 2 == 0 else ("busy", "idle")
            reps: dict[str, dict[str, float]] = {}
            loads: dict[str, float] = {}
            redo = False
            for phase in phases:
                (neighbour.idle if phase == "idle" else neighbour.busy)()
                start = probe.begin()
                reps[phase] = _repetition(live, number, {}, r, SAMPLE_CAP * min_sample_s)
                ok, load = probe.quiet(start)
                if phase == "idle" and guard is not None and not ok and rejected < guard.max_retries:
                    redo = True
                if load is not None:
                    loads[phase] = load
            neighbour.idle()
            if redo and guard is not None:
                rejected += 1
                time.sleep(guard.pause_s)
                continue
            for phase, rep in reps.items():
                for name, v in rep.items():
                    samples[phase][name].append(v)
            for phase, load in loads.items():
                others[phase].append(load)
            r += 1
    finally:
        neighbour.idle()
    info = {
        "calls_per_sample": number,
        "repetitions": repeat,
        "rejected_repetitions": rejected,
        "other_processes_cores": {
            p: None if not v else round(statistics.median(v), 3) for p, v in others.items()
        },
    }
    med = {p: {n: statistics.median(v) for n, v in d.items() if v} for p, d in samples.items()}
    return med["idle"], med["busy"], errors, info
