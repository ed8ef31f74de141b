"""Conformance of every public norm (API.md sections 2, 3, 7) with tests/reference.py.

The matrix is op x dtype x channel axis / reduced axes x shape (1-D to 5-D,
primes, size-1 axes, long rows) x affine x running statistics x training/eval,
plus the cross-cutting guarantees: ``out=`` (also in place), non-contiguous and
read-only inputs, the input is never modified, dtype rules, running statistics
updated in place, momentum, ``eps=None`` for ``rms_norm``, NaN handling of the
preprocessing functions.

Tolerances (against a float64 oracle computed from the very same input values):
float64 1e-9 relative, float32 2e-5 absolute on unit-scale outputs, float16 1e-2.
"""

from __future__ import annotations

import os
import sys
import zlib

import numpy as np
import pytest

import numbanorm as nbn

try:  # tests/ is not a package; make the oracle importable under any import mode
    import reference as ref
except ImportError:  # pragma: no cover - depends on pytest's import mode
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import reference as ref

F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
FLOATS = (F64, F32)
ALL_DTYPES = (
    F16,
    F32,
    F64,
    np.dtype(np.int8),
    np.dtype(np.int32),
    np.dtype(np.int64),
    np.dtype(np.uint8),
    np.dtype(np.bool_),
)
STAT_OPS = ("batch_norm", "instance_norm", "layer_norm", "group_norm", "rms_norm", "standardize")
OPS = STAT_OPS + ("minmax_scale", "lp_normalize")


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def rng_for(*key) -> np.random.Generator:
    """A generator seeded from the test's own parameters: deterministic, independent."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def make_x(shape, dtype, rng):
    """Unit-scale data of ``dtype`` (not centred: mean 0.5, std 2)."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if dtype.kind == "u":
        return rng.integers(0, 60, size=shape).astype(dtype)
    if dtype.kind == "i":
        return rng.integers(-50, 50, size=shape).astype(dtype)
    return (rng.standard_normal(shape) * 2.0 + 0.5).astype(dtype)


def tolerances(dtype, relative=False):
    dtype = np.dtype(dtype)
    if dtype == F64:
        return 1e-9, 1e-12
    if dtype == F32:
        # outputs are unit-scale: 2e-5 absolute; statistics (rstd can be large,
        # running variances are not unit-scale) also get a relative 1e-5.
        return (1e-5 if relative else 0.0), 2e-5
    return 1e-2, 1e-2


def assert_close(got, exp, dtype, what, relative=False):
    """``got`` (any float dtype) against the float64 oracle ``exp``; NaN must match NaN."""
    rtol, atol = tolerances(dtype, relative)
    got = np.asarray(got)
    assert got.shape == np.shape(exp), f"{what}: shape {got.shape}, expected {np.shape(exp)}"
    np.testing.assert_allclose(
        got.astype(np.float64), exp, rtol=rtol, atol=atol, equal_nan=True, err_msg=what
    )


def assert_stat_dtype(stat, x_dtype, what):
    """Statistics are float64 for float64 / int / bool input, float32-or-wider otherwise."""
    stat = np.asarray(stat)
    out = ref.result_dtype(x_dtype)
    if out == F64:
        assert stat.dtype == F64, f"{what}: dtype {stat.dtype}, expected float64"
    else:
        assert stat.dtype in (F32, F64), f"{what}: dtype {stat.dtype}, expected float32 or float64"


def clone(obj):
    """Deep copy of the ndarrays in an args tuple / kwargs dict (x excluded by the caller)."""
    if isinstance(obj, np.ndarray):
        return obj.copy()
    if isinstance(obj, tuple):
        return tuple(clone(o) for o in obj)
    if isinstance(obj, dict):
        return {k: clone(v) for k, v in obj.items()}
    return obj


def run_both(op, args, kwargs):
    """Call numbanorm and the oracle on the same x and on separate copies of the rest.

    Returns (got, expected, numbanorm's args, oracle's args): the args carry the
    running statistics each side updated.
    """
    x, rest = args[0], args[1:]
    n_args, r_args = (x,) + clone(rest), (x,) + clone(rest)
    n_kw, r_kw = clone(kwargs), clone(kwargs)
    got = getattr(nbn, op)(*n_args, **n_kw)
    exp = getattr(ref, op)(*r_args, **r_kw)
    return got, exp, n_args, r_args


def params(c, dtype, rng, affine=True):
    if not affine:
        return None, None
    dtype = ref.result_dtype(dtype)
    return rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)


# --------------------------------------------------------------------------
# builders: op-specific (args, kwargs) for a given x
# --------------------------------------------------------------------------


def build_batch_norm(x, rng, ca=1, mode="train", affine=True, running=True, momentum=0.1, eps=1e-5):
    c = x.shape[ca]
    pdt = ref.result_dtype(x.dtype)
    w, b = params(c, x.dtype, rng, affine)
    rm = rv = None
    if running or mode == "eval":
        rm = rng.standard_normal(c).astype(pdt)
        rv = (rng.random(c) + 0.5).astype(pdt)
    return (x, rm, rv, w, b, mode == "train", momentum, eps), {"channel_axis": ca}


def build_instance_norm(x, rng, ca=1, mode="train", affine=True, running=True, momentum=0.1, eps=1e-5):
    c = x.shape[ca]
    pdt = ref.result_dtype(x.dtype)
    w, b = params(c, x.dtype, rng, affine)
    rm = rv = None
    if running or mode == "eval":
        rm = rng.standard_normal(c).astype(pdt)
        rv = (rng.random(c) + 0.5).astype(pdt)
    return (x, rm, rv, w, b, mode == "train", momentum, eps), {"channel_axis": ca}


