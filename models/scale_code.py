"""Scale codes and relative-offset encodings for EQSR.

Two families, selected per model:

``"upstream"`` (compatible with the EQSR reference weights)
    The backbone's scale vector is ``pos_enc(cell_h)`` with ``cell_h = 2 / H_hr`` and the
    upsampler encodes ``2 * (p - centre)`` (LR pixel units) of the query relative to its
    nearest LR centre, both with 40 sin/cos frequencies ``2^i * pi * x / 10`` computed in
    float32.  Above about ``i = 20`` the arguments exceed ``2^24`` ulps of their input, so
    those channels are a deterministic but *bit-sensitive* function of the float32 input:
    a one-ulp change of ``cell_h`` or of a coordinate changes them completely.  To make
    them equal to the reference code we rebuild upstream's float32 values from our inputs:

    * ``cell_h``: ``H_hr = h * s_h`` snapped to the nearest integer when within 1e-3 of it
      (whole-image calls), then ``2 / H_hr`` in float32, exactly as upstream.
    * coordinates: the HR row index ``i = round(rows * H_hr / h - 0.5)`` and upstream's
      ``make_coord`` formula ``fl(fl(2/H) * i) + fl(-1 + 1/H)`` (see ``upstream_axis``).

    This is tile-dependent by construction (upstream's own flaw: its scale vector depends
    on the HR size of the call, not on the scale), and only the low frequencies
    (``i <= ~16``) carry information that survives a change of backend precision.

``"portable"`` (default for new models)
    Depends only on the per-axis scale (backbone) or on the sub-pixel offset (upsampler),
    with a few frequencies whose arguments stay below ~26 rad, so float32 and float16
    give the same code to fp16 resolution, on any backend, and tiles do not change it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

UPSTREAM_FREQS = 40
UPSTREAM_CODE_DIM = 1 + 2 * UPSTREAM_FREQS  # 81


def upstream_pos_enc(x: torch.Tensor, num_frequencies: int = UPSTREAM_FREQS) -> torch.Tensor:
    """Upstream ``pos_enc`` along dim 1: ``[x, sin(f0 x), cos(f0 x), sin(f1 x), ...]``.

    ``x`` is (B, K, ...) and the result (B, K * (1 + 2F), ...), channel order as upstream
    (for K = 2: x0, x1, sin f0 x0, sin f0 x1, cos f0 x0, cos f0 x1, ...).  The op order
    (multiply by the float constant ``2^i * pi``, then divide by 10) is upstream's, so the
    float32 arguments are bit-identical to the reference implementation.
    """
    parts = [x]
    for i in range(num_frequencies):
        arg = x * ((2 ** i) * math.pi) / 10
        parts.append(torch.sin(arg))
        parts.append(torch.cos(arg))
    return torch.cat(parts, dim=1)


def portable_enc(x: torch.Tensor, num_frequencies: int) -> torch.Tensor:
    """``[x, sin(pi 2^k x), cos(pi 2^k x)]_k`` along dim 1 for ``|x| <= 1``; fp16-safe for k <= 3."""
    parts = [x]
    for k in range(num_frequencies):
        arg = x * (math.pi * 2 ** k)
        parts.append(torch.sin(arg))
        parts.append(torch.cos(arg))
    return torch.cat(parts, dim=1)


def snap_hr_size(hr: torch.Tensor, tol: float = 1e-3) -> torch.Tensor:
    """An HR length ``h * s`` that is within ``tol`` of an integer is that integer."""
    r = torch.round(hr)
    return torch.where((hr - r).abs() < tol, r, hr)


def upstream_cell(scale_axis: torch.Tensor, lr_len) -> torch.Tensor:
    """Upstream's ``cell`` along one axis: ``2 / H_hr`` with ``H_hr = snap(lr_len * s)``."""
    return 2.0 / snap_hr_size(scale_axis * lr_len)


class ScaleCode(nn.Module):
    """Scale vector fed to every ``Conv2DMod``: ``(lr_h, scale (B,2)) -> (B, dim)``."""

    def __init__(self, mode: str = "portable", num_frequencies: int | None = None):
        super().__init__()
        if mode not in ("upstream", "portable"):
            raise ValueError(f"scale_code must be 'upstream' or 'portable', not {mode!r}")
        self.mode = mode
        if mode == "upstream":
            self.num_frequencies = UPSTREAM_FREQS if num_frequencies is None else num_frequencies
            self.dim = 1 + 2 * self.num_frequencies
        else:
            self.num_frequencies = 4 if num_frequencies is None else num_frequencies
            self.dim = 2 * (1 + 2 * self.num_frequencies)

    def forward(self, scale: torch.Tensor, lr_h) -> torch.Tensor:
        scale = scale.float()
        if self.mode == "upstream":
            # Upstream uses cell[:, 0] = 2 / H_hr of the whole call (height only).
            return upstream_pos_enc(upstream_cell(scale[:, 0:1], lr_h), self.num_frequencies)
        # 1/s per axis lies in (0, 1] for upscaling: bounded arguments (fp16-safe), tile-independent.
        return portable_enc(1.0 / scale, self.num_frequencies)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, dim={self.dim}"


