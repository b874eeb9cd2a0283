"""Tile plans: which LR and output windows each piece of work covers.

Backbone tiles are cut in LR coordinates with a halo of the backbone's receptive field;
upsampler tiles are cut in output coordinates, extended by the upsampler's HR reach, and
read only the LR features their queries can touch. With exact halos a tiled result equals
the untiled one up to float summation order. ``plan_tiles`` picks tile edges from a memory
budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from asisr.errors import UserError
from asisr.units import format_bytes
from asisr.runtime.query import axis_coords

HW = tuple[int, int]


@dataclass(frozen=True)
class Span:
    """A computed window ``[lo, hi)`` of which ``[keep_lo, keep_hi)`` (absolute) is kept."""

    lo: int
    hi: int
    keep_lo: int
    keep_hi: int


GLOBAL_CONTEXT_HALO = 32  # LR overlap for backbones without a finite receptive field


def tile_halo(descriptor) -> int:
    """LR overlap of backbone tiles: the receptive field, or a fixed overlap for global context."""
    return GLOBAL_CONTEXT_HALO if descriptor.backbone_halo is None else int(descriptor.backbone_halo)


def lr_spans(length: int, tile: int, halo: int) -> list[Span]:
    """Backbone tiles along one LR axis."""
    if length <= tile:
        return [Span(0, length, 0, length)]
    return [Span(max(0, s - halo), min(length, s + tile + halo), s, min(length, s + tile))
            for s in range(0, length, tile)]


@dataclass(frozen=True)
class QuerySpan:
    """An output tile along one axis: query coordinates, the LR window they read, the rows kept."""

    coords: np.ndarray  # float64, relative to ``lr_lo``
    lr_lo: int
    lr_hi: int
    keep: slice  # into the computed outputs
    out: slice  # into the full output


def query_spans(lr_len: int, out_len: int, tile: int, lr_reach: int, hr_reach: int) -> list[QuerySpan]:
    """Upsampler tiles along one output axis."""
    spans = []
    for start in range(0, out_len, tile):
        stop = min(out_len, start + tile)
        a, b = max(0, start - hr_reach), min(out_len, stop + hr_reach)
        coords = axis_coords(lr_len, out_len, a, b)
        lo = max(0, math.floor(coords[0]) - lr_reach)
        hi = min(lr_len, math.floor(coords[-1]) + lr_reach + 1)
        spans.append(QuerySpan(coords - lo, lo, hi, slice(start - a, stop - a), slice(start, stop)))
    return spans


# ---------------------------------------------------------------- memory-bounded tile sizes

MIN_TILE = 16  # smallest tile edge the planner picks (output px for the upsampler, LR px for the backbone)
MAX_TILE = 256  # larger upsampler tiles save nothing measurable per call
MAX_LR_TILE = 1024  # larger backbone tiles only shave the halo overhead further
TILE_STEP = 8
UPSAMPLER_SHARE = 0.25  # of the budget; the rest is the backbone's (its halo overhead is the costlier)

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20,
          "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40}


def parse_memory(text: str) -> int:
    """``"512M"``, ``"2G"``, ``"1.5GiB"``, ``"800000000"`` -> bytes (K/M/G/T are powers of 1024)."""
    s = str(text).strip().lower().replace(" ", "")
    number = s.rstrip("bikmgt")
    unit = s[len(number):]
    try:
        value = float(number)
    except ValueError:
        value = math.nan
    if unit not in _UNITS or not math.isfinite(value):
        raise UserError(f"invalid memory size {text!r}: expected a number with an optional unit, like 512M or 2G")
    if value <= 0:
        raise UserError(f"invalid memory size {text!r}: must be greater than 0")
    return int(value * _UNITS[unit])


@dataclass(frozen=True)
class TileCosts:
    """Bytes a backend holds per unit of tile while it runs one, rounded up from measurements.

    Measured with ``asisr.bench.memory`` on the bundled LIIF (64 feature channels, MLP 256
    wide): ONNX Runtime peaked at ~1.4 KB per backbone-tile pixel (returned features
    included; its arena is shrunk after each run) and its upsampler arena, which is kept,
    held ~9 KB per query of the largest tile after a warm-up call (one run alone: ~5.3 KB;
    the arena keeps every extension chunk); torch peaked at ~2.3 KB and ~6-8 KB and frees
    both in between. Adding both stages, as the planner does, is conservative for torch.
    Backbone and window terms scale with the feature channels; a model whose upsampler is
    much wider can declare its own numbers in ``descriptor.extra["tile_bytes"]``: any of the
    fields below, or ``scale``, a factor on all of them (measured against LIIF's peak).
    """

    backbone_per_px: float  # per LR pixel of a backbone tile, halo included
    upsampler_per_query: float  # per output pixel of an upsampler tile
    upsampler_per_lr_px: float  # per LR pixel of the feature window an upsampler tile reads
    fixed: float = 0.0  # one-off working memory of the backend (first-call pools)

    def declared(self, declared: dict | None) -> "TileCosts":
        """These costs with a model's declared numbers (``descriptor.extra["tile_bytes"]``) applied."""
        if not declared:
            return self
        f = float(declared.get("scale", 1.0))
        costs = TileCosts(self.backbone_per_px * f, self.upsampler_per_query * f, self.upsampler_per_lr_px * f,
                          self.fixed)
        return replace(costs, **{k: float(v) for k, v in declared.items() if k in TileCosts.__dataclass_fields__})


@dataclass(frozen=True)
class TilePlan:
    """Tile edges for one image and the planner's estimate of the memory they need (bytes)."""

    tile: int
    lr_tile: int
    estimate: int
    budget: int | None = None


@dataclass(frozen=True)
class TileGeometry:
    """What the planner needs to know about one upscale: sizes, channels, reaches."""

    lr_h: int
    lr_w: int
    out_h: int
    out_w: int
    channels: int
    halo: int  # backbone halo (LR px)
    lr_reach: int = 1
    hr_reach: int = 0

    def _window(self, tile: int, lr_len: int, out_len: int) -> int:
        """LR extent an upsampler tile of ``tile`` output px reads along one axis."""
        span = min(tile, out_len) + 2 * self.hr_reach
        return min(lr_len, math.ceil(span * lr_len / out_len) + 2 * self.lr_reach + 2)

    def upsampler_bytes(self, tile: int, costs: TileCosts) -> float:
        """Working memory of one upsampler tile: queries, their LR window, the window's features."""
        th = min(tile, self.out_h) + 2 * self.hr_reach
        tw = min(tile, self.out_w) + 2 * self.hr_reach
        window = self._window(tile, self.lr_h, self.out_h) * self._window(tile, self.lr_w, self.out_w)
        return costs.upsampler_per_query * th * tw + (costs.upsampler_per_lr_px + 4 * self.channels) * window

    def backbone_bytes(self, lr_tile: int, costs: TileCosts, tile: int = MAX_TILE) -> float:
        """One backbone tile's working memory plus the LR feature rows kept for the upsampler.

        Features are computed band by band just ahead of the upsampler (``Upscaler`` streams
        them), so at most the bands overlapping one upsampler row band (of output tiles no
        larger than ``tile``) are resident.
        """
        bh = min(self.lr_h, lr_tile + 2 * self.halo)
        bw = min(self.lr_w, lr_tile + 2 * self.halo)
        reach_rows = self._window(tile, self.lr_h, self.out_h)
        bands = math.ceil(reach_rows / lr_tile) + 1
        rows = min(self.lr_h, bands * lr_tile)
        return costs.backbone_per_px * bh * bw + 4 * self.channels * rows * self.lr_w

    def fixed_bytes(self, costs: TileCosts) -> float:
        """Independent of the tiles: the float32 LR image and the backend's fixed pools."""
        return 3 * 4 * self.lr_h * self.lr_w + costs.fixed


def _largest(lo: int, hi: int, fits) -> int | None:
    best = None
    for t in range(lo, hi + 1, TILE_STEP):
        if fits(t):
            best = t
    return best


def plan_tiles(budget: int, geometry: TileGeometry, costs: TileCosts, tile: int | None = None,
               lr_tile: int | None = None) -> TilePlan:
    """The largest tiles whose estimated working memory fits ``budget`` bytes.

    The upsampler gets a fixed share of the budget and the backbone (with the streamed
    feature rows) the rest, so each tile edge grows monotonically with the budget. A tile
    given explicitly is kept as it is. The output image itself is not part of the budget.
    """
    g = geometry
    free = budget - g.fixed_bytes(costs)
    up_share, bb_share = UPSAMPLER_SHARE * free, (1 - UPSAMPLER_SHARE) * free
    widest = max(MAX_TILE, tile or 0)  # the band count assumes the widest upsampler tile, not the chosen one
    t = tile or _largest(MIN_TILE, MAX_TILE, lambda x: g.upsampler_bytes(x, costs) <= up_share)
    lt = lr_tile or _largest(MIN_TILE, MAX_LR_TILE, lambda x: g.backbone_bytes(x, costs, widest) <= bb_share)
    if t is None or lt is None:
        need = g.fixed_bytes(costs) + max(g.upsampler_bytes(tile or MIN_TILE, costs) / UPSAMPLER_SHARE,
                                           g.backbone_bytes(lr_tile or MIN_TILE, costs, widest) / (1 - UPSAMPLER_SHARE))
        raise UserError(f"memory budget {format_bytes(budget)} is too small to upscale {g.lr_w}x{g.lr_h} to "
                        f"{g.out_w}x{g.out_h} with this model; it needs at least {format_bytes(need)}")
    estimate = g.fixed_bytes(costs) + g.upsampler_bytes(t, costs) + g.backbone_bytes(lt, costs, widest)
    return TilePlan(int(t), int(lt), int(math.ceil(estimate)), budget)


def feature_window(out_len: int, scale: float, lr_reach: int) -> int:
    """Most LR feature pixels an output window of ``out_len`` pixels reads at ``scale`` (see tiling.query_spans)."""
    return math.ceil((out_len - 1) / scale) + 2 * lr_reach + 2


@dataclass(frozen=True)
class TileLimits:
    """The largest tiles a pipeline accepts; ``Upscaler`` shrinks its planned tiles to fit them."""

    lr_max: HW
    feat_max: HW
    out_max: HW

    def fit(self, plan, lr_hw: HW, out_hw: HW, descriptor, halo: int):
        """``plan`` (a ``TilePlan``) with its tile edges shrunk so every request fits these limits."""
        tile = self.out_tile(plan.tile, lr_hw, out_hw, descriptor.upsampler_lr_reach, descriptor.upsampler_hr_reach)
        lr_tile = self.lr_tile(plan.lr_tile, halo)
        return plan if (tile, lr_tile) == (plan.tile, plan.lr_tile) else replace(plan, tile=tile, lr_tile=lr_tile)

    def lr_tile(self, tile: int, halo: int) -> int:
        """Backbone tile edge so a tile plus its halo on both sides fits ``lr_max``."""
        t = min(tile, min(self.lr_max) - 2 * halo)
        if t < 1:
            raise UserError(f"the engine's profile allows backbone tiles of at most {'x'.join(map(str, self.lr_max))} LR px, "
                            f"too small for this model's {halo} px halo on each side; rebuild it with a larger "
                            "--profile lr=...")
        return t

    def out_tile(self, tile: int, lr_hw: HW, out_hw: HW, lr_reach: int, hr_reach: int) -> int:
        """Upsampler tile edge so every output window and the features it reads fit, on both axes."""
        while True:  # until neither axis shrinks it further (a smaller tile is re-checked on both axes)
            fitted = tile
            for lr_len, out_len, o_max, f_max in zip(lr_hw, out_hw, self.out_max, self.feat_max):
                fitted = self._out_tile(fitted, lr_len, out_len, o_max, f_max, lr_reach, hr_reach)
            if fitted == tile:
                return tile
            tile = fitted

    @staticmethod
    def _out_tile(tile: int, lr_len: int, out_len: int, out_max: int, feat_max: int, lr_reach: int,
                  hr_reach: int) -> int:
        scale = out_len / lr_len
        t = min(tile, out_max - 2 * hr_reach, math.floor((feat_max - 2 * lr_reach - 2) * scale) - 2 * hr_reach + 1)
        while t >= 1:  # the bound above is exact up to rounding; confirm on the real spans
            spans = query_spans(lr_len, out_len, t, lr_reach, hr_reach)
            if max(s.lr_hi - s.lr_lo for s in spans) <= feat_max:
                return t
            t -= 1
        raise UserError(f"the engine's profile allows upsampler feature windows of at most {feat_max} LR px and "
                        f"output tiles of {out_max} px, too small for this model at scale {scale:g}; rebuild it "
                        "with a larger --profile feat=... / out=...")
