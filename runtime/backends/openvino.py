"""OpenVINO backend: a lazy compiled-model loader and a runner (torch-free).

Why it exists: ONNX Runtime's CPU provider computes in fp32 only, while the CPUs asisr runs on
have bf16 units (``avx512_bf16``, Intel's AMX tiles) and int8 dot products (VNNI). OpenVINO's
CPU plugin uses them for the same fp32 ONNX graphs when told an inference precision, and runs
the INT8 Q/DQ exports on VNNI / AMX-INT8.

Compiled models are cached across processes in asisr's cache (OpenVINO's ``CACHE_DIR``), one
folder per graph sha256, OpenVINO version and CPU (like ONNX Runtime's optimised-graph cache):
a compile of the default model's upsampler is paid once per machine, not per run.

Dynamic shapes: the graphs keep their dynamic axes and the CPU plugin handles each new input
shape without recompiling the model (it re-runs shape inference and may pick new kernels);
``benchmarks/openvino_profile.py`` measures what a first-seen shape costs.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from asisr.cache import cache_dir, cpu_fingerprint
from asisr.errors import UserError
from asisr.runtime.contract import StageSpec
from asisr.runtime.runner import Runner

if TYPE_CHECKING:
    from asisr.runtime.pipeline import Pipeline

OPENVINO_EXTRA = "pip install openvino"  # a base dependency; missing only where it was left out
# asisr's precision names -> OpenVINO's INFERENCE_PRECISION_HINT values. An int8 graph (Q/DQ
# export) is compiled at the f32 hint: its quantised nodes run in int8 whatever the hint says.
INFERENCE_PRECISION = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}


@functools.lru_cache(maxsize=1)
def available() -> bool:
    """OpenVINO importable (without importing it: that costs ~0.2 s)."""
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def require_openvino() -> None:
    if not available():
        raise UserError(f"the openvino backend needs OpenVINO, which is not installed ({OPENVINO_EXTRA})")


@functools.lru_cache(maxsize=1)
def core():
    """One ``openvino.Core`` per process (it holds the plugin; creating one costs ~50 ms)."""
    import openvino as ov

    return ov.Core()


class CompiledFromOnnx:
    """Loader: ``CompiledFromOnnx(path, precision="bf16", threads=2)()`` -> ``openvino.CompiledModel``.

    ``graph_sha256`` (the manifest's) turns on OpenVINO's model cache under asisr's cache folder;
    a read-only or foreign cache only costs the compile, never the run.
    """

    def __init__(self, path: str | Path, precision: str = "fp32", threads: int | None = None,
                 graph_sha256: str | None = None):
        if precision not in INFERENCE_PRECISION:
            raise UserError(f"unknown precision {precision!r}; choose one of: {', '.join(INFERENCE_PRECISION)}")
        self.path = Path(path)
        self.precision = precision
        self.threads = threads
        self.graph_sha256 = graph_sha256

    def cache_path(self, ov_version: str) -> Path:
        return cache_dir() / "openvino" / f"{self.graph_sha256[:24]}-ov{ov_version}-{cpu_fingerprint()}"  # type: ignore[index]

    def config(self, ov_version: str) -> dict:
        config = {"INFERENCE_PRECISION_HINT": INFERENCE_PRECISION[self.precision],
                  "PERFORMANCE_HINT": "LATENCY"}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = int(self.threads)
        if self.graph_sha256:
            folder = self.cache_path(ov_version)
            try:
                folder.mkdir(parents=True, exist_ok=True)
                config["CACHE_DIR"] = str(folder)
            except OSError:
                pass  # an unwritable cache: compile every time
        return config

    def __call__(self):
        import openvino as ov

        try:
            return core().compile_model(str(self.path), "CPU", self.config(ov.get_version().split("-")[0]))
        except Exception as e:  # OpenVINO raises RuntimeError with a multi-line trace for bad graphs
            raise UserError(f"cannot compile ONNX graph {self.path} with OpenVINO: {str(e).strip().splitlines()[0]}") from None


class OpenvinoRunner(Runner):
    """Runs one compiled model through one infer request (one call at a time, like a session).

    Inputs are shared with OpenVINO (no copy); outputs are copied out, since the request reuses
    its output buffers on the next call.
    """

    backend = "openvino"
    # ONNX Runtime's per-unit numbers with a larger fixed pool (the CPU plugin keeps its working
    # memory between calls, like ONNX Runtime's kept arena). Not fitted to OpenVINO: asisr-bench's
    # peak RSS on the bundled LIIF with the 1 GiB budget (2026-12-08, AMD EPYC) was 884 MiB for
    # OpenVINO fp32 against 703 for ONNX Runtime on Set5 x4, 1054 against 964 on frame_x4, and
    # 695 / 840 MiB in bf16.
    memory_model = (24.0, 8192.0, 56.0, 32 << 20)

    def __init__(self, model_loader: CompiledFromOnnx, stage: StageSpec, name: str | None = None):
        super().__init__(stage, name)
        self.model_loader = model_loader
        self.compiled = None
        self.request = None

    @property
    def precision(self) -> str:
        return self.model_loader.precision

    def activate_impl(self) -> None:
        self.compiled = self.model_loader()
        inputs = [self._port_name(p, self.stage.input_names) for p in self.compiled.inputs]
        self.output_names = [self._port_name(p, self.stage.output_names) for p in self.compiled.outputs]
        wrong = self.stage.check_names(inputs, self.output_names, f"ONNX graph {self.model_loader.path}")
        if wrong:
            self.compiled = None
            raise UserError(wrong)
        self.request = self.compiled.create_infer_request()

    @staticmethod
    def _port_name(port, expected: tuple[str, ...]) -> str:
        """The ONNX name of a port: OpenVINO gives a tensor all the names it had (an output may
        also carry its producer's), so the stage's own name is picked where the port has it."""
        names = port.get_names()
        return next((n for n in expected if n in names), port.get_any_name())

    def deactivate_impl(self) -> None:
        self.request = None
        self.compiled = None

    def infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.request.infer({k: np.ascontiguousarray(feeds[k], dtype=np.float32) for k in self.stage.input_names},
                           share_inputs=True)
        return {name: np.array(self.request.get_tensor(name).data, dtype=np.float32, copy=True)
                for name in self.output_names}


def stage_precision(descriptor, stage: str, precision: str) -> str:
    """A stage's precision: a reduced float precision only for the stages the model allows it in
    (``descriptor.extra["reduced_precision_stages"]``; absent: every stage)."""
    allowed = (descriptor.extra or {}).get("reduced_precision_stages")
    if precision in ("bf16", "fp16") and allowed is not None and stage not in allowed:
        return "fp32"
    return precision


def open_openvino_pipeline(directory: str | Path, threads: int | None = None, precision: str = "fp32") -> "Pipeline":
    """A ``Pipeline`` of OpenVINO compiled models for an exported directory (its manifest verified first).

    ``precision``: the inference precision of an fp32 export (``fp32``, ``bf16``, ``fp16``); an int8
    export runs as ``int8``. Which precision a run should use is ``asisr.runtime.precision``'s choice.
    """
    from asisr.runtime import contract
    from asisr.runtime.manifest import read_manifest
    from asisr.runtime.pipeline import Pipeline

    require_openvino()
    manifest = read_manifest(directory)
    stored = manifest.precision
    if stored == "fp16":
        raise UserError(f"{directory} holds fp16 graphs (a GPU export); OpenVINO takes the fp32 export and runs it "
                        "at --precision fp16 itself")
    if stored == "int8" and precision not in ("int8", "fp32"):
        raise UserError(f"{directory} holds int8 graphs; they run at --precision int8")
    precision = "int8" if stored == "int8" else precision
    descriptor = manifest.model_descriptor()
    backbone, upsampler = (OpenvinoRunner(CompiledFromOnnx(manifest.graph_path(s.name),
                                                           stage_precision(descriptor, s.name, precision), threads,
                                                           graph_sha256=manifest.data["graphs"][s.name]["sha256"]), s)
                           for s in contract.STAGES)
    return Pipeline(backbone, upsampler, descriptor, manifest.model, Path(directory), manifest,
                    files={s.name: manifest.graph_path(s.name) for s in contract.STAGES}, run_precision=precision)
