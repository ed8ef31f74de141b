"""Both backends satisfy the written contract of numbanorm.backends.Backend
exactly: the same primitives with the same parameters, the same return
tuples (the mean residual included), and the same results on one input.

The CUDA backend runs in numba's CUDA simulator without a GPU
(tests/conftest.py)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from numbanorm import backends
from numbanorm.backends import Backend, Moments
from numbanorm.backends import cpu as cpu_backend

PRIMITIVES = [
    name for name, member in inspect.getmembers(Backend, inspect.isfunction) if not name.startswith("_")
]


def _backends():
    out = [pytest.param(cpu_backend, id="cpu")]
    try:
        from numba import cuda  # noqa: F401

        from numbanorm.backends import cuda as cuda_backend
    except Exception as e:  # no numba-cuda, or no GPU and no simulator
        out.append(pytest.param(None, id="cuda", marks=pytest.mark.skip(reason=str(e))))
    else:
        out.append(pytest.param(cuda_backend, id="cuda"))
    return out


@pytest.fixture(autouse=True)
def _small_cuda_launches(monkeypatch):
    """Small CUDA launches (the simulator runs a thread per CUDA thread)."""
    try:
        from numbanorm.backends import cuda as cb
    except Exception:
        return
    small = dict(THREADS=16, WARP_LAUNCH=8, BLOCKS_TARGET=4, ROW_GROUP=4, ROW_WARP_MAX_D=8, ROW_BLOCK=8)
    for name, val in small.items():
        monkeypatch.setattr(cb, name, val)


def _params(fn, drop_self):
    ps = list(inspect.signature(fn).parameters.values())
    if drop_self:
        ps = ps[1:]
    return [(p.name, p.kind, p.default) for p in ps]


def test_the_contract_names_every_primitive():
    assert {"moments", "apply", "row_norm", "pnorm", "ascontiguous", "empty", "to_host", "from_host"} <= set(
        PRIMITIVES
    )


@pytest.mark.parametrize("be", _backends())
def test_backend_has_every_primitive_with_the_contract_signature(be):
    assert isinstance(be, Backend)
    assert isinstance(be.NAME, str) and isinstance(be.ROW_NORM_GROUPED, bool)
    for name in PRIMITIVES:
        got = _params(getattr(be, name), drop_self=False)
        want = _params(getattr(Backend, name), drop_self=True)
        assert got == want, f"{be.NAME}.{name}: {got} != {want}"


def _device(be, a):
    return be.from_host(np.ascontiguousarray(a))


@pytest.mark.parametrize("be", _backends())
@pytest.mark.parametrize("minmax", [False, True])
def test_moments_return_the_contract_tuple(be, minmax):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 40, 3)) + 1e6
    x[1, 7, 2] = np.nan
    got = be.moments(_device(be, x), True, minmax)
    assert isinstance(got, Moments) and len(got) == 6
    for name in ("count", "mean", "m2", "resid") + (("min", "max") if minmax else ()):
        a = getattr(got, name)
        assert isinstance(a, np.ndarray) and a.dtype == np.float64 and a.shape == (2, 3), name
    if not minmax:
        assert got.min is None and got.max is None
    x64 = np.where(np.isnan(x), np.nan, x)
    np.testing.assert_array_equal(got.count, (~np.isnan(x)).sum(axis=1))
    np.testing.assert_allclose(got.mean + got.resid, np.nanmean(x64, axis=1), rtol=1e-15)
    np.testing.assert_allclose(got.m2 / got.count, np.nanvar(x64, axis=1), rtol=1e-9)
    # the residual is a rounding residual: at most an ulp of the mean
    assert np.all(np.abs(got.resid) <= np.spacing(np.abs(got.mean)))
    if minmax:
        np.testing.assert_array_equal(got.min, np.nanmin(x64, axis=1))
        np.testing.assert_array_equal(got.max, np.nanmax(x64, axis=1))
    # min/max alone: exact counts and bounds
    mm = be.moments(_device(be, x), True, True, False)
    np.testing.assert_array_equal(mm.count, got.count)
    np.testing.assert_array_equal(mm.min, np.nanmin(x64, axis=1))


@pytest.mark.parametrize("be", _backends())
@pytest.mark.parametrize("stat", ["layer", "rms", "p2", "p1"])
def test_row_norm_statistics_encoding(be, stat):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((5, 12))
    w = rng.uniform(0.5, 1.5, (1, 12))
    b = rng.uniform(-1, 1, (1, 12))
    rms = stat == "rms"
    p = {"p2": 2.0, "p1": 1.0}.get(stat)
    if p is not None:
        w, b = np.ones((1, 1)), np.zeros((1, 1))
    out = be.empty(x.shape, x.dtype, like=_device(be, x))
    mean, rstd = map(be.to_host, be.row_norm(_device(be, x), out, w, b, 1e-5, rms, p))
    y = be.to_host(out)
    assert mean.shape == rstd.shape == (5,) and mean.dtype == rstd.dtype == np.float64
    if stat == "layer":
        em, er = x.mean(1), 1 / np.sqrt(x.var(1) + 1e-5)
    elif stat == "rms":
        em, er = np.zeros(5), 1 / np.sqrt((x * x).mean(1) + 1e-5)
    else:
        em, er = np.zeros(5), 1 / np.maximum(np.linalg.norm(x, p, axis=1), 1e-5)
    np.testing.assert_allclose(mean, em, atol=1e-12)
    np.testing.assert_allclose(rstd, er, rtol=1e-12)
    np.testing.assert_allclose(y, (x - em[:, None]) * er[:, None] * w + b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("be", _backends())
def test_apply_and_pnorm(be):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 9, 4))
    c, s, t = (rng.standard_normal((2, 4)) for _ in range(3))
    out = be.empty(x.shape, x.dtype, like=_device(be, x))
    be.apply(_device(be, x), out, c, s, t, -1.0, 1.0)
    np.testing.assert_allclose(be.to_host(out), np.clip((x - c[:, None]) * s[:, None] + t[:, None], -1, 1))
    for p in (1.0, 2.0, 3.0, np.inf):
        np.testing.assert_allclose(be.pnorm(_device(be, x), p), np.linalg.norm(x, p, axis=1), rtol=1e-12)


def test_backend_for_dispatches_by_type():
    assert backends.backend_for(np.zeros(3)) is cpu_backend
