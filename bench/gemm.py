"""The machine's measured fp32 matrix-multiply peak: the yardstick for "achieved GFLOP/s".

A model's FLOPs per second only mean something next to what this CPU can do with the same
threads. The product of two large square fp32 matrices is timed (best of several runs, after
one warm-up; ``2 n^3`` FLOPs per product) with both libraries the backends use: torch's
``matmul`` (MKL on x86 wheels) and a one-node ONNX Runtime ``MatMul`` (MLAS). The peak is the
faster of the two: on an AMD EPYC with AVX-512, MKL reached ~108 GFLOP/s per thread and MLAS
~226, so torch's number alone would not be the machine's peak.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch


def gemm_flops(n: int) -> int:
    """FLOPs of an ``n x n`` by ``n x n`` product: ``n^3`` multiply-adds, 2 FLOPs each."""
    return 2 * n ** 3


@dataclass(frozen=True)
class GemmPeak:
    gflops: float  # the faster library's
    n: int
    threads: int
    repeats: int
    torch_gflops: float
    torch_best_seconds: float
    onnxruntime_gflops: float | None = None
    onnxruntime_best_seconds: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _best(run: Callable[[], object], repeats: int) -> float:
    run()  # warm-up: thread pool, page faults on the output
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return max(best, 1e-9)


def _onnxruntime_matmul(a: np.ndarray, b: np.ndarray, threads: int) -> Callable[[], object]:
    import onnxruntime as ort
    from onnx import TensorProto, helper

    n = a.shape[0]
    io = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [n, n]) for name in ("A", "B", "C")]
    graph = helper.make_graph([helper.make_node("MatMul", ["A", "B"], ["C"])], "gemm", io[:2], io[2:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return lambda: session.run(None, {"A": a, "B": b})


def measure_gemm_peak(threads: int, n: int = 2048, repeats: int = 5) -> GemmPeak:
    """Best-of-``repeats`` GFLOP/s of ``n x n`` fp32 products with ``threads`` threads, per library."""
    if n < 1 or repeats < 1 or threads < 1:
        raise ValueError("n, repeats and threads must be positive")
    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(n, n, generator=gen), torch.rand(n, n, generator=gen)
    out = torch.empty(n, n)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        t_torch = _best(lambda: torch.matmul(a, b, out=out), repeats)
    finally:
        torch.set_num_threads(previous)
    try:
        t_ort = _best(_onnxruntime_matmul(a.numpy(), b.numpy(), threads), repeats)
    except ImportError:
        t_ort = None
    flops = gemm_flops(n)
    torch_gflops = flops / t_torch / 1e9
    ort_gflops = None if t_ort is None else flops / t_ort / 1e9
    return GemmPeak(max(torch_gflops, ort_gflops or 0.0), n, threads, repeats, torch_gflops, t_torch,
                    ort_gflops, t_ort)
