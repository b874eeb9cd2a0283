"""Parity: does a backend compute what the PyTorch model computes?

Runs a ``Pipeline`` and the PyTorch reference on the same inputs over several LR shapes
and scales that differ from the export shape (graphs that baked a shape fail here),
asymmetric scales, a batch mixing scales, and random as well as real images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from asisr.evaluation.compare import ErrorStats, error_stats
from asisr.models.query import axis_coords, make_query
from asisr.runtime.pipeline import Pipeline

DEFAULT_SHAPES = ((17, 23), (32, 24), (45, 38))  # the export example is 19 x 23
DEFAULT_SCALES = ("2", "3.7", "1.6", "2x3.5")
FP32_TOLERANCE = 1e-4
# Default max-abs tolerances (on [0, 1] outputs) by the manifest's precision, from measurements
# with the official LIIF on ONNX Runtime CPU (docs/precision.md): int8 (onnxruntime target,
# Set5 crops) worst case 2.3e-2, 52.3 dB; fp16 worst case 1.2e-3, 74.6 dB (ORT CPU runs fp16
# convolutions and matmuls in fp32 with fp16-rounded weights; a GPU's fp16 arithmetic adds
# more, hence the headroom). A broken quantisation (saturating ranges) lands far above 1e-1.
TOLERANCES = {"fp32": FP32_TOLERANCE, "fp16": 2e-2, "int8": 1e-1}


def default_tolerance(precision: str | None) -> float:
    """The parity tolerance for a model directory of this precision (fp32 when unknown)."""
    return TOLERANCES.get(precision or "fp32", FP32_TOLERANCE)


@dataclass
class Case:
    name: str
    lr: np.ndarray  # (B, 3, h, w) float32 in [0, 1]
    scale: np.ndarray  # (B, 2)
    rows: np.ndarray  # (B, H)
    cols: np.ndarray  # (B, W)


@dataclass
class CaseResult:
    name: str
    lr_shape: tuple
    out_shape: tuple
    stats: ErrorStats | None
    passed: bool
    error: str | None = None

    def to_dict(self) -> dict:
        return {"case": self.name, "lr_shape": list(self.lr_shape), "out_shape": list(self.out_shape),
                "stats": self.stats.to_dict() if self.stats else None, "passed": self.passed, "error": self.error}


@dataclass
class ParityReport:
    results: list[CaseResult] = field(default_factory=list)
    tolerance: float = FP32_TOLERANCE
    precision: str = "fp32"

    @property
    def min_psnr(self) -> float:
        """The worst case's PSNR of the backend output against the fp32 PyTorch output."""
        values = [r.stats.psnr for r in self.results if r.stats is not None]
        return min(values) if values else float("nan")

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r.passed for r in self.results)

    def table(self) -> str:
        lines = [f"{'case':<34} {'lr':>9} {'out':>9} {'max':>9} {'mean':>9} {'p99':>9} {'psnr dB':>8}  ok",
                 "-" * 98]
        for r in self.results:
            lr = "x".join(map(str, r.lr_shape[-2:]))
            out = "x".join(map(str, r.out_shape[-2:]))
            if r.stats is None:
                lines.append(f"{r.name:<34} {lr:>9} {out:>9} FAILED: {r.error}")
                continue
            s = r.stats
            lines.append(f"{r.name:<34} {lr:>9} {out:>9} {s.max_abs:9.2e} {s.mean_abs:9.2e} {s.p99_abs:9.2e} "
                         f"{s.psnr:8.1f}  {'yes' if r.passed else 'NO'}")
        lines.append(f"precision {self.precision}: tolerance max abs error <= {self.tolerance:g}; "
                     f"{sum(r.passed for r in self.results)}/{len(self.results)} cases pass; "
                     f"worst PSNR vs fp32 PyTorch {self.min_psnr:.1f} dB")
        return "\n".join(lines)


def _parse(scale: str) -> tuple[float, float]:
    from asisr.scale import parse_scale

    s = parse_scale(scale)
    return s.h, s.w


