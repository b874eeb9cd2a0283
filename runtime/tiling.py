"""Tile plans: which LR and output windows each piece of work covers.

Backbone tiles are cut in LR coordinates with a halo of the backbone's receptive field;
upsampler tiles are cut in output coordinates, extended by the upsampler's HR reach, and
read only the LR features their queries can touch. With exact halos a tiled result equals
the untiled one up to float summation order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from asisr.models.query import axis_coords


@dataclass(frozen=True)
class Span:
    """A computed window ``[lo, hi)`` of which ``[keep_lo, keep_hi)`` (absolute) is kept."""

    lo: int
    hi: int
    keep_lo: int
    keep_hi: int


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
