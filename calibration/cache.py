"""A JSON file of calibration results, reused across exports.

One entry per (fp32 graph pair sha256, calibration method, INT8 target, sampling settings and
exclusion policy): the tensor ranges of both graphs as ONNX Runtime's ``TensorsData``, the
measured exclusions and the calibration set they came from. An export that finds its entry
reads no image and quantises to byte-identical graphs; ranges round-trip exactly (float32 ->
JSON float -> float32).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from onnxruntime.quantization.calibrate import CalibrationCacheEncoder, TensorsData

from asisr.atomic import atomic_path
from asisr.errors import UserError
from asisr.runtime.contract import STAGE_NAMES

KIND = "asisr-calibration-cache"
VERSION = 1


def cache_key(graph_sha256: dict[str, str], method: str, target: str, settings: dict) -> str:
    """``<backbone sha>+<upsampler sha>:<method>:<target>:<settings hash>``."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    graphs = "+".join(graph_sha256[stage] for stage in STAGE_NAMES)
    return f"{graphs}:{method}:{target}:{digest}"


class RangeCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.entries: dict[str, dict] = {}
        if self.path.exists():
            if not self.path.is_file():
                raise UserError(f"calibration cache is not a file: {self.path}")
            try:
                data = json.loads(self.path.read_text())
                if data.get("kind") != KIND or data.get("version") != VERSION:
                    raise ValueError(f"not a version-{VERSION} {KIND} file")
                self.entries = dict(data["entries"])
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                raise UserError(f"cannot read calibration cache {self.path}: {e}") from None

    def get(self, key: str) -> dict | None:
        entry = self.entries.get(key)
        if entry is None:
            return None
        out = dict(entry)
        out["ranges"] = {stage: TensorsData.from_dict(d) for stage, d in entry["ranges"].items()}
        return out

    def put(self, key: str, entry: dict) -> None:
        """Add (or replace) an entry and rewrite the file atomically."""
        self.entries[key] = json.loads(json.dumps(entry, cls=CalibrationCacheEncoder))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps({"kind": KIND, "version": VERSION, "entries": self.entries}, indent=1))