def _real_crops(images: Path | None, shapes, rng) -> list[tuple[str, np.ndarray]]:
    if images is None:
        return []
    from asisr.imageio import list_images, read_image
    from asisr.runtime.upscaler import to_float

    crops = []
    files = list_images(images)
    for i, (h, w) in enumerate(shapes):
        if not files:
            break
        path = files[i % len(files)]
        img = to_float(read_image(path))
        img = img[:, :, None].repeat(3, 2) if img.ndim == 2 else img[:, :, :3]
        y = int(rng.integers(0, max(1, img.shape[0] - h)))
        x = int(rng.integers(0, max(1, img.shape[1] - w)))
        crop = img[y:y + h, x:x + w]
        if crop.shape[:2] == (h, w):
            crops.append((path.stem, crop.transpose(2, 0, 1)[None].copy()))
    return crops


def build_cases(shapes=DEFAULT_SHAPES, scales=DEFAULT_SCALES, images: Path | None = None, seed: int = 0,
                random_inputs: bool = True) -> list[Case]:
    """Parity cases; ``random_inputs=False`` uses crops of ``images`` only (INT8 graphs are
    calibrated for photos: uniform noise drives activations past their calibrated ranges)."""
    if not random_inputs and images is None:
        raise ValueError("parity cases without random inputs need a folder of images")
    rng = np.random.default_rng(seed)
    cases = []
    sources = [("random", rng.random((1, 3, h, w), dtype=np.float32)) for h, w in shapes] if random_inputs else []
    sources += _real_crops(images, shapes, rng)
    for i, (label, lr) in enumerate(sources):
        h, w = lr.shape[2:]
        for s in scales:
            sh, sw = _parse(s)
            out = (max(1, round(h * sh)), max(1, round(w * sw)))
            sc, rows, cols = make_query(h, w, *out)
            cases.append(Case(f"{label} {h}x{w} x{s}", lr, sc, rows, cols))
    # A batch mixing scales at one tensor shape, like a training batch: 24x24 output windows.
    h, w = shapes[0]
    if random_inputs:
        lr = rng.random((2, 3, h, w), dtype=np.float32)
    else:
        pair = [c for _, c in _real_crops(images, [shapes[0]] * 2, rng)]
        lr = np.concatenate((pair * 2)[:2])
    scale_pair = ((1.7, 1.7), (3.3, 2.4))
    rows, cols, scs = [], [], []
    for sh, sw in scale_pair:
        out_h, out_w = round(h * sh), round(w * sw)
        rows.append(axis_coords(h, out_h, 3, 27).astype(np.float32))
        cols.append(axis_coords(w, out_w, 5, 29).astype(np.float32))
        scs.append((out_h / h, out_w / w))
    cases.append(Case(f"mixed batch x1.7 + x3.3x2.4 {h}x{w}", lr, np.array(scs, np.float32),
                      np.stack(rows), np.stack(cols)))
    return cases


def reference_outputs(model: torch.nn.Module, case: Case) -> np.ndarray:
    with torch.no_grad():
        args = [torch.from_numpy(a) for a in (case.lr, case.scale, case.rows, case.cols)]
        return model(*args).numpy()


def check_parity(pipeline: Pipeline, reference: torch.nn.Module, cases: list[Case],
                 tolerance: float | None = None, precision: str = "fp32") -> ParityReport:
    """Compare the pipeline's raw (unclamped) output with the reference model on every case.

    ``tolerance`` defaults to the one for ``precision`` (:data:`TOLERANCES`).
    """
    tolerance = default_tolerance(precision) if tolerance is None else tolerance
    report = ParityReport(tolerance=tolerance, precision=precision)
    reference = reference.eval()
    with pipeline:
        for case in cases:
            expected = reference_outputs(reference, case)
            try:
                feats = pipeline.features(case.lr, case.scale)
                actual = pipeline.upsample(feats, case.scale, case.rows, case.cols)
                stats = error_stats(actual, expected)
            except Exception as e:  # a backend that cannot run a shape fails that case
                report.results.append(CaseResult(case.name, case.lr.shape, expected.shape, None, False,
                                                 str(e).strip().splitlines()[0][:200]))
                continue
            report.results.append(CaseResult(case.name, case.lr.shape, expected.shape, stats,
                                              stats.max_abs <= tolerance))
    return report
