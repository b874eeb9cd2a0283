"""Parsing of scale and size specifications shared by every CLI and the runtime."""

from __future__ import annotations

import math
from dataclasses import dataclass

from asisr.errors import UserError


@dataclass(frozen=True)
class Scale:
    """Per-axis scale factor (height, width); symmetric scales have ``h == w``."""

    h: float
    w: float

    def __str__(self) -> str:
        return f"{self.h:g}" if self.h == self.w else f"{self.h:g}x{self.w:g}"

    @property
    def max(self) -> float:
        return max(self.h, self.w)


def parse_scale(text: str) -> Scale:
    """``"3.5"`` -> 3.5 x 3.5; ``"2x3.5"`` -> 2 (height) x 3.5 (width)."""
    parts = str(text).lower().replace("*", "x").split("x")
    if len(parts) not in (1, 2) or not all(p.strip() for p in parts):
        raise UserError(f"invalid scale {text!r}: expected a number like 3.5 or HxW like 2x3.5")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise UserError(f"invalid scale {text!r}: expected a number like 3.5 or HxW like 2x3.5") from None
    for v in values:
        if not math.isfinite(v):
            raise UserError(f"invalid scale {text!r}: scale must be a finite number")
        if v <= 0:
            raise UserError(f"invalid scale {text!r}: scale must be greater than 0")
    return Scale(values[0], values[-1])


def parse_size(text: str) -> tuple[int, int]:
    """``"1920x1080"`` (width x height, as image tools write it) -> (height, width)."""
    parts = str(text).lower().split("x")
    try:
        w, h = (int(p) for p in parts)
    except ValueError:
        raise UserError(f"invalid size {text!r}: expected WIDTHxHEIGHT like 1920x1080") from None
    if w <= 0 or h <= 0:
        raise UserError(f"invalid size {text!r}: width and height must be positive")
    return h, w


def check_scale_range(scale: Scale, max_scale: float, min_scale: float = 0.0) -> None:
    """Refuse scales the model was not built for, before any work is done."""
    if scale.max > max_scale:
        raise UserError(
            f"scale {scale} exceeds the supported maximum x{max_scale:g} "
            f"(raise it with --max-scale if you accept the quality risk)"
        )
    if min(scale.h, scale.w) < min_scale:
        raise UserError(f"scale {scale} is below the supported minimum x{min_scale:g}")


def output_size(lr_h: int, lr_w: int, scale: Scale) -> tuple[int, int]:
    """Output size for a scale: rounded, at least one pixel."""
    return max(1, round(lr_h * scale.h)), max(1, round(lr_w * scale.w))
