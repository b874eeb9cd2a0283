"""Light EQSR backbone: EDSR-baseline with a scale-modulated ModMBConv opening each group.

``conv_first`` -> ``n_groups`` x [``y + gamma * ModMBConv(y, scale code)`` -> ``n_resblocks`` x
(conv3x3 -> ReLU -> conv3x3, residual)] -> ``conv_after_body`` + shallow-feature residual.

The layout and the input normalisation ``(lr - 0.5) / 0.5`` are EDSR-baseline's as LIIF uses
it, and ``gamma`` (a per-channel LayerScale) starts at zero: a freshly built backbone with
EDSR-baseline weights copied in computes exactly the EDSR-baseline features, so training can
start from a pretrained encoder and learn the scale modulation on top (``asisr.training``).

Without squeeze-excitation every layer is a local convolution (zero padding), so the
receptive field is finite: ``receptive_radius()`` LR pixels, and a tile cropped with that halo
reproduces the whole-image features exactly in its interior.
"""

from __future__ import annotations

import torch
from torch import nn

from asisr.models.edsr import ResBlock
from asisr.models.scale_code import ModMBConv, ScaleCode


class LightGroup(nn.Module):
    def __init__(self, c: int, n_resblocks: int, code_dim: int, se: bool, res_scale: float):
        super().__init__()
        self.mbconv = ModMBConv(c, code_dim, se=se)
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.blocks = nn.Sequential(*[ResBlock(c, res_scale) for _ in range(n_resblocks)])

    def forward(self, x, code):
        return self.blocks(x + self.gamma * self.mbconv(x, code))


class LightBackbone(nn.Module):
    """``(lr (B,3,h,w) in [0,1], scale (B,2)) -> features (B, n_feats, h, w)``."""

    def __init__(self, n_feats: int = 64, n_groups: int = 4, n_resblocks: int = 4, scale_code: str = "portable",
                 scale_code_freqs: int | None = None, se: bool = False, res_scale: float = 1.0):
        super().__init__()
        self.n_feats, self.n_groups, self.n_resblocks, self.se = n_feats, n_groups, n_resblocks, se
        self.scale_code = ScaleCode(scale_code, scale_code_freqs)
        self.conv_first = nn.Conv2d(3, n_feats, 3, 1, 1)
        self.groups = nn.ModuleList([LightGroup(n_feats, n_resblocks, self.scale_code.dim, se, res_scale)
                                     for _ in range(n_groups)])
        self.conv_after_body = nn.Conv2d(n_feats, n_feats, 3, 1, 1)

    def receptive_radius(self) -> int | None:
        """Exact LR receptive-field radius, ``None`` with SE (global pooling)."""
        if self.se:
            return None
        # conv_first 1 + per group (modulated 3x3: 1, res blocks: 2 each) + after body 1
        return 1 + self.n_groups * (1 + 2 * self.n_resblocks) + 1

    def forward(self, lr: torch.Tensor, scale: torch.Tensor, code: torch.Tensor | None = None) -> torch.Tensor:
        if code is None:
            code = self.scale_code(scale, lr.shape[2])
        x = self.conv_first((lr - 0.5) / 0.5)
        y = x
        for g in self.groups:
            y = g(y, code)
        return self.conv_after_body(y) + x
