"""PyTorch backend: the reference every other backend is compared against."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from asisr.runtime.backends.base import Runner


class TorchRunner(Runner):
    """Runs an ``nn.Module`` stage with positional inputs in ``input_names`` order."""

    def __init__(self, module_loader: Callable[[], torch.nn.Module], input_names: Sequence[str],
                 output_names: Sequence[str], device: str = "cpu", name: str = "torch"):
        super().__init__()
        self.module_loader = module_loader
        self.input_names = list(input_names)
        self.output_names = list(output_names)
        self.device = torch.device(device)
        self.name = name
        self.module: torch.nn.Module | None = None

    def activate_impl(self) -> None:
        self.module = self.module_loader().eval().to(self.device)

    def deactivate_impl(self) -> None:
        self.module = None

    @torch.no_grad()
    def infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [torch.from_numpy(np.ascontiguousarray(feeds[n])).to(self.device) for n in self.input_names]
        out = self.module(*args)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return {n: o.detach().float().cpu().numpy() for n, o in zip(self.output_names, outs)}
