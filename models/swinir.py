"""SwinIR feature encoder (Liang et al. 2021) as LTE/LIIF build it: no upsampler, 64-channel output.

Layout and state-dict keys follow LTE's ``models/swinir.py`` with ``upsampler='none'``,
``resi_connection='1conv'`` and patch size 1: ``conv_first`` -> ``patch_embed.norm`` ->
``layers.{i}`` (RSTB: ``residual_group.blocks.{j}`` Swin blocks, then a 3x3 ``conv`` and the
group residual) -> ``norm`` -> ``conv_after_body`` + shallow residual -> ``conv_before_upsample``
(3x3 conv to 64 channels + LeakyReLU 0.01). The buffers are kept under their official names
(``attn.relative_position_index``, int64, and ``attn_mask`` on the shifted blocks, computed for
an ``img_size`` square) so official checkpoints load with ``strict=True``.

Export notes: the stored ``attn_mask`` is never used. The forward builds the shifted-window
mask in-graph from the padded input size (for an ``img_size`` square it equals the stored one),
and the reflect padding is an index gather computed from the shape, so one ONNX graph serves
every input size. As upstream, the returned feature keeps the padded size (no crop).
"""

from __future__ import annotations

import math
import re

import torch
from torch import nn

from asisr.errors import UserError
from asisr.models.hat import (Mlp, WindowAttention, init_transformer_weights, reflect_index,
                              relative_position_index_sa, shifted_window_mask, window_partition, window_reverse)

#: Output channels of ``conv_before_upsample`` (hard-coded upstream, whatever ``embed_dim`` is).
OUT_DIM = 64
#: ``img_size`` of the official configs; only the stored ``attn_mask`` buffers depend on it.
DEFAULT_IMG_SIZE = 48


def mirror_index(n: int, total: int, device: torch.device | str | None) -> torch.Tensor:
    """Indices ``0..total-1`` of a symmetric extension (edge pixel repeated) of a length-``n`` axis.

    ``cat([x, flip(x)])[:total]`` for ``total <= 2n``, and keeps mirroring beyond. The period is
    a tensor, not ``2 * n``: a remainder by a symbolic int does not export (see ``reflect_index``).
    """
    i = torch.arange(total, device=device)
    period = torch.full_like(i[:1], 2) * n
    j = torch.remainder(i, period)
    return torch.where(j < n, j, period - 1 - j)


