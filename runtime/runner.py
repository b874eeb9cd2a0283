"""The one interface every backend implements (Polygraphy-style).

A *loader* is a small lazy callable that produces the backend's heavy object (a torch
module, an ONNX Runtime session, a TensorRT engine) only when called; loaders compose.
A *runner* wraps one stage graph: a context manager (``activate`` / ``deactivate``) whose
``infer(feeds) -> outputs`` maps the stage's input names to numpy arrays and back.

A runner also declares its backend's policy, so the runtime never sniffs backend types:
the memory a tile costs it (``tile_costs``), the largest tiles it accepts
(``tile_limits``, e.g. a TensorRT engine's optimization profile), and whether it can give
working memory back after a large call (``release_memory_after_runs``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from asisr.runtime.contract import StageSpec
from asisr.runtime.tiling import TileCosts, TileLimits


class Runner(ABC):
    """Runs one stage graph; activate before infer, deactivate to free resources."""

    backend: ClassVar[str] = "runner"
    # Bytes held per unit of tile while running (see ``TileCosts``), per feature channel where
    # a term scales with the width: (backbone per LR px, upsampler per query, per window LR px, fixed).
    memory_model: ClassVar[tuple[float, float, float, float]] = (22.0, 8192.0, 56.0, 16 << 20)

    def __init__(self, stage: StageSpec, name: str | None = None) -> None:
        self.stage = stage
        self.name = name or f"{self.backend}:{stage.name}"
        self.is_active = False
        self.tile_limits: TileLimits | None = None

    def activate(self) -> None:
        if not self.is_active:
            self.activate_impl()
            self.is_active = True

    def deactivate(self) -> None:
        if self.is_active:
            self.deactivate_impl()
            self.is_active = False

    def __enter__(self) -> "Runner":
        self.activate()
        return self

    def __exit__(self, *exc) -> None:
        self.deactivate()

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.is_active:
            raise RuntimeError(f"{self.name}: infer() called on an inactive runner; use it as a context manager")
        missing = [n for n in self.stage.input_names if n not in feeds]
        if missing:
            raise ValueError(f"{self.name}: missing inputs {missing} (the {self.stage.name} stage takes "
                             f"{list(self.stage.input_names)})")
        for t in self.stage.inputs:
            if np.ndim(feeds[t.name]) != t.rank:
                raise ValueError(f"{self.name}: input {t.name!r} has shape {list(np.shape(feeds[t.name]))}, "
                                 f"expected {t.rank} axes {list(t.axes)}")
        return self.infer_impl(feeds)

    @classmethod
    def tile_costs(cls, feature_channels: int) -> TileCosts:
        """The tile planner's memory model for this backend at this feature width."""
        bb, query, window, fixed = cls.memory_model
        return TileCosts(bb * feature_channels, query, window * feature_channels, fixed)

    def release_memory_after_runs(self, enabled: bool) -> None:
        """Give working memory back after each call (worth it for few, large calls). Default: nothing to give."""

    @abstractmethod
    def activate_impl(self) -> None: ...

    @abstractmethod
    def deactivate_impl(self) -> None: ...

    @abstractmethod
    def infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...
