"""A video on Ray: cut at keyframes, segments upscaled in parallel by an actor pool, joined without re-encoding.

Each actor opens one ``Upscaler`` (the local run's backend, threads, tiling and memory budget)
and encodes whole segments with it (``asisr.video.segments.encode_segment``); the driver scans
the input, hands out segments, and joins the encoded ones with the input's audio and subtitles.
Segment files live in a hidden folder beside the output (so every node must see that folder, as
with a folder run) and are removed at the end, whatever happens; the output itself appears
under its final name only when the join is complete. A segment whose actor dies is run again
from its start by a restarted actor (the file it left is overwritten).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from asisr.atomic import atomic_path, current_umask
from asisr.distributed.batch import Render, UpscalerSpec, check_model, check_pool_fits
from asisr.distributed.cluster import ray_cluster
from asisr.errors import UserError
from asisr.video.job import VideoPlan, VideoResult, check_some_frames, progress_bar, sequence_folder
from asisr.video.segments import (Segment, SegmentOutput, encode_segment, join_segments, plan_segments,
                                  scan_packets, total_result)

SEGMENTS_PER_WORKER = 4  # more segments than actors, so a slow segment does not leave the others idle
RETRIES = 2  # a segment whose actor dies is given to a restarted actor this many times


class SegmentWriter:
    """One Ray actor: one ``Upscaler``, opened once, for every segment it is given."""

    def __init__(self, spec: UpscalerSpec, render: Render):
        self.render, self.upscaler, self.unusable = render, None, ""
        try:
            self.upscaler = spec.open().__enter__()
        except UserError as e:
            self.unusable = " ".join(str(e).split())

    def encode(self, plan: VideoPlan, segment: Segment, folder: str, skip_bad_frames: bool):
        """("ok", SegmentOutput) or ("error", the one-line reason)."""
        if self.upscaler is None:
            return "error", f"a worker could not open the model: {self.unusable}"
        upscaler, render = self.upscaler, self.render
        try:
            return "ok", encode_segment(plan, segment, lambda rgb: render(upscaler, rgb), Path(folder),
                                        skip_bad_frames)
        except UserError as e:
            return "error", " ".join(str(e).split())

    def __del__(self) -> None:
        upscaler = getattr(self, "upscaler", None)
        if upscaler is not None:
            upscaler.__exit__(None, None, None)


def upscale_video_on_ray(plan: VideoPlan, render: Render, spec: UpscalerSpec, workers: int = 2,
                         address: str | None = None, skip_bad_frames: bool = False,
                         progress: bool = True) -> tuple[VideoResult, int]:
    """The video job of ``plan`` on Ray; returns what was written and how many segments it was cut into."""
    if workers < 1 or spec.threads < 1:
        raise UserError("--workers and --threads must be positive")
    check_model(spec, render)
    packets = scan_packets(plan, skip_bad_frames)
    segments = plan_segments(packets, workers * SEGMENTS_PER_WORKER)
    with ray_cluster(address, "--engine ray"):
        check_pool_fits(workers, spec)
        if plan.target.is_sequence:
            with sequence_folder(plan.target, plan.overwrite) as folder:
                outputs = _run_pool(plan, segments, folder, render, spec, workers, skip_bad_frames, progress)
                result = total_result(outputs)
                check_some_frames(plan, result)
            return result, len(segments)
        with _segment_folder(plan.target.path) as folder:
            outputs = _run_pool(plan, segments, folder, render, spec, workers, skip_bad_frames, progress)
            with atomic_path(plan.target.path) as tmp:
                result = join_segments(plan, outputs, packets, tmp)
    return result, len(segments)


@contextmanager
def _segment_folder(final: Path) -> Iterator[Path]:
    """A hidden folder beside the output for the encoded segments, removed when the job ends."""
    final.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".segments", dir=final.parent))
    try:
        folder.chmod(0o777 & ~current_umask())
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run_pool(plan: VideoPlan, segments: list[Segment], folder: Path, render: Render, spec: UpscalerSpec,
              workers: int, skip_bad_frames: bool, progress: bool) -> list[SegmentOutput]:
    """Every segment encoded, in segment order; the first failure reported stops the job with its line."""
    import ray

    actor = ray.remote(num_cpus=spec.threads, num_gpus=spec.gpus or None, max_restarts=RETRIES,
                       max_task_retries=RETRIES)(SegmentWriter)
    actors = [actor.remote(spec, render) for _ in range(min(workers, len(segments)))]
    waiting, running = list(segments), {}  # running: task -> (actor, segment)
    done: dict[int, SegmentOutput] = {}
    try:
        with progress_bar(sum(s.window.frames for s in segments), progress) as bar:
            idle = list(actors)
            while waiting or running:
                while idle and waiting:  # one segment per actor at a time: the others stay free to hand out
                    a, segment = idle.pop(), waiting.pop(0)
                    running[a.encode.remote(plan, segment, str(folder), skip_bad_frames)] = (a, segment)
                finished, _ = ray.wait(list(running), num_returns=1)
                a, segment = running.pop(finished[0])
                status, value = ray.get(finished[0])
                if status != "ok":
                    raise UserError(value)
                done[segment.index] = value
                bar.update(value.result.frames)
                idle.append(a)
        return [done[s.index] for s in segments]
    finally:
        for task in running:  # a failure or Ctrl-C: nothing more is started, nothing is retried
            ray.cancel(task, force=False)
        for a in actors:
            ray.kill(a)
