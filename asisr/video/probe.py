"""What a video input is, read before any model is loaded: its streams, size, timing and colour.

Every way an input can be unusable (not a video, truncated so its index is gone, no video
stream, no frame at all) is one ``UserError`` line here, so a bad input costs no model load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from asisr.errors import UserError
from asisr.imageio import check_input_file
from asisr.video.colour import Colour, bit_depth, stream_colour

COPIED_KINDS = ("audio", "subtitle")  # stream-copied (packets remuxed as they are); data streams are dropped


@dataclass(frozen=True)
class CopiedStream:
    index: int
    kind: str
    codec: str  # the codec's descriptor name (aac, mov_text, subrip): what a muxer's supported list holds


@dataclass
class VideoInput:
    path: Path
    width: int
    height: int
    frames: int  # from the container's index; 0 when it does not say (Matroska)
    time_base: Fraction
    rate: Fraction | None  # average frame rate (None when unknown)
    duration: float | None  # seconds
    pix_fmt: str
    depth: int
    colour: Colour
    codec: str
    stream_index: int
    copied: list[CopiedStream] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # streams that are neither video nor copied, as "#2 data"

    @property
    def expected_frames(self) -> int:
        """The frame count to show progress against: the index's, else duration x rate (0: unknown)."""
        if self.frames:
            return self.frames
        if self.duration and self.rate:
            return max(1, round(self.duration * float(self.rate)))
        return 0


def ffmpeg_reason(error: BaseException) -> str:
    """FFmpeg's own words for an error, without the errno and file name PyAV prefixes them with."""
    text = getattr(error, "strerror", None) or str(error)
    return str(text).strip().rstrip(".")


def open_video(path: Path):
    """The opened input container; a file FFmpeg cannot read as a media file is one error line."""
    import av

    check_input_file(path)
    try:
        return av.open(str(path), "r")
    except av.error.FFmpegError as e:
        raise UserError(f"cannot read {path} as a video: {ffmpeg_reason(e)} (not a video, or truncated / damaged)") \
            from None


def probe(path: str | Path, tolerate_bad_frames: bool = False) -> VideoInput:
    """Open ``path``, pick its first video stream, decode its first frame (so a damaged start fails here).

    ``tolerate_bad_frames`` (``--skip-bad-frames``): the first frame that decodes describes the stream.
    """
    path = Path(path)
    container = open_video(path)
    try:
        videos = list(container.streams.video)
        if not videos:
            raise UserError(f"no video stream in {path}")
        stream = videos[0]
        first = first_frame(container, stream, path, tolerate_bad_frames)
        return _describe(path, container, stream, first)
    finally:
        container.close()


MAX_BAD_LEAD = 250  # with tolerate_bad_frames, undecodable packets looked past before giving up


def first_frame(container, stream, path: Path, tolerate_bad_frames: bool = False):
    """The first decodable frame, or a one-line error (no frame at all, or the stream cannot be decoded)."""
    import av

    failures = 0
    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except av.error.FFmpegError as e:
            failures += 1
            if not tolerate_bad_frames or failures > MAX_BAD_LEAD:
                raise UserError(f"cannot decode frame {failures} of {path}: {ffmpeg_reason(e)}") from None
            continue
        for frame in frames:
            if frame.is_corrupt and tolerate_bad_frames:
                continue
            return frame
    if failures:
        raise UserError(f"no frame of {path} decodes ({failures} damaged)")
    raise UserError(f"no frames in {path}: its video stream is empty")


def _describe(path: Path, container, stream, first) -> VideoInput:
    ctx = stream.codec_context
    pix_fmt = first.format.name
    height = int(first.height)
    colour = stream_colour(int(first.colorspace), int(first.color_range), pix_fmt, height,
                           int(first.color_primaries), int(first.color_trc))
    duration = None
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / 1_000_000
    copied, dropped = [], []
    for other in container.streams:
        if other.index == stream.index:
            continue
        if other.type in COPIED_KINDS:
            copied.append(CopiedStream(other.index, other.type, other.codec_context.name))
        else:
            dropped.append(f"#{other.index} {other.type}")
    return VideoInput(path=path, width=int(first.width), height=height, frames=int(stream.frames or 0),
                      time_base=Fraction(stream.time_base), rate=Fraction(stream.average_rate) if stream.average_rate
                      else None, duration=duration, pix_fmt=pix_fmt, depth=bit_depth(pix_fmt), colour=colour,
                      codec=ctx.name, stream_index=stream.index, copied=copied, dropped=dropped)
