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

import re

import torch
import torch.nn.functional as F
from torch import nn

from asisr.errors import UserError
from asisr.models.base import SRModel
from asisr.runtime.descriptor import ModelDescriptor
from asisr.models.edsr import EDSREncoder
from asisr.models.canonical import CanonicalCheckpoint, key_patterns
from asisr.models.registry import Detection, register_detector, register_model


class LIIFBackbone(nn.Module):
    """``(lr in [0,1], scale) -> features``; LIIF's encoder ignores the scale."""

    def __init__(self, n_resblocks: int = 16, n_feats: int = 64):
        super().__init__()
        self.encoder = EDSREncoder(n_resblocks, n_feats)

    def forward(self, lr: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return self.encoder((lr - 0.5) / 0.5)


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


def _nearest_index(coords: torch.Tensor, shift: float, size: torch.Tensor | int) -> torch.Tensor:
    """Index of the LR cell containing ``coords + shift`` (pixel units), clamped to the image.

    The official code adds 1e-6 before a nearest lookup so that exact ties go to the upper
    cell; with exact coordinates (``asisr.runtime.query``) ``floor`` does that by itself.
    """
    return torch.clamp(torch.floor(coords + shift), min=0, max=size - 1).long()


def _gather(feat_hwc: torch.Tensor, iy: torch.Tensor, ix: torch.Tensor) -> torch.Tensor:
    """(B, h, w, C) at rows ``iy`` (B, H) x cols ``ix`` (B, W) -> (B, H, W, C)."""
    b = torch.arange(feat_hwc.shape[0], device=feat_hwc.device)[:, None, None]
    return feat_hwc[b, iy[:, :, None], ix[:, None, :]]


def _gather_flat(feat_hwc: torch.Tensor, iy: torch.Tensor, ix: torch.Tensor) -> torch.Tensor:
    """``_gather`` as one ``index_select`` over (B*h*w, C) rows -> (B*H*W, C)."""
    b, h, w, c = feat_hwc.shape
    base = torch.arange(b, device=feat_hwc.device)[:, None, None] * (h * w)
    index = base + iy[:, :, None] * w + ix[:, None, :]
    return torch.index_select(feat_hwc.reshape(b * h * w, c), 0, index.reshape(-1))


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
        """(B, H, W, 3) predictions of the four members, each weighted by the area of the
        diagonally opposite sub-rectangle -> (B, 3, H, W) in [0, 1] units."""
        total = areas[0] + areas[1] + areas[2] + areas[3]
        out = (preds[0] * (areas[3] / total)[..., None] + preds[1] * (areas[2] / total)[..., None]
               + preds[2] * (areas[1] / total)[..., None] + preds[3] * (areas[0] / total)[..., None])
        return out.permute(0, 3, 1, 2) * 0.5 + 0.5

    def reference(self, feat: torch.Tensor, scale: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """The official computation: the whole MLP on the concatenated 580-dim input."""
        b, c, h, w = feat.shape
        values = F.unfold(feat, 3, padding=1).view(b, c * 9, h, w).permute(0, 2, 3, 1)
        cell = 2.0 / scale  # official: cell * (h, w) with cell = 2 / (H_out, W_out)
        preds, areas = [], []
        for vy in (-0.5, 0.5):
            iy = _nearest_index(rows, vy, h)
            ry = 2.0 * (rows - (iy.to(rows.dtype) + 0.5))  # (B, H): official normalised offset * h
            for vx in (-0.5, 0.5):
                ix = _nearest_index(cols, vx, w)
                rx = 2.0 * (cols - (ix.to(cols.dtype) + 0.5))  # (B, W)
                q = _gather(values, iy, ix)  # (B, H, W, 9C)
                hh, ww = ry.shape[1], rx.shape[1]
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
            iy = _nearest_index(rows, vy, h)
            ry = 2.0 * (rows - (iy.to(rows.dtype) + 0.5))  # (B, H): official normalised offset * h
            row_term = ry[..., None] * w_y + per_image[:, None, :]  # (B, H, C')
            for vx in (-0.5, 0.5):
                ix = _nearest_index(cols, vx, w)
                rx = 2.0 * (cols - (ix.to(cols.dtype) + 0.5))  # (B, W)
                col_term = rx[..., None] * w_x  # (B, W, C')
                x = (_gather_flat(values, iy, ix).view(b, hh, ww, -1)
                     + row_term[:, :, None, :] + col_term[:, None, :, :])
                x = torch.relu(x).reshape(b * hh * ww, -1)
                preds.append(self.imnet.layers[2:](x).view(b, hh, ww, -1))
                areas.append(torch.abs(ry[:, :, None] * rx[:, None, :]) + 1e-9)
        return self._ensemble(preds, areas)


def _liif(n_resblocks: int = 16, n_feats: int = 64, hidden: list[int] | None = None, fast: bool = True,
          scale_max: float = 12.0) -> SRModel:
    hidden = list(hidden or [256, 256, 256, 256])
    backbone = LIIFBackbone(n_resblocks, n_feats)
    descriptor = ModelDescriptor(
        arch="liif",
        feature_channels=n_feats,
        scale_min=1.0,
        scale_max=scale_max,
        trained_scale_max=4.0,
        backbone_halo=backbone.encoder.receptive_radius,
        upsampler_lr_reach=2,  # 3x3 feature unfolding (1) + local-ensemble neighbour (1)
        upsampler_hr_reach=0,
        precisions=("fp32",),
    )
    config = {"n_resblocks": n_resblocks, "n_feats": n_feats, "hidden": hidden}
    return SRModel("liif", backbone, LIIFUpsampler(n_feats, hidden, fast), descriptor, config)


register_model("liif")(_liif)

# ----------------------------------------------------------------- official checkpoint layout
# ``encoder.*`` (EDSR-baseline, mean-shift convs unused) + ``imnet.layers.{0,2,..}`` (Linear
# layers, ReLU between): everything LIIF needs is in the shapes, so the checkpoint's
# ``name`` / ``args`` are not consulted (they are missing or wrong in some releases).

_EDSR_KEY = re.compile(r"encoder\.(head\.0|body\.\d+(\.body\.[02])?|sub_mean|add_mean)\.(weight|bias)$")


@register_detector(name="liif_official", requires=("imnet.layers.0.weight",))
def detect_liif(ckpt: CanonicalCheckpoint) -> Detection | None:
    """The official LIIF layout with an EDSR-baseline encoder, feat_unfold and cell_decode."""
    if not all(k.startswith(("encoder.", "imnet.")) for k in ckpt.state_dict):
        return None  # LTE and others add their own modules around the same encoder and MLP
    layers = sorted(int(k.split(".")[2]) for k in ckpt.with_prefix("imnet.layers.") if k.endswith(".weight"))
    dims = [ckpt.shape(f"imnet.layers.{i}.weight") for i in layers]
    if dims[-1][0] != 3 or (dims[0][1] - 4) % 9:
        return None  # not LIIF's (9 C + 2 + 2) -> ... -> 3 decoder, e.g. Meta-SR's weight predictor
    foreign = [k for k in ckpt.with_prefix("encoder.") if not _EDSR_KEY.match(k)]
    if foreign or "encoder.head.0.weight" not in ckpt:
        encoder = ((ckpt.args or {}).get("encoder_spec") or {}).get("name") or "non-EDSR-baseline"
        raise UserError(f"LIIF checkpoint with encoder {encoder!r} is not supported (only edsr-baseline); "
                        f"its encoder keys look like {key_patterns(foreign or ckpt.with_prefix('encoder.'), 3)}")
    n_feats = ckpt.shape("encoder.head.0.weight")[0]
    if dims[0][1] != 9 * n_feats + 4:
        raise UserError(f"LIIF checkpoint: decoder input {dims[0][1]} is not 9 x {n_feats} features + 4 "
                        "(only feat_unfold + cell_decode LIIF is supported)")
    n_res = len({k.split(".")[2] for k in ckpt.with_prefix("encoder.body.") if k.count(".body.") == 2})
    mapped = {}
    for k, v in ckpt.state_dict.items():
        if k.startswith(("encoder.sub_mean.", "encoder.add_mean.")):
            continue  # the official EDSR-for-LIIF never applies its mean shift
        mapped[("backbone." if k.startswith("encoder.") else "upsampler.") + k] = v
    return Detection("liif", mapped, {"n_resblocks": n_res, "n_feats": n_feats, "hidden": [d[0] for d in dims[:-1]]})
