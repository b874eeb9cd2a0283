"""A sample photo shipped with the package, so the main job can be tried before any data is at hand.

``chelsea.png`` (451x300, RGB): "Chelsea the cat", photographed by Stefan van der Walt and
dedicated to the public domain (CC0), as distributed with scikit-image (``skimage.data.chelsea``).
``asisr-run --sample --scale 3 --out sample_x3.png`` upscales it.
"""

from __future__ import annotations

from pathlib import Path

SAMPLE = Path(__file__).parent / "chelsea.png"
