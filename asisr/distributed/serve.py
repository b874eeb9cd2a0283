"""An HTTP upscaling service on Ray Serve: ``POST /upscale``, ``GET /health``.

The request is the image file itself as the body (any format ``asisr-run`` reads), the
parameters are in the query string::

    curl --data-binary @photo.png 'http://127.0.0.1:8000/upscale?scale=2' -o photo_x2.png
    curl --data-binary @photo.png 'http://127.0.0.1:8000/upscale?size=1920x1080&fit=contain' -o hd.png

The answer is a PNG (16-bit inputs stay 16-bit, alpha stays), or a 4xx with one line of JSON,
``{"error": "..."}``: 400 for missing, unknown or malformed parameters, 404/405 for another path or
method, 413 for a body over ``max_body`` or an image (input or output) over ``max_pixels``, 415
for a body that is not an image, 422 for a scale the model does not take. Each replica holds one
``Upscaler`` (one backend session); requests are collected with ``serve.batch``, grouped by
input shape and parameters, and a group runs back to back on the session, one image at a time:
stacking a group into one backend call was measured no faster on CPU and changes the last bit
of the output, and each answer is meant to be the local run's bytes. The event loop stays free
while an image runs, so health checks and bad requests are answered at once.
"""

from __future__ import annotations

import asyncio
import io
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

from asisr.distributed.batch import Render, UpscalerSpec
from asisr.errors import UserError
from asisr.imageio import quiet_codecs, rgb_order
from asisr.scale import FITS, check_scale_range, parse_scale, parse_size, planned_size

DEFAULT_MAX_PIXELS = 16_777_216  # 4096x4096 output: ~200 MB of float32 RGB while it is computed
DEFAULT_MAX_BODY = 32 << 20
DEFAULT_MAX_BATCH = 8
PARAMETERS = ("scale", "size", "fit")
APP_NAME = "asisr"
log = logging.getLogger("asisr.serve")


class RequestError(Exception):
    """A request the service refuses: its HTTP status and the one-line message of the JSON answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = " ".join(message.split())


@dataclass(frozen=True)
class ServiceOptions:
    """What every replica is built from (picklable: it travels to the replicas)."""

    spec: UpscalerSpec
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_body: int = DEFAULT_MAX_BODY
    max_batch: int = DEFAULT_MAX_BATCH


@dataclass(frozen=True)
class Job:
    """One accepted request: the encoded image, what to do with it, and its group key (shape, parameters)."""

    data: bytes
    render: Render
    key: tuple


def parse_parameters(query: dict[str, str]) -> Render:
    """``scale`` or ``size`` (WIDTHxHEIGHT, as asisr-run) and ``fit``, or a 400."""
    unknown = sorted(set(query) - set(PARAMETERS))
    if unknown:
        raise RequestError(400, f"unknown parameter {unknown[0]!r}: use scale or size (and fit)")
    scale, size, fit = query.get("scale"), query.get("size"), query.get("fit", "stretch")
    if (scale is None) == (size is None):
        raise RequestError(400, "give exactly one of the parameters scale (e.g. scale=2) or size (e.g. "
                                "size=1920x1080)" + (", not both" if scale is not None else ""))
    if fit not in FITS:
        raise RequestError(400, f"invalid fit {fit!r}: choose one of {', '.join(FITS)}")
    if fit != "stretch" and size is None:
        raise RequestError(400, "fit applies to size (a scale keeps the aspect ratio, or sets it per axis)")
    try:
        return Render(parse_scale(scale), None, fit) if scale is not None else Render(None, parse_size(size), fit)
    except UserError as e:
        raise RequestError(400, str(e)) from None


def image_size(data: bytes) -> tuple[int, int, str]:
    """(height, width, mode) from the header, before decoding anything: a 415 for what is not an image."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size[1], im.size[0], im.mode
    except Image.DecompressionBombError:
        raise RequestError(413, "image has too many pixels") from None
    except Exception:  # PIL raises many kinds on a bad file
        raise RequestError(415, "the body is not an image asisr can read (send the image file itself as the "
                                "request body)") from None


