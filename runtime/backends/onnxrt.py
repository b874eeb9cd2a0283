"""ONNX Runtime backend: a lazy session loader and a runner."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from asisr.errors import UserError
from asisr.runtime.backends.base import Runner

# Execution providers by the short names the CLI accepts, in order of preference.
PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


def resolve_providers(names: list[str] | None) -> list[str]:
    """Map short names (``cuda``, ``tensorrt``, ``cpu``) to installed ONNX Runtime providers."""
    import onnxruntime as ort

    names = names or ["cpu"]
    available = set(ort.get_available_providers())
    providers = []
    for n in names:
        full = PROVIDERS.get(n.lower(), n)
        if full not in available:
            raise UserError(f"ONNX Runtime execution provider {n!r} is not available here "
                            f"(installed: {', '.join(sorted(available))}); install onnxruntime-gpu for cuda/tensorrt")
        providers.append(full)
    if "CPUExecutionProvider" not in providers:
        providers.append("CPUExecutionProvider")  # fallback for nodes a GPU provider does not take
    return providers


class SessionFromOnnx:
    """Loader: ``SessionFromOnnx(path, threads=2)()`` -> ``onnxruntime.InferenceSession``."""

    def __init__(self, path: str | Path, providers: list[str] | None = None, threads: int | None = None,
                 optimization: str = "all"):
        self.path = Path(path)
        self.providers = providers
        self.threads = threads
        self.optimization = optimization

    def __call__(self):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[self.optimization]
        if self.threads:
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            return ort.InferenceSession(str(self.path), sess_options=opts, providers=resolve_providers(self.providers))
        except UserError:
            raise
        except Exception as e:  # onnxruntime raises its own exception types for bad graphs
            raise UserError(f"cannot load ONNX graph {self.path}: {str(e).splitlines()[0]}") from None


class OnnxrtRunner(Runner):
    def __init__(self, session_loader, name: str = "onnxruntime"):
        super().__init__()
        self.session_loader = session_loader
        self.name = name
        self.session = None

    def activate_impl(self) -> None:
        self.session = self.session_loader()
        self.output_names = [o.name for o in self.session.get_outputs()]

    def deactivate_impl(self) -> None:
        self.session = None

    def infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.session.run(self.output_names, {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in feeds.items()})
        return dict(zip(self.output_names, outs))
