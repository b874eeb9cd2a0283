"""Run the evaluation protocol over a folder of HR images and report PSNR / SSIM / time.

The model is anything with the signature of :data:`UpscaleFn`:
``upscale_fn(lr_uint8_rgb (h, w, 3), (out_h, out_w)) -> float array (out_h, out_w, 3) in [0, 1]``
(e.g. ``asisr.sources.open_upscaler(...).upscale_to``); :func:`bicubic_upscale` is the baseline.

Example::

    from asisr.evaluation import evaluate, bicubic_upscale, format_table
    res = evaluate("../shared/data/Set5", [(2, 2), (2, 3.5)], bicubic_upscale, name="bicubic")
    print(format_table([res]))
    print(res["scales"]["2"]["psnr"])        # 33.673...
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from asisr.atomic import atomic_path
from asisr.errors import UserError
from asisr.evaluation.metrics import psnr_y, ssim_y
from asisr.evaluation.protocol import (
    check_image,
    list_images,
    load_image,
    lr_size,
    make_pair,
    shave_for,
)

UpscaleFn = Callable[[np.ndarray, tuple[int, int]], np.ndarray]
ProgressFn = Callable[[int, int, str], None]

PROTOCOL = (
    "shared/README.md: HR cropped top-left to round(floor(H/s+1e-9)*s); LR = PIL bicubic; "
    "SR float clamped to [0,1]; PSNR and SSIM (Gaussian 11x11, sigma 1.5) on Y, shave ceil(max scale)"
)


def bicubic_upscale(lr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Baseline: PIL bicubic resize of the uint8 LR image to ``size = (out_h, out_w)``, / 255.

    Reproduces ``shared/reference/bicubic.json`` (float32 output in [0, 1]).
    """
    out_h, out_w = (int(v) for v in size)
    img = Image.fromarray(np.ascontiguousarray(lr, dtype=np.uint8), "RGB")
    return np.asarray(img.resize((out_w, out_h), Image.Resampling.BICUBIC), dtype=np.float32) / np.float32(255.0)


def scale_key(scale_h: float, scale_w: float) -> str:
    """Key of a scale in result dicts: ``"2"``, ``"1.6"``, ``"3.5x2"`` (width x height, as ``--scale`` takes it)."""
    return f"{scale_h:g}" if scale_h == scale_w else f"{scale_w:g}x{scale_h:g}"


def normalize_scales(scales: Iterable[Any]) -> list[tuple[float, float]]:
    """Accept floats, ``(sh, sw)`` pairs or :class:`asisr.scale.Scale`; drop duplicates, keep order."""
    out: list[tuple[float, float]] = []
    for s in scales:
        if hasattr(s, "h") and hasattr(s, "w"):
            pair = (float(s.h), float(s.w))
        elif isinstance(s, (tuple, list)):
            if len(s) != 2:
                raise UserError(f"invalid scale {s!r}: expected (scale_h, scale_w)")
            pair = (float(s[0]), float(s[1]))
        else:
            pair = (float(s), float(s))
        for v in pair:
            if not math.isfinite(v) or v < 1.0:
                raise UserError(f"invalid scale {scale_key(*pair)}: evaluation needs scales >= 1")
        if pair not in out:
            out.append(pair)
    if not out:
        raise UserError("no scales given")
    return out


def preflight(folder: str | Path, scales: Iterable[Any]) -> list[Path]:
    """Check a data folder before any work: images exist, headers readable, big enough for every scale.

    Returns the sorted image paths. Raises :class:`~asisr.errors.UserError` on the first problem.
    """
    pairs = normalize_scales(scales)
    paths = list_images(folder)
    for p in paths:
        H, W = check_image(p)
        for sh, sw in pairs:
            h, w = lr_size(H, W, sh, sw)
            if h < 1 or w < 1:
                raise UserError(f"image {p} ({W}x{H}) is too small for scale {scale_key(sh, sw)}")
    return paths


ScoreFn = Callable[[np.ndarray, float, float], dict[str, Any]]


def sweep(folder: str | Path, scales: Iterable[Any], score: ScoreFn, totals: Sequence[str], *,
          progress: ProgressFn | None = None, label: str = "") -> tuple[list[Path], dict[str, dict[str, Any]]]:
    """The loop every folder measurement shares: preflight, decode each image once, score it at every scale.

    ``score(hr_uint8, scale_h, scale_w) -> record`` (a dict with at least ``seconds``); the
    records land in ``per_scale[key]["per_image"][file name]`` and the fields in ``totals``
    are summed per scale. Errors name the image.
    """
    folder = Path(folder)
    pairs = normalize_scales(scales)
    paths = preflight(folder, pairs)
    per_scale = {scale_key(sh, sw): {"scale_h": sh, "scale_w": sw, "shave": shave_for(sh, sw),
                                     **{t: 0.0 for t in totals}, "per_image": {}} for sh, sw in pairs}
    total, step = len(paths) * len(pairs), 0
    for path in paths:
        hr = load_image(path)
        for sh, sw in pairs:
            key = scale_key(sh, sw)
            try:
                rec = score(hr, sh, sw)
            except UserError as e:
                raise UserError(f"image {path}: {e}") from None
            entry = per_scale[key]
            entry["per_image"][path.name] = rec
            for t in totals:
                entry[t] += rec[t]
            step += 1
            if progress is not None:
                progress(step, total, f"{label}{path.name} x{key}")
    return paths, per_scale


