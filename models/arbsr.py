"""ArbRCAN (Wang et al., ICCV 2021, "Learning A Single Network for Scale-Arbitrary Super-Resolution").

The released model (LongguangWang/ArbSR, ``model/arbrcan.py``) is RCAN with ArbSR's two
plug-ins, split here into asisr's stages:

* backbone: RCAN (``head``, residual groups of RCABs with channel attention, a last conv and a
  global skip), with a scale-aware adaption ``SA_adapt`` after every residual group:
  ``x + SA_conv(x) * mask(x)``. ``SA_conv`` is a 3x3 conv whose kernel is a softmax-routed mix
  of four expert kernels, routed by ``[1/s_h, 1/s_w]``; ``mask`` is a small conv branch
  through a 2x average pool and a bilinear 2x upsample.
* upsampler: ``SA_upsample``: per output pixel, an embedding of ``[1/s_w, 1/s_h, coor_h,
  coor_w]`` (the pixel's phase inside its LR cell) gives a sigmoid routing of four
  compress / expand expert pairs and a learned offset (LR pixels); the features are sampled
  bilinearly (zero padding) at the pixel's LR position plus the offset, and the routed
  ``expand @ compress`` is added to them. Then RCAN's tail conv and the mean shift.

Export form of the scale-dependent convolutions. The official code fuses the expert kernels
into one kernel per call (``sum_e r_e W_e``) and then convolves. A convolution is linear in its
kernel, so ``conv(x, sum_e r_e W_e) = sum_e r_e conv(x, W_e)``: here the four experts are one
static-weight conv to ``4C`` channels and the routing mixes the outputs. This is exact (up to
float summation order) and keeps per-sample scales in one batch of any size: a fused kernel is
per sample, and an in-graph fusion for a dynamic batch would need a grouped conv with one group
per sample, which ONNX cannot express (a Conv's group count is a constant), or a loop. Every
conv weight stays a constant of the graph, which ONNX Runtime and TensorRT pre-pack. The price
is 4x the multiply-adds of the ten ``SA_conv`` layers, 7 % of the backbone: measured here
(full-size backbone, 64x64 LR, ONNX Runtime, 1 thread) 790-820 ms against 700-730 ms for a
fused graph that only takes batch 1 (an earlier measurement of an in-graph fused form had it
the other way round, 1594 ms static vs 2228 ms fused). The upsampler's experts are mixed the
same way: compress with all four experts, mix by the routing, then expand the routing-weighted
codes with all four (C^2 multiply-adds per pixel, vs 1.25 C^2 for the official per-pixel matrices).

Conventions (``docs/arbsr.md``; fixture notes in ``shared/README.md``):

* ``grid_align_corners`` (default on). The official sampler normalises the grid for
  ``align_corners=True`` but calls ``grid_sample`` without the argument; the weights were
  trained under PyTorch 1.1, where that meant True, so asisr samples LR position ``p``. Off
  reproduces the official code as it runs on PyTorch >= 1.3, which samples
  ``p * w / (w - 1) - 0.5``: that depends on the whole feature map's size, so with it off the
  upsampler's output tiles are only approximate (the descriptor's ``upsampler_untileable`` says
  so, and the runtime's tiling warning quotes it).
* Odd sizes. The mask's ``AvgPool2d(2)`` + ``Upsample(2)`` need an even LR size (the official
  test crops the input). Here the pooled branch replicates its last row / column before the
  pool, which equals ``AvgPool2d(2, ceil_mode=True)`` (the last window averages the pixels it
  has), and the upsampled map is built at the LR size (its first h x w). Even sizes are unchanged.
* The sampler is explicit taps and gathers (no ``GridSample``); the whole export uses only
  operators TensorRT's ONNX parser builds, with dynamic shapes and the scale as an input.

Tiling. RCAN's channel attention pools over the whole image, so ``backbone_halo`` is ``None``
(tiles approximate the untiled features; the runtime warns). Given the features, the
upsampler tiles exactly: it reads LR pixels within ``upsampler_lr_reach`` of a query's cell,
a bound on the learned offsets computed from the weights by interval arithmetic over the
offset branch, for every scale >= ``scale_min`` (the runtime may also accept a downscale,
s < 1, outside the model's range, where the bound is not guaranteed), and it mixes the
3x3 HR neighbourhood of the tail conv (``upsampler_hr_reach = 1``).
"""

