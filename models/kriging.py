"""Neural Kriging Upsampler (upstream ``DSF``): nearest LR feature + involution transformers.

For every output pixel (the outer product of ``rows`` x ``cols``, in LR pixel units):

1. the nearest LR feature and that pixel's centre; the relative offset ``2 * (p - centre)``
   per axis (upstream: ``(coord - q_coord) * (W, H)`` in normalised units), sin/cos-encoded;
2. ``head``: 1x1 conv of [feature, offset code] -> ReLU -> ``width`` channels;
3. two involution transformer blocks on the HR grid: each position's 3x3 kernel
   (``width / 8`` groups of 8 channels) is generated from content by a 3x3 conv + 1x1 conv
   and multiplied by the kriging (RBF) weight ``exp(-0.5 d^2 / l^2)``, ``d`` the distance
   (in units of half an LR pixel) between the query and the LR centre that the 3x3 HR
   neighbour uses; FFN with ECA channel attention (optional; it pools globally);
4. skip from the head, ReLU -> 1x1 conv -> RGB, plus the RGB mean.

Two options that upstream does not have (off for upstream checkpoints, on for new
``eqsr_light`` models): ``head_kernel=3`` lets the head read the 3x3 LR neighbourhood of the
nearest feature (a 3x3 conv at LR resolution, LIIF's feature unfolding), and ``lr_skip`` adds a
bilinear interpolation of a learned LR-resolution RGB map (1x1 conv of the features) to the
output. Upstream's only image path is the HR branch, which a short training run leaves with a
visible low-frequency colour error; the skip gives the branch a smooth base to refine.

Everything separable is computed per row or per column: the offset encoding enters the
head as ``W_y enc(row) + W_x enc(col)`` (no (B, 2F, H, W) tensor), the feature part of
the head is applied at LR resolution before the gather, and the RBF weights are sums of a
row and a column term.  The involution loops over the 9 offsets with shifted views (no
9x-channel unfold at HR resolution).  Upstream's involution is a CUDA kernel; this is the
same arithmetic in plain tensor ops.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from asisr.models.sampling import bilinear_axis
from asisr.models.scale_code import OffsetCode, snap_hr_size

RGB_MEAN = (0.4488, 0.4371, 0.4040)


class ChannelLayerNorm(nn.Module):
    """Upstream ``LayerNorm(dim, 'WithBias')`` on NCHW (over channels, eps 1e-5)."""

    def __init__(self, dim: int):
        super().__init__()
        self.body = nn.Module()
        self.body.weight = nn.Parameter(torch.ones(dim))
        self.body.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(1, keepdim=True)
        xc = x - mu
        var = xc.square().mean(1, keepdim=True)
        return xc / torch.sqrt(var + 1e-5) * self.body.weight[:, None, None] + self.body.bias[:, None, None]


class ECA(nn.Module):
    """Upstream ``ECA_layer`` (global mean -> Conv1d over channels, no sigmoid) -> ``x * y``."""

    def __init__(self, channels: int):
        super().__init__()
        k = int(abs(math.log(channels, 2) + 1) / 2)
        k = k if k % 2 else k + 1
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=(k - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x.mean(dim=(2, 3)).unsqueeze(1)).squeeze(1)
        return x * y[:, :, None, None]


class FeedForward(nn.Module):
    def __init__(self, dim: int, eca: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim * 2, 1)
        self.conv2 = nn.Conv2d(dim * 2, dim, 1)
        self.CA = ECA(dim) if eca else None

    def forward(self, x):
        x = self.conv2(F.gelu(self.conv1(x)))
        return self.CA(x) if self.CA is not None else x


class Involution(nn.Module):
    """3x3 involution whose per-position kernels are scaled by the kriging weights."""

    def __init__(self, channels: int, group_channels: int = 8, reduction: int = 4):
        super().__init__()
        if channels % group_channels:
            raise ValueError(f"upsampler width {channels} is not a multiple of {group_channels}")
        self.groups = channels // group_channels
        self.seblock = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 3, padding=1), nn.ReLU(),
            nn.Conv2d(channels // reduction, 9 * self.groups, 1))

    def forward(self, x: torch.Tensor, factors: list[torch.Tensor]) -> torch.Tensor:
        b, c, h, w = x.shape
        g = self.groups
        kern = self.seblock(x).view(b, g, 9, h, w)
        xp = F.pad(x, (1, 1, 1, 1)).view(b, g, c // g, h + 2, w + 2)
        out = None
        for k in range(9):
            kh, kw = divmod(k, 3)
            wk = (kern[:, :, k] * factors[k]).unsqueeze(2)  # (B, G, 1, h, w)
            term = xp[:, :, :, kh:kh + h, kw:kw + w] * wk
            out = term if out is None else out + term
        return out.reshape(b, c, h, w)


class InvoTransformerBlock(nn.Module):
    def __init__(self, dim: int, eca: bool):
        super().__init__()
        self.norm1 = ChannelLayerNorm(dim)
        self.attn = Involution(dim)
        self.norm2 = ChannelLayerNorm(dim)
        self.ffn = FeedForward(dim, eca)
        self.conv1 = nn.Conv2d(dim, dim, 1)
        self.conv2 = nn.Conv2d(dim, dim, 1)

    def forward(self, x, factors):
        x = x + self.conv2(self.attn(self.conv1(self.norm1(x)), factors))
        return x + self.ffn(self.norm2(x))


class RBF(nn.Module):
    def __init__(self, lengthscale: float = 3.0):
        super().__init__()
        self.lengthscale = nn.Parameter(torch.tensor(float(lengthscale)))


class KrigingUpsampler(nn.Module):
    """``(features (B,C,h,w), scale (B,2), rows (B,H), cols (B,W)) -> rgb (B,3,H,W)``.

    ``offset_code="upstream"`` rebuilds upstream's float32 normalised coordinates from
    ``rows``/``cols`` and the scale (see ``scale_code``), picks the nearest LR pixel the way
    ``grid_sample(mode='nearest', align_corners=False)`` does (round half to even of
    ``(y + 1) * h / 2 - 0.5``) and encodes with 40 frequencies; bit-compatible with the
    reference for whole-image calls.  ``"portable"`` uses ``floor(rows)`` (LR pixel ``k``
    spans ``[k, k+1)``; shift-invariant, so tiles agree exactly) and a few frequencies.
    """

    def __init__(self, in_dim: int, width: int = 256, offset_code: str = "portable",
                 offset_freqs: int | None = None, eca: bool = True, lengthscale: float = 3.0,
                 img_range: float = 1.0, head_kernel: int = 1, lr_skip: bool = False):
        super().__init__()
        if head_kernel not in (1, 3):
            raise ValueError(f"head_kernel must be 1 or 3, got {head_kernel}")
        self.offset = OffsetCode(offset_code, offset_freqs)
        self.in_dim, self.width, self.img_range = in_dim, width, img_range
        self.head_kernel = head_kernel
        self.act = nn.ReLU()
        if head_kernel == 1:  # upstream layout: one 1x1 conv over [feature, offset code]
            self.head = nn.Sequential(nn.Conv2d(in_dim + self.offset.dim, width, 1), self.act)
            self.head_lr = None
        else:  # feature term read from the 3x3 LR neighbourhood; offset code as before
            self.head = nn.Sequential(nn.Conv2d(self.offset.dim, width, 1), self.act)
            self.head_lr = nn.Conv2d(in_dim, width, 3, padding=1, bias=False)
        self.inv1 = InvoTransformerBlock(width, eca)
        self.inv2 = InvoTransformerBlock(width, eca)
        self.to_rgb = nn.Sequential(self.act, nn.Conv2d(width, 3, 1))
        self.lr_skip = nn.Conv2d(in_dim, 3, 1) if lr_skip else None
        if lr_skip:  # start as the smooth base alone; the HR branch learns the residual
            nn.init.zeros_(self.to_rgb[1].weight)
            nn.init.zeros_(self.to_rgb[1].bias)
        self.rbf1 = RBF(lengthscale)
        self.register_buffer("rgb_mean", torch.tensor(RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        self._enc_x = self.offset.channel_index(0)  # head input channels (after the features) for x
        self._enc_y = self.offset.channel_index(1)

    def _head_parts(self, features: torch.Tensor):
        """(LR-resolution feature term (B, width, h, w), offset-code weight (width, n), bias)."""
        weight = self.head[0].weight[:, :, 0, 0]
        if self.head_lr is not None:
            return self.head_lr(features), weight, self.head[0].bias
        cf = features.shape[1]
        return F.conv2d(features, weight[:, :cf, None, None]), weight[:, cf:], self.head[0].bias

    # ---------------------------------------------------------------- per-axis geometry
    def _axis(self, pos: torch.Tensor, lr_len, scale_axis: torch.Tensor):
        """One axis: nearest LR index (B,Q), and (u, c, m) with offset ``(u - c) * m``.

        Distances to a neighbour's centre ``c'`` are ``(c' - u) * m`` (upstream units:
        ``m = lr_len`` on normalised coordinates, i.e. 2 per LR pixel).
        """
        pos = pos.float()
        if self.offset.mode == "upstream":
            hr = snap_hr_size(scale_axis.float() * lr_len)  # (B, 1)
            i = torch.round(pos * hr / lr_len - 0.5)  # HR pixel index of each query
            u = (2.0 / hr) * i + (1.0 - hr) / hr  # upstream make_coord, float32 op for op
            idx = torch.round((u + 1.0) * (lr_len / 2.0) - 0.5)  # grid_sample nearest
            idx = torch.clamp(idx, min=0.0, max=lr_len - 1.0)
            lrf = torch.ones_like(hr) * lr_len
            c = (2.0 / lrf) * idx + (1.0 - lrf) / lrf
            return idx.long(), u, c, lr_len
        idx = torch.clamp(torch.floor(pos), min=0.0, max=lr_len - 1.0)
        return idx.long(), pos, idx + 0.5, 2.0

    @staticmethod
    def _neighbour_dist2(u: torch.Tensor, c: torch.Tensor, m) -> torch.Tensor:
        """(B, 3, Q): squared distance from query q to the centre used by HR neighbour q-1, q, q+1.

        Out-of-grid neighbours get centre 0 (upstream's zero padding of ``q_coord``); their
        features are zero-padded in the involution, so the value does not matter.
        """
        q = u.shape[1]
        cp = F.pad(c, (1, 1))
        return torch.stack([((cp[:, k:k + q] - u) * m).square() for k in range(3)], dim=1)

    def forward(self, features: torch.Tensor, scale: torch.Tensor, rows: torch.Tensor,
                cols: torch.Tensor) -> torch.Tensor:
        h, w = features.shape[2:]
        iy, uy, cy, my = self._axis(rows, h, scale[:, 0:1])
        ix, ux, cx, mx = self._axis(cols, w, scale[:, 1:2])

        # head = ReLU(W_f feat[nearest] + W_y enc(row offset) + W_x enc(col offset) + bias)
        lr_proj, we, bias = self._head_parts(features)  # feature term at LR resolution
        gathered = _gather(lr_proj, iy, ix)
        # geometry stays float32 (coordinates need it); the codes join the feature dtype
        enc_y = self.offset.axis((uy - cy) * my).to(features.dtype)  # (B, n, Hq)
        enc_x = self.offset.axis((ux - cx) * mx).to(features.dtype)  # (B, n, Wq)
        ey = torch.einsum("on,bnq->boq", we[:, self._enc_y], enc_y)
        ex = torch.einsum("on,bnq->boq", we[:, self._enc_x], enc_x) + bias[None, :, None]
        x = self.act(gathered + ey[:, :, :, None] + ex[:, :, None, :])

        # kriging weights of the 3x3 HR neighbourhood: exp(-0.5 (dx^2 + dy^2) / l^2)
        dy = self._neighbour_dist2(uy, cy, my)  # (B, 3, Hq)
        dx = self._neighbour_dist2(ux, cx, mx)  # (B, 3, Wq)
        inv_l2 = -0.5 / self.rbf1.lengthscale.square()
        factors = [torch.exp((dx[:, kw, None, :] + dy[:, kh, :, None]) * inv_l2).unsqueeze(1).to(features.dtype)
                   for kh in range(3) for kw in range(3)]  # 9 x (B, 1, Hq, Wq)

        skip = x
        x = self.act(self.inv1(x, factors))
        x = self.act(self.inv2(x, factors))
        out = self.to_rgb(x + skip) / self.img_range + self.rgb_mean
        if self.lr_skip is not None:
            out = out + _bilinear(self.lr_skip(features), rows, cols)
        return out


def _gather(lr_map: torch.Tensor, iy: torch.Tensor, ix: torch.Tensor) -> torch.Tensor:
    """``lr_map[b, :, iy[b, i], ix[b, j]]`` -> (B, C, Hq, Wq): one row gather, no HR-size index maps."""
    b, c, h, w = lr_map.shape
    flat = (torch.arange(b, device=iy.device)[:, None, None] * h + iy[:, :, None]) * w + ix[:, None, :]
    out = lr_map.permute(0, 2, 3, 1).reshape(b * h * w, c).index_select(0, flat.reshape(-1))
    return out.view(b, iy.shape[1], ix.shape[1], c).permute(0, 3, 1, 2)


def _bilinear(lr_map: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Separable bilinear interpolation of an LR map at the query grid (reads 1 LR pixel around each query)."""
    _, _, h, w = lr_map.shape
    y0, y1, fy = bilinear_axis(rows.float(), h)
    x0, x1, fx = bilinear_axis(cols.float(), w)
    fy = fy.to(lr_map.dtype)[:, None, :, None]
    fx = fx.to(lr_map.dtype)[:, None, None, :]
    top = _gather(lr_map, y0, x0) * (1 - fx) + _gather(lr_map, y0, x1) * fx
    bottom = _gather(lr_map, y1, x0) * (1 - fx) + _gather(lr_map, y1, x1) * fx
    return top * (1 - fy) + bottom * fy
