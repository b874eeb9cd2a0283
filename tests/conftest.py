"""Shared test fixtures. ``../shared`` (beside the checkout) holds real data; tests needing it skip without it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
LIIF_CKPT = SHARED / "weights" / "liif" / "edsr-baseline-liif.pth"
SET5 = SHARED / "data" / "Set5"
SET14 = SHARED / "data" / "Set14"


def need(path: Path) -> Path:
    """Skip the calling test, naming the missing path, unless it exists."""
    if not path.exists():
        pytest.skip(f"needs {path} (the shared data folder beside the checkout), which is absent")
    return path


REAL_HOME = Path.home()  # before the session fixture below points HOME elsewhere


def _pip_cache() -> str:
    xdg = os.environ.get("XDG_CACHE_HOME")
    return str(Path(xdg) / "pip" if xdg else REAL_HOME / ".cache" / "pip")
# What the suite redirects: asisr's cache, and the home-based cache and config folders of the
# libraries it drives (matplotlib's font cache, torch's hub), so the user's home is never written.
ISOLATED = ("ASISR_CACHE", "HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "MPLCONFIGDIR", "TORCH_HOME")


@pytest.fixture(scope="session", autouse=True)
def isolated_home(tmp_path_factory) -> Iterator[Path]:
    """Every cache and config path of the suite, and of the processes it starts, under one temporary folder.

    ``tests/test_isolation.py`` checks that a CLI run leaves the real home untouched. pip, run by
    the deployment test, keeps the user's own pip cache (``PIP_CACHE_DIR``): installing is pip's business.
    """
    root = tmp_path_factory.mktemp("home")
    saved = {k: os.environ.get(k) for k in ISOLATED + ("PIP_CACHE_DIR",)}
    os.environ.setdefault("PIP_CACHE_DIR", _pip_cache())
    for name in ISOLATED:
        (root / name.lower()).mkdir()
        os.environ[name] = str(root / name.lower())
    yield root
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def liif_ckpt() -> Path:
    return need(LIIF_CKPT)


@pytest.fixture(scope="session")
def official_liif_onnx(liif_ckpt, tmp_path_factory) -> Path:
    """The official LIIF checkpoint exported once for the whole session."""
    from asisr.export.onnx import export_onnx
    from asisr.models import load

    return export_onnx(load(liif_ckpt), tmp_path_factory.mktemp("official") / "liif")


@pytest.fixture(scope="session")
def tiny_liif_ckpt(tmp_path_factory) -> Path:
    """A small LIIF with random weights, saved in asisr's checkpoint format."""
    from asisr.models import create, save

    torch.manual_seed(0)
    model = create("liif", n_resblocks=2, n_feats=16, hidden=[32, 32])
    return save(model, tmp_path_factory.mktemp("ckpt") / "tiny_liif.pt")


@pytest.fixture(scope="session")
def tiny_liif_onnx(tiny_liif_ckpt, tmp_path_factory) -> Path:
    from asisr.export.onnx import export_onnx
    from asisr.models import load

    return export_onnx(load(tiny_liif_ckpt), tmp_path_factory.mktemp("onnx") / "tiny_liif")


# ------------------------------------------------------------------ process exit

_EXIT_STATUS: dict[str, int] = {}


def pytest_sessionfinish(session, exitstatus) -> None:
    _EXIT_STATUS["status"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config) -> None:
    """End the test process with pytest's exit status once everything is reported, skipping the
    native libraries' exit-time teardown. One CI run segfaulted (rc 139) after all 674 tests had
    passed and the summary was printed: this one process has loaded torch, ONNX Runtime, Ray,
    PyAV and OpenCV together, and their static destructors and leftover threads race at exit.
    A real failure still exits non-zero; ``ASISR_TEST_NORMAL_EXIT=1`` restores the normal exit."""
    if "status" in _EXIT_STATUS and os.environ.get("ASISR_TEST_NORMAL_EXIT") != "1":
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS["status"])
