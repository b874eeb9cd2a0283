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


def effective_scale(lr_h: int, lr_w: int, out_h: int, out_w: int) -> tuple[float, float]:
    """The scale the model is told: output size over LR size, per axis."""
    return out_h / lr_h, out_w / lr_w


def make_query(lr_h: int, lr_w: int, out_h: int, out_w: int, batch: int = 1):
    """Full-image query as float32 numpy arrays ``scale (B,2), rows (B,H), cols (B,W)``."""
    sh, sw = effective_scale(lr_h, lr_w, out_h, out_w)
    scale = np.tile(np.array([[sh, sw]], dtype=np.float32), (batch, 1))
    rows = np.tile(axis_coords(lr_h, out_h).astype(np.float32)[None], (batch, 1))
    cols = np.tile(axis_coords(lr_w, out_w).astype(np.float32)[None], (batch, 1))
    return scale, rows, cols
