"""asisr on a real local Ray cluster: folder runs on Ray Data, the HTTP service on Ray Serve.

The session's one Ray start-up (2 CPUs, ``ray_cluster`` in conftest) serves the whole file. The
batch run is compared byte for byte with the local run; a worker is killed with SIGKILL while a
run goes on (the one that waits for an image's claim, which the test holds); the service is the
``asisr-serve`` command itself, joined to the test cluster, loaded from localhost, sent every
kind of bad request, then stopped with SIGINT. Without Ray the commands' one-line error is
checked in a subprocess where ``import ray`` fails. The tests pin the lighter bundled model (its
ONNX graphs ship), so the file's time does not depend on which bundled model is the default.
The tests run in any order: each service test gets a running ``asisr-serve`` (started again if
an earlier test stopped it), and each folder run gets the cluster with the service stopped, as
its replica holds one of the two CPUs the runs' two actors need.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="needs Ray, an optional extra (pip install 'asisr[ray]')")
# Ray Data's and Serve's log handlers keep the sys.stderr they find when imported: imported here, while the
# suite is collected, they keep pytest's session-long stream, not the captured stderr of whichever test
# imported them first (closed when that test ends, after which every Ray log line becomes a traceback).
pytest.importorskip("ray.data")
pytest.importorskip("ray.serve")

from asisr.cli.run import main as run_main  # noqa: E402
from asisr.distributed.batch import upscale_folder_on_ray  # noqa: E402
from asisr.errors import UserError  # noqa: E402
from asisr.imageio import read_image, write_image  # noqa: E402
from asisr.locks import claim_for  # noqa: E402
from asisr.sources import open_upscaler  # noqa: E402
from tests.cli_helpers import invoke  # noqa: E402
from tests.processes import exited, lock_waiters  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHAPES = [(30, 40, 3)] * 5 + [(31, 43, 3)]  # 40x30 images, one odd-sized
MAX_PIXELS, MAX_BODY = 50_000, 64 << 10
MODEL = "eqsr_light"


@pytest.fixture
def cluster(ray_cluster, service) -> str:
    """The session's cluster (its address) with both CPUs free for a folder run's two actors: a running
    ``asisr-serve`` is stopped first (its replica holds a CPU; a later service test starts it again)."""
    service.stop()
    return ray_cluster


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Six small images and one corrupt file (a PNG cut short)."""
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(16)
    for i, shape in enumerate(SHAPES):
        write_image(folder / f"img{i}.png", rng.integers(0, 256, shape, dtype=np.uint8))
    (folder / "broken.png").write_bytes((folder / "img0.png").read_bytes()[:60])
    return folder


@pytest.fixture(scope="module")
def upscaler():
    """The local run's upscaler (one thread), for reference outputs."""
    with open_upscaler(MODEL, threads=1) as up:
        yield up


def _outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and "Traceback" not in err, err
    return lines[-1]


def test_ray_run_equals_the_local_run_and_reports_the_corrupt_image(cluster, photos, tmp_path, capsys):
    local, distributed = tmp_path / "local", tmp_path / "ray"
    code, _, err = invoke(run_main, [photos, "-s", "2.5", "-o", local, "--threads", "1", "-m", MODEL], capsys)
    assert code == 2 and "1 of 7 images failed" in err
    local_line = _error_line(err)
    code, out, err = invoke(run_main, [photos, "-s", "2.5", "-o", distributed, "--threads", "1", "-m", MODEL,
                                       "--engine", "ray", "--workers", "2"], capsys)
    assert code == 2, err
    assert "skipped broken.png: cannot decode image" in err
    assert _error_line(err) == local_line  # the local run's last line, word for word
    assert local_line.startswith("error: 1 of 7 images failed (first: broken.png: cannot decode image")
    assert _outputs(distributed) == _outputs(local)  # byte for byte, nothing hidden left behind
    assert len(_outputs(local)) == 6 and read_image(distributed / "img5.png").shape == (78, 108, 3)


