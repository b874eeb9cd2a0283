"""YUV <-> RGB with the stream's own matrix and range, in both directions, 8 to 16 bits.

The model works on R'G'B' (gamma-encoded RGB, what a PNG holds). A video stores Y'CbCr, and
which matrix (BT.601, BT.709, BT.2020) and which range (limited 16-235 or full 0-255) turn one
into the other is stream metadata. Decoding with the wrong pair shifts every colour (skin tones
go green, blacks grey), so the pair is read from the stream, a guess is made only where the
stream says nothing (by resolution, as players do: BT.709 from 720 lines up, BT.601 below;
limited range unless the pixel format is a full-range ``yuvj*``), and the output is encoded
with the same pair and tagged with it, so nothing changes colour.

The arithmetic is FFmpeg's swscale (``VideoFrame.reformat``) with accurate rounding and
full-resolution chroma; ``yuv_to_rgb_reference`` / ``rgb_to_yuv_reference`` are the textbook
formulas in float, which the tests hold swscale to.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

# AVColorSpace values (libavutil/pixfmt.h) -> the matrix name swscale takes, and its (Kr, Kb).
_MATRIX_BY_AVCOL = {1: "bt709", 4: "fcc", 5: "bt601", 6: "bt601", 7: "smpte240m", 9: "bt2020", 10: "bt2020"}
MATRIX_COEFFICIENTS = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722), "fcc": (0.30, 0.11),
                       "smpte240m": (0.212, 0.087), "bt2020": (0.2627, 0.0593)}
_AVCOL_BY_MATRIX = {"bt709": 1, "fcc": 4, "bt601": 6, "smpte240m": 7, "bt2020": 9}
_SWS_NAME = {"bt601": "ITU601", "bt709": "ITU709", "fcc": "FCC", "smpte240m": "SMPTE240M", "bt2020": "BT2020"}
LIMITED, FULL = "limited", "full"
_AVRANGE = {LIMITED: 1, FULL: 2}
HD_LINES = 720  # from here an untagged stream is taken to be BT.709


@dataclass(frozen=True)
class Colour:
    """How a stream's samples map to R'G'B'; ``rgb`` streams (gbrp, rgb24) have no matrix.

    ``primaries`` and ``transfer`` are AVColorPrimaries / AVColorTransferCharacteristic values,
    copied to the output as tags (the pixels stay in the input's colour space).
    """

    matrix: str  # a MATRIX_COEFFICIENTS key, or "rgb"
    range: str  # LIMITED or FULL
    primaries: int = 2  # 2: unspecified
    transfer: int = 2
    guessed: bool = False  # the stream did not say; the values are the resolution/format guess

    @property
    def is_rgb(self) -> bool:
        return self.matrix == "rgb"

    def describe(self) -> str:
        if self.is_rgb:
            return "RGB"
        name = {"bt601": "BT.601", "bt709": "BT.709", "bt2020": "BT.2020"}.get(self.matrix, self.matrix)
        return f"{name} {self.range} range" + (" (untagged: guessed)" if self.guessed else "")


def is_rgb_format(pix_fmt: str) -> bool:
    return pix_fmt.startswith(("gbr", "rgb", "bgr", "argb", "abgr", "0rgb", "0bgr")) or pix_fmt in ("pal8",)


def bit_depth(pix_fmt: str) -> int:
    """Bits per sample of a pixel format, from its name (``yuv420p10le`` -> 10; ``rgb48le`` -> 16)."""
    import av

    fmt = av.VideoFormat(pix_fmt)
    return max((c.bits for c in fmt.components), default=8)


def stream_colour(colorspace: int, color_range: int, pix_fmt: str, height: int,
                  primaries: int = 2, transfer: int = 2) -> Colour:
    """The stream's matrix and range, guessed where untagged (see the module docstring)."""
    if is_rgb_format(pix_fmt) or colorspace == 0:  # AVCOL_SPC_RGB
        return Colour("rgb", FULL, primaries, transfer)
    matrix = _MATRIX_BY_AVCOL.get(int(colorspace))
    guessed = matrix is None
    if matrix is None:
        matrix = "bt709" if height >= HD_LINES else "bt601"
    if int(color_range) in (1, 2):
        rng = LIMITED if int(color_range) == 1 else FULL
    else:
        guessed = True
        rng = FULL if pix_fmt.startswith("yuvj") else LIMITED
    return Colour(matrix, rng, primaries, transfer, guessed)


def rgb_format(depth: int) -> str:
    """The packed RGB format frames are handed to the model in: 8 bits, or 16 bits for deeper streams."""
    return "rgb24" if depth <= 8 else "rgb48le"


def _flags():
    from av.video.reformatter import Interpolation

    # BITEXACT: the same frame always gives the same pixels; the chroma flags keep chroma at full
    # resolution inside swscale instead of its fast horizontal shortcut.
    return (Interpolation.BICUBIC | Interpolation.ACCURATE_RND | Interpolation.BITEXACT
            | Interpolation.FULL_CHR_H_INT | Interpolation.FULL_CHR_H_INP)


def _sws_space(colour: Colour):
    from av.video.reformatter import Colorspace

    return getattr(Colorspace, _SWS_NAME.get(colour.matrix, "ITU601"))


def _sws_range(colour: Colour):
    from av.video.reformatter import ColorRange

    return ColorRange.MPEG if colour.range == LIMITED else ColorRange.JPEG


def _full_range():
    from av.video.reformatter import ColorRange

    return ColorRange.JPEG


def to_rgb(frame, colour: Colour, depth: int) -> np.ndarray:
    """A decoded frame as an HxWx3 R'G'B' array: uint8 for 8-bit streams, uint16 (full 16-bit scale) deeper."""
    target = rgb_format(depth)
    if colour.is_rgb:
        return frame.to_ndarray(format=target, interpolation=_flags())
    rgb = frame.to_ndarray(format=target, src_colorspace=_sws_space(colour), src_color_range=_sws_range(colour),
                           dst_colorspace=_sws_space(colour), dst_color_range=_full_range(), interpolation=_flags())
    return _from_swscale_48(rgb, _white_48(frame.format.name, colour)) if target == "rgb48le" else rgb


def _from_swscale_48(rgb: np.ndarray, white: int) -> np.ndarray:
    """swscale's Y'CbCr -> RGB48 does not put white at 65535 (8-bit and limited-range sources give 65280, full-range
    10-bit ones 65472): rescale so that it does."""
    if white == 65535:
        return rgb
    wide = (rgb.astype(np.uint32) * 65535 + white // 2) // white
    return np.minimum(wide, 65535).astype(np.uint16)


@functools.lru_cache(maxsize=64)
def _white_48(pix_fmt: str, colour: Colour) -> int:
    """Where swscale puts white in RGB48 for ``pix_fmt`` samples of ``colour``: measured on a white frame."""
    if not _planar_yuv(pix_fmt):
        return 65280
    depth = 16 if pix_fmt.endswith("16le") else bit_depth(pix_fmt)
    offset, y_span, _ = _levels(colour, depth)
    sub_w, sub_h = _subsampling(pix_fmt)
    dtype = np.uint8 if depth <= 8 else np.uint16
    luma = np.full((4, 4), round(offset + y_span), dtype)
    chroma = np.full((4 // sub_h, 4 // sub_w), 1 << (depth - 1), dtype)
    frame = _frame_from_planes([luma, chroma, chroma], pix_fmt, colour)
    white = frame.to_ndarray(format="rgb48le", src_colorspace=_sws_space(colour), src_color_range=_sws_range(colour),
                             dst_colorspace=_sws_space(colour), dst_color_range=_full_range(), interpolation=_flags())
    return max(1, int(white[..., 1].max()))


def _to_swscale_48(rgb: np.ndarray) -> np.ndarray:
    """The inverse of ``_from_swscale_48``, for RGB48 -> YUV (without it white codes 943, not 940, in 10 bits)."""
    return ((rgb.astype(np.uint32) * 256 + 128) // 257).astype(np.uint16)


def from_rgb(rgb: np.ndarray, pix_fmt: str, colour: Colour):
    """An HxWx3 uint8 / uint16 R'G'B' array as a ``VideoFrame`` of ``pix_fmt`` with ``colour``'s matrix and range.

    Planar Y'CbCr formats are computed here in float (``rgb_to_yuv_planes``), rounded once:
    swscale dithers when it reduces 16-bit RGB to 8-bit samples, which moves a flat colour by a code
    value here and there. Other formats (RGB ones, semi-planar ones) go through swscale.
    """
    import av

    if not colour.is_rgb and _planar_yuv(pix_fmt):
        return _frame_from_planes(rgb_to_yuv_planes(rgb, pix_fmt, colour), pix_fmt, colour)
    fmt = "rgb24" if rgb.dtype == np.uint8 else "rgb48le"
    if colour.is_rgb or is_rgb_format(pix_fmt):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format=fmt)
        out = frame.reformat(format=pix_fmt, interpolation=_flags())
    else:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(_to_swscale_48(rgb) if fmt == "rgb48le" else rgb),
                                           format=fmt)
        out = frame.reformat(format=pix_fmt, src_colorspace=_sws_space(colour), dst_colorspace=_sws_space(colour),
                             src_color_range=_full_range(),
                             dst_color_range=_sws_range(colour), interpolation=_flags())
    tag(out, colour, pix_fmt)
    return out


_PLANAR_YUV = ("yuv420p", "yuv422p", "yuv444p", "yuvj420p", "yuvj422p", "yuvj444p")


def _planar_yuv(pix_fmt: str) -> bool:
    base = pix_fmt[:-4] if pix_fmt.endswith(("10le", "12le", "14le", "16le")) else pix_fmt
    return base in _PLANAR_YUV


def _subsampling(pix_fmt: str) -> tuple[int, int]:
    """(horizontal, vertical) chroma subsampling factors of a planar Y'CbCr format."""
    if "420" in pix_fmt:
        return 2, 2
    if "422" in pix_fmt:
        return 2, 1
    return 1, 1


def rgb_to_yuv_planes(rgb: np.ndarray, pix_fmt: str, colour: Colour) -> list[np.ndarray]:
    """Y, Cb, Cr sample planes of ``pix_fmt`` from R'G'B', rounded once from float.

    Chroma is subsampled where the chroma samples sit in MPEG-4 / H.264 / H.265 streams by
    default ("left"): horizontally on the even luma columns ([1, 2, 1] / 4), vertically between
    two luma rows (their mean).
    """
    depth = 16 if pix_fmt.endswith("16le") else bit_depth(pix_fmt)
    top = float(np.iinfo(rgb.dtype).max)
    ycc = rgb_to_yuv_reference(rgb.astype(np.float32) / np.float32(top), colour, depth).astype(np.float32)
    sub_w, sub_h = _subsampling(pix_fmt)
    chroma = [_subsample(ycc[..., k], sub_w, sub_h) for k in (1, 2)]
    dtype = np.uint8 if depth <= 8 else np.uint16
    limit = float((1 << depth) - 1)
    return [np.clip(np.rint(p), 0, limit).astype(dtype) for p in (ycc[..., 0], *chroma)]


def _subsample(plane: np.ndarray, sub_w: int, sub_h: int) -> np.ndarray:
    if sub_h == 2:
        plane = plane if plane.shape[0] % 2 == 0 else np.concatenate([plane, plane[-1:]], axis=0)
        plane = 0.5 * (plane[0::2] + plane[1::2])
    if sub_w == 2:
        padded = np.concatenate([plane[:, :1], plane, plane[:, -1:]], axis=1)
        if padded.shape[1] % 2:  # odd width: the last even column's right neighbour repeats it
            padded = np.concatenate([padded, padded[:, -1:]], axis=1)
        plane = 0.25 * padded[:, 0:-2:2] + 0.5 * padded[:, 1:-1:2] + 0.25 * padded[:, 2::2]
    return plane


def _frame_from_planes(planes: list[np.ndarray], pix_fmt: str, colour: Colour):
    import av

    h, w = planes[0].shape
    frame = av.VideoFrame(w, h, pix_fmt)
    for target, data in zip(frame.planes, planes):
        itemsize = data.dtype.itemsize
        rows = np.zeros((target.height, target.line_size // itemsize), dtype=data.dtype.newbyteorder("<"))
        rows[:data.shape[0], :data.shape[1]] = data
        target.update(rows.tobytes())
    tag(frame, colour, pix_fmt)
    return frame


def tag(frame_or_context, colour: Colour, pix_fmt: str) -> None:
    """Set the colour tags a frame or an encoder writes (the matrix, range, primaries, transfer)."""
    if is_rgb_format(pix_fmt):
        frame_or_context.colorspace = 0
        frame_or_context.color_range = _AVRANGE[FULL]
    else:
        frame_or_context.colorspace = _AVCOL_BY_MATRIX.get(colour.matrix, 2)
        frame_or_context.color_range = _AVRANGE[colour.range]
    frame_or_context.color_primaries = colour.primaries
    frame_or_context.color_trc = colour.transfer


def _levels(colour: Colour, depth: int) -> tuple[float, float, float]:
    """(Y offset, Y excursion, C excursion) in code values of ``depth`` bits."""
    scale = float(1 << (depth - 8))
    if colour.range == LIMITED:
        return 16.0 * scale, 219.0 * scale, 224.0 * scale
    top = float((1 << depth) - 1)
    return 0.0, top, top


def yuv_to_rgb_reference(y: np.ndarray, cb: np.ndarray, cr: np.ndarray, colour: Colour, depth: int) -> np.ndarray:
    """Float R'G'B' in [0, 1] (unclipped) from full-resolution Y'CbCr code values: the textbook formulas."""
    kr, kb = MATRIX_COEFFICIENTS[colour.matrix]
    kg = 1.0 - kr - kb
    offset, y_span, c_span = _levels(colour, depth)
    mid = float(1 << (depth - 1))
    yn = (np.asarray(y, np.float64) - offset) / y_span
    pb = (np.asarray(cb, np.float64) - mid) / c_span
    pr = (np.asarray(cr, np.float64) - mid) / c_span
    r = yn + 2.0 * (1.0 - kr) * pr
    b = yn + 2.0 * (1.0 - kb) * pb
    g = (yn - kr * r - kb * b) / kg
    return np.stack([r, g, b], axis=-1)


def rgb_to_yuv_reference(rgb: np.ndarray, colour: Colour, depth: int) -> np.ndarray:
    """Float Y'CbCr code values (unrounded) from R'G'B' in [0, 1]: the inverse of ``yuv_to_rgb_reference``."""
    kr, kb = MATRIX_COEFFICIENTS[colour.matrix]
    rgb = np.asarray(rgb, np.float64)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    yn = kr * r + (1.0 - kr - kb) * g + kb * b
    pb = (b - yn) / (2.0 * (1.0 - kb))
    pr = (r - yn) / (2.0 * (1.0 - kr))
    offset, y_span, c_span = _levels(colour, depth)
    mid = float(1 << (depth - 1))
    return np.stack([offset + y_span * yn, mid + c_span * pb, mid + c_span * pr], axis=-1)
