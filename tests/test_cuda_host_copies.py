"""Issue 17: a CUDA call that asks for no statistics copies nothing to the
host and does not synchronise, for every public op (statistics, parameters
and running-statistic updates computed on the device by
``_reduce.normalize_on_device``; the row ops by the row kernels)."""

from __future__ import annotations

import numpy as np
import pytest

cuda = pytest.importorskip("numba.cuda")
from numba.core import config  # noqa: E402

if not config.ENABLE_CUDASIM and not cuda.is_available():
    pytest.skip("no CUDA GPU and the CUDA simulator is off", allow_module_level=True)

from test_cuda_semantics import _count_host_copies, host, small_launch  # noqa: E402, F401

import numbanorm as nbn  # noqa: E402
import numbanorm.backends.cuda as cb  # noqa: E402

F32 = np.float32


def _every_op(C, rng):
    """Every public op on a CUDA x of shape (N, C, L) (channels first) or
    (N, L, C) ("_cl" ops: channels last), without statistics asked for:
    {name: call(x, rs)} with rs = (running_mean, running_var) arrays of the
    call's library (device arrays in, updated in place)."""
    w, b = rng.standard_normal(C), rng.standard_normal(C)
    return {
        "batch_norm": lambda a, rs: nbn.batch_norm(a, training=True),
        "batch_norm_running": lambda a, rs: nbn.batch_norm(a, *rs, w, b, training=True, momentum=0.3),
        "batch_norm_cl_running": lambda a, rs: nbn.batch_norm(a, *rs, training=True, channel_axis=-1),
        "batch_norm_eval": lambda a, rs: nbn.batch_norm(a, *rs, w, b),
        "instance_norm": lambda a, rs: nbn.instance_norm(a),
        "instance_norm_cl": lambda a, rs: nbn.instance_norm(a, weight=w, bias=b, channel_axis=-1),
        "instance_norm_running": lambda a, rs: nbn.instance_norm(a, *rs, momentum=0.2),
        "instance_norm_cl_running": lambda a, rs: nbn.instance_norm(a, *rs, channel_axis=-1),
        "group_norm": lambda a, rs: nbn.group_norm(a, 2, w, b),
        "group_norm_cl": lambda a, rs: nbn.group_norm(a, 2, w, b, channel_axis=-1),
        "layer_norm": lambda a, rs: nbn.layer_norm(a, 5),
        "rms_norm": lambda a, rs: nbn.rms_norm(a, 5),
        "standardize_0": lambda a, rs: nbn.standardize(a, axis=0),
        "standardize_rows": lambda a, rs: nbn.standardize(a, axis=-1, ddof=1),
        "standardize_all": lambda a, rs: nbn.standardize(a, axis=None, with_mean=False),
        "minmax_scale_0": lambda a, rs: nbn.minmax_scale(a, (-1, 2), axis=0, clip=True),
        "minmax_scale_01": lambda a, rs: nbn.minmax_scale(a, axis=(0, 1)),
        "lp_normalize_rows": lambda a, rs: nbn.lp_normalize(a, axis=-1),
        "lp_normalize_cols": lambda a, rs: nbn.lp_normalize(a, p=1.0, axis=0),
        "lp_normalize_p3": lambda a, rs: nbn.lp_normalize(a, p=3.0, axis=-1),
    }


_OPS = list(_every_op(4, np.random.default_rng(0)))


@pytest.mark.usefixtures("small_launch")
@pytest.mark.parametrize("name", _OPS)
def test_every_op_without_stats_makes_no_host_copy(name, monkeypatch, rng):
    """Issue 17: a CUDA call that asks for no statistics copies nothing to the
    host and does not synchronise (statistics, parameters and running
    updates on the device), and matches the CPU, running statistics too."""
    C = 4
    x = rng.standard_normal((3, 5, C) if "_cl" in name else (3, C, 5)) * 2 + 1
    x[1, 2, 0] = np.nan if name.startswith(("standardize", "minmax")) else x[1, 2, 0]
    call = _every_op(C, np.random.default_rng(1))[name]
    rm, rv = rng.standard_normal(C).astype(F32), (rng.random(C) + 0.5).astype(F32)
    d_rs = (cuda.to_device(rm), cuda.to_device(rv))
    d = cuda.to_device(x)
    n = _count_host_copies(monkeypatch)
    y = call(d, d_rs)
    assert n == {"d2h": 0, "sync": 0}
    h_rs = (rm.copy(), rv.copy())
    want = call(x, h_rs)
    np.testing.assert_allclose(host(y), want, rtol=1e-12, atol=1e-12)
    for dr, hr in zip(d_rs, h_rs, strict=True):
        np.testing.assert_allclose(host(dr), hr, rtol=2e-7, atol=0)


@pytest.mark.usefixtures("small_launch")
@pytest.mark.parametrize(
    "name", ["instance_norm_cl", "instance_norm_cl_running", "group_norm_cl", "device_weights"]
)
def test_channels_last_instance_and_group_norm_read_x_once(name, monkeypatch, rng):
    """Issue 17, item 3: channels-last instance/group norm take one kernel
    that reads x once (_cuda_tiles._tile_norm; running statistics updated
    after it), not the moments-then-apply kernels; no host copy."""
    C = 4
    x = rng.standard_normal((3, 5, C)) * 2 + 1
    launches = []
    orig = cb._launch
    monkeypatch.setattr(cb, "_launch", lambda k, *a: launches.append(k.__name__) or orig(k, *a))
    rm, rv = rng.standard_normal(C).astype(F32), (rng.random(C) + 0.5).astype(F32)
    d_rs = (cuda.to_device(rm), cuda.to_device(rv))
    if name == "device_weights":
        w, b = rng.standard_normal(C), rng.standard_normal(C)
        call = lambda a, rs, w, b: nbn.group_norm(a, 2, w, b, channel_axis=-1)  # noqa: E731
        args = (cuda.to_device(w), cuda.to_device(b))
        want = call(x, None, w, b)
    else:
        f = _every_op(C, np.random.default_rng(1))[name]
        call = lambda a, rs: f(a, rs)  # noqa: E731
        args = ()
        want = f(x, (rm.copy(), rv.copy()))
    n = _count_host_copies(monkeypatch)
    y = call(cuda.to_device(x), d_rs, *args)
    assert n == {"d2h": 0, "sync": 0}
    assert "_tile_norm" in launches
    two_reads = {"_moments_partial", "_moments_merge", "_finish_prm", "_apply_flat", "_apply_wide"}
    assert not two_reads & set(launches)
    np.testing.assert_allclose(host(y), want, rtol=1e-12, atol=1e-12)
