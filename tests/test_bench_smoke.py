"""Smoke test of the benchmark suite (``numbanorm bench``, benchmarks/numbanorm_bench).

The suite is a benchmark, not a timed test: CI only checks that a tiny run
works end to end and writes the documented JSON.  Real numbers come from
``python benchmarks/run_cpu.py`` on a quiet machine.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

from numbanorm_bench import cli as bench
from numbanorm_bench.report import SCHEMA


def _run_tiny(path: Path, *extra: str) -> int:
    return bench.main(
        [
            "--ops",
            "layer_norm,batch_norm_train_cl",
            "--sizes",
            "small",
            "--dtypes",
            "float32",
            "--repeat",
            "2",
            "--no-torch",
            "--no-latency",
            "--no-startup",
            "--sections",
            "suite",
            "--json",
            str(path),
            *extra,
        ]
    )


def test_bench_smoke_writes_documented_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bench.json"
    assert _run_tiny(path) == 0
    out = capsys.readouterr().out
    assert "layer_norm" in out and "batch_norm_train_cl" in out

    report = json.loads(path.read_text())
    assert report["schema"] == SCHEMA
    assert report["device"] == "cpu"
    for key in ("machine", "settings", "definitions", "results", "latency", "startup"):
        assert key in report
    for key in ("medium", "small_ort", "scalers", "onnxruntime", "busy_neighbour"):
        assert report[key] is None  # --sections suite
    for key in ("cpu", "cores", "numba_threads", "numpy", "numba", "torch", "numbanorm"):
        assert key in report["machine"]
    assert [(r["op"], r["size"], r["dtype"]) for r in report["results"]] == [
        ("layer_norm", "small", "float32"),
        ("batch_norm_train_cl", "small", "float32"),
    ]
    for r in report["results"]:
        assert r["errors"] == {}
        assert r["bytes"] == 2 * 2048 * 4
        for key in ("numbanorm", "numbanorm_out", "copyto", "prange_copy", "stream_copy", "floor", "numpy"):
            assert r["times_s"][key] > 0
        t = r["times_s"]
        assert t["floor"] == min(t["copyto"], t["prange_copy"], t["stream_copy"])
        assert r["gbps"]["numbanorm"] == pytest.approx(r["bytes"] / r["times_s"]["numbanorm"] / 1e9)
        assert r["ratios"]["time_over_floor"] > 0
        assert r["ratios"]["numpy_over_numbanorm"] > 0
        assert r["ratios"]["torch_over_numbanorm"] is None  # --no-torch
        assert r["targets"]["time_over_floor"] in (1.25, 1.75)


def test_bench_plot_or_clear_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "bench.png"
    assert _run_tiny(tmp_path / "bench.json", "--plot", str(png), "--no-out", "--no-numpy") == 0
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "matplotlib is not installed" in capsys.readouterr().err
    else:
        assert png.stat().st_size > 0


@pytest.mark.parametrize(
    "argv",
    [
        ["--ops", "nope"],
        ["--sizes", "huge"],
        ["--dtypes", "int8"],
        ["--repeat", "0"],
        ["--threads", "0"],
        ["--sections", "nope"],
        ["--medium-sizes", "0"],
        ["--medium-sizes", "12Q"],
        ["--medium-sizes", "2G"],
        ["--busy", "--sections", "suite,scalers"],
        ["--busy", "--cold"],
    ],
)
def test_bench_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(argv) == 2
    assert "error" in capsys.readouterr().err


def test_bench_cuda_without_gpu_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    from numba import cuda

    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") in ("", "0") and cuda.is_available():
        pytest.skip("a real GPU is present: benchmarks/run_gpu.sh runs the CUDA suite")
    assert bench.main(["--device", "cuda", "--ops", "layer_norm"]) == 1
    err = capsys.readouterr().err
    assert "--device cuda" in err and "Traceback" not in err


def _run_cold(path: Path, *extra: str) -> int:
    argv = ["--cold", "--ops", "layer_norm", "--sizes", "small", "--no-demo", "--json", str(path)]
    return bench.main([*argv, *extra])


@pytest.mark.slow
def test_bench_cold_one_op_writes_documented_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--cold: layer_norm at the demo's shape, compiled in a fresh cache (5-30 s)."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the fresh caches go
    path = tmp_path / "cold.json"
    assert _run_cold(path) == 0
    assert "layer_norm" in capsys.readouterr().out

    report = json.loads(path.read_text())
    assert report["schema"] == SCHEMA
    assert report["results"] == [] and report["startup"] is None
    cold = report["cold"]
    for key in ("definitions", "script", "threads", "compile_ahead", "timeout_s", "results", "demo"):
        assert key in cold
    assert cold["compile_ahead"] is False  # (the suite's environment turns the helpers off: conftest)
    assert "compile_ahead" in cold["definitions"]
    assert cold["demo"] is None  # --no-demo
    assert cold["timeout_s"] == 300
    [r] = cold["results"]
    assert (r["op"], r["size"], r["dtype"], r["shape"]) == ("layer_norm", "small", "float32", [256, 1024])
    assert r["errors"] == {}
    for phase in ("cold", "cached"):
        for key in ("process_wall_s", "import_s", "first_call_s", "second_call_s"):
            assert r[phase][key] > 0
    assert not list(tmp_path.glob("numbanorm-cold-cache-*"))  # every fresh cache is removed


def test_bench_cold_timeout_is_an_error_not_a_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    path = tmp_path / "cold.json"
    assert _run_cold(path, "--cold-timeout", "0.001") == 1
    assert "timed out" in capsys.readouterr().err
    [r] = json.loads(path.read_text())["cold"]["results"]
    assert r["cold"] is None and r["cached"] is None
    assert "timed out after 0.001 s" in r["errors"]["cold"]
    assert not list(tmp_path.glob("numbanorm-cold-cache-*"))


# --------------------------------------------------------------------------
# issue 19: medium sizes, the ONNX Runtime peer, the busy neighbour, scalers


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


HAVE_ORT = _has("onnxruntime") and _has("onnx")


def _run_peers(path: Path, *extra: str, ops: str = "layer_norm,group_norm,minmax_scale") -> int:
    return bench.main(
        [
            "--quick",
            "--sections",
            "medium,small-ort",
            "--ops",
            ops,
            "--medium-sizes",
            "8K",
            "--dtypes",
            "float32",
            "--repeat",
            "2",
            "--no-numpy",
            "--json",
            str(path),
            *extra,
        ]
    )


def test_medium_sizes_and_small_inputs_against_ort_torch_and_floor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "peers.json"
    assert _run_peers(path) == 0
    out = capsys.readouterr().out
    assert "medium sizes: numbanorm vs ONNX Runtime" in out and "small inputs" in out
    report = json.loads(path.read_text())
    assert report["results"] == [] and report["startup"] is None  # no suite section
    assert report["scalers"] is None and report["busy_neighbour"] is None
    med = report["medium"]
    assert med["sizes"] == ["8KiB"] and med["shapes"] == "default" and med["busy"] is False
    # 8 KiB of float32 = 2048 elements: rows (2, 1024), 64 channels of 4 x 8, 8 x 256 columns
    assert [(r["op"], r["shape"]) for r in med["results"]] == [
        ("layer_norm", [2, 1024]),
        ("group_norm", [1, 64, 4, 8]),
        ("minmax_scale", [8, 256]),
    ]
    torch_ok = report["machine"]["torch"] is not None
    for r in med["results"]:
        assert r["section"] == "medium" and r["errors"] == {}
        assert r["x_bytes"] == 8192 and r["bytes"] == 2 * 8192
        t = r["times_s"]
        assert t["floor"] == min(t["copyto"], t["prange_copy"], t["stream_copy"])
        assert r["ratios"]["numbanorm_over_floor"] == pytest.approx(t["numbanorm"] / t["floor"])
        assert ("torch" in t) == torch_ok
        assert r["busy_times_s"] is None and r["busy_over_idle"] is None
    small = report["small_ort"]["results"]
    assert [(r["op"], r["shape"]) for r in small] == [
        ("layer_norm", [32, 64]),
        ("group_norm", [2, 16, 8, 8]),
        ("minmax_scale", [32, 64]),
    ]
    assert all("floor" not in r["times_s"] and r["errors"] == {} for r in small)
    minmax = [r for r in med["results"] + small if r["op"] == "minmax_scale"]
    assert all(r["ort"]["node"] is None and "no ONNX operator" in r["ort"]["note"] for r in minmax)
    if not HAVE_ORT:
        assert "ONNX Runtime column skipped" in report["onnxruntime"]["note"]
        return
    assert report["onnxruntime"]["version"] == report["machine"]["onnxruntime"]
    for r in med["results"][:2] + small[:2]:
        assert r["ort"]["node"] in ("LayerNormalization", "GroupNormalization")
        assert r["ort"]["verified"]["ok"] is True
        assert r["ort"]["graph"]  # the nodes ONNX Runtime runs after optimization
        assert r["times_s"]["ort"] > 0
        assert r["ratios"]["ort_over_numbanorm"] == pytest.approx(
            r["times_s"]["ort_best" if r["section"] == "small" else "ort"] / r["times_s"]["numbanorm"]
        )
    assert all(r["times_s"]["ort_run"] > 0 for r in small[:2])  # session.run beside io binding


def test_medium_sizes_have_a_numpy_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The medium section times the plain NumPy baseline beside the peers
    (unless --no-numpy); the small-input comparison does not."""
    path = tmp_path / "np.json"
    argv = ["--quick", "--sections", "medium,small-ort", "--ops", "layer_norm", "--medium-sizes", "8K"]
    argv += ["--dtypes", "float32", "--repeat", "2", "--no-torch", "--no-onnx", "--json", str(path)]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "np/nbn" in out
    report = json.loads(path.read_text())
    [r] = report["medium"]["results"]
    assert r["times_s"]["numpy"] > 0
    assert r["ratios"]["numpy_over_numbanorm"] == pytest.approx(
        r["times_s"]["numpy"] / r["times_s"]["numbanorm"]
    )
    [s] = report["small_ort"]["results"]
    assert "numpy" not in s["times_s"] and s["ratios"]["numpy_over_numbanorm"] is None
    from numbanorm_bench.medium import report_markdown

    md = report_markdown(report)
    assert "| NumPy | NumPy/numbanorm |" in md.splitlines()[2]


