"""The one interface every backend implements (Polygraphy-style).

A *loader* is a small lazy callable that produces the backend's heavy object (a torch
module, an ONNX Runtime session, a TensorRT engine) only when called; loaders compose.
A *runner* wraps one graph: a context manager (``activate`` / ``deactivate``) whose
``infer(feeds) -> outputs`` maps input names to numpy arrays and back.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class Runner(ABC):
    """Runs one stage graph; activate before infer, deactivate to free resources."""

    name: str = "runner"

    def __init__(self) -> None:
        self.is_active = False

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
        return self.infer_impl(feeds)

    @abstractmethod
    def activate_impl(self) -> None: ...

    @abstractmethod
    def deactivate_impl(self) -> None: ...

    @abstractmethod
    def infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...
