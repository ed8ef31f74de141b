"""Per-channel two-pass ops on large C-contiguous inputs: batch_norm,
standardize and minmax_scale with statistics per channel, for the two views
whose plan needs no reshuffling: ``(A*C, S)`` rows (channels in the middle,
S >= 256 elements per row) and ``(1, A*C)`` (channels last).

Each is the general path without its planning: the moments (or min/max)
tasks, the merges over segments and batch, the parameters, the apply task.
batch_norm training over rows may instead take the channel-pipelined kernel
(:func:`bn_pipe_task`), which reads x from memory once.
"""

from __future__ import annotations

import math
import threading

import numpy as np
from numba import njit

from ..._cache import kernel, subroutine
from ..._config import (
    CHAN_PIPE_CACHE_BYTES,
    CHAN_PIPE_MIN_ROW_BYTES,
    FASTMATH,
    FASTMATH_ELEMENTWISE,
    LINE_BYTES,
    ROW_CHUNK,
)
from ..._stats import (
    batch_norm_params,
    chan_merge_dd,
    inv_std,
    minmax_factor,
    minmax_merge,
    running_update,
    standardize_params,
)
from ._elementwise import pipe_span
from ._intrinsics import in_place, line_span, min2, populate, resident, stream_span, streams
from ._tasks import _key, _run_tasks, launch, run, task, threads
from .affine import apply_lanes, apply_rows, apply_span, lowered_param
from .axis_stats import (
    F_PART,
    F_PRM,
    F_STOP,
    col_moments,
    col_moments_exact,
    col_split,
    frame,
    frame_key,
    row_moments,
    row_tasks,
)
from .minmax import col_minmax, row_minmax
from .segments import absorb_shifted, segment_moments, segment_step

_FM = set(FASTMATH)
_FME = set(FASTMATH_ELEMENTWISE)

# batch_norm training may take the channel-pipelined kernel (tests compare it
# with the two-pass by setting this False)
CHAN_PIPE = True


