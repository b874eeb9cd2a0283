"""TensorRT engines as runners: lazy engine loaders and a runner on cuda-python device buffers.

As in TensorRT's Python samples, device memory, copies and the stream are cuda-python's
runtime API: inputs are copied to the GPU on the runner's own stream, their addresses handed
to the execution context, ``execute_async_v3`` enqueued on the same stream, outputs copied
back. Buffers are kept and grown, not reallocated per call. Every request is first checked
against the engine's optimization profile, so a shape the engine cannot run fails with one
line naming the input, axis, value and allowed range instead of a TensorRT log.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from asisr.errors import UserError
from asisr.runtime import contract
from asisr.runtime.backends.trt.engine_cache import EngineKey, stale_reasons
from asisr.runtime.backends.trt.environment import check_cuda, import_cudart, require_tensorrt
from asisr.runtime.backends.trt.profiles import check_request
from asisr.runtime.contract import StageSpec
from asisr.runtime.runner import Runner


class EngineFromBytes:
    """Loader: ``EngineFromBytes(data)()`` -> ``tensorrt.ICudaEngine``; ``data`` may be a callable."""

    def __init__(self, data: bytes | Callable[[], bytes]):
        self.data = data
        self.runtime = None  # an engine must not outlive the runtime that deserialized it

    def __call__(self):
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


def numpy_dtype(trt, dtype) -> np.dtype:
    """The numpy type of a TensorRT I/O tensor type."""
    table = {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32, "INT64": np.int64, "INT8": np.int8,
             "UINT8": np.uint8, "BOOL": np.bool_}
    for name, np_dtype in table.items():
        if getattr(trt.DataType, name, None) == dtype:
            return np.dtype(np_dtype)
    raise UserError(f"TensorRT I/O tensor type {dtype} is not supported by asisr")


class DeviceBuffer:
    """One growable block of device memory (cudaMalloc'd, freed on ``free``)."""

    def __init__(self, cudart):
        self.cudart = cudart
        self.ptr = 0
        self.nbytes = 0

    def reserve(self, nbytes: int) -> int:
        if nbytes > self.nbytes:
            self.free()
            self.ptr = int(check_cuda(self.cudart.cudaMalloc(max(nbytes, 1)), "cudaMalloc"))
            self.nbytes = nbytes
        return self.ptr

    def free(self) -> None:
        if self.ptr:
            check_cuda(self.cudart.cudaFree(self.ptr), "cudaFree")
        self.ptr, self.nbytes = 0, 0


class TrtRunner(Runner):
    """Runs one stage engine; ``infer`` takes and returns numpy like every other runner.

    ``tile_limits`` are the largest tiles the engine's profile accepts; the ``Upscaler``
    shrinks its tiles to fit them.
    """

    backend = "tensorrt"

    def __init__(self, engine_loader: Callable, stage: StageSpec, name: str | None = None, tile_limits=None):
        super().__init__(stage, name)
        self.engine_loader = engine_loader
        self.tile_limits = tile_limits
        self.engine = self.context = self.stream = self.cudart = None
        self.buffers: dict[str, DeviceBuffer] = {}

    def activate_impl(self) -> None:
        trt = require_tensorrt()
        cudart, why = import_cudart()
        if cudart is None:
            raise UserError(f"the tensorrt backend needs cuda-python: {why}")
        self.cudart = cudart
        self.engine = self.engine_loader()
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise UserError(f"{self.name}: TensorRT could not create an execution context (out of GPU memory?)")
        self.stream = check_cuda(cudart.cudaStreamCreate(), "cudaStreamCreate")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        wrong = self.stage.check_names(self.inputs, self.outputs, f"{self.name} engine")
        if wrong:
            raise UserError(wrong)
        self.dtypes = {n: numpy_dtype(trt, self.engine.get_tensor_dtype(n)) for n in names}
        self.ranges = {n: tuple(tuple(int(d) for d in s) for s in self.engine.get_tensor_profile_shape(n, 0))
                       for n in self.inputs}
        self.buffers = {n: DeviceBuffer(cudart) for n in names}

    def deactivate_impl(self) -> None:
        for buffer in self.buffers.values():
            buffer.free()
        if self.stream is not None:
            check_cuda(self.cudart.cudaStreamDestroy(self.stream), "cudaStreamDestroy")
        self.buffers = {}
        self.context = self.engine = self.stream = None

    def profile_ranges(self) -> dict:
        """Input name -> (min, opt, max) shapes of the engine's profile 0."""
        return dict(self.ranges)

    def infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart = self.cudart
        check_request(self.stage.name, {n: np.shape(feeds[n]) for n in feeds}, self.ranges)
        host_inputs = {n: np.ascontiguousarray(feeds[n], dtype=self.dtypes[n]) for n in self.inputs}
        to_device, to_host = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for n, array in host_inputs.items():
            if not self.context.set_input_shape(n, array.shape):
                raise UserError(f"{self.name}: TensorRT refused shape {array.shape} for input {n!r}")
            ptr = self.buffers[n].reserve(array.nbytes)
            check_cuda(cudart.cudaMemcpyAsync(ptr, array.ctypes.data, array.nbytes, to_device, self.stream),
                       "cudaMemcpyAsync")
            self.context.set_tensor_address(n, ptr)
        unresolved = self.context.infer_shapes()
        if unresolved:
            raise UserError(f"{self.name}: TensorRT cannot infer output shapes (unset: {', '.join(unresolved)})")
        outputs = {}
        for n in self.outputs:
            outputs[n] = np.empty(tuple(self.context.get_tensor_shape(n)), dtype=self.dtypes[n])
            self.context.set_tensor_address(n, self.buffers[n].reserve(outputs[n].nbytes))
        if not self.context.execute_async_v3(int(self.stream)):
            raise RuntimeError(f"{self.name}: TensorRT execution failed (see the TensorRT log)")
        for n, array in outputs.items():
            check_cuda(cudart.cudaMemcpyAsync(array.ctypes.data, self.buffers[n].ptr, array.nbytes, to_host,
                                              self.stream), "cudaMemcpyAsync")
        check_cuda(cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")  # host arrays live until here
        return {n: a.astype(np.float32, copy=False) for n, a in outputs.items()}


def open_trt_pipeline(directory: Path, cache_root: Path):
    """A ``Pipeline`` of TensorRT engines for an exported directory.

    Uses the engines the directory ships when they were built from its graphs for this
    TensorRT and GPU; otherwise (none shipped, or stale/foreign ones) builds engines into
    ``cache_root`` with the shipped profile or the default one, and says why.
    """
    from asisr.runtime.backends.trt.builder import cached_engines, shipped_engines
    from asisr.runtime.backends.trt.environment import current_environment
    from asisr.runtime.backends.trt.profiles import Profile, default_profile
    from asisr.runtime.manifest import read_manifest
    from asisr.runtime.pipeline import Pipeline

    env = current_environment()
    manifest = read_manifest(directory)
    descriptor = manifest.model_descriptor()
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
    backbone, upsampler = (TrtRunner(EngineFromPath(engines[s.name]), s, tile_limits=profile.limits())
                           for s in contract.STAGES)
    return Pipeline(backbone, upsampler, descriptor, manifest.model, Path(directory), manifest,
                    files={s: Path(p) for s, p in engines.items()})
