"""The ONNX Runtime peer: one single-node model per op, run by ONNX Runtime's
CPU provider with numba's thread count, checked against numbanorm's output
before it is timed.

ONNX Runtime (and ``onnx``, which builds the models) are optional: without
them the column is skipped with a note.  Each model holds the op's
parameters as initializers (as an exported network would) and takes ``x`` as
its one input; the timed call is ``run_with_iobinding`` with ``x`` bound once
and the output allocated by ONNX Runtime (its arena) on every run, i.e. an
allocating call like numbanorm's.  ``session.run(None, feeds)`` with a reused
feeds dict (which returns NumPy arrays) is the second candidate where the
small inputs are timed.

What ONNX (opset) expresses which op, with the same arguments as the suite's
numbanorm call (cases.case_args):

================  ==============================================================
batch_norm_eval   BatchNormalization-15, training_mode=0
batch_norm_train  BatchNormalization-15, training_mode=1 (outputs Y, running mean
                  and variance; ONNX weighs the old running value with momentum,
                  so momentum = 1 - 0.1; only Y is compared)
instance_norm     InstanceNormalization-22 with scale 1, bias 0 (both inputs are
                  required by ONNX; the suite's call has no affine)
layer_norm        LayerNormalization-17, axis=-1
group_norm        GroupNormalization-21, num_groups = C // 2 (stash_type 11, i.e.
                  float64 statistics, for float64 input).  ONNX Runtime has no
                  kernel for it: it runs the operator's ONNX function body (its
                  decomposition into ~30 elementary nodes); the report's
                  ``ort.graph`` lists the nodes it ran
rms_norm          RMSNormalization-23, axis=-1, epsilon = finfo(dtype).eps (what
                  numbanorm's eps=None means)
lp_normalize      LpNormalization-22, p=2, axis=-1
standardize       MeanVarianceNormalization-13, axes=[0]: (x - mean) / (std + 1e-9)
================  ==============================================================

No single ONNX operator does ``minmax_scale`` or a channels-last batch norm
(``batch_norm_train_cl``): those rows have no ONNX Runtime column.  Where ONNX
Runtime has no CPU kernel for a dtype (InstanceNormalization and
MeanVarianceNormalization in float64) the row says so.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from .cases import Case, Fn, case_args

# op -> (ONNX operator, opset)
ONNX_OP: dict[str, tuple[str, int]] = {
    "batch_norm_eval": ("BatchNormalization", 15),
    "batch_norm_train": ("BatchNormalization", 15),
    "instance_norm": ("InstanceNormalization", 22),
    "layer_norm": ("LayerNormalization", 17),
    "group_norm": ("GroupNormalization", 21),
    "rms_norm": ("RMSNormalization", 23),
    "lp_normalize": ("LpNormalization", 22),
    "standardize": ("MeanVarianceNormalization", 13),
}
NO_ONNX_OP: dict[str, str] = {
    "batch_norm_train_cl": "ONNX BatchNormalization is channels-first only (NHWC would need a Transpose)",
    "minmax_scale": "no ONNX operator scales to a range",
}
# |ort - numbanorm| <= ATOL + RTOL * |numbanorm|, checked once per case before timing
TOLERANCE: dict[str, tuple[float, float]] = {"float32": (1e-4, 1e-4), "float64": (1e-8, 1e-8)}
_IR_VERSION = 10  # what ONNX Runtime 1.2x-1.3x reads; enough for opset 23


def import_ort() -> tuple[ModuleType | None, ModuleType | None, str | None]:
    """(onnxruntime, onnx, None) when both import, else (None, None, why not)."""
    try:
        import onnxruntime
    except ImportError:
        return (
            None,
            None,
            "onnxruntime is not installed (pip install onnxruntime): ONNX Runtime column skipped",
        )
    try:
        import onnx
    except ImportError:
        return (
            None,
            None,
            "onnx is not installed (pip install onnx; it builds the single-node models): "
            "ONNX Runtime column skipped",
        )
    return onnxruntime, onnx, None


def session_options(ort: ModuleType, threads: int) -> Any:
    """CPU provider settings of every session: numba's thread count for the
    intra-op pool, one inter-op thread, sequential execution, all graph
    optimizations, and the intra-op pool's spinning between runs off.
    Spinning is ONNX Runtime's default, but the benchmark interleaves every
    peer's calls in one process, and a pool still spinning after its run
    took the cores of whatever ran next: a 1 MiB rerun with it on had
    numbanorm's rms_norm at 231 us (43 us alone) and torch's layer_norm at
    932 us (71 us alone); with it off no row was inflated (benchmarks/NOTES.md
    section 24)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3  # errors only (no notes about serialized optimized models)
    return so


