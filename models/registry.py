"""Model registry (timm-style) and checkpoint recognition (spandrel-style).

Adding an architecture: write ONE module in ``models/`` (plus its tests). No list to edit:
every public module of the ``asisr.models`` package is imported once, on the first
``create`` / ``load`` / ``detect`` / ``list_models``, and its decorators register

* ``@register_model("name")`` on a factory ``(**kwargs) -> SRModel`` (no I/O; ``create(name,
  pretrained=True)`` is handled by ``asisr.models.pretrained``, not by the factory), and
* ``@register_detector(priority=..., requires=(...))`` on a detector
  ``(CanonicalCheckpoint) -> Detection | None`` that reads the architecture and its
  hyper-parameters from state-dict keys and shapes (see ``asisr.models.canonical``).

Detector order (the documented rule): highest ``priority`` first, equal priorities by
detector name. A detector is only called when all its ``requires`` keys are present. It
returns ``None`` (not mine), a ``Detection``, or raises ``UserError`` (mine, but this variant
is unsupported), which ends the search. Give a detector a higher priority than any other
whose checkpoints it would also accept: the more specific claim goes first. asisr's own
format, which names its model, runs first (priority ``OWN_FORMAT_PRIORITY``); key-based
detectors use 0 unless they overlap.
"""

from __future__ import annotations

import importlib
import pkgutil
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from asisr.errors import UserError
from asisr.models.canonical import CanonicalCheckpoint, canonicalize, key_patterns, top_level

ARCHITECTURE_PACKAGE = "asisr.models"
OWN_FORMAT_PRIORITY = 100

DetectFn = Callable[[CanonicalCheckpoint], "Detection | None"]


@dataclass
class Detection:
    """A detector's verdict: which registered model, built with which kwargs, from which state dict."""

    name: str
    state_dict: dict
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Detector:
    name: str
    fn: DetectFn
    priority: int = 0
    requires: tuple[str, ...] = ()

    def __call__(self, ckpt: CanonicalCheckpoint) -> Detection | None:
        if not ckpt.has(*self.requires):
            return None
        return self.fn(ckpt)


_FACTORIES: dict[str, Callable[..., Any]] = {}
_DETECTORS: list[Detector] = []
_DISCOVERED: set[str] = set()
_LOCK = threading.RLock()


def register_model(name: str):
    """Decorator: ``fn(**kwargs) -> SRModel`` becomes ``create(name, **kwargs)``."""
    def deco(fn):
        if name in _FACTORIES:
            raise ValueError(f"model {name!r} registered twice")
        _FACTORIES[name] = fn
        return fn
    return deco


def register_detector(fn: DetectFn | None = None, *, priority: int = 0, requires: Iterable[str] = (),
                      name: str | None = None):
    """Decorator, bare or with options: ``@register_detector(priority=10, requires=("conv_first.weight",))``.

    Returns the ``Detector``: calling it checks ``requires`` before the function runs.
    """
    def deco(f: DetectFn) -> Detector:
        det = Detector(name or f.__name__, f, priority, tuple(requires))
        if any(d.name == det.name for d in _DETECTORS):
            raise ValueError(f"detector {det.name!r} registered twice")
        _DETECTORS.append(det)
        _DETECTORS.sort(key=lambda d: (-d.priority, d.name))
        return det
    return deco if fn is None else deco(fn)


def discover(package: str = ARCHITECTURE_PACKAGE) -> None:
    """Import every public module of ``package`` once, so that their decorators run."""
    with _LOCK:
        if package in _DISCOVERED:
            return
        pkg = importlib.import_module(package)
        for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
            if not info.name.startswith("_"):
                importlib.import_module(f"{package}.{info.name}")
        _DISCOVERED.add(package)


def list_models() -> list[str]:
    discover()
    return sorted(_FACTORIES)


def detectors() -> list[Detector]:
    """The detectors in the order ``detect`` tries them."""
    discover()
    return list(_DETECTORS)