def test_a_restart_does_only_what_is_missing(cluster, photos, tmp_path):
    out = tmp_path / "out"
    first = upscale_folder_on_ray(photos, out, scale=2, model=MODEL, workers=2, progress=False)
    assert (first.total, first.written, len(first.failed)) == (7, 6, 1)
    finished = {name: (out / name).stat().st_mtime_ns for name in ("img0.png", "img2.png", "img3.png", "img4.png")}
    redo = {name: (out / name).read_bytes() for name in ("img1.png", "img5.png")}
    for name in redo:
        (out / name).unlink()
    again = upscale_folder_on_ray(photos, out, scale=2, model=MODEL, workers=2, progress=False)
    assert (again.total, again.existed, again.written) == (3, 4, 2)  # img1, img5 and the corrupt one
    assert again.failed == ["broken.png: cannot decode image (corrupt or not an image): " + str(photos / "broken.png")]
    assert {name: (out / name).stat().st_mtime_ns for name in finished} == finished  # untouched
    assert {name: (out / name).read_bytes() for name in redo} == redo
    with pytest.raises(UserError, match="1 of 3 images failed"):
        again.summary()


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="finds the blocked actor in /proc/locks (Linux)")
def test_a_killed_worker_loses_nothing(cluster, upscaler, tmp_path):
    """The test holds p5.png's claim, so the actor given p5 blocks on it with the other images done or under
    way; that actor (the one process waiting for the lock) is killed, then the claim is let go. Ray restarts
    the actor and retries its task: nothing is lost or written twice."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    rng = np.random.default_rng(3)
    images = {f"p{i}.png": rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for i in range(6)}
    for name, image in images.items():
        write_image(src / name, image)
    held = claim_for(out / "p5.png")
    held.acquire()  # p5.png cannot be written while the test holds its claim: the kill lands mid-run
    lock, seen, finished = held.path, {}, threading.Event()

    def kill_the_actor_waiting_for_the_claim():
        try:
            deadline = time.monotonic() + 120
            while not (waiters := lock_waiters(lock)):
                if finished.is_set() or time.monotonic() > deadline:
                    seen["error"] = f"no process blocked on {lock.name} while the run went on (120 s at most)"
                    return
                time.sleep(0.02)
            pid = waiters[0]
            seen["done_at_kill"] = len(list(out.glob("p*.png")))
            seen["command"] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            os.kill(pid, signal.SIGKILL)
            seen["killed"], seen["exited"] = pid, exited(pid)
            print(f"killed pid {pid} ({seen['command']}) blocked on {lock.name}; exited: {seen['exited']}")
        except Exception as e:  # said by the test, not lost in this thread
            seen["error"] = repr(e)
        finally:
            held.release()  # whatever happened: the run can finish

    killer = threading.Thread(target=kill_the_actor_waiting_for_the_claim)
    killer.start()
    try:
        result = upscale_folder_on_ray(src, out, scale=4, model=MODEL, workers=2, progress=False)
    finally:
        finished.set()
        killer.join()
    assert "error" not in seen, seen["error"]
    assert seen["killed"] != os.getpid() and seen["exited"], seen  # a worker process, and the kill ended it
    assert seen["done_at_kill"] < len(images), seen  # killed mid-run (p5.png was not done)
    assert result.failed == [] and result.written + result.others == len(images)
    assert sorted(p.name for p in out.iterdir()) == sorted(images)  # no temporary or lock file left
    for name, image in images.items():
        assert np.array_equal(read_image(out / name), upscaler.upscale(image, scale=4)), name


def test_ctrl_c_says_what_was_written_and_the_same_command_resumes(cluster, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    rng = np.random.default_rng(4)
    for i in range(6):
        write_image(src / f"q{i}.png", rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    out.mkdir()
    held = claim_for(out / "q5.png")
    held.acquire()  # q5.png cannot be written while the test holds its claim: Ctrl-C lands mid-run, however loaded
    command = [sys.executable, "-m", "asisr.cli.run", str(src), "--scale", "4", "--out", str(out), "--engine", "ray",
               "--ray-address", cluster, "--workers", "2", "--threads", "1", "--model", MODEL]
    try:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and not any(out.glob("q*.png")):
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        # The claim is let go a moment later: an interrupted Ray run waits for the tasks under way, the
        # one blocked on the claim included, before it reports what was written.
        time.sleep(1.0)
    finally:
        held.release()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    line = _error_line(err)
    assert line.startswith("interrupted: ") and line.endswith(f"of 6 images written to {out}; run the same command "
                                                               "again to resume"), err
    written = int(line.split()[1])
    finished = [p for p in out.iterdir() if not p.name.startswith(".")]
    assert 1 <= len(finished) < 6 and written <= len(finished), (line, finished)
    for path in finished:
        assert read_image(path).shape == (192, 256, 3)  # complete, never partial under its final name
    again = upscale_folder_on_ray(src, out, scale=4, model=MODEL, workers=2, progress=False)
    assert again.existed == len(finished) and again.written == 6 - len(finished) and not again.failed
    assert sorted(p.name for p in out.iterdir()) == [f"q{i}.png" for i in range(6)]


def test_a_pool_larger_than_the_cluster_is_refused(ray_cluster, photos, tmp_path, capsys):
    code, _, err = invoke(run_main, [photos, "-s", "2", "-o", tmp_path / "o", "-m", MODEL, "--engine", "ray",
                                     "--workers", "3"], capsys)
    assert code == 2 and "need 3 CPUs, the Ray cluster has 2 CPUs" in _error_line(err)
    with pytest.raises(UserError, match=r"need 2 CPUs and 2 GPUs, the Ray cluster has 2 CPUs and 0 GPUs: lower "
                                        r"--workers, or join a cluster with GPUs"):
        upscale_folder_on_ray(photos, tmp_path / "o", scale=2, model=MODEL, workers=2, providers=["cuda"])
    code, _, err = invoke(run_main, [photos / "img0.png", "-s", "2", "-o", tmp_path / "x.png", "--engine", "ray"],
                          capsys)
    assert code == 2 and "--engine ray runs a folder of images" in _error_line(err)
    assert not (tmp_path / "o").exists() and not (tmp_path / "x.png").exists()


# ---- the service: asisr-serve joined to the test cluster ----------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(url: str, data: bytes | None = None, method: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _free_cpus(timeout: float = 60) -> None:
    """Wait until every CPU of the cluster is free again (a stopped replica's is given back shortly after)."""
    deadline = time.monotonic() + timeout
    while ray.available_resources().get("CPU", 0) < ray.cluster_resources().get("CPU", 0):
        if time.monotonic() > deadline:
            pytest.fail(f"the cluster's CPUs were not all free {timeout:g} s after asisr-serve stopped: "
                        f"{ray.available_resources()} of {ray.cluster_resources()}")
        time.sleep(0.1)


class Service:
    """``asisr-serve`` joined to the test cluster, started when a test needs it and none is running.

    Serve is one per cluster, so a new process is started only once the previous one has exited.
    Its stderr goes to a file (a pipe nobody reads could fill up and block it)."""

    def __init__(self, address: str, logs: Path):
        self.address, self.logs = address, logs
        self.proc: subprocess.Popen | None = None
        self.url, self.log, self.starts = "", logs / "none.log", 0

    def start(self) -> "Service":
        """Running and answering /health: the one already running, or a new one."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        self.stop()  # reaps the one an earlier test stopped
        port = _free_port()
        self.starts += 1
        self.url, self.log = f"http://127.0.0.1:{port}", self.logs / f"serve{self.starts}.log"
        command = [sys.executable, "-m", "asisr.cli.serve", "--ray-address", self.address, "--port", str(port),
                   "--max-pixels", str(MAX_PIXELS), "--max-body", str(MAX_BODY), "--threads", "1", "--model", MODEL]
        with open(self.log, "w") as err:
            self.proc = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=err, text=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if _request(self.url + "/health")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.25)
        _, err = self.stop()
        pytest.fail("asisr-serve did not come up within 90 s: " + err[-3000:])

    def stop(self, signum: int = signal.SIGTERM) -> tuple[int | None, str]:
        """Stop it with ``signum`` (SIGKILL if it has not exited 60 s later) unless it has stopped already,
        and wait for it to exit and for its CPU to be free; its exit status and stderr (None, "" if none ran)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None, ""
        if proc.poll() is None:
            proc.send_signal(signum)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.returncode != 0:  # it did not take Serve down with it: do it here, so the cluster is free
            from ray import serve

            serve.shutdown()
        _free_cpus()
        return proc.returncode, self.log.read_text()


@pytest.fixture(scope="module")
def service(ray_cluster, tmp_path_factory):
    service = Service(ray_cluster, tmp_path_factory.mktemp("serve"))
    yield service
    service.stop()


@pytest.fixture
def server(service) -> Service:
    """A running asisr-serve: ``.url``; ``.stop()`` ends it (the next test that asks gets a new one)."""
    return service.start()


@pytest.mark.slow  # the service: the full tier's (each start takes ~7 s)
def test_health_says_the_model_and_limits(server, upscaler):
    code, body = _request(server.url + "/health")
    assert code == 200
    health = json.loads(body)
    assert health.pop("replica").keys() == {"images", "batches", "largest_batch"}
    assert health == {"status": "ok", "model": upscaler.descriptor.arch, "max_scale": upscaler.max_scale,
                      "max_pixels": MAX_PIXELS, "max_body": MAX_BODY}


@pytest.mark.slow  # the service: the full tier's (each start takes ~7 s)
def test_concurrent_requests_equal_the_local_upscale(server, photos, upscaler):
    jobs = [(f"img{i % 6}.png", query) for i, query in
            enumerate(["scale=2", "scale=3", "size=64x50", "scale=2.5x2"] * 4)]  # 16 requests, shapes mixed
    expected = {}
    for name, query in set(jobs):
        key, value = query.split("=")
        if key == "scale":
            from asisr.scale import parse_scale

            expected[name, query] = upscaler.upscale(read_image(photos / name), scale=parse_scale(value))
        else:
            expected[name, query] = upscaler.upscale(read_image(photos / name), size=(50, 64))

    def ask(job):
        name, query = job
        return job, _request(f"{server.url}/upscale?{query}", (photos / name).read_bytes())

    before = json.loads(_request(server.url + "/health")[1])["replica"]
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(ask, jobs))
    for job, (code, body) in answers:
        assert code == 200, body
        image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_UNCHANGED)[:, :, ::-1]
        assert np.array_equal(image, expected[job]), job
    after = json.loads(_request(server.url + "/health")[1])["replica"]  # one replica: it computed them all
    assert after["images"] - before["images"] == len(jobs)
    assert after["batches"] - before["batches"] < len(jobs) and after["largest_batch"] >= 2  # requests were batched


