"""Meta-SR (Hu et al., CVPR 2019) in its LIIF-codebase form, as the LIIF and LTE papers report it.

Official math (``MetaSR`` in jaewon-lee-b/lte ``models/misc.py``, also in yinboc/liif), in
asisr's LR-pixel coordinates:
* the encoder features unfolded 3x3 (zero padding), channel ``c * 9 + k``;
* the query point is the *top-left corner* of the HR pixel, ``centre - cell / 2`` per axis,
  and it reads the LR cell that contains it; ``rel`` is its offset from that cell's
  top-left corner (in ``[0, 1)`` LR pixels inside the image);
* a weight predictor MLP ``3 -> 256 -> 9C * 3`` maps ``[rel_y, rel_x, cell_y]`` (only the
  row cell: the column scale of an asymmetric request enters only through the corner) to a
  per-query ``(9C, 3)`` matrix, and ``rgb = unfolded feature @ matrix``.

``fast`` (default) is the same math reordered: the predictor's last layer is linear, so
``feature @ (W2 h + b2)`` is ``(feature . W2) h + feature . b2``, and ``feature . W2`` /
``feature . b2`` are one 3x3 conv of the features to ``3 * 256 + 3`` channels at LR
resolution. A query then costs a 256-wide hidden layer and a 768-term dot product instead of
a ``256 x 9C x 3`` matrix (about 440 k multiply-adds for C = 64): the official form's cost
per output pixel falls by two orders of magnitude, with float-rounding-level differences.

Test-time cell clip: here the cell moves the sampling point, not only the scale code, so
it matters far more than in LTE (fixture notes: up to 5.2 in ``pred`` at x6). The two official
tests disagree: the LIIF repository's never clips, the LTE repository's clips
(``cell * max(s / 4, 1)``, as for LTE). asisr clips by default (``cell_clip=4.0``): it changes
nothing at the trained scales (s <= 4), and beyond them it measured better on the Meta-SR
trained here (Set5 +0.07 / +0.13 / +0.07 dB at x5.5 / x6 / x6.25, Set14 +0.03 / +0.08 /
+0.04; README), so the LIIF family shares one default. ``cell_clip=None`` gives the LIIF
repository's test.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from asisr.errors import UserError
from asisr.models.base import SRModel
from asisr.models.canonical import CanonicalCheckpoint
from asisr.models.encoders import (EDSR_BASELINE, EncoderBackbone, detect_encoder, encoder_out_dim, encoder_state,
                                   family_descriptor,
                                   family_config, family_encoder, family_kwargs)
from asisr.models.liif import MLP
from asisr.models.registry import Detection, register_detector, register_model
from asisr.models.sampling import BOUNDARY_EPS, OFFICIAL_CELL_CLIP, cell_index, clipped_cell, gather_rows

PREDICTOR_HIDDEN = 256  # hard-coded in the official MetaSR.__init__


class MetaSRUpsampler(nn.Module):
    """``(features, scale, rows, cols) -> rgb`` with a per-query weight predictor."""

    def __init__(self, feat_dim: int = 64, cell_clip: float | None = OFFICIAL_CELL_CLIP, fast: bool = True):
        super().__init__()
        self.feat_dim = feat_dim
        self.cell_clip = cell_clip
        self.imnet = MLP(3, feat_dim * 9 * 3, [PREDICTOR_HIDDEN])
        self.fast = fast

    def _corner(self, scale: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, h, w):
        """Read cells and offsets of the HR pixels' top-left corners, and the row cell."""
        cell = clipped_cell(scale, self.cell_clip)  # (B, 2) LR pixels
        y = rows - cell[:, 0:1] / 2
        x = cols - cell[:, 1:2] / 2
        iy, ix = cell_index(y, h, BOUNDARY_EPS), cell_index(x, w, BOUNDARY_EPS)
        return iy, ix, y - iy.to(y.dtype), x - ix.to(x.dtype), cell[:, 0]

    def forward(self, feat: torch.Tensor, scale: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        if self.fast:
            return self._forward_fast(feat, scale, rows, cols)
        return self.reference(feat, scale, rows, cols)

    def reference(self, feat: torch.Tensor, scale: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """The official computation: a (9C, 3) matrix predicted for every query."""
        b, c, h, w = feat.shape
        hh, ww = rows.shape[1], cols.shape[1]
        unfolded = F.unfold(feat, 3, padding=1).view(b, c * 9, h, w).permute(0, 2, 3, 1)
        iy, ix, ry, rx, cell_y = self._corner(scale, rows, cols, h, w)
        code = torch.stack(torch.broadcast_tensors(ry[:, :, None], rx[:, None, :],
                                                   cell_y[:, None, None]), dim=-1)  # (B, H, W, 3)
        weights = self.imnet(code.reshape(-1, 3)).view(-1, c * 9, 3)
        q = gather_rows(unfolded, iy, ix)  # (B*H*W, 9C)
        rgb = torch.bmm(q[:, None, :], weights).view(b, hh, ww, 3)
        return rgb.permute(0, 3, 1, 2) * 0.5 + 0.5

    def _forward_fast(self, feat: torch.Tensor, scale: torch.Tensor, rows: torch.Tensor,
                      cols: torch.Tensor) -> torch.Tensor:
        b, c, h, w = feat.shape
        hh, ww = rows.shape[1], cols.shape[1]
        first, last = self.imnet.layers[0], self.imnet.layers[2]
        k = PREDICTOR_HIDDEN
        # last.weight row (ch * 3 + rgb) -> conv output channel (rgb * k + j); last.bias -> 3 more channels
        w_feat = last.weight.view(c * 9, 3, k).permute(1, 2, 0).reshape(3 * k, c * 9)
        w_bias = last.bias.view(c * 9, 3).t()
        conv_w = torch.cat([w_feat, w_bias], dim=0).view(3 * k + 3, c, 3, 3)  # unfold order c * 9 + ky * 3 + kx
        projected = F.conv2d(feat, conv_w, padding=1).permute(0, 2, 3, 1)  # (B, h, w, 3k + 3)
        iy, ix, ry, rx, cell_y = self._corner(scale, rows, cols, h, w)
        row_term = ry[..., None] * first.weight[:, 0] + (cell_y[:, None] * first.weight[:, 2] + first.bias)[:, None, :]
        col_term = rx[..., None] * first.weight[:, 1]
        hidden = torch.relu(row_term[:, :, None, :] + col_term[:, None, :, :]).reshape(-1, k, 1)  # (N, k, 1)
        q = gather_rows(projected, iy, ix)  # (N, 3k + 3)
        rgb = torch.bmm(q[:, : 3 * k].reshape(-1, 3, k), hidden)[..., 0] + q[:, 3 * k:]
        return rgb.view(b, hh, ww, 3).permute(0, 3, 1, 2) * 0.5 + 0.5


@register_model("metasr")
def _metasr(n_resblocks: int = 16, n_feats: int = 64, cell_clip: float | None = OFFICIAL_CELL_CLIP,
            fast: bool = True, scale_max: float = 12.0, encoder: str = EDSR_BASELINE, encoder_args: dict | None = None,
            window_pad: bool = True) -> SRModel:
    encoder, encoder_args = family_encoder(encoder, encoder_args, n_resblocks, n_feats)
    backbone = EncoderBackbone(encoder, encoder_args, window_pad)
    c = backbone.out_dim
    # reduced_precision_stages: the predicted per-query filters (576 weights dotted with the
    # unfolded features) lose too much in bf16 (0.1 max abs at x3.7 on the fixture); the encoder does not
    descriptor = family_descriptor("metasr", backbone, c, scale_max=scale_max, cell_clip=cell_clip,
                                   upsampler_lr_reach=2,  # 3x3 unfolding (1) + the corner's cell, 1 above / left
                                   reduced_precision_stages=["backbone"])
    config = family_config(encoder, encoder_args, window_pad, cell_clip=cell_clip)
    return SRModel("metasr", backbone, MetaSRUpsampler(c, cell_clip, fast), descriptor, config)


@register_detector(name="metasr_official", requires=("imnet.layers.0.weight", "imnet.layers.2.weight"))
def detect_metasr(ckpt: CanonicalCheckpoint) -> Detection | None:
    """The LIIF-codebase Meta-SR layout: ``encoder.*`` + a ``3 -> 256 -> 9C*3`` weight predictor."""
    if not all(k.startswith(("encoder.", "imnet.")) for k in ckpt.state_dict):
        return None
    if ckpt.shape("imnet.layers.0.weight")[1] != 3 or "imnet.layers.4.weight" in ckpt:
        return None  # LIIF's decoder takes 9C + 4 inputs
    encoder, encoder_args = detect_encoder(ckpt)
    c = encoder_out_dim(encoder, encoder_args)
    out = ckpt.shape("imnet.layers.2.weight")[0]
    if out != 27 * c or ckpt.shape("imnet.layers.0.weight")[0] != PREDICTOR_HIDDEN:
        raise UserError(f"{ckpt.describe()}: Meta-SR weight predictor 3 -> "
                        f"{ckpt.shape('imnet.layers.0.weight')[0]} -> {out} does not fit "
                        f"3 -> {PREDICTOR_HIDDEN} -> 27 x {c} for the {encoder} encoder")
    mapped = {f"backbone.{k}": v for k, v in encoder_state(ckpt).items()}
    mapped.update({f"upsampler.{k}": v for k, v in ckpt.state_dict.items() if k.startswith("imnet.")})
    return Detection("metasr", mapped, family_kwargs(encoder, encoder_args))
