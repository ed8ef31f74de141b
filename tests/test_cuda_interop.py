"""CuPy arrays and PyTorch CUDA tensors in, the same type out (issue 16).

These need a GPU and the library (the simulator has no CUDA Array
Interface): they skip here and run on a lent GPU through
benchmarks/run_gpu.sh.  Each checks the result against the CPU path, the
type and device of the result, and what a user of that library expects:
memory from their own pool, the call on their current stream (or the one
passed), tensors that require grad, channels-last and non-contiguous inputs.
"""

from __future__ import annotations

import numpy as np
import pytest
from numba.core import config

if config.ENABLE_CUDASIM:
    pytest.skip(
        "CuPy/PyTorch CUDA arrays need a GPU (the simulator has no CUDA Array Interface)",
        allow_module_level=True,
    )

cuda = pytest.importorskip("numba.cuda")
if not cuda.is_available():
    pytest.skip("no CUDA GPU", allow_module_level=True)

import numbanorm as nbn  # noqa: E402

TOL = dict(rtol=0, atol=3e-5)


def _torch():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch without CUDA")
    return torch


def _cupy():
    return pytest.importorskip("cupy")


OPS = {
    "batch_norm": lambda x, **kw: nbn.batch_norm(x, training=True, **kw),
    "instance_norm": lambda x, **kw: nbn.instance_norm(x, **kw),
    "layer_norm": lambda x, **kw: nbn.layer_norm(x, (4, 5), **kw),
    "group_norm": lambda x, **kw: nbn.group_norm(x, 2, **kw),
    "rms_norm": lambda x, **kw: nbn.rms_norm(x, 5, **kw),
    "standardize": lambda x, **kw: nbn.standardize(x, axis=(0, 2, 3), **kw),
    "minmax_scale": lambda x, **kw: nbn.minmax_scale(x, axis=0, **kw),
    "lp_normalize": lambda x, **kw: nbn.lp_normalize(x, axis=1, **kw),
}


def _x(rng):
    return (rng.standard_normal((3, 4, 6, 5)) * 2 + 1).astype(np.float32)


@pytest.mark.parametrize("op", list(OPS))
def test_cupy_in_cupy_out_from_its_pool(op, rng):
    cp = _cupy()
    x = _x(rng)
    d = cp.asarray(x)
    pool = cp.get_default_memory_pool()
    y = OPS[op](d)
    assert type(y) is cp.ndarray and y.device.id == d.device.id and y.dtype == d.dtype
    assert pool.used_bytes() >= y.nbytes  # the result lives in CuPy's pool
    np.testing.assert_allclose(cp.asnumpy(y), OPS[op](x), **TOL)


@pytest.mark.parametrize("op", list(OPS))
def test_cupy_on_a_non_blocking_stream(op, rng):
    cp = _cupy()
    x = _x(rng)
    s = cp.cuda.Stream(non_blocking=True)
    with s:  # produced and consumed on s: the call runs there (stream=None)
        d = cp.asarray(x) * 1.0
        y = OPS[op](d)
    s.synchronize()
    np.testing.assert_allclose(cp.asnumpy(y), OPS[op](x), **TOL)
    s2 = cp.cuda.Stream(non_blocking=True)
    with s:  # produced on s, the call on s2: ordered on the device
        d = cp.asarray(x) * 1.0
    y = OPS[op](d, stream=s2)
    s2.synchronize()
    np.testing.assert_allclose(cp.asnumpy(y), OPS[op](x), **TOL)


def test_cupy_non_contiguous(rng):
    cp = _cupy()
    x = _x(rng)
    d = cp.asarray(np.ascontiguousarray(x.transpose(0, 2, 3, 1))).transpose(0, 3, 1, 2)
    assert not d.flags.c_contiguous
    for op, f in OPS.items():
        np.testing.assert_allclose(cp.asnumpy(f(d)), f(x), **TOL, err_msg=op)
    d = cp.asarray(x)[:, :, ::2]
    np.testing.assert_allclose(
        cp.asnumpy(nbn.layer_norm(d, (3, 5))), nbn.layer_norm(x[:, :, ::2], (3, 5)), **TOL
    )


@pytest.mark.parametrize("op", list(OPS))
def test_torch_in_torch_out(op, rng):
    torch = _torch()
    x = _x(rng)
    t = torch.from_numpy(x).cuda()
    y = OPS[op](t)
    assert isinstance(y, torch.Tensor) and y.device == t.device and y.dtype == t.dtype
    np.testing.assert_allclose(y.cpu().numpy(), OPS[op](x), **TOL)


def test_torch_requires_grad_and_channels_last(rng):
    torch = _torch()
    x = _x(rng)
    t = torch.from_numpy(x).cuda().requires_grad_(True)
    np.testing.assert_allclose(nbn.layer_norm(t, (4, 5)).cpu().numpy(), nbn.layer_norm(x, (4, 5)), **TOL)
    cl = torch.from_numpy(x).cuda().to(memory_format=torch.channels_last)
    assert not cl.is_contiguous()
    for op, f in OPS.items():
        np.testing.assert_allclose(f(cl).cpu().numpy(), f(x), **TOL, err_msg=op)


def test_torch_on_its_current_stream(rng):
    torch = _torch()
    x = _x(rng)
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        t = torch.from_numpy(x).cuda() * 1.0
        y = nbn.batch_norm(t, training=True)
    s.synchronize()
    np.testing.assert_allclose(y.cpu().numpy(), nbn.batch_norm(x, training=True), **TOL)


def test_running_stats_on_the_device_updated_in_place(rng):
    torch = _torch()
    x = _x(rng)
    rm, rv = torch.zeros(4, device="cuda"), torch.ones(4, device="cuda")
    rm_c, rv_c = np.zeros(4, np.float32), np.ones(4, np.float32)
    nbn.batch_norm(torch.from_numpy(x).cuda(), rm, rv, training=True)
    nbn.batch_norm(x, rm_c, rv_c, training=True)
    np.testing.assert_allclose(rm.cpu().numpy(), rm_c, rtol=1e-6)
    np.testing.assert_allclose(rv.cpu().numpy(), rv_c, rtol=1e-6)
    with pytest.raises(ValueError, match="running_mean"):
        nbn.batch_norm(torch.from_numpy(x).cuda(), rm_c, rv_c, training=True)
