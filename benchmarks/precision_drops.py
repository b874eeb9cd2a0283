"""Measure each bundled model's PSNR change per reduced precision, and record it in its manifest.

``auto`` precision (``asisr.runtime.precision``) takes bf16 / fp16 only for a model whose recorded
drop is within budget, so the numbers it reads must be measured, never typed in. This script
evaluates every bundled ONNX export on the protocol (``asisr.evaluation.evaluate``: Y-PSNR, HR
cropped to the scale, PIL bicubic LR, ceil(scale) shave) on Set5 and Set14 at x2, x3, x4:

- the reference: ONNX Runtime fp32 (the exact path, which matches the official code);
- each reduced precision this CPU computes natively, on OpenVINO.

and writes ``precision_drops`` into ``asisr/weights/<model>_onnx/manifest.json`` (with ``--write``):
the reference PSNRs, the change of each precision (negative = a loss), and the CPU it was measured
on. A precision this CPU cannot compute natively is left out (listed as not measured). The graphs'
sha256 are untouched: the manifest still verifies.

    python benchmarks/precision_drops.py                 # print the table only
    python benchmarks/precision_drops.py --write         # and record it in the bundled manifests
    python benchmarks/precision_drops.py --models liif --data ../shared/data --threads 2
    python benchmarks/precision_drops.py --dir my_export/ --write   # any exported directory (your own model)
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

from asisr import weights
from asisr.evaluation import evaluate
from asisr.runtime.backends.onnxrt import open_onnx_pipeline
from asisr.runtime.backends.openvino import open_openvino_pipeline
from asisr.runtime.manifest import MANIFEST, read_manifest
from asisr.runtime.precision import AUTO_ORDER, cpu_flags, cpu_model, describe_cpu, matrix_flags, native
from asisr.runtime.upscaler import Upscaler

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ("Set5", "Set14")
SCALES = (2, 3, 4)


def psnrs(pipeline, data: Path) -> dict[str, dict[str, float]]:
    """Mean Y-PSNR per dataset and scale (keys "2", "3", "4")."""
    with Upscaler(pipeline) as up:
        out = {}
        for name in DATASETS:
            result = evaluate(data / name, [(s, s) for s in SCALES], up.upscale_to, name=pipeline.label,
                              dataset=name, ssim=False)
            out[name] = {key: round(entry["psnr"], 4) for key, entry in result["scales"].items()}
            print(f"  {pipeline.label} {name}: " + ", ".join(f"x{k} {v:.4f}" for k, v in out[name].items()), flush=True)
    return out


def measure(directory: Path, data: Path, threads: int) -> dict:
    reference = psnrs(open_onnx_pipeline(directory, threads), data)
    flags = cpu_flags()
    drops, skipped = {}, []
    for precision in AUTO_ORDER:
        if not native(precision, flags):
            skipped.append(precision)
            continue
        got = psnrs(open_openvino_pipeline(directory, threads, precision), data)
        drops[precision] = {d: {k: round(got[d][k] - reference[d][k], 4) for k in reference[d]} for d in DATASETS}
    import openvino

    return {"reference": "onnxruntime fp32", "protocol": "asisr.evaluation (Y-PSNR, PIL bicubic LR, ceil(scale) shave)",
            "psnr_fp32": reference, "drops": drops,
            "not_measured": {p: "no native units on the measuring CPU" for p in skipped},
            "measured_on": {"cpu": cpu_model(), "matrix_flags": matrix_flags(flags),
                            "openvino": openvino.get_version().split("-")[0],
                            "date": datetime.date.today().isoformat(),
                            "command": "python benchmarks/precision_drops.py --write"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(weights.BUNDLED_ONNX), help="bundled model names")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data", help="folder holding Set5/ and Set14/")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dir", type=Path, action="append", default=[],
                        help="an exported model directory to measure instead of the bundled ones (repeatable)")
    parser.add_argument("--write", action="store_true", help="record the result in each measured manifest")
    args = parser.parse_args()
    print(f"cpu: {describe_cpu()}")
    rows = []
    targets = [(d.name, d) for d in args.dir] or [(n, weights.bundled_onnx_dir(n)) for n in args.models.split(",")]
    for name, directory in targets:
        print(f"{name} ({directory.name}):", flush=True)
        record = measure(directory, args.data, args.threads)
        for precision, per_dataset in record["drops"].items():
            for dataset, changes in per_dataset.items():
                rows.append(f"| {name} | {precision} | {dataset} | " +
                            " | ".join(f"{changes[str(s)]:+.4f}" for s in SCALES) + " |")
        if args.write:
            manifest = read_manifest(directory)  # verified: the record belongs to these graphs
            data = json.loads(manifest.path.read_text())
            data["precision_drops"] = record
            (directory / MANIFEST).write_text(json.dumps(data, indent=2) + "\n")
            print(f"  wrote precision_drops into {directory / MANIFEST}")
    print("\n| model | precision | dataset | " + " | ".join(f"x{s} dB" for s in SCALES) + " |")
    print("|---|---|---|" + "---:|" * len(SCALES))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
