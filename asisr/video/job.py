"""One video job: checks that need no model (``plan_video``), then decode -> upscale -> encode (``run_video``).

The output is written under a temporary name beside the destination (``.NAME.XXXX.tmp.mp4``,
or a ``.NAME.XXXX.tmp`` folder for a PNG sequence) and renamed when complete: an interrupted or
failed run leaves nothing under the final name. Frames keep their presentation timestamps in
the input's time base (variable frame rate stays variable), every decoded frame gives one output
frame, and audio and subtitle packets are remuxed as they are (no re-encoding).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from bisect import insort
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from asisr.atomic import atomic_path, current_umask
from asisr.errors import UserError
from asisr.scale import Scale, planned_size
from asisr.video.colour import LIMITED, Colour, from_rgb, is_rgb_format, tag, to_rgb
from asisr.video.encode import EncoderSettings, check_frame_size, choose_encoder, container_format, muxer_codecs
from asisr.video.pipeline import run_stages
from asisr.video.probe import VideoInput, ffmpeg_reason, open_video, probe

SEQUENCE_PATTERN = "%06d.png"
FIRST_NUMBER = 1  # as FFmpeg's image2 muxer numbers


@dataclass(frozen=True)
class OutputTarget:
    path: Path  # the video file, or the folder of a PNG sequence
    pattern: str | None = None  # printf pattern of a sequence's file names

    @property
    def is_sequence(self) -> bool:
        return self.pattern is not None


@dataclass
class VideoPlan:
    source: VideoInput
    target: OutputTarget
    size: tuple[int, int]  # planned output (height, width)
    encoder: EncoderSettings | None  # None for a PNG sequence
    colour: Colour  # of the output's samples
    overwrite: bool
    work_depth: int = 16  # bits of the RGB frames the model sees and returns (see ``work_depth``)


@dataclass(frozen=True)
class Window:
    """Part of the input: the frames presented in [start, end) (input time base; ``end`` None: to the end),
    decoded after a seek to the keyframe at ``start``, which the part must begin with."""

    start: int
    end: int | None
    frames: int  # input video packets in it: the frames it must give


@dataclass
class VideoResult:
    frames: int = 0  # written
    skipped: int = 0  # bad input frames replaced by the last good one
    missing: int = 0  # frames the container's index promised that were not there (truncated input)
    copied: list[str] = field(default_factory=list)  # "audio aac", ...


def output_target(out: Path) -> OutputTarget:
    """A video file by its suffix; a folder (existing, or named with a trailing slash / no suffix) or a
    ``frames/%06d.png`` pattern for a PNG sequence."""
    text = str(out)
    if "%" in out.name:
        if out.suffix.lower() != ".png":
            raise UserError(f"a frame pattern must end in .png: {out}")
        try:
            out.name % FIRST_NUMBER
        except (TypeError, ValueError):
            raise UserError(f"invalid frame pattern {out.name!r}: use one number field, like %06d.png") from None
        return OutputTarget(out.parent, out.name)
    if out.is_dir() or text.endswith(os.sep) or not out.suffix:
        return OutputTarget(out, SEQUENCE_PATTERN)
    container_format(out.suffix)  # an image suffix or anything else is refused with the choices
    return OutputTarget(out)


def plan_video(input: Path, out: Path, overwrite: bool, factor: Scale | None, target: tuple[int, int] | None,
               codec: str | None, crf: int | None, pix_fmt: str | None, lossless: bool,
               skip_bad_frames: bool = False, size_rule: str = "round") -> VideoPlan:
    """Every check a video job can make before a model is loaded: input, output, encoder, sizes, streams.

    ``size_rule``: the model's (``asisr.sources.size_rule_of``), so the encoder is opened at the size
    the upscaler will produce (MetaRDN floors ``s * h``)."""
    from asisr.imageio import check_free_space, check_output_folder, output_bytes

    destination = output_target(out)
    source = probe(input, tolerate_bad_frames=skip_bad_frames)
    size = planned_size(source.height, source.width, factor or Scale(1.0, 1.0), target, size_rule)
    _check_destination(destination, overwrite)
    check_output_folder(destination.path if destination.is_sequence else destination.path.parent)
    if destination.is_sequence:
        if codec or crf is not None or pix_fmt or lossless:
            raise UserError("--codec, --crf, --pix-fmt and --lossless apply to video files, not to PNG sequences "
                            "(which are lossless)")
        frames = source.expected_frames
        if frames:
            sample_bytes = 1 if source.depth <= 8 else 2
            check_free_space(destination.path, frames * output_bytes(size, 3, sample_bytes, ".png"),
                             f"{frames} PNG frames in {destination.path}")
        return VideoPlan(source, destination, size, None, source.colour, overwrite, source.depth)
    settings = choose_encoder(codec, crf, pix_fmt, lossless, source.depth, destination.path.suffix)
    check_frame_size(settings.pix_fmt, size[1], size[0])
    _check_copies(source, destination.path.suffix)
    colour = source.colour if not source.colour.is_rgb else Colour("bt709", LIMITED)
    return VideoPlan(source, destination, size, settings, colour, overwrite, work_depth(source, settings))


def work_depth(source: VideoInput, settings: EncoderSettings) -> int:
    """16-bit RGB between two Y'CbCr conversions, so no rounding to 8-bit RGB sits between them (a flat
    colour would come back up to 2-3 levels off); the input's own depth when the output stores RGB as it
    is (lossless, PNG), so those outputs are exactly the image path's."""
    return source.depth if is_rgb_format(settings.pix_fmt) else 16


