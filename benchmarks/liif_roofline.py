"""Where ``asisr-run``'s time goes on an exported LIIF, and how close its products run to this CPU's peak.

Why this exists: the speed goal against the official LIIF code (``cli_vs_official.py``) is a ratio
of two programs, and it moves with the machine. This script says what bounds asisr's side of it:
it runs the exported model the way ``asisr-run`` does (ONNX Runtime, fp32, the planner's tiles,
one process) on a folder of LR images with ONNX Runtime's per-node profiler on, adds up kernel
time per operator, counts every ``Gemm``'s and ``Conv``'s FLOPs from the shapes the profiler
recorded, and in the same run times this CPU's matrix products:

* ONNX Runtime's own ``Gemm`` + ``Relu`` at the MLP's shape (the largest tile's queries x 256 x
  256), the kernel the upsampler spends its time in;
* the square-matrix peak of ``asisr.bench.gemm.measure_gemm_peak`` (torch/MKL and ORT/MLAS).

It also prints the decoder's FLOPs per output pixel: what the exported graph did (the first layer
folded to LR resolution) and what the official formulation does (the 580-wide first layer on every
query and ensemble member), both from the model's own layer widths.

    python benchmarks/cli_vs_official.py --repeats 1 --work /tmp/cvo   # leaves /tmp/cvo/lr and /tmp/cvo/liif_onnx
    python benchmarks/liif_roofline.py --lr /tmp/cvo/lr --model /tmp/cvo/liif_onnx --scale 4 --threads 2

Numbers are wall and kernel times on whatever else the machine is doing; compare within one run.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

GEMM_OPS = ("Gemm", "FusedGemm", "MatMul", "FusedMatMul")
CONV_OPS = ("Conv", "FusedConv")


def node_flops(op: str, inputs: list[list[int]], outputs: list[list[int]]) -> int | None:
    """FLOPs (2 per multiply-add) of one profiled node from its recorded shapes; None for other operators."""
    if op in GEMM_OPS and len(inputs) >= 2 and outputs:
        a, out = inputs[0], outputs[0]
        return 2 * math.prod(out) * a[-1]  # (..., M, K) x (K, N) -> (..., M, N)
    if op in CONV_OPS and len(inputs) >= 2 and outputs and len(outputs[0]) >= 4:
        out, weight = outputs[0], inputs[1]  # NCHW or ONNX Runtime's blocked NCHWc: N, C.., H, W(, block)
        return 2 * out[0] * out[2] * out[3] * math.prod(weight)  # N H W x (C_out x C_in/groups x kh x kw)
    return None


def _shapes(entries: list[dict]) -> list[list[int]]:
    return [next(iter(e.values())) for e in entries]


def read_profile(path: Path) -> tuple[dict[str, dict], float, int]:
    """Per operator: kernel seconds, calls, FLOPs; plus the sessions' total run time and run count."""
    ops: dict[str, dict] = defaultdict(lambda: {"seconds": 0.0, "calls": 0, "flops": 0, "counted": True})
    run_seconds, runs = 0.0, 0
    for e in json.loads(path.read_text()):
        if e.get("cat") == "Session" and e.get("name") == "model_run":
            run_seconds += e["dur"] / 1e6
            runs += 1
        elif e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            args = e["args"]
            row = ops[args["op_name"]]
            row["seconds"] += e["dur"] / 1e6
            row["calls"] += 1
            f = node_flops(args["op_name"], _shapes(args.get("input_type_shape", [])),
                           _shapes(args.get("output_type_shape", [])))
            if f is None:
                row["counted"] = False
            else:
                row["flops"] += f
    return dict(ops), run_seconds, runs


