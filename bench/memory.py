"""Peak resident memory of a section of code, measured inside the running process.

``ru_maxrss`` is a high-water mark for the whole process lifetime, so backends measured one
after another in one process would hide each other's peaks. ``RssSampler`` instead reads the
current resident size (``VmRSS`` in ``/proc/self/status``) from a background thread every few
milliseconds and keeps the maximum since it was started; a new sampler per backend gives a
per-backend peak. Between backends ``release_memory`` runs the garbage collector and asks glibc
to hand freed heap pages back to the kernel, so one backend's leftovers are not billed to the
next. Off Linux (no ``/proc``) the sampler reports ``None`` and only ``ru_maxrss`` is available.
"""

from __future__ import annotations

import ctypes
import gc
import resource
import sys
import threading
from pathlib import Path

STATUS = Path("/proc/self/status")
MIB = 1024 * 1024


def current_rss() -> int | None:
    """Resident set size of this process in bytes now, or ``None`` without ``/proc``."""
    try:
        with open(STATUS, "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except OSError:
        return None
    return None


def max_rss() -> int:
    """The process's lifetime peak resident size in bytes (``ru_maxrss``)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss) if sys.platform == "darwin" else int(rss) * 1024  # macOS: bytes, Linux: KiB


def release_memory() -> None:
    """Collect garbage and return free heap memory to the OS (glibc only; a no-op elsewhere)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class RssSampler:
    """``with RssSampler() as s: work()`` -> ``s.peak`` (bytes), ``s.start`` (bytes at entry).

    The thread sleeps ``interval`` seconds between reads; a spike shorter than that can be
    missed, which is why the interval is a few milliseconds (a read costs ~20 us).
    """

    def __init__(self, interval: float = 0.003):
        self.interval = interval
        self.start: int | None = None
        self.peak: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        rss = current_rss()
        if rss is not None and (self.peak is None or rss > self.peak):
            self.peak = rss

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "RssSampler":
        self.start = current_rss()
        self.peak = self.start
        if self.start is not None:
            self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()

    @property
    def growth(self) -> int | None:
        """Peak minus the resident size at entry (what the measured section added)."""
        if self.peak is None or self.start is None:
            return None
        return self.peak - self.start
