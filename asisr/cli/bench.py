"""``asisr-bench``: latency, throughput, memory and FLOP efficiency of every backend, one report."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from asisr.cli.common import make_app, run_app
from asisr.errors import UserError

HELP = """\
Benchmark the model on every backend, one after another in one process, on standard jobs.

Jobs: set5_x4 (the 5 Set5 images at x4 through the evaluation protocol, with Y-PSNR),
frame_x4 (480x270 -> 1920x1080), frame_x2 (1920x1080 -> 3840x2160), x3.3 (640x360 at x3.3),
or WIDTHxHEIGHT@SCALE for a synthetic frame. Backends: torch-ref (reference computation),
torch, torch-cl (channels-last backbone; not in the default list), onnxruntime,
onnxruntime-int8 (needs --int8-dir), openvino (fp32), openvino-bf16, openvino-int8 (needs
--int8-dir), default (what asisr-run runs: backend auto, --precision), tensorrt (needs TensorRT
and a GPU); one that cannot run here gets a 'skipped' row with the reason.

Per job and backend: latency (median and min-max of --repeats passes, after a warm-up on a
small crop), output megapixels/s, peak resident memory, FLOPs (backbone / upsampler, on the
tiles actually run), achieved GFLOP/s and its share of the measured GEMM peak of the precision
the row computed in (fp32, bf16 and int8 peaks measured in the same run).

\b
Examples:
  asisr-bench --threads 2 --out results/bench
  asisr-bench --jobs frame_x2 --backends onnxruntime --max-memory 512M
  asisr-bench --jobs 320x180@4 --backends torch,onnxruntime --repeats 5

Exit status: 0 when every requested row ran or was skipped with a reason, 1 when a backend
failed, 2 on a usage or input problem (printed as one 'error:' line).
"""
app = make_app(HELP)


def _shared(*parts: str) -> Optional[Path]:
    """``../shared/...`` beside the working directory or beside the source checkout, if present."""
    import asisr.bench

    for base in (Path.cwd().parent, Path(asisr.bench.__file__).resolve().parents[2]):
        candidate = base.joinpath("shared", *parts)
        if candidate.exists():
            return candidate
    return None


@app.command(help=HELP)
def bench(
    threads: int = typer.Option(2, "--threads", "-t", help="CPU threads for every backend and the GEMM peak."),
    jobs: str = typer.Option("set5_x4,frame_x4,frame_x2,x3.3", "--jobs", "-j", help="Comma-separated jobs."),
    backends: str = typer.Option("torch-ref,torch,onnxruntime,onnxruntime-int8,tensorrt", "--backends", "-b",
                                 help="Comma-separated backends, run in this order."),
    repeats: int = typer.Option(3, "--repeats", "-r", help="Timed passes per job and backend."),
    ref_repeats: int = typer.Option(1, "--ref-repeats", help="Timed passes for torch-ref (the slow baseline)."),
    ref_jobs: str = typer.Option("set5_x4,frame_x4", "--ref-jobs",
                                 help="Jobs torch-ref runs on ('all' for every job); it takes minutes per 4K frame."),
    model: Optional[Path] = typer.Option(None, "--model", "-m",
                                         help="Checkpoint or exported ONNX folder; default: the bundled model."),
    max_memory: Optional[str] = typer.Option(None, "--max-memory",
                                             help="Memory budget for tiling, e.g. 512M or 2G (default 1G)."),
    int8_dir: Optional[Path] = typer.Option(None, "--int8-dir", help="An int8 export (asisr-export --int8)."),
    onnx_dir: Optional[Path] = typer.Option(None, "--onnx-dir",
                                            help="An fp32 export of --model to use instead of exporting it."),
    set5: Optional[Path] = typer.Option(None, "--set5", help="Set5 HR folder (default: ../shared/data/Set5)."),
    frame_image: Optional[Path] = typer.Option(None, "--frame-image",
                                               help="A photo to resize into the frame jobs (default: synthetic)."),
    reference: Optional[Path] = typer.Option(None, "--reference",
                                             help="liif_official.json, for the official code's Set5 x4 time."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write OUT.json and OUT.md (a file stem)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing --out files."),
    gemm_size: int = typer.Option(2048, "--gemm-size", hidden=True, help="Matrix edge for the GEMM peak."),
    precision: str = typer.Option("auto", "--precision", "-p",
                                  help="The 'default' row's precision (backend auto): auto (default), fp32, bf16, "
                                       "fp16. The openvino / openvino-bf16 rows are fixed."),
) -> None:
    from asisr.bench.harness import BenchConfig, parse_backends, run_bench
    from asisr.bench.jobs import parse_jobs
    from asisr.bench.report import check_outputs, format_table, write_outputs
    from asisr.runtime.tiling import parse_memory

    if threads < 1:
        raise UserError("--threads must be positive")
    if repeats < 1 or ref_repeats < 1:
        raise UserError("--repeats and --ref-repeats must be at least 1")
    if gemm_size < 1:
        raise UserError("--gemm-size must be positive")
    from asisr.runtime.precision import check_precision

    check_precision(precision)
    budget = parse_memory(max_memory) if max_memory is not None else None
    job_names, backend_names = parse_jobs(jobs), parse_backends(backends)
    ref_job_names = None if ref_jobs.strip().lower() == "all" else parse_jobs(ref_jobs)
    for label, path in (("--model", model), ("--int8-dir", int8_dir), ("--onnx-dir", onnx_dir),
                        ("--set5", set5), ("--frame-image", frame_image), ("--reference", reference)):
        if path is not None and not path.exists():
            raise UserError(f"{label} not found: {path}")
    if out is not None:
        check_outputs(out, overwrite)  # before minutes of work, not after
    cfg = BenchConfig(
        model=model, jobs=job_names, backends=backend_names, threads=threads, repeats=repeats,
        ref_repeats=ref_repeats, ref_jobs=ref_job_names, max_memory=budget, int8_dir=int8_dir, onnx_dir=onnx_dir,
        set5=set5 if set5 is not None else _shared("data", "Set5"), photo=frame_image,
        reference=reference if reference is not None else _shared("reference", "liif_official.json"),
        gemm_n=gemm_size, precision=precision, log=lambda message: typer.echo(message, err=True),
    )
    report = run_bench(cfg)
    typer.echo(format_table(report))
    if out is not None:
        json_path, md_path = write_outputs(report, out, overwrite)
        typer.echo(f"wrote {json_path} and {md_path}")
    if any(r["status"] == "failed" for r in report["rows"]):
        raise typer.Exit(1)


def main(argv: list[str] | None = None) -> int:
    return run_app(app, "asisr-bench", argv)


if __name__ == "__main__":
    main()
