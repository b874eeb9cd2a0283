"""Parameter counts and GMACs of each registered configuration (reference paths, untiled).

    python benchmarks/model_cost.py ["lte (rdn)" ...]

A thin wrapper over ``asisr.bench.flops`` (the counter ``asisr-bench`` uses): torch's
FlopCounterMode on shapes only; matrix multiplies and convolutions (MACs = FLOPs / 2),
element-wise work not included. For the cost of real jobs, tiles included, run ``asisr-bench``.
"""

from __future__ import annotations

from asisr.bench.flops import TileFlopCounter
from asisr.models import create
from asisr.runtime.tiling import TilePlan

# Label -> (registered name, kwargs); the official full-size configurations.
RDN_B = {"G0": 64, "D": 16, "C": 8, "G": 64}  # RDNconfig 'B'
SWINIR = {}  # the official make_swinir() defaults
CONFIGS = {
    "liif": ("liif", {}), "eqsr_light": ("eqsr_light", {}), "eqsr_hat (paper)": ("eqsr_hat", {}),
    "lte": ("lte", {}), "metasr": ("metasr", {}), "lmf": ("lmf", {}),
    "liif (rdn)": ("liif", {"encoder": "rdn", "encoder_args": RDN_B}),
    "lte (rdn)": ("lte", {"encoder": "rdn", "encoder_args": RDN_B}),
    "metasr (rdn)": ("metasr", {"encoder": "rdn", "encoder_args": RDN_B}),
    "liif (swinir)": ("liif", {"encoder": "swinir", "encoder_args": SWINIR}),
    "lte (swinir)": ("lte", {"encoder": "swinir", "encoder_args": SWINIR}),
    "metasr (swinir)": ("metasr", {"encoder": "swinir", "encoder_args": SWINIR}),
    "arbrcan": ("arbrcan", {}),  # the released size: 10 groups of 20 RCABs, 64 features
    "metardn": ("metardn", {}),  # official Meta-SR: RDN config B and the per-pixel filter predictor
}
LR, SCALE = 64, 4


def cost(label: str) -> tuple[float, float, float]:
    name, kwargs = CONFIGS[label]
    model = create(name, **kwargs).eval()
    flops = TileFlopCounter(model.reference()).image((LR, LR), (LR * SCALE, LR * SCALE), TilePlan(10 ** 6, 10 ** 6, 0))
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return params, flops.backbone / 2 / LR ** 2 / 1e9, flops.upsampler / 2 / (LR * SCALE) ** 2 / 1e9


if __name__ == "__main__":
    print(f"LR {LR}x{LR}, x{SCALE}; reference (not fast) paths")
    print("| model | params (M) | backbone GMACs / LR px | upsampler GMACs / output px |")
    print("|---|---:|---:|---:|")
    import sys

    for name in sys.argv[1:] or CONFIGS:
        p, b, u = cost(name)
        print(f"| {name} | {p:.3f} | {b:.5f} | {u:.5f} |" if u >= 1e-4 else f"| {name} | {p:.3f} | {b:.5f} | {u:.7f} |")
