"""Starting a model from a pretrained EDSR-baseline encoder (e.g. the official LIIF one).

CPU budgets do not train an encoder from scratch; copying a pretrained one and training the
rest (upsampler, scale modulation) is the honest shortcut, and a comparison at equal budget
gives every model the same start.
"""

from __future__ import annotations

from pathlib import Path

import torch

from asisr.errors import UserError


def _edsr_encoder_state(source) -> dict[str, torch.Tensor]:
    if source.name != "liif":
        raise UserError(f"can only take an encoder from a LIIF (EDSR-baseline) checkpoint, not {source.name!r}")
    prefix = "backbone.encoder."
    return {k[len(prefix):]: v for k, v in source.state_dict().items() if k.startswith(prefix)}


def init_backbone_from(model, checkpoint: str | Path) -> list[str]:
    """Copy the EDSR-baseline encoder of ``checkpoint`` into ``model``'s backbone; returns the keys set."""
    from asisr.models import load

    enc = _edsr_encoder_state(load(checkpoint))
    n_src = len({k.split(".")[1] for k in enc if k.startswith("body.") and ".body." in k})
    target: dict[str, torch.Tensor] = {}
    if model.name in ("liif", "lte", "metasr", "lmf"):  # the LIIF family: the same EDSR-baseline under backbone.encoder
        target = {f"backbone.encoder.{k}": v for k, v in enc.items()}
    elif model.name == "eqsr_light":
        bb = model.backbone
        if bb.n_groups * bb.n_resblocks != n_src:
            raise UserError(f"eqsr_light has {bb.n_groups}x{bb.n_resblocks} residual blocks, the encoder {n_src}")
        target["backbone.conv_first.weight"] = enc["head.0.weight"]
        target["backbone.conv_first.bias"] = enc["head.0.bias"]
        target["backbone.conv_after_body.weight"] = enc[f"body.{n_src}.weight"]
        target["backbone.conv_after_body.bias"] = enc[f"body.{n_src}.bias"]
        for i in range(n_src):
            g, b = divmod(i, bb.n_resblocks)
            for j in (0, 2):
                for t in ("weight", "bias"):
                    target[f"backbone.groups.{g}.blocks.{b}.body.{j}.{t}"] = enc[f"body.{i}.body.{j}.{t}"]
    else:
        raise UserError(f"no encoder warm start defined for {model.name!r}")
    own = model.state_dict()
    for k, v in target.items():
        if k not in own or own[k].shape != v.shape:
            raise UserError(f"encoder weight {k} does not fit {model.name} (shape {tuple(v.shape)})")
    model.load_state_dict(target, strict=False)
    return sorted(target)
