"""A video cut at its keyframes into segments, each upscaled on its own, joined without re-encoding.

Why segments: a long video's frames are independent once decoded, but a decoder and an encoder
are sequential. Cut at keyframes, every segment decodes by itself (a seek to its first keyframe)
and encodes by itself (its first frame becomes a keyframe), so segments can run on different
processes or machines (``asisr.distributed.video``) and still give one continuous stream.

The input is scanned once (packets only, nothing decoded) for its keyframes and frame count; a
segment is a run of whole GOPs. Each is encoded into a file of the output's container, with the
encoder's own timestamps kept beside it: a container may round them on the way through (MP4
stores its edit list in milliseconds, which shifts a segment that starts mid-video). The join
copies every segment's packets as they are, with those timestamps and the input frames'
durations, between the input's audio and subtitle packets: no frame is decoded or encoded again.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from asisr.errors import UserError
from asisr.video.job import (
    FIRST_NUMBER,
    SEQUENCE_PATTERN,
    ContainerSink,
    DecodedFrames,
    SequenceSink,
    VideoPlan,
    VideoResult,
    Window,
    check_some_frames,
)
from asisr.video.encode import container_format
from asisr.video.pipeline import run_stages
from asisr.video.probe import ffmpeg_reason, open_video

SEGMENT_PATTERN = "segment%05d"


@dataclass(frozen=True)
class InputPacket:
    pts: int
    keyframe: bool
    duration: int  # 0 when the container does not say


@dataclass(frozen=True)
class Segment:
    index: int
    window: Window
    first_number: int  # its first frame's number in a PNG sequence


@dataclass
class SegmentOutput:
    """One encoded segment: its file (None for PNG frames, written in place) and its packets' exact timestamps."""

    segment: Segment
    path: Path | None
    time_base: Fraction
    timestamps: list[tuple[int, int]] = field(default_factory=list)  # (pts, dts) in the file's packet order
    result: VideoResult = field(default_factory=VideoResult)


def scan_packets(plan: VideoPlan, skip_bad_frames: bool = False) -> list[InputPacket]:
    """Every video packet of the input, in file order, without decoding; a damaged file is one error line
    (with ``skip_bad_frames``, what was read before the damage)."""
    import av

    container = open_video(plan.source.path)
    packets: list[InputPacket] = []
    try:
        stream = container.streams.video[0]
        try:
            for packet in container.demux(stream):
                if not packet.size:
                    continue
                if packet.pts is None:  # segments are cut and joined by presentation time
                    raise UserError(f"{plan.source.path} has video packets without timestamps, so it cannot be cut "
                                    "into segments; run it without --engine ray")
                packets.append(InputPacket(int(packet.pts), bool(packet.is_keyframe), int(packet.duration or 0)))
        except av.error.FFmpegError as e:
            message = (f"{plan.source.path} is damaged or truncated after packet {len(packets)}: "
                       f"{ffmpeg_reason(e)}")
            if not skip_bad_frames:
                raise UserError(f"{message} (--skip-bad-frames keeps what was read)") from None
    finally:
        container.close()
    if not packets:
        raise UserError(f"no frames in {plan.source.path}: its video stream is empty")
    return packets


def plan_segments(packets: list[InputPacket], parts: int) -> list[Segment]:
    """About ``parts`` segments of whole GOPs (fewer when the input has fewer keyframes), in presentation order."""
    times = sorted(p.pts for p in packets)
    keys = sorted({p.pts for p in packets if p.keyframe} | {times[0]})  # the first frame starts one, keyframe or not
    target = max(1, math.ceil(len(times) / max(1, parts)))
    starts, count = [keys[0]], 0
    positions = np.searchsorted(times, keys)  # frames presented before each keyframe
    for key, before in zip(keys[1:], positions[1:]):
        if before - count >= target:
            starts.append(key)
            count = int(before)
    segments = []
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else None
        first = int(np.searchsorted(times, start))
        last = int(np.searchsorted(times, end)) if end is not None else len(times)
        segments.append(Segment(i, Window(start, end, last - first), FIRST_NUMBER + first))
    return segments


def segment_path(folder: Path, plan: VideoPlan, segment: Segment) -> Path:
    return folder / ((SEGMENT_PATTERN % segment.index) + plan.target.path.suffix.lower())


