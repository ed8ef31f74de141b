"""Channels-last instance and group norm in one read of x (private; launched
by ``cuda.tile_norm``; issue 17, item 3).

x is seen as ``(N, S, C)`` (samples, spatial, channels; C-contiguous).  A
group (n, g) is S x C/G elements at stride C, so a single read needs the
group's slab on chip until its statistics are known: here a thread block
takes one *tile* of a sample, S rows x ``tc`` consecutive channels holding
whole groups, (1) computes each group's moments over the tile (float64,
``_moments_body``'s exactness scheme: chunks of rows loaded before use, an
exact two-pass per chunk, ``shifted_moments`` and ``chan_merge_dd``), merges
them over the block and finishes each group's (mean, rstd) with
``_stats.py``'s scalar functions as ``_finish_prm`` does, then (2) applies
``out = (x - mean) * (rstd * weight[c]) + bias[c]`` re-reading the tile,
which is then still in L2: one HBM read of x and one L2 read.  The grid is
capped so that the tiles of all live blocks fit in L2 (:func:`tile_launch`);
blocks walk the tiles grid-stride.  Statistics stay on the device:
``st`` (4, N*G) = count, mean, mean residual, M2 of each (n, g), the rows
of ``moments_device`` that ``_running_stat`` and the host's ``_rounded`` read.

``_cuda_kernels`` imports this module at its end (the kernels are listed in
its ``launch_signatures``) and this module takes ``_kernel`` from it:
import ``_cuda_kernels`` first (``cuda.py`` does).

Guarded by tests/test_cuda_tiles.py (simulator, against the CPU) and
tests/test_cuda_ptx.py (sm_90, no spills); figures in
``benchmarks/cuda_static.py``.
"""

from __future__ import annotations

import math

from numba import cuda, float64

from .._stats import chan_merge_dd, inv_std, shifted_moments, variance
from ._cuda_kernels import SIMULATOR, _kernel

# Most threads per block: launch bounds (_TILE_BLOCK, 1) keep the kernel
# within 65536 / 512 = 128 registers, so an SM holds one block of 512 or two
# of 256 (the shared scratch below is sized for it).
_TILE_BLOCK = 512

# Rows per thread chunk (loaded before any is used; in both passes): the
# most that compile without spills at 128 registers (ptxas -v, sm_90):
# float32 and float64 16 (128 / 126 registers), float16 20 (32 spilled 504
# bytes, 24 64 bytes; benchmarks/cuda_static.py).
_TILE_CH = 16
_TILE_CH_H = 20


def tile_chunk(itemsize: int) -> int:
    """Rows per thread chunk (loads in flight per thread) for x's itemsize."""
    return _TILE_CH_H if itemsize == 2 else _TILE_CH