def build_layer_norm(x, rng, ns=None, affine="wb", eps=1e-5):
    shape = (ns,) if isinstance(ns, int) else tuple(ns)
    pdt = ref.result_dtype(x.dtype)
    w = rng.standard_normal(shape).astype(pdt) if "w" in affine else None
    b = rng.standard_normal(shape).astype(pdt) if "b" in affine else None
    return (x, ns, w, b, eps), {}


def build_group_norm(x, rng, g=1, ca=1, affine=True, eps=1e-5):
    w, b = params(x.shape[ca], x.dtype, rng, affine)
    return (x, g, w, b, eps), {"channel_axis": ca}


def build_rms_norm(x, rng, ns=None, affine=True, eps=None):
    shape = (ns,) if isinstance(ns, int) else tuple(ns)
    w = rng.standard_normal(shape).astype(ref.result_dtype(x.dtype)) if affine else None
    return (x, ns, w, eps), {}


def build_standardize(x, rng, axis=0, **kw):
    return (x, axis), dict(kw)


def build_minmax_scale(x, rng, axis=0, feature_range=(0.0, 1.0), clip=False):
    return (x, feature_range, axis), {"clip": clip}


def build_lp_normalize(x, rng, axis=-1, p=2.0, eps=1e-12):
    return (x, p, axis, eps), {}


BUILDERS = {name[len("build_") :]: f for name, f in globals().items() if name.startswith("build_")}

# Shapes (with the channel axis / normalized shape / reduced axes they go with).
# Primes (7, 13, 31), size-1 axes, 1-D to 5-D, channels-first, channels-last, middle.
GEOMETRY = {
    "batch_norm": [
        ((7, 3), dict(ca=1)),
        ((5, 13), dict(ca=0)),
        ((2, 3, 7), dict(ca=1)),
        ((2, 7, 3), dict(ca=-1)),
        ((2, 3, 4, 5), dict(ca=1)),
        ((2, 4, 5, 3), dict(ca=-1)),
        ((2, 4, 3, 5), dict(ca=2)),
        ((2, 3, 2, 3, 2), dict(ca=1)),
        ((2, 2, 3, 2, 3), dict(ca=-1)),
        ((2, 3, 2, 3, 2), dict(ca=3)),
        ((1, 3, 31), dict(ca=1)),
        ((31, 1), dict(ca=1)),
    ],
    "instance_norm": [
        ((2, 3, 7), dict(ca=1)),
        ((2, 7, 3), dict(ca=-1)),
        ((2, 3, 4, 5), dict(ca=1)),
        ((2, 4, 5, 3), dict(ca=-1)),
        ((2, 4, 3, 5), dict(ca=2)),
        ((1, 3, 2, 3, 2), dict(ca=1)),
        ((2, 2, 3, 2, 3), dict(ca=-1)),
        ((3, 1, 13), dict(ca=1)),
        ((2, 5, 31), dict(ca=1)),
    ],
    "layer_norm": [
        ((7,), dict(ns=7)),
        ((13,), dict(ns=(13,))),
        ((3, 7), dict(ns=7)),
        ((2, 3, 5), dict(ns=(3, 5))),
        ((2, 3, 4, 5), dict(ns=(5,))),
        ((2, 3, 4, 5), dict(ns=(3, 4, 5))),
        ((2, 3, 4, 5), dict(ns=(2, 3, 4, 5))),
        ((2, 1, 3, 1, 5), dict(ns=(3, 1, 5))),
        ((1, 31), dict(ns=31)),
        ((4, 1), dict(ns=1)),
    ],
    "group_norm": [
        ((2, 6), dict(g=3, ca=1)),
        ((2, 6, 7), dict(g=2, ca=1)),
        ((2, 7, 6), dict(g=3, ca=-1)),
        ((2, 6, 4, 5), dict(g=3, ca=1)),
        ((2, 4, 5, 6), dict(g=2, ca=-1)),
        ((1, 6, 2, 3, 2), dict(g=6, ca=1)),
        ((2, 2, 3, 2, 6), dict(g=1, ca=-1)),
        ((3, 4, 13), dict(g=4, ca=1)),
        ((2, 4, 6, 5), dict(g=3, ca=2)),
    ],
    "rms_norm": [
        ((7,), dict(ns=7)),
        ((3, 13), dict(ns=13)),
        ((2, 3, 5), dict(ns=(3, 5))),
        ((2, 3, 4, 5), dict(ns=(5,))),
        ((2, 3, 4, 5), dict(ns=(3, 4, 5))),
        ((2, 1, 3, 1, 5), dict(ns=(1, 3, 1, 5))),
        ((1, 31), dict(ns=31)),
        ((4, 1), dict(ns=1)),
    ],
    "standardize": [
        ((13, 5), dict(axis=0)),
        ((13, 5), dict(axis=1)),
        ((7, 3, 5), dict(axis=(0, 2))),
        ((2, 3, 4, 5), dict(axis=(0, 2, 3))),
        ((2, 3, 4, 5), dict(axis=-1)),
        ((31,), dict(axis=0)),
        ((2, 3, 2, 3, 2), dict(axis=(1, 3))),
        ((4, 5), dict(axis=(0, 1))),
        ((7, 1), dict(axis=0)),
    ],
    "minmax_scale": [
        ((13, 5), dict(axis=0)),
        ((13, 5), dict(axis=1)),
        ((7, 3, 5), dict(axis=(0, 2))),
        ((2, 3, 4, 5), dict(axis=(0, 2, 3))),
        ((31,), dict(axis=0)),
        ((2, 3, 2, 3, 2), dict(axis=(1, 3))),
        ((4, 5), dict(axis=(0, 1))),
        ((7, 1), dict(axis=0)),
    ],
    "lp_normalize": [
        ((7,), dict(axis=0)),
        ((13, 5), dict(axis=-1)),
        ((13, 5), dict(axis=0)),
        ((2, 3, 7), dict(axis=1)),
        ((2, 3, 4, 5), dict(axis=(2, 3))),
        ((2, 3, 2, 3, 2), dict(axis=-1)),
        ((1, 31), dict(axis=1)),
        ((5, 1), dict(axis=1)),
    ],
}