SESSION_SETTINGS = {
    "provider": "CPUExecutionProvider",
    "intra_op_num_threads": "numba's thread count of the row",
    "inter_op_num_threads": 1,
    "execution_mode": "ORT_SEQUENTIAL",
    "graph_optimization_level": "ORT_ENABLE_ALL",
    "session.intra_op.allow_spinning": "0 (a spinning pool disturbed the interleaved peers' calls)",
    "timed_call": "session.run_with_iobinding: x bound once (bind_cpu_input), output allocated by ONNX "
    "Runtime each run (bind_output, not copied to NumPy)",
    "ort_run": "small inputs only: session.run(None, feeds) with a reused feeds dict (returns NumPy arrays)",
}


@dataclass
class OrtPeer:
    """One session on one case: ``run`` (io binding), ``run_feeds``
    (session.run) and ``output`` (the result of one run as NumPy)."""

    session: Any
    binding: Any
    feeds: dict[str, np.ndarray]
    node: str
    opset: int
    attributes: dict[str, Any] = field(default_factory=dict)

    def run(self) -> None:
        self.session.run_with_iobinding(self.binding)

    def run_feeds(self) -> Any:
        return self.session.run(None, self.feeds)

    def output(self) -> np.ndarray:
        self.run()
        return np.asarray(self.binding.copy_outputs_to_cpu()[0])


