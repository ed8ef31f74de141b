"""The reduction planner of numbanorm._reduce against NumPy, on every axis subset.

``reduce_moments``, ``apply_affine`` and ``reduce_pnorm`` turn "reduce x over
these axes" into a (P, R, K) view plus Chan merges of small partials.  Each
branch of the planner (trailing short reduced run, kept tail, nothing reduced,
everything reduced, size-1 axes dropped, merges of several reduced runs) is
reached by some axis subset of the shapes below (1-D to 6-D, primes, size-1
axes), and on several memory layouts: C order, transposed, negative strides,
slices.  Channels-last views (a permutation of a C-contiguous array) must be
processed without a copy: ``numbanorm.backends.cpu.ascontiguous`` is patched to
raise for them.
"""

from __future__ import annotations

import itertools
import zlib

import numpy as np
import pytest

import numbanorm as nbn
import numbanorm.backends.cpu as cpu
from numbanorm._reduce import apply_affine, kept_shape, normalize_axis, reduce_moments, reduce_pnorm

SHAPES = [
    (7,),
    (1,),
    (13, 1),
    (3, 1, 5),
    (1, 1, 1),
    (2, 3, 5, 7),
    (1, 13, 1, 2),
    (2, 1, 3, 1, 5),
    (2, 3, 1, 2, 3, 2),
    (600, 3, 5),  # long reduced run + short trailing reduced run (column path)
    (3, 257, 2),  # trailing run just above the short-row limit
    (5, 300),
]


def subsets(ndim):
    for k in range(ndim + 1):
        yield from itertools.combinations(range(ndim), k)


def layouts(base):
    """(name, view) pairs of the same values in different memory layouts."""
    nd = base.ndim
    yield "C", base.copy()
    yield "F", np.asfortranarray(base)
    yield (
        "transposed",
        np.ascontiguousarray(base.transpose(tuple(reversed(range(nd))))).transpose(
            tuple(reversed(range(nd)))
        ),
    )
    yield "negative", np.ascontiguousarray(base[(slice(None, None, -1),) * nd])[(slice(None, None, -1),) * nd]
    # a strided slice of a bigger array: not a permutation of anything contiguous
    big = np.zeros(tuple(2 * n + 1 for n in base.shape), base.dtype)
    sl = tuple(slice(1, 1 + 2 * n, 2) for n in base.shape)
    big[sl] = base
    yield "sliced", big[sl]


def np_moments(x, axes):
    x64 = x.astype(np.float64)
    return (
        np.mean(x64, axis=axes),
        np.var(x64, axis=axes),
        np.min(x64, axis=axes),
        np.max(x64, axis=axes),
    )


def check_moments(x, axes, rtol=1e-12):
    m = reduce_moments(x, axes, skipnan=False, minmax=True)
    mean, var, mn, mx = np_moments(x, axes)
    ks = kept_shape(x.shape, axes)
    n = int(np.prod([x.shape[a] for a in axes])) if axes else 1
    for name, got in zip(("count", "mean", "m2", "min", "max"), m[:5], strict=True):
        assert np.shape(got) == ks, (name, x.shape, axes, np.shape(got))
    np.testing.assert_array_equal(m.count, np.full(ks, float(n)))
    scale = np.abs(x.astype(np.float64)).max() + 1.0
    np.testing.assert_allclose(m.mean, mean, rtol=rtol, atol=rtol * scale)
    np.testing.assert_allclose(m.m2 / m.count, var, rtol=1e-10, atol=1e-12 * scale * scale)
    np.testing.assert_array_equal(m.min, mn)
    np.testing.assert_array_equal(m.max, mx)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_reduce_moments_all_axis_subsets_all_layouts(shape):
    rng = np.random.default_rng(zlib.crc32(repr(shape).encode()))
    base = rng.standard_normal(shape) * 3.0 + 10.0
    for name, x in layouts(base):
        np.testing.assert_array_equal(x, base)
        for axes in subsets(len(shape)):
            try:
                check_moments(x, axes)
            except AssertionError as e:
                raise AssertionError(f"layout={name} shape={shape} axes={axes}: {e}") from None


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (2, 1, 3, 1, 5), (600, 3, 5)], ids=str)
def test_reduce_moments_float32_and_float16(shape):
    rng = np.random.default_rng(3)
    for dt in (np.float32, np.float16):
        x = (rng.standard_normal(shape) + 2.0).astype(dt)
        for axes in subsets(len(shape)):
            check_moments(x, axes, rtol=1e-12)
            check_moments(x.transpose(tuple(reversed(range(len(shape))))), tuple(sorted(axes)))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_apply_affine_all_axis_subsets_all_layouts(shape):
    rng = np.random.default_rng(zlib.crc32(repr(shape).encode()) + 1)
    base = rng.standard_normal(shape)
    for name, x in layouts(base):
        for axes in subsets(len(shape)):
            ks = kept_shape(shape, axes)
            c, s, b = (rng.standard_normal(ks) for _ in range(3))
            keep = [1 if i in axes else n for i, n in enumerate(shape)]
            want = (base - c.reshape(keep)) * s.reshape(keep) + b.reshape(keep)
            out = np.full(shape, np.nan)
            r = apply_affine(x, axes, c, s, b, out=out)
            assert r is out
            np.testing.assert_allclose(out, want, rtol=1e-13, atol=1e-13, err_msg=f"{name} {axes}")
            # clipped, into an output of another layout
            out2 = np.full(shape, np.nan, order="F")
            apply_affine(x, axes, c, s, b, out=out2, lo=-0.5, hi=0.25)
            np.testing.assert_allclose(out2, np.clip(want, -0.5, 0.25), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (3, 1, 5), (2, 3, 1, 2, 3, 2), (600, 3, 5)], ids=str)
