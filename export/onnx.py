"""ONNX export of a model's two stages, with the scale and the query as runtime inputs.

Both graphs are traced by the dynamo exporter (``torch.export``), which keeps every size
symbolic; the legacy TorchScript tracer silently bakes Python-side shapes into constants.
Example inputs use batch 2 and sizes > 1 so no axis is specialised to 0/1.

The exporter's own graph optimizer is off: it folds ``x + 1e-9`` to ``x`` (small constants
compared to zero with a tolerance), which turned LIIF's ensemble weights into 0/0 = NaN at
queries that hit an LR centre exactly. ONNX Runtime and TensorRT optimise the graph anyway.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import onnx
import torch

import asisr
from asisr.errors import UserError
from asisr.export import DEFAULT_OPSET, SUPPORTED_OPSETS
from asisr.runtime.manifest import FORMAT_VERSION, write_manifest
from asisr.export.publish import staging_dir
from asisr.models.base import SRModel
from asisr.digest import sha256_file
from asisr.runtime import contract
from asisr.runtime.contract import BACKBONE, STAGES, UPSAMPLER, StageSpec, TensorSpec
from asisr.runtime.query import make_query


def _dims(stage: StageSpec) -> tuple:
    """Dynamic-shape spec in argument order (argument names may differ from graph input names)."""
    dims: dict[str, torch.export.Dim] = {}
    out = []
    for tensor in stage.inputs:
        axes = {}
        for i, d in tensor.dynamic_axes().items():
            if d not in dims:
                dims[d] = torch.export.Dim(d, min=1 if d == contract.BATCH else 2, max=1 << 16)
            axes[i] = dims[d]
        out.append(axes)
    return tuple(out)


def _export_graph(module: torch.nn.Module, args: tuple, path: Path, stage: StageSpec, opset: int) -> None:
    quiet = io.StringIO()
    onnx_logger = logging.getLogger("torch.onnx")
    level = onnx_logger.level
    onnx_logger.setLevel(logging.ERROR)  # for this export only: the caller's logging is theirs
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(quiet):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module, args, dynamo=True, opset_version=opset, input_names=list(stage.input_names),
                output_names=list(stage.output_names), dynamic_shapes=_dims(stage), verbose=False,
                optimize=False,  # see the module docstring
            )
    finally:
        onnx_logger.setLevel(level)
    program.save(str(path))
    model = onnx.load(str(path))
    _rename_dims(model, stage.axes())
    _strip_trace_metadata(model)
    onnx.checker.check_model(model, full_check=True)
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.save(model, str(path))


def _strip_trace_metadata(model: onnx.ModelProto) -> None:
    """Drop the exporter's per-node trace notes: they embed Python object addresses
    (``<function sym_float at 0x7f...>``), which made two exports of one model differ in sha256
    and so defeated every cache keyed on the graph (calibration ranges, TensorRT engines)."""
    for graph_nodes in [model.graph.node, *(f.node for f in model.functions)]:
        for node in graph_nodes:
            del node.metadata_props[:]


def _rename_dims(model: onnx.ModelProto, spec: dict) -> None:
    """Give dynamic axes the manifest's names (the exporter names them s0, s1, ...)."""
    for value in list(model.graph.input) + list(model.graph.output):
        if value.name not in spec:
            continue
        for dim, want in zip(value.type.tensor_type.shape.dim, spec[value.name]):
            if isinstance(want, str) and want not in contract.STATIC_AXES:
                dim.ClearField("dim_value")
                dim.dim_param = want


def _io_spec(tensors: tuple[TensorSpec, ...]) -> list[dict]:
    return [{"name": t.name, "dtype": t.dtype, "shape": list(t.axes)} for t in tensors]


def export_onnx(model: SRModel, out_dir: str | Path, opset: int = DEFAULT_OPSET, overwrite: bool = False,
                checkpoint_sha256: str | None = None) -> Path:
    """Export ``model`` to ``out_dir/{backbone,upsampler}.onnx`` + ``manifest.json``; returns ``out_dir``.

    The directory appears complete or not at all: everything is written to a sibling
    temporary directory and renamed into place.
    """
    if opset not in SUPPORTED_OPSETS:
        raise UserError(f"opset {opset} is not supported; use one of {SUPPORTED_OPSETS}")
    out_dir = Path(out_dir)
    model = model.eval()
    with staging_dir(out_dir, overwrite) as work:
        tmp = work / "out"
        lr = torch.rand(2, 3, 19, 23)
        scale_np, rows_np, cols_np = make_query(19, 23, 41, 67, batch=2)
        scale, rows, cols = (torch.from_numpy(a) for a in (scale_np, rows_np, cols_np))
        with torch.no_grad():
            feat = model.backbone(lr, scale)
        _export_graph(model.backbone, (lr, scale), tmp / BACKBONE.filename, BACKBONE, opset)
        _export_graph(model.upsampler, (feat, scale, rows, cols), tmp / UPSAMPLER.filename, UPSAMPLER, opset)
        descriptor = model.descriptor
        write_manifest(tmp, {
            "format_version": FORMAT_VERSION,
            "asisr_version": asisr.__version__,
            "torch_version": torch.__version__,
            "model": {
                "name": model.name,
                "config": model.config,
                "descriptor": descriptor.to_dict(),
                "checkpoint_sha256": checkpoint_sha256 or getattr(model, "checkpoint_sha256", None),
            },
            "precision": "fp32",
            "opset": opset,
            "scale_range": [descriptor.scale_min, descriptor.scale_max],
            "normalization": descriptor.normalization,
            "query": "rows/cols: LR-pixel coordinates of output pixel centres, (i + 0.5) * lr_size / out_size",
            "graphs": {
                stage.name: {
                    "file": stage.filename,
                    "sha256": sha256_file(tmp / stage.filename),
                    "inputs": _io_spec(stage.inputs),
                    "outputs": _io_spec(stage.outputs),
                }
                for stage in STAGES
            },
        })
    return out_dir
