"""numbanorm against PyTorch (CPU), where PyTorch is installed.

Outputs against ``torch.nn.functional``; returned statistics against
``torch.native_batch_norm`` / ``native_layer_norm`` / ``native_group_norm``
(and ``aten._fused_rms_norm`` for the RMS norm's rstd); running statistics
against the tensors PyTorch updates in place.  Shapes, channel axes, momentum
and eps are drawn at random from seeded generators; channels-last inputs are
compared with PyTorch on the permuted (channels-first) tensor.

Tolerances: float64 1e-9 relative, float32 2e-5 absolute on unit-scale outputs
(statistics also 1e-5 relative), float16 1e-2.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import numbanorm as nbn

torch = pytest.importorskip("torch")
F = torch.nn.functional

try:  # tests/ is not a package; make the oracle importable under any import mode
    import reference as ref
except ImportError:  # pragma: no cover - depends on pytest's import mode
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import reference as ref

F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
SEEDS = range(10)
DIMS = (1, 2, 3, 5, 7)


def T(a):
    """A torch tensor holding a copy of ``a`` (None stays None).

    float32 arrays are widened (exactly) to float64: PyTorch's float32 kernels
    are themselves off by up to ~5e-5 on the small, low-variance groups that
    random shapes produce (e.g. batch norm with 2 values per channel), so
    float32 results are held to 2e-5 of PyTorch's semantics evaluated in
    float64 on the very same input values.  How far PyTorch's own float32
    results are from that is measured in benchmarks/accuracy_table.py.
    """
    if a is None:
        return None
    a = np.ascontiguousarray(a).copy()
    if a.dtype == F32:
        a = a.astype(F64)
    return torch.from_numpy(a)


def N(t):
    return t.detach().numpy()


def assert_close(got, exp, dtype, what, relative=False):
    dtype = np.dtype(dtype)
    if dtype == F64:
        rtol, atol = 1e-9, 1e-12
    elif dtype == F32:
        rtol, atol = (1e-5 if relative else 0.0), 2e-5
    else:
        rtol, atol = 1e-2, 1e-2
    got, exp = np.asarray(got), np.asarray(exp)
    assert got.shape == exp.shape, f"{what}: shape {got.shape}, torch {exp.shape}"
    np.testing.assert_allclose(
        got.astype(F64), exp.astype(F64), rtol=rtol, atol=atol, equal_nan=True, err_msg=what
    )


def geometry(seed, *, min_ndim=2, need=None):
    """A random (shape, channel_axis) of 2-5 dims; ``need(shape, ca)`` filters."""
    rng = np.random.default_rng(1000 + seed)
    while True:
        ndim = int(rng.integers(min_ndim, 6))
        shape = tuple(int(d) for d in rng.choice(DIMS, size=ndim))
        axes = [1, -1] + list(range(2, ndim - 1))
        ca = int(rng.choice(axes))
        if need is None or need(shape, ca):
            return rng, shape, ca


def data(rng, shape, dtype):
    return (rng.standard_normal(shape) * 1.5 + 0.3).astype(dtype)


def cf(a, ca):
    """Channels-first view of ``a`` whose channel axis is ``ca``."""
    return np.moveaxis(a, ca, 1)


# --------------------------------------------------------------------------
# batch norm
# --------------------------------------------------------------------------


def _values_per_channel(shape, ca):
    return int(np.prod(shape)) // shape[ca]


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype", [F64, F32], ids=str)
@pytest.mark.parametrize("seed", SEEDS)
def test_batch_norm(seed, dtype, training, affine):
    rng, shape, ca = geometry(seed, need=lambda s, c: _values_per_channel(s, c) > 1)
    c = shape[ca]
    x = data(rng, shape, dtype)
    w = rng.standard_normal(c).astype(dtype) if affine else None
    b = rng.standard_normal(c).astype(dtype) if affine else None
    rm = rng.standard_normal(c).astype(dtype)
    rv = (rng.random(c) + 0.5).astype(dtype)
    momentum = float(rng.choice([0.1, 0.3, 1.0]))
    eps = float(rng.choice([1e-5, 1e-3]))

    trm, trv = T(rm), T(rv)
    ty, tmean, trstd = torch.native_batch_norm(T(cf(x, ca)), T(w), T(b), trm, trv, training, momentum, eps)
    nrm, nrv = rm.copy(), rv.copy()
    y, mean, rstd = nbn.batch_norm(
        x, nrm, nrv, w, b, training, momentum, eps, channel_axis=ca, return_stats=True
    )
    assert_close(cf(y, ca), N(ty), dtype, "batch_norm output")
    assert_close(nrm, N(trm), dtype, "running_mean", relative=True)
    assert_close(nrv, N(trv), dtype, "running_var", relative=True)
    if training:
        assert_close(mean, N(tmean), dtype, "save_mean", relative=True)
        assert_close(rstd, N(trstd), dtype, "save_invstd", relative=True)
    else:  # torch returns empty stats in eval; the stats used are the running ones
        assert_close(mean, rm, dtype, "eval mean")
        assert_close(rstd, 1 / np.sqrt(rv.astype(F64) + eps), dtype, "eval rstd", relative=True)
    # F.batch_norm agrees too (it is the public face of native_batch_norm)
    ty2 = F.batch_norm(T(cf(x, ca)), T(rm), T(rv), T(w), T(b), training, momentum, eps)
    assert_close(cf(y, ca), N(ty2), dtype, "F.batch_norm output")


def test_batch_norm_training_without_running_stats():
    rng = np.random.default_rng(7)
    x = data(rng, (4, 3, 5, 2), F64)
    assert_close(
        nbn.batch_norm(x, training=True),
        N(F.batch_norm(T(x), None, None, training=True)),
        F64,
        "batch_norm, no running stats",
    )


def test_batch_norm_one_value_per_channel_is_value_error_like_torch():
    x = np.ones((1, 3))
    with pytest.raises(ValueError):
        F.batch_norm(T(x), None, None, training=True)
    with pytest.raises(ValueError):
        nbn.batch_norm(x, training=True)


# --------------------------------------------------------------------------
# instance norm
# --------------------------------------------------------------------------


def _spatial(shape, ca):
    return int(np.prod(shape)) // (shape[0] * shape[ca])


@pytest.mark.parametrize("mode", ["input_stats+running", "input_stats", "running"])
@pytest.mark.parametrize("dtype", [F64, F32], ids=str)
@pytest.mark.parametrize("seed", SEEDS)
def test_instance_norm(seed, dtype, mode):
    rng, shape, ca = geometry(seed, min_ndim=3, need=lambda s, c: _spatial(s, c) > 1)
    n, c = shape[0], shape[ca]
    x = data(rng, shape, dtype)
    w = rng.standard_normal(c).astype(dtype)
    b = rng.standard_normal(c).astype(dtype)
    running = mode != "input_stats"
    use_input_stats = mode != "running"
    rm = rng.standard_normal(c).astype(dtype) if running else None
    rv = (rng.random(c) + 0.5).astype(dtype) if running else None
    momentum, eps = 0.2, 1e-5

    trm, trv = T(rm), T(rv)
    ty = F.instance_norm(T(cf(x, ca)), trm, trv, T(w), T(b), use_input_stats, momentum, eps)
    nrm = None if rm is None else rm.copy()
    nrv = None if rv is None else rv.copy()
    y, mean, rstd = nbn.instance_norm(
        x, nrm, nrv, w, b, use_input_stats, momentum, eps, channel_axis=ca, return_stats=True
    )
    assert_close(cf(y, ca), N(ty), dtype, "instance_norm output")
    if running:
        assert_close(nrm, N(trm), dtype, "running_mean", relative=True)
        assert_close(nrv, N(trv), dtype, "running_var", relative=True)
    if use_input_stats:
        # PyTorch computes instance norm as a batch norm of shape (1, N*C, *spatial)
        xr = T(cf(x, ca)).reshape((1, n * c) + tuple(cf(x, ca).shape[2:]))
        _, tmean, trstd = torch.native_batch_norm(xr, None, None, None, None, True, momentum, eps)
        assert_close(mean, N(tmean).reshape(n, c), dtype, "instance mean", relative=True)
        assert_close(rstd, N(trstd).reshape(n, c), dtype, "instance rstd", relative=True)


# --------------------------------------------------------------------------
# layer norm
# --------------------------------------------------------------------------


@pytest.mark.parametrize("affine", ["wb", "w", ""])
@pytest.mark.parametrize("dtype", [F64, F32, F16], ids=str)
@pytest.mark.parametrize("seed", SEEDS)
def test_layer_norm(seed, dtype, affine):
    rng = np.random.default_rng(2000 + seed)
    ndim = int(rng.integers(1, 6))
    shape = tuple(int(d) for d in rng.choice(DIMS, size=ndim))
    k = int(rng.integers(1, ndim + 1))
    ns = shape[ndim - k :]
    x = data(rng, shape, dtype)
    w = rng.standard_normal(ns).astype(dtype) if "w" in affine else None
    b = rng.standard_normal(ns).astype(dtype) if "b" in affine else None
    eps = float(rng.choice([1e-5, 1e-3]))
    if dtype == F16:  # torch CPU half layer norm returns half stats: compare output only
        y = nbn.layer_norm(x, ns, w, b, eps)
        assert_close(y, N(F.layer_norm(T(x), ns, T(w), T(b), eps)), dtype, "layer_norm f16")
        return
    ty, tmean, trstd = torch.native_layer_norm(T(x), list(ns), T(w), T(b), eps)
    y, mean, rstd = nbn.layer_norm(x, ns, w, b, eps, return_stats=True)
    assert_close(y, N(ty), dtype, "layer_norm output")
    assert_close(mean, N(tmean), dtype, "layer_norm mean", relative=True)
    assert_close(rstd, N(trstd), dtype, "layer_norm rstd", relative=True)
    assert_close(y, N(F.layer_norm(T(x), ns, T(w), T(b), eps)), dtype, "F.layer_norm output")


# --------------------------------------------------------------------------
# group norm
# --------------------------------------------------------------------------


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("dtype", [F64, F32], ids=str)
@pytest.mark.parametrize("seed", SEEDS)
def test_group_norm(seed, dtype, affine):
    rng, shape, ca = geometry(seed)
    c = shape[ca]
    shape = shape[: ca % len(shape)] + (2 * c,) + shape[ca % len(shape) + 1 :]  # C even
    c = 2 * c
    groups = [g for g in range(1, c + 1) if c % g == 0]
    g = int(rng.choice(groups))
    x = data(rng, shape, dtype)
    w = rng.standard_normal(c).astype(dtype) if affine else None
    b = rng.standard_normal(c).astype(dtype) if affine else None
    xc = cf(x, ca)
    n, hw = xc.shape[0], int(np.prod(xc.shape[2:]))
    ty, tmean, trstd = torch.native_group_norm(T(xc), T(w), T(b), n, c, hw, g, 1e-5)
    y, mean, rstd = nbn.group_norm(x, g, w, b, 1e-5, channel_axis=ca, return_stats=True)
    assert_close(cf(y, ca), N(ty), dtype, f"group_norm output (G={g})")
    assert_close(mean, N(tmean), dtype, "group_norm mean", relative=True)
    assert_close(rstd, N(trstd), dtype, "group_norm rstd", relative=True)
    if int(np.prod(xc.shape[1:])) // g > 1:  # F.group_norm refuses groups of one value
        assert_close(cf(y, ca), N(F.group_norm(T(xc), g, T(w), T(b), 1e-5)), dtype, "F.group_norm")


# --------------------------------------------------------------------------
# RMS norm
# --------------------------------------------------------------------------


@pytest.mark.parametrize("eps", [None, 1e-6])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("dtype", [F64, F32, F16], ids=str)
@pytest.mark.parametrize("seed", SEEDS)
def test_rms_norm(seed, dtype, affine, eps):
    rng = np.random.default_rng(3000 + seed)
    ndim = int(rng.integers(1, 6))
    shape = tuple(int(d) for d in rng.choice(DIMS, size=ndim))
    k = int(rng.integers(1, ndim + 1))
    ns = shape[ndim - k :]
    # small data, so that the default eps visibly matters
    x = (data(rng, shape, dtype).astype(F64) * (0.05 if dtype == F16 else 1e-3)).astype(dtype)
    w = rng.standard_normal(ns).astype(dtype) if affine else None
    # API.md: eps=None means PyTorch 2.13's default, np.finfo(x.dtype).eps but
    # float32's for float16 input (its internal opmath type; measured:
    # F.rms_norm(half, eps=None) == F.rms_norm(half, eps=1.19e-7)); passed to
    # torch explicitly, as T() widens float32 to float64
    teps = float(np.finfo(F32 if dtype == F16 else dtype).eps) if eps is None else eps
    ty = F.rms_norm(T(x), list(ns), T(w), teps)
    y = nbn.rms_norm(x, ns, w, eps)
    assert_close(y, N(ty), dtype, "rms_norm output")
    fused = getattr(torch.ops.aten, "_fused_rms_norm", None)
    if fused is None or dtype == F16:
        return
    _, trstd = fused(T(x), list(ns), T(w), teps)
    y2, rstd = nbn.rms_norm(x, ns, w, eps, return_stats=True)
    assert_close(rstd, N(trstd), dtype, "rms_norm rstd", relative=True)
    np.testing.assert_array_equal(y2, y)


# --------------------------------------------------------------------------
# Lp normalization
# --------------------------------------------------------------------------


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0, 0.5, np.inf])
@pytest.mark.parametrize("dtype", [F64, F32], ids=str)
@pytest.mark.parametrize("seed", range(5))
def test_lp_normalize(seed, dtype, p):
    rng = np.random.default_rng(4000 + seed)
    ndim = int(rng.integers(1, 6))
    shape = tuple(int(d) for d in rng.choice(DIMS, size=ndim))
    axis = int(rng.integers(-ndim, ndim))
    x = data(rng, shape, dtype)
    ty = F.normalize(T(x), p=float(p), dim=axis, eps=1e-12)
    assert_close(nbn.lp_normalize(x, p, axis), N(ty), dtype, f"lp_normalize p={p} axis={axis}")


def test_lp_normalize_zero_rows_and_eps_like_torch():
    x = np.zeros((3, 4))
    x[1] = 1e-13
    x[2] = [3.0, 0.0, -4.0, 0.0]
    for eps in (1e-12, 1e-3):
        assert_close(nbn.lp_normalize(x, eps=eps), N(F.normalize(T(x), eps=eps)), F64, f"eps={eps}")


# --------------------------------------------------------------------------
# the oracle itself has PyTorch semantics (no numbanorm involved)
# --------------------------------------------------------------------------


def test_oracle_matches_torch():
    rng = np.random.default_rng(5)
    x = data(rng, (3, 4, 5, 6), F64)
    w, b = rng.standard_normal(4), rng.standard_normal(4)
    rm, rv = rng.standard_normal(4), rng.random(4) + 0.5
    for name in ("batch_norm", "instance_norm"):
        trm, trv, orm, orv = T(rm), T(rv), rm.copy(), rv.copy()
        ty = getattr(F, name)(T(x), trm, trv, T(w), T(b), True, 0.3, 1e-5)
        oy = getattr(ref, name)(x, orm, orv, w, b, True, 0.3, 1e-5)
        assert_close(oy, N(ty), F64, name)
        assert_close(orm, N(trm), F64, name + " running_mean")
        assert_close(orv, N(trv), F64, name + " running_var")
    assert_close(ref.group_norm(x, 2, w, b), N(F.group_norm(T(x), 2, T(w), T(b))), F64, "group_norm")
    wl = rng.standard_normal((5, 6))
    assert_close(ref.layer_norm(x, (5, 6), wl), N(F.layer_norm(T(x), (5, 6), T(wl))), F64, "layer_norm")
    assert_close(ref.rms_norm(x * 1e-8, 6), N(F.rms_norm(T(x * 1e-8), [6])), F64, "rms_norm")
    for p in (1, 2, 3.5, np.inf):
        assert_close(ref.lp_normalize(x, p, 1), N(F.normalize(T(x), p=float(p), dim=1)), F64, "lp")


# --------------------------------------------------------------------------
# float32 against PyTorch's own float32 kernels, on well-conditioned groups
# --------------------------------------------------------------------------


def test_float32_against_torch_float32_kernels():
    """Groups of >= 256 unit-scale values: PyTorch float32 is itself within ~1e-6 here."""
    rng = np.random.default_rng(11)

    def t32(a):
        return None if a is None else torch.from_numpy(np.ascontiguousarray(a))

    x = data(rng, (4, 8, 16, 16), F32)
    w, b = rng.standard_normal(8).astype(F32), rng.standard_normal(8).astype(F32)
    rm, rv = np.zeros(8, F32), np.ones(8, F32)
    trm, trv = t32(rm.copy()), t32(rv.copy())
    ty = F.batch_norm(t32(x), trm, trv, t32(w), t32(b), True, 0.1, 1e-5)
    y = nbn.batch_norm(x, rm, rv, w, b, True, 0.1, 1e-5)
    assert_close(y, N(ty), F32, "batch_norm f32")
    assert_close(rm, N(trm), F32, "running_mean f32", relative=True)
    assert_close(rv, N(trv), F32, "running_var f32", relative=True)
    assert_close(
        nbn.instance_norm(x, None, None, w, b),
        N(F.instance_norm(t32(x), None, None, t32(w), t32(b))),
        F32,
        "instance_norm f32",
    )
    assert_close(
        nbn.group_norm(x, 4, w, b), N(F.group_norm(t32(x), 4, t32(w), t32(b))), F32, "group_norm f32"
    )
    xl = data(rng, (8, 512), F32)
    wl = rng.standard_normal(512).astype(F32)
    assert_close(
        nbn.layer_norm(xl, 512, wl), N(F.layer_norm(t32(xl), (512,), t32(wl))), F32, "layer_norm f32"
    )
    assert_close(nbn.rms_norm(xl, 512, wl), N(F.rms_norm(t32(xl), [512], t32(wl))), F32, "rms f32")
    assert_close(nbn.lp_normalize(xl, 2.0, 1), N(F.normalize(t32(xl), dim=1)), F32, "normalize f32")
    # nhwc against torch's channels_last memory format
    xh = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    th = t32(x).contiguous(memory_format=torch.channels_last)
    assert_close(
        np.moveaxis(nbn.batch_norm(xh, training=True, channel_axis=-1), -1, 1),
        N(F.batch_norm(th, None, None, training=True)),
        F32,
        "batch_norm NHWC f32",
    )
