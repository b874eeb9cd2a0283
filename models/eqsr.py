"""EQSR (Wang et al., CVPR 2023, "Deep arbitrary-scale image super-resolution via scale-
equivariance pursuit"): a scale-modulated backbone + the Neural Kriging Upsampler.

Registered models
* ``eqsr_hat``: the paper's HAT backbone (``asisr.models.hat``); paper configuration by
  default (embed 180, 6 groups of depth 5 (4 HAB + OCAB), 6 heads, window 16).
* ``eqsr_light``: EDSR-baseline-sized residual backbone (``asisr.models.eqsr_light``),
  64 channels, free of global pooling, with a narrower upsampler (64 channels, no ECA) so it
  trains on a small CPU and tiles exactly.

Both share ``KrigingUpsampler`` (``asisr.models.kriging``).  New models default to the
portable scale / offset codes; the detector builds upstream checkpoints with
``scale_code="upstream", offset_code="upstream"`` (see ``asisr.models.scale_code``).

Checkpoints recognised by ``asisr.models.load`` (any wrapper ``asisr.models.canonical`` removes):
* upstream ``{'params_ema': sd}`` (or ``{'params': sd}``, or a bare ``sd``) with the
  reference key names (``conv_first``, ``layers.N.residual_group.mbconv...``,
  ``upsample.inv1...``); the configuration is inferred from the tensor shapes;
* asisr's own ``{'asisr': {'name': ..., 'config': kwargs}, 'state_dict': sd}``
  (``asisr.models.save(model, path)`` writes it).

Reproducing an upstream call: for a whole image ``lq`` (h, w) upscaled to (H, W), pass
``scale = (H / h, W / w)`` and the ``make_query`` rows/cols; the upstream scale vector is
``pos_enc(2 / H)``, recovered as ``2 / (h * s_h)`` snapped to the integer ``H``.  For
upstream's training batches (``cell = 2 / HR_crop``, coordinates a window of the HR
grid) pass ``scale = HR_size / lr_size`` per sample and ``rows = (coord_y + 1) / 2 * h``,
``cols = (coord_x + 1) / 2 * w`` of the sampled HR pixels.
"""

from __future__ import annotations

import math

import torch

from asisr.errors import UserError
from asisr.models.base import SRModel
from asisr.runtime.descriptor import ModelDescriptor
from asisr.models.eqsr_light import LightBackbone
from asisr.models.hat import HATBackbone, relative_position_index_sa
from asisr.models.kriging import KrigingUpsampler
from asisr.models.canonical import CanonicalCheckpoint
from asisr.models.registry import Detection, register_detector, register_model
from asisr.models.scale_code import UPSTREAM_CODE_DIM

# Involution blocks: each output mixes its 3x3 HR neighbourhood once (the kernel generator's
# 3x3 conv reads the same neighbourhood), two blocks -> 2 HR pixels.
UPSAMPLER_HR_REACH = 2
# Upstream's upsampler reads only each query's nearest LR feature; HR neighbours read their own.
# A 3x3 head or the bilinear LR skip reads one LR pixel further.
UPSAMPLER_LR_REACH = 0

# Working memory per tile unit relative to LIIF's (the planner's default model). Measured on
# the default model, 1920x1080 -> 3840x2160 through ONNX Runtime, 2 threads: with LIIF's numbers a
# 1 GiB budget peaked at 2077 MiB (LIIF: 1504 MiB); a 700 MiB budget peaked at 1334 MiB.
EQSR_LIGHT_TILE_BYTES_SCALE = 1.5

PAPER_HAT = dict(embed_dim=180, depths=(5, 5, 5, 5, 5, 5), num_heads=(6, 6, 6, 6, 6, 6), window_size=16,
                 overlap_ratio=0.5, mlp_ratio=2.0)


