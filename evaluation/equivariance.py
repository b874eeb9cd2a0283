"""Scale equivariance of a super-resolution model: the EQ measure of EQSR (Wang et al., CVPR 2023).

For an HR image ``x``, a scale ``r`` (per axis ``(rh, rw)``), the protocol's bicubic downscaling
``f(.; r)`` and the model's upscaling ``phi(.; r)``::

    EQ(phi, r) = 10 log10 MSE( phi(f(x; r); r), f(phi(x; r); r) )

A perfectly scale-equivariant model gives the same image whether it upscales the downscaled
image (left) or downscales its own upscaling of the image (right). Lower EQ is more equivariant;
``-EQ`` (key ``eq_psnr``) reads like a PSNR between the two sides (higher is better).

How the two sides are made here (all sizes are ``(height, width)``):

``x``
    The HR image cropped exactly as the protocol crops it (``shared/README.md`` step 1):
    ``h = floor(H / rh + 1e-9)``, ``w = floor(W / rw + 1e-9)``, ``x`` = top-left
    ``Hc x Wc = round(h * rh) x round(w * rw)``.
left = ``phi(f(x))``
    ``f(x)`` is the protocol's LR: PIL bicubic of the uint8 crop to ``h x w`` (uint8 out), and
    ``phi`` upscales it back to ``Hc x Wc``. This is exactly the SR output that PSNR scores.
right = ``f(phi(x))``
    ``phi`` upscales the uint8 crop itself to ``round(Hc * rh) x round(Wc * rw)``, and ``f``
    shrinks that float image straight back to ``Hc x Wc`` with PIL bicubic in float mode (``"F"``,
    one channel at a time, same kernel and antialiasing as the uint8 path), then clamps to
    [0, 1] (the uint8 path clips too). Nothing is rounded to uint8: the model's output is
    compared as it is, just as PSNR scores it unrounded.

Why the right side resizes to ``Hc x Wc`` directly instead of re-applying the protocol's crop:
at integer scales ``round(Hc * r) = Hc * r`` and the protocol would give exactly ``Hc x Wc``
without cropping anything, so the two agree. At a fractional scale the protocol's
``floor(round(Hc * r) / r)`` can be ``Hc - 1`` (e.g. ``Hc = 7``, ``r = 1.6``: ``11 / 1.6 = 6.9``),
and the two sides would not have the same size. PIL and asisr's upscalers both map the full
image extent onto the full output extent (pixel centres at ``(i + 0.5) * in / out``), so every
resize here keeps the image's edges fixed: both sides cover the same scene on the same
``Hc x Wc`` grid, and each resize step's factor differs from ``r`` by at most ``0.5 / size``.

Only ``f(x)`` is rounded to uint8 (it is the protocol's LR, the input every model is scored on).
Even a perfectly equivariant model therefore sees that rounding (noise of 1/255 steps, about
-59 dB before the model amplifies it), which is a floor for EQ of real images.

The error is measured like the protocol's PSNR: on luma, ``d = sum_c (left_c - right_c) *
[65.738, 129.057, 25.064]_c / 256`` with both sides in [0, 1], ignoring ``ceil(max(rh, rw))``
pixels on every border, ``MSE = mean(d^2)``. Two identical sides give ``EQ = -inf``
(``eq_psnr = inf``; written as ``null`` in JSON), like :func:`~asisr.evaluation.metrics.psnr_y`
of identical images. Per scale, EQ is the mean over the folder's images of the per-image dB.

Note that ``phi(x)`` upscales the full HR image (e.g. Set5 at x6 is about 7 Mpx of output per
image), so this costs about ``r^2`` times the PSNR evaluation.

Example::

    from asisr.evaluation import equivariance, bicubic_upscale, format_eq_table
    res = equivariance("../shared/data/Set5", [2, 3, 4, 6], bicubic_upscale, name="bicubic")
    print(format_eq_table([res]))
    print(res["scales"]["2"]["eq"])          # dB, lower is more equivariant
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from asisr.evaluation.evaluate import (
    ProgressFn,
    _fmt,
    UpscaleFn,
    checked_output,
    dataset_names,
    grouped_table,
    scale_key,
    scoring_pair,
    sweep,
    sweep_result,
)
from asisr.evaluation.metrics import Y_WEIGHTS

#: Scales of the EQ table when none are given (those of the EQSR paper's comparison).
DEFAULT_EQ_SCALES = (2.0, 3.0, 4.0, 6.0)

EQ_PROTOCOL = (
    "EQ = 10 log10 MSE_Y(phi(f(x)), f(phi(x))), x = protocol HR crop (Hc x Wc); f(x) = protocol LR "
    "(PIL bicubic, uint8); phi(x) to round(Hc*r) x round(Wc*r), then f = PIL bicubic in float ('F') "
    "straight to Hc x Wc, clamped to [0,1]; Y weights and shave ceil(max scale) as PSNR; mean of dB over images"
)


def bicubic_downscale_float(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """PIL bicubic resize of a float RGB image ``(H, W, 3)`` in [0, 1] to ``size = (h, w)``.

    Each channel is resized as a PIL ``"F"`` (float32) image with ``Image.Resampling.BICUBIC``: the kernel and
    antialiasing of the protocol's uint8 downscaling without its 8-bit rounding (PIL's uint8 path
    rounds after each of its two separable passes, so on uint8 input the two differ by less than
    one 8-bit step). The result is clamped to [0, 1] and returned as float64 ``(h, w, 3)``.
    """
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {arr.shape}")
    out_h, out_w = (int(v) for v in size)
    if out_h < 1 or out_w < 1:
        raise ValueError(f"invalid output size {out_w}x{out_h}")
    chans = []
    for c in range(3):
        ch = Image.fromarray(np.ascontiguousarray(arr[:, :, c], dtype=np.float32))
        chans.append(np.asarray(ch.resize((out_w, out_h), Image.Resampling.BICUBIC), dtype=np.float64))
    return np.clip(np.stack(chans, axis=2), 0.0, 1.0)


def mse_y(a: np.ndarray, b: np.ndarray, shave: int) -> float:
    """Mean squared luma difference of two float RGB images in [0, 1], ``shave`` px off each border."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    d = (a - b) @ (Y_WEIGHTS / 256.0)
    shave = int(shave)
    if shave > 0:
        d = d[shave:-shave, shave:-shave]
    if d.size == 0:
        raise ValueError(f"image of size {a.shape[1]}x{a.shape[0]} is empty after shaving {shave} px")
    return float(np.mean(d * d))


