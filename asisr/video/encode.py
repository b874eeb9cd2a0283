"""Which encoder, pixel format and quality an output gets, and the checks that need no model.

Defaults (what ``asisr-run clip.mp4 --scale 2 --out x2.mp4`` does):

* codec H.264 (libx264), ``--crf 18`` (visually lossless for most content; x264's own default
  23 is meant for delivery, not for a master that may be edited again), preset medium;
* pixel format: the input's bit depth is kept where the codec has it: a 10-bit input gives
  ``yuv420p10le`` (H.264 High 10, H.265 Main 10, AV1), an 8-bit one ``yuv420p``, the format
  every player decodes;
* ``--lossless``: the upscaled RGB itself is stored, so decoding gives back exactly what the
  model produced: 8-bit as H.264 RGB at qp 0 (libx264rgb, any container), deeper as FFV1
  ``gbrp16le`` (Matroska or MP4).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field

from asisr.errors import UserError

CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mkv": "matroska", ".mov": "mov"}
CODEC_ALIASES = {"h264": "libx264", "x264": "libx264", "avc": "libx264", "h265": "libx265", "hevc": "libx265",
                 "x265": "libx265", "av1": "libsvtav1", "svtav1": "libsvtav1", "vp9": "libvpx-vp9",
                 "x264rgb": "libx264rgb", "h264rgb": "libx264rgb"}
DEFAULT_CODEC = "libx264"
DEFAULT_CRF = {"libx264": 18, "libx264rgb": 18, "libx265": 20, "libsvtav1": 30, "libvpx-vp9": 24}
CRF_RANGE = {"libx264": (0, 51), "libx264rgb": (0, 51), "libx265": (0, 51), "libsvtav1": (0, 63),
             "libvpx-vp9": (0, 63)}
LOSSLESS_BY_DEPTH = {8: ("libx264rgb", "rgb24"), 16: ("ffv1", "gbrp16le")}
# What each encoder prints on stderr by itself is kept to errors (SVT-AV1 reads SVT_LOG instead, see _quiet_env).
_QUIET = {"libx265": {"x265-params": "log-level=error"}}
_SVT_LOG_ERRORS = "1"


@dataclass(frozen=True)
class EncoderSettings:
    codec: str  # the FFmpeg encoder name (libx264, ffv1, ...)
    pix_fmt: str
    options: dict[str, str] = field(default_factory=dict)
    lossless: bool = False

    def describe(self) -> str:
        quality = "lossless" if self.lossless else " ".join(f"{k} {v}" for k, v in self.options.items()
                                                             if k in ("crf", "qp", "preset"))
        return f"{self.codec} {self.pix_fmt}" + (f" ({quality})" if quality else "")


def available_encoders() -> list[str]:
    """The video encoders of the bundled FFmpeg asisr knows how to drive, for messages."""
    names = sorted(set(DEFAULT_CRF) | {"ffv1"})
    return [n for n in names if encoder_exists(n)]


def encoder_exists(name: str) -> bool:
    import av

    try:
        codec = av.Codec(name, "w")
    except Exception:  # UnknownCodecError, and older PyAV's ValueError
        return False
    return codec.type == "video"


def container_format(suffix: str) -> str:
    format_name = CONTAINERS.get(suffix.lower())
    if format_name is None:
        raise UserError(f"unsupported video output {suffix or '(no suffix)'!r}: use .mp4, .mkv or .mov "
                        "(or a folder, or frames/%06d.png, for a PNG sequence)")
    return format_name


def muxer_codecs(format_name: str) -> set[str]:
    """Codec (descriptor) names ``format_name`` can store, asked of FFmpeg without writing anything."""
    import av

    with av.open(io.BytesIO(), "w", format=format_name) as probe:
        return set(probe.supported_codecs)


def choose_encoder(codec: str | None, crf: int | None, pix_fmt: str | None, lossless: bool, input_depth: int,
                   suffix: str) -> EncoderSettings:
    """The encoder for an output file, everything about it checked (availability, container, format, CRF)."""
    import av

    format_name = container_format(suffix)
    name = _encoder_name(codec, lossless, input_depth)
    if not encoder_exists(name):
        raise UserError(f"video codec {codec or name!r} is not available in this FFmpeg build "
                        f"(available: {', '.join(available_encoders())})")
    encoder = av.Codec(name, "w")
    if encoder.canonical_name not in muxer_codecs(format_name):
        raise UserError(f"{encoder.canonical_name} video cannot be stored in {suffix}: use .mkv")
    formats = [f.name for f in encoder.video_formats or ()]
    fmt = pix_fmt or _default_pix_fmt(name, lossless, input_depth, formats)
    if fmt not in formats:
        raise UserError(f"pixel format {fmt!r} is not supported by {name}: choose one of {', '.join(formats)}")
    options = {**_quality(name, crf, lossless), **_QUIET.get(name, {})}
    _quiet_env(name)
    return EncoderSettings(name, fmt, options, lossless or name == "ffv1")


def _quiet_env(name: str) -> None:
    """SVT-AV1 prints its banner and settings on stderr unless SVT_LOG says otherwise (a user's value wins)."""
    if name == "libsvtav1":
        os.environ.setdefault("SVT_LOG", _SVT_LOG_ERRORS)


def _encoder_name(codec: str | None, lossless: bool, input_depth: int) -> str:
    if codec is None:
        return LOSSLESS_BY_DEPTH[8 if input_depth <= 8 else 16][0] if lossless else DEFAULT_CODEC
    key = codec.strip().lower()
    return CODEC_ALIASES.get(key, key)


def _default_pix_fmt(name: str, lossless: bool, input_depth: int, formats: list[str]) -> str:
    if lossless:
        wanted = LOSSLESS_BY_DEPTH[8 if input_depth <= 8 else 16][1]
        if wanted in formats:
            return wanted
        rgb = [f for f in formats if f.startswith(("gbr", "rgb", "bgr"))]
        if rgb:
            return rgb[0]
        raise UserError(f"{name} has no RGB pixel format, so it cannot store the upscaled frames losslessly "
                        "(use --lossless without --codec, or --codec ffv1)")
    if input_depth > 8 and "yuv420p10le" in formats:
        return "yuv420p10le"
    return "yuv420p" if "yuv420p" in formats else formats[0]


def _quality(name: str, crf: int | None, lossless: bool) -> dict[str, str]:
    if name == "ffv1":
        if crf is not None:
            raise UserError("ffv1 is lossless: --crf does not apply to it")
        return {}
    if lossless:
        if crf is not None:
            raise UserError("give --crf or --lossless, not both")
        if name in ("libx264", "libx264rgb"):
            return {"qp": "0"}
        if name == "libx265":
            return {"x265-params": "lossless=1:log-level=error"}
        raise UserError(f"{name} has no lossless mode here: use --lossless without --codec (or --codec ffv1)")
    if name not in DEFAULT_CRF:
        if crf is not None:
            raise UserError(f"--crf is not supported for {name}")
        return {}
    low, high = CRF_RANGE[name]
    value = DEFAULT_CRF[name] if crf is None else crf
    if not low <= value <= high:
        raise UserError(f"--crf {value} is out of range for {name} ({low} to {high}; lower is better)")
    options = {"crf": str(value)}
    if name in ("libx264", "libx264rgb"):
        options["preset"] = "medium"
    if name == "libvpx-vp9":
        options["b"] = "0"  # constant quality, as --crf means elsewhere
    return options


def check_frame_size(pix_fmt: str, width: int, height: int) -> None:
    """Chroma-subsampled formats need sizes their chroma divides; said before the model runs, with the way out."""
    import av

    fmt = av.VideoFormat(pix_fmt)
    probe_edge = 64
    step_w = probe_edge // max(1, fmt.chroma_width(probe_edge))
    step_h = probe_edge // max(1, fmt.chroma_height(probe_edge))
    if width % step_w or height % step_h:
        raise UserError(f"{pix_fmt} needs a frame size divisible by {step_w}x{step_h}, and the output is "
                        f"{width}x{height}: choose an even --size, or --pix-fmt yuv444p")
