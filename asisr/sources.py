"""Where a model comes from: a checkpoint file, an exported directory, or the bundled default.

``open_pipeline`` turns one of those plus a backend name into a ``Pipeline``. Exported
directories (the bundled default ships one) run on ONNX Runtime or TensorRT without torch;
a checkpoint needs PyTorch (``asisr[torch]``): it runs on the torch backend, or is exported
once into a cache keyed by its sha256 and the model code's.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import asisr
from asisr import weights
from asisr.cache import cache_dir
from asisr.errors import UserError
from asisr.locks import claim_for
from asisr.runtime.pipeline import Pipeline

BACKENDS = ("auto", "openvino", "onnxruntime", "torch", "tensorrt")
DEFAULT_BACKEND = "auto"  # OpenVINO where installed, else ONNX Runtime (asisr.runtime.precision)
DEFAULT_PRECISION = "auto"
TORCH_EXTRA = "pip install 'asisr[torch]'"


def require_torch(what: str, import_it: bool = True) -> None:
    """One line naming the extra to install, instead of an ImportError deep inside a model.

    ``import_it=False`` only looks for the package (no 1-2 s import), for paths that may not need it.
    """
    import importlib.util

    try:
        if not import_it:
            if importlib.util.find_spec("torch") is None:
                raise ImportError("torch")
            return
        import torch  # noqa: F401
    except ImportError:
        raise UserError(f"{what} needs PyTorch, which is not installed ({TORCH_EXTRA}); exported model "
                        "directories run without it") from None


def is_exported_dir(path: Path) -> bool:
    return path.is_dir()


def check_checkpoint_file(path: Path) -> None:
    """A file that cannot be a checkpoint is said to be so before torch is looked for or loaded.

    ``torch.save`` writes a zip archive (or, in old versions, a pickle stream); anything else is
    neither a checkpoint nor an exported model, whatever is installed.
    """
    from asisr.models.canonical import looks_like_torch_save  # torch-free

    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError as e:
        raise UserError(f"cannot read model {path}: {e.strerror or e}") from None
    if not looks_like_torch_save(head):
        raise UserError(f"{path} is not a checkpoint or an exported model directory asisr can read "
                        f"(a checkpoint is a torch.save file, an exported model a folder with manifest.json)")


def bundled_default(backend: str = "torch") -> Path:
    """What runs when no model is given: the default's exported graphs, or its checkpoint for torch."""
    return weights.default_checkpoint() if backend == "torch" else weights.default_onnx_dir()


def bundled_by_name(name: str, backend: str) -> Path:
    """``--model NAME`` for a model that ships with asisr: its exported graphs where they ship (no torch
    needed), else its checkpoint. A path that exists always wins over a name."""
    if backend != "torch" and name in weights.BUNDLED_ONNX:
        return weights.bundled_onnx_dir(name)
    return weights.bundled_path(name)


def resolve_model(model: str | Path | None, backend: str) -> Path:
    """The file or folder ``model`` stands for: a path, a bundled model's name, or None for the default."""
    if model is None:
        return bundled_default(backend)
    path = Path(model)
    if not path.exists() and str(model) in weights.BUNDLED:
        return bundled_by_name(str(model), backend)
    if not path.exists():
        raise UserError(f"model not found: {path} (nor a bundled model: {', '.join(sorted(weights.BUNDLED))})")
    return path


def _graph_code_digest() -> str:
    """sha256 of the sources an exported graph is traced from: the model package and the exporter.

    The files are found beside this package, not imported: a cache hit needs no torch.
    """
    root = Path(asisr.__file__).parent
    files = sorted((root / "models").glob("*.py")) + [root / "export" / "__init__.py", root / "export" / "onnx.py"]
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode() + b"\0" + f.read_bytes())
    return digest.hexdigest()


def export_cached(checkpoint: Path) -> Path:
    """Export a checkpoint to ONNX once; later calls reuse the cached directory.

    The key is the checkpoint's sha256 and the model code's (``_graph_code_digest``): the
    graph, the descriptor (halos, tile costs) and the configuration are all functions of the
    two, so an upgrade or a local edit of a model never reuses a stale export, and a hit
    needs no model load. An export takes seconds, so it says so on stderr (a hit is silent).
    Processes exporting the same entry at once take turns on a lock file beside it: the first
    exports, the others wait and reuse its entry, which appears whole (``export_onnx``).
    """
    what = f"running checkpoint {checkpoint} on ONNX Runtime (it is exported first)"
    require_torch(what, import_it=False)  # imported only for an export: a cache hit runs without loading it
    from asisr.digest import sha256_file
    from asisr.export import DEFAULT_OPSET
    from asisr.runtime.manifest import read_manifest

    digest = sha256_file(checkpoint)
    code = _graph_code_digest()[:8]
    target = cache_dir() / "onnx" / f"{digest[:20]}-{code}-opset{DEFAULT_OPSET}-asisr{asisr.__version__}"

    def cached() -> bool:
        if not (target / "manifest.json").is_file():
            return False
        try:
            read_manifest(target)
            return True
        except UserError:
            return False  # a damaged cache entry is rebuilt

    if cached():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the export cache {target.parent}: {e.strerror or e} "
                        "(set ASISR_CACHE to a writable folder)") from None
    lock = claim_for(target)
    if not lock.acquire(blocking=False):
        print(f"waiting for another asisr process exporting {checkpoint} to ONNX ...", file=sys.stderr, flush=True)
        lock.acquire()
    try:
        if cached():  # the process we waited for exported it
            return target
        require_torch(what)
        from asisr.export.onnx import export_onnx
        from asisr.models import load

        model = load(checkpoint)  # a bad checkpoint fails here, with its one error line and nothing before it
        print(f"exporting {checkpoint} to ONNX once (cached in {target}) ...", file=sys.stderr, flush=True)
        export_onnx(model, target, overwrite=True)
    finally:
        lock.release()
    return target


