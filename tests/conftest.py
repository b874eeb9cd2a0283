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


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory) -> Iterator[Path]:
    """Every cache asisr writes (exports of checkpoints, engines) goes to a temporary folder, never the user's."""
    from asisr.cache import ENV

    path = tmp_path_factory.mktemp("asisr-cache")
    old = os.environ.get(ENV)
    os.environ[ENV] = str(path)
    yield path
    if old is None:
        os.environ.pop(ENV, None)
    else:
        os.environ[ENV] = old


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
