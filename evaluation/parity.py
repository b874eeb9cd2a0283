"""Parity: does a backend compute what the PyTorch model computes?

Runs a candidate ``Pipeline`` and the PyTorch reference pipeline (the same runner stack,
``asisr.runtime.backends.pyt``) on the same inputs over several LR shapes and scales that
differ from the export shape (graphs that baked a shape fail here), asymmetric scales, a
batch mixing scales, and random as well as real images, and hands the outputs to the one
comparator (``evaluation.compare``). End to end, the composed pipeline is checked;
``per_stage`` checks each graph alone: the candidate's upsampler gets the reference
backbone's features, so an error is attributed to the graph that makes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from asisr.evaluation.compare import ErrorStats, MaxAbs, compare
from asisr.runtime import contract
from asisr.runtime.pipeline import Pipeline
from asisr.runtime.descriptor import ModelDescriptor
from asisr.runtime.query import axis_coords, floor_grid_coords, make_query

DEFAULT_SHAPES = ((17, 23), (32, 24), (45, 38))  # the export example is 19 x 23
DEFAULT_SCALES = ("2", "3.7", "1.6", "2x3.5")
FP32_TOLERANCE = 1e-4
# Default max-abs tolerances (on [0, 1] outputs) by the manifest's precision, from measurements
# with the official LIIF on ONNX Runtime CPU (docs/precision.md): int8 (onnxruntime target,
# Set5 crops) worst case 2.3e-2, 52.3 dB; fp16 worst case 1.2e-3, 74.6 dB (ORT CPU runs fp16
# convolutions and matmuls in fp32 with fp16-rounded weights; a GPU's fp16 arithmetic adds
# more, hence the headroom). A broken quantisation (saturating ranges) lands far above 1e-1.
# bf16 (OpenVINO computing an fp32 graph in bf16) keeps 8 significant bits to fp16's 11: eight
# times fp16's unit roundoff, so the fp16 worst case above scales to ~1e-2; 5e-2 leaves the same
# kind of headroom for deeper models, stays under int8's 1e-1, and is checked on every family's
# fixture (tests/test_openvino.py, whose measured worst cases are in docs/precision.md).
TOLERANCES = {"fp32": FP32_TOLERANCE, "fp16": 2e-2, "bf16": 5e-2, "int8": 1e-1}


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
    stage: str = "model"  # "model" end to end, else the stage whose output this is

    def to_dict(self) -> dict:
        return {"case": self.name, "stage": self.stage, "lr_shape": list(self.lr_shape),
                "out_shape": list(self.out_shape), "stats": self.stats.to_dict() if self.stats else None,
                "passed": self.passed, "error": self.error}


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
        lines = [f"{'case':<34} {'stage':<9} {'lr':>9} {'out':>9} {'max':>9} {'mean':>9} {'p99':>9} "
                 f"{'psnr dB':>8}  ok", "-" * 108]
        for r in self.results:
            lr = "x".join(map(str, r.lr_shape[-2:]))
            out = "x".join(map(str, r.out_shape[-2:]))
            if r.stats is None:
                lines.append(f"{r.name:<34} {r.stage:<9} {lr:>9} {out:>9} FAILED: {r.error}")
                continue
            s = r.stats
            lines.append(f"{r.name:<34} {r.stage:<9} {lr:>9} {out:>9} {s.max_abs:9.2e} {s.mean_abs:9.2e} "
                         f"{s.p99_abs:9.2e} {s.psnr:8.1f}  {'yes' if r.passed else 'NO'}")
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


def _query(h: int, w: int, sh: float, sw: float, descriptor: ModelDescriptor | None):
    """The whole-image query the runtime would make: ``round(s * size)`` pixels told ``out / lr``, or on
    a ``floor`` size-rule model (official Meta-SR) ``int(s * size)`` pixels on the scale's own grid."""
    if descriptor is not None and descriptor.size_rule == "floor":
        return make_query(h, w, max(1, int(h * sh)), max(1, int(w * sw)), grid_scale=(sh, sw))
    return make_query(h, w, max(1, round(h * sh)), max(1, round(w * sw)))


def _window(lr_len: int, s: float, start: int, stop: int, floor_grid: bool) -> np.ndarray:
    """Output pixels ``start..stop`` of one axis at scale ``s``, on the grid the model samples."""
    if floor_grid:
        return floor_grid_coords(lr_len, s, start, stop).astype(np.float32)
    return axis_coords(lr_len, round(lr_len * s), start, stop).astype(np.float32)


