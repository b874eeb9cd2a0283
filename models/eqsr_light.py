"""Light EQSR backbone: EDSR-baseline-sized residual groups, each opened by a ModMBConv.

``conv_first`` -> ``n_groups`` x [``ModMBConv`` (scale-modulated 3x3, no squeeze-excitation
by default) -> ``n_resblocks`` x (conv3x3 -> ReLU -> conv3x3, residual) -> conv3x3, group
residual] -> ``conv_after_body`` + shallow-feature residual.

Without SE every layer is a local convolution (zero padding), so the receptive field is
finite: ``receptive_radius()`` LR pixels, and a tile cropped with that halo reproduces the
whole-image features exactly in its interior.
"""

from __future__ import annotations

import torch
from torch import nn

from asisr.models.scale_code import ModMBConv, ScaleCode

RGB_MEAN = (0.4488, 0.4371, 0.4040)


class ResBlock(nn.Module):
    def __init__(self, c: int, res_scale: float = 1.0):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1), nn.ReLU(), nn.Conv2d(c, c, 3, 1, 1))
        self.res_scale = res_scale

    def forward(self, x):
        return x + self.body(x) * self.res_scale


class LightGroup(nn.Module):
    def __init__(self, c: int, n_resblocks: int, code_dim: int, se: bool, res_scale: float):
        super().__init__()
        self.mbconv = ModMBConv(c, code_dim, se=se)
        self.blocks = nn.Sequential(*[ResBlock(c, res_scale) for _ in range(n_resblocks)])
        self.conv = nn.Conv2d(c, c, 3, 1, 1)

    def forward(self, x, code):
        return self.conv(self.blocks(self.mbconv(x, code))) + x


class LightBackbone(nn.Module):
    """``(lr (B,3,h,w) in [0,1], scale (B,2)) -> features (B, n_feats, h, w)``."""

    def __init__(self, n_feats: int = 64, n_groups: int = 4, n_resblocks: int = 4, scale_code: str = "portable",
                 scale_code_freqs: int | None = None, se: bool = False, res_scale: float = 1.0,
                 img_range: float = 1.0):
        super().__init__()
        self.n_feats, self.n_groups, self.n_resblocks, self.se = n_feats, n_groups, n_resblocks, se
        self.img_range = img_range
        self.scale_code = ScaleCode(scale_code, scale_code_freqs)
        self.register_buffer("rgb_mean", torch.tensor(RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        self.conv_first = nn.Conv2d(3, n_feats, 3, 1, 1)
        self.groups = nn.ModuleList([LightGroup(n_feats, n_resblocks, self.scale_code.dim, se, res_scale)
                                     for _ in range(n_groups)])
        self.conv_after_body = nn.Conv2d(n_feats, n_feats, 3, 1, 1)

    def receptive_radius(self) -> int | None:
        """Exact LR receptive-field radius, ``None`` with SE (global pooling)."""
        if self.se:
            return None
        # conv_first 1 + per group (modulated 3x3: 1, res blocks: 2 each, group conv: 1) + after body 1
        return 1 + self.n_groups * (1 + 2 * self.n_resblocks + 1) + 1

    def forward(self, lr: torch.Tensor, scale: torch.Tensor, code: torch.Tensor | None = None) -> torch.Tensor:
        if code is None:
            code = self.scale_code(scale, lr.shape[2])
        x = self.conv_first((lr - self.rgb_mean) * self.img_range)
        y = x
        for g in self.groups:
            y = g(y, code)
        return self.conv_after_body(y) + x
