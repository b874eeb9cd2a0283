"""ONNX Runtime backend: a lazy session loader and a runner."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from asisr.atomic import atomic_path
from asisr.cache import cache_dir, cpu_fingerprint
from asisr.digest import sha256_file
from asisr.errors import UserError
from asisr.runtime.contract import StageSpec
from asisr.runtime.runner import Runner

if TYPE_CHECKING:
    from asisr.runtime.pipeline import Pipeline

# Execution providers by the short names the CLI accepts, in order of preference.
PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


def resolve_providers(names: list[str] | None, available: set[str] | None = None) -> list[str]:
    """Map short names (``cuda``, ``tensorrt``, ``cpu``) to installed ONNX Runtime providers.

    TensorRT is backed by CUDA (when installed) for the nodes it does not take, then CPU,
    as ONNX Runtime recommends; duplicates are dropped.
    """
    if available is None:
        import onnxruntime as ort

        available = set(ort.get_available_providers())
    names = names or ["cpu"]
    providers = []
    for n in names:
        full = PROVIDERS.get(n.lower(), n)
        if full not in available:
            raise UserError(f"ONNX Runtime execution provider {n!r} is not available here "
                            f"(installed: {', '.join(sorted(available))}); install onnxruntime-gpu for cuda/tensorrt")
        if full not in providers:
            providers.append(full)
    fallbacks = ["CUDAExecutionProvider"] if "TensorrtExecutionProvider" in providers else []
    for fallback in fallbacks + ["CPUExecutionProvider"]:  # for nodes a GPU provider does not take
        if fallback in available and fallback not in providers:
            providers.append(fallback)
    return providers


def tensorrt_ep_options(graph: str | Path) -> dict:
    """TensorRT EP options: engine and timing caches in asisr's cache, one folder per graph and ORT version.

    Without an engine cache the EP rebuilds its engines (minutes) in every session. ONNX
    Runtime keys cached engines by model path and node names, not by weights, so the folder
    is keyed by the graph's sha256: a re-exported model never picks up a stale engine.
    """
    import onnxruntime as ort

    root = cache_dir() / "ort-tensorrt" / f"ort{ort.__version__}"
    engines = root / sha256_file(graph)[:20]
    engines.mkdir(parents=True, exist_ok=True)
    return {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(engines),
            "trt_timing_cache_enable": True, "trt_timing_cache_path": str(root)}


class SessionFromOnnx:
    """Loader: ``SessionFromOnnx(path, threads=2)()`` -> ``onnxruntime.InferenceSession``.

    ``mem_arena`` / ``mem_pattern`` are ONNX Runtime's CPU memory arena and memory-pattern
    planning; both stay on (ORT's defaults: turning the arena off raised the per-run peak).
    What bounds memory across tiles is shrinking the backbone's arena after each run
    (``OnnxrtRunner.shrink_arena``).

    ``graph_sha256`` (the manifest's) turns on the optimised-graph cache for CPU sessions:
    ONNX Runtime's full graph optimisation took 0.07-0.11 s per graph of the default model,
    a third of ``asisr-run``'s fixed cost, on every start; the optimised graph is saved once
    and later sessions load it with optimisation off (0.012 s). The result depends on the CPU
    (ORT's NCHWc layout transform), so the key holds the graph, ONNX Runtime's version and the
    CPU's model and flags; an unreadable entry is rebuilt.

    ``profile_prefix`` turns on ONNX Runtime's per-node profiler (``enable_profiling``): the
    session writes ``PREFIX_<date>.json`` when ``end_profiling()`` is called. For benchmarks
    that say where the time goes (``benchmarks/liif_roofline.py``); off by default.
    """

    def __init__(self, path: str | Path, providers: list[str] | None = None, threads: int | None = None,
                 optimization: str = "all", mem_arena: bool = True, mem_pattern: bool = True,
                 graph_sha256: str | None = None, profile_prefix: str | None = None):
        self.path = Path(path)
        self.providers = providers
        self.threads = threads
        self.optimization = optimization
        self.mem_arena = mem_arena
        self.mem_pattern = mem_pattern
        self.graph_sha256 = graph_sha256
        self.profile_prefix = profile_prefix
        self.loaded_from: Path | None = None  # the file the last session was built from

    def optimized_cache_path(self, ort_version: str) -> Path:
        return (cache_dir() / "ort-optimized" /
                f"{self.graph_sha256[:24]}-ort{ort_version}-{cpu_fingerprint()}.onnx")  # type: ignore[index]

    def __call__(self):
        import onnxruntime as ort

        providers = [(p, tensorrt_ep_options(self.path)) if p == "TensorrtExecutionProvider" else p
                     for p in resolve_providers(self.providers)]
        cached = None
        if self.graph_sha256 and self.optimization == "all" and providers == ["CPUExecutionProvider"]:
            cached = self.optimized_cache_path(ort.__version__)
            if cached.is_file():
                try:
                    session = self._session(ort, cached, "disable", providers)
                    self.loaded_from = cached
                    return session
                except Exception:  # a truncated or foreign entry: rebuild it below
                    cached.unlink(missing_ok=True)
        try:
            if cached is None:
                session = self._session(ort, self.path, self.optimization, providers)
            else:
                session = self._build_cached(ort, cached, providers)
        except Exception as e:  # onnxruntime raises its own exception types for bad graphs
            raise UserError(f"cannot load ONNX graph {self.path}: {str(e).splitlines()[0]}") from None
        self.loaded_from = self.path
        return session

    def _build_cached(self, ort, cached: Path, providers):
        """A session of the original graph that also writes its optimised form into the cache, atomically."""
        cached.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cached) as tmp:
            return self._session(ort, self.path, self.optimization, providers, save_to=tmp)

    def _session(self, ort, path: Path, optimization: str, providers, save_to: Path | None = None):
        opts = ort.SessionOptions()
        opts.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[optimization]
        if self.threads:
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
        opts.enable_cpu_mem_arena = self.mem_arena
        opts.enable_mem_pattern = self.mem_pattern
        opts.log_severity_level = 3
        if self.profile_prefix:
            opts.enable_profiling = True
            opts.profile_file_prefix = self.profile_prefix
        if save_to is not None:
            opts.optimized_model_filepath = str(save_to)
        return ort.InferenceSession(str(path), sess_options=opts, providers=providers)


class OnnxrtRunner(Runner):
    """Runs one ONNX Runtime session.

    Releasing memory after runs (``release_memory_after_runs``) returns the CPU arena's unused
    chunks to the OS at the end of every run. Without it a session keeps its arena grown to its largest input (plus every extension
    chunk, e.g. after a small warm-up call) for its lifetime. ``Upscaler`` turns it on for the
    backbone, whose tiles are few and large: on the bundled LIIF a tiled 1000x560 -> 2000x1120
    upscale then peaked 776 MiB above the process baseline instead of 1132 MiB (shrinking
    both stages: 588 MiB, but the upsampler runs hundreds of small tiles, and re-faulting its
    working set each time added 21 s of system CPU time to a 285 s 4K upscale).
    """

    backend = "onnxruntime"

    def __init__(self, session_loader, stage: StageSpec, name: str | None = None):
        super().__init__(stage, name)
        self.session_loader = session_loader
        self.session = None
        self.shrink_arena = False
        self._run_options: dict[bool, object] = {}

    def release_memory_after_runs(self, enabled: bool) -> None:
        self.shrink_arena = bool(enabled)

    def activate_impl(self) -> None:
        import onnxruntime as ort

        self.session = self.session_loader()
        self.output_names = [o.name for o in self.session.get_outputs()]
        wrong = self.stage.check_names([i.name for i in self.session.get_inputs()], self.output_names,
                                       f"ONNX graph {getattr(self.session_loader, 'path', self.name)}")
        if wrong:
            self.session = None
            raise UserError(wrong)
        plain, shrinking = ort.RunOptions(), ort.RunOptions()
        arena = getattr(self.session_loader, "mem_arena", True)  # shrinking a session without one is an error
        if arena and "CPUExecutionProvider" in self.session.get_providers():
            shrinking.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        self._run_options = {False: plain, True: shrinking}

    def deactivate_impl(self) -> None:
        self.session = None

    def infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.session.run(self.output_names, {k: np.ascontiguousarray(feeds[k], dtype=np.float32)
                                                    for k in self.stage.input_names},
                                self._run_options[bool(self.shrink_arena)])
        return dict(zip(self.output_names, outs))


def open_onnx_pipeline(directory: str | Path, threads: int | None = None,
                       providers: list[str] | None = None, profile_prefix: str | None = None) -> "Pipeline":
    """A ``Pipeline`` of ONNX Runtime sessions for an exported directory (its manifest verified first).

    ``profile_prefix``: profile both sessions (``SessionFromOnnx``), to ``PREFIX_<stage>_<date>.json``.
    """
    from asisr.runtime import contract
    from asisr.runtime.manifest import read_manifest
    from asisr.runtime.pipeline import Pipeline

    manifest = read_manifest(directory)
    backbone, upsampler = (OnnxrtRunner(SessionFromOnnx(manifest.graph_path(s.name), providers, threads,
                                                        graph_sha256=manifest.data["graphs"][s.name]["sha256"],
                                                        profile_prefix=profile_prefix and f"{profile_prefix}_{s.name}"),
                                        s)
                           for s in contract.STAGES)
    return Pipeline(backbone, upsampler, manifest.model_descriptor(), manifest.model, Path(directory), manifest,
                    files={s.name: manifest.graph_path(s.name) for s in contract.STAGES})
