"""The deployment runtime on its own: bundled graphs, ONNX Runtime, the command line, and no torch.

Everything here uses only what ``pip install asisr`` brings (the shipped graphs, numpy, ONNX
Runtime, OpenCV, Pillow), so this module also runs from the torch-free install
(``tests/test_torch_free_install.py`` runs it there). In the full install it runs once as usual
and once more in a child process where ``import torch`` fails, which is the fast tier's check
that the runtime never reaches for torch.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from asisr.cli.run import main as run_main
from asisr.errors import UserError
from asisr.imageio import read_image
from asisr.runtime.manifest import read_manifest
from asisr.samples import SAMPLE
from asisr.sources import open_upscaler
from asisr.weights import bundled_onnx_dir
from tests.cli_helpers import invoke

HIDDEN = "ASISR_TEST_TORCH_HIDDEN"  # set in the child run below: torch must then be absent
MODEL = "lmf"  # the lightest bundled model: its graphs ship with the package


def _photo() -> np.ndarray:
    return read_image(SAMPLE)[100:148, 180:244]  # 64x48 of the shipped photo


def test_a_bundled_model_upscales_seam_free():
    """Tiles as small as the model allows give the same pixels as one tile for the whole image."""
    photo = _photo()
    with open_upscaler(MODEL, threads=1) as whole, open_upscaler(MODEL, threads=1, tile=16, lr_tile=8) as tiled:
        a, b = whole.upscale(photo, scale=2.5), tiled.upscale(photo, scale=2.5)
    assert a.shape == (120, 160, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    lowpass = photo.astype(float).mean(axis=(0, 1))
    assert np.abs(a.astype(float).mean(axis=(0, 1)) - lowpass).max() < 4  # an upscale of this photo, not noise


def test_the_command_line_runs_a_bundled_model(tmp_path, capsys):
    code, out, err = invoke(run_main, ["--sample", "--scale", "1.5", "--model", MODEL, "--out",
                                       tmp_path / "x.png", "--threads", "1"], capsys)
    assert code == 0, err
    assert read_image(tmp_path / "x.png").shape == (450, 676, 3) and "wrote" in out


def test_a_tampered_bundled_graph_is_refused(tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(bundled_onnx_dir(MODEL), copy)
    read_manifest(copy)  # intact: read
    with open(copy / "upsampler.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(UserError, match="manifest does not match its graphs: upsampler.onnx"):
        read_manifest(copy)


def test_torch_stays_unimported():
    """Nothing above imported torch (in the child run torch cannot be imported at all)."""
    if os.environ.get(HIDDEN):
        with pytest.raises(ImportError):
            import torch  # noqa: F401
    assert "torch" not in sys.modules or not os.environ.get(HIDDEN)


@pytest.mark.skipif(bool(os.environ.get(HIDDEN)), reason="this is the child run")
def test_the_module_passes_with_torch_hidden(tmp_path):
    """This file again, in a child process where ``import torch`` raises ImportError."""
    fake = tmp_path / "no_torch"
    (fake / "torch").mkdir(parents=True)
    (fake / "torch" / "__init__.py").write_text("raise ImportError('No module named torch (hidden by the test)')\n")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, HIDDEN: "1", "PYTHONPATH": os.pathsep.join([str(fake), str(root)])}
    serial = ["-n", "0"] if importlib.util.find_spec("xdist") else []  # one process: this file is small
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                          *serial, "-m", "slow or not slow", __file__], cwd=root, env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "4 passed, 1 skipped" in run.stdout, run.stdout[-2000:]
