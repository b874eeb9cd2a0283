"""Where the default path's time goes on OpenVINO, and what a first-seen input shape costs.

Two measurements on the bundled default model (the official LIIF weights), one process, printed as
markdown tables with the CPU's model and matrix-unit flags:

1. **New shapes.** The graphs keep dynamic axes; OpenVINO's CPU plugin does not recompile for a
   new shape but re-runs shape inference and prepares kernels for it. Each stage is called on a
   few LR sizes twice in a row: the first call of a shape minus the second is what a new shape
   costs. The tile planner gives every interior tile of an image the same shape, so an image pays
   this for its handful of distinct tile shapes, not per tile.
2. **Per operation type.** Set5 at x4 through ``Upscaler`` with OpenVINO's performance counters
   on (``PERF_COUNT``), summed per executed layer type and stage, next to the time the stage's
   matrix products would take at this CPU's measured GEMM peak for the precision.

    python benchmarks/openvino_profile.py                  # bf16 where the CPU has it, 2 threads
    python benchmarks/openvino_profile.py --precision fp32 --threads 2
"""

from __future__ import annotations

import argparse
import collections
import time
from pathlib import Path

import numpy as np

from asisr import weights
from asisr.bench.gemm import measure_precision_peaks
from asisr.evaluation.protocol import list_images, load_image, make_pair
from asisr.runtime import contract
from asisr.runtime.backends.openvino import CompiledFromOnnx, OpenvinoRunner, core
from asisr.runtime.pipeline import Pipeline
from asisr.runtime.manifest import read_manifest
from asisr.runtime.precision import cpu_flags, describe_cpu, native
from asisr.runtime.query import make_query
from asisr.runtime.upscaler import Upscaler

ROOT = Path(__file__).resolve().parents[1]


def pipeline(directory: Path, precision: str, threads: int, profile: bool) -> Pipeline:
    manifest = read_manifest(directory)
    runners = []
    for stage in contract.STAGES:
        loader = CompiledFromOnnx(manifest.graph_path(stage.name), precision, threads)  # no cache: compile measured
        if profile:
            config = loader.config
            loader.config = lambda version, config=config: {**config(version), "PERF_COUNT": True}  # type: ignore[method-assign]
        runners.append(OpenvinoRunner(loader, stage))
    return Pipeline(runners[0], runners[1], manifest.model_descriptor(), manifest.model, directory, manifest,
                    run_precision=precision)


def new_shape_costs(directory: Path, precision: str, threads: int) -> list[str]:
    rows = ["| stage | LR size | first call | second call | new-shape cost |", "|---|---|---:|---:|---:|"]
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    with pipeline(directory, precision, threads, profile=False) as p:
        compile_s = time.perf_counter() - t0
        for h, w in ((64, 64), (72, 64), (64, 80), (96, 96)):
            lr = rng.random((1, 3, h, w), dtype=np.float32)
            scale, rows_q, cols_q = make_query(h, w, 2 * h, 2 * w)
            times = {"backbone": [], "upsampler": []}
            for _ in range(2):
                t = time.perf_counter()
                feats = p.features(lr, scale)
                times["backbone"].append(time.perf_counter() - t)
                t = time.perf_counter()
                p.upsample(feats, scale, rows_q, cols_q)
                times["upsampler"].append(time.perf_counter() - t)
            for stage, (first, second) in times.items():
                rows.append(f"| {stage} | {h}x{w} (x2) | {first * 1e3:.1f} ms | {second * 1e3:.1f} ms | "
                            f"{(first - second) * 1e3:+.1f} ms |")
    return [f"Compile of both stages (no cache): {compile_s:.2f} s.", ""] + rows


def per_op_type(directory: Path, precision: str, threads: int, data: Path) -> list[str]:
    images = [load_image(path) for path in list_images(data)]
    p = pipeline(directory, precision, threads, profile=True)
    totals: dict[tuple[str, str], float] = collections.defaultdict(float)
    wall = 0.0
    with Upscaler(p) as up:
        up.upscale(images[0][:48, :48], 4)  # warm-up: first shapes
        for hr in images:
            _, lr = make_pair(hr, 4, 4)
            t = time.perf_counter()
            up.upscale(lr, 4)
            wall += time.perf_counter() - t
            for runner in (p.backbone, p.upsampler):
                for info in runner.request.profiling_info:
                    totals[runner.stage.name, f"{info.node_type} ({info.exec_type})"] += info.real_time.total_seconds()
    rows = [f"Set5 x4, {len(images)} images, {wall:.2f} s in `upscale` ({precision}, {threads} threads). "
            "Time per executed layer type (OpenVINO's counters, last call of each stage per image; "
            "an image with several tiles is undercounted, so shares matter, not sums):", "",
            "| stage | layer type (kernel) | seconds | share of stage |", "|---|---|---:|---:|"]
    for stage in ("backbone", "upsampler"):
        items = sorted(((k[1], v) for k, v in totals.items() if k[0] == stage), key=lambda kv: -kv[1])
        stage_total = sum(v for _, v in items) or 1.0
        for name, seconds in items[:8]:
            rows.append(f"| {stage} | {name} | {seconds:.3f} | {seconds / stage_total:.0%} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", default=None, help="bf16 (default where native) or fp32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "Set5")
    args = parser.parse_args()
    precision = args.precision or ("bf16" if native("bf16", cpu_flags()) else "fp32")
    directory = weights.default_onnx_dir()
    core()  # the plugin is loaded before anything is timed
    print(f"CPU: {describe_cpu()}; OpenVINO {__import__('openvino').get_version()}; precision {precision}, "
          f"{args.threads} threads\n")
    peaks = measure_precision_peaks(args.threads)
    print("GEMM peaks (2048^2, OpenVINO): " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in peaks.items()) + "\n")
    print("## New input shapes\n")
    print("\n".join(new_shape_costs(directory, precision, args.threads)))
    print("\n## Per layer type\n")
    print("\n".join(per_op_type(directory, precision, args.threads, args.data)))


if __name__ == "__main__":
    main()
