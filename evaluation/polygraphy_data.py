"""Polygraphy interop: realistic feeds for asisr's two graphs (``polygraphy run --data-loader-script``)
and PyTorch's outputs on them as Polygraphy ``RunResults`` (``polygraphy run --load-outputs``).

asisr keeps its own runners and comparator (``asisr-parity --per-stage`` checks each graph,
TensorRT engines included); this module lets Polygraphy's own tool check the same graphs
and engines on exactly the same inputs.

The inputs are the parity cases (``evaluation.parity.build_cases``): LR sizes that differ
from the export shape, symmetric and asymmetric scales, a batch mixing two scales. ``rows``
and ``cols`` are the host-computed query coordinates the runtime sends, never random
numbers (random coordinates would read outside the feature map). Upsampler ``features`` come
from running the model's own backbone on the LR images, so the upsampler sees real feature
statistics.

For ``polygraphy run`` (a no-argument function is required) the model directory is taken
from ``ASISR_POLYGRAPHY_MODEL``; ``load_data`` picks the stage from ``ASISR_POLYGRAPHY_STAGE``::

    export ASISR_POLYGRAPHY_MODEL=liif_onnx
    polygraphy run liif_onnx/upsampler.onnx --onnxrt --trt \\
        --data-loader-script "$(python -m asisr.evaluation.polygraphy_data path):load_upsampler_data" \\
        $(python -m asisr.evaluation.polygraphy_data shapes liif_onnx upsampler)
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from asisr.errors import UserError

from asisr.runtime import contract

ENV_MODEL = "ASISR_POLYGRAPHY_MODEL"
ENV_STAGE = "ASISR_POLYGRAPHY_STAGE"


def default_cases(images: Path | None = None, seed: int = 0):
    from asisr.evaluation.parity import build_cases

    return build_cases(images=images, seed=seed)


def backbone_feeds(cases) -> list[OrderedDict]:
    return [OrderedDict(contract.backbone_feeds(c.lr, c.scale)) for c in cases]


def upsampler_feeds(cases, features: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> list[OrderedDict]:
    """Feeds with ``features = features(lr, scale)`` from a backbone (torch or ONNX Runtime)."""
    return [OrderedDict(contract.upsampler_feeds(np.ascontiguousarray(features(c.lr, c.scale), dtype=np.float32),
                                                 c.scale, c.rows, c.cols)) for c in cases]


def onnx_backbone(directory: str | Path, threads: int | None = None) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The exported backbone on ONNX Runtime (CPU), as ``features(lr, scale)``."""
    from asisr.runtime.backends.onnxrt import OnnxrtRunner, SessionFromOnnx
    from asisr.runtime.manifest import read_manifest

    runner = OnnxrtRunner(SessionFromOnnx(read_manifest(directory).graph_path(contract.BACKBONE.name), ["cpu"],
                                          threads), contract.BACKBONE)
    runner.activate()
    return lambda lr, scale: runner.infer(contract.backbone_feeds(lr, scale))[contract.FEATURES]


def stage_feeds(onnx_dir: str | Path, stage: str, cases=None) -> list[OrderedDict]:
    """The feeds ``load_{stage}_data`` yields for ``onnx_dir`` (upsampler: its ONNX backbone's features)."""
    cases = default_cases() if cases is None else cases
    if stage == contract.BACKBONE.name:
        return backbone_feeds(cases)
    return upsampler_feeds(cases, onnx_backbone(onnx_dir))