def size_rule_of(model: str | Path | None, backend: str = DEFAULT_BACKEND) -> str:
    """The model's size rule (``ModelDescriptor.size_rule``), for planning output sizes before it runs.

    An exported directory (a bundled model's included) says it in its manifest; a checkpoint is
    detected and built without its weights (with PyTorch, which running it needs anyway). A model
    that cannot be read here plans with ``round``: its error comes when it is opened, after the
    checks of inputs and outputs that need no model."""
    try:
        path = resolve_model(model, "torch" if backend == "torch" else "auto")
        if is_exported_dir(path):
            from asisr.runtime.manifest import read_manifest

            return read_manifest(path, verify=False).model_descriptor().size_rule
        check_checkpoint_file(path)
        require_torch(f"checkpoint {path}", import_it=False)
        from asisr.models.checkpoint import read_canonical
        from asisr.models.registry import create, detect

        found = detect(read_canonical(path))
        return create(found.name, **found.kwargs).descriptor.size_rule
    except UserError:
        return "round"


def pick_backend(backend: str, providers: list[str] | None = None) -> str:
    """``auto`` -> ``openvino`` where it is installed, else ``onnxruntime`` (and always ``onnxruntime``
    when ONNX Runtime execution providers are named: they are ONNX Runtime's)."""
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if backend == "auto" and providers:
        return "onnxruntime"
    from asisr.runtime.backends.openvino import available
    from asisr.runtime.precision import resolve_backend

    return resolve_backend(backend, available())


def open_pipeline(model: str | Path | None = None, backend: str = DEFAULT_BACKEND, threads: int | None = None,
                  providers: list[str] | None = None, device: str = "cpu",
                  precision: str = DEFAULT_PRECISION) -> Pipeline:
    """A pipeline for ``model`` (checkpoint, exported directory, or None for the bundled default) on ``backend``.

    ``backend`` and ``precision`` may be ``auto`` (``asisr.runtime.precision``): the pipeline's
    ``precision_reason`` then says what was chosen and why.
    """
    from asisr.runtime.precision import check_precision, choose

    check_precision(precision)
    backend = pick_backend(backend, providers)
    path = resolve_model(model, backend)
    if not is_exported_dir(path):
        check_checkpoint_file(path)
    if backend == "torch":
        if is_exported_dir(path):
            raise UserError(f"{path} is an exported ONNX directory; the torch backend needs a checkpoint file")
        require_torch(f"the torch backend (checkpoint {path})")
        choice = choose(precision, backend)  # refused before the checkpoint is loaded
        from asisr.models import load
        from asisr.runtime.backends.pyt import torch_pipeline

        pipeline = torch_pipeline(load(path), device, threads)
    else:
        from asisr.runtime.manifest import read_manifest

        if backend == "tensorrt":
            from asisr.runtime.backends.trt.environment import current_environment

            current_environment()  # TensorRT and a GPU are checked before a checkpoint is exported
        directory = path if is_exported_dir(path) else export_cached(path)
        manifest = read_manifest(directory, verify=False)
        choice = choose(precision, backend, manifest.precision, manifest.precision_drops)  # before sessions or engines
        if backend == "tensorrt":
            from asisr.runtime.backends.trt.runner import open_trt_pipeline

            pipeline = open_trt_pipeline(directory, cache_dir() / "tensorrt")
        elif backend == "openvino":
            from asisr.runtime.backends.openvino import open_openvino_pipeline

            pipeline = open_openvino_pipeline(directory, threads, choice.precision)
        else:
            from asisr.runtime.backends.onnxrt import open_onnx_pipeline

            pipeline = open_onnx_pipeline(directory, threads, providers)
    pipeline.precision_reason = choice.reason
    return pipeline


def open_upscaler(model: str | Path | None = None, backend: str = DEFAULT_BACKEND, threads: int | None = None,
                  tile: int | None = None, lr_tile: int | None = None, max_scale: float | None = None,
                  providers: list[str] | None = None, max_memory: int | None = None,
                  precision: str = DEFAULT_PRECISION):
    """The one-call way in: ``with open_upscaler(ckpt) as up: up.upscale(img, 3)``.

    ``max_memory`` (bytes) bounds the tiles not fixed by ``tile`` / ``lr_tile`` (see ``Upscaler``);
    ``precision``: ``auto`` (the fastest native precision within the model's measured budget),
    ``fp32``, ``bf16``, ``fp16`` or ``int8`` (``asisr.runtime.precision``).
    """
    from asisr.runtime.upscaler import Upscaler

    return Upscaler(open_pipeline(model, backend, threads, providers, precision=precision), tile=tile, lr_tile=lr_tile,
                    max_scale=max_scale, max_memory=max_memory)
