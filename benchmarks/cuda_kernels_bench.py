"""Issue 17 on hardware: each CUDA kernel shape's effective bandwidth against
the device-to-device copy measured in the same run, PyTorch's time for the
same op, and the host copies of one call.

For each case (an op, a layout, a shape; float32, about ``--mb`` MiB):

- ``ms``: CUDA-event time of one call, median of ``--reps`` after warm-up;
- ``min_bytes``: what the op must move by issue 17's definition (each input
  byte read once and each output byte written once; the batch-statistics
  ops, batch_norm training, standardize and minmax_scale, read x twice);
  ``passes``: the reads of x from HBM the kernels make today (rows past
  the registers and channels-last instance/group norm re-read from L2,
  counted once: NOTES.md section 27);
- ``of_copy``: (min_bytes / ms) over the copy's (2 x bytes / ms): the
  issue's target is >= 0.85 for every op;
- ``torch_ms``: the same op in torch on the same values (when torch has CUDA);
- ``d2h`` / ``syncs``: device-to-host copies and stream synchronisations of
  one call without statistics asked for (target 0, issue 17).

One JSON line per case (flushed as it finishes: a run cut short keeps what
finished), then a table.  The kernel shapes covered are the ones whose static
figures NOTES.md section 23 predicts (``benchmarks/cuda_static.py``).

    python benchmarks/cuda_kernels_bench.py --out results/cuda-kernels.jsonl
    # the logic without a GPU, in the CUDA simulator (tiny shapes):
    NUMBA_ENABLE_CUDASIM=1 python benchmarks/cuda_kernels_bench.py --quick
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

_HERE = Path(__file__).resolve().parent
if str(_HERE.parent) not in sys.path:  # numbanorm from this checkout
    sys.path.insert(0, str(_HERE.parent))


_PARAMS: dict = {}


def _device_params(d: int):
    """A weight and bias of length d as float32 numba device arrays (made
    once: a model's parameters live on the GPU)."""
    if ("nb", d) not in _PARAMS:
        from numba import cuda

        rng = np.random.default_rng(1)
        _PARAMS["nb", d] = tuple(cuda.to_device(rng.standard_normal(d, dtype=np.float32)) for _ in range(2))
    return _PARAMS["nb", d]


def _torch_params(d: int):
    """The same weight and bias as torch CUDA tensors."""
    if ("torch", d) not in _PARAMS:
        import torch

        _PARAMS["torch", d] = tuple(torch.from_numpy(a.copy_to_host()).cuda() for a in _device_params(d))
    return _PARAMS["torch", d]


def _cases(mb: float, quick: bool = False) -> list[dict[str, Any]]:
    """name, shape, passes, two_read (issue's byte count), the numbanorm call
    (x, running stats) and the torch call (t, running stats, F)."""
    n = max(1, int(mb * 2**20 // 4))  # float32 elements

    def rows(d):
        return (max(1, n // d), d)

    def img(c, hw):
        hw = 4 if quick else hw
        return (max(1, n // (c * hw * hw)), c, hw, hw)

    import numbanorm as nbn

    cl = "channels_last"
    out = [
        (
            "layer_norm D=256",
            rows(256),
            1,
            False,
            lambda x, r: nbn.layer_norm(x, 256),
            lambda t, r, F: F.layer_norm(t, (256,)),
        ),
        (
            "layer_norm D=1024",
            rows(1024),
            1,
            False,
            lambda x, r: nbn.layer_norm(x, 1024),
            lambda t, r, F: F.layer_norm(t, (1024,)),
        ),
        (
            "layer_norm D=4096",
            rows(4096),
            1,
            False,
            lambda x, r: nbn.layer_norm(x, 4096),
            lambda t, r, F: F.layer_norm(t, (4096,)),
        ),
        (
            "rms_norm D=1024",
            rows(1024),
            1,
            False,
            lambda x, r: nbn.rms_norm(x, 1024),
            lambda t, r, F: F.rms_norm(t, (1024,)),
        ),
        (
            "lp_normalize p=2 D=1024",
            rows(1024),
            1,
            False,
            lambda x, r: nbn.lp_normalize(x, axis=-1),
            lambda t, r, F: F.normalize(t, dim=-1),
        ),
        (
            "lp_normalize p=3 D=256",
            rows(256),
            1,
            False,
            lambda x, r: nbn.lp_normalize(x, 3.0, axis=-1),
            lambda t, r, F: F.normalize(t, 3.0, dim=-1),
        ),
        (
            "lp_normalize p=3 D=1024",
            rows(1024),
            1,
            False,
            lambda x, r: nbn.lp_normalize(x, 3.0, axis=-1),
            lambda t, r, F: F.normalize(t, 3.0, dim=-1),
        ),
        (
            "lp_normalize p=2 axis=0 (R, 64)",
            rows(64),
            2,
            False,
            lambda x, r: nbn.lp_normalize(x, axis=0),
            lambda t, r, F: F.normalize(t, dim=0),
        ),
        (
            "batch_norm train NCHW C=64",
            img(64, 64),
            2,
            True,
            lambda x, r: nbn.batch_norm(x, *r, training=True),
            lambda t, r, F: F.batch_norm(t, *r, training=True),
        ),
        (
            "batch_norm train NHWC C=3",
            img(3, 256),
            2,
            True,
            lambda x, r: nbn.batch_norm(x, *r, training=True, channel_axis=1),
            None,
        ),
        (
            "batch_norm train NHWC C=64",
            img(64, 64),
            2,
            True,
            lambda x, r: nbn.batch_norm(x, *r, training=True, channel_axis=1),
            None,
        ),
        (
            "batch_norm eval NHWC C=3",
            img(3, 256),
            1,
            False,
            lambda x, r: nbn.batch_norm(x, *r, channel_axis=1),
            None,
        ),
        (
            "instance_norm NCHW C=64",
            img(64, 64),
            1,
            False,
            lambda x, r: nbn.instance_norm(x),
            lambda t, r, F: F.instance_norm(t),
        ),
        (
            "instance_norm NHWC C=64",
            img(64, 64),
            1,
            False,
            lambda x, r: nbn.instance_norm(x),
            lambda t, r, F: F.instance_norm(t),
        ),
        (
            "group_norm NCHW C=64 G=8",
            img(64, 64),
            1,
            False,
            lambda x, r: nbn.group_norm(x, 8),
            lambda t, r, F: F.group_norm(t, 8),
        ),
        (
            "group_norm NHWC C=64 G=8",
            img(64, 64),
            1,
            False,
            lambda x, r: nbn.group_norm(x, 8),
            lambda t, r, F: F.group_norm(t, 8),
        ),
        (
            "group_norm NHWC C=512 G=32",
            img(512, 64),
            1,
            False,
            lambda x, r: nbn.group_norm(x, 32),
            lambda t, r, F: F.group_norm(t, 32),
        ),
        (
            "layer_norm D=16384 (past the registers)",
            rows(16384),
            1,
            False,
            lambda x, r: nbn.layer_norm(x, 16384),
            lambda t, r, F: F.layer_norm(t, (16384,)),
        ),
        (
            "rms_norm D=32768 (past the registers)",
            rows(32768),
            1,
            False,
            lambda x, r: nbn.rms_norm(x, 32768),
            lambda t, r, F: F.rms_norm(t, (32768,)),
        ),
        (
            "lp_normalize p=3 D=16384 (past the registers)",
            rows(16384),
            1,
            False,
            lambda x, r: nbn.lp_normalize(x, 3.0, axis=-1),
            lambda t, r, F: F.normalize(t, 3.0, dim=-1),
        ),
        (
            "layer_norm D=1024 device weights",
            rows(1024),
            1,
            False,
            lambda x, r: nbn.layer_norm(x, 1024, *_device_params(1024)),
            lambda t, r, F: F.layer_norm(t, (1024,), *_torch_params(1024)),
        ),
        ("standardize axis=0 (R, 64)", rows(64), 2, True, lambda x, r: nbn.standardize(x, axis=0), None),
        ("standardize axis=0 (R, 3)", rows(3), 2, True, lambda x, r: nbn.standardize(x, axis=0), None),
        ("minmax_scale axis=0 (R, 64)", rows(64), 2, True, lambda x, r: nbn.minmax_scale(x, axis=0), None),
    ]
    cases = []
    for name, shape, passes, two_read, call, tcall in out:
        if quick and ("past the registers" in name or "C=512" in name):
            continue  # (the simulator runs a thread per Python thread: minutes each)
        layout = cl if "NHWC" in name else None
        cases.append(
            dict(
                name=name,
                shape=shape,
                passes=passes,
                two_read=two_read,
                call=call,
                torch=tcall,
                layout=layout,
            )
        )
    return cases


_INPUTS: dict = {}
_KEEP_INPUTS = 6  # distinct (shape, layout) inputs kept between cases


def _inputs(cuda, shape, layout, seed=0):
    """(device array, host array) of float32 values of ``shape`` (NCHW),
    made once per shape and layout and shared by the cases that use it (a
    256 MiB normal sample takes about a second to draw); channels-last:
    stored NHWC, both seen as NCHW (permuted views of the same values, no
    copy)."""
    key = (tuple(shape), layout, seed)
    if key not in _INPUTS:
        if len(_INPUTS) >= _KEEP_INPUTS:
            _INPUTS.pop(next(iter(_INPUTS)))
        rng = np.random.default_rng(seed)
        if layout is None:
            host = rng.standard_normal(shape, dtype=np.float32)
            _INPUTS[key] = (cuda.to_device(host), host)
        else:
            import numbanorm.backends.cuda as cb

            n, c, h, w = shape
            host = rng.standard_normal((n, h, w, c), dtype=np.float32)
            _INPUTS[key] = (cb.permute(cuda.to_device(host), (0, 3, 1, 2)), host.transpose(0, 3, 1, 2))
    return _INPUTS[key]


def _time(cuda, fn, reps: int, warmup: int) -> float:
    """Median CUDA-event ms of fn() on the default stream."""
    for _ in range(warmup):
        fn()
    cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = cuda.event(), cuda.event()
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    return statistics.median(ts)


def _host_traffic(cuda, fn) -> tuple[int, int]:
    """(device-to-host copies, stream synchronisations) of one fn() call."""
    import numbanorm.backends.cuda as cb

    if cb.SIMULATOR:
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray as Arr
    else:
        from numba.cuda.cudadrv.devicearray import DeviceNDArray as Arr
    n = [0, 0]
    orig_copy, orig_sync = Arr.copy_to_host, cb._sync

    def copy_to_host(self, *a, **k):
        n[0] += 1
        return orig_copy(self, *a, **k)

    def sync(s):
        n[1] += 1
        return orig_sync(s)

    Arr.copy_to_host, cb._sync = copy_to_host, sync
    try:
        fn()
    finally:
        Arr.copy_to_host, cb._sync = orig_copy, orig_sync
    return n[0], n[1]


def _torch_time(case, host_x, reps, warmup):
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    if case["torch"] is None or not torch.cuda.is_available():
        return None
    t = torch.from_numpy(host_x).cuda()  # (a channels-last view stays channels-last)
    if case["layout"]:
        t = t.contiguous(memory_format=torch.channels_last)
    C = host_x.shape[1]
    r = (torch.zeros(C, device="cuda"), torch.ones(C, device="cuda"))
    try:
        for _ in range(warmup):
            case["torch"](t, r, F)
        torch.cuda.synchronize()
        ts = []
        for _ in range(reps):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            case["torch"](t, r, F)
            b.record()
            b.synchronize()
            ts.append(a.elapsed_time(b))
        return statistics.median(ts)
    except Exception as e:  # an op this torch lacks (F.rms_norm before 2.4)
        return repr(e)[:200]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="append one JSON line per case here")
    ap.add_argument("--mb", type=float, default=256.0, help="input size in MiB (float32)")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument(
        "--quick", action="store_true", help="tiny inputs, 1 rep (the logic, e.g. in the simulator)"
    )
    ap.add_argument("--only", help="comma-separated substrings of case names")
    opts = ap.parse_args(argv)
    if opts.quick:
        opts.mb, opts.reps, opts.warmup = 0.02, 1, 1
    from numba import cuda

    import numbanorm.backends.cuda as cb

    if not (cb.SIMULATOR or cuda.is_available()):
        print("cuda_kernels_bench: no CUDA GPU (and the simulator is off)", file=sys.stderr)
        return 3
    fh = open(opts.out, "a") if opts.out else None  # noqa: SIM115

    def emit(rec):
        if fh:
            fh.write(json.dumps(rec) + "\n")
            fh.flush()

    # the copy's bandwidth, device to device, at the same size
    n = max(1, int(opts.mb * 2**20 // 4))
    src = cuda.to_device(np.ones(n, np.float32))
    dst = cuda.device_array(n, np.float32)
    copy_ms = _time(cuda, lambda: dst.copy_to_device(src), opts.reps, opts.warmup)
    copy_gbs = 2 * 4 * n / copy_ms / 1e6
    dev = "simulator" if cb.SIMULATOR else cuda.get_current_device().name
    dev = dev.decode() if isinstance(dev, bytes) else str(dev)
    emit({"case": "copy", "device": dev, "bytes": 4 * n, "ms": copy_ms, "gb_s": copy_gbs})
    print(f"{dev}: device-to-device copy {copy_gbs:.0f} GB/s ({4 * n / 2**20:.0f} MiB, {copy_ms:.3f} ms)")
    rows = []
    worst = 0
    only = [s.strip() for s in opts.only.split(",")] if opts.only else None
    for case in _cases(opts.mb, opts.quick):
        if only and not any(s in case["name"] for s in only):
            continue
        t0 = time.perf_counter()
        rec: dict[str, Any] = {"case": case["name"], "shape": list(case["shape"]), "passes": case["passes"]}
        try:
            x, host_x = _inputs(cuda, case["shape"], case["layout"])
            C = case["shape"][1]
            rs = (cuda.to_device(np.zeros(C, np.float32)), cuda.to_device(np.ones(C, np.float32)))

            def fn(call=case["call"], x=x, rs=rs):
                return call(x, rs)

            fn()  # compile / load the kernels
            cuda.synchronize()
            rec["d2h"], rec["syncs"] = _host_traffic(cuda, fn)
            ms = _time(cuda, fn, opts.reps, opts.warmup)
            nbytes = 4 * math.prod(case["shape"])
            min_bytes = (3 if case["two_read"] else 2) * nbytes
            rec.update(
                ms=ms, min_bytes=min_bytes, gb_s=min_bytes / ms / 1e6, of_copy=min_bytes / ms / 1e6 / copy_gbs
            )
            if not cb.SIMULATOR:
                tt = _torch_time(case, host_x, opts.reps, opts.warmup)  # the same values
                if tt is not None:
                    rec["torch_ms"] = tt
            ok = rec["d2h"] == 0 and rec["syncs"] == 0
        except Exception as e:
            rec["error"] = repr(e)[:1000]
            ok = False
        rec["ok"] = ok
        rec["wall_s"] = round(time.perf_counter() - t0, 2)
        worst = worst or (0 if ok else 1)
        emit(rec)
        rows.append(rec)
        tms = rec.get("torch_ms")
        tstr = f"{tms:8.3f}" if isinstance(tms, float) else f"{'-':>8}"
        if "error" in rec:
            print(f"{case['name']:<34} ERROR {rec['error'][:200]}", flush=True)
        else:
            print(
                f"{case['name']:<34} {rec['ms']:8.3f} ms {rec['gb_s']:8.0f} GB/s "
                f"of copy {rec['of_copy']:5.2f} "
                f"torch {tstr} ms  d2h {rec['d2h']} syncs {rec['syncs']}  passes {rec['passes']}",
                flush=True,
            )
    if fh:
        fh.close()
    return worst


if __name__ == "__main__":
    sys.exit(main())