def eq_db(mse: float) -> float:
    """``10 log10(mse)``; ``-inf`` for 0."""
    return -math.inf if mse == 0.0 else 10.0 * math.log10(mse)


def equivariance_image(
    hr: np.ndarray, scale_h: float, scale_w: float | None, upscale_fn: UpscaleFn, name: str = "model",
) -> dict[str, Any]:
    """EQ of ``upscale_fn`` on one uint8 RGB HR image at one scale (see the module doc).

    Returns ``{"eq": dB, "eq_psnr": -dB, "mse": ..., "seconds": time inside upscale_fn,
    "hr_size": [Hc, Wc], "lr_size": [h, w], "up_size": [round(Hc*rh), round(Wc*rw)]}``.
    """
    if scale_w is None:
        scale_w = scale_h
    key = scale_key(scale_h, scale_w)
    x, lr, shave = scoring_pair(hr, scale_h, scale_w)
    hc, wc = x.shape[:2]
    up_h, up_w = round(hc * scale_h), round(wc * scale_w)

    t0 = time.perf_counter()
    left = upscale_fn(lr, (hc, wc))
    t1 = time.perf_counter()
    big = upscale_fn(np.ascontiguousarray(x), (up_h, up_w))
    t2 = time.perf_counter()
    left = _checked(left, (hc, wc), name, key)
    big = _checked(big, (up_h, up_w), name, key)
    right = bicubic_downscale_float(big, (hc, wc))
    del big
    mse = mse_y(left, right, shave)
    eq = eq_db(mse)
    return {
        "eq": eq, "eq_psnr": -eq, "mse": mse, "seconds": (t1 - t0) + (t2 - t1),
        "hr_size": [hc, wc], "lr_size": [int(lr.shape[0]), int(lr.shape[1])], "up_size": [up_h, up_w],
    }


