"""A model as two runners, backbone then upsampler, that stay active together."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from asisr.models.descriptor import ModelDescriptor
from asisr.runtime.backends.base import Runner


@dataclass
class Pipeline:
    """``features = backbone(lr, scale)``; ``rgb = upsampler(features, scale, rows, cols)``."""

    backbone: Runner
    upsampler: Runner
    descriptor: ModelDescriptor
    info: dict = field(default_factory=dict)

    def __enter__(self) -> "Pipeline":
        self.backbone.activate()
        self.upsampler.activate()
        return self

    def __exit__(self, *exc) -> None:
        self.backbone.deactivate()
        self.upsampler.deactivate()

    def features(self, lr: np.ndarray, scale: np.ndarray) -> np.ndarray:
        return self.backbone.infer({"lr": lr, "scale": scale})["features"]

    def upsample(self, features: np.ndarray, scale: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return self.upsampler.infer({"features": features, "scale": scale, "rows": rows, "cols": cols})["rgb"]
