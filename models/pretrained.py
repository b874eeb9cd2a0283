"""Weights that ship inside the package, and which of them is the default model."""

from __future__ import annotations

from pathlib import Path

from asisr.errors import UserError

WEIGHTS_DIR = Path(__file__).parent / "weights"
# model name -> file in WEIGHTS_DIR (asisr checkpoint format)
BUNDLED = {
    "liif": "liif_edsr_baseline.pt",  # the official LIIF weights (BSD-3, LICENSE-liif.txt)
    "eqsr_light": "eqsr_light_default.pt",  # trained by this project; model card in README.md
}
# What asisr-run / asisr-export use when no model is given.
DEFAULT_MODEL = "eqsr_light"


def bundled_path(name: str) -> Path:
    if name not in BUNDLED:
        raise UserError(f"no bundled weights for {name!r}; bundled: {', '.join(sorted(BUNDLED))}")
    path = WEIGHTS_DIR / BUNDLED[name]
    if not path.is_file():
        raise UserError(f"bundled weights for {name!r} are missing from this installation: {path}")
    return path


def default_checkpoint() -> Path:
    return bundled_path(DEFAULT_MODEL)
