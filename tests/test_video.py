"""``asisr-run`` on video files: sizes, timing, stream copy, colour, quality against the image path, bad inputs.

Every clip is generated here with PyAV (tiny: 48x32, 8 frames) and every run uses the bundled
default model on ONNX Runtime, the model a user gets. The image path's output of a decoded
frame (``Upscaler.upscale``, what ``asisr-run frame.png`` calls) is the reference the video
output is held to.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av", reason="PyAV is not installed (pip install 'asisr[video]'): no video tests")

from asisr.cli.run import main as run_main  # noqa: E402
from asisr.imageio import read_image  # noqa: E402
from asisr.video.colour import (  # noqa: E402
    FULL,
    LIMITED,
    Colour,
    from_rgb,
    rgb_to_yuv_reference,
    to_rgb,
    yuv_to_rgb_reference,
)
from asisr.video.job import plan_video, rgb_frames, run_video  # noqa: E402
from tests.cli_helpers import assert_user_error, invoke  # noqa: E402

FRAMES = 8
AVCOL = {"bt601": 6, "bt709": 1}
AVRANGE = {LIMITED: 1, FULL: 2}


def run(args, capsys):
    return invoke(run_main, args, capsys)


def moving_pattern(h: int, w: int, i: int) -> np.ndarray:
    """A drifting texture in luma over a smooth colour wash: like camera footage, chroma has less detail than luma
    (the 4:2:0 a video stores it in is made for that)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    texture = 50 * np.sin((xx + 1.5 * i) / 4.0) * np.cos((yy - 0.7 * i) / 5.0)
    wash = np.stack([60 * xx / w, 40 * (1 - yy / h), 50 * (xx + yy) / (w + h)], axis=-1)
    return np.clip(90 + texture[..., None] + wash, 0, 255).astype(np.uint8)


