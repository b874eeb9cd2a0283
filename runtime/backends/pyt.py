"""PyTorch backend: the reference every other backend is compared against."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from asisr.runtime.contract import StageSpec
from asisr.runtime.runner import Runner


class TorchRunner(Runner):
    """Runs an ``nn.Module`` stage with positional inputs in ``input_names`` order.

    ``channels_last`` converts the module's 4-D weights and inputs to NHWC memory format
    (the module is converted in place). On CPU this made the LIIF backbone ~1.4x faster on a
    tiny 1-thread case, with float-rounding differences (~1e-5); off by default, so the torch
    backend stays the bit-stable reference.
    """

    backend = "torch"
    # torch frees between calls but peaks higher inside one (asisr.bench.memory measurements).
    memory_model = (40.0, 8192.0, 56.0, 64 << 20)

    def __init__(self, module_loader: Callable[[], torch.nn.Module], stage: StageSpec, device: str = "cpu",
                 name: str | None = None, channels_last: bool = False, threads: int | None = None):
        super().__init__(stage, name)
        self.threads = threads  # torch's intra-op threads while active; the caller's setting is restored after
        self._threads_before: int | None = None
        self.channels_last = channels_last
        self.module_loader = module_loader
        self.device = torch.device(device)
        self.module: torch.nn.Module | None = None

    def activate_impl(self) -> None:
        if self.threads:
            self._threads_before = torch.get_num_threads()
            torch.set_num_threads(self.threads)
        self.module = self.module_loader().eval().to(self.device)
        if self.channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)

    def deactivate_impl(self) -> None:
        self.module = None
        if self._threads_before is not None:
            torch.set_num_threads(self._threads_before)
            self._threads_before = None

    @torch.no_grad()
    def infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [torch.from_numpy(np.ascontiguousarray(feeds[n])).to(self.device) for n in self.stage.input_names]
        if self.channels_last:
            args = [a.contiguous(memory_format=torch.channels_last) if a.dim() == 4 else a for a in args]
        out = self.module(*args)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return {n: o.detach().float().contiguous().cpu().numpy() for n, o in zip(self.stage.output_names, outs)}


def torch_pipeline(model, device: str = "cpu", threads: int | None = None, channels_last: bool = False):
    """A ``Pipeline`` running an ``asisr.models.SRModel``'s two stages in PyTorch (the reference backend).

    ``channels_last``: the backbone runs in NHWC memory format (see ``TorchRunner``).
    """
    from asisr.runtime import contract
    from asisr.runtime.pipeline import Pipeline

    backbone = TorchRunner(lambda: model.backbone, contract.BACKBONE, device, channels_last=channels_last,
                           threads=threads)
    upsampler = TorchRunner(lambda: model.upsampler, contract.UPSAMPLER, device, threads=threads)
    source = getattr(model, "checkpoint_path", None)
    return Pipeline(backbone, upsampler, model.descriptor, model.name, Path(source) if source else None)
