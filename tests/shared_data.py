"""Where the suite finds ``../shared`` (benchmark images, official weights, upstream fixtures).

Nothing here imports torch: the runtime-only tests use it from the torch-free install too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
LIIF_CKPT = SHARED / "weights" / "liif" / "edsr-baseline-liif.pth"
SET5 = SHARED / "data" / "Set5"
SET14 = SHARED / "data" / "Set14"
REAL_HOME = Path.home()  # read when the suite starts, before its session fixture points HOME elsewhere


def need(path: Path) -> Path:
    """Skip the calling test, naming the missing path, unless it exists."""
    if not path.exists():
        pytest.skip(f"needs {path} (the shared data folder beside the checkout), which is absent")
    return path
