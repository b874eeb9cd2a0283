"""Frames per second of ``asisr-run`` on video: 480p -> 720p, 720p -> 1080p, 1080p -> 1440p.

Each row is a short generated H.264 clip (a drifting texture over a colour wash) run through the
whole video job (decode, colour conversion, upscaling, encoding with the default H.264 CRF 18,
muxing), after a tiny warm-up image; the model load is not counted. Prints a Markdown table.

    python benchmarks/video_fps.py --int8 /tmp/liif_int8            # fp32 (bundled) and int8 columns
    python benchmarks/video_fps.py --frames 3 --threads 2 --rows 480p
    python benchmarks/video_fps.py --ray-workers 2                    # and --engine ray (fp32) beside them

The int8 column needs an int8 export of the default model:
``asisr-export --checkpoint asisr/weights/liif_edsr_baseline.pt --out liif_int8 --int8 --calib photos/``.
The Ray column runs ``asisr.distributed.video.upscale_video_on_ray`` on a local cluster started
before the clock starts (as a user's cluster would be), with one-thread actors; its time includes
the actors' model loads. With it, every clip has a keyframe every ``frames / workers`` frames, so
the video cuts into one segment per worker (the local columns run the same clips).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

ROWS = {"480p": ((854, 480), (1280, 720)), "720p": ((1280, 720), (1920, 1080)), "1080p": ((1920, 1080), (2560, 1440))}


def make_clip(path: Path, width: int, height: int, frames: int, gop: int | None = None) -> Path:
    import av

    from asisr.video.colour import Colour, from_rgb

    colour = Colour("bt709", "limited")
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "18"} if gop is None else {"crf": "18", "g": str(gop), "keyint_min": str(gop),
                                                           "sc_threshold": "0"}
        for i in range(frames):
            texture = 50 * np.sin((xx + 3 * i) / 9.0) * np.cos((yy - 2 * i) / 11.0)
            wash = np.stack([60 * xx / width, 40 * (1 - yy / height), 50 * (xx + yy) / (width + height)], axis=-1)
            rgb = np.clip(90 + texture[..., None] + wash, 0, 255).astype(np.uint8)
            frame = from_rgb(rgb, "yuv420p", colour)
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def fps(model: Path | None, clip: Path, size: tuple[int, int], threads: int | None, folder: Path) -> float:
    """Frames per second of the whole job on ``clip`` (model load and warm-up not counted)."""
    from asisr.sources import open_upscaler
    from asisr.video.job import plan_video, run_video

    with open_upscaler(model, backend="onnxruntime", threads=threads) as upscaler:
        upscaler.upscale(np.zeros((32, 32, 3), np.uint8), scale=2)  # warm-up: sessions and memory arenas
        out = folder / f"out_{clip.stem}_{time.monotonic_ns()}.mp4"
        plan = plan_video(clip, out, False, None, size, None, None, None, False)
        started = time.perf_counter()
        result = run_video(plan, lambda rgb: upscaler.upscale(rgb, size=size), progress=False)
        seconds = time.perf_counter() - started
    out.unlink()
    return result.frames / seconds


def ray_fps(clip: Path, size: tuple[int, int], workers: int, folder: Path) -> float:
    """Frames per second of the same job with ``--engine ray`` (cluster already up; actor start-up counted)."""
    from asisr.distributed.batch import Render, UpscalerSpec
    from asisr.distributed.video import upscale_video_on_ray
    from asisr.video.job import plan_video

    out = folder / f"ray_{clip.stem}_{time.monotonic_ns()}.mp4"
    plan = plan_video(clip, out, False, None, size, None, None, None, False)
    started = time.perf_counter()
    result, _ = upscale_video_on_ray(plan, Render(size=size), UpscalerSpec(threads=1), workers, progress=False)
    seconds = time.perf_counter() - started
    out.unlink()
    return result.frames / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=3, help="frames per clip (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: all cores)")
    parser.add_argument("--int8", type=Path, default=None, help="int8 export of the default model (a column)")
    parser.add_argument("--rows", default=",".join(ROWS), help="which rows, e.g. 480p,720p")
    parser.add_argument("--ray-workers", type=int, default=0, help="add an --engine ray column with this many actors")
    args = parser.parse_args()
    models = {"fp32": None} | ({"int8": args.int8} if args.int8 else {})
    names = [f"{name} fps" for name in models] + ([f"fp32 Ray {args.ray_workers}x1 fps"] if args.ray_workers else [])
    lines = ["| job | frames | " + " | ".join(names) + " |", "|---|---:|" + "---:|" * len(names)]
    gop = max(1, args.frames // args.ray_workers) if args.ray_workers else None
    if args.ray_workers:
        import logging

        import ray

        ray.init(num_cpus=args.ray_workers, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for row in args.rows.split(","):
            (w, h), (tw, th) = ROWS[row]
            clip = make_clip(folder / f"{row}.mp4", w, h, args.frames, gop)
            rates = [fps(model, clip, (th, tw), args.threads, folder) for model in models.values()]
            if args.ray_workers:
                rates.append(ray_fps(clip, (th, tw), args.ray_workers, folder))
            lines.append(f"| {w}x{h} -> {tw}x{th} | {args.frames} | " + " | ".join(f"{r:.3f}" for r in rates) + " |")
            print(lines[-1], flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
