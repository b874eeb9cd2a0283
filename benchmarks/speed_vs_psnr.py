"""Speed against quality for every shipped model: ``asisr-run`` wall time and Set5 x4 Y-PSNR.

Why: a default model is chosen by measurement (issue 15): at most a third of the official LIIF's
``asisr-run`` time on Set5 x4, within 0.10 dB of it. Both numbers come from the same processes a
user runs, on the same machine, in the same run, alternating models so that background load hits
every model alike:

    asisr-run LR/ --model MODEL_ONNX/ --backend onnxruntime --scale 4 --out OUT/ --threads T

PSNR is measured on those output PNGs (Y channel, shave 4, the protocol of shared/README.md).
The table gives the minimum and median wall time of ``--repeats`` runs, the ratio to LIIF's
minimum, PSNR, and the upsampler's MACs per output pixel and the backbone's per LR pixel
(``asisr.bench.flops``, reference paths). Run from the repository root:

    python benchmarks/speed_vs_psnr.py --repeats 3 --threads 2 --work /tmp/svp
    python benchmarks/speed_vs_psnr.py --model lmf=runs/lmf/best.pt --model liif=asisr/weights/liif_edsr_baseline.pt

Without ``--model`` it measures the bundled checkpoints (``asisr/weights/*.pt``). Each checkpoint is
exported once into ``WORK/NAME_onnx`` with ``asisr-export`` (reused by later runs on the same WORK).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cli_vs_official import (BenchError, asisr_command, asisr_env, list_images, make_lr,  # noqa: E402
                             run_timed, y_psnr)

REPO = Path(__file__).resolve().parents[1]
SCALE = 4


def bundled() -> dict[str, Path]:
    from asisr.weights import BUNDLED, bundled_path

    return {name: bundled_path(name) for name in sorted(BUNDLED)}


def cost(checkpoint: Path) -> tuple[float, float, float]:
    """(params M, backbone MACs / LR px, upsampler MACs / output px) at 64x64 x4, reference paths."""
    from asisr.bench.flops import TileFlopCounter
    from asisr.models import load
    from asisr.runtime.tiling import TilePlan

    model = load(checkpoint).eval()
    lr = 64
    flops = TileFlopCounter(model.reference()).image((lr, lr), (lr * SCALE, lr * SCALE), TilePlan(10 ** 6, 10 ** 6, 0))
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return params, flops.backbone / 2 / lr ** 2, flops.upsampler / 2 / (lr * SCALE) ** 2


def export(name: str, checkpoint: Path, work: Path) -> Path:
    out = work / f"{name}_onnx"
    if not (out / "manifest.json").is_file():
        cmd, _ = asisr_command("asisr-export")
        run_timed([*cmd, "--checkpoint", str(checkpoint), "--out", str(out)], asisr_env(), REPO, f"export {name}")
    return out


def psnr_of(out_dir: Path, hr: dict[str, np.ndarray]) -> float:
    return float(np.mean([y_psnr(np.asarray(Image.open(out_dir / name).convert("RGB")), crop, SCALE)
                          for name, crop in hr.items()]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", default=[], help="NAME=CHECKPOINT (repeatable); default: bundled")
    p.add_argument("--hr", type=Path, default=REPO.parent / "shared" / "data" / "Set5")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", type=Path, default=Path("/tmp/asisr-speed-vs-psnr"))
    p.add_argument("--baseline", default="liif", help="the model the ratios are to")
    p.add_argument("--json", type=Path, help="also write the rows as JSON (for benchmarks/model_card.py)")
    a = p.parse_args(argv)
    models = dict(m.split("=", 1) for m in a.model) if a.model else bundled()
    models = {k: Path(v) for k, v in models.items()}
    try:
        a.work.mkdir(parents=True, exist_ok=True)
        hr = make_lr(a.hr, a.work / "lr", SCALE)
        dirs = {name: export(name, ckpt, a.work) for name, ckpt in models.items()}
        cmd, how = asisr_command("asisr-run")
        times: dict[str, list[float]] = {name: [] for name in models}
        commands = {}
        for r in range(a.repeats):
            for name, onnx_dir in dirs.items():
                out = a.work / f"out_{name}"
                run = [*cmd, str(a.work / "lr"), "--model", str(onnx_dir), "--backend", "onnxruntime", "--scale",
                       str(SCALE), "--out", str(out), "--threads", str(a.threads), "--overwrite"]
                commands[name] = run
                dt, _ = run_timed(run, asisr_env(), REPO, f"asisr-run {name}")
                times[name].append(dt)
    except BenchError as e:
        print(f"speed_vs_psnr: error: {e}", file=sys.stderr)
        return 1
    base = min(times[a.baseline]) if a.baseline in times else None
    print(f"Set5 x{SCALE}, {len(hr)} images, asisr-run ({how}) onnxruntime fp32, --threads {a.threads}, "
          f"{a.repeats} alternating runs per model")
    print("| model | params (M) | backbone kMACs / LR px | upsampler kMACs / output px | asisr-run s (min / median) "
          f"| time / {a.baseline} | Set5 x4 Y-PSNR (dB) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    rows = {}
    for name, ckpt in models.items():
        params, bb, up = cost(ckpt)
        t = times[name]
        psnr = psnr_of(a.work / f"out_{name}", hr)
        ratio = f"{min(t) / base:.2f}" if base else "-"
        print(f"| {name} | {params:.3f} | {bb / 1e3:.0f} | {up / 1e3:.1f} | {min(t):.2f} / {statistics.median(t):.2f} "
              f"| {ratio} | {psnr:.3f} |")
        rows[name] = {"params_m": params, "backbone_macs_per_lr_px": bb, "upsampler_macs_per_out_px": up,
                      "asisr_run_s_min": min(t), "asisr_run_s_median": statistics.median(t),
                      "time_vs_baseline": min(t) / base if base else None, "set5_x4_psnr_png": psnr,
                      "command": " ".join(commands[name]), "threads": a.threads, "repeats": a.repeats}
    if a.json is not None:
        import json

        a.json.write_text(json.dumps({"job": f"Set5 x{SCALE} asisr-run onnxruntime fp32", "baseline": a.baseline,
                                      "models": rows}, indent=2))
    print("\ncommands:")
    for run in commands.values():
        print("  " + " ".join(run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
