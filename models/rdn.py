"""RDN feature encoder (Zhang et al. 2018) without its upsampling net, as LIIF/LTE/MetaSR use it.

Module and parameter names follow the official LIIF ``models/rdn.py`` layout (``SFENet1``,
``SFENet2``, ``RDBs.{i}.convs.{j}.conv.0``, ``RDBs.{i}.LFF``, ``GFF.0``, ``GFF.1``), so an
official checkpoint's ``encoder.*`` state dict loads with ``strict=True`` after stripping the
prefix. Only the no-upsampling variant exists here: the arbitrary-scale heads do the upsampling.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from asisr.errors import UserError

#: The official (D, C, G) table: number of RDBs, convs per RDB, growth rate.
RDN_CONFIGS = {"A": (20, 6, 32), "B": (16, 8, 64)}
#: Kernel of the dense convs inside each RDB (fixed upstream; ``kernel_size`` does not reach it).
DENSE_KERNEL = 3


class _DenseConv(nn.Module):
    """One dense layer: ``cat(x, relu(conv(x)))``; the Sequential keeps the official ``conv.0`` key."""

    def __init__(self, in_channels: int, growth: int, kernel_size: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(in_channels, growth, kernel_size, padding=(kernel_size - 1) // 2),
                                  nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(x)], dim=1)


class _RDB(nn.Module):
    """Residual dense block: C dense layers, a 1x1 local fusion back to G0, and a local skip."""

    def __init__(self, G0: int, G: int, C: int):
        super().__init__()
        # 3x3 whatever the encoder's kernel_size: the official block never passes RDNkSize on,
        # and checkpoints trained with another size have 3x3 dense convs.
        self.convs = nn.Sequential(*[_DenseConv(G0 + c * G, G, DENSE_KERNEL) for c in range(C)])
        self.LFF = nn.Conv2d(G0 + C * G, G0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LFF(self.convs(x)) + x


class RDNEncoder(nn.Module):
    """``(B, in_channels, h, w) -> (B, G0, h, w)``: shallow convs, D dense blocks, global fusion + skip.

    ``receptive_radius`` is exact (in LR pixels): the longest conv path is SFENet1 -> SFENet2 ->
    the C dense 3x3 convs of each of the D blocks -> GFF.1, so ``3 * ((kernel_size - 1) // 2) + D * C``
    (the 1x1 fusions add nothing). The runtime uses it to tile without seams.
    """

    def __init__(self, G0: int = 64, D: int = 16, C: int = 8, G: int = 64, kernel_size: int = 3,
                 in_channels: int = 3):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd to keep the size, got {kernel_size}")
        pad = (kernel_size - 1) // 2
        self.SFENet1 = nn.Conv2d(in_channels, G0, kernel_size, padding=pad)
        self.SFENet2 = nn.Conv2d(G0, G0, kernel_size, padding=pad)
        self.RDBs = nn.ModuleList([_RDB(G0, G, C) for _ in range(D)])
        self.GFF = nn.Sequential(nn.Conv2d(D * G0, G0, 1), nn.Conv2d(G0, G0, kernel_size, padding=pad))
        self.out_dim = G0
        self.receptive_radius = 3 * pad + D * C * ((DENSE_KERNEL - 1) // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shallow = self.SFENet1(x)
        y = self.SFENet2(shallow)
        outs = []
        for block in self.RDBs:
            y = block(y)
            outs.append(y)
        return self.GFF(torch.cat(outs, dim=1)) + shallow


def _strip(shapes: dict[str, tuple[int, ...]], prefix: str) -> dict[str, tuple[int, ...]]:
    return {k[len(prefix):]: tuple(v) for k, v in shapes.items() if k.startswith(prefix)}


def rdn_args_from_state(shapes: dict[str, tuple[int, ...]], prefix: str = "encoder.") -> dict:
    """Constructor kwargs of :class:`RDNEncoder` read from a state dict's key names and shapes.

    Checkpoints carry no architecture config we can trust, so the layout itself is the config
    (as spandrel does). Returns ``G0, D, C, G, kernel_size, in_channels``; raises ``UserError``
    if the keys or shapes are not exactly an RDN encoder's.
    """
    sd = _strip(shapes, prefix)
    where = f" under prefix {prefix!r}" if prefix else ""
    try:
        G0, in_channels, kernel_size, _ = sd["SFENet1.weight"]
        D = 1 + max(int(m.group(1)) for k in sd if (m := re.fullmatch(r"RDBs\.(\d+)\.LFF\.weight", k)))
        C = 1 + max(int(m.group(1)) for k in sd if (m := re.fullmatch(r"RDBs\.0\.convs\.(\d+)\.conv\.0\.weight", k)))
        G = sd["RDBs.0.convs.0.conv.0.weight"][0]
    except (KeyError, ValueError, TypeError):
        raise UserError(f"state dict{where} is not an RDN encoder (no SFENet1 / RDBs.*.LFF / "
                        f"RDBs.0.convs.* keys)") from None
    args = {"G0": G0, "D": D, "C": C, "G": G, "kernel_size": kernel_size, "in_channels": in_channels}
    try:
        with torch.device("meta"):
            want = {k: tuple(v.shape) for k, v in RDNEncoder(**args).state_dict().items()}
    except ValueError as e:
        raise UserError(f"state dict{where} is not an RDN encoder: {e}") from None
    if want != sd:
        diff = sorted(set(want) ^ set(sd)) or [k for k in want if want[k] != sd[k]]
        raise UserError(f"state dict{where} is not an RDN encoder with {args}: keys or shapes differ "
                        f"(first: {diff[0]})")
    return args
