"""Compile-time configuration shared by every kernel: named once, guarded by tests."""

from __future__ import annotations

# LLVM fast-math flags that let reductions vectorize (reassociation, contraction)
# but keep IEEE NaN/Inf semantics: never 'nnan'/'ninf' (they fold `x != x` to
# False and would let NaN escape its group).  Guarded by
# tests/test_config.py::test_fastmath_keeps_nan_semantics.
FASTMATH = frozenset({"reassoc", "contract", "nsz", "arcp"})

# On-disk kernel cache (``__pycache__`` beside the module, or NUMBA_CACHE_DIR).
CACHE = True

# Elements of one row chunk for the exact two-pass moments: small enough to be
# L1/L2-resident so the second pass costs no DRAM traffic.
ROW_CHUNK = 4096

# Target bytes of one cache-resident block in column reductions (rows x lanes).
COL_BLOCK_BYTES = 64 * 1024

# Lanes of the replicated-column layout used when reducing over rows of a
# (rows, K) block: K is replicated m = ceil(LANES / K) times so the inner loop
# is long enough to vectorize even for K = 1..3 channels.
LANES = 64

# Below this many elements a call runs single-threaded-sized work: tasks are
# split so that every thread gets at least this much.
MIN_TASK_ELEMS = 32 * 1024
