"""Video in, video out: ``asisr-run clip.mp4 --size 2560x1440 --out clip_1440.mp4``.

``probe`` reads an input (streams, timing, colour) before any model is loaded, ``colour``
converts between the stream's Y'CbCr and the model's R'G'B', ``encode`` picks and checks the
encoder, ``pipeline`` overlaps decoding, upscaling and encoding, and ``job`` runs the whole
thing into a temporary output that is renamed when complete. PyAV (``asisr[video]``) is
imported inside functions only: this module is what the command line looks at first.
"""

from __future__ import annotations

from pathlib import Path

from asisr.errors import UserError

VIDEO_OUTPUT_SUFFIXES = (".mp4", ".m4v", ".mkv", ".mov")
VIDEO_INPUT_SUFFIXES = VIDEO_OUTPUT_SUFFIXES + (".avi", ".webm", ".ts", ".m2ts", ".mts", ".flv", ".wmv", ".mpg",
                                                ".mpeg", ".y4m", ".3gp", ".ogv")
VIDEO_EXTRA = "pip install 'asisr[video]'"


def is_video_job(input: Path, out: Path) -> bool:
    """A video input, or a video output (then the input must be a video too, which ``probe`` checks)."""
    if input.is_dir():
        return False
    return input.suffix.lower() in VIDEO_INPUT_SUFFIXES or out.suffix.lower() in VIDEO_OUTPUT_SUFFIXES


def require_av() -> None:
    """One line naming the extra, instead of an ImportError."""
    try:
        import av  # noqa: F401
    except ImportError:
        raise UserError(f"video files need PyAV, which is not installed ({VIDEO_EXTRA})") from None