def check_pixels(lr_hw: tuple[int, int], render: Render, size_rule: str, limit: int) -> None:
    """Input and output within ``limit`` pixels (413); the output is what takes the memory."""
    h, w = lr_hw
    if h * w > limit:
        raise RequestError(413, f"input {w}x{h} has more pixels than this server's limit of {limit} per image")
    out_h, out_w = planned_size(h, w, render.scale, render.size, size_rule)
    if out_h * out_w > limit:
        raise RequestError(413, f"output {out_w}x{out_h} would have more pixels than this server's limit of "
                                f"{limit} per image")


def decode_image(data: bytes) -> np.ndarray:
    """Bytes -> the array ``asisr.imageio.read_image`` gives for the same file (RGB(A), uint8/uint16)."""
    with quiet_codecs():
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise RequestError(415, "the body is not an image asisr can read (it does not decode: corrupt or truncated)")
    if image.dtype not in (np.uint8, np.uint16):
        raise RequestError(415, f"unsupported pixel type {image.dtype}")
    try:
        return rgb_order(image, "the body")
    except UserError as e:
        raise RequestError(415, str(e)) from None


def encode_png(image: np.ndarray) -> bytes:
    """The PNG ``asisr.imageio.write_image`` writes for ``image``."""
    if image.ndim == 3 and image.shape[2] == 3:
        image = image[:, :, ::-1]
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, [2, 1, 0, 3]]
    with quiet_codecs():
        ok, encoded = cv2.imencode(".png", np.ascontiguousarray(image))
    if not ok:
        raise RequestError(500, "cannot encode the output as PNG")
    return encoded.tobytes()


class UpscaleService:
    """The service's logic, without Ray: one ``Upscaler``, the request checks, the grouped computation."""

    def __init__(self, options: ServiceOptions):
        self.options = options
        self.upscaler = options.spec.open().__enter__()
        self.size_rule = self.upscaler.descriptor.size_rule
        self.compute_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="asisr-upscale")
        self.computed = {"images": 0, "batches": 0, "largest_batch": 0}  # this replica's, since it started

    def health(self) -> dict:
        return {"status": "ok", "model": self.upscaler.descriptor.arch, "max_scale": self.upscaler.max_scale,
                "max_pixels": self.options.max_pixels, "max_body": self.options.max_body,
                "replica": dict(self.computed)}

    async def handle(self, request, run_batched) -> object:
        """Route one request; every refusal is a JSON line, nothing a request sends brings the replica down."""
        from starlette.responses import JSONResponse, Response

        try:
            path, method = request.url.path.rstrip("/") or "/", request.method
            if path == "/health":
                if method != "GET":
                    raise RequestError(405, "use GET /health")
                return JSONResponse(self.health())
            if path != "/upscale":
                raise RequestError(404, f"no such endpoint {path}: POST /upscale or GET /health")
            if method != "POST":
                raise RequestError(405, "use POST /upscale with the image as the body")
            job = self.accept(dict(request.query_params), await self.read_body(request))
            status, payload = await run_batched(job)
            if status != 200:
                raise RequestError(status, payload.decode())
            return Response(payload, media_type="image/png")
        except RequestError as e:
            return JSONResponse({"error": e.message}, status_code=e.status)
        except Exception as e:  # a bug must not cost the replica: say so, log it, carry on
            log.exception("request failed")
            return JSONResponse({"error": f"internal error: {type(e).__name__}"}, status_code=500)

    async def read_body(self, request) -> bytes:
        """The body, refused (413) as soon as it passes ``max_body``, declared or not."""
        limit = self.options.max_body
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise RequestError(413, f"body of {int(declared)} bytes exceeds this server's limit of {limit} bytes")
        chunks, received = [], 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise RequestError(413, f"body exceeds this server's limit of {limit} bytes")
            chunks.append(chunk)
        if not received:
            raise RequestError(400, "missing image: send the image file as the request body")
        return b"".join(chunks)

    def accept(self, query: dict[str, str], data: bytes) -> Job:
        """Every check that needs no decoding: parameters, scale range, pixel counts from the header."""
        render = parse_parameters(query)
        if render.scale is not None:
            try:
                check_scale_range(render.scale, self.upscaler.max_scale)
            except UserError as e:
                raise RequestError(422, str(e)) from None
        h, w, mode = image_size(data)
        check_pixels((h, w), render, self.size_rule, self.options.max_pixels)
        return Job(data, render, (h, w, mode, render))

    def compute(self, jobs: list[Job]) -> list[tuple[int, bytes]]:
        """(status, PNG or message) per job, in order; equal shapes and parameters run back to back."""
        results: list[tuple[int, bytes]] = [(500, b"not computed")] * len(jobs)
        order = sorted(range(len(jobs)), key=lambda i: repr(jobs[i].key))
        for i in order:
            results[i] = self.compute_one(jobs[i])
        self.computed["images"] += len(jobs)
        self.computed["batches"] += 1
        self.computed["largest_batch"] = max(self.computed["largest_batch"], len(jobs))
        return results

    def compute_one(self, job: Job) -> tuple[int, bytes]:
        try:
            return 200, encode_png(job.render(self.upscaler, decode_image(job.data)))
        except RequestError as e:
            return e.status, e.message.encode()
        except UserError as e:  # the image and the scale are fine alone, not together (e.g. a size below x1)
            return 422, " ".join(str(e).split()).encode()

    async def compute_batch(self, jobs: list[Job]) -> list[tuple[int, bytes]]:
        return await asyncio.get_running_loop().run_in_executor(self.compute_thread, self.compute, jobs)

    def close(self) -> None:
        self.compute_thread.shutdown(wait=True)
        self.upscaler.__exit__(None, None, None)


