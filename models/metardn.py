"""MetaRDN (Hu et al., CVPR 2019, "Meta-SR") in its official form: XuecaiHu/Meta-SR-Pytorch, branch 0.4.0.

Not the LIIF-codebase Meta-SR of ``models/metasr.py``: its own checkpoints (a bare state dict,
``model_{epoch}.pt``), its own input range and its own position convention.

* Backbone: the RDN body on 0..255 input after the checkpoint's ``sub_mean`` (a 1x1 conv, loaded,
  not assumed: the official ``MeanShift`` freezes the module, not its parameters, so training
  may have moved it); ``feat = GFF(cat(RDBs)) + SFENet1(x)``, the layout of ``models/rdn.py``.
* Upsampler (meta-upscale): ``P2W`` = Linear(3, 256), ReLU, Linear(256, 9 * G0 * 3) maps
  ``[1/s, offset_h, offset_w]`` to a 3x3xG0 -> 3 filter per output pixel, applied to the 3x3
  neighbourhood (zero padded) of the LR feature the pixel's top-left corner lies in; then the
  checkpoint's ``add_mean`` and / 255, for asisr's [0, 1] output.
* Positions: the official corner of output pixel ``i`` is ``float32(i) * float32(1/s)``; its
  floor is the LR cell, the rest the offset (float32 quirks included: x2.3 with 31 LR rows puts
  pixel 69 at 29.999998, LR row 29 with offset ~1). The host computes those corners
  (``asisr.runtime.query.floor_grid_coords``, descriptor ``size_rule="floor"``), because the cell
  depends on ``i`` itself, which an integer tile shift of ``rows`` hides; the graph takes the
  centres it receives back to corners, ``centre - 0.5 / s``. The output is ``int(s * h)``
  pixels and the scale is one number: ``symmetric_only``. With asymmetric graph inputs each axis
  uses its own step and the code takes the row scale.

``fast`` (default; the export) is the same math reordered, as in ``models/metasr.py``: the last
P2W layer is linear, so ``feature . (W2 h + b2)`` is one 3x3 conv of the features to 3 * 256 + 3
channels at LR resolution, gathered once per output pixel and dotted with the 256 hidden units.
``reference()`` predicts every pixel's filter, as the official code does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from asisr.errors import UserError
from asisr.models.base import SRModel
from asisr.models.canonical import CanonicalCheckpoint
from asisr.models.rdn import RDN_CONFIGS, RDNEncoder, rdn_args_from_state
from asisr.models.registry import Detection, register_detector, register_model
from asisr.models.sampling import cell_index, gather_rows
from asisr.runtime.descriptor import ModelDescriptor

PREDICTOR_HIDDEN = 256  # hard-coded in the official Pos2Weight
RGB_RANGE = 255.0  # the official --rgb_range: inputs, outputs and the mean-shift biases are in 0..255
RGB_MEAN = (0.4488, 0.4371, 0.4040)  # the official MeanShift's defaults, for models built without a checkpoint
RDN_MODULES = ("SFENet1.", "SFENet2.", "RDBs.", "GFF.")
MEAN_SHIFTS = ("sub_mean.", "add_mean.")


def _mean_shift(sign: int) -> nn.Conv2d:
    """A 1x1 RGB conv initialised as the official ``MeanShift(255, mean, std=1, sign)``."""
    conv = nn.Conv2d(3, 3, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
        conv.bias.copy_(sign * RGB_RANGE * torch.tensor(RGB_MEAN))
    return conv


class MetaRDNBackbone(nn.Module):
    """``(lr in [0, 1], scale) -> (B, G0, h, w)``: the scale is not used (one body for every scale)."""

    def __init__(self, G0: int, D: int, C: int, G: int, kernel_size: int):
        super().__init__()
        self.sub_mean = _mean_shift(-1)
        self.encoder = RDNEncoder(G0=G0, D=D, C=C, G=G, kernel_size=kernel_size)

    @property
    def receptive_radius(self) -> int:
        return self.encoder.receptive_radius  # the mean shift is 1x1

    def forward(self, lr: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.sub_mean(lr * RGB_RANGE))


class Pos2Weight(nn.Module):
    """The official weight predictor; ``meta_block`` keeps the checkpoint's key names."""

    def __init__(self, feat_dim: int):
        super().__init__()
        self.meta_block = nn.Sequential(nn.Linear(3, PREDICTOR_HIDDEN), nn.ReLU(),
                                        nn.Linear(PREDICTOR_HIDDEN, 9 * feat_dim * 3))

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        return self.meta_block(code)


