"""Every CUDA kernel type-checks and compiles to PTX for sm_90, without a GPU.

The CUDA simulator (which the rest of the CUDA tests use when there is no GPU)
does no type checking, so a kernel can pass every simulator test and still fail
to compile on hardware.  This module compiles each signature that
``numbanorm.backends._cuda_kernels.launch_signatures()`` lists with NVVM
(``numba.cuda.compile_ptx(kernel.py_func, sig, cc=(9, 0))``), in a subprocess:
this test session has NUMBA_ENABLE_CUDASIM=1 set before numba was imported
(tests/conftest.py), and the simulator cannot compile.  One subprocess compiles
everything once per session (about 0.2-1 s per signature) and returns JSON; one
test per kernel reports its signatures' errors.

When a ptxas is found that accepts the PTX version NVVM writes (the
``nvidia-cuda-nvcc`` wheel of the same CUDA release as ``nvidia-nvvm`` puts one
in site-packages/nvidia/cu13/bin; it is not a test dependency, ~50 MB), each
PTX is also assembled with ``ptxas -arch=sm_90 -v`` and any register spill
fails; registers per kernel are printed (``pytest -s``) and given in the
failure message.

Skips only when NVVM itself cannot be loaded (numba-cuda installed without its
``[cu12]``/``[cu13]`` extras) or when numba-cuda is absent; a compile error is
always a failure.  The file also runs as the subprocess itself:
``python tests/test_cuda_ptx.py OUTDIR`` prints the JSON.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

CC = (9, 0)
ARCH = f"sm_{CC[0]}{CC[1]}"
ROOT = Path(__file__).resolve().parent.parent
KERNELS_MODULE = "numbanorm.backends._cuda_kernels"
SUBPROCESS_TIMEOUT_S = 300
# exception class names (anywhere in the cause/context chain, anywhere in the
# class's MRO) that mean "the NVVM/NVRTC/libdevice library is not there", as
# opposed to a kernel that does not compile: cuda.pathfinder's
# DynamicLibNotFoundError (numba-cuda >= 0.2x on cuda.bindings) and numba-cuda's
# NvvmSupportError (cuda.bindings.nvvm not importable; older ctypes loaders)
_MISSING_LIBRARY_ERRORS = {"DynamicLibNotFoundError", "NvvmSupportError"}


# --------------------------------------------------------------------------
# the subprocess (python tests/test_cuda_ptx.py OUTDIR)
# --------------------------------------------------------------------------


def _error_chain(exc):
    seen = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def _missing_library(exc) -> bool:
    for e in _error_chain(exc):
        if {c.__name__ for c in type(e).__mro__} & _MISSING_LIBRARY_ERRORS:
            return True
    return False


def _describe(exc, limit=2000) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", f"{type(exc).__name__}: {exc}")  # no terminal colours
    return text if len(text) <= limit else text[:limit] + " [...]"


def _compile_all(outdir: str) -> dict:
    """Compile every launch signature to PTX under ``outdir``; the result
    (JSON-able) says per kernel and signature ok/error and the PTX file."""
    os.environ["NUMBA_ENABLE_CUDASIM"] = "0"
    os.environ["NUMBA_DISABLE_ERROR_MESSAGE_HIGHLIGHTING"] = "1"
    # the PTX test needs no GPU; on a machine with one it must not care either
    os.environ.setdefault("NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS", "0")
    import numba
    from numba import cuda
    from numba.core import config

    if config.ENABLE_CUDASIM:  # numba was imported before we could set it
        return {"status": "error", "reason": "the CUDA simulator is on in the subprocess"}
    import numba.cuda.dispatcher as dispatcher

    class _Device:  # numba-cuda asks the current device when compiling device functions
        compute_capability = CC
        name = b"stub sm_90 (no driver)"

    dispatcher.get_current_device = lambda: _Device()

    info = {"numba": numba.__version__}
    try:
        import numba_cuda

        info["numba_cuda"] = getattr(numba_cuda, "__version__", "?")
    except ImportError:
        info["numba_cuda"] = None

    # NVVM present?  A trivial kernel compiles, or the library cannot be loaded
    def _probe(a):
        i = cuda.grid(1)
        if i < a.size:
            a[i] = 0.0

    try:
        cuda.compile_ptx(_probe, (numba.types.float32[::1],), cc=CC)
    except Exception as exc:  # classified below
        if _missing_library(exc):
            return {"status": "nvvm_unavailable", "reason": _describe(exc, 500), **info}
        return {"status": "error", "reason": "a trivial probe kernel failed: " + _describe(exc), **info}

    mod = importlib.import_module(KERNELS_MODULE)
    sigs = mod.launch_signatures()
    # every kernel (not device function) defined in the module is listed
    unlisted = sorted(
        name
        for name, obj in vars(mod).items()
        if isinstance(obj, dispatcher.CUDADispatcher)
        and not obj.targetoptions.get("device", False)
        and getattr(obj.py_func, "__module__", None) == mod.__name__
        and name not in sigs
    )
    kernels = {}
    for name, sig_list in sigs.items():
        rows = kernels.setdefault(name, [])
        kern = getattr(mod, name, None)
        for j, sig in enumerate(sig_list):
            row = {"sig": ", ".join(str(a) for a in sig)}
            t0 = time.perf_counter()
            try:
                if kern is None:
                    raise AttributeError(f"{KERNELS_MODULE} has no attribute {name!r}")
                lb = kern.targetoptions.get("launch_bounds")  # as the kernel is compiled
                ptx, resty = cuda.compile_ptx(kern.py_func, sig, cc=CC, launch_bounds=lb)
                path = os.path.join(outdir, f"{name}-{j}.ptx")
                with open(path, "w") as f:
                    f.write(ptx)
                row.update(ok=True, ptx=path, resty=str(resty))
            except Exception as exc:  # reported per signature
                if _missing_library(exc):  # e.g. libdevice gone but NVVM there
                    return {"status": "nvvm_unavailable", "reason": _describe(exc, 500), **info}
                row.update(ok=False, error=_describe(exc))
            row["seconds"] = round(time.perf_counter() - t0, 3)
            rows.append(row)
    return {"status": "ok", "kernels": kernels, "unlisted": unlisted, **info}


# --------------------------------------------------------------------------
# the tests
# --------------------------------------------------------------------------


def _kernel_names() -> list[str]:
    """Kernel names for parametrizing, read in this (simulator) session: the
    signatures are plain numba types, no compilation happens here."""
    if importlib.util.find_spec("numba_cuda") is None:
        return []
    return sorted(importlib.import_module(KERNELS_MODULE).launch_signatures())


KERNEL_NAMES = _kernel_names()
pytestmark = pytest.mark.skipif(
    not KERNEL_NAMES, reason="numba-cuda is not installed (pip install 'numba-cuda[cu13]')"
)


def _compile_in_subprocess(outdir: Path) -> dict:
    """Run this file as the compile subprocess; its JSON, or status "error"."""
    env = dict(os.environ)
    env["NUMBA_ENABLE_CUDASIM"] = "0"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, __file__, str(outdir)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        return {"status": "error", "reason": f"ran past {SUBPROCESS_TIMEOUT_S} s", "stderr": str(exc.stderr)}
    last = proc.stdout.strip().splitlines()[-1:]
    try:
        res = json.loads(last[0])
    except (IndexError, ValueError):
        res = {
            "status": "error",
            "reason": f"exited {proc.returncode} without a JSON result; stdout: {proc.stdout[-2000:]}",
        }
    res["elapsed"] = round(time.perf_counter() - t0, 2)
    res["stderr"] = proc.stderr[-4000:]
    return res


def _compile_once(tmp_path_factory) -> dict:
    """Once per test run: under pytest-xdist the workers share one result
    (a file under the run's common temporary directory, behind a lock)."""
    uid = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    try:
        import fcntl
    except ImportError:  # not POSIX: each worker compiles for itself
        fcntl = None
    if not (os.environ.get("PYTEST_XDIST_WORKER") and uid and fcntl):
        return _compile_in_subprocess(tmp_path_factory.mktemp("ptx"))
    shared = tmp_path_factory.getbasetemp().parent / f"ptx-{uid}"
    shared.mkdir(exist_ok=True)
    with open(shared / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cache = shared / "result.json"
        if cache.exists():
            return json.loads(cache.read_text())
        res = _compile_in_subprocess(shared)
        cache.write_text(json.dumps(res))
        return res


@pytest.fixture(scope="module")
def ptx_results(tmp_path_factory):
    res = _compile_once(tmp_path_factory)
    if res["status"] == "nvvm_unavailable":
        pytest.skip(
            "NVVM cannot be loaded (numba-cuda without its [cu12]/[cu13] extras; "
            f"pip install 'numba-cuda[cu13]'): {res['reason']}"
        )
    if res["status"] != "ok":
        pytest.fail(f"PTX compile subprocess: {res.get('reason')}\nstderr: {res.get('stderr')}")
    return res


@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_kernel_compiles_to_ptx(ptx_results, name):
    rows = ptx_results["kernels"].get(name)
    assert rows, f"{name}: no signatures compiled (launch_signatures() lists none)"
    problems = []
    for row in rows:
        if not row["ok"]:
            problems.append(f"{name}({row['sig']}):\n    {row['error']}")
            continue
        ptx = Path(row["ptx"]).read_text()
        if not ptx.strip():
            problems.append(f"{name}({row['sig']}): empty PTX")
            continue
        targets = re.findall(r"^\s*\.target\s+(\S+)", ptx, re.M)
        if not targets or targets[0].rstrip(",") != ARCH:
            problems.append(f"{name}({row['sig']}): PTX .target {targets} is not {ARCH}")
        if not re.search(r"^\s*\.(visible\s+)?\.entry\s", ptx, re.M):
            problems.append(f"{name}({row['sig']}): PTX has no .entry (not compiled as a kernel)")
        if row.get("resty") not in (None, "none"):
            problems.append(f"{name}({row['sig']}): kernel returns {row['resty']}, not none")
    assert not problems, (
        f"{len(problems)} of {len(rows)} signatures of {name} fail to compile for {ARCH}:\n"
        + "\n".join(problems)
    )


def test_every_kernel_has_launch_signatures(ptx_results):
    """A ``@cuda.jit`` kernel defined in the kernels module but missing from
    launch_signatures() would escape the compile test."""
    assert not ptx_results["unlisted"], (
        f"kernels without launch signatures in {KERNELS_MODULE}.launch_signatures(): "
        f"{ptx_results['unlisted']}"
    )


# --------------------------------------------------------------------------
# ptxas: registers and spills
# --------------------------------------------------------------------------


def _ptxas_candidates() -> list[str]:
    found = []
    nvidia = importlib.util.find_spec("nvidia")
    for base in list(nvidia.submodule_search_locations or []) if nvidia else []:
        for sub in ("cu13/bin", "cu12/bin", "cuda_nvcc/bin"):
            p = os.path.join(base, sub, "ptxas")
            if os.access(p, os.X_OK):
                found.append(p)
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            p = os.path.join(os.environ[var], "bin", "ptxas")
            if os.access(p, os.X_OK):
                found.append(p)
    p = shutil.which("ptxas")
    if p:
        found.append(p)
    return list(dict.fromkeys(os.path.realpath(p) for p in found))


# a PTX ISA version newer than this ptxas knows, or an sm_90 it does not know
_PTXAS_REFUSES = re.compile(r"Unsupported \.version|Unsupported \.target|'sm_90' is not defined")


@pytest.fixture(scope="module")
def ptxas(ptx_results, tmp_path_factory):
    """A ptxas that accepts the PTX version this NVVM writes (an older CUDA's
    ptxas refuses it: "Unsupported .version 9.5"), or skip."""
    sample = next((row["ptx"] for rows in ptx_results["kernels"].values() for row in rows if row["ok"]), None)
    if sample is None:
        pytest.skip("no kernel compiled to PTX")
    cubin = tmp_path_factory.mktemp("cubin") / "probe.cubin"
    refused = []
    for exe in _ptxas_candidates():
        try:
            proc = subprocess.run(
                [exe, f"-arch={ARCH}", sample, "-o", str(cubin)], capture_output=True, text=True, timeout=120
            )
        except OSError as exc:
            refused.append(f"{exe}: {exc}")
            continue
        text = (proc.stderr or proc.stdout).strip()
        # only a PTX ISA too new for this ptxas (or sm_90 unknown to it) means
        # "not this one"; any other error is the kernel's, for the tests to report
        if proc.returncode == 0 or not _PTXAS_REFUSES.search(text):
            return exe
        refused.append(f"{exe}: {text[:200]}")
    pytest.skip(
        "no ptxas that accepts this PTX (pip install nvidia-cuda-nvcc of the nvidia-nvvm release)"
        + ("; refused: " + "; ".join(refused) if refused else "")
    )


_SPILL = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_REGS = re.compile(r"Used (\d+) registers")


def _ptxas_report(text: str) -> list[dict]:
    """Per function in ``ptxas -v`` output: registers, stack, spills."""
    out, cur = [], None
    for line in text.splitlines():
        m = re.search(r"Compiling entry function '([^']+)'", line) or re.search(
            r"Function properties for (\S+)", line
        )
        if m:
            if cur is None or cur["fn"] != m.group(1):
                cur = {"fn": m.group(1), "regs": None, "stack": 0, "spill_st": 0, "spill_ld": 0}
                out.append(cur)
            continue
        if cur is None:
            continue
        m = _SPILL.search(line)
        if m:
            cur["stack"], cur["spill_st"], cur["spill_ld"] = map(int, m.groups())
        m = _REGS.search(line)
        if m:
            cur["regs"] = int(m.group(1))
    return out


@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_kernel_assembles_without_spills(ptx_results, ptxas, name, tmp_path):
    rows = [r for r in ptx_results["kernels"].get(name, []) if r["ok"]]
    if not rows:
        pytest.skip(f"{name}: no signature compiled to PTX (see test_kernel_compiles_to_ptx)")
    problems, lines = [], []
    for j, row in enumerate(rows):
        proc = subprocess.run(
            [ptxas, f"-arch={ARCH}", "-v", row["ptx"], "-o", str(tmp_path / f"{j}.cubin")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        text = proc.stdout + proc.stderr
        if proc.returncode != 0:
            problems.append(f"{name}({row['sig']}): ptxas exit {proc.returncode}:\n{text[-2000:]}")
            continue
        report = _ptxas_report(text)
        entry = [f for f in report if f["regs"] is not None] or report
        summary = ", ".join(
            f"{f['regs']} regs, {f['stack']} B stack, spill {f['spill_st']}/{f['spill_ld']} B st/ld"
            for f in entry
        )
        dtype = row["sig"].split(",")[0]
        lines.append(f"{name}[{dtype}]: {summary}")
        if not report:
            problems.append(f"{name}({row['sig']}): no function properties in ptxas -v output:\n{text}")
        spilled = [f for f in report if f["spill_st"] or f["spill_ld"]]
        if spilled:
            problems.append(
                f"{name}({row['sig']}): register spills: "
                + "; ".join(f"{f['fn']}: {f['spill_st']} B stores, {f['spill_ld']} B loads" for f in spilled)
            )
    print("\n".join(lines))
    assert not problems, "\n".join(problems) + "\nptxas (" + ptxas + "):\n" + "\n".join(lines)


if __name__ == "__main__":
    print(json.dumps(_compile_all(sys.argv[1])))


_CACHE_PROBE = """
import json, os
os.environ["NUMBA_ENABLE_CUDASIM"] = "0"
from numbanorm.backends import _cuda_kernels as k
from numbanorm._cache import package_stamp
out = {}
for name in k.launch_signatures():
    c = getattr(getattr(k, name), "_cache", None)
    loc = getattr(getattr(c, "_impl", None), "locator", None)
    out[name] = [type(c).__name__, loc is not None and loc.get_source_stamp() == package_stamp()]
print(json.dumps(out))
"""


def test_kernels_are_cached_on_disk_under_the_package_stamp():
    """Every launched kernel has numba-cuda's disk cache, keyed on the whole
    package's source (a second process loads instead of compiling; a
    changed device function in _stats.py recompiles).  Importing the kernel
    module needs no GPU."""
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0"}
    proc = subprocess.run(
        [sys.executable, "-c", _CACHE_PROBE], capture_output=True, text=True, env=env, timeout=120
    )
    if proc.returncode != 0 and "CudaSupportError" in proc.stderr:
        pytest.skip("numba-cuda cannot be imported with the simulator off here")
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got and all(v == ["_PackageCUDACache", True] for v in got.values()), got
