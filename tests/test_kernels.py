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
    cpu._row_norm(x, np.empty_like(x), w, b, 1e-5, 0.0, np.empty(4), np.empty(4), False)
    cpu._row_norm_serial(x, np.empty_like(x), w, b, 1e-5, 0.0, np.empty(4), np.empty(4))
    assert cpu._row_norm.targetoptions.get("parallel")
    assert not cpu._row_norm_serial.targetoptions.get("parallel")
    # distinct on-disk cache entries (the index file is named after the function)
    idx = [k._cache._cache_file._index_name for k in (cpu._row_norm, cpu._row_norm_serial)]
    assert idx[0] != idx[1]


def test_few_long_rows_take_the_segmented_path_correctly():
    # 3 rows of 70000: more work than rows for the threads, so each row is
    # split into segments (mean stays 0 for RMS and p-norms there)
    import numbanorm as nbn

    x = np.random.default_rng(1).standard_normal((3, 70000)) + 2.0
    for _ in range(2):  # fresh scratch arrays each call
        np.testing.assert_allclose(
            nbn.lp_normalize(x, np.inf), x / np.abs(x).max(-1, keepdims=True), rtol=1e-12
        )
        np.testing.assert_allclose(
            nbn.rms_norm(x, 70000, eps=0.0), x / np.sqrt((x * x).mean(-1, keepdims=True)), rtol=1e-10
        )
        ref = (x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True)
        np.testing.assert_allclose(nbn.layer_norm(x, 70000, eps=0.0), ref, rtol=1e-9, atol=1e-12)