from __future__ import annotations

import math
import re
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from asisr.errors import UserError
from asisr.models.base import SRModel
from asisr.models.canonical import CanonicalCheckpoint
from asisr.models.registry import Detection, register_detector, register_model
from asisr.runtime.descriptor import ModelDescriptor

ARCH = "arbrcan"
DIV2K_MEAN = (0.4488, 0.4371, 0.4040)  # option.py --data_train DIV2K (the released model's)
RGB_RANGE = 255.0  # option.py default: inputs and outputs in 0..255
NUM_EXPERTS = 4
MASK_WIDTH = 16  # SA_adapt.mask, hard-coded upstream
ROUTING_HIDDEN = 64  # SA_conv.routing, hard-coded upstream
EMBED_WIDTH = 64  # SA_upsample.body, hard-coded upstream (not the feature width)
PHASE_WRAP = 1e-3  # upstream: floor((i + 0.5) / s + 1e-3): a phase within 1e-3 of 1 wraps to -0.5
PHASE_RANGE = (-0.5 - PHASE_WRAP - 1e-6, 0.5)  # what cell_phase can return
BOUND_SPLITS = 8  # sub-intervals per embedding input for the offset bound (8^4 boxes)
SCALE_MIN, SCALE_MAX, TRAINED_SCALE_MAX = 1.0, 8.0, 4.0  # trained on s in [1, 4] (quick_test.py)
UNTILEABLE_OFF = ("grid_align_corners=off samples LR position p * w / (w - 1) - 0.5, which depends on the size of "
                  "the feature window a tile reads")


# ------------------------------------------------------------------------------------ backbone

class MeanShift(nn.Conv2d):
    """Upstream ``common.MeanShift``: a frozen 1x1 conv adding ``sign * rgb_range * mean``."""

    def __init__(self, sign: int, rgb_range: float = RGB_RANGE, mean: tuple[float, ...] = DIV2K_MEAN):
        super().__init__(3, 3, kernel_size=1)
        with torch.no_grad():
            self.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.bias.copy_(sign * rgb_range * torch.tensor(mean))
        self.weight.requires_grad_(False)
        self.bias.requires_grad_(False)


def conv3x3(c_in: int, c_out: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, padding=1, bias=bias)


class ChannelAttention(nn.Module):
    """RCAN's CALayer: global mean -> 1x1 squeeze -> ReLU -> 1x1 excite -> sigmoid gate."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        self.conv_du = nn.Sequential(nn.Conv2d(channels, channels // reduction, 1), nn.ReLU(inplace=True),
                                     nn.Conv2d(channels // reduction, channels, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv_du(x.mean(dim=(2, 3), keepdim=True))


class RCAB(nn.Module):
    """conv -> ReLU -> conv -> channel attention, plus the input (upstream ignores ``res_scale``)."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        self.body = nn.Sequential(conv3x3(channels, channels), nn.ReLU(inplace=True), conv3x3(channels, channels),
                                  ChannelAttention(channels, reduction))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