class OffsetCode(nn.Module):
    """Encoding of a query's offset from its nearest LR centre, per axis (separable).

    Input ``rel`` (B, Q) = ``2 * (p - centre)`` in [-1, 1] for one axis; output (B, n, Q)
    with ``n = 1 + 2F`` channels for that axis.  The full code of a query is upstream's
    ``pos_enc`` of (x, y): channel ``2j`` is the x part, ``2j + 1`` the y part
    (``channel_index``); the upsampler applies the head's columns per axis.
    """

    def __init__(self, mode: str = "portable", num_frequencies: int | None = None):
        super().__init__()
        if mode not in ("upstream", "portable"):
            raise ValueError(f"offset_code must be 'upstream' or 'portable', not {mode!r}")
        self.mode = mode
        default = UPSTREAM_FREQS if mode == "upstream" else 4
        self.num_frequencies = default if num_frequencies is None else num_frequencies
        self.dim = 2 * (1 + 2 * self.num_frequencies)  # both axes

    def axis(self, rel: torch.Tensor) -> torch.Tensor:
        x = rel.unsqueeze(1)
        if self.mode == "upstream":
            return upstream_pos_enc(x, self.num_frequencies)
        return portable_enc(x, self.num_frequencies)

    def channel_index(self, axis: int) -> list[int]:
        """Channels of the full (x, y) encoding that belong to ``axis`` (0 = x, 1 = y), in order."""
        return [2 * j + axis for j in range(1 + 2 * self.num_frequencies)]

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, dim={self.dim}"


# ----------------------------------------------------------------------------------------
# Scale-modulated convolution blocks shared by the HAT and light backbones.


def channel_layer_norm(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    """LayerNorm over the channels of an NCHW tensor (upstream applies it to tokens)."""
    return norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class Conv2DMod(nn.Module):
    """StyleGAN2 modulated 3x3 convolution (upstream ``Conv2DMod``, demodulated, no bias).

    Upstream builds per-sample weights ``W * (style + 1)`` and runs a grouped convolution.
    For ``groups=1`` that equals, exactly in real arithmetic,
    ``conv(x * (style + 1), W) * rsqrt(sum_{i,k} W[o,i,k]^2 (style_i + 1)^2 + eps)``:
    per-input-channel scaling, one static convolution, per-output-channel scaling.  This
    form exports to ONNX with a batch of per-sample scales and keeps one static weight.
    """

    def __init__(self, in_ch: int, out_ch: int, style_dim: int, kernel: int = 3, demod: bool = True,
                 eps: float = 1e-8):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_ch, in_ch, kernel, kernel))
        nn.init.kaiming_normal_(self.weight, a=0, mode="fan_in", nonlinearity="leaky_relu")
        self.to_style = nn.Linear(style_dim, in_ch)
        self.demod = demod
        self.eps = eps
        self.padding = kernel // 2

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        s = self.to_style(code.to(self.to_style.weight.dtype)) + 1.0  # (B, in)
        y = F.conv2d(x * s[:, :, None, None], self.weight, padding=self.padding)
        if self.demod:
            w2 = self.weight.square().sum(dim=(2, 3))  # (out, in)
            d = torch.rsqrt(s.square() @ w2.t() + self.eps)  # (B, out)
            y = y * d[:, :, None, None]
        return y


class _SpatialMean(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class SqueezeExcitation(nn.Module):
    """Upstream MBConv squeeze-excitation (global mean -> Linear -> SiLU -> Linear -> sigmoid)."""

    def __init__(self, dim: int, shrinkage: float = 0.25):
        super().__init__()
        hidden = int(dim * shrinkage)
        self.gate = nn.Sequential(_SpatialMean(), nn.Linear(dim, hidden, bias=False), nn.SiLU(),
                                  nn.Linear(hidden, dim, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)[:, :, None, None]


class ModMBConv(nn.Module):
    """Scale-modulated MBConv at the start of every group (upstream ``ModMBConv``).

    ``y = net1(x); y = y + ModConv(GELU(LN(y)), code); y = y + net3(GELU(LN(y)))`` where
    ``net3`` is squeeze-excitation (global pooling; optional) followed by a 1x1 conv.
    NCHW in and out.  Without SE the block is local (receptive-field radius 1).
    """

    def __init__(self, dim: int, style_dim: int, se: bool = True, shrinkage: float = 0.25):
        super().__init__()
        self.net1 = nn.Conv2d(dim, dim, 1)
        self.norm1 = nn.Sequential(nn.LayerNorm(dim), nn.GELU())
        self.net2 = Conv2DMod(dim, dim, style_dim)
        self.norm2 = nn.Sequential(nn.LayerNorm(dim), nn.GELU())
        self.net3 = nn.Sequential(SqueezeExcitation(dim, shrinkage) if se else nn.Identity(), nn.Conv2d(dim, dim, 1))

    @staticmethod
    def _norm_act(x: torch.Tensor, seq: nn.Sequential) -> torch.Tensor:
        return seq[1](channel_layer_norm(x, seq[0]))

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        y = self.net1(x)
        y = y + self.net2(self._norm_act(y, self.norm1), code)
        return y + self.net3(self._norm_act(y, self.norm2))
