"""TensorRT backend: lazy engine loaders and a runner on torch CUDA tensors.

I/O buffers are torch CUDA tensors (no pycuda / cuda-python dependency): inputs are copied
to the GPU on the runner's own stream, their addresses handed to the execution context,
and ``execute_async_v3`` is enqueued on the same stream. Every request is first checked
against the engine's optimization profile, so a shape the engine cannot run fails with a
one-line error naming the input, axis, value and allowed range instead of a TensorRT log.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from asisr.errors import UserError
from asisr.export.engine_cache import EngineKey, stale_reasons
from asisr.export.manifest import STAGES
from asisr.export.profiles import check_request
from asisr.runtime.backends.base import Runner


class EngineFromBytes:
    """Loader: ``EngineFromBytes(data)()`` -> ``tensorrt.ICudaEngine``; ``data`` may be a callable."""

    def __init__(self, data: bytes | Callable[[], bytes]):
        self.data = data
        self.runtime = None  # an engine must not outlive the runtime that deserialized it

    def __call__(self):
        from asisr.export.tensorrt import require_tensorrt

        trt = require_tensorrt()
        data = self.data() if callable(self.data) else self.data
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        engine = self.runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise UserError("TensorRT could not deserialize the engine (built by another TensorRT version or for "
                            "another GPU?); rebuild it with asisr-export --format tensorrt")
        return engine


class EngineFromPath(EngineFromBytes):
    """Loader for an engine file; with ``expected``, a stale or foreign engine is refused, never loaded."""

    def __init__(self, path: str | Path, expected: EngineKey | None = None):
        super().__init__(self._read)
        self.path = Path(path)
        self.expected = expected

    def _read(self) -> bytes:
        if self.expected is not None:
            reasons = stale_reasons(self.path, self.expected)
            if reasons:
                raise UserError(f"refusing TensorRT engine {self.path}: {reasons[0]}")
        if not self.path.is_file():
            raise UserError(f"TensorRT engine not found: {self.path}")
        return self.path.read_bytes()


def _torch_dtype(trt, dtype):
    import torch

    table = {"FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16, "INT32": torch.int32,
             "INT64": torch.int64, "INT8": torch.int8, "UINT8": torch.uint8, "BOOL": torch.bool}
    for name, torch_dtype in table.items():
        if getattr(trt.DataType, name, None) == dtype:
            return torch_dtype
    raise UserError(f"TensorRT I/O tensor type {dtype} is not supported by asisr")


class TrtRunner(Runner):
    """Runs one stage engine; ``infer`` takes and returns numpy like every other runner."""

    def __init__(self, engine_loader: Callable, stage: str, name: str | None = None, device: str = "cuda"):
        super().__init__()
        self.engine_loader = engine_loader
        self.stage = stage
        self.name = name or f"tensorrt:{stage}"
        self.device = device
        self.engine = self.context = self.stream = None

    def activate_impl(self) -> None:
        import torch

        from asisr.export.tensorrt import require_tensorrt

        trt = require_tensorrt()
        if not torch.cuda.is_available():
            raise UserError("the tensorrt backend needs a CUDA GPU, and torch.cuda.is_available() is False")
        self.engine = self.engine_loader()
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise UserError(f"{self.name}: TensorRT could not create an execution context (out of GPU memory?)")
        self.stream = torch.cuda.Stream(device=self.device)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.dtypes = {n: _torch_dtype(trt, self.engine.get_tensor_dtype(n)) for n in names}
        self.ranges = {n: tuple(tuple(int(d) for d in s) for s in self.engine.get_tensor_profile_shape(n, 0))
                       for n in self.inputs}

    def deactivate_impl(self) -> None:
        self.context = self.engine = self.stream = None

    def profile_ranges(self) -> dict:
        """Input name -> (min, opt, max) shapes of the engine's profile 0."""
        return dict(self.ranges)

    def infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        check_request(self.stage, {n: np.shape(feeds[n]) for n in feeds}, self.ranges)
        with torch.cuda.stream(self.stream):
            inputs = {n: torch.from_numpy(np.ascontiguousarray(feeds[n])).to(self.device, dtype=self.dtypes[n])
                      for n in self.inputs}
            for n, t in inputs.items():
                if not self.context.set_input_shape(n, tuple(t.shape)):
                    raise UserError(f"{self.name}: TensorRT refused shape {tuple(t.shape)} for input {n!r}")
                self.context.set_tensor_address(n, t.data_ptr())
            unresolved = self.context.infer_shapes()
            if unresolved:
                raise UserError(f"{self.name}: TensorRT cannot infer output shapes (unset: {', '.join(unresolved)})")
            outputs = {}
            for n in self.outputs:
                outputs[n] = torch.empty(tuple(self.context.get_tensor_shape(n)), dtype=self.dtypes[n],
                                         device=self.device)
                self.context.set_tensor_address(n, outputs[n].data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError(f"{self.name}: TensorRT execution failed (see the TensorRT log)")
        self.stream.synchronize()  # inputs stay referenced until here
        return {n: t.float().cpu().numpy() for n, t in outputs.items()}


def open_trt_pipeline(directory: Path, cache_root: Path, device: str = "cuda"):
    """A ``Pipeline`` of TensorRT engines for an exported directory.

    Uses the engines the directory ships when they were built from its graphs for this
    TensorRT and GPU; otherwise (none shipped, or stale/foreign ones) builds engines into
    ``cache_root`` with the shipped profile or the default one, and says why.
    """
    from asisr.export.manifest import read_manifest
    from asisr.export.profiles import Profile, default_profile
    from asisr.export.tensorrt import cached_engines, current_environment, shipped_engines
    from asisr.models.descriptor import ModelDescriptor
    from asisr.runtime.pipeline import Pipeline

    env = current_environment()
    manifest = read_manifest(directory)
    descriptor = ModelDescriptor.from_dict(manifest.descriptor)
    engines, why = shipped_engines(directory, manifest, env)
    info = manifest.data.get("tensorrt") or {}
    if engines is not None:
        profile = Profile.from_dict(info["profile"])
    else:
        try:
            profile = Profile.from_dict(info["profile"]) if info.get("profile") else default_profile(descriptor)
        except UserError:
            profile = default_profile(descriptor)
        if info:
            warnings.warn(f"not using the TensorRT engines in {directory}: {why}", stacklevel=3)
        engines = cached_engines(directory, manifest, env, profile, cache_root)
    runners = [TrtRunner(EngineFromPath(engines[stage]), stage, device=device) for stage in STAGES]
    return Pipeline(*runners, descriptor, {
        "backend": "tensorrt", "model": manifest.model, "directory": str(directory), "manifest": manifest.data,
        "engines": {s: str(p) for s, p in engines.items()}, "profile": profile.spec(),
        "tile_limits": profile.limits(),
    })
