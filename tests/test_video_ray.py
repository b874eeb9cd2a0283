"""``asisr-run clip.mp4 --engine ray``: a video cut at keyframes, segments upscaled on a real local Ray cluster.

Clips are generated with PyAV (48x32, 40 frames, a keyframe every 8) and every run uses the
bundled default model on ONNX Runtime, one thread per actor. What a user relies on is checked on
the decoded files: the same frames, timestamps and audio as the input, every segment starting on a
keyframe, lossless output equal to the local run's, packets copied at the join (not re-encoded),
and bad input failing with one line and no output (no segment files left either).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="needs Ray, an optional extra (pip install 'asisr[ray]')")
av = pytest.importorskip("av", reason="PyAV is not installed (pip install 'asisr[video]'): no video tests")
# Ray Data's and Serve's log handlers keep the sys.stderr they find when imported: imported here, while the
# suite is collected, they keep pytest's session-long stream, not the captured stderr of whichever test
# imported them first (closed when that test ends, after which every Ray log line becomes a traceback).
pytest.importorskip("ray.data")
pytest.importorskip("ray.serve")

from asisr.cli.run import main as run_main  # noqa: E402
from asisr.imageio import read_image  # noqa: E402
from asisr.video.job import plan_video, rgb_frames  # noqa: E402
from asisr.video.segments import encode_segment, join_segments, plan_segments, scan_packets  # noqa: E402
from tests.cli_helpers import invoke  # noqa: E402
from tests.processes import exited  # noqa: E402
from tests.test_video import _damaged_clip, copied_packets, frame_times, make_clip, psnr  # noqa: E402

# The full tier's: the fast tier has a real Ray run (test_ray.py) and a video round trip (test_video.py).
pytestmark = pytest.mark.slow

FRAMES, GOP = 40, 8
RAY = ["--engine", "ray", "--workers", "2", "--threads", "1"]


def run(args, capsys):
    return invoke(run_main, args, capsys)


def run_ok(args, capsys) -> str:
    """asisr-run that must succeed: its stdout."""
    code, stdout, err = run(args, capsys)
    assert code == 0, err
    return stdout


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    return {
        "mp4": make_clip(folder / "gops.mp4", frames=FRAMES, gop=GOP),
        "vfr": make_clip(folder / "vfr.mkv", frames=FRAMES, gop=GOP, vfr_steps=(30, 50, 40), subtitles=True),
        "one_gop": make_clip(folder / "one_gop.mp4", frames=12, audio=False),
    }


@pytest.fixture(scope="module")
def upscaler():
    from asisr.sources import open_upscaler

    with open_upscaler(None, threads=1) as up:
        yield up


def keyframe_times(path: Path) -> list:
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        return [p.pts * stream.time_base for p in c.demux(stream) if p.size and p.is_keyframe]


def video_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(c.streams.video[0]) if p.size]


def assert_error_line(code: int, err: str, fragment: str) -> None:
    """Exit 2 and the error as the last line, no traceback (the progress bar may show how far it got)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and "Traceback" not in err and lines[-1].startswith("error: ") and fragment in lines[-1], err


def no_leftovers(folder: Path) -> None:
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_segments_keep_frames_timing_audio_and_quality(ray_cluster, clips, upscaler, tmp_path, capsys):
    out = tmp_path / "x2.mp4"
    stdout = run_ok([clips["mp4"], "--scale", "2", "--out", out, *RAY], capsys)
    assert f"({FRAMES} frames; copied audio aac; 5 segments on Ray)" in stdout  # 40 frames, 2 workers x 4 parts
    assert frame_times(out) == frame_times(clips["mp4"])
    assert copied_packets(out, "audio") == copied_packets(clips["mp4"], "audio")
    assert keyframe_times(out) == keyframe_times(clips["mp4"])  # every segment starts on one, as the input's GOPs
    decoded = list(rgb_frames(out))
    reference = [upscaler.upscale(rgb, scale=2) for rgb in rgb_frames(clips["mp4"])]
    assert len(decoded) == FRAMES and decoded[0].shape == (64, 96, 3)
    mean = np.mean([psnr(a, b, 255) for a, b in zip(decoded, reference)])
    assert mean >= 40, f"segmented output frames {mean:.1f} dB from the image path"
    no_leftovers(tmp_path)


