"""Reading and writing image files: every failure is a one-line ``UserError``; writes are atomic.

OpenCV reads and writes 8- and 16-bit grey, RGB and RGBA PNG/TIFF alike (PIL cannot
write 16-bit colour). Arrays are RGB(A) order in and out of this module.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from asisr.atomic import atomic_path
from asisr.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_SIXTEEN_BIT_OK = (".png", ".tif", ".tiff")


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_image(path: str | Path) -> np.ndarray:
    """HxW (grey), HxWx3 (RGB) or HxWx4 (RGBA); uint8 or uint16."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"input not found: {path}")
    if not path.is_file():
        raise UserError(f"input is not a file: {path}")
    if path.stat().st_size == 0:
        raise UserError(f"input is empty (0 bytes): {path}")
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise UserError(f"cannot decode image (corrupt or not an image): {path}")
    if image.dtype not in (np.uint8, np.uint16):
        if np.issubdtype(image.dtype, np.floating):
            image = np.clip(np.nan_to_num(image), 0, 1).astype(np.float32)
        else:
            raise UserError(f"unsupported pixel type {image.dtype} in {path}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 3:
        image = image[:, :, ::-1]
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, [2, 1, 0, 3]]
    elif image.ndim != 2:
        raise UserError(f"unsupported channel layout {image.shape} in {path}")
    return np.ascontiguousarray(image)


def check_writable(path: str | Path, overwrite: bool) -> Path:
    """Refuse before any work if ``path`` exists (without ``overwrite``) or has no image suffix."""
    path = Path(path)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise UserError(f"unsupported output format {path.suffix or '(none)'!r}: use one of {', '.join(IMAGE_SUFFIXES)}")
    if path.exists() and not overwrite:
        raise UserError(f"output exists: {path} (use --overwrite to replace it)")
    if path.exists() and path.is_dir():
        raise UserError(f"output is a directory: {path}")
    return path


def write_image(path: str | Path, image: np.ndarray) -> None:
    """Write atomically: a temporary file in the same folder, then a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if np.issubdtype(image.dtype, np.floating):
        image = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    if image.dtype == np.uint16 and suffix not in _SIXTEEN_BIT_OK:
        image = (image // 257).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 3:
        image = image[:, :, ::-1]
    elif image.ndim == 3 and image.shape[2] == 4:
        if suffix in (".jpg", ".jpeg"):
            image = image[:, :, [2, 1, 0]]  # JPEG has no alpha
        else:
            image = image[:, :, [2, 1, 0, 3]]
    ok, encoded = cv2.imencode(suffix, np.ascontiguousarray(image))
    if not ok:
        raise UserError(f"cannot encode image as {suffix}: {path}")
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(encoded.tobytes())
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