def test_without_onnxruntime_the_column_is_skipped_with_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from numbanorm_bench import cpu

    monkeypatch.setattr(
        cpu, "import_ort", lambda: (None, None, "onnxruntime is not installed: column skipped")
    )
    path = tmp_path / "no-ort.json"
    assert _run_peers(path, "--sections", "medium", "--no-torch", ops="layer_norm") == 0
    assert "note: onnxruntime is not installed" in capsys.readouterr().out
    report = json.loads(path.read_text())
    assert report["onnxruntime"]["note"] == "onnxruntime is not installed: column skipped"
    [r] = report["medium"]["results"]
    assert r["ort"] is None and "ort" not in r["times_s"] and r["errors"] == {}


@pytest.mark.skipif(not HAVE_ORT, reason="onnxruntime (and onnx) not installed")
def test_an_ort_output_that_differs_is_an_error_not_a_timing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from numbanorm_bench import onnx_peer

    real = onnx_peer.OrtPeer.output
    monkeypatch.setattr(onnx_peer.OrtPeer, "output", lambda self: real(self) + 1e-3)
    path = tmp_path / "mismatch.json"
    assert _run_peers(path, "--sections", "medium", "--no-torch", ops="layer_norm") == 1
    assert "output differs from numbanorm's" in capsys.readouterr().err
    [r] = json.loads(path.read_text())["medium"]["results"]
    assert "output differs" in r["errors"]["ort"] and "ort" not in r["times_s"]
    assert r["ort"]["verified"]["ok"] is False and r["ort"]["verified"]["max_abs_diff"] >= 1e-3


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_busy_neighbour_is_pinned_stopped_resumed_and_killed() -> None:
    from numbanorm_bench.busy import BusyNeighbour

    nb = BusyNeighbour().start()
    try:
        assert nb.alive() and not nb.running
        state = lambda: Path(f"/proc/{nb.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]  # noqa: E731
        if Path(f"/proc/{nb.pid}/stat").exists():
            assert state() == "T"  # stopped: the idle phase
            nb.busy()
            assert state() in ("R", "S")
            nb.idle()
            assert state() == "T"
        if len(os.sched_getaffinity(0)) >= 2:
            assert nb.pinned and os.sched_getaffinity(nb.pid) == {max(os.sched_getaffinity(0))}
    finally:
        nb.stop()
    assert _gone(nb.pid) and not nb.alive()
    nb.stop()  # idempotent


def _record_neighbours(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    from numbanorm_bench.busy import BusyNeighbour

    pids: list[int] = []
    start = BusyNeighbour.start

    def recording_start(self: BusyNeighbour) -> BusyNeighbour:
        out = start(self)
        pids.append(self.pid)
        return out

    monkeypatch.setattr(BusyNeighbour, "start", recording_start)
    return pids


def test_busy_mode_reports_idle_and_busy_and_kills_the_neighbour(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pids = _record_neighbours(monkeypatch)
    path = tmp_path / "busy.json"
    assert _run_peers(path, "--busy", "--repeat", "1", "--no-torch", ops="layer_norm") == 0
    assert "busy neighbour: process" in capsys.readouterr().out
    [pid] = pids
    assert _gone(pid)
    report = json.loads(path.read_text())
    info = report["busy_neighbour"]
    assert info["pid"] == pid and info["returncode"] is not None
    assert report["medium"]["busy"] is True and report["settings"]["busy"] is True
    for r in report["medium"]["results"] + report["small_ort"]["results"]:
        assert set(r["busy_times_s"]) == set(r["times_s"])
        assert r["busy_over_idle"]["numbanorm"] == pytest.approx(
            r["busy_times_s"]["numbanorm"] / r["times_s"]["numbanorm"]
        )
        assert set(r["sampling"]["other_processes_cores"]) == {"idle", "busy"}
    for r in report["medium"]["results"]:
        t = r["times_s"]
        if r["threads"] > 1:  # the bound of busy/idle: one thread's idle time over the row's threads'
            assert r["ratios"]["t1_over_t2"] == pytest.approx(t["numbanorm_1t"] / t["numbanorm_2t"])
            bound = max(1.5, r["ratios"]["t1_over_t2"])
            assert r["meets"]["busy_bound"] is (r["busy_over_idle"]["numbanorm"] <= bound)
        else:
            assert "numbanorm_1t" not in t and r["meets"]["busy_bound"] is None


def test_busy_bound_is_one_thread_over_two() -> None:
    from numbanorm_bench.cases import Case
    from numbanorm_bench.medium import record

    case = Case("layer_norm", "1MiB", "float32", (256, 1024))
    idle = {"numbanorm": 10e-6, "numbanorm_1t": 18e-6, "numbanorm_2t": 10.2e-6, "copyto": 5e-6}

    def meets(busy_nbn: float) -> dict[str, bool | None]:
        busy = dict(idle, numbanorm=busy_nbn)
        r = record(case, "medium", 2, idle, busy, ("copyto",), {}, None, {})
        assert r["ratios"]["t1_over_t2"] == pytest.approx(18 / 10.2)
        return r["meets"]

    assert meets(14e-6) == {"ort": None, "ort_run": None, "torch": None, "busy": True, "busy_bound": True}
    m = meets(17e-6)  # over 1.5, under T1/T2 = 1.76
    assert m["busy"] is False and m["busy_bound"] is True
    m = meets(18e-6)  # over both
    assert m["busy"] is False and m["busy_bound"] is False
    r = record(case, "medium", 2, idle, None, ("copyto",), {}, None, {})
    assert r["meets"]["busy_bound"] is None and r["meets"]["busy"] is None


def test_busy_neighbour_is_killed_on_ctrl_c(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from numbanorm_bench import medium

    pids = _record_neighbours(monkeypatch)

    def interrupted(*args: object, **kwargs: object) -> None:
        assert not _gone(pids[0])  # running while the section is timed
        raise KeyboardInterrupt

    monkeypatch.setattr(medium, "measure_idle_busy", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run_peers(tmp_path / "x.json", "--busy", "--no-torch", ops="layer_norm")
    [pid] = pids
    assert _gone(pid)


def test_scalers_per_call(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "scalers.json"
    argv = ["--quick", "--sections", "scalers", "--dtypes", "float32", "--repeat", "1", "--json", str(path)]
    assert bench.main(argv) == 0
    assert "StandardScaler.partial_fit" in capsys.readouterr().out
    [res] = json.loads(path.read_text())["scalers"]
    assert res["shape"] == [32, 64] and res["dtype"] == "float32" and res["errors"] == {}
    calls = {r["call"]: r for r in res["rows"]}
    for est in ("StandardScaler", "MinMaxScaler"):
        for m in ("fit", "transform", "partial_fit", "fit_transform"):
            r = calls[f"{est}.{m}"]
            assert r["numbanorm_us"] > 0
            assert r["meets"] == (None if m == "fit_transform" else r["numbanorm_us"] < 50)
    assert res["function_us"]["standardize"] > 0


def test_medium_shapes_spread_and_sizes() -> None:
    from numbanorm_bench.medium import parse_size, shapes_for, size_label

    assert [parse_size(s) for s in ("64K", "1M", "8MiB", "4096")] == [65536, 1 << 20, 8 << 20, 4096]
    assert size_label(65536) == "64KiB" and size_label(3 << 20) == "3MiB"
    rows = shapes_for("rows", 64 << 10, "float32", True)
    assert rows == [(256, 64), (64, 256), (16, 1024), (4, 4096), (1, 16384)]
    assert shapes_for("rows", 64 << 10, "float64", True)[-1] == (2, 4096)  # no 0-row shape
    for s in shapes_for("nchw", 1 << 20, "float32", True) + shapes_for("nhwc", 1 << 20, "float32", True):
        assert int(np.prod(s)) * 4 == 1 << 20
    assert shapes_for("nchw", 1 << 20, "float32", False) == [(4, 64, 32, 32)]


@pytest.mark.skipif(not HAVE_ORT, reason="onnxruntime (and onnx) not installed")
def test_an_operator_ort_cannot_run_is_a_note_not_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from numbanorm_bench import onnx_peer

    def no_kernel(*args: object) -> None:
        raise RuntimeError("[ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : Could not find an implementation")

    monkeypatch.setattr(onnx_peer.OrtPeers, "peer", no_kernel)
    path = tmp_path / "gap.json"
    assert _run_peers(path, "--sections", "medium", "--no-torch", ops="layer_norm") == 0
    assert "no ONNX Runtime time: ONNX Runtime" in capsys.readouterr().out
    [r] = json.loads(path.read_text())["medium"]["results"]
    assert r["errors"] == {} and "ort" not in r["times_s"]
    assert "has no CPU kernel for LayerNormalization in float32" in r["ort"]["note"]


def test_compile_profile_reports_the_dispatchers_and_tasks_of_a_cold_call(tmp_path: Path, capsys) -> None:
    # benchmarks/compile_profile.py: one op's first call in a fresh process
    # and cache, with numba's compile events and the tasks' compiles
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "compile_profile.py"
    spec = importlib.util.spec_from_file_location("compile_profile", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "p.json"
    assert mod.main(["layer_norm", "--json", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert rec["op"] == "layer_norm" and rec["wall_s"] > 0
    assert rec["tasks"] and all(t["s"] > 0 and t["task"] for t in rec["tasks"])
    assert all({"name", "depth", "start", "s"} <= set(c) for c in rec["compiles"])
    text = capsys.readouterr().out
    assert "first call" in text and rec["tasks"][0]["task"] in text
    with pytest.raises(SystemExit):
        mod.main(["no_such_op"])


def test_ort_target_is_1_5x_up_to_8_mib_and_1x_above() -> None:
    """Issue 19: medium inputs (x up to 8 MiB) 1.5x ONNX Runtime, larger
    ones never slower than it, small ones never slower than its best call."""
    from numbanorm_bench.cases import Case
    from numbanorm_bench.medium import record

    def meets(shape: tuple[int, ...], ort_over_nbn: float, section: str = "medium") -> tuple[float, bool]:
        times = {"numbanorm": 1.0, "ort": ort_over_nbn, "ort_run": ort_over_nbn, "copyto": 0.5}
        r = record(
            Case("layer_norm", "x", "float32", shape), section, 2, times, None, ("copyto",), {}, None, {}
        )
        return r["targets"]["ort_over_numbanorm"], r["meets"]["ort"]

    assert meets((2048, 1024), 1.4) == (1.5, False)  # 8 MiB: medium
    assert meets((2048, 1024), 1.5) == (1.5, True)
    assert meets((2049, 1024), 1.4) == (1.0, True)  # just over 8 MiB: large
    assert meets((32768, 1024), 0.99) == (1.0, False)  # 128 MiB
    assert meets((32, 64), 1.0, "small") == (1.0, True)