def test_lossless_on_ray_equals_the_local_run(ray_cluster, clips, tmp_path, capsys):
    local, remote = tmp_path / "local.mkv", tmp_path / "ray.mkv"
    for out, extra in ((local, ["--threads", "1"]), (remote, RAY)):
        run_ok([clips["mp4"], "--scale", "1.5", "--lossless", "--out", out, *extra], capsys)
    got, want = list(rgb_frames(remote)), list(rgb_frames(local))
    assert len(got) == len(want) == FRAMES
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    assert frame_times(remote) == frame_times(local)


def test_variable_frame_rate_and_subtitles(ray_cluster, clips, tmp_path, capsys):
    out = tmp_path / "vfr_x2.mkv"
    stdout = run_ok([clips["vfr"], "--scale", "2", "--out", out, *RAY], capsys)
    assert "copied audio aac, subtitle srt" in stdout
    assert frame_times(out) == frame_times(clips["vfr"])
    assert copied_packets(out, "subtitle") == copied_packets(clips["vfr"], "subtitle")
    assert copied_packets(out, "audio") == copied_packets(clips["vfr"], "audio")


def test_png_sequence_on_ray_equals_the_local_one(ray_cluster, clips, tmp_path, capsys):
    for name, extra in (("local", ["--threads", "1"]), ("ray", RAY)):
        run_ok([clips["mp4"], "--scale", "1.5", "--out", tmp_path / name / "f_%04d.png", *extra], capsys)
    local, remote = sorted((tmp_path / "local").iterdir()), sorted((tmp_path / "ray").iterdir())
    assert [p.name for p in remote] == [f"f_{i:04d}.png" for i in range(1, FRAMES + 1)]
    for a, b in zip(local, remote):
        np.testing.assert_array_equal(read_image(a), read_image(b))
    no_leftovers(tmp_path)


def test_one_keyframe_is_one_segment(ray_cluster, clips, tmp_path, capsys):
    out = tmp_path / "one.mp4"
    stdout = run_ok([clips["one_gop"], "--scale", "2", "--out", out, *RAY], capsys)
    assert "(12 frames; 1 segment on Ray)" in stdout
    assert frame_times(out) == frame_times(clips["one_gop"])


def test_the_join_copies_the_segments_packets(clips, upscaler, tmp_path):
    """Without Ray: segments encoded one by one, then joined; the output's video packets are the segments'
    packets, byte for byte, in order (nothing was decoded or encoded again at the joins)."""
    out = tmp_path / "joined.mp4"
    plan = plan_video(clips["mp4"], out, False, None, (48, 72), None, None, None, False)
    packets = scan_packets(plan)
    segments = plan_segments(packets, 3)
    assert [s.window.frames for s in segments] == [16, 16, 8]  # whole GOPs of 8, about 40 / 3 frames each
    folder = tmp_path / "parts"
    folder.mkdir()
    outputs = [encode_segment(plan, s, lambda rgb: upscaler.upscale(rgb, size=(48, 72)), folder) for s in segments]
    result = join_segments(plan, outputs, packets, out)
    assert result.frames == FRAMES and result.copied == ["audio aac"]
    assert video_packets(out) == [b for o in outputs for b in video_packets(o.path)]
    assert frame_times(out) == frame_times(clips["mp4"])


