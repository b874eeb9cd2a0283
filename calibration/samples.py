"""Calibration samples: LR crops of real photos made with the evaluation protocol, plus queries.

A sample is what one pipeline call sees: an LR crop (the protocol's PIL bicubic shrink of an
HR crop), the scale the model is told, and a window of the output grid as ``rows``/``cols``
(the upsampler's query), with the HR pixels of that window so a quantised model can be scored
against the ground truth as well as against fp32.

Everything is drawn from a seeded generator over the sorted file list, so the same folder and
settings give the same samples; :func:`calibration_set_hash` names them (file names, file
bytes and settings) for the manifest and the range cache.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from asisr.errors import UserError
from asisr.runtime import contract
from asisr.evaluation.protocol import list_images, load_image, make_pair
from asisr.digest import sha256_file
from asisr.runtime.query import axis_coords

#: Scales spread over the range models are trained on, two beyond it and one asymmetric.
DEFAULT_SCALES: tuple[tuple[float, float], ...] = (
    (1.5, 1.5), (2.0, 2.0), (2.5, 2.5), (3.0, 3.0), (3.5, 3.5), (4.0, 4.0), (6.0, 6.0), (2.0, 3.5))
MIN_LR = 8


@dataclass(frozen=True)
class CalibrationSettings:
    """How samples are drawn; part of the calibration-set hash."""

    n_samples: int = 24
    lr_size: int = 48  # LR crop side (smaller where an image is too small for the scale)
    max_out: int = 64  # output window side: bounds the upsampler's cost per sample
    seed: int = 0
    scales: tuple[tuple[float, float], ...] = DEFAULT_SCALES
    # JPEG photos are shrunk 2x (box filter) first when still large enough: removes most block
    # artefacts, which the protocol's clean HR images do not have.
    jpeg_reduce: int = 2

    def to_dict(self) -> dict:
        d = asdict(self)
        d["scales"] = [list(s) for s in self.scales]
        return d

    def for_scale_range(self, scale_max: float) -> "CalibrationSettings":
        """The same settings without scales beyond a model's range (at least one scale is kept)."""
        kept = tuple(s for s in self.scales if max(s) <= scale_max) or (min(self.scales, key=max),)
        return CalibrationSettings(self.n_samples, self.lr_size, self.max_out, self.seed, kept, self.jpeg_reduce)


@dataclass
class CalibSample:
    name: str
    lr: np.ndarray  # (1, 3, h, w) float32 in [0, 1]
    scale: np.ndarray  # (1, 2) float32
    rows: np.ndarray  # (1, Hq) float32: a window of the output rows
    cols: np.ndarray  # (1, Wq) float32
    hr: np.ndarray  # (Hq, Wq, 3) uint8: the ground truth of that window

    def backbone_feed(self) -> dict[str, np.ndarray]:
        return contract.backbone_feeds(self.lr, self.scale)

    def upsampler_feed(self, features: np.ndarray) -> dict[str, np.ndarray]:
        return contract.upsampler_feeds(features, self.scale, self.rows, self.cols)


@dataclass
class CalibrationSet:
    samples: list[CalibSample]
    settings: CalibrationSettings
    files: list[str] = field(default_factory=list)
    digest: str = ""


def calibration_set_hash(files: list[Path], settings: CalibrationSettings) -> str:
    """sha256 over the image names and contents and the sampling settings."""
    payload = {"files": [[p.name, sha256_file(p)] for p in files], "settings": settings.to_dict()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _reduced(img: np.ndarray, path: Path, factor: int, need: tuple[int, int]) -> np.ndarray:
    if factor <= 1 or path.suffix.lower() not in (".jpg", ".jpeg"):
        return img
    h, w = img.shape[0] // factor, img.shape[1] // factor
    if h < need[0] or w < need[1]:
        return img
    return np.asarray(Image.fromarray(img).reduce(factor))


def build_calibration_set(folder: str | Path, settings: CalibrationSettings = CalibrationSettings()) -> CalibrationSet:
    """Draw ``settings.n_samples`` samples from the images in ``folder`` (UserError if none fit)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"calibration folder not found: {folder}")
    files = list_images(folder)
    if settings.n_samples < 1:
        raise UserError(f"the calibration set needs at least one sample, got {settings.n_samples}")
    rng = np.random.default_rng(settings.seed)
    order = [files[i] for i in rng.permutation(len(files))]
    plan: dict[Path, list[tuple[int, tuple[float, float]]]] = {}
    for i in range(settings.n_samples):
        plan.setdefault(order[i % len(order)], []).append((i, settings.scales[i % len(settings.scales)]))
    samples: dict[int, CalibSample] = {}
    for path, items in plan.items():  # each image is decoded once
        full = load_image(path)
        for i, (sh, sw) in items:
            need = (math.ceil(settings.lr_size * sh), math.ceil(settings.lr_size * sw))
            img = _reduced(full, path, settings.jpeg_reduce, need)
            sample = _sample(img, f"{path.name}#{i}", sh, sw, settings, rng)
            if sample is not None:
                samples[i] = sample
    if not samples:
        raise UserError(f"no image in {folder} is large enough for a calibration crop")
    return CalibrationSet([samples[i] for i in sorted(samples)], settings, [p.name for p in files],
                          calibration_set_hash(files, settings))


def _sample(img: np.ndarray, name: str, sh: float, sw: float, settings: CalibrationSettings,
            rng: np.random.Generator) -> CalibSample | None:
    H, W = img.shape[:2]
    h = min(settings.lr_size, math.floor(H / sh + 1e-9))
    w = min(settings.lr_size, math.floor(W / sw + 1e-9))
    if h < MIN_LR or w < MIN_LR:
        return None
    ch, cw = min(H, math.ceil(h * sh)), min(W, math.ceil(w * sw))  # floor(ch / sh) == h
    y = int(rng.integers(0, H - ch + 1))
    x = int(rng.integers(0, W - cw + 1))
    hr, lr = make_pair(np.ascontiguousarray(img[y:y + ch, x:x + cw]), sh, sw)
    out_h, out_w = hr.shape[:2]
    r0, r1 = _window(out_h, settings.max_out, math.ceil(sh), rng)
    c0, c1 = _window(out_w, settings.max_out, math.ceil(sw), rng)
    return CalibSample(
        name=name,
        lr=(lr.astype(np.float32) / np.float32(255.0)).transpose(2, 0, 1)[None].copy(),
        scale=np.array([[out_h / lr.shape[0], out_w / lr.shape[1]]], np.float32),
        rows=axis_coords(lr.shape[0], out_h, r0, r1).astype(np.float32)[None],
        cols=axis_coords(lr.shape[1], out_w, c0, c1).astype(np.float32)[None],
        hr=np.ascontiguousarray(hr[r0:r1, c0:c1]),
    )


def _window(n: int, size: int, margin: int, rng: np.random.Generator) -> tuple[int, int]:
    """A ``size``-long window of ``0..n``, kept off the crop's border (where bicubic shrinking
    saw no neighbours) when there is room, like the protocol's shave."""
    if n <= size:
        return 0, n
    lo, hi = (margin, n - margin - size) if n - 2 * margin >= size else (0, n - size)
    start = int(rng.integers(lo, hi + 1))
    return start, start + size
