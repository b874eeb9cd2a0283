"""``asisr-serve``: an upscaling HTTP service on Ray Serve (``POST /upscale``, ``GET /health``)."""

from __future__ import annotations

import signal
import threading
from typing import Optional

import typer

from asisr.cli.common import make_app, run_app
from asisr.errors import UserError

HELP = (
    "Serve a model over HTTP on Ray Serve: POST /upscale with the image file as the body and scale or size "
    "in the query string returns the PNG; GET /health says the model and the limits.\n\n"
    "Examples:\n\n"
    "\b\n"
    "  asisr-serve --port 8000\n"
    "  curl --data-binary @photo.png -o x2.png \\\n"
    "      'http://127.0.0.1:8000/upscale?scale=2'\n"
    "  curl --data-binary @photo.png -o hd.png \\\n"
    "      'http://127.0.0.1:8000/upscale?size=1920x1080&fit=contain'\n"
    "  asisr-serve --model liif --replicas 4 --host 0.0.0.0 \\\n"
    "      --ray-address head-node:6379\n\n"
    "A bad request gets a 4xx and one line of JSON, {\"error\": \"...\"}: 400 (parameters), 413 (body over "
    "--max-body, image over --max-pixels), 415 (not an image), 422 (scale out of the model's range). Without "
    "--ray-address a local Ray cluster is started. Ctrl-C (or SIGTERM) stops it: requests in progress are "
    "answered first. Needs asisr[ray]."
)
app = make_app(HELP)


@app.command(help=HELP)
def serve(
    model: Optional[str] = typer.Option(None, "--model", "-m",
                                        help="Exported ONNX directory, checkpoint, or a bundled model's name; "
                                             "default: the bundled default model."),
    port: int = typer.Option(8000, "--port", "-p", help="HTTP port."),
    host: str = typer.Option("127.0.0.1", "--host",
                             help="Address to listen on; 0.0.0.0 to be reachable from other machines."),
    replicas: int = typer.Option(1, "--replicas", help="Copies of the model, each with its own session."),
    threads: int = typer.Option(1, "--threads", help="CPU threads per replica."),
    backend: str = typer.Option("auto", "--backend", "-b",
                                help="auto (default: openvino where installed, else onnxruntime), openvino, "
                                     "onnxruntime, torch or tensorrt."),
    precision: str = typer.Option("auto", "--precision",
                                  help="auto (default: the fastest native precision within the model's measured "
                                       "0.02 dB budget, else fp32), fp32, bf16, fp16 or int8 (an INT8 export)."),
    provider: Optional[list[str]] = typer.Option(None, "--provider",
                                                 help="ONNX Runtime execution provider: cpu, cuda, tensorrt "
                                                      "(repeatable); cuda/tensorrt give each replica a GPU."),
    max_pixels: Optional[str] = typer.Option(None, "--max-pixels",
                                             help="Refuse images whose input or output has more pixels "
                                                  "(default 16777216, 4096x4096); e.g. 8000000 or 2560x1440."),
    max_body: Optional[str] = typer.Option(None, "--max-body", help="Refuse bodies larger than this (default 32M)."),
    max_batch: int = typer.Option(8, "--max-batch", help="Requests a replica collects into one batch."),
    max_memory: Optional[str] = typer.Option(None, "--max-memory",
                                             help="Tiling memory budget per replica, e.g. 512M (default 1G)."),
    max_scale: Optional[float] = typer.Option(None, "--max-scale",
                                              help="Refuse scales above this (default: the model's)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address",
                                              help="Join this Ray cluster (host:port or ray://...); default: "
                                                   "start a local one."),
) -> None:
    """Serve until interrupted."""
    from asisr.distributed.cluster import require_ray

    require_ray("asisr-serve")
    options = _options(model, backend, threads, provider, max_pixels, max_body, max_batch, max_memory, max_scale,
                       precision)
    if not 0 < port < 65536:
        raise UserError(f"invalid --port {port}: expected 1 to 65535")
    if replicas < 1:
        raise UserError("--replicas must be positive")
    from asisr.distributed.batch import check_model
    from asisr.distributed.cluster import ray_cluster
    from asisr.distributed.serve import start_service, stop_service

    check_model(options.spec, None)
    with ray_cluster(ray_address, "asisr-serve"):
        if ray_address is None:  # a local cluster: the proxy listens on this machine
            _check_port_free(host, port)
        stop = _stop_on_signal()  # from here a Ctrl-C, even while the replicas start, ends in the graceful stop
        typer.echo(f"starting {replicas} replica{'s' * (replicas > 1)} ...", err=True)
        try:
            url = start_service(options, host, port, replicas)
            if not stop.is_set():
                typer.echo(f"serving on {url}: POST {url}/upscale?scale=2 (the image as the body), GET {url}/health;"
                           " Ctrl-C stops", err=True)
            while not stop.wait(0.5):
                pass
        finally:
            typer.echo("stopping: answering the requests in progress ...", err=True)
            stop_service()
    typer.echo("stopped", err=True)


def _options(model, backend, threads, provider, max_pixels, max_body, max_batch, max_memory, max_scale,
             precision="auto"):
    from asisr.distributed.batch import UpscalerSpec
    from asisr.distributed.serve import DEFAULT_MAX_BODY, DEFAULT_MAX_PIXELS, ServiceOptions
    from asisr.runtime.precision import check_precision
    from asisr.runtime.tiling import parse_memory

    if threads < 1 or max_batch < 1:
        raise UserError("--threads and --max-batch must be positive")
    check_precision(precision)
    spec = UpscalerSpec(model, backend, threads, tuple(provider) if provider else None, None, max_scale,
                        parse_memory(max_memory) if max_memory is not None else None, precision)
    return ServiceOptions(spec, _parse_pixels(max_pixels) if max_pixels is not None else DEFAULT_MAX_PIXELS,
                          parse_memory(max_body) if max_body is not None else DEFAULT_MAX_BODY, max_batch)


def _parse_pixels(text: str) -> int:
    """``8000000`` or ``WIDTHxHEIGHT``."""
    from asisr.scale import parse_size

    if text.strip().isdigit() and int(text) > 0:
        return int(text)
    try:
        h, w = parse_size(text)
    except UserError:
        raise UserError(f"invalid --max-pixels {text!r}: a number of pixels like 8000000, or WIDTHxHEIGHT") from None
    return h * w


def _check_port_free(host: str, port: int) -> None:
    """A port in use would leave Serve's proxy failing in a loop: said here instead, in one line."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e} (choose another --port)") from None


def _stop_on_signal() -> threading.Event:
    """An event SIGINT and SIGTERM set, instead of interrupting: both end in the same graceful stop."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    return stop


def main(argv: list[str] | None = None) -> int:
    return run_app(app, "asisr-serve", argv)


if __name__ == "__main__":
    main()
