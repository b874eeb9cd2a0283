"""Which nodes of a graph compute on image data, and which only on coordinates and scales.

A node is *data* when one of its inputs derives from the graph's data input (``lr`` for the
backbone, ``features`` for the upsampler) through values, not through shapes: the output of
``Shape``/``Size`` is metadata, so index arithmetic that clamps to the feature size stays
coordinate math. Every other node (rows/cols/scale arithmetic, Floor/Cast index math, the
sin/cos scale and offset encodings, LIIF's ensemble areas) is *coordinate* math: it must stay
in float32 under FP16 and INT8, whatever the nodes are named.
"""

from __future__ import annotations

import onnx

from asisr.runtime import contract

DATA_INPUTS = {contract.BACKBONE.name: contract.LR, contract.UPSAMPLER.name: contract.FEATURES}
# Outputs of these ops describe a tensor's shape, not its values.
SHAPE_OPS = {"Shape", "Size"}


def quantizable_ops() -> set[str]:
    """Op types ``quantize_static`` quantizes by default (its own registries)."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return set(QDQRegistry) | set(QLinearOpsRegistry)


# The nodes that carry almost all arithmetic: the sensitivity report measures them one by one.
COMPUTE_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Mul"}


def data_nodes(model: onnx.ModelProto, data_input: str) -> set[str]:
    """Names of the nodes whose values depend on ``data_input`` (graph order is topological)."""
    data_tensors = {data_input}
    names: set[str] = set()
    for node in model.graph.node:
        if node.op_type in SHAPE_OPS:
            continue
        if any(t in data_tensors for t in node.input if t):
            names.add(node.name)
            data_tensors.update(o for o in node.output if o)
    return names


def coordinate_nodes(model: onnx.ModelProto, data_input: str) -> list[str]:
    """Nodes that compute only on coordinates, scales, shapes and constants, in graph order."""
    data = data_nodes(model, data_input)
    return [n.name for n in model.graph.node if n.name not in data]


def quantization_candidates(model: onnx.ModelProto, data_input: str, ops: set[str] = COMPUTE_OPS) -> list[str]:
    """Data nodes of the given op types, in graph order: what the sensitivity report measures."""
    data = data_nodes(model, data_input)
    return [n.name for n in model.graph.node if n.name in data and n.op_type in ops]


def ensure_node_names(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give unnamed nodes stable names (exclusion lists refer to nodes by name)."""
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{i}"
        seen.add(node.name)
    return model


def unshare_constants(model: onnx.ModelProto, data_input: str) -> onnx.ModelProto:
    """Give coordinate nodes their own copy of any initializer that data nodes use too.

    ORT's quantiser replaces a quantised node's constant input by a dequantised copy for every
    consumer, and the fp16 converter retypes it: a ``0.5`` shared by ``features * 0.5`` and a
    coordinate shift ``rows + 0.5`` would otherwise reach the coordinate math rounded.
    """
    data = data_nodes(model, data_input)
    inits = {i.name: i for i in model.graph.initializer}
    used_by_data = {t for n in model.graph.node if n.name in data for t in n.input if t in inits}
    copies: dict[str, str] = {}
    for node in model.graph.node:
        if node.name in data:
            continue
        for k, t in enumerate(node.input):
            if t in used_by_data:
                if t not in copies:
                    copy = onnx.TensorProto()
                    copy.CopyFrom(inits[t])
                    copy.name = copies[t] = f"{t}__coordinate"
                    model.graph.initializer.append(copy)
                node.input[k] = copies[t]
    return model
