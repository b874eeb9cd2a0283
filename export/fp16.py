"""FP16 export: the fp32 graphs with their image math in float16, coordinate math in float32.

The conversion is ONNX Runtime's ``convert_float_to_float16`` (shipped in the onnxruntime
wheel) with ``keep_io_types``: graph inputs and outputs stay float32, so runners and the
manifest's I/O contract are unchanged. Nodes that compute only on ``rows``/``cols``/``scale``
(found by :func:`asisr.calibration.graph.coordinate_nodes`, not by name) stay float32: LR
coordinates up to thousands of pixels, the floor/clamp index math and the sin/cos encodings
lose whole pixels or whole periods in float16. So does *phase* math, the image math that
computes a Sin/Cos argument from image data (LTE's ``pi (freq . rel + phase)``,
:func:`asisr.calibration.graph.phase_nodes`): its float16 error is absolute radians growing with
the phase. Casts are inserted where float32 and float16 meet.

Graphs are pre-processed first (ORT's basic optimisation folds the exporter's Constant and
CastLike nodes, which the converter does not type well).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import onnx

from asisr.calibration.graph import DATA_INPUTS, float_nodes, phase_nodes
from asisr.calibration.quantizer import prepare_graph
from asisr.runtime.contract import STAGE_NAMES
from asisr.runtime.manifest import read_manifest, write_manifest
from asisr.export import DEFAULT_OPSET
from asisr.export.onnx import export_onnx
from asisr.export.publish import check_destination, staging_dir


def convert_graph(src: str | Path, dst: str | Path, stage: str) -> list[str]:
    """Convert one pre-processed graph to fp16 at ``dst``; returns the nodes kept in float32."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    keep = float_nodes(model, DATA_INPUTS[stage])
    fp16 = convert_float_to_float16(model, keep_io_types=True, node_block_list=keep)
    fp16 = _topological(_drop_dead(_skip_round_trips(fp16)))
    del fp16.graph.value_info[:]  # the converter leaves stale types behind: infer them afresh
    fp16 = onnx.shape_inference.infer_shapes(fp16, strict_mode=True)
    onnx.checker.check_model(fp16)
    onnx.save(fp16, str(dst))
    return keep


def _skip_round_trips(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace ``Cast(float32 -> float16 -> float32)`` by the float32 value itself.

    ``keep_io_types`` casts every float32 graph input to float16 and the converter casts back
    for float32 nodes: ``rows``/``cols`` would reach the coordinate math rounded to float16
    (0.5 LR pixel steps at 1000 px). The float32 nodes read the input directly instead.
    """
    graph = model.graph
    fp32 = {v.name for v in list(graph.input) + list(graph.value_info)
            if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    to16 = {n.output[0]: n.input[0] for n in graph.node if _cast_to(n) == onnx.TensorProto.FLOAT16
            and n.input[0] in fp32}
    for node in graph.node:
        if _cast_to(node) == onnx.TensorProto.FLOAT and node.input[0] in to16:
            source = to16[node.input[0]]
            node.op_type = "Identity"
            del node.attribute[:]
            node.input[0] = source
    return model


def _cast_to(node: onnx.NodeProto) -> int | None:
    if node.op_type != "Cast":
        return None
    return next((a.i for a in node.attribute if a.name == "to"), None)


def _drop_dead(model: onnx.ModelProto) -> onnx.ModelProto:
    """Remove nodes whose outputs nothing reads (the float16 casts bypassed above)."""
    graph = model.graph
    while True:
        used = {t for n in graph.node for t in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            return model
        for n in dead:
            graph.node.remove(n)


def _topological(model: onnx.ModelProto) -> onnx.ModelProto:
    """Order nodes so every input is produced before it is read (the converter appends casts)."""
    graph = model.graph
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for n in pending:
            if all(t in ready for t in n.input):
                ordered.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise RuntimeError(f"fp16 graph has a cycle or a missing input at {rest[0].name}")
        pending = rest
    copies = [onnx.NodeProto() for _ in ordered]
    for c, n in zip(copies, ordered):
        c.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)
    return model


def export_fp16(model, out_dir: str | Path, overwrite: bool = False, opset: int = DEFAULT_OPSET) -> Path:
    """Export ``model`` (an SRModel or a checkpoint path) with float16 image math to ``out_dir``."""
    if isinstance(model, (str, Path)):
        from asisr.models import load

        model = load(model)
    check_destination(out_dir, overwrite)
    with tempfile.TemporaryDirectory(prefix="asisr-fp32-") as tmp:
        return convert_onnx(export_onnx(model, Path(tmp) / "fp32", opset=opset), out_dir, overwrite)


def convert_onnx(fp32_dir: str | Path, out_dir: str | Path, overwrite: bool = False) -> Path:
    """FP16 graphs of an fp32 export directory."""
    out_dir = check_destination(out_dir, overwrite)
    fp32 = read_manifest(fp32_dir)
    fp32.require_fp32("FP16")
    with staging_dir(out_dir, overwrite) as work:
        out = work / "out"
        kept, phase = {}, {}
        for stage in STAGE_NAMES:
            pre = prepare_graph(fp32.graph_path(stage), work / f"{stage}.pre.onnx", DATA_INPUTS[stage])
            phase[stage] = phase_nodes(onnx.load(str(pre)), DATA_INPUTS[stage])
            kept[stage] = convert_graph(pre, out / fp32.graph_path(stage).name, stage)
        data = fp32.derived(out, "fp16")
        data["fp16"] = {
            "tool": "onnxruntime.transformers.float16.convert_float_to_float16",
            "io": "float32 (keep_io_types)",
            "float32_nodes": kept,  # coordinate and phase math
            "phase_nodes": phase,
            "fp32_sha256": {stage: fp32.data["graphs"][stage]["sha256"] for stage in STAGE_NAMES},
        }
        write_manifest(out, data)
    return out_dir
