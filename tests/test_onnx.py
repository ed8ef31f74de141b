"""Everything the ONNX normalization operators express is expressible through numbanorm.

Each test builds a one-node model with ``onnx.helper``, runs it with
``onnx.reference.ReferenceEvaluator`` and reproduces every output with
numbanorm calls (plus, where ONNX's convention differs from PyTorch's, the few
lines of NumPy that translate one convention into the other, spelled out in
the test).  Operators or opsets missing from the installed onnx are skipped
with the reason.

Tolerances: float64 1e-9 relative, float32 2e-5 absolute (the ONNX reference
itself computes in the input's dtype).
"""

from __future__ import annotations

import numpy as np
import pytest

import numbanorm as nbn

onnx = pytest.importorskip("onnx")
from onnx import helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
DTYPES = [F64, F32]


def require(op, opset):
    """Skip unless the installed onnx defines ``op`` at ``opset`` (exactly that version)."""
    if onnx.defs.onnx_opset_version() < opset:
        pytest.skip(f"installed onnx {onnx.__version__} stops at opset {onnx.defs.onnx_opset_version()}")
    try:
        schema = onnx.defs.get_schema(op, opset)
    except onnx.defs.SchemaError:
        pytest.skip(f"installed onnx {onnx.__version__} has no {op} at opset {opset}")
    return schema.since_version


def run_onnx(op, opset, inputs, outputs, **attrs):
    """Run one ``op`` node on ``inputs`` (name -> array, None = omitted optional input)."""
    require(op, opset)
    names = [k if v is not None else "" for k, v in inputs.items()]
    feeds = {k: v for k, v in inputs.items() if v is not None}
    node = helper.make_node(op, names, outputs, **attrs)

    def info(name, arr):
        return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(arr.dtype), arr.shape)

    elem = next(iter(feeds.values())).dtype
    graph = helper.make_graph(
        [node],
        f"{op}_{opset}",
        [info(k, v) for k, v in feeds.items()],
        [helper.make_tensor_value_info(o, helper.np_dtype_to_tensor_dtype(elem), None) for o in outputs],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return ReferenceEvaluator(model).run(None, feeds)


def assert_close(got, exp, dtype, what):
    # float64: 1e-9 relative, and 1e-10 absolute for outputs where weight * z + bias cancels
    rtol, atol = (1e-9, 1e-10) if np.dtype(dtype) == F64 else (1e-5, 2e-5)
    got, exp = np.asarray(got), np.asarray(exp)
    assert got.shape == exp.shape, f"{what}: shape {got.shape}, ONNX {exp.shape}"
    np.testing.assert_allclose(got.astype(F64), exp.astype(F64), rtol=rtol, atol=atol, err_msg=what)


def f32(v):
    """An ONNX float attribute as the model stores it (float32): epsilon, momentum."""
    return float(np.float32(v))


def data(rng, shape, dtype):
    return (rng.standard_normal(shape) * 1.5 + 0.3).astype(dtype)


SHAPES = [(5, 3), (2, 3, 7), (2, 3, 4, 5), (2, 3, 2, 3, 2)]


# --------------------------------------------------------------------------
# BatchNormalization
# --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_batch_normalization_inference(shape, dtype):
    rng = np.random.default_rng(1)
    c = shape[1]
    x = data(rng, shape, dtype)
    scale, b = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    mean, var = rng.standard_normal(c).astype(dtype), (rng.random(c) + 0.5).astype(dtype)
    (y,) = run_onnx(
        "BatchNormalization", 15,
        {"X": x, "scale": scale, "B": b, "input_mean": mean, "input_var": var}, ["Y"],
        epsilon=1e-3, training_mode=0,
    )  # fmt: skip
    got = nbn.batch_norm(x, mean, var, scale, b, training=False, eps=f32(1e-3))
    assert_close(got, y, dtype, "BatchNormalization inference")


@pytest.mark.parametrize("momentum", [0.9, 0.5, 0.0])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_batch_normalization_training(shape, dtype, momentum):
    """training_mode=1: Y, running_mean, running_var.

    ONNX weighs the *old* value with ``momentum`` and accumulates the *biased*
    batch variance; PyTorch (numbanorm) weighs the new one and accumulates the
    unbiased variance.  Translation: momentum -> 1 - momentum for the mean; for
    the variance, accumulate the unbiased variance into a zero array and
    rescale by (n - 1) / n.
    """
    rng = np.random.default_rng(2)
    c = shape[1]
    n = int(np.prod(shape)) // c
    x = data(rng, shape, dtype)
    scale, b = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    mean, var = rng.standard_normal(c).astype(dtype), (rng.random(c) + 0.5).astype(dtype)
    y, out_mean, out_var = run_onnx(
        "BatchNormalization", 15,
        {"X": x, "scale": scale, "B": b, "input_mean": mean, "input_var": var},
        ["Y", "running_mean", "running_var"],
        epsilon=1e-5, momentum=momentum, training_mode=1,
    )  # fmt: skip

    running_mean = mean.copy()
    unbiased = np.zeros(c, dtype=dtype)  # receives (1 - momentum) * unbiased batch var
    m = f32(momentum)
    got = nbn.batch_norm(x, running_mean, unbiased, scale, b, True, 1.0 - m, f32(1e-5))
    running_var = m * var + unbiased * ((n - 1) / n)

    assert_close(got, y, dtype, "BatchNormalization training Y")
    assert_close(running_mean, out_mean, dtype, "BatchNormalization running_mean")
    assert_close(running_var, out_var, dtype, "BatchNormalization running_var")


# --------------------------------------------------------------------------
# LayerNormalization (any axis; Mean and InvStdDev outputs)
# --------------------------------------------------------------------------


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "shape, axis",
    [((7,), 0), ((3, 13), -1), ((3, 13), 0), ((2, 3, 5), 1), ((2, 3, 4, 5), -1), ((2, 3, 4, 5), -3),
     ((2, 3, 4, 5), 0), ((2, 3, 2, 3, 2), 2)],
    ids=str,
)  # fmt: skip
def test_layer_normalization(shape, axis, dtype, with_bias):
    rng = np.random.default_rng(3)
    x = data(rng, shape, dtype)
    ns = shape[axis:]  # the normalized axes: [axis, rank)
    scale = rng.standard_normal(ns).astype(dtype)
    b = rng.standard_normal(ns).astype(dtype) if with_bias else None
    y, mean, inv_std = run_onnx(
        "LayerNormalization", 17, {"X": x, "Scale": scale, "B": b}, ["Y", "Mean", "InvStdDev"],
        axis=axis, epsilon=1e-5,
    )  # fmt: skip
    got, got_mean, got_rstd = nbn.layer_norm(x, ns, scale, b, f32(1e-5), return_stats=True)
    assert_close(got, y, dtype, "LayerNormalization Y")
    assert_close(got_mean, mean, dtype, "LayerNormalization Mean")  # both x.shape[:axis] + (1,)*k
    assert_close(got_rstd, inv_std, dtype, "LayerNormalization InvStdDev")


