"""Query-grid sampling for the LIIF family, written so that it exports without ``GridSample``.

The official LIIF, LTE and Meta-SR code reads LR maps with ``grid_sample`` (nearest and
bilinear) at normalised coordinates. Here the same reads are index arithmetic on the
separable ``rows`` / ``cols`` vectors (LR pixel units, ``asisr.runtime.query``): a nearest
read is one ``Gather`` of flat row indices, a bilinear read four of them with explicit
weights. TensorRT builds these everywhere; its ``GridSample`` support is version-bound and
its nearest rounding differs from PyTorch's round-half-to-even.

Official conventions reproduced (the fixture notes in ``shared/README.md`` list them):
* ``grid_sample(nearest, align_corners=False)`` after the official ``+1e-6`` shift picks the
  cell *containing* a point, with a point on a boundary going to the upper cell: ``floor``;
* the official clamp to ``±(1 - 1e-6)`` is the index clamp to ``[0, n - 1]``;
* ``grid_sample(bilinear, padding_mode='border', align_corners=False)`` is separable
  bilinear between pixel centres with the position clamped to the outer centres.
"""

from __future__ import annotations

import torch

# Nudge (LR pixels) for a read point that is computed by subtraction and may land one float
# rounding below a cell boundary that it lies on exactly (Meta-SR's HR-pixel corner): the
# official code adds 1e-6 in normalised units for the same reason. A constant in pixel units
# (not relative to the map size) keeps a tile's reads identical to the whole image's.
BOUNDARY_EPS = 1e-3


def cell_index(pos: torch.Tensor, size, eps: float = 0.0) -> torch.Tensor:
    """Index of the LR cell containing ``pos`` (pixel units), clamped to ``[0, size - 1]``."""
    return torch.clamp(torch.floor(pos + eps), min=0, max=size - 1).long()


def gather_rows(lr_map_hwc: torch.Tensor, iy: torch.Tensor, ix: torch.Tensor) -> torch.Tensor:
    """(B, h, w, C) read at rows ``iy`` (B, H) x cols ``ix`` (B, W) -> (B * H * W, C), one ``Gather``.

    Advanced indexing would export as ``GatherND`` between transposes of the full query tensor.
    """
    b, h, w, c = lr_map_hwc.shape
    base = torch.arange(b, device=lr_map_hwc.device)[:, None, None] * (h * w)
    index = base + iy[:, :, None] * w + ix[:, None, :]
    return torch.index_select(lr_map_hwc.reshape(b * h * w, c), 0, index.reshape(-1))


def bilinear_axis(pos: torch.Tensor, n):
    """Lower/upper indices and the upper weight along one axis, centres at ``k + 0.5``, edges clamped."""
    t = pos - 0.5
    i0 = torch.floor(t)
    frac = t - i0
    lo = torch.clamp(i0, min=0, max=n - 1).long()
    hi = torch.clamp(i0 + 1, min=0, max=n - 1).long()
    return lo, hi, frac


def bilinear_border(lr_map: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) at the query grid -> (B, H, W, C): ``grid_sample(bilinear, border, align_corners=False)``."""
    b, c, h, w = lr_map.shape
    hwc = lr_map.permute(0, 2, 3, 1)
    y0, y1, fy = bilinear_axis(rows, h)
    x0, x1, fx = bilinear_axis(cols, w)
    hh, ww = rows.shape[1], cols.shape[1]

    def tap(iy, ix):
        return gather_rows(hwc, iy, ix).view(b, hh, ww, c)

    fy = fy[:, :, None, None]
    fx = fx[:, None, :, None]
    top = tap(y0, x0) * (1 - fx) + tap(y0, x1) * fx
    bottom = tap(y1, x0) * (1 - fx) + tap(y1, x1) * fx
    return top * (1 - fy) + bottom * fy


OFFICIAL_CELL_CLIP = 4.0  # the LTE repository's test.py --scale_max: LTE's and Meta-SR's default clip


def clipped_cell(scale: torch.Tensor, clip_scale: float | None) -> torch.Tensor:
    """The cell (LR pixels per output pixel, per axis) a model is told: ``1 / s``, or the official
    test-time clip ``cell * max(s / clip_scale, 1)`` that keeps it within the training range."""
    cell = 1.0 / scale
    if clip_scale is None:
        return cell
    return cell * torch.clamp(scale / clip_scale, min=1.0)


def local_ensemble(preds: list[torch.Tensor], areas: list[torch.Tensor]) -> torch.Tensor:
    """LIIF's local ensemble: the predictions of the four neighbouring cells (top-left, top-right,
    bottom-left, bottom-right), each weighted by the area of the diagonally opposite one."""
    total = areas[0] + areas[1] + areas[2] + areas[3]
    return (preds[0] * (areas[3] / total)[..., None] + preds[1] * (areas[2] / total)[..., None]
            + preds[2] * (areas[1] / total)[..., None] + preds[3] * (areas[0] / total)[..., None])
