"""Polygraphy comparison of the exported graphs against the PyTorch model, stage by stage.

Polygraphy's ``Comparator`` runs every runner on the same feeds and checks each output
against the first runner (PyTorch, the reference) with an absolute tolerance. Runners: our
``TorchStageRunner`` (Polygraphy's own ``PytRunner`` moves inputs to CUDA unconditionally
and iterates a single output tensor as if it were a tuple, so it cannot serve here), ONNX
Runtime through Polygraphy's ``SessionFromOnnx`` (any providers), and optionally TensorRT
engines through Polygraphy's ``TrtRunner`` (GPU only). Unlike ``evaluation.parity``, which
checks the composed pipeline, this isolates each graph: the upsampler gets the reference
backbone's features, so an error is attributed to the graph that makes it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from asisr.errors import UserError
from asisr.evaluation.parity import FP32_TOLERANCE
from asisr.evaluation.polygraphy_data import STAGE_INPUTS, backbone_feeds, default_cases, upsampler_feeds
from asisr.export.manifest import STAGES

try:
    from polygraphy.backend.base import BaseRunner as _PolygraphyRunner
except ImportError:  # optional dependency; require_polygraphy() says so when it is needed
    _PolygraphyRunner = object

STAGE_OUTPUTS = {"backbone": ("features",), "upsampler": ("rgb",)}


def require_polygraphy():
    try:
        import polygraphy
    except ImportError:
        raise UserError("Polygraphy is not installed (pip install polygraphy, or asisr[test])") from None
    return polygraphy


class TorchStageRunner(_PolygraphyRunner):
    """A Polygraphy runner for one stage module on any torch device (CPU included)."""

    def __init__(self, module_loader: Callable, stage: str, device: str = "cpu", name: str | None = None):
        require_polygraphy()
        super().__init__(name=name, prefix="asisr-torch")
        self.module_loader = module_loader
        self.stage = stage
        self.device = device

    def activate_impl(self):
        self.module = self.module_loader().eval().to(self.device)

    def get_input_metadata_impl(self):
        from polygraphy.common import TensorMetadata

        from asisr.export.profiles import stage_axes

        meta = TensorMetadata()
        for name, axes in stage_axes(self.stage).items():
            meta.add(name, np.float32, [a if isinstance(a, int) else -1 for a in axes])
        return meta

    def infer_impl(self, feed_dict):
        import torch

        start = time.perf_counter()
        with torch.no_grad():
            args = [torch.from_numpy(np.ascontiguousarray(feed_dict[n])).to(self.device)
                    for n in STAGE_INPUTS[self.stage]]
            out = self.module(*args)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        self.inference_time = time.perf_counter() - start
        return OrderedDict((n, np.ascontiguousarray(o.detach().float().cpu().numpy()))
                           for n, o in zip(STAGE_OUTPUTS[self.stage], outs))

    def deactivate_impl(self):
        del self.module


@dataclass
class StageComparison:
    stage: str
    iterations: int
    passed: bool  # Polygraphy's verdict
    max_abs: dict[str, float]  # runner -> largest |output - reference| over all feeds

    def to_dict(self) -> dict:
        return {"stage": self.stage, "iterations": self.iterations, "passed": self.passed, "max_abs": self.max_abs}


@dataclass
class PolygraphyReport:
    reference: str
    tolerance: float
    stages: list[StageComparison] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.stages) and all(s.passed for s in self.stages)

    def table(self) -> str:
        lines = [f"Polygraphy comparison against {self.reference} (max abs error <= {self.tolerance:g})"]
        for s in self.stages:
            errs = ", ".join(f"{r} {e:.2e}" for r, e in s.max_abs.items())
            lines.append(f"  {s.stage:<10} {s.iterations:>3} feeds  {errs}  {'pass' if s.passed else 'FAIL'}")
        return "\n".join(lines)


def _max_abs(results, reference: str) -> dict[str, float]:
    ref = dict(results)[reference]
    out = {}
    for name, iterations in results:
        if name == reference:
            continue
        worst = 0.0
        for got, want in zip(iterations, ref):
            for key in want.keys():
                a, b = np.asarray(got[key], np.float64), np.asarray(want[key], np.float64)
                worst = max(worst, float(np.max(np.abs(a - b))) if a.shape == b.shape else float("inf"))
        out[name] = worst
    return out


def compare_stages(model, onnx_dir: str | Path, cases=None, tolerance: float = FP32_TOLERANCE,
                   providers: Sequence = ("cpu",), engines: dict[str, Path] | None = None,
                   stages: Sequence[str] = STAGES) -> PolygraphyReport:
    """Compare each exported graph (ONNX Runtime, and TensorRT ``engines`` if given) with ``model``'s stage."""
    require_polygraphy()
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
    from polygraphy.comparator import Comparator

    try:
        from polygraphy.comparator import SimpleCompareFunc
    except ImportError:  # Polygraphy < 0.50
        from polygraphy.comparator import CompareFunc

        SimpleCompareFunc = CompareFunc.simple
    from polygraphy.logger import G_LOGGER

    from asisr.export.manifest import read_manifest

    manifest = read_manifest(onnx_dir)
    cases = default_cases() if cases is None else cases
    model = model.eval()
    report = PolygraphyReport("torch", tolerance)
    for stage in stages:
        if stage == "backbone":
            feeds = backbone_feeds(cases)
        else:
            import torch

            def features(lr, scale):
                with torch.no_grad():
                    return model.backbone(torch.from_numpy(lr), torch.from_numpy(scale)).numpy()

            feeds = upsampler_feeds(cases, features)
        runners = [TorchStageRunner(lambda s=stage: getattr(model, s), stage, name="torch"),
                   OnnxrtRunner(SessionFromOnnx(str(manifest.graph_path(stage)), providers=list(providers)),
                                name="onnxruntime")]
        if engines:
            from polygraphy.backend.common import BytesFromPath
            from polygraphy.backend.trt import EngineFromBytes, TrtRunner

            runners.append(TrtRunner(EngineFromBytes(BytesFromPath(str(engines[stage]))), name="tensorrt"))
        with G_LOGGER.verbosity(G_LOGGER.CRITICAL):  # the report carries the numbers
            results = Comparator.run(runners, data_loader=feeds)
            accuracy = Comparator.compare_accuracy(
                results, comparisons=[(0, i) for i in range(1, len(runners))],
                compare_func=SimpleCompareFunc(atol=tolerance, rtol=0.0, check_error_stat="max"))
        report.stages.append(StageComparison(stage, len(feeds), bool(accuracy), _max_abs(results, "torch")))
    return report


