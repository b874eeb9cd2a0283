"""``asisr-run``: upscale an image or a folder of images."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from asisr.cli.common import make_app, run_app
from asisr.errors import UserError
from asisr.imageio import check_writable, list_images, read_image, write_image
from asisr.scale import check_scale_range, parse_scale, parse_size

HELP = (
    "Upscale an image (or every image in a folder) by any factor.\n\n"
    "Examples:\n\n"
    "  asisr-run photo.png --scale 3 --out photo_x3.png\n\n"
    "  asisr-run photo.png --scale 2x3.5 --out wide.png   (height x width)\n\n"
    "  asisr-run frame.png --size 3840x2160 --out frame_4k.png\n\n"
    "  asisr-run photos/ --scale 2.5 --out photos_x2.5/ --model liif_onnx/\n\n"
    "  asisr-run photo.png --scale 4 --out x4.png --model liif.pth --backend torch\n\n"
    "A folder run skips images whose output already exists, so an interrupted run can be restarted."
)
app = make_app(HELP)


@app.command(help=HELP)
def run(
    input: Path = typer.Argument(..., help="Image file, or a folder of images."),
    out: Path = typer.Option(..., "--out", "-o", help="Output image file (or folder when INPUT is a folder)."),
    scale: Optional[str] = typer.Option(None, "--scale", "-s", help="Factor: 3.5, or HxW per axis like 2x3.5."),
    size: Optional[str] = typer.Option(None, "--size", help="Output size WIDTHxHEIGHT instead of --scale."),
    model: Optional[Path] = typer.Option(None, "--model", "-m",
                                         help="Checkpoint (.pth/.pt) or exported ONNX directory; default: bundled model."),
    backend: str = typer.Option("onnxruntime", "--backend", "-b",
                                help="onnxruntime (default; no PyTorch needed for exported models), torch or tensorrt."),
    provider: Optional[list[str]] = typer.Option(None, "--provider",
                                                 help="ONNX Runtime execution provider: cpu, cuda, tensorrt (repeatable)."),
    tile: Optional[int] = typer.Option(None, "--tile", help="Output tile edge in pixels (bounds memory)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for the backend."),
    max_memory: Optional[str] = typer.Option(
        None, "--max-memory", help="Memory budget for tiling, e.g. 512M or 2G (default 1G); peak memory is "
                                   "about this plus the output image."),
    max_scale: Optional[float] = typer.Option(None, "--max-scale", help="Refuse scales above this (default: the model's)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs."),
) -> None:
    """Upscale INPUT and write OUT."""
    if (scale is None) == (size is None):
        raise UserError("give exactly one of --scale or --size")
    factor = parse_scale(scale) if scale is not None else None
    target = parse_size(size) if size is not None else None
    from asisr.runtime.tiling import parse_memory

    budget = parse_memory(max_memory) if max_memory is not None else None
    if tile is not None and tile < 1:
        raise UserError("--tile must be a positive number of pixels")
    if threads is not None and threads < 1:
        raise UserError("--threads must be positive")
    if not input.exists():
        raise UserError(f"input not found: {input}")
    if input.is_dir():
        jobs = _folder_jobs(input, out, overwrite)
    else:
        if out.exists() and out.is_dir():
            out = out / input.name
        jobs = [(input, check_writable(out, overwrite))]
        image = read_image(input)  # decoded once, before loading a model, so a bad input fails first
    from asisr.sources import open_upscaler

    upscaler = open_upscaler(model, backend=backend, threads=threads, tile=tile, max_scale=max_scale,
                             providers=provider, max_memory=budget)
    if factor is not None:
        check_scale_range(factor, upscaler.max_scale)
    with upscaler:
        if input.is_dir():
            _run_folder(upscaler, jobs, factor, target)
        else:
            dst = jobs[0][1]
            write_image(dst, upscaler.upscale(image, scale=factor, size=target))
            typer.echo(f"wrote {dst}")


def _folder_jobs(folder: Path, out: Path, overwrite: bool) -> list[tuple[Path, Path]]:
    if out.exists() and not out.is_dir():
        raise UserError(f"INPUT is a folder, so --out must be a folder, but {out} is a file")
    images = list_images(folder)
    if not images:
        raise UserError(f"no images found in {folder}")
    return [(src, out / src.name) for src in images if overwrite or not (out / src.name).exists()]


def _run_folder(upscaler, jobs, factor, target) -> None:
    from tqdm import tqdm

    failed = []
    for src, dst in tqdm(jobs, desc="upscaling", unit="img"):
        try:
            write_image(dst, upscaler.upscale(read_image(src), scale=factor, size=target))
        except UserError as e:
            failed.append(f"{src.name}: {e}")
            tqdm.write(f"skipped {src.name}: {e}")
    if failed:
        raise UserError(f"{len(failed)} of {len(jobs)} images failed (first: {failed[0]})")
    typer.echo(f"wrote {len(jobs)} images" + ("" if jobs else " (all outputs already existed)"))


def main(argv: list[str] | None = None) -> int:
    return run_app(app, "asisr-run", argv)


if __name__ == "__main__":
    main()