def test_apply_affine_in_place(shape):
    rng = np.random.default_rng(2)
    base = rng.standard_normal(shape)
    for axes in subsets(len(shape)):
        ks = kept_shape(shape, axes)
        c, s, b = (rng.standard_normal(ks) for _ in range(3))
        keep = [1 if i in axes else n for i, n in enumerate(shape)]
        want = (base - c.reshape(keep)) * s.reshape(keep) + b.reshape(keep)
        for name, x in layouts(base):  # fresh arrays each time: x is overwritten
            r = apply_affine(x, axes, c, s, b, out=x)
            assert r is x
            np.testing.assert_allclose(x, want, rtol=1e-13, atol=1e-13, err_msg=f"{name} {axes}")


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0, np.inf])
@pytest.mark.parametrize("shape", [(7,), (3, 1, 5), (2, 3, 5, 7), (2, 1, 3, 1, 5), (600, 3, 5)], ids=str)
def test_reduce_pnorm_all_axis_subsets(shape, p):
    rng = np.random.default_rng(4)
    base = rng.standard_normal(shape)
    for name, x in layouts(base):
        for axes in subsets(len(shape)):
            got = reduce_pnorm(x, axes, p)
            if np.isinf(p):
                want = np.max(np.abs(base), axis=axes)
            else:
                want = np.sum(np.abs(base) ** p, axis=axes) ** (1.0 / p)
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=f"{name} {axes}")


def test_reduce_moments_zero_size():
    x = np.empty((3, 0, 4))
    m = reduce_moments(x, (1,), skipnan=False, minmax=True)
    assert m.count.shape == (3, 4)
    np.testing.assert_array_equal(m.count, 0.0)
    assert np.isnan(m.mean).all() and np.isnan(m.m2).all()
    assert np.isnan(m.min).all() and np.isnan(m.max).all()
    m = reduce_moments(x, (0, 2), skipnan=False, minmax=True)
    assert m.mean.shape == (0,)


def test_normalize_axis():
    assert normalize_axis(None, 3) == (0, 1, 2)
    assert normalize_axis(-1, 3) == (2,)
    assert normalize_axis((2, 0), 3) == (0, 2)
    assert normalize_axis(np.int64(1), 3) == (1,)
    with pytest.raises(ValueError, match="axis"):
        normalize_axis(3, 3)
    with pytest.raises(ValueError, match="axis"):
        normalize_axis((0, -3), 3)
    with pytest.raises(TypeError, match="axis"):
        normalize_axis(1.0, 3)
    with pytest.raises(TypeError, match="axis"):
        normalize_axis(True, 3)


# --------------------------------------------------------------------------
# channels-last views: no copy
# --------------------------------------------------------------------------


def _no_copy(monkeypatch):
    def refuse(x):
        raise AssertionError(f"ascontiguous called on a {x.shape} array with strides {x.strides}")

    monkeypatch.setattr(cpu, "ascontiguous", refuse)


CL_SHAPES = {3: (4, 9, 5), 4: (3, 5, 7, 6), 5: (2, 3, 4, 5, 6)}  # (N, *spatial, C) in memory


def channels_last(nd, dtype=np.float64, seed=0):
    """An NC... view of an N...C array: channel axis 1, no axis contiguous in order."""
    rng = np.random.default_rng(seed)
    mem = (rng.standard_normal(CL_SHAPES[nd]) * 2 + 5).astype(dtype)
    perm = (0, nd - 1) + tuple(range(1, nd - 1))
    return mem.transpose(perm)


