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
        return member_path(self.directory, self.data["graphs"][stage]["file"], f"{stage} graph")

    def member(self, name: str, what: str) -> Path:
        """A file the manifest names (an engine, a record), refused unless it lies inside the directory."""
        return member_path(self.directory, name, what)

    @property
    def descriptor(self) -> dict:
        return self.data["model"]["descriptor"]

    @property
    def precision(self) -> str:
        return self.data.get("precision", "fp32")

    @property
    def precision_drops(self) -> dict | None:
        """PSNR changes measured per reduced precision (``benchmarks/precision_drops.py``), or None."""
        drops = self.data.get("precision_drops")
        return drops if isinstance(drops, dict) else None

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


def member_path(directory: Path, name: object, what: str) -> Path:
    """``directory / name`` for a file a manifest names, which must stay inside the directory.

    Model directories are shared (a model zoo, a download) and a manifest's sha256 proves
    nothing about where a name points: no absolute paths, no ``..``, no links out.
    """
    if not isinstance(name, str) or not name or "\\" in name:
        raise UserError(f"manifest names its {what} {name!r}: not a plain file name inside {directory}")
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts:
        raise UserError(f"manifest names its {what} {name!r}, outside the model directory {directory}; refusing it")
    path = Path(directory) / relative
    root = Path(directory).resolve()
    resolved = path.resolve()
    if resolved != root and root not in resolved.parents:
        raise UserError(f"the {what} {path} links outside the model directory {directory} (to {resolved}); "
                        "refusing it")
    return path


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
    member_path(directory, MANIFEST, "manifest")
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
            graph = member_path(directory, info.get("file") if isinstance(info, dict) else None, f"{stage} graph")
            if not graph.is_file():
                raise UserError(f"manifest does not match its graphs: {stage} graph {graph} is missing")
            if sha256_file(graph) != info["sha256"]:
                raise UserError(f"manifest does not match its graphs: {graph.name} sha256 differs from {MANIFEST}")
    return Manifest(path, data)
