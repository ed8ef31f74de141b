"""The ``numbanorm`` command line: out-of-core statistics and scaling of .npy files.

::

    numbanorm stats IN.npy [--axis 0] [--json]
    numbanorm standardize IN.npy -o OUT.npy [--axis 0] [--chunk-size 256MB] [--quiet]
    numbanorm minmax IN.npy -o OUT.npy [--range 0 1] [--clip] [--axis 0] [--chunk-size 256MB] [--quiet]
    numbanorm demo [...]      # numbanorm._demo.main
    numbanorm bench [...]     # numbanorm._bench.main
    numbanorm warmup [...]    # numbanorm._warmup.main

How a file is processed
-----------------------
The input is memory-mapped and cut into chunks along its first axis (for a
Fortran-ordered file, its last axis: the one whose slices are contiguous on
disk), each at most ``--chunk-size`` bytes (but at least one slice).  Each
chunk is mapped on its own and unmapped after use, so the resident memory is
bounded by a few chunks, not by the file.

``--axis`` names the axes reduced over (like NumPy).  When the chunked axis
is among them, a first pass folds every chunk into a
:class:`numbanorm.RunningStats` (one parallel pass per chunk) and a second
pass writes ``(x - center) * scale + shift`` chunk by chunk: every input byte
is read exactly twice.  When the chunked axis is kept (e.g. ``--axis 1`` on a
2-D file: per-row statistics), every chunk holds whole groups and is
processed on its own (statistics, then output, while it is still cached).

The output goes to a temporary file in the target directory, created with
``numpy.lib.format.open_memmap`` and preallocated (so a full disk is an error
up front, not a crash later), flushed and renamed over ``OUT.npy`` at the end.
A failure, Ctrl-C or SIGTERM removes the temporary file; ``OUT.npy`` is never
partial.

Zarr stores
-----------
``IN`` may also be a Zarr array store (a directory with ``zarr.json`` or
``.zarray``; needs ``pip install "numbanorm[dask]"``).  It is read with
``dask.array.from_zarr`` in its own chunks and processed by numbanorm's Dask
backend: on local threads by default, or on a running ``dask.distributed``
cluster with ``--scheduler ADDRESS``.  ``stats`` computes one statistics tree
(each chunk read once); ``standardize``/``minmax`` write a Zarr store
``OUT`` (each chunk read at most twice): into a temporary store beside it,
renamed over ``OUT`` at the end, removed on any failure, so ``OUT`` is never
partial.  ``--chunk-size`` and the progress bar apply to .npy files only.

Exit status: 0 success; 2 usage error (bad option, missing input file,
``--axis`` out of range, output directory missing); 1 any other failure (not
an .npy file, unsupported dtype, output not writable, disk full, interrupted).
Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import re
import secrets
import signal
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

__all__ = ["main"]

PROG = "numbanorm"
DEFAULT_CHUNK = "256MB"


class CLIError(Exception):
    """A failure reported as one line on stderr with an exit status."""

    status = 1


class UsageError(CLIError):
    status = 2


class _Terminated(BaseException):
    """Raised by the SIGTERM/SIGHUP handler so that cleanup code runs."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit status 2
        raise UsageError(f"{self.prog}: {message}")


# --------------------------------------------------------------------------
# argument parsing helpers
# --------------------------------------------------------------------------

_UNITS = {
    "": 1, "b": 1,
    "k": 1024, "kb": 1000, "kib": 1024,
    "m": 1024**2, "mb": 1000**2, "mib": 1024**2,
    "g": 1024**3, "gb": 1000**3, "gib": 1024**3,
    "t": 1024**4, "tb": 1000**4, "tib": 1024**4,
}  # fmt: skip


def parse_size(text: str) -> int:
    """Bytes from ``'256MB'``, ``'64MiB'``, ``'1G'``, ``'4096'`` (KB/MB = 10^3/10^6, K/M/KiB/MiB = 2^10/2^20).

    Examples
    --------
    >>> parse_size("256MB"), parse_size("64MiB"), parse_size("1k")
    (256000000, 67108864, 1024)
    """
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise argparse.ArgumentTypeError(f"invalid size {text!r} (e.g. 256MB, 64MiB, 1G)")
    n = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if n <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return n


