"""What a model promises to the rest of the toolkit: the facts export and runtime plan around."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


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
    precisions: tuple[str, ...] = ("fp32",)
    normalization: str = "input RGB float32 in [0, 1]; output RGB in [0, 1] (clamp after)"
    extra: dict = field(default_factory=dict)

    @property
    def tiles_exactly(self) -> bool:
        return self.backbone_halo is not None and not self.upsampler_global_pool

    @classmethod
    def from_dict(cls, d: dict) -> "ModelDescriptor":
        """The inverse of ``to_dict`` (a manifest's ``model.descriptor``)."""
        return cls(**{**d, "precisions": tuple(d.get("precisions", ("fp32",)))})

    def to_dict(self) -> dict:
        d = asdict(self)
        d["precisions"] = list(self.precisions)
        return d
