"""The ONNX operators an exported graph may use to stay TensorRT-buildable: one list for every model's tests."""

from __future__ import annotations

import collections
from pathlib import Path

import onnx

# All in TensorRT's ONNX parser support matrix (onnx-tensorrt docs/operators.md, TensorRT 10) for
# float32 and int64 index math, with no GridSample (TensorRT's needs 4-D inputs and rounds nearest
# differently from PyTorch), no GatherND / ScatterND (advanced indexing), no data-dependent shapes
# (NonZero, Loop, If).
TENSORRT_OPS = frozenset({
    "Abs", "Add", "Cast", "CastLike", "Clip", "Concat", "Constant", "Conv", "Cos", "Div", "Expand", "Floor", "Gather",
    "Gemm", "Identity", "MatMul", "Max", "Min", "Mul", "Range", "Reciprocal", "Relu", "Reshape", "Shape", "Sin",
    "Slice", "Squeeze", "Sub", "Transpose", "Unsqueeze",
})
# What CNN bodies with attention and routing add (RCAN's channel attention, ArbSR's BatchNorm mask and
# softmax routing), also in that support matrix.
CNN_OPS = frozenset({"BatchNormalization", "ReduceMean", "Sigmoid", "Softmax"})


def graph_ops(path: Path) -> collections.Counter:
    """How often each operator occurs in the ONNX graph at ``path``."""
    return collections.Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node)


def assert_tensorrt_ops(path: Path, allowed: frozenset = TENSORRT_OPS) -> collections.Counter:
    """No GridSample, and nothing outside ``allowed``; returns the operator counts for further checks."""
    ops = graph_ops(path)
    assert "GridSample" not in ops, path
    assert set(ops) <= allowed, (path.name, sorted(set(ops) - allowed))
    return ops
