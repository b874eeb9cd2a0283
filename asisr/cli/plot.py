"""``python -m asisr.cli.plot``: PSNR and EQ against scale for several ``asisr-eval --json`` reports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from asisr.cli.common import make_app, run_app
from asisr.errors import UserError
from asisr.evaluation.plot import load_report, plot_reports

HELP = """\
Plot PSNR vs scale and EQ (scale equivariance) vs scale for several models on one figure.

Each RESULT.json is a report of asisr-eval --json (add --equivariance for the EQ panel); the
reference files of shared/reference/ work too (PSNR only). One line per model and dataset,
labelled with the report's model name. Only symmetric scales are plotted.

\b
Examples:
  asisr-eval data/Set5 --bicubic --scales 2,3,4,6 --equivariance --json bicubic.json
  asisr-eval data/Set5 --model liif_onnx --backend onnxruntime --scales 2,3,4,6 --equivariance --json liif.json
  python -m asisr.cli.plot liif.json bicubic.json --out psnr_eq.png

Needs matplotlib (pip install "asisr[plot]"). Exit status 2 on a usage or input problem.
"""


app = make_app()


@app.command(help=HELP, no_args_is_help=True)
def plot_cmd(
    results: Annotated[list[Path], typer.Argument(
        metavar="RESULT.json", show_default=False, help="Reports written by asisr-eval --json.")],
    out: Annotated[Path, typer.Option(
        "--out", "-o", metavar="FIG.png", show_default=False,
        help="Figure to write; the suffix picks the format (png, pdf, svg).")],
    title: Annotated[Optional[str], typer.Option("--title", help="Title above both panels.")] = None,
    dpi: Annotated[int, typer.Option("--dpi", help="Resolution of raster formats.")] = 150,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing figure.")] = False,
) -> None:
    if dpi < 1:
        raise UserError(f"--dpi must be >= 1, got {dpi}")
    reports = [load_report(p) for p in results]
    path = plot_reports(reports, out, title=title, dpi=dpi, overwrite=overwrite)
    typer.echo(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    """``python -m asisr.cli.plot``: errors as one ``error:`` line, exit status 2."""
    return run_app(app, "python -m asisr.cli.plot", argv)


if __name__ == "__main__":
    main()