def sweep_result(name: str, folder: str | Path, dataset: str | None, protocol: str, paths: list[Path],
                 per_scale: dict[str, dict[str, Any]]) -> dict[str, Any]:
    folder = Path(folder)
    return {
        "name": name,
        "dataset": dataset or folder.resolve().name or str(folder),
        "folder": str(folder),
        "protocol": protocol,
        "images": [p.name for p in paths],
        "scales": per_scale,
    }


def scoring_pair(hr: np.ndarray, scale_h: float, scale_w: float) -> tuple[np.ndarray, np.ndarray, int]:
    """The protocol's (cropped HR, LR, shave) for one scale; refuses an HR crop the shave would empty."""
    hr_c, lr = make_pair(hr, scale_h, scale_w)
    shave = shave_for(scale_h, scale_w)
    if min(hr_c.shape[:2]) <= 2 * shave:
        raise UserError(f"HR image {hr.shape[1]}x{hr.shape[0]} is too small to score at scale "
                        f"{scale_key(scale_h, scale_w)} (shave {shave} px)")
    return hr_c, lr, shave


def checked_output(out: Any, size: tuple[int, int], where: str) -> np.ndarray:
    """A model's output as a float array of ``size`` x 3, clamped to [0, 1]; one-line errors otherwise."""
    arr = np.asarray(out)
    if arr.shape != (size[0], size[1], 3):
        raise UserError(f"{where} returned shape {arr.shape}, expected {(size[0], size[1], 3)}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise UserError(f"{where} returned dtype {arr.dtype}, expected float values in [0, 1]")
    return np.clip(arr, 0.0, 1.0)


def evaluate(
    folder: str | Path,
    scales: Iterable[Any],
    upscale_fn: UpscaleFn,
    name: str = "model",
    *,
    dataset: str | None = None,
    ssim: bool = True,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Evaluate ``upscale_fn`` on every image of ``folder`` at every scale.

    ``scales``: ``[(sh, sw), ...]`` (floats, pairs or ``Scale`` objects; all >= 1).
    ``upscale_fn(lr, (out_h, out_w))`` must return an ``(out_h, out_w, 3)`` float array; it is
    clamped to [0, 1] here. Only the time spent inside ``upscale_fn`` is counted in ``seconds``.
    Each image is decoded once and scored at all scales.

    Returns::

        {"name": name, "dataset": "Set5", "folder": "...", "protocol": PROTOCOL,
         "images": ["baby.png", ...],
         "scales": {"2": {"scale_h": 2.0, "scale_w": 2.0, "shave": 2,
                          "psnr": mean_dB, "ssim": mean, "seconds": total_s,
                          "output_megapixels": total,
                          "per_image": {"baby.png": {"psnr": ..., "ssim": ..., "seconds": ...,
                                                      "hr_size": [H, W], "lr_size": [h, w]}}},
                    ...}}

    PSNR of an image identical to its ground truth is ``inf`` (the mean is then ``inf`` too);
    ``ssim`` is ``None`` when disabled and ``nan`` for images too small for the SSIM window.
    """

    def score(hr: np.ndarray, sh: float, sw: float) -> dict[str, Any]:
        key = scale_key(sh, sw)
        hr_c, lr, shave = scoring_pair(hr, sh, sw)
        out_h, out_w = hr_c.shape[:2]
        t0 = time.perf_counter()
        sr = upscale_fn(lr, (out_h, out_w))
        dt = time.perf_counter() - t0
        sr = checked_output(sr, (out_h, out_w), f"{name} at x{key}")
        return {
            "psnr": psnr_y(sr, hr_c, shave),
            "ssim": ssim_y(sr, hr_c, shave) if ssim else None,
            "seconds": dt,
            "output_megapixels": out_h * out_w / 1e6,
            "hr_size": [out_h, out_w],
            "lr_size": [int(lr.shape[0]), int(lr.shape[1])],
        }

    paths, per_scale = sweep(folder, scales, score, ("seconds", "output_megapixels"), progress=progress)
    for entry in per_scale.values():
        recs = list(entry["per_image"].values())
        entry["psnr"] = float(np.mean([r["psnr"] for r in recs]))
        entry["ssim"] = None
        if ssim:
            vals = [r["ssim"] for r in recs if not math.isnan(r["ssim"])]
            entry["ssim"] = float(np.mean(vals)) if vals else math.nan
    return sweep_result(name, folder, dataset, PROTOCOL, paths, per_scale)


# ----------------------------------------------------------------------------- reporting


def dataset_names(results: Sequence[dict]) -> list[str]:
    """Unique column names for results: the dataset name, or its folder where names collide."""
    names = [r["dataset"] for r in results]
    return [r["folder"] if names.count(r["dataset"]) > 1 else r["dataset"] for r in results]


def _fmt(v: Any, digits: int) -> str:
    if v is None:
        return "-"
    v = float(v)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.{digits}f}"


def grouped_table(results: Sequence[dict], columns: Sequence[Sequence[str]],
                  cells: Callable[[int, dict, str], list[str]], title: str | None = None) -> str:
    """Plain-text table shared by the PSNR and EQ reports: one row per scale, a column group per result.

    ``columns[i]`` names result ``i``'s columns; ``cells(i, entry, key)`` fills them for one scale
    (``entry`` is ``results[i]["scales"][key]``; missing scales print ``-``).
    """
    if not results:
        return ""
    names = dataset_names(results)
    keys: list[str] = []
    for r in results:
        for k in r["scales"]:
            if k not in keys:
                keys.append(k)
    sub = ["scale"] + [c for cols in columns for c in cols]
    rows = []
    for k in keys:
        row = [k]
        for i, r in enumerate(results):
            e = r["scales"].get(k)
            row += ["-"] * len(columns[i]) if e is None else cells(i, e, k)
        rows.append(row)

    widths = [max(len(sub[i]), *(len(row[i]) for row in rows)) for i in range(len(sub))]
    sep = "  "
    spans = []  # (first column, column count, label) of each group
    col = 1
    for r, nm, cols in zip(results, names, columns):
        label, n = f"{nm} ({len(r['images'])} images)", len(cols)
        span = sum(widths[col:col + n]) + len(sep) * (n - 1)
        if len(label) > span:  # widen the group's first column so its label fits
            widths[col] += len(label) - span
        spans.append((col, n, label))
        col += n

    def line(cells_: list[str]) -> str:
        parts = [cells_[0].ljust(widths[0])]
        for c0, n, _ in spans:
            parts.append(sep.join(cells_[i].rjust(widths[i]) for i in range(c0, c0 + n)))
        return " | ".join(parts).rstrip()

    out = [title] if title else []
    labels = [label.center(sum(widths[c0:c0 + n]) + len(sep) * (n - 1)) for c0, n, label in spans]
    out.append(" | ".join([" " * widths[0], *labels]).rstrip())
    out.append(line(sub))
    out.append("-" * len(out[-1]))
    out += [line(row) for row in rows]
    return "\n".join(out)


def format_table(results: Sequence[dict], reference: dict | None = None, title: str | None = None) -> str:
    """PSNR / SSIM / seconds per dataset and scale.

    ``reference`` (optional) is a dict in the layout of ``shared/reference/*.json``
    (``{"psnr": {dataset: {scale_key: dB}}}``); when it has a number for a cell, a
    ``dPSNR`` column shows ``ours - reference``.
    """
    ref_psnr = (reference or {}).get("psnr", {})
    with_ref = [bool(ref_psnr.get(r["dataset"])) for r in results]
    columns = [["PSNR dB", "SSIM", "seconds"] + (["dPSNR"] if wr else []) for wr in with_ref]

    def cells(i: int, e: dict, k: str) -> list[str]:
        row = [_fmt(e["psnr"], 3), _fmt(e["ssim"], 4), _fmt(e["seconds"], 2)]
        if with_ref[i]:
            ref = ref_psnr.get(results[i]["dataset"], {}).get(k)
            row.append("-" if ref is None else f"{float(e['psnr']) - float(ref):+.3f}")
        return row

    return grouped_table(results, columns, cells, title)


def make_report(results: Sequence[dict], model: str | None = None) -> dict[str, Any]:
    """JSON-ready report: summary tables in the layout of ``shared/reference/*.json``
    (``psnr`` / ``ssim`` / ``seconds`` -> dataset -> scale) plus the full per-image results."""
    names = dataset_names(results)
    report: dict[str, Any] = {
        "protocol": PROTOCOL,
        "model": model if model is not None else (results[0]["name"] if results else None),
        "psnr": {}, "ssim": {}, "seconds": {},
        "results": list(results),
    }
    for nm, r in zip(names, results):
        for metric in ("psnr", "ssim", "seconds"):
            report[metric][nm] = {k: e[metric] for k, e in r["scales"].items()}
    return report


def check_output_path(path: str | Path, overwrite: bool) -> Path:
    """Refuse (UserError) an existing output file without ``overwrite``, or a missing parent folder."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"output path is a folder: {path}")
    if path.exists() and not overwrite:
        raise UserError(f"{path} already exists; pass --overwrite to replace it")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"folder for the output file does not exist: {parent}")
    return path


def write_json(path: str | Path, data: Any, overwrite: bool = False) -> Path:
    """Write ``data`` as JSON atomically (temp file in the same folder, then ``os.replace``).

    Non-finite floats (``inf`` PSNR of a perfect reconstruction, ``nan``) are written as ``null``
    so the file is strict JSON. Refuses an existing file unless ``overwrite``.
    """
    path = check_output_path(path, overwrite)
    text = json.dumps(_finite(data), indent=1, allow_nan=False) + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return _finite(obj.item())
    return obj
