"""The precision a run computes in: the user's choice, or ``auto``'s, with its reason.

Why a policy and not a flag alone: bf16 is 2-6x faster than fp32 where the CPU has bf16 units
(``avx512_bf16``, AMX) and costs almost nothing in quality for most models, but not for every
model, and a CPU without those units emulates it slowly. So ``auto`` takes a reduced precision
only where both hold: this CPU computes it natively, and this model's measured drop in PSNR
(``precision_drops`` in its manifest, written by ``benchmarks/precision_drops.py``) is within
``BUDGET_DB`` on the protocol. Everything else runs fp32, and the reason says why.

The CPU's flags are an argument everywhere, so the policy is tested for CPUs the tests do not run on.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from asisr.errors import UserError

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
BUDGET_DB = 0.02  # the largest PSNR drop auto accepts, on every measured dataset and scale
# Reduced precisions auto may pick for an fp32 export, fastest first (on the hosts measured,
# bf16 was faster and more accurate than the int8 Q/DQ export, which is never picked by auto).
AUTO_ORDER = ("bf16", "fp16")
# A precision is native when one of these CPU flags is present (Linux /proc/cpuinfo names).
UNITS = {
    "bf16": ("amx_bf16", "avx512_bf16"),
    "fp16": ("amx_fp16", "avx512_fp16"),
    "int8": ("amx_int8", "avx512_vnni", "avx_vnni"),
}
# Backends that compute an fp32 graph in fp32 only (their reduced precisions come from exports).
FP32_ONLY = {"onnxruntime": "ONNX Runtime's CPU provider computes fp32 graphs in fp32",
             "torch": "the torch backend is the fp32 reference",
             "tensorrt": "TensorRT runs the precision its engines were exported at"}


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags (empty where /proc/cpuinfo is not readable, e.g. not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_model() -> str:
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_cpu() -> str:
    """``MODEL; matrix-unit flags: ...``: what every performance figure names."""
    return f"{cpu_model()}; matrix-unit flags: {' '.join(matrix_flags()) or 'none'}"


def matrix_flags(flags: frozenset[str] | None = None) -> list[str]:
    """The flags that name a bf16 / fp16 / int8 unit, for reports."""
    flags = cpu_flags() if flags is None else flags
    return sorted({f for units in UNITS.values() for f in units if f in flags})


def check_precision(requested: str, allowed: tuple[str, ...] = PRECISIONS) -> str:
    """``requested`` if it is one of ``allowed``, else the one-line error every entry point gives."""
    if requested not in allowed:
        raise UserError(f"unknown precision {requested!r}; choose one of: {', '.join(allowed)}")
    return requested


def native(precision: str, flags: frozenset[str]) -> bool:
    return precision == "fp32" or any(f in flags for f in UNITS.get(precision, ()))


def worst_drop(drops: dict | None, precision: str) -> float | None:
    """The largest PSNR loss (dB, >= 0 means a loss) over a manifest's measured datasets and scales."""
    per_dataset = (drops or {}).get("drops", {}).get(precision)
    if not per_dataset:
        return None
    changes = [float(v) for scales in per_dataset.values() for v in scales.values()]
    return max(0.0, -min(changes)) if changes else None


@dataclass(frozen=True)
class PrecisionChoice:
    backend: str
    precision: str
    reason: str

    def line(self) -> str:
        return f"precision: {self.precision} on {self.backend} ({self.reason})"


def resolve_backend(backend: str, openvino_installed: bool) -> str:
    """``auto``: OpenVINO where installed (it uses the CPU's bf16 / int8 units), else ONNX Runtime."""
    if backend != "auto":
        return backend
    return "openvino" if openvino_installed else "onnxruntime"


def choose(requested: str, backend: str, stored: str = "fp32", drops: dict | None = None,
           flags: frozenset[str] | None = None) -> PrecisionChoice:
    """The precision ``backend`` runs a model in. ``stored``: the export's own precision (its
    manifest's: int8 and fp16 exports run as exported); ``drops``: its manifest's ``precision_drops``."""
    check_precision(requested)
    flags = cpu_flags() if flags is None else flags
    if stored != "fp32":
        if requested not in ("auto", stored):
            raise UserError(f"this model directory holds {stored} graphs: they run at --precision {stored} "
                            f"(export the checkpoint again for {requested})")
        return PrecisionChoice(backend, stored, f"the model directory holds {stored} graphs")
    if requested == "int8":
        raise UserError("--precision int8 runs an INT8 export: make one with asisr-export CHECKPOINT OUT --int8 "
                        "and run that directory")
    if backend in FP32_ONLY:
        if requested not in ("auto", "fp32"):
            raise UserError(f"--precision {requested} needs the openvino backend ({FP32_ONLY[backend]})")
        return PrecisionChoice(backend, "fp32", FP32_ONLY[backend] if requested == "auto" else "asked for")
    if requested != "auto":
        if not native(requested, flags):
            raise UserError(f"this CPU has no {requested} units ({' or '.join(UNITS[requested])}); OpenVINO would "
                            f"emulate {requested} slowly: use --precision fp32 or auto")
        return PrecisionChoice(backend, requested, "asked for")
    return _auto(backend, drops, flags)


def _auto(backend: str, drops: dict | None, flags: frozenset[str]) -> PrecisionChoice:
    skipped = []
    for precision in AUTO_ORDER:
        units = [f for f in UNITS[precision] if f in flags]
        if not units:
            skipped.append(f"no {precision} units")
            continue
        drop = worst_drop(drops, precision)
        if drop is None:
            skipped.append(f"{precision} is native ({units[0]}) but this model has no measured {precision} drop")
        elif drop > BUDGET_DB:
            skipped.append(f"{precision} loses up to {drop:.3f} dB on this model, over the {BUDGET_DB} dB budget")
        else:
            return PrecisionChoice(backend, precision, f"auto: native on this CPU ({units[0]}), measured drop "
                                                       f"{drop:.3f} dB <= {BUDGET_DB} dB")
    return PrecisionChoice(backend, "fp32", "auto: " + "; ".join(skipped))
