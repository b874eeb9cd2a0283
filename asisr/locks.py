"""Exclusive claims between processes: a lock file per thing claimed, held with ``flock``.

The kernel drops a ``flock`` when its holder exits, however it exits (``kill -9`` included),
so a claim never outlives its process and nothing has to be cleaned up by hand. The holder
deletes the lock file when it lets go; a process that opened the file just before that finds,
once it gets the lock, that the name no longer leads to the file it holds, and tries again on
the new one. Where ``fcntl`` is missing (Windows) a claim always succeeds and excludes nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

from asisr.errors import UserError

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None


class FileLock:
    """``acquire()`` / ``release()`` an exclusive lock on ``path`` (created if needed, removed on release)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, blocking: bool = True) -> bool:
        """Take the lock; without ``blocking``, return False at once if another process holds it."""
        if self._fd is not None:
            return True
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as e:
                raise UserError(f"cannot create lock file {self.path}: {e.strerror or e}") from None
            try:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
                if _same_file(fd, self.path):
                    self._fd = fd
                    return True
            except BlockingIOError:
                os.close(fd)
                return False
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)  # the holder before us removed the file we opened: lock the current one

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still held: see the module docstring
        except OSError:
            pass
        finally:
            os.close(fd)

    def __enter__(self) -> "FileLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def claim_for(path: str | Path) -> FileLock:
    """The claim every asisr process takes on an output (or cache entry) ``path`` before making it:
    ``.NAME.lock`` beside it, so processes on any machine that sees the folder exclude each other."""
    path = Path(path)
    return FileLock(path.with_name(f".{path.name}.lock"))
