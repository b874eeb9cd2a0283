"""Host-side query geometry: which continuous LR positions the output pixels sample.

The upsampler never derives an output size from a float inside the graph (data-dependent
shapes defeat TensorRT). Instead the host passes two separable coordinate vectors:
``rows`` (B, H_out) and ``cols`` (B, W_out), in LR pixel units relative to the top-left
corner of the LR tensor the backbone saw (LR pixel ``k`` spans ``[k, k+1)``, centre
``k + 0.5``). Tiling then only shifts these vectors by the tile's LR offset.

Coordinates are snapped to a binary grid fine enough for float32 at the image's size
(``coord_quantum``). Every coordinate, and every coordinate minus an integer tile offset,
is then exact in float32, so a tiled run sees bit-identical offsets to an untiled one and
"which LR cell holds this query" is decided on exact values, without epsilons.

Models whose size rule is ``floor`` (``ModelDescriptor.size_rule``, Meta-SR's official test) sample
their scale's own grid instead: ``floor_grid_coords``.
"""

from __future__ import annotations

import math

import numpy as np


def coord_quantum(lr_len: int) -> float:
    """The float32 spacing of numbers just below ``2 ** ceil(log2(lr_len + 1))``."""
    return 2.0 ** (math.floor(math.log2(max(1, lr_len))) + 1 - 24)


def axis_coords(lr_len: int, out_len: int, start: int = 0, stop: int | None = None,
                lr_offset: float = 0.0) -> np.ndarray:
    """LR coordinates (float64) of output pixel centres ``start..stop`` on one axis.

    ``lr_len / out_len`` is the exact per-axis step, so an output of ``round(h * s)`` pixels
    samples the LR image uniformly, as the reference implementations do.
    """
    stop = out_len if stop is None else stop
    idx = np.arange(start, stop, dtype=np.float64)
    q = coord_quantum(lr_len)
    return np.round((idx + 0.5) * (lr_len / out_len) / q) * q - lr_offset


# How far (in coordinate quanta) a floor-grid corner is kept from its cell's edges, so that the
# model's float32 ``centre - 0.5 / s`` (a few roundings, each under one quantum) falls in that cell.
FLOOR_GRID_MARGIN = 4


def floor_grid_coords(lr_len: int, scale: float, start: int = 0, stop: int | None = None,
                      lr_offset: float = 0.0) -> np.ndarray:
    """Centres of output pixels ``start..stop`` on the grid of ``scale`` (size rule ``floor``).

    The official Meta-SR test puts output pixel ``i``'s top-left corner at ``float32(i) *
    float32(1 / s)``, a float32 product, so some corners land one float32 step below an integer
    (x2.3, LR of 31 rows: pixel 69 at 29.999998, in LR row 29 with offset ~1, not row 30). That
    cell depends on ``i`` itself, which a tile shift hides from the graph, so the host computes
    it: the centre passed is the corner + ``0.5 / s``, with the corner's offset in its cell kept
    ``FLOOR_GRID_MARGIN`` quanta from both edges. Snapped to the quantum like ``axis_coords``,
    ``floor(centre - 0.5 / s)`` is then the official cell before and after any integer shift, and
    the offset is the official one to a few quanta.
    """
    stop = int(lr_len * scale) if stop is None else stop
    corner = np.arange(start, stop, dtype=np.float32) * np.float32(1.0 / scale)
    cell = np.floor(corner).astype(np.float64)
    q = coord_quantum(lr_len)
    offset = np.clip(corner.astype(np.float64) - cell, FLOOR_GRID_MARGIN * q, 1.0 - FLOOR_GRID_MARGIN * q)
    return np.round((cell + offset + 0.5 / scale) / q) * q - lr_offset


def effective_scale(lr_h: int, lr_w: int, out_h: int, out_w: int) -> tuple[float, float]:
    """The scale the model is told: output size over LR size, per axis."""
    return out_h / lr_h, out_w / lr_w


def make_query(lr_h: int, lr_w: int, out_h: int, out_w: int, batch: int = 1,
               grid_scale: tuple[float, float] | None = None):
    """Full-image query as float32 numpy arrays ``scale (B,2), rows (B,H), cols (B,W)``.

    ``grid_scale`` (s_h, s_w): the model is told that scale and samples its floor grid (size rule
    ``floor``); without it, the model is told ``out / lr`` and the grid spans the LR image.
    """
    if grid_scale is None:
        sh, sw = effective_scale(lr_h, lr_w, out_h, out_w)
        row_coords, col_coords = axis_coords(lr_h, out_h), axis_coords(lr_w, out_w)
    else:
        sh, sw = grid_scale
        row_coords, col_coords = floor_grid_coords(lr_h, sh, 0, out_h), floor_grid_coords(lr_w, sw, 0, out_w)
    scale = np.tile(np.array([[sh, sw]], dtype=np.float32), (batch, 1))
    rows = np.tile(row_coords.astype(np.float32)[None], (batch, 1))
    cols = np.tile(col_coords.astype(np.float32)[None], (batch, 1))
    return scale, rows, cols
