"""Does a process that loaded torch, ONNX Runtime, Ray, PyAV and OpenCV together exit cleanly?

Why: one CI run of the test suite segfaulted at interpreter exit (rc 139) after every test had
passed. This script runs the same mix of native libraries in a fresh child process, ``--runs``
times, and counts the exit statuses. Each child has ``faulthandler`` on and may write a core
file; for every crash the native backtrace of each thread is printed with ``gdb`` (when it is
installed), so the crash can be pinned to the library whose teardown races.

``--parts`` picks what each child does (default: all of them, in the order the suite meets
them): ``torch`` (a matrix product on 2 threads), ``ort`` (the bundled default model on ONNX
Runtime), ``cv2`` (encode and decode a PNG), ``av`` (encode and decode a short clip), ``ray``
(a local cluster, one task and one actor, then ``ray.shutdown()``). ``--no-shutdown`` leaves the
Ray cluster to the interpreter's exit, as a test that forgets its teardown would.

    python benchmarks/exit_probe.py --runs 100
    python benchmarks/exit_probe.py --runs 50 --parts torch,ort,ray --no-shutdown
"""

from __future__ import annotations

import argparse
import collections
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PARTS = ("torch", "ort", "cv2", "av", "ray")

CHILD = r'''
import faulthandler, sys
faulthandler.enable()
parts, shutdown = sys.argv[1].split(","), sys.argv[2] == "1"
import numpy as np
import torch, onnxruntime, cv2, av, ray  # every library loaded, whichever parts run
if "torch" in parts:
    torch.set_num_threads(2)
    a = torch.randn(512, 512)
    (a @ a).sum().item()
if "ort" in parts:
    from asisr.sources import open_upscaler
    with open_upscaler(None, threads=2) as up:
        up.upscale(np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8), scale=2)
if "cv2" in parts:
    ok, png = cv2.imencode(".png", np.zeros((16, 16, 3), np.uint8))
    cv2.imdecode(png, cv2.IMREAD_UNCHANGED)
if "av" in parts:
    import io
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i * 40, np.uint8), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    buf.seek(0)
    with av.open(buf) as inp:
        sum(1 for _ in inp.decode(video=0))
if "ray" in parts:
    import logging
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    @ray.remote
    def square(x):
        return x * x
    @ray.remote
    class Counter:
        def add(self, x):
            return x + 1
    assert ray.get(square.remote(3)) == 9 and ray.get(Counter.remote().add.remote(1)) == 2
    if shutdown:
        ray.shutdown()
import threading
print("done; threads alive at exit:", sorted(t.name for t in threading.enumerate() if t is not threading.main_thread()),
      flush=True)
'''


def _allow_core() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


def backtrace(core: Path) -> str:
    if shutil.which("gdb") is None:
        return "(gdb is not installed: no native backtrace)"
    run = subprocess.run(["gdb", "-batch", "-q", "-ex", "thread apply all bt 25", sys.executable, str(core)],
                         capture_output=True, text=True, timeout=300)
    return run.stdout[-12000:]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    p.add_argument("--no-shutdown", action="store_true", help="leave the Ray cluster to the interpreter's exit")
    args = p.parse_args(argv)
    unknown = set(args.parts.split(",")) - set(PARTS)
    if unknown:
        p.error(f"unknown parts {sorted(unknown)}")
    statuses: collections.Counter = collections.Counter()
    started = time.perf_counter()
    for i in range(args.runs):
        with tempfile.TemporaryDirectory() as work:
            run = subprocess.run([sys.executable, "-c", CHILD, args.parts, "0" if args.no_shutdown else "1"],
                                 cwd=work, capture_output=True, text=True, timeout=600, preexec_fn=_allow_core)
            statuses[run.returncode] += 1
            if i == 0:
                print(f"run 1: {run.stdout.strip()}", flush=True)
            if run.returncode != 0 or "done" not in run.stdout:
                print(f"run {i + 1}: exit status {run.returncode}\n{run.stderr[-6000:]}", flush=True)
                for core in Path(work).glob("core*"):
                    print(backtrace(core), flush=True)
        print(f"\r{i + 1}/{args.runs} runs, exit statuses {dict(statuses)}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    print(f"parts {args.parts}, ray.shutdown() {'no' if args.no_shutdown else 'yes'}: {args.runs} runs in "
          f"{time.perf_counter() - started:.0f} s, exit statuses {dict(sorted(statuses.items()))}")
    return 0 if set(statuses) == {0} else 1


if __name__ == "__main__":
    sys.exit(main())
