"""TensorRT optimization profiles: the shape ranges an engine accepts, and the tiles that fit them.

A TensorRT engine with dynamic axes runs only shapes inside the min/max of its optimization
profile (and is tuned for *opt*). One ``Profile`` covers both graphs of a model:

* ``batch`` -- images per call (both graphs);
* ``lr``    -- backbone input tiles, LR pixels (h, w), halo included;
* ``feat``  -- upsampler feature windows, LR pixels (h, w): what one output tile reads;
* ``out``   -- upsampler output tiles, HR pixels (H, W), HR reach included.

The defaults come from the tiled runtime's tile sizes and the model's halos and reaches, so
every request ``Upscaler`` makes fits; ``TileLimits`` shrinks the tiles when a profile is
smaller. On the command line (the bundled LIIF's default): ``batch=1:1:2,lr=1:580:580,
feat=1:134:261,out=1:256:256``, each size ``N`` (square) or ``HxW`` (height x width, as
tensor shapes are written).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from asisr.errors import UserError
from asisr.runtime import contract
from asisr.runtime.tiling import TileLimits, feature_window, tile_halo

HW = tuple[int, int]
Range = tuple[HW, HW, HW]  # min, opt, max
ShapeRange = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]

KEYS = ("batch", "lr", "feat", "out")
OPT_SCALE = 2.0  # the scale the default *opt* feature window is tuned for (x2-x4 is the usual range)
DEFAULT_BATCH = (1, 1, 2)  # the Upscaler sends one image; parity checks a batch of two
DEFAULT_OUT_TILE = 256  # output px: the Upscaler's largest planned upsampler tile (tiling.MAX_TILE)
# LR px: below the planner's largest backbone tile, to keep engine activation memory moderate
# (TensorRT reserves it for the max shape); the Upscaler clamps its backbone tiles to the profile.
DEFAULT_LR_TILE = 512
_SIZE = re.compile(r"^\s*(\d+)\s*(?:[x*]\s*(\d+)\s*)?$", re.IGNORECASE)
_EXAMPLE = "e.g. --profile batch=1:1:4,lr=16x16:256x256:448x448,feat=1:132:261,out=1:256:256"


def _fmt(hw: HW) -> str:
    return str(hw[0]) if hw[0] == hw[1] else f"{hw[0]}x{hw[1]}"


@dataclass(frozen=True)
class Profile:
    """min/opt/max of every dynamic axis of both graphs; see the module docstring."""

    batch: tuple[int, int, int]
    lr: Range
    feat: Range
    out: Range

    def __post_init__(self) -> None:
        _check_order("batch", [(b,) for b in self.batch])
        for key in ("lr", "feat", "out"):
            _check_order(key, getattr(self, key))

    def spec(self) -> str:
        """The profile in ``--profile`` syntax; ``parse_profile(p.spec()) == p``."""
        parts = ["batch=" + ":".join(map(str, self.batch))]
        parts += [f"{k}=" + ":".join(_fmt(hw) for hw in getattr(self, k)) for k in ("lr", "feat", "out")]
        return ",".join(parts)

    def to_dict(self) -> dict:
        return {"batch": list(self.batch), **{k: [list(hw) for hw in getattr(self, k)] for k in ("lr", "feat", "out")}}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Profile":
        try:
            return cls(tuple(int(b) for b in d["batch"]),
                       *(tuple((int(hw[0]), int(hw[1])) for hw in d[k]) for k in ("lr", "feat", "out")))
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise UserError(f"corrupt optimization profile record {dict(d)!r}: {type(e).__name__}") from None

    def shapes(self, stage: str, channels: int) -> dict[str, ShapeRange]:
        """Per-input (min, opt, max) shapes of one graph, in the graph's input order."""
        spec = contract.stage(stage)
        ranges = []
        for i in range(3):
            sizes = {contract.BATCH: self.batch[i], contract.CHANNELS: channels}
            for axis in contract.BATCH, contract.LR_HEIGHT, contract.LR_WIDTH, contract.OUT_HEIGHT, contract.OUT_WIDTH:
                key = profile_key(stage, axis)
                if key in ("lr", "feat", "out"):
                    sizes[axis] = getattr(self, key)[i][0 if axis.endswith("height") else 1]
            ranges.append(sizes)
        return {t.name: tuple(t.shape(ranges[i]) for i in range(3)) for t in spec.inputs}

    def limits(self) -> TileLimits:
        """The largest tiles an engine built with this profile runs; the ``Upscaler`` shrinks its tiles to fit."""
        return TileLimits(lr_max=self.lr[2], feat_max=self.feat[2], out_max=self.out[2])


def _check_order(key: str, values: Sequence[Sequence[int]]) -> None:
    if len(values) != 3:
        raise UserError(f"invalid --profile {key}: expected MIN:OPT:MAX (3 values), got {len(values)}")
    for v in values:
        if any(int(x) < 1 for x in v):
            raise UserError(f"invalid --profile {key}: sizes must be positive integers, got "
                            f"{':'.join(_fmt(tuple(x)) if len(x) == 2 else str(x[0]) for x in values)}")
    for axis in range(len(values[0])):
        lo, opt, hi = (v[axis] for v in values)
        if not lo <= opt <= hi:
            what = "" if len(values[0]) == 1 else f" ({'height' if axis == 0 else 'width'})"
            raise UserError(f"invalid --profile {key}{what}: need min <= opt <= max, got {lo}:{opt}:{hi}")


def _parse_size(key: str, text: str) -> HW:
    m = _SIZE.match(text)
    if not m:
        raise UserError(f"invalid --profile {key} size {text!r}: expected N or HxW (height x width); {_EXAMPLE}")
    h = int(m.group(1))
    return h, int(m.group(2)) if m.group(2) else h