class MetaUpscale(nn.Module):
    """``(features, scale, rows, cols) -> rgb in [0, 1]`` with one predicted 3x3 filter per output pixel."""

    def __init__(self, feat_dim: int, fast: bool = True):
        super().__init__()
        self.feat_dim = feat_dim
        self.P2W = Pos2Weight(feat_dim)
        self.add_mean = _mean_shift(+1)
        self.fast = fast

    @staticmethod
    def corner_cells(feat: torch.Tensor, scale: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor):
        """LR cells and in-cell offsets of the output pixels' top-left corners, and the code's ``1 / s``."""
        h, w = feat.shape[2], feat.shape[3]
        inv_h, inv_w = 1.0 / scale[:, 0:1], 1.0 / scale[:, 1:2]
        corner_y, corner_x = rows - 0.5 * inv_h, cols - 0.5 * inv_w
        iy, ix = cell_index(corner_y, h), cell_index(corner_x, w)
        return iy, ix, corner_y - iy.to(rows.dtype), corner_x - ix.to(cols.dtype), inv_h[:, 0]

    def _to_rgb(self, rgb: torch.Tensor, b: int, hh: int, ww: int) -> torch.Tensor:
        """(N, 3) in the official 0..255 range, before ``add_mean`` -> (B, 3, H, W) in [0, 1]."""
        shifted = rgb @ self.add_mean.weight.view(3, 3).t() + self.add_mean.bias
        return (shifted / RGB_RANGE).view(b, hh, ww, 3).permute(0, 3, 1, 2)

    def forward(self, feat: torch.Tensor, scale: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        if self.fast:
            return self._forward_fast(feat, scale, rows, cols)
        return self.reference(feat, scale, rows, cols)

    def reference(self, feat: torch.Tensor, scale: torch.Tensor, rows: torch.Tensor,
                  cols: torch.Tensor) -> torch.Tensor:
        """The official computation: a (9 * G0, 3) filter predicted for every output pixel."""
        b, c, h, w = feat.shape
        hh, ww = rows.shape[1], cols.shape[1]
        iy, ix, fy, fx, inv_s = self.corner_cells(feat, scale, rows, cols)
        code = torch.stack(torch.broadcast_tensors(inv_s[:, None, None], fy[:, :, None], fx[:, None, :]), dim=-1)
        weights = self.P2W(code.reshape(-1, 3)).view(-1, c * 9, 3)
        unfolded = F.unfold(feat, 3, padding=1).view(b, c * 9, h, w).permute(0, 2, 3, 1)  # channel c * 9 + tap
        neighbourhood = gather_rows(unfolded, iy, ix)  # (N, 9C)
        return self._to_rgb(torch.bmm(neighbourhood[:, None, :], weights)[:, 0], b, hh, ww)

    def _projection(self, c: int) -> torch.Tensor:
        """The last P2W layer as 3x3 conv weights: channel ``rgb * 256 + j`` is the feature's dot
        product with that hidden unit's filter column, then 3 channels of the bias filter."""
        k, last = PREDICTOR_HIDDEN, self.P2W.meta_block[2]
        w_feat = last.weight.view(c * 9, 3, k).permute(1, 2, 0).reshape(3 * k, c, 3, 3)  # row (c * 9 + tap) * 3 + rgb
        w_bias = last.bias.view(c * 9, 3).t().reshape(3, c, 3, 3)
        return torch.cat([w_feat, w_bias], dim=0)

    def _forward_fast(self, feat: torch.Tensor, scale: torch.Tensor, rows: torch.Tensor,
                      cols: torch.Tensor) -> torch.Tensor:
        b, c = feat.shape[0], feat.shape[1]
        hh, ww = rows.shape[1], cols.shape[1]
        k, first = PREDICTOR_HIDDEN, self.P2W.meta_block[0]
        projected = F.conv2d(feat, self._projection(c), padding=1).permute(0, 2, 3, 1)  # (B, h, w, 3k + 3)
        iy, ix, fy, fx, inv_s = self.corner_cells(feat, scale, rows, cols)
        # first layer, separably: code (1/s, offset_h, offset_w) -> row term (B, H, k) + column term (B, W, k)
        row_term = fy[..., None] * first.weight[:, 1] + (inv_s[:, None] * first.weight[:, 0] + first.bias)[:, None, :]
        col_term = fx[..., None] * first.weight[:, 2]
        hidden = torch.relu(row_term[:, :, None, :] + col_term[:, None, :, :]).reshape(-1, k, 1)  # (N, k, 1)
        q = gather_rows(projected, iy, ix)  # (N, 3k + 3)
        rgb = torch.bmm(q[:, : 3 * k].reshape(-1, 3, k), hidden)[..., 0] + q[:, 3 * k:]
        return self._to_rgb(rgb, b, hh, ww)


def _tile_bytes(G0: int, D: int, C: int, G: int) -> dict:
    """Tile-planner costs (bytes), estimated from the largest live float32 tensors, not measured:
    the RDN body holds the D block outputs for GFF plus the widest dense concatenation; the
    upsampler's LR window holds the 3 * 256 + 3 channel projection (twice: conv out, transposed)."""
    backbone = 4 * (D * G0 + (G0 + C * G) + 4 * G0)
    return {"backbone_per_px": float(2 * backbone), "upsampler_per_lr_px": float(2 * 4 * (3 * PREDICTOR_HIDDEN + 3))}


@register_model("metardn")
def _metardn(G0: int = 64, D: int = RDN_CONFIGS["B"][0], C: int = RDN_CONFIGS["B"][1], G: int = RDN_CONFIGS["B"][2],
             kernel_size: int = 3, fast: bool = True, scale_max: float = 8.0) -> SRModel:
    """Official defaults: G0 = 64, RDNconfig B (D, C, G) = (16, 8, 64), RDNkSize 3."""
    backbone = MetaRDNBackbone(G0, D, C, G, kernel_size)
    descriptor = ModelDescriptor(
        arch="metardn",
        feature_channels=G0,
        scale_min=1.0,  # the official position loop assumes s >= 1
        scale_max=scale_max,
        trained_scale_max=4.0,  # trained on x1.1 .. x4.0
        backbone_halo=backbone.receptive_radius,
        upsampler_lr_reach=2,  # the 3x3 neighbourhood (1) + the corner's cell, up to 1 above / left of the centre's
        upsampler_hr_reach=0,
        precisions=("fp32",),
        normalization="input RGB float32 in [0, 1] (x255, then the checkpoint's sub_mean); "
                      "output RGB in [0, 1] (the checkpoint's add_mean, /255; clamp after)",
        # the upsampler's floor-grid cells and predicted filters stay fp32 under bf16 / fp16 (in bf16
        # they gave 1.8 max abs at x3.7 on the fixture); the RDN encoder takes bf16
        extra={"encoder": "rdn", "tile_bytes": _tile_bytes(G0, D, C, G), "reduced_precision_stages": ["backbone"]},
        size_rule="floor",
        symmetric_only=True,
    )
    config = {"G0": G0, "D": D, "C": C, "G": G, "kernel_size": kernel_size}
    return SRModel("metardn", backbone, MetaUpscale(G0, fast), descriptor, config)


_OFFICIAL_MODULES = MEAN_SHIFTS + RDN_MODULES + ("P2W.",)


def _check_head(ckpt: CanonicalCheckpoint, G0: int) -> None:
    """The mean shifts and P2W must have the official shapes for G0 features."""
    want = {"sub_mean.weight": (3, 3, 1, 1), "sub_mean.bias": (3,), "add_mean.weight": (3, 3, 1, 1),
            "add_mean.bias": (3,), "P2W.meta_block.0.weight": (PREDICTOR_HIDDEN, 3),
            "P2W.meta_block.0.bias": (PREDICTOR_HIDDEN,), "P2W.meta_block.2.weight": (27 * G0, PREDICTOR_HIDDEN),
            "P2W.meta_block.2.bias": (27 * G0,)}
    have = {k: ckpt.shape(k) for k in ckpt.state_dict if k.startswith(MEAN_SHIFTS + ("P2W.",))}
    if have != want:
        wrong = sorted(set(want) ^ set(have)) or [k for k in want if want[k] != have[k]]
        raise UserError(f"{ckpt.describe()}: a MetaRDN layout, but its mean shifts / P2W do not fit G0 = {G0} "
                        f"(3 -> {PREDICTOR_HIDDEN} -> 27 x {G0}); first mismatch: {wrong[0]} "
                        f"{have.get(wrong[0], 'missing')}")


@register_detector(name="metardn_official", requires=("P2W.meta_block.0.weight", "P2W.meta_block.2.weight",
                                                      "SFENet1.weight", "sub_mean.weight", "add_mean.weight"))
def detect_metardn(ckpt: CanonicalCheckpoint) -> Detection | None:
    """The official ``MetaRDN.state_dict()`` (bare, no prefix): D, C, G, G0 and the kernel from the shapes."""
    if not all(k.startswith(_OFFICIAL_MODULES) for k in ckpt.state_dict):
        return None
    args = rdn_args_from_state({k: ckpt.shape(k) for k in ckpt.state_dict if k.startswith(RDN_MODULES)}, prefix="")
    if args.pop("in_channels") != 3:
        raise UserError(f"{ckpt.describe()}: a MetaRDN layout for {ckpt.shape('SFENet1.weight')[1]}-channel input; "
                        "only RGB (n_colors 3) is supported")
    _check_head(ckpt, args["G0"])
    mapped = {}
    for key, value in ckpt.state_dict.items():
        stage = "backbone." if key.startswith("sub_mean.") else "upsampler." if key.startswith(("add_mean.", "P2W.")) \
            else "backbone.encoder."
        mapped[stage + key] = value
    return Detection("metardn", mapped, args)