@pytest.mark.parametrize("nd", [3, 4, 5])
def test_channels_last_reductions_make_no_copy(monkeypatch, nd):
    x = channels_last(nd)
    assert not x.flags.c_contiguous and not x.flags.f_contiguous
    xc = np.ascontiguousarray(x)
    _no_copy(monkeypatch)
    for axes in subsets(nd):
        m = reduce_moments(x, axes, skipnan=False, minmax=True)
        mean, var, mn, mx = np_moments(xc, axes)
        np.testing.assert_allclose(m.mean, mean, rtol=1e-12)
        np.testing.assert_allclose(m.m2 / m.count, var, rtol=1e-10)
        np.testing.assert_array_equal(m.min, mn)
        np.testing.assert_array_equal(m.max, mx)
        got = reduce_pnorm(x, axes, 2.0)
        np.testing.assert_allclose(got, np.sqrt(np.sum(xc * xc, axis=axes)), rtol=1e-12)
        ks = kept_shape(x.shape, axes)
        c = np.arange(np.prod(ks), dtype=np.float64).reshape(ks)
        out = np.empty_like(x)  # same (channels-last) memory layout as x
        apply_affine(x, axes, c, np.full(ks, 2.0), np.zeros(ks), out=out)
        keep = [1 if i in axes else n for i, n in enumerate(x.shape)]
        np.testing.assert_allclose(out, (xc - c.reshape(keep)) * 2.0, rtol=1e-13, atol=1e-13)


def _ref_channel_norm(x, axes, eps):
    x64 = x.astype(np.float64)
    mu = x64.mean(axis=axes, keepdims=True)
    var = x64.var(axis=axes, keepdims=True)
    return (x64 - mu) / np.sqrt(var + eps)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("nd", [3, 4, 5])
def test_channels_last_public_functions_make_no_copy(monkeypatch, nd, dtype):
    x = channels_last(nd, dtype)
    xc = np.ascontiguousarray(x)
    spatial = tuple(range(2, nd))
    tol = dict(rtol=1e-9, atol=1e-9) if dtype == np.float64 else dict(rtol=0, atol=2e-5)
    C = x.shape[1]
    G = 3 if C % 3 == 0 else 1
    _no_copy(monkeypatch)
    got = {
        "batch_norm": nbn.batch_norm(x, training=True, eps=1e-5),
        "instance_norm": nbn.instance_norm(x, eps=1e-5),
        "group_norm": nbn.group_norm(x, G, eps=1e-5),
        "standardize": nbn.standardize(x, axis=(0,) + spatial),
        "minmax_scale": nbn.minmax_scale(x, axis=(0,) + spatial),
        "lp_normalize": nbn.lp_normalize(x, axis=1),
    }
    x64 = xc.astype(np.float64)
    xg = x64.reshape((x.shape[0], G, C // G) + x.shape[2:])
    gn = _ref_channel_norm(xg, tuple(range(2, nd + 1)), 1e-5).reshape(x.shape)
    red = (0,) + spatial
    mn, mx = x64.min(axis=red, keepdims=True), x64.max(axis=red, keepdims=True)
    want = {
        "batch_norm": _ref_channel_norm(x64, red, 1e-5),
        "instance_norm": _ref_channel_norm(x64, spatial, 1e-5),
        "group_norm": gn,
        "standardize": _ref_channel_norm(x64, red, 0.0),
        "minmax_scale": (x64 - mn) / (mx - mn),
        "lp_normalize": x64 / np.sqrt((x64 * x64).sum(axis=1, keepdims=True)),
    }
    for op, y in got.items():
        assert y.dtype == dtype, op
        assert y.shape == x.shape, op
        np.testing.assert_allclose(y.astype(np.float64), want[op], **tol, err_msg=op)
    # channels-last given as channel_axis=-1 on the memory order itself
    mem = xc.transpose((0,) + tuple(range(2, nd)) + (1,))
    y = nbn.batch_norm(mem, training=True, channel_axis=-1)
    np.testing.assert_allclose(
        y.astype(np.float64), _ref_channel_norm(mem.astype(np.float64), tuple(range(nd - 1)), 1e-5), **tol
    )
    y = nbn.group_norm(mem, G, channel_axis=-1)
    perm = (0,) + tuple(range(2, nd)) + (1,)
    np.testing.assert_allclose(y.astype(np.float64), gn.transpose(perm), **tol)
