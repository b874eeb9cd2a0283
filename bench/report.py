"""The benchmark report: machine header, one table row per (job, backend), JSON and Markdown.

Columns: latency median and spread (min-max over the timed passes), output megapixels per
second, peak resident memory of the backend's section (sampled ``VmRSS``), the job's FLOPs
(backbone / upsampler, as counted by ``asisr.bench.flops``), the achieved GFLOP/s and its
fraction of the measured fp32 GEMM peak, and Y-PSNR with its difference to torch-ref for
scored jobs.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path

from asisr.errors import UserError
from asisr.runtime.contract import STAGE_NAMES
from asisr.runtime.precision import cpu_model


def machine_info(threads: int) -> dict:
    import numpy
    import onnxruntime
    import torch

    import asisr
    from asisr.runtime.precision import matrix_flags

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "threads": threads,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": numpy.__version__,
        "asisr": asisr.__version__,
        "matrix_flags": matrix_flags(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def output_paths(out: str | Path) -> tuple[Path, Path]:
    """``--out results/bench`` (or ``bench.json`` / ``bench.md``) -> the JSON and Markdown paths."""
    out = Path(out)
    if out.suffix.lower() in (".json", ".md"):
        out = out.with_suffix("")
    if not out.name:
        raise UserError(f"--out needs a file name stem, got {str(out)!r}")
    return out.with_name(out.name + ".json"), out.with_name(out.name + ".md")


def check_outputs(out: str | Path, overwrite: bool) -> tuple[Path, Path]:
    """Refuse, before any work, outputs that exist (without ``overwrite``) or cannot be written."""
    paths = output_paths(out)
    for p in paths:
        if p.is_dir():
            raise UserError(f"{p} is a folder; --out names a file stem like results/bench")
        if p.exists() and not overwrite:
            raise UserError(f"{p} already exists; pass --overwrite to replace it")
        if not p.parent.is_dir():
            raise UserError(f"output folder {p.parent} does not exist")
    return paths


def write_outputs(report: dict, out: str | Path, overwrite: bool) -> tuple[Path, Path]:
    """JSON (strict: non-finite numbers as null) and Markdown, each written atomically."""
    from asisr.atomic import atomic_path
    from asisr.evaluation import write_json

    json_path, md_path = check_outputs(out, overwrite)
    write_json(json_path, report, overwrite=True)
    with atomic_path(md_path) as tmp:
        tmp.write_text(to_markdown(report), encoding="utf-8")
    return json_path, md_path


def load_official(path: str | Path | None) -> dict | None:
    """Set5 x4 time and PSNR of the official LIIF code from ``liif_official.json``, if present."""
    if path is None or not Path(path).is_file():
        return None
    try:
        data = json.loads(Path(path).read_text())
        seconds = data["seconds"]["Set5"]["4"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    psnr = (data.get("psnr") or {}).get("Set5", {}).get("4")
    return {"file": str(path), "set5_x4_seconds": seconds, "set5_x4_psnr": psnr, "note": data.get("note", "")}


def _f(v, digits: int = 3, scale: float = 1.0) -> str:
    return "—" if v is None else f"{v * scale:.{digits}f}"


COLUMNS = ["job", "backend", "precision", "median s", "min-max s", "out Mpx/s", "peak RSS MiB", "GFLOP bb/up",
           "GFLOP/s", "% peak", "tiles", "PSNR dB", "ΔPSNR"]


def _cells(r: dict) -> list[str]:
    if r["status"] != "ok":
        return [r["job"], r["backend"], f"{r['status']}: {r['note']}"] + [""] * (len(COLUMNS) - 3)
    fl = r["flops"]
    return [
        r["job"], r["backend"], r.get("precision", "fp32"), _f(r["median_s"]), f"{_f(r['min_s'])}-{_f(r['max_s'])}", _f(r["mpx_per_s"]),
        _f(r["peak_rss_mib"], 0), " / ".join(f"{fl[stage] / 1e9:.1f}" for stage in STAGE_NAMES),
        _f(r["gflops_per_s"], 1), _f(r["gemm_ratio"], 1, 100.0), f"{r['tile']}/{r['lr_tile']}",
        _f(r.get("psnr"), 3), "—" if r.get("psnr_delta") is None else f"{r['psnr_delta']:+.4f}",
    ]


def header_lines(report: dict) -> list[str]:
    m, s, g = report["machine"], report["settings"], report["gemm_peak"]
    return [
        f"CPU: {m['cpu']} ({m['logical_cores']} logical cores, {m['usable_cores']} usable; matrix-unit flags: "
        f"{' '.join(m.get('matrix_flags') or []) or 'none'}); "
        f"threads used: {m['threads']}",
        f"torch {m['torch']}, onnxruntime {m['onnxruntime']}, numpy {m['numpy']}, Python {m['python']}, "
        f"asisr {m['asisr']}; {m['platform']}; {m['date']}",
        f"model: {s['model']}; passes: {s['repeats']} (torch-ref {s['ref_repeats']}, on jobs: "
        f"{s['ref_jobs'] if isinstance(s['ref_jobs'], str) else ', '.join(s['ref_jobs'])}) after {s['warmup']}; "
        f"memory budget {s['max_memory_mib']:.0f} MiB",
        f"fp32 GEMM peak: {g['gflops']:.1f} GFLOP/s ({g['n']}x{g['n']}, {g['threads']} threads, best of "
        f"{g['repeats']}: torch.matmul {g['torch_gflops']:.1f}, onnxruntime MatMul "
        f"{'—' if g['onnxruntime_gflops'] is None else format(g['onnxruntime_gflops'], '.1f')})",
    ] + _precision_lines(report)


def _precision_lines(report: dict) -> list[str]:
    """The reduced-precision peaks, the CPU's matrix units, and why the default path runs what it runs."""
    peaks = report.get("precision_peaks") or {}
    lines = []
    if peaks:
        lines.append("GEMM peaks on OpenVINO (same size and threads): " +
                     ", ".join(f"{p} {v:.1f}" for p, v in peaks.items()) + " GFLOP/s; matrix-unit flags: " +
                     (" ".join(report["machine"].get("matrix_flags") or []) or "none") +
                     ". '% peak' is against the peak of the precision the row computed in.")
    for r in report["rows"]:
        if r["backend"] == "default" and r["status"] == "ok":
            lines.append(f"default path ({r['job']}): {r['note']}")
            break
    return lines


