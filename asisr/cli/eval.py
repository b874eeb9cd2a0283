"""``asisr-eval``: PSNR / SSIM / time of a model (or of bicubic) on folders of HR images, and
optionally its scale equivariance (EQ, :mod:`asisr.evaluation.equivariance`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from asisr.cli.common import make_app, run_app
from asisr.errors import UserError


HELP = """\
Evaluate super-resolution quality on folders of high-resolution (HR) images.

For every image and scale, the HR image is cropped to a multiple of the scale, shrunk with PIL
bicubic to make the low-resolution (LR) input, upscaled back by the model and compared with the
HR crop: PSNR and SSIM on the luma (Y) channel, ignoring a border of ceil(scale) pixels (the
protocol of the project's reference numbers). Prints one row per scale with PSNR (dB), SSIM
and the seconds the model spent on the whole folder.

A scale is a number (3.5) or HEIGHTxWIDTH for different factors per axis (2x3.5). Scales must
be >= 1.

With --equivariance it also measures scale equivariance (the EQ of the EQSR paper):
EQ = 10 log10 MSE_Y( up(down(x)), down(up(x)) ) per image and scale, where down is the
protocol's bicubic shrinking and up is the model; the error is on Y with the same border shave.
Lower EQ (more negative dB) is more equivariant; the table also shows -EQ, read like a PSNR.
up(x) upscales the whole HR image, so this costs about scale^2 times the PSNR run. The EQ
scales are set apart with --eq-scales (default 2,3,4,6).

\b
Examples:
  # the bicubic baseline (no model needed)
  asisr-eval data/Set5 --bicubic --scales 2,3,4
  # a checkpoint on two datasets, integer, fractional and asymmetric scales
  asisr-eval data/Set5 data/Set14 --model liif.pth --scales 2,3,4,5.5,3.5x2
  # an exported model on ONNX Runtime, 4 threads, results saved as JSON
  asisr-eval data/Set5 --model exported/ --threads 4 --json out.json
  # compare with published numbers (adds a dPSNR column)
  asisr-eval data/Set5 --model liif.pth --reference liif_official.json
  # scale equivariance too (a second table; JSON "eq": {dataset: {scale: dB}})
  asisr-eval data/Set5 --model exported/ --equivariance --json out.json
  asisr-eval data/Set5 --bicubic --equivariance --eq-scales 2,3,4,6,2.5

Exit status: 0 on success, 2 on a usage or input problem (printed as one 'error:' line).
"""

app = make_app()

#: ``--eq-scales`` when ``--equivariance`` is given alone (the EQSR paper's scales).
DEFAULT_EQ_SCALES = "2,3,4,6"


def parse_scales(text: str) -> list[tuple[float, float]]:
    """``"2,3,2x3.5"`` -> ``[(2, 2), (3, 3), (2, 3.5)]`` (duplicates dropped); UserError if bad."""
    from asisr.evaluation import normalize_scales
    from asisr.scale import parse_scale

    items = [t.strip() for t in str(text).split(",")]
    if not any(items):
        raise UserError("no scales given: pass e.g. --scales 2,3,4")
    if not all(items):
        raise UserError(f"invalid --scales {text!r}: empty entry between commas")
    scales = [parse_scale(t) for t in items]
    return normalize_scales(scales)


@app.command(help=HELP, no_args_is_help=True)
def eval_cmd(
    data_dirs: Annotated[list[Path], typer.Argument(
        metavar="DATA_DIR", show_default=False,
        help="Folders of HR images (png, jpg, jpeg, bmp, tif, webp; not searched recursively).")],
    scales: Annotated[str, typer.Option(
        "--scales", "-s", metavar="LIST",
        help="Comma-separated scales, e.g. 2,3,4,1.6,2x3.5 (HEIGHTxWIDTH for asymmetric).")] = "2,3,4",
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", metavar="DIR_OR_CKPT",
        help="Model to evaluate: a checkpoint or an exported model folder. "
             "Default: the bundled default model.")] = None,
    backend: Annotated[Optional[str], typer.Option(
        "--backend", "-b", metavar="NAME",
        help="Inference backend: auto | openvino | onnxruntime | torch | tensorrt. Default: auto (openvino "
             "where installed, else onnxruntime).")] = None,
    precision: Annotated[str, typer.Option(
        "--precision", "-p", metavar="NAME",
        help="auto | fp32 | bf16 | fp16 | int8. Default: auto (the fastest native precision within the model's "
             "measured 0.02 dB budget, else fp32). Measure a drop: run fp32 and bf16 and compare.")] = "auto",
    threads: Annotated[Optional[int], typer.Option(
        "--threads", "-t", metavar="N", help="CPU threads for inference.")] = None,
    tile: Annotated[Optional[int], typer.Option(
        "--tile", metavar="N", help="Process the LR input in tiles of N pixels (saves memory).")] = None,
    bicubic: Annotated[bool, typer.Option(
        "--bicubic", help="Evaluate PIL bicubic upscaling instead of a model (the baseline).")] = False,
    json_out: Annotated[Optional[Path], typer.Option(
        "--json", metavar="OUT.json",
        help="Also write all results (per image too) to this JSON file.")] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace an existing --json file.")] = False,
    reference: Annotated[Optional[Path], typer.Option(
        "--reference", metavar="REF.json",
        help="Reference numbers ({\"psnr\": {dataset: {scale: dB}}}) to show a dPSNR column.")] = None,
    equivariance: Annotated[bool, typer.Option(
        "--equivariance", "--eq",
        help="Also measure scale equivariance (EQ dB, lower is better) at --eq-scales; "
             "prints a second table.")] = False,
    eq_scales: Annotated[Optional[str], typer.Option(
        "--eq-scales", metavar="LIST", show_default=False,
        help="Comma-separated scales for the EQ table (same syntax as --scales; implies "
             "--equivariance). Default: 2,3,4,6.")] = None,
) -> None:
    if eq_scales is None and equivariance:
        eq_scales = DEFAULT_EQ_SCALES
    try:
        _run(data_dirs, scales, model, backend, threads, tile, bicubic, json_out, overwrite, reference, eq_scales,
             precision)
    except UserError as e:
        _fail(str(e))


def _fail(message: str) -> None:
    typer.echo("error: " + " ".join(str(message).split()), err=True)
    raise typer.Exit(2)


def _run(data_dirs, scales_text, model, backend, threads, tile, bicubic, json_out, overwrite, reference,
         eq_scales_text=None, precision="auto") -> None:
    from asisr.evaluation import check_output_path, format_table, make_report, preflight, write_json

    # 1. everything that can be checked without work
    pairs = parse_scales(scales_text)
    eq_pairs = parse_scales(eq_scales_text) if eq_scales_text is not None else []
    if bicubic and model is not None:
        raise UserError("--bicubic and --model exclude each other: choose one")
    from asisr.runtime.precision import check_precision

    check_precision(precision)
    if threads is not None and threads < 1:
        raise UserError(f"--threads must be >= 1, got {threads}")
    if tile is not None and tile < 1:
        raise UserError(f"--tile must be >= 1, got {tile}")
    if json_out is not None:
        check_output_path(json_out, overwrite)
    ref_data = _read_reference(reference) if reference is not None else None
    sources = None
    if not bicubic:
        import asisr.sources as sources

        known = sources.BACKENDS
        if backend is not None:
            backend = backend.strip().lower()
            if backend not in known:
                raise UserError(f"unknown --backend {backend!r}; choose one of: {', '.join(known)}")
    for d in data_dirs:
        preflight(d, pairs)
        if eq_pairs:
            preflight(d, eq_pairs)

    # 2. the model; the PSNR table is printed as soon as it is known (EQ takes much longer)
    def measure(upscale_fn, name: str) -> tuple[list[dict], list[dict]]:
        results = _evaluate_all(data_dirs, pairs, upscale_fn, name)
        typer.echo(format_table(results, reference=ref_data, title=f"{name}: PSNR / SSIM on Y"))
        eq_results = _equivariance_all(data_dirs, eq_pairs, upscale_fn, name) if eq_pairs else []
        return results, eq_results

    if bicubic:
        from asisr.evaluation import bicubic_upscale

        results, eq_results = measure(bicubic_upscale, "bicubic (PIL)")
    else:
        # Evaluation asks for its scales explicitly, out-of-distribution ones included: allow
        # them. round(h * s) / h exceeds s by at most 0.5 / h, hence the margin (EQ's
        # round(H * s) / H for the HR image itself stays within it too).
        max_scale = max(max(sh, sw) for sh, sw in pairs + eq_pairs) + 0.5
        up = sources.open_upscaler(model, backend=backend or sources.DEFAULT_BACKEND, threads=threads, tile=tile,
                                   max_scale=max_scale, precision=precision)
        typer.echo(up.pipeline.choice, err=True)
        with up:
            results, eq_results = measure(up.upscale_to, _model_name(up))

    # 3. the report
    name = results[0]["name"]
    if eq_results:
        from asisr.evaluation import format_eq_table

        typer.echo("")
        typer.echo(format_eq_table(eq_results, title=f"{name}: scale equivariance, "
                                                     "EQ = 10 log10 MSE_Y(up(down(x)), down(up(x))), lower is better"))
    if json_out is not None:
        report = make_report(results, model=name)
        if eq_results:
            from asisr.evaluation import add_eq_to_report

            add_eq_to_report(report, eq_results)
        write_json(json_out, report, overwrite=overwrite)
        typer.echo(f"wrote {json_out}", err=True)


def _evaluate_all(data_dirs, pairs, upscale_fn, name: str) -> list[dict]:
    from asisr.evaluation import evaluate

    return [evaluate(d, pairs, upscale_fn, name=name, progress=_progress(d)) for d in data_dirs]


def _equivariance_all(data_dirs, pairs, upscale_fn, name: str) -> list[dict]:
    from asisr.evaluation import equivariance

    return [equivariance(d, pairs, upscale_fn, name=name, progress=_progress(d)) for d in data_dirs]


def _model_name(up) -> str:
    return up.pipeline.label


def _read_reference(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"reference file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read reference file {path}: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("psnr"), dict):
        raise UserError(f"reference file {path} has no \"psnr\" table ({{dataset: {{scale: dB}}}})")
    return data


def _progress(folder: Path):
    """A tqdm bar on stderr when it is a terminal; nothing otherwise."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    state: dict = {}

    def update(step: int, total: int, info: str) -> None:
        bar = state.get("bar")
        if bar is None:
            bar = state["bar"] = tqdm(total=total, desc=Path(folder).name, file=sys.stderr,
                                      leave=False, unit="step")
        bar.set_postfix_str(info, refresh=False)
        bar.update(step - bar.n)
        if step >= total:
            bar.close()

    return update


def main(argv: list[str] | None = None) -> int:
    """Console entry point: usage errors and UserErrors as one ``error:`` line, exit status 2."""
    return run_app(app, "asisr-eval", argv)


if __name__ == "__main__":
    main()