def _axis_list(values: Sequence[str]) -> tuple[int, ...]:
    out = []
    for v in values:
        for part in str(v).split(","):
            if part.strip():
                try:
                    out.append(int(part))
                except ValueError:
                    raise UsageError(f"{PROG}: --axis: invalid axis {part!r}") from None
    if not out:
        raise UsageError(f"{PROG}: --axis: no axis given")
    return tuple(out)


def _build_parser() -> _Parser:
    p = _Parser(
        prog=PROG,
        description="Out-of-core statistics and normalization of .npy files (numbanorm).",
        epilog="Exit status: 0 ok, 2 usage error, 1 other failure. See 'numbanorm COMMAND --help'.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("input", metavar="IN", help="input .npy file (memory-mapped) or Zarr array store")
        sp.add_argument(
            "--axis", nargs="+", default=["0"], metavar="A",
            help="axes reduced over, e.g. '--axis 0' or '--axis 0 2 3' or '--axis 0,2,3' (default 0)",
        )  # fmt: skip
        sp.add_argument(
            "--chunk-size", type=parse_size, default=parse_size(DEFAULT_CHUNK), metavar="SIZE",
            help=f"bytes per chunk, e.g. 64MB, 1GiB (default {DEFAULT_CHUNK})",
        )  # fmt: skip
        sp.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
        sp.add_argument(
            "--scheduler", metavar="ADDRESS", default=None,
            help="a running dask.distributed scheduler (Zarr input; default: local threads)",
        )  # fmt: skip

    s = sub.add_parser("stats", help="per-feature count, NaN count, mean, std, min, max")
    common(s)
    s.add_argument("--json", action="store_true", help="print JSON (NaN as null)")
    s.set_defaults(func=_cmd_stats)

    for name, helptext in (
        ("standardize", "z-score: (x - mean) / std per feature (zero std -> 1)"),
        ("minmax", "scale each feature to a range from its min and max"),
    ):
        c = sub.add_parser(name, help=helptext)
        common(c)
        c.add_argument(
            "-o",
            "--output",
            required=True,
            metavar="OUT",
            help="output .npy file (a Zarr store for Zarr input)",
        )
        if name == "minmax":
            c.add_argument("--range", nargs=2, type=float, default=(0.0, 1.0), metavar=("LO", "HI"))
            c.add_argument("--clip", action="store_true", help="clip the output to the range")
        c.set_defaults(func=_cmd_transform)

    sub.add_parser("demo", help="run every norm on generated data and print a table", add_help=False)
    sub.add_parser("bench", help="throughput table against NumPy (and PyTorch)", add_help=False)
    sub.add_parser("warmup", help="compile every kernel into numba's cache ahead of use", add_help=False)
    return p


# --------------------------------------------------------------------------
# the input file
# --------------------------------------------------------------------------


class _Npy:
    """Header facts of an .npy file, seen as a C-ordered array.

    A Fortran-ordered file of shape S holds the bytes of a C-ordered array of
    shape reversed(S); every axis ``a`` maps to ``ndim - 1 - a``.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        if not os.path.exists(path):
            raise UsageError(f"{PROG}: {path}: no such file")
        if os.path.isdir(path):
            raise UsageError(f"{PROG}: {path}: is a directory")
        try:
            with open(path, "rb") as f:
                magic = f.read(6)
        except OSError as e:
            raise CLIError(f"{PROG}: {path}: {e.strerror}") from None
        if magic != b"\x93NUMPY":
            kind = "an .npz archive" if magic[:2] == b"PK" else "not an .npy file"
            raise CLIError(f"{PROG}: {path}: {kind} (expected a NumPy .npy file)")
        try:
            m = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as e:
            msg = str(e).splitlines()[0] if str(e) else "invalid header"
            if "pickle" in msg.lower() or "object" in msg.lower():
                msg = "object arrays are not supported"
            elif "mmap length" in msg or "larger than" in msg:
                msg = "truncated .npy file"
            raise CLIError(f"{PROG}: {path}: {msg}") from None
        except OSError as e:
            raise CLIError(f"{PROG}: {path}: {e.strerror or e}") from None
        if isinstance(m, np.memmap):
            self.offset = int(m.offset)
        else:  # empty arrays are loaded, not mapped
            self.offset = os.path.getsize(path) - m.nbytes
        self.shape = tuple(m.shape)
        self.dtype = m.dtype
        self.fortran = bool(m.ndim > 1 and m.flags.f_contiguous and not m.flags.c_contiguous)
        del m
        dt = self.dtype
        if dt.kind not in "fiub" or (dt.kind == "f" and dt.itemsize > 8):
            raise CLIError(f"{PROG}: {path}: unsupported dtype {dt} (float16/32/64, integer or bool)")
        # the C-ordered view
        self.cshape = self.shape[::-1] if self.fortran else self.shape
        self.ndim = len(self.shape)
        self.size = math.prod(self.shape)
        self.nbytes = self.size * dt.itemsize
        # output dtype: same float dtype, float64 otherwise (API section 7)
        self.out_dtype = np.dtype(dt.newbyteorder("=")) if dt.kind == "f" else np.dtype(np.float64)

    def caxes(self, axes: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(sorted(self.ndim - 1 - a for a in axes)) if self.fortran else axes

    def to_user(self, a: np.ndarray) -> np.ndarray:
        """Kept-shape result of the C view -> the file's axis order."""
        return a.T if self.fortran else a

    def row_elems(self) -> int:
        return math.prod(self.cshape[1:])

    def chunks(self, chunk_bytes: int) -> Iterator[tuple[int, int]]:
        """(start, stop) slices of the C view's axis 0 of at most chunk_bytes of work."""
        n = self.cshape[0] if self.ndim else 1
        per = max(self.dtype.itemsize, self.out_dtype.itemsize, 8 if self.dtype.kind != "f" else 0)
        rows = max(1, chunk_bytes // max(1, self.row_elems() * per))
        for start in range(0, n, rows):
            yield start, min(n, start + rows)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Map rows [start, stop) of the C view (read-only; unmapped when dropped)."""
        row_bytes = self.row_elems() * self.dtype.itemsize
        return np.memmap(
            self.path, dtype=self.dtype, mode="r",
            offset=self.offset + start * row_bytes, shape=(stop - start, *self.cshape[1:]),
        )  # fmt: skip


def _as_kernel_input(chunk: np.ndarray) -> np.ndarray:
    """A chunk as the kernels take it: native byte order, float (ints -> float64)."""
    dt = chunk.dtype
    if dt.kind != "f":
        return chunk.astype(np.float64)
    if not dt.isnative:
        return chunk.astype(dt.newbyteorder("="))
    return chunk


# --------------------------------------------------------------------------
# progress, signals, output file
# --------------------------------------------------------------------------


class _Progress:
    """tqdm bar on stderr when it is a terminal and tqdm is installed; else nothing."""

    def __init__(self, total: int, desc: str, quiet: bool) -> None:
        self.bar = None
        if quiet or not getattr(sys.stderr, "isatty", lambda: False)():
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self.bar = tqdm(
            total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr, leave=False
        )

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@contextmanager
def _terminate_as_exception() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into an exception so ``finally`` blocks clean up.

    SIGINT already raises KeyboardInterrupt.  Signals are only delivered to the
    main thread, so nothing is installed elsewhere.
    """

    def handler(signum: int, frame: Any) -> None:
        raise _Terminated(signal.Signals(signum).name)

    old = {}
    try:
        for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            if sig is not None:
                old[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread
        pass
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


class _Output:
    """A temporary .npy next to the target, renamed over it by ``commit``."""

    def __init__(self, target: str, shape: tuple[int, ...], dtype: np.dtype, fortran: bool) -> None:
        self.target = target
        outdir = os.path.dirname(os.path.abspath(target)) or "."
        if os.path.isdir(target):
            raise UsageError(f"{PROG}: {target}: is a directory")
        if not os.path.isdir(outdir):
            what = "is not a directory" if os.path.exists(outdir) else "does not exist"
            raise UsageError(f"{PROG}: output directory {outdir} {what}")
        # the name is ours before the file exists, so that an interrupt at any
        # point after its creation (a SIGINT sent as soon as it appears) finds
        # it to remove; mkstemp returns the name only after creating the file
        self.tmp = None
        try:
            while self.tmp is None:
                self.tmp = os.path.join(outdir, f".{os.path.basename(target)}.{secrets.token_hex(8)}.tmp")
                try:
                    os.close(os.open(self.tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
                except FileExistsError:  # (not ours: 2**-64 a try)
                    self.tmp = None
            self._create(shape, dtype, fortran)
        except PermissionError:
            self.discard()
            raise CLIError(f"{PROG}: output directory {outdir} is not writable") from None
        except BaseException:
            self.discard()  # e.g. ENOSPC from the preallocation: leave nothing behind
            raise

    def _create(self, shape: tuple[int, ...], dtype: np.dtype, fortran: bool) -> None:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o666 & ~umask)  # mkstemp's 0600 is not what np.save gives
        self.dtype = dtype
        self.cshape = shape[::-1] if fortran else shape
        size = math.prod(shape)
        if size == 0:
            with open(self.tmp, "wb") as f:
                np.lib.format.write_array(f, np.empty(shape, dtype, order="F" if fortran else "C"))
            self.offset = 0
            return
        mm = np.lib.format.open_memmap(self.tmp, mode="w+", dtype=dtype, shape=shape, fortran_order=fortran)
        self.offset = int(mm.offset)
        del mm
        # reserve the blocks now: a full disk is an OSError here, not a SIGBUS
        # on a page fault in the middle of the output pass
        fd = os.open(self.tmp, os.O_RDWR)
        try:
            if hasattr(os, "posix_fallocate"):
                try:
                    os.posix_fallocate(fd, 0, self.offset + size * dtype.itemsize)
                except OSError as e:
                    if e.errno in (errno.EOPNOTSUPP, errno.EINVAL, getattr(errno, "ENOTSUP", -1)):
                        pass
                    else:
                        raise
        finally:
            os.close(fd)

    def write_view(self, start: int, stop: int) -> np.ndarray:
        row_bytes = math.prod(self.cshape[1:]) * self.dtype.itemsize
        return np.memmap(
            self.tmp, dtype=self.dtype, mode="r+",
            offset=self.offset + start * row_bytes, shape=(stop - start, *self.cshape[1:]),
        )  # fmt: skip

    def commit(self) -> None:
        fd = os.open(self.tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # surfaces deferred write errors before the rename
        finally:
            os.close(fd)
        os.replace(self.tmp, self.target)
        self.tmp = None

    def discard(self) -> None:
        if self.tmp is not None:
            try:
                os.unlink(self.tmp)
            except OSError:
                pass
            self.tmp = None


# --------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------


def _axes_for(npy: _Npy, args: argparse.Namespace) -> tuple[int, ...]:
    from ._reduce import normalize_axis

    axes = _axis_list(args.axis)
    if npy.ndim == 0:
        raise UsageError(f"{PROG}: {npy.path}: a 0-d array has no axis to reduce")
    try:
        return normalize_axis(axes, npy.ndim, "--axis")
    except (ValueError, TypeError) as e:
        raise UsageError(f"{PROG}: {e} (file shape {npy.shape})") from None


def _stats_chunks(npy: _Npy, caxes: tuple[int, ...], chunk_bytes: int, minmax: bool, progress: _Progress):
    """Yield (start, stop, chunk, RunningStats) for every chunk.

    Streaming (axis 0 of the C view reduced): one accumulator over all chunks,
    yielded with each chunk; otherwise a fresh accumulator per chunk.
    """
    from .streaming import RunningStats

    streaming = 0 in caxes
    rs = RunningStats(minmax=minmax)
    for start, stop in npy.chunks(chunk_bytes):
        chunk = npy.read(start, stop)
        x = _as_kernel_input(chunk)
        if not streaming:
            rs = RunningStats(minmax=minmax)
        rs.update(x, caxes)
        yield start, stop, x, rs
        del chunk, x
        progress.update((stop - start) * npy.row_elems() * npy.dtype.itemsize)


def _last_stats(chunks: Iterator[tuple]) -> Any:
    """Run a streaming statistics pass; the accumulator (None for no chunk)."""
    rs = None
    for item in chunks:
        rs = item[-1]
    return rs


def _gather_stats(
    npy: _Npy, caxes: tuple[int, ...], chunk_bytes: int, progress: _Progress
) -> dict[str, np.ndarray]:
    """Per-feature statistics of the whole file, in the C view's kept order."""
    names = ("count", "nan_count", "mean", "std", "min", "max")
    if 0 in caxes:
        rs = _last_stats(_stats_chunks(npy, caxes, chunk_bytes, True, progress))
        if rs is None or rs.shape is None:  # empty file
            from ._reduce import kept_shape

            ks = kept_shape(npy.cshape, caxes)
            nan = np.full(ks, np.nan)
            return dict(
                count=np.zeros(ks), nan_count=np.zeros(ks, np.int64), mean=nan, std=nan, min=nan, max=nan
            )
        return dict(
            count=rs.count, nan_count=rs.nan_count, mean=rs.mean, std=rs.std(), min=rs.min, max=rs.max
        )
    parts: dict[str, list[np.ndarray]] = {k: [] for k in names}
    for _, _, _, rs in _stats_chunks(npy, caxes, chunk_bytes, True, progress):
        for k, v in zip(names, (rs.count, rs.nan_count, rs.mean, rs.std(), rs.min, rs.max), strict=True):
            parts[k].append(v)
    if not parts["count"]:
        from ._reduce import kept_shape

        ks = kept_shape(npy.cshape, caxes)
        return {k: np.zeros(ks) for k in names}
    return {k: np.concatenate(v, axis=0) for k, v in parts.items()}


def _json_value(a: np.ndarray) -> Any:
    if a.dtype.kind in "iu":
        return a.tolist()
    return (
        np.where(np.isfinite(a) | np.isinf(a), a, None).tolist()
        if a.ndim
        else (None if np.isnan(a) else float(a))
    )


def _cmd_stats(args: argparse.Namespace) -> int:
    if _is_zarr(args.input):
        z = _Zarr(args.input, args)
        axes = _axes_for(z, args)
        with z.scheduler():
            st = z.stats(axes)
        return _print_stats(args, z, axes, st)
    if args.scheduler is not None:
        raise UsageError(f"{PROG}: --scheduler takes a Zarr input; {args.input} is a .npy file")
    npy = _Npy(args.input)
    axes = _axes_for(npy, args)
    progress = _Progress(npy.nbytes, "stats", args.quiet)
    try:
        st = _gather_stats(npy, npy.caxes(axes), args.chunk_size, progress)
    finally:
        progress.close()
    st = {k: npy.to_user(v) for k, v in st.items()}
    return _print_stats(args, npy, axes, st)


def _print_stats(args: argparse.Namespace, npy: Any, axes: tuple[int, ...], st: dict) -> int:
    st["count"] = st["count"].astype(np.int64)
    if args.json:
        doc = {
            "file": args.input, "shape": list(npy.shape), "dtype": str(npy.dtype),
            "axis": list(axes), "features_shape": list(st["mean"].shape),
        }  # fmt: skip
        for k, v in st.items():
            doc[k] = _json_value(v)
        json.dump(doc, sys.stdout, allow_nan=False)
        sys.stdout.write("\n")
        return 0
    out = sys.stdout
    out.write(f"{args.input}: shape {npy.shape} {npy.dtype}, reduced over axis {axes}\n")
    header = f"{'feature':>12} {'count':>12} {'nan':>10} {'mean':>14} {'std':>14} {'min':>14} {'max':>14}\n"
    out.write(header)
    kshape = st["mean"].shape
    for idx in np.ndindex(*kshape):
        label = str(idx[0]) if len(idx) == 1 else (str(idx) if idx else "-")
        vals = " ".join(f"{st[k][idx]:>14.7g}" for k in ("mean", "std", "min", "max"))
        out.write(f"{label:>12} {st['count'][idx]:>12d} {st['nan_count'][idx]:>10d} {vals}\n")
    return 0


def _affine_params(
    cmd: str, rs: Any, args: argparse.Namespace
) -> tuple[np.ndarray, np.ndarray, Any, Any, Any]:
    """(center, scale, shift, lo, hi) of the C view's kept shape."""
    if cmd == "standardize":
        from ._stats import constant_features

        var = rs.var()
        std = np.sqrt(var)
        std[constant_features(var, rs.mean, rs.count)] = 1.0  # as nbn.standardize
        return rs.mean, 1.0 / std, 0.0, None, None
    from ._stats import minmax_factor

    lo, hi = args.range
    clip = (lo, hi) if args.clip else (None, None)
    # (x - min) * (hi - lo) / range + lo: no cancellation for data far from 0
    return rs.min, minmax_factor.py_func(rs.min, rs.max, lo, hi), lo, *clip


def _cmd_transform(args: argparse.Namespace) -> int:
    from ._reduce import apply_affine

    cmd = args.command
    if cmd == "minmax" and not args.range[0] < args.range[1]:
        raise UsageError(
            f"{PROG}: --range: LO must be smaller than HI, got {args.range[0]:g} {args.range[1]:g}"
        )
    if _is_zarr(args.input):
        z = _Zarr(args.input, args)
        axes = _axes_for(z, args)
        with _terminate_as_exception(), z.scheduler():
            z.transform(cmd, axes, args)
        return 0
    if args.scheduler is not None:
        raise UsageError(f"{PROG}: --scheduler takes a Zarr input; {args.input} is a .npy file")
    npy = _Npy(args.input)
    axes = _axes_for(npy, args)
    caxes = npy.caxes(axes)
    minmax = cmd == "minmax"
    with _terminate_as_exception():
        out = _Output(args.output, npy.shape, npy.out_dtype, npy.fortran)
        progress = _Progress(2 * npy.nbytes, cmd, args.quiet)
        try:
            if 0 in caxes:  # streaming: statistics pass, then output pass
                rs = _last_stats(_stats_chunks(npy, caxes, args.chunk_size, minmax, progress))
                if rs is not None:
                    params = _affine_params(cmd, rs, args)
                    for start, stop in npy.chunks(args.chunk_size):
                        chunk = npy.read(start, stop)
                        dst = out.write_view(start, stop)
                        apply_affine(
                            _as_kernel_input(chunk), caxes, *params[:3], out=dst, lo=params[3], hi=params[4]
                        )
                        del chunk, dst  # unmap: keeps resident memory to about one chunk
                        progress.update((stop - start) * npy.row_elems() * npy.dtype.itemsize)
            else:  # every chunk holds whole groups
                for start, stop, x, rs in _stats_chunks(npy, caxes, args.chunk_size, minmax, progress):
                    params = _affine_params(cmd, rs, args)
                    dst = out.write_view(start, stop)
                    apply_affine(x, caxes, *params[:3], out=dst, lo=params[3], hi=params[4])
                    del dst
                    progress.update((stop - start) * npy.row_elems() * npy.dtype.itemsize)
            out.commit()
        finally:
            progress.close()
            out.discard()
    return 0


# --------------------------------------------------------------------------
# Zarr stores, through numbanorm's Dask backend
# --------------------------------------------------------------------------


def _is_zarr(path: str) -> bool:
    return os.path.isdir(path) and any(
        os.path.exists(os.path.join(path, m)) for m in ("zarr.json", ".zarray", ".zgroup")
    )


class _Zarr:
    """A Zarr array store as a Dask array (its own chunks)."""

    def __init__(self, path: str, args: argparse.Namespace) -> None:
        self.path = path
        self.address = args.scheduler
        try:
            import dask.array as da
        except ImportError:
            raise CLIError(f'{PROG}: {path}: Zarr input needs dask: pip install "numbanorm[dask]"') from None
        try:
            self.x = da.from_zarr(path)
        except ImportError as e:
            raise CLIError(
                f'{PROG}: {path}: Zarr input needs zarr ({e}): pip install "numbanorm[dask]"'
            ) from None
        except Exception as e:  # not an array store (a group, a broken store)
            raise CLIError(f"{PROG}: {path}: not a Zarr array ({type(e).__name__}: {e})") from None
        self.shape = tuple(int(n) for n in self.x.shape)
        self.ndim = len(self.shape)
        self.dtype = np.dtype(self.x.dtype)
        dt = self.dtype
        if dt.kind not in "fiub" or (dt.kind == "f" and dt.itemsize > 8):
            raise CLIError(f"{PROG}: {path}: unsupported dtype {dt} (float16/32/64, integer or bool)")

    @contextmanager
    def scheduler(self) -> Iterator[None]:
        import dask

        if self.address is None:
            with dask.config.set(scheduler="threads"):
                yield
            return
        try:
            from distributed import Client
        except ImportError:
            raise CLIError(
                f'{PROG}: --scheduler needs dask.distributed: pip install "numbanorm[dask]"'
            ) from None
        try:
            client = Client(self.address)  # (timeout: distributed.comm.timeouts.connect)
        except Exception as e:
            raise CLIError(
                f"{PROG}: --scheduler {self.address}: cannot connect ({type(e).__name__}: {e})"
            ) from None
        try:
            yield
        finally:
            client.close()

    def stats(self, axes: tuple[int, ...]) -> dict[str, np.ndarray]:
        from ._reduce import kept_shape
        from .streaming import RunningStats

        rs = RunningStats().update(self.x, axes)
        if rs.shape is None or math.prod(self.shape) == 0:
            ks = kept_shape(self.shape, axes)
            nan = np.full(ks, np.nan)
            return dict(
                count=np.zeros(ks), nan_count=np.zeros(ks, np.int64), mean=nan, std=nan, min=nan, max=nan
            )
        return dict(
            count=rs.count, nan_count=rs.nan_count, mean=rs.mean, std=rs.std(), min=rs.min, max=rs.max
        )

    def transform(self, cmd: str, axes: tuple[int, ...], args: argparse.Namespace) -> None:
        import shutil

        import dask.array as da

        import numbanorm as nbn

        target = args.output
        outdir = os.path.dirname(os.path.abspath(target)) or "."
        if os.path.exists(target) and not _is_zarr(target):
            raise UsageError(f"{PROG}: {target}: exists and is not a Zarr store (not overwritten)")
        if not os.path.isdir(outdir):
            what = "is not a directory" if os.path.exists(outdir) else "does not exist"
            raise UsageError(f"{PROG}: output directory {outdir} {what}")
        if os.path.abspath(target) == os.path.abspath(self.path):
            raise UsageError(f"{PROG}: {target}: the output must not be the input store")
        try:
            tmp = tempfile.mkdtemp(
                prefix=f".{os.path.basename(os.path.abspath(target))}.", suffix=".tmp", dir=outdir
            )
        except PermissionError:
            raise CLIError(f"{PROG}: output directory {outdir} is not writable") from None
        try:
            if math.prod(self.shape) == 0:
                y = self.x.astype(np.float64 if self.dtype.kind != "f" else self.dtype)
            elif cmd == "standardize":
                y = nbn.standardize(self.x, axis=axes)
            else:
                lo, hi = args.range
                y = nbn.minmax_scale(self.x, (lo, hi), axis=axes, clip=args.clip)
            da.to_zarr(y, tmp, overwrite=True)
            old = None
            if os.path.exists(target):  # replace a previous store: move it aside first
                old = tempfile.mkdtemp(
                    prefix=f".{os.path.basename(os.path.abspath(target))}.", suffix=".old", dir=outdir
                )
                os.rmdir(old)
                os.replace(target, old)
            os.replace(tmp, target)
            tmp = None
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except (TypeError, ValueError) as e:
            raise CLIError(f"{PROG}: {self.path}: {e}") from None
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------


def _forward(name: str, rest: list[str]) -> int:
    import importlib

    try:
        mod = importlib.import_module(f"numbanorm._{name}")
    except ImportError as e:
        raise CLIError(f"{PROG}: {name} is not available ({e})") from None
    rc = mod.main(rest)
    return 0 if rc is None else int(rc)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 usage, 1 failure).

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> np.save(os.path.join(d, "x.npy"), np.arange(6.0).reshape(3, 2))
    >>> main(["standardize", os.path.join(d, "x.npy"), "-o", os.path.join(d, "z.npy"), "--quiet"])
    0
    >>> np.load(os.path.join(d, "z.npy")).std(axis=0)
    array([1., 1.])
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in ("demo", "bench", "warmup"):
            return _forward(argv[0], argv[1:])
        args = _build_parser().parse_args(argv)
        return args.func(args)
    except SystemExit as e:  # --help / --version from argparse
        return e.code if isinstance(e.code, int) else 0
    except CLIError as e:
        print(_one_line(str(e)), file=sys.stderr)
        return e.status
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 1
    except _Terminated as e:
        print(f"{PROG}: terminated by {e}", file=sys.stderr)
        return 1
    except OSError as e:
        if e.errno == errno.ENOSPC:
            msg = "no space left on device"
        else:
            msg = e.strerror or str(e)
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(_one_line(f"{PROG}: {where}{msg}"), file=sys.stderr)
        return 1
    except MemoryError:
        print(f"{PROG}: out of memory (try a smaller --chunk-size)", file=sys.stderr)
        return 1
    except Exception as e:  # a bug or an unforeseen input: still one line
        print(_one_line(f"{PROG}: error: {type(e).__name__}: {e}"), file=sys.stderr)
        return 1