def _check_destination(target: OutputTarget, overwrite: bool) -> None:
    path = target.path
    if target.is_sequence:
        if path.exists() and not path.is_dir():
            raise UserError(f"output {path} is a file, not a folder for PNG frames")
        if path.is_dir() and any(p.suffix.lower() == ".png" for p in path.iterdir()) and not overwrite:
            raise UserError(f"output exists: {path} holds PNG frames (use --overwrite to replace them)")
        return
    if path.exists() and path.is_dir():
        raise UserError(f"output is a directory: {path}")
    if path.exists() and not overwrite:
        raise UserError(f"output exists: {path} (use --overwrite to replace it)")


def _check_copies(source: VideoInput, suffix: str) -> None:
    stored = muxer_codecs(container_format(suffix))
    for stream in source.copied:
        if stream.codec not in stored:
            raise UserError(f"the {stream.kind} stream #{stream.index} ({stream.codec}) cannot be copied into "
                            f"{suffix} without re-encoding: use .mkv")


def run_video(plan: VideoPlan, upscale: Callable[[np.ndarray], np.ndarray], skip_bad_frames: bool = False,
              progress: bool = True) -> VideoResult:
    """The whole job; the output appears under its final name only when complete."""
    result = VideoResult()
    container = open_video(plan.source.path)
    try:
        stream = container.streams.video[0]
        # Slice threads only: with frame threads a decoding error surfaces a few packets late, so the frame it
        # names (and the timestamp a replacement gets) would be the wrong one. Decoding is not the bottleneck.
        stream.thread_type = "SLICE"
        copied = [container.streams[c.index] for c in plan.source.copied] if not plan.target.is_sequence else []
        frames = DecodedFrames(container, stream, copied, plan.source, skip_bad_frames, result, plan.work_depth)
        with progress_bar(plan.source.expected_frames, progress) as bar:
            def transform(item):
                if item[0] != "frame":
                    return item
                out = upscale(item[2])
                bar.update()
                return item[0], item[1], out

            if plan.target.is_sequence:
                with sequence_folder(plan.target, plan.overwrite) as folder:
                    sink = SequenceSink(folder, plan.target.pattern or SEQUENCE_PATTERN, result)
                    run_stages(frames, transform, sink, sink.finish)
                    check_some_frames(plan, result)
            else:
                with atomic_path(plan.target.path) as tmp:
                    sink = ContainerSink(tmp, plan, stream, copied, result)
                    try:
                        run_stages(frames, transform, sink, sink.finish)
                    finally:
                        sink.close()
                    check_some_frames(plan, result)  # inside: a file without frames is never renamed into place
    finally:
        container.close()
    return result


