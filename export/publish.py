"""Building an exported directory beside its destination and moving it into place whole."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from asisr.atomic import current_umask
from asisr.errors import UserError


def check_destination(out_dir: str | Path, overwrite: bool) -> Path:
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise UserError(f"output exists: {out_dir} (use --overwrite to replace it)")
    return out_dir


@contextmanager
def staging_dir(out_dir: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty sibling work directory; its ``out`` subfolder replaces ``out_dir`` on success.

    On any error the work directory is removed and ``out_dir`` is left as it was.
    """
    out_dir = check_destination(out_dir, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        (work / "out").mkdir()
        yield work
        done = work / "out"
        os.chmod(done, 0o777 & ~current_umask())  # what mkdir would give (mkdtemp's parent is 0700)
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            out_dir.rename(old)
            done.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            done.rename(out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
