"""Where a model comes from: a checkpoint file, an exported directory, or the bundled default.

``open_pipeline`` turns one of those plus a backend name into a ``Pipeline``. A checkpoint
asked to run on ONNX Runtime is exported once into a cache keyed by its sha256.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import asisr
from asisr.errors import UserError
from asisr.export.manifest import STAGES, read_manifest
from asisr.models.descriptor import ModelDescriptor
from asisr.runtime.backends.onnxrt import OnnxrtRunner, SessionFromOnnx
from asisr.runtime.backends.pyt import TorchRunner
from asisr.runtime.pipeline import Pipeline

BACKENDS = ("torch", "onnxruntime", "tensorrt")


def bundled_default() -> Path:
    """The checkpoint ``asisr-run`` uses when no ``--model`` is given."""
    from asisr.models.pretrained import default_checkpoint

    return default_checkpoint()


def cache_dir() -> Path:
    return Path(os.environ.get("ASISR_CACHE", Path.home() / ".cache" / "asisr"))


def _torch_pipeline(model, device: str, threads: int | None, channels_last: bool = False) -> Pipeline:
    """``channels_last``: the backbone runs in NHWC memory format (see ``TorchRunner``)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    backbone = TorchRunner(lambda: model.backbone, ["lr", "scale"], ["features"], device, name="torch:backbone",
                           channels_last=channels_last)
    upsampler = TorchRunner(lambda: model.upsampler, ["features", "scale", "rows", "cols"], ["rgb"], device,
                            name="torch:upsampler")
    return Pipeline(backbone, upsampler, model.descriptor, {"backend": "torch", "model": model.name})


def _onnx_pipeline(directory: Path, threads: int | None, providers: list[str] | None) -> Pipeline:
    manifest = read_manifest(directory)
    descriptor = ModelDescriptor.from_dict(manifest.descriptor)
    runners = [OnnxrtRunner(SessionFromOnnx(manifest.graph_path(stage), providers, threads),
                            name=f"onnxruntime:{stage}") for stage in STAGES]
    return Pipeline(*runners, descriptor, {"backend": "onnxruntime", "model": manifest.model,
                                           "directory": str(directory), "manifest": manifest.data})


def _trt_pipeline(path: Path) -> Pipeline:
    """TensorRT engines for an exported directory or a checkpoint (exported to ONNX first), built once and cached."""
    from asisr.export.tensorrt import current_environment
    from asisr.runtime.backends.trt import open_trt_pipeline

    current_environment()  # TensorRT and a GPU are checked before a checkpoint is exported
    directory = path if path.is_dir() else export_cached(path)
    return open_trt_pipeline(directory, cache_dir() / "tensorrt")


def _graph_code_digest() -> str:
    """sha256 of the sources an exported graph is traced from: the model package and the exporter."""
    import asisr.export.onnx
    import asisr.models

    files = sorted(Path(asisr.models.__file__).parent.glob("*.py")) + [Path(asisr.export.onnx.__file__)]
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode() + b"\0" + f.read_bytes())
    return digest.hexdigest()


def export_cached(checkpoint: Path):
    """Export a checkpoint to ONNX once; later calls reuse the cached directory.

    The key is the checkpoint's sha256 and the model code's (``_graph_code_digest``): the
    graph, the descriptor (halos, tile costs) and the configuration are all functions of the
    two, so an upgrade or a local edit of a model never reuses a stale export, and a hit
    needs no model load.
    """
    from asisr.export.onnx import DEFAULT_OPSET, export_onnx
    from asisr.models import load, sha256_file

    digest = sha256_file(checkpoint)
    code = _graph_code_digest()[:8]
    target = cache_dir() / "onnx" / f"{digest[:20]}-{code}-opset{DEFAULT_OPSET}-asisr{asisr.__version__}"
    if (target / "manifest.json").is_file():
        try:
            read_manifest(target)
            return target
        except UserError:
            pass  # a damaged cache entry is rebuilt
    export_onnx(load(checkpoint), target, overwrite=True)
    return target


def open_pipeline(model: str | Path | None = None, backend: str = "torch", threads: int | None = None,
                  providers: list[str] | None = None, device: str = "cpu") -> Pipeline:
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    path = bundled_default() if model is None else Path(model)
    if not path.exists():
        raise UserError(f"model not found: {path}")
    if backend == "tensorrt":
        return _trt_pipeline(path)
    if path.is_dir():
        if backend == "torch":
            raise UserError(f"{path} is an exported ONNX directory; the torch backend needs a checkpoint file")
        return _onnx_pipeline(path, threads, providers)
    if backend == "onnxruntime":
        return _onnx_pipeline(export_cached(path), threads, providers)
    from asisr.models import load

    return _torch_pipeline(load(path), device, threads)


def open_upscaler(model: str | Path | None = None, backend: str = "torch", threads: int | None = None,
                  tile: int | None = None, lr_tile: int | None = None, max_scale: float | None = None,
                  providers: list[str] | None = None, max_memory: int | None = None):
    """The one-call way in: ``with open_upscaler(ckpt, "onnxruntime") as up: up.upscale(img, 3)``.

    ``max_memory`` (bytes) bounds the tiles not fixed by ``tile`` / ``lr_tile`` (see ``Upscaler``).
    """
    from asisr.runtime.upscaler import Upscaler

    return Upscaler(open_pipeline(model, backend, threads, providers), tile=tile, lr_tile=lr_tile,
                    max_scale=max_scale, max_memory=max_memory)