def deployment(options: ServiceOptions, replicas: int):
    """The Ray Serve application: ``replicas`` copies of the service, each with its own session."""
    from ray import serve

    @serve.deployment(name="upscale", num_replicas=replicas, max_ongoing_requests=4 * options.max_batch,
                      ray_actor_options={"num_cpus": options.spec.threads, "num_gpus": options.spec.gpus},
                      graceful_shutdown_timeout_s=30, health_check_period_s=5)
    class Upscale(UpscaleService):
        def __init__(self, options: ServiceOptions):
            super().__init__(options)
            self.batched.set_max_batch_size(options.max_batch)

        @serve.batch(max_batch_size=DEFAULT_MAX_BATCH, batch_wait_timeout_s=0.005)
        async def batched(self, jobs: list[Job]) -> list[tuple[int, bytes]]:
            return await self.compute_batch(jobs)

        async def __call__(self, request):
            return await self.handle(request, self.batched)

        def __del__(self) -> None:  # Serve drains the replica's requests first (graceful shutdown)
            self.close()

    return Upscale.bind(options)


def start_service(options: ServiceOptions, host: str = "127.0.0.1", port: int = 8000, replicas: int = 1) -> str:
    """Deploy on the Ray this process is connected to; returns the base URL once every replica is up."""
    from ray import serve

    if replicas < 1:
        raise UserError("--replicas must be positive")
    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # the command says what matters
    serve.start(http_options={"host": host, "port": port}, logging_config={"log_level": "WARNING"})
    serve.run(deployment(options, replicas), name=APP_NAME, route_prefix="/")
    return f"http://{host}:{port}"


def stop_service() -> None:
    """Stop the application (its replicas finish their requests first), and Serve with it unless the
    cluster runs other applications: a shared cluster keeps its other services and their port."""
    from ray import serve

    serve.delete(APP_NAME)
    if not serve.status().applications:
        serve.shutdown()