def check_some_frames(plan: VideoPlan, result: VideoResult) -> None:
    if result.frames == 0:
        raise UserError(f"no frames decoded from {plan.source.path}")


@contextmanager
def progress_bar(total: int, enabled: bool):
    from tqdm import tqdm

    with tqdm(total=total or None, desc="upscaling", unit="frame", disable=not enabled, file=sys.stderr) as bar:
        yield bar


class DecodedFrames:
    """Decoded frames as ("frame", pts, rgb) and copied packets as ("packet", packet), in input order.

    A frame the decoder rejects or flags as corrupt stops the job with its number, or, with
    ``skip``, is replaced by the last good frame at its own timestamp (kept in presentation order).
    With a ``window`` only that part's frames come (no packets): decoding starts at its keyframe and
    stops at the first frame presented at or after its end (a decoder gives frames in presentation
    order, so every earlier one has come by then).
    """

    def __init__(self, container, stream, copied, source: VideoInput, skip: bool, result: VideoResult,
                 depth: int, window: Window | None = None):
        self.container, self.stream, self.copied, self.depth = container, stream, copied, depth
        self.source, self.skip, self.result, self.window = source, skip, result, window
        self.passed_end = False
        self.decoded = 0  # good frames so far
        self.bad_pts: list[int] = []  # replacements not yet placed
        self.last: np.ndarray | None = None
        self.last_pts: int | None = None

    def __iter__(self) -> Iterator[tuple]:
        import av

        try:
            if self.window is not None:
                self.container.seek(self.window.start, stream=self.stream, backward=True, any_frame=False)
            for packet in self.container.demux(self.stream, *self.copied):
                if packet.stream.index != self.stream.index:
                    if packet.dts is not None:
                        yield "packet", packet
                    continue
                yield from self._decode(packet)
                if self.passed_end:
                    break
        except av.error.FFmpegError as e:
            self._broken(f"the input is damaged or truncated after frame {self._position()}: {ffmpeg_reason(e)}")
        yield from self._placed(None)
        self._check_count()

    def _position(self) -> int:
        return self.decoded + self.result.skipped + len(self.bad_pts)

    def _in_window(self, pts) -> bool:
        """Whether a frame presented at ``pts`` is this part's (one at or after its end ends the part)."""
        w = self.window
        if w is None or pts is None:
            return True
        if w.end is not None and pts >= w.end:
            self.passed_end = True
        return w.start <= pts and not self.passed_end

    def _decode(self, packet) -> Iterator[tuple]:
        import av

        try:
            frames = packet.decode()
        except av.error.FFmpegError as e:
            if self._in_window(packet.pts):
                self._bad(packet.pts, f"{self._frame_name(packet.pts)} of {self.source.path} "
                                      f"cannot be decoded: {ffmpeg_reason(e)}")
            return
        for frame in frames:
            if not self._in_window(frame.pts):
                if self.passed_end:
                    return
                continue  # before the part: leading pictures of an open GOP, which the part before it gives
            if frame.is_corrupt:
                self._bad(frame.pts, f"{self._frame_name(frame.pts)} of {self.source.path} "
                                     "is corrupt")
                continue
            rgb = to_rgb(frame, self.source.colour, self.depth)
            pts = self._timestamp(frame.pts)
            yield from self._placed(pts, rgb)
            self.decoded += 1
            self.last = rgb
            yield "frame", pts, rgb

    def _timestamp(self, pts) -> int:
        """The frame's own timestamp; one frame duration after the previous where a stream gives none."""
        if pts is None:
            step = 1
            if self.source.rate:
                step = max(1, round(1 / (float(self.source.rate) * float(self.source.time_base))))
            pts = 0 if self.last_pts is None else self.last_pts + step
        self.last_pts = int(pts)
        return int(pts)

    def _frame_name(self, pts) -> str:
        """``frame 4 (at 0.125 s)``: the number counted in display order from the frame rate where it is known."""
        if pts is None:
            return f"frame {self._position() + 1}"
        seconds = float(pts * self.source.time_base)
        if self.source.rate:
            return f"frame {round(seconds * float(self.source.rate)) + 1} (at {seconds:.3f} s)"
        return f"the frame at {seconds:.3f} s"

    def _bad(self, pts, message: str) -> None:
        if not self.skip:
            raise UserError(f"{message} (--skip-bad-frames repeats the last good frame instead)")
        if pts is not None:
            insort(self.bad_pts, pts)
        else:
            self.result.missing += 1

    def _placed(self, before, rgb: np.ndarray | None = None) -> Iterator[tuple]:
        """The replacements due before presentation time ``before`` (all when None)."""
        while self.bad_pts and (before is None or self.bad_pts[0] < before):
            fill = self.last if self.last is not None else rgb
            if fill is None:
                return  # nothing good yet to repeat: placed before the first good frame, when it comes
            self.result.skipped += 1
            yield "frame", self.bad_pts.pop(0), fill

    def _broken(self, message: str) -> None:
        if not self.skip:
            raise UserError(f"{message} (--skip-bad-frames keeps what was read)")
        print(f"warning: {message}; the output ends there", file=sys.stderr)

    def _check_count(self) -> None:
        expected = self.source.frames if self.window is None else self.window.frames
        seen = self._position() + self.result.missing
        if expected and seen < expected:
            message = (f"{self.source.path} ends after frame {seen} of the {expected} its index lists "
                       "(truncated or damaged)")
            if self.window is not None:
                start = float(self.window.start * self.source.time_base)
                message = (f"{self.source.path}: the part from {start:.3f} s gave {seen} of its {expected} frames "
                           "(truncated or damaged)")
            if not self.skip:
                raise UserError(f"{message} (--skip-bad-frames keeps what was read)")
            self.result.missing += expected - seen
            print(f"warning: {message}", file=sys.stderr)


