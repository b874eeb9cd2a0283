"""Model zoo: architectures split into Backbone and Upsampler stages (see ``base``).

The only layer that imports torch for modelling; everything here is a plain ``nn.Module``.
Checkpoint intake: ``checkpoint`` (files) -> ``canonical`` (one unwrapped form) ->
``registry`` (detectors, factories, discovery); bundled weights: ``pretrained``.

The names below resolve lazily (PEP 562), so ``asisr.models.pretrained`` and
``asisr.models.canonical`` import without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SRModel": "base", "load_state_dict_strict": "base",
    "load": "checkpoint", "read_checkpoint": "checkpoint", "save": "checkpoint",
    "canonicalize": "canonical", "CanonicalCheckpoint": "canonical",
    "create": "registry", "detect": "registry", "list_models": "registry", "register_model": "registry",
    "register_detector": "registry", "Detection": "registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
