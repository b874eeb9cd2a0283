"""A folder run on Ray Data: the local folder run's job, spread over an actor pool of ``Upscaler``s.

The dataset carries paths, not pixels: each actor reads its image, upscales it through the
same ``Upscaler.upscale`` call as the local run (same backend, threads, tiling and memory
budget, so the bytes are the same) and writes it atomically beside its final name. A worker
killed mid-image leaves at most a hidden temporary file, which the retry of its task removes
once it holds the image's claim; Ray Data restarts the actor and retries the task, and the
retry writes the same bytes. Finished outputs are skipped when the job is listed, as locally;
the claim (the same ``.NAME.lock`` the local run takes) keeps concurrent runs from computing an
image twice. An image that fails (undecodable, too small) is reported and the rest continue.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from asisr.distributed.cluster import cluster_capacity, ray_cluster
from asisr.errors import UserError
from asisr.imageio import (check_free_space, check_output_folder, done_elsewhere, image_header, output_bytes,
                           read_image, write_image)
from asisr.imageio import folder_jobs as local_folder_jobs
from asisr.locks import claim_for
from asisr.scale import FITS, Scale, planned_size

GPU_PROVIDERS = ("cuda", "tensorrt")
WRITTEN, OTHERS, FAILED = "written", "others", "failed"


@dataclass(frozen=True)
class Render:
    """What is done to every image: the local run's call, ``Upscaler.upscale`` at a scale or to a size."""

    scale: Scale | None = None
    size: tuple[int, int] | None = None  # (height, width)
    fit: str = "stretch"

    def __post_init__(self) -> None:
        if (self.scale is None) == (self.size is None):
            raise UserError("give exactly one of a scale or a size")
        if self.fit not in FITS:
            raise UserError(f"invalid fit {self.fit!r}: choose one of {', '.join(FITS)}")

    def __call__(self, upscaler, image: np.ndarray) -> np.ndarray:
        return upscaler.upscale(image, scale=self.scale, size=self.size, fit=self.fit)

    def planned_size(self, lr_hw: tuple[int, int], size_rule: str = "round") -> tuple[int, int]:
        return planned_size(int(lr_hw[0]), int(lr_hw[1]), self.scale, self.size, size_rule)


@dataclass(frozen=True)
class UpscalerSpec:
    """How each actor opens its ``Upscaler`` (``asisr.sources.open_upscaler``'s arguments)."""

    model: str | None = None
    backend: str = "auto"
    threads: int = 1
    providers: tuple[str, ...] | None = None
    tile: int | None = None
    max_scale: float | None = None
    max_memory: int | None = None
    precision: str = "auto"  # each actor resolves auto on its own node's CPU (asisr.runtime.precision)

    @property
    def gpus(self) -> float:
        """One GPU per actor when it runs on one (a share of a GPU is for the user's cluster config)."""
        on_gpu = self.backend == "tensorrt" or any(p in GPU_PROVIDERS for p in self.providers or ())
        return 1.0 if on_gpu else 0.0

    def open(self):
        from asisr.sources import open_upscaler

        return open_upscaler(self.model, backend=self.backend, threads=self.threads, tile=self.tile,
                             max_scale=self.max_scale, providers=list(self.providers) if self.providers else None,
                             max_memory=self.max_memory, precision=self.precision)


@dataclass
class FolderRunResult:
    """What a run did: the counts of the local run's summary line, and each failure as ``NAME: reason``."""

    total: int  # images to do when the run started
    existed: int  # outputs already there (skipped)
    written: int = 0
    others: int = 0  # found written when their turn came: by another process, or by a killed worker's attempt
    failed: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """The local run's last line; failures make it an error (exit 2), as there."""
        if self.failed:
            raise UserError(f"{len(self.failed)} of {self.total} images failed (first: {self.failed[0]})")
        return (f"wrote {self.written} images"
                + (f" ({self.others} more written meanwhile by another asisr process or a retried worker)"
                   if self.others else "")
                + ("" if self.total else " (all outputs already existed)"))


class FolderRunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a Ray run, with what was finished: the local run's last line for it."""

    def __init__(self, result: FolderRunResult, out_dir: Path):
        done = result.written + result.others
        super().__init__(f"interrupted: {done} of {result.total} images written to {out_dir}"
                         + (f" ({result.existed} more existed before)" if result.existed else "")
                         + "; run the same command again to resume")