def window_test_pad(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """LTE ``test.py --window`` input padding: mirror bottom/right (edge repeated), 1..ws pixels.

    Always pads to ``(h // ws + 1) * ws`` (16 -> 24, 20 -> 24), so the model's own reflect pad
    then does nothing. Differs from upstream only where upstream's ``cat`` is too short
    (pad > h, inputs under ``ws / 2``): upstream returns a smaller tensor, this keeps mirroring.
    """
    h, w = x.shape[-2], x.shape[-1]
    hp = (h // window_size + 1) * window_size
    wp = (w // window_size + 1) * window_size
    x = x.index_select(-2, mirror_index(h, hp, x.device))
    return x.index_select(-1, mirror_index(w, wp, x.device))


def _drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth per sample (timm's DropPath), for training parity; identity in eval."""
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


class _Attention(WindowAttention):
    """hat's window attention plus the per-module ``relative_position_index`` buffer SwinIR stores."""

    def __init__(self, dim: int, ws: int, num_heads: int):
        super().__init__(dim, ws, num_heads)
        self.register_buffer("relative_position_index", relative_position_index_sa(ws))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x, self.relative_position_index, mask)


class _SwinBlock(nn.Module):
    """(S)W-MSA block, NHWC in and out: x + attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, num_heads: int, ws: int, shift: int, mlp_ratio: float, img_size: int,
                 drop_path: float):
        super().__init__()
        if img_size <= ws:  # upstream: a window covering the whole training image is not shifted
            ws, shift = img_size, 0
        self.ws, self.shift, self.drop_path = ws, shift, drop_path
        # Kept only so official state dicts load strictly; forward() uses the mask of the real size.
        self.register_buffer("attn_mask", shifted_window_mask(img_size, img_size, ws, shift, None)
                             if shift > 0 else None)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _Attention(dim, ws, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        y = self.norm1(x)
        if self.shift > 0:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = self.attn(window_partition(y, self.ws), mask if self.shift > 0 else None)
        y = window_reverse(y, self.ws, b, h, w)
        if self.shift > 0:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + _drop_path(y, self.drop_path, self.training)
        return x + _drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)


class _BasicLayer(nn.Module):
    def __init__(self, blocks: list[_SwinBlock]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)


class _RSTB(nn.Module):
    """Residual Swin transformer block: Swin blocks -> 3x3 conv, plus the group input; NHWC."""

    def __init__(self, dim: int, blocks: list[_SwinBlock]):
        super().__init__()
        self.residual_group = _BasicLayer(blocks)
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        y = x
        for block in self.residual_group.blocks:
            y = block(y, mask)
        # contiguous(): a channels-last strided input makes the conv take another kernel, whose
        # sums differ from upstream's (batch 1) by ~1e-6; NCHW reproduces upstream bit for bit.
        return self.conv(y.permute(0, 3, 1, 2).contiguous()).permute(0, 2, 3, 1) + x


class _PatchEmbed(nn.Module):
    """Patch size 1: flattening is a permute; only the norm has weights (``patch_embed.norm``)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)


class SwinIREncoder(nn.Module):
    """``(B, in_chans, h, w) -> (B, 64, hp, wp)``, ``hp``/``wp`` = h/w rounded up to a window multiple.

    The input is reflect-padded (edge not repeated) bottom/right as upstream's ``check_image_size``
    and the padding is not cropped, so a caller that wants upstream LIIF/LTE behaviour gets it;
    LTE's own test path pre-pads with :func:`window_test_pad` instead. Attention spans windows
    and shifts, so there is no finite receptive radius (``receptive_radius = None``): tiling is
    approximate. Where upstream's ``F.pad`` fails (pad >= size: inputs under about ws / 2) the
    gather keeps reflecting instead; h and w must be at least 2. ``drop_path_rate`` acts in
    training mode only, as upstream's stochastic depth.
    """

    def __init__(self, img_size: int = DEFAULT_IMG_SIZE, in_chans: int = 3, embed_dim: int = 180,
                 depths: tuple[int, ...] | list[int] = (6, 6, 6, 6, 6, 6),
                 num_heads: tuple[int, ...] | list[int] = (6, 6, 6, 6, 6, 6), window_size: int = 8,
                 mlp_ratio: float = 2.0, drop_path_rate: float = 0.1):
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError("depths and num_heads must have the same length")
        self.window_size = ws = window_size
        self.out_dim = OUT_DIM
        self.receptive_radius = None
        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, 1, 1)
        self.patch_embed = _PatchEmbed(embed_dim)
        # Upstream's stochastic-depth rule: rates rise linearly over all blocks of all layers.
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        layers, start = [], 0
        for depth, heads in zip(depths, num_heads):
            blocks = [_SwinBlock(embed_dim, heads, ws, 0 if j % 2 == 0 else ws // 2, mlp_ratio, img_size,
                                 dpr[start + j]) for j in range(depth)]
            layers.append(_RSTB(embed_dim, blocks))
            start += depth
        self.layers = nn.ModuleList(layers)
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1)
        self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, OUT_DIM, 3, 1, 1), nn.LeakyReLU(0.01))
        self.apply(init_transformer_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.shape
        ws = self.window_size
        hp = (h + ws - 1) // ws * ws
        wp = (w + ws - 1) // ws * ws
        # F.pad(mode='reflect') as a gather; identity when already a multiple, as upstream.
        x = x.index_select(2, reflect_index(h, hp, x.device)).index_select(3, reflect_index(w, wp, x.device))
        x = self.conv_first(x)
        mask = shifted_window_mask(hp, wp, ws, ws // 2, x.device).to(x.dtype)
        y = self.patch_embed.norm(x.permute(0, 2, 3, 1))
        for layer in self.layers:
            y = layer(y, mask)
        y = self.norm(y).permute(0, 3, 1, 2).contiguous()  # see _RSTB.forward
        return self.conv_before_upsample(self.conv_after_body(y) + x)


def _strip(shapes: dict[str, tuple[int, ...]], prefix: str) -> dict[str, tuple[int, ...]]:
    return {k[len(prefix):]: tuple(v) for k, v in shapes.items() if k.startswith(prefix)}


def _indices(sd: dict, pattern: str) -> list[int]:
    return sorted(int(m.group(1)) for k in sd if (m := re.fullmatch(pattern, k)))


def swinir_args_from_state(shapes: dict[str, tuple[int, ...]], prefix: str = "encoder.") -> dict:
    """Constructor kwargs of :class:`SwinIREncoder` read from a state dict's key names and shapes.

    Returns ``img_size, in_chans, embed_dim, depths, num_heads, window_size, mlp_ratio``:
    heads from the bias tables' last dim, the window from their ``(2ws - 1)^2`` rows, the MLP
    ratio from ``fc1``, ``img_size`` from a stored ``attn_mask`` (48 when none is stored).
    Raises ``UserError`` unless every parameter key and shape is a SwinIR encoder's (buffers may
    be absent; present ones must match).
    """
    sd = _strip(shapes, prefix)
    where = f" under prefix {prefix!r}" if prefix else ""
    blk = "layers.{}.residual_group.blocks.{}."
    try:
        embed_dim, in_chans = sd["conv_first.weight"][:2]
        layer_ids = _indices(sd, r"layers\.(\d+)\.conv\.weight")
        depths = [len(_indices(sd, rf"layers\.{i}\.residual_group\.blocks\.(\d+)\.norm1\.weight"))
                  for i in layer_ids]
        num_heads = [sd[blk.format(i, 0) + "attn.relative_position_bias_table"][1] for i in layer_ids]
        rows = sd[blk.format(0, 0) + "attn.relative_position_bias_table"][0]
        mlp_ratio = sd[blk.format(0, 0) + "mlp.fc1.weight"][0] / embed_dim
        _ = sd["conv_before_upsample.0.weight"]  # the LTE/LIIF head conv: absent in other SwinIR variants
    except (KeyError, ValueError, IndexError, TypeError, ZeroDivisionError):
        raise UserError(f"state dict{where} is not a SwinIR encoder (no conv_first / layers.*.conv / "
                        f"residual_group.blocks.* / conv_before_upsample keys)") from None
    window_size = (math.isqrt(rows) + 1) // 2
    if not layer_ids or (2 * window_size - 1) ** 2 != rows:
        raise UserError(f"state dict{where} is not a SwinIR encoder: no layers, or a relative position "
                        f"table of {rows} rows (not (2*ws-1)^2)")
    img_size = DEFAULT_IMG_SIZE
    masks = [v for k, v in sd.items() if k.endswith(".attn_mask")]
    if masks:
        img_size = math.isqrt(masks[0][0]) * window_size
    args = {"img_size": img_size, "in_chans": in_chans, "embed_dim": embed_dim, "depths": depths,
            "num_heads": num_heads, "window_size": window_size, "mlp_ratio": mlp_ratio}
    try:
        with torch.device("meta"):
            ref = SwinIREncoder(**args)
    except (ValueError, RuntimeError) as e:
        raise UserError(f"state dict{where} is not a SwinIR encoder: {e}") from None
    want = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    buffers = {k for k, _ in ref.named_buffers()}
    bad = sorted(k for k in set(want) | set(sd)
                 if k not in want or (k not in sd and k not in buffers) or (k in sd and want[k] != sd[k]))
    if bad:
        raise UserError(f"state dict{where} is not a SwinIR encoder with {args}: keys or shapes differ "
                        f"(first: {bad[0]})")
    return args