def stage_feeds(model, onnx_dir: str | Path, stage: str, cases=None) -> list[OrderedDict]:
    """The feeds ``polygraphy_data.load_{stage}_data`` yields for ``onnx_dir`` (upsampler: ONNX backbone features)."""
    from asisr.evaluation.polygraphy_data import onnx_backbone

    cases = default_cases() if cases is None else cases
    return backbone_feeds(cases) if stage == "backbone" else upsampler_feeds(cases, onnx_backbone(onnx_dir))


def save_reference(model, onnx_dir: str | Path, out_dir: str | Path,
                   stages: Sequence[str] = STAGES) -> dict[str, Path]:
    """PyTorch outputs for the data-loader feeds, as Polygraphy ``RunResults`` JSON (``--load-outputs``).

    ``polygraphy run upsampler.onnx --trt --load-outputs torch_upsampler.json ...`` then
    compares a TensorRT engine directly with PyTorch on exactly these feeds.
    """
    require_polygraphy()
    from polygraphy.comparator import Comparator
    from polygraphy.logger import G_LOGGER

    from asisr.atomic import atomic_path

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for stage in stages:
        feeds = stage_feeds(model, onnx_dir, stage)
        with G_LOGGER.verbosity(G_LOGGER.CRITICAL):
            results = Comparator.run([TorchStageRunner(lambda s=stage: getattr(model, s), stage, name="torch")],
                                     data_loader=feeds)
            path = out_dir / f"torch_{stage}.json"
            with atomic_path(path) as tmp:
                results.save(str(tmp))
        paths[stage] = path
    return paths


def main(argv: list[str] | None = None) -> int:
    """``python -m asisr.evaluation.polygraphy_compare --checkpoint CKPT --model DIR [--save-reference OUT]``."""
    import typer

    from asisr.cli.common import make_app, run_app

    app = make_app("Compare an exported model's graphs with its PyTorch checkpoint through Polygraphy, stage by "
                   "stage; optionally save the PyTorch outputs for `polygraphy run --load-outputs`.")

    @app.command()
    def compare(
        checkpoint: Path = typer.Option(..., "--checkpoint", "-c", help="The PyTorch checkpoint (the reference)."),
        model: Path = typer.Option(..., "--model", "-m", help="Exported directory (ONNX graphs, manifest)."),
        save: Optional[Path] = typer.Option(None, "--save-reference",
                                            help="Write torch_backbone.json / torch_upsampler.json here."),
        provider: list[str] = typer.Option(["cpu"], "--provider", help="ONNX Runtime provider (cpu, cuda, ...)."),
        engines: bool = typer.Option(False, "--engines", help="Also run the directory's TensorRT engines."),
        tolerance: float = typer.Option(FP32_TOLERANCE, "--tolerance", help="Max abs error allowed."),
    ) -> None:
        from asisr.export.manifest import read_manifest
        from asisr.models import load

        reference = load(checkpoint)
        trt = None
        if engines:
            info = read_manifest(model).data.get("tensorrt")
            if not info:
                raise UserError(f"{model} has no TensorRT engines (export it with --format tensorrt)")
            trt = {s: model / e["file"] for s, e in info["engines"].items()}
        report = compare_stages(reference, model, tolerance=tolerance, providers=provider, engines=trt)
        typer.echo(report.table())
        if save is not None:
            for stage, path in save_reference(reference, model, save).items():
                typer.echo(f"saved PyTorch {stage} outputs to {path}")
        if not report.passed:
            raise typer.Exit(1)

    return run_app(app, "python -m asisr.evaluation.polygraphy_compare", argv)


if __name__ == "__main__":
    main()
