"""``manifest.json``: what an exported model directory holds, and the check that it still does."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from asisr.errors import UserError
from asisr.digest import sha256_file
from asisr.runtime.contract import STAGE_NAMES
from asisr.runtime.descriptor import ModelDescriptor

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


@dataclass
class Manifest:
    path: Path
    data: dict

    @property
    def directory(self) -> Path:
        return self.path.parent

    @property
    def model(self) -> str:
        return self.data["model"]["name"]

    def graph_path(self, stage: str) -> Path:
        return self.directory / self.data["graphs"][stage]["file"]

    @property
    def descriptor(self) -> dict:
        return self.data["model"]["descriptor"]

    @property
    def precision(self) -> str:
        return self.data.get("precision", "fp32")

    def model_descriptor(self) -> ModelDescriptor:
        return ModelDescriptor.from_dict(self.descriptor)

    def require_fp32(self, what: str) -> None:
        """Reduced-precision exports start from fp32 graphs, never from each other."""
        precision = self.data.get("precision", "fp32")
        if precision != "fp32":
            raise UserError(f"{self.directory} holds {precision} graphs; {what} starts from an fp32 export")

    def derived(self, directory: Path, precision: str) -> dict:
        """This manifest for the same model's graphs rewritten into ``directory`` at ``precision``."""
        data = dict(self.data)
        data["precision"] = precision
        data["graphs"] = {stage: {**info, "sha256": sha256_file(Path(directory) / info["file"])}
                          for stage, info in self.data["graphs"].items()}
        return data


def write_manifest(directory: Path, data: dict) -> Path:
    path = Path(directory) / MANIFEST
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path


def read_manifest(directory: str | Path, verify: bool = True) -> Manifest:
    """Read a model directory's manifest; with ``verify``, refuse graphs that are not the ones it lists."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise UserError(f"not an exported model directory (no {MANIFEST}): {directory}")
    try:
        data = json.loads(path.read_text())
        graphs = data["graphs"]
        data["model"]["name"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserError(f"corrupt manifest {path}: {type(e).__name__}: {e}") from None
    if data.get("format_version") != FORMAT_VERSION:
        raise UserError(f"manifest {path} has format version {data.get('format_version')!r}, expected {FORMAT_VERSION}")
    if sorted(graphs) != sorted(STAGE_NAMES):
        raise UserError(f"manifest {path} lists graphs {sorted(graphs)}; an asisr model has {', '.join(STAGE_NAMES)}")
    if verify:
        for stage, info in graphs.items():
            graph = directory / info["file"]
            if not graph.is_file():
                raise UserError(f"manifest does not match its graphs: {stage} graph {graph} is missing")
            if sha256_file(graph) != info["sha256"]:
                raise UserError(f"manifest does not match its graphs: {graph.name} sha256 differs from {MANIFEST}")
    return Manifest(path, data)