class ContainerSink:
    """Encodes upscaled frames and muxes them with the copied packets into the temporary output."""

    def __init__(self, tmp: Path, plan: VideoPlan, in_stream, copied, result: VideoResult,
                 record: list[tuple[int, int]] | None = None):
        """``record``: gets (pts, dts) of every encoded packet in muxing order, in the input's time base."""
        import av

        assert plan.encoder is not None
        self.record = record
        self.plan, self.in_stream, self.result = plan, in_stream, result
        self.settings = plan.encoder
        self.output = av.open(str(tmp), "w", format=container_format(plan.target.path.suffix))
        self.copies = {}
        self.video = None
        for stream in sorted([in_stream, *copied], key=lambda s: s.index):  # the input's stream order
            if stream is in_stream:
                self.video = self._add_video()
            else:
                self.copies[stream.index] = self.output.add_stream_from_template(stream)
                result.copied.append(f"{stream.type} {stream.codec_context.name}")
        self.opened = False
        self.early: list = []  # packets that came before the first frame (the encoder's size is set then)

    def _add_video(self):
        rate = self.plan.source.rate
        stream = self.output.add_stream(self.settings.codec, rate=rate) if rate else \
            self.output.add_stream(self.settings.codec)
        stream.pix_fmt = self.settings.pix_fmt
        stream.time_base = self.plan.source.time_base
        stream.codec_context.time_base = self.plan.source.time_base
        stream.options = dict(self.settings.options)
        tag(stream.codec_context, self.plan.colour, self.settings.pix_fmt)
        return stream

    def _open_video(self, height: int, width: int) -> None:
        """The size is the first upscaled frame's (the model's size rule has the last word)."""
        self.video.width, self.video.height = width, height
        self.opened = True
        for packet in self.early:
            self._mux_copy(packet)
        self.early.clear()

    def __call__(self, item) -> None:
        if item[0] == "packet":
            if not self.opened:
                self.early.append(item[1])
            else:
                self._mux_copy(item[1])
            return
        _, pts, rgb = item
        if not self.opened:
            self._open_video(rgb.shape[0], rgb.shape[1])
        frame = from_rgb(rgb, self.settings.pix_fmt, self.plan.colour)
        frame.pts = pts
        frame.time_base = self.plan.source.time_base
        self._encode_errors(lambda: self._mux_video(frame))
        self.result.frames += 1

    def _mux_video(self, frame) -> None:
        packets = self.video.encode(frame)
        if self.record is not None:
            self.record.extend((int(p.pts), int(p.dts)) for p in packets)
        self.output.mux(packets)

    def _mux_copy(self, packet) -> None:
        packet.stream = self.copies[packet.stream.index]
        self.output.mux(packet)

    def _encode_errors(self, action) -> None:
        import av

        try:
            action()
        except av.error.FFmpegError as e:
            raise UserError(f"cannot encode {self.plan.target.path} with {self.settings.describe()}: "
                            f"{ffmpeg_reason(e)}") from None

    def finish(self) -> None:
        if self.opened:
            self._encode_errors(lambda: self._mux_video(None))
        self.early.clear()  # a video without a frame is not written (run_video says so)

    def close(self) -> None:
        try:
            self.output.close()
        except Exception:
            if self.opened:
                raise


