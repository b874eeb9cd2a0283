"""TensorRT engine files and the record that says what each was built from and for.

A serialized engine is only valid for the exact graph, TensorRT version and GPU it was built
with, and only accepts the shapes of its profile. Each ``NAME.engine`` therefore sits next
to ``NAME.engine.json`` holding its ``EngineKey`` fields plus the engine's sha256. Loading
compares every field with what is expected here and now; any difference (a new TensorRT, a
different GPU, a changed graph or profile, a truncated file) marks the engine stale, and it
is rebuilt or refused, never loaded. Files are written atomically, engine first, record last,
so a record always describes a complete engine.

Nothing here imports TensorRT: versions and GPU names are plain values, so this is tested
on machines without a GPU.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from asisr.atomic import atomic_path
from asisr.digest import sha256_file

RECORD_VERSION = 1
RECORD_SUFFIX = ".json"


@dataclass(frozen=True)
class EngineKey:
    """Everything that makes one engine differ from another."""

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "9.0"
    precision: str  # fp32 | fp16 | int8, read from the graph
    profile: dict  # Profile.to_dict()
    stage: str = ""
    builder: dict = field(default_factory=dict)  # builder options that change the engine

    def to_dict(self) -> dict:
        return asdict(self)

    def digest(self) -> str:
        """sha256 of the canonical JSON of all fields."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


_FIELD_LABELS = {
    "onnx_sha256": "ONNX graph sha256",
    "tensorrt_version": "TensorRT version",
    "gpu_name": "GPU",
    "compute_capability": "compute capability",
    "precision": "precision",
    "profile": "optimization profile",
    "stage": "stage",
    "builder": "builder options",
}


def record_path(engine: str | Path) -> Path:
    engine = Path(engine)
    return engine.with_name(engine.name + RECORD_SUFFIX)


def read_record(engine: str | Path) -> dict | None:
    """The engine's record, or None when it is missing or unreadable."""
    path = record_path(engine)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def stale_reasons(engine: str | Path, expected: EngineKey, verify_bytes: bool = True) -> list[str]:
    """Why ``engine`` must not be loaded for ``expected``; empty when it may."""
    engine = Path(engine)
    if not engine.is_file():
        return [f"engine file {engine.name} is missing"]
    record = read_record(engine)
    if record is None:
        return [f"engine record {record_path(engine).name} is missing or corrupt"]
    if record.get("record_version") != RECORD_VERSION:
        return [f"engine record version {record.get('record_version')!r} is not {RECORD_VERSION}"]
    reasons = []
    key = record.get("key") if isinstance(record.get("key"), dict) else {}
    for name, want in expected.to_dict().items():
        have = key.get(name)
        if have != want:
            label = _FIELD_LABELS.get(name, name)
            if isinstance(want, dict) or isinstance(have, dict):
                reasons.append(f"{label} differs")
            else:
                reasons.append(f"{label}: engine built for {have!r}, here {want!r}")
    if not reasons and verify_bytes:
        if engine.stat().st_size != record.get("engine_bytes"):
            reasons.append(f"engine file {engine.name} has {engine.stat().st_size} bytes, "
                           f"its record says {record.get('engine_bytes')}")
        elif sha256_file(engine) != record.get("engine_sha256"):
            reasons.append(f"engine file {engine.name} sha256 differs from its record")
    return reasons


def write_engine(engine: str | Path, data: bytes, key: EngineKey, extra: dict | None = None) -> Path:
    """Write ``data`` and its record atomically (engine first, record last)."""
    engine = Path(engine)
    engine.parent.mkdir(parents=True, exist_ok=True)
    data = bytes(data)
    record_path(engine).unlink(missing_ok=True)  # no record may describe a half-replaced engine
    with atomic_path(engine) as tmp:
        tmp.write_bytes(data)
    record = {
        "record_version": RECORD_VERSION,
        "key": key.to_dict(),
        "key_sha256": key.digest(),
        "engine_sha256": hashlib.sha256(data).hexdigest(),
        "engine_bytes": len(data),
        **(extra or {}),
    }
    with atomic_path(record_path(engine)) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    return engine


class EngineCache:
    """A folder of engines named by their key's digest: ``{stage}-{digest[:24]}.engine`` + record."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, key: EngineKey) -> Path:
        return self.root / f"{key.stage or 'engine'}-{key.digest()[:24]}.engine"

    def lookup(self, key: EngineKey) -> Path | None:
        path = self.path(key)
        return path if not stale_reasons(path, key) else None

    def get_or_build(self, key: EngineKey, build: Callable[[], bytes], extra: dict | None = None) -> Path:
        """The cached engine for ``key``; built (and stored) when absent or stale."""
        found = self.lookup(key)
        if found is not None:
            return found
        return write_engine(self.path(key), build(), key, extra)