class ResidualGroup(nn.Module):
    def __init__(self, channels: int, reduction: int, n_resblocks: int):
        super().__init__()
        self.body = nn.Sequential(*[RCAB(channels, reduction) for _ in range(n_resblocks)], conv3x3(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


def half_pool(x: torch.Tensor) -> torch.Tensor:
    """2x2 average pool of any size: ``AvgPool2d(2, ceil_mode=True)``, as a replicate pad + fixed conv.

    The last row and column are always repeated: for an even size the pool never reads the copy,
    for an odd one the last window averages a pixel with itself. No size test, so one graph
    serves every size; a depthwise conv because TensorRT-safe operator sets here have no pool.
    """
    x = torch.cat([x, x[:, :, -1:]], dim=2)
    x = torch.cat([x, x[:, :, :, -1:]], dim=3)
    c = x.shape[1]
    kernel = torch.full((c, 1, 2, 2), 0.25, dtype=x.dtype, device=x.device)
    return F.conv2d(x, kernel, stride=2, groups=c)


def _double_axis(x: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """Bilinear x2 along ``dim`` (``align_corners=False``, edges clamped), ``size`` outputs: output ``j``
    is ``0.75 x[j // 2] + 0.25 x[j // 2 -+ 1]`` (minus for even ``j``), read by two gathers.

    Built at the wanted length rather than doubled and cropped: the exporter cannot prove the crop
    ``size <= 2 * ceil(size / 2)`` for a symbolic size: its first trace failed on it and was redone
    (measured: full-size export 43 s -> 40 s here).
    """
    j = torch.arange(size, device=x.device)
    cell = torch.div(j, 2, rounding_mode="floor")
    neighbour = torch.clamp(cell + 2 * (j - 2 * cell) - 1, min=0, max=x.shape[dim] - 1)
    return 0.75 * x.index_select(dim, cell) + 0.25 * x.index_select(dim, neighbour)


def double_bilinear(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``Upsample(scale_factor=2, mode='bilinear', align_corners=False)``, its first ``h x w`` (built at that size)."""
    return _double_axis(_double_axis(x, 2, h), 3, w)


class ScaleAwareConv(nn.Module):
    """Upstream ``SA_conv``: 3x3 conv, no bias, with a kernel routed from ``[1/s_h, 1/s_w]``.

    Computed in the static-weight form (module docstring): one conv with all experts, then the
    per-sample softmax routing mixes their outputs.
    """

    def __init__(self, channels: int, num_experts: int = NUM_EXPERTS):
        super().__init__()
        self.channels, self.num_experts = channels, num_experts
        self.routing = nn.Sequential(nn.Linear(2, ROUTING_HIDDEN), nn.ReLU(inplace=True),
                                     nn.Linear(ROUTING_HIDDEN, num_experts), nn.Softmax(dim=1))
        self.weight_pool = nn.Parameter(torch.empty(num_experts, channels, channels, 3, 3))
        for expert in self.weight_pool.data:
            nn.init.kaiming_uniform_(expert, a=math.sqrt(5))

    def forward(self, x: torch.Tensor, inv_scale: torch.Tensor) -> torch.Tensor:
        c = self.channels
        routing = self.routing(inv_scale)[:, :, None, None, None]  # (B, E, 1, 1, 1)
        experts = F.conv2d(x, self.weight_pool.reshape(self.num_experts * c, c, 3, 3), padding=1)
        mixed = experts[:, :c] * routing[:, 0]
        for i in range(1, self.num_experts):
            mixed = mixed + experts[:, i * c:(i + 1) * c] * routing[:, i]
        return mixed


class ScaleAwareAdapt(nn.Module):
    """Upstream ``SA_adapt``: ``x + SA_conv(x) * mask(x)``.

    ``mask`` keeps the upstream layer indices (its state-dict keys): 0 conv, 1 BN, 2 ReLU,
    3 pool, 4 conv, 5 BN, 6 ReLU, 7 conv, 8 BN, 9 ReLU, 10 upsample, 11 conv, 12 BN, 13 sigmoid;
    the pool and the upsample are ``half_pool`` / ``double_bilinear`` (any size).
    """

    def __init__(self, channels: int):
        super().__init__()
        m = MASK_WIDTH
        self.mask = nn.Sequential(
            nn.Conv2d(channels, m, 3, 1, 1), nn.BatchNorm2d(m), nn.ReLU(inplace=True), nn.Identity(),
            nn.Conv2d(m, m, 3, 1, 1), nn.BatchNorm2d(m), nn.ReLU(inplace=True),
            nn.Conv2d(m, m, 3, 1, 1), nn.BatchNorm2d(m), nn.ReLU(inplace=True), nn.Identity(),
            nn.Conv2d(m, 1, 3, 1, 1), nn.BatchNorm2d(1), nn.Sigmoid())
        self.adapt = ScaleAwareConv(channels)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        m = self.mask
        y = half_pool(m[2](m[1](m[0](x))))
        y = m[9](m[8](m[7](m[6](m[5](m[4](y))))))
        return m[13](m[12](m[11](double_bilinear(y, x.shape[2], x.shape[3]))))

    def forward(self, x: torch.Tensor, inv_scale: torch.Tensor) -> torch.Tensor:
        return x + self.adapt(x, inv_scale) * self.gate(x)


class ArbRCANBackbone(nn.Module):
    """``(lr in [0, 1], scale (B, 2)) -> features`` (0..255 domain, mean removed), upstream key names."""

    def __init__(self, n_resgroups: int = 10, n_resblocks: int = 20, n_feats: int = 64, reduction: int = 16,
                 rgb_range: float = RGB_RANGE):
        super().__init__()
        self.rgb_range = float(rgb_range)
        self.sub_mean = MeanShift(-1, rgb_range)
        self.head = nn.Sequential(conv3x3(3, n_feats))
        self.body = nn.Sequential(*[ResidualGroup(n_feats, reduction, n_resblocks) for _ in range(n_resgroups)],
                                  conv3x3(n_feats, n_feats))
        self.sa_adapt = nn.Sequential(*[ScaleAwareAdapt(n_feats) for _ in range(n_resgroups)])  # K = 1

    def forward(self, lr: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        inv_scale = 1.0 / scale  # (1/s_h, 1/s_w): SA_conv's routing input order
        x = self.head(self.sub_mean(lr * self.rgb_range))
        res = x
        for group, adapt in zip(self.body[:-1], self.sa_adapt):
            res = adapt(group(res), inv_scale)
        return self.body[-1](res) + x


# ----------------------------------------------------------------------------------- upsampler

def cell_phase(pos: torch.Tensor) -> torch.Tensor:
    """Upstream ``coor``: a query's offset from its LR cell's centre, ``frac(p) - 0.5``, where a
    phase within ``PHASE_WRAP`` of 1 counts as the next cell's (-0.5). The fraction is taken
    first, so an integer shift of ``pos`` (a tile) gives bit-identical phases."""
    frac = pos - torch.floor(pos)
    return frac - torch.floor(frac + PHASE_WRAP) - 0.5


def _interval_affine(lo: torch.Tensor, hi: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor):
    """Bounds of ``x @ weight.T + bias`` over the boxes ``[lo, hi]`` (row-wise)."""
    mid, rad = (lo + hi) / 2, (hi - lo) / 2
    centre, spread = mid @ weight.T + bias, rad @ weight.abs().T
    return centre - spread, centre + spread


def _input_boxes(inv_scale_max: float, splits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The embedding's input domain ``[1/s_w, 1/s_h, coor_h, coor_w]`` cut into ``splits^4`` boxes."""
    ranges = [(0.0, inv_scale_max)] * 2 + [PHASE_RANGE] * 2
    edges = [torch.linspace(a, b, splits + 1, dtype=torch.float64) for a, b in ranges]
    idx = torch.cartesian_prod(*[torch.arange(splits)] * 4)
    lo = torch.stack([edges[d][idx[:, d]] for d in range(4)], dim=1)
    hi = torch.stack([edges[d][idx[:, d] + 1] for d in range(4)], dim=1)
    return lo, hi


class ScaleAwareUpsample(nn.Module):
    """Upstream ``SA_upsample``: ``(features, scale, rows, cols) -> (B, C, H, W)`` features at the queries."""

    def __init__(self, channels: int, num_experts: int = NUM_EXPERTS, align_corners: bool = True):
        super().__init__()
        if channels % 8:
            raise UserError(f"ArbSR's upsampler needs a feature width divisible by 8, not {channels}")
        self.channels, self.num_experts, self.align_corners = channels, num_experts, align_corners
        code = channels // 8
        self.weight_compress = nn.Parameter(torch.empty(num_experts, code, channels, 1, 1))
        self.weight_expand = nn.Parameter(torch.empty(num_experts, channels, code, 1, 1))
        for expert in (*self.weight_compress.data, *self.weight_expand.data):
            nn.init.kaiming_uniform_(expert, a=math.sqrt(5))
        self.body = nn.Sequential(nn.Conv2d(4, EMBED_WIDTH, 1), nn.ReLU(inplace=True),
                                  nn.Conv2d(EMBED_WIDTH, EMBED_WIDTH, 1), nn.ReLU(inplace=True))
        self.routing = nn.Sequential(nn.Conv2d(EMBED_WIDTH, num_experts, 1), nn.Sigmoid())
        self.offset = nn.Conv2d(EMBED_WIDTH, 2, 1)

    def embedding(self, inv_scale: torch.Tensor, phase_h: torch.Tensor, phase_w: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 64) from ``[1/s_w, 1/s_h, coor_h, coor_w]``: the first 1x1 conv split into a row
        term and a column term, so no (B, 4, H, W) input is built."""
        w1, b1 = self.body[0].weight[:, :, 0, 0], self.body[0].bias
        rows = phase_h[..., None] * w1[:, 2] + (inv_scale[:, 1:2] * w1[:, 0] + inv_scale[:, 0:1] * w1[:, 1] + b1)[:, None]
        cols = phase_w[..., None] * w1[:, 3]
        hidden = torch.relu(rows[:, :, None, :] + cols[:, None, :, :])
        return torch.relu(F.linear(hidden, self.body[2].weight[:, :, 0, 0], self.body[2].bias))

    def _taps(self, pos: torch.Tensor, offset: torch.Tensor, size):
        """Lower tap index (float, may lie outside the map) and upper weight per query, on one axis.

        ``pos`` is the query coordinate (centres at k + 0.5), broadcastable to ``offset`` (B, H, W);
        upstream samples index coordinate ``pos - 0.5 + offset``. With ``align_corners`` the
        integer part of the query is split off before the offset is added, so a tile (an integer
        shift of ``pos``) sees bit-identical weights.
        """
        index = pos - 0.5
        if self.align_corners:
            base = torch.floor(index)
            t = (index - base) + offset
            lower = torch.floor(t)
            return base + lower, t - lower
        stretched = (index + offset) * (size / (size - 1)) - 0.5  # grid_sample(align_corners=False)
        lower = torch.floor(stretched)
        return lower, stretched - lower

    def sample(self, feat: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """Bilinear, zero padding: ``grid_sample`` at rows/cols + offset as four row gathers -> (B, H, W, C).

        The map gets a one-pixel zero border and tap indices are clamped into it, so every tap
        outside the map reads zero.
        """
        b, c, h, w = feat.shape
        hh, ww = rows.shape[1], cols.shape[1]
        y0, fy = self._taps(rows[:, :, None], offset[..., 1], h)
        x0, fx = self._taps(cols[:, None, :], offset[..., 0], w)
        flat = _zero_border(feat).permute(0, 2, 3, 1).reshape(-1, c)
        base = (torch.arange(b, device=feat.device) * ((h + 2) * (w + 2)))[:, None, None]

        def tap(iy: torch.Tensor, ix: torch.Tensor) -> torch.Tensor:
            iy = torch.clamp(iy, min=-1, max=h).long() + 1
            ix = torch.clamp(ix, min=-1, max=w).long() + 1
            return torch.index_select(flat, 0, (base + iy * (w + 2) + ix).reshape(-1)).view(b, hh, ww, c)

        fy, fx = fy[..., None], fx[..., None]
        gy, gx = 1 - fy, 1 - fx  # grid_sample's four corner weights, then one pass over the channels
        return (tap(y0, x0) * (gy * gx) + tap(y0, x0 + 1) * (gy * fx)
                + tap(y0 + 1, x0) * (fy * gx) + tap(y0 + 1, x0 + 1) * (fy * fx))

    def mix_experts(self, fea: torch.Tensor, routing: torch.Tensor) -> torch.Tensor:
        """``sum_e r_e We_e @ (sum_e r_e Wc_e @ fea)`` with static expert weights (module docstring)."""
        e, c = self.num_experts, self.channels
        code = c // 8
        compress = self.weight_compress.reshape(e * code, c)
        expand = self.weight_expand.reshape(e, c, code).permute(1, 0, 2).reshape(c, e * code)
        codes = F.linear(fea, compress)  # (B, H, W, E * c/8)
        weights = [routing[..., i:i + 1] for i in range(e)]
        mixed = weights[0] * codes[..., :code]
        for i in range(1, e):  # slices, not a batched 1 x E matmul: ONNX Runtime runs those one pixel at a time
            mixed = mixed + weights[i] * codes[..., i * code:(i + 1) * code]
        routed = torch.cat([wt * mixed for wt in weights], dim=-1)  # (B, H, W, E * c/8)
        return F.linear(routed, expand)

    def forward(self, feat: torch.Tensor, scale: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        emb = self.embedding(1.0 / scale, cell_phase(rows), cell_phase(cols))
        routing = torch.sigmoid(F.linear(emb, self.routing[0].weight[:, :, 0, 0], self.routing[0].bias))
        offset = F.linear(emb, self.offset.weight[:, :, 0, 0], self.offset.bias)  # (B, H, W, 2): x, y
        fea = self.sample(feat, rows, cols, offset)
        return (self.mix_experts(fea, routing) + fea).permute(0, 3, 1, 2)

    @torch.no_grad()
    def offset_bound(self, scale_min: float = SCALE_MIN, splits: int = BOUND_SPLITS) -> float:
        """A sound bound on ``|offset|`` (LR px, both axes) for every scale >= ``scale_min``.

        Interval arithmetic through the offset branch (two 1x1 convs with ReLU, then the head)
        over the input domain cut into ``splits^4`` boxes, in float64; the union of the boxes is
        the whole domain, so the maximum over boxes bounds every output.
        """
        lo, hi = _input_boxes(1.0 / scale_min, splits)
        for layer in (self.body[0], self.body[2]):
            weight, bias = layer.weight[:, :, 0, 0].double().cpu(), layer.bias.double().cpu()
            lo, hi = (torch.relu(v) for v in _interval_affine(lo, hi, weight, bias))
        lo, hi = _interval_affine(lo, hi, self.offset.weight[:, :, 0, 0].double().cpu(), self.offset.bias.double().cpu())
        return float(torch.maximum(lo.abs(), hi.abs()).max())


def _zero_border(x: torch.Tensor) -> torch.Tensor:
    """``x`` with one zero row / column on every side, by concatenation (exports without ``Pad``)."""
    zero_row = x[:, :, :1] * 0
    x = torch.cat([zero_row, x, zero_row], dim=2)
    zero_col = x[:, :, :, :1] * 0
    return torch.cat([zero_col, x, zero_col], dim=3)


def lr_reach(offset_bound: float) -> int:
    """LR pixels a query reads around its cell when its offset is at most ``offset_bound``.

    The taps of a query at ``p`` are ``floor(p - 0.5 + off)`` and the next one; with ``p`` in cell
    ``k`` they stay within ``k -+ ceil(offset_bound + 0.5)``. The margin covers float32 rounding of the
    offsets, which the float64 bound does not see.
    """
    return max(1, math.ceil(offset_bound * (1 + 1e-4) + 1e-3 + 0.5))


class ArbRCANUpsampler(nn.Module):
    """``SA_upsample`` -> RCAN's tail conv (3x3 at HR) -> mean shift, output in [0, 1]."""

    def __init__(self, n_feats: int = 64, rgb_range: float = RGB_RANGE, grid_align_corners: bool = True):
        super().__init__()
        self.rgb_range = float(rgb_range)
        self.sa_upsample = ScaleAwareUpsample(n_feats, align_corners=grid_align_corners)
        self.tail = conv3x3(n_feats, 3)  # upstream tail.1 (tail.0 is a None placeholder)
        self.add_mean = MeanShift(+1, rgb_range)

    def forward(self, feat: torch.Tensor, scale: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return self.add_mean(self.tail(self.sa_upsample(feat, scale, rows, cols))) / self.rgb_range


class ArbRCANModel(SRModel):
    """``SRModel`` whose descriptor's LR reach follows the current weights (the learned offsets).

    The bound is recomputed whenever the weights are real, so it holds after a checkpoint is
    loaded or the model trained; on a shapes-only ("meta") copy the last real value is kept.
    """

    @property
    def descriptor(self) -> ModelDescriptor:
        up = self.upsampler.sa_upsample
        if not up.offset.weight.is_meta:
            bound = up.offset_bound(self._descriptor.scale_min)
            self._reach = (lr_reach(bound), round(bound, 4))
        if self._reach is None:
            return self._descriptor
        reach, bound = self._reach
        return replace(self._descriptor, upsampler_lr_reach=reach,
                       extra={**self._descriptor.extra, "offset_bound_lr_px": bound})

    @descriptor.setter
    def descriptor(self, value: ModelDescriptor) -> None:
        self._descriptor = value
        self._reach: tuple[int, float] | None = None


def _descriptor(n_feats: int, scale_max: float, grid_align_corners: bool) -> ModelDescriptor:
    return ModelDescriptor(
        arch=ARCH, feature_channels=n_feats, scale_min=SCALE_MIN, scale_max=scale_max,
        trained_scale_max=TRAINED_SCALE_MAX,
        backbone_halo=None,  # channel attention: global context
        upsampler_lr_reach=1,  # replaced by the weights' offset bound (ArbRCANModel.descriptor)
        upsampler_hr_reach=1,  # the tail's 3x3 conv at HR resolution
        upsampler_untileable="" if grid_align_corners else UNTILEABLE_OFF,
        precisions=("fp32",),
        extra={"grid_align_corners": grid_align_corners},
    )


@register_model("arbrcan")
def _arbrcan(n_resgroups: int = 10, n_resblocks: int = 20, n_feats: int = 64, reduction: int = 16,
             rgb_range: float = RGB_RANGE, grid_align_corners: bool = True, scale_max: float = SCALE_MAX) -> SRModel:
    """The released ArbRCAN by default (10 groups of 20 RCABs, 64 features, 16,926,151 parameters)."""
    if n_resgroups < 1 or n_resblocks < 0 or n_feats < 8 or n_feats % 8 or not 1 <= reduction <= n_feats:
        raise UserError(f"invalid ArbRCAN size: {n_resgroups} groups of {n_resblocks} blocks, {n_feats} features "
                        f"(a multiple of 8), channel-attention reduction {reduction}")
    backbone = ArbRCANBackbone(n_resgroups, n_resblocks, n_feats, reduction, rgb_range)
    upsampler = ArbRCANUpsampler(n_feats, rgb_range, grid_align_corners)
    config = {"n_resgroups": n_resgroups, "n_resblocks": n_resblocks, "n_feats": n_feats, "reduction": reduction,
              "rgb_range": rgb_range, "grid_align_corners": grid_align_corners, "scale_max": scale_max}
    return ArbRCANModel(ARCH, backbone, upsampler, _descriptor(n_feats, scale_max, grid_align_corners), config)


# ------------------------------------------------------------------------------------ detection

UPSAMPLER_KEYS = ("sa_upsample.", "tail.1.", "add_mean.")  # -> upsampler.*; everything else -> backbone.*


def _official_key(key: str) -> str:
    """Upstream name -> asisr name (``tail.1.*`` is ``upsampler.tail.*``)."""
    if key.startswith("tail.1."):
        return "upsampler.tail." + key[len("tail.1."):]
    return ("upsampler." if key.startswith(UPSAMPLER_KEYS) else "backbone.") + key


def _count(keys, pattern: str) -> int:
    return len({m.group(1) for k in keys if (m := re.fullmatch(pattern, k))})


@register_detector(name="arbrcan_official", requires=("sa_upsample.weight_compress", "head.0.weight"))
def detect_arbrcan(ckpt: CanonicalCheckpoint) -> Detection | None:
    """The released ``ArbRCAN.state_dict()`` (``trainer.py``: bare, no ``model.`` prefix): sizes from shapes."""
    keys = list(ckpt.state_dict)
    if not any(k.startswith("sa_adapt.") for k in keys):
        return None
    n_feats, n_colors = ckpt.shape("head.0.weight")[:2]
    if n_colors != 3:
        raise UserError(f"{ckpt.describe()}: ArbRCAN with {n_colors} colour channels; asisr handles RGB only")
    kwargs = {
        "n_resgroups": _count(keys, r"body\.(\d+)\.body\..*"),  # groups; the last conv is body.G.weight
        "n_resblocks": _count(keys, r"body\.0\.body\.(\d+)\.body\.0\.weight"),
        "n_feats": int(n_feats),
    }
    squeeze = "body.0.body.0.body.3.conv_du.0.weight"
    if squeeze in ckpt:
        kwargs["reduction"] = max(1, int(n_feats) // ckpt.shape(squeeze)[0])
    mapped = {_official_key(k): v for k, v in ckpt.state_dict.items()}
    _check_layout(ckpt, kwargs, mapped)
    return Detection(ARCH, mapped, kwargs)


def _check_layout(ckpt: CanonicalCheckpoint, kwargs: dict, mapped: dict) -> None:
    """The layout must be exactly the model built from the sizes read (e.g. an ``SA_adapt`` per group)."""
    try:
        with torch.device("meta"):
            want = {k: tuple(v.shape) for k, v in _arbrcan(**kwargs).state_dict().items()}
    except (UserError, ValueError, ZeroDivisionError) as e:
        raise UserError(f"{ckpt.describe()}: not a supported ArbRCAN layout ({e})") from None
    have = {k: tuple(v.shape) for k, v in mapped.items()}
    if want != have:
        missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
        shaped = [k for k in want if k in have and want[k] != have[k]]
        first = (f"missing {missing[0]}" if missing else f"unexpected {extra[0]}" if extra
                 else f"{shaped[0]} is {have[shaped[0]]}, expected {want[shaped[0]]}")
        raise UserError(f"{ckpt.describe()}: an ArbSR checkpoint, but not the ArbRCAN layout for {kwargs} "
                        f"({first}; {len(missing)} missing, {len(extra)} unexpected, {len(shaped)} reshaped)")
