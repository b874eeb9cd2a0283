"""The Python API: ``asisr.Upscaler``, what ``asisr-run`` does, from Python.

Why a separate class from ``asisr.runtime.upscaler.Upscaler``: that one runs a ``Pipeline`` the
caller assembled and speaks the runtime's conventions (sizes as (height, width), ``Scale``
objects, numpy only). This one takes what a user has at hand, in the command line's
conventions: a model name or path, sizes as (width, height), a scale as a number, an
(across, down) pair or the CLI's ``"3.5x2"``, and numpy arrays or PIL images, returned as the
same kind. Bad input raises ``asisr.errors.UserError`` with one readable line.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal, Union

import numpy as np

from asisr.errors import UserError
from asisr.scale import Scale, parse_scale

if TYPE_CHECKING:
    from PIL import Image as PILImage

Backend = Literal["auto", "openvino", "onnxruntime", "torch", "tensorrt"]
Precision = Literal["auto", "fp32", "bf16", "fp16", "int8"]
Fit = Literal["stretch", "contain", "cover"]
ScaleLike = Union[float, int, str, tuple[float, float], Scale]
ImageLike = Union[np.ndarray, "PILImage.Image"]


def to_scale(scale: ScaleLike) -> Scale:
    """A number, an (across, down) pair, ``"3.5x2"`` (3.5 across, 2 down) or a ``Scale``."""
    if isinstance(scale, Scale):
        return scale
    if isinstance(scale, str):
        return parse_scale(scale)
    if isinstance(scale, (tuple, list)) and len(scale) == 2:
        return parse_scale(f"{float(scale[0])!r}x{float(scale[1])!r}")
    if isinstance(scale, (int, float)) and not isinstance(scale, bool):
        return parse_scale(repr(float(scale)))
    raise UserError(f"invalid scale {scale!r}: expected a number, an (across, down) pair or a string like '3.5x2'")


def to_size(size: tuple[int, int]) -> tuple[int, int]:
    """(width, height), as the command line's WIDTHxHEIGHT, -> the runtime's (height, width)."""
    try:
        width, height = (int(v) for v in size)
        exact = all(float(v) == int(v) for v in size)
    except (TypeError, ValueError):
        raise UserError(f"invalid size {size!r}: expected (width, height) in pixels, e.g. (1920, 1080)") from None
    if not exact or width <= 0 or height <= 0:
        raise UserError(f"invalid size {size!r}: width and height must be positive whole pixels")
    return height, width


class Upscaler:
    """A model opened once, ready to upscale many images.

    ``model``: a bundled model's name (``"liif"``, ``"lmf"``, ``"eqsr_light"``), an exported
    directory or a checkpoint (checkpoints need ``asisr[torch]``); None is the bundled default.
    ``backend`` and ``precision`` as ``asisr-run``'s ``--backend`` / ``--precision`` (``auto``:
    OpenVINO where installed, bf16 where the CPU has the units and the model's measured drop is
    within 0.02 dB); ``precision_reason`` says what was chosen and why. ``max_memory``: the tiling
    budget in bytes or as ``"512M"``. Use it as a context manager, or call ``close()``.
    """

    def __init__(self, model: str | Path | None = None, *, backend: Backend = "auto", precision: Precision = "auto",
                 threads: int | None = None, max_memory: int | str | None = None, tile: int | None = None) -> None:
        from asisr.runtime.tiling import parse_memory
        from asisr.sources import open_upscaler

        if threads is not None and threads < 1:
            raise UserError("threads must be positive")
        budget = parse_memory(max_memory) if isinstance(max_memory, str) else max_memory
        self._runtime = open_upscaler(model, backend=backend, threads=threads, tile=tile, max_memory=budget,
                                      precision=precision)
        self._runtime.__enter__()
        self._open = True

    @property
    def model(self) -> str:
        return self._runtime.pipeline.model

    @property
    def backend(self) -> str:
        return self._runtime.pipeline.backend

    @property
    def precision(self) -> str:
        return self._runtime.pipeline.precision

    @property
    def precision_reason(self) -> str | None:
        return self._runtime.pipeline.precision_reason

    @property
    def max_scale(self) -> float:
        return self._runtime.max_scale

    def upscale(self, image: ImageLike, scale: ScaleLike | None = None, *, size: tuple[int, int] | None = None,
                fit: Fit = "stretch") -> ImageLike:
        """``image`` (HWC numpy array of uint8 / uint16 / float, grey, RGB or RGBA, or a PIL image)
        upscaled by ``scale`` or to ``size`` = (width, height); returned as the same kind and type.
        ``fit`` (with ``size``): ``stretch``, ``contain`` (padded) or ``cover`` (cropped)."""
        if not self._open:
            raise UserError("this Upscaler is closed")
        if (scale is None) == (size is None):
            raise UserError("give exactly one of a scale or a size")
        array, back = _as_array(image)
        out = self._runtime.upscale(array, None if scale is None else to_scale(scale),
                                    None if size is None else to_size(size), fit)
        return back(out)

    def upscale_file(self, src: str | Path, dst: str | Path, scale: ScaleLike | None = None, *,
                     size: tuple[int, int] | None = None, fit: Fit = "stretch", overwrite: bool = False) -> Path:
        """Read ``src``, upscale it, write ``dst`` atomically (never a partial file); an existing
        ``dst`` is kept unless ``overwrite``. Returns ``dst``."""
        from asisr.imageio import read_image, write_image

        dst = Path(dst)
        if dst.exists() and not overwrite:
            raise UserError(f"output exists: {dst} (pass overwrite=True to replace it)")
        write_image(dst, self.upscale(read_image(Path(src)), scale, size=size, fit=fit))
        return dst

    def close(self) -> None:
        if self._open:
            self._runtime.__exit__(None, None, None)
            self._open = False

    def __enter__(self) -> "Upscaler":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"asisr.Upscaler({self.model!r}, backend={self.backend!r}, precision={self.precision!r})"


def _as_array(image: ImageLike):
    """(numpy array, a function turning an output array back into the input's kind)."""
    if isinstance(image, np.ndarray):
        return image, lambda out: out
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a base dependency
        Image = None
    if Image is not None and isinstance(image, Image.Image):
        mode = image.mode
        if mode not in ("L", "RGB", "RGBA", "I;16"):
            image = image.convert("RGBA" if "A" in image.getbands() or "transparency" in image.info else "RGB")
        array = np.asarray(image)
        return array, lambda out: Image.fromarray(out)
    raise UserError(f"cannot upscale a {type(image).__name__}: give a numpy array (HWC) or a PIL image")
