"""``asisr-export``: checkpoint -> ONNX graphs (backbone + upsampler) and manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from asisr.cli.common import make_app, run_app
from asisr.errors import UserError

HELP = (
    "Export a model's backbone and upsampler as two ONNX graphs with the scale as a runtime input.\n\n"
    "The architecture is recognised from the checkpoint. Example:\n\n"
    "  asisr-export --checkpoint edsr-baseline-liif.pth --out liif_onnx/\n\n"
    "Then: asisr-run photo.png --scale 3 --out big.png --model liif_onnx/ --backend onnxruntime"
)
app = make_app(HELP)


@app.command(help=HELP)
def export(
    out: Path = typer.Option(..., "--out", "-o", help="Output directory (backbone.onnx, upsampler.onnx, manifest.json)."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c", help="Checkpoint file; default: bundled model."),
    format: str = typer.Option("onnx", "--format", "-f", help="onnx (tensorrt: not yet available)."),
    opset: int = typer.Option(18, "--opset", help="ONNX opset, 17-19."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output directory."),
) -> None:
    """Export CHECKPOINT to OUT."""
    if format != "onnx":
        raise UserError(f"format {format!r} is not supported yet (available: onnx)")
    if out.exists() and not overwrite:
        raise UserError(f"output exists: {out} (use --overwrite to replace it)")
    from asisr.export.onnx import export_onnx
    from asisr.models import load
    from asisr.runtime.sources import bundled_default

    model = load(checkpoint if checkpoint is not None else bundled_default())
    export_onnx(model, out, opset=opset, overwrite=overwrite)
    typer.echo(f"exported {model.name} to {out}")


def main(argv: list[str] | None = None) -> int:
    return run_app(app, "asisr-export", argv)


if __name__ == "__main__":
    main()
