"""LIIF (Chen et al., CVPR 2021): EDSR-baseline encoder + MLP implicit decoder.

Numerically equivalent to the official code with feat_unfold, local_ensemble and
cell_decode. Coordinates follow ``asisr.runtime.query`` (LR pixel units); the official
normalised quantities are recovered exactly: a normalised offset times the feature size
is twice the pixel offset, and ``cell * h`` is ``2 / s``.

The upsampler has two forms with one set of weights:
* ``reference``: the official computation, the decoder's first layer applied to the
  concatenated 580-dim input of every query and ensemble member;
* ``fast`` (default for export): that first layer split algebraically into a 1x1 conv on
  the unfolded features at LR resolution (once per LR pixel, not 4x per HR pixel) plus the
  per-query coordinate and cell terms. Same math, float-rounding-level differences.

How the fast form is laid out, and why (each measured on the exported graph, ONNX Runtime CPU):
* the coordinate term is separable: ``W1c . (ry, rx)`` is a per-row plus a per-column vector,
  and the cell term one vector per image, so no (H, W, 2) tensor or K=2 matmul is built;
* features are gathered with one flat row index (a plain ``Gather``): advanced indexing exports
  as ``GatherND`` between two transposes of the full query tensor;
* the MLP runs on 2-D (queries, channels) tensors, which ONNX Runtime fuses into ``Gemm`` with
  its bias and ReLU; quantised, the bias is folded into ``QGemm`` instead of a separate add.
Together these cut the INT8 upsampler's time by about a fifth and fp32's by a few percent.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from asisr.errors import UserError
from asisr.models.base import SRModel
from asisr.models.encoders import (EDSR_BASELINE, EncoderBackbone, detect_encoder, encoder_out_dim, encoder_state,
                                   family_descriptor,
                                   family_config, family_encoder, family_kwargs)
from asisr.models.sampling import cell_index, gather_rows, local_ensemble
from asisr.models.canonical import CanonicalCheckpoint
from asisr.models.registry import Detection, register_detector, register_model


class MLP(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, hidden: list[int]):
        super().__init__()
        layers: list[nn.Module] = []
        last = in_dim
        for h in hidden:
            layers += [nn.Linear(last, h), nn.ReLU()]
            last = h
        layers.append(nn.Linear(last, out_dim))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class LIIFUpsampler(nn.Module):
    """``(features, scale, rows, cols) -> rgb`` with local ensemble, feature unfolding and cell decoding."""

    def __init__(self, feat_dim: int = 64, hidden: list[int] | None = None, fast: bool = True):
        super().__init__()
        hidden = hidden or [256, 256, 256, 256]
        self.feat_dim = feat_dim
        self.imnet = MLP(feat_dim * 9 + 2 + 2, 3, hidden)
        self.fast = fast

    def forward(self, feat: torch.Tensor, scale: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        if self.fast:
            return self._forward_fast(feat, scale, rows, cols)
        return self.reference(feat, scale, rows, cols)

    @staticmethod
    def _ensemble(preds: list[torch.Tensor], areas: list[torch.Tensor]) -> torch.Tensor:
        """(B, H, W, 3) predictions of the four members -> (B, 3, H, W) in [0, 1] units."""
        return local_ensemble(preds, areas).permute(0, 3, 1, 2) * 0.5 + 0.5

    def reference(self, feat: torch.Tensor, scale: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """The official computation: the whole MLP on the concatenated 580-dim input."""
        b, c, h, w = feat.shape
        values = F.unfold(feat, 3, padding=1).view(b, c * 9, h, w).permute(0, 2, 3, 1)
        cell = 2.0 / scale  # official: cell * (h, w) with cell = 2 / (H_out, W_out)
        preds, areas = [], []
        for vy in (-0.5, 0.5):
            iy = cell_index(rows + vy, h)
            ry = 2.0 * (rows - (iy.to(rows.dtype) + 0.5))  # (B, H): official normalised offset * h
            for vx in (-0.5, 0.5):
                ix = cell_index(cols + vx, w)
                rx = 2.0 * (cols - (ix.to(cols.dtype) + 0.5))  # (B, W)
                hh, ww = ry.shape[1], rx.shape[1]
                q = gather_rows(values, iy, ix).view(b, hh, ww, -1)  # (B, H, W, 9C)
                rel = torch.stack(torch.broadcast_tensors(ry[:, :, None], rx[:, None, :]), dim=-1)  # (B, H, W, 2)
                rel_cell = cell[:, None, None, :].expand(b, hh, ww, 2)
                preds.append(self.imnet(torch.cat([q, rel, rel_cell], dim=-1)))
                areas.append(torch.abs(rel[..., 0] * rel[..., 1]) + 1e-9)
        return self._ensemble(preds, areas)

    def _forward_fast(self, feat: torch.Tensor, scale: torch.Tensor, rows: torch.Tensor,
                      cols: torch.Tensor) -> torch.Tensor:
        b, c, h, w = feat.shape
        hh, ww = rows.shape[1], cols.shape[1]
        first = self.imnet.layers[0]
        unfolded = F.unfold(feat, 3, padding=1).view(b, c * 9, h, w)
        # W1 . [f ; rel_coord ; rel_cell] + b1 = (W1f . f) + W1y * ry + W1x * rx + (W1cell . rel_cell + b1)
        values = F.conv2d(unfolded, first.weight[:, : c * 9, None, None]).permute(0, 2, 3, 1)  # (B, h, w, C')
        w_y, w_x = first.weight[:, c * 9], first.weight[:, c * 9 + 1]
        per_image = (2.0 / scale) @ first.weight[:, c * 9 + 2:].t() + first.bias  # (B, C')
        preds, areas = [], []
        for vy in (-0.5, 0.5):
            iy = cell_index(rows + vy, h)
            ry = 2.0 * (rows - (iy.to(rows.dtype) + 0.5))  # (B, H): official normalised offset * h
            row_term = ry[..., None] * w_y + per_image[:, None, :]  # (B, H, C')
            for vx in (-0.5, 0.5):
                ix = cell_index(cols + vx, w)
                rx = 2.0 * (cols - (ix.to(cols.dtype) + 0.5))  # (B, W)
                col_term = rx[..., None] * w_x  # (B, W, C')
                x = (gather_rows(values, iy, ix).view(b, hh, ww, -1)
                     + row_term[:, :, None, :] + col_term[:, None, :, :])
                x = torch.relu(x).reshape(b * hh * ww, -1)
                preds.append(self.imnet.layers[2:](x).view(b, hh, ww, -1))
                areas.append(torch.abs(ry[:, :, None] * rx[:, None, :]) + 1e-9)
        return self._ensemble(preds, areas)


def _liif(n_resblocks: int = 16, n_feats: int = 64, hidden: list[int] | None = None, fast: bool = True,
          scale_max: float = 12.0, encoder: str = EDSR_BASELINE, encoder_args: dict | None = None,
          window_pad: bool = True) -> SRModel:
    hidden = list(hidden or [256, 256, 256, 256])
    encoder, encoder_args = family_encoder(encoder, encoder_args, n_resblocks, n_feats)
    backbone = EncoderBackbone(encoder, encoder_args, window_pad)
    c = backbone.out_dim
    descriptor = family_descriptor("liif", backbone, c, scale_max=scale_max,
                                   upsampler_lr_reach=2)  # 3x3 feature unfolding (1) + ensemble neighbour (1)
    config = family_config(encoder, encoder_args, window_pad, hidden=hidden)
    return SRModel("liif", backbone, LIIFUpsampler(c, hidden, fast), descriptor, config)


register_model("liif")(_liif)

# ----------------------------------------------------------------- official checkpoint layout
# ``encoder.*`` (EDSR-baseline, mean-shift convs unused) + ``imnet.layers.{0,2,..}`` (Linear
# layers, ReLU between): everything LIIF needs is in the shapes, so the checkpoint's
# ``name`` / ``args`` are not consulted (they are missing or wrong in some releases).

@register_detector(name="liif_official", requires=("imnet.layers.0.weight",))
def detect_liif(ckpt: CanonicalCheckpoint) -> Detection | None:
    """The official LIIF layout (feat_unfold + cell_decode) with an EDSR-baseline, RDN or SwinIR encoder."""
    if not all(k.startswith(("encoder.", "imnet.")) for k in ckpt.state_dict):
        return None  # LTE and others add their own modules around the same encoder and MLP
    layers = sorted(int(k.split(".")[2]) for k in ckpt.with_prefix("imnet.layers.") if k.endswith(".weight"))
    dims = [ckpt.shape(f"imnet.layers.{i}.weight") for i in layers]
    if dims[-1][0] != 3 or (dims[0][1] - 4) % 9:
        return None  # not LIIF's (9 C + 2 + 2) -> ... -> 3 decoder, e.g. Meta-SR's weight predictor
    encoder, encoder_args = detect_encoder(ckpt)
    c = encoder_out_dim(encoder, encoder_args)
    if dims[0][1] != 9 * c + 4:
        raise UserError(f"LIIF checkpoint: decoder input {dims[0][1]} is not 9 x {c} features + 4 "
                        "(only feat_unfold + cell_decode LIIF is supported)")
    mapped = {f"backbone.{k}": v for k, v in encoder_state(ckpt).items()}
    mapped.update({f"upsampler.{k}": v for k, v in ckpt.state_dict.items() if k.startswith("imnet.")})
    kwargs = family_kwargs(encoder, encoder_args, hidden=[d[0] for d in dims[:-1]])
    return Detection("liif", mapped, kwargs)
