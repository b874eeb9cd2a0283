"""INT8 export: the fp32 export, calibrated on real photos and quantised to QDQ graphs.

``export_int8(model_or_checkpoint, out_dir, calib_folder)`` is the one call (the CLI's
``asisr-export --int8`` and the benchmark harness use it):

1. export fp32 graphs (:func:`asisr.export.onnx.export_onnx`) and pre-process them for ORT;
2. calibrate: tensor ranges of both graphs over LR crops of the calibration folder
   (:mod:`asisr.calibration`), the upsampler fed with the fp32 backbone's features;
3. exclusion by measurement (:mod:`asisr.calibration.sensitivity`): coordinate / encoding
   math and phase math (LTE's cos/sin arguments) stay float, nodes too costly to quantise stay
   float;
4. quantise both graphs with ONNX Runtime (QDQ) for the target, write graphs, manifest and the
   sensitivity report, and move the directory into place whole.

Steps 2-3 are stored in the calibration cache when one is given; a later export that finds its
entry repeats step 4 only, without reading any image, and produces byte-identical graphs.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from onnxruntime.quantization.calibrate import CalibrationCacheEncoder, TensorsData

from asisr.calibration.cache import RangeCache, cache_key
from asisr.calibration.graph import DATA_INPUTS
from asisr.calibration.quantizer import TARGETS, collect_ranges, method_of, prepare_graph, quantize_graph, target_of
from asisr.calibration.reader import BackboneReader, UpsamplerReader
from asisr.calibration.samples import CalibrationSettings, build_calibration_set
from asisr.calibration.sensitivity import Exclusions, Policy, choose_exclusions
from asisr.errors import UserError
from asisr.runtime import contract
from asisr.runtime.contract import STAGE_NAMES
from asisr.runtime.manifest import read_manifest, write_manifest
from asisr.export import DEFAULT_OPSET
from asisr.export.onnx import export_onnx
from asisr.export.publish import check_destination, staging_dir

DEFAULT_METHOD = "minmax"
SENSITIVITY_FILE = "sensitivity.json"


@dataclass(frozen=True)
class Int8Config:
    target: str = "onnxruntime"
    method: str = DEFAULT_METHOD
    settings: CalibrationSettings = field(default_factory=CalibrationSettings)
    policy: Policy = field(default_factory=Policy)
    threads: int = 1

    def check(self) -> None:
        target_of(self.target)
        method_of(self.method)
        if self.settings.n_samples < 1:
            raise UserError(f"--calib-samples must be >= 1, got {self.settings.n_samples}")


def _model(model):
    if isinstance(model, (str, Path)):
        from asisr.models import load

        return load(model)
    return model


def export_int8(model, out_dir: str | Path, calib: str | Path | None, config: Int8Config = Int8Config(),
                cache: str | Path | None = None, overwrite: bool = False, opset: int = DEFAULT_OPSET,
                progress: Callable[[str], None] | None = None) -> Path:
    """Export ``model`` (an SRModel or a checkpoint path) as INT8 QDQ graphs to ``out_dir``.

    ``calib`` is a folder of photos; it is only read when ``cache`` has no entry for this
    model and configuration (then it is required).
    """
    config.check()
    check_destination(out_dir, overwrite)
    if cache is None and calib is None:
        raise UserError("INT8 export needs a calibration folder (--calib DIR)")
    model = _model(model)
    with tempfile.TemporaryDirectory(prefix="asisr-fp32-") as tmp:
        fp32 = export_onnx(model, Path(tmp) / "fp32", opset=opset)
        return quantize_onnx(fp32, out_dir, calib, config, cache, overwrite, progress)


def quantize_onnx(fp32_dir: str | Path, out_dir: str | Path, calib: str | Path | None,
                  config: Int8Config = Int8Config(), cache: str | Path | None = None, overwrite: bool = False,
                  progress: Callable[[str], None] | None = None) -> Path:
    """INT8 QDQ graphs of an fp32 export directory (see :func:`export_int8`)."""
    say = progress or (lambda _m: None)
    config.check()
    out_dir = check_destination(out_dir, overwrite)
    range_cache = RangeCache(cache) if cache is not None else None
    if range_cache is None and calib is None:
        raise UserError("INT8 export needs a calibration folder (--calib DIR)")
    fp32 = read_manifest(fp32_dir)
    fp32.require_fp32("INT8")
    target = TARGETS[config.target]
    settings = config.settings.for_scale_range(float(fp32.descriptor["scale_max"]))
    with staging_dir(out_dir, overwrite) as work:
        graphs = {stage: prepare_graph(fp32.graph_path(stage), work / f"{stage}.pre.onnx", DATA_INPUTS[stage])
                  for stage in STAGE_NAMES}
        shas = {stage: fp32.data["graphs"][stage]["sha256"] for stage in STAGE_NAMES}
        key = cache_key(shas, config.method, config.target,
                        {"settings": settings.to_dict(), "policy": config.policy.to_dict(),
                         "quantization": target.describe()})  # exclusions were measured for these types
        entry = range_cache.get(key) if range_cache is not None else None
        from_cache = entry is not None
        if entry is None:
            if calib is None:
                raise UserError(f"the calibration cache {cache} has no entry for this model and settings; "
                                "give a calibration folder (--calib DIR)")
            entry = _calibrate(graphs, Path(calib), config, settings, target, say)
            if range_cache is not None:
                range_cache.put(key, entry)
            entry = json.loads(json.dumps(entry, cls=CalibrationCacheEncoder))  # quantise from what a hit reads
            entry["ranges"] = {s: TensorsData.from_dict(d) for s, d in entry["ranges"].items()}
        else:
            say(f"calibration: cache hit in {cache}")
        exclusions = Exclusions.from_dict(entry["exclusions"])
        out = work / "out"
        for stage in STAGE_NAMES:
            quantize_graph(graphs[stage], out / fp32.graph_path(stage).name, entry["ranges"][stage], target,
                           nodes_to_exclude=exclusions.excluded(stage))
        (out / SENSITIVITY_FILE).write_text(json.dumps(exclusions.to_dict(), indent=1) + "\n")
        data = fp32.derived(out, "int8")
        data["quantization"] = {
            **target.describe(),
            "tool": "onnxruntime.quantization.quantize_static",
            "calibration": {"method": config.method, "set_sha256": entry["calibration_set"]["sha256"],
                            "images": entry["calibration_set"]["images"],
                            "samples": entry["calibration_set"]["samples"], "settings": settings.to_dict(),
                            "from_cache": from_cache},
            "policy": config.policy.to_dict(),
            "float_nodes": {"coordinate": exclusions.coordinate, "phase": exclusions.phase,
                            "measured": exclusions.measured},
            "joint_score": exclusions.rounds[-1] if exclusions.rounds else None,
            "sensitivity_report": SENSITIVITY_FILE,
            "fp32_sha256": shas,
        }
        write_manifest(out, data)
    return out_dir


def _calibrate(graphs: dict[str, Path], calib: Path, config: Int8Config, settings: CalibrationSettings,
               target, say: Callable[[str], None]) -> dict:
    cset = build_calibration_set(calib, settings)
    say(f"calibration: {len(cset.samples)} crops from {len(cset.files)} images in {calib} ({config.method})")
    method = method_of(config.method)
    backbone, upsampler = contract.BACKBONE.name, contract.UPSAMPLER.name
    ranges = {backbone: collect_ranges(graphs[backbone], BackboneReader(cset.samples), method),
              upsampler: collect_ranges(graphs[upsampler], UpsamplerReader.from_backbone(
                  graphs[backbone], cset.samples, config.threads), method)}
    exclusions = choose_exclusions(graphs, ranges, target, cset.samples, config.policy, config.threads, say)
    return {"ranges": ranges, "exclusions": exclusions.to_dict(),
            "calibration_set": {"sha256": cset.digest, "images": len(cset.files), "samples": len(cset.samples),
                                "folder": str(calib)},
            "method": config.method, "target": config.target}



