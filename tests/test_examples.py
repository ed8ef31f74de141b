"""Every program in examples/ runs to its end with its smallest settings (issue 20).

The examples run in a subprocess, one after the other, each as ``python
examples/NAME.py ARGS`` would run it (``runpy.run_path`` as ``__main__``,
with its own ``sys.argv``; its exit status is its ``SystemExit``), with this
process's environment passed through (``NUMBA_CACHE_DIR``;
``NUMBA_ENABLE_CUDASIM``, which tests/conftest.py sets without a GPU: the GPU
example must then say that there is no GPU and exit 0, not run in the
simulator), this checkout first on ``PYTHONPATH`` and ``-W error``.  One
interpreter for all of them (test-suite time): Python, numba, numbanorm and
PyTorch start once instead of six times (~1.2 s of CPU per interpreter with
numbanorm, ~1.7 s more with PyTorch, on a busy 2-core machine).  They run
in a temporary directory and write only there (``--out``).  The examples
check their own numbers (against float64 NumPy, PyTorch, ...) and exit 1
when they are off; here each one's exit status and the lines that show it
got to its point are checked.  Shapes are tiny and float32 only, so that
the kernels they load are few.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
TIMEOUT = 600  # seconds for all of them; a cold kernel cache on a busy 2-core machine included

# Runs the examples given as JSON [[name, path, args], ...] (argv[1]) one after
# the other and writes [{name, status, stdout, stderr, seconds}, ...] to argv[2].
_DRIVER = r"""
import contextlib, io, json, runpy, sys, time, traceback
spec, result_file = sys.argv[1:3]
results = []
for name, path, args in json.loads(spec):
    out, err = io.StringIO(), io.StringIO()
    sys.argv = [path, *args]
    t = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_path(path, run_name="__main__")  # as `python path args`
            status = 0
        except SystemExit as e:
            status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            traceback.print_exc()
            status = "uncaught exception"
    results.append({"name": name, "status": status, "stdout": out.getvalue(),
                    "stderr": err.getvalue(), "seconds": round(time.perf_counter() - t, 2)})
with open(result_file, "w") as f:
    json.dump(results, f)
"""

NUM = r"[0-9.]+e[-+][0-9]+"  # a printed error, e.g. 4.77e-07


def _has(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


def _simulator() -> bool:
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def _runs(out: Path) -> dict[str, tuple[list[str], list[str]]]:
    """Per example: its arguments and the regular expressions its output must match."""
    runs = {
        "numpy_inference": (
            ["--batch", "2", "--out", str(out)],
            [r"^NumPy \+ numbanorm: logits \(2, 10\) float32"]
            + (
                [rf"^max \|numbanorm - PyTorch\| = {NUM}"]
                if _has("torch")
                else [r"^PyTorch is not installed: comparison skipped"]
            ),
        ),
        "out_of_core": (
            ["--rows", "3000", "--cols", "4", "--chunk-rows", "1000", "--out", str(out)],
            [
                r"^\$ numbanorm standardize .*big\.npy -o .*big_z_cli\.npy",
                rf"^max \|python - float64 NumPy\| = {NUM}",
                rf"^max \|command line - float64 NumPy\| = {NUM}",
            ],
        ),
        "sklearn_pipeline": (
            ["--samples", "150", "--cv", "2", "--images", "8"],
            [
                r"^best: scale=(StandardScaler|MinMaxScaler)\(",
                rf"^max \|StandardScaler\(axis=\(0, 2, 3\)\) - float64 NumPy\| = {NUM}",
            ]
            if _has("sklearn")
            else [r"^scikit-learn is not installed"],
        ),
        "dask_zarr": (
            # a LocalCluster of 2 worker processes, 1 thread each
            ["--workers", "2", "--threads", "1", "--rows", "3000", "--cols", "4", "--chunk-rows", "1000"]
            + ["--out", str(out)],
            [
                r"^dashboard: http://\S+:\d+/status",
                r"^cluster: tcp://\S+, 2 workers",
                rf"^max \|numbanorm on Dask - float64 NumPy\| = {NUM}",
            ]
            if _has("dask", "distributed", "zarr")
            else [r"is not installed \(pip install 'numbanorm\[dask\]'\)"],
        ),
        "gpu": (
            ["--rows", "64", "--dim", "32"],
            # the simulator is not a GPU: no pretending
            [r"^no GPU: NUMBA_ENABLE_CUDASIM=1 .*; nothing to run\.$"]
            if _simulator()
            else [r"^(no GPU: .*|  standardize .*: max \|GPU - NumPy\| .*)$"],
        ),
        "accuracy_plot": (
            ["--rows", "16", "--dim", "64", "--out", str(out / "fig")],
            [r"^ 1e\+06 +[0-9.]+e-0[5-9]"]  # numbanorm's column at the largest offset
            + (
                [r"^figure: .*accuracy\.png$"]
                if _has("matplotlib")
                else [r"^matplotlib is not installed: PNG skipped"]
            ),
        ),
    }
    assert set(runs) == {p.stem for p in EXAMPLES.glob("*.py")}, "every example must be run here"
    return runs


def test_examples_run(tmp_path):
    runs = _runs(tmp_path / "out")
    (tmp_path / "out").mkdir()
    spec = json.dumps([[name, str(EXAMPLES / f"{name}.py"), args] for name, (args, _) in runs.items()])
    result_file = tmp_path / "results.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-W", "error", "-c", _DRIVER, spec, str(result_file)]
    try:
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr or ""
        pytest.fail(f"the examples ran past {TIMEOUT} s; stderr:\n{err[-3000:]}")
    if proc.returncode != 0 or not result_file.exists():
        pytest.fail(f"the example runner exited with {proc.returncode}; stderr:\n{proc.stderr[-3000:]}")

    failures = []
    for r in json.loads(result_file.read_text()):
        args, patterns = runs[r["name"]]
        what = f"examples/{r['name']}.py {' '.join(args)}"
        missing = [p for p in patterns if not re.search(p, r["stdout"], re.MULTILINE)]
        if r["status"] != 0 or missing:
            why = f"exit status {r['status']}" if r["status"] != 0 else f"no line matching {missing}"
            failures.append(
                f"{what}: {why} ({r['seconds']} s)\n--- stdout ---\n{r['stdout'][-3000:]}"
                f"\n--- stderr ---\n{r['stderr'][-3000:]}"
            )
    assert not failures, "\n\n".join(failures) + f"\n--- runner stderr ---\n{proc.stderr[-2000:]}"
    # written where they were told to, nowhere else
    assert (tmp_path / "out" / "tiny_net.npz").is_file()
    if _has("matplotlib"):
        assert (tmp_path / "out" / "fig" / "accuracy.png").stat().st_size > 1000


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