# Modes of each op (crossed with every geometry).
MODES = {
    "batch_norm": [
        dict(mode="train", affine=True, running=True),
        dict(mode="train", affine=False, running=False),
        dict(mode="train", affine=True, running=False),
        dict(mode="eval", affine=True),
        dict(mode="eval", affine=False),
    ],
    "instance_norm": [
        dict(mode="train", affine=True, running=True),
        dict(mode="train", affine=False, running=False),
        dict(mode="eval", affine=True),
    ],
    "layer_norm": [dict(affine="wb"), dict(affine="w"), dict(affine="")],
    "group_norm": [dict(affine=True), dict(affine=False)],
    "rms_norm": [dict(affine=True, eps=None), dict(affine=False, eps=1e-6)],
    "standardize": [dict(), dict(ddof=1), dict(with_mean=False), dict(with_std=False)],
    "minmax_scale": [dict(), dict(feature_range=(-3.0, 5.0), clip=True)],
    "lp_normalize": [dict(p=2.0), dict(p=1.0), dict(p=np.inf), dict(p=3.0), dict(p=0.5)],
}


def _valid(op, shape, geo, mode):
    """Drop combinations that PyTorch itself rejects (one value per channel in training)."""
    if op == "batch_norm" and mode.get("mode") == "train":
        ca = geo["ca"] % len(shape)
        return np.prod(shape) // shape[ca] > 1
    if op == "standardize" and mode.get("ddof"):
        axes = geo["axis"] if isinstance(geo["axis"], tuple) else (geo["axis"],)
        return np.prod([shape[a] for a in axes]) > mode["ddof"]
    return True


def _cases(dtypes):
    cases = []
    for op in OPS:
        for shape, geo in GEOMETRY[op]:
            for mode in MODES[op]:
                if not _valid(op, shape, geo, mode):
                    continue
                for dt in dtypes:
                    kw = {**geo, **mode}
                    tag = ",".join(f"{k}={v}" for k, v in kw.items())
                    cases.append(pytest.param(op, shape, dt, kw, id=f"{op}-{shape}-{tag}-{dt}"))
    return cases


def check_result(op, x, args, kwargs, got, exp, n_args, r_args, stats):
    """Compare output, statistics and running statistics with the oracle."""
    out_dt = ref.result_dtype(x.dtype)
    y = got[0] if stats else got
    y_exp = exp[0] if stats else exp
    assert isinstance(y, np.ndarray), f"{op}: result is {type(y)}, expected numpy.ndarray"
    assert y.dtype == out_dt, f"{op}: output dtype {y.dtype}, expected {out_dt} for {x.dtype} input"
    assert_close(y, y_exp, out_dt, f"{op} output")
    if stats:
        assert isinstance(got, tuple) and len(got) == len(exp), (
            f"{op}(return_stats=True) returned {type(got)} of length {len(got)}, expected {len(exp)}"
        )
        names = {"rms_norm": ("rstd",), "standardize": ("mean", "std")}.get(op, ("mean", "rstd"))
        for name, g, e in zip(names, got[1:], exp[1:], strict=True):
            assert_stat_dtype(g, x.dtype, f"{op} {name}")
            assert_close(g, e, out_dt, f"{op} returned {name}", relative=True)
    if op in ("batch_norm", "instance_norm"):
        for i, name in ((1, "running_mean"), (2, "running_var")):
            if r_args[i] is not None:
                assert n_args[i].dtype == args[i].dtype, f"{name} dtype changed"
                assert_close(n_args[i], r_args[i], out_dt, f"{op} updated {name}", relative=True)


# --------------------------------------------------------------------------
# the matrix
# --------------------------------------------------------------------------


@pytest.mark.parametrize("op, shape, dtype, kw", _cases(FLOATS))
def test_matches_reference(op, shape, dtype, kw):
    rng = rng_for(op, shape, str(dtype), kw)
    x = make_x(shape, dtype, rng)
    x_before = x.copy()
    args, kwargs = BUILDERS[op](x, rng, **kw)
    stats = op in STAT_OPS
    if stats:
        kwargs["return_stats"] = True
    got, exp, n_args, r_args = run_both(op, args, kwargs)
    check_result(op, x, args, kwargs, got, exp, n_args, r_args, stats)
    np.testing.assert_array_equal(x, x_before, err_msg=f"{op} modified its input")


def _one_geometry_per_op():
    """A 3-D or 4-D geometry per op, the first mode: for the cross-cutting tests."""
    picks = {
        "batch_norm": 4,
        "instance_norm": 2,
        "layer_norm": 5,
        "group_norm": 3,
        "rms_norm": 4,
        "standardize": 3,
        "minmax_scale": 3,
        "lp_normalize": 3,
    }
    return {op: (GEOMETRY[op][i], MODES[op][0]) for op, i in picks.items()}


