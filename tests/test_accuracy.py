"""The hard-data bar of issue 2: exact on data whose mean is large next to its spread.

float32 inputs ``offset + randn`` (offset 1e2, 1e4, 1e6) must give normalized
outputs within 1e-5 (absolute) of a float64 reference computed from the very
same float32 values (tests/reference.py), for groups of 64 up to 10^6 elements
(layer_norm, instance_norm, group_norm, standardize, batch_norm) and for
batch_norm / standardize reductions over >= 10^7 elements per channel.

For scale: float32 spacing at 1e6 is 0.0625, so a mean rounded to float32, or a
variance formed as E[x^2] - E[x]^2, is off by far more than the bar;
``test_naive_formula_fails_the_bar`` shows that this test would catch it.
RMS norm and Lp normalization do not centre the data and are not part of the bar.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import numbanorm as nbn

try:  # tests/ is not a package; make the oracle importable under any import mode
    import reference as ref
except ImportError:  # pragma: no cover - depends on pytest's import mode
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import reference as ref

OFFSETS = [1e2, 1e4, 1e6]
BAR = 1e-5


def hard(shape, offset, seed=0):
    """float32 ``offset + randn``: the values every comparison starts from."""
    rng = np.random.default_rng(seed)
    return np.float32(offset) + rng.standard_normal(shape, dtype=np.float32)


def check_bar(y, exp, what):
    """Max abs error of the normalized output against the float64 oracle <= 1e-5."""
    y = np.asarray(y)
    assert y.shape == exp.shape, f"{what}: shape {y.shape}, expected {exp.shape}"
    assert np.all(np.isfinite(y)), f"{what}: non-finite output"
    err = float(np.max(np.abs(y.astype(np.float64) - exp)))
    assert err <= BAR, f"{what}: max abs error {err:.3g} > {BAR:g}"
    return err


def check_stats(got, exp, what):
    """Returned mean / rstd: the float32 rounding of the exact value (1e-6 relative)."""
    for name, g, e in zip(("mean", "rstd"), got, exp, strict=True):
        np.testing.assert_allclose(np.asarray(g, dtype=np.float64), e, rtol=1e-6, err_msg=f"{what} {name}")


# (op, shape, kwargs): group sizes from 64 to 10^6 elements
CASES = [
    ("layer_norm", (256, 64), dict(normalized_shape=64)),
    ("layer_norm", (4, 8, 8), dict(normalized_shape=(8, 8))),
    ("layer_norm", (16, 4099), dict(normalized_shape=4099)),
    ("layer_norm", (2, 10**6), dict(normalized_shape=10**6)),
    ("instance_norm", (4, 8, 64), dict()),
    ("instance_norm", (2, 64, 3), dict(channel_axis=-1)),
    ("instance_norm", (1, 2, 10**6), dict()),
    ("group_norm", (4, 8, 16), dict(num_groups=2)),
    ("group_norm", (2, 1000, 8), dict(num_groups=4, channel_axis=-1)),
    ("group_norm", (1, 4, 500_000), dict(num_groups=2)),
    ("standardize", (64, 16), dict(axis=0)),
    ("standardize", (4, 3, 64, 64), dict(axis=(0, 2, 3))),
    ("standardize", (10**6, 2), dict(axis=0)),
    ("batch_norm", (64, 4), dict(training=True)),
    ("batch_norm", (16, 4, 64, 64), dict(training=True)),
    ("batch_norm", (10**6, 3), dict(training=True, channel_axis=-1)),
]


@pytest.mark.parametrize("offset", OFFSETS, ids=lambda o: f"offset{o:.0e}")
@pytest.mark.parametrize("op, shape, kw", CASES, ids=[f"{o}-{s}" for o, s, _ in CASES])
def test_hard_data(op, shape, kw, offset):
    x = hard(shape, offset)
    x_before = x.copy()
    got = getattr(nbn, op)(x, **kw, return_stats=True)
    exp = getattr(ref, op)(x, **kw, return_stats=True)
    assert got[0].dtype == np.float32
    check_bar(got[0], exp[0], f"{op}{shape} offset {offset:g}")
    if op == "standardize":  # (y, mean, std): compare mean and 1/std
        check_stats((got[1], 1.0 / np.asarray(got[2], np.float64)), (exp[1], 1.0 / exp[2]), op)
    else:
        check_stats(got[1:], exp[1:], op)
    np.testing.assert_array_equal(x, x_before)


@pytest.mark.parametrize("offset", OFFSETS, ids=lambda o: f"offset{o:.0e}")
def test_hard_data_running_stats(offset):
    """Running statistics (unbiased var, float32 storage) are as exact as the outputs."""
    x = hard((32, 4, 1024), offset, seed=1)
    rm = np.full(4, np.float32(offset))
    rv = np.ones(4, np.float32)
    rm_e, rv_e = rm.astype(np.float64), rv.astype(np.float64)
    y = nbn.batch_norm(x, rm, rv, training=True, momentum=0.1)
    e = ref.batch_norm(x, rm_e, rv_e, training=True, momentum=0.1)
    check_bar(y, e, "batch_norm with running stats")
    np.testing.assert_allclose(rm, rm_e, rtol=1e-7, err_msg="running_mean")
    np.testing.assert_allclose(rv, rv_e, rtol=1e-6, err_msg="running_var")
    # instance_norm's running stats (mean over the batch of per-instance stats)
    rm = np.full(4, np.float32(offset))
    rv = np.ones(4, np.float32)
    rm_e, rv_e = rm.astype(np.float64), rv.astype(np.float64)
    y = nbn.instance_norm(x, rm, rv, momentum=0.5)
    e = ref.instance_norm(x, rm_e, rv_e, momentum=0.5)
    check_bar(y, e, "instance_norm with running stats")
    np.testing.assert_allclose(rm, rm_e, rtol=1e-7, err_msg="instance running_mean")
    np.testing.assert_allclose(rv, rv_e, rtol=1e-6, err_msg="instance running_var")


# --------------------------------------------------------------------------
# reductions over >= 10^7 elements per channel
# --------------------------------------------------------------------------


def _big_batch_norm(offset):
    # channels-first, 10 x 10^6 = 10^7 values per channel
    x = hard((10, 2, 10**6), offset, seed=2)
    rm, rv = np.zeros(2, np.float32), np.ones(2, np.float32)
    rm_e, rv_e = np.zeros(2), np.ones(2)
    y, mean, rstd = nbn.batch_norm(x, rm, rv, training=True, momentum=1.0, return_stats=True)
    e, emean, erstd = ref.batch_norm(x, rm_e, rv_e, training=True, momentum=1.0, return_stats=True)
    del x
    check_bar(y, e, f"batch_norm 1e7/channel offset {offset:g}")
    check_stats((mean, rstd), (emean, erstd), "batch_norm 1e7/channel")
    np.testing.assert_allclose(rv, rv_e, rtol=1e-6, err_msg="running_var over 1e7 values")


@pytest.mark.parametrize("offset", OFFSETS, ids=lambda o: f"offset{o:.0e}")
def test_big_batch_norm(offset):
    """10^7 values per channel (~1-4 s each here, so not marked slow)."""
    _big_batch_norm(offset)


@pytest.mark.parametrize("offset", OFFSETS, ids=lambda o: f"offset{o:.0e}")
def test_big_standardize(offset):
    """Per-column standardize of a (10^7, 1) column."""
    x = hard((10**7, 1), offset, seed=3)
    y, mean, std = nbn.standardize(x, return_stats=True)
    e, emean, estd = ref.standardize(x, return_stats=True)
    del x
    check_bar(y, e, f"standardize 1e7 offset {offset:g}")
    check_stats((mean, 1.0 / np.asarray(std, np.float64)), (emean, 1.0 / estd), "standardize 1e7")


# --------------------------------------------------------------------------
# the bar has teeth
# --------------------------------------------------------------------------


def _naive_layer_norm(x, acc_dtype, eps=1e-5):
    """One-pass sum / sum-of-squares variance, E[x^2] - E[x]^2 (what numbanorm must not do)."""
    xa = x.astype(acc_dtype)
    mean = xa.mean(axis=-1, keepdims=True, dtype=acc_dtype)
    var = (xa * xa).mean(axis=-1, keepdims=True, dtype=acc_dtype) - mean * mean
    with np.errstate(invalid="ignore"):
        return ((xa - mean) / np.sqrt(np.maximum(var, 0) + eps)).astype(x.dtype)


@pytest.mark.parametrize("offset", OFFSETS, ids=lambda o: f"offset{o:.0e}")
def test_naive_formula_fails_the_bar(offset):
    """E[x^2] - E[x]^2 in float32 misses the bar at every offset: the check can fail."""
    x = hard((16, 4099), offset, seed=4)
    exp = ref.layer_norm(x, 4099)
    with pytest.raises(AssertionError, match="max abs error"):
        check_bar(_naive_layer_norm(x, np.float32), exp, "naive float32")
    # and numbanorm, on the same data, passes it
    check_bar(nbn.layer_norm(x, 4099), exp, "numbanorm")


def test_naive_formula_fails_even_in_float64():
    """At offset 1e6 with rows of 10^6, even float64 E[x^2] - E[x]^2 misses the bar (~2e-4)."""
    x = hard((1, 10**6), 1e6, seed=5)
    exp = ref.layer_norm(x, 10**6)
    with pytest.raises(AssertionError, match="max abs error"):
        check_bar(_naive_layer_norm(x, np.float64).astype(np.float64), exp, "naive float64")


def test_float32_mean_fails_the_bar():
    """Centring with a mean rounded to float32 (exact variance) also misses the bar at 1e6."""
    x = hard((4, 4099), 1e6, seed=6)
    exp = ref.layer_norm(x, 4099)
    x64 = x.astype(np.float64)
    mean32 = x64.mean(axis=-1, keepdims=True).astype(np.float32)
    rstd = 1.0 / np.sqrt(x64.var(axis=-1, keepdims=True) + 1e-5)
    y = ((x - mean32) * rstd).astype(np.float32)
    with pytest.raises(AssertionError, match="max abs error"):
        check_bar(y, exp, "float32 mean")
