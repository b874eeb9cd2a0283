"""Running exported or PyTorch models: backends, pipelines, tiling, the ``Upscaler``."""

from asisr.runtime.pipeline import Pipeline
from asisr.runtime.sources import BACKENDS, open_pipeline, open_upscaler
from asisr.runtime.upscaler import Upscaler

__all__ = ["Pipeline", "Upscaler", "open_pipeline", "open_upscaler", "BACKENDS"]
