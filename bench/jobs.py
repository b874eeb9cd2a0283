"""Benchmark jobs: which LR images are upscaled to which output sizes.

* ``set5_x4``: the five Set5 images at x4 through the evaluation protocol (``make_pair``),
  scored with Y-PSNR so that a faster backend that changed the numbers is visible;
* ``frame_x4``: a 480x270 frame to 1920x1080; ``frame_x2``: 1920x1080 to 3840x2160 (4K);
* ``x3.3``: 640x360 at the non-integer scale 3.3 (2112x1188).
* ``WxH@S`` (e.g. ``64x48@2.5``): a synthetic W x H frame at scale S, for quick checks.

Frames are synthetic unless a photo is given: LIIF's cost does not depend on image content,
so deterministic gradients, rings, edges and noise are enough and need no data files.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from asisr.errors import UserError

JOB_NAMES = ("set5_x4", "frame_x4", "frame_x2", "x3.3")
_FRAMES = {  # name -> (LR width, LR height, scale)
    "frame_x4": (480, 270, 4.0),
    "frame_x2": (1920, 1080, 2.0),
    "x3.3": (640, 360, 3.3),
}
_CUSTOM = re.compile(r"^(\d+)x(\d+)@([0-9.]+)$")


@dataclass
class Item:
    """One upscale: a uint8 RGB LR image, its output size (H, W) and, when scored, the HR truth."""

    name: str
    lr: np.ndarray
    out_hw: tuple[int, int]
    hr: np.ndarray | None = None

    @property
    def output_mpx(self) -> float:
        return self.out_hw[0] * self.out_hw[1] / 1e6


@dataclass
class Job:
    name: str
    description: str
    scale: float
    items: list[Item] = field(default_factory=list)
    shave: int | None = None  # set when the job is scored (PSNR)

    @property
    def output_mpx(self) -> float:
        return sum(i.output_mpx for i in self.items)

    def warmup_item(self, edge: int = 48) -> Item:
        """A small crop of the first LR image at the job's scale: warms sessions and caches cheaply."""
        first = self.items[0]
        lr = np.ascontiguousarray(first.lr[:edge, :edge])
        h, w = lr.shape[:2]
        sh, sw = first.out_hw[0] / first.lr.shape[0], first.out_hw[1] / first.lr.shape[1]
        return Item("warm-up", lr, (max(1, round(h * sh)), max(1, round(w * sw))))


class JobSkipped(Exception):
    """A job that cannot run here (e.g. no Set5 folder); the message says why."""


def synthetic_frame(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A deterministic uint8 RGB test card: smooth gradients, concentric rings, hard edges, noise."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    y /= max(1, height - 1)
    x /= max(1, width - 1)
    r = np.hypot(x - 0.6, y - 0.4)
    rings = 0.5 + 0.5 * np.sin(60.0 * r)
    blocks = ((np.floor(x * 12) + np.floor(y * 7)) % 2).astype(np.float32)
    noise = np.random.default_rng(seed).random((height, width, 3), dtype=np.float32)
    img = np.stack([0.5 * x + 0.3 * rings + 0.2 * blocks, 0.6 * y + 0.4 * rings, 0.4 * (1 - x) + 0.6 * blocks], axis=2)
    img = 0.85 * img + 0.15 * noise
    return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)


def _frame(width: int, height: int, photo: Path | None) -> np.ndarray:
    if photo is None:
        return synthetic_frame(height, width)
    from asisr.evaluation import load_image

    im = Image.fromarray(load_image(photo))
    return np.asarray(im.resize((width, height), Image.Resampling.BICUBIC, reducing_gap=3.0))


def frame_job(name: str, lr_w: int, lr_h: int, scale: float, photo: Path | None = None) -> Job:
    out_hw = (max(1, round(lr_h * scale)), max(1, round(lr_w * scale)))
    source = f"photo {photo.name}" if photo else "synthetic frame"
    return Job(name, f"{lr_w}x{lr_h} -> {out_hw[1]}x{out_hw[0]} (x{scale:g}, {source})", scale,
               [Item(f"{lr_w}x{lr_h}", _frame(lr_w, lr_h, photo), out_hw)])


def set5_job(folder: Path | None, scale: float = 4.0) -> Job:
    """The protocol's (HR crop, LR) pairs of every image in ``folder``."""
    from asisr.evaluation import list_images, load_image, make_pair, shave_for

    if folder is None or not Path(folder).is_dir():
        raise JobSkipped(f"Set5 folder not found ({folder or 'none given'}); pass --set5 DIR")
    items = []
    for path in list_images(folder):
        hr, lr = make_pair(load_image(path), scale, scale)
        items.append(Item(path.name, lr, hr.shape[:2], hr))
    return Job(f"set5_x{scale:g}", f"{len(items)} images of {Path(folder).name} at x{scale:g} (evaluation protocol)",
               scale, items, shave=shave_for(scale, scale))


def parse_jobs(text: str) -> list[str]:
    """Comma-separated job names or ``WxH@S`` specs, checked before anything runs."""
    names = [t.strip() for t in str(text).split(",") if t.strip()]
    if not names:
        raise UserError("--jobs is empty")
    for n in names:
        if n in JOB_NAMES:
            continue
        m = _CUSTOM.match(n)
        if not m:
            raise UserError(f"unknown job {n!r}: choose from {', '.join(JOB_NAMES)} "
                            "or WIDTHxHEIGHT@SCALE like 64x48@2.5")
        w, h, s = int(m.group(1)), int(m.group(2)), float(m.group(3))
        if w < 2 or h < 2 or not math.isfinite(s) or s < 1:
            raise UserError(f"invalid job {n!r}: the frame must be at least 2x2 and the scale at least 1")
    return names


def make_job(name: str, set5: Path | None = None, photo: Path | None = None) -> Job:
    """Build a job by name; raises ``JobSkipped`` when its data is missing."""
    if name == "set5_x4":
        return set5_job(set5, 4.0)
    if name in _FRAMES:
        w, h, s = _FRAMES[name]
        return frame_job(name, w, h, s, photo)
    m = _CUSTOM.match(name)
    if m is None:
        raise UserError(f"unknown job {name!r}")
    return frame_job(name, int(m.group(1)), int(m.group(2)), float(m.group(3)), photo)
