"""Where asisr keeps what it can rebuild: exported graphs of checkpoints, engines, timing caches.

One root, ``$ASISR_CACHE`` (default ``~/.cache/asisr``), so a test suite or a service can
isolate all of it with one variable.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

ENV = "ASISR_CACHE"


def cache_dir() -> Path:
    return Path(os.environ.get(ENV) or Path.home() / ".cache" / "asisr")


@functools.lru_cache(maxsize=1)
def cpu_fingerprint() -> str:
    """What an optimised CPU graph depends on: the machine type and the CPU's model and feature flags."""
    import hashlib
    import platform

    text = platform.machine()
    try:
        info = Path("/proc/cpuinfo").read_text(errors="replace").split("\n\n")[0]
        text += "".join(line for line in info.splitlines() if line.startswith(("model name", "flags", "Features")))
    except OSError:
        text += platform.processor()
    return hashlib.sha256(text.encode()).hexdigest()[:12]
