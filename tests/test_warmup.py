"""``numbanorm warmup`` fills numba's cache: a process started afterwards
compiles nothing for the cases it warmed up (tests run it on a subset of
the cases, into a private cache directory: the full warm-up takes ~40 s per
dtype here)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from numbanorm import _warmup


def _run(args, cache):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    return subprocess.run(
        [sys.executable, "-m", "numbanorm", "warmup", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_warmup_compiles_once_then_loads_everything(tmp_path):
    args = ["--dtypes", "float64", "--only", "layer_norm", "--quiet"]
    first = _run([*args, "--jobs", "2"], tmp_path)
    assert first.returncode == 0, first.stderr
    assert "layer_norm" not in first.stderr  # no failed case
    second = _run(args, tmp_path)
    assert second.returncode == 0, second.stderr
    # every kernel the cases run now loads from the cache
    assert "kernels compiled here: 0," in second.stdout, second.stdout
    loaded = int(second.stdout.rsplit("loaded from the cache: ", 1)[1].split()[0])
    assert loaded > 0


def test_every_case_is_listed_once_per_dtype():
    names32 = [n for n, _ in _warmup.cases("float32")]
    names64 = [n for n, _ in _warmup.cases("float64")]
    assert len(names32) == len(set(names32)) == len(names64) > 100
    for op in ("batch_norm", "instance_norm", "layer_norm", "group_norm", "rms_norm"):
        assert any(op in n for n in names32), op
    for op in (
        "standardize",
        "minmax_scale",
        "lp_normalize",
        "RunningStats",
        "StandardScaler",
        "MinMaxScaler",
    ):
        assert any(op in n for n in names32), op


@pytest.mark.parametrize("bad", [["--dtypes", "float8"], ["--jobs", "0"], ["--bogus"]])
def test_usage_errors_exit_2(bad, capsys):
    assert _warmup.main(bad) == 2