def equivariance(
    folder: str | Path,
    scales: Iterable[Any],
    upscale_fn: UpscaleFn,
    name: str = "model",
    *,
    dataset: str | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """EQ of ``upscale_fn`` on every image of ``folder`` at every scale (same style as ``evaluate``).

    ``scales``: floats, ``(sh, sw)`` pairs or ``Scale`` objects, all >= 1 (the EQSR paper uses
    :data:`DEFAULT_EQ_SCALES` = 2, 3, 4, 6).
    ``upscale_fn(image_uint8 (h, w, 3), (out_h, out_w)) -> float (out_h, out_w, 3)`` in [0, 1]
    (clamped here); it is called twice per image and scale: on the protocol's LR, and on the
    HR crop itself (output ``r`` times larger). ``seconds`` counts only time inside it.

    Returns::

        {"name": name, "dataset": "Set5", "folder": "...", "protocol": EQ_PROTOCOL,
         "images": ["baby.png", ...],
         "scales": {"2": {"scale_h": 2.0, "scale_w": 2.0, "shave": 2,
                          "eq": mean_dB, "eq_psnr": -mean_dB, "seconds": total_s,
                          "per_image": {"baby.png": {"eq": ..., "eq_psnr": ..., "mse": ...,
                                                      "seconds": ..., "hr_size": [Hc, Wc],
                                                      "lr_size": [h, w], "up_size": [..]}}},
                    ...}}
    """
    def score(hr: np.ndarray, sh: float, sw: float) -> dict[str, Any]:
        return equivariance_image(hr, sh, sw, upscale_fn, name)

    paths, per_scale = sweep(folder, scales, score, ("seconds",), progress=progress, label="EQ ")
    for entry in per_scale.values():
        mean = float(np.mean([r["eq"] for r in entry["per_image"].values()]))
        entry["eq"], entry["eq_psnr"] = mean, -mean
    return sweep_result(name, folder, dataset, EQ_PROTOCOL, paths, per_scale)


def _checked(out: Any, size: tuple[int, int], name: str, key: str) -> np.ndarray:
    return checked_output(out, size, f"{name} at x{key}").astype(np.float64, copy=False)


# ----------------------------------------------------------------------------- reporting


def format_eq_table(results: Sequence[dict], title: str | None = None) -> str:
    """Plain-text table: one row per scale, an ``EQ dB`` / ``-EQ`` / ``seconds`` group per dataset."""

    def cells(_i: int, e: dict, _k: str) -> list[str]:
        return [_fmt(e["eq"], 3), _fmt(e["eq_psnr"], 3), _fmt(e["seconds"], 2)]

    return grouped_table(results, [["EQ dB", "-EQ", "seconds"]] * len(results), cells, title)


def add_eq_to_report(report: dict[str, Any], eq_results: Sequence[dict]) -> dict[str, Any]:
    """Add EQ summaries to a report (e.g. from ``make_report``), in place; returns it.

    Adds ``eq`` and ``eq_psnr`` (dataset -> scale -> dB), ``eq_seconds`` and the full per-image
    ``eq_results``; the same dataset column names as ``make_report`` when folders share a name.
    """
    names = dataset_names(eq_results)
    report["eq_protocol"] = EQ_PROTOCOL
    for metric, key in (("eq", "eq"), ("eq_psnr", "eq_psnr"), ("eq_seconds", "seconds")):
        table = report.setdefault(metric, {})
        for nm, r in zip(names, eq_results):
            table[nm] = {k: e[key] for k, e in r["scales"].items()}
    report["eq_results"] = list(eq_results)
    return report


def make_eq_report(eq_results: Sequence[dict], model: str | None = None) -> dict[str, Any]:
    """JSON-ready report of EQ results alone (``model``, ``eq``, ``eq_psnr``, ``eq_seconds``, ...)."""
    report: dict[str, Any] = {"model": model if model is not None else (eq_results[0]["name"] if eq_results else None)}
    return add_eq_to_report(report, eq_results)
