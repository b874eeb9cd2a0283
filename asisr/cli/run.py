"""``asisr-run``: upscale an image or a folder of images."""

from __future__ import annotations

import os
import signal
import sys


def _interrupted_while_starting(signum, frame) -> None:
    os.write(2, b"interrupted: nothing was written\n")
    os._exit(130)


# Ctrl-C while the imports below load (a few tenths of a second) would end in an import traceback:
# as the asisr-run command (not when imported), it is one line instead until ``main`` takes over.
_AS_COMMAND = __name__ == "__main__" or os.path.basename(sys.argv[0]) == "asisr-run"
if _AS_COMMAND and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, _interrupted_while_starting)

import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Optional  # noqa: E402

import typer  # noqa: E402

from asisr.cli.common import Interrupted, make_app, run_app  # noqa: E402
from asisr.errors import UserError  # noqa: E402
from asisr.imageio import (  # noqa: E402
    check_free_space,
    check_output_folder,
    check_writable,
    done_elsewhere,
    folder_jobs,
    image_header,
    output_bytes,
    read_image,
    write_image,
)
from asisr.locks import FileLock, claim_for  # noqa: E402
from asisr.scale import (  # noqa: E402
    FITS,
    Scale,
    aspect_changes,
    check_scale_range,
    parse_scale,
    parse_size,
    planned_size,
)

HELP = (
    "Upscale an image (or every image in a folder, or a video) by any factor, or to any size.\n\n"
    "Two numbers are always WIDTHxHEIGHT, as image and video tools write resolutions:\n"
    "--size 1920x1080 is 1920 wide, --scale 3.5x2 is 3.5 across and 2 down.\n\n"
    "Examples:\n\n"
    "\b\n"
    "  asisr-run --sample --scale 3 --out sample_x3.png\n"
    "  asisr-run photo.png --scale 3 --out photo_x3.png\n"
    "  asisr-run photo.png --scale 3.5x2 --out wide.png\n"
    "  asisr-run frame.png --size 3840x2160 --out frame_4k.png\n"
    "  asisr-run frame.png --size 2560x1440 --fit contain --out boxed.png\n"
    "  asisr-run photos/ --scale 2.5 --out photos_x2.5/ --model liif_onnx/\n"
    "  asisr-run clip.mp4 --size 2560x1440 --out clip_1440.mp4\n"
    "  asisr-run clip.mkv --scale 2 --out clip_x2.mkv --lossless\n"
    "  asisr-run clip.mp4 --scale 2 --out frames/%06d.png\n"
    "  asisr-run photo.png --scale 4 --out x4.png \\\n"
    "      --model liif.pth --backend torch\n\n"
    "Everything that can be checked without the model (the input decodes, the output folder is writable and has "
    "the space, no output would be overwritten without --overwrite) is checked before it is loaded. A folder run "
    "skips images whose output already exists, so an interrupted run (Ctrl-C) is resumed by running the same "
    "command again; several runs may share one output folder, each image is computed once."
)
app = make_app(HELP)
ENGINES = ("local", "ray")


