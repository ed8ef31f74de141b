"""Compile-time configuration shared by every kernel: named once, guarded by tests."""

from __future__ import annotations

# LLVM fast-math flags that let reductions vectorize (reassociation, contraction)
# but keep IEEE NaN/Inf semantics: never 'nnan'/'ninf' (they fold `x != x` to
# False and would let NaN escape its group).  Guarded by
# tests/test_config.py::test_fastmath_keeps_nan_semantics.
FASTMATH = frozenset({"reassoc", "contract", "nsz", "arcp"})

# Elementwise (map) loops vectorize without reassociation, and must not have
# it: they compute ``(x - mean_hi) - mean_lo`` in x's dtype, which 'reassoc'
# may legally rewrite as ``x - (mean_hi + mean_lo)``, rounding mean_lo away
# (tests/test_accuracy.py holds float32 outputs to 1e-5 at offset 1e6).
FASTMATH_ELEMENTWISE = frozenset({"contract", "nsz"})

# On-disk kernel cache (``__pycache__`` beside the module, or NUMBA_CACHE_DIR).
CACHE = True

# Elements of one row chunk for the exact two-pass moments: small enough to be
# L1/L2-resident so the second pass costs no DRAM traffic.
ROW_CHUNK = 4096

# Bytes of output the row kernels write between software prefetches of the
# next row's matching lines into L1 (backends/cpu/rows.py: _affine_row_for): the next
# row's statistics then read L1, and its DRAM reads overlap this row's
# output.  512 measured best (128-4096 tried, benchmarks/NOTES.md section 15).
PREFETCH_CHUNK_BYTES = 512
# Only rows of at least this many bytes: rows of 4 KiB measured 6-39 % slower
# with the prefetches, rows of 16 and 64 KiB 12-27 % faster.
PREFETCH_MIN_ROW_BYTES = 8 * 1024
# ... and only inputs of at least this many bytes: smaller ones (and their
# output) stay in the last-level cache (32 MiB here), where the next row
# needs no prefetch and the chunks' overhead is all that is left (layer/RMS
# norm with weights at 1-8 MiB 0.55-0.84x the time without the prefetches;
# benchmarks/NOTES.md section 28c)
PREFETCH_MIN_X_BYTES = 16 << 20

# Target bytes of one cache-resident block in column reductions (rows x lanes):
# a refused block is summed again from L2 (1 MiB per core here).  512 KiB read
# 128 MiB of columns in 0.56x the copy's time against 0.58 for 256 KiB
# (fewer per-block folds; benchmarks/NOTES.md section 19).
COL_BLOCK_BYTES = 512 * 1024
# Rows a lane task should have at least (axis_stats.col_split): each task
# finishes every one of its K columns (its accepted shifted sums absorbed,
# ~10 ns a column) and the glue merges each task's partial per column, so a
# task of a few rows costs more in columns than in data.  Below this many
# rows per task, no more tasks than threads: standardize of 64x4096 float32
# 2012 -> 127 us (8 tasks of 8 rows -> 2 of 32), of 256x1024 141 -> 122 us
# (benchmarks/NOTES.md section 28d).  512, not 128: over 10 random inputs
# per shape, 1 MiB standardize took 0.67-0.96x the mean time (1024x256
# 0.75x, 512x512 0.67x); 4 MiB 0.78-1.01x (section 29b).  Fewer tasks
# also mean fewer per-task shifts, each of which can be an outlier that
# sends its task down the exact path.
LANE_TASK_MIN_ROWS = 512

# Lanes of the replicated-column layout used when reducing over rows of a
# (rows, K) block: K is replicated m = ceil(LANES / K) times so the inner loop
# is long enough to vectorize even for K = 1..3 channels.
LANES = 256

# Below this many elements a call runs single-threaded-sized work: tasks are
# split so that every thread gets at least this much.
MIN_TASK_ELEMS = 32 * 1024

# Largest condition number K = sum((x-s)^2) / M2 = 1 + (mean - s)^2 / var that
# the one-pass shifted moments accept (_stats.shifted_moments): their relative
# error is ~ n u K, so at most log2(16) = 4 bits above the two-pass algorithm.
# A chunk that exceeds it (a shift far from the chunk's mean: drifting or
# sorted data, outliers) is redone with the exact two-pass.  A lane task's
# shift per column is the median of its first three values
# (chunks.lane_shifts): the first value alone lay beyond the 3.87 sd this
# allows in ~1e-4 of normal columns, and refused 15 of 120 random 1 MiB
# inputs of 256-1024 columns (NOTES.md section 29b).
SHIFT_MAX_GAIN = 16.0

# Outputs of at least this many bytes are written with streaming
# (non-temporal) stores when their pages are already resident (an out=
# buffer written before; mincore decides): an output that large cannot stay
# in the last-level cache for its reader anyway, and streaming skips the
# read-for-ownership of every destination line (-12 to -15 % into a reused
# out= buffer; benchmarks/NOTES.md section 12).  A fresh output is zeroed
# into the cache by its page faults first, and streaming then writes it
# twice: ordinary stores there (section 13).  Smaller outputs stay cached.
STREAM_MIN_BYTES = 16 << 20

# Rows of at most this many bytes take the software-pipelined row kernel
# (cpu._row_norm_pipe): it keeps two rows cache-resident per thread (the one
# it writes, the one it sums), so both must fit in L2.  Longer rows take the
# row-by-row kernel.  The pipelined kernel streams its output only into an
# out= buffer whose pages are already resident (a fresh page is zeroed into
# the cache by the page fault, and streaming stores then cost a second write).
PIPE_MAX_ROW_BYTES = 256 * 1024

# Bytes of one cache line: streamed spans cover whole, aligned lines only (a
# line written partly by streaming and partly by ordinary stores costs a
# read-modify-write at the memory controller).
LINE_BYTES = 64

# batch_norm training over channels-first rows takes the channel-pipelined
# kernel (cpu._bn_pipe): each thread walks its own channels, and the loop that
# writes channel c sums channel c+1, so x is read from DRAM once (channel c
# was read, and stays cached, while channel c-1 was written).  One channel per
# thread is in flight, so all of them must fit this many bytes (half of this
# machine's 32 MiB L3: 8 MiB channels measured 0.96x the two-pass, 16 MiB
# ones 1.06x).  Rows shorter than CHAN_PIPE_MIN_ROW_BYTES keep the two-pass
# (each row of a channel is a separate stretch of memory; rows of 1 KiB ran
# 1.25-1.76x the two-pass's time, 2 KiB 0.96x, 4 KiB 0.64-0.81x;
# benchmarks/NOTES.md section 16).
CHAN_PIPE_CACHE_BYTES = 16 << 20
CHAN_PIPE_MIN_ROW_BYTES = 2048

# Rows shorter than this go several to a task (the row moments, the rows
# apply, the fused row kernel): a task costs ~70 ns to launch, so 2048 rows
# of 128, a task each, took 102-190 us where a copy of the same bytes took
# 20 us (benchmarks/NOTES.md section 27).
ROW_TASK_MIN_ELEMS = 8192
# ... and many long rows go several to a task too, so that a launch has about
# ROW_TASKS_PER_THREAD tasks a thread: one 64 KiB row per task call took
# 1.03-1.09x the time of blocks of rows in a streaming apply of 128 MiB at
# 2 threads (the calls themselves cost 13 ns each; benchmarks/NOTES.md
# section 31).  Enough per thread that a thread held up elsewhere still
# leaves work to share.
ROW_TASKS_PER_THREAD = 8