ONE = _one_geometry_per_op()


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
@pytest.mark.parametrize("op", OPS)
def test_dtypes(op, dtype):
    """float16/32/64 keep their dtype; integers and bool give float64 (API.md section 7)."""
    (shape, geo), mode = ONE[op]
    rng = rng_for(op, str(dtype))
    x = make_x(shape, dtype, rng)
    x_before = x.copy()
    args, kwargs = BUILDERS[op](x, rng, **geo, **mode)
    stats = op in STAT_OPS
    if stats:
        kwargs["return_stats"] = True
    got, exp, n_args, r_args = run_both(op, args, kwargs)
    check_result(op, x, args, kwargs, got, exp, n_args, r_args, stats)
    np.testing.assert_array_equal(x, x_before)


@pytest.mark.parametrize("op", OPS)
def test_return_stats_false_is_plain_array(op):
    (shape, geo), mode = ONE[op]
    rng = rng_for(op, "plain")
    x = make_x(shape, F64, rng)
    args, kwargs = BUILDERS[op](x, rng, **geo, **mode)
    got, exp, _, _ = run_both(op, args, kwargs)
    assert isinstance(got, np.ndarray)
    assert_close(got, exp, F64, op)


@pytest.mark.parametrize("bad", [np.complex64, np.complex128, object, "U3", "datetime64[s]"], ids=str)
@pytest.mark.parametrize("op", OPS)
def test_unsupported_dtype_is_type_error(op, bad):
    (shape, geo), mode = ONE[op]
    x = np.ones(shape).astype(bad) if bad != "datetime64[s]" else np.zeros(shape, dtype=bad)
    args, kwargs = BUILDERS[op](np.ones(shape), rng_for(op), **geo, **mode)
    with pytest.raises(TypeError):
        getattr(nbn, op)(x, *args[1:], **kwargs)


# --------------------------------------------------------------------------
# memory layouts: non-contiguous, read-only, broadcast inputs
# --------------------------------------------------------------------------


def _layout(kind, shape, dtype, rng):
    """An array of ``shape`` with the given memory layout."""
    if kind == "transposed":  # F-order view of a C array
        return np.ascontiguousarray(make_x(shape[::-1], dtype, rng)).T
    if kind == "step":  # every other element of every axis, offset by one
        big = make_x(tuple(2 * s + 1 for s in shape), dtype, rng)
        return big[tuple(slice(1, None, 2) for _ in shape)]
    if kind == "reversed":  # negative strides
        return make_x(shape, dtype, rng)[tuple(slice(None, None, -1) for _ in shape)]
    if kind == "permuted":  # axes order scrambled (channels-last storage of a channels-first view)
        base = make_x(shape[1:] + shape[:1], dtype, rng)
        return np.moveaxis(base, -1, 0)
    if kind == "readonly":
        x = make_x(shape, dtype, rng)
        x.flags.writeable = False
        return x
    if kind == "broadcast":  # zero strides along axis 0, read-only
        row = make_x((1,) + shape[1:], dtype, rng)
        return np.broadcast_to(row, shape)
    raise AssertionError(kind)


LAYOUTS = ("transposed", "step", "reversed", "permuted", "readonly", "broadcast")


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("op", OPS)
def test_layouts(op, layout, dtype):
    (shape, geo), mode = ONE[op]
    rng = rng_for(op, layout, str(dtype))
    x = _layout(layout, shape, dtype, rng)
    assert x.shape == shape
    if layout != "readonly":
        assert not x.flags.c_contiguous
    x_before = x.copy()
    args, kwargs = BUILDERS[op](x, rng, **geo, **mode)
    stats = op in STAT_OPS
    if stats:
        kwargs["return_stats"] = True
    got, exp, n_args, r_args = run_both(op, args, kwargs)
    check_result(op, x, args, kwargs, got, exp, n_args, r_args, stats)
    np.testing.assert_array_equal(x, x_before)


# --------------------------------------------------------------------------
# out=
# --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", (F16, F32, F64), ids=str)
@pytest.mark.parametrize("op", OPS)
def test_out_given(op, dtype):
    (shape, geo), mode = ONE[op]
    rng = rng_for(op, "out", str(dtype))
    x = make_x(shape, dtype, rng)
    x_before = x.copy()
    args, kwargs = BUILDERS[op](x, rng, **geo, **mode)
    exp = getattr(ref, op)(*clone(args), **clone(kwargs))
    out = np.full(shape, np.nan, dtype=dtype)
    got = getattr(nbn, op)(*clone(args), **clone(kwargs), out=out)
    assert got is out, f"{op}(out=...) must return out itself"
    assert_close(out, exp, dtype, f"{op} out=")
    np.testing.assert_array_equal(x, x_before)


@pytest.mark.parametrize("op", STAT_OPS)
def test_out_with_return_stats(op):
    (shape, geo), mode = ONE[op]
    rng = rng_for(op, "out-stats")
    x = make_x(shape, F32, rng)
    args, kwargs = BUILDERS[op](x, rng, **geo, **mode)
    exp = getattr(ref, op)(*clone(args), **clone(kwargs), return_stats=True)
    out = np.empty(shape, dtype=F32)
    got = getattr(nbn, op)(*clone(args), **clone(kwargs), out=out, return_stats=True)
    assert got[0] is out
    for g, e in zip(got, exp, strict=True):
        assert_close(g, e, F32, f"{op} out= return_stats", relative=True)