class SequenceSink:
    """PNG frames, numbered from 1 in presentation order (the timestamps are not kept in a sequence);
    ``first``: the number of the first frame this sink writes (a later part of the video starts later)."""

    def __init__(self, folder: Path, pattern: str, result: VideoResult, first: int = FIRST_NUMBER):
        self.folder, self.pattern, self.result, self.first = folder, pattern, result, first

    def __call__(self, item) -> None:
        from asisr.imageio import write_image

        if item[0] != "frame":
            return
        write_image(self.folder / (self.pattern % (self.first + self.result.frames)), item[2])
        self.result.frames += 1

    def finish(self) -> None:
        pass


@contextmanager
def sequence_folder(target: OutputTarget, overwrite: bool) -> Iterator[Path]:
    """A temporary folder beside the destination, renamed to it (or moved into it, with --overwrite) when done."""
    final = target.path
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        os.chmod(tmp, 0o777 & ~current_umask())
        yield tmp
        if not any(tmp.iterdir()):
            return
        if final.is_dir() and any(final.iterdir()):
            if not overwrite:  # another process filled it meanwhile
                raise UserError(f"output exists: {final} holds files (use --overwrite to replace them)")
            for frame in sorted(tmp.iterdir()):
                os.replace(frame, final / frame.name)
        else:
            os.replace(tmp, final)  # onto an empty folder, or a new name
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def describe_plan(plan: VideoPlan) -> str:
    """One status line for stderr: what will be made of what (ends in " ...", as the CLIs' slow steps do)."""
    s = plan.source
    h, w = plan.size
    what = (f"PNG frames in {plan.target.path}" if plan.target.is_sequence else
            f"{plan.target.path} ({plan.encoder.describe() if plan.encoder else ''})")
    return (f"{s.path.name}: {s.width}x{s.height} {s.codec} {s.pix_fmt}, {s.colour.describe()}, "
            f"{s.expected_frames or 'unknown number of'} frames -> {w}x{h} {what} ...")


def rgb_frames(path: Path, depth: int | None = None) -> Iterator[np.ndarray]:
    """Every frame of ``path`` as R'G'B' the way a job decodes it (its own matrix and range), in ``depth``
    bits (default: the stream's, 8 or 16)."""
    source = probe(path)
    container = open_video(path)
    try:
        for frame in container.decode(container.streams.video[0]):
            yield to_rgb(frame, source.colour, source.depth if depth is None else depth)
    finally:
        container.close()


