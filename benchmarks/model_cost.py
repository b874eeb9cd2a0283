"""Parameter counts and GMACs of each registered configuration, counted by torch's FlopCounterMode.

    python benchmarks/model_cost.py

FlopCounterMode counts matrix multiplies and convolutions (MACs = FLOPs / 2); element-wise
work (activations, softmax, the involution's 9-tap weighted sums) is not included.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from asisr.models import create, make_query

CONFIGS = ("liif", "eqsr_light", "eqsr_hat (paper)")  # registered names; defaults are these configurations
LR, SCALE = 64, 4


def cost(name: str) -> tuple[float, float, float]:
    model = create(name.split(" ")[0]).eval()
    for m in model.modules():  # count the reference math, not the fast rewrites
        if hasattr(m, "fast"):
            m.fast = False
    lr = torch.rand(1, 3, LR, LR)
    scale, rows, cols = (torch.from_numpy(a) for a in make_query(LR, LR, LR * SCALE, LR * SCALE))
    with torch.no_grad():
        with FlopCounterMode(display=False) as fb:
            feat = model.backbone(lr, scale)
        with FlopCounterMode(display=False) as fu:
            model.upsampler(feat, scale, rows, cols)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return params, fb.get_total_flops() / 2 / LR ** 2 / 1e9, fu.get_total_flops() / 2 / (LR * SCALE) ** 2 / 1e9


if __name__ == "__main__":
    print(f"LR {LR}x{LR}, x{SCALE}; reference (not fast) paths")
    print("| model | params (M) | backbone GMACs / LR px | upsampler GMACs / output px |")
    print("|---|---:|---:|---:|")
    for name in CONFIGS:
        p, b, u = cost(name)
        print(f"| {name} | {p:.3f} | {b:.5f} | {u:.5f} |")