def tile_launch(N, S, C, cpg, itemsize, sms, l2_bytes, row_bytes, threads, blocks_per_sm):
    """(tc, (TX, TY), grid) of ``_tile_norm`` for x of shape (N, S, C) with
    groups of ``cpg`` channels, or None when a tile cannot fit L2.

    ``tc`` (the tile's channels = TX): the smallest multiple of cpg whose row
    is at least ``row_bytes`` (a whole sector per row of the tile) and whose
    tile gives every thread of a block of ``threads`` a full chunk, at most C
    and ``_TILE_BLOCK``; with fewer tiles than SMs, narrower (rows down to
    ``row_bytes / 2``) while that adds tiles.  The tile (S x tc x itemsize bytes) must fit
    ``l2_bytes / sms`` (every SM holds one live tile in L2).  Blocks of
    ``threads``, ``blocks_per_sm`` per SM when that many tiles per SM fit
    ``l2_bytes`` together and there are more tiles than SMs, else one block
    of 512 threads per SM (the threads, and bytes in flight, of two blocks
    of 256); never more blocks than tiles (blocks walk the tiles
    grid-stride)."""
    if cpg > _TILE_BLOCK or C % cpg:
        return None
    ch = tile_chunk(itemsize)
    tc = cpg
    while tc < C and tc + cpg <= _TILE_BLOCK and (tc * itemsize < row_bytes or S * tc < threads * ch):
        tc += cpg
    # fewer tiles than SMs (the whole input is then within l2_bytes): narrower
    # tiles, rows down to half a sector, so that more SMs work (the block of
    # the neighbouring tile, live at the same time, reads the sector's other
    # half: from L2)
    while N * -(-C // tc) < sms and tc > cpg and 2 * (tc - cpg) * itemsize >= row_bytes:
        tc -= cpg
    tile_bytes = S * tc * itemsize
    if tile_bytes * sms > l2_bytes:
        return None
    ntiles = N * -(-C // tc)
    if l2_bytes // tile_bytes >= sms * blocks_per_sm and ntiles > sms:
        block, live = int(threads), sms * blocks_per_sm
    else:
        # one tile per SM (all L2 holds, or all there is): one block of 512
        block, live = _TILE_BLOCK, sms
    block = min(_TILE_BLOCK, max(block, tc))
    # (no more rows of threads than the tile has rows)
    return tc, (tc, max(1, min(block // tc, S))), max(1, min(ntiles, live))


def _make_tile_norm(ch):
    """_tile_norm with chunks of ``ch`` rows per thread."""

    def _tile_norm(x, out, wb, cpg, eps, st):
        """Instance/group norm of (N, S, C) x, one block per (sample, tile of
        whole groups): statistics, then the apply re-reading the tile (L2)."""
        _tile_norm_body(x, out, wb, cpg, eps, st, cuda.local.array(ch, x.dtype))

    return _tile_norm


@(cuda.jit(device=True) if SIMULATOR else cuda.jit(device=True, forceinline=True))
def _tile_norm_body(x, out, wb, cpg, eps, st, buf):
    """_tile_norm's body; ``buf``: the thread's chunk (x's dtype), its length
    a constant once inlined (the chunk loops unroll)."""
    # x, out: (N, S, C); wb: (2, C) float64 weight, bias; st: (4, N*G) float64
    # count, mean, mean residual, M2 of group j = n*G + g.  Block (TX, TY): TX
    # = tc channels (consecutive threads read consecutive addresses), TY
    # along S; a thread keeps one channel, so its partial is of one group.
    sh_n = cuda.shared.array(_TILE_BLOCK, float64)
    sh_m = cuda.shared.array(_TILE_BLOCK, float64)
    sh_r = cuda.shared.array(_TILE_BLOCK, float64)
    sh_q = cuda.shared.array(_TILE_BLOCK, float64)
    sh_c = cuda.shared.array(_TILE_BLOCK, float64)  # center (mean) per group of the tile
    sh_s = cuda.shared.array(_TILE_BLOCK, float64)  # rstd per group of the tile
    ch = buf.shape[0]
    N, S, C = x.shape
    G = C // cpg
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    TX = cuda.blockDim.x
    TY = cuda.blockDim.y
    t = ty * TX + tx
    ntc = (C + TX - 1) // TX
    # the tile loop is block-uniform: every thread reaches every syncthreads
    for tile in range(cuda.blockIdx.x, N * ntc, cuda.gridDim.x):
        n = tile // ntc
        c0 = (tile - n * ntc) * TX
        c = c0 + tx
        xn = x[n]
        on = out[n]
        # 1. this thread's moments of column c (the chunk's loads first, all
        # in flight before any is used; a full chunk without bounds tests)
        cnt = 0.0
        mu = 0.0
        rr_ = 0.0
        q = 0.0
        if c < C:
            for r in range(ty, S, ch * TY):
                m = min(ch, (S - r + TY - 1) // TY)
                if m == ch:
                    for j in range(ch):
                        buf[j] = xn[r + j * TY, c]
                else:
                    for j in range(ch):
                        if j < m:
                            buf[j] = xn[r + j * TY, c]
                # pass 1: the chunk's sum; pass 2: sums about its mean (the
                # CPU's exact two-pass; shifted_moments with condition ~1)
                tot = 0.0
                for j in range(ch):
                    if j < m:
                        tot += float64(buf[j])
                cm = tot / m
                s1 = 0.0
                s2 = 0.0
                for j in range(ch):
                    if j < m:
                        d = float64(buf[j]) - cm
                        s1 += d
                        s2 += d * d
                mh, ml, cq = shifted_moments(float64(m), cm, s1, s2)
                cnt, mu, rr_, q = chan_merge_dd(cnt, mu, rr_, q, float64(m), mh, ml, cq)
        # 2. merge over ty (shared-memory tree, columns side by side) ...
        sh_n[t] = cnt
        sh_m[t] = mu
        sh_r[t] = rr_
        sh_q[t] = q
        cuda.syncthreads()
        step = 1
        while step < TY:
            step *= 2
        step //= 2
        while step > 0:
            if ty < step and ty + step < TY:
                o = t + step * TX
                sh_n[t], sh_m[t], sh_r[t], sh_q[t] = chan_merge_dd(
                    sh_n[t], sh_m[t], sh_r[t], sh_q[t], sh_n[o], sh_m[o], sh_r[o], sh_q[o]
                )
            cuda.syncthreads()
            step //= 2
        # ... then over each group's cpg columns, in order, and finish it as
        # _finish_prm does (FIN_NORM): thread t < groups of the tile
        if t * cpg < min(TX, C - c0):
            k0 = t * cpg
            gn = sh_n[k0]
            gm = sh_m[k0]
            gr = sh_r[k0]
            gq = sh_q[k0]
            for k in range(k0 + 1, k0 + cpg):
                gn, gm, gr, gq = chan_merge_dd(gn, gm, gr, gq, sh_n[k], sh_m[k], sh_r[k], sh_q[k])
            j = n * G + c0 // cpg + t
            st[0, j] = gn
            st[1, j] = gm
            st[2, j] = gr
            st[3, j] = gq
            some = gn > 0.0
            # the mean rounded with its residual (reduce_moments' Fast2Sum)
            sh_c[t] = gm + gr if some else math.nan
            var = variance(gn, gq, 0.0) if some else math.nan
            sh_s[t] = inv_std(var, eps) if var + eps != 0.0 else math.inf  # (the simulator raises on 1/0)
        cuda.syncthreads()
        # 3. out = (x - mean) * (rstd * weight) + bias, re-reading the tile
        # (L2), ch loads in flight per thread; float64 arithmetic, cast on store
        if c < C:
            gl = tx // cpg
            cen = sh_c[gl]
            a = sh_s[gl] * wb[0, c]
            b = wb[1, c]
            for r in range(ty, S, ch * TY):
                m = min(ch, (S - r + TY - 1) // TY)
                if m == ch:
                    for j in range(ch):
                        buf[j] = xn[r + j * TY, c]
                    for j in range(ch):
                        on[r + j * TY, c] = (float64(buf[j]) - cen) * a + b
                else:
                    for j in range(ch):
                        if j < m:
                            buf[j] = xn[r + j * TY, c]
                    for j in range(ch):
                        if j < m:
                            on[r + j * TY, c] = (float64(buf[j]) - cen) * a + b
        cuda.syncthreads()  # the shared scratch is reused by the next tile


_tile_norm = _kernel(launch_bounds=(_TILE_BLOCK, 1))(_make_tile_norm(_TILE_CH))
_tile_norm_h = _kernel(launch_bounds=(_TILE_BLOCK, 1))(_make_tile_norm(_TILE_CH_H))


def tile_kernel(itemsize: int):
    """_tile_norm for x of ``itemsize`` bytes (2: _tile_norm_h, twice the
    rows per chunk: the bytes in flight of float32)."""
    return _tile_norm_h if itemsize == 2 else _tile_norm


def tile_signatures(dt):
    """{kernel name: argument types} launched for numba dtype ``dt``."""
    from numba import types as t

    f64 = t.float64
    name = "_tile_norm_h" if dt == t.float16 else "_tile_norm"
    return {name: (dt[:, :, ::1], dt[:, :, ::1], f64[:, ::1], t.int64, f64, f64[:, ::1])}