def build_cases(shapes=DEFAULT_SHAPES, scales=DEFAULT_SCALES, images: Path | None = None, seed: int = 0,
                random_inputs: bool = True, descriptor: ModelDescriptor | None = None) -> list[Case]:
    """Parity cases; ``random_inputs=False`` uses crops of ``images`` only (INT8 graphs are
    calibrated for photos: uniform noise drives activations past their calibrated ranges).

    ``descriptor``: the model's, so the queries are those the runtime makes for it (its size rule's
    grid); a ``symmetric_only`` model gets no asymmetric case (the runtime refuses them).
    """
    if not random_inputs and images is None:
        raise ValueError("parity cases without random inputs need a folder of images")
    floor_grid = descriptor is not None and descriptor.size_rule == "floor"
    symmetric = descriptor is not None and descriptor.symmetric_only
    rng = np.random.default_rng(seed)
    cases = []
    sources = [("random", rng.random((1, 3, h, w), dtype=np.float32)) for h, w in shapes] if random_inputs else []
    sources += _real_crops(images, shapes, rng)
    for i, (label, lr) in enumerate(sources):
        h, w = lr.shape[2:]
        for s in scales:
            sh, sw = _parse(s)
            if symmetric and sh != sw:
                continue
            sc, rows, cols = _query(h, w, sh, sw, descriptor)
            cases.append(Case(f"{label} {h}x{w} x{s}", lr, sc, rows, cols))
    # A batch mixing scales at one tensor shape, like a training batch: 24x24 output windows.
    h, w = shapes[0]
    if random_inputs:
        lr = rng.random((2, 3, h, w), dtype=np.float32)
    else:
        pair = [c for _, c in _real_crops(images, [shapes[0]] * 2, rng)]
        lr = np.concatenate((pair * 2)[:2])
    scale_pair = ((1.7, 1.7), (3.3, 3.3) if symmetric else (3.3, 2.4))
    rows = [_window(h, sh, 3, 27, floor_grid) for sh, _ in scale_pair]
    cols = [_window(w, sw, 5, 29, floor_grid) for _, sw in scale_pair]
    told = scale_pair if floor_grid else [(round(h * sh) / h, round(w * sw) / w) for sh, sw in scale_pair]
    label = " + ".join(f"x{sh:g}" if sh == sw else f"x{sh:g}x{sw:g}" for sh, sw in scale_pair)
    cases.append(Case(f"mixed batch {label} {h}x{w}", lr, np.array(told, np.float32), np.stack(rows), np.stack(cols)))
    return cases


def reference_pipeline(reference) -> Pipeline:
    """The reference as a pipeline: a ``Pipeline`` as it is, an ``SRModel`` on the torch backend."""
    if isinstance(reference, Pipeline):
        return reference
    from asisr.runtime.backends.pyt import torch_pipeline

    return torch_pipeline(reference.eval())


def _outputs(pipeline: Pipeline, case: Case, features: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The pipeline's stage outputs on ``case``; ``features`` replaces its own backbone's as upsampler input."""
    own = pipeline.features(case.lr, case.scale)
    rgb = pipeline.upsample(own if features is None else features, case.scale, case.rows, case.cols)
    return {contract.FEATURES: own, contract.RGB: rgb}


_STAGE_OF = {t.name: s.name for s in contract.STAGES for t in s.outputs}


def check_parity(candidate: Pipeline, reference, cases: list[Case], tolerance: float | None = None,
                 precision: str | None = None, per_stage: bool = False, checks=None) -> ParityReport:
    """Compare the candidate's raw (unclamped) outputs with the reference on every case.

    ``reference`` is a ``Pipeline`` or an ``SRModel`` (run on torch). ``tolerance`` defaults
    to the one for ``precision`` (:data:`TOLERANCES`; default: the candidate's precision);
    ``checks`` (comparator checks) replace the max-abs tolerance check.
    """
    precision = precision or candidate.precision
    tolerance = default_tolerance(precision) if tolerance is None else tolerance
    checks = [MaxAbs(tolerance)] if checks is None else list(checks)
    report = ParityReport(tolerance=tolerance, precision=precision)
    ref = reference_pipeline(reference)
    with ref, candidate:
        for case in cases:
            expected = _outputs(ref, case)
            compared = expected if per_stage else {contract.RGB: expected[contract.RGB]}
            try:
                actual = _outputs(candidate, case, expected[contract.FEATURES] if per_stage else None)
            except Exception as e:  # a backend that cannot run a shape fails that case
                for name, want in compared.items():
                    report.results.append(CaseResult(case.name, case.lr.shape, want.shape, None, False,
                                                     str(e).strip().splitlines()[0][:200],
                                                     _STAGE_OF[name] if per_stage else "model"))
                continue
            for c in compare(actual, compared, checks):
                report.results.append(CaseResult(case.name, case.lr.shape, compared[c.name].shape, c.stats, c.passed,
                                                 "; ".join(c.failures) or None,
                                                 _STAGE_OF[c.name] if per_stage else "model"))
    return report
