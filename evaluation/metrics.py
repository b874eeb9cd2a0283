"""Image-quality metrics of the evaluation protocol: PSNR and SSIM on the luma (Y) channel.

Both compare a super-resolved image ``sr`` (float, RGB, values in [0, 1]; clamped here) with the
cropped ground truth ``hr`` (uint8 RGB), after removing ``shave`` pixels on every border
(the protocol uses ``shave = ceil(max(scale_h, scale_w))``, see
:func:`asisr.evaluation.protocol.shave_for`). Everything is computed in float64.

Luma is ITU-R BT.601 "studio swing" Y as MATLAB's ``rgb2ycbcr`` computes it:
``Y = 16 + (65.738 R + 129.057 G + 25.064 B) / 256`` for R, G, B in [0, 255].

PSNR (:func:`psnr_y`)
    ``d = sum_c (sr_c - hr_c) * [65.738, 129.057, 25.064]_c / 256`` with both images in [0, 1],
    ``PSNR = -10 log10(mean(d^2))`` (peak 1). Identical images give ``inf``.

SSIM (:func:`ssim_y`)
    The SSIM index of Wang, Bovik, Sheikh and Simoncelli (IEEE TIP 2004) with its standard
    parameters, computed on Y in [0, 255] (including the +16 offset): an 11 x 11 Gaussian window
    with sigma 1.5 (normalised to sum 1), ``K1 = 0.01``, ``K2 = 0.03``, ``L = 255``, the local
    statistics taken only where the window lies fully inside the (shaved) image ("valid"
    filtering), and the mean of the SSIM map as the result. This is the computation of the
    authors' MATLAB ``ssim_index`` and of the usual SR-benchmark code, so values are comparable
    with published "SSIM on Y" numbers. The filtering is a separable convolution in numpy.
    An image whose shaved size is below 11 x 11 has no SSIM: the result is ``nan``.
"""

from __future__ import annotations

import math

import numpy as np

#: MATLAB rgb2ycbcr luma weights for 8-bit values (divide by 256).
Y_WEIGHTS = np.array([65.738, 129.057, 25.064], dtype=np.float64)

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _sr_float(sr: np.ndarray) -> np.ndarray:
    sr = np.asarray(sr)
    if sr.ndim != 3 or sr.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {sr.shape}")
    if not np.issubdtype(sr.dtype, np.floating):
        raise ValueError(f"sr must be a float image in [0, 1], got dtype {sr.dtype}")
    return np.clip(sr.astype(np.float64), 0.0, 1.0)


def _hr_float(hr: np.ndarray, like: np.ndarray) -> np.ndarray:
    hr = np.asarray(hr)
    if hr.dtype != np.uint8:
        raise ValueError(f"hr must be a uint8 image, got dtype {hr.dtype}")
    if hr.shape != like.shape:
        raise ValueError(f"sr and hr differ in shape: {like.shape} vs {hr.shape}")
    return hr.astype(np.float64) / 255.0


def _shave(a: np.ndarray, shave: int) -> np.ndarray:
    shave = int(shave)
    if shave < 0:
        raise ValueError(f"shave must be >= 0, got {shave}")
    if shave == 0:
        return a
    return a[shave:-shave, shave:-shave]


def rgb_to_y(rgb01: np.ndarray) -> np.ndarray:
    """Luma in [16, 235] (float64) of an RGB image given in [0, 1]."""
    rgb01 = np.asarray(rgb01, dtype=np.float64)
    return 16.0 + (rgb01 * 255.0) @ (Y_WEIGHTS / 256.0)


def psnr_y(sr: np.ndarray, hr: np.ndarray, shave: int) -> float:
    """PSNR (dB) on Y between float ``sr`` in [0, 1] and uint8 ``hr``, both ``(H, W, 3)`` RGB.

    ``inf`` when the shaved images are identical in Y. Raises ``ValueError`` if nothing is left
    after shaving.
    """
    srf = _sr_float(sr)
    hrf = _hr_float(hr, srf)
    d = _shave((srf - hrf) @ (Y_WEIGHTS / 256.0), shave)
    if d.size == 0:
        raise ValueError(f"image of size {srf.shape[1]}x{srf.shape[0]} is empty after shaving {shave} px")
    mse = float(np.mean(d * d))
    if mse == 0.0:
        return math.inf
    return -10.0 * math.log10(mse)


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """1-D Gaussian of ``size`` taps, normalised to sum 1 (its outer product is the 2-D window)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def _filter_valid(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 2-D correlation with ``outer(g, g)``, keeping only fully-covered positions."""
    k = g.size
    h, w = a.shape
    rows = np.zeros((h - k + 1, w), dtype=np.float64)
    for i in range(k):
        rows += g[i] * a[i:i + h - k + 1, :]
    out = np.zeros((h - k + 1, w - k + 1), dtype=np.float64)
    for j in range(k):
        out += g[j] * rows[:, j:j + w - k + 1]
    return out


def ssim_map(y1: np.ndarray, y2: np.ndarray, data_range: float = 255.0) -> np.ndarray:
    """SSIM map (valid region) of two single-channel float images, Gaussian 11x11 sigma 1.5."""
    y1 = np.asarray(y1, dtype=np.float64)
    y2 = np.asarray(y2, dtype=np.float64)
    if y1.shape != y2.shape or y1.ndim != 2:
        raise ValueError(f"ssim_map needs two equal 2-D arrays, got {y1.shape} and {y2.shape}")
    g = gaussian_window()
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    mu1 = _filter_valid(y1, g)
    mu2 = _filter_valid(y2, g)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    s1 = _filter_valid(y1 * y1, g) - mu1_sq
    s2 = _filter_valid(y2 * y2, g) - mu2_sq
    s12 = _filter_valid(y1 * y2, g) - mu12
    return ((2.0 * mu12 + c1) * (2.0 * s12 + c2)) / ((mu1_sq + mu2_sq + c1) * (s1 + s2 + c2))


def ssim_y(sr: np.ndarray, hr: np.ndarray, shave: int) -> float:
    """SSIM on Y (in [0, 255]) between float ``sr`` in [0, 1] and uint8 ``hr``; see module doc.

    1.0 for identical images; ``nan`` if the shaved image is smaller than the 11 x 11 window.
    """
    srf = _sr_float(sr)
    hrf = _hr_float(hr, srf)
    y1 = _shave(rgb_to_y(srf), shave)
    y2 = _shave(rgb_to_y(hrf), shave)
    if min(y1.shape) < SSIM_WINDOW:
        return math.nan
    return float(np.mean(ssim_map(y1, y2)))
