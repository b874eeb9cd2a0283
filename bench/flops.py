"""FLOPs a job costs, backbone and upsampler separately, counted on the tiles actually run.

``torch.utils.flop_counter.FlopCounterMode`` counts matrix multiplies and convolutions
(2 FLOPs per multiply-add); element-wise work (activations, gathers, the ensemble weighting)
is not counted, so "achieved GFLOP/s" is a lower bound on the arithmetic done.

What is counted is what the deployed pipeline runs: the backbone on every LR tile with its
halo (``lr_spans``), the upsampler on every output tile with the LR feature window it reads
(``model_query_spans``: on a ``floor`` size-rule model, its own grid), with the tile sizes the
``Upscaler`` planned for that image. Tiles of the
same shape cost the same, so each distinct shape is counted once, on "meta" tensors (shapes
only, no arithmetic), and multiplied by its count: exact, and instant even for 4K outputs.
The ``fast`` model (used by torch and the ONNX export) and ``model.reference()`` (torch-ref)
are counted separately because their upsamplers do different work.
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from asisr.runtime.tiling import TilePlan, lr_spans, tile_halo
from asisr.runtime.upscaler import model_query_spans
from asisr.scale import scale_for_size


@dataclass(frozen=True)
class FlopCount:
    backbone: int
    upsampler: int
    backbone_tiles: int
    upsampler_tiles: int

    @property
    def total(self) -> int:
        return self.backbone + self.upsampler

    def __add__(self, other: "FlopCount") -> "FlopCount":
        return FlopCount(*(a + b for a, b in zip(asdict(self).values(), asdict(other).values())))

    def to_dict(self) -> dict:
        return {**asdict(self), "total": self.total}


ZERO = FlopCount(0, 0, 0, 0)


def count_flops(fn, *args) -> int:
    """FLOPs of ``fn(*args)`` as FlopCounterMode counts them."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn(*args)
    return int(counter.get_total_flops())


class TileFlopCounter:
    """Counts a model's stages per tile shape, on a meta-device copy, with a cache."""

    def __init__(self, model: torch.nn.Module):
        self.model = copy.deepcopy(model).to("meta").eval()
        self.channels = int(model.descriptor.feature_channels)
        self._backbone: dict[tuple[int, int], int] = {}
        self._upsampler: dict[tuple[int, int, int, int], int] = {}

    def backbone(self, h: int, w: int) -> int:
        if (h, w) not in self._backbone:
            lr = torch.empty(1, 3, h, w, device="meta")
            self._backbone[h, w] = count_flops(self.model.backbone, lr, torch.empty(1, 2, device="meta"))
        return self._backbone[h, w]

    def upsampler(self, lh: int, lw: int, out_h: int, out_w: int) -> int:
        key = (lh, lw, out_h, out_w)
        if key not in self._upsampler:
            feat = torch.empty(1, self.channels, lh, lw, device="meta")
            scale = torch.full((1, 2), out_h / lh, device="meta")
            rows, cols = torch.empty(1, out_h, device="meta"), torch.empty(1, out_w, device="meta")
            self._upsampler[key] = count_flops(self.model.upsampler, feat, scale, rows, cols)
        return self._upsampler[key]

    def image(self, lr_hw: tuple[int, int], out_hw: tuple[int, int], plan: TilePlan) -> FlopCount:
        """FLOPs of one upscale with ``plan``'s tiles, as ``Upscaler`` cuts them."""
        (h, w), (out_h, out_w) = lr_hw, out_hw
        d = self.model.descriptor
        halo = tile_halo(d)
        bb_rows, bb_cols = lr_spans(h, plan.lr_tile, halo), lr_spans(w, plan.lr_tile, halo)
        bb_shapes = Counter((r.hi - r.lo, c.hi - c.lo) for r in bb_rows for c in bb_cols)
        told = scale_for_size(h, w, out_h, out_w, d.size_rule, d.symmetric_only)  # as ``upscale_to`` tells it
        q_rows = model_query_spans(d, h, out_h, plan.tile, told.h)
        q_cols = model_query_spans(d, w, out_w, plan.tile, told.w)
        up_shapes = Counter((r.lr_hi - r.lr_lo, c.lr_hi - c.lr_lo, len(r.coords), len(c.coords))
                            for r in q_rows for c in q_cols)
        return FlopCount(sum(n * self.backbone(*s) for s, n in bb_shapes.items()),
                         sum(n * self.upsampler(*s) for s, n in up_shapes.items()),
                         sum(bb_shapes.values()), sum(up_shapes.values()))


def job_flops(counter: TileFlopCounter, items, plans: list[TilePlan]) -> FlopCount:
    """Sum over a job's items (``.lr``, ``.out_hw``) with the tile plan used for each."""
    total = ZERO
    for item, plan in zip(items, plans):
        total = total + counter.image(tuple(np.asarray(item.lr).shape[:2]), tuple(item.out_hw), plan)
    return total