def format_table(report: dict) -> str:
    """Plain-text table for the terminal."""
    rows = [COLUMNS] + [_cells(r) for r in report["rows"]]
    measured = [COLUMNS] + [_cells(r) for r in report["rows"] if r["status"] == "ok"]
    widths = [max(len(r[i]) for r in (rows if i < 2 else measured)) for i in range(len(COLUMNS))]
    lines = header_lines(report) + [""]
    for r in rows:
        if r is not COLUMNS and r[2].startswith(("skipped", "failed")):
            lines.append(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]}")
        else:
            lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    for j in report["jobs"]:
        if j["status"] != "ok":
            lines.append(f"{j['name']}: skipped: {j['note']}")
    return "\n".join(lines)


def to_markdown(report: dict) -> str:
    lines = ["# asisr-bench", ""] + [f"- {h}" for h in header_lines(report)] + [""]
    lines += ["| job | images | output | output Mpx |", "|---|---:|---|---:|"]
    for j in report["jobs"]:
        if j["status"] == "ok":
            lines.append(f"| {j['name']} | {j['images']} | {j['description']} | {j['output_mpx']:.2f} |")
        else:
            lines.append(f"| {j['name']} | — | skipped: {j['note']} | — |")
    lines += ["", "| " + " | ".join(COLUMNS) + " |", "|---|---|" + "---:|" * (len(COLUMNS) - 2)]
    for r in report["rows"]:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in _cells(r)) + " |")
    official = report.get("official")
    if official:
        psnr = f", {official['set5_x4_psnr']:.3f} dB" if official.get("set5_x4_psnr") is not None else ""
        lines += ["", f"Official LIIF code, Set5 x4: {official['set5_x4_seconds']:.1f} s for the folder{psnr} "
                      f"(from {Path(official['file']).name}; {official['note']})."]
    lines += [
        "",
        "Notes: latency is the sum of the timed `upscale_to` calls of one pass over the job (decode and LR "
        "preparation excluded); min-max over the passes. Peak RSS is the process's sampled resident size "
        "during that backend's section (model load, warm-up and passes), after freeing the previous backend. "
        "FLOPs count convolutions and matrix multiplies on the tiles actually run (halo overlap included); "
        "element-wise work is not counted. torch-ref runs the reference (official) computation, the others "
        "the fast model. ΔPSNR is against torch-ref (or torch). Tiles: upsampler output tile / backbone LR tile.",
        "",
    ]
    return "\n".join(lines)