class ImageWriter:
    """One Ray actor: one ``Upscaler`` (one backend session), opened once, used for every image it is given."""

    def __init__(self, spec: UpscalerSpec, render: Render, overwrite: bool, started_ns: int):
        self.render, self.overwrite, self.started_ns = render, overwrite, started_ns
        self.upscaler, self.unusable = None, ""
        try:  # a node without the GPU or the provider asked for: its images fail with the reason, in one line
            self.upscaler = spec.open().__enter__()
        except UserError as e:
            self.unusable = " ".join(str(e).split())

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outcomes = [self.one(Path(str(src)), Path(str(dst))) for src, dst in zip(batch["src"], batch["dst"])]
        return {"src": np.asarray(batch["src"]), "status": np.array([o[0] for o in outcomes]),
                "message": np.array([o[1] for o in outcomes])}

    def one(self, src: Path, dst: Path) -> tuple[str, str]:
        """(status, message) of one image, computed under its claim."""
        if self.upscaler is None:
            return FAILED, f"the worker could not open the model: {self.unusable}"
        claim = claim_for(dst)
        claim.acquire()  # a local run or another actor writing it: wait, then find it done
        try:
            remove_stale_temporaries(dst)
            if done_elsewhere(dst, self.overwrite, self.started_ns):
                return OTHERS, ""
            try:
                write_image(dst, self.render(self.upscaler, read_image(src)))
            except UserError as e:
                return FAILED, " ".join(str(e).split())
            return WRITTEN, ""
        finally:
            claim.release()

    def __del__(self) -> None:
        upscaler = getattr(self, "upscaler", None)
        if upscaler is not None:
            upscaler.__exit__(None, None, None)


def remove_stale_temporaries(dst: Path) -> None:
    """Temporary files of ``dst`` left by a writer that was killed: with the claim held, nobody else writes it."""
    for stale in dst.parent.glob(f".{dst.name}.*.tmp{dst.suffix}"):
        stale.unlink(missing_ok=True)


def folder_jobs(input_dir: Path, out_dir: Path, overwrite: bool) -> tuple[list[tuple[Path, Path]], int]:
    """(source, output) pairs still to do, and how many outputs already existed."""
    if not input_dir.is_dir():
        raise UserError(f"input not found: {input_dir}" if not input_dir.exists() else
                        f"--engine ray runs a folder of images; {input_dir} is a file (run it without --engine ray)")
    return local_folder_jobs(input_dir, out_dir, overwrite)


def check_outputs_fit(jobs: list[tuple[Path, Path]], out_dir: Path, render: Render, size_rule: str = "round") -> None:
    """The local run's checks before any work: the folder is writable and has the space."""
    check_output_folder(out_dir)
    needed = 0
    for src, dst in jobs:
        header = image_header(src)
        if header is not None:  # an unreadable one is reported when its turn comes
            h, w, channels, sample_bytes = header
            needed += output_bytes(render.planned_size((h, w), size_rule), channels, sample_bytes, dst.suffix)
    check_free_space(out_dir, needed, f"{len(jobs)} images in {out_dir}")


def check_pool_fits(workers: int, spec: UpscalerSpec) -> None:
    """An actor pool the cluster cannot hold would wait forever: refuse it instead."""
    capacity = cluster_capacity()
    cpus, gpus = workers * spec.threads, workers * spec.gpus
    short_cpu, short_gpu = cpus > capacity["CPU"], gpus > capacity["GPU"]
    if short_cpu or short_gpu:
        hint = "lower --workers" + (" or --threads" if short_cpu else "")
        hint += ", or join a cluster with GPUs (--ray-address)" if short_gpu else ""
        raise UserError(f"{workers} workers of {spec.threads} threads need {cpus:g} CPUs"
                        + (f" and {gpus:g} GPUs" if gpus else "")
                        + f", the Ray cluster has {capacity['CPU']:g} CPUs and {capacity['GPU']:g} GPUs: {hint}")