@pytest.mark.parametrize("dtype", (F16, F32, F64), ids=str)
@pytest.mark.parametrize("op", OPS)
def test_out_is_x_in_place(op, dtype):
    (shape, geo), mode = ONE[op]
    rng = rng_for(op, "inplace", str(dtype))
    x = make_x(shape, dtype, rng)
    args, kwargs = BUILDERS[op](x, rng, **geo, **mode)
    exp = getattr(ref, op)(*clone(args), **clone(kwargs))  # from the original values
    got = getattr(nbn, op)(x, *clone(args[1:]), **clone(kwargs), out=x)
    assert got is x, f"{op}(out=x) must return x itself"
    assert_close(x, exp, dtype, f"{op} in place")


@pytest.mark.parametrize("op", OPS)
def test_out_is_x_in_place_noncontiguous(op):
    """In place on a strided view writes the view and nothing around it."""
    (shape, geo), mode = ONE[op]
    rng = rng_for(op, "inplace-view")
    big = make_x(tuple(2 * s for s in shape), F64, rng)
    big_before = big.copy()
    view = tuple(slice(None, None, 2) for _ in shape)
    x = big[view]
    args, kwargs = BUILDERS[op](x, rng, **geo, **mode)
    exp = getattr(ref, op)(x.copy(), *clone(args[1:]), **clone(kwargs))
    got = getattr(nbn, op)(x, *clone(args[1:]), **clone(kwargs), out=x)
    assert got is x
    assert_close(big[view], exp, F64, f"{op} in place on a view")
    mask = np.ones(big.shape, dtype=bool)
    mask[view] = False
    np.testing.assert_array_equal(big[mask], big_before[mask], err_msg=f"{op} wrote outside out")


@pytest.mark.parametrize("op", OPS)
def test_out_noncontiguous(op):
    (shape, geo), mode = ONE[op]
    rng = rng_for(op, "out-view")
    x = make_x(shape, F32, rng)
    args, kwargs = BUILDERS[op](x, rng, **geo, **mode)
    exp = getattr(ref, op)(*clone(args), **clone(kwargs))
    out = np.zeros(shape[::-1], dtype=F32).T
    got = getattr(nbn, op)(*clone(args), **clone(kwargs), out=out)
    assert got is out
    assert_close(out, exp, F32, f"{op} into a transposed out")


@pytest.mark.parametrize("op", OPS)
def test_out_wrong_dtype_or_shape_rejected(op):
    (shape, geo), mode = ONE[op]
    rng = rng_for(op, "bad-out")
    x = make_x(shape, F32, rng)
    args, kwargs = BUILDERS[op](x, rng, **geo, **mode)
    for bad in (np.empty(shape, F64), np.empty(shape[:-1] + (shape[-1] + 1,), F32)):
        with pytest.raises((ValueError, TypeError), match="out"):
            getattr(nbn, op)(*clone(args), **clone(kwargs), out=bad)
    # an int array cannot hold a float64 result in place
    xi = make_x(shape, np.int64, rng)
    args, kwargs = BUILDERS[op](xi, rng, **geo, **mode)
    with pytest.raises((ValueError, TypeError), match="out"):
        getattr(nbn, op)(*clone(args), **clone(kwargs), out=xi)


# --------------------------------------------------------------------------
# long rows and awkward sizes
# --------------------------------------------------------------------------

LONG = [
    ("layer_norm", (1, 100003), dict(ns=100003)),
    ("rms_norm", (1, 100003), dict(ns=100003)),
    ("lp_normalize", (1, 100003), dict(axis=-1)),
    ("standardize", (1, 100003), dict(axis=1)),
    ("standardize", (100003,), dict(axis=0)),
    ("minmax_scale", (1, 100003), dict(axis=1)),
    ("group_norm", (1, 2, 50021), dict(g=1)),
    ("instance_norm", (1, 1, 100003), dict(mode="train", running=True)),
    ("batch_norm", (100003, 1), dict(mode="train", running=True)),
    ("batch_norm", (1, 100003, 3), dict(ca=-1, mode="train", running=True)),
    ("layer_norm", (3, 1, 20011), dict(ns=(1, 20011))),
]


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("op, shape, kw", LONG, ids=[f"{o}-{s}" for o, s, _ in LONG])
def test_long_rows(op, shape, kw, dtype):
    rng = rng_for(op, shape, str(dtype))
    x = make_x(shape, dtype, rng)
    args, kwargs = BUILDERS[op](x, rng, **kw)
    stats = op in STAT_OPS
    if stats:
        kwargs["return_stats"] = True
    got, exp, n_args, r_args = run_both(op, args, kwargs)
    check_result(op, x, args, kwargs, got, exp, n_args, r_args, stats)


# --------------------------------------------------------------------------
# running statistics
# --------------------------------------------------------------------------


