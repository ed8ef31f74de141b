"""The statistics core (numbanorm._stats): exactness that fast-math must not break."""

from __future__ import annotations

import os
import sys
from fractions import Fraction

from numba import njit

from numbanorm._config import FASTMATH
from numbanorm._reduce import reduce_moments
from numbanorm._stats import chan_merge, chan_merge_dd, shifted_moments, two_prod, two_sum

try:  # tests/ is not a package: the oracle importable under any import mode
    from reference import exact_moments
except ImportError:  # pragma: no cover - depends on pytest's import mode
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from reference import exact_moments


@njit(fastmath=set(FASTMATH))
def _fast_caller(a, b):
    # a fast-math caller: numba would hand its flags to callees without their own
    return two_sum(a, b)


@njit(fastmath=set(FASTMATH))
def _fast_prod(a, b):
    return two_prod(a, b)


def test_two_sum_exact_inside_fastmath_kernel():
    for a, b in [(1e6, 1e-11), (1.0, 2.0**-60), (-3.5e15, 0.1)]:
        s, e = _fast_caller(a, b)
        assert Fraction(s) + Fraction(e) == Fraction(a) + Fraction(b)
        assert two_sum(a, b) == (s, e)


def _exact(v):
    """(mean, M2) of v exactly, as Fractions (reference.exact_moments)."""
    return exact_moments(v)[1:]


def test_moments_residual_is_exact(rng):
    x = 1e6 + rng.standard_normal((37, 3))
    m = reduce_moments(x, (0,), skipnan=True, minmax=False)
    for j in range(3):
        em, eq = _exact(x[:, j])
        assert abs(float(Fraction(m.mean[j]) + Fraction(m.resid[j]) - em)) < 1e-20
        assert abs(float(Fraction(m.m2[j]) - eq)) <= 1e-15 * float(eq)


def test_compensated_merge_of_many_small_chunks(rng):
    """Chunks of 11 rows of 1e6 + randn: the plain merge loses ~1e-11, the
    compensated one stays at rounding of the result."""
    x = 1e6 + rng.standard_normal(1001)
    plain = (0.0, 0.0, 0.0)
    comp = (0.0, 0.0, 0.0, 0.0)
    for i in range(0, x.size, 11):
        m = reduce_moments(x[i : i + 11], (0,), skipnan=False, minmax=False)
        plain = chan_merge(*plain, float(m.count), float(m.mean), float(m.m2))
        comp = chan_merge_dd(*comp, float(m.count), float(m.mean), float(m.resid), float(m.m2))
    em, eq = _exact(x)
    err_comp = abs(float(Fraction(comp[3]) - eq)) / float(eq)
    err_plain = abs(float(Fraction(plain[2]) - eq)) / float(eq)
    assert err_comp < 1e-14
    assert abs(float(Fraction(comp[1]) + Fraction(comp[2]) - em)) < 1e-15
    assert err_plain > 10 * err_comp  # the test can tell the two apart


def test_two_prod_exact_inside_fastmath_kernel():
    for a, b in [(0.1, 3.0), (1e6 / 3, 37.0), (-(2.0**30) + 1, 1.0 / 3), (123456.789, 1e-7)]:
        p, e = _fast_prod(a, b)
        assert Fraction(p) + Fraction(e) == Fraction(a) * Fraction(b)
        assert two_prod(a, b) == (p, e)


def test_shifted_moments_mean_and_m2_exact(rng):
    # data on one grid (1e6 + randn in float64): the shifted sums are exact,
    # so the mean (with its residual) is exact to the residual's rounding
    x = 1e6 + rng.standard_normal(101)
    shift = float(x[0])
    d = [Fraction(float(a)) - Fraction(shift) for a in x]
    s1 = float(sum(d))
    s2 = float(sum(t * t for t in d))
    hi, lo, m2 = shifted_moments(101.0, shift, s1, s2)
    em, eq = _exact(x)
    assert abs(float(Fraction(hi) + Fraction(lo) - em)) < 1e-20
    assert abs(float(Fraction(m2) - eq)) <= 1e-15 * float(eq)
