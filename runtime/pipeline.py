"""A model as two runners, backbone then upsampler, that stay active together."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from asisr.runtime import contract
from asisr.runtime.descriptor import ModelDescriptor
from asisr.runtime.manifest import Manifest
from asisr.runtime.runner import Runner
from asisr.runtime.tiling import TileCosts, TileLimits


@dataclass
class Pipeline:
    """``features = backbone(lr, scale)``; ``rgb = upsampler(features, scale, rows, cols)``.

    ``model`` names the architecture, ``source`` is the checkpoint or exported directory it
    came from, ``manifest`` the exported directory's manifest (None for a checkpoint run on torch),
    ``files`` the file each stage runs from (a graph, an engine), by stage name; ``run_precision`` the
    precision a backend was told to compute fp32 graphs in (OpenVINO's bf16), when it differs.
    """

    backbone: Runner
    upsampler: Runner
    descriptor: ModelDescriptor
    model: str
    source: Path | None = None
    manifest: Manifest | None = None
    files: dict[str, Path] = field(default_factory=dict)
    run_precision: str | None = None  # the precision the backend computes in, where it is not the graphs'
    precision_reason: str | None = None  # why this precision (asisr.runtime.precision's choice), for --verbose

    def __post_init__(self) -> None:
        if (self.backbone.stage, self.upsampler.stage) != contract.STAGES:
            raise ValueError(f"a pipeline takes a {contract.BACKBONE.name} runner then an "
                             f"{contract.UPSAMPLER.name} runner, got {self.backbone.name}, {self.upsampler.name}")

    @property
    def backend(self) -> str:
        return self.backbone.backend

    @property
    def precision(self) -> str:
        if self.run_precision is not None:
            return self.run_precision
        return self.manifest.precision if self.manifest is not None else "fp32"

    @property
    def label(self) -> str:
        """``liif [onnxruntime]``, ``liif int8 [onnxruntime]``: what a report calls this pipeline."""
        model = self.model if self.precision == "fp32" else f"{self.model} {self.precision}"
        return f"{model} [{self.backend}]"

    @property
    def choice(self) -> str:
        """``liif bf16 [openvino]: precision bf16 (auto: ...)``: what runs, and why that precision."""
        return f"{self.label}: precision {self.precision} ({self.precision_reason})"

    def tile_costs(self) -> TileCosts:
        """The backend's memory model, overridden by what the model declares (``descriptor.extra['tile_bytes']``)."""
        base = self.backbone.tile_costs(self.descriptor.feature_channels)
        return base.declared((self.descriptor.extra or {}).get("tile_bytes"))

    @property
    def tile_limits(self) -> TileLimits | None:
        return self.backbone.tile_limits or self.upsampler.tile_limits

    def __enter__(self) -> "Pipeline":
        self.backbone.activate()
        self.upsampler.activate()
        return self

    def __exit__(self, *exc) -> None:
        self.upsampler.deactivate()  # in reverse: a runner restores what it changed on activation
        self.backbone.deactivate()

    def features(self, lr: np.ndarray, scale: np.ndarray) -> np.ndarray:
        return self.backbone.infer(contract.backbone_feeds(lr, scale))[contract.FEATURES]

    def upsample(self, features: np.ndarray, scale: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return self.upsampler.infer(contract.upsampler_feeds(features, scale, rows, cols))[contract.RGB]
