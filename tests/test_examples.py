"""Every program in examples/ runs to its end with its smallest settings (issue 20).

Each example runs in a subprocess as a user runs it (``python
examples/NAME.py ARGS``), with this process's environment passed through
(``NUMBA_CACHE_DIR``; ``NUMBA_ENABLE_CUDASIM``, which tests/conftest.py sets
without a GPU: the GPU example must then say that there is no GPU and exit
0, not run in the simulator) and this checkout first on ``PYTHONPATH``.  It
runs in a temporary directory and writes only there (``--out``).  The
examples check their own numbers (against float64 NumPy, PyTorch, ...) and
exit 1 when they are off; here the exit status and the lines that show each
got to its point are checked.  Shapes are tiny and float32 only, so that the
kernels they load are few (test-suite time).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
TIMEOUT = 300  # seconds; a cold kernel cache on a busy 2-core machine included


def _has(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


def _simulator() -> bool:
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def _run(name: str, args: list[str], cwd: Path) -> str:
    """Run examples/NAME.py with ARGS in cwd; its stdout, after checking exit status 0."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-W", "error", str(EXAMPLES / f"{name}.py"), *args]
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr or ""
        pytest.fail(f"examples/{name}.py {' '.join(args)} ran past {TIMEOUT} s; stderr:\n{err[-3000:]}")
    if proc.returncode != 0:
        pytest.fail(
            f"examples/{name}.py {' '.join(args)} exited with status {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout[-3000:]}\n--- stderr ---\n{proc.stderr[-3000:]}"
        )
    return proc.stdout


def _expect(out: str, *patterns: str) -> None:
    for pat in patterns:
        assert re.search(pat, out, re.MULTILINE), f"no line matching {pat!r} in the output:\n{out}"


NUM = r"[0-9.]+e[-+][0-9]+"  # a printed error, e.g. 4.77e-07


def test_numpy_inference(tmp_path):
    out = _run("numpy_inference", ["--batch", "2", "--out", str(tmp_path)], tmp_path)
    _expect(out, r"^NumPy \+ numbanorm: logits \(2, 10\) float32")
    assert (tmp_path / "tiny_net.npz").is_file()
    if _has("torch"):
        _expect(out, rf"^max \|numbanorm - PyTorch\| = {NUM}")
    else:
        _expect(out, r"^PyTorch is not installed: comparison skipped")


def test_out_of_core(tmp_path):
    args = ["--rows", "3000", "--cols", "4", "--chunk-rows", "1000", "--out", str(tmp_path)]
    out = _run("out_of_core", args, tmp_path)
    _expect(
        out,
        r"^\$ numbanorm standardize .*big\.npy -o .*big_z_cli\.npy",
        rf"^max \|python - float64 NumPy\| = {NUM}",
        rf"^max \|command line - float64 NumPy\| = {NUM}",
    )


def test_sklearn_pipeline(tmp_path):
    out = _run("sklearn_pipeline", ["--samples", "150", "--cv", "2", "--images", "8"], tmp_path)
    if not _has("sklearn"):
        _expect(out, r"^scikit-learn is not installed")
        return
    _expect(
        out,
        r"^best: scale=(StandardScaler|MinMaxScaler)\(",
        rf"^max \|StandardScaler\(axis=\(0, 2, 3\)\) - float64 NumPy\| = {NUM}",
    )


def test_dask_zarr(tmp_path):
    args = ["--workers", "2", "--threads", "1", "--rows", "3000", "--cols", "4", "--chunk-rows", "1000"]
    out = _run("dask_zarr", [*args, "--out", str(tmp_path)], tmp_path)
    if not _has("dask", "distributed", "zarr"):
        _expect(out, r"is not installed \(pip install 'numbanorm\[dask\]'\)")
        return
    _expect(
        out,
        r"^dashboard: http://\S+:\d+/status",
        r"^cluster: tcp://\S+, 2 workers",
        rf"^max \|numbanorm on Dask - float64 NumPy\| = {NUM}",
    )


def test_gpu(tmp_path):
    out = _run("gpu", ["--rows", "64", "--dim", "32"], tmp_path)
    if _simulator():  # the simulator is not a GPU: no pretending
        _expect(out, r"^no GPU: NUMBA_ENABLE_CUDASIM=1 .*; nothing to run\.$")
    else:
        _expect(out, r"^(no GPU: .*|  standardize .*: max \|GPU - NumPy\| .*)$")


def test_accuracy_plot(tmp_path):
    # --no-torch: importing torch costs ~1.7 s of CPU; test_numpy_inference runs an example's torch path
    args = ["--rows", "16", "--dim", "64", "--no-torch", "--out", str(tmp_path / "fig")]
    out = _run("accuracy_plot", args, tmp_path)
    _expect(out, r"^ 1e\+06 +[0-9.]+e-0[5-9]")  # numbanorm's column at the largest offset
    if _has("matplotlib"):
        _expect(out, r"^figure: .*accuracy\.png$")
        assert (tmp_path / "fig" / "accuracy.png").stat().st_size > 1000
    else:
        _expect(out, r"^matplotlib is not installed: PNG skipped")


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.py")), ids=lambda p: p.stem)
def test_help(path, capsys):
    """``--help`` of each example (in this process: no interpreter start)."""
    spec = importlib.util.spec_from_file_location(f"_example_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with pytest.raises(SystemExit) as exc:
        mod.main(["--help"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("usage: ")


def test_every_example_is_tested():
    tested = {n[len("test_") :] for n in globals() if n.startswith("test_")}
    assert {p.stem for p in EXAMPLES.glob("*.py")} <= tested
