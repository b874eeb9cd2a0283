"""The comparator: error statistics between two arrays and pluggable checks; knows nothing about backends.

Parity (``asisr-parity``, end to end or stage by stage) and the Polygraphy flow both reduce to
"these outputs against those": ``compare`` gives the statistics of each tensor and the verdict
of every check on them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
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


@dataclass(frozen=True)
class MaxAbs:
    """Every element within ``tolerance`` of the reference."""

    tolerance: float

    def __call__(self, stats: ErrorStats) -> str | None:
        if stats.max_abs <= self.tolerance:
            return None
        return f"max abs error {stats.max_abs:.3g} > {self.tolerance:g}"


@dataclass(frozen=True)
class TensorComparison:
    name: str
    stats: ErrorStats | None
    failures: tuple[str, ...]  # why checks failed (empty: passed)

    @property
    def passed(self) -> bool:
        return self.stats is not None and not self.failures


def compare(actual: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray],
            checks: Sequence) -> list[TensorComparison]:
    """Each tensor of ``expected`` against the same-named one of ``actual``, under every check."""
    out = []
    for name, want in expected.items():
        if name not in actual:
            out.append(TensorComparison(name, None, (f"output {name!r} is missing",)))
            continue
        try:
            stats = error_stats(np.asarray(actual[name]), np.asarray(want))
        except ValueError as e:
            out.append(TensorComparison(name, None, (str(e),)))
            continue
        out.append(TensorComparison(name, stats, tuple(f for f in (c(stats) for c in checks) if f)))
    return out
