"""HAT backbone of EQSR (upstream ``hat_ModMBFormer_Sim_arch.EQSR`` without its upsampler).

Structure (module names follow upstream so reference checkpoints load by prefix only):
``conv_first`` -> ``patch_embed.norm`` -> ``layers[i]`` (RHAG: ``residual_group`` =
``mbconv`` (ModMBConv, scale-modulated) + ``depth - 1`` hybrid attention blocks (W-MSA /
SW-MSA with relative position bias; the "Sim" variant has no CAB branch) + ``overlap_attn``
(OCAB), then a 3x3 ``conv`` and the group residual) -> ``norm`` -> ``conv_after_body`` +
shallow-feature residual.

Export notes: the input is reflect-padded (bottom/right, like upstream's test code) to a
multiple of the window size with an index gather computed from the input shape, the
shifted-window mask is computed in-graph from the padded size, and OCAB's overlapping
key/value windows are built from slices (no im2col), so one ONNX graph serves every
input size and batch.  The padding is cropped from the returned features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from asisr.models.scale_code import ModMBConv, ScaleCode

RGB_MEAN = (0.4488, 0.4371, 0.4040)


# ------------------------------------------------------------------------- geometry helpers

def reflect_index(n, total: int, device) -> torch.Tensor:
    """Indices ``0..total-1`` of a reflect padding (no edge repeat) of a length-``n`` axis.

    Equals ``F.pad(mode='reflect')`` whenever that is defined (pad < n), and keeps
    reflecting for larger pads; needs ``n >= 2``.
    """
    i = torch.arange(total, device=device)
    period = torch.full_like(i[:1], 2) * n - 2  # a tensor: remainder by a symbolic int does not export
    j = torch.remainder(i, period)
    return torch.where(j < n, j, period - j)


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * nH * nW, ws * ws, C), windows row-major."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, c)


def window_reverse(windows: torch.Tensor, ws: int, b: int, h: int, w: int) -> torch.Tensor:
    c = windows.shape[-1]
    x = windows.reshape(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


def shifted_window_mask(h: int, w: int, ws: int, shift: int, device) -> torch.Tensor:
    """Upstream's SW-MSA mask (nW, ws*ws, ws*ws) for a padded (h, w), built in-graph."""
    ih = torch.arange(h, device=device)
    iw = torch.arange(w, device=device)
    lab_h = (ih >= h - ws).long() + (ih >= h - shift).long()
    lab_w = (iw >= w - ws).long() + (iw >= w - shift).long()
    lab = (lab_h[:, None] * 3 + lab_w[None, :]).view(h // ws, ws, w // ws, ws)
    lab = lab.permute(0, 2, 1, 3).reshape(-1, ws * ws)
    diff = lab[:, None, :] - lab[:, :, None]
    return torch.where(diff != 0, torch.full_like(diff, -100, dtype=torch.float32),
                       torch.zeros_like(diff, dtype=torch.float32))


def relative_position_index_sa(ws: int) -> torch.Tensor:
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += ws - 1
    rel[:, :, 1] += ws - 1
    rel[:, :, 0] *= 2 * ws - 1
    return rel.sum(-1)


def relative_position_index_oca(ws: int, ows: int) -> torch.Tensor:
    ori = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
    ext = torch.stack(torch.meshgrid(torch.arange(ows), torch.arange(ows), indexing="ij")).flatten(1)
    rel = (ext[:, None, :] - ori[:, :, None]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += ws - ows + 1
    rel[:, :, 1] += ws - ows + 1
    rel[:, :, 0] *= ws + ows - 1
    return rel.sum(-1)


def overlapping_windows(x: torch.Tensor, ws: int, ows: int) -> torch.Tensor:
    """OCAB key/value windows: (B, H, W, C) -> (B * nH * nW, ows * ows, C).

    Same as ``nn.Unfold(ows, stride=ws, padding=(ows - ws) // 2)`` + upstream's rearrange,
    built from slices: window ``a`` covers padded rows ``a*ws .. a*ws + ows - 1`` = the
    ``ws`` rows of block ``a`` plus the first ``ows - ws`` rows of block ``a + 1``.
    """
    b, h, w, c = x.shape
    p = (ows - ws) // 2
    extra = ows - ws
    x = F.pad(x, (0, 0, p, ws - p, p, ws - p))  # (B, h + ws, w + ws, C), zeros like Unfold
    nh, nw = h // ws, w // ws
    wp = w + ws
    top = x[:, :h].reshape(b, nh, ws, wp, c)
    nxt = x[:, ws:ws + h].reshape(b, nh, ws, wp, c)[:, :, :extra]
    r = torch.cat([top, nxt], dim=2)  # (B, nh, ows, wp, C)
    left = r[:, :, :, :w].reshape(b, nh, ows, nw, ws, c)
    nxt = r[:, :, :, ws:ws + w].reshape(b, nh, ows, nw, ws, c)[:, :, :, :, :extra]
    r = torch.cat([left, nxt], dim=4)  # (B, nh, ows, nw, ows, C)
    return r.permute(0, 1, 3, 2, 4, 5).reshape(-1, ows * ows, c)


# ------------------------------------------------------------------------------- blocks

def init_transformer_weights(m: nn.Module) -> None:
    """Upstream's init for the window transformers (truncated-normal linears, unit LayerNorms),
    so training from scratch starts where upstream's does."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class WindowAttention(nn.Module):
    def __init__(self, dim: int, ws: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.ws = ws
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * ws - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rpi: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        bw, n, c = x.shape
        qkv = self.qkv(x).reshape(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = q @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[rpi.reshape(-1)].reshape(n, n, -1).permute(2, 0, 1)
        attn = attn + bias.unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(-1, nw, self.num_heads, n, n) + mask[None, :, None]
            attn = attn.view(-1, self.num_heads, n, n)
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(bw, n, c)
        return self.proj(x)


class HAB(nn.Module):
    """(S)W-MSA block of the "Sim" HAT variant: LN -> window attention -> LN -> MLP."""

    def __init__(self, dim: int, num_heads: int, ws: int, shift: int, mlp_ratio: float):
        super().__init__()
        self.ws, self.shift = ws, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, ws, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, rpi: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        y = self.norm1(x)
        if self.shift > 0:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = self.attn(window_partition(y, self.ws), rpi, mask if self.shift > 0 else None)
        y = window_reverse(y, self.ws, b, h, w)
        if self.shift > 0:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + y
        return x + self.mlp(self.norm2(x))


class OCAB(nn.Module):
    """Overlapping cross-attention block (queries: ws x ws windows; keys/values: ows x ows)."""

    def __init__(self, dim: int, ws: int, overlap_ratio: float, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.dim, self.ws, self.num_heads = dim, ws, num_heads
        self.ows = int(ws * overlap_ratio) + ws
        self.scale = (dim // num_heads) ** -0.5
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, dim * 3)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((ws + self.ows - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, rpi: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        nh, d = self.num_heads, c // self.num_heads
        qkv = self.qkv(self.norm1(x))
        q = window_partition(qkv[..., :c], self.ws)  # (bw, nq, C)
        kv = overlapping_windows(qkv[..., c:], self.ws, self.ows)  # (bw, n, 2C)
        bw, nq, _ = q.shape
        n = kv.shape[1]
        q = q.reshape(bw, nq, nh, d).permute(0, 2, 1, 3) * self.scale
        k = kv[..., :c].reshape(bw, n, nh, d).permute(0, 2, 1, 3)
        v = kv[..., c:].reshape(bw, n, nh, d).permute(0, 2, 1, 3)
        attn = q @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[rpi.reshape(-1)].reshape(nq, n, -1).permute(2, 0, 1)
        attn = (attn + bias.unsqueeze(0)).softmax(dim=-1)
        y = (attn @ v).transpose(1, 2).reshape(bw, nq, c)
        x = self.proj(window_reverse(y, self.ws, b, h, w)) + x
        return x + self.mlp(self.norm2(x))


class AttenBlocks(nn.Module):
    def __init__(self, dim, depth, num_heads, ws, overlap_ratio, mlp_ratio, code_dim, se, se_shrinkage):
        super().__init__()
        self.mbconv = ModMBConv(dim, code_dim, se=se, shrinkage=se_shrinkage)
        self.blocks = nn.ModuleList([
            HAB(dim, num_heads, ws, 0 if i % 2 == 0 else ws // 2, mlp_ratio) for i in range(depth - 1)])
        self.overlap_attn = OCAB(dim, ws, overlap_ratio, num_heads, mlp_ratio)


class RHAG(nn.Module):
    """Residual hybrid attention group; NHWC in and out."""

    def __init__(self, dim, depth, num_heads, ws, overlap_ratio, mlp_ratio, code_dim, se, se_shrinkage):
        super().__init__()
        self.residual_group = AttenBlocks(dim, depth, num_heads, ws, overlap_ratio, mlp_ratio, code_dim, se,
                                          se_shrinkage)
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1)

    def forward(self, x, code, rpi_sa, rpi_oca, mask):
        g = self.residual_group
        y = g.mbconv(x.permute(0, 3, 1, 2), code).permute(0, 2, 3, 1)
        for blk in g.blocks:
            y = blk(y, rpi_sa, mask)
        y = g.overlap_attn(y, rpi_oca)
        return self.conv(y.permute(0, 3, 1, 2)).permute(0, 2, 3, 1) + x


class _PatchEmbed(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)


class HATBackbone(nn.Module):
    """EQSR's HAT feature extractor: ``(lr (B,3,h,w) in [0,1], scale (B,2)) -> (B, C, h, w)``."""

    def __init__(self, embed_dim: int = 180, depths=(5, 5, 5, 5, 5, 5), num_heads=(6, 6, 6, 6, 6, 6),
                 window_size: int = 16, overlap_ratio: float = 0.5, mlp_ratio: float = 2.0,
                 scale_code: str = "portable", scale_code_freqs: int | None = None, se: bool = True,
                 se_shrinkage: float = 0.25, in_chans: int = 3, img_range: float = 1.0):
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError("depths and num_heads must have the same length")
        self.embed_dim = embed_dim
        self.window_size = ws = window_size
        self.shift_size = ws // 2
        self.img_range = img_range
        self.scale_code = ScaleCode(scale_code, scale_code_freqs)
        ows = int(ws * overlap_ratio) + ws
        self.register_buffer("relative_position_index_SA", relative_position_index_sa(ws))
        self.register_buffer("relative_position_index_OCA", relative_position_index_oca(ws, ows))
        self.register_buffer("rgb_mean", torch.tensor(RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, 1, 1)
        self.patch_embed = _PatchEmbed(embed_dim)
        self.layers = nn.ModuleList([
            RHAG(embed_dim, d, nh, ws, overlap_ratio, mlp_ratio, self.scale_code.dim, se, se_shrinkage)
            for d, nh in zip(depths, num_heads)])
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1)
        self.apply(init_transformer_weights)

    def forward(self, lr: torch.Tensor, scale: torch.Tensor, code: torch.Tensor | None = None) -> torch.Tensor:
        """``code`` overrides the scale vector (tests feed upstream's exact one)."""
        b, _, h, w = lr.shape
        if code is None:
            code = self.scale_code(scale, h)
        ws = self.window_size
        hp = (h + ws - 1) // ws * ws
        wp = (w + ws - 1) // ws * ws
        x = (lr - self.rgb_mean) * self.img_range
        x = x.index_select(2, reflect_index(h, hp, lr.device)).index_select(3, reflect_index(w, wp, lr.device))
        x = self.conv_first(x)
        mask = shifted_window_mask(hp, wp, ws, self.shift_size, lr.device).to(x.dtype)
        y = self.patch_embed.norm(x.permute(0, 2, 3, 1))
        for layer in self.layers:
            y = layer(y, code, self.relative_position_index_SA, self.relative_position_index_OCA, mask)
        y = self.norm(y).permute(0, 3, 1, 2)
        y = self.conv_after_body(y) + x
        return y[:, :, :h, :w].contiguous()
