"""Where asisr keeps what it can rebuild: exported graphs of checkpoints, engines, timing caches.

One root, ``$ASISR_CACHE`` (default ``~/.cache/asisr``), so a test suite or a service can
isolate all of it with one variable.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "ASISR_CACHE"


def cache_dir() -> Path:
    return Path(os.environ.get(ENV) or Path.home() / ".cache" / "asisr")
