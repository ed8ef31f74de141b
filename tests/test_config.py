"""The fastmath flag set of numbanorm._config keeps IEEE NaN/Inf semantics.

``nnan``/``ninf`` (and ``fastmath=True``, which implies them) let LLVM fold
``x != x`` to False: a NaN would then leak out of its normalization group or be
silently dropped by the NaN-skipping reductions.
"""

from __future__ import annotations

import numpy as np
from numba import njit

import numbanorm as nbn
from numbanorm import _config


def test_fastmath_keeps_nan_semantics():
    fm = _config.FASTMATH
    assert fm is not True
    assert not isinstance(fm, bool)
    flags = set(fm)
    for bad in ("nnan", "ninf", "fast"):
        assert bad not in flags, f"FASTMATH contains {bad!r}"
    assert flags <= {"reassoc", "contract", "nsz", "arcp", "afn"}, flags

    @njit(fastmath=set(fm))
    def count_nan(v):
        n = 0
        for i in range(v.shape[0]):
            a = v[i]
            if a != a:
                n += 1
        return n

    @njit(fastmath=set(fm))
    def has_inf(v):
        for i in range(v.shape[0]):
            if v[i] == np.inf or v[i] == -np.inf:
                return True
        return False

    v = np.array([1.0, np.nan, 2.0, np.nan, np.inf])
    assert count_nan(v) == 2
    assert count_nan(v[[0, 2, 4]]) == 0
    assert has_inf(v)
    assert not has_inf(v[:4])

    # a NaN in one row of layer_norm stays in that row
    x = np.random.default_rng(0).standard_normal((5, 33))
    clean = nbn.layer_norm(x, 33)
    x[2, 7] = np.nan
    y = nbn.layer_norm(x, 33)
    assert np.isnan(y[2]).all()
    rows = [0, 1, 3, 4]
    assert np.isfinite(y[rows]).all()
    np.testing.assert_array_equal(y[rows], clean[rows])
