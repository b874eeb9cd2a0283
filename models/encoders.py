"""The feature encoders of the LIIF codebase (LIIF, LTE, Meta-SR), by their official names.

The official checkpoints name an encoder by its ``encoder_spec`` (``edsr-baseline``, ``rdn``,
``swinir``), but the spec is missing or wrong in some releases, so the encoder is read from
its state-dict keys and shapes instead (``detect_encoder``). ``EncoderBackbone`` is the
backbone stage those models share: the official input normalisation ``(lr - 0.5) / 0.5``, the
encoder, and for SwinIR the official test script's window padding (``test.py --window``).

SwinIR and window padding: the official test pads the input (mirror, edge repeated, 1 to
``window`` pixels at the bottom and right), runs the model on the padded grid and crops the
output. The backbone does the same and crops the *features* back to the LR size, so the stage
contract (features at LR size) holds; the interior equals the official computation, and at
the last LR row and column the upsampler reads the clamped edge where the official code reads
padded features (``tests/test_liif_family.py`` checks both). With ``window_pad`` off, SwinIR's
own reflect padding is used and its features are cropped to the LR size before any head.
"""

from __future__ import annotations

import torch
from torch import nn

from asisr.errors import UserError
from asisr.models.canonical import CanonicalCheckpoint, key_patterns
from asisr.models.edsr import EDSREncoder, edsr_args_from_state
from asisr.runtime.descriptor import ModelDescriptor

EDSR_BASELINE, RDN, SWINIR = "edsr-baseline", "rdn", "swinir"
ENCODERS = (EDSR_BASELINE, RDN, SWINIR)


def build_encoder(name: str, args: dict) -> nn.Module:
    """An encoder with ``out_dim`` and ``receptive_radius`` (``None``: context too wide to tile exactly)."""
    if name == EDSR_BASELINE:
        return EDSREncoder(**args)
    if name == RDN:
        from asisr.models.rdn import RDNEncoder

        return RDNEncoder(**args)
    if name == SWINIR:
        from asisr.models.swinir import SwinIREncoder

        return SwinIREncoder(**args)
    raise UserError(f"unknown encoder {name!r}; known: {', '.join(ENCODERS)}")


def detect_encoder(ckpt: CanonicalCheckpoint, prefix: str = "encoder.") -> tuple[str, dict]:
    """Which official encoder sits under ``prefix``, with its constructor arguments."""
    shapes = {k: ckpt.shape(k) for k in ckpt.with_prefix(prefix)}
    if f"{prefix}head.0.weight" in shapes:
        return EDSR_BASELINE, edsr_args_from_state(shapes, prefix)
    if f"{prefix}SFENet1.weight" in shapes:
        from asisr.models.rdn import rdn_args_from_state

        return RDN, rdn_args_from_state(shapes, prefix)
    if f"{prefix}conv_first.weight" in shapes and any(".residual_group." in k for k in shapes):
        from asisr.models.swinir import swinir_args_from_state

        return SWINIR, swinir_args_from_state(shapes, prefix)
    raise UserError(f"{ckpt.describe()}: unknown encoder (known: {', '.join(ENCODERS)}); "
                    f"its encoder keys look like {key_patterns(list(shapes), 4)}")


def encoder_state(ckpt: CanonicalCheckpoint, prefix: str = "encoder.") -> dict[str, torch.Tensor]:
    """The encoder's tensors under ``prefix``, without EDSR's ``sub_mean`` / ``add_mean``.

    The official EDSR-for-LIIF keeps those MeanShift convs in its state dict but never applies
    them (the calls are commented out), so they carry no information and are not rebuilt.
    """
    unused = (f"{prefix}sub_mean.", f"{prefix}add_mean.")
    return {k: ckpt.state_dict[k] for k in ckpt.with_prefix(prefix) if not k.startswith(unused)}


