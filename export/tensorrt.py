"""``asisr-export --format tensorrt``: an exported directory with ONNX graphs and their TensorRT engines.

The TensorRT work itself (environment, profiles, builder, engine cache) lives in
``asisr.runtime.backends.trt``; this module only lays out and publishes the directory.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from asisr.errors import UserError
from asisr.export.publish import check_destination, staging_dir
from asisr.runtime.backends.trt.builder import BuildOptions, add_engines, default_timing_cache
from asisr.runtime.backends.trt.environment import current_environment
from asisr.runtime.backends.trt.profiles import default_profile, parse_profile
from asisr.runtime.manifest import read_manifest


def export_tensorrt(out: str | Path, *, onnx_dir: str | Path | None = None,
                    export_graphs: Callable[[Path], object] | None = None, descriptor=None,
                    profile_text: str | None = None, options: BuildOptions = BuildOptions(),
                    overwrite: bool = False) -> Path:
    """Write ``out``: ONNX graphs, their engines and a manifest recording both.

    The graphs are copied from ``onnx_dir`` (an exported directory) or written by
    ``export_graphs(directory)`` (e.g. ``export_onnx`` of a model, in any precision) for a
    model described by ``descriptor``. TensorRT and the GPU are checked before anything is
    exported; everything is staged in a sibling temporary directory and renamed into place,
    so ``out`` appears complete or not at all.
    """
    out = Path(out)
    if (onnx_dir is None) == (export_graphs is None):
        raise UserError("give either a checkpoint or an exported ONNX directory (--onnx-dir), not both")
    check_destination(out, overwrite)  # before TensorRT is looked for or anything is exported
    source = None
    if onnx_dir is not None:
        if out.resolve() == Path(onnx_dir).resolve():
            raise UserError("--out must differ from --onnx-dir (the ONNX directory is read, not modified)")
        source = read_manifest(onnx_dir)  # verifies the graphs before any work
        descriptor = source.model_descriptor()
    profile = parse_profile(profile_text, default_profile(descriptor))
    env = current_environment()
    with staging_dir(out, overwrite) as staging:
        work = staging / "out"
        if source is not None:
            shutil.copy2(source.path, work / source.path.name)
            for stage in source.data["graphs"]:
                shutil.copy2(source.graph_path(stage), work / source.graph_path(stage).name)
        else:
            work.rmdir()  # export_graphs writes a new directory
            export_graphs(work)
        if options.timing_cache is None:
            options = replace(options, timing_cache=default_timing_cache(env))
        add_engines(work, profile, options, env)
    return out
