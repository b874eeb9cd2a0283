"""Merge asisr-eval JSON files (and reference JSONs) into one Markdown table per metric.

    python benchmarks/results_table.py --metric psnr "bicubic=bicubic.json" \
        "official LIIF=../shared/reference/liif_official.json+liif_official_extra.json" "EQSR-light=eqsr.json"

Each column is LABEL=FILE[+FILE...]; later files fill cells the earlier ones lack. Rows are
dataset x metric, columns the scales in the order given by --scales.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _load(spec: str) -> tuple[str, dict]:
    label, _, files = spec.partition("=")
    merged: dict = {}
    for f in files.split("+"):
        data = json.loads(Path(f).read_text())
        for metric in ("psnr", "eq"):
            for dataset, cells in (data.get(metric) or {}).items():
                for scale, value in cells.items():
                    merged.setdefault(metric, {}).setdefault(dataset, {}).setdefault(str(scale), value)
    return label, merged


def table(columns: list[tuple[str, dict]], metric: str, datasets: list[str], scales: list[str]) -> str:
    lines = [f"| {metric.upper()} dB | " + " | ".join(f"x{s}" for s in scales) + " |",
             "|---|" + "---:|" * len(scales)]
    for dataset in datasets:
        for label, data in columns:
            cells = data.get(metric, {}).get(dataset, {})
            if not cells:
                continue
            values = [f"{cells[s]:.3f}" if cells.get(s) is not None else "—" for s in scales]
            lines.append(f"| {dataset} {label} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("columns", nargs="+", help="LABEL=FILE[+FILE...]")
    ap.add_argument("--metric", default="psnr", choices=["psnr", "eq"])
    ap.add_argument("--datasets", default="Set5,Set14")
    ap.add_argument("--scales", default="2,3,4,6,8,1.6,5.5")
    args = ap.parse_args()
    columns = [_load(c) for c in args.columns]
    print(table(columns, args.metric, args.datasets.split(","), args.scales.split(",")))


if __name__ == "__main__":
    main()
