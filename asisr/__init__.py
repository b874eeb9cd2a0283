"""asisr: arbitrary-scale super-resolution from PyTorch to fast, verified inference.

Data flow: image -> backbone (``asisr.models``) -> features -> upsampler -> image,
exported by ``asisr.export``, run by ``asisr.runtime``, verified by ``asisr.evaluation``.

From Python: ``with asisr.Upscaler() as up: big = up.upscale(image, scale=3)`` (``asisr.api``).
"""

__version__ = "0.1.0"
__all__ = ["Upscaler", "UserError", "__version__"]


_PUBLIC = {"Upscaler": "asisr.api", "UserError": "asisr.errors"}


def __getattr__(name: str):
    # Lazy (PEP 562), so that ``import asisr`` stays free of numpy and OpenCV; and by name, so that
    # the package root, which every layer imports for ``__version__``, does not sit above them all
    # in the layer contracts (``asisr.api`` is a top layer, beside ``asisr.cli``).
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'asisr' has no attribute {name!r}")
