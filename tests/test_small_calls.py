"""The fast paths of layer_norm/rms_norm (backends/cpu/shortcuts.py: rows_small; above
MIN_TASK_ELEMS they call the general path's row kernel), of instance/group
norm, and of small calls with out=.

It must give the general path's results, be taken only when nothing needs
converting, and leave every error to the general path's validation.
"""

from __future__ import annotations

import numpy as np
import pytest
from reference import layer_norm as ref_layer
from reference import rms_norm as ref_rms

import numbanorm as nbn
from numbanorm._config import MIN_TASK_ELEMS
from numbanorm.backends.cpu import shortcuts


def _general(fn, *args, **kw):
    # return_stats=True never takes the fast path
    return fn(*args, return_stats=True, **kw)[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (32, 64), (2, 3, 17), (MIN_TASK_ELEMS // 128, 128), (5,)])
@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_fast_path_matches_general_path_and_oracle(rng, dtype, shape, affine, offset):
    x = (rng.standard_normal(shape) * 3 + offset).astype(dtype)
    D = shape[-1]
    w = rng.standard_normal(D).astype(dtype) if affine else None
    b = rng.standard_normal(D).astype(dtype) if affine else None
    x0 = x.copy()
    assert shortcuts.rows_small(x, D, w, b, 1e-5, False) is not None  # it is the fast path
    assert shortcuts.rows_small(x, (D,), w, b, 1e-5, False) is not None
    y = nbn.layer_norm(x, D, w, b, 1e-5)
    tol = dict(rtol=1e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    assert y.dtype == dtype and y.shape == shape and y.flags.c_contiguous
    np.testing.assert_allclose(y, _general(nbn.layer_norm, x, D, w, b, 1e-5), **tol)
    np.testing.assert_allclose(y, ref_layer(x, (D,), w, b, 1e-5).astype(dtype), **tol)
    yr = nbn.rms_norm(x, D, w)
    np.testing.assert_allclose(yr, _general(nbn.rms_norm, x, D, w), **tol)
    np.testing.assert_allclose(yr, ref_rms(x, (D,), w, None).astype(dtype), **tol)
    np.testing.assert_array_equal(x, x0)
    assert not np.shares_memory(y, x)


def test_fast_path_keeps_nan_and_inf_in_their_row(rng):
    x = rng.standard_normal((4, 16)).astype(np.float32)
    x[1, 3] = np.nan
    x[2, 5] = np.inf
    y = nbn.layer_norm(x, 16)
    assert np.isnan(y[1]).all() and np.isnan(y[2]).all()
    assert np.isfinite(y[[0, 3]]).all()


@pytest.mark.parametrize(
    "case",
    [
        "noncontig",
        "float16",
        "int",
        "bigendian",
        "tuple2_shape",
        "np_int_shape",
        "int_eps",
        "w_float64",
        "w_list",
        "w_strided",
    ],
)
def test_inputs_that_need_converting_take_the_general_path(rng, case):
    x = rng.standard_normal((8, 16)).astype(np.float32)
    ns, w, eps = 16, None, 1e-5
    if case == "noncontig":
        x = rng.standard_normal((8, 32)).astype(np.float32)[:, ::2]
    elif case == "float16":
        x = x.astype(np.float16)
    elif case == "int":
        x = (x * 10).astype(np.int32)
    elif case == "bigendian":
        x = x.astype(">f4")
    elif case == "tuple2_shape":
        x = x.reshape(8, 4, 4)
        ns = (4, 4)
    elif case == "np_int_shape":
        ns = np.int64(16)
    elif case == "int_eps":
        eps = 0
    elif case == "w_float64":
        w = np.linspace(0.5, 2, 16)
    elif case == "w_list":
        w = list(np.linspace(0.5, 2, 16))
    elif case == "w_strided":
        w = np.linspace(0.5, 2, 32).astype(np.float32)[::2]
    assert shortcuts.rows_small(x, ns, w, None, eps, False) is None
    # ...and the general path computes it
    y = nbn.layer_norm(x, ns, w, eps=eps)
    xf = np.asarray(x, np.float64)
    ref = ref_layer(
        xf,
        (16,) if x.ndim == 2 else (4, 4),
        None if w is None else np.asarray(w, np.float64),
        None,
        float(eps),
    )
    np.testing.assert_allclose(np.asarray(y, np.float64), ref, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize(
    "kwargs, exc, word",
    [
        (dict(normalized_shape=15), ValueError, "normalized_shape"),
        (dict(weight=np.ones(15, np.float32)), ValueError, "weight"),
        (dict(bias=np.ones((1, 16), np.float32)), ValueError, "bias"),
        (dict(eps=-1.0), ValueError, "eps"),
        (dict(eps=float("inf")), ValueError, "eps"),
        (dict(eps=float("nan")), ValueError, "eps"),
        (dict(normalized_shape=True), TypeError, "normalized_shape"),
    ],
)
def test_errors_come_from_the_general_path(rng, kwargs, exc, word):
    x = rng.standard_normal((8, 16)).astype(np.float32)
    x0 = x.copy()
    args = dict(normalized_shape=16) | kwargs
    with pytest.raises(exc, match=word):
        nbn.layer_norm(x, **args)
    np.testing.assert_array_equal(x, x0)


def test_empty_and_zero_dim_inputs_are_refused_by_the_general_path():
    with pytest.raises(ValueError, match="empty"):
        nbn.layer_norm(np.empty((0, 4), np.float32), 4)
    with pytest.raises(ValueError, match="normalized_shape"):
        nbn.layer_norm(np.float32(1.0) * np.ones((), np.float32), 1)


def _bn(x, **kw):
    C = x.shape[1]
    rm, rv = np.full(C, 0.5, x.dtype), np.full(C, 2.0, x.dtype)
    return nbn.batch_norm(x, rm, rv, training=True, **kw), rm, rv


SMALL_OUT_OPS = {
    "layer_norm": ((32, 64), lambda x, **kw: nbn.layer_norm(x, 64, **kw)),
    "rms_norm": ((32, 64), lambda x, **kw: nbn.rms_norm(x, 64, **kw)),
    "lp_normalize": ((32, 64), lambda x, **kw: nbn.lp_normalize(x, 3.0, axis=-1, **kw)),
    "instance_norm": ((2, 16, 8, 8), lambda x, **kw: nbn.instance_norm(x, **kw)),
    "group_norm": ((2, 16, 8, 8), lambda x, **kw: nbn.group_norm(x, 4, **kw)),
    "batch_norm": ((2, 16, 8, 8), _bn),
    "standardize": ((32, 64), lambda x, **kw: nbn.standardize(x, axis=0, **kw)),
    "minmax_scale": ((32, 64), lambda x, **kw: nbn.minmax_scale(x, axis=0, **kw)),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", list(SMALL_OUT_OPS))
def test_small_calls_with_out_take_the_fast_path_with_the_general_bits(monkeypatch, rng, op, dtype):
    """out= on a small input runs the fast path's one kernel call (it took
    the general path's validation before: 2-3x the time of the allocating
    call) and gives the general path's bits, out of place and in place.
    (In place against out of place is another kernel variant for some ops,
    whose bits may differ by an ulp between a process that compiled it and
    one that loaded it: benchmarks/NOTES.md section 21d; not compared here.)"""
    shape, f = SMALL_OUT_OPS[op]
    x = (rng.standard_normal(shape) * 3 + 100).astype(dtype)
    x0 = x.copy()
    taken = []
    real = getattr(shortcuts, op)

    def spy(*a, **kw):
        y = real(*a, **kw)
        taken.append(y is not None)
        return y

    def first(r):
        return r[0] if op == "batch_norm" else r

    monkeypatch.setattr(shortcuts, op, spy)
    out = np.full_like(x, np.nan)
    fast = f(x, out=out)
    assert taken == [True]
    assert first(fast) is out
    alloc = f(x)  # allocating: the same bits
    xi = x.copy()
    assert first(f(xi, out=xi)) is xi
    monkeypatch.setattr(shortcuts, op, lambda *a, **kw: None)  # the general path
    out2 = np.full_like(x, np.nan)
    general = f(x, out=out2)
    for a, b in zip(*(t if op == "batch_norm" else (t,) for t in (fast, general)), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(first(alloc), out2)
    xg = x.copy()
    f(xg, out=xg)
    np.testing.assert_array_equal(xi, xg)
    np.testing.assert_array_equal(x, x0)


MEDIUM_ROW_OPS = {
    # (lp_normalize takes no weights: the affine flag picks p = 2, else 3)
    "lp_normalize": lambda x, w, b, **kw: nbn.lp_normalize(x, 3.0 if w is None else 2.0, axis=-1, **kw),
    "layer_norm": lambda x, w, b, **kw: nbn.layer_norm(x, x.shape[-1], w, b, **kw),
    "rms_norm": lambda x, w, b, **kw: nbn.rms_norm(x, x.shape[-1], w, **kw),
    "instance_norm": lambda x, w, b, **kw: nbn.instance_norm(x, weight=w, bias=b, **kw),
    "group_norm": lambda x, w, b, **kw: nbn.group_norm(x, 4, w, b, **kw),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("op", list(MEDIUM_ROW_OPS))
@pytest.mark.parametrize("shape", [(64, 1024), (8, 16, 33, 40), (2, 8, 40000)])
def test_medium_row_calls_fast_path_general_bits(monkeypatch, rng, op, affine, dtype, shape):
    """Above MIN_TASK_ELEMS, layer/RMS/instance/group norm and lp_normalize
    over rows of a plain C-contiguous x call the general path's row kernel
    directly (without its validation): the same bits, allocating, with out=
    and in place."""
    if op in ("instance_norm", "group_norm") and len(shape) < 3:
        shape = (4, 16, shape[1])
    x = (rng.standard_normal(shape) * 3 + 50).astype(dtype)
    assert x.size > MIN_TASK_ELEMS
    n = x.shape[1] if op in ("instance_norm", "group_norm") else x.shape[-1]
    w = rng.standard_normal(n).astype(dtype) if affine else None
    b = rng.standard_normal(n).astype(dtype) if affine else None
    f = MEDIUM_ROW_OPS[op]
    taken = []
    real = getattr(shortcuts, op)
    monkeypatch.setattr(shortcuts, op, lambda *a, **kw: taken.append(1) or real(*a, **kw))
    fast = f(x, w, b)
    out = np.empty_like(x)
    assert f(x, w, b, out=out) is out
    xi = x.copy()
    f(xi, w, b, out=xi)
    assert len(taken) == 3
    monkeypatch.setattr(shortcuts, op, lambda *a, **kw: None)  # the general path
    general = f(x, w, b)
    np.testing.assert_array_equal(fast, general)
    np.testing.assert_array_equal(out, general)
    xg = x.copy()
    f(xg, w, b, out=xg)
    np.testing.assert_array_equal(xi, xg)


def _axes_reference(nd, axis):
    """simple_axes written out without a cache."""
    if type(axis) is int:
        return (axis % nd,) if -nd <= axis < nd else None
    if axis is None:
        return tuple(range(nd))
    if type(axis) is not tuple or not axis or any(type(a) is not int or not -nd <= a < nd for a in axis):
        return None
    axes = tuple(sorted(a % nd for a in axis))
    return axes if len(set(axes)) == len(axes) else None


def _view_reference(shape, axes):
    kept = [i for i in range(len(shape)) if i not in axes]
    if kept and kept[-1] - kept[0] + 1 != len(kept):
        return None
    k0, k1 = (kept[0], kept[-1] + 1) if kept else (0, 0)
    A, C = int(np.prod(shape[:k0])), int(np.prod(shape[k0:k1]))
    return A, C, int(np.prod(shape)) // (A * C)


def test_cached_axes_and_views_match_their_definition():
    """simple_axes and chan_view are cached by value: an axis tuple equal to
    a cached one but holding a bool or a NumPy integer must still be
    refused (the general path validates it), and every answer must be the
    uncached one, asked first or after its equal."""
    shapes = [(4, 64, 32, 32), (1024, 256), (8, 16, 16, 48), (2, 3, 5)]
    axes_list = [0, 1, -1, 3, 4, -5, None, (), (0,), (0, 2, 3), (3, 2, 0), (0, 1, 2), (1, 3), (0, 0)]
    axes_list += [(0, 4), (-1, 0), (True,), (0, True), (np.int64(0),), (0, 2, np.int64(3)), [0, 2, 3], (1.0,)]
    for _ in range(2):  # second round: answers from the caches
        for shape in shapes:
            nd = len(shape)
            for axis in axes_list:
                got = shortcuts.simple_axes(nd, axis)
                assert got == _axes_reference(nd, axis), (shape, axis)
                if got is not None:
                    assert shortcuts.chan_view(shape, got) == _view_reference(shape, got), (shape, got)
                    assert shortcuts.chan_view(list(shape), list(got)) == _view_reference(shape, got)
    # a refused tuple first, then its equal of plain ints, and the reverse
    assert shortcuts.simple_axes(2, (True,)) is None and shortcuts.simple_axes(2, (1,)) == (1,)
    assert shortcuts.simple_axes(3, (2,)) == (2,) and shortcuts.simple_axes(3, (np.int64(2),)) is None


# (shape, groups, kernel): float32 group norm of at most MIN_TASK_ELEMS
# elements; rows (N*G, C/G*spatial) of at least SHORT_MIN_D elements whose
# segments (spatial) have at least SHORT_MIN_SEG take row_norm_groups
GROUP_CASES = [
    ((1, 64, 16, 16), 32, "row_norm_groups"),  # rows of 512, segments of 256
    ((2, 16, 8, 8), 8, "row_norm_groups"),  # rows of 128, segments of 64
    ((64, 64, 2, 2), 2, "row_norm_groups"),  # segments of 4
    ((16, 128, 2, 1), 2, "row_norm_small"),  # segments of 2
    ((16, 256, 1, 1), 2, "row_norm_short"),  # segments of 1: one weight an element
    ((8, 32, 4, 4), 8, "row_norm_small"),  # rows of 64
    ((2, 16, 16, 16), 16, "row_norm_short"),  # one channel a group: one weight a row
]


@pytest.mark.parametrize("offset", [0.0, 1e6])
@pytest.mark.parametrize("shape,groups,kernel", GROUP_CASES)
def test_small_float32_group_norm_kernels(monkeypatch, rng, shape, groups, kernel, offset):
    from numbanorm.backends.cpu import small

    seen = []
    for name in ("row_norm_small", "row_norm_short", "row_norm_groups"):
        pair = getattr(small, name)
        spied = tuple(lambda *a, f=f, n=name: (seen.append(n), f(*a))[1] for f in pair)
        monkeypatch.setattr(small, name, spied)
    x = (rng.standard_normal(shape) * 3 + offset).astype(np.float32)
    C = shape[1]
    w = rng.uniform(-2, 2, C).astype(np.float32)
    b = rng.uniform(-2, 2, C).astype(np.float32)
    x0 = x.copy()
    y = nbn.group_norm(x, groups, w, b)
    assert seen == [kernel]
    np.testing.assert_array_equal(x, x0)
    # the general path (weights as lists: converted, then the same kernel)
    # and in place give the same bits
    np.testing.assert_array_equal(nbn.group_norm(x, groups, list(w), list(b)), y)
    xi = x.copy()
    assert nbn.group_norm(xi, groups, w, b, out=xi) is xi
    np.testing.assert_array_equal(xi, y)
    # against float64 statistics of the float32 values: float32 output
    # rounding of terms of size |a (x - mean)| and |b| (the mean split
    # hi/lo keeps x far from zero exact: offset 1e6 is the test)
    xd = x.astype(np.float64).reshape(shape[0], groups, -1)
    mu = xd.mean(axis=2, keepdims=True)
    rs = 1.0 / np.sqrt(xd.var(axis=2, keepdims=True) + 1e-5)
    z = ((xd - mu) * rs).reshape(shape)
    cs = (slice(None),) + (None,) * (len(shape) - 2)  # (C, 1, ...)
    wd, bd = w.astype(np.float64)[cs], b.astype(np.float64)[cs]
    ref = z * wd + bd
    scale = np.abs(z * wd) + np.abs(bd)
    assert np.all(np.abs(y - ref) <= 8 * np.finfo(np.float32).eps * scale), np.abs(y - ref).max()