@pytest.mark.parametrize("momentum", [0.0, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("op", ["batch_norm", "instance_norm"])
def test_running_stats_updated_in_place(op, momentum):
    """training: new = (1 - m) * old + m * stat (unbiased var), into the very arrays passed."""
    shape = (3, 4, 5, 7)
    rng = rng_for(op, momentum)
    x = make_x(shape, F64, rng)
    rm = rng.standard_normal(4)
    rv = rng.random(4) + 0.5
    rm_exp, rv_exp = rm.copy(), rv.copy()
    ref_fn = getattr(ref, op)
    ref_fn(x, rm_exp, rv_exp, None, None, True, momentum, 1e-5)
    rm0, rv0 = rm.copy(), rv.copy()
    result = getattr(nbn, op)(x, rm, rv, None, None, True, momentum, 1e-5)
    assert result is not rm and result is not rv
    assert_close(rm, rm_exp, F64, "running_mean")
    assert_close(rv, rv_exp, F64, "running_var")
    # the formula, spelled out once more without the oracle
    if op == "batch_norm":
        cols = np.moveaxis(x, 1, -1).reshape(-1, 4)
        mean, var = cols.mean(0), cols.var(0, ddof=1)
    else:  # mean over the batch of the per-instance statistics
        rows = x.reshape(3, 4, -1)
        mean, var = rows.mean(2).mean(0), rows.var(2, ddof=1).mean(0)
    assert_close(rm, (1 - momentum) * rm0 + momentum * mean, F64, "running_mean formula")
    assert_close(rv, (1 - momentum) * rv0 + momentum * var, F64, "running_var formula")


@pytest.mark.parametrize("dtype", (F16, F32, F64), ids=str)
@pytest.mark.parametrize("op", ["batch_norm", "instance_norm"])
def test_eval_mode_uses_and_keeps_running_stats(op, dtype):
    shape = (2, 3, 5)
    rng = rng_for(op, "eval", str(dtype))
    x = make_x(shape, dtype, rng)
    rm = rng.standard_normal(3).astype(dtype)
    rv = (rng.random(3) + 0.5).astype(dtype)
    rm0, rv0 = rm.copy(), rv.copy()
    got = getattr(nbn, op)(x, rm, rv, None, None, False, 0.3, 1e-3)
    exp = getattr(ref, op)(x, rm.copy(), rv.copy(), None, None, False, 0.3, 1e-3)
    assert_close(got, exp, dtype, f"{op} eval")
    np.testing.assert_array_equal(rm, rm0)
    np.testing.assert_array_equal(rv, rv0)
    # eval output is (x - running_mean) / sqrt(running_var + eps), spelled out
    manual = (x.astype(F64) - rm0.astype(F64)[:, None]) / np.sqrt(rv0.astype(F64)[:, None] + 1e-3)
    assert_close(got, manual, dtype, f"{op} eval formula")


def test_batch_norm_training_without_running_stats_leaves_nothing():
    x = make_x((4, 3, 5), F64, rng_for("bn-none"))
    got = nbn.batch_norm(x, training=True)
    assert_close(got, ref.batch_norm(x, training=True), F64, "batch_norm training, no running stats")


def test_batch_norm_one_value_per_channel_in_training_is_value_error():
    x = np.arange(3.0).reshape(1, 3)
    rm, rv = np.zeros(3), np.ones(3)
    with pytest.raises(ValueError):
        nbn.batch_norm(x, rm, rv, training=True)
    np.testing.assert_array_equal(rm, 0.0)
    np.testing.assert_array_equal(rv, 1.0)
    # eval with one value per channel is fine
    assert_close(nbn.batch_norm(x, rm, rv), ref.batch_norm(x, rm, rv), F64, "eval 1 value")


def test_batch_norm_eval_requires_running_stats():
    with pytest.raises(ValueError):
        nbn.batch_norm(np.ones((4, 3)), training=False)


def test_batch_norm_float32_running_stats_with_float32_input_keep_dtype():
    rng = rng_for("bn-f32-running")
    x = make_x((8, 3, 4), F32, rng)
    rm, rv = np.zeros(3, F32), np.ones(3, F32)
    nbn.batch_norm(x, rm, rv, training=True, momentum=0.25)
    rm_e, rv_e = np.zeros(3), np.ones(3)
    ref.batch_norm(x, rm_e, rv_e, training=True, momentum=0.25)
    assert rm.dtype == F32 and rv.dtype == F32
    assert_close(rm, rm_e, F32, "running_mean", relative=True)
    assert_close(rv, rv_e, F32, "running_var", relative=True)


def test_repeated_training_steps_accumulate():
    """Five steps of batch_norm training agree with five steps of the oracle."""
    rng = rng_for("bn-steps")
    rm, rv = np.zeros(4), np.ones(4)
    rm_e, rv_e = rm.copy(), rv.copy()
    for step in range(5):
        x = make_x((6, 4, 3), F64, rng) + step
        nbn.batch_norm(x, rm, rv, training=True, momentum=0.2)
        ref.batch_norm(x, rm_e, rv_e, training=True, momentum=0.2)
    assert_close(rm, rm_e, F64, "running_mean after 5 steps")
    assert_close(rv, rv_e, F64, "running_var after 5 steps")


# --------------------------------------------------------------------------
# op-specific semantics
# --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", (F16, F32, F64), ids=str)
def test_rms_norm_eps_none_is_finfo_eps(dtype):
    """Small data: the default eps visibly matters and must be right: PyTorch
    2.13's, finfo(dtype).eps, but float32's for float16 input (its op math
    type; API.md)."""
    rng = rng_for("rms-eps", str(dtype))
    scale = {F16: 2e-2, F32: 3e-4, F64: 1e-8}[dtype]
    x = (rng.standard_normal((4, 16)) * scale).astype(dtype)
    got = nbn.rms_norm(x, 16)
    exp = ref.rms_norm(x, 16, eps=float(np.finfo(F32 if dtype == F16 else dtype).eps))
    assert_close(got, exp, dtype, "rms_norm eps=None")
    # and it is not the same as another eps (float16's own for float16): the test can tell
    other = ref.rms_norm(x, 16, eps={F16: float(np.finfo(F16).eps), F32: 1e-5, F64: 0.0}[dtype])
    assert np.max(np.abs(exp - other)) > 10 * tolerances(dtype)[1]


def test_rms_norm_eps_none_for_int_input_is_float64_eps():
    x = np.arange(-3, 5).reshape(2, 4)
    assert_close(nbn.rms_norm(x, 4), ref.rms_norm(x, 4, eps=float(np.finfo(F64).eps)), F64, "int rms")


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_layer_norm_constant_rows(dtype):
    """Zero variance: y = bias (x - mean is exactly 0)."""
    x = np.full((3, 7), 0.1, dtype=dtype)
    b = np.arange(7, dtype=dtype)
    got, mean, rstd = nbn.layer_norm(x, 7, None, b, return_stats=True)
    assert_close(got, np.broadcast_to(b.astype(F64), (3, 7)), dtype, "constant rows")
    assert_close(rstd, np.full((3, 1), 1 / np.sqrt(1e-5)), dtype, "rstd", relative=True)


def test_group_norm_channels_last_groups_are_contiguous_channels():
    """Group g of a channels-last input holds channels g*C/G .. (g+1)*C/G - 1, like NCHW."""
    rng = rng_for("gn-cl")
    x = make_x((2, 6, 3, 4), F64, rng)
    x[:, :3] += 100.0  # group 0 far from group 1
    nhwc = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    got = nbn.group_norm(nhwc, 2, channel_axis=-1)
    exp = np.moveaxis(nbn.group_norm(x, 2), 1, -1)
    assert_close(got, exp, F64, "group_norm NHWC vs NCHW")
    assert_close(got, np.moveaxis(ref.group_norm(x, 2), 1, -1), F64, "group_norm NHWC vs oracle")


@pytest.mark.parametrize("op", ["batch_norm", "instance_norm", "group_norm"])
def test_channels_last_equals_channels_first(op):
    rng = rng_for(op, "cl")
    x = make_x((2, 6, 5, 3), F32, rng)
    kw = {"group_norm": {"num_groups": 3}, "batch_norm": {"training": True}}.get(op, {})
    first = getattr(nbn, op)(x, **kw)
    last = getattr(nbn, op)(np.ascontiguousarray(np.moveaxis(x, 1, -1)), **kw, channel_axis=-1)
    assert_close(np.moveaxis(last, -1, 1), first.astype(F64), F32, f"{op} NHWC vs NCHW")


def test_layer_norm_int_normalized_shape_equals_tuple():
    x = make_x((3, 5, 7), F64, rng_for("ln-int"))
    np.testing.assert_array_equal(nbn.layer_norm(x, 7), nbn.layer_norm(x, (7,)))
    np.testing.assert_array_equal(nbn.layer_norm(x, (5, 7)), nbn.layer_norm(x, [5, 7]))


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_standardize_nan_ignored_and_kept(dtype):
    rng = rng_for("std-nan", str(dtype))
    x = make_x((20, 4), dtype, rng)
    x[3, 1] = x[7, 1] = np.nan
    x[:, 3] = np.nan  # a column of NaN only
    got = nbn.standardize(x)
    exp = ref.standardize(x)
    assert np.isnan(got[3, 1]) and np.isnan(got[7, 1]) and np.isnan(got[:, 3]).all()
    assert np.isnan(got[:, :3]).sum() == 2
    assert_close(got, exp, dtype, "standardize with NaN")


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_minmax_nan_ignored_and_kept(dtype):
    rng = rng_for("mm-nan", str(dtype))
    x = make_x((20, 3), dtype, rng)
    x[0, 0] = x[5, 2] = np.nan
    got = nbn.minmax_scale(x, (-1.0, 2.0))
    exp = ref.minmax_scale(x, (-1.0, 2.0))
    assert np.isnan(got[0, 0]) and np.isnan(got[5, 2]) and np.isnan(got).sum() == 2
    assert_close(got, exp, dtype, "minmax_scale with NaN")
    assert np.nanmin(got, axis=0) == pytest.approx(-1.0, abs=1e-6)
    assert np.nanmax(got, axis=0) == pytest.approx(2.0, abs=1e-6)


def test_lp_normalize_nan_stays_in_output():
    """NaN stays NaN in the output (whether or not the rest of its row follows is the norm's business)."""
    x = np.array([[3.0, np.nan, 4.0], [3.0, 0.0, 4.0]])
    got = nbn.lp_normalize(x)
    assert np.isnan(got[0, 1])
    np.testing.assert_allclose(got[1], [0.6, 0.0, 0.8], rtol=1e-12)


def test_lp_normalize_nan_ignored_in_norm():
    """API.md section 3: NaN is ignored when statistics (here the norm) are computed."""
    x = np.array([[3.0, np.nan, 4.0]])
    np.testing.assert_allclose(nbn.lp_normalize(x), ref.lp_normalize(x), rtol=1e-12)


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_standardize_zero_variance_scale_one(dtype):
    x = np.array([[1.0, 3.0, 0.1], [2.0, 3.0, 0.1], [6.0, 3.0, 0.1]], dtype=dtype)
    got, mean, rstd = nbn.standardize(x, return_stats=True)
    exp, emean, erstd = ref.standardize(x, return_stats=True)
    assert_close(got, exp, dtype, "standardize constant columns")
    # scale 1: the centred constant (0 up to the rounding of the mean), not noise / tiny std
    np.testing.assert_allclose(got[:, 1:], 0.0, atol=1e-6 if dtype == F32 else 1e-12)


def test_standardize_sklearn_constant_not_representable():
    """A constant column whose value is not a binary fraction still has variance 0 (sklearn)."""
    x = np.full((1000, 2), 0.1)
    x[:, 1] = 1 / 3
    # 0 up to the rounding of the mean (scale 1), not rounding noise divided by a tiny std
    np.testing.assert_allclose(nbn.standardize(x), 0.0, atol=1e-12)


def test_minmax_zero_range_and_clip():
    x = np.array([[1.0, 5.0], [3.0, 5.0], [2.0, 5.0]])
    got = nbn.minmax_scale(x, (2.0, 4.0))
    assert_close(got, ref.minmax_scale(x, (2.0, 4.0)), F64, "minmax zero range")
    np.testing.assert_array_equal(got[:, 1], 2.0)  # sklearn: range 0 -> scale 1 -> feature_range[0]
    rng = rng_for("clip")
    x = make_x((50, 3), F32, rng) * 1e3
    got = nbn.minmax_scale(x, (0.0, 1.0), clip=True)
    assert got.min() >= 0.0 and got.max() <= 1.0


def test_standardize_with_mean_std_flags():
    rng = rng_for("flags")
    x = make_x((9, 4), F64, rng)
    sd = x.std(0)
    np.testing.assert_allclose(nbn.standardize(x, with_mean=False), x / sd, rtol=1e-12)
    np.testing.assert_allclose(nbn.standardize(x, with_std=False), x - x.mean(0), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(nbn.standardize(x, with_mean=False, with_std=False), x)
    np.testing.assert_allclose(
        nbn.standardize(x, ddof=1), (x - x.mean(0)) / x.std(0, ddof=1), rtol=1e-12, atol=1e-14
    )


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0, np.inf, 0.5])
def test_lp_normalize_norm_is_one(p):
    x = make_x((5, 11), F64, rng_for("lp", p))
    y = nbn.lp_normalize(x, p=p, axis=1)
    if p == np.inf:
        norms = np.abs(y).max(1)
    else:
        norms = (np.abs(y) ** p).sum(1) ** (1 / p)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-12)


