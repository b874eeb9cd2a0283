"""``Upscaler``: images in, super-resolved images out, through any backend, tiled.

Handles what real images are: grey, RGB, RGBA (alpha is resized bicubically on its own,
not passed through a model trained on colour photographs), 8/16-bit or float. Memory is
bounded by the tile sizes: features for one LR tile and queries for one output tile at a
time, plus the output itself and the LR feature map.
"""

from __future__ import annotations

import warnings

import cv2
import numpy as np

from asisr.errors import UserError
from asisr.models.query import effective_scale
from asisr.runtime.pipeline import Pipeline
from asisr.runtime.tiling import lr_spans, query_spans
from asisr.scale import Scale, check_scale_range, output_size

DEFAULT_TILE = 256  # output pixels per upsampler tile edge
DEFAULT_LR_TILE = 384  # LR pixels per backbone tile edge
GLOBAL_CONTEXT_HALO = 32  # LR overlap for backbones without a finite receptive field


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
    image = np.clip(image, 0.0, 1.0)
    if dtype == np.uint8:
        return np.round(image * 255.0).astype(np.uint8)
    if dtype == np.uint16:
        return np.round(image * 65535.0).astype(np.uint16)
    return image.astype(dtype)


class Upscaler:
    """Runs a ``Pipeline`` on whole images with output-space tiling."""

    def __init__(self, pipeline: Pipeline, tile: int | None = None, lr_tile: int | None = None,
                 max_scale: float | None = None):
        self.pipeline = pipeline
        self.descriptor = pipeline.descriptor
        self.tile = int(tile or DEFAULT_TILE)
        self.lr_tile = int(lr_tile or DEFAULT_LR_TILE)
        if self.tile < 1 or self.lr_tile < 1:
            raise UserError("tile sizes must be positive")
        self.max_scale = float(max_scale) if max_scale is not None else self.descriptor.scale_max

    def __enter__(self) -> "Upscaler":
        self.pipeline.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.pipeline.__exit__(*exc)

    def upscale(self, image: np.ndarray, scale: Scale | float | None = None,
                size: tuple[int, int] | None = None) -> np.ndarray:
        """Upscale by ``scale`` or to ``size`` = (height, width); returns the input's dtype and channels."""
        if (scale is None) == (size is None):
            raise UserError("give exactly one of a scale or an output size")
        h, w = image.shape[:2]
        if size is None:
            scale = scale if isinstance(scale, Scale) else Scale(float(scale), float(scale))
            check_scale_range(scale, self.max_scale)
            size = output_size(h, w, scale)
        return from_float(self.upscale_to(image, size), image.dtype)

    def upscale_to(self, image: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
        """Float32 output in [0, 1] of size ``out_hw``, with the input's channel count."""
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
            raise UserError(f"unsupported image shape {image.shape}: expected grey, RGB or RGBA")
        h, w = image.shape[:2]
        if h < 2 or w < 2:
            raise UserError(f"image too small ({w}x{h}); at least 2x2 pixels are needed")
        out_h, out_w = int(out_hw[0]), int(out_hw[1])
        if out_h < 1 or out_w < 1:
            raise UserError(f"invalid output size {out_w}x{out_h}")
        s = Scale(*effective_scale(h, w, out_h, out_w))
        check_scale_range(s, self.max_scale)
        x = to_float(image)
        if x.ndim == 2:
            x = x[:, :, None]
        channels = x.shape[2]
        rgb = x[:, :, :3] if channels >= 3 else np.repeat(x, 3, axis=2)
        out = self._upscale_rgb(rgb, out_h, out_w)
        if channels == 1:
            out = out.mean(axis=2, keepdims=True)
        if channels == 4:
            alpha = cv2.resize(x[:, :, 3], (out_w, out_h), interpolation=cv2.INTER_CUBIC)
            out = np.concatenate([out, np.clip(alpha, 0, 1)[:, :, None]], axis=2)
        if image.ndim == 2:
            out = out[:, :, 0]
        return np.ascontiguousarray(out, dtype=np.float32)

    def _upscale_rgb(self, rgb: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
        h, w = rgb.shape[:2]
        scale = np.array([effective_scale(h, w, out_h, out_w)], dtype=np.float32)
        lr = np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], dtype=np.float32)
        features = self._features(lr, scale)
        d = self.descriptor
        if d.upsampler_global_pool and (out_h > self.tile or out_w > self.tile):
            warnings.warn(f"{d.arch}: the upsampler pools over the whole output; output tiles of {self.tile} px "
                          "approximate the untiled result (raise --tile to avoid tiling)", stacklevel=3)
        out = np.empty((3, out_h, out_w), dtype=np.float32)
        row_spans = query_spans(h, out_h, self.tile, d.upsampler_lr_reach, d.upsampler_hr_reach)
        col_spans = query_spans(w, out_w, self.tile, d.upsampler_lr_reach, d.upsampler_hr_reach)
        for r in row_spans:
            for c in col_spans:
                feat = np.ascontiguousarray(features[:, :, r.lr_lo:r.lr_hi, c.lr_lo:c.lr_hi])
                rgb_tile = self.pipeline.upsample(feat, scale, r.coords.astype(np.float32)[None],
                                                  c.coords.astype(np.float32)[None])
                out[:, r.out, c.out] = rgb_tile[0, :, r.keep, c.keep]
        if not np.isfinite(out).all():
            raise UserError(f"the {self.pipeline.info.get('backend', 'model')} backend produced NaN or infinite values; "
                            "check the model with asisr-parity")
        return np.clip(out, 0.0, 1.0).transpose(1, 2, 0)

    def _features(self, lr: np.ndarray, scale: np.ndarray) -> np.ndarray:
        h, w = lr.shape[2:]
        halo = self.descriptor.backbone_halo
        if halo is None:
            halo = GLOBAL_CONTEXT_HALO
            if h > self.lr_tile or w > self.lr_tile:
                warnings.warn(f"{self.descriptor.arch}: backbone has global context; tiles of {self.lr_tile} LR px "
                              f"with {halo} px overlap approximate the untiled result", stacklevel=3)
        rows, cols = lr_spans(h, self.lr_tile, halo), lr_spans(w, self.lr_tile, halo)
        if len(rows) == 1 and len(cols) == 1:
            return self.pipeline.features(lr, scale)
        features = None
        for r in rows:
            for c in cols:
                f = self.pipeline.features(np.ascontiguousarray(lr[:, :, r.lo:r.hi, c.lo:c.hi]), scale)
                if features is None:
                    features = np.empty((1, f.shape[1], h, w), dtype=np.float32)
                features[:, :, r.keep_lo:r.keep_hi, c.keep_lo:c.keep_hi] = f[
                    :, :, r.keep_lo - r.lo:r.keep_hi - r.lo, c.keep_lo - c.lo:c.keep_hi - c.lo]
        return features