def save_reference(reference, onnx_dir: str | Path, out_dir: str | Path,
                   stages: Sequence[str] = contract.STAGE_NAMES) -> dict[str, Path]:
    """The reference's outputs on the data-loader feeds, as Polygraphy ``RunResults`` JSON.

    ``reference`` is a ``Pipeline`` (normally PyTorch: ``torch_pipeline(model)``). Then
    ``polygraphy run upsampler.onnx --trt --load-outputs torch_upsampler.json ...`` compares
    a TensorRT engine directly with PyTorch on exactly these feeds.
    """
    try:
        from polygraphy.comparator import IterationResult, RunResults
    except ImportError:
        raise UserError("Polygraphy is not installed (pip install polygraphy, or asisr[test])") from None
    from asisr.atomic import atomic_path

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    with reference:
        for stage in stages:
            runner = getattr(reference, stage)
            results = RunResults()
            results.add([IterationResult(outputs=OrderedDict(runner.infer(dict(feed))), runner_name=reference.backend)
                         for feed in stage_feeds(onnx_dir, stage)], runner_name=reference.backend)
            path = out_dir / f"{reference.backend}_{stage}.json"
            with atomic_path(path) as tmp:
                results.save(str(tmp))  # pyright: ignore[reportAttributeAccessIssue]  (Polygraphy's Serializable)
            paths[stage] = path
    return paths


def _model_dir() -> Path:
    value = os.environ.get(ENV_MODEL)
    if not value:
        raise UserError(f"set {ENV_MODEL} to the exported model directory (backbone.onnx, upsampler.onnx, "
                        "manifest.json) so the upsampler feeds can be computed by its backbone")
    return Path(value)


def load_backbone_data() -> Iterator[OrderedDict]:
    """``polygraphy run backbone.onnx --data-loader-script THIS:load_backbone_data``."""
    yield from backbone_feeds(default_cases())


def load_upsampler_data() -> Iterator[OrderedDict]:
    """``polygraphy run upsampler.onnx --data-loader-script THIS:load_upsampler_data``; needs ASISR_POLYGRAPHY_MODEL."""
    yield from upsampler_feeds(default_cases(), onnx_backbone(_model_dir()))


def load_data() -> Iterator[OrderedDict]:
    """Polygraphy's default entry point: the stage named by ``ASISR_POLYGRAPHY_STAGE`` (default: upsampler)."""
    stage = os.environ.get(ENV_STAGE, contract.UPSAMPLER.name).strip().lower()
    if stage not in contract.STAGE_NAMES:
        raise UserError(f"{ENV_STAGE}={stage!r}: expected {' or '.join(contract.STAGE_NAMES)}")
    yield from (load_backbone_data() if stage == contract.BACKBONE.name else load_upsampler_data())


def polygraphy_shape_args(shapes: dict) -> list[str]:
    """``Profile.shapes(...)`` -> ``--trt-min-shapes lr:[1,3,1,1] ... --trt-opt-shapes ... --trt-max-shapes ...``."""
    args = []
    for i, flag in enumerate(("--trt-min-shapes", "--trt-opt-shapes", "--trt-max-shapes")):
        args.append(flag)
        args += [f"{name}:[{','.join(str(d) for d in rng[i])}]" for name, rng in shapes.items()]
    return args


def profile_shape_args(directory: str | Path, stage: str) -> list[str]:
    """Polygraphy's TensorRT shape flags for a model directory: the engines' profile, or the default one."""
    from asisr.runtime.backends.trt.profiles import Profile, default_profile
    from asisr.runtime.manifest import read_manifest

    if stage not in contract.STAGE_NAMES:
        raise UserError(f"unknown stage {stage!r}: expected {' or '.join(contract.STAGE_NAMES)}")
    manifest = read_manifest(directory)
    descriptor = manifest.model_descriptor()
    recorded = (manifest.data.get("tensorrt") or {}).get("profile")
    profile = Profile.from_dict(recorded) if recorded else default_profile(descriptor)
    return polygraphy_shape_args(profile.shapes(stage, descriptor.feature_channels))


def main(argv: list[str] | None = None) -> int:
    """``path``: this file (for --data-loader-script); ``shapes DIR STAGE``: the --trt-*-shapes flags."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args == ["path"]:
            print(Path(__file__).resolve())
        elif len(args) == 3 and args[0] == "shapes":
            print(" ".join(profile_shape_args(args[1], args[2])))  # unquoted: meant for $(...)
        else:
            raise UserError("usage: python -m asisr.evaluation.polygraphy_data path | shapes MODEL_DIR STAGE")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
