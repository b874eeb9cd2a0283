"""``Upscaler``: images in, super-resolved images out, through any backend, tiled.

Handles what real images are: grey, RGB, RGBA (alpha is resized bicubically on its own,
not passed through a model trained on colour photographs), 8/16-bit or float. Memory is
bounded by a budget (``max_memory``, default ``DEFAULT_MAX_MEMORY``): tile sizes are planned
from it per image (``asisr.runtime.tiling.plan_tiles``), and LR features are computed band by
band just ahead of the upsampler instead of for the whole image, so the peak is about the
budget plus the output image, whatever the image size.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import replace

import cv2
import numpy as np

from asisr.errors import UserError
from asisr.runtime.descriptor import ModelDescriptor
from asisr.runtime.query import floor_grid_coords
from asisr.runtime.pipeline import Pipeline
from asisr.runtime.tiling import (
    GLOBAL_CONTEXT_HALO,
    QuerySpan,
    TileGeometry,
    TilePlan,
    lr_spans,
    plan_tiles,
    query_spans,
    tile_halo,
)
from asisr.scale import Scale, check_scale_range, check_symmetric, fit_size, planned_size, scale_for_size

DEFAULT_MAX_MEMORY = 1 << 30  # bytes; keeps 1920x1080 -> 3840x2160 on ONNX Runtime under ~2 GB peak RSS


def to_float(image: np.ndarray) -> np.ndarray:
    """uint8 / uint16 / float image -> float32 in [0, 1]."""
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if image.dtype == np.uint16:
        return image.astype(np.float32) / 65535.0
    if np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all():
            raise UserError("image contains NaN or infinite values")
        return image.astype(np.float32)
    raise UserError(f"unsupported image dtype {image.dtype} (expected uint8, uint16 or float)")


def from_float(image: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """float in [0, 1] -> ``dtype`` with rounding (float dtypes are returned clamped)."""
    image = np.clip(image, 0.0, 1.0)  # one temporary, then in place: outputs can be 100s of MB
    if dtype in (np.uint8, np.uint16):
        image *= 255.0 if dtype == np.uint8 else 65535.0
        return np.round(image, out=image).astype(dtype)
    return image.astype(dtype)


class Upscaler:
    """Runs a ``Pipeline`` on whole images with output-space tiling.

    ``tile`` / ``lr_tile`` fix the tile edges; those left ``None`` are planned per image from
    ``max_memory`` bytes (``DEFAULT_MAX_MEMORY`` when ``None``). ``stream_features=False``
    computes the whole LR feature map before upsampling (the pre-streaming path, same output).
    """

    def __init__(self, pipeline: Pipeline, tile: int | None = None, lr_tile: int | None = None,
                 max_scale: float | None = None, max_memory: int | None = None, stream_features: bool = True):
        self.pipeline = pipeline
        self.descriptor = pipeline.descriptor
        self.tile = None if tile is None else int(tile)
        self.lr_tile = None if lr_tile is None else int(lr_tile)
        if (self.tile is not None and self.tile < 1) or (self.lr_tile is not None and self.lr_tile < 1):
            raise UserError("tile sizes must be positive")
        self.max_memory = int(max_memory) if max_memory is not None else DEFAULT_MAX_MEMORY
        if self.max_memory < 1:
            raise UserError("the memory budget must be positive")
        self.stream_features = stream_features
        pipeline.backbone.release_memory_after_runs(True)  # few, large backbone tiles: give their memory back
        self.max_scale = float(max_scale) if max_scale is not None else self.descriptor.scale_max
        self.last_plan: TilePlan | None = None  # the tiles of the latest image, for reports

    def plan(self, lr_h: int, lr_w: int, out_h: int, out_w: int) -> TilePlan:
        """Tile edges for one image: the fixed ones, the rest from the memory budget."""
        if self.tile is not None and self.lr_tile is not None:
            return TilePlan(self.tile, self.lr_tile, 0, None)
        d = self.descriptor
        geometry = TileGeometry(lr_h, lr_w, out_h, out_w, d.feature_channels, tile_halo(self.descriptor),
                                d.upsampler_lr_reach, d.upsampler_hr_reach)
        return plan_tiles(self.max_memory, geometry, self.pipeline.tile_costs(), self.tile, self.lr_tile)

    def _fit_limits(self, plan: TilePlan, lr_hw: tuple[int, int], out_hw: tuple[int, int]) -> TilePlan:
        """Shrink tiles to the pipeline's shape limits (a TensorRT engine's optimization profile), if any."""
        limits = self.pipeline.tile_limits
        return plan if limits is None else limits.fit(plan, lr_hw, out_hw, self.descriptor, tile_halo(self.descriptor))

    def __enter__(self) -> "Upscaler":
        self.pipeline.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.pipeline.__exit__(*exc)

    def upscale(self, image: np.ndarray, scale: Scale | float | None = None,
                size: tuple[int, int] | None = None, fit: str = "stretch") -> np.ndarray:
        """Upscale by ``scale`` or to ``size`` = (height, width); returns the input's dtype and channels.

        ``fit`` says how the image meets a ``size`` of another aspect ratio (``asisr.scale.fit_size``):
        ``stretch`` (per-axis scales), ``contain`` (whole image, padded with black, transparent
        for RGBA) or ``cover`` (box filled, overflow cropped), both centred.
        """
        if (scale is None) == (size is None):
            raise UserError("give exactly one of a scale or an output size")
        h, w = image.shape[:2]
        if size is None:
            scale = scale if isinstance(scale, Scale) else Scale(float(scale), float(scale))
            check_symmetric(scale, self.descriptor.symmetric_only, self.descriptor.arch)
            check_scale_range(scale, self.max_scale)
            size = planned_size(h, w, scale, None, self.descriptor.size_rule)
        placed = fit_size(h, w, size, fit)
        out = self.upscale_to(image, placed.inner, scale if placed.inner == size else None)
        if placed.inner != placed.box:
            out = _place(out, placed.box, placed.offset)
        return from_float(out, image.dtype)

    def upscale_to(self, image: np.ndarray, out_hw: tuple[int, int], scale: Scale | None = None) -> np.ndarray:
        """Float32 output in [0, 1] of size ``out_hw``, with the input's channel count.

        ``scale``: the scale ``out_hw`` was computed from, if any. A model on the floor grid
        (``size_rule`` ``floor``) is told it and samples its grid; others are told ``out / lr``.
        """
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
            raise UserError(f"unsupported image shape {image.shape}: expected grey, RGB or RGBA")
        h, w = image.shape[:2]
        if h < 2 or w < 2:
            raise UserError(f"image too small ({w}x{h}); at least 2x2 pixels are needed")
        out_h, out_w = int(out_hw[0]), int(out_hw[1])
        if out_h < 1 or out_w < 1:
            raise UserError(f"invalid output size {out_w}x{out_h}")
        s = self._told_scale(h, w, out_h, out_w, scale)
        check_scale_range(s, self.max_scale)
        x = to_float(image)
        if x.ndim == 2:
            x = x[:, :, None]
        channels = x.shape[2]
        rgb = x[:, :, :3] if channels >= 3 else np.repeat(x, 3, axis=2)
        out = self._upscale_rgb(rgb, out_h, out_w, s)
        if channels == 1:
            out = out.mean(axis=2, keepdims=True)
        if channels == 4:
            alpha = cv2.resize(x[:, :, 3], (out_w, out_h), interpolation=cv2.INTER_CUBIC)
            out = np.concatenate([out, np.clip(alpha, 0, 1)[:, :, None]], axis=2)
        if image.ndim == 2:
            out = out[:, :, 0]
        return np.ascontiguousarray(out, dtype=np.float32)

    def _told_scale(self, h: int, w: int, out_h: int, out_w: int, scale: Scale | None) -> Scale:
        """The scale the model is told (``ModelDescriptor.size_rule``)."""
        d = self.descriptor
        if scale is not None and d.size_rule == "floor":
            check_symmetric(scale, d.symmetric_only, d.arch)
            return scale
        return scale_for_size(h, w, out_h, out_w, d.size_rule, d.symmetric_only)

    def _query_spans(self, lr_len: int, out_len: int, tile: int, scale: float) -> list[QuerySpan]:
        return model_query_spans(self.descriptor, lr_len, out_len, tile, scale)

    def _upscale_rgb(self, rgb: np.ndarray, out_h: int, out_w: int, s: Scale) -> np.ndarray:
        h, w = rgb.shape[:2]
        scale = np.array([[s.h, s.w]], dtype=np.float32)
        lr = np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], dtype=np.float32)
        plan = self.last_plan = self._fit_limits(self.plan(h, w, out_h, out_w), (h, w), (out_h, out_w))
        d = self.descriptor
        why = d.upsampler_untileable or ("the upsampler pools over the whole output" if d.upsampler_global_pool else "")
        if why and (out_h > plan.tile or out_w > plan.tile):
            warnings.warn(f"{d.arch}: {why}; output tiles of {plan.tile} px approximate the untiled result "
                          "(raise --tile to avoid tiling)", stacklevel=3)
        if d.backbone_halo is None and (h > plan.lr_tile or w > plan.lr_tile):
            warnings.warn(f"{d.arch}: backbone has global context; tiles of {plan.lr_tile} LR px with "
                          f"{GLOBAL_CONTEXT_HALO} px overlap approximate the untiled result", stacklevel=3)
        features = _FeatureBands(self.pipeline, lr, scale, plan.lr_tile, tile_halo(self.descriptor))
        if not self.stream_features:
            features.compute_all()
        out = np.empty((out_h, out_w, 3), dtype=np.float32)  # written in place, HWC: no transposed copy later
        row_spans = self._query_spans(h, out_h, plan.tile, s.h)
        col_spans = self._query_spans(w, out_w, plan.tile, s.w)
        for r in row_spans:
            features.release_above(r.lr_lo)  # row bands are visited top to bottom
            for c in col_spans:
                feat = features.window(r.lr_lo, r.lr_hi, c.lr_lo, c.lr_hi)
                rgb_tile = self.pipeline.upsample(feat, scale, r.coords.astype(np.float32)[None],
                                                  c.coords.astype(np.float32)[None])
                out[r.out, c.out] = rgb_tile[0, :, r.keep, c.keep].transpose(1, 2, 0)
        if not np.isfinite(out).all():
            raise UserError(f"the {self.pipeline.backend} backend produced NaN or infinite values; "
                            "check the model with asisr-parity")
        return np.clip(out, 0.0, 1.0, out=out)


def model_query_spans(d: ModelDescriptor, lr_len: int, out_len: int, tile: int, scale: float) -> list[QuerySpan]:
    """One axis's output tiles and the LR windows they read, on the grid the model samples (its size rule;
    ``scale``: the one it is told). Also what ``asisr.bench.flops`` counts."""
    spans = query_spans(lr_len, out_len, tile, d.upsampler_lr_reach, d.upsampler_hr_reach)
    return spans if d.size_rule == "round" else _on_floor_grid(spans, lr_len, scale, d.upsampler_lr_reach)


def _on_floor_grid(spans: list[QuerySpan], lr_len: int, scale: float, lr_reach: int) -> list[QuerySpan]:
    """The same output tiles with their queries on the floor grid of ``scale``, and the LR windows those read."""
    moved = []
    for span in spans:
        start = span.out.start - span.keep.start
        coords = floor_grid_coords(lr_len, scale, start, start + len(span.coords))
        lo = max(0, math.floor(coords[0]) - lr_reach)
        hi = min(lr_len, math.floor(coords[-1]) + lr_reach + 1)
        moved.append(replace(span, coords=coords - lo, lr_lo=lo, lr_hi=hi))
    return moved


def _place(image: np.ndarray, box: tuple[int, int], offset: tuple[int, int]) -> np.ndarray:
    """``image`` at ``offset`` (top, left; negative crops) in a zero (black, transparent) canvas of ``box``."""
    canvas = np.zeros((box[0], box[1], *image.shape[2:]), dtype=image.dtype)
    top, left = offset
    src = image[max(0, -top):, max(0, -left):]
    dst = canvas[max(0, top):, max(0, left):]
    rows, cols = min(src.shape[0], dst.shape[0]), min(src.shape[1], dst.shape[1])
    dst[:rows, :cols] = src[:rows, :cols]
    return canvas


class _FeatureBands:
    """LR features computed one backbone row band at a time, on demand, and dropped when passed.

    The backbone tiles (``lr_spans`` with the halo) are the same whether a band is computed
    early or late, so the features, and the output, are bit-identical to computing the whole
    map first; only the peak memory differs (a few bands instead of C x h x w floats).
    """

    def __init__(self, pipeline: Pipeline, lr: np.ndarray, scale: np.ndarray, lr_tile: int, halo: int):
        self.pipeline, self.lr, self.scale = pipeline, lr, scale
        h, w = lr.shape[2:]
        self.rows, self.cols = lr_spans(h, lr_tile, halo), lr_spans(w, lr_tile, halo)
        self.bands: dict[int, np.ndarray] = {}  # row-span index -> (1, C, keep rows, w)

    def _band(self, i: int) -> np.ndarray:
        if i not in self.bands:
            r = self.rows[i]
            if len(self.rows) == 1 and len(self.cols) == 1:
                self.bands[i] = self.pipeline.features(self.lr, self.scale)
                return self.bands[i]
            band = None
            for c in self.cols:
                f = self.pipeline.features(np.ascontiguousarray(self.lr[:, :, r.lo:r.hi, c.lo:c.hi]), self.scale)
                if band is None:
                    band = np.empty((1, f.shape[1], r.keep_hi - r.keep_lo, self.lr.shape[3]), dtype=np.float32)
                band[:, :, :, c.keep_lo:c.keep_hi] = f[:, :, r.keep_lo - r.lo:r.keep_hi - r.lo,
                                                       c.keep_lo - c.lo:c.keep_hi - c.lo]
            self.bands[i] = band
        return self.bands[i]

    def compute_all(self) -> None:
        for i in range(len(self.rows)):
            self._band(i)

    def release_above(self, row: int) -> None:
        """Drop the bands that end at or above LR row ``row``."""
        for i in [i for i in self.bands if self.rows[i].keep_hi <= row]:
            del self.bands[i]

    def window(self, lo: int, hi: int, col_lo: int, col_hi: int) -> np.ndarray:
        """Features of LR rows ``[lo, hi)`` and columns ``[col_lo, col_hi)``, contiguous."""
        parts = []
        for i, r in enumerate(self.rows):
            a, b = max(lo, r.keep_lo), min(hi, r.keep_hi)
            if a < b:
                parts.append(self._band(i)[:, :, a - r.keep_lo:b - r.keep_lo, col_lo:col_hi])
        return np.ascontiguousarray(parts[0] if len(parts) == 1 else np.concatenate(parts, axis=2))
