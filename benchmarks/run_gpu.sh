#!/usr/bin/env bash
# One command for a machine with an NVIDIA GPU (issue 4): the CUDA tests on
# real hardware, then the GPU benchmark.  Results go to $OUT when set (e.g. a
# remote runner's output folder), else to benchmarks/results/:
#   gpu-tests-<gpu>.txt  nvidia-smi-<gpu>.txt  gpu-<gpu>.json  gpu-<gpu>.png
# Extra arguments go to `numbanorm bench --device cuda`, e.g. --quick or
# --ops layer_norm,rms_norm.  Needs numba-cuda (pip install "numbanorm[cuda]");
# PyTorch with CUDA and CuPy are used when installed.
# Exit status: 0 when the tests pass and the benchmark ran without failures.
set -uo pipefail
cd "$(dirname "$0")/.."
dest="${OUT:-benchmarks/results}"
mkdir -p "$dest"
export NUMBA_ENABLE_CUDASIM=0
# numbanorm and its benchmark suite (benchmarks/numbanorm_bench) from this checkout
export PYTHONPATH="$PWD:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}"

if ! python -c "from numba import cuda; import sys; sys.exit(0 if cuda.is_available() else 1)"; then
    echo "run_gpu.sh: no usable CUDA GPU (numba.cuda.is_available() is False); nothing run" >&2
    exit 1
fi
gpu=$(python -c "
import re
from numba import cuda
n = cuda.get_current_device().name
n = n.decode() if isinstance(n, bytes) else str(n)
print(re.sub(r'[^a-z0-9]+', '-', n.lower()).strip('-'))
")
nvidia-smi > "$dest/nvidia-smi-$gpu.txt" 2>&1 || true

echo "== CUDA tests on $gpu (NUMBA_ENABLE_CUDASIM=0)"
python -m pytest tests/test_cuda.py -q 2>&1 | tee "$dest/gpu-tests-$gpu.txt"
tests_rc=${PIPESTATUS[0]}

echo "== GPU benchmark on $gpu"
python -m numbanorm_bench --device cuda --json "$dest/gpu-$gpu.json" --plot "$dest/gpu-$gpu.png" "$@"
bench_rc=$?

echo "run_gpu.sh: tests exit $tests_rc, benchmark exit $bench_rc; results in $dest"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
