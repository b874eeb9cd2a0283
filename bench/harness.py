"""Run every backend on every job in one process and collect one row per (job, backend).

For each job the backends run one after another. Per backend: free what the previous one
left (``release_memory``), start an ``RssSampler``, open the model, warm it up on a small
crop of the job (so sessions, arenas and thread pools exist before timing, without running a
4K job twice), then time ``repeats`` passes over the job's images; only the ``upscale_to``
calls are timed. The last pass is scored (Y-PSNR) when the job has ground truth.

Backends: ``torch-ref`` (torch on ``model.reference()``, the official computation),
``torch`` (the fast model), ``torch-cl`` (torch with a channels-last backbone; not run by
default), ``onnxruntime`` (fp32 export), ``onnxruntime-int8`` (an int8 export given with
``int8_dir``) and ``tensorrt`` (needs TensorRT and a GPU). A backend that
cannot run here gives a "skipped" row with the reason; one that fails gives a "failed" row.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from asisr.bench.flops import TileFlopCounter, job_flops
from asisr.bench.gemm import GemmPeak, measure_gemm_peak, measure_precision_peaks
from asisr.bench.jobs import JOB_NAMES, Job, JobSkipped, make_job
from asisr.bench.memory import MIB, RssSampler, max_rss, release_memory
from asisr.errors import UserError
from asisr.runtime.upscaler import DEFAULT_MAX_MEMORY

BACKENDS = ("torch-ref", "torch", "torch-cl", "onnxruntime", "onnxruntime-int8", "openvino", "openvino-bf16",
            "openvino-int8", "default", "tensorrt")
DEFAULT_BACKENDS = ("torch-ref", "torch", "onnxruntime", "onnxruntime-int8", "openvino", "openvino-bf16",
                    "default", "tensorrt")


class BackendSkipped(Exception):
    """The backend cannot run on this machine or with these inputs; the message says why."""


@dataclass
class BenchConfig:
    model: Path | None = None  # checkpoint or exported directory; None = the bundled default
    jobs: Sequence[str] = JOB_NAMES
    backends: Sequence[str] = DEFAULT_BACKENDS
    threads: int = 2
    repeats: int = 3
    ref_repeats: int = 1  # torch-ref is several times slower than the rest and only a baseline
    ref_jobs: Sequence[str] | None = ("set5_x4", "frame_x4")  # jobs torch-ref runs on; None = all
    max_memory: int | None = None
    int8_dir: Path | None = None
    onnx_dir: Path | None = None  # an fp32 export of ``model`` to use instead of exporting it
    set5: Path | None = None
    photo: Path | None = None
    reference: Path | None = None  # liif_official.json, for the official code's Set5 x4 time
    gemm_n: int = 2048
    precision: str = "auto"  # the ``default`` row's (backend auto, this precision)
    warmup_edge: int = 48
    log: Callable[[str], None] = field(default=lambda message: None)


def parse_backends(text: str) -> list[str]:
    names = [t.strip().lower() for t in str(text).split(",") if t.strip()]
    if not names:
        raise UserError("--backends is empty")
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        raise UserError(f"unknown backend {unknown[0]!r}; choose from {', '.join(BACKENDS)}")
    return list(dict.fromkeys(names))


def _export_in_subprocess(checkpoint: Path) -> Path:
    """ONNX export (cached by checksum) in a child process, so its memory is not billed to any row."""
    code = "import sys; from asisr.sources import export_cached; print(export_cached(sys.argv[1]))"
    proc = subprocess.run([sys.executable, "-c", code, str(checkpoint)], capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        raise UserError(f"ONNX export of {checkpoint} failed: {lines[-1] if lines else proc.returncode}")
    return Path(proc.stdout.strip().splitlines()[-1])


class ModelSource:
    """The model under test in the forms the backends need: checkpoint, torch model, ONNX dir."""

    def __init__(self, cfg: BenchConfig):
        from asisr.sources import bundled_default

        self.cfg = cfg
        self.path = Path(cfg.model) if cfg.model is not None else bundled_default("torch")
        if not self.path.exists():
            raise UserError(f"model not found: {self.path}")
        self.is_export = self.path.is_dir()
        self._onnx: Path | None = None
        self.model = self._torch_model()
        self.counters = {"fast": TileFlopCounter(self.model), "reference": TileFlopCounter(self.model.reference())}

    def _torch_model(self) -> torch.nn.Module:
        from asisr.models import create, load

        if not self.is_export:
            return load(self.path).eval()
        from asisr.runtime.manifest import read_manifest

        manifest = read_manifest(self.path)  # weights are not needed for counting FLOPs, only shapes
        return create(manifest.model, **manifest.data["model"].get("config", {})).eval()

    def onnx_dir(self) -> Path:
        if self._onnx is None:
            if self.cfg.onnx_dir is not None:
                self._onnx = self._checked_export(Path(self.cfg.onnx_dir))
            elif self.is_export:
                self._onnx = self.path
            elif self.cfg.model is None:  # the bundled default: its shipped graphs (with their measured drops)
                from asisr.weights import default_onnx_dir

                self._onnx = default_onnx_dir()
            else:
                self._onnx = _export_in_subprocess(self.path)
        return self._onnx

    def _checked_export(self, directory: Path) -> Path:
        from asisr.runtime.manifest import read_manifest
        from asisr.digest import sha256_file

        manifest = read_manifest(directory)
        recorded = manifest.data["model"].get("checkpoint_sha256")
        if not self.is_export and recorded and recorded != sha256_file(self.path):
            raise UserError(f"--onnx-dir {directory} was exported from another checkpoint than {self.path}")
        return directory

    def checkpoint(self) -> Path:
        if self.is_export:
            raise BackendSkipped("the model is an exported ONNX directory; torch backends need a checkpoint")
        return self.path


def _int8_dir(cfg: BenchConfig) -> Path:
    """The int8 export the ``*-int8`` rows run, or a skip saying how to make one."""
    if cfg.int8_dir is None:
        raise BackendSkipped("no int8 export given (make one with asisr-export --int8, pass --int8-dir)")
    return Path(cfg.int8_dir)


def open_backend(name: str, source: ModelSource, cfg: BenchConfig):
    """An ``Upscaler`` for backend ``name``; raises ``BackendSkipped`` when it cannot run here."""
    from asisr import sources
    from asisr.models import load
    from asisr.runtime.backends.pyt import torch_pipeline
    from asisr.runtime.upscaler import Upscaler

    if name == "torch-ref":
        pipeline = torch_pipeline(load(source.checkpoint()).reference(), "cpu", cfg.threads)
    elif name == "torch-cl":
        pipeline = torch_pipeline(load(source.checkpoint()), "cpu", cfg.threads, channels_last=True)
    elif name == "torch":
        pipeline = sources.open_pipeline(source.checkpoint(), "torch", cfg.threads)
    elif name == "onnxruntime":
        pipeline = sources.open_pipeline(source.onnx_dir(), "onnxruntime", cfg.threads)
    elif name == "onnxruntime-int8":
        pipeline = sources.open_pipeline(_int8_dir(cfg), "onnxruntime", cfg.threads)
    elif name in ("openvino", "openvino-bf16", "openvino-int8"):
        from asisr.runtime.backends.openvino import available

        if not available():
            raise BackendSkipped("OpenVINO is not installed (pip install openvino)")
        if name == "openvino-int8":
            pipeline = sources.open_pipeline(_int8_dir(cfg), "openvino", cfg.threads, precision="int8")
        else:
            precision = "bf16" if name == "openvino-bf16" else "fp32"
            pipeline = sources.open_pipeline(source.onnx_dir(), "openvino", cfg.threads, precision=precision)
    elif name == "default":  # what asisr-run does with no --backend / --precision
        pipeline = sources.open_pipeline(source.onnx_dir(), "auto", cfg.threads, precision=cfg.precision)
    elif name == "tensorrt":
        from asisr.runtime.backends.trt.environment import current_environment

        try:
            current_environment()  # TensorRT installed and a CUDA GPU present, or one message saying what is not
        except UserError as e:
            raise BackendSkipped(str(e)) from None
        pipeline = sources.open_pipeline(source.onnx_dir(), "tensorrt", cfg.threads)
    else:
        raise UserError(f"unknown backend {name!r}")
    return Upscaler(pipeline, max_memory=cfg.max_memory)


def _mib(n: int | None) -> float | None:
    return None if n is None else n / MIB


def run_backend(job: Job, name: str, source: ModelSource, cfg: BenchConfig, gemm: GemmPeak,
                peaks: dict[str, float] | None = None) -> dict:
    """One row: timings, memory, FLOPs and (for scored jobs) PSNR of ``name`` on ``job``."""
    from asisr.evaluation import psnr_y

    row: dict = {"job": job.name, "backend": name, "status": "ok", "note": ""}
    if name == "torch-ref" and cfg.ref_jobs is not None and job.name not in cfg.ref_jobs:
        return {**row, "status": "skipped", "note": "torch-ref runs only on the --ref-jobs (it is the slow baseline)"}
    repeats = cfg.ref_repeats if name == "torch-ref" else cfg.repeats
    release_memory()
    times: list[float] = []
    psnrs: list[float] = []
    plans = []
    try:
        with RssSampler() as mem:
            t0 = time.perf_counter()
            up = open_backend(name, source, cfg)
            row["precision"] = up.pipeline.precision
            row["engine"] = up.pipeline.backend
            row["precision_reason"] = up.pipeline.precision_reason
            with up:
                row["open_s"] = time.perf_counter() - t0
                warm = job.warmup_item(cfg.warmup_edge)
                up.upscale_to(warm.lr, warm.out_hw)
                for rep in range(repeats):
                    total = 0.0
                    last = rep == repeats - 1
                    for item in job.items:
                        t = time.perf_counter()
                        sr = up.upscale_to(item.lr, item.out_hw)
                        total += time.perf_counter() - t
                        if last:
                            plans.append(up.last_plan)
                            if item.hr is not None:
                                psnrs.append(psnr_y(sr, item.hr, job.shave))
                        del sr
                    times.append(total)
                    cfg.log(f"  {job.name} / {name}: pass {rep + 1}/{repeats} {total:.2f} s")
            del up
    except BackendSkipped as e:
        return {**row, "status": "skipped", "note": str(e)}
    except Exception as e:  # one backend failing must not lose the other rows; the note says why
        return {**row, "status": "failed", "note": " ".join(f"{type(e).__name__}: {e}".split())[:300]}
    median = statistics.median(times)
    counter = source.counters["reference" if name == "torch-ref" else "fast"]
    flops = job_flops(counter, job.items, plans)
    achieved = flops.total / median / 1e9 if median > 0 else None
    # efficiency against the peak of the precision the row actually computed in
    peak = gemm.gflops if row["precision"] == "fp32" else (peaks or {}).get(row["precision"])
    if row["precision"] == "fp32" and peaks and peaks.get("fp32"):
        peak = max(peak, peaks["fp32"])
    row.update({
        "repeats": repeats,
        "seconds": times,
        "median_s": median,
        "min_s": min(times),
        "max_s": max(times),
        "output_mpx": job.output_mpx,
        "mpx_per_s": job.output_mpx / median if median > 0 else None,
        "peak_rss_mib": _mib(mem.peak),
        "rss_start_mib": _mib(mem.start),
        "rss_growth_mib": _mib(mem.growth),
        "ru_maxrss_mib": _mib(max_rss()),
        "flops": flops.to_dict(),
        "gflops_per_s": achieved,
        "peak_gflops": peak,
        "gemm_ratio": achieved / peak if achieved is not None and peak else None,
        "psnr": float(np.mean(psnrs)) if psnrs else None,
        "tile": plans[-1].tile if plans else None,
        "lr_tile": plans[-1].lr_tile if plans else None,
        "plan_estimate_mib": _mib(plans[-1].estimate) if plans else None,
        "max_memory_mib": _mib(plans[-1].budget) if plans and plans[-1].budget else None,
    })
    if name in ("onnxruntime-int8", "openvino-int8"):
        row["note"] = "FLOPs are the fp32 model's (int8 multiply-adds counted as FLOPs)"
    if name == "default":
        row["note"] = f"{row['engine']} {row['precision']}: {row['precision_reason']}"
    if name == "tensorrt":
        row["note"] = "peak RSS is host memory only (GPU memory is not sampled)"
    return row


def _psnr_deltas(rows: list[dict]) -> None:
    """PSNR of each row minus that of torch-ref (or torch) on the same job."""
    base = next((r["psnr"] for name in ("torch-ref", "torch") for r in rows
                 if r["backend"] == name and r.get("psnr") is not None), None)
    for r in rows:
        r["psnr_delta"] = None if base is None or r.get("psnr") is None else r["psnr"] - base


def run_bench(cfg: BenchConfig) -> dict:
    """Measure everything ``cfg`` asks for; returns the report (see ``asisr.bench.report``).

    torch's thread count is ``cfg.threads`` during the run and the caller's again after it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _run_bench(cfg)
    finally:
        torch.set_num_threads(previous)


