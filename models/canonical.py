"""One canonical form for every checkpoint layout, computed once per load.

Checkpoints arrive wrapped in many ways: asisr's own ``{'asisr': meta, 'state_dict': sd}``,
the LIIF codebase's ``{'model': {'name', 'args', 'sd'}, 'optimizer', 'epoch'}``, BasicSR's
``{'params_ema': sd, 'params': sd}``, Lightning-style ``{'state_dict': sd}``, a bare
``sd``, any of them with ``module.`` (``nn.DataParallel``) on every key. ``canonicalize``
peels that off in one place, so a detector only ever looks at tensor names and shapes plus
whatever metadata the wrapper carried, and never at the raw file.

Torch-free on purpose: a state dict is any mapping of names to objects with a ``shape``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from asisr.errors import UserError

OWN_KEY = "asisr"  # asisr's own format: {OWN_KEY: {'name', 'config'[, 'card']}, 'state_dict': sd}
# Wrapper keys tried, in this order, when a dict is not itself a state dict. ``params_ema``
# comes before ``params``: BasicSR stores both and the EMA weights are the ones it evaluates.
WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model")
DATA_PARALLEL_PREFIX = "module."
_MAX_DEPTH = 4
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default format
PICKLE_PROTO = b"\x80"  # legacy torch.save: a pickle stream, protocol >= 2


def looks_like_torch_save(head: bytes) -> bool:
    """Whether a file's first bytes can begin a ``torch.save`` file (a zip archive or a pickle stream)."""
    return head.startswith(ZIP_MAGIC) or head.startswith(PICKLE_PROTO)


@dataclass(frozen=True)
class CanonicalCheckpoint:
    """A state dict with its wrapper removed, plus the metadata the wrapper carried.

    ``format`` names the wrapper (``'asisr'``, ``'liif'``, one of ``WRAPPER_KEYS`` joined by
    ``/`` when nested, or ``'bare'``). ``name`` is what the file claims to be (asisr's model
    name, the LIIF codebase's ``model.name``): a hint for messages, not proof.
    """

    state_dict: dict[str, Any]
    format: str
    name: str | None = None
    config: dict | None = None  # asisr: constructor kwargs of ``name``
    card: dict | None = None  # asisr: free-form provenance
    args: dict | None = None  # LIIF codebase: the model spec's ``args``
    source: str = "in-memory checkpoint"

    def __contains__(self, key: str) -> bool:
        return key in self.state_dict

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self.state_dict[key].shape)

    def has(self, *keys: str) -> bool:
        return all(k in self.state_dict for k in keys)

    def with_prefix(self, prefix: str) -> list[str]:
        return [k for k in self.state_dict if k.startswith(prefix)]

    def describe(self) -> str:
        """Where it came from, for messages: ``x.pth (LIIF-codebase format, named 'lte')``."""
        what = {"asisr": "asisr format", "liif": "LIIF-codebase format", "bare": "bare state dict"}.get(
            self.format, f"'{self.format}' wrapper")
        named = f", named {self.name!r}" if self.name else ""
        return f"{self.source} ({what}{named})"


def key_patterns(keys: list[str], limit: int = 6) -> str:
    """``body.0.weight, body.1.weight, body.1.bias`` -> ``body.N.weight (3 tensors)``: the keys in one line.

    Indices become ``N`` and a ``.bias`` beside its ``.weight`` is not repeated.
    """
    seen: list[str] = []
    for k in keys:
        p = re.sub(r"\.\d+(?=\.|$)", ".N", k)
        if p not in seen and not (p.endswith(".bias") and p[:-5] + ".weight" in seen):
            seen.append(p)
    shown = ", ".join(seen[:limit]) + (", ..." if len(seen) > limit else "")
    return f"{shown or 'nothing'} ({len(keys)} tensor{'s' if len(keys) != 1 else ''})"


def top_level(keys: list[str]) -> str:
    """``encoder (76), imnet (8), coef (2)``: which modules a state dict holds, with their tensor counts."""
    counts: dict[str, int] = {}
    for k in keys:
        counts[k.split(".")[0]] = counts.get(k.split(".")[0], 0) + 1
    return ", ".join(f"{m} ({n})" for m, n in counts.items())


def is_state_dict(obj: Any) -> bool:
    return (isinstance(obj, Mapping) and len(obj) > 0
            and all(isinstance(k, str) and hasattr(v, "shape") for k, v in obj.items()))


def strip_prefix(sd: dict[str, Any], prefix: str = DATA_PARALLEL_PREFIX) -> dict[str, Any]:
    """Remove ``prefix`` while *every* key has it (``module.module.`` too); a partial prefix is a real name."""
    while sd and all(k.startswith(prefix) for k in sd):
        sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def own_format(name: str, config: dict, state_dict: Mapping[str, Any], card: dict | None = None) -> dict:
    """The object ``asisr.models.save`` writes; ``canonicalize`` reads it back (writer and reader in one place)."""
    meta: dict[str, Any] = {"name": name, "config": dict(config)}
    if card:
        meta["card"] = card
    return {OWN_KEY: meta, "state_dict": state_dict}


def canonicalize(obj: Any, source: str = "in-memory checkpoint") -> CanonicalCheckpoint:
    """Unwrap a loaded checkpoint object into a ``CanonicalCheckpoint`` (idempotent)."""
    if isinstance(obj, CanonicalCheckpoint):
        return obj
    if not isinstance(obj, Mapping):
        raise UserError(f"not a checkpoint: {source} holds a {type(obj).__name__}, not a dict of tensors")
    found = _unwrap(obj, source, 0)
    if found is None:
        top = ", ".join(map(str, list(obj)[:8])) + (", ..." if len(obj) > 8 else "")
        raise UserError(f"not a checkpoint: no state dict (a dict of tensors) in {source}; "
                        f"top-level keys: {top or 'none'}")
    return found


def _unwrap(obj: Mapping, source: str, depth: int) -> CanonicalCheckpoint | None:
    own = obj.get(OWN_KEY)
    if isinstance(own, Mapping) and "name" in own:
        sd = obj.get("state_dict")
        if not is_state_dict(sd):
            raise UserError(f"{source}: asisr checkpoint of {own['name']!r} has no 'state_dict' of tensors")
        return CanonicalCheckpoint(strip_prefix(dict(sd)), "asisr", str(own["name"]),
                                   dict(own.get("config") or {}), own.get("card"), source=source)
    spec = obj.get("model")
    if isinstance(spec, Mapping) and is_state_dict(spec.get("sd")):
        # LIIF-codebase train.py: name and args may be missing or wrong; detectors trust the tensors.
        name = spec.get("name")
        args = spec.get("args")
        return CanonicalCheckpoint(strip_prefix(dict(spec["sd"])), "liif", name if isinstance(name, str) else None,
                                   args=dict(args) if isinstance(args, Mapping) else None, source=source)
    if is_state_dict(obj):
        return CanonicalCheckpoint(strip_prefix(dict(obj)), "bare", source=source)
    if depth >= _MAX_DEPTH:
        return None
    for key in WRAPPER_KEYS:
        inner = obj.get(key)
        if isinstance(inner, Mapping):
            found = _unwrap(inner, source, depth + 1)
            if found is not None:
                fmt = key if found.format == "bare" else f"{key}/{found.format}"
                return CanonicalCheckpoint(found.state_dict, fmt, found.name, found.config, found.card, found.args,
                                           source)
    return None
