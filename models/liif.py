"""LIIF (Chen et al., CVPR 2021): EDSR-baseline encoder + MLP implicit decoder.

Numerically equivalent to the official code with feat_unfold, local_ensemble and
cell_decode. Coordinates follow ``asisr.models.query`` (LR pixel units); the official
normalised quantities are recovered exactly: a normalised offset times the feature size
is twice the pixel offset, and ``cell * h`` is ``2 / s``.

The upsampler has two forms with one set of weights:
* ``reference``: the official computation, the decoder's first layer applied to the
  concatenated 580-dim input of every query and ensemble member;
* ``fast`` (default for export): that first layer split algebraically into a 1x1 conv on
  the unfolded features at LR resolution (once per LR pixel, not 4x per HR pixel) plus the
  per-query coordinate and cell terms. Same math, float-rounding-level differences.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from asisr.errors import UserError
from asisr.models.base import SRModel
from asisr.models.descriptor import ModelDescriptor
from asisr.models.edsr import EDSREncoder
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
    cell; with exact coordinates (``asisr.models.query``) ``floor`` does that by itself.
    """
    return torch.clamp(torch.floor(coords + shift), min=0, max=size - 1).long()


def _gather(feat_hwc: torch.Tensor, iy: torch.Tensor, ix: torch.Tensor) -> torch.Tensor:
    """(B, h, w, C) at rows ``iy`` (B, H) x cols ``ix`` (B, W) -> (B, H, W, C)."""
    b = torch.arange(feat_hwc.shape[0], device=feat_hwc.device)[:, None, None]
    return feat_hwc[b, iy[:, :, None], ix[:, None, :]]


class LIIFUpsampler(nn.Module):
    """``(features, scale, rows, cols) -> rgb`` with local ensemble, feature unfolding and cell decoding."""

    def __init__(self, feat_dim: int = 64, hidden: list[int] | None = None, fast: bool = True):
        super().__init__()
        hidden = hidden or [256, 256, 256, 256]
        self.feat_dim = feat_dim
        self.imnet = MLP(feat_dim * 9 + 2 + 2, 3, hidden)
        self.fast = fast

    def forward(self, feat: torch.Tensor, scale: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        b, c, h, w = feat.shape
        unfolded = F.unfold(feat, 3, padding=1).view(b, c * 9, h, w)
        first = self.imnet.layers[0]
        if self.fast:
            # W1 . [f ; rel_coord ; rel_cell] + b1 = (W1f . f) + W1c . rel_coord + (W1cell . rel_cell + b1)
            lr_term = F.conv2d(unfolded, first.weight[:, : c * 9, None, None])
            values = lr_term.permute(0, 2, 3, 1)
        else:
            values = unfolded.permute(0, 2, 3, 1)
        rel_cell = 2.0 / scale  # official: cell * (h, w) with cell = 2 / (H_out, W_out)
        preds, areas = [], []
        for vy in (-0.5, 0.5):
            iy = _nearest_index(rows, vy, h)
            ry = 2.0 * (rows - (iy.to(rows.dtype) + 0.5))  # (B, H): official normalised offset * h
            for vx in (-0.5, 0.5):
                ix = _nearest_index(cols, vx, w)
                rx = 2.0 * (cols - (ix.to(cols.dtype) + 0.5))  # (B, W)
                q = _gather(values, iy, ix)  # (B, H, W, C')
                hh, ww = ry.shape[1], rx.shape[1]
                rel = torch.stack(torch.broadcast_tensors(ry[:, :, None], rx[:, None, :]), dim=-1)  # (B, H, W, 2)
                cell = rel_cell[:, None, None, :].expand(b, hh, ww, 2)
                if self.fast:
                    wc = first.weight[:, c * 9: c * 9 + 2]
                    wcell = first.weight[:, c * 9 + 2:]
                    x = q + rel @ wc.t() + (cell @ wcell.t() + first.bias)
                    x = self.imnet.layers[2:](torch.relu(x))
                else:
                    x = self.imnet(torch.cat([q, rel, cell], dim=-1))
                preds.append(x)
                areas.append(torch.abs(rel[..., 0] * rel[..., 1]) + 1e-9)
        total = areas[0] + areas[1] + areas[2] + areas[3]
        # Each prediction is weighted by the area of the diagonally opposite sub-rectangle.
        out = (preds[0] * (areas[3] / total)[..., None] + preds[1] * (areas[2] / total)[..., None]
               + preds[2] * (areas[1] / total)[..., None] + preds[3] * (areas[0] / total)[..., None])
        return out.permute(0, 3, 1, 2) * 0.5 + 0.5


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


@register_model("liif")
def liif(pretrained: bool = False, **kwargs) -> SRModel:
    if pretrained:
        from asisr.models.checkpoint import load
        from asisr.models.pretrained import bundled_path

        if kwargs:
            raise UserError("pretrained LIIF has a fixed configuration; do not pass constructor arguments")
        return load(bundled_path("liif"))
    return _liif(**kwargs)


@register_detector
def detect_liif(ckpt: dict, _hints: dict) -> Detection | None:
    """Recognise the official LIIF checkpoint layout (``{'model': {'name': 'liif', 'sd': ...}}``)."""
    model = ckpt.get("model") if isinstance(ckpt.get("model"), dict) else None
    if model is not None and model.get("name") == "liif" and isinstance(model.get("sd"), dict):
        sd = model["sd"]
        args = model.get("args", {})
        encoder = args.get("encoder_spec", {}).get("name")
        if encoder != "edsr-baseline":
            raise UserError(f"LIIF checkpoint with encoder {encoder!r} is not supported (only edsr-baseline)")
        hidden = args.get("imnet_spec", {}).get("args", {}).get("hidden_list", [256] * 4)
        n_res = len({k.split(".")[2] for k in sd if k.startswith("encoder.body.") and ".body." in k[13:]})
        mapped = {}
        for k, v in sd.items():
            if k.startswith("encoder.sub_mean.") or k.startswith("encoder.add_mean."):
                continue  # the official EDSR-for-LIIF never applies its mean shift
            if k.startswith("encoder."):
                mapped["backbone." + k] = v
            elif k.startswith("imnet."):
                mapped["upsampler." + k] = v
            else:
                mapped[k] = v
        n_feats = sd["encoder.head.0.weight"].shape[0] if "encoder.head.0.weight" in sd else 64
        return Detection("liif", mapped, {"n_resblocks": n_res, "n_feats": n_feats, "hidden": list(hidden)})
    own = ckpt.get("asisr")
    if isinstance(own, dict) and own.get("name") == "liif":
        return Detection("liif", ckpt["state_dict"], dict(own.get("config", {})))
    return None