def encode_segment(plan: VideoPlan, segment: Segment, upscale: Callable[[np.ndarray], np.ndarray], folder: Path,
                   skip_bad_frames: bool = False) -> SegmentOutput:
    """Decode, upscale and encode one segment into ``folder`` (a PNG sequence: its frames, numbered in place).

    Overwrites what a killed attempt at the same segment left. The encoder is the one the whole
    video would get (same codec, options, time base and colour tags); its first frame is a keyframe.
    """
    result = VideoResult()
    out = SegmentOutput(segment, None, plan.source.time_base, result=result)
    container = open_video(plan.source.path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "SLICE"  # as the whole-video job: errors name the right frame
        frames = DecodedFrames(container, stream, [], plan.source, skip_bad_frames, result, plan.work_depth,
                               segment.window)

        def transform(item):
            return (item[0], item[1], upscale(item[2])) if item[0] == "frame" else item

        if plan.target.is_sequence:
            sink = SequenceSink(folder, plan.target.pattern or SEQUENCE_PATTERN, result, segment.first_number)
            run_stages(frames, transform, sink, sink.finish)
        else:
            out.path = segment_path(folder, plan, segment)
            writer = ContainerSink(out.path, plan, stream, [], result, record=out.timestamps)
            try:
                run_stages(frames, transform, writer, writer.finish)
            finally:
                writer.close()
    finally:
        container.close()
    if result.frames == 0:
        raise UserError(f"no frames decoded from {plan.source.path} in segment {segment.index + 1} "
                        f"(from {float(segment.window.start * plan.source.time_base):.3f} s)")
    return out


def frame_durations(packets: list[InputPacket]) -> dict[int, int]:
    """Each input frame's duration by its timestamp: the container's, else the gap to the next frame (the last
    one: the gap before it)."""
    times = sorted(p.pts for p in packets)
    stored = {p.pts: p.duration for p in packets}
    gaps = {a: b - a for a, b in zip(times, times[1:])}
    if len(times) > 1:
        gaps[times[-1]] = times[-1] - times[-2]
    else:
        gaps[times[-1]] = 1
    return {t: stored[t] if stored.get(t, 0) > 0 else gaps[t] for t in times}


def total_result(outputs: list[SegmentOutput]) -> VideoResult:
    """The whole job's counts: the segments' frames, replaced frames and missing frames added up."""
    total = VideoResult()
    for o in outputs:
        total.frames += o.result.frames
        total.skipped += o.result.skipped
        total.missing += o.result.missing
    return total


def join_segments(plan: VideoPlan, outputs: list[SegmentOutput], packets: list[InputPacket], tmp: Path) -> VideoResult:
    """The segments' packets, in order, with the input's audio and subtitle packets, into ``tmp`` (the output's
    container). Nothing is re-encoded; the video's stream header is the first segment's, which every
    other segment's must equal (the same encoder settings give the same header)."""
    import av

    outputs = sorted(outputs, key=lambda o: o.segment.index)
    durations = frame_durations(packets)
    result = total_result(outputs)
    parts = [av.open(str(o.path), "r") for o in outputs if o.path is not None]
    source = open_video(plan.source.path)
    try:
        header = _header(parts[0])
        for o, part in zip(outputs[1:], parts[1:]):
            if _header(part) != header:
                raise UserError(f"segment {o.segment.index + 1}'s encoder header differs from the first one's, so "
                                "they cannot be joined without re-encoding; run without --engine ray")
        output = av.open(str(tmp), "w", format=container_format(plan.target.path.suffix))
        try:
            copies, video = {}, None
            for s in sorted([*(source.streams[c.index] for c in plan.source.copied), source.streams.video[0]],
                            key=lambda s: s.index):
                if s.type == "video":
                    video = output.add_stream_from_template(parts[0].streams.video[0])
                else:
                    copies[s.index] = output.add_stream_from_template(s)
                    result.copied.append(f"{s.type} {s.codec_context.name}")
            assert video is not None
            streams = [source.streams[i] for i in copies]
            merged = heapq.merge(_segment_packets(outputs, parts, durations), _copied_packets(source, streams),
                                 key=lambda item: item[0])  # by decoding time; on a tie, video first
            for _, packet in merged:
                packet.stream = video if packet.stream.type == "video" else copies[packet.stream.index]
                output.mux(packet)
        finally:
            output.close()
    finally:
        source.close()
        for part in parts:
            part.close()
    check_some_frames(plan, result)
    return result


def _header(part) -> bytes:
    return bytes(part.streams.video[0].codec_context.extradata or b"")


def _segment_packets(outputs: list[SegmentOutput], parts, durations: dict[int, int]) -> Iterator[tuple]:
    """(dts in seconds, packet) of every segment's video packet, restamped with the encoder's timestamps."""
    for o, part in zip(outputs, parts):
        stream = part.streams.video[0]
        count = 0
        for packet in part.demux(stream):
            if not packet.size:
                continue
            if count >= len(o.timestamps):
                break
            pts, dts = o.timestamps[count]
            count += 1
            packet.time_base = o.time_base
            packet.pts, packet.dts = pts, dts
            packet.duration = durations.get(pts, 0)
            yield float(dts * o.time_base), packet
        if count != len(o.timestamps) or any(p.size for p in part.demux(stream)):
            raise UserError(f"segment {o.segment.index + 1} does not hold the {len(o.timestamps)} packets its "
                            "encoder made; run without --engine ray")


def _copied_packets(source, streams) -> Iterator[tuple]:
    """(dts in seconds, packet) of the input's copied streams, in file order."""
    if not streams:
        return
    for packet in source.demux(*streams):
        if packet.dts is not None:
            yield float(packet.dts * packet.time_base), packet