@pytest.mark.parametrize("case", ["truncated", "output_exists", "damaged_frame"])
def test_bad_input_on_ray_is_one_line_and_leaves_nothing(case, ray_cluster, clips, tmp_path, capsys):
    src, out = clips["mp4"], tmp_path / "out.mkv"
    if case == "truncated":
        src = tmp_path / "cut.mp4"
        src.write_bytes(clips["mp4"].read_bytes()[: clips["mp4"].stat().st_size // 2])
        fragment = "truncated"
    elif case == "output_exists":
        out.write_bytes(b"keep me")
        fragment = "output exists"
    else:
        src = _damaged_clip(clips["mp4"], tmp_path / "damaged.mkv", bad=27)  # inside the 4th GOP
        code, _, err = run([src, "--scale", "2", "--out", tmp_path / "local.mkv", "--threads", "1"], capsys)
        fragment = [line for line in err.splitlines() if line.strip()][-1].removeprefix("error: ")
        assert "cannot be decoded" in fragment  # the same frame named as by the local run
    code, _, err = run([src, "--scale", "2", "--out", out, *RAY], capsys)
    assert_error_line(code, err, fragment)
    if case == "output_exists":
        assert out.read_bytes() == b"keep me"
    else:
        assert not out.exists()
    no_leftovers(tmp_path)
    if case == "damaged_frame":
        stdout = run_ok([src, "--scale", "2", "--out", out, "--skip-bad-frames", *RAY], capsys)
        assert f"({FRAMES} frames; 1 bad frames replaced by the previous one;" in stdout
        assert len(frame_times(out)) == FRAMES


def _segments_open(pid: int, folder: Path) -> list[str]:
    """The files inside ``folder`` that process ``pid`` has open (none if it is gone)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return []
    names = []
    for fd in fds:
        try:
            target = Path(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
        if target.parent == folder and target.name.startswith("segment"):
            names.append(target.name)
    return names


def _encoding_pid(folder: Path) -> int | None:
    """A process other than this one (the driver) with a segment file open in ``folder``: an actor encoding
    that segment (``encode_segment`` keeps its file open from its first frame until the segment is done)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid() and _segments_open(int(entry), folder):
            return int(entry)
    return None


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="finds the encoding actor in /proc/PID/fd (Linux)")
def test_a_killed_worker_loses_no_frame(ray_cluster, clips, tmp_path, capsys):
    """SIGKILL to an actor while it encodes a segment: Ray restarts it, the segment is done again from its start,
    and the output equals the local run's (lossless, so frame for frame). The actor is the process with a
    segment file open; it is stopped (SIGSTOP) and checked to hold that file still before it is killed."""
    from asisr.distributed.batch import Render, UpscalerSpec
    from asisr.distributed.video import SEGMENTS_PER_WORKER, upscale_video_on_ray
    from asisr.scale import Scale

    local, out = tmp_path / "local.mkv", tmp_path / "ray.mkv"
    run_ok([clips["mp4"], "--scale", "1.5", "--lossless", "--out", local, "--threads", "1"], capsys)
    plan = plan_video(clips["mp4"], out, False, Scale(1.5, 1.5), None, None, None, None, True)
    planned = len(plan_segments(scan_packets(plan), 2 * SEGMENTS_PER_WORKER))
    assert planned > 2  # more segments than actors: one is still to begin when the first two run
    seen: dict = {}
    finished = threading.Event()  # the run returned or raised: stop looking

    def freeze_and_kill(pid: int, folder: Path) -> bool:
        """SIGSTOP it, so that what it has open stays so; SIGKILL it if it still encodes a segment and the
        last segment has not begun, else let it go on (it finished that segment meanwhile)."""
        try:
            os.kill(pid, signal.SIGSTOP)
        except ProcessLookupError:
            return False
        try:
            encoding, begun = _segments_open(pid, folder), len(list(folder.glob("segment*")))
            if encoding and begun < planned:
                os.kill(pid, signal.SIGKILL)
                seen.update(killed=pid, encoding=encoding, begun=begun, exited=exited(pid))
                print(f"killed pid {pid} while it encoded {encoding[0]} ({begun} of {planned} segments begun)")
                return True
            return False
        finally:
            if "killed" not in seen:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass

    def kill_one_writer_while_it_encodes():
        deadline = time.monotonic() + 120
        try:
            while not finished.is_set() and time.monotonic() < deadline:
                folders = [f.resolve() for f in tmp_path.glob(".ray.mkv.*.segments")]  # as /proc names it
                pid = _encoding_pid(folders[0]) if folders else None
                if pid is not None and freeze_and_kill(pid, folders[0]):
                    return
                if folders and len(list(folders[0].glob("segment*"))) >= planned:
                    break
                time.sleep(0.005)
            seen["error"] = "no actor was seen encoding a segment before the last segment began"
        except Exception as e:  # said by the test, not lost in this thread
            seen["error"] = repr(e)

    killer = threading.Thread(target=kill_one_writer_while_it_encodes)
    killer.start()
    try:
        result, segments = upscale_video_on_ray(plan, Render(Scale(1.5, 1.5)), UpscalerSpec(threads=1), workers=2,
                                                progress=False)
    finally:
        finished.set()
        killer.join()
    assert "error" not in seen, seen["error"]
    assert seen["killed"] != os.getpid() and seen["exited"], seen  # an actor's process, and the kill ended it
    assert segments == planned and seen["begun"] < segments, seen  # killed before the last segment began
    assert result.frames == FRAMES
    for a, b in zip(rgb_frames(out), rgb_frames(local), strict=True):
        np.testing.assert_array_equal(a, b)
    assert frame_times(out) == frame_times(local)
    no_leftovers(tmp_path)
