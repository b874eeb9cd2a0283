"""Parameter counts and GMACs of each registered configuration (reference paths, untiled).

    python benchmarks/model_cost.py

A thin wrapper over ``asisr.bench.flops`` (the counter ``asisr-bench`` uses): torch's
FlopCounterMode on shapes only; matrix multiplies and convolutions (MACs = FLOPs / 2),
element-wise work not included. For the cost of real jobs, tiles included, run ``asisr-bench``.
"""

from __future__ import annotations

from asisr.bench.flops import TileFlopCounter
from asisr.models import create
from asisr.runtime.tiling import TilePlan

CONFIGS = ("liif", "eqsr_light", "eqsr_hat (paper)")  # registered names; defaults are these configurations
LR, SCALE = 64, 4


def cost(name: str) -> tuple[float, float, float]:
    model = create(name.split(" ")[0]).eval()
    flops = TileFlopCounter(model.reference()).image((LR, LR), (LR * SCALE, LR * SCALE), TilePlan(10 ** 6, 10 ** 6, 0))
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return params, flops.backbone / 2 / LR ** 2 / 1e9, flops.upsampler / 2 / (LR * SCALE) ** 2 / 1e9


if __name__ == "__main__":
    print(f"LR {LR}x{LR}, x{SCALE}; reference (not fast) paths")
    print("| model | params (M) | backbone GMACs / LR px | upsampler GMACs / output px |")
    print("|---|---:|---:|---:|")
    for name in CONFIGS:
        p, b, u = cost(name)
        print(f"| {name} | {p:.3f} | {b:.5f} | {u:.5f} |")
