"""The contract every ASISR model in asisr follows.

An ``SRModel`` is two plain ``nn.Module`` stages, exported and run separately:

* ``Backbone.forward(lr, scale) -> features``: ``lr`` (B, 3, h, w) RGB in [0, 1],
  ``scale`` (B, 2) per-sample (s_h, s_w); features (B, C, h, w), same spatial size as ``lr``.
* ``Upsampler.forward(features, scale, rows, cols) -> rgb``: ``rows`` (B, H_out) and
  ``cols`` (B, W_out) are LR-pixel coordinates of the output pixel centres (see
  ``asisr.runtime.query``); rgb (B, 3, H_out, W_out), in [0, 1] up to clamping.

Per-sample scales let one batch mix scales (training) and asymmetric scales are native.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from asisr.errors import UserError
from asisr.runtime.descriptor import ModelDescriptor
from asisr.runtime.query import make_query


class SRModel(nn.Module):
    """Backbone + upsampler + descriptor, with a whole-image PyTorch reference path."""

    def __init__(self, name: str, backbone: nn.Module, upsampler: nn.Module, descriptor: ModelDescriptor,
                 config: dict | None = None):
        super().__init__()
        self.name = name
        self.backbone = backbone
        self.upsampler = upsampler
        self.descriptor = descriptor
        self.config = dict(config or {})

    def forward(self, lr: torch.Tensor, scale: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return self.upsampler(self.backbone(lr, scale), scale, rows, cols)

    def reference(self) -> "SRModel":
        """A copy computing the plain reference math: submodules with a ``fast`` flag turn it off.

        Fast paths are exact algebraic rewrites; parity checks compare against this copy.
        """
        ref = copy.deepcopy(self)
        for m in ref.modules():
            if hasattr(m, "fast"):
                m.fast = False
        return ref.eval()

    @torch.no_grad()
    def upscale(self, lr: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
        """Reference: whole image in one call. ``lr`` (B, 3, h, w) in [0, 1] -> (B, 3, H, W) clamped."""
        b, _, h, w = lr.shape
        scale, rows, cols = (torch.from_numpy(a).to(lr.device) for a in make_query(h, w, *out_size, batch=b))
        return self(lr, scale, rows, cols).clamp(0, 1)


def load_state_dict_strict(model: nn.Module, state_dict: dict, what: str) -> None:
    """Load weights, failing with one message that names missing and unexpected keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [k for k in own if k in state_dict and tuple(own[k].shape) != tuple(state_dict[k].shape)]
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape-mismatched", mismatched)):
            if keys:
                parts.append(f"{label} keys ({len(keys)}): {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}")
        raise UserError(f"checkpoint does not match {what}: " + "; ".join(parts))
    model.load_state_dict(state_dict, strict=True)
