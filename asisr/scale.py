"""Scale and size specifications shared by every CLI and the runtime, and how a size is fitted.

One convention everywhere a user types two numbers: **width x height**, as image and video
tools write resolutions (ffmpeg, PIL, ImageMagick). ``--size 1920x1080`` is 1920 wide, and so
``--scale 3.5x2`` is 3.5 across and 2 down. Internally sizes and scales are (height, width),
like array shapes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from asisr.errors import UserError


@dataclass(frozen=True)
class Scale:
    """Per-axis scale factor; symmetric scales have ``h == w``. Written ``WxH`` like a resolution."""

    h: float
    w: float

    def __str__(self) -> str:
        return f"{self.h:g}" if self.h == self.w else f"{self.w:g}x{self.h:g}"

    @property
    def max(self) -> float:
        return max(self.h, self.w)


SCALE_FORMS = "a number like 3.5, or WIDTHxHEIGHT factors like 3.5x2 (3.5 across, 2 down)"


def parse_scale(text: str) -> Scale:
    """``"3.5"`` -> 3.5 x 3.5; ``"3.5x2"`` -> 3.5 across (width) and 2 down (height)."""
    parts = str(text).lower().replace("*", "x").split("x")
    if len(parts) not in (1, 2) or not all(p.strip() for p in parts):
        raise UserError(f"invalid scale {text!r}: expected {SCALE_FORMS}")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise UserError(f"invalid scale {text!r}: expected {SCALE_FORMS}") from None
    for v in values:
        if not math.isfinite(v):
            raise UserError(f"invalid scale {text!r}: scale must be a finite number")
        if v <= 0:
            raise UserError(f"invalid scale {text!r}: scale must be greater than 0")
    return Scale(h=values[-1], w=values[0])


def parse_size(text: str) -> tuple[int, int]:
    """``"1920x1080"`` (width x height, as image tools write it) -> (height, width)."""
    parts = str(text).lower().split("x")
    try:
        w, h = (int(p) for p in parts)
    except ValueError:
        raise UserError(f"invalid size {text!r}: expected WIDTHxHEIGHT in pixels like 1920x1080") from None
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


# How a scale becomes an output size (``ModelDescriptor.size_rule``): asisr rounds; Meta-SR's
# official test truncates, ``int(s * h)`` in double precision (int(2.3 * 50) = 114, not 115).
SIZE_RULES = ("round", "floor")


def output_size(lr_h: int, lr_w: int, scale: Scale, rule: str = "round") -> tuple[int, int]:
    """Output size for a scale under a size rule, at least one pixel."""
    if rule not in SIZE_RULES:  # a typo must not silently floor
        raise ValueError(f"size rule must be one of {SIZE_RULES}, not {rule!r}")
    fit = round if rule == "round" else int
    return max(1, fit(lr_h * scale.h)), max(1, fit(lr_w * scale.w))


def planned_size(lr_h: int, lr_w: int, scale: Scale | None, size: tuple[int, int] | None,
                 rule: str = "round") -> tuple[int, int]:
    """The output size (height, width) a job will produce: ``size`` as given, else ``scale`` under the
    model's size rule (``ModelDescriptor.size_rule``: MetaRDN floors, the others round)."""
    if size is not None:
        return size
    if scale is None:
        raise ValueError("a planned size needs a scale or a size")
    return output_size(lr_h, lr_w, scale, rule)


def check_symmetric(scale: Scale, symmetric_only: bool, model: str) -> None:
    """Refuse per-axis scales for a model that has one scale for both axes."""
    if symmetric_only and scale.h != scale.w:
        raise UserError(f"scale {scale} is asymmetric, but {model} takes one scale for both axes; "
                        f"ask for a single number like {scale.max:g}")


def scale_for_size(lr_h: int, lr_w: int, out_h: int, out_w: int, rule: str = "round",
                   symmetric_only: bool = False) -> Scale:
    """The scale a model is told for an output size: ``out / lr`` per axis, or for a model with
    one scale, the one whose size rule gives exactly this size (else one within a pixel)."""
    if not symmetric_only:
        return Scale(out_h / lr_h, out_w / lr_w)
    for s in (out_h / lr_h, out_w / lr_w):
        for _ in range(3):  # out / lr * lr may land one rounding below out
            if output_size(lr_h, lr_w, Scale(s, s), rule) == (out_h, out_w):
                return Scale(s, s)
            s = math.nextafter(s, math.inf)
    lo = max((out_h - 1) / lr_h, (out_w - 1) / lr_w)
    hi = min((out_h + 1) / lr_h, (out_w + 1) / lr_w)
    if not lo < hi:
        raise UserError(f"no single scale turns {lr_w}x{lr_h} into {out_w}x{out_h}, and this model takes one scale "
                        "for both axes; ask for a size of the image's aspect ratio, or for a scale")
    return Scale((lo + hi) / 2, (lo + hi) / 2)


FITS = ("stretch", "contain", "cover")


@dataclass(frozen=True)
class Fit:
    """How an image of one aspect ratio meets an output box of another.

    ``inner`` is the size the model renders; ``offset`` (top, left) places it in the box:
    zero for ``stretch`` (inner is the box), positive for ``contain`` (centred, the rest is
    padding), negative for ``cover`` (centred, the overflow is cropped).
    """

    mode: str
    box: tuple[int, int]
    inner: tuple[int, int]
    offset: tuple[int, int]

    @property
    def changes_aspect(self) -> bool:
        return self.mode == "stretch" and self.inner != self.box


def fit_size(in_h: int, in_w: int, box: tuple[int, int], mode: str = "stretch") -> Fit:
    """Where an ``in_h x in_w`` image goes in a ``box`` = (height, width) under ``mode``."""
    if mode not in FITS:
        raise UserError(f"invalid --fit {mode!r}: choose one of {', '.join(FITS)}")
    box_h, box_w = int(box[0]), int(box[1])
    if mode == "stretch":
        return Fit(mode, (box_h, box_w), (box_h, box_w), (0, 0))
    pick = min if mode == "contain" else max
    s = pick(box_h / in_h, box_w / in_w)
    inner_h = box_h if s == box_h / in_h else max(1, round(in_h * s))
    inner_w = box_w if s == box_w / in_w else max(1, round(in_w * s))
    return Fit(mode, (box_h, box_w), (inner_h, inner_w), ((box_h - inner_h) // 2, (box_w - inner_w) // 2))


def aspect_changes(in_h: int, in_w: int, box: tuple[int, int]) -> bool:
    """True when a box's aspect ratio differs from the image's by more than rounding to whole pixels."""
    box_h, box_w = box
    return abs(box_w / box_h - in_w / in_h) > (in_w / in_h) * (1.0 / min(box_h, box_w) + 1.0 / min(in_h, in_w))
