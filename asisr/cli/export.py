"""``asisr-export``: checkpoint -> ONNX graphs (backbone + upsampler) and manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from asisr.cli.common import make_app, run_app
from asisr.errors import UserError
from asisr.export.publish import check_destination

HELP = (
    "Export a model's backbone and upsampler as two ONNX graphs with the scale as a runtime input.\n\n"
    "The architecture is recognised from the checkpoint. Example, then a run of the export:\n\n"
    "\b\n"
    "  asisr-export --checkpoint edsr-baseline-liif.pth --out liif_onnx/\n"
    "  asisr-run photo.png --scale 3 --out big.png --model liif_onnx/\n\n"
    "On an NVIDIA GPU with TensorRT, add engines built for it (then --backend tensorrt):\n\n"
    "\b\n"
    "  asisr-export --checkpoint edsr-baseline-liif.pth --out liif_trt/ \\\n"
    "      --format tensorrt"
)
app = make_app(HELP)


@app.command(help=HELP)
def export(
    out: Path = typer.Option(..., "--out", "-o", help="Output directory (backbone.onnx, upsampler.onnx, manifest.json)."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c", help="Checkpoint file; default: bundled model."),
    format: str = typer.Option("onnx", "--format", "-f",
                               help="onnx, or tensorrt: the ONNX graphs plus TensorRT engines for this GPU "
                                    "(needs TensorRT and a CUDA GPU; see docs/tensorrt.md)."),
    opset: int = typer.Option(18, "--opset", help="ONNX opset, 17-19."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output directory."),
    onnx_dir: Optional[Path] = typer.Option(None, "--onnx-dir",
                                            help="tensorrt: build engines from this exported ONNX directory "
                                                 "instead of exporting a checkpoint."),
    profile: Optional[str] = typer.Option(None, "--profile",
                                          help="tensorrt: optimization profile ranges MIN:OPT:MAX, e.g. "
                                               "batch=1:1:4,lr=16:512:524,feat=1:134:261,out=1:256:256 "
                                               "(sizes N or HxW; unnamed ranges keep their defaults)."),
    workspace: Optional[int] = typer.Option(None, "--workspace", help="tensorrt: builder workspace limit, MiB."),
    builder_level: Optional[int] = typer.Option(None, "--builder-level",
                                                help="tensorrt: builder optimization level 0-5 "
                                                     "(TensorRT's default: 3)."),
    timing_cache: Optional[Path] = typer.Option(None, "--timing-cache",
                                                help="tensorrt: timing cache file, loaded if present and saved "
                                                     "after the build (default: in the asisr cache)."),
    tf32: bool = typer.Option(False, "--tf32", help="tensorrt: let fp32 layers use TF32 math (faster, ~1e-3 error)."),
    fp16: bool = typer.Option(False, "--fp16", help="Float16 image math (coordinate math and graph I/O stay float32)."),
    int8: bool = typer.Option(False, "--int8", help="INT8 QDQ graphs, calibrated on the photos in --calib."),
    int8_target: str = typer.Option("onnxruntime", "--int8-target",
                                    help="int8: onnxruntime (uint8 activations, 7-bit weights: exact on "
                                         "every x86 CPU), onnxruntime-vnni (8-bit weights: only for CPUs "
                                         "with VNNI or ARM) or tensorrt (symmetric int8)."),
    calib: Optional[Path] = typer.Option(None, "--calib", help="int8: folder of photos to calibrate on."),
    calib_cache: Optional[Path] = typer.Option(None, "--calib-cache",
                                               help="int8: JSON cache of calibration results, reused when it "
                                                    "matches (then --calib is not read)."),
    calib_samples: int = typer.Option(24, "--calib-samples", help="int8: number of LR crops to calibrate on."),
    calib_method: str = typer.Option("minmax", "--calib-method", help="int8: minmax, entropy or percentile."),
    option: list[str] = typer.Option([], "--option",
                                     help="Test-time behaviour KEY=VALUE, repeatable; recorded in the manifest. "
                                          "cell_clip=4|off (LTE, Meta-SR: the official test's cell clip), "
                                          "window_pad=on|off (SwinIR encoders: the official test's padding), "
                                          "grid_align_corners=on|off (ArbRCAN: on samples as the weights were "
                                          "trained; off as the official code runs on PyTorch >= 1.3)."),
) -> None:
    """Export CHECKPOINT to OUT."""
    format = format.strip().lower()
    from asisr.models.registry import parse_options

    options = parse_options(option)
    if format not in ("onnx", "tensorrt"):
        raise UserError(f"unknown --format {format!r} (available: onnx, tensorrt)")
    if fp16 or int8:
        if format != "onnx":
            raise UserError("--fp16/--int8 export ONNX graphs: use --format onnx (then --format tensorrt --onnx-dir)")
        _export_precision(out, checkpoint, opset, overwrite, fp16, int8, int8_target, calib, calib_cache,
                          calib_samples, calib_method, options)
        return
    if format == "tensorrt":
        _export_tensorrt(out, checkpoint, onnx_dir, opset, overwrite, profile, workspace, builder_level, timing_cache,
                         tf32, options)
        return
    _reject_unused("--format tensorrt", {"--onnx-dir": onnx_dir, "--profile": profile, "--workspace": workspace,
                                         "--builder-level": builder_level, "--timing-cache": timing_cache,
                                         "--tf32": tf32 or None})
    check_destination(out, overwrite)
    from asisr.sources import bundled_default, require_torch

    require_torch("asisr-export")
    from asisr.export.onnx import export_onnx
    from asisr.models import load

    model = load(checkpoint if checkpoint is not None else bundled_default(), options)
    export_onnx(model, out, opset=opset, overwrite=overwrite)
    typer.echo(f"exported {model.name} to {out}")


def _reject_unused(where: str, options: dict) -> None:
    """One line naming the given options (value not None) that only ``where`` uses."""
    given = [name for name, value in options.items() if value is not None]
    if given:
        raise UserError(f"{', '.join(given)} only appl{'ies' if len(given) == 1 else 'y'} to {where}")


def _export_precision(out: Path, checkpoint: Optional[Path], opset: int, overwrite: bool, fp16: bool, int8: bool,
                      target: str, calib: Optional[Path], cache: Optional[Path], samples: int, method: str,
                      model_options: dict | None = None) -> None:
    """--fp16 / --int8: everything the user can get wrong is checked before any work."""
    import sys
    from dataclasses import replace

    from asisr.sources import bundled_default, require_torch

    if fp16 and int8:
        raise UserError("--fp16 and --int8 exclude each other: choose one precision")
    check_destination(out, overwrite)
    require_torch("asisr-export")
    ckpt = checkpoint if checkpoint is not None else bundled_default()
    if model_options:
        from asisr.models import load

        source = load(ckpt, model_options)
    else:
        source = ckpt
    if fp16:
        _reject_unused("--int8", {"--calib": calib, "--calib-cache": cache})
        from asisr.export.fp16 import export_fp16

        export_fp16(source, out, overwrite=overwrite, opset=opset)
        typer.echo(f"exported {ckpt} as fp16 to {out}")
        return
    from asisr.export.quantize import Int8Config, export_int8

    config = Int8Config(target=target.strip().lower(), method=method.strip().lower())
    config = replace(config, settings=replace(config.settings, n_samples=samples))
    config.check()
    if calib is None and cache is None:
        raise UserError("--int8 needs --calib DIR (a folder of photos to calibrate on)")
    if calib is not None and not calib.is_dir() and (cache is None or not cache.is_file()):
        raise UserError(f"--calib folder not found: {calib}")
    if cache is not None and cache.exists() and not cache.is_file():
        raise UserError(f"--calib-cache is not a file: {cache}")
    export_int8(source, out, calib, config, cache=cache, overwrite=overwrite, opset=opset,
                progress=lambda m: print(m, file=sys.stderr))
    from asisr.runtime.manifest import read_manifest

    q = read_manifest(out).data["quantization"]
    score = q["joint_score"]
    typer.echo(f"exported {ckpt} as int8 ({config.target}, {config.method}) to {out}: "
               f"{sum(map(len, q['float_nodes']['measured'].values()))} nodes kept float by measurement, "
               f"output {score['noise_db']:.1f} dB from fp32 on the calibration crops "
               f"(report: {out / q['sensitivity_report']})")


def _export_tensorrt(out: Path, checkpoint: Optional[Path], onnx_dir: Optional[Path], opset: int, overwrite: bool,
                     profile: Optional[str], workspace: Optional[int], builder_level: Optional[int],
                     timing_cache: Optional[Path], tf32: bool = False, model_options: dict | None = None) -> None:
    """ONNX graphs (exported, or copied from --onnx-dir) plus TensorRT engines built on this GPU."""
    from asisr.export.tensorrt import export_tensorrt
    from asisr.runtime.backends.trt.builder import BuildOptions

    if checkpoint is not None and onnx_dir is not None:
        raise UserError("give either --checkpoint or --onnx-dir, not both")
    if model_options and onnx_dir is not None:
        raise UserError("--option applies when exporting a checkpoint; --onnx-dir graphs keep the options they were "
                        "exported with")
    options = BuildOptions(workspace, builder_level, timing_cache, tf32)
    if onnx_dir is not None:
        export_tensorrt(out, onnx_dir=onnx_dir, profile_text=profile, options=options, overwrite=overwrite)
        typer.echo(f"built TensorRT engines for {onnx_dir} in {out}")
        return
    from asisr.sources import bundled_default, require_torch

    require_torch("asisr-export of a checkpoint (or give --onnx-dir)")
    from asisr.export.onnx import export_onnx
    from asisr.models import load

    model = load(checkpoint if checkpoint is not None else bundled_default(), model_options)
    export_tensorrt(out, export_graphs=lambda d: export_onnx(model, d, opset=opset), descriptor=model.descriptor,
                    profile_text=profile, options=options, overwrite=overwrite)
    typer.echo(f"exported {model.name} with TensorRT engines to {out}")


def main(argv: list[str] | None = None) -> int:
    return run_app(app, "asisr-export", argv)


if __name__ == "__main__":
    main()
