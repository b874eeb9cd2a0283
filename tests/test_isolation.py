"""The suite leaves the user's home alone: a CLI run that writes asisr's cache writes it in the test's folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from asisr.imageio import write_image
from tests.shared_data import REAL_HOME


def _snapshot(root: Path) -> dict[str, float]:
    """Names and modification times under ``root`` (what asisr could write), empty when absent."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.stat().st_mtime for p in root.rglob("*")}


def test_a_cli_run_writes_only_the_isolated_cache(tiny_liif_ckpt, tmp_path):
    """A checkpoint on onnxruntime is exported into the cache: in ``$ASISR_CACHE`` here, never in the real home."""
    watched = [REAL_HOME / ".cache" / "asisr", REAL_HOME / ".config" / "asisr", REAL_HOME / ".cache" / "matplotlib"]
    before = [_snapshot(w) for w in watched]
    image, out = tmp_path / "in.png", tmp_path / "out.png"
    write_image(image, (np.random.default_rng(0).random((12, 10, 3)) * 255).astype(np.uint8))
    cache = Path(os.environ["ASISR_CACHE"])
    run = subprocess.run([sys.executable, "-m", "asisr.cli.run", image, "--scale", "2", "--out", out,
                          "--model", tiny_liif_ckpt, "--backend", "onnxruntime"], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert out.is_file()
    assert list((cache / "onnx").glob("*/manifest.json"))  # the export is in the isolated cache
    assert [_snapshot(w) for w in watched] == before
    assert Path.home() != REAL_HOME and str(Path.home()).startswith(str(cache.parent))
