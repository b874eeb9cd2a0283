"""Is TensorRT usable here, and on which GPU: what every engine is tied to besides its graph.

Every entry point fails with one ``UserError`` line naming everything that is missing
(TensorRT, cuda-python, a GPU) before any work is done.
"""

from __future__ import annotations

from dataclasses import dataclass

from asisr.errors import UserError

INSTALL_HINT = "pip install 'asisr[tensorrt]' on a machine with an NVIDIA GPU"


@dataclass(frozen=True)
class TrtEnvironment:
    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "9.0"


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _import_tensorrt():
    """(module, None) or (None, why it is unavailable)."""
    try:
        import tensorrt as trt  # pyright: ignore[reportMissingImports]  (optional: asisr[tensorrt])
    except ImportError:
        return None, f"TensorRT is not installed ({INSTALL_HINT})"
    except Exception as e:  # a broken install: libnvinfer missing, CUDA libs mismatched
        return None, f"TensorRT is installed but cannot be loaded: {_first_line(e)}"
    return trt, None


def import_cudart():
    """(cuda-python's runtime module, None) or (None, why it is unavailable)."""
    try:
        from cuda.bindings import runtime as cudart  # pyright: ignore[reportMissingImports]  (asisr[tensorrt])
    except ImportError:
        try:  # cuda-python < 12.6 kept the runtime API at cuda.cudart
            from cuda import cudart  # pyright: ignore[reportMissingImports]
        except ImportError:
            return None, f"cuda-python is not installed ({INSTALL_HINT})"
    except Exception as e:
        return None, f"cuda-python is installed but cannot be loaded: {_first_line(e)}"
    return cudart, None


def check_cuda(result, what: str):
    """cuda-python calls return ``(error, *values)``; raise on an error, return the values."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise UserError(f"CUDA error in {what}: {getattr(err, 'name', err)}")
    return values[0] if len(values) == 1 else tuple(values)


def _cuda_device():
    """((name, capability), None) or (None, why there is no usable CUDA GPU)."""
    cudart, why = import_cudart()
    if cudart is None:
        return None, why
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0 or count < 1:
        return None, f"no CUDA GPU is available (cudaGetDeviceCount: {getattr(err, 'name', err)}, {count} devices)"
    err, index = cudart.cudaGetDevice()
    err2, props = cudart.cudaGetDeviceProperties(index if int(err) == 0 else 0)
    if int(err2) != 0:
        return None, f"cannot read the CUDA GPU's properties ({getattr(err2, 'name', err2)})"
    name = props.name.decode(errors="replace").rstrip("\0") if isinstance(props.name, bytes) else str(props.name)
    return (name, f"{props.major}.{props.minor}"), None


def require_tensorrt():
    """The ``tensorrt`` module, or a ``UserError`` saying why it cannot be used."""
    trt, why = _import_tensorrt()
    if trt is None:
        raise UserError(why)
    return trt


def current_environment() -> TrtEnvironment:
    """TensorRT version and GPU here; one ``UserError`` naming everything missing."""
    trt, no_trt = _import_tensorrt()
    device, no_gpu = _cuda_device()
    missing = [m for m in (no_trt, no_gpu) if m]
    if missing:
        raise UserError("TensorRT engines cannot be built or run here: " + "; ".join(missing))
    return TrtEnvironment(str(trt.__version__), device[0], device[1])