@pytest.mark.slow
@pytest.mark.parametrize("path, query, body, status, message", [
    ("/upscale", "", "img", 400, "give exactly one of the parameters scale (e.g. scale=2) or size"),
    ("/upscale", "scale=2&size=80x60", "img", 400, "or size (e.g. size=1920x1080), not both"),
    ("/upscale", "scales=2", "img", 400, "unknown parameter 'scales'"),
    ("/upscale", "scale=abc", "img", 400, "invalid scale 'abc'"),
    ("/upscale", "scale=0", "img", 400, "greater than 0"),
    ("/upscale", "scale=2&fit=cover", "img", 400, "fit applies to size"),
    ("/upscale", "scale=2", "", 400, "missing image: send the image file as the request body"),
    ("/upscale", "scale=13", "img", 422, "scale 13 exceeds the supported maximum x8"),
    ("/upscale", "scale=2", "text", 415, "the body is not an image asisr can read"),
    ("/upscale", "scale=2", "broken", 415, "not an image asisr can read (it does not decode: corrupt or truncated)"),
    ("/upscale", "scale=8", "img", 413, "output 320x240 would have more pixels than this server's limit of 50000"),
    ("/upscale", "scale=2", "big", 413, f"body of {MAX_BODY + 1} bytes exceeds this server's limit of {MAX_BODY}"),
    ("/upscale", "size=40x30", "tall", 413, "input 300x200 has more pixels than this server's limit of 50000"),
    ("/upscale", "size=1080p", "img", 400, "invalid size '1080p': expected WIDTHxHEIGHT"),
    ("/nowhere", "scale=2", "img", 404, "no such endpoint /nowhere"),
])
def test_bad_requests_get_one_json_line(server, photos, tmp_path, path, query, body, status, message):
    data = {"img": (photos / "img0.png").read_bytes(), "": b"", "text": b"this is not an image",
            "broken": (photos / "broken.png").read_bytes(), "big": b"\0" * (MAX_BODY + 1)}.get(body)
    if body == "tall":
        write_image(tmp_path / "tall.png", np.zeros((200, 300, 3), np.uint8))
        data = (tmp_path / "tall.png").read_bytes()
    code, answer = _request(f"{server.url}{path}?{query}", data, method="POST")
    assert code == status, answer
    error = json.loads(answer)
    assert list(error) == ["error"] and message in error["error"] and "\n" not in error["error"], error