def _descriptor(arch: str, channels: int, halo: int | None, eca: bool, extra: dict,
                lr_reach: int = UPSAMPLER_LR_REACH) -> ModelDescriptor:
    # ECA pools over the whole output grid: HR tiles then only approximate the whole image.
    return ModelDescriptor(
        arch=arch, feature_channels=channels, scale_min=1.0, scale_max=8.0, trained_scale_max=4.0,
        backbone_halo=halo, upsampler_lr_reach=lr_reach, upsampler_hr_reach=UPSAMPLER_HR_REACH,
        upsampler_global_pool=bool(eca), precisions=("fp32", "fp16"), extra=dict(extra))


def build_eqsr_hat(embed_dim: int = 180, depths=PAPER_HAT["depths"], num_heads=PAPER_HAT["num_heads"],
                   window_size: int = 16, overlap_ratio: float = 0.5, mlp_ratio: float = 2.0, se: bool = True,
                   se_shrinkage: float = 0.25, scale_code: str = "portable", scale_code_freqs: int | None = None,
                   upsampler_width: int = 256, offset_code: str = "portable", offset_freqs: int | None = None,
                   eca: bool = True, img_range: float = 1.0) -> SRModel:
    config = dict(embed_dim=embed_dim, depths=list(depths), num_heads=list(num_heads), window_size=window_size,
                  overlap_ratio=overlap_ratio, mlp_ratio=mlp_ratio, se=se, se_shrinkage=se_shrinkage,
                  scale_code=scale_code, scale_code_freqs=scale_code_freqs, upsampler_width=upsampler_width,
                  offset_code=offset_code, offset_freqs=offset_freqs, eca=eca, img_range=img_range)
    backbone = HATBackbone(embed_dim, tuple(depths), tuple(num_heads), window_size, overlap_ratio, mlp_ratio,
                           scale_code, scale_code_freqs, se, se_shrinkage, img_range=img_range)
    upsampler = KrigingUpsampler(embed_dim, upsampler_width, offset_code, offset_freqs, eca, img_range=img_range)
    desc = _descriptor("eqsr_hat", embed_dim, None, eca, {
        "window_size": window_size, "scale_code": scale_code, "offset_code": offset_code,
        "backbone_global_context": "ModMBConv squeeze-excitation, windows anchored at the input origin"})
    return SRModel("eqsr_hat", backbone, upsampler, desc, config)


def build_eqsr_light(n_feats: int = 64, n_groups: int = 4, n_resblocks: int = 4, se: bool = False,
                     res_scale: float = 1.0, scale_code: str = "portable", scale_code_freqs: int | None = None,
                     upsampler_width: int = 64, offset_code: str = "portable", offset_freqs: int | None = None,
                     eca: bool = False, img_range: float = 1.0, head_kernel: int = 3,
                     lr_skip: bool = True) -> SRModel:
    config = dict(n_feats=n_feats, n_groups=n_groups, n_resblocks=n_resblocks, se=se, res_scale=res_scale,
                  scale_code=scale_code, scale_code_freqs=scale_code_freqs, upsampler_width=upsampler_width,
                  offset_code=offset_code, offset_freqs=offset_freqs, eca=eca, img_range=img_range,
                  head_kernel=head_kernel, lr_skip=lr_skip)
    backbone = LightBackbone(n_feats, n_groups, n_resblocks, scale_code, scale_code_freqs, se, res_scale)
    upsampler = KrigingUpsampler(n_feats, upsampler_width, offset_code, offset_freqs, eca, img_range=img_range,
                                 head_kernel=head_kernel, lr_skip=lr_skip)
    lr_reach = UPSAMPLER_LR_REACH + (1 if head_kernel == 3 or lr_skip else 0)
    desc = _descriptor("eqsr_light", n_feats, backbone.receptive_radius(), eca,
                       {"scale_code": scale_code, "offset_code": offset_code, "head_kernel": head_kernel,
                        "lr_skip": lr_skip, "tile_bytes": {"scale": EQSR_LIGHT_TILE_BYTES_SCALE}}, lr_reach)
    return SRModel("eqsr_light", backbone, upsampler, desc, config)


register_model("eqsr_hat")(build_eqsr_hat)
register_model("eqsr_light")(build_eqsr_light)


# ------------------------------------------------------------------------ upstream layout

_UPSTREAM_MARKERS = ("conv_first.weight", "layers.0.residual_group.mbconv.net2.to_style.weight",
                     "upsample.head.0.weight", "upsample.rbf1.lengthscale")