def create(name: str, pretrained: bool = False, **kwargs):
    """Build a registered model; ``pretrained`` loads its bundled weights instead (``asisr.models.pretrained``)."""
    discover()
    if name not in _FACTORIES:
        raise UserError(f"unknown model {name!r}; known: {', '.join(sorted(_FACTORIES))}")
    if pretrained:
        from asisr.models.pretrained import load_pretrained

        return load_pretrained(name, **kwargs)
    return _FACTORIES[name](**kwargs)


def _parse_cell_clip(text: str) -> float | None:
    if text.strip().lower() in ("off", "none", "no"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"cell_clip must be a scale like 4 or 'off', not {text!r}") from None
    if not value >= 1.0:
        raise UserError(f"cell_clip must be a scale >= 1 or 'off', not {text!r}")
    return value


def _parse_switch(text: str) -> bool:
    value = text.strip().lower()
    if value in ("on", "true", "yes", "1"):
        return True
    if value in ("off", "false", "no", "0"):
        return False
    raise UserError(f"expected on or off, not {text!r}")


# Test-time behaviours a user may change on a checkpoint without changing its weights
# (``asisr-export --option KEY=VALUE``). Defaults follow each architecture's official test script.
TEST_TIME_OPTIONS: dict[str, Callable[[str], Any]] = {
    "cell_clip": _parse_cell_clip,  # LTE / Meta-SR: tell the model cell * max(s / clip, 1); off: the true cell
    "window_pad": _parse_switch,  # SwinIR encoders: the official test's mirror padding to the window
    "grid_align_corners": _parse_switch,  # ArbRCAN: sample as trained (PyTorch 1.1); off: as the official code runs today
}


def parse_options(items: Iterable[str]) -> dict[str, Any]:
    """``["cell_clip=off", ...]`` -> ``{"cell_clip": None}``, with one clear line for a bad item."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in TEST_TIME_OPTIONS:
            raise UserError(f"invalid --option {item!r}: expected KEY=VALUE with KEY one of "
                            f"{', '.join(TEST_TIME_OPTIONS)}")
        options[key] = TEST_TIME_OPTIONS[key](value)
    return options


def apply_options(found: Detection, options: dict[str, Any] | None) -> Detection:
    """The detection with test-time ``options`` set, refused for a model that has no such behaviour."""
    if not options:
        return found
    import inspect

    accepted = inspect.signature(_FACTORIES[found.name]).parameters
    for key in options:
        if key not in TEST_TIME_OPTIONS or key not in accepted:
            have = [k for k in TEST_TIME_OPTIONS if k in accepted]
            raise UserError(f"model {found.name!r} has no test-time option {key!r}"
                            f"{' (it has: ' + ', '.join(have) + ')' if have else ''}")
        if key == "window_pad" and found.kwargs.get("encoder") != "swinir":
            raise UserError(f"window_pad applies to SwinIR encoders; this {found.name} has "
                            f"{found.kwargs.get('encoder', 'edsr-baseline')!r}")
    return Detection(found.name, found.state_dict, {**found.kwargs, **options})


def detect(checkpoint: Any) -> Detection:
    """Recognise the architecture of a checkpoint (a loaded object or its ``CanonicalCheckpoint``)."""
    ckpt = canonicalize(checkpoint)
    for detector in detectors():
        found = detector(ckpt)
        if found is not None:
            return found
    keys = list(ckpt.state_dict)
    raise UserError(f"unknown architecture: not a checkpoint of a known architecture ({', '.join(list_models())}): "
                    f"{ckpt.describe()}; keys look like {key_patterns(keys)}; top-level modules: {top_level(keys)}")


@register_detector(priority=OWN_FORMAT_PRIORITY, name="asisr")
def detect_own_format(ckpt: CanonicalCheckpoint) -> Detection | None:
    """asisr's own checkpoints name their model and its kwargs; the strict weight load checks the claim."""
    if ckpt.config is None:
        return None
    if ckpt.name not in _FACTORIES:
        raise UserError(f"{ckpt.source} is an asisr checkpoint of model {ckpt.name!r}, which this installation "
                        f"does not have; known: {', '.join(sorted(_FACTORIES))}")
    return Detection(ckpt.name, ckpt.state_dict, dict(ckpt.config))
