"""The evaluation protocol: how an HR image becomes an (HR, LR) pair, and how images are found.

This is the protocol of ``shared/README.md`` ("Evaluation protocol"), the one every reference
number of the project was computed with. For an HR image of ``H x W`` and a scale ``(sh, sw)``:

1. ``h = floor(H / sh + 1e-9)``, ``w = floor(W / sw + 1e-9)``; the HR image is cropped to its
   top-left ``round(h * sh) x round(w * sw)`` pixels (the ``1e-9`` keeps e.g. ``H / 1.6`` from
   landing just below an integer because of floating point);
2. the LR image is PIL's ``Image.resize((w, h), Image.Resampling.BICUBIC)`` of the cropped HR, uint8 RGB in
   and uint8 out;
3. the model upscales the LR image to the cropped HR size; its float output in [0, 1] is scored
   against the cropped HR without rounding to uint8 (see :mod:`asisr.evaluation.metrics`).

Images are read with PIL as 8-bit RGB (greyscale, palette and alpha images are converted to RGB,
16-bit images are scaled to 8 bits). EXIF orientation is not applied: pixels are scored as stored.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from asisr.errors import UserError

#: File extensions (lower case) that :func:`list_images` picks up.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

# Benchmark images can be large (e.g. 8K photographs); PIL's decompression-bomb guard (about
# 179 Mpx) stays in place, and the error it raises is reported as a UserError.


def lr_size(hr_h: int, hr_w: int, scale_h: float, scale_w: float) -> tuple[int, int]:
    """LR size ``(h, w)`` for an HR image of ``hr_h x hr_w`` at scale ``(scale_h, scale_w)``.

    May be 0 for an image smaller than the scale; :func:`make_pair` refuses that.
    """
    _check_scale(scale_h, scale_w)
    return math.floor(hr_h / scale_h + 1e-9), math.floor(hr_w / scale_w + 1e-9)


def cropped_hr_size(hr_h: int, hr_w: int, scale_h: float, scale_w: float) -> tuple[int, int]:
    """Size ``(H', W')`` of the HR crop that is scored (and that the model is asked to produce)."""
    h, w = lr_size(hr_h, hr_w, scale_h, scale_w)
    return round(h * scale_h), round(w * scale_w)


def shave_for(scale_h: float, scale_w: float) -> int:
    """Border (pixels, on every side) excluded from the metrics: ``ceil(max(sh, sw))``."""
    return math.ceil(max(scale_h, scale_w))


def make_pair(hr: np.ndarray, scale_h: float, scale_w: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(hr_cropped, lr)`` for a uint8 RGB HR image ``(H, W, 3)``, exactly per the protocol.

    ``scale_w`` defaults to ``scale_h`` (a symmetric scale). Both results are uint8 ``(., ., 3)``
    arrays; ``hr_cropped`` is a view of ``hr``'s top-left corner.
    Raises :class:`~asisr.errors.UserError` when the image is too small for the scale.
    """
    if scale_w is None:
        scale_w = scale_h
    hr = np.asarray(hr)
    if hr.dtype != np.uint8 or hr.ndim != 3 or hr.shape[2] != 3:
        raise ValueError(f"make_pair needs a uint8 (H, W, 3) RGB array, got {hr.dtype} {hr.shape}")
    H, W = hr.shape[:2]
    h, w = lr_size(H, W, scale_h, scale_w)
    if h < 1 or w < 1:
        raise UserError(f"a {W}x{H} image is too small for scale {_fmt_scale(scale_h, scale_w)}")
    ch, cw = round(h * scale_h), round(w * scale_w)
    hr_c = hr[:ch, :cw]
    lr = np.asarray(Image.fromarray(np.ascontiguousarray(hr_c), "RGB").resize((w, h), Image.Resampling.BICUBIC))
    return hr_c, lr


def list_images(folder: str | Path) -> list[Path]:
    """The image files directly inside ``folder`` (not recursive), sorted by file name.

    Hidden files (``.name``) are skipped. Raises :class:`~asisr.errors.UserError` if the folder
    does not exist, is not a folder, or holds no image.
    """
    folder = Path(folder)
    if not folder.exists():
        raise UserError(f"data folder not found: {folder}")
    if not folder.is_dir():
        raise UserError(f"not a folder: {folder}")
    files = sorted(
        (p for p in folder.iterdir()
         if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()),
        key=lambda p: p.name,
    )
    if not files:
        raise UserError(
            f"no images in {folder} (looked for {', '.join(e.lstrip('.') for e in IMAGE_EXTENSIONS)})"
        )
    return files


def check_image(path: str | Path) -> tuple[int, int]:
    """Cheap check that ``path`` is a readable image (header only); returns its ``(H, W)``.

    Used to refuse a folder with a broken file before any work is done; a file whose header is
    fine but whose pixel data is damaged is still caught by :func:`load_image`.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise UserError(f"cannot read image {path}: {_reason(e)}") from None


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as a uint8 RGB array ``(H, W, 3)``.

    Greyscale, palette, CMYK and alpha images are converted with PIL's ``convert("RGB")`` (alpha
    is dropped); 16-bit greyscale images are scaled to 8 bits (``round(v / 257)``).
    Raises :class:`~asisr.errors.UserError` naming the file if it cannot be decoded.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            return _to_rgb8(im)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise UserError(f"cannot read image {path}: {_reason(e)}") from None


def _to_rgb8(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        a = np.asarray(im).astype(np.float64)
        if im.mode.startswith("I;16") or a.max(initial=0) > 255:
            a = a / 257.0
        g = np.clip(np.rint(a), 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    if im.mode == "F":
        a = np.asarray(im).astype(np.float64)
        if a.max(initial=0) <= 1.0:
            a = a * 255.0
        g = np.clip(np.rint(a), 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.array(im, dtype=np.uint8)


def _reason(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__


def _check_scale(scale_h: float, scale_w: float) -> None:
    for s in (scale_h, scale_w):
        try:
            ok = math.isfinite(float(s)) and float(s) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise UserError(f"invalid scale {_fmt_scale(scale_h, scale_w)}: must be a positive number")


def _fmt_scale(scale_h, scale_w) -> str:
    try:
        return f"{scale_h:g}" if scale_h == scale_w else f"{scale_w:g}x{scale_h:g}"
    except (TypeError, ValueError):
        return f"{scale_h!r}x{scale_w!r}"