def bn_pipe_ok(P: int, C: int, S: int, isz: int) -> bool:
    """Does batch_norm training over rows x2 (P = A*C, S) take bn_pipe_task?
    Every thread needs channels (at least two each), one channel per thread
    must fit CHAN_PIPE_CACHE_BYTES, and rows must be at least
    CHAN_PIPE_MIN_ROW_BYTES (_config)."""
    nt = threads()
    return (
        C >= 2 * nt
        and S * isz >= CHAN_PIPE_MIN_ROW_BYTES
        and (P // C) * S * isz * nt <= CHAN_PIPE_CACHE_BYTES
    )


@subroutine(fastmath=_FM, error_model="numpy", nogil=True)
def apply_row_moments(u, v, o, ch, sc, sh, stream, same):
    """apply_span(v, o, ...) while the moments of row u (as long as v) are
    summed in the same loops: (count, mean, residual, M2) of u by
    segment_moments' algorithm (ROW_CHUNK chunks of shifted sums,
    segment_step), with u's reads from memory interleaved with o's writes as
    in a copy.  ``same``: v is o (in place)."""
    T = v.dtype.type
    S = v.size
    per = LINE_BYTES // o.itemsize
    p, m = stream_span(o.ctypes.data, 0, S, o.itemsize, stream)
    zero = T(0)
    n = 0.0
    mean = 0.0
    res = 0.0
    m2 = 0.0
    shu = np.float64(u[0])
    tn = 0.0
    t1 = 0.0
    t2 = 0.0
    for c0 in range(0, S, ROW_CHUNK):
        c1 = min2(S, c0 + ROW_CHUNK)
        # the chunk's streamed part: its whole lines inside [p, m)
        a, b = line_span(p, m, c0, c1, per)
        s1 = 0.0
        s2 = 0.0
        for piece in range(3):
            lo = c0 if piece == 0 else (a if piece == 1 else b)
            hi = a if piece == 0 else (b if piece == 1 else c1)
            r1, r2 = pipe_span(same, u[lo:hi], v[lo:hi], o[lo:hi], shu, ch, zero, sc, sh, piece == 1)
            s1 += r1
            s2 += r2
        n, mean, res, m2, shu, tn, t1, t2 = segment_step(u[c0:c1], s1, s2, n, mean, res, m2, shu, tn, t1, t2)
    if tn > 0.0:
        n, mean, res, m2 = absorb_shifted(n, mean, res, m2, tn, shu, t1, t2)
    return n, mean, res, m2


@task(fastmath=_FME, variants=("stream", "same"))
def bn_pipe_task(stream, same):
    """Task t of batch_norm training over channels-first rows x2 (A*C, S),
    pipelined over channels (NOTES.md section 16).

    Each of ``ntask`` tasks owns a range of channels.  It sums its first
    channel alone; then, channel by channel, the loop that writes row (a, c)
    from the cache (it was read while channel c-1 was written) sums row
    (a, c+1) from memory.  So x is read from memory once, and its reads
    interleave with y's writes as in a copy, where the two-pass reads it
    twice, in a read-only and a write-only pass.  Each row's moments are
    segment_moments' (the summation order within a chunk may differ in the
    last bits), merged over the batch in order as the general path does;
    the parameters are batch_norm_params', the output formula the apply
    kernel's.  ``stream``: streaming stores; ``same``: in place.  Compiled
    with FASTMATH_ELEMENTWISE (the apply loop is inlined here), which leaves
    its own arithmetic (no a*b+c) as NumPy's.
    """

    def bn_pipe_kernel(t, x2, o2, C, ntask, rm, rv, w, b, update, momentum, eps, mean, rstd):
        P, S = x2.shape
        A = P // C
        T = x2.dtype.type
        lo = T(-np.inf)
        hi = T(np.inf)
        # channel ranges as even as they go (9 over 4 tasks: 2, 2, 2, 3)
        c0 = t * C // ntask
        c1 = (t + 1) * C // ntask
        if c0 >= c1:
            return
        n = 0.0
        u = 0.0
        r = 0.0
        q = 0.0
        for a in range(A):
            rn, ru, rr, rq = segment_moments(x2[a * C + c0], 0, S)
            n, u, r, q = chan_merge_dd(n, u, r, q, rn, ru, rr, rq)
        for c in range(c0, c1):
            mu = u + r
            rs = inv_std(q / n, eps)
            if update:
                rm[c] = running_update(np.float64(rm[c]), mu, momentum)
                rv[c] = running_update(np.float64(rv[c]), q / (n - 1.0), momentum)
            mean[c] = mu
            rstd[c] = rs
            ch, sc, sh = lowered_param(
                mu, rs * (np.float64(w[c]) if w.size else 1.0), b[c] if b.size else 0.0, T
            )
            n = 0.0
            u = 0.0
            r = 0.0
            q = 0.0
            for a in range(A):
                v = x2[a * C + c]
                o = o2[a * C + c]
                if c + 1 < c1:
                    rn, ru, rr, rq = apply_row_moments(x2[a * C + c + 1], v, o, ch, sc, sh, stream, same)
                    n, u, r, q = chan_merge_dd(n, u, r, q, rn, ru, rr, rq)
                else:
                    apply_span(v, o, ch, sc, sh, lo, hi, stream, same, False)

    return bn_pipe_kernel


def bn_pipe(x2, o2, C, ntask, rm, rv, w, b, update, momentum, eps, stream, mean, rstd):
    """batch_norm training over rows x2 (A*C, S) through bn_pipe_task in
    ``ntask`` tasks; streaming stores when ``stream`` (not in place)."""
    same = in_place(x2, o2)
    args = (x2, o2, C, ntask, rm, rv, w, b, update, momentum, eps, mean, rstd)
    run(bn_pipe_task, ntask, *args, stream=stream and not same, same=same)


# --------------------------------------------------------------------------
# the two-pass ops: one compiled call runs the statistics tasks, the merges,
# the parameters and the apply task (no Python between them: cold host code
# there cost 0.3-0.7 ms per 128 MiB call, NOTES.md sections 14, 21; and each
# launch from Python costs a dispatch of the 15-slot frame, section 26)
# --------------------------------------------------------------------------


class _Plan:
    """The frame (axis_stats.frame) of one two-pass call on x2: (A*C, S) rows
    (``rows``) or (1, A*C) channels last; the addresses of its statistics
    task (``stats``: "moments", "minmax" or None), of the exact lane moments
    when this process has compiled them, and of the apply task (``same``:
    in place; ``stream``: streaming stores).  Made by :func:`_plan`."""

    def __init__(self, x2, o2, C, rows, skipnan, lo, hi, stats, same, stream, nthreads):
        P = x2.shape[0]
        self.C, self.rows, self.same, self.nthreads = C, rows, same, nthreads
        K = 1 if rows else C
        x3 = x2.reshape(P, -1, 1) if rows else x2.reshape(1, -1, C)
        P3, R, _ = x3.shape
        # (the apply task's chunks are the moments tasks' segments, as in the
        # general path)
        nseg, L, rb = col_split(P3, R, K, x2.itemsize)
        xf, of = x3.reshape(P3, R * K), o2.reshape(P3, R * K)
        La = L if K > 1 else 1
        # rot: the min/max lanes and apply_lanes' rotated parameters (rows
        # without min/max use none); lanes/acc/stop: the lane moments' and
        # min/max state (the row moments use none)
        # (self.lanes: the lane moments, whose tasks stop at a refused block)
        self.lanes = stats == "moments" and K > 1
        fr = frame(
            xf, K, L, nseg, rb, skipnan=skipnan, stats=stats is not None, of=of, lo=lo, hi=hi, La=La,
            rot=not rows or stats == "minmax", lanes=self.lanes or stats == "minmax", row_scratch=rows,
        )  # fmt: skip
        self.fr = fr
        self.P3, self.tail = P3, fr[2:]
        self.fin = np.empty((6, C))  # merged over the segments and the batch
        # (statistics tasks, apply tasks): over rows, every task is a row
        # task (row_moments or row_minmax, apply_rows: the frame's rg items
        # each); over lanes, one per segment
        grouped = row_tasks(fr) if rows else P3 * nseg
        self.ntask = (grouped, grouped)
        task = apply_rows if rows else apply_lanes
        fk = self.fkey = frame_key(fr)
        # the statistics task (axis_stats.run_moments' choice)
        if stats is None:
            self.stats = None
        elif stats == "minmax":
            self.stats = (row_minmax if rows else col_minmax), {}
        elif self.lanes:
            self.stats = col_moments, {}
        else:
            self.stats = row_moments, {"nan": bool(skipnan)}
        # cold: a helper process compiles the statistics task meanwhile
        # (numbanorm._ahead); its address is then taken after the glue's
        # compile, in glue()
        ahead = self.stats is not None and self.stats[0].ahead(fr, fk, **self.stats[1])
        self.aaddr = task.address(fr, fk, stream=stream, same=same, clip=lo is not None or hi is not None)
        self.maddr = None if ahead else self._stats_address()
        self.xaddr = col_moments_exact.address_if_compiled(fr, fk) if self.lanes else 0

    def _stats_address(self) -> int:
        """The statistics task's address (0: none)."""
        if self.stats is None:
            return 0
        task, flags = self.stats
        return task.address(self.fr, self.fkey, **flags)

    def bind(self, x2, o2):
        """The plan again for another x2 and out of the same shapes, types and
        variant (_plan's key): the frame takes them; the scratch arrays are
        reused as they are (no reset: every task writes each partial the
        glue reads, moments or min/max with their counts, for its segment;
        the partials of (1024, 256) are 96 KiB to reset; a test poisons
        the scratch and gets the same bits)."""
        # (x2 and o2 have the frame's shape already: (P, S) rows, or (1,
        # A*C) with channels last)
        self.fr = (x2, o2) + self.tail
        if self.lanes and not self.xaddr:
            self.xaddr = col_moments_exact.address_if_compiled(self.fr, self.fkey)
        return self

    def scratch_bytes(self) -> int:
        """Bytes of the frame's scratch arrays and fin (what a cached plan keeps)."""
        return self.fin.nbytes + sum(a.nbytes for a in self.tail if isinstance(a, np.ndarray))

    def glue(self, glue, *args):
        """Run ``glue`` (statistics, merges, parameters, apply) with the op's
        ``args``; when a lane task stopped at a refused block and the exact
        task was not compiled yet, compile it and run the rest."""
        fr = self.fr
        head = (fr[F_PART], self.fin, self.rows, self.C, fr[F_PRM])
        tail = (self.ntask, self.nthreads, fr)
        try:
            if self.maddr is None:
                # a helper compiles the statistics task: compile the glue
                # here first, then take the task (from the cache)
                full = (*head, 0, self.xaddr, self.lanes, self.aaddr, *tail, *args)
                glue.compile(tuple(glue.typeof_pyval(a) for a in full))
                if not self.same and not resident(fr[1]):
                    # meanwhile, a fresh output's pages faulted in (0.4-0.6
                    # s per 128 MiB in this VM, paid by the apply otherwise)
                    populate(fr[1])
                self.maddr = self._stats_address()
            if not launch(glue, *head, self.maddr, self.xaddr, self.lanes, self.aaddr, *tail, *args):
                self.xaddr = col_moments_exact.address(fr, self.fkey)
                launch(glue, *head, 0, self.xaddr, self.lanes, self.aaddr, *tail, *args)
        finally:
            self.fr = None  # (a cached plan must not keep the caller's x and out alive)


# Plans kept per thread (a thread-local cache: a plan's scratch arrays serve
# one call at a time): a medium call then rebinds a plan instead of making
# its frame, scratch arrays and task lookups again (4-10 us of a 1 MiB call,
# NOTES.md section 26; a wide matrix's lane scratch, 1.7 MB for 64x4096,
# cost 33 us to make again, section 34).  Plans with at most 4 MiB of
# scratch are kept, 8 per thread and 8 MiB of scratch in all, the oldest
# dropped first; a plan of over 1 MiB only where it fits without dropping
# one (calls cycling over more wide shapes than fit then build theirs as
# before: dropping one for another made every call build a plan in fresh
# memory, 1.14-1.20x the time).  A batch_norm plan holds a few KiB.
_PLANS = threading.local()
PLAN_CACHE_ENTRIES = 8
PLAN_CACHE_SCRATCH_BYTES = 4 << 20
PLAN_CACHE_TOTAL_BYTES = 8 << 20
PLAN_CACHE_EVICTING_BYTES = 1 << 20  # plans up to this size may drop others


def _plan(x2, o2, C, rows, skipnan, lo=None, hi=None, stats="moments", same=None):
    """The _Plan of a two-pass call: this thread's cached one for the same
    shapes, types, flags and variant (and thread count: the split follows
    it), rebound to x2 and o2, or a new one (cached when its scratch is
    small).  ``same``: whether o2 is x2 (in place), when the caller knows
    (else tested here)."""
    if same is None:
        same = in_place(x2, o2)
    stream = not same and streams(o2) and resident(o2)
    nthreads = threads()
    key = (x2.shape, _key(x2), _key(o2), C, rows, skipnan, lo, hi, stats, same, stream, nthreads)
    cache = getattr(_PLANS, "plans", None)
    if cache is None:
        cache = _PLANS.plans = {}
    plan = cache.get(key)
    if plan is not None:
        return plan.bind(x2, o2)
    plan = _Plan(x2, o2, C, rows, skipnan, lo, hi, stats, same, stream, nthreads)
    nbytes = plan.scratch_bytes()
    if nbytes <= PLAN_CACHE_SCRATCH_BYTES:
        held = sum(p.scratch_bytes() for p in cache.values())
        if nbytes > PLAN_CACHE_EVICTING_BYTES and (
            held + nbytes > PLAN_CACHE_TOTAL_BYTES or len(cache) >= PLAN_CACHE_ENTRIES
        ):
            return plan
        while cache and (len(cache) >= PLAN_CACHE_ENTRIES or held + nbytes > PLAN_CACHE_TOTAL_BYTES):
            held -= cache.pop(next(iter(cache))).scratch_bytes()  # the oldest
        cache[key] = plan
    return plan


def clear_plans() -> None:
    """Forget this thread's cached plans (tests)."""
    _PLANS.plans = {}


@njit(error_model="numpy", inline="always")
def run_statistics(maddr, xaddr, lanes, ntask, nthreads, fr):
    """The statistics tasks of a glue: the task at ``maddr`` (0: none, or
    already run), then, with ``lanes``, the exact lane moments for the
    tasks that stopped (axis_stats.run_moments); ``ntask``: (statistics
    tasks, apply tasks), the plan's.  False when one stopped and the exact
    task's address ``xaddr`` is 0 (not compiled yet: the caller compiles it
    and calls again with ``maddr`` 0)."""
    for phase in range(2):  # (one launch site: each costs compile time)
        addr = maddr
        if phase == 1:
            stopped = False
            if lanes:
                stop = fr[F_STOP]
                for t in range(stop.size):
                    stopped |= stop[t] >= 0
            if stopped and xaddr == 0:
                return False
            addr = xaddr if stopped else 0
        if addr != 0:
            _run_tasks(addr, ntask[0], nthreads, fr)
    return True


@njit(error_model="numpy", inline="always")
def channel_moments(part, fin, rows, C):
    """fin[:4] (C,): per-channel count, mean, residual, M2 of the tasks'
    partials part (6, P, nseg, K): each (row, column)'s segments merged,
    then the batch (rows: row a*C + c of channel c), in the order
    _reduce.reduce_moments merges them, so the bits are the general path's;
    the mean's residual rounded in (fin[1]), empty channels NaN.  One loop
    nest with one merge (a merge per stage compiled twice: NOTES.md 21).
    Returns (count, mean, M2)."""
    P, nseg = part.shape[1], part.shape[2]
    A = P // C if rows else 1
    for c in range(C):
        n, u, r, q = 0.0, 0.0, 0.0, 0.0
        for a in range(A):
            i, k = (a * C + c, 0) if rows else (0, c)
            rn, ru, rr, rq = 0.0, 0.0, 0.0, 0.0
            for s in range(nseg + 1):
                if s < nseg:  # the row's segments, then the row into the batch
                    pn, pu, pr, pq = part[0, i, s, k], part[1, i, s, k], part[2, i, s, k], part[3, i, s, k]
                    an, au, ar, aq = rn, ru, rr, rq
                else:
                    pn, pu, pr, pq = rn, ru, rr, rq
                    an, au, ar, aq = n, u, r, q
                an, au, ar, aq = chan_merge_dd(an, au, ar, aq, pn, pu, pr, pq)
                if s < nseg:
                    rn, ru, rr, rq = an, au, ar, aq
                else:
                    n, u, r, q = an, au, ar, aq
        empty = n == 0.0
        fin[0, c] = n
        fin[1, c] = math.nan if empty else u + r
        fin[2, c] = r
        fin[3, c] = math.nan if empty else q
    return fin[0], fin[1], fin[3]


@njit(error_model="numpy", inline="always")
def channel_minmax(part, fin, rows, C):
    """fin[4], fin[5] (C,): per-channel min and max of the tasks' partials
    (a NaN partial propagates: it saw NaN, not skipped), empty channels
    NaN (the count, part[0], summed as channel_moments' merges add it);
    min/max need no moments, so minmax_scale compiles no moment merge.
    Returns (min, max)."""
    P, nseg = part.shape[1], part.shape[2]
    A = P // C if rows else 1
    for c in range(C):
        n = 0.0
        lo, hi = math.inf, -math.inf
        for a in range(A):
            i, k = (a * C + c, 0) if rows else (0, c)
            for s in range(nseg):
                n += part[0, i, s, k]
                lo, hi = minmax_merge(lo, hi, part[4, i, s, k], part[5, i, s, k])
        fin[4, c] = math.nan if n == 0.0 else lo
        fin[5, c] = math.nan if n == 0.0 else hi
    return fin[4], fin[5]


@njit(error_model="numpy", inline="always")
def apply_params(center, scale, shift, rows, C, prm, aaddr, ntask, nthreads, aargs):
    """Lay the per-channel float64 parameters out as the apply task reads
    them (rows: row r has channel r % C; lanes: lane j channel j % C), in
    x's dtype with the center's remainder moved into the shift
    (lowered_param, as affine.lane_params), then run the ntask[1] apply
    tasks (short rows several to a task: the plan counts them, so the glue
    compiles no row_group)."""
    T = prm.dtype.type
    P, L = prm.shape[1], prm.shape[2]
    # each channel's parameters lowered once, then copied C rows/lanes on
    # (P = A*C rows, L a multiple of C lanes): no modulo and no lowering per
    # row (with the row tasks' own change, the glue's time outside the apply
    # task at 16x512x7x7 went 14.5 -> 8.9 us, NOTES.md section 28)
    pr = prm[:, :, 0] if rows else prm[:, 0, :]  # (3, n): parameter set i
    n = P if rows else L
    for c in range(min2(C, n)):
        pr[0, c], pr[1, c], pr[2, c] = lowered_param(center[c], scale[c], shift[c], T)
    for i in range(C, n):
        pr[0, i], pr[1, i], pr[2, i] = pr[0, i - C], pr[1, i - C], pr[2, i - C]
    _run_tasks(aaddr, ntask[1], nthreads, aargs)


@kernel(light=True, error_model="numpy", nogil=True)
def _bn_glue(
    part, fin, rows, C, prm, maddr, xaddr, lanes, aaddr, ntask, nthreads, aargs,
    rm, rv, w, b, update, mom, eps, out
):  # fmt: skip
    """batch_norm training's statistics, merges, parameters
    (batch_norm_params; out (4, C): mean, rstd, scale, shift) and apply
    task, in one call (False: see run_statistics)."""
    if not run_statistics(maddr, xaddr, lanes, ntask, nthreads, aargs):
        return False
    cnt, mu, m2 = channel_moments(part, fin, rows, C)
    batch_norm_params(cnt, mu, m2, rm, rv, w, b, True, update, mom, eps, out[0], out[1], out[2], out[3])
    apply_params(out[0], out[2], out[3], rows, C, prm, aaddr, ntask, nthreads, aargs)
    return True


@kernel(light=True, error_model="numpy", nogil=True)
def _bn_eval_glue(
    part, fin, rows, C, prm, maddr, xaddr, lanes, aaddr, ntask, nthreads, aargs, rm, rv, w, b, eps, out
):
    """batch_norm eval's parameters from the running statistics and apply
    task: _bn_glue without the statistics and merges, so that an eval
    call does not compile them (a cold eval call 1.76 -> 1.11 s, NOTES.md
    section 26)."""
    run = out[0]  # (unread: the running statistics give the parameters)
    batch_norm_params(run, run, run, rm, rv, w, b, False, False, 0.0, eps, out[0], out[1], out[2], out[3])
    apply_params(out[0], out[2], out[3], rows, C, prm, aaddr, ntask, nthreads, aargs)
    return True


@kernel(light=True, error_model="numpy", nogil=True)
def _standardize_glue(
    part,
    fin,
    rows,
    C,
    prm,
    maddr,
    xaddr,
    lanes,
    aaddr,
    ntask,
    nthreads,
    aargs,
    ddof,
    with_mean,
    with_std,
    out,
):
    """standardize's statistics, merges, parameters (out (4, C): center,
    std, scale, shift 0) and apply task (False: see run_statistics)."""
    if not run_statistics(maddr, xaddr, lanes, ntask, nthreads, aargs):
        return False
    cnt, mu, m2 = channel_moments(part, fin, rows, C)
    standardize_params(cnt, mu, m2, ddof, with_mean, with_std, out[0], out[1], out[2])
    out[3, :] = 0.0
    apply_params(out[0], out[2], out[3], rows, C, prm, aaddr, ntask, nthreads, aargs)
    return True


@kernel(light=True, error_model="numpy", nogil=True)
def _minmax_glue(part, fin, rows, C, prm, maddr, xaddr, lanes, aaddr, ntask, nthreads, aargs, flo, fhi, out):
    """minmax_scale's statistics (min/max), merges, parameters (out (3, C):
    min, scale, shift lo) and apply task."""
    run_statistics(maddr, xaddr, lanes, ntask, nthreads, aargs)
    mn, mx = channel_minmax(part, fin, rows, C)
    for c in range(C):
        out[0, c] = mn[c]
        out[1, c] = minmax_factor(mn[c], mx[c], flo, fhi)
        out[2, c] = flo
    apply_params(out[0], out[1], out[2], rows, C, prm, aaddr, ntask, nthreads, aargs)
    return True


def batch_norm(x2, o2, C, rows, rm, rv, w, b, training, update, momentum, eps, same=None):
    """batch_norm of a large x2 (see the module docstring): rm/rv/w/b (C,)
    arrays or empty, the running stats updated in place (``update``).
    Returns the mean and rstd used, each a (C,) float64 view (of the
    call's own array).  Training over rows that bn_pipe_ok takes runs the
    channel-pipelined kernel.  ``same``: o2 is x2 (in place), when the
    caller knows."""
    if CHAN_PIPE and training and rows and bn_pipe_ok(x2.shape[0], C, x2.shape[1], x2.itemsize):
        # streaming stores also into a fresh output: there they measured
        # 0.86-0.90x the time of ordinary ones (the two-pass's apply kernel
        # streams only into resident pages; NOTES.md section 16)
        mean, rstd = np.empty(C), np.empty(C)
        bn_pipe(x2, o2, C, threads(), rm, rv, w, b, update, momentum, eps, streams(o2), mean, rstd)
        return mean, rstd
    plan = _plan(x2, o2, C, rows, False, stats="moments" if training else None, same=same)
    out = np.empty((4, C))
    if training:
        plan.glue(_bn_glue, rm, rv, w, b, update, momentum, eps, out)
    else:
        plan.glue(_bn_eval_glue, rm, rv, w, b, eps, out)
    return out[0], out[1]


def standardize(x2, o2, C, rows, ddof, with_mean, with_std, center=None, sd=None, same=None):
    """standardize of a large x2 per channel; the mean and std used written
    to ``center``, ``sd`` (C,) when given.  ``same``: o2 is x2, when the
    caller knows."""
    plan = _plan(x2, o2, C, rows, True, same=same)
    out = np.empty((4, C))
    plan.glue(_standardize_glue, float(ddof), with_mean, with_std, out)
    if center is not None:
        center[...] = out[0]
        sd[...] = out[1]


def minmax_scale(x2, o2, C, rows, flo, fhi, clip, same=None):
    """minmax_scale of a large x2 per channel to [flo, fhi], clipped there
    when ``clip``.  ``same``: o2 is x2, when the caller knows."""
    plan = _plan(
        x2, o2, C, rows, True, flo if clip else None, fhi if clip else None, stats="minmax", same=same
    )
    plan.glue(_minmax_glue, float(flo), float(fhi), np.empty((3, C)))


__all__ = ["batch_norm", "standardize", "minmax_scale", "bn_pipe_ok"]
