"""EDSR-baseline feature encoder (no upsampling tail), as LIIF uses it."""

from __future__ import annotations

import torch
from torch import nn


class ResBlock(nn.Module):
    def __init__(self, channels: int, res_scale: float = 1.0):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
        )
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) * self.res_scale


class EDSREncoder(nn.Module):
    """head conv -> n residual blocks -> conv, with a global skip. Receptive radius 2n + 2."""

    def __init__(self, n_resblocks: int = 16, n_feats: int = 64, in_channels: int = 3, res_scale: float = 1.0):
        super().__init__()
        self.head = nn.Sequential(nn.Conv2d(in_channels, n_feats, 3, padding=1))
        self.body = nn.Sequential(*[ResBlock(n_feats, res_scale) for _ in range(n_resblocks)],
                                  nn.Conv2d(n_feats, n_feats, 3, padding=1))
        self.out_dim = n_feats
        self.receptive_radius = 2 * n_resblocks + 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(x)
        return self.body(x) + x


def edsr_args_from_state(shapes: dict[str, tuple[int, ...]], prefix: str = "encoder.") -> dict:
    """``n_resblocks`` and ``n_feats`` of an EDSR-baseline encoder from its keys and shapes."""
    from asisr.errors import UserError

    head = shapes.get(f"{prefix}head.0.weight")
    if head is None:
        raise UserError(f"not an EDSR-baseline encoder: no {prefix}head.0.weight")
    rel = [k[len(prefix):].split(".") for k in shapes if k.startswith(prefix)]
    blocks = {p[1] for p in rel if len(p) > 3 and p[0] == "body" and p[2] == "body"}
    return {"n_resblocks": len(blocks), "n_feats": int(head[0])}
