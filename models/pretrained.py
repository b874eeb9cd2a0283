"""The one builder for bundled weights: ``create(name, pretrained=True)`` lands in ``load_pretrained``.

Which files ship, and which is the default, is data in ``asisr.weights`` (re-exported here so
``asisr.models.pretrained.bundled_path`` / ``default_checkpoint`` / ``DEFAULT_MODEL`` keep working).
Torch-free at import time: the runtime asks for ``default_checkpoint()`` without PyTorch; only
``load_pretrained`` needs torch, and imports the loader when called.

Shipping weights for a model: save an asisr-format checkpoint (``asisr.models.save``) into
``asisr/weights/`` and add it to ``asisr.weights.BUNDLED``; no model code changes.
"""

from __future__ import annotations

from typing import Any

from asisr.errors import UserError
from asisr.weights import BUNDLED, DEFAULT_MODEL, WEIGHTS_DIR, bundled_path, default_checkpoint

__all__ = ["BUNDLED", "DEFAULT_MODEL", "WEIGHTS_DIR", "bundled_path", "default_checkpoint", "load_pretrained"]


def load_pretrained(name: str, **kwargs: Any):
    """``create(name, pretrained=True)``: the bundled checkpoint of ``name``, as an eval-mode model.

    The configuration is the checkpoint's, so constructor arguments are refused rather than ignored.
    """
    if kwargs:
        raise UserError(f"pretrained {name} has a fixed configuration; do not pass constructor arguments "
                        f"({', '.join(sorted(kwargs))})")
    from asisr.models.checkpoint import load  # torch, only now

    model = load(bundled_path(name))
    if model.name != name:
        raise UserError(f"bundled weights {BUNDLED[name]} hold a {model.name!r} model, not {name!r}")
    return model