def _side_of_square(n: int, what: str) -> int:
    r = math.isqrt(n)
    if r * r != n:
        raise UserError(f"EQSR checkpoint: {what} has {n} entries, not a square")
    return r


def infer_upstream_config(sd: dict) -> dict:
    """Constructor kwargs of ``build_eqsr_hat`` for an upstream state dict, from tensor shapes."""
    embed = sd["conv_first.weight"].shape[0]
    n_layers = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("layers."))
    depths, heads = [], []
    for i in range(n_layers):
        pre = f"layers.{i}.residual_group."
        blocks = {int(k[len(pre) + 7:].split(".")[0]) for k in sd if k.startswith(pre + "blocks.")}
        depths.append(len(blocks) + 1)
        heads.append(sd[pre + "overlap_attn.relative_position_bias_table"].shape[1])
    if "relative_position_index_SA" in sd:
        ws = _side_of_square(sd["relative_position_index_SA"].shape[0], "relative_position_index_SA")
    else:
        ws = (_side_of_square(sd["layers.0.residual_group.blocks.0.attn.relative_position_bias_table"].shape[0],
                              "the SA relative position table") + 1) // 2
    ows = _side_of_square(sd["layers.0.residual_group.overlap_attn.relative_position_bias_table"].shape[0],
                          "the OCA relative position table") + 1 - ws
    mlp_hidden = sd["layers.0.residual_group.overlap_attn.mlp.fc1.weight"].shape[0]
    code_dim = sd["layers.0.residual_group.mbconv.net2.to_style.weight"].shape[1]
    se_key = "layers.0.residual_group.mbconv.net3.0.gate.1.weight"
    se = se_key in sd
    head_in = sd["upsample.head.0.weight"].shape[1]
    width = sd["upsample.head.0.weight"].shape[0]
    off_dim = head_in - embed
    if code_dim != UPSTREAM_CODE_DIM or off_dim != 2 * UPSTREAM_CODE_DIM:
        raise UserError(f"EQSR checkpoint: unexpected scale-code width {code_dim} / offset-code width {off_dim} "
                        f"(upstream uses {UPSTREAM_CODE_DIM} / {2 * UPSTREAM_CODE_DIM})")
    if "relative_position_index_SA" in sd and not torch.equal(sd["relative_position_index_SA"].cpu(),
                                                              relative_position_index_sa(ws)):
        raise UserError("EQSR checkpoint: relative_position_index_SA does not match the window size")
    return dict(embed_dim=embed, depths=depths, num_heads=heads, window_size=ws, overlap_ratio=(ows - ws) / ws,
                mlp_ratio=mlp_hidden / embed, se=se,
                se_shrinkage=(sd[se_key].shape[0] / embed) if se else 0.25,
                scale_code="upstream", upsampler_width=width, offset_code="upstream",
                eca="upsample.inv1.ffn.CA.conv.weight" in sd)


def upstream_to_asisr(sd: dict) -> dict:
    """Upstream key names -> this model's (``upsample.*`` -> ``upsampler.*``, rest -> ``backbone.*``)."""
    return {("upsampler." + k[len("upsample."):] if k.startswith("upsample.") else "backbone." + k): v
            for k, v in sd.items()}


def asisr_to_upstream(sd: dict) -> dict:
    """Inverse of ``upstream_to_asisr`` (e.g. to export weights to the reference code)."""
    out = {}
    for k, v in sd.items():
        if k.startswith("upsampler."):
            out["upsample." + k[len("upsampler."):]] = v
        elif k.startswith("backbone."):
            out[k[len("backbone."):]] = v
    return out


@register_detector(name="eqsr_upstream", requires=_UPSTREAM_MARKERS)
def detect_eqsr(ckpt: CanonicalCheckpoint) -> Detection | None:
    """Upstream EQSR (HAT backbone + kriging upsampler) key names; the configuration comes from the shapes."""
    return Detection("eqsr_hat", upstream_to_asisr(ckpt.state_dict), infer_upstream_config(ckpt.state_dict))
