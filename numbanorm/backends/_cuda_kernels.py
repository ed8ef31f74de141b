"""``@cuda.jit`` kernels of the CUDA backend (private; launched by ``cuda.py``).

Every statistic goes through the scalar core in ``numbanorm._stats``, the
CPU's own (``shifted_moments``, ``chan_merge_dd``, ``variance``,
``inv_std``): plain ``@njit`` functions that numba-cuda compiles as device
functions, so both backends are exact alike.  Accumulation is float64
whatever the input dtype (float16 is loaded as float16 and converted on
load).

Compile-time constants (``_MAX_BLOCK``, ``_CH``, ``_NREG``, ``_HAVE_SHFL``) are
module globals: on a real GPU numba freezes them into the kernel at first
compile; in the simulator the kernels run as Python and read them live, which is
how the tests exercise both the shuffle and the shared-memory paths.

Warp shuffles (``_HAVE_SHFL``) are used on hardware; numba's simulator has no
``shfl_*_sync``, so the tests emulate them there (tests/cudasim_honest.py)
and set ``_HAVE_SHFL`` to run the shuffle reductions at the default launch
sizes (tests/test_cuda_semantics.py::test_warp_shuffle_paths).  The
simulator does no type checking: every launched signature is compiled for
sm_90 by tests/test_cuda_ptx.py (:func:`launch_signatures`).
"""

from __future__ import annotations

import math

from numba import cuda, float64
from numba.core import config

from .._config import CACHE
from .._reduce import FIN_LP, FIN_NORM, FIN_STANDARDIZE
from .._stats import (
    chan_merge_dd,
    constant_feature,
    inv_std,
    minmax_factor,
    pnorm_finish,
    running_update,
    shifted_moments,
    variance,
)

SIMULATOR = bool(config.ENABLE_CUDASIM)

# Warp shuffles exist only on hardware (not in the simulator); they take
# i32/i64/f32/f64 only, and everything shuffled here is float64.
_HAVE_SHFL = not SIMULATOR
_FULL_MASK = 0xFFFFFFFF
_WARP = 32

# Upper bound on threads per block of every launch that uses the static
# shared scratch (5 float64 arrays x 256 = 10 KiB per block); _row_lpp32's
# block-per-row launches of up to 512 threads run only with warp shuffles,
# which use G/32 of its entries.  256 also keeps
# register-heavy kernels (row_norm caches _NREG float64 per thread) launchable:
# 1024 threads x >64 registers would exceed the 64 Ki register file of an SM.
_MAX_BLOCK = 256

# Rows per thread chunk in the moments kernels: loaded into registers, reduced
# by an exact two-pass (mean, then sum of squared deviations), then folded
# into the thread's triple with one Chan merge -- one division per _CH values
# instead of Welford's one per value, and no E[x^2] - E[x]^2 cancellation
# (guarded by test_cuda_primitives.py::test_accuracy_float32_large_mean).
_CH = 16

# Blocks of _MAX_BLOCK threads that must fit on an SM at once (launch bounds:
# ptxas keeps each kernel within 65536 / (_MAX_BLOCK * _MIN_BLOCKS) = 64
# registers): 1024 threads per SM, each with _UNROLL loads in flight.
_MIN_BLOCKS = 4
_MIN_BLOCKS_MOMENTS = 2  # 512 threads per SM, _CH = 16 loads in flight each


def _package_cache(kern):
    """numba-cuda's on-disk cache for a kernel, keyed (like the CPU kernels',
    numbanorm/_cache.py) on the source of the whole package: numba keys a
    kernel on its own file, so a changed device function of ``_stats.py``
    would keep its old code in the cached kernel."""
    from numba.cuda.core import caching as cc
    from numba.cuda.dispatcher import CUDACache, CUDACacheImpl

    from .._cache import KeyedFiles, package_stamp

    class _Stamp:
        def get_source_stamp(self):
            return package_stamp()

    locators = [
        type(f"_Pkg{c.__name__}", (_Stamp, c), {})
        for c in (cc._UserProvidedCacheLocator, cc._InTreeCacheLocator, cc._UserWideCacheLocator)
    ]
    impl = type("_PackageCUDACacheImpl", (CUDACacheImpl,), {"_locator_classes": locators})
    files = type("_KeyedCUDAFiles", (KeyedFiles, cc.IndexDataCacheFile), {})

    def __init__(self, py_func):  # numba-cuda's files, safe across processes (KeyedFiles)
        CUDACache.__init__(self, py_func)
        self._cache_file = files(
            cache_path=self._cache_path,
            filename_base=self._impl.filename_base,
            source_stamp=self._impl.locator.get_source_stamp(),
        )

    cache = type("_PackageCUDACache", (CUDACache,), {"_impl_class": impl, "__init__": __init__})
    kern._cache = cache(kern.py_func)
    return kern


def _kernel(launch_bounds=None):
    """``cuda.jit`` for a kernel: launch bounds (ptxas then fits its
    registers to that many resident blocks) and the on-disk cache
    (_package_cache: a new process loads it instead of compiling, 0.1-2.3 s
    per kernel and dtype); the simulator's jit takes neither."""
    if SIMULATOR:
        return cuda.jit

    def deco(pyfunc):
        kern = cuda.jit(launch_bounds=launch_bounds)(pyfunc) if launch_bounds else cuda.jit(pyfunc)
        return _package_cache(kern) if CACHE else kern

    return deco


# Elements in flight per thread in the apply and p-norm loops (loaded before
# any is used; NOTES.md section 23: bytes in flight by Little's law).
_UNROLL = 8

# 2-byte dtypes (float16) keep more elements in flight than float32 (up to
# the same bytes per thread): the streaming kernels are built for each count
# (``_make_*``; the ``_h`` kernels, picked by :func:`streaming`), since a
# local array's length must be a compile-time constant.  Each count is the
# most that compiles without spills within the kernel's launch bounds
# (ptxas -v, sm_90; NOTES.md section 26): the moments 32 rows (122
# registers), the p-norm 16; the apply kernels hold a 64-bit address per
# load and per store, so 16 spilled there: the flat one 10 at 64 registers,
# the wide one 12 at 80 (3 blocks per SM; 10 spilled 28 bytes at 64).
_CH_H = 2 * _CH
_UNROLL_H = 2 * _UNROLL
_UNROLL_FLAT_H = 10
_UNROLL_WIDE_H = 12
_MIN_BLOCKS_WIDE_H = 3

# Columns from which the apply runs one thread per column (_apply_wide, the
# parameters in registers); fewer: flat, parameters in shared memory.
_WIDE_K = 32

# Row elements per thread kept in registers by row_norm (warp-per-row keeps
# D <= 32 * 32 = 1024 on chip; block-per-row up to 256 * 32 = 8192).  Longer
# rows take the long-row kernels (_row_long_body: statistics by chunks of
# this many values per thread, then the output pass re-reading from L2).
_NREG = 32
_NREG_P = 16  # _row_lpp (p other than 1, 2, inf): 32 spilled around the pow call


