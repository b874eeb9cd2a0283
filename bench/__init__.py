"""``asisr-bench``: latency, throughput, memory and FLOP efficiency of every backend.

Modules: ``jobs`` (what is upscaled), ``harness`` (runs backends one after another in one
process), ``memory`` (sampled peak RSS), ``flops`` (FLOPs of the tiles actually run),
``gemm`` (the measured fp32 matmul peak as a yardstick) and ``report`` (table, JSON, Markdown).
"""

from asisr.bench.harness import BACKENDS, DEFAULT_BACKENDS, BenchConfig, run_bench
from asisr.bench.jobs import JOB_NAMES

__all__ = ["BACKENDS", "DEFAULT_BACKENDS", "BenchConfig", "JOB_NAMES", "run_bench"]
