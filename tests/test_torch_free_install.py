"""The deployment install: the built wheel, no extras, in a fresh virtual environment without torch.

``pip install asisr`` must run exported models, the bundled default included, and give the
same pixels as the full install; a checkpoint must get one line naming the extra to install.
Everything here is real: the wheel is built from this checkout, installed with pip into a new
venv (its dependencies come from the package index, or pip's cache), and run as a user would.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest

from asisr.imageio import read_image, write_image
from tests.shared_data import SET5, need

# The full tier's (a wheel build and two installs); the fast tier runs test_runtime_torch_free.py with torch hidden.
pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _run(cmd: list, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kw)


@pytest.fixture(scope="module")
def bare_env(tmp_path_factory) -> Path:
    """A venv holding the asisr wheel and its base dependencies only (plus pytest, which runs the
    runtime's own tests there; one pip call for both); its ``bin`` folder."""
    work = tmp_path_factory.mktemp("deploy")
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", work / "dist", ROOT], cwd=work)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    wheel = next((work / "dist").glob("asisr-*.whl"))
    venv.create(work / "env", with_pip=True)
    bin_dir = work / "env" / "bin"
    installed = _run([bin_dir / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check", wheel, "pytest"])
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-2000:]
    return bin_dir


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "OMP_NUM_THREADS": "2"}


def test_the_bare_install_has_no_torch_and_no_export_stack(bare_env):
    for module in ("torch", "onnx", "onnxscript"):
        probe = _run([bare_env / "python", "-c", f"import {module}"], env=_env(), cwd=bare_env)
        assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr, module


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """A real photo (a Set5 image, cropped small to keep the test quick)."""
    image = read_image(need(SET5 / "butterfly.png"))
    path = tmp_path_factory.mktemp("photo") / "butterfly_crop.png"
    write_image(path, image[40:136, 60:172])
    return path


@pytest.mark.parametrize("which", ["default", "liif"])
def test_asisr_run_without_torch_matches_the_full_install(bare_env, photo, official_liif_onnx, which, tmp_path):
    model = [] if which == "default" else ["--model", official_liif_onnx]
    bare_out, full_out = tmp_path / "bare.png", tmp_path / "full.png"
    args = [photo, "--scale", "3", *model, "--threads", "2"]
    bare = _run([bare_env / "asisr-run", *args, "--out", bare_out, "--verbose"], env=_env(), cwd=tmp_path)
    assert bare.returncode == 0, bare.stdout + bare.stderr
    # the default path goes through OpenVINO (a base dependency), at the precision the policy picks
    assert "running liif" in bare.stderr and "[openvino]: precision" in bare.stderr, bare.stderr
    full = _run([sys.executable, "-m", "asisr.cli.run", *args, "--out", full_out], env=_env(), cwd=ROOT)
    assert full.returncode == 0, full.stdout + full.stderr
    a, b = read_image(bare_out), read_image(full_out)
    assert a.shape == b.shape == (96 * 3, 112 * 3, 3) and a.dtype == np.uint8
    assert int(np.abs(a.astype(int) - b.astype(int)).max()) <= 1


def test_a_checkpoint_without_torch_names_the_extra(bare_env, photo, tiny_liif_ckpt, tmp_path):
    out = tmp_path / "x.png"
    run = _run([bare_env / "asisr-run", photo, "--scale", "2", "--model", tiny_liif_ckpt, "--out", out],
               env=_env(), cwd=tmp_path)
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 2 and len(lines) == 1, run.stderr
    assert lines[0].startswith("error: ") and "pip install 'asisr[torch]'" in lines[0]
    assert "Traceback" not in run.stderr and not out.exists()


def test_a_random_file_as_model_is_named_as_such_without_torch(bare_env, photo, tmp_path):
    junk = tmp_path / "model.pth"
    junk.write_bytes(b"\x00\x13garbage" * 100)
    run = _run([bare_env / "asisr-run", photo, "--scale", "2", "--model", junk, "--out", tmp_path / "x.png"],
               env=_env(), cwd=tmp_path)
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 2 and len(lines) == 1, run.stderr
    assert "is not a checkpoint or an exported model directory asisr can read" in lines[0]
    assert "weights_only" not in run.stderr and not (tmp_path / "x.png").exists()


def test_the_runtime_tests_pass_in_the_torch_free_install(bare_env, tmp_path):
    """The runtime-only tests, run by the bare install's own Python against the installed wheel
    (a copy of the test helpers outside the checkout, so the checkout's code is not on the path)."""
    tests = tmp_path / "suite" / "tests"
    tests.mkdir(parents=True)
    for name in ("__init__.py", "conftest.py", "shared_data.py", "tiny_models.py", "cli_helpers.py",
                 "test_runtime_torch_free.py"):
        (tests / name).write_bytes((ROOT / "tests" / name).read_bytes())
    run = _run([bare_env / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "--import-mode=importlib",
                "--rootdir", tests.parent, tests / "test_runtime_torch_free.py"], env=_env(), cwd=tests.parent)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "5 passed" in run.stdout, run.stdout[-2000:]
    where = _run([bare_env / "python", "-c", "import asisr; print(asisr.__file__)"], env=_env(), cwd=tests.parent)
    assert str(bare_env.parent) in where.stdout, where.stdout  # the wheel's code, not the checkout's