def test_lp_normalize_eps_floor():
    x = np.zeros((2, 3))
    x[1] = 1e-14
    got = nbn.lp_normalize(x, eps=1e-12)
    np.testing.assert_array_equal(got[0], 0.0)
    np.testing.assert_allclose(got[1], 1e-14 / 1e-12, rtol=1e-12)


# --------------------------------------------------------------------------
# scikit-learn, where installed: the oracle's preprocessing semantics are its own
# --------------------------------------------------------------------------


def test_standardize_matches_sklearn():
    sk = pytest.importorskip("sklearn.preprocessing")
    rng = rng_for("sk-std")
    x = make_x((40, 6), F64, rng)
    x[::7, 2] = np.nan
    x[:, 4] = 0.1
    exp = sk.StandardScaler().fit_transform(x)
    assert_close(nbn.standardize(x), exp, F64, "standardize vs StandardScaler")
    assert_close(ref.standardize(x), exp, F64, "oracle vs StandardScaler")


def test_minmax_matches_sklearn():
    sk = pytest.importorskip("sklearn.preprocessing")
    rng = rng_for("sk-mm")
    x = make_x((40, 5), F64, rng)
    x[::9, 1] = np.nan
    x[:, 3] = 2.0
    for fr, clip in (((0.0, 1.0), False), ((-2.0, 3.0), True)):
        exp = sk.minmax_scale(x, fr)
        exp_clip = sk.MinMaxScaler(feature_range=fr, clip=clip).fit_transform(x)
        assert_close(nbn.minmax_scale(x, fr, clip=clip), exp_clip, F64, "minmax vs sklearn")
        assert_close(ref.minmax_scale(x, fr), exp, F64, "oracle vs sklearn")


