"""Reading checkpoint files from disk and turning them into models."""

from __future__ import annotations

import hashlib
import pickle
import zipfile
from pathlib import Path

import torch

from asisr.errors import UserError


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint file safely (tensors and plain containers only)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise UserError(f"checkpoint is empty (0 bytes): {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot read checkpoint {path}: {first}") from None
    if not isinstance(obj, dict):
        raise UserError(f"cannot read checkpoint {path}: expected a dict, got {type(obj).__name__}")
    return obj


def load(path: str | Path):
    """Read a checkpoint, recognise its architecture, build the model and load the weights strictly."""
    from asisr.models.base import load_state_dict_strict
    from asisr.models.registry import create, detect

    ckpt = read_checkpoint(path)
    found = detect(ckpt)
    model = create(found.name, **found.kwargs)
    load_state_dict_strict(model, found.state_dict, f"architecture {found.name!r} ({path})")
    model.checkpoint_sha256 = sha256_file(path)
    model.checkpoint_path = str(path)
    return model.eval()


def save(model, path: str | Path, card: dict | None = None) -> Path:
    """Write asisr's own checkpoint form: ``{'asisr': {'name', 'config'[, 'card']}, 'state_dict'}``, atomically.

    ``card`` is free-form provenance (data, recipe, measured numbers) that travels with the weights.
    """
    from asisr.atomic import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"name": model.name, "config": model.config}
    if card:
        meta["card"] = card
    with atomic_path(path) as tmp:
        torch.save({"asisr": meta, "state_dict": model.state_dict()}, tmp)
    return path
