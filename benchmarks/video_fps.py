"""Frames per second of ``asisr-run`` on video: 480p -> 720p, 720p -> 1080p, 1080p -> 1440p.

Each row is a short generated H.264 clip (a drifting texture over a colour wash) run through the
whole video job (decode, colour conversion, upscaling, encoding with the default H.264 CRF 18,
muxing), after a tiny warm-up image; the model load is not counted. Prints a Markdown table.

    python benchmarks/video_fps.py --int8 /tmp/eqsr_light_int8            # fp32 (bundled) and int8 columns
    python benchmarks/video_fps.py --frames 3 --threads 2 --rows 480p

The int8 column needs an int8 export of the default model:
``asisr-export --checkpoint asisr/weights/eqsr_light_default.pt --out eqsr_light_int8 --int8 --calib photos/``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

ROWS = {"480p": ((854, 480), (1280, 720)), "720p": ((1280, 720), (1920, 1080)), "1080p": ((1920, 1080), (2560, 1440))}


def make_clip(path: Path, width: int, height: int, frames: int) -> Path:
    import av

    from asisr.video.colour import Colour, from_rgb

    colour = Colour("bt709", "limited")
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "18"}
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=3, help="frames per clip (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: all cores)")
    parser.add_argument("--int8", type=Path, default=None, help="int8 export of the default model (a column)")
    parser.add_argument("--rows", default=",".join(ROWS), help="which rows, e.g. 480p,720p")
    args = parser.parse_args()
    models = {"fp32": None} | ({"int8": args.int8} if args.int8 else {})
    lines = ["| job | frames | " + " | ".join(f"{name} fps" for name in models) + " |",
             "|---|---:|" + "---:|" * len(models)]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for row in args.rows.split(","):
            (w, h), (tw, th) = ROWS[row]
            clip = make_clip(folder / f"{row}.mp4", w, h, args.frames)
            rates = [fps(model, clip, (th, tw), args.threads, folder) for model in models.values()]
            lines.append(f"| {w}x{h} -> {tw}x{th} | {args.frames} | " + " | ".join(f"{r:.3f}" for r in rates) + " |")
            print(lines[-1], flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
