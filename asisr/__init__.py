"""asisr: arbitrary-scale super-resolution from PyTorch to fast, verified inference.

Data flow: image -> backbone (``asisr.models``) -> features -> upsampler -> image,
exported by ``asisr.export``, run by ``asisr.runtime``, verified by ``asisr.evaluation``.
"""

__version__ = "0.1.0"