def upscale_folder_on_ray(input_dir: str | Path, out_dir: str | Path, scale: Scale | float | None = None,
                          size: tuple[int, int] | None = None, fit: str = "stretch", model: str | Path | None = None,
                          backend: str = "auto", workers: int = 2, threads_per_worker: int = 1,
                          address: str | None = None, providers: list[str] | None = None,
                          max_memory: int | None = None, tile: int | None = None, max_scale: float | None = None,
                          overwrite: bool = False, progress: bool = True, precision: str = "auto") -> FolderRunResult:
    """Upscale every image of ``input_dir`` into ``out_dir`` on Ray; ``size`` is (height, width).

    ``address`` joins an existing cluster (``ray://...`` or ``host:port``); without it a local one
    is started for the run, and a Ray already initialised in this process is reused. The inputs
    and ``out_dir`` must be on a file system every node sees. Failed images are in the result
    (``FolderRunResult.summary`` raises for them, as the local run exits 2).
    """
    started_ns = time.time_ns()
    if isinstance(scale, (int, float)):
        scale = Scale(float(scale), float(scale))
    render = Render(scale, size, fit)
    if workers < 1 or threads_per_worker < 1:
        raise UserError("--workers and --threads must be positive")
    spec = UpscalerSpec(None if model is None else str(model), backend, threads_per_worker,
                        tuple(providers) if providers else None, tile, max_scale, max_memory, precision)
    check_model(spec, render)
    input_dir, out_dir = Path(input_dir), Path(out_dir)
    jobs, existed = folder_jobs(input_dir, out_dir, overwrite)
    result = FolderRunResult(len(jobs), existed)
    if not jobs:
        return result
    from asisr.sources import size_rule_of

    check_outputs_fit(jobs, out_dir, render, size_rule_of(spec.model, spec.backend))
    with ray_cluster(address, "--engine ray"):
        check_pool_fits(workers, spec)
        out_dir.mkdir(parents=True, exist_ok=True)
        try:
            for row in _run_pool(jobs, spec, render, overwrite, started_ns, workers, progress):
                _count(result, row)
        except KeyboardInterrupt:
            raise FolderRunInterrupted(result, out_dir) from None
    return result


def check_model(spec: UpscalerSpec, render: Render | None) -> None:
    """The model exists (and takes the scale), found out here rather than in every actor or replica."""
    from asisr.runtime.manifest import read_manifest
    from asisr.scale import check_scale_range
    from asisr.sources import BACKENDS, check_checkpoint_file, is_exported_dir, resolve_model

    if spec.backend not in BACKENDS:
        raise UserError(f"unknown backend {spec.backend!r}; choose one of: {', '.join(BACKENDS)}")
    path = resolve_model(spec.model, spec.backend)
    if not is_exported_dir(path):
        check_checkpoint_file(path)
        return
    if render is not None and render.scale is not None:
        limit = spec.max_scale if spec.max_scale is not None else read_manifest(path).model_descriptor().scale_max
        check_scale_range(render.scale, limit)


def _run_pool(jobs, spec: UpscalerSpec, render: Render, overwrite: bool, started_ns: int, workers: int,
              progress: bool):
    """Rows (src, status, message) as the actors finish them."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = progress
    context.print_on_execution_start = False
    items = [{"src": str(src), "dst": str(dst)} for src, dst in jobs]
    dataset = ray.data.from_items(items, override_num_blocks=len(items))  # one image per task: retried alone
    pool = ray.data.ActorPoolStrategy(size=min(workers, len(items)))
    done = dataset.map_batches(ImageWriter, batch_size=1, batch_format="numpy", compute=pool,
                               num_cpus=spec.threads, num_gpus=spec.gpus or None,
                               fn_constructor_kwargs={"spec": spec, "render": render, "overwrite": overwrite,
                                                      "started_ns": started_ns})
    yield from done.iter_rows()


def _count(result: FolderRunResult, row: dict) -> None:
    status = str(row["status"])
    if status == WRITTEN:
        result.written += 1
    elif status == OTHERS:
        result.others += 1
    else:
        name = Path(str(row["src"])).name
        result.failed.append(f"{name}: {row['message']}")
        _say(f"skipped {name}: {row['message']}")


def _say(line: str) -> None:
    import sys

    print(line, file=sys.stderr, flush=True)
