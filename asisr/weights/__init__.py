"""Weights that ship inside the package, as data: which files, and which one is the default model.

No code that needs torch lives here, so the torch-free runtime can find the bundled default's
exported graphs; loading a bundled checkpoint into a model is ``asisr.models.pretrained``.
"""

from __future__ import annotations

from pathlib import Path

from asisr.errors import UserError

WEIGHTS_DIR = Path(__file__).parent
# model name -> checkpoint file in WEIGHTS_DIR (asisr checkpoint format)
BUNDLED = {
    "liif": "liif_edsr_baseline.pt",  # the official LIIF weights (BSD-3, LICENSE-liif.txt)
    "eqsr_light": "eqsr_light_default.pt",  # trained by this project; model card in README.md
    "lmf": "lmf_distilled.pt",  # distilled from the official LIIF by this project; model card in README.md
}
# model name -> exported directory (manifest + graphs) of that checkpoint, for torch-free use
BUNDLED_ONNX = {"liif": "liif_edsr_baseline_onnx", "eqsr_light": "eqsr_light_default_onnx", "lmf": "lmf_distilled_onnx"}
# What asisr-run / asisr-export use when no model is given: chosen by measurement (README, "The
# default model"): no model trained here reaches the official LIIF's quality at a third of its time.
DEFAULT_MODEL = "liif"


def bundled_path(name: str) -> Path:
    if name not in BUNDLED:
        raise UserError(f"no bundled weights for {name!r}; bundled: {', '.join(sorted(BUNDLED))}")
    path = WEIGHTS_DIR / BUNDLED[name]
    if not path.is_file():
        raise UserError(f"bundled weights for {name!r} are missing from this installation: {path}")
    return path


def bundled_onnx_dir(name: str) -> Path:
    """The exported directory shipped for a bundled model (``tests/test_default_model.py`` keeps it in sync)."""
    if name not in BUNDLED_ONNX:
        raise UserError(f"no bundled ONNX export for {name!r}; bundled: {', '.join(sorted(BUNDLED_ONNX))}")
    path = WEIGHTS_DIR / BUNDLED_ONNX[name]
    if not (path / "manifest.json").is_file():
        raise UserError(f"the bundled ONNX export of {name!r} is missing from this installation: {path}")
    return path


def default_checkpoint() -> Path:
    return bundled_path(DEFAULT_MODEL)


def default_onnx_dir() -> Path:
    return bundled_onnx_dir(DEFAULT_MODEL)
