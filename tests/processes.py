"""Linux process facts from ``/proc`` for the tests that kill one worker: which process to kill, and
whether it is gone. Found by what the process does (the lock it waits on), never by its title."""

from __future__ import annotations

import os
import time
from pathlib import Path


def lock_waiters(lock: Path) -> list[int]:
    """The processes blocked in ``flock`` on the file ``lock``, from ``/proc/locks``.

    A waiter's line reads ``N: -> FLOCK ADVISORY WRITE PID MAJ:MIN:INODE 0 EOF``; the inode is the lock file's."""
    inode = str(os.stat(lock).st_ino)
    pids = []
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 7 and fields[1:3] == ["->", "FLOCK"] and fields[6].rsplit(":", 1)[-1] == inode:
            pids.append(int(fields[5]))
    return pids


def exited(pid: int, timeout: float = 30) -> bool:
    """Whether process ``pid`` is gone (or a zombie waiting to be reaped) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False