# --------------------------------------------------------------------------
# InstanceNormalization
# --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES[1:] + [(1, 5, 31)], ids=str)
def test_instance_normalization(shape, dtype):
    rng = np.random.default_rng(4)
    c = shape[1]
    x = data(rng, shape, dtype)
    scale, b = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    (y,) = run_onnx("InstanceNormalization", 22, {"input": x, "scale": scale, "B": b}, ["Y"],
                    epsilon=1e-4)  # fmt: skip
    assert_close(nbn.instance_norm(x, None, None, scale, b, eps=f32(1e-4)), y, dtype, "InstanceNormalization")


# --------------------------------------------------------------------------
# GroupNormalization: opset 21 (per-channel scale/bias), opset 18 (per-group)
# --------------------------------------------------------------------------

GN = [((2, 6, 5), 3), ((2, 6, 4, 5), 2), ((1, 4, 3, 3), 4), ((3, 4, 7), 1), ((2, 6, 2, 3, 2), 6)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape, groups", GN, ids=str)
def test_group_normalization_opset21(shape, groups, dtype):
    rng = np.random.default_rng(5)
    c = shape[1]
    x = data(rng, shape, dtype)
    scale, b = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    # stash_type: the precision of the statistics; 1 (float32) by default, 11 = float64
    stash = 11 if dtype == F64 else 1
    (y,) = run_onnx("GroupNormalization", 21, {"X": x, "scale": scale, "bias": b}, ["Y"],
                    num_groups=groups, epsilon=1e-5, stash_type=stash)  # fmt: skip
    assert_close(nbn.group_norm(x, groups, scale, b, f32(1e-5)), y, dtype, "GroupNormalization-21")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape, groups", GN, ids=str)
def test_group_normalization_opset18_per_group_scale(shape, groups, dtype):
    """Opset 18's per-group scale/bias is a per-channel one repeated C/G times."""
    rng = np.random.default_rng(6)
    c = shape[1]
    x = data(rng, shape, dtype)
    scale, b = rng.standard_normal(groups).astype(dtype), rng.standard_normal(groups).astype(dtype)
    if require("GroupNormalization", 18) != 18:
        pytest.skip("installed onnx has no opset-18 GroupNormalization (per-group scale)")
    (y,) = run_onnx("GroupNormalization", 18, {"X": x, "scale": scale, "bias": b}, ["Y"],
                    num_groups=groups, epsilon=1e-5)  # fmt: skip
    per_channel = np.repeat(scale, c // groups), np.repeat(b, c // groups)
    got = nbn.group_norm(x, groups, *per_channel, f32(1e-5))
    assert_close(got, y, dtype, "GroupNormalization-18")


# --------------------------------------------------------------------------
# RMSNormalization (opset 23)
# --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "shape, axis",
    [((7,), 0), ((3, 13), -1), ((2, 3, 5), 1), ((2, 3, 4, 5), -2), ((2, 3, 4, 5), 0)],
    ids=str,
)
def test_rms_normalization(shape, axis, dtype):
    rng = np.random.default_rng(7)
    x = data(rng, shape, dtype)
    ns = shape[axis:]
    scale = rng.standard_normal(ns).astype(dtype)
    (y,) = run_onnx("RMSNormalization", 23, {"X": x, "scale": scale}, ["Y"], axis=axis, epsilon=1e-5)
    assert_close(nbn.rms_norm(x, ns, scale, f32(1e-5)), y, dtype, "RMSNormalization")


# --------------------------------------------------------------------------
# MeanVarianceNormalization: (x - mean) / (std + 1e-9) over ``axes``
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, axes", [((2, 3, 4, 5), None), ((2, 3, 4, 5), [2, 3]), ((2, 3, 4, 5), [0, 1, 2, 3]),
                    ((2, 3, 4, 5), [1]), ((5, 7), [0]), ((2, 3, 7), [0, 2])],
    ids=str,
)  # fmt: skip
def test_mean_variance_normalization(shape, axes):
    """float32 only: the function body's constants (exponent 2, epsilon 1e-9) are float32,
    so the reference evaluator rejects float64 inputs."""
    rng = np.random.default_rng(8)
    x = data(rng, shape, F32)
    attrs = {} if axes is None else {"axes": axes}
    (y,) = run_onnx("MeanVarianceNormalization", 13, {"X": x}, ["Y"], **attrs)
    axis = (0, 2, 3) if axes is None else tuple(axes)
    assert_close(nbn.standardize(x, axis=axis), y, F32, f"MeanVarianceNormalization axes={axes}")


