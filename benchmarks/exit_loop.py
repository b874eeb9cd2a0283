"""Do asisr's commands exit 0 after a successful run, every time? A loop of real runs per path.

Why: a native library's teardown that races at interpreter exit (torch, ONNX Runtime, Ray,
PyAV, OpenCV) shows up as an occasional rc 139 after correct output, which a user's script
reads as a failure. Each path is run ``--runs`` times as a user runs it, and every exit status
is counted; a non-zero one prints its stderr tail. Paths:

- ``image``: ``asisr-run photo.png --scale 2`` (bundled model on ONNX Runtime);
- ``video``: ``asisr-run clip.mp4 --scale 2`` (PyAV decode and encode);
- ``ray``: ``asisr-run folder/ --engine ray --workers 2`` (starts and stops a local Ray cluster);
- ``serve``: ``asisr-serve`` started, one request answered, then SIGINT (Ray Serve).

Run from the repository root (bounded: each run has a time limit; localhost only):

    python benchmarks/exit_loop.py --runs 50
    python benchmarks/exit_loop.py --runs 50 --paths image,video
"""

from __future__ import annotations

import argparse
import collections
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

PATHS = ("image", "video", "ray", "serve")
MODEL = "lmf"  # the lightest bundled model: the loop is about exiting, not about upscaling


def _inputs(work: Path) -> dict[str, Path]:
    import av

    from asisr.imageio import write_image

    rng = np.random.default_rng(0)
    photo = work / "photo.png"
    write_image(photo, rng.integers(0, 256, (32, 40, 3), dtype=np.uint8))
    folder = work / "photos"
    folder.mkdir()
    for i in range(4):
        write_image(folder / f"p{i}.png", rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    clip = work / "clip.mp4"
    with av.open(str(clip), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        for i in range(6):
            frame = av.VideoFrame.from_ndarray(np.full((24, 32, 3), i * 40, np.uint8), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return {"image": photo, "video": clip, "ray": folder}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(path: str, src: Path, out: Path) -> subprocess.CompletedProcess:
    extra = ["--engine", "ray", "--workers", "2"] if path == "ray" else []
    return subprocess.run([sys.executable, "-m", "asisr.cli.run", str(src), "--scale", "2", "--out", str(out),
                           "--model", MODEL, "--threads", "1", *extra], capture_output=True, text=True, timeout=300)


def run_serve(photo: Path) -> subprocess.CompletedProcess:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "asisr.cli.serve", "--port", str(port), "--model", MODEL,
                             "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url, answered = f"http://127.0.0.1:{port}", False
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not answered:
        try:
            with urllib.request.urlopen(urllib.request.Request(f"{url}/upscale?scale=2", photo.read_bytes()),
                                        timeout=60) as response:
                answered = response.status == 200
        except OSError:
            time.sleep(0.5)
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    rc = proc.returncode if answered else -999  # -999: never answered (not an exit-status question)
    return subprocess.CompletedProcess(proc.args, rc, out, err)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated, of {', '.join(PATHS)}")
    args = p.parse_args(argv)
    paths = args.paths.split(",")
    if set(paths) - set(PATHS):
        p.error(f"unknown paths {sorted(set(paths) - set(PATHS))}")
    rows, clean = [], True
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        inputs = _inputs(work)
        for path in paths:
            statuses: collections.Counter = collections.Counter()
            started = time.perf_counter()
            for i in range(args.runs):
                out = work / f"out_{path}_{i}{'' if path == 'ray' else inputs.get(path, work / 'x.png').suffix}"
                run = run_serve(inputs["image"]) if path == "serve" else run_cli(path, inputs[path], out)
                statuses[run.returncode] += 1
                if run.returncode != 0:
                    print(f"{path} run {i + 1}: exit status {run.returncode}\n{run.stderr[-4000:]}", flush=True)
                print(f"\r{path}: {i + 1}/{args.runs}", end="", file=sys.stderr, flush=True)
            print(file=sys.stderr)
            clean &= set(statuses) == {0}
            rows.append((path, args.runs, dict(sorted(statuses.items())), time.perf_counter() - started))
    print(f"{'path':8} {'runs':>5}  exit statuses          seconds")
    for path, runs, statuses, seconds in rows:
        print(f"{path:8} {runs:5d}  {str(statuses):22} {seconds:7.0f}")
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