def _run_bench(cfg: BenchConfig) -> dict:
    from asisr.bench.report import load_official, machine_info

    source = ModelSource(cfg)
    if "onnxruntime" in cfg.backends:
        try:
            source.onnx_dir()  # export before any measurement, in its own process
        except UserError as e:
            cfg.log(f"ONNX export failed: {e}")
    cfg.log(f"measuring the fp32 GEMM peak ({cfg.gemm_n}^2, {cfg.threads} threads) ...")
    gemm = measure_gemm_peak(cfg.threads, cfg.gemm_n)
    peaks: dict[str, float] = {}
    if any(b.startswith("openvino") or b == "default" for b in cfg.backends):
        cfg.log(f"measuring the bf16 and int8 GEMM peaks (OpenVINO, {cfg.gemm_n}^2) ...")
        peaks = measure_precision_peaks(cfg.threads, cfg.gemm_n)
    jobs, rows = [], []
    for j, name in enumerate(cfg.jobs, 1):
        try:
            job = make_job(name, cfg.set5, cfg.photo)
        except JobSkipped as e:
            jobs.append({"name": name, "status": "skipped", "note": str(e)})
            cfg.log(f"[job {j}/{len(cfg.jobs)}] {name}: skipped ({e})")
            continue
        jobs.append({"name": job.name, "status": "ok", "description": job.description, "images": len(job.items),
                     "output_mpx": job.output_mpx, "scored": job.shave is not None})
        cfg.log(f"[job {j}/{len(cfg.jobs)}] {job.name}: {job.description}, {job.output_mpx:.2f} output Mpx")
        job_rows = []
        for backend in cfg.backends:
            row = run_backend(job, backend, source, cfg, gemm, peaks)
            if row["status"] != "ok":
                cfg.log(f"  {job.name} / {backend}: {row['status']}: {row['note']}")
            job_rows.append(row)
        _psnr_deltas(job_rows)
        rows.extend(job_rows)
    return {
        "asisr_bench": 1,
        "machine": machine_info(cfg.threads),
        "settings": {"model": str(source.path), "onnx_dir": str(source._onnx) if source._onnx else None,
                     "int8_dir": str(cfg.int8_dir) if cfg.int8_dir else None, "threads": cfg.threads,
                     "repeats": cfg.repeats, "ref_repeats": cfg.ref_repeats,
                     "ref_jobs": list(cfg.ref_jobs) if cfg.ref_jobs is not None else "all",
                     "max_memory_mib": _mib(cfg.max_memory or DEFAULT_MAX_MEMORY),
                     "warmup": f"one upscale of a {cfg.warmup_edge}x{cfg.warmup_edge} LR crop per job and backend",
                     "backends": list(cfg.backends), "jobs": list(cfg.jobs)},
        "gemm_peak": gemm.to_dict(),
        "precision_peaks": peaks,
        "official": load_official(cfg.reference),
        "jobs": jobs,
        "rows": rows,
    }