@pytest.mark.slow  # the service: the full tier's (each start takes ~7 s)
def test_wrong_method_and_a_streamed_body_over_the_limit(server, photos):
    code, answer = _request(server.url + "/upscale?scale=2", method="GET")
    assert code == 405 and json.loads(answer) == {"error": "use POST /upscale with the image as the body"}
    host, port = server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    chunks = iter([b"\0" * (16 << 10)] * 8)  # 128 KiB, chunked: no Content-Length to refuse it by
    conn.request("POST", "/upscale?scale=2", body=chunks, encode_chunked=True)
    response = conn.getresponse()
    assert response.status == 413
    assert json.loads(response.read()) == {"error": f"body exceeds this server's limit of {MAX_BODY} bytes"}
    conn.close()
    code, body = _request(server.url + "/upscale?scale=2", (photos / "img1.png").read_bytes())  # still serving
    assert code == 200 and body.startswith(b"\x89PNG")


@pytest.mark.slow  # the service: the full tier's (each start takes ~7 s)
def test_the_server_stops_cleanly_on_sigint(server):
    url = server.url
    code, err = server.stop(signal.SIGINT)
    assert code == 0, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "stopped", err
    with pytest.raises(OSError):
        _request(url + "/health")


# ---- without the extra ------------------------------------------------------------------------

@pytest.mark.parametrize("command", [["asisr.cli.run", "{photos}", "-s", "2", "-o", "{out}", "--engine", "ray"],
                                     ["asisr.cli.serve", "--port", "8999"]])
def test_without_ray_the_commands_name_the_extra(command, photos, tmp_path):
    fake = tmp_path / "no_ray"
    fake.mkdir()
    (fake / "ray.py").write_text("raise ImportError('No module named ray (hidden by the test)')\n")
    args = [a.format(photos=photos, out=tmp_path / "out") for a in command]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake), str(ROOT)])}
    run = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    line = _error_line(run.stderr)
    assert line.startswith("error: ") and "needs Ray, which is not installed (pip install 'asisr[ray]')" in line
    assert not (tmp_path / "out").exists()