# --------------------------------------------------------------------------
# LpNormalization (p = 1, 2 along an axis)
# --------------------------------------------------------------------------


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "shape, axis", [((7,), 0), ((3, 13), -1), ((3, 13), 0), ((2, 3, 5), 1), ((2, 3, 4, 5), 2)], ids=str
)
def test_lp_normalization(shape, axis, p, dtype):
    rng = np.random.default_rng(9)
    x = data(rng, shape, dtype)
    if p == 1:
        # onnx's reference computes the 1-norm as sum(x ** 1), without abs(): it is
        # the L1 norm only for non-negative x, so the comparison uses such x.
        x = np.abs(x)
    (y,) = run_onnx("LpNormalization", 22, {"input": x}, ["output"], axis=axis, p=p)
    assert_close(nbn.lp_normalize(x, p, axis), y, dtype, f"LpNormalization p={p} axis={axis}")


def test_lp_normalization_zero_vector_gives_zero():
    x = np.zeros((2, 4))
    x[1] = [1.0, 2.0, 2.0, 0.0]
    with np.errstate(invalid="ignore"):  # the reference divides 0 / 0 before masking it
        (y,) = run_onnx("LpNormalization", 22, {"input": x}, ["output"], axis=1, p=2)
    assert_close(nbn.lp_normalize(x, 2, 1), y, F64, "LpNormalization of a zero row")
