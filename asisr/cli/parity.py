"""``asisr-parity``: check an exported model against its PyTorch checkpoint."""

from __future__ import annotations

import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Optional

import typer

from asisr.cli.common import make_app, run_app
from asisr.errors import UserError
from asisr.evaluation.parity import DEFAULT_SCALES, DEFAULT_SHAPES

EXIT_PARITY_FAILED = 1

HELP = (
    "Run an exported model through a backend and the PyTorch checkpoint on the same inputs, at LR\n"
    "shapes and scales other than the export shape (incl. asymmetric and a mixed-scale batch), and\n"
    "report max / mean / p99 absolute error and PSNR per case. Exits 1 past the tolerance.\n\n"
    "Examples (the second exports to a temporary folder first; the last saves PyTorch's outputs\n"
    "for polygraphy run --load-outputs, docs/tensorrt.md):\n\n"
    "\b\n"
    "  asisr-parity liif_onnx/ --checkpoint edsr-baseline-liif.pth\n"
    "  asisr-parity --checkpoint edsr-baseline-liif.pth --images Set5/\n"
    "  asisr-parity liif_trt/ -c edsr-baseline-liif.pth --backend tensorrt \\\n"
    "      --per-stage\n"
    "  asisr-parity liif_onnx/ -c edsr-baseline-liif.pth \\\n"
    "      --save-polygraphy-reference ref/"
)
app = make_app(HELP)


@app.command(help=HELP)
def parity(
    model_dir: Optional[Path] = typer.Argument(None, help="Exported model directory; omitted: export CHECKPOINT now."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c", help="The PyTorch reference checkpoint."),
    backend: str = typer.Option("onnxruntime", "--backend", "-b",
                                help="Backend under test: onnxruntime, openvino or tensorrt."),
    precision: Optional[str] = typer.Option(None, "--precision",
                                            help="What the backend computes in: the model directory's own precision "
                                                 "(default), or bf16 / fp16 on openvino for an fp32 export."),
    per_stage: bool = typer.Option(False, "--per-stage", help="Check each graph alone: the upsampler gets the "
                                                              "reference backbone's features."),
    polygraphy_ref: Optional[Path] = typer.Option(None, "--save-polygraphy-reference",
                                                  help="Also write PyTorch's outputs on the Polygraphy data loader's "
                                                       "feeds here (torch_backbone.json, torch_upsampler.json)."),
    provider: Optional[list[str]] = typer.Option(None, "--provider", help="ONNX Runtime provider: cpu, cuda, tensorrt."),
    images: Optional[Path] = typer.Option(None, "--images", help="Folder of real images to crop test inputs from."),
    shapes: str = typer.Option(",".join(f"{h}x{w}" for h, w in DEFAULT_SHAPES), "--shapes", help="LR shapes HxW, comma-separated."),
    scales: str = typer.Option(",".join(DEFAULT_SCALES), "--scales", help="Scales, comma-separated (HxW for asymmetric)."),
    tolerance: Optional[float] = typer.Option(
        None, "--tolerance", help="Max abs error allowed on [0,1] outputs; default by the model's precision: "
                                  "fp32 1e-4, bf16 5e-2, fp16 2e-2, int8 1e-1."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the report as JSON here."),
) -> None:
    from asisr.digest import sha256_file
    from asisr.evaluation.parity import build_cases, check_parity
    from asisr.runtime.manifest import read_manifest
    from asisr.sources import bundled_default, open_pipeline, require_torch

    if backend not in ("onnxruntime", "openvino", "tensorrt"):
        raise UserError(f"backend {backend!r} cannot be parity-checked (choose onnxruntime, openvino or tensorrt; "
                        "torch is the reference)")
    from asisr.runtime.precision import PRECISIONS, check_precision

    if precision is not None:
        check_precision(precision, tuple(p for p in PRECISIONS if p != "auto"))  # parity checks one precision
    require_torch("asisr-parity (PyTorch is the reference)")
    from asisr.models import load
    from asisr.runtime.backends.pyt import torch_pipeline

    try:
        shape_list = [tuple(int(v) for v in s.lower().split("x")) for s in shapes.split(",")]
        assert all(len(s) == 2 and min(s) >= 2 for s in shape_list)
    except (ValueError, AssertionError):
        raise UserError(f"invalid --shapes {shapes!r}: expected HxW pairs like 17x23,32x24") from None
    scale_list = [s.strip() for s in scales.split(",") if s.strip()]
    if images is not None and not images.is_dir():
        raise UserError(f"--images is not a folder: {images}")
    if json_out is not None and json_out.exists():
        raise UserError(f"output exists: {json_out}")
    if polygraphy_ref is not None and polygraphy_ref.exists():
        raise UserError(f"output exists: {polygraphy_ref}")
    ckpt = checkpoint if checkpoint is not None else bundled_default("torch")
    model = load(ckpt, _recorded_options(model_dir))
    with tempfile.TemporaryDirectory(prefix="asisr-parity-") as tmp:
        if model_dir is None:
            from asisr.export.onnx import export_onnx

            model_dir = export_onnx(model, Path(tmp) / "onnx")
        manifest = read_manifest(model_dir)
        recorded = manifest.data["model"].get("checkpoint_sha256")
        if recorded and recorded != sha256_file(ckpt):
            raise UserError(f"{model_dir} was exported from a different checkpoint than {ckpt} (sha256 differs)")
        precision = precision or manifest.precision
        if precision == "int8" and images is None:
            raise UserError("an int8 model is checked on real images: give --images DIR (random inputs fall "
                            "outside its calibrated ranges)")
        cases = build_cases(shape_list, scale_list, images, random_inputs=precision != "int8",
                            descriptor=manifest.model_descriptor())
        candidate = open_pipeline(model_dir, backend, threads, provider, precision=precision)
        report = check_parity(candidate, torch_pipeline(model.reference()), cases, tolerance, precision,
                              per_stage=per_stage)
        if polygraphy_ref is not None:
            from asisr.evaluation.polygraphy_data import save_reference

            for stage, path in save_reference(torch_pipeline(model.reference()), model_dir, polygraphy_ref).items():
                typer.echo(f"saved PyTorch {stage} outputs to {path}")
    typer.echo(f"parity: {manifest.model} {precision} ({model_dir}) on {backend} vs fp32 PyTorch reference ({ckpt})")
    typer.echo(report.table())
    if json_out is not None:
        json_out.write_text(json.dumps({"model": manifest.model, "precision": precision,
                                        "tolerance": report.tolerance, "passed": report.passed,
                                        "min_psnr_db": report.min_psnr if math.isfinite(report.min_psnr)
                                        else str(report.min_psnr),
                                        "cases": [r.to_dict() for r in report.results]}, indent=2))
    if not report.passed:
        print("error: parity check failed", file=sys.stderr)
        raise typer.Exit(EXIT_PARITY_FAILED)


def _recorded_options(model_dir: Optional[Path]) -> dict:
    """The test-time options an export was made with (its manifest's model config), for the reference."""
    if model_dir is None:
        return {}
    from asisr.models.registry import TEST_TIME_OPTIONS
    from asisr.runtime.manifest import read_manifest

    config = read_manifest(model_dir).data["model"].get("config") or {}
    return {k: config[k] for k in TEST_TIME_OPTIONS if k in config}


def main(argv: list[str] | None = None) -> int:
    return run_app(app, "asisr-parity", argv)


if __name__ == "__main__":
    main()
