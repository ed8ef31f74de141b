"""The numbanorm command line: results, exit codes, one-line errors, no partial output."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import numbanorm as nbn
from numbanorm import cli


def run(argv, capsys):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _leftovers(d):
    return sorted(p for p in os.listdir(d) if p.endswith(".tmp"))


@pytest.fixture
def data(tmp_path, rng):
    x = (1e3 + rng.normal(size=(301, 5))).astype(np.float32)
    x[7, 2] = np.nan
    p = tmp_path / "x.npy"
    np.save(p, x)
    return p, x


def test_stats_json_and_text(data, capsys):
    p, x = data
    rc, out, err = run(["stats", p, "--json", "--chunk-size", "1KB"], capsys)
    assert rc == 0 and err == ""
    doc = json.loads(out)
    x64 = x.astype(np.float64)
    assert doc["count"] == [301, 301, 300, 301, 301] and doc["nan_count"] == [0, 0, 1, 0, 0]
    np.testing.assert_allclose(doc["mean"], np.nanmean(x64, axis=0), rtol=1e-12)
    np.testing.assert_allclose(doc["std"], np.nanstd(x64, axis=0), rtol=1e-12)
    np.testing.assert_array_equal(doc["min"], np.nanmin(x64, axis=0))
    rc, out, _ = run(["stats", p], capsys)
    assert rc == 0 and len(out.splitlines()) == 2 + 5 and "nan" in out.splitlines()[1]


@pytest.mark.parametrize("chunk", ["1KB", "4KiB", "256MB"])
def test_standardize_equals_library(data, tmp_path, capsys, chunk):
    p, x = data
    o = tmp_path / "z.npy"
    rc, out, err = run(["standardize", p, "-o", o, "--chunk-size", chunk], capsys)
    assert (rc, out, err) == (0, "", "")
    z = np.load(o)
    assert z.dtype == np.float32 and z.shape == x.shape
    np.testing.assert_allclose(z, nbn.standardize(x), rtol=1e-6, atol=1e-6)
    assert _leftovers(tmp_path) == []


def test_minmax_range_clip_and_kept_axis0(tmp_path, rng, capsys):
    x = rng.normal(size=(50, 4, 3))
    p, o = tmp_path / "x.npy", tmp_path / "m.npy"
    np.save(p, x)
    rc, *_ = run(
        ["minmax", p, "-o", o, "--range", "-2", "3", "--clip", "--axis", "0", "2", "--chunk-size", "100B"],
        capsys,
    )
    assert rc == 0
    np.testing.assert_allclose(np.load(o), nbn.minmax_scale(x, (-2, 3), axis=(0, 2), clip=True), rtol=1e-12)
    # axis 0 kept: each chunk holds whole groups (per-row statistics)
    rc, *_ = run(["standardize", p, "-o", o, "--axis", "1,2", "--chunk-size", "200B"], capsys)
    assert rc == 0
    np.testing.assert_allclose(np.load(o), nbn.standardize(x, axis=(1, 2)), rtol=1e-10, atol=1e-12)
    rc, out, _ = run(["stats", p, "--axis", "1", "2", "--json", "--chunk-size", "200B"], capsys)
    np.testing.assert_allclose(json.loads(out)["mean"], x.mean(axis=(1, 2)), rtol=1e-12)


def test_fortran_and_integer_big_endian(tmp_path, rng, capsys):
    xf = np.asfortranarray(rng.normal(size=(30, 7, 2)))
    np.save(tmp_path / "f.npy", xf)
    rc, *_ = run(
        ["standardize", tmp_path / "f.npy", "-o", tmp_path / "fo.npy", "--axis", "0", "--chunk-size", "64B"],
        capsys,
    )
    assert rc == 0
    fo = np.load(tmp_path / "fo.npy")
    assert fo.flags.f_contiguous
    np.testing.assert_allclose(fo, nbn.standardize(xf, axis=0), rtol=1e-10, atol=1e-12)
    xi = rng.integers(-50, 50, size=(40, 3)).astype(">i4")
    np.save(tmp_path / "i.npy", xi)
    rc, *_ = run(["minmax", tmp_path / "i.npy", "-o", tmp_path / "io.npy", "--chunk-size", "50B"], capsys)
    io = np.load(tmp_path / "io.npy")
    assert rc == 0 and io.dtype == np.float64
    np.testing.assert_allclose(io, nbn.minmax_scale(xi.astype(np.float64)), rtol=1e-12)


def test_errors_exit_codes_one_line(tmp_path, data, capsys):
    p, _ = data
    (tmp_path / "bad.npy").write_text("hello")
    np.save(tmp_path / "c.npy", np.ones(3, complex))
    np.save(tmp_path / "obj.npy", np.array([1, "a"], dtype=object), allow_pickle=True)
    cases = [
        (["stats", tmp_path / "missing.npy"], 2, "no such file"),
        (["stats", p, "--axis", "2"], 2, "out of range"),
        (["stats", p, "--chunk-size", "12XB"], 2, "invalid size"),
        (["standardize", p], 2, "required"),
        (["frobnicate"], 2, "invalid choice"),
        (["minmax", p, "-o", tmp_path / "m.npy", "--range", "1", "0"], 2, "LO must be smaller"),
        (["standardize", p, "-o", tmp_path / "nodir" / "z.npy"], 2, "does not exist"),
        (["stats", tmp_path / "bad.npy"], 1, "not an .npy file"),
        (["stats", tmp_path / "c.npy"], 1, "unsupported dtype complex128"),
        (["stats", tmp_path / "obj.npy"], 1, "object arrays"),
    ]
    for argv, status, text in cases:
        rc, out, err = run(argv, capsys)
        assert rc == status, (argv, err)
        assert text in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "m.npy").exists() and _leftovers(tmp_path) == []


def test_failure_midway_leaves_nothing(data, tmp_path, capsys, monkeypatch):
    p, _ = data
    o = tmp_path / "z.npy"
    import numbanorm._reduce as R

    calls = []

    def boom(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise MemoryError
        return real(*a, **k)

    real = R.apply_affine
    monkeypatch.setattr(R, "apply_affine", boom)
    rc, _, err = run(["standardize", p, "-o", o, "--chunk-size", "1KB"], capsys)
    assert rc == 1 and "out of memory" in err
    assert not o.exists() and _leftovers(tmp_path) == []


def test_disk_full_and_not_writable(data, tmp_path, capsys, monkeypatch):
    p, _ = data

    def full(fd, off, n):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full, raising=False)
    rc, _, err = run(["standardize", p, "-o", tmp_path / "z.npy"], capsys)
    assert rc == 1 and "no space left on device" in err and err.count("\n") == 1
    assert os.listdir(tmp_path) == ["x.npy"]
    monkeypatch.undo()

    real_open = os.open

    def denied(path, flags, *a, **k):  # (root may write anywhere: deny the output's creation)
        if flags & os.O_EXCL:
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(os, "open", denied)
    rc, _, err = run(["standardize", p, "-o", tmp_path / "z.npy"], capsys)
    monkeypatch.undo()
    assert rc == 1 and "not writable" in err
    assert os.listdir(tmp_path) == ["x.npy"]


def test_empty_and_help(tmp_path, capsys):
    np.save(tmp_path / "e.npy", np.zeros((0, 3), np.float32))
    rc, *_ = run(["standardize", tmp_path / "e.npy", "-o", tmp_path / "eo.npy"], capsys)
    assert rc == 0 and np.load(tmp_path / "eo.npy").shape == (0, 3)
    rc, out, _ = run(["--help"], capsys)
    assert rc == 0 and "standardize" in out


def _env():
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(cli.__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env


_HWM = (
    "import sys\n"
    "from numbanorm.cli import main\n"
    "rc = main(sys.argv[1:])\n"
    "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
    "print(int(hwm) * 1024, file=sys.stderr)\n"
    "sys.exit(rc)\n"
)


def _child(argv):
    """Run the CLI in a child; returns (status, peak RSS bytes, stderr).

    The peak is the child's own VmHWM: getrusage's ru_maxrss of a child also
    counts the parent's pages it had between fork and exec, so it would
    measure pytest, not the CLI.
    """
    proc = subprocess.run(
        [sys.executable, "-c", _HWM, *map(str, argv)], capture_output=True, text=True, env=_env()
    )
    *msg, peak = proc.stderr.strip().splitlines()
    return proc.returncode, int(peak), "\n".join(msg)


@pytest.mark.slow
def test_memory_bounded_by_chunk(tmp_path):
    # 192 MB file, 8 MB chunks: the child's peak RSS must grow by a few chunks
    # over a run on a tiny file, not by the file size.
    n = 192 * 2**20 // (256 * 4)
    x = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.float32, shape=(n, 256))
    for i in range(0, n, 16384):
        x[i : i + 16384] = np.float32(i % 7)
    x.flush()
    del x
    np.save(tmp_path / "tiny.npy", np.ones((16, 256), np.float32))
    rc0, base, err0 = _child(["standardize", tmp_path / "tiny.npy", "-o", tmp_path / "t.npy", "-q"])
    rc, peak, err = _child(
        ["standardize", tmp_path / "big.npy", "-o", tmp_path / "o.npy", "-q", "--chunk-size", "8MB"]
    )
    assert rc0 == 0 and rc == 0, err0 + err
    print(f"peak RSS {peak / 2**20:.0f} MiB, baseline {base / 2**20:.0f} MiB")
    assert peak - base < 80 * 2**20, (peak, base)
    assert os.path.getsize(tmp_path / "o.npy") == os.path.getsize(tmp_path / "big.npy")


@pytest.mark.slow
def test_sigint_leaves_no_output(tmp_path):
    n = 64 * 2**20 // (64 * 8)
    x = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float64, shape=(n, 64))
    x[:] = 1.0
    del x
    out = tmp_path / "o.npy"
    proc = subprocess.Popen(
        [sys.executable, "-m", "numbanorm", "standardize", str(tmp_path / "x.npy"), "-o", str(out), "-q",
         "--chunk-size", "16KB"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=_env(),
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not _leftovers(tmp_path) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)  # the temporary output appears after the statistics pass
    proc.send_signal(signal.SIGINT)
    with proc.stderr:
        err = proc.stderr.read().decode()
    assert proc.wait() == 1, err
    assert err.strip() == "numbanorm: interrupted"
    assert not out.exists() and _leftovers(tmp_path) == []


# --------------------------------------------------------------------------
# Zarr stores (numbanorm's Dask backend)
# --------------------------------------------------------------------------


@pytest.fixture
def zstore(data, tmp_path):
    pytest.importorskip("zarr")
    da = pytest.importorskip("dask.array")
    _, x = data
    path = tmp_path / "x.zarr"
    da.to_zarr(da.from_array(x, chunks=(37, 2)), str(path))
    return path, x


def test_zarr_stats_and_transforms(zstore, data, tmp_path, capsys):
    z, x = zstore
    p, _ = data
    rc, out, err = run(["stats", z, "--json"], capsys)
    assert rc == 0 and err == ""
    rc2, out2, _ = run(["stats", p, "--json"], capsys)
    doc, ref = json.loads(out), json.loads(out2)
    for k in ("count", "nan_count", "min", "max", "shape", "features_shape"):
        assert doc[k] == ref[k], k
    np.testing.assert_allclose(doc["mean"], ref["mean"], rtol=1e-14)
    np.testing.assert_allclose(doc["std"], ref["std"], rtol=1e-12)
    import dask.array as da

    o = tmp_path / "z.zarr"
    for argv, expect in [
        (["standardize", z, "-o", o], nbn.standardize(x)),
        (["minmax", z, "-o", o, "--range", "-1", "1", "--clip"], nbn.minmax_scale(x, (-1, 1), clip=True)),
        (["standardize", z, "-o", o, "--axis", "1"], nbn.standardize(x, axis=1)),
    ]:
        rc, out, err = run(argv, capsys)  # (the second and third replace the first's store)
        assert (rc, out, err) == (0, "", "")
        got = da.from_zarr(str(o)).compute()
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, expect, rtol=1e-6, atol=1e-6)
    assert [p for p in os.listdir(tmp_path) if p.endswith((".tmp", ".old"))] == []


def test_zarr_errors_and_atomicity(zstore, data, tmp_path, capsys, monkeypatch):
    z, _ = zstore
    p, _ = data
    o = tmp_path / "out.zarr"
    cases = [
        (["stats", z, "--axis", "3"], 2, "out of range"),
        (["standardize", z, "-o", tmp_path / "nodir" / "o.zarr"], 2, "does not exist"),
        (["standardize", z, "-o", p], 2, "not a Zarr store"),
        (["stats", p, "--scheduler", "tcp://127.0.0.1:1"], 2, "--scheduler takes a Zarr input"),
        (["standardize", z, "-o", o, "--scheduler", "tcp://127.0.0.1:1"], 1, "cannot connect"),
    ]
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        for argv, status, text in cases:
            rc, out, err = run(argv, capsys)
            assert rc == status, (argv, err)
            assert text in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not o.exists()
    # a failure while writing leaves neither a partial OUT nor a temporary store
    import numbanorm.backends.dask as dbe

    def boom(*a, **k):
        raise MemoryError

    monkeypatch.setattr(dbe, "apply_block", boom)
    rc, _, err = run(["standardize", z, "-o", o], capsys)
    assert rc == 1 and "out of memory" in err
    assert not o.exists() and [p for p in os.listdir(tmp_path) if p.endswith(".tmp")] == []
