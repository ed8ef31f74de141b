#!/usr/bin/env bash
# One command for a machine with an NVIDIA GPU (issue 4), in stages, all
# within RUN_GPU_BUDGET_S seconds (default 420: well inside 8 minutes):
#   1. env-<gpu>.txt        python, numpy, numba, numba-cuda, CuPy, torch
#                           versions, the device numba sees, nvidia-smi
#                           (driver, name, compute capability); written
#                           first, so a crash later still leaves it
#   2. gpu-tests-<gpu>.txt  every tests/test_cuda*.py with
#                           NUMBA_ENABLE_CUDASIM=0, one pytest per module,
#                           each under its own timeout
#   3. gpu-check-<gpu>.jsonl  benchmarks/gpu_check.py: every op on the GPU at
#                           the benchmark's shapes against CPU numbanorm in
#                           float64, one JSON line per case as it finishes
#   4. cuda-kernels-<gpu>.jsonl  benchmarks/cuda_kernels_bench.py: each CUDA
#                           kernel shape of issue 17 (short/long rows, other
#                           p, channels-last with few and many channels, the
#                           device finish of the statistics ops) as effective
#                           bandwidth over the device-to-device copy of the
#                           same run, torch's time, and the host copies and
#                           synchronisations of one call (NOTES.md section 23
#                           has the static predictions to compare)
#   5. gpu-<gpu>.json/.png  `numbanorm bench --device cuda` (the JSON is
#                           rewritten after every case, "partial": true
#                           until the run completes)
#   6. a summary line with each stage's exit status
# run_gpu-<gpu>.log holds everything printed.  Results go to $OUT when set
# (a remote runner's output folder), else to benchmarks/results/.
# Extra arguments go to `numbanorm bench --device cuda`, e.g. --quick or
# --ops layer_norm,rms_norm.  Needs numba-cuda (pip install "numbanorm[cuda]");
# PyTorch with CUDA and CuPy are used when installed; nothing is downloaded.
# Exit status: 0 when every stage passed; 1 otherwise (also when there is no
# usable GPU: then only stage 1 runs).  A stage cut off by its timeout
# reports 124 (or 137 when it ignored SIGTERM).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

dest="${OUT:-benchmarks/results}"
mkdir -p "$dest" || exit 1
export NUMBA_ENABLE_CUDASIM=0
# numbanorm and its benchmark suite (benchmarks/numbanorm_bench) from this checkout
export PYTHONPATH="$PWD:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
PY="${PYTHON:-python}"
command -v "$PY" > /dev/null 2>&1 || PY=python3

budget="${RUN_GPU_BUDGET_S:-420}"
start=$SECONDS
TEST_CAP=120     # seconds per test module at most
CHECK_CAP=150    # gpu_check.py at most
CHECK_MIN=90     # kept back for the check while the tests run
KERNELS_CAP=120  # cuda_kernels_bench.py at most
KERNELS_MIN=60   # kept back for it while the tests and the check run
BENCH_MIN=120    # kept back for the benchmark while the tests, the check and the kernels run

# min(cap, seconds left in the budget - reserve), or 0 when under 15 s
stage_timeout() {
    local cap=$1 reserve=$2 t
    t=$((budget - (SECONDS - start) - reserve))
    ((t > cap)) && t=$cap
    ((t < 15)) && t=0
    echo "$t"
}

# a file-name-safe device name, from nvidia-smi (no Python, no CUDA context)
gpu=$(timeout 20 nvidia-smi --query-gpu=name --format=csv,noheader 2> /dev/null | head -n 1 |
    tr '[:upper:]' '[:lower:]' | sed -E 's/[^a-z0-9]+/-/g; s/^-+//; s/-+$//')
gpu="${gpu:-no-gpu}"
envf="$dest/env-$gpu.txt"
testsf="$dest/gpu-tests-$gpu.txt"
checkf="$dest/gpu-check-$gpu.jsonl"
kernelsf="$dest/cuda-kernels-$gpu.jsonl"
benchf="$dest/gpu-$gpu.json"
plotf="$dest/gpu-$gpu.png"
logf="$dest/run_gpu-$gpu.log"

stage_env() {
    echo "== 1. environment -> $envf"
    {
        echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "host: $(uname -a)"
        echo "checkout: $(git rev-parse HEAD 2> /dev/null || echo '?')" \
            "($(git status --porcelain 2> /dev/null | wc -l) paths changed)"
        echo "python: $(command -v "$PY")"
        echo "== versions"
        timeout 30 "$PY" - << 'EOF'
import platform, sys
from importlib import metadata
print("python", sys.version.replace("\n", " "), platform.platform())
for dist in ("numpy", "numba", "numba-cuda", "llvmlite", "cuda-bindings", "cuda-python", "nvidia-nvvm",
             "nvidia-cuda-nvcc", "cupy", "cupy-cuda12x", "cupy-cuda13x", "torch", "matplotlib", "pytest"):
    try:
        print(f"{dist} {metadata.version(dist)}")
    except metadata.PackageNotFoundError:
        pass
EOF
        py_rc=$?
        echo "== numba.cuda"
        timeout 30 "$PY" - << 'EOF'
from numba import cuda
print("is_available", cuda.is_available())
if cuda.is_available():
    d = cuda.get_current_device()
    print("device", d.name.decode() if isinstance(d.name, bytes) else d.name,
          "compute_capability", d.compute_capability, "SMs", d.MULTIPROCESSOR_COUNT)
    for what, get in (("driver CUDA", lambda: cuda.cudadrv.driver.driver.get_version()),
                      ("runtime CUDA", lambda: cuda.runtime.get_version()),
                      ("NVVM", lambda: cuda.cudadrv.nvvm.NVVM().get_version())):
        try:
            print(what, get())
        except Exception as e:
            print(what, "unavailable:", type(e).__name__, e)
EOF
        echo "== cupy"
        timeout 30 "$PY" - << 'EOF'
try:
    import cupy
except ImportError as e:
    print("not importable:", e)
else:
    r = cupy.cuda.runtime
    print("cupy", cupy.__version__, "runtime", r.runtimeGetVersion(), "driver", r.driverGetVersion())
EOF
        echo "== torch"
        timeout 30 "$PY" - << 'EOF'
try:
    import torch
except ImportError as e:
    print("not importable:", e)
else:
    ok = torch.cuda.is_available()
    print("torch", torch.__version__, "cuda", torch.version.cuda, "available", ok)
    if ok:
        print("device", torch.cuda.get_device_name(0), "capability", torch.cuda.get_device_capability(0))
EOF
        echo "== nvidia-smi"
        timeout 20 nvidia-smi
        echo "== nvidia-smi --query-gpu"
        timeout 20 nvidia-smi --format=csv \
            --query-gpu=name,driver_version,compute_cap,memory.total,clocks.max.sm,clocks.max.mem,power.limit,pstate
        return "$py_rc"
    } > "$envf" 2>&1
}

