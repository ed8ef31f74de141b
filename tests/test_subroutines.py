"""numbanorm/_cache.py's subroutine(): helpers that only compiled code calls
are compiled without numba's Python and C-callback wrappers, and still work
when Python calls them (tests, the CUDA simulator's kernels)."""

from __future__ import annotations

import numpy as np
from numba import njit

from numbanorm import _cache, _stats
from numbanorm._cache import Subroutine, kernel, subroutine
from numbanorm.backends.cpu import chunks


@subroutine(fastmath=False)
def _sum_diff(a, b):
    return a + b, a - b


@njit
def _caller(a, b):
    s, d = _sum_diff(a, b)
    return s * d


@kernel()
def _kernel_caller(a, b):
    return _sum_diff(a, b)[0]


def _has_wrapper(disp, name):
    """Whether disp's only signature was compiled with wrapper ``name``
    ("cpython" or "cfunc"): a function of that name is defined in its IR."""
    (sig,) = disp.signatures
    cres = disp.overloads[sig]
    wrapper = getattr(cres.fndesc, f"llvm_{name}_wrapper_name")
    return any(f.name == wrapper and not f.is_declaration for f in cres.library._final_module.functions)


def test_a_subroutine_has_no_wrappers_and_python_calls_its_twin():
    assert _caller(3.0, 2.0) == 5.0
    assert not _has_wrapper(_sum_diff, "cpython")
    assert not _has_wrapper(_sum_diff, "cfunc")
    if _cache._LIBRARIES:  # IR for callers, no machine code of its own
        (sig,) = _sum_diff.signatures
        lib = _sum_diff.overloads[sig].library
        assert isinstance(lib, _cache._LinkOnlyLibrary)
        assert lib.get_pointer_to_function(_sum_diff.overloads[sig].fndesc.llvm_func_name) == 0
    assert "_twin" not in _sum_diff.__dict__
    assert _sum_diff(3.0, 2.0) == (5.0, 1.0)
    twin = _sum_diff._twin
    assert _has_wrapper(twin, "cpython")
    assert _sum_diff(1.5, 0.25) == (1.75, 1.25)
    assert _sum_diff._twin is twin  # compiled once


def test_a_kernel_has_its_python_wrapper_only():
    assert _kernel_caller(3.0, 2.0) == 5.0
    # (a kernel is cached on disk: a loaded signature has machine code, no IR)
    assert _kernel_caller.targetoptions["no_cfunc_wrapper"] is True
    assert not _kernel_caller.targetoptions.get("no_cpython_wrapper", False)


def test_the_helpers_of_the_cold_calls_are_subroutines():
    for f in (
        _stats.two_sum,
        _stats.two_prod,
        _stats.chan_merge_dd,
        _stats.shifted_moments,
        chunks.shifted_block,
    ):
        assert isinstance(f, Subroutine), f
    # and called from Python they compute what the compiled code does
    s, e = _stats.two_sum(1.0, 2.0**-60)
    assert (s, e) == (1.0, 2.0**-60)
    assert np.isfinite(_stats.inv_std(4.0, 0.0))


def test_a_light_kernel_is_optimized_without_vectorizing_and_gives_the_same_bits():
    from numba import njit

    def glue(a, out, n):
        # per-channel steps without fast-math, as the glues have: a
        # compensated sum, and an elementwise loop that -O3 vectorizes
        s = 0.0
        c = 0.0
        for i in range(n):
            y = a[i] - c
            t = s + y
            c = (t - s) - y
            s = t
            out[i] = a[i] * 3.0 + 1.0
        for i in range(n):
            out[i] = out[i] * 0.5 - 2.0
        return s, c

    if not _cache._LIBRARIES:
        return
    light = njit(**_cache._LIGHT_PIPELINE)(glue)
    full = njit(glue)
    a = np.random.default_rng(0).standard_normal(1000) * 1e8
    o1, o2 = np.empty_like(a), np.empty_like(a)
    assert light(a, o1, a.size) == full(a, o2, a.size)
    np.testing.assert_array_equal(o1, o2)
    (sig,) = light.signatures
    assert isinstance(light.overloads[sig].library, _cache._LightLibrary)
    assert " x double>" not in light.inspect_llvm(sig)
    assert " x double>" in full.inspect_llvm(sig)


def test_a_subroutine_unpickled_in_another_process_is_callable():
    import pickle
    import subprocess
    import sys

    blob = pickle.dumps(_stats.two_sum)
    code = "import pickle, sys; f = pickle.loads(sys.stdin.buffer.read()); print(f(1.0, 2.0**-60))"
    out = subprocess.run([sys.executable, "-c", code], input=blob, capture_output=True, check=True)
    assert out.stdout.decode().strip() == repr((1.0, 2.0**-60))
