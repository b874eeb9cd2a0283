"""Reading and writing image files: every failure is a one-line ``UserError``; writes are atomic.

OpenCV reads and writes 8- and 16-bit grey, RGB and RGBA PNG/TIFF alike (PIL cannot
write 16-bit colour). Arrays are RGB(A) order in and out of this module. Whatever OpenCV and
its codec libraries say while decoding or encoding (``[ WARN ...]`` lines, ``libpng error: ...``)
is kept off the terminal: the ``UserError`` is the one message. The checks a command runs before
any work (``check_output_folder``, ``check_free_space``, ``image_header``) live here too.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from asisr.atomic import atomic_path
from asisr.errors import UserError
from asisr.units import format_bytes

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_SIXTEEN_BIT_OK = (".png", ".tif", ".tiff")


def list_images(folder: str | Path) -> list[Path]:
    """The images in ``folder``, by name; hidden files (temporaries of a write in progress, ``._*``) are not images."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


_quiet = threading.Lock()
_quiet_state: dict = {"depth": 0, "saved_fd": None, "log_level": None}


@contextmanager
def quiet_codecs() -> Iterator[None]:
    """Silence OpenCV's log and what codec libraries print on the process's stderr (libpng does) meanwhile.

    Nests and overlaps across threads: the first to enter silences, the last to leave restores.
    """
    with _quiet:
        if _quiet_state["depth"] == 0:
            _silence(_quiet_state)
        _quiet_state["depth"] += 1
    try:
        yield
    finally:
        with _quiet:
            _quiet_state["depth"] -= 1
            if _quiet_state["depth"] == 0:
                _restore(_quiet_state)


def _silence(state: dict) -> None:
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is not None:
        state["log_level"] = logging.getLogLevel()
        logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no file descriptor 2: nothing to silence there
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
        finally:
            os.close(devnull)
    except OSError:
        os.close(saved)
        return
    state["saved_fd"] = saved


def _restore(state: dict) -> None:
    saved, state["saved_fd"] = state["saved_fd"], None
    if saved is not None:
        os.dup2(saved, 2)
        os.close(saved)
    level, state["log_level"] = state["log_level"], None
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is not None and level is not None:
        logging.setLogLevel(level)


def read_image(path: str | Path) -> np.ndarray:
    """HxW (grey), HxWx3 (RGB) or HxWx4 (RGBA); uint8 or uint16."""
    path = check_input_file(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    with quiet_codecs():
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise UserError(f"cannot decode image (corrupt or not an image): {path}")
    if image.dtype not in (np.uint8, np.uint16):
        if np.issubdtype(image.dtype, np.floating):
            image = np.clip(np.nan_to_num(image), 0, 1).astype(np.float32)
        else:
            raise UserError(f"unsupported pixel type {image.dtype} in {path}")
    return rgb_order(image, str(path))


def check_input_file(path: str | Path) -> Path:
    """An input that exists, is a file and is not empty, or one error line saying which it is not."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"input not found: {path}")
    if not path.is_file():
        raise UserError(f"input is not a file: {path}")
    if path.stat().st_size == 0:
        raise UserError(f"input is empty (0 bytes): {path}")
    return path


def rgb_order(image: np.ndarray, what: str) -> np.ndarray:
    """OpenCV's decoded BGR(A) / grey layout as asisr's RGB(A) / HxW grey; ``what`` names the source in errors."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 3:
        image = image[:, :, ::-1]
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, [2, 1, 0, 3]]
    elif image.ndim != 2:
        raise UserError(f"unsupported channel layout {image.shape} in {what}")
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
    with quiet_codecs():
        ok, encoded = cv2.imencode(suffix, np.ascontiguousarray(image))
    if not ok:
        raise UserError(f"cannot encode image as {suffix}: {path}")
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(encoded.tobytes())
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None


