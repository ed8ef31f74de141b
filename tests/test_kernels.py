"""CPU kernel plumbing: parallel kernels stay parallel, serial twins stay serial."""

from __future__ import annotations

import numpy as np

from numbanorm.backends import cpu


def test_parallel_and_serial_row_kernels_are_distinct_compilations():
    # Two dispatchers built from one py_func share an on-disk cache entry; the
    # serial build was once loaded for large inputs.  Each must keep its own.
    assert cpu._row_norm.py_func is not cpu._row_norm_serial.py_func
    x = np.random.default_rng(0).standard_normal((4, 8))
    w = np.ones((1, 8))
    b = np.zeros((1, 8))
    for k in (cpu._row_norm, cpu._row_norm_serial):
        k(x, np.empty_like(x), w, b, 1e-5, False, np.empty(4), np.empty(4))
    assert cpu._row_norm.targetoptions.get("parallel")
    assert not cpu._row_norm_serial.targetoptions.get("parallel")
    # distinct on-disk cache entries (the index file is named after the function)
    idx = [k._cache._cache_file._index_name for k in (cpu._row_norm, cpu._row_norm_serial)]
    assert idx[0] != idx[1]
