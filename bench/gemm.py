"""The machine's measured matrix-multiply peaks (fp32, and bf16 / int8 where OpenVINO runs them):
the yardsticks for "achieved GFLOP/s" of a stage computed in that precision.

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


CHAIN = 4  # products per OpenVINO call: the f32 input's conversion is paid once per CHAIN products


def _openvino_matmul(a: np.ndarray, b: np.ndarray, threads: int, precision: str) -> Callable[[], object]:
    """``CHAIN`` chained OpenVINO MatMuls with constant weights, compiled for ``precision``.

    Chained, because a lone product also pays the conversion of its f32 input (and output) to
    the compute precision, a memory pass a model's inner layers do not make: with one product
    the bf16 "peak" came out below what LIIF's MLP reached. bf16: the f32 graph at
    ``INFERENCE_PRECISION_HINT=bf16`` (how asisr runs bf16). int8: every operand passes a
    FakeQuantize (u8 activations, i8 weights), which OpenVINO's low-precision transformations
    turn into int8 products: the path an INT8 Q/DQ export takes.
    """
    import openvino as ov
    import openvino.opset13 as ops

    from asisr.runtime.backends.openvino import core

    n = a.shape[0]
    f32 = lambda v: ops.constant(np.float32(v))  # noqa: E731
    param = ops.parameter([n, n], ov.Type.f32, name="A")
    x = param
    for _ in range(CHAIN):
        w = ops.constant(b)
        if precision == "int8":
            x = ops.fake_quantize(x, f32(-4.0), f32(4.0), f32(-4.0), f32(4.0), 256)
            w = ops.fake_quantize(w, f32(-1.0), f32(1.0), f32(-1.0), f32(1.0), 255)
        x = ops.multiply(ops.matmul(x, w, False, False), f32(1.0 / n))  # keeps values O(1) along the chain
    model = ov.Model([x], [param], "gemm")
    hint = "bf16" if precision == "bf16" else "f32"
    compiled = core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint,
                                                   "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    return lambda: request.infer([a], share_inputs=True)


def measure_precision_peaks(threads: int, n: int = 2048, repeats: int = 5) -> dict[str, float]:
    """GFLOP/s (int8: giga multiply-adds x 2 per second) of ``n x n`` products in bf16 and int8 on
    OpenVINO; empty without OpenVINO. A precision this CPU lacks units for is emulated: its number
    then says so by being no faster than fp32."""
    from asisr.runtime.backends.openvino import available

    if not available():
        return {}
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = (rng.random((n, n), dtype=np.float32) - 0.5).astype(np.float32)
    return {precision: CHAIN * gemm_flops(n) / _best(_openvino_matmul(a, b, threads, precision), repeats) / 1e9
            for precision in ("fp32", "bf16", "int8")}