def flat_patches(h: int, w: int, i: int) -> np.ndarray:
    """Four flat colours (quadrants), the same in every frame."""
    img = np.empty((h, w, 3), np.uint8)
    img[: h // 2, : w // 2] = (200, 40, 60)
    img[: h // 2, w // 2:] = (30, 170, 90)
    img[h // 2:, : w // 2] = (60, 80, 210)
    img[h // 2:, w // 2:] = (235, 220, 35)
    return img


def make_clip(path: Path, w: int = 48, h: int = 32, frames: int = FRAMES, pix_fmt: str = "yuv420p",
              matrix: str = "bt709", rng: str = LIMITED, audio: bool = True, subtitles: bool = False,
              vfr_steps: tuple[int, ...] | None = None, picture=moving_pattern, crf: str = "12",
              gop: int | None = None) -> Path:
    """An H.264 clip of ``picture``; ``vfr_steps`` (ms between frames, cycled) makes the frame rate variable;
    ``gop``: a keyframe every ``gop`` frames (x264's default: one every 250)."""
    out = av.open(str(path), "w")
    video = out.add_stream("libx264", rate=24)
    video.width, video.height, video.pix_fmt = w, h, pix_fmt
    video.options = {"crf": crf} if gop is None else {"crf": crf, "g": str(gop), "keyint_min": str(gop),
                                                       "sc_threshold": "0"}
    video.codec_context.colorspace, video.codec_context.color_range = AVCOL[matrix], AVRANGE[rng]
    time_base = Fraction(1, 1000) if vfr_steps else Fraction(1, 24)
    video.codec_context.time_base = time_base
    sound = out.add_stream("aac", rate=48000) if audio else None
    text = None
    if subtitles:
        text = out.add_mux_stream("subrip")
        text.time_base = Fraction(1, 1000)
    colour, depth = Colour(matrix, rng), 10 if "10" in pix_fmt else 8
    pts = 0
    for i in range(frames):
        rgb = picture(h, w, i)
        frame = from_rgb(rgb if depth == 8 else rgb.astype(np.uint16) * 257, pix_fmt, colour)
        frame.pts, frame.time_base = pts, time_base
        pts += vfr_steps[i % len(vfr_steps)] if vfr_steps else 1
        out.mux(video.encode(frame))
    out.mux(video.encode(None))
    if sound is not None:
        for start in range(0, 48000 * frames // 24, 1024):
            tone = np.sin(np.arange(start, start + 1024) * 0.05).astype(np.float32) * 0.3
            block = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
            block.sample_rate, block.pts = 48000, start
            out.mux(sound.encode(block))
        out.mux(sound.encode(None))
    if text is not None:
        for k, start in enumerate((0, 150)):
            packet = av.Packet(f"line {k}".encode())
            packet.pts = packet.dts = start
            packet.duration, packet.time_base, packet.stream = 100, Fraction(1, 1000), text
            out.mux(packet)
    out.close()
    return path


def frame_times(path: Path) -> list[Fraction]:
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        return [Fraction(f.pts) * stream.time_base for f in c.decode(stream)]


def copied_packets(path: Path, kind: str) -> list[tuple[bytes, Fraction]]:
    with av.open(str(path)) as c:
        stream = next(s for s in c.streams if s.type == kind)
        return [(bytes(p), Fraction(p.pts) * p.time_base) for p in c.demux(stream) if p.size]


def video_stream_facts(path: Path) -> dict:
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        frame = next(c.decode(stream))
        return {"size": (frame.width, frame.height), "pix_fmt": frame.format.name, "codec": stream.codec_context.name,
                "colorspace": int(frame.colorspace), "range": int(frame.color_range),
                "kinds": [s.type for s in c.streams]}


def psnr(a: np.ndarray, b: np.ndarray, peak: float) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(peak ** 2 / mse)


@pytest.fixture(scope="module")
def upscaler():
    """The image path's upscaler: the bundled default model, as asisr-run opens it."""
    from asisr.sources import open_upscaler

    with open_upscaler(None, threads=1) as up:
        yield up


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    return {
        "mp4": make_clip(folder / "moving.mp4"),
        "vfr": make_clip(folder / "vfr.mkv", vfr_steps=(30, 50, 40), subtitles=True),
        "odd": make_clip(folder / "odd.mp4", w=47, h=31, pix_fmt="yuv444p", audio=False),
        "ten": make_clip(folder / "ten.mkv", pix_fmt="yuv420p10le", audio=False),
    }


def image_path(upscaler, path: Path, size: tuple[int, int]) -> list[np.ndarray]:
    """What the image path makes of each decoded input frame, at ``size`` (height, width)."""
    return [upscaler.upscale(rgb, size=size) for rgb in rgb_frames(path)]


def test_mp4_size_frames_timestamps_audio_and_quality(clips, upscaler, tmp_path, capsys):
    out = tmp_path / "moving_72x48.mp4"
    code, stdout, err = run([clips["mp4"], "--size", "72x48", "--out", out, "--threads", "1"], capsys)
    assert code == 0, err
    assert f"({FRAMES} frames; copied audio aac)" in stdout
    assert "frame/s" in err  # the progress bar's rate (and ETA) on stderr
    facts = video_stream_facts(out)
    assert facts["size"] == (72, 48) and facts["codec"] == "h264" and facts["pix_fmt"] == "yuv420p"
    assert facts["kinds"] == ["video", "audio"]
    assert (facts["colorspace"], facts["range"]) == (1, 1)  # BT.709 limited, as the input
    assert frame_times(out) == frame_times(clips["mp4"])
    assert copied_packets(out, "audio") == copied_packets(clips["mp4"], "audio")  # remuxed, bit-identical
    reference = image_path(upscaler, clips["mp4"], (48, 72))
    decoded = list(rgb_frames(out))
    assert len(decoded) == FRAMES
    mean = np.mean([psnr(a, b, 255) for a, b in zip(decoded, reference)])  # video PSNR: the mean over frames
    assert mean >= 40, f"default-settings output frames {mean:.1f} dB from the image path"


def test_variable_frame_rate_and_subtitles_kept(clips, tmp_path, capsys):
    out = tmp_path / "vfr_x1.5.mkv"
    code, stdout, err = run([clips["vfr"], "--scale", "1.5", "--out", out, "--threads", "1"], capsys)
    assert code == 0, err
    times = frame_times(clips["vfr"])
    assert len(set(np.diff([float(t) for t in times]).round(3))) == 3  # the input really is variable
    assert frame_times(out) == times
    assert video_stream_facts(out)["kinds"] == ["video", "audio", "subtitle"]
    assert copied_packets(out, "subtitle") == copied_packets(clips["vfr"], "subtitle") != []
    assert copied_packets(out, "audio") == copied_packets(clips["vfr"], "audio")


def test_odd_sizes_exactly_as_asked(clips, tmp_path, capsys):
    out = tmp_path / "odd.mp4"
    code, _, err = run([clips["odd"], "--size", "95x63", "--pix-fmt", "yuv444p", "--out", out, "--threads", "1"],
                       capsys)
    assert code == 0, err
    assert video_stream_facts(out)["size"] == (95, 63)
    assert len(frame_times(out)) == FRAMES
    refused = tmp_path / "odd420.mp4"  # 4:2:0 cannot hold an odd size: said before any upscaling
    code, _, err = run([clips["odd"], "--size", "95x63", "--out", refused], capsys)
    assert_user_error(code, err, "yuv420p needs a frame size divisible by 2x2")
    assert not refused.exists()


def test_ten_bit_stays_ten_bit(clips, upscaler, tmp_path, capsys):
    out = tmp_path / "ten_x2.mkv"
    code, _, err = run([clips["ten"], "--scale", "2", "--out", out, "--threads", "1"], capsys)
    assert code == 0, err
    assert video_stream_facts(out)["pix_fmt"] == "yuv420p10le"
    decoded = list(rgb_frames(out))
    assert decoded[0].dtype == np.uint16
    reference = image_path(upscaler, clips["ten"], (64, 96))
    mean = np.mean([psnr(a, b, 65535) for a, b in zip(decoded, reference)])
    assert mean >= 40, f"10-bit output frames {mean:.1f} dB from the image path"


@pytest.mark.parametrize("clip, suffix, codec, pix_fmt", [("mp4", ".mp4", "h264", "gbrp"),
                                                      ("ten", ".mkv", "ffv1", "gbrp16le")])
def test_lossless_equals_the_image_path(clip, suffix, codec, pix_fmt, clips, upscaler, tmp_path, capsys):
    """8-bit: H.264 RGB at qp 0 (decoded as planar gbrp); deeper: FFV1 16-bit RGB. Both decode to the image path's
    output exactly."""
    out = tmp_path / f"lossless{suffix}"
    code, _, err = run([clips[clip], "--scale", "1.5", "--lossless", "--out", out, "--threads", "1"], capsys)
    assert code == 0, err
    facts = video_stream_facts(out)
    assert (facts["codec"], facts["pix_fmt"]) == (codec, pix_fmt)
    decoded = list(rgb_frames(out))
    reference = image_path(upscaler, clips[clip], (48, 72))
    assert len(decoded) == len(reference) == FRAMES
    for got, want in zip(decoded, reference):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_png_sequence_equals_the_image_path(clips, upscaler, tmp_path, capsys):
    out = tmp_path / "frames" / "f_%04d.png"
    code, _, err = run([clips["mp4"], "--scale", "1.5", "--out", out, "--threads", "1"], capsys)
    assert code == 0, err
    written = sorted((tmp_path / "frames").iterdir())
    assert [p.name for p in written] == [f"f_{i:04d}.png" for i in range(1, FRAMES + 1)]
    for got, want in zip(written, image_path(upscaler, clips["mp4"], (48, 72))):
        np.testing.assert_array_equal(read_image(got), want)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


QUADRANTS = ((0, 0), (0, 32), (24, 0), (24, 32))  # top-left corners of flat_patches' colours in a 64x48 frame


def _patch_errors(src: Path, out: Path) -> list[float]:
    """Largest deviation (8-bit levels) inside each output quadrant from the decoded input quadrant's colour."""
    errors = []
    for before, after in zip(rgb_frames(src, 16), rgb_frames(out, 16)):
        for top, left in QUADRANTS:  # each quadrant's inside, away from its edges (chroma is filtered across them)
            want = before[top + 6: top + 18, left + 8: left + 24].reshape(-1, 3).mean(0) / 257
            got = after[2 * top + 12: 2 * top + 36, 2 * left + 16: 2 * left + 48].reshape(-1, 3) / 257
            errors.append(float(np.abs(got - want).max()))
    return errors


def _flat_clip(folder: Path, pix_fmt: str, matrix: str, rng: str) -> Path:
    return make_clip(folder / "flat.mkv", w=64, h=48, frames=2, pix_fmt=pix_fmt, matrix=matrix, rng=rng,
                     audio=False, picture=flat_patches, crf="0")  # lossless: the input's patches are flat


COLOUR_CASES = [("yuv420p", "bt601", LIMITED), ("yuv420p", "bt709", FULL), ("yuv420p10le", "bt709", LIMITED)]


@pytest.mark.parametrize("pix_fmt, matrix, rng", COLOUR_CASES)
def test_flat_colours_survive_the_round_trip(pix_fmt, matrix, rng, tmp_path):
    """The whole job (decode, RGB, encode with the default settings, mux) around an exact identity-like
    upscale, pixel replication x2, so only the colour handling and the codec are measured: within 2 levels."""
    src = _flat_clip(tmp_path, pix_fmt, matrix, rng)
    out = tmp_path / "flat_x2.mkv"
    plan = plan_video(src, out, False, None, (96, 128), None, None, None, False)
    run_video(plan, lambda rgb: np.repeat(np.repeat(rgb, 2, axis=0), 2, axis=1), progress=False)
    facts = video_stream_facts(out)
    assert (facts["colorspace"], facts["range"]) == (AVCOL[matrix], AVRANGE[rng])  # tagged as the input
    assert facts["pix_fmt"] in (pix_fmt, pix_fmt.replace("yuv", "yuvj"))  # H.264 decoders name full range so
    assert max(_patch_errors(src, out)) <= 2.0


@pytest.mark.parametrize("pix_fmt, matrix, rng", COLOUR_CASES[1:])
def test_flat_colours_through_the_default_model(pix_fmt, matrix, rng, tmp_path, capsys):
    """The same through asisr-run and the bundled model: its own flat-area error (up to ~2 levels at x2 on
    these colours) comes on top, so 3 levels."""
    src = _flat_clip(tmp_path, pix_fmt, matrix, rng)
    out = tmp_path / "flat_x2.mkv"
    code, _, err = run([src, "--scale", "2", "--out", out, "--threads", "1"], capsys)
    assert code == 0, err
    assert max(_patch_errors(src, out)) <= 3.0


@pytest.mark.parametrize("matrix", ["bt601", "bt709", "bt2020"])
@pytest.mark.parametrize("rng", [LIMITED, FULL])
def test_conversions_match_the_formulas(matrix, rng):
    """RGB -> Y'CbCr rounds the textbook formulas once; swscale's Y'CbCr -> RGB (8 and 16 bits) within rounding."""
    noise = np.random.default_rng(0)
    colour = Colour(matrix, rng)
    rgb = noise.integers(0, 256, (16, 16, 3)).astype(np.uint8)
    frame = from_rgb(rgb, "yuv444p", colour)
    planes = frame.to_ndarray().astype(np.float64)  # (3, H, W): Y, Cb, Cr
    exact = rgb_to_yuv_reference(rgb / 255.0, colour, 8)
    assert np.abs(planes.transpose(1, 2, 0) - exact).max() <= 0.501
    expected = np.clip(yuv_to_rgb_reference(planes[0], planes[1], planes[2], colour, 8), 0, 1)
    assert np.abs(to_rgb(frame, colour, 8) - expected * 255).max() <= 0.51
    assert np.abs(to_rgb(frame, colour, 16) - expected * 65535).max() <= 8  # of 65535
    deep = noise.integers(0, 65536, (16, 16, 3)).astype(np.uint16)
    frame = from_rgb(deep, "yuv444p10le", colour)
    y, cb, cr = (np.frombuffer(bytes(p), np.uint16).reshape(p.height, -1)[:, :p.width].astype(np.float64)
                 for p in frame.planes)
    assert np.abs(np.stack([y, cb, cr], -1) - rgb_to_yuv_reference(deep / 65535.0, colour, 10)).max() <= 0.501
    expected = np.clip(yuv_to_rgb_reference(y, cb, cr, colour, 10), 0, 1) * 65535
    assert np.abs(to_rgb(frame, colour, 10).astype(np.float64) - expected).max() <= 8  # of 65535


def _no_output(path: Path) -> None:
    assert not path.exists()
    assert not [p for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.")]


def _zero_frame_clip(src: Path, path: Path) -> Path:
    """A Matroska file with ``src``'s video track declared and its audio, but not one video packet."""
    with av.open(str(src)) as c, av.open(str(path), "w") as out:
        out.add_stream_from_template(c.streams.video[0])
        sound = out.add_stream_from_template(c.streams.audio[0])
        for packet in c.demux(c.streams.audio[0]):
            if packet.size:
                packet.stream = sound
                out.mux(packet)
    return path


def _damaged_clip(src: Path, path: Path, bad: int) -> Path:
    """``src``'s video packets remuxed, packet ``bad`` (decode order) replaced by noise."""
    noise = np.random.default_rng(1)
    with av.open(str(src)) as c, av.open(str(path), "w") as out:
        stream = out.add_stream_from_template(c.streams.video[0])
        for k, packet in enumerate(p for p in c.demux(c.streams.video[0]) if p.size):
            if k == bad:
                data = bytes(packet)[:4] + noise.integers(0, 256, packet.size - 4, dtype=np.uint8).tobytes()
                damaged = av.Packet(data)
                damaged.pts, damaged.dts, damaged.time_base = packet.pts, packet.dts, packet.time_base
                packet = damaged
            packet.stream = stream
            out.mux(packet)
    return path


@pytest.mark.parametrize("case", ["not_a_video", "truncated", "unknown_codec", "output_exists", "zero_frames",
                                  "audio_only", "subtitles_into_mp4", "bad_crf", "image_suffix_out"])
def test_bad_input_is_one_line_and_writes_nothing(case, clips, tmp_path, capsys):
    src, out, extra = clips["mp4"], tmp_path / "out.mp4", []
    if case == "not_a_video":
        src = tmp_path / "notes.mp4"
        src.write_text("this is not a video\n" * 20)
        fragment = "cannot read"
    elif case == "truncated":
        src = tmp_path / "cut.mp4"
        src.write_bytes(clips["mp4"].read_bytes()[: clips["mp4"].stat().st_size // 2])
        fragment = "truncated"
    elif case == "unknown_codec":
        extra, fragment = ["--codec", "prores_xyz"], "video codec 'prores_xyz' is not available"
    elif case == "output_exists":
        out.write_bytes(b"keep me")
        fragment = "output exists"
    elif case == "zero_frames":
        src, fragment = _zero_frame_clip(clips["mp4"], tmp_path / "empty.mkv"), "no frames in"
    elif case == "audio_only":
        src = tmp_path / "sound.mkv"
        with av.open(str(clips["mp4"])) as c, av.open(str(src), "w") as o:
            stream = o.add_stream_from_template(c.streams.audio[0])
            for p in c.demux(c.streams.audio[0]):
                if p.size:
                    p.stream = stream
                    o.mux(p)
        fragment = "no video stream"
    elif case == "subtitles_into_mp4":
        src, fragment = clips["vfr"], "cannot be copied into .mp4"
    elif case == "bad_crf":
        extra, fragment = ["--crf", "70"], "--crf 70 is out of range"
    else:
        out, fragment = tmp_path / "out.jpg", "unsupported video output '.jpg'"
    code, _, err = run([src, "--scale", "2", "--out", out, *extra], capsys)
    assert_user_error(code, err, fragment)
    if case == "output_exists":
        assert out.read_bytes() == b"keep me"
    else:
        _no_output(out)


def test_video_options_on_an_image_are_refused(tmp_path, capsys):
    from asisr.imageio import write_image

    src, out = tmp_path / "photo.png", tmp_path / "photo_x2.png"
    write_image(src, np.zeros((8, 8, 3), np.uint8))
    code, _, err = run([src, "--scale", "2", "--out", out, "--crf", "20"], capsys)
    assert_user_error(code, err, "apply to video inputs")
    assert not out.exists()


def test_damaged_frame_named_or_skipped(clips, tmp_path, capsys):
    src = _damaged_clip(clips["mp4"], tmp_path / "damaged.mkv", bad=4)
    out = tmp_path / "out.mkv"
    code, _, err = run([src, "--scale", "1.5", "--out", out, "--threads", "1"], capsys)
    assert code == 2 and "Traceback" not in err
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert last.startswith("error: frame ") and "cannot be decoded" in last and "--skip-bad-frames" in last
    named = float(last.split("(at ")[1].split(" s)")[0])  # the damaged packet's display time, and its number
    times = [round(float(t), 3) for t in frame_times(clips["mp4"])]
    assert named in times and last.startswith(f"error: frame {times.index(named) + 1} (at ")
    _no_output(out)
    code, stdout, err = run([src, "--scale", "1.5", "--out", out, "--threads", "1", "--skip-bad-frames"], capsys)
    assert code == 0, err
    assert f"({FRAMES} frames; 1 bad frames replaced by the previous one)" in stdout
    lost_start = _damaged_clip(clips["mp4"], tmp_path / "no_keyframe.mkv", bad=0)  # nothing decodes without it
    code, _, err = run([lost_start, "--scale", "1.5", "--out", tmp_path / "none.mkv", "--skip-bad-frames"], capsys)
    assert_user_error(code, err, "decodes (1 damaged)")
    _no_output(tmp_path / "none.mkv")
    # the replacement sits at the lost frame's time (Matroska keeps milliseconds)
    assert [round(float(t), 3) for t in frame_times(out)] == [round(float(t), 3) for t in frame_times(clips["mp4"])]


def test_interrupted_run_leaves_no_output(clips, upscaler, tmp_path):
    """Ctrl-C during the 3rd frame's upscale: the temporary file goes, nothing appears under the final name."""
    out = tmp_path / "interrupted.mp4"
    plan = plan_video(clips["mp4"], out, False, None, (48, 72), None, None, None, False)
    done = []

    def upscale_then_interrupt(rgb):
        if len(done) == 2:
            raise KeyboardInterrupt
        done.append(1)
        return upscaler.upscale(rgb, size=(48, 72))

    with pytest.raises(KeyboardInterrupt):
        run_video(plan, upscale_then_interrupt, progress=False)
    _no_output(out)
    assert list(tmp_path.iterdir()) == []
