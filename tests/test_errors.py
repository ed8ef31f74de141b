"""Bad input (issue 2, "Bad input"; API.md section 7).

Every bad argument gives a ValueError or TypeError whose message names the
argument (and, for shapes, the expected and the given shape), raised before any
kernel runs: the backend primitives are patched to fail loudly, and x and the
running statistics are compared with copies afterwards.  The second half checks
the inputs that must *work*: read-only x (left unmodified), ``out=x`` in place,
integer/bool inputs (float64 out), float16 (float16 out).
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import numbanorm as nbn
import numbanorm.backends.cpu as cpu

SHAPE = (4, 6, 5)  # (N, C, L); C = 6 has 2 and 3 as group counts
C = SHAPE[1]


def _data(shape=SHAPE, dtype=np.float64, seed=0):
    return (np.random.default_rng(seed).standard_normal(shape) * 2 + 1).astype(dtype)


# op name -> f(x, **kw) with the op's other arguments filled in for x
OPS = {
    "batch_norm": lambda x, **k: nbn.batch_norm(x, training=True, **k),
    "batch_norm_eval": lambda x, **k: nbn.batch_norm(
        x, np.zeros(x.shape[1]), np.ones(x.shape[1]), training=False, **k
    ),
    "instance_norm": lambda x, **k: nbn.instance_norm(x, **k),
    "layer_norm": lambda x, **k: nbn.layer_norm(x, x.shape[-1], **k),
    "group_norm": lambda x, **k: nbn.group_norm(x, 2, **k),
    "rms_norm": lambda x, **k: nbn.rms_norm(x, x.shape[-1], **k),
    "standardize": lambda x, **k: nbn.standardize(x, **k),
    "minmax_scale": lambda x, **k: nbn.minmax_scale(x, **k),
    "lp_normalize": lambda x, **k: nbn.lp_normalize(x, **k),
}


@pytest.fixture
def no_kernel(monkeypatch):
    """Make every backend primitive raise: an error must come before them."""

    def boom(*a, **k):
        raise AssertionError("a kernel ran before the argument error was raised")

    for name in ("moments", "apply", "row_norm", "pnorm"):
        monkeypatch.setattr(cpu, name, boom)


def raises(exc, *words, shapes=()):
    """pytest.raises whose message contains every word (any order) and the
    shapes (in the order given: expected, then given)."""
    look = "".join(f"(?=.*{re.escape(w)})" for w in words)
    seq = ".*".join(re.escape(str(tuple(s))) for s in shapes)
    return pytest.raises(exc, match=f"(?s)^{look}.*{seq}")


# --------------------------------------------------------------------------
# empty arrays and zero-size reductions
# --------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(0, 6, 5), (4, 6, 0), (0, 6, 0)], ids=str)
@pytest.mark.parametrize("op", OPS)
def test_empty_input_is_value_error(op, shape, no_kernel):
    x = np.empty(shape)
    with raises(ValueError, "x", shapes=[shape]):
        OPS[op](x)


@pytest.mark.parametrize(
    "call",
    [
        lambda: nbn.standardize(np.empty((0, 3)), axis=0),
        lambda: nbn.standardize(np.empty((3, 0)), axis=1),
        lambda: nbn.minmax_scale(np.empty((2, 0, 3)), axis=(0, 1)),
        lambda: nbn.lp_normalize(np.empty((0,))),
        lambda: nbn.lp_normalize(np.empty((5, 0)), axis=1),
        lambda: nbn.batch_norm(np.empty((4, 0)), training=True),
        lambda: nbn.layer_norm(np.empty((3, 0)), 0),
        lambda: nbn.rms_norm(np.empty((3, 2, 0)), (2, 0)),
    ],
)
def test_zero_size_reduction_is_value_error(call, no_kernel):
    with pytest.raises(ValueError, match=r"x is empty .*shape"):
        call()


def test_zero_dimensional_input(no_kernel):
    x = np.array(3.0)
    for f in (nbn.standardize, nbn.minmax_scale, nbn.lp_normalize):
        with raises(ValueError, "axis"):
            f(x)
    with raises(ValueError, "x", shapes=[()]):
        nbn.batch_norm(x, training=True)
    with raises(ValueError, "x", shapes=[()]):
        nbn.group_norm(x, 1)
    with raises(ValueError, "x", shapes=[()]):
        nbn.instance_norm(x)
    with raises(ValueError, "normalized_shape", "x", shapes=[(1,), ()]):
        nbn.layer_norm(x, 1)


# --------------------------------------------------------------------------
# one value per channel in training, one spatial element
# --------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 3), (1, 3, 1), (1, 3, 1, 1)], ids=str)
def test_batch_norm_one_value_per_channel(shape, no_kernel):
    x = np.ones(shape)
    rm, rv = np.zeros(3), np.ones(3)
    with raises(ValueError, "value per channel", shapes=[shape]):
        nbn.batch_norm(x, rm, rv, training=True)
    np.testing.assert_array_equal(rm, 0.0)
    np.testing.assert_array_equal(rv, 1.0)
    np.testing.assert_array_equal(x, 1.0)


@pytest.mark.parametrize("shape", [(2, 3, 1), (2, 3, 1, 1), (1, 3, 1, 1, 1)], ids=str)
def test_instance_norm_one_spatial_element(shape, no_kernel):
    x = np.ones(shape)
    rm, rv = np.zeros(3), np.ones(3)
    with raises(ValueError, "spatial element", shapes=[shape]):
        nbn.instance_norm(x, rm, rv)
    np.testing.assert_array_equal(rm, 0.0)
    np.testing.assert_array_equal(rv, 1.0)


def test_too_few_dimensions(no_kernel):
    with raises(ValueError, "x", shapes=[(5,)]):
        nbn.batch_norm(np.ones(5), training=True)
    with raises(ValueError, "x", shapes=[(2, 3)]):
        nbn.instance_norm(np.ones((2, 3)))
    with raises(ValueError, "x", shapes=[(5,)]):
        nbn.group_norm(np.ones(5), 1)


# --------------------------------------------------------------------------
# weight / bias / running stats / out: shape, dtype, kind
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "op, kw, name, expected, given",
    [
        ("batch_norm", {"weight": np.ones(4)}, "weight", (6,), (4,)),
        ("batch_norm", {"weight": np.ones((6, 1))}, "weight", (6,), (6, 1)),
        ("batch_norm", {"bias": np.ones(7)}, "bias", (6,), (7,)),
        ("batch_norm_eval", {"weight": np.ones(5)}, "weight", (6,), (5,)),
        ("instance_norm", {"weight": np.ones(5)}, "weight", (6,), (5,)),
        ("instance_norm", {"bias": np.ones(())}, "bias", (6,), ()),
        ("group_norm", {"weight": np.ones(2)}, "weight", (6,), (2,)),
        ("group_norm", {"bias": np.ones(3)}, "bias", (6,), (3,)),
        ("layer_norm", {"weight": np.ones(6)}, "weight", (5,), (6,)),
        ("layer_norm", {"bias": np.ones((1, 5))}, "bias", (5,), (1, 5)),
        ("rms_norm", {"weight": np.ones(4)}, "weight", (5,), (4,)),
    ],
)
def test_param_shape_mismatch(op, kw, name, expected, given, no_kernel):
    x = _data()
    x0 = x.copy()
    with raises(ValueError, name, shapes=[expected, given]):
        OPS[op](x, **kw)
    np.testing.assert_array_equal(x, x0)


def test_layer_norm_multi_axis_weight_shape(no_kernel):
    x = _data()
    with raises(ValueError, "weight", shapes=[(6, 5), (5,)]):
        nbn.layer_norm(x, (6, 5), weight=np.ones(5))
    with raises(ValueError, "bias", shapes=[(6, 5), (30,)]):
        nbn.layer_norm(x, (6, 5), bias=np.ones(30))


@pytest.mark.parametrize("bad", [np.complex128, object, "U2", "datetime64[s]"], ids=str)
@pytest.mark.parametrize("name", ["weight", "bias"])
@pytest.mark.parametrize("op", ["batch_norm", "instance_norm", "group_norm", "layer_norm"])
def test_param_bad_dtype(op, name, bad, no_kernel):
    x = _data()
    n = 5 if op == "layer_norm" else C
    p = np.zeros(n, dtype=bad) if bad == "datetime64[s]" else np.ones(n).astype(bad)
    with raises(TypeError, name):
        OPS[op](x, **{name: p})


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("op", ["batch_norm", "instance_norm"])
def test_running_stats_shape_and_dtype(op, training, no_kernel):
    f = nbn.batch_norm if op == "batch_norm" else nbn.instance_norm
    x = _data()
    x0 = x.copy()
    good = np.full(C, 0.5)
    cases = [
        ((np.zeros(5), good.copy()), ValueError, "running_mean", [(6,), (5,)]),
        ((good.copy(), np.ones((6, 1))), ValueError, "running_var", [(6,), (6, 1)]),
        ((good.copy(), np.ones(())), ValueError, "running_var", [(6,), ()]),
        ((np.zeros(C, np.int64), good.copy()), TypeError, "running_mean", []),
        ((good.copy(), np.ones(C, np.complex128)), TypeError, "running_var", []),
        ((good.copy(), np.ones(C, bool)), TypeError, "running_var", []),
    ]
    for (rm, rv), exc, name, shapes in cases:
        rm0, rv0 = rm.copy(), rv.copy()
        with raises(exc, name, shapes=shapes):
            f(x, rm, rv, None, None, training)
        np.testing.assert_array_equal(rm, rm0)
        np.testing.assert_array_equal(rv, rv0)
    np.testing.assert_array_equal(x, x0)


@pytest.mark.parametrize("op", ["batch_norm", "instance_norm"])
def test_running_stats_given_alone_or_missing(op, no_kernel):
    f = nbn.batch_norm if op == "batch_norm" else nbn.instance_norm
    x = _data()
    rm = np.zeros(C)
    with raises(ValueError, "running_mean", "running_var"):
        f(x, rm, None, None, None, True)
    with raises(ValueError, "running_mean", "running_var"):
        f(x, None, np.ones(C), None, None, True)
    with raises(ValueError, "running_mean", "running_var"):
        f(x, None, None, None, None, False)  # eval / use_input_stats=False needs them
    np.testing.assert_array_equal(rm, 0.0)


@pytest.mark.parametrize("op", ["batch_norm", "instance_norm"])
def test_running_stats_wrong_kind_of_array(op, no_kernel):
    f = nbn.batch_norm if op == "batch_norm" else nbn.instance_norm
    x = _data()
    # updated in place: must be a writeable numpy array when x is
    with raises(TypeError, "running_mean", "list"):
        f(x, [0.0] * C, np.ones(C), None, None, True)
    with raises(TypeError, "running_var", "tuple"):
        f(x, np.zeros(C), (1.0,) * C, None, None, True)
    rm, rv = np.zeros(C), np.ones(C)
    rv.flags.writeable = False
    with raises(ValueError, "running_var", "read-only"):
        f(x, rm, rv, None, None, True)
    np.testing.assert_array_equal(rm, 0.0)


@pytest.mark.parametrize("op", ["batch_norm", "instance_norm"])
def test_running_stats_not_updated_may_be_read_only_or_lists(op):
    f = nbn.batch_norm if op == "batch_norm" else nbn.instance_norm
    x = _data()
    rv = np.full(C, 2.0)
    rv.flags.writeable = False
    y = f(x, [0.5] * C, rv, None, None, False)
    np.testing.assert_allclose(y, f(x, np.full(C, 0.5), np.full(C, 2.0), None, None, False), rtol=1e-15)
    np.testing.assert_array_equal(rv, 2.0)


def test_running_stats_on_a_device_with_host_x(no_kernel):
    cuda = pytest.importorskip("numba.cuda")
    try:
        rm, rv = cuda.to_device(np.zeros(C)), cuda.to_device(np.ones(C))
    except Exception as e:  # no GPU and no simulator
        pytest.skip(f"no CUDA device arrays: {e}")
    x = _data()
    with raises(ValueError, "running_mean", "where x lives"):
        nbn.batch_norm(x, rm, rv, training=True)
    with raises(ValueError, "running_mean", "where x lives"):
        nbn.instance_norm(x, rm, rv)
    np.testing.assert_array_equal(rm.copy_to_host(), 0.0)
    with raises(TypeError, "out"):
        nbn.layer_norm(x, 5, out=cuda.to_device(np.empty(SHAPE)))


@pytest.mark.parametrize("op", OPS)
def test_out_mismatch(op, no_kernel):
    x = _data()
    x0 = x.copy()
    with raises(ValueError, "out", shapes=[SHAPE, (4, 6)]):
        OPS[op](x, out=np.empty((4, 6)))
    with raises(ValueError, "out", shapes=[SHAPE, (5, 6, 4)]):
        OPS[op](x, out=np.empty((5, 6, 4)))
    with raises(ValueError, "out", "float64", "float32"):
        OPS[op](x, out=np.empty(SHAPE, np.float32))
    with raises(ValueError, "out", "float32", "float64"):
        OPS[op](x.astype(np.float32), out=np.empty(SHAPE))
    # int input gives float64: an int out is wrong
    with raises(ValueError, "out", "float64", "int64"):
        OPS[op](np.ones(SHAPE, np.int64), out=np.empty(SHAPE, np.int64))
    ro = np.empty(SHAPE)
    ro.flags.writeable = False
    with raises(ValueError, "out", "read-only"):
        OPS[op](x, out=ro)
    with raises(TypeError, "out"):
        OPS[op](x, out=[[0.0]])
    np.testing.assert_array_equal(x, x0)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("big", [False, True])
def test_out_overlapping_x_is_value_error(op, big, no_kernel):
    # out sharing x's memory without being x (shifted by one row, x reversed
    # along an axis) would read values already overwritten;
    # big: past the small-call and fused fast paths' size limits too
    shape = (8, 6, 2048) if big else SHAPE
    n = int(np.prod(shape))
    base = _data((n + shape[-1],), seed=3)
    x = base[:n].reshape(shape)
    x0 = x.copy()
    for out in (base[shape[-1] :].reshape(shape), x[::-1], x[:, ::-1]):
        with raises(ValueError, "out", "overlaps x"):
            OPS[op](x, out=out)
    np.testing.assert_array_equal(x, x0)


def test_out_is_x_or_a_disjoint_view_of_the_same_buffer():
    base = _data((2 * 4 * 6 * 5,))
    x = base[:120].reshape(SHAPE)
    want = nbn.layer_norm(x, 5)
    out = base[120:].reshape(SHAPE)  # same buffer, disjoint
    np.testing.assert_array_equal(nbn.layer_norm(x, 5, out=out), want)
    np.testing.assert_array_equal(nbn.layer_norm(x, 5, out=x), want)


def test_bad_out_leaves_running_stats_untouched(no_kernel):
    x = _data()
    rm, rv = np.full(C, 0.25), np.full(C, 2.0)
    for f in (nbn.batch_norm, nbn.instance_norm):
        with raises(ValueError, "out"):
            f(x, rm, rv, None, None, True, out=np.empty((4, 6, 4)))
        with raises(ValueError, "weight"):
            f(x, rm, rv, np.ones(3), None, True)
        with raises(ValueError, "eps"):
            f(x, rm, rv, None, None, True, 0.1, -1.0)
        with raises(ValueError, "momentum"):
            f(x, rm, rv, None, None, True, 2.0)
    np.testing.assert_array_equal(rm, 0.25)
    np.testing.assert_array_equal(rv, 2.0)


def test_in_place_with_bad_argument_leaves_x_untouched(no_kernel):
    x = _data()
    x0 = x.copy()
    with raises(ValueError, "bias"):
        nbn.layer_norm(x, 5, None, np.ones(4), out=x)
    with raises(ValueError, "num_groups"):
        nbn.group_norm(x, 4, out=x)
    with raises(ValueError, "axis"):
        nbn.standardize(x, axis=5, out=x)
    with raises(ValueError, "feature_range"):
        nbn.minmax_scale(x, (1.0, 0.0), out=x)
    with raises(ValueError, "p must"):
        nbn.lp_normalize(x, 0.0, out=x)
    np.testing.assert_array_equal(x, x0)


# --------------------------------------------------------------------------
# num_groups, channel_axis, normalized_shape
# --------------------------------------------------------------------------


@pytest.mark.parametrize("G", [4, 5, 7, 12, 0, -2])
def test_num_groups_not_dividing_channels(G, no_kernel):
    with raises(ValueError, f"num_groups={G}", "C=6"):
        nbn.group_norm(_data(), G)


@pytest.mark.parametrize("G", [2.0, "2", None, True])
def test_num_groups_not_an_int(G, no_kernel):
    with raises(TypeError, "num_groups"):
        nbn.group_norm(_data(), G)


@pytest.mark.parametrize("ca", [3, -4, 10])
@pytest.mark.parametrize("op", ["batch_norm", "batch_norm_eval", "instance_norm", "group_norm"])
def test_channel_axis_out_of_range(op, ca, no_kernel):
    with raises(ValueError, f"channel_axis={ca}", "3 dimensions"):
        OPS[op](_data(), channel_axis=ca)


@pytest.mark.parametrize("ca", [1.0, "1", None])
@pytest.mark.parametrize("op", ["batch_norm", "instance_norm", "group_norm"])
def test_channel_axis_not_an_int(op, ca, no_kernel):
    with raises(TypeError, "channel_axis"):
        OPS[op](_data(), channel_axis=ca)


@pytest.mark.parametrize("op", ["instance_norm", "group_norm"])
def test_channel_axis_on_the_batch_axis(op, no_kernel):
    for ca in (0, -3):
        with raises(ValueError, "channel_axis"):
            OPS[op](_data(), channel_axis=ca)


@pytest.mark.parametrize("f", [nbn.layer_norm, nbn.rms_norm])
def test_normalized_shape_does_not_fit(f, no_kernel):
    x = _data()
    for ns in (4, (5, 5), (6, 4), (3, 4, 6, 5), (1, 4, 6, 5)):
        t = (ns,) if isinstance(ns, int) else ns
        with raises(ValueError, "normalized_shape", shapes=[t, SHAPE]):
            f(x, ns)
    for ns in ((), 5.0, "5", (5.0,), None, (True,)):
        with raises(TypeError, "normalized_shape"):
            f(x, ns)


# --------------------------------------------------------------------------
# dtypes of x
# --------------------------------------------------------------------------


def _bad_x(kind):
    if kind == "complex":
        return _data().astype(np.complex128)
    if kind == "complex64":
        return _data().astype(np.complex64)
    if kind == "object":
        return _data().astype(object)
    if kind == "string":
        return np.full(SHAPE, "ab")
    if kind == "bytes":
        return np.full(SHAPE, b"ab")
    if kind == "datetime":
        return np.zeros(SHAPE, "datetime64[s]")
    if kind == "timedelta":
        return np.zeros(SHAPE, "timedelta64[s]")
    if kind == "void":
        return np.zeros(SHAPE, "V8")
    raise AssertionError(kind)


BAD_KINDS = ["complex", "complex64", "object", "string", "bytes", "datetime", "timedelta", "void"]


@pytest.mark.parametrize("kind", BAD_KINDS)
@pytest.mark.parametrize("op", OPS)
def test_unsupported_dtype(op, kind, no_kernel):
    x = _bad_x(kind)
    with raises(TypeError, "x", str(x.dtype)):
        OPS[op](x)


@pytest.mark.parametrize("dtype", [">f8", ">f4", ">i4"])
def test_non_native_byte_order(dtype):
    """NumPy reads any byte order: the result equals the native one (or, at
    worst, a TypeError naming x) -- never a numba typing error."""
    native = np.dtype(dtype).newbyteorder("=")
    failures = []
    for op, f in OPS.items():
        x = _data().astype(native).astype(dtype)
        want = f(x.astype(native))
        try:
            y = f(x)
        except TypeError as e:  # acceptable, if it names x
            if "x" not in str(e):
                failures.append(f"{op}: TypeError not naming x: {e}")
            continue
        except Exception as e:  # e.g. numba.core.errors.TypingError
            failures.append(f"{op}: {type(e).__module__}.{type(e).__name__}: {str(e)[:120]!r}")
            continue
        if y.shape != x.shape or y.dtype != want.dtype or not np.array_equal(y, want):
            failures.append(f"{op}: result differs from the native-order result")
    assert not failures, "\n".join(failures)


def test_ragged_list_is_type_error(no_kernel):
    with raises(TypeError, "x"):
        nbn.standardize([[1.0, 2.0], [3.0]])


# --------------------------------------------------------------------------
# eps, p, momentum, feature_range, axis, ddof
# --------------------------------------------------------------------------


EPS_OPS = [
    "batch_norm",
    "batch_norm_eval",
    "instance_norm",
    "layer_norm",
    "group_norm",
    "rms_norm",
    "lp_normalize",
]


@pytest.mark.parametrize("eps", [-1e-5, -1.0, float("nan"), float("inf"), -float("inf")], ids=str)
@pytest.mark.parametrize("op", EPS_OPS)
def test_bad_eps(op, eps, no_kernel):
    with raises(ValueError, "eps", repr(eps)):
        OPS[op](_data(), eps=eps)


@pytest.mark.parametrize("eps", ["1e-5", [1e-5], True, 1j])
@pytest.mark.parametrize("op", EPS_OPS)
def test_eps_not_a_number(op, eps, no_kernel):
    with raises(TypeError, "eps"):
        OPS[op](_data(), eps=eps)


@pytest.mark.parametrize("p", [0, 0.0, -1, -2.5, -np.inf, float("nan")], ids=str)
def test_bad_p(p, no_kernel):
    with raises(ValueError, "p must", repr(float(p))):
        nbn.lp_normalize(_data(), p=p)


@pytest.mark.parametrize("p", ["2", None, 2j, True, [2]], ids=str)
def test_p_not_a_number(p, no_kernel):
    with raises(TypeError, "p must"):
        nbn.lp_normalize(_data(), p=p)


@pytest.mark.parametrize("momentum", [-0.1, 1.5, float("nan"), float("inf")], ids=str)
@pytest.mark.parametrize("op", ["batch_norm", "instance_norm"])
def test_momentum_out_of_range(op, momentum, no_kernel):
    f = nbn.batch_norm if op == "batch_norm" else nbn.instance_norm
    rm, rv = np.zeros(C), np.ones(C)
    with raises(ValueError, "momentum", repr(momentum)):
        f(_data(), rm, rv, None, None, True, momentum)
    np.testing.assert_array_equal(rm, 0.0)
    np.testing.assert_array_equal(rv, 1.0)


@pytest.mark.parametrize("momentum", ["0.1", [0.1], 1j])
def test_momentum_not_a_number(momentum, no_kernel):
    with raises(TypeError, "momentum"):
        nbn.batch_norm(_data(), np.zeros(C), np.ones(C), training=True, momentum=momentum)


@pytest.mark.parametrize("fr", [(1.0, 0.0), (1, 1), (float("nan"), 1.0), (0.0, float("nan"))], ids=str)
def test_feature_range_not_increasing(fr, no_kernel):
    with raises(ValueError, "feature_range", repr(fr)):
        nbn.minmax_scale(_data(), feature_range=fr)


@pytest.mark.parametrize("fr", [(0.0, float("inf")), (-float("inf"), 0.0)], ids=str)
def test_feature_range_not_finite(fr, no_kernel):
    # (0, inf) would turn every feature's minimum into 0 * inf = NaN
    with raises(ValueError, "feature_range"):
        nbn.minmax_scale(_data(), feature_range=fr)


@pytest.mark.parametrize("fr", [(1.0,), (0, 1, 2), "ab", 1.0, None, ("a", "b")], ids=str)
def test_feature_range_not_a_pair(fr, no_kernel):
    with raises(TypeError, "feature_range"):
        nbn.minmax_scale(_data(), feature_range=fr)


@pytest.mark.parametrize("axis", [3, -4, (0, 3), (5,)], ids=str)
@pytest.mark.parametrize("op", ["standardize", "minmax_scale", "lp_normalize"])
def test_axis_out_of_range(op, axis, no_kernel):
    with raises(ValueError, f"axis={axis!r}", "3 dimensions"):
        OPS[op](_data(), axis=axis)


@pytest.mark.parametrize("axis", [(0, 0), (1, -2)], ids=str)
@pytest.mark.parametrize("op", ["standardize", "minmax_scale", "lp_normalize"])
def test_axis_repeated(op, axis, no_kernel):
    with raises(ValueError, "axis", "repeats"):
        OPS[op](_data(), axis=axis)


@pytest.mark.parametrize("axis", [1.0, "0", (0, 1.0), True], ids=str)
@pytest.mark.parametrize("op", ["standardize", "minmax_scale", "lp_normalize"])
def test_axis_not_ints(op, axis, no_kernel):
    with raises(TypeError, "axis"):
        OPS[op](_data(), axis=axis)


@pytest.mark.parametrize("ddof", [-1, 1.5, True, "1"], ids=str)
def test_bad_ddof(ddof, no_kernel):
    with raises((ValueError, TypeError), "ddof", repr(ddof)):
        nbn.standardize(_data(), ddof=ddof)


# --------------------------------------------------------------------------
# what must work: read-only x, out=x, integer/bool/float16 dtypes
# --------------------------------------------------------------------------


@pytest.mark.parametrize("op", OPS)
def test_read_only_x_works_and_is_not_modified(op):
    x = _data()
    ref = OPS[op](x.copy())
    x.flags.writeable = False
    x0 = x.copy()
    y = OPS[op](x)
    np.testing.assert_array_equal(x, x0)
    assert y.flags.writeable
    assert not np.shares_memory(x, y)
    np.testing.assert_array_equal(y, ref)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
@pytest.mark.parametrize("op", OPS)
def test_out_is_x_in_place(op, dtype):
    x = _data(dtype=dtype)
    ref = OPS[op](x.copy())
    y = OPS[op](x, out=x)
    assert y is x
    np.testing.assert_array_equal(x, ref)


@pytest.mark.parametrize("op", OPS)
def test_out_given_is_returned(op):
    x = _data()
    out = np.full(SHAPE, np.nan)
    y = OPS[op](x, out=out)
    assert y is out
    np.testing.assert_array_equal(out, OPS[op](x))


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint8, np.uint16, np.bool_], ids=str)
@pytest.mark.parametrize("op", OPS)
def test_integer_and_bool_inputs_give_float64(op, dtype):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 2 if dtype == np.bool_ else 100, SHAPE).astype(dtype)
    x0 = x.copy()
    y = OPS[op](x)
    assert y.dtype == np.float64
    np.testing.assert_array_equal(x, x0)
    assert x.dtype == dtype
    np.testing.assert_allclose(y, OPS[op](x.astype(np.float64)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("op", OPS)
def test_float16_gives_float16(op):
    x = _data(dtype=np.float16)
    y = OPS[op](x)
    assert y.dtype == np.float16
    ref = OPS[op](x.astype(np.float32)).astype(np.float16)
    np.testing.assert_allclose(y.astype(np.float32), ref.astype(np.float32), rtol=2e-3, atol=4e-3)
    assert np.isfinite(y).all()


def test_return_stats_with_int_and_float16_inputs():
    y, mean, rstd = nbn.batch_norm(np.arange(24).reshape(4, 6), training=True, return_stats=True)
    assert y.dtype == mean.dtype == rstd.dtype == np.float64
    y, mean, rstd = nbn.layer_norm(_data(dtype=np.float16), 5, return_stats=True)
    assert y.dtype == np.float16
    assert mean.dtype == rstd.dtype == np.float32  # float16 statistics kept at float32 (as PyTorch)
