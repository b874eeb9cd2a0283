"""What a model promises to the rest of the toolkit: the facts export and runtime plan around."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from asisr.scale import SIZE_RULES


@dataclass(frozen=True)
class ModelDescriptor:
    """Static facts about an architecture instance (spandrel-style).

    The halos tell the tiler how much context a tile needs for its output to equal the
    untiled output: ``backbone_halo`` LR pixels of receptive field around every feature
    (``None`` when the backbone has global context, e.g. channel attention, so tiling is
    only approximate), ``upsampler_lr_reach`` LR pixels the upsampler reads around the
    nearest feature of a query, and ``upsampler_hr_reach`` HR pixels of neighbourhood the
    upsampler mixes (involution on the HR grid). ``upsampler_global_pool`` marks upsamplers
    that pool over the whole output (ECA), whose output tiles are therefore approximate too.
    ``upsampler_untileable`` says why else an upsampler's output tiles only approximate the
    untiled output whatever the halos (empty when they are exact), in words the runtime's
    tiling warning quotes; e.g. ArbSR's sampling stretched with the feature window's size.

    ``size_rule`` is how a requested scale becomes an output grid (``asisr.scale.SIZE_RULES``):
    ``"round"`` (asisr's) gives ``round(s * h)`` pixels spread over the whole LR image and tells
    the model ``out / lr``; ``"floor"`` (Meta-SR's official test) gives ``int(s * h)`` pixels on the
    scale's own grid, step ``1 / s`` (``asisr.runtime.query.floor_grid_coords``), and tells the
    model ``s`` itself. ``symmetric_only`` models take one scale for both axes. Both default to
    the old behaviour, so manifests written before they existed read back unchanged.
    """

    arch: str
    feature_channels: int
    scale_min: float = 1.0
    scale_max: float = 8.0
    trained_scale_max: float = 4.0
    backbone_halo: int | None = 0
    upsampler_lr_reach: int = 1
    upsampler_hr_reach: int = 0
    upsampler_global_pool: bool = False
    upsampler_untileable: str = ""
    precisions: tuple[str, ...] = ("fp32",)
    normalization: str = "input RGB float32 in [0, 1]; output RGB in [0, 1] (clamp after)"
    extra: dict = field(default_factory=dict)
    size_rule: str = "round"
    symmetric_only: bool = False

    def __post_init__(self) -> None:
        if self.size_rule not in SIZE_RULES:
            raise ValueError(f"size_rule must be one of {SIZE_RULES}, not {self.size_rule!r}")

    @property
    def tiles_exactly(self) -> bool:
        return self.backbone_halo is not None and not self.upsampler_global_pool and not self.upsampler_untileable

    @classmethod
    def from_dict(cls, d: dict) -> "ModelDescriptor":
        """The inverse of ``to_dict`` (a manifest's ``model.descriptor``)."""
        return cls(**{**d, "precisions": tuple(d.get("precisions", ("fp32",)))})

    def to_dict(self) -> dict:
        d = asdict(self)
        d["precisions"] = list(self.precisions)
        return d
