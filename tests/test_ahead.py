"""Cold calls whose statistics task a helper process compiles (numbanorm/_ahead.py).

Each case runs in a fresh process with a fresh, empty kernel cache (what a
new user meets): the helper must compile exactly the task the call needs,
the call must load it from the cache and give the same bits as a call that
compiled everything itself; a helper that fails or hangs must cost nothing
but time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from numbanorm import _ahead
from numbanorm.backends.cpu._intrinsics import populate, resident

# the calls, large enough for the per-channel two-pass path (smaller ones
# take the small-call kernels, one task each): channels-last batch_norm
# training (lane moments), standardize over rows of channels (row moments
# without NaN), minmax_scale (lane min/max) and standardize of float64
# columns whose lane tasks are refused (lane moments, then the exact task);
# results saved for the comparison
_CALLS = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import numbanorm as nbn
    from numbanorm import _ahead
    from numbanorm import _cache
    from numbanorm.backends.cpu import _tasks
    from numbanorm.backends.cpu.axis_stats import col_moments_exact
    rng = np.random.default_rng(7)
    x = rng.standard_normal((8, 16, 16, 48)).astype(np.float32) * 3 + 100
    xr = rng.standard_normal((6, 5, 3000)).astype(np.float64) - 7
    rm, rv = np.zeros(48, np.float32), np.ones(48, np.float32)
    ys = {"rm": rm, "rv": rv}
    ys["y1"] = nbn.batch_norm(x, rm, rv, training=True, channel_axis=-1)
    if sys.argv[2] == "all":
        ys["y2"] = nbn.standardize(xr, axis=(0, 2))
        ys["y3"] = nbn.minmax_scale(x.reshape(-1, 48), axis=0)
        # lane tasks whose first rows lie far from the rest: their shifted
        # sums are refused and the exact task (compiled here) redoes them
        xf = rng.standard_normal((4096, 64))
        xf[:3] = 1e9
        xf[2048:2051] = 1e9
        ys["y4"], ys["m4"], ys["s4"] = nbn.standardize(xf, axis=0, return_stats=True)
    np.savez(sys.argv[1], **ys)
    print(json.dumps({
        "helpers": [[r[1], h.ok] for r, h in _ahead.STARTED],
        "counts": _tasks.COUNTS,
        "dispatchers": _cache.dispatcher_counts(),
        "exact": len(col_moments_exact._compiled),
    }))
    """
)


def _run(tmp_path, name, ahead, script=_CALLS, calls="all"):
    env = dict(os.environ, NUMBANORM_COMPILE_AHEAD=ahead, NUMBA_CACHE_DIR=str(tmp_path / f"cache-{name}"))
    out = tmp_path / f"{name}.npz"
    res = subprocess.run(
        [sys.executable, "-c", script, str(out), calls], env=env, capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1]), np.load(out)


@pytest.fixture(scope="module")
def alone(tmp_path_factory):
    """The calls compiled without helpers, in a fresh cache."""
    return _run(tmp_path_factory.mktemp("alone"), "alone", "0")


def test_helper_compiles_the_statistics_tasks_same_bits(tmp_path, alone):
    info, got = _run(tmp_path, "ahead", "1")
    base, want = alone
    # one helper per cold statistics task, each done, each task then loaded
    helpers = ["col_minmax", "col_moments", "col_moments", "row_moments"]
    assert sorted(name for name, _ in info["helpers"]) == helpers
    assert all(ok for _, ok in info["helpers"])
    assert info["counts"]["loaded"] == 4
    assert base["helpers"] == [] and base["counts"]["loaded"] == 0
    assert info["counts"]["compiled"] + 4 == base["counts"]["compiled"]
    assert info["exact"] == base["exact"] == 1  # (the refused lane tasks were redone)
    # (the glues compiled ahead of their first launch, for the types the
    # launch then takes: compiled once each, as without helpers)
    assert info["dispatchers"] == base["dispatchers"]
    for k in want.files:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_a_failing_helper_costs_only_time(tmp_path, alone):
    # the helper exits at once with an error: the call compiles the task
    # itself, as without helpers (the channels-last call only)
    script = (
        "import subprocess, sys\n"
        "from numbanorm import _ahead\n"
        "def start(*request):\n"
        "    h = _ahead.Helper(subprocess.Popen([sys.executable, '-c', 'raise SystemExit(3)']))\n"
        "    _ahead.STARTED.append((request, h))\n"
        "    return h\n"
        "_ahead.start = start\n"
    ) + _CALLS
    info, got = _run(tmp_path, "failing", "1", script, calls="first")
    _, want = alone
    assert [name for name, _ in info["helpers"]] == ["col_moments"] and info["helpers"][0][1] is False
    assert info["counts"]["loaded"] == 0
    for k in got.files:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_a_hanging_helper_is_killed():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    h = _ahead.Helper(proc)
    t0 = time.perf_counter()
    assert h.wait(timeout=0.3) is False
    assert time.perf_counter() - t0 < 10
    assert proc.poll() is not None
    assert h.wait() is False  # (answered once)


