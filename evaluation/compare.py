"""Comparator: error statistics between two arrays; knows nothing about backends."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class ErrorStats:
    max_abs: float
    mean_abs: float
    median_abs: float
    p99_abs: float
    psnr: float  # of ``actual`` against ``expected`` on a [0, 1] range; inf when identical

    def to_dict(self) -> dict:
        d = asdict(self)
        if math.isinf(d["psnr"]):
            d["psnr"] = "inf"
        return d


def error_stats(actual: np.ndarray, expected: np.ndarray) -> ErrorStats:
    if actual.shape != expected.shape:
        raise ValueError(f"shape mismatch: {actual.shape} vs {expected.shape}")
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    if not np.isfinite(diff).all():
        return ErrorStats(math.inf, math.inf, math.inf, math.inf, -math.inf)
    mse = float(np.mean(diff ** 2))
    return ErrorStats(
        max_abs=float(diff.max()),
        mean_abs=float(diff.mean()),
        median_abs=float(np.median(diff)),
        p99_abs=float(np.quantile(diff, 0.99)),
        psnr=math.inf if mse == 0 else -10.0 * math.log10(mse),
    )