def parse_profile(text: str | None, base: Profile) -> Profile:
    """``"lr=16:256:448,batch=1:1:2"`` -> ``base`` with those ranges replaced (other keys keep ``base``)."""
    if text is None or not text.strip():
        return base
    values = base.to_dict()
    seen = set()
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, value = (s.strip() for s in item.partition("="))
        key = key.lower()
        if not sep or not value:
            raise UserError(f"invalid --profile item {item.strip()!r}: expected NAME=MIN:OPT:MAX; {_EXAMPLE}")
        if key not in KEYS:
            raise UserError(f"invalid --profile item {item.strip()!r}: unknown name {key!r} "
                            f"(use {', '.join(KEYS)})")
        if key in seen:
            raise UserError(f"invalid --profile: {key} is given twice")
        seen.add(key)
        parts = value.split(":")
        if len(parts) != 3:
            raise UserError(f"invalid --profile {key}={value!r}: expected MIN:OPT:MAX (3 values); {_EXAMPLE}")
        if key == "batch":
            if not all(p.strip().isdigit() for p in parts):
                raise UserError(f"invalid --profile batch={value!r}: expected three integers like 1:1:4")
            values[key] = [int(p) for p in parts]
        else:
            values[key] = [list(_parse_size(key, p)) for p in parts]
    return Profile.from_dict(values)


def default_profile(descriptor, tile: int | None = None, lr_tile: int | None = None,
                    batch: tuple[int, int, int] = DEFAULT_BATCH) -> Profile:
    """The profile for ``Upscaler`` tiles of ``tile`` output px and ``lr_tile`` LR px, scales >= x1.

    min is 1 on every spatial axis: edge tiles can be one pixel wide. opt is a full tile
    (where the time of a large image goes); for features, a full output tile at x2. The
    ``Upscaler`` shrinks planned tiles that would not fit (``TileLimits``).
    """
    tile, lr_tile = int(tile or DEFAULT_OUT_TILE), int(lr_tile or DEFAULT_LR_TILE)

    lr_max = lr_tile + 2 * tile_halo(descriptor)
    out_max = tile + 2 * int(descriptor.upsampler_hr_reach)
    reach = int(descriptor.upsampler_lr_reach)
    lowest = float(descriptor.scale_min) if 0 < descriptor.scale_min < 1 else 1.0  # x1 always fits
    feat_max = feature_window(out_max, lowest, reach)
    feat_opt = min(feat_max, feature_window(out_max, OPT_SCALE, reach))
    sq = lambda n: (n, n)  # noqa: E731
    return Profile(tuple(batch), (sq(1), sq(lr_max), sq(lr_max)), (sq(1), sq(feat_opt), sq(feat_max)),
                   (sq(1), sq(out_max), sq(out_max)))


# -- checking one request ---------------------------------------------------------------------------

def profile_key(stage: str, axis: object) -> str | None:
    """Which profile entry bounds a contract axis: LR axes are backbone tiles or upsampler feature windows."""
    if axis == contract.BATCH:
        return "batch"
    if axis in (contract.LR_HEIGHT, contract.LR_WIDTH):
        return "lr" if stage == contract.BACKBONE.name else "feat"
    if axis in (contract.OUT_HEIGHT, contract.OUT_WIDTH):
        return "out"
    return None


def request_error(stage: str, shapes: Mapping[str, Sequence[int]], ranges: Mapping[str, ShapeRange],
                  backend: str = "tensorrt") -> str | None:
    """Why one request (input name -> shape) does not fit an engine's profile ranges; None when it fits."""
    axes = {t.name: t.axes for t in contract.stage(stage).inputs} if stage in contract.STAGE_NAMES else {}
    seen: dict[str, tuple[str, int]] = {}
    for name, (lo, _, hi) in ranges.items():
        if name not in shapes:
            return f"{backend} {stage}: input {name!r} is missing (inputs given: {', '.join(shapes) or 'none'})"
        shape = tuple(int(s) for s in shapes[name])
        if len(shape) != len(lo):
            return f"{backend} {stage}: input {name!r} has {len(shape)} axes {list(shape)}, expected {len(lo)}"
        labels = axes.get(name, (None,) * len(shape))
        for i, (v, a, b) in enumerate(zip(shape, lo, hi)):
            label = labels[i] if i < len(labels) else None
            what = f"input {name!r} axis {i}" + (f" ({label})" if isinstance(label, str) else "")
            if a == b and not a <= v <= b:
                return f"{backend} {stage}: {what} is {v}, but the engine was built for exactly {a}"
            if not a <= v <= b:
                key = profile_key(stage, label)
                hint = (f"; rebuild the engine with a wider --profile {key}=..." if key else "")
                if key in ("lr", "feat", "out") and v > b:
                    hint += " or use smaller tiles"
                return f"{backend} {stage}: {what} is {v}, outside the engine's profile range [{a}, {b}]{hint}"
            if isinstance(label, str):
                if label in seen and seen[label][1] != v:
                    return (f"{backend} {stage}: inputs disagree on {label}: {seen[label][0]!r} has {seen[label][1]}, "
                            f"{name!r} has {v}")
                seen.setdefault(label, (name, v))
    return None


def check_request(stage: str, shapes: Mapping[str, Sequence[int]], ranges: Mapping[str, ShapeRange],
                  backend: str = "tensorrt") -> None:
    """Raise a one-line ``UserError`` naming input, axis, value and allowed range when a request does not fit."""
    error = request_error(stage, shapes, ranges, backend)
    if error:
        raise UserError(error)