def test_when_helpers_are_used(monkeypatch, tmp_path):
    from numbanorm import _config

    prev = _ahead.set_enabled(None)
    try:
        monkeypatch.setenv("NUMBANORM_COMPILE_AHEAD", "0")
        assert not _ahead.enabled()
        _ahead.set_enabled(None)
        monkeypatch.setenv("NUMBANORM_COMPILE_AHEAD", "1")
        assert _ahead.enabled()
        _ahead.set_enabled(None)
        monkeypatch.setattr(_config, "CACHE", False)  # (nothing to share a kernel through)
        assert not _ahead.enabled()
        _ahead.set_enabled(None)
        monkeypatch.setattr(_config, "CACHE", True)
        monkeypatch.setattr(sys, "frozen", True, raising=False)  # (sys.executable is the application)
        assert not _ahead.enabled()
        _ahead.set_enabled(None)
        monkeypatch.setattr(sys, "frozen", False)
        monkeypatch.setattr(sys, "executable", sys.executable)
        assert _ahead.enabled()
        _ahead.set_enabled(None)
        # a program that embeds Python: its executable is not an interpreter
        for name, want in (("blender", False), ("uwsgi", False), ("python3.12", True), ("pypy3", True)):
            exe = tmp_path / name
            exe.write_bytes(b"")
            monkeypatch.setattr(sys, "executable", str(exe))
            _ahead.set_enabled(None)
            assert _ahead.enabled() is want, name
    finally:
        _ahead.set_enabled(prev)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise(MADV_POPULATE_WRITE) is Linux's")
def test_populate_keeps_contents_and_faults_in(monkeypatch):
    a = np.arange(1 << 20, dtype=np.float64)
    before = a.copy()
    populate(a)
    np.testing.assert_array_equal(a, before)
    fresh = np.empty(8 << 20, np.uint8)
    if populate(fresh):  # (kernels before 5.14 answer EINVAL)
        assert resident(fresh)
    # more than the output cache's share of memory is left alone (an out=
    # mapped from a file larger than memory would be read twice)
    from numbanorm.backends.cpu import _intrinsics

    monkeypatch.setattr(_intrinsics, "_POPULATE_MAX_BYTES", 4 << 20)
    other = np.empty(8 << 20, np.uint8)
    assert populate(other) is False


def test_child_env_starts_no_blas_threads(monkeypatch, tmp_path):
    """A helper's (and a warmup job's) environment: no helper of its own,
    this process's kernel cache, and no OpenBLAS server threads (each spins
    ~0.1 s after numpy's import, a core taken from the compiles on 2 cores);
    this process's own environment is left as it was."""
    import numba

    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path))
    before = dict(os.environ)
    env = _ahead.child_env()
    assert dict(os.environ) == before
    assert env["NUMBANORM_COMPILE_AHEAD"] == "0"
    assert env["NUMBA_CACHE_DIR"] == str(tmp_path)
    assert env["OPENBLAS_NUM_THREADS"] == "1"
    ours = ("NUMBANORM_COMPILE_AHEAD", "NUMBA_CACHE_DIR", "OPENBLAS_NUM_THREADS")
    assert {k: v for k, v in env.items() if k not in ours} == {
        k: v for k, v in before.items() if k not in ours
    }
    if not os.path.isdir("/proc/self/task"):
        pytest.skip("per-thread listing is Linux's /proc")
    blas = np.__config__.CONFIG.get("Build Dependencies", {}).get("blas", {}).get("name", "")
    if "openblas" not in str(blas).lower():
        pytest.skip(f"numpy's BLAS is {blas!r}, not OpenBLAS")
    count = "import os, numpy; print(len(os.listdir('/proc/self/task')))"
    threads = [
        int(
            subprocess.run(
                [sys.executable, "-c", count], env=e, capture_output=True, text=True, check=True
            ).stdout
        )
        for e in (env, before)
    ]
    assert threads[0] == 1
    if (os.cpu_count() or 1) > 1:  # (one core: OpenBLAS starts no server thread anyway)
        assert threads[1] > 1
