"""Write a shipped model's card into its checkpoint (``asisr.card``) from measured results, and print it.

A model card belongs with the weights: what they were trained on and how (the trainer's own
record, kept), and what they measure: PSNR / SSIM on Set5 and Set14 at the paper's scales, EQ,
MACs per output pixel and measured speed. Every number comes from a JSON file written by a tool
(``asisr-eval --json``, ``asisr-eval --equivariance --json``, ``benchmarks/speed_vs_psnr.py --json``);
nothing is typed in.

    python benchmarks/model_card.py runs/lmf_3000/best.pt --out asisr/weights/lmf_distilled.pt \\
        --eval runs/lmf.json --eq runs/lmf_eq.json --speed runs/speed_vs_psnr.json --name lmf \\
        --int8 runs/lmf_int8.json --note "distilled from the official LIIF"

The output checkpoint holds the same weights (the same model and config) with the card merged.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _scales(entry: dict) -> dict:
    return {ds: {k: round(float(v), 3) for k, v in values.items()} for ds, values in entry.items()}


def build_card(old: dict, args: argparse.Namespace) -> dict:
    card = dict(old or {})
    measured: dict = {"protocol": "shared/README.md (PIL bicubic LR, Y channel, shave ceil(s)); ONNX Runtime fp32 CPU"}
    for path in args.eval:
        data = json.loads(Path(path).read_text())
        for key in ("psnr", "ssim"):
            for ds, values in _scales(data.get(key, {})).items():
                measured.setdefault(key, {}).setdefault(ds, {}).update(values)
        measured.setdefault("sources", []).append(str(path))
    if args.eq:
        eq = json.loads(Path(args.eq).read_text())["eq"]
        measured["eq_db"] = _scales(eq)
        measured["sources"].append(str(args.eq))
    if args.int8:
        data = json.loads(Path(args.int8).read_text())
        measured["int8_psnr"] = _scales(data["psnr"])
        measured["sources"].append(str(args.int8))
    if args.speed:
        row = json.loads(Path(args.speed).read_text())["models"][args.name]
        measured["cost"] = {k: row[k] for k in ("params_m", "backbone_macs_per_lr_px", "upsampler_macs_per_out_px")}
        measured["speed"] = {k: row[k] for k in ("asisr_run_s_min", "asisr_run_s_median", "time_vs_baseline",
                                                  "command", "threads", "repeats")}
        measured["sources"].append(str(args.speed))
    card["measured"] = measured
    if args.note:
        card["note"] = args.note
    return card


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--name", required=True, help="the model's row in the --speed JSON")
    p.add_argument("--eval", action="append", default=[], help="asisr-eval --json output (repeatable)")
    p.add_argument("--eq", help="asisr-eval --equivariance --json output")
    p.add_argument("--int8", help="asisr-eval --json output of the int8 export")
    p.add_argument("--speed", help="benchmarks/speed_vs_psnr.py --json output")
    p.add_argument("--note")
    args = p.parse_args(argv)
    from asisr.models import load, save
    from asisr.models.checkpoint import read_checkpoint

    if args.out.exists() and args.out.resolve() != args.checkpoint.resolve():
        print(f"model_card: error: {args.out} exists", file=sys.stderr)
        return 1
    old = (read_checkpoint(args.checkpoint).get("asisr") or {}).get("card") or {}
    card = build_card(old, args)
    save(load(args.checkpoint), args.out, card=card)
    print(json.dumps(card, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
