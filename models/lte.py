"""LTE (Lee and Jin, CVPR 2022): a local texture estimator in front of LIIF's MLP.

Official math (jaewon-lee-b/lte, ``models/lte.py``), in asisr's LR-pixel coordinates:
* at LR resolution, ``coef`` and ``freq`` 3x3 convs of the encoder features (``hidden_dim``
  channels each) — computed in the backbone stage, which also passes the normalised input
  on, so the upsampler's single features tensor is ``cat(coef, freq, inp)``;
* per query and local-ensemble member (the nearest LR cell after a half-pixel shift), the
  ``hidden_dim / 2`` frequency pairs ``(freq[2k], freq[2k+1])`` give
  ``f_k = freq[2k] * rel_y + freq[2k+1] * rel_x + phase(rel_cell)_k``; the MLP input is
  ``coef * cat(cos(pi f), sin(pi f))``. ``rel`` is the official ``(coord - q_coord) * (h, w)``,
  twice the offset in LR pixels; ``rel_cell = cell * (h, w)`` is ``2 / s`` per axis;
* the four members are area-weighted as in LIIF, and the output adds a bilinear
  (border-clamped) sample of the normalised input at the query point.

Test-time cell clip: the official ``test.py`` tells the model ``cell * max(s / 4, 1)``
(``--scale_max`` 4) beyond the training range, training never does. asisr does what the
official test does by default (``cell_clip=4.0``, recorded in the descriptor and so in the
manifest); ``cell_clip=None`` turns it off.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from asisr.errors import UserError
from asisr.models.base import SRModel
from asisr.models.canonical import CanonicalCheckpoint
from asisr.models.encoders import (EDSR_BASELINE, EncoderBackbone, detect_encoder, encoder_out_dim, encoder_state,
                                   family_descriptor,
                                   family_config, family_encoder, family_kwargs)
from asisr.models.liif import MLP
from asisr.models.registry import Detection, register_detector, register_model
from asisr.models.sampling import (OFFICIAL_CELL_CLIP, bilinear_border, cell_index, clipped_cell, gather_rows,
                                   local_ensemble)


class LTEBackbone(EncoderBackbone):
    """Encoder + the ``coef`` / ``freq`` convs, with the normalised input appended for the skip."""

    def __init__(self, encoder: str, encoder_args: dict, hidden_dim: int, window_pad: bool = True):
        super().__init__(encoder, encoder_args, window_pad)
        self.coef = nn.Conv2d(self.out_dim, hidden_dim, 3, padding=1)
        self.freq = nn.Conv2d(self.out_dim, hidden_dim, 3, padding=1)

    @property
    def receptive_radius(self) -> int | None:
        r = self.encoder.receptive_radius
        return None if r is None else r + 1  # the 3x3 coef / freq convs

    def head(self, inp: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.coef(feat), self.freq(feat), inp], dim=1)


class LTEUpsampler(nn.Module):
    """``(cat(coef, freq, inp), scale, rows, cols) -> rgb``."""

    def __init__(self, hidden_dim: int = 256, hidden: list[int] | None = None, cell_clip: float | None = None):
        super().__init__()
        if hidden_dim % 2:
            raise UserError(f"LTE hidden_dim must be even (cos/sin pairs), got {hidden_dim}")
        self.hidden_dim = hidden_dim
        self.cell_clip = cell_clip
        self.phase = nn.Linear(2, hidden_dim // 2, bias=False)
        self.imnet = MLP(hidden_dim, 3, list(hidden or [256, 256, 256]))

    def forward(self, features: torch.Tensor, scale: torch.Tensor, rows: torch.Tensor,
                cols: torch.Tensor) -> torch.Tensor:
        b, _, h, w = features.shape
        hid, half = self.hidden_dim, self.hidden_dim // 2
        hh, ww = rows.shape[1], cols.shape[1]
        texture = features[:, : 2 * hid].permute(0, 2, 3, 1)  # (B, h, w, coef | freq)
        inp = features[:, 2 * hid:]
        phase = self.phase(2.0 * clipped_cell(scale, self.cell_clip))  # (B, hid/2): rel_cell = 2 / s
        preds, areas = [], []
        for vy in (-0.5, 0.5):
            iy = cell_index(rows + vy, h)
            ry = 2.0 * (rows - (iy.to(rows.dtype) + 0.5))  # (B, H)
            for vx in (-0.5, 0.5):
                ix = cell_index(cols + vx, w)
                rx = 2.0 * (cols - (ix.to(cols.dtype) + 0.5))  # (B, W)
                q = gather_rows(texture, iy, ix).view(b, hh, ww, 2 * hid)
                coef, freq = q[..., :hid], q[..., hid:].reshape(b, hh, ww, half, 2)
                f = (freq[..., 0] * ry[:, :, None, None] + freq[..., 1] * rx[:, None, :, None]
                     + phase[:, None, None, :])
                x = coef * torch.cat([torch.cos(math.pi * f), torch.sin(math.pi * f)], dim=-1)
                preds.append(self.imnet(x.reshape(b * hh * ww, hid)).view(b, hh, ww, 3))
                areas.append(torch.abs(ry[:, :, None] * rx[:, None, :]) + 1e-9)
        out = local_ensemble(preds, areas) + bilinear_border(inp, rows, cols)
        return out.permute(0, 3, 1, 2) * 0.5 + 0.5


@register_model("lte")
def _lte(n_resblocks: int = 16, n_feats: int = 64, hidden_dim: int = 256, hidden: list[int] | None = None,
         cell_clip: float | None = OFFICIAL_CELL_CLIP, scale_max: float = 12.0, encoder: str = EDSR_BASELINE,
         encoder_args: dict | None = None, window_pad: bool = True) -> SRModel:
    hidden = list(hidden or [256, 256, 256])
    encoder, encoder_args = family_encoder(encoder, encoder_args, n_resblocks, n_feats)
    backbone = LTEBackbone(encoder, encoder_args, hidden_dim, window_pad)
    descriptor = family_descriptor("lte", backbone, 2 * hidden_dim + 3, scale_max=scale_max, cell_clip=cell_clip,
                                   upsampler_lr_reach=1)  # ensemble neighbour; the bilinear skip reads 1 px too
    config = family_config(encoder, encoder_args, window_pad, hidden_dim=hidden_dim, hidden=hidden,
                           cell_clip=cell_clip)
    return SRModel("lte", backbone, LTEUpsampler(hidden_dim, hidden, cell_clip), descriptor, config)


@register_detector(name="lte_official", requires=("coef.weight", "freq.weight", "phase.weight"))
def detect_lte(ckpt: CanonicalCheckpoint) -> Detection | None:
    """The official LTE layout: ``encoder.*``, ``coef``, ``freq``, ``phase``, ``imnet.layers.*``."""
    if not all(k.startswith(("encoder.", "coef.", "freq.", "phase.", "imnet.")) for k in ckpt.state_dict):
        return None
    encoder, encoder_args = detect_encoder(ckpt)
    hidden_dim, c = ckpt.shape("coef.weight")[:2]
    if c != encoder_out_dim(encoder, encoder_args):
        raise UserError(f"{ckpt.describe()}: LTE coef conv takes {c} channels, the {encoder} encoder gives "
                        f"{encoder_out_dim(encoder, encoder_args)}")
    layers = sorted(int(k.split(".")[2]) for k in ckpt.with_prefix("imnet.layers.") if k.endswith(".weight"))
    dims = [ckpt.shape(f"imnet.layers.{i}.weight") for i in layers]
    if not dims or dims[0][1] != hidden_dim or dims[-1][0] != 3:
        raise UserError(f"{ckpt.describe()}: LTE imnet must map {hidden_dim} -> ... -> 3, "
                        f"its layers are {[tuple(d) for d in dims]}")
    mapped = {f"backbone.{k}": v for k, v in encoder_state(ckpt).items()}
    for k, v in ckpt.state_dict.items():
        if k.startswith(("coef.", "freq.")):
            mapped[f"backbone.{k}"] = v
        elif k.startswith(("phase.", "imnet.")):
            mapped[f"upsampler.{k}"] = v
    return Detection("lte", mapped, family_kwargs(encoder, encoder_args, hidden_dim=hidden_dim,
                                                  hidden=[d[0] for d in dims[:-1]]))