stage_tests() {
    echo "== 2. CUDA tests on hardware (NUMBA_ENABLE_CUDASIM=0) -> $testsf"
    : > "$testsf"
    local t to rc note t0 worst=0
    tests_detail=""
    for t in tests/test_cuda*.py; do
        [ -e "$t" ] || continue
        t0=$SECONDS
        to=$(stage_timeout "$TEST_CAP" $((CHECK_MIN + KERNELS_MIN + BENCH_MIN)))
        # (a newline first: a module cut off by its timeout may end mid-line)
        if ((to == 0)); then
            note="not run: no time left in the budget"
            printf '\n== %s: %s\n' "$t" "$note" >> "$testsf"
            rc=124
        else
            printf '\n== %s (timeout %ss)\n' "$t" "$to" >> "$testsf"
            # -o addopts=: the ini's "-n 2" needs xdist; one process per module here
            timeout -k 10 "$to" "$PY" -m pytest "$t" -p no:xdist -p no:cacheprovider -p no:benchmark \
                -o addopts= -q -ra >> "$testsf" 2>&1
            rc=$?
            note=$(tail -n 1 "$testsf")
            ((rc == 124 || rc == 137)) && note="cut off by its timeout"
            # 5 = no tests collected: a module skipped as a whole (e.g. a
            # simulator-only module on hardware) has nothing to fail
            ((rc == 5)) && rc=0 && note="skipped as a whole: $note"
        fi
        echo "   $t: exit $rc, $((SECONDS - t0)) s ($note)"
        tests_detail+=" $(basename "$t" .py)=$rc"
        ((rc != 0)) && worst=$rc
    done
    return "$worst"
}

stage_check() {
    local to
    to=$(stage_timeout "$CHECK_CAP" $((KERNELS_MIN + BENCH_MIN)))
    echo "== 3. correctness at the benchmark's shapes (gpu_check.py, timeout ${to}s) -> $checkf"
    rm -f "$checkf"
    ((to == 0)) && { echo "   not run: no time left in the budget"; return 124; }
    timeout -k 10 "$to" "$PY" benchmarks/gpu_check.py --out "$checkf"
}

stage_kernels() {
    local to
    to=$(stage_timeout "$KERNELS_CAP" "$BENCH_MIN")
    echo "== 4. kernel shapes against the copy (cuda_kernels_bench.py, timeout ${to}s) -> $kernelsf"
    rm -f "$kernelsf"
    ((to == 0)) && { echo "   not run: no time left in the budget"; return 124; }
    timeout -k 10 "$to" "$PY" benchmarks/cuda_kernels_bench.py --out "$kernelsf"
}

stage_bench() {
    local to
    to=$(stage_timeout 100000 5)
    echo "== 5. GPU benchmark (timeout ${to}s) -> $benchf"
    ((to == 0)) && { echo "   not run: no time left in the budget"; return 124; }
    timeout -k 10 "$to" "$PY" -m numbanorm_bench --device cuda --json "$benchf" --plot "$plotf" "$@"
}

main() {
    echo "run_gpu.sh: $gpu, budget ${budget}s, results in $dest"
    stage_env
    env_rc=$?
    echo "   exit $env_rc"
    if ! timeout 30 "$PY" -c "from numba import cuda; import sys; sys.exit(0 if cuda.is_available() else 1)"; then
        echo "run_gpu.sh: no usable CUDA GPU (numba.cuda.is_available() is False); see $envf; nothing else run" >&2
        echo "run_gpu.sh: env $env_rc, tests -, check -, kernels -, bench -; $((SECONDS - start)) s"
        return 1
    fi
    stage_tests
    tests_rc=$?
    stage_check
    check_rc=$?
    echo "   exit $check_rc"
    stage_kernels
    kernels_rc=$?
    echo "   exit $kernels_rc"
    stage_bench "$@"
    bench_rc=$?
    echo "   exit $bench_rc"
    echo "run_gpu.sh: env $env_rc, tests $tests_rc (${tests_detail# }), check $check_rc, kernels $kernels_rc," \
        "bench $bench_rc; $((SECONDS - start)) s; results in $dest"
    ((env_rc == 0 && tests_rc == 0 && check_rc == 0 && kernels_rc == 0 && bench_rc == 0))
}

rm -f "$testsf" "$checkf" "$kernelsf" "$benchf" "$benchf.tmp" "$plotf"
main "$@" 2>&1 | tee "$logf"
exit "${PIPESTATUS[0]}"
