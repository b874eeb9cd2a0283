"""Latent-modulated decoder: LIIF's queries with the heavy work moved to LR resolution.

asisr's own design in the spirit of LMF (He and Jin, CVPR 2024, "Latent Modulated Function"):
LIIF runs a 256-wide MLP four times per output pixel (about 1.4 M MACs per pixel), so its cost
grows with the output area. Here a latent network runs once per LR pixel (a 3x3 conv over the
encoder features and two 1x1 convs, the same receptive field as LIIF's feature unfolding) and
predicts, per LR pixel, a FiLM modulation (scale and shift) for every hidden unit of a tiny
render MLP. Per output pixel only that render MLP runs, on the query's offset and cell, once per
local-ensemble member: a few thousand MACs instead of LIIF's 1.4 M. A bilinear skip of the input
(as in LTE) lets the render MLP model the residual only.

Backbone features are ``cat(modulations, normalised input)``; the upsampler gathers the
modulations of each ensemble member's LR cell, renders, area-weights as LIIF and adds the skip.
The first render layer's input ``(ry, rx, cell_y, cell_x)`` is linear and separable, so it is a
per-row plus a per-column vector, never an (H, W, 4) tensor (as LIIF's fast form).
"""

from __future__ import annotations

import torch
from torch import nn

from asisr.models.base import SRModel
from asisr.models.encoders import EDSR_BASELINE, EncoderBackbone, family_config, family_descriptor, family_encoder
from asisr.models.registry import register_model
from asisr.models.sampling import bilinear_border, cell_index, gather_rows, local_ensemble


class LatentBackbone(EncoderBackbone):
    """Encoder + the LR-resolution latent network; the normalised input rides along for the skip."""

    def __init__(self, encoder: str, encoder_args: dict, window_pad: bool, latent_dim: int, modulations: int):
        super().__init__(encoder, encoder_args, window_pad)
        self.latent = nn.Sequential(
            nn.Conv2d(self.out_dim, latent_dim, 3, padding=1), nn.ReLU(),
            nn.Conv2d(latent_dim, latent_dim, 1), nn.ReLU(),
            nn.Conv2d(latent_dim, modulations, 1))
        # zero modulations at the start: the render MLP begins as one shared function of the offset
        last = self.latent[-1]
        assert isinstance(last, nn.Conv2d)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    @property
    def receptive_radius(self) -> int | None:
        r = self.encoder.receptive_radius
        return None if r is None else r + 1  # the latent network's 3x3 conv

    def head(self, inp: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.latent(feat), inp], dim=1)


class RenderUpsampler(nn.Module):
    """``(cat(modulations, inp), scale, rows, cols) -> rgb`` with a ``depth`` x ``width`` render MLP."""

    def __init__(self, width: int = 16, depth: int = 3):
        super().__init__()
        self.width, self.depth = width, depth
        self.first = nn.Linear(4, width)  # (ry, rx, cell_y, cell_x): LIIF's relative coordinate and cell
        self.hidden = nn.ModuleList(nn.Linear(width, width) for _ in range(depth - 1))
        self.out = nn.Linear(width, 3)

    @property
    def modulations(self) -> int:
        return 2 * self.depth * self.width

    def forward(self, features: torch.Tensor, scale: torch.Tensor, rows: torch.Tensor,
                cols: torch.Tensor) -> torch.Tensor:
        b, _, h, w = features.shape
        m, k = self.modulations, self.width
        hh, ww = rows.shape[1], cols.shape[1]
        mods = features[:, :m].permute(0, 2, 3, 1)  # (B, h, w, 2 * depth * width)
        inp = features[:, m:]
        w1 = self.first.weight
        per_image = (2.0 / scale) @ w1[:, 2:].t() + self.first.bias  # (B, width): cell term, official 2 / s
        preds, areas = [], []
        for vy in (-0.5, 0.5):
            iy = cell_index(rows + vy, h)
            ry = 2.0 * (rows - (iy.to(rows.dtype) + 0.5))  # (B, H): LIIF's normalised offset * h
            row_term = ry[..., None] * w1[:, 0] + per_image[:, None, :]  # (B, H, width)
            for vx in (-0.5, 0.5):
                ix = cell_index(cols + vx, w)
                rx = 2.0 * (cols - (ix.to(cols.dtype) + 0.5))  # (B, W)
                col_term = rx[..., None] * w1[:, 1]  # (B, W, width)
                q = gather_rows(mods, iy, ix).reshape(b * hh * ww, m)
                x = (row_term[:, :, None, :] + col_term[:, None, :, :]).reshape(b * hh * ww, k)
                x = torch.relu(x * (1.0 + q[:, :k]) + q[:, k:2 * k])
                for i, layer in enumerate(self.hidden, start=1):
                    j = 2 * k * i
                    x = torch.relu(layer(x) * (1.0 + q[:, j:j + k]) + q[:, j + k:j + 2 * k])
                preds.append(self.out(x).view(b, hh, ww, 3))
                areas.append(torch.abs(ry[:, :, None] * rx[:, None, :]) + 1e-9)
        out = local_ensemble(preds, areas) + bilinear_border(inp, rows, cols)
        return out.permute(0, 3, 1, 2) * 0.5 + 0.5


@register_model("lmf")
def _lmf(n_resblocks: int = 16, n_feats: int = 64, latent_dim: int = 256, width: int = 16, depth: int = 3,
         scale_max: float = 12.0, encoder: str = EDSR_BASELINE, encoder_args: dict | None = None,
         window_pad: bool = True) -> SRModel:
    encoder, encoder_args = family_encoder(encoder, encoder_args, n_resblocks, n_feats)
    upsampler = RenderUpsampler(width, depth)
    backbone = LatentBackbone(encoder, encoder_args, window_pad, latent_dim, upsampler.modulations)
    descriptor = family_descriptor("lmf", backbone, upsampler.modulations + 3, scale_max=scale_max,
                                   upsampler_lr_reach=1)  # ensemble neighbour; the bilinear skip reads 1 px too
    config = family_config(encoder, encoder_args, window_pad, latent_dim=latent_dim, width=width, depth=depth)
    return SRModel("lmf", backbone, upsampler, descriptor, config)