def encoder_out_dim(encoder: str, encoder_args: dict) -> int:
    """The feature width an encoder spec produces (SwinIR's is fixed at 64 by the official code)."""
    if encoder == SWINIR:
        return 64
    if encoder == EDSR_BASELINE:
        return int(encoder_args["n_feats"])
    return int(encoder_args["G0"])


def family_encoder(encoder: str, encoder_args: dict | None, n_resblocks: int, n_feats: int) -> tuple[str, dict]:
    """The encoder spec of a LIIF-family config (LIIF, LTE, Meta-SR); EDSR-baseline keeps its two historical kwargs."""
    if encoder == EDSR_BASELINE:
        return encoder, {"n_resblocks": n_resblocks, "n_feats": n_feats, **(encoder_args or {})}
    return encoder, dict(encoder_args or {})


def family_config(encoder: str, encoder_args: dict, window_pad: bool, **rest) -> dict:
    """The config a LIIF-family model saves: only what differs from the EDSR-baseline defaults is spelled out."""
    config = dict(rest)
    if encoder == EDSR_BASELINE:
        config.update(n_resblocks=encoder_args["n_resblocks"], n_feats=encoder_args["n_feats"])
    else:
        config.update(encoder=encoder, encoder_args=dict(encoder_args), window_pad=window_pad)
    return config


def family_kwargs(encoder: str, encoder_args: dict, **rest) -> dict:
    """Factory kwargs for a detected LIIF-family checkpoint."""
    if encoder == EDSR_BASELINE:
        return {**rest, **encoder_args}
    return {**rest, "encoder": encoder, "encoder_args": encoder_args}


def family_descriptor(arch: str, backbone: "EncoderBackbone", feature_channels: int, upsampler_lr_reach: int,
                      scale_max: float, **extra) -> ModelDescriptor:
    """What LIIF, LTE and Meta-SR share: trained on s in [1, 4], no HR mixing, every precision,
    the halo of their encoder (plus heads), and which encoder and window padding they use."""
    if backbone.encoder_name == SWINIR:
        extra["window_pad"] = backbone.window
    return ModelDescriptor(
        arch=arch,
        feature_channels=feature_channels,
        scale_min=1.0,
        scale_max=scale_max,
        trained_scale_max=4.0,
        backbone_halo=backbone.receptive_radius,
        upsampler_lr_reach=upsampler_lr_reach,
        upsampler_hr_reach=0,
        precisions=("fp32", "fp16", "int8"),
        extra={"encoder": backbone.encoder_name, **extra},
    )


class EncoderBackbone(nn.Module):
    """``(lr in [0,1], scale) -> features``: the LIIF codebase's encoders ignore the scale.

    Subclasses add LR-resolution heads (LTE's ``coef`` / ``freq`` convs) by overriding ``head``,
    which sees the (window-padded) normalised input and features before the crop.
    """

    def __init__(self, encoder: str = EDSR_BASELINE, encoder_args: dict | None = None, window_pad: bool = True):
        super().__init__()
        self.encoder_name = encoder
        self.encoder = build_encoder(encoder, dict(encoder_args or {}))
        self.window = int(self.encoder.window_size) if encoder == SWINIR and window_pad else None

    @property
    def receptive_radius(self) -> int | None:
        return self.encoder.receptive_radius

    @property
    def out_dim(self) -> int:
        return int(self.encoder.out_dim)

    def head(self, inp: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        return feat

    def forward(self, lr: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        h, w = lr.shape[2], lr.shape[3]
        inp = (lr - 0.5) / 0.5
        if self.window is not None:
            from asisr.models.swinir import window_test_pad

            inp = window_test_pad(inp, self.window)
        feat = self.encoder(inp)
        if self.encoder_name == SWINIR:
            feat = feat[:, :, : inp.shape[2], : inp.shape[3]]  # its own reflect padding (window_pad off)
            return self.head(inp, feat)[:, :, :h, :w]
        return self.head(inp, feat)
