"""Which nodes of a graph compute on image data, and which only on coordinates and scales.

A node is *data* when one of its inputs derives from the graph's data input (``lr`` for the
backbone, ``features`` for the upsampler) through values, not through shapes: the output of
``Shape``/``Size`` is metadata, so index arithmetic that clamps to the feature size stays
coordinate math. Every other node (rows/cols/scale arithmetic, Floor/Cast index math, the
sin/cos scale and offset encodings, LIIF's ensemble areas) is *coordinate* math: it must stay
in float32 under FP16 and INT8, whatever the nodes are named.

*Phase* math is the image math that computes the argument of a periodic function (``Sin``,
``Cos``) of image data, such as LTE's ``pi (freq . rel + phase)``: the nodes from the data
input through data movement and linear arithmetic up to and including the ``Sin``/``Cos``
(:func:`phase_nodes`). An error in a phase is an error in absolute radians however large the
phase: float16 rounding grows with the phase's magnitude (a float16 step is 0.125 rad between
128 and 256 rad), and quantised phase math put a trained LTE's phases off by up to 3.8 rad
while no single node of it measured costly (docs/precision.md). Phase math stays float32 too,
beside the coordinate math (:func:`float_nodes`).
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


#: Periodic functions: what a phase feeds.
PERIODIC_OPS = {"Sin", "Cos", "Tan"}
#: The ops a phase is computed with from the data input: exact data movement and the linear
#: arithmetic of the phase itself. The backward walk from a Sin/Cos stops at any other op (a
#: Conv, a Gemm, an activation): that is ordinary image math, left to the measurement.
PHASE_OPS = {"Add", "Sub", "Mul", "Div", "Neg", "Identity", "Cast", "Gather", "GatherElements", "GatherND", "Slice",
             "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Expand", "Tile", "Split", "Concat"}


def phase_nodes(model: onnx.ModelProto, data_input: str) -> list[str]:
    """Image-math nodes that compute the argument of a ``Sin``/``Cos`` of image data, with the
    ``Sin``/``Cos`` nodes themselves, in graph order (see the module docstring)."""
    data = data_nodes(model, data_input)
    producer = {o: n for n in model.graph.node for o in n.output if o}
    todo = [n for n in model.graph.node if n.op_type in PERIODIC_OPS and n.name in data]
    phase = {n.name for n in todo}
    while todo:
        for t in todo.pop().input:
            p = producer.get(t)
            if p is not None and p.name in data and p.name not in phase and p.op_type in PHASE_OPS:
                phase.add(p.name)
                todo.append(p)
    return [n.name for n in model.graph.node if n.name in phase]


def float_nodes(model: onnx.ModelProto, data_input: str) -> list[str]:
    """Everything that stays float32 under FP16 and INT8: coordinate and phase math, in graph order."""
    keep = set(coordinate_nodes(model, data_input)) | set(phase_nodes(model, data_input))
    return [n.name for n in model.graph.node if n.name in keep]


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
    """Give coordinate (and phase) nodes their own copy of any initializer other image math uses too.

    ORT's quantiser replaces a quantised node's constant input by a dequantised copy for every
    consumer, and the fp16 converter retypes it: a ``0.5`` shared by ``features * 0.5`` and a
    coordinate shift ``rows + 0.5`` would otherwise reach the coordinate math rounded.
    """
    coordinate = set(coordinate_nodes(model, data_input))
    phase = set(phase_nodes(model, data_input))
    inits = {i.name: i for i in model.graph.initializer}
    used_by_image = {t for n in model.graph.node if n.name not in coordinate | phase for t in n.input if t in inits}
    copies: dict[tuple[str, str], str] = {}
    for node in model.graph.node:
        kind = "coordinate" if node.name in coordinate else "phase" if node.name in phase else None
        if kind is None:
            continue
        for k, t in enumerate(node.input):
            if t in used_by_image:
                if (t, kind) not in copies:
                    copy = onnx.TensorProto()
                    copy.CopyFrom(inits[t])
                    copy.name = copies[t, kind] = f"{t}__{kind}"
                    model.graph.initializer.append(copy)
                node.input[k] = copies[t, kind]
    return model


def unshare_activations(model: onnx.ModelProto, data_input: str) -> onnx.ModelProto:
    """Give the image math its own copy (an ``Identity``) of any tensor float nodes read too.

    ORT's QDQ quantiser quantises a tensor in place: when a quantised node reads it, every
    reader, float or not, is rewired to the dequantised value. LTE's bilinear skip weights are
    read by a coordinate ``Sub`` and by the image math, and ``features`` and the gathered
    texture by the phase math and the rest: without the copy both would be rounded to 8 bits
    behind the float nodes' back. Only float tensors with a known type are copied (the
    graph must have been through shape inference); initializers are left alone
    (:func:`unshare_constants`).
    """
    keep = set(float_nodes(model, data_input))
    inits = {i.name for i in model.graph.initializer}
    # only float tensors are quantised (index and shape tensors are not): needs the types that
    # the pre-processing's shape inference recorded
    floats = {v.name for v in list(model.graph.input) + list(model.graph.value_info)
              if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for t in node.input:
            if t and t not in inits and t in floats:
                readers.setdefault(t, []).append(node)
    shared = {t for t, rs in readers.items()
              if any(r.name in keep and r.op_type not in SHAPE_OPS for r in rs)
              and any(r.name not in keep for r in rs)}
    if not shared:
        return model
    position = {t: -1 for t in (i.name for i in model.graph.input)}
    for k, node in enumerate(model.graph.node):
        position.update({o: k for o in node.output})
    after: dict[int, list[onnx.NodeProto]] = {}
    for t in sorted(shared):
        copy = f"{t}__image"
        for r in readers[t]:
            if r.name not in keep:
                r.input[:] = [copy if i == t else i for i in r.input]
        after.setdefault(position[t], []).append(onnx.helper.make_node("Identity", [t], [copy], name=copy))
    nodes = list(after.get(-1, []))
    for k, node in enumerate(model.graph.node):
        nodes.append(node)
        nodes.extend(after.get(k, []))
    copies = [onnx.NodeProto() for _ in nodes]
    for c, n in zip(copies, nodes):
        c.CopyFrom(n)
    del model.graph.node[:]
    model.graph.node.extend(copies)
    return model
