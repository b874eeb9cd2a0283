"""Plot PSNR and EQ (scale equivariance) against scale for several models on one figure.

Reads reports written by ``asisr-eval --json`` (``{"model": name, "psnr": {dataset: {scale: dB}},
"eq": {dataset: {scale: dB}}}``; ``eq`` is there when ``--equivariance`` was given) and also the
reference files of ``shared/reference/`` (PSNR only). Draws two panels: PSNR vs scale and EQ vs
scale, one line per model and dataset, labelled with the report's model name (plus the dataset
when there is more than one, plus the file name when two files share a label).

Only symmetric scales (``"2"``, ``"1.6"``) are plotted; asymmetric ones (``"2x3.5"``) have no
single x value and are skipped. Cells written as ``null`` (an infinite value) are left out.

matplotlib is an optional dependency (``pip install "asisr[plot]"``), imported only when a
figure is drawn; pyplot is not used, so this works without a display and leaves the caller's
matplotlib backend alone.

Command line::

    python -m asisr.cli.plot liif.json eqsr.json bicubic.json --out psnr_eq.png

Python::

    from asisr.evaluation.plot import load_report, plot_reports
    plot_reports([load_report("liif.json"), load_report("bicubic.json")], "fig.png")
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from asisr.atomic import atomic_path
from asisr.errors import UserError

INSTALL_HINT = 'pip install "asisr[plot]"'

#: (report key, panel title, y label) of the two panels.
PANELS = (
    ("psnr", "PSNR vs scale", "PSNR on Y (dB), higher is better"),
    ("eq", "Scale equivariance vs scale", "EQ (dB), lower is better"),
)


def load_report(path: str | Path) -> dict[str, Any]:
    """Read one JSON report; :class:`UserError` if it is missing, not JSON, or has no PSNR / EQ table."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"result file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read result file {path}: {' '.join(str(e).split())}") from None
    if not isinstance(data, dict) or not any(isinstance(data.get(k), dict) for k, _, _ in PANELS):
        raise UserError(f"result file {path} has neither a \"psnr\" nor an \"eq\" table "
                        "(write one with asisr-eval --json)")
    data.setdefault("model", None)
    data["_source"] = str(path)
    return data


def series(report: dict[str, Any], metric: str) -> dict[str, list[tuple[float, float]]]:
    """``{dataset: [(scale, value), ...]}`` sorted by scale, for symmetric scales with a finite value."""
    table = report.get(metric)
    out: dict[str, list[tuple[float, float]]] = {}
    if not isinstance(table, dict):
        return out
    for dataset, cells in table.items():
        if not isinstance(cells, dict):
            continue
        pts = []
        for key, value in cells.items():
            try:
                s, v = float(key), float(value)
            except (TypeError, ValueError):  # "2x3.5", or null
                continue
            if math.isfinite(s) and math.isfinite(v):
                pts.append((s, v))
        if pts:
            out[str(dataset)] = sorted(pts)
    return out


def _labels(reports: Sequence[dict[str, Any]]) -> list[str]:
    base = []
    for i, r in enumerate(reports):
        name = r.get("model")
        base.append(str(name) if name else Path(r.get("_source", f"result {i + 1}")).stem)
    return [f"{b} ({Path(r.get('_source', str(i + 1))).name})" if base.count(b) > 1 else b
            for i, (b, r) in enumerate(zip(base, reports))]


def plot_reports(reports: Sequence[dict[str, Any]], out: str | Path, *, title: str | None = None,
                 dpi: int = 150, overwrite: bool = False) -> Path:
    """Draw the two panels for ``reports`` (dicts as from :func:`load_report`) and save to ``out``.

    The file format follows ``out``'s suffix (png, pdf, svg, ...). Written atomically; an existing
    file is refused unless ``overwrite``. Raises :class:`UserError` if matplotlib is missing or
    there is nothing to plot.
    """
    from asisr.evaluation.evaluate import check_output_path

    out = check_output_path(out, overwrite)
    fmt = out.suffix.lower().lstrip(".")
    if not fmt:
        raise UserError(f"--out {out} has no suffix; name the format, e.g. fig.png or fig.pdf")
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise UserError(f"plotting needs matplotlib, which is not installed: {INSTALL_HINT}") from None

    labels = _labels(reports)
    data = {metric: [series(r, metric) for r in reports] for metric, _, _ in PANELS}
    if not any(s for per_report in data.values() for s in per_report):
        raise UserError("nothing to plot: no symmetric scale with a finite PSNR or EQ value in the inputs")
    datasets = sorted({d for per_report in data.values() for s in per_report for d in s})

    fig = Figure(figsize=(11, 4.3), layout="constrained")
    supported = fig.canvas.get_supported_filetypes()
    if fmt not in supported:
        raise UserError(f"cannot write .{fmt} files; choose one of: {', '.join(sorted(supported))}")
    axes = fig.subplots(1, 2)
    markers = "osD^v<>ph*"
    for ax, (metric, panel_title, ylabel) in zip(axes, PANELS):
        drawn = 0
        for i, (label, per_dataset) in enumerate(zip(labels, data[metric])):
            for dataset in sorted(per_dataset):
                j = datasets.index(dataset)  # one marker / line style per dataset across all inputs
                xs, ys = zip(*per_dataset[dataset])
                line_label = label if len(datasets) == 1 else f"{label} - {dataset}"
                ax.plot(xs, ys, marker=markers[j % len(markers)], color=f"C{i % 10}",
                        linestyle="-" if j == 0 else ("--", ":", "-.")[(j - 1) % 3], label=line_label)
                drawn += 1
        ax.set_title(panel_title if len(datasets) != 1 else f"{panel_title} ({datasets[0]})")
        ax.set_xlabel("scale")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if drawn:
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, f"no {metric.upper()} values in the inputs", ha="center", va="center",
                    transform=ax.transAxes, color="0.4")
    if title:
        fig.suptitle(title)

    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=fmt, dpi=dpi)
    return out


# ----------------------------------------------------------------------------- command line