@app.command(help=HELP)
def run(
    input: Optional[Path] = typer.Argument(None, help="Image file, or a folder of images (or --sample)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output image file (or folder when INPUT is a folder)."),
    scale: Optional[str] = typer.Option(None, "--scale", "-s",
                                        help="Factor: 3.5, or per axis WIDTHxHEIGHT like 3.5x2."),
    size: Optional[str] = typer.Option(None, "--size", help="Output size WIDTHxHEIGHT in pixels instead of --scale."),
    fit: str = typer.Option("stretch", "--fit",
                            help="With --size of another aspect ratio: stretch (per-axis scales; the default), "
                                 "contain (the whole image, centred, padded with black / transparent) or cover "
                                 "(the box filled, centred, the overflow cropped)."),
    codec: Optional[str] = typer.Option(None, "--codec",
                                        help="Video: h264 (the default), h265, av1, ffv1, or any FFmpeg encoder name."),
    crf: Optional[int] = typer.Option(None, "--crf", help="Video: constant quality, lower is better (default: 18 for "
                                                         "h264, 20 for h265, 30 for av1)."),
    pix_fmt: Optional[str] = typer.Option(None, "--pix-fmt",
                                          help="Video: pixel format, e.g. yuv420p or yuv420p10le (default: yuv420p, "
                                               "10-bit for a 10-bit input where the codec has it)."),
    lossless: bool = typer.Option(False, "--lossless", help="Video: store the upscaled RGB exactly (H.264 RGB at qp 0, "
                                                            "FFV1 16-bit for inputs deeper than 8 bits)."),
    skip_bad_frames: bool = typer.Option(False, "--skip-bad-frames",
                                         help="Video: a damaged input frame repeats the last good one (counted in "
                                              "the last line) instead of stopping the run."),
    sample: bool = typer.Option(False, "--sample", help="Upscale the sample photo shipped with asisr (INPUT omitted)."),
    model: Optional[Path] = typer.Option(None, "--model", "-m",
                                         help="Checkpoint (.pth/.pt), exported ONNX directory, or the name of a bundled "
                                              "model (liif, eqsr_light, ...); default: the bundled default model."),
    backend: str = typer.Option("auto", "--backend", "-b",
                                help="auto (default: openvino where installed, else onnxruntime), openvino, onnxruntime, "
                                     "torch or tensorrt. Exported models need no PyTorch."),
    precision: str = typer.Option("auto", "--precision", "-p",
                                  help="auto (default: the fastest precision this CPU computes natively whose measured "
                                       "PSNR drop for the model is within 0.02 dB, else fp32), fp32, bf16, fp16 or int8 "
                                       "(an INT8 export). --backend onnxruntime --precision fp32 is the exact path."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Say which backend and precision run, and why."),
    provider: Optional[list[str]] = typer.Option(None, "--provider",
                                                 help="ONNX Runtime execution provider: cpu, cuda, tensorrt (repeatable)."),
    tile: Optional[int] = typer.Option(None, "--tile", help="Output tile edge in pixels (bounds memory)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for the backend."),
    max_memory: Optional[str] = typer.Option(
        None, "--max-memory", help="Memory budget for tiling, e.g. 512M or 2G (default 1G); peak memory is "
                                   "about this plus the output image."),
    max_scale: Optional[float] = typer.Option(None, "--max-scale", help="Refuse scales above this (default: the model's)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs."),
    engine: str = typer.Option("local", "--engine",
                               help="local (this process; the default) or ray (on a Ray cluster: a folder with Ray "
                                    "Data and an actor pool of upscalers, a video cut at keyframes into segments "
                                    "upscaled in parallel and joined without re-encoding; needs asisr[ray])."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address",
                                              help="With --engine ray: join this cluster (host:port or ray://...); "
                                                   "default: start a local one on this machine."),
    workers: int = typer.Option(2, "--workers", help="With --engine ray: actors, each with one model session "
                                                     "of --threads threads (default 1 with Ray)."),
) -> None:
    """Upscale INPUT and write OUT."""
    started = time.time_ns()  # outputs written after this, by another process, count as done
    if sample == (input is not None):
        raise UserError("give an INPUT image or folder, or --sample (not both)" if sample else
                        "missing INPUT: give an image file or a folder (or --sample to try the shipped photo)")
    if sample:
        from asisr.samples import SAMPLE

        input = SAMPLE
    assert input is not None
    if (scale is None) == (size is None):
        raise UserError("give exactly one of --scale or --size")
    factor = parse_scale(scale) if scale is not None else None
    target = parse_size(size) if size is not None else None
    if fit not in FITS:
        raise UserError(f"invalid --fit {fit!r}: choose one of {', '.join(FITS)}")
    if fit != "stretch" and target is None:
        raise UserError("--fit applies to --size (a --scale keeps the aspect ratio, or sets it per axis)")
    render = _Render(factor, target, fit)
    from asisr.runtime.tiling import parse_memory
    from asisr.sources import BACKENDS, open_upscaler, size_rule_of

    budget = parse_memory(max_memory) if max_memory is not None else None
    if tile is not None and tile < 1:
        raise UserError("--tile must be a positive number of pixels")
    if threads is not None and threads < 1:
        raise UserError("--threads must be positive")
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if engine not in ENGINES:
        raise UserError(f"unknown engine {engine!r}; choose one of: {', '.join(ENGINES)}")
    from asisr.video import is_video_job

    video_options = _VideoOptions(codec, crf, pix_fmt, lossless, skip_bad_frames)
    from asisr.runtime.precision import check_precision

    check_precision(precision)
    upscaler_args = dict(backend=backend, threads=threads, tile=tile, max_scale=max_scale, providers=provider,
                         max_memory=budget, precision=precision)
    if engine == "ray":
        from asisr.distributed.batch import FolderRunInterrupted, upscale_folder_on_ray
        from asisr.distributed.cluster import require_ray

        require_ray("--engine ray")
        if input.exists() and not input.is_dir():
            if not is_video_job(input, out):
                raise UserError(f"--engine ray runs a folder of images or a video; {input} is an image file "
                                "(run it without --engine ray)")
            _run_video(input, out, render, overwrite, video_options, upscaler_args, model,
                       _RayOptions(workers, threads or 1, ray_address), verbose)
            return
        _refuse_video_options(video_options)
        try:
            result = upscale_folder_on_ray(input, out, factor, target, fit, model, backend, workers, threads or 1,
                                           ray_address, provider, budget, tile, max_scale, overwrite,
                                           precision=precision)
        except FolderRunInterrupted as e:
            raise Interrupted(str(e)) from None
        except KeyboardInterrupt:
            raise Interrupted("interrupted: nothing was written") from None
        typer.echo(result.summary())
        return
    if not sample and is_video_job(input, out):
        _run_video(input, out, render, overwrite, video_options, upscaler_args, model, verbose=verbose)
        return
    _refuse_video_options(video_options)
    try:
        single, out, image, jobs, existed = _prepare(input, out, overwrite, factor, target,
                                                     size_rule_of(model, backend))
    except KeyboardInterrupt:
        raise Interrupted("interrupted: nothing was written") from None
    tally = _Tally(len(jobs), existed)
    claim, made = None, []
    try:
        if single:
            dst = jobs[0][1]
            made = _make_folder(dst.parent)
            claim = _claim(dst, wait=True, announce=True)
            if done_elsewhere(dst, overwrite, started):
                typer.echo(f"{dst} was written meanwhile by another asisr process")
                return
        if backend == "torch" and model is not None and model.is_file():  # importing torch and loading take seconds
            typer.echo(f"loading {model} on PyTorch ...", err=True)
        upscaler = open_upscaler(model, **upscaler_args)
        if verbose:
            _say_choice(upscaler)
        if factor is not None:
            check_scale_range(factor, upscaler.max_scale)
        with upscaler:
            if not single:
                made = _make_folder(out)
                _run_folder(upscaler, jobs, render, overwrite, started, tally)
            else:
                write_image(jobs[0][1], render(upscaler, image, jobs[0][0]))
                tally.written += 1
    except KeyboardInterrupt:
        raise Interrupted(tally.interrupted(not single, out)) from None
    finally:
        if claim is not None:
            claim.release()
        if not tally.written:
            _remove_empty(made)  # a run that wrote nothing leaves no folder it created behind
    if single:
        typer.echo(f"wrote {jobs[0][1]}")
    else:
        tally.report()


def _prepare(input: Path, out: Path, overwrite: bool, factor: Scale | None, target: tuple[int, int] | None,
             rule: str = "round"):
    """Every check that needs no model, so that a mistake costs no model load and no upscaling.

    Returns (single, out, image, jobs, existed): whether INPUT is one file, the output path
    (a file, or the folder), the decoded image of a single-file run, the (source, output) pairs
    to do and how many outputs of a folder run existed already.
    """
    if not input.exists():
        raise UserError(f"input not found: {input}")
    if not input.is_dir():
        if out.exists() and out.is_dir():
            out = out / input.name
        dst = check_writable(out, overwrite)
        image = read_image(input)  # decoded once, before loading a model, so a bad input fails first
        check_output_folder(dst.parent)
        channels = 1 if image.ndim == 2 else image.shape[2]
        check_free_space(dst.parent, output_bytes(planned_size(*image.shape[:2], factor, target, rule), channels,
                                                  image.dtype.itemsize, dst.suffix), str(dst))
        return True, dst, image, [(input, dst)], 0
    jobs, existed = folder_jobs(input, out, overwrite)
    if jobs:  # a finished folder needs no space and may be read-only
        check_output_folder(out)
        check_free_space(out, sum(_job_bytes(src, dst, factor, target, rule) for src, dst in jobs),
                         f"{len(jobs)} images in {out}")
    return False, out, None, jobs, existed


def _job_bytes(src: Path, dst: Path, factor: Scale | None, target: tuple[int, int] | None, rule: str) -> int:
    header = image_header(src)
    if header is None:
        return 0  # not readable: reported when its turn comes
    h, w, channels, sample_bytes = header
    return output_bytes(planned_size(h, w, factor, target, rule), channels, sample_bytes, dst.suffix)


def _make_folder(folder: Path) -> list[Path]:
    """Create ``folder`` (and missing parents), saying so on stderr; the folders created, deepest first."""
    made = [p for p in (folder, *folder.parents) if not p.exists()]
    if made:
        typer.echo(f"creating output folder {made[-1]}" + (f" (and {folder.relative_to(made[-1])} in it)"
                                                           if len(made) > 1 else ""), err=True)
    folder.mkdir(parents=True, exist_ok=True)
    return made


class _Render:
    """One image through the upscaler at the run's scale or size; says once when a size stretches the aspect."""

    def __init__(self, factor: Scale | None, target: tuple[int, int] | None, fit: str):
        self.factor, self.target, self.fit = factor, target, fit
        self.warned = False

    def __call__(self, upscaler, image, src: Path):
        h, w = image.shape[:2]
        if self.target is not None and self.fit == "stretch" and not self.warned and aspect_changes(h, w, self.target):
            self.warned = True
            th, tw = self.target
            typer.echo(f"note: stretching {src.name} ({w}x{h}, aspect {w / h:.3g}) to {tw}x{th} (aspect "
                       f"{tw / th:.3g}); --fit contain or --fit cover keep the aspect ratio", err=True)
        return upscaler.upscale(image, scale=self.factor, size=self.target, fit=self.fit)


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _claim(dst: Path, wait: bool, announce: bool = False) -> FileLock | None:
    """The lock every asisr process takes on ``dst`` (``.NAME.lock`` beside it) before computing it.

    None when another process holds it and ``wait`` is off; ``announce`` says on stderr that this one waits.
    """
    lock = claim_for(dst)
    if lock.acquire(blocking=False):
        return lock
    if not wait:
        return None
    if announce:
        typer.echo(f"waiting for another asisr process writing {dst} ...", err=True)
    lock.acquire()
    return lock


class _Tally:
    """What a run has done so far, for its last line (also when interrupted)."""

    def __init__(self, total: int, existed: int):
        self.total, self.existed = total, existed
        self.written = 0  # by this process
        self.others = 0  # by another process meanwhile
        self.failed: list[str] = []

    def interrupted(self, folder: bool, out: Path) -> str:
        if not folder:
            return f"interrupted: {out} was written" if self.written else f"interrupted: {out} was not written"
        done = self.written + self.others
        return (f"interrupted: {done} of {self.total} images written to {out}"
                + (f" ({self.existed} more existed before)" if self.existed else "")
                + "; run the same command again to resume")

    def report(self) -> None:
        if self.failed:
            raise UserError(f"{len(self.failed)} of {self.total} images failed (first: {self.failed[0]})")
        typer.echo(f"wrote {self.written} images"
                   + (f" ({self.others} more written meanwhile by another asisr process)" if self.others else "")
                   + ("" if self.total else " (all outputs already existed)"))


def _run_folder(upscaler, jobs, render: _Render, overwrite: bool, started: int, tally: _Tally) -> None:
    """Each image under its claim; images another process is working on are left for last, then waited for."""
    from tqdm import tqdm

    with tqdm(total=len(jobs), desc="upscaling", unit="img") as bar:
        later = []
        for job in jobs:
            if _one_image(upscaler, job, render, overwrite, started, tally, wait=False):
                bar.update()
            else:
                later.append(job)
        for job in later:
            _one_image(upscaler, job, render, overwrite, started, tally, wait=True)
            bar.update()


def _one_image(upscaler, job, render: _Render, overwrite: bool, started: int, tally: _Tally, wait: bool) -> bool:
    """Do one image unless another process has it: False when it does and ``wait`` is off."""
    from tqdm import tqdm

    src, dst = job
    claim = _claim(dst, wait)
    if claim is None:
        return False
    try:
        if done_elsewhere(dst, overwrite, started):
            tally.others += 1
            return True
        try:
            write_image(dst, render(upscaler, read_image(src), src))
            tally.written += 1
        except UserError as e:
            tally.failed.append(f"{src.name}: {e}")
            tqdm.write(f"skipped {src.name}: {e}")
    finally:
        claim.release()
    return True


class _VideoOptions:
    """The video-only options, together."""

    def __init__(self, codec: str | None, crf: int | None, pix_fmt: str | None, lossless: bool, skip_bad_frames: bool):
        self.codec, self.crf, self.pix_fmt = codec, crf, pix_fmt
        self.lossless, self.skip_bad_frames = lossless, skip_bad_frames

    def given(self) -> bool:
        return (self.codec is not None or self.crf is not None or self.pix_fmt is not None or self.lossless
                or self.skip_bad_frames)


def _refuse_video_options(options: _VideoOptions) -> None:
    if options.given():
        raise UserError("--codec, --crf, --pix-fmt, --lossless and --skip-bad-frames apply to video inputs")


class _RayOptions:
    """Where and how wide a video runs with --engine ray."""

    def __init__(self, workers: int, threads: int, address: str | None):
        self.workers, self.threads, self.address = workers, threads, address


def _say_choice(upscaler) -> None:
    """The ``--verbose`` line: what runs, and why that precision."""
    typer.echo(f"running {upscaler.pipeline.choice}", err=True)


def _run_video(input: Path, out: Path, render: _Render, overwrite: bool, options: _VideoOptions,
               upscaler_args: dict, model: Path | None, on_ray: _RayOptions | None = None,
               verbose: bool = False) -> None:
    """A video job: checked (input, output, encoder) before the model loads, then upscaled frame by frame
    (here, or in segments on Ray)."""
    from asisr.video import require_av

    require_av()
    from asisr.sources import open_upscaler, size_rule_of
    from asisr.video.job import describe_plan, plan_video, run_video

    try:
        plan = plan_video(input, out, overwrite, render.factor, render.target, options.codec, options.crf,
                          options.pix_fmt, options.lossless, options.skip_bad_frames,
                          size_rule_of(model, upscaler_args["backend"]))
    except KeyboardInterrupt:
        raise Interrupted("interrupted: nothing was written") from None
    typer.echo(describe_plan(plan), err=True)
    segments = 0
    try:
        if on_ray is not None:
            from asisr.distributed.batch import Render, UpscalerSpec
            from asisr.distributed.video import upscale_video_on_ray

            a = upscaler_args
            spec = UpscalerSpec(None if model is None else str(model), a["backend"], on_ray.threads,
                                tuple(a["providers"]) if a["providers"] else None, a["tile"], a["max_scale"],
                                a["max_memory"], a["precision"])
            result, segments = upscale_video_on_ray(plan, Render(render.factor, render.target, render.fit), spec,
                                                    on_ray.workers, on_ray.address, options.skip_bad_frames)
        else:
            upscaler = open_upscaler(model, **upscaler_args)
            if verbose:
                _say_choice(upscaler)
            if render.factor is not None:
                check_scale_range(render.factor, upscaler.max_scale)
            with upscaler:
                result = run_video(plan, lambda rgb: render(upscaler, rgb, input), options.skip_bad_frames)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted: {plan.target.path} was not written") from None
    notes = [f"{result.skipped} bad frames replaced by the previous one"] if result.skipped else []
    notes += [f"{result.missing} frames missing from the input"] if result.missing else []
    notes += [f"copied {', '.join(result.copied)}"] if result.copied else []
    notes += [f"{segments} segment{'s' if segments != 1 else ''} on Ray"] if on_ray is not None else []
    typer.echo(f"wrote {plan.target.path} ({result.frames} frames" + "".join(f"; {n}" for n in notes) + ")")


def main(argv: list[str] | None = None) -> int:
    if signal.getsignal(signal.SIGINT) is _interrupted_while_starting:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # from here Ctrl-C is a KeyboardInterrupt
    return run_app(app, "asisr-run", argv)


if __name__ == "__main__":
    main()