def _model(onnx: Any, case: Case, x: np.ndarray) -> tuple[bytes, str, int, dict[str, Any], int]:
    """(serialized model, operator, opset, attributes, outputs) of ``case``."""
    from onnx import helper, numpy_helper

    node, opset = ONNX_OP[case.op]
    args, _ = case_args(case)
    dt = x.dtype
    c = x.shape[1]
    inits: dict[str, np.ndarray] = {}
    attrs: dict[str, Any] = {}
    outputs = 1
    if case.op in ("batch_norm_eval", "batch_norm_train"):
        rm, rv, w, b, training = args
        inits = {"scale": w, "B": b, "input_mean": rm, "input_var": rv}
        attrs = {"epsilon": 1e-5, "training_mode": int(training)}
        if training:
            attrs["momentum"] = 1.0 - 0.1  # ONNX weighs the old value
            outputs = 3
    elif case.op == "instance_norm":
        inits = {"scale": np.ones(c, dt), "B": np.zeros(c, dt)}
        attrs = {"epsilon": 1e-5}
    elif case.op == "layer_norm":
        (_, w, b) = args
        inits = {"Scale": w, "B": b}
        attrs = {"axis": -1, "epsilon": 1e-5}
    elif case.op == "group_norm":
        groups, w, b = args
        inits = {"scale": w, "bias": b}
        attrs = {"num_groups": int(groups), "epsilon": 1e-5}
        if dt == np.float64:
            attrs["stash_type"] = 11  # float64 statistics, as numbanorm computes them
    elif case.op == "rms_norm":
        (_, w) = args
        inits = {"scale": w}
        attrs = {"axis": -1, "epsilon": float(np.finfo(dt).eps)}
    elif case.op == "lp_normalize":
        attrs = {"axis": -1, "p": 2}
    elif case.op == "standardize":
        attrs = {"axes": [0]}
    else:  # pragma: no cover - ONNX_OP and this function list the same ops
        raise AssertionError(case.op)
    elem = helper.np_dtype_to_tensor_dtype(dt)
    out_names = ["Y", "running_mean", "running_var"][:outputs]
    graph = helper.make_graph(
        [helper.make_node(node, ["X", *inits], out_names, **attrs)],
        f"{case.op}_{node}",
        [helper.make_tensor_value_info("X", elem, list(x.shape))],
        [helper.make_tensor_value_info(o, elem, None) for o in out_names],
        initializer=[numpy_helper.from_array(np.ascontiguousarray(v), k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = _IR_VERSION
    return model.SerializeToString(), node, opset, attrs, outputs


class OrtPeers:
    """Builds the ONNX Runtime peer of a case, or says why there is none."""

    def __init__(self, ort: ModuleType, onnx: ModuleType) -> None:
        self.ort, self.onnx = ort, onnx
        self._graphs: dict[tuple[str, str, int], list[str]] = {}

    def note(self, case: Case) -> str | None:
        """Why ``case`` has no ONNX peer (None: it has one)."""
        return NO_ONNX_OP.get(case.op) if case.op not in ONNX_OP else None

    def peer(self, case: Case, x: np.ndarray, threads: int) -> OrtPeer:
        """A session for ``case`` on ``x`` with ``threads`` intra-op threads
        (raises what ONNX Runtime raises when it cannot build or run it)."""
        blob, node, opset, attrs, outputs = _model(self.onnx, case, x)
        sess = self.ort.InferenceSession(
            blob, session_options(self.ort, threads), providers=["CPUExecutionProvider"]
        )
        binding = sess.io_binding()
        binding.bind_cpu_input("X", x)
        for o in sess.get_outputs():
            binding.bind_output(o.name)
        return OrtPeer(sess, binding, {"X": x}, node, opset, attrs)

    def graph(self, case: Case, x: np.ndarray, threads: int) -> list[str]:
        """The operators ONNX Runtime runs for ``case`` after its graph
        optimizations (once per op, dtype and rank): shows when an operator
        runs as its ONNX function body instead of one kernel."""
        key = (case.op, case.dtype, x.ndim)
        if key not in self._graphs:
            blob = _model(self.onnx, case, x)[0]
            fd, path = tempfile.mkstemp(suffix=".onnx", prefix="numbanorm-bench-ort-")
            os.close(fd)
            try:
                so = session_options(self.ort, threads)
                so.optimized_model_filepath = path
                self.ort.InferenceSession(blob, so, providers=["CPUExecutionProvider"])
                self._graphs[key] = [n.op_type for n in self.onnx.load(path).graph.node]
            finally:
                os.unlink(path)
        return self._graphs[key]


def compare(got: np.ndarray, ref: np.ndarray, dtype: str) -> tuple[bool, float, str]:
    """(within tolerance, max |got - ref|, tolerance in words)."""
    rtol, atol = TOLERANCE[dtype]
    words = f"|ort - numbanorm| <= {atol:g} + {rtol:g} * |numbanorm|"
    if got.shape != ref.shape:
        return False, float("inf"), f"shape {got.shape} != numbanorm's {ref.shape}"
    g, r = got.astype(np.float64), ref.astype(np.float64)
    diff = np.abs(g - r)
    ok = bool(np.all(diff <= atol + rtol * np.abs(r)) and np.array_equal(np.isnan(g), np.isnan(r)))
    return ok, float(np.nanmax(diff)) if diff.size else 0.0, words


def ort_version(ort: ModuleType | None) -> str | None:
    return None if ort is None else getattr(ort, "__version__", None)


def peer_fns(
    peers: OrtPeers | None,
    case: Case,
    x: np.ndarray,
    reference: Fn,
    threads: int,
    feeds_too: bool,
) -> tuple[dict[str, Fn], dict[str, Any] | None, dict[str, str], Any]:
    """The ONNX Runtime candidates of ``case`` (``ort``; with ``feeds_too``
    also ``ort_run``), what the report says about the peer, errors, and the
    session (kept alive by the caller while timing).

    The peer's output is compared with ``reference()`` (numbanorm's) once:
    a mismatch is an error of the row (``errors['ort']``) and the peer is not
    timed.  An op without an ONNX operator, or one this ONNX Runtime cannot
    build a session for (no kernel for the dtype, a newer opset), is a note,
    not an error."""
    if peers is None:
        return {}, None, {}, None
    note = peers.note(case)
    if note is not None:
        return {}, {"node": None, "note": note}, {}, None
    node, opset = ONNX_OP[case.op]
    info: dict[str, Any] = {"node": node, "opset": opset}
    try:
        p = peers.peer(case, x, threads)
    except Exception as e:  # noqa: BLE001 - ONNX Runtime's own errors (no kernel for a dtype, ...)
        # what this ONNX Runtime cannot run (no kernel for the dtype, an opset it
        # predates) is a gap of the peer, not a failure of the benchmark
        msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        what = (
            f"has no CPU kernel for {node} in {case.dtype}"
            if "NOT_IMPLEMENTED" in msg or "Type Error" in msg
            else f"cannot run {node}-{opset} in {case.dtype}"
        )
        info["note"] = f"ONNX Runtime {ort_version(peers.ort)} {what}: {msg}"
        return {}, info, {}, None
    info["attributes"] = {k: v for k, v in p.attributes.items()}
    try:
        info["graph"] = peers.graph(case, x, threads)
        if info["graph"] != [node]:
            info["note"] = (
                f"ONNX Runtime runs {node}-{opset} as its ONNX function body "
                f"({len(info['graph'])} nodes), not as one kernel"
            )
        ok, maxdiff, words = compare(p.output(), np.asarray(reference()), case.dtype)
    except Exception as e:  # noqa: BLE001
        return {}, info, {"ort": f"run: {type(e).__name__}: {str(e).strip()[:300]}"}, None
    info["verified"] = {"max_abs_diff": maxdiff, "tolerance": words, "ok": ok}
    if not ok:
        return {}, info, {"ort": f"output differs from numbanorm's: max |diff| {maxdiff:.3g} ({words})"}, None
    fns: dict[str, Fn] = {"ort": p.run}
    if feeds_too:
        fns["ort_run"] = p.run_feeds
    return fns, info, {}, p