def gemm_relu_gflops(m: int, k: int, n: int, threads: int, repeats: int) -> float:
    """Best-of-``repeats`` GFLOP/s of ONNX Runtime's Gemm (constant weights, bias) + Relu at (m, k) x (k, n)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal((n, k)) / math.sqrt(k)).astype(np.float32), "W")
    b = numpy_helper.from_array(np.zeros(n, np.float32), "B")
    graph = helper.make_graph([helper.make_node("Gemm", ["A", "W", "B"], ["G"], transB=1),
                               helper.make_node("Relu", ["G"], ["C"])], "gemm_relu",
                              [helper.make_tensor_value_info("A", TensorProto.FLOAT, ["m", k])],
                              [helper.make_tensor_value_info("C", TensorProto.FLOAT, ["m", n])], [w, b])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
                                   .SerializeToString(), opts, providers=["CPUExecutionProvider"])
    a = rng.random((m, k), dtype=np.float32)
    session.run(None, {"A": a})
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        session.run(None, {"A": a})
        best = min(best, time.perf_counter() - t0)
    return 2 * m * k * n / best / 1e9


def decoder_widths(graph: Path) -> list[tuple[int, int]]:
    """(in, out) of the decoder's linear layers (LIIF's ``imnet.layers.N.weight``), first to last."""
    import onnx

    model = onnx.load(str(graph))
    layers = {int(t.name.split(".")[-2]): (int(t.dims[1]), int(t.dims[0])) for t in model.graph.initializer
              if t.name.startswith("imnet.layers.") and t.name.endswith(".weight") and len(t.dims) == 2}
    if not layers:
        raise SystemExit(f"{graph}: no LIIF decoder weights (imnet.layers.N.weight); is this an exported LIIF?")
    return [layers[i] for i in sorted(layers)]


@dataclass
class Roofline:
    """One measured run: wall time, per-stage operator rows, and the matrix-product rates."""

    images: int
    out_px: int
    wall: float
    tile: int
    largest_tile: int
    stages: dict[str, tuple[dict[str, dict], float, int]]  # stage -> (operator rows, run seconds, runs)
    layers: list[tuple[int, int]]
    gemm_seconds: float
    gemm_flops: int
    gemm_here_gflops: float
    peak: object  # asisr.bench.gemm.GemmPeak

    @property
    def gemm_gflops(self) -> float:
        return self.gemm_flops / self.gemm_seconds / 1e9

    @property
    def graph_flops_per_px(self) -> float:
        return self.gemm_flops / self.out_px

    @property
    def official_flops_per_px(self) -> float:
        return ENSEMBLE * 2 * sum(i * o for i, o in self.layers)  # every layer on every query and member


ENSEMBLE = 4  # LIIF's local ensemble: four queries per output pixel


def measure(lr: Path, model: Path, scale: float, threads: int, repeats: int, tile: int | None,
            work: Path, peak_n: int = 2048) -> Roofline:
    from asisr.bench.gemm import measure_gemm_peak
    from asisr.imageio import list_images, read_image
    from asisr.runtime.backends.onnxrt import open_onnx_pipeline
    from asisr.runtime.upscaler import Upscaler

    images = [read_image(f) for f in list_images(lr)]
    if not images:
        raise SystemExit(f"no images in {lr}")
    layers = decoder_widths(model / "upsampler.onnx")
    work.mkdir(parents=True, exist_ok=True)
    pipe = open_onnx_pipeline(model, threads=threads, profile_prefix=str(work / "profile"))
    up = Upscaler(pipe, tile=tile)
    out_px, largest_tile = 0, 0
    with up:
        t0 = time.perf_counter()
        for image in images:
            out = up.upscale(image, scale)
            out_px += out.shape[0] * out.shape[1]
            t = up.last_plan.tile
            largest_tile = max(largest_tile, min(t, out.shape[0]) * min(t, out.shape[1]))
        wall = time.perf_counter() - t0
        stages = {"backbone": read_profile(Path(pipe.backbone.session.end_profiling())),
                  "upsampler": read_profile(Path(pipe.upsampler.session.end_profiling()))}
    products = [row for op, row in stages["upsampler"][0].items() if op in GEMM_OPS]
    hidden = [i for i, o in layers if i == o] or [layers[0][1]]
    return Roofline(len(images), out_px, wall, up.last_plan.tile, largest_tile, stages, layers,
                    sum(r["seconds"] for r in products), sum(r["flops"] for r in products),
                    gemm_relu_gflops(largest_tile, hidden[0], hidden[0], threads, repeats),
                    measure_gemm_peak(threads, n=peak_n, repeats=repeats))


def report(r: Roofline, what: str) -> str:
    lines = [f"## Where the time goes: {what}\n",
             f"Upscaler wall time {r.wall:.2f} s for {r.out_px / 1e6:.3f} Mpx of output; tile {r.tile} px "
             f"(largest tile {r.largest_tile} queries).\n",
             "| stage | operator | kernel s | share of stage runs | calls | GFLOP | GFLOP/s |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for stage, (ops, run_seconds, runs) in r.stages.items():
        for op, row in sorted(ops.items(), key=lambda kv: -kv[1]["seconds"])[:8]:
            counted = row["counted"] and row["flops"]
            gflop = f"{row['flops'] / 1e9:.1f}" if counted else "—"
            rate = f"{row['flops'] / row['seconds'] / 1e9:.0f}" if counted and row["seconds"] else "—"
            lines.append(f"| {stage} | {op} | {row['seconds']:.3f} | {row['seconds'] / run_seconds:.1%} "
                         f"| {row['calls']} | {gflop} | {rate} |")
        lines.append(f"| {stage} | **all runs** | {run_seconds:.3f} | | {runs} runs | | |")
    p = r.peak
    width = ([i for i, o in r.layers if i == o] or [r.layers[0][1]])[0]
    lines += [
        "",
        f"Upsampler matrix products: {r.gemm_flops / 1e9:.1f} GFLOP in {r.gemm_seconds:.2f} s = "
        f"**{r.gemm_gflops:.0f} GFLOP/s**. Same run and threads: ONNX Runtime Gemm+Relu alone at "
        f"({r.largest_tile} x {width}) x ({width} x {width}) **{r.gemm_here_gflops:.0f} GFLOP/s** (best of "
        f"{p.repeats}); square {p.n}^2 products: torch {p.torch_gflops:.0f}, ONNX Runtime "
        f"{p.onnxruntime_gflops or float('nan'):.0f} GFLOP/s. The upsampler's products run at "
        f"{r.gemm_gflops / r.gemm_here_gflops:.0%} of the first and {r.gemm_gflops / p.gflops:.0%} of the faster "
        "square peak.",
        "",
        f"Decoder FLOPs per output pixel (layers {', '.join(f'{i}->{o}' for i, o in r.layers)}; {ENSEMBLE} ensemble "
        f"members): official formulation {r.official_flops_per_px / 1e6:.3f} MFLOP (every layer on every query); "
        f"this graph's matrix products {r.graph_flops_per_px / 1e6:.3f} MFLOP (first layer folded to LR "
        "resolution: its cost is the upsampler's Conv row).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lr", type=Path, required=True, help="folder of LR images (what asisr-run is given)")
    p.add_argument("--model", type=Path, required=True, help="an exported LIIF directory (asisr-export)")
    p.add_argument("--scale", type=float, default=4.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tile", type=int, default=None, help="output tile edge (default: the planner's, as asisr-run)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats of each peak measurement")
    p.add_argument("--work", type=Path, default=None, help="where the profiles go (default: a temporary folder)")
    a = p.parse_args(argv)
    work = a.work or Path(tempfile.mkdtemp(prefix="asisr-roofline-"))
    result = measure(a.lr, a.model, a.scale, a.threads, a.repeats, a.tile, work)
    print(report(result, f"{result.images} images of {a.lr} at x{a.scale:g}, {a.threads} threads"
                         f"{'' if a.tile is None else f', --tile {a.tile}'}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
