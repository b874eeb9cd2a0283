"""Model registry (timm-style) and checkpoint recognition (spandrel-style).

Each architecture module registers
  * a factory ``name -> SRModel`` for ``create(name)``, and
  * a detector that looks at a state dict's keys and, if they are its own, returns the
    model name and constructor kwargs for ``load(path)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asisr.errors import UserError

_FACTORIES: dict[str, Callable[..., Any]] = {}
_ARCHITECTURE_MODULES = ("asisr.models.liif", "asisr.models.eqsr")
_DETECTORS: list[Callable[[dict, dict], "Detection | None"]] = []


class Detection:
    """A detector's verdict: which registered model, built how, from which state dict."""

    def __init__(self, name: str, state_dict: dict, kwargs: dict | None = None):
        self.name = name
        self.state_dict = state_dict
        self.kwargs = kwargs or {}


def register_model(name: str):
    def deco(fn):
        if name in _FACTORIES:
            raise ValueError(f"model {name!r} registered twice")
        _FACTORIES[name] = fn
        return fn
    return deco


def register_detector(fn):
    _DETECTORS.append(fn)
    return fn


def list_models() -> list[str]:
    _import_architectures()
    return sorted(_FACTORIES)


def create(name: str, pretrained: bool = False, **kwargs):
    """Build a registered model; ``pretrained`` loads its bundled weights if it has any."""
    _import_architectures()
    if name not in _FACTORIES:
        raise UserError(f"unknown model {name!r}; known: {', '.join(sorted(_FACTORIES))}")
    return _FACTORIES[name](pretrained=pretrained, **kwargs)


def detect(checkpoint: dict) -> Detection:
    """Recognise the architecture of a loaded checkpoint object."""
    _import_architectures()
    for detector in _DETECTORS:
        found = detector(checkpoint, {})
        if found is not None:
            return found
    keys = _state_dict_keys(checkpoint)
    sample = ", ".join(keys[:5]) + (" ..." if len(keys) > 5 else "")
    raise UserError(f"unknown architecture: no registered model recognises these keys ({sample or 'no tensors'})")


def _state_dict_keys(obj) -> list[str]:
    if isinstance(obj, dict):
        if obj and all(hasattr(v, "shape") for v in obj.values()):
            return list(obj)
        for v in obj.values():
            keys = _state_dict_keys(v)
            if keys:
                return keys
    return []


def _import_architectures() -> None:
    # Importing the architecture modules runs their @register_* decorators.
    import importlib

    for module in _ARCHITECTURE_MODULES:
        importlib.import_module(module)