def image_header(path: str | Path) -> tuple[int, int, int, int] | None:
    """(height, width, channels, bytes per sample) as ``read_image`` would give them, from the header only.

    None when the header cannot be read (``read_image`` then says why). Used to plan outputs
    (their disk space) before any image is decoded.
    """
    from PIL import Image

    path = Path(path)
    try:
        with Image.open(path) as im:
            w, h = im.size
            mode, bands = im.mode, len(im.getbands())
            transparent = "transparency" in im.info
            tags = getattr(im, "tag_v2", None)  # TIFF: BitsPerSample
            bits = tags.get(258) if tags is not None else None
        with path.open("rb") as f:
            head = f.read(26)
    except Exception:  # PIL raises many kinds on a bad file
        return None
    if mode == "P":
        channels = 4 if transparent else 3
    elif mode == "CMYK":
        channels = 3
    else:
        channels = {1: 1, 2: 4, 3: 3, 4: 4}.get(bands, 3)  # grey + alpha is read as RGBA
    sixteen = mode.startswith("I") or (isinstance(bits, tuple) and max(bits, default=8) > 8)
    if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 25:
        sixteen = head[24] == 16
    return h, w, channels, 2 if sixteen else 1


def output_bytes(out_hw: tuple[int, int], channels: int, bytes_per_sample: int, suffix: str) -> int:
    """Upper estimate of an output file's size: its pixels uncompressed, in the kind ``write_image`` writes."""
    suffix = suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        channels = min(channels, 3)  # JPEG has no alpha
    if suffix not in _SIXTEEN_BIT_OK:
        bytes_per_sample = 1
    return int(out_hw[0]) * int(out_hw[1]) * max(1, int(channels)) * max(1, min(2, int(bytes_per_sample)))


def _existing_ancestor(folder: Path) -> Path:
    for p in (folder, *folder.parents):
        if p.exists():
            return p
    return Path(".")


def check_output_folder(folder: str | Path) -> None:
    """Refuse, before any work, a folder outputs cannot be written to (or created in): probed with a real file."""
    folder = Path(folder)
    base = _existing_ancestor(folder.absolute())
    if not base.is_dir():
        raise UserError(f"cannot create output folder {folder}: {base} is a file")
    try:
        with tempfile.TemporaryFile(dir=base):  # unnamed where the kernel allows, and gone when closed
            pass
    except OSError as e:
        reason = e.strerror or str(e)
        if base == folder.absolute():
            raise UserError(f"cannot write to output folder {folder}: {reason}") from None
        raise UserError(f"cannot create output folder {folder}: {base} is not writable ({reason})") from None


def check_free_space(folder: str | Path, needed: int, what: str) -> None:
    """Refuse, before any work, outputs (``what``) whose estimated ``needed`` bytes exceed the free space."""
    folder = Path(folder)
    try:
        free = shutil.disk_usage(_existing_ancestor(folder.absolute())).free
    except OSError:
        return  # the space is unknown: the write itself will tell
    if needed > free:
        raise UserError(f"not enough disk space for {what}: about {format_bytes(needed)} needed (uncompressed), "
                        f"{format_bytes(free)} free in {folder}")


def folder_jobs(folder: Path, out: Path, overwrite: bool) -> tuple[list[tuple[Path, Path]], int]:
    """(source, output) pairs a folder run still has to do, and how many outputs already existed."""
    if out.exists() and not out.is_dir():
        raise UserError(f"INPUT is a folder, so --out must be a folder, but {out} is a file")
    images = list_images(folder)
    if not images:
        raise UserError(f"no images found in {folder}")
    jobs = [(src, out / src.name) for src in images if overwrite or not (out / src.name).exists()]
    return jobs, len(images) - len(jobs)


def done_elsewhere(dst: Path, overwrite: bool, started_ns: int) -> bool:
    """Another process wrote ``dst`` meanwhile: without overwrite it exists now, with it it was written
    since this run began (``started_ns``, a ``time.time_ns()``)."""
    try:
        stat = dst.stat()
    except FileNotFoundError:
        return False
    return not overwrite or stat.st_mtime_ns >= started_ns
