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
    [["--ops", "nope"], ["--sizes", "huge"], ["--dtypes", "int8"], ["--repeat", "0"], ["--threads", "0"]],
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
    for key in ("definitions", "script", "threads", "timeout_s", "results", "demo"):
        assert key in cold
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