# --------------------------------------------------------------------------
# wrong shapes name the argument (API.md section 7)
# --------------------------------------------------------------------------


def test_wrong_shapes_name_the_argument():
    x = np.ones((2, 6, 5))
    with pytest.raises(ValueError, match="weight"):
        nbn.batch_norm(x, weight=np.ones(5), training=True)
    with pytest.raises(ValueError, match="running_mean"):
        nbn.batch_norm(x, np.zeros(4), np.ones(6), training=True)
    with pytest.raises(ValueError, match="num_groups"):
        nbn.group_norm(x, 4)
    with pytest.raises(ValueError, match="channel_axis"):
        nbn.group_norm(x, 2, channel_axis=3)
    with pytest.raises(ValueError, match="normalized_shape"):
        nbn.layer_norm(x, (6, 4))
    with pytest.raises(ValueError, match="bias"):
        nbn.layer_norm(x, 5, np.ones(5), np.ones(6))
    with pytest.raises(ValueError, match="normalized_shape"):
        nbn.rms_norm(x, 6)


@pytest.mark.parametrize("op", ["layer_norm", "batch_norm", "instance_norm", "group_norm", "standardize"])
def test_float16_computed_in_float32_or_wider(op):
    """API.md section 7: float16 in, at least float32 inside.

    Rows of 2048 values near 100: a float16 sum overflows (max 65504) and a
    float16 mean is off by its spacing (0.0625 at 100); the output must still
    be the float16 rounding of the exact result.
    """
    rng = rng_for(op, "f16-inside")
    x = (100.0 + rng.standard_normal((4, 8, 256))).astype(F16)
    kw = {
        "layer_norm": {"normalized_shape": (8, 256)},
        "batch_norm": {"training": True},
        "group_norm": {"num_groups": 2},
        "standardize": {"axis": (0, 2)},
    }.get(op, {})
    got = getattr(nbn, op)(x, **kw)
    exp = getattr(ref, op)(x, **kw)
    assert got.dtype == F16
    assert_close(got, exp, F16, f"{op} float16 near 100")
