"""numbanorm's benchmark suite, behind ``numbanorm bench``.

Every op is timed against the physical limit of the machine, the *copy
floor*: one read and one write of the bytes of ``x``, measured in the same
run as the fastest of ``np.copyto`` and two ``prange`` copy kernels, one
with ordinary and one with streaming (non-temporal) stores (on a GPU: a
device-to-device copy).  Throughput is reported in GB/s with
``bytes = x.nbytes (read) + y.nbytes (written)``, whatever the op reads in
between, so ``time / floor`` says how far an op is from the bandwidth limit.

Peers, each measured on ordinary allocating calls with the same thread count:
the NumPy baselines of :mod:`numbanorm_bench.numpy_ops` and PyTorch's
``torch.nn.functional`` when torch is installed.  All candidates of one case
are interleaved in every repetition (rotating the order), so machine drift
hits all alike, and the reported time is the median of the repetitions after
warm-up.  Targets are those of issues 3 (CPU) and 4 (CUDA).

The suite lives in ``benchmarks/numbanorm_bench`` of the source tree and
installs beside numbanorm (pyproject.toml); ``numbanorm bench`` reaches it
through ``numbanorm/_bench.py``.  One module per concern:

================ ============================================================================
``cases``        the ops, shapes, targets and call arguments; the torch peers
``timing``       interleaved sampling and the guard against other processes
``floors``       the copy kernels of the CPU and GPU floors
``numpy_ops``    the NumPy baselines
``cpu``          the CPU runner (every section: throughput, latency, the rest below)
``medium``       medium sizes (64 KiB-8 MiB) and small inputs vs ONNX Runtime, PyTorch, floor
``onnx_peer``    the ONNX Runtime peer: single-node models, checked against numbanorm
``busy``         the busy neighbour of ``--busy`` (idle vs busy, interleaved)
``scaler_calls`` per-call times of the scalers
``cuda``         the CUDA runner
``startup``      start-up of a new process (warm and cold kernel cache)
``cold``         ``--cold``: first calls of every op in fresh processes and caches
``machine``      host, CPU, library versions, load average
``report``       result records, the printed table, JSON definitions, Markdown
``plot``         the throughput / floor figure
``cli``          the ``numbanorm bench`` command line
================ ============================================================================

Run ``numbanorm bench --help`` or see ``benchmarks/README.md``.
"""