def row_group(D, itemsize, max_group=_WARP, nreg=None):
    """Threads per row of the short-row launch (D <= 1024): the fewest, a
    power of two, whose registers hold the row (_NREG values each), but at
    least 32 bytes of consecutive elements per load (a whole memory sector)
    and at most ``max_group`` (a warp).  Fewer threads per short row keep
    more of a thread's _NREG loads busy: at D = 256, 8 float32 threads of 32
    loads each instead of a warp of 8 (NOTES.md section 23)."""
    nreg = _NREG if nreg is None else nreg
    g = max(1, 32 // int(itemsize))
    while g * nreg < D:
        g *= 2
    return max(1, min(g, int(max_group)))


def row_launch(D, itemsize, nreg, warp_max_d, group_max, block_max, threads):
    """(threads per row G, rows per block) of the row kernels for rows of D
    whose kernel keeps ``nreg`` values per thread: rows up to
    ``min(warp_max_d, group_max * nreg)`` take at most a warp (``group_max``;
    row_group: fewer for short rows), longer ones up to ``block_max`` threads
    (at least two warps' worth, ``2 * group_max``; the fewest that hold the
    row, so each keeps up to nreg loads in flight); ``threads`` per block
    (whole rows; at least one)."""
    cap = min(int(block_max), _MAX_BLOCK)
    if D <= min(int(warp_max_d), int(group_max) * nreg):
        g = row_group(D, itemsize, min(int(group_max), cap), nreg)
    else:
        g = max(min(cap, 2 * int(group_max)), row_group(D, itemsize, cap, nreg))
    return g, max(1, min(int(threads), _MAX_BLOCK) // g)


# NaN must reach the min/max of its own group (Python's min/max would drop it;
# guarded by test_moments_nan_and_inf_stay_in_their_group).
@cuda.jit(device=True)
def _nanmin(a, b):
    """min that propagates NaN from either argument."""
    if b != b or b < a:
        return b
    return a


@cuda.jit(device=True)
def _nanmax(a, b):
    """max that propagates NaN from either argument."""
    if b != b or b > a:
        return b
    return a


@cuda.jit(device=True)
def _pow2_ceil(n):
    """Smallest power of two >= n (n >= 1)."""
    p = 1
    while p < n:
        p *= 2
    return p


def _make_moments_partial(ch):
    """_moments_partial with chunks of ``ch`` rows per thread."""

    def _moments_partial(x, skipnan, minmax, rows_per_split, part):
        """Partial (count, mean, mean residual, M2, min, max) over one row
        split of a (p, k-tile): the CPU's statistics core, so both backends
        are exact alike (each mean carried as an unevaluated sum,
        ``chan_merge_dd``)."""
        _moments_body(x, skipnan, minmax, rows_per_split, part, cuda.local.array(ch, x.dtype))

    return _moments_partial


@(cuda.jit(device=True) if SIMULATOR else cuda.jit(device=True, forceinline=True))
def _moments_body(x, skipnan, minmax, rows_per_split, part, buf):
    """_moments_partial's body; ``buf``: the thread's chunk (x's dtype: half
    the registers of float64), its length _CH rows (a constant once
    inlined: the chunk loops unroll)."""
    # x: (P, R, K); part: (6, P, S, K) = count, mean, residual, M2, min, max
    # (the CPU's partials), stacked so that one argument (launch cost grows
    # per argument) and one copy carry them.  Block (TX, TY): threads along K
    # (coalesced: consecutive tx read consecutive addresses) and along R;
    # grid (ceil(K/TX), S, <=P).
    sh_n = cuda.shared.array(_MAX_BLOCK, float64)
    sh_m = cuda.shared.array(_MAX_BLOCK, float64)
    sh_r = cuda.shared.array(_MAX_BLOCK, float64)
    sh_q = cuda.shared.array(_MAX_BLOCK, float64)
    sh_lo = cuda.shared.array(_MAX_BLOCK, float64)
    sh_hi = cuda.shared.array(_MAX_BLOCK, float64)
    ch = buf.shape[0]
    P, R, K = x.shape
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    TX = cuda.blockDim.x
    TY = cuda.blockDim.y
    k = cuda.blockIdx.x * TX + tx
    s = cuda.blockIdx.y
    r0 = s * rows_per_split
    r1 = min(R, r0 + rows_per_split)
    t = ty * TX + tx
    # the p loop is block-uniform, so every thread reaches every syncthreads
    for p in range(cuda.blockIdx.z, P, cuda.gridDim.z):
        n = 0.0
        mu = 0.0
        rr_ = 0.0
        q = 0.0
        lo = math.inf
        hi = -math.inf
        if k < K:
            for r in range(r0 + ty, r1, ch * TY):
                # the chunk's loads first, all in flight before any is used
                # (constant trip counts: unrolled, buf in registers); a full
                # chunk loads without bounds tests
                m = min(ch, (r1 - r + TY - 1) // TY)
                if m == ch:
                    for j in range(ch):
                        buf[j] = x[p, r + j * TY, k]
                else:
                    for j in range(ch):
                        if j < m:
                            buf[j] = x[p, r + j * TY, k]
                # pass 1 over the chunk: count, sum about 0 (and min/max)
                c = 0.0
                tot = 0.0
                for j in range(ch):
                    if j < m:
                        v = float64(buf[j])
                        if not (skipnan and v != v):
                            c += 1.0
                            tot += v
                            if minmax:
                                lo = _nanmin(lo, v)
                                hi = _nanmax(hi, v)
                if c > 0.0:
                    # pass 2: sums about the chunk mean, the CPU's exact
                    # two-pass (shifted_moments with condition number ~1)
                    cm = tot / c
                    s1 = 0.0
                    s2 = 0.0
                    for j in range(ch):
                        if j < m:
                            v = float64(buf[j])
                            if not (skipnan and v != v):
                                d = v - cm
                                s1 += d
                                s2 += d * d
                    mh, ml, cq = shifted_moments(c, cm, s1, s2)
                    n, mu, rr_, q = chan_merge_dd(n, mu, rr_, q, c, mh, ml, cq)
        # reduce the TY partials of each column tx
        if _HAVE_SHFL and TX == 1 and TY % _WARP == 0:
            n, mu, rr_, q, lo, hi = _warp_merge(n, mu, rr_, q, lo, hi)
            lane = ty % _WARP
            w = ty // _WARP
            if lane == 0:
                sh_n[w] = n
                sh_m[w] = mu
                sh_r[w] = rr_
                sh_q[w] = q
                sh_lo[w] = lo
                sh_hi[w] = hi
            cuda.syncthreads()
            if w == 0:
                if lane < TY // _WARP:
                    n = sh_n[lane]
                    mu = sh_m[lane]
                    rr_ = sh_r[lane]
                    q = sh_q[lane]
                    lo = sh_lo[lane]
                    hi = sh_hi[lane]
                else:
                    n = 0.0
                    mu = 0.0
                    rr_ = 0.0
                    q = 0.0
                    lo = math.inf
                    hi = -math.inf
                n, mu, rr_, q, lo, hi = _warp_merge(n, mu, rr_, q, lo, hi)
                if lane == 0:
                    sh_n[0] = n
                    sh_m[0] = mu
                    sh_r[0] = rr_
                    sh_q[0] = q
                    sh_lo[0] = lo
                    sh_hi[0] = hi
            cuda.syncthreads()
        else:
            # shared-memory tree over ty (columns side by side: TX > 1)
            sh_n[t] = n
            sh_m[t] = mu
            sh_r[t] = rr_
            sh_q[t] = q
            sh_lo[t] = lo
            sh_hi[t] = hi
            cuda.syncthreads()
            step = _pow2_ceil(TY) // 2
            while step > 0:
                if ty < step and ty + step < TY:
                    o = t + step * TX
                    sh_n[t], sh_m[t], sh_r[t], sh_q[t] = chan_merge_dd(
                        sh_n[t], sh_m[t], sh_r[t], sh_q[t], sh_n[o], sh_m[o], sh_r[o], sh_q[o]
                    )
                    sh_lo[t] = _nanmin(sh_lo[t], sh_lo[o])
                    sh_hi[t] = _nanmax(sh_hi[t], sh_hi[o])
                cuda.syncthreads()
                step //= 2
        if ty == 0 and k < K:
            part[0, p, s, k] = sh_n[tx]
            part[1, p, s, k] = sh_m[tx]
            part[2, p, s, k] = sh_r[tx]
            part[3, p, s, k] = sh_q[tx]
            part[4, p, s, k] = sh_lo[tx]
            part[5, p, s, k] = sh_hi[tx]
        cuda.syncthreads()  # shared scratch is reused by the next p


_moments_partial = _kernel(launch_bounds=(_MAX_BLOCK, _MIN_BLOCKS_MOMENTS))(_make_moments_partial(_CH))
_moments_partial_h = _kernel(launch_bounds=(_MAX_BLOCK, _MIN_BLOCKS_MOMENTS))(_make_moments_partial(_CH_H))


@cuda.jit(device=True)
def _warp_merge(n, mu, r, q, lo, hi):
    """Chan-merge (count, mean, residual, M2) and min/max down a warp
    (chan_merge_dd); lane 0 holds the result."""
    off = _WARP // 2
    while off > 0:
        n2 = cuda.shfl_down_sync(_FULL_MASK, n, off)
        m2 = cuda.shfl_down_sync(_FULL_MASK, mu, off)
        r2 = cuda.shfl_down_sync(_FULL_MASK, r, off)
        q2 = cuda.shfl_down_sync(_FULL_MASK, q, off)
        lo2 = cuda.shfl_down_sync(_FULL_MASK, lo, off)
        hi2 = cuda.shfl_down_sync(_FULL_MASK, hi, off)
        # lanes >= 32 - off receive their own value back; only lane 0 is used
        n, mu, r, q = chan_merge_dd(n, mu, r, q, n2, m2, r2, q2)
        lo = _nanmin(lo, lo2)
        hi = _nanmax(hi, hi2)
        off //= 2
    return n, mu, r, q, lo, hi


@_kernel()
def _bn_eval_prm(index, chans, eps, prm):
    """Eval batch_norm's parameters of each apply-view entry: center the
    running mean, scale inv_std(running var) * weight, shift the bias, of
    channel index[p, k] (batch_norm_params' eval arithmetic, on the device)."""
    # index: (P, K) int64; chans: (4, C) float64 = running mean, running
    # var, weight, bias; prm: (3, P, K)
    P = index.shape[0]
    K = index.shape[1]
    for i in range(cuda.grid(1), P * K, cuda.gridsize(1)):
        p = i // K
        k = i - p * K
        c = index[p, k]
        v = chans[1, c]
        rs = inv_std(v, eps) if v + eps != 0.0 else math.inf  # (the simulator raises on 1/0)
        prm[0, p, k] = chans[0, c]
        prm[1, p, k] = rs * chans[2, c]
        prm[2, p, k] = chans[3, c]


@_kernel()
def _finish_prm(st, idx, wb, kind, eps, ddof, lo, hi, p_exp, with_mean, with_std, prm):
    """The apply parameters (center, scale, shift) of each apply-view entry
    from its group's statistics, on the device: the host's arithmetic
    (batch_norm_params, standardize_params, minmax_factor, lp_normalize's
    1 / max(||x||_p, eps)) with the same scalar functions of _stats.py; a
    group of count 0 has mean, min and max NaN (as reduce_moments gives
    them)."""
    # st: (6, J) = count, mean, mean residual, M2, min, max per group (for
    # FIN_LP (1, J): sum |x|**p, or max |x| for p = inf);
    # idx: (2, P, K) int64 = group j and channel c of entry (p, k); wb: (2,
    # C) float64 = weight, bias per channel; prm: (3, P, K)
    P = idx.shape[1]
    K = idx.shape[2]
    for i in range(cuda.grid(1), P * K, cuda.gridsize(1)):
        p = i // K
        k = i - p * K
        j = idx[0, p, k]
        if kind == FIN_LP:
            s = st[0, j]
            nrm = s if p_exp == math.inf else pnorm_finish(s, p_exp)
            den = nrm if (nrm > eps or nrm != nrm) else eps  # np.maximum: NaN kept
            prm[0, p, k] = 0.0
            prm[1, p, k] = 1.0 / den if den != 0.0 else math.inf  # (the simulator raises on 1/0)
            prm[2, p, k] = 0.0
            continue
        n = st[0, j]
        some = n > 0.0
        # the mean rounded with its residual (reduce_moments' Fast2Sum)
        mean = st[1, j] + st[2, j] if some else math.nan
        if kind == FIN_NORM:
            c = idx[1, p, k]
            var = st[3, j] / n if some else math.nan
            rs = inv_std(var, eps) if var + eps != 0.0 else math.inf  # (the simulator raises on 1/0)
            prm[0, p, k] = mean
            prm[1, p, k] = rs * wb[0, c]
            prm[2, p, k] = wb[1, c]
        elif kind == FIN_STANDARDIZE:
            var = variance(n, st[3, j] if some else math.nan, ddof)
            std = 1.0 if constant_feature(var, mean, n) else math.sqrt(var)
            prm[0, p, k] = mean if with_mean else 0.0
            prm[1, p, k] = 1.0 / (std if with_std else 1.0)
            prm[2, p, k] = 0.0
        else:
            mn = st[4, j] if some else math.nan
            mx = st[5, j] if some else math.nan
            prm[0, p, k] = mn
            prm[1, p, k] = minmax_factor(mn, mx, lo, hi)
            prm[2, p, k] = lo


@_kernel()
def _fold_sum(part, is_max, res):
    """Sums (or maxima, NaN kept) of (A, M, B) partials over M, in order:
    the p-norms' partial sums merged on the device."""
    # part: (A, M, B) float64 -> res: (A, B); one thread per (a, b)
    A = part.shape[0]
    M = part.shape[1]
    B = part.shape[2]
    for i in range(cuda.grid(1), A * B, cuda.gridsize(1)):
        a = i // B
        b = i - a * B
        acc = 0.0
        for m in range(M):
            v = part[a, m, b]
            acc = _nanmax(acc, v) if is_max else acc + v
        res[a, b] = acc


@_kernel()
def _running_stat(st, ridx, unbiased_var, momentum, r):
    """A running statistic updated in place in the user's array ``r``, on
    the device: ``running_update(r[c], s, momentum)`` with ``s`` the batch
    mean (or, ``unbiased_var``, M2 / (n - 1)) of channel c averaged over its
    groups ``ridx[c]`` (batch norm: one; instance norm: one per sample, the
    host's ``.mean(axis=0)``: summed in order, then divided)."""
    # st: (6, J); ridx: (C, Ns) int64; r: (C,) any float dtype
    C = ridx.shape[0]
    ns = ridx.shape[1]
    for c in range(cuda.grid(1), C, cuda.gridsize(1)):
        acc = 0.0
        for t in range(ns):
            j = ridx[c, t]
            if unbiased_var:
                acc += st[3, j] / (st[0, j] - 1.0)
            else:
                acc += st[1, j] + st[2, j]
        r[c] = running_update(float64(r[c]), acc / ns, momentum)


@_kernel()
def _moments_merge(part, res):
    """Chan-merge the S partials of each (p, k), in order (deterministic),
    carrying the mean's rounding residual (chan_merge_dd)."""
    # part: (6, P, S, K) -> res: (6, P, K), the same rows; one thread per (p, k)
    P = part.shape[1]
    S = part.shape[2]
    K = part.shape[3]
    start = cuda.grid(1)
    for i in range(start, P * K, cuda.gridsize(1)):
        p = i // K
        k = i - p * K
        n = 0.0
        mu = 0.0
        r = 0.0
        q = 0.0
        lo = math.inf
        hi = -math.inf
        for s in range(S):
            n, mu, r, q = chan_merge_dd(
                n, mu, r, q, part[0, p, s, k], part[1, p, s, k], part[2, p, s, k], part[3, p, s, k]
            )
            lo = _nanmin(lo, part[4, p, s, k])
            hi = _nanmax(hi, part[5, p, s, k])
        res[0, p, k] = n
        res[1, p, k] = mu
        res[2, p, k] = r
        res[3, p, k] = q
        res[4, p, k] = lo
        res[5, p, k] = hi


@cuda.jit(device=True)
def _pnorm_add(a, v, mode, p_exp, skipnan):
    """a plus |x| = v's term of the p-norm (mode 0: p=1, 1: p=2, 3: other p),
    or the running max (mode 2); NaN left out when skipnan."""
    if skipnan and v != v:
        return a
    if mode == 0:
        return a + v
    if mode == 1:
        return a + v * v
    if mode == 2:
        return _nanmax(a, v)
    return a + v**p_exp


def _make_pnorm_partial(unroll):
    """_pnorm_partial with ``unroll`` loads in flight per thread."""

    def _pnorm_partial(x, mode, p_exp, skipnan, rows_per_split, acc):
        """Partial sum |x|**p (mode 0: p=1, 1: p=2, 3: other p) or max |x| (mode 2)."""
        _pnorm_body(x, mode, p_exp, skipnan, rows_per_split, acc, cuda.local.array(unroll, x.dtype))

    return _pnorm_partial


@(cuda.jit(device=True) if SIMULATOR else cuda.jit(device=True, forceinline=True))
def _pnorm_body(x, mode, p_exp, skipnan, rows_per_split, acc, buf):
    """_pnorm_partial's body; ``buf``: the loads in flight (a constant
    length once inlined)."""
    # x: (P, R, K); acc: (P, S, K); same tiling as _moments_partial
    sh = cuda.shared.array(_MAX_BLOCK, float64)
    un = buf.shape[0]
    P, R, K = x.shape
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    TX = cuda.blockDim.x
    TY = cuda.blockDim.y
    k = cuda.blockIdx.x * TX + tx
    s = cuda.blockIdx.y
    r0 = s * rows_per_split
    r1 = min(R, r0 + rows_per_split)
    t = ty * TX + tx
    for p in range(cuda.blockIdx.z, P, cuda.gridDim.z):
        a = 0.0  # sum of non-negative terms, or running max of |x| (>= 0)
        if k < K:
            r = r0 + ty
            # un loads in flight per step (issued before any is used)
            while r + (un - 1) * TY < r1:
                for u in range(un):
                    buf[u] = x[p, r + u * TY, k]
                for u in range(un):
                    a = _pnorm_add(a, abs(float64(buf[u])), mode, p_exp, skipnan)
                r += un * TY
            while r < r1:
                a = _pnorm_add(a, abs(float64(x[p, r, k])), mode, p_exp, skipnan)
                r += TY
        sh[t] = a
        cuda.syncthreads()
        step = _pow2_ceil(TY) // 2
        while step > 0:
            if ty < step and ty + step < TY:
                if mode == 2:
                    sh[t] = _nanmax(sh[t], sh[t + step * TX])
                else:
                    sh[t] += sh[t + step * TX]
            cuda.syncthreads()
            step //= 2
        if ty == 0 and k < K:
            acc[p, s, k] = sh[tx]
        cuda.syncthreads()


_pnorm_partial = _kernel(launch_bounds=(_MAX_BLOCK, _MIN_BLOCKS))(_make_pnorm_partial(_UNROLL))
_pnorm_partial_h = _kernel(launch_bounds=(_MAX_BLOCK, _MIN_BLOCKS))(_make_pnorm_partial(_UNROLL_H))


@cuda.jit(device=True)
def _clip(y, clip, lo, hi):
    """y clipped to [lo, hi] when ``clip`` (NaN passes)."""
    if clip:
        if y < lo:
            y = lo
        elif y > hi:
            y = hi
    return y


def _make_apply_flat(unroll):
    """_apply_flat with ``unroll`` loads in flight per thread."""

    def _apply_flat(x, out, prm, clip, lo, hi):
        """out = clip((x - center) * scale + shift, lo, hi) with parameters
        per column k of each p for few columns (K < _WIDE_K; K == 1: one set
        per row p), float64 arithmetic."""
        _apply_flat_body(x, out, prm, clip, lo, hi, cuda.local.array(unroll, x.dtype))

    return _apply_flat


@(cuda.jit(device=True) if SIMULATOR else cuda.jit(device=True, forceinline=True))
def _apply_flat_body(x, out, prm, clip, lo, hi, buf):
    """_apply_flat's body; ``buf``: the loads in flight (a constant length
    once inlined)."""
    # x, out: (P, R*K) views of (P, R, K); prm: (3, P, K).  Grid (gx, <=P):
    # y walks p, x the flat R*K plane, grid-stride with a step S that is a
    # multiple of K (the S = nth - nth % K first threads work, the < K
    # others idle), so a thread's column t % K is fixed: its parameters in
    # registers, no column bookkeeping or division per element; buf's length
    # elements in flight per thread and step (a warp's loads coalesced).
    un = buf.shape[0]
    P, RK = x.shape
    K = prm.shape[2]
    tid = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    nth = cuda.gridDim.x * cuda.blockDim.x
    S = nth - nth % K
    if tid >= S:
        return
    k = tid % K
    for p in range(cuda.blockIdx.y, P, cuda.gridDim.y):
        c = prm[0, p, k]
        a = prm[1, p, k]
        b = prm[2, p, k]
        xp = x[p]
        op = out[p]
        j = tid
        while j + (un - 1) * S < RK:
            for u in range(un):
                buf[u] = xp[j + u * S]
            for u in range(un):
                op[j + u * S] = _clip((float64(buf[u]) - c) * a + b, clip, lo, hi)
            j += un * S
        while j < RK:
            op[j] = _clip((float64(xp[j]) - c) * a + b, clip, lo, hi)
            j += S


_apply_flat = _kernel(launch_bounds=(_MAX_BLOCK, _MIN_BLOCKS))(_make_apply_flat(_UNROLL))
_apply_flat_h = _kernel(launch_bounds=(_MAX_BLOCK, _MIN_BLOCKS))(_make_apply_flat(_UNROLL_FLAT_H))


def _make_apply_wide(unroll):
    """_apply_wide with ``unroll`` loads in flight per thread."""

    def _apply_wide(x, out, prm, clip, lo, hi):
        """out = clip((x - center) * scale + shift, lo, hi) with parameters
        per column k of each p, for many columns (K >= _WIDE_K: channels
        last, feature columns), float64 arithmetic."""
        _apply_wide_body(x, out, prm, clip, lo, hi, cuda.local.array(unroll, x.dtype))

    return _apply_wide


@(cuda.jit(device=True) if SIMULATOR else cuda.jit(device=True, forceinline=True))
def _apply_wide_body(x, out, prm, clip, lo, hi, buf):
    """_apply_wide's body; ``buf``: the loads in flight (a constant length
    once inlined)."""
    # x, out: (P, R, K); prm: (3, P, K).  Block (TX, TY): tx along K (a
    # warp's loads of one row coalesced), ty along R; grid (ceil(K/TX), gy,
    # <=P).  A thread's column is fixed: its parameters live in registers;
    # buf's length in rows in flight per step.
    un = buf.shape[0]
    P, R, K = x.shape
    k = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    r0 = cuda.blockIdx.y * cuda.blockDim.y + cuda.threadIdx.y
    nr = cuda.gridDim.y * cuda.blockDim.y
    if k >= K:
        return
    for p in range(cuda.blockIdx.z, P, cuda.gridDim.z):
        c = prm[0, p, k]
        a = prm[1, p, k]
        b = prm[2, p, k]
        xp = x[p]
        op = out[p]
        r = r0
        while r + (un - 1) * nr < R:
            for u in range(un):
                buf[u] = xp[r + u * nr, k]
            for u in range(un):
                op[r + u * nr, k] = _clip((float64(buf[u]) - c) * a + b, clip, lo, hi)
            r += un * nr
        while r < R:
            op[r, k] = _clip((float64(xp[r, k]) - c) * a + b, clip, lo, hi)
            r += nr


_apply_wide = _kernel(launch_bounds=(_MAX_BLOCK, _MIN_BLOCKS))(_make_apply_wide(_UNROLL))
_apply_wide_h = _kernel(launch_bounds=(_MAX_BLOCK, _MIN_BLOCKS_WIDE_H))(_make_apply_wide(_UNROLL_WIDE_H))


@cuda.jit(device=True)
def _combine(a, b, is_max):
    """a + b, or the larger of the two (is_max: the max-norm)."""
    if is_max:
        return b if b > a else a
    return a + b


@cuda.jit(device=True)
def _group_reduce(v, sh, g, G, rb, is_max):
    """Sum (or max) of v over the G threads of row-group rb (all block
    threads must call)."""
    # sh: (_MAX_BLOCK,) shared scratch; thread (g, rb) of a (G, RB) block
    if _HAVE_SHFL and G <= _WARP and _WARP % G == 0 and (G * cuda.blockDim.y) % _WARP == 0:
        # warp-per-row, or a power-of-two part of a warp per short row (the
        # group's lanes are consecutive, so offsets < G stay inside it; the
        # block whole warps, so the full mask names lanes that exist):
        # butterfly shuffles, every lane gets the total
        off = G // 2
        while off > 0:
            v = _combine(v, cuda.shfl_xor_sync(_FULL_MASK, v, off), is_max)
            off //= 2
        return v
    base = rb * G
    if _HAVE_SHFL and G % _WARP == 0:
        # block-per-row: shuffles inside each warp, then the G/32 warp totals
        off = _WARP // 2
        while off > 0:
            v = _combine(v, cuda.shfl_xor_sync(_FULL_MASK, v, off), is_max)
            off //= 2
        if g % _WARP == 0:
            sh[base + g // _WARP] = v
        cuda.syncthreads()
        tot = sh[base]
        for i in range(1, G // _WARP):
            tot = _combine(tot, sh[base + i], is_max)
        cuda.syncthreads()
        return tot
    # shared-memory tree (group sizes that are not warp multiples)
    sh[base + g] = v
    cuda.syncthreads()
    step = _pow2_ceil(G) // 2
    while step > 0:
        if g < step and g + step < G:
            sh[base + g] = _combine(sh[base + g], sh[base + g + step], is_max)
        cuda.syncthreads()
        step //= 2
    tot = sh[base]
    cuda.syncthreads()
    return tot


@cuda.jit(device=True)
def _row_term(s, v, mode, pmode, p_exp):
    """Pass 1 of a row: s plus v's term (layer norm: v; RMS: v*v; p-norms
    of p = 1, 2, inf: |v|, v*v or the running max of |v|, NaN left out)."""
    if mode == 0:
        return s + v
    if mode == 1:
        return s + v * v
    if mode == 3:
        # other p (its own kernel, _row_lpp: the pow's registers are not
        # compiled into the others)
        a = abs(v)
        return s if a != a else s + a**p_exp
    # p = 1, 2 or inf
    a = abs(v)
    if a != a:
        return s
    if pmode == 0:
        return s + a
    if pmode == 1:
        return s + a * a
    return a if a > s else s


@cuda.jit(device=True)
def _row_scale(tot, dn, mode, pmode, p_exp, eps):
    """The row's scale from its pass-1 total: RMS norm (mode 1: 1/sqrt(mean
    square + eps)), p-norms (mode 2, 3: 1/max(||x||_p, eps); pmode 2: tot is
    the max already).  Layer norm (mode 0) takes the variance instead."""
    if mode == 1:
        var = tot / dn  # mean square: no subtraction, no cancellation
        # var + eps == 0 (eps=0, a zero row) is inf on the GPU; guarded so
        # the simulator (which runs inv_std on the CPU) agrees
        return inv_std(var, eps) if var + eps != 0.0 else math.inf
    den = tot if (mode == 2 and pmode == 2) else pnorm_finish(tot, p_exp)
    den = den if den > eps else eps
    return 1.0 / den if den != 0.0 else math.inf  # (the simulator raises on 1/0)


@cuda.jit(device=True)
def _segments(D, S, g, G):
    """Row elements d = g + j*G take weight segment d // seglen (S equal
    segments of a row of D), tracked by additions from thread g's first
    segment, no division per element: (seglen, the segment of g and g's
    offset in it, the segments and offset a step of G adds)."""
    seglen = D // S
    sg0 = g // seglen
    dq = G // seglen
    return seglen, sg0, g - sg0 * seglen, dq, G - dq * seglen


@cuda.jit(device=True)
def _store_chunk(out, r, buf, d0, G, mean, rstd, wr, br, sg, rm, dq, dr, seglen):
    """out[r, d0 + j*G] = (buf[j] - mean) * rstd * weight + bias for the
    thread's values in buf (those < D), the weight and bias of each
    element's segment tracked by additions (sg, rm: the segment of d0 and
    the offset in it; returned for the next chunk)."""
    D = out.shape[1]
    for j in range(buf.shape[0]):
        d = d0 + j * G
        if d < D:
            out[r, d] = (float64(buf[j]) - mean) * rstd * wr[sg] + br[sg]
        sg += dq
        rm += dr
        if rm >= seglen:
            rm -= seglen
            sg += 1
    return sg, rm


@cuda.jit(device=True)
def _row_stats(x, r, active, buf, cached, g, G, rb, sh, mode, p_exp, eps):
    """(mean, rstd) of row r, read into ``buf`` when ``cached`` (kept there
    for the output pass): layer norm (mode 0: exact two-pass about the row
    mean), RMS norm (1), p-norm (2: 1/max(||x||_p, eps), NaN left out).
    Every thread of the block calls (group reductions)."""
    D = x.shape[1]
    nreg = buf.shape[0]
    dn = float64(D)
    # p-norm kind: 0 p=1, 1 p=2, 2 p=inf (a max), 3 other p
    pmode = 0 if p_exp == 1.0 else (1 if p_exp == 2.0 else (2 if p_exp == math.inf else 3))
    # pass 1: sum (layer norm), sum of squares (RMS norm) or the p-norm's sum
    # (or max), float64
    s = 0.0
    if active:
        if cached:
            # the row's loads first (constant trip counts: unrolled,
            # registers), all in flight before any is used
            for j in range(nreg):
                d = g + j * G
                if d < D:
                    buf[j] = x[r, d]
            for j in range(nreg):
                if g + j * G < D:
                    s = _row_term(s, float64(buf[j]), mode, pmode, p_exp)
        else:
            # past the registers (not launched by row_norm, which gives such
            # rows to _row_long_body; a correct path for any launch, and
            # with it ptxas gives the cached path 168 registers, against
            # 230-255 and spills without: NOTES.md section 27): the same
            # order, four loads issued before their use
            for d0 in range(g, D, 4 * G):
                v0 = x[r, d0]
                v1 = x[r, d0 + G] if d0 + G < D else v0
                v2 = x[r, d0 + 2 * G] if d0 + 2 * G < D else v0
                v3 = x[r, d0 + 3 * G] if d0 + 3 * G < D else v0
                s = _row_term(s, float64(v0), mode, pmode, p_exp)
                if d0 + G < D:
                    s = _row_term(s, float64(v1), mode, pmode, p_exp)
                if d0 + 2 * G < D:
                    s = _row_term(s, float64(v2), mode, pmode, p_exp)
                if d0 + 3 * G < D:
                    s = _row_term(s, float64(v3), mode, pmode, p_exp)
    tot = _group_reduce(s, sh, g, G, rb, mode == 2 and pmode == 2)
    if mode >= 1:
        return 0.0, _row_scale(tot, dn, mode, pmode, p_exp, eps)
    mu = tot / dn
    # pass 2: exact two-pass variance around the row mean (never E[x^2] -
    # E[x]^2; guarded by test_cuda_primitives accuracy tests)
    s = 0.0
    if active:
        if cached:
            for j in range(nreg):
                if g + j * G < D:
                    dv = float64(buf[j]) - mu
                    s += dv * dv
        else:
            for d in range(g, D, G):
                dv = float64(x[r, d]) - mu
                s += dv * dv
    var = variance(dn, _group_reduce(s, sh, g, G, rb, False), 0.0)
    # var + eps == 0 (eps=0, constant row) is inf on the GPU; guarded so the
    # simulator (which runs inv_std on the CPU) agrees.
    return mu, (inv_std(var, eps) if var + eps != 0.0 else math.inf)


@(cuda.jit(device=True) if SIMULATOR else cuda.jit(device=True, forceinline=True))
def _row_norm_body(x, out, wb, eps, mode, p_exp, stats, buf):
    """The row kernels' body (mode a constant of each kernel: the others'
    code is not compiled in): statistics of each row (_row_stats), then
    out = (x - mean) * rstd * weight + bias, one read of x while the row
    fits the group's registers; G threads per row (G=32: warp-per-row;
    G=block: block-per-row)."""
    # x, out: (R, D); wb: (2, RW, S) float64: row r takes wb[:, r % RW] in S
    # equal segments (layer norm: (2, 1, D), instance norm: (2, C, 1), group
    # norm: (2, G, C/G)); stats: (2, R) = mean, rstd.  Block (G, RB): RB rows
    # per block; grid-stride over rows in RB steps.
    sh = cuda.shared.array(_MAX_BLOCK, float64)
    R, D = x.shape
    g = cuda.threadIdx.x
    G = cuda.blockDim.x
    rb = cuda.threadIdx.y
    RB = cuda.blockDim.y
    nreg = buf.shape[0]  # a constant once inlined: the loops over buf unroll
    cached = D <= G * nreg  # the whole row fits in the group's registers
    RW = wb.shape[1]
    seglen, sg0, rm0, dq, dr = _segments(D, wb.shape[2], g, G)
    # the base loop is block-uniform: every thread reaches every syncthreads
    for base in range(cuda.blockIdx.x * RB, R, cuda.gridDim.x * RB):
        r = base + rb
        active = r < R
        mu, rstd = _row_stats(x, r, active, buf, cached, g, G, rb, sh, mode, p_exp, eps)
        if active:
            # normalize, scale, shift; cast to out's dtype on store
            wr = wb[0, r % RW]
            br = wb[1, r % RW]
            sg = sg0
            rm = rm0
            if cached:
                _store_chunk(out, r, buf, g, G, mu, rstd, wr, br, sg, rm, dq, dr, seglen)
            else:
                for d in range(g, D, G):
                    out[r, d] = (float64(x[r, d]) - mu) * rstd * wr[sg] + br[sg]
                    sg += dq
                    rm += dr
                    if rm >= seglen:
                        rm -= seglen
                        sg += 1
            if g == 0:
                stats[0, r] = mu
                stats[1, r] = rstd


@_kernel()
def _row_layer(x, out, wb, eps, stats):
    """Layer norm of each row (also instance and group norm as rows)."""
    buf = cuda.local.array(_NREG, x.dtype)  # x's dtype: half the registers of float64
    _row_norm_body(x, out, wb, eps, 0, 0.0, stats, buf)


@_kernel()
def _row_rms(x, out, wb, eps, stats):
    """RMS norm of each row."""
    buf = cuda.local.array(_NREG, x.dtype)
    _row_norm_body(x, out, wb, eps, 1, 0.0, stats, buf)


@_kernel()
def _row_lp(x, out, wb, eps, p_exp, stats):
    """lp_normalize of each row for p = 1, 2, inf: x / max(||x||_p, eps),
    NaN left out of the norm."""
    buf = cuda.local.array(_NREG, x.dtype)
    _row_norm_body(x, out, wb, eps, 2, p_exp, stats, buf)


@_kernel()
def _row_lpp(x, out, wb, eps, p_exp, stats):
    """lp_normalize of each float64 row for p other than 1, 2, inf: x /
    max(||x||_p, eps), NaN left out of the norm; one read of x while the row
    fits (_NREG_P values per thread: the pow is a call, and the values live
    across it take registers).  float64 has no launch bounds: at 128
    registers it spills 16 B, and its 154 already keep 1.5x the bytes HBM
    needs in flight (8-byte loads; NOTES.md section 23)."""
    buf = cuda.local.array(_NREG_P, x.dtype)
    _row_norm_body(x, out, wb, eps, 3, p_exp, stats, buf)


# _row_lpp32: at 138 registers (unbounded) an SM holds one block of 256 (a
# D = 4096 row: 16 KB in flight per SM, 0.75x need); bounded to a block of
# _ROW_BLOCK_P = 512 threads per SM, 128 registers with no spills: two blocks
# of 256 (D = 4096: 32 KB, 1.5x), four of 128 for shorter rows, or one of 512
# for a row of up to 512 x 16 = 8192 kept in registers (32 KB; NOTES.md
# section 23).
_ROW_BLOCK_P = 512


def row_launch_lpp32(D, itemsize, nreg, warp_max_d, group_max, block_max, threads, block_p, shfl):
    """(threads per row, rows per block) of _row_lpp32: row_launch's, but a
    row that its groups cannot hold (more than ``block_max x nreg``) takes up
    to ``min(block_p, _ROW_BLOCK_P)`` threads (a power of two), one row per
    block, when that holds it and ``shfl`` (warp shuffles: the block-per-row
    reduction keeps G / 32 totals in shared memory; the tree without them
    indexes one entry per thread, past the _MAX_BLOCK of scratch)."""
    g, rows_per_block = row_launch(D, itemsize, nreg, warp_max_d, group_max, block_max, threads)
    if shfl and g * nreg < D:
        gp = g
        while gp * nreg < D and 2 * gp <= min(int(block_p), _ROW_BLOCK_P):
            gp *= 2
        if gp * nreg >= D and gp % _WARP == 0:
            return gp, 1
    return g, rows_per_block


@_kernel(launch_bounds=(_ROW_BLOCK_P, 1))
def _row_lpp32(x, out, wb, eps, p_exp, stats):
    """_row_lpp for float16 and float32 rows, its registers bounded to 128
    (launch bounds: a block of _ROW_BLOCK_P threads, or two of 256, per SM);
    launched by row_launch_lpp32."""
    buf = cuda.local.array(_NREG_P, x.dtype)
    _row_norm_body(x, out, wb, eps, 3, p_exp, stats, buf)


# Rows past the registers of any row group (``row_norm``: D > threads x
# values per thread): one block per row (cuda.ROW_LONG threads).  The row is read
# in chunks of G x nreg elements, each chunk's nreg loads issued before any is
# used (registers: the chunk buffer only, nothing cached across chunks); pass 1
# folds each chunk into the thread's statistics, the block combines them, and
# pass 2 re-reads the row, which the block has just read (L2) and writes the
# output: one read of x from HBM, one from L2 (NOTES.md section 27).
_MAX_BLOCK_LONG = 256  # block-per-row threads of the long-row kernels at most


@cuda.jit(device=True)
def _block_chan(n, mu, r, q, shn, shm, shr, shq):
    """Chan-merge (count, mean + residual, M2) over the block's threads
    (chan_merge_dd; a shared-memory tree in a fixed order, so every thread
    gets the same bits, on hardware and in the simulator).  The block is a
    power of two of at most _MAX_BLOCK_LONG threads; all must call."""
    g = cuda.threadIdx.x
    G = cuda.blockDim.x
    shn[g] = n
    shm[g] = mu
    shr[g] = r
    shq[g] = q
    cuda.syncthreads()
    step = G // 2
    while step > 0:
        if g < step:
            h = g + step
            a = chan_merge_dd(shn[g], shm[g], shr[g], shq[g], shn[h], shm[h], shr[h], shq[h])
            shn[g], shm[g], shr[g], shq[g] = a
        cuda.syncthreads()
        step //= 2
    n, mu, r, q = shn[0], shm[0], shr[0], shq[0]
    cuda.syncthreads()
    return n, mu, r, q


@cuda.jit(device=True)
def _block_total(s, sh, is_max):
    """Sum (or max) of s over the block's threads, the same fixed tree
    (_block_chan's order); all must call."""
    g = cuda.threadIdx.x
    sh[g] = s
    cuda.syncthreads()
    step = cuda.blockDim.x // 2
    while step > 0:
        if g < step:
            sh[g] = _combine(sh[g], sh[g + step], is_max)
        cuda.syncthreads()
        step //= 2
    tot = sh[0]
    cuda.syncthreads()
    return tot


@(cuda.jit(device=True) if SIMULATOR else cuda.jit(device=True, forceinline=True))
def _row_long_body(x, out, wb, eps, mode, p_exp, stats, buf):
    """A long row per block (mode as _row_norm_body's: 0 layer norm, 1 RMS,
    2 p = 1, 2, inf, 3 other p): statistics by chunks of G x nreg (each
    thread's nreg loads in flight before use), then the output pass, chunk
    by chunk.  Layer norm: each chunk's (count, mean + residual, M2) by the
    corrected two-pass over the thread's registers, folded by chan_merge_dd
    (then over the block): x is read once for the statistics, not twice."""
    shn = cuda.shared.array(_MAX_BLOCK_LONG, float64)
    shm = cuda.shared.array(_MAX_BLOCK_LONG, float64)
    shr = cuda.shared.array(_MAX_BLOCK_LONG, float64)
    shq = cuda.shared.array(_MAX_BLOCK_LONG, float64)
    R, D = x.shape
    g = cuda.threadIdx.x
    G = cuda.blockDim.x
    nreg = buf.shape[0]  # a constant once inlined: the loops over buf unroll
    step = G * nreg
    dn = float64(D)
    pmode = 0 if p_exp == 1.0 else (1 if p_exp == 2.0 else (2 if p_exp == math.inf else 3))
    RW = wb.shape[1]
    seglen, sg0, rm0, dq, dr = _segments(D, wb.shape[2], g, G)
    for r in range(cuda.blockIdx.x, R, cuda.gridDim.x):  # block-uniform
        n = 0.0
        mu = 0.0
        res = 0.0
        q = 0.0
        s = 0.0
        for c0 in range(g, D, step):
            for j in range(nreg):
                d = c0 + j * G
                if d < D:
                    buf[j] = x[r, d]
            if mode == 0:
                cn = 0.0
                cs = 0.0
                for j in range(nreg):
                    if c0 + j * G < D:
                        cn += 1.0
                        cs += float64(buf[j])
                cm = cs / cn
                e = 0.0
                cq = 0.0
                for j in range(nreg):
                    if c0 + j * G < D:
                        dv = float64(buf[j]) - cm
                        e += dv
                        cq += dv * dv
                # corrected two-pass: the mean's rounding as a residual, M2
                # less its square (Chan, Golub & LeVeque 1983)
                n, mu, res, q = chan_merge_dd(n, mu, res, q, cn, cm, e / cn, cq - e * e / cn)
            else:
                for j in range(nreg):
                    if c0 + j * G < D:
                        s = _row_term(s, float64(buf[j]), mode, pmode, p_exp)
        if mode == 0:
            n, mu, res, q = _block_chan(n, mu, res, q, shn, shm, shr, shq)
            mean = mu + res
            var = variance(dn, q, 0.0)
            rstd = inv_std(var, eps) if var + eps != 0.0 else math.inf
        else:
            mean = 0.0
            rstd = _row_scale(_block_total(s, shn, mode == 2 and pmode == 2), dn, mode, pmode, p_exp, eps)
        wr = wb[0, r % RW]
        br = wb[1, r % RW]
        sg = sg0
        rm = rm0
        for c0 in range(g, D, step):
            for j in range(nreg):
                d = c0 + j * G
                if d < D:
                    buf[j] = x[r, d]
            sg, rm = _store_chunk(out, r, buf, c0, G, mean, rstd, wr, br, sg, rm, dq, dr, seglen)
        if g == 0:
            stats[0, r] = mean
            stats[1, r] = rstd


def _make_row_long(mode, nreg, name):
    """The long-row kernel ``name`` of ``mode`` (_row_long_body's) keeping
    ``nreg`` values per thread per chunk (a local array's length is a
    compile-time constant: one build per count)."""
    if mode <= 1:

        def _row_long(x, out, wb, eps, stats):
            buf = cuda.local.array(nreg, x.dtype)
            _row_long_body(x, out, wb, eps, mode, 0.0, stats, buf)

    else:

        def _row_long(x, out, wb, eps, p_exp, stats):
            buf = cuda.local.array(nreg, x.dtype)
            _row_long_body(x, out, wb, eps, mode, p_exp, stats, buf)

    _row_long.__name__ = _row_long.__qualname__ = name
    return _row_long


# Layer norm (also instance and group norm as rows), RMS norm, lp_normalize
# (p = 1, 2, inf; other p: _NREG_P values, the pow is a call) of rows past the
# registers, launched with blocks of 128 (cuda.ROW_LONG).  float16/32: 153-212
# registers, no spills (ptxas, sm_90): two blocks per SM, so one block's
# reductions overlap the other's loads, 32 loads in flight per thread (16 for
# other p).  float64 layer norm spilled 60 B with 32 values: _row_long_layer_d
# keeps 16 (144 registers: three blocks per SM).  Launch bounds for two
# blocks of 256 (128 registers) spilled 4-20 B even at 16 values.
_row_long_layer = _kernel()(_make_row_long(0, _NREG, "_row_long_layer"))
_row_long_layer_d = _kernel()(_make_row_long(0, _NREG_P, "_row_long_layer_d"))
_row_long_rms = _kernel()(_make_row_long(1, _NREG, "_row_long_rms"))
_row_long_lp = _kernel()(_make_row_long(2, _NREG, "_row_long_lp"))
_row_long_lpp = _kernel()(_make_row_long(3, _NREG_P, "_row_long_lpp"))


@_kernel()
def _copy1(src, dst):
    """dst[...] = src[...] for a strided 1-D src into a contiguous dst (grid-stride)."""
    # src, dst: (A,)
    for i in range(cuda.grid(1), src.shape[0], cuda.gridsize(1)):
        dst[i] = src[i]


@_kernel()
def _copy2(src, dst):
    """dst[...] = src[...] for a strided 2-D src into a C-contiguous dst (grid-stride)."""
    # src, dst: (A, B)
    A, B = src.shape
    for i in range(cuda.grid(1), A * B, cuda.gridsize(1)):
        a = i // B
        dst[a, i - a * B] = src[a, i - a * B]


@_kernel()
def _copy3(src, dst):
    """dst[...] = src[...] for a strided 3-D src into a C-contiguous dst (grid-stride)."""
    # src, dst: (A, B, C)
    A, B, C = src.shape
    for i in range(cuda.grid(1), A * B * C, cuda.gridsize(1)):
        c = i % C
        ab = i // C
        b = ab % B
        dst[ab // B, b, c] = src[ab // B, b, c]


# The one-read channels-last instance/group norm kernels (_cuda_tiles.py,
# which takes _kernel and SIMULATOR from here: import this module first).
from ._cuda_tiles import _tile_norm, _tile_norm_h, tile_signatures  # noqa: E402, F401


def streaming(name: str, itemsize: int):
    """The streaming kernel ``name`` (``_moments_partial``,
    ``_pnorm_partial``, ``_apply_flat``, ``_apply_wide``) for x of
    ``itemsize`` bytes: 2-byte dtypes take the ``_h`` kernel, twice the
    elements in flight per thread (the bytes of the float32 kernel)."""
    return globals()[name + "_h" if itemsize == 2 else name]


def chunk_rows(itemsize: int) -> int:
    """Rows per thread chunk of the moments kernel for x's itemsize."""
    return _CH_H if itemsize == 2 else _CH


def launch_signatures():
    """{kernel name: [argument types, ...]}: every signature the backend
    launches, per input dtype (float16/32/64).  The PTX compile test
    (tests/test_cuda_ptx.py) compiles each for sm_90 with NVVM, so typing
    errors that the simulator cannot see fail without a GPU."""
    from numba import types as t

    f64 = t.float64
    sigs: dict = {}
    for dt in (t.float16, t.float32, t.float64):
        add = lambda name, *args: sigs.setdefault(name, []).append(tuple(args))  # noqa: E731
        h = "_h" if dt == t.float16 else ""  # (streaming(): 2-byte dtypes)
        add("_moments_partial" + h, dt[:, :, ::1], t.boolean, t.boolean, t.int64, f64[:, :, :, ::1])
        add("_pnorm_partial" + h, dt[:, :, ::1], t.int64, f64, t.boolean, t.int64, f64[:, :, ::1])
        add("_apply_flat" + h, dt[:, ::1], dt[:, ::1], f64[:, :, ::1], t.boolean, f64, f64)
        add("_apply_wide" + h, dt[:, :, ::1], dt[:, :, ::1], f64[:, :, ::1], t.boolean, f64, f64)
        add("_row_layer", dt[:, ::1], dt[:, ::1], f64[:, :, ::1], f64, f64[:, ::1])
        add("_row_rms", dt[:, ::1], dt[:, ::1], f64[:, :, ::1], f64, f64[:, ::1])
        add("_row_lp", dt[:, ::1], dt[:, ::1], f64[:, :, ::1], f64, f64, f64[:, ::1])
        # other p: _row_lpp32 (launch bounds) for float16/32, _row_lpp for float64
        lpp = "_row_lpp" if dt == f64 else "_row_lpp32"
        add(lpp, dt[:, ::1], dt[:, ::1], f64[:, :, ::1], f64, f64, f64[:, ::1])
        # rows past the registers (cuda.row_norm: a block per row)
        long_layer = "_row_long_layer_d" if dt == f64 else "_row_long_layer"
        add(long_layer, dt[:, ::1], dt[:, ::1], f64[:, :, ::1], f64, f64[:, ::1])
        add("_row_long_rms", dt[:, ::1], dt[:, ::1], f64[:, :, ::1], f64, f64[:, ::1])
        add("_row_long_lp", dt[:, ::1], dt[:, ::1], f64[:, :, ::1], f64, f64, f64[:, ::1])
        add("_row_long_lpp", dt[:, ::1], dt[:, ::1], f64[:, :, ::1], f64, f64, f64[:, ::1])
        add("_copy1", dt[:], dt[::1])
        add("_copy1", dt[:], f64[::1])  # device parameters cast to float64 (batch_norm_eval)
        add("_copy2", dt[:, :], dt[:, ::1])
        add("_copy3", dt[:, :, :], dt[:, :, ::1])
        add("_running_stat", f64[:, ::1], t.int64[:, ::1], t.boolean, f64, dt[:])
        for name, args in tile_signatures(dt).items():
            add(name, *args)
    sigs["_moments_merge"] = [(f64[:, :, :, ::1], f64[:, :, ::1])]
    sigs["_fold_sum"] = [(f64[:, :, ::1], t.boolean, f64[:, ::1])]
    fin = (
        f64[:, ::1],
        t.int64[:, :, ::1],
        f64[:, ::1],
        t.int64,
        f64,
        f64,
        f64,
        f64,
        f64,
        t.boolean,
        t.boolean,
    )
    sigs["_finish_prm"] = [(*fin, f64[:, :, ::1])]
    sigs["_bn_eval_prm"] = [(t.int64[:, ::1], f64[:, ::1], f64, f64[:, :, ::1])]
    return sigs
