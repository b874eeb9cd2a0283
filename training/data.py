"""EQSR's data processing: every sample its own scale, every batch the same tensor shapes.

Sample ``i`` is a pure function of ``(seed, i)``: a resumed run draws exactly the batches
the interrupted one would have, without saving any loader state.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from asisr.errors import UserError
from asisr.imageio import IMAGE_SUFFIXES
from asisr.runtime import contract
from asisr.runtime.query import axis_coords

HR = "hr"  # the ground-truth pixels at the queried positions, beside the model's inputs


@dataclass(frozen=True)
class SamplingConfig:
    patch: int = 48  # LR patch edge and HR window edge
    scale_min: float = 1.0
    scale_max: float = 4.0
    asymmetric: bool = False  # draw s_h and s_w independently
    query: str = "window"  # "window": contiguous HR pixels (EQSR); "random": random rows x cols (LIIF-style)
    augment: bool = True  # flips and transpose


def list_training_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"training data folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"no images in {folder}")
    return files


def load_hr(path: Path, predownscale: bool | None = None) -> np.ndarray:
    """RGB uint8; JPEGs are halved with a box filter by default, which removes most block artefacts."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if predownscale if predownscale is not None else path.suffix.lower() in (".jpg", ".jpeg"):
                img = img.reduce(2)
            return np.asarray(img).copy()
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read training image {path}: {e}") from None


class MixedScaleDataset(torch.utils.data.Dataset):
    """Index ``i`` -> one training sample drawn with ``numpy.random.default_rng((seed, i))``.

    Returns ``lr`` (3, p, p) in [0, 1], ``scale`` (2,), ``rows`` (p,), ``cols`` (p,) in LR pixel
    units, ``hr`` (3, p, p): the HR pixels at those coordinates.
    """

    def __init__(self, images: list[np.ndarray], config: SamplingConfig, seed: int, length: int = 1 << 40):
        min_edge = round(config.patch * config.scale_max)
        usable = [im for im in images if min(im.shape[:2]) >= min_edge]
        if not usable:
            raise UserError(f"no training image is at least {min_edge} px on its short side "
                            f"(patch {config.patch} x scale {config.scale_max:g})")
        self.images = usable
        self.config = config
        self.seed = seed
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        c = self.config
        rng = np.random.default_rng((self.seed, index))
        image = self.images[rng.integers(len(self.images))]
        s_h = rng.uniform(c.scale_min, c.scale_max)
        s_w = rng.uniform(c.scale_min, c.scale_max) if c.asymmetric else s_h
        hr_h, hr_w = round(c.patch * s_h), round(c.patch * s_w)
        flip_v, flip_h, transpose = (rng.random(3) < 0.5) if c.augment else (False, False, False)
        if transpose:
            hr_h, hr_w = hr_w, hr_h  # crop the transposed shape, so the patch has (hr_h, hr_w) after transposing
        y = rng.integers(image.shape[0] - hr_h + 1)
        x = rng.integers(image.shape[1] - hr_w + 1)
        crop = image[y:y + hr_h, x:x + hr_w]
        if transpose:
            crop = crop.transpose(1, 0, 2)
            hr_h, hr_w = hr_w, hr_h
        if flip_v:
            crop = crop[::-1]
        if flip_h:
            crop = crop[:, ::-1]
        crop = np.ascontiguousarray(crop)
        lr = np.asarray(Image.fromarray(crop).resize((c.patch, c.patch), Image.Resampling.BICUBIC))
        p = c.patch
        if c.query == "window":
            y0, x0 = rng.integers(hr_h - p + 1), rng.integers(hr_w - p + 1)
            ri, ci = np.arange(y0, y0 + p), np.arange(x0, x0 + p)
        elif c.query == "random":
            ri = np.sort(rng.choice(hr_h, p, replace=False))
            ci = np.sort(rng.choice(hr_w, p, replace=False))
        else:
            raise UserError(f"unknown query mode {c.query!r}: window or random")
        rows = axis_coords(p, hr_h)[ri]
        cols = axis_coords(p, hr_w)[ci]
        hr = crop[ri][:, ci]
        return {
            contract.LR: torch.from_numpy(lr.transpose(2, 0, 1).astype(np.float32) / 255.0),
            contract.SCALE: torch.tensor([hr_h / p, hr_w / p], dtype=torch.float32),
            contract.ROWS: torch.from_numpy(rows.astype(np.float32)),
            contract.COLS: torch.from_numpy(cols.astype(np.float32)),
            HR: torch.from_numpy(hr.transpose(2, 0, 1).astype(np.float32) / 255.0),
        }


class SequentialFrom(torch.utils.data.Sampler):
    """Indices ``start, start+1, ...``: with a deterministic dataset, resuming is starting later."""

    def __init__(self, start: int, count: int):
        self.start, self.count = start, count

    def __iter__(self):
        return iter(range(self.start, self.start + self.count))

    def __len__(self) -> int:
        return self.count
