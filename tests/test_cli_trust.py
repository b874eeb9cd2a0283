"""``asisr-run`` as a user meets it, in real processes: checks before the work, one-line messages,
Ctrl-C that says what was done and resumes, status lines on slow first runs, and processes that
share an output folder or the export cache.

Each test asserts the message, the exit status, the files' modes and that no partial file is left
under any name (temporaries ``.NAME.*.tmp*`` and claims ``.NAME.lock`` included).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from asisr.atomic import current_umask
from asisr.cli.run import main as run_main
from asisr.imageio import read_image, write_image
from asisr.locks import FileLock, claim_for
from tests.cli_helpers import invoke

ASISR_RUN = Path(sys.executable).parent / "asisr-run"
FILE_MODE = 0o666 & ~current_umask()  # what a plain open() gives, and so what asisr's outputs get


def _asisr_run(*args, prefix: list[str] | None = None, env: dict | None = None,
               timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*(prefix or []), str(ASISR_RUN), *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


# Runs its arguments with SIGINT at its default, as a terminal starts a command: a process started
# where SIGINT is ignored (a test runner in the background) would otherwise inherit the ignoring.
_SIGINT_DEFAULT = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"


def _start(*args, env: dict | None = None, sigint: bool = False) -> subprocess.Popen:
    """``asisr-run`` in the background; with ``sigint``, taking Ctrl-C as from a terminal."""
    command = [str(ASISR_RUN), *map(str, args)]
    if sigint:
        command = [sys.executable, "-S", "-c", _SIGINT_DEFAULT, *command]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _assert_one_error(run: subprocess.CompletedProcess, fragment: str) -> None:
    lines = _lines(run.stderr)
    assert run.returncode == 2, run.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], run.stderr
    assert "Traceback" not in run.stderr + run.stdout


def _leftovers(folder: Path) -> list[str]:
    """Hidden files asisr makes while working (temporaries, claims): none may outlive a run."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) if folder.exists() else []


