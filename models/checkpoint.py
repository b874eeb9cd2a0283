"""Checkpoint files on disk: read safely, canonicalise once, detect, build, load strictly; and save."""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from pathlib import Path

import torch

from asisr.digest import sha256_file
from asisr.errors import UserError
from asisr.models.canonical import ZIP_MAGIC, CanonicalCheckpoint, canonicalize, looks_like_torch_save, own_format


def read_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint file safely (tensors and plain containers only), as the raw dict it holds."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise UserError(f"checkpoint is empty (0 bytes): {path}")
    with path.open("rb") as f:
        head = f.read(8)
    if not looks_like_torch_save(head):
        raise UserError(f"cannot read checkpoint {path}: not a PyTorch checkpoint "
                        f"(neither a torch.save zip archive nor a pickle; it starts with {head!r})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4": the error below says more
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, OSError) as e:
        raise UserError(f"cannot read checkpoint {path}: {_explain(e, head)}") from None
    if not isinstance(obj, dict):
        raise UserError(f"cannot read checkpoint {path}: expected a dict, got {type(obj).__name__}")
    return obj


def _explain(e: Exception, head: bytes) -> str:
    """torch's reason in one line, without its advice to unpickle arbitrary code (``weights_only=False``)."""
    text = str(e)
    unsafe = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if unsafe:
        return (f"it stores a Python object ({unsafe.group(1)}), not only tensors and plain containers, and asisr "
                f"does not unpickle code; re-save just its state dict (torch.save(model.state_dict(), path))")
    if "Unsupported operand" in text or isinstance(e, EOFError):
        return "not a PyTorch checkpoint (unreadable or truncated pickle data)"
    if head.startswith(ZIP_MAGIC) and isinstance(e, (RuntimeError, zipfile.BadZipFile)):
        return "a zip archive, but not one written by torch.save (or a truncated one)"
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip() and "weights_only" not in ln]
    return lines[0] if lines else type(e).__name__


def read_canonical(path: str | Path) -> CanonicalCheckpoint:
    """``read_checkpoint`` + ``canonicalize``: the one form detectors see."""
    return canonicalize(read_checkpoint(path), source=str(path))


def load(path: str | Path, options: dict | None = None):
    """Read a checkpoint, recognise its architecture, build the model and load the weights strictly.

    ``options``: test-time behaviours to change (``asisr.models.registry.TEST_TIME_OPTIONS``).
    """
    from asisr.models.base import load_state_dict_strict
    from asisr.models.registry import apply_options, create, detect

    found = apply_options(detect(read_canonical(path)), options)
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
    with atomic_path(path) as tmp:
        torch.save(own_format(model.name, model.config, model.state_dict(), card), tmp)
    return path