def _images(folder: Path, n: int, hw: tuple[int, int], seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        write_image(folder / f"img{i}.png", rng.integers(0, 256, (*hw, 3), dtype=np.uint8))
    return folder


def _outputs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.png") if not p.name.startswith("."))


def _assert_same_images(a: Path, b: Path, names: list[str]) -> None:
    for name in names:
        x, y = read_image(a / name), read_image(b / name)
        assert x.shape == y.shape and np.array_equal(x, y), name


@pytest.fixture()
def not_a_model(tmp_path) -> Path:
    """A model folder that fails to load (no manifest): a run that reaches the model says so."""
    path = tmp_path / "not_a_model"
    path.mkdir()
    return path


def _dac_less_prefix(tmp_path: Path) -> list[str]:
    """A command prefix for a process that mode bits bind. Root passes them (CAP_DAC_OVERRIDE), so as root
    the process runs without that capability (setpriv, else capsh); it still owns, and so reads, the
    root-owned interpreter, inputs and model."""
    if os.geteuid() != 0:
        return []
    caps = "cap_dac_override,cap_dac_read_search"
    prefixes = []
    if shutil.which("setpriv"):
        drop = ",".join(f"-{c.removeprefix('cap_')}" for c in caps.split(","))
        prefixes.append(["setpriv", f"--inh-caps={drop}", f"--bounding-set={drop}", "--"])
    if shutil.which("capsh"):
        prefixes.append(["capsh", f"--drop={caps}", "--", "-c", 'exec "$0" "$@"'])
    probe = tmp_path / "probe"
    probe.mkdir()
    probe.chmod(0o555)
    try:
        for prefix in prefixes:
            r = subprocess.run([*prefix, sys.executable, "-c", f"open({str(probe / 'x')!r}, 'w')"],
                               capture_output=True, text=True, timeout=60)
            if r.returncode != 0 and "PermissionError" in r.stderr:
                return prefix
    finally:
        probe.chmod(0o755)
    pytest.skip("running as root and cannot drop CAP_DAC_OVERRIDE (no setpriv/capsh, or not permitted)")


# 1. Checks before the work ------------------------------------------------------------------------------

def test_an_unwritable_output_folder_is_refused_before_the_model_loads(tmp_path, not_a_model):
    """As a process that mode bits bind: a folder run, a file run and a folder to create under a read-only
    one all stop with one line naming the folder, before the (broken) model is even opened."""
    prefix = _dac_less_prefix(tmp_path)
    src = _images(tmp_path / "in", 2, (12, 10))
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        run = _asisr_run(src, "-s", "2", "-o", ro, "-m", not_a_model, prefix=prefix)
        _assert_one_error(run, f"cannot write to output folder {ro}: Permission denied")
        run = _asisr_run(src / "img0.png", "-s", "2", "-o", ro / "x.png", "-m", not_a_model, prefix=prefix)
        _assert_one_error(run, f"cannot write to output folder {ro}: Permission denied")
        run = _asisr_run(src, "-s", "2", "-o", ro / "new" / "sub", "-m", not_a_model, prefix=prefix)
        _assert_one_error(run, f"cannot create output folder {ro / 'new' / 'sub'}: {ro} is not writable")
        assert list(ro.iterdir()) == [] and stat.S_IMODE(ro.stat().st_mode) == 0o555
    finally:
        ro.chmod(0o755)
    # the same process with a writable folder gets as far as the model: the checks above came first
    run = _asisr_run(src, "-s", "2", "-o", tmp_path / "ok", "-m", not_a_model, prefix=prefix)
    _assert_one_error(run, "not an exported model directory")
    assert not (tmp_path / "ok").exists()


def test_outputs_that_cannot_fit_on_the_disk_are_refused_before_the_model_loads(tmp_path, not_a_model):
    """The estimate (output pixels x channels x bytes) against the destination's free space: one output
    larger than the free space, and a folder whose outputs fit one by one but not all together."""
    free = shutil.disk_usage(tmp_path).free
    src = _images(tmp_path / "in", 3, (12, 10))
    side = math.isqrt(free // 3) * 2  # one RGB output of 4x the free space
    out = tmp_path / "big.png"
    run = _asisr_run(src / "img0.png", "--size", f"{side}x{side}", "-o", out, "-m", not_a_model)
    _assert_one_error(run, f"not enough disk space for {out}: about ")
    assert "needed (uncompressed)" in run.stderr and f"free in {tmp_path}" in run.stderr
    assert not out.exists() and _leftovers(tmp_path) == []
    side = math.isqrt(free // 6)  # each output half the free space, the three 1.5x
    out_dir = tmp_path / "out"
    run = _asisr_run(src, "--size", f"{side}x{side}", "-o", out_dir, "-m", not_a_model)
    _assert_one_error(run, f"not enough disk space for 3 images in {out_dir}")
    assert not out_dir.exists()


@pytest.mark.parametrize("name, shape, dtype", [("g.png", (6, 7), np.uint8), ("c16.png", (6, 7, 3), np.uint16),
                                               ("a.png", (6, 7, 4), np.uint8), ("c.jpg", (6, 7, 4), np.uint8),
                                               ("g16.tif", (6, 7), np.uint16), ("c.webp", (6, 7, 3), np.uint8)])
def test_the_header_plans_what_decoding_gives(name, shape, dtype, tmp_path):
    """``image_header`` (the folder run's space estimate, before anything is decoded) agrees with ``read_image``."""
    from asisr.imageio import image_header

    path = tmp_path / name
    write_image(path, np.random.default_rng(0).integers(0, 200, shape, dtype=dtype))
    image = read_image(path)
    assert image_header(path) == (*image.shape[:2], 1 if image.ndim == 2 else image.shape[2], image.dtype.itemsize)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    assert image_header(tmp_path / "bad.png") is None


# 2. Messages: decoding, Ctrl-C -------------------------------------------------------------------------

def test_a_truncated_png_gives_only_asisr_s_error_line(tmp_path, tiny_liif_onnx):
    """No OpenCV ``[ WARN ...]`` and no ``libpng error`` line around asisr's one line, alone or in a folder."""
    good = tmp_path / "in" / "good.png"
    good.parent.mkdir()
    write_image(good, np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    data = good.read_bytes()
    for cut in (len(data) // 2, len(data) - 10):  # OpenCV warns on the first, libpng prints on the second
        bad = tmp_path / f"cut{cut}.png"
        bad.write_bytes(data[:cut])
        run = _asisr_run(bad, "-s", "2", "-o", tmp_path / "out.png")
        _assert_one_error(run, f"cannot decode image (corrupt or not an image): {bad}")
        assert run.stderr == f"error: cannot decode image (corrupt or not an image): {bad}\n"
        assert not (tmp_path / "out.png").exists()
    (tmp_path / "in" / "trunc.png").write_bytes(data[:len(data) - 10])
    out = tmp_path / "out"
    run = _asisr_run(tmp_path / "in", "-s", "2", "-o", out, "-m", tiny_liif_onnx)
    assert run.returncode == 2, run.stderr
    assert _lines(run.stderr)[-1] == ("error: 1 of 2 images failed (first: trunc.png: cannot decode image "
                                      f"(corrupt or not an image): {tmp_path / 'in' / 'trunc.png'})")
    assert "skipped trunc.png: cannot decode image" in run.stdout
    both = run.stdout + run.stderr
    assert "WARN" not in both and "libpng" not in both and "Traceback" not in both
    assert _outputs(out) == ["good.png"] and _leftovers(out) == []
    assert stat.S_IMODE((out / "good.png").stat().st_mode) == FILE_MODE


def test_ctrl_c_says_what_was_written_and_the_same_command_resumes(tmp_path):
    """SIGINT once the first output is there: exit 130, one line with the count, only whole outputs; running
    the command again finishes the rest, and every output equals an uninterrupted run's."""
    src = _images(tmp_path / "in", 3, (64, 64))  # the bundled default at x4: about half a second an image
    out = tmp_path / "out"
    args = (src, "-s", "4", "-o", out)
    out.mkdir()
    held = claim_for(out / "img2.png")
    held.acquire()  # img2.png cannot be written while the test holds its claim: Ctrl-C lands mid-run, however loaded
    try:
        proc = _start(*args, sigint=True)
        deadline = time.monotonic() + 120
        while not _outputs(out) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        held.release()
    assert proc.returncode == 130, stderr
    match = re.fullmatch(rf"interrupted: (\d) of 3 images written to {re.escape(str(out))}; "
                         "run the same command again to resume", _lines(stderr)[-1])
    assert match, stderr
    done = _outputs(out)
    assert int(match.group(1)) == len(done) and 1 <= len(done) < 3, (done, stderr)
    assert "Traceback" not in stderr and "error" not in stderr and stdout == ""
    assert _leftovers(out) == []
    for name in done:
        assert read_image(out / name).shape == (256, 256, 3)
        assert stat.S_IMODE((out / name).stat().st_mode) == FILE_MODE

    rerun = _asisr_run(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert _lines(rerun.stdout) == [f"wrote {3 - len(done)} images"]
    assert _outputs(out) == ["img0.png", "img1.png", "img2.png"] and _leftovers(out) == []
    reference = tmp_path / "reference"
    assert _asisr_run(src, "-s", "4", "-o", reference).returncode == 0
    _assert_same_images(out, reference, _outputs(reference))


# 3. Status lines on slow first runs; 4. the export cache shared by processes -----------------------------

def test_two_first_runs_export_a_checkpoint_once_and_say_so(tmp_path, tiny_liif_ckpt, capsys, monkeypatch):
    """Two processes with the same fresh cache: both succeed, one says it exports (the other waits or finds
    the entry), the cache holds one whole entry; a cache hit and the bundled default print nothing."""
    env = {**os.environ, "ASISR_CACHE": str(tmp_path / "cache")}
    image = tmp_path / "in.png"
    write_image(image, np.random.default_rng(1).integers(0, 256, (12, 10, 3), dtype=np.uint8))
    procs = [_start(image, "-s", "2", "-o", tmp_path / f"{name}.png", "-m", tiny_liif_ckpt, env=env)
             for name in ("a", "b")]
    results = [(p, *p.communicate(timeout=600)) for p in procs]
    for p, stdout, stderr in results:
        assert p.returncode == 0, stderr
        assert len(_lines(stderr)) <= 1 and "Traceback" not in stderr, stderr
    said = [line for _, _, stderr in results for line in _lines(stderr)]
    exports = [line for line in said if line.startswith(f"exporting {tiny_liif_ckpt} to ONNX once (cached in ")]
    assert len(exports) == 1 and exports[0].endswith(") ..."), said
    assert all(line in exports or line.startswith("waiting for another asisr process exporting") for line in said)
    entries = list((tmp_path / "cache" / "onnx").iterdir())
    assert [e.name for e in entries if not e.name.startswith(".")] == [Path(exports[0].split("(cached in ")[1][:-5]).name]
    assert _leftovers(tmp_path / "cache" / "onnx") == []
    assert np.array_equal(read_image(tmp_path / "a.png"), read_image(tmp_path / "b.png"))

    monkeypatch.setenv("ASISR_CACHE", str(tmp_path / "cache"))  # the fast paths, in this process: no status line
    code, stdout, err = invoke(run_main, [image, "-s", "2", "-o", tmp_path / "c.png", "-m", tiny_liif_ckpt], capsys)
    assert code == 0 and err == "", err  # a cache hit
    code, stdout, err = invoke(run_main, [image, "-s", "2", "-o", tmp_path / "d.png"], capsys)
    assert code == 0 and err == "" and _lines(stdout) == [f"wrote {tmp_path / 'd.png'}"], err  # the bundled default
    for name in ("a", "b", "c", "d"):
        assert stat.S_IMODE((tmp_path / f"{name}.png").stat().st_mode) == FILE_MODE
    assert _leftovers(tmp_path) == []


def test_a_checkpoint_on_pytorch_says_it_is_loading(tmp_path, tiny_liif_ckpt, capsys):
    image, out = tmp_path / "in.png", tmp_path / "out.png"
    write_image(image, np.zeros((8, 8, 3), np.uint8))
    code, stdout, err = invoke(run_main, [image, "-s", "2", "-o", out, "-m", tiny_liif_ckpt, "-b", "torch"], capsys)
    assert code == 0, err
    assert _lines(err) == [f"loading {tiny_liif_ckpt} on PyTorch ..."] and _lines(stdout) == [f"wrote {out}"]


# 4. Processes sharing an output folder ----------------------------------------------------------------

def test_two_runs_share_an_output_folder_and_compute_each_image_once(tmp_path, tiny_liif_onnx, capsys):
    """Both succeed (an output the other one wrote meanwhile is done, not an error), together they compute
    each image once, and every output is whole and equal to a single run's."""
    src = _images(tmp_path / "in", 8, (64, 64), seed=3)
    out = tmp_path / "out"
    procs = [_start(src, "-s", "4", "-o", out, "-m", tiny_liif_onnx, "--threads", "1") for _ in range(2)]
    results = [(p, *p.communicate(timeout=300)) for p in procs]
    computed = 0
    for p, stdout, stderr in results:
        assert p.returncode == 0, stderr
        assert "error" not in stderr and "Traceback" not in stderr
        line = _lines(stdout)[-1]
        match = re.fullmatch(r"wrote (\d) images( \((\d) more written meanwhile by another asisr process\))?"
                             r"( \(all outputs already existed\))?", line)
        assert match, line
        computed += int(match.group(1))
    assert computed == 8, [r[1] for r in results]
    names = [f"img{i}.png" for i in range(8)]
    assert _outputs(out) == names and _leftovers(out) == []
    assert all(stat.S_IMODE((out / n).stat().st_mode) == FILE_MODE for n in names)
    reference = tmp_path / "reference"
    code, _, err = invoke(run_main, [src, "-s", "4", "-o", reference, "-m", tiny_liif_onnx, "--threads", "1"], capsys)
    assert code == 0, err
    _assert_same_images(out, reference, names)


def test_an_output_another_process_writes_meanwhile_is_a_success(tmp_path, capsys):
    """A run that finds another process at work on its output waits, says so, and reports that output as
    written by the other one (no "output exists", no second computation, the other's file kept)."""
    image, out = tmp_path / "in.png", tmp_path / "sub" / "out.png"
    write_image(image, np.zeros((8, 8, 3), np.uint8))
    out.parent.mkdir()
    other = FileLock(out.with_name(f".{out.name}.lock"))  # what another asisr process holds while it works
    assert other.acquire(blocking=False)
    proc = _start(image, "-s", "2", "-o", out)
    try:
        assert proc.stderr is not None
        assert proc.stderr.readline() == f"waiting for another asisr process writing {out} ...\n"
        write_image(out, np.full((16, 16, 3), 7, np.uint8))  # atomic, as asisr writes
    finally:
        other.release()
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0 and stderr == "", stderr
    assert _lines(stdout) == [f"{out} was written meanwhile by another asisr process"]
    assert read_image(out).max() == 7  # the other process's output, not recomputed
    assert _leftovers(out.parent) == []


def test_a_claim_excludes_until_released_and_leaves_no_file(tmp_path):
    """``FileLock`` (what the claims and the export cache use): exclusive between open files, gone once released."""
    path = tmp_path / ".x.png.lock"
    first, second = FileLock(path), FileLock(path)
    assert first.acquire(blocking=False) and path.exists()
    assert not second.acquire(blocking=False)
    first.release()
    assert not path.exists()
    assert second.acquire(blocking=False) and second.held
    second.release()
    assert list(tmp_path.iterdir()) == []
