"""Load on ``asisr-serve``'s application: requests per second and p50/p99 latency at a few concurrencies.

Why: a service is sized by its throughput and its tail latency under concurrent clients. The
Ray Serve application of ``asisr-serve`` (``--model``, default the bundled eqsr_light; ``--replicas`` x ``--threads``)
runs on a local Ray cluster; clients on localhost POST the same 256x256 crop of a Set14 image
(``?scale=2``) from a thread pool of each concurrency level, ``--requests-per-client`` each,
after one warm-up request per replica. With a few dozen requests, p99 is about the slowest one.
Run from the repository root:

    python benchmarks/ray_serve_load.py --replicas 2 --threads 1 --concurrency 1 4 8
"""

from __future__ import annotations

import argparse
import io
import logging
import socket
import statistics
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def crop_png(path: Path, edge: int) -> bytes:
    image = Image.open(path).convert("RGB").crop((0, 0, edge, edge))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def post(url: str, body: bytes) -> float:
    start = time.perf_counter()
    with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=600) as response:
        response.read()
        if response.status != 200:
            raise RuntimeError(f"status {response.status}")
    return time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image", type=Path, default=REPO.parent / "shared" / "data" / "Set14" / "baboon.png")
    p.add_argument("--edge", type=int, default=256)
    p.add_argument("--scale", default="2")
    p.add_argument("--model", default="eqsr_light", help="a bundled model's name, or an exported directory")
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--requests-per-client", type=int, default=2)
    a = p.parse_args(argv)
    import ray

    from asisr.distributed.batch import UpscalerSpec
    from asisr.distributed.serve import ServiceOptions, start_service, stop_service

    body = crop_png(a.image, a.edge)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray.init(num_cpus=a.replicas * a.threads, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)
    rows = []
    try:
        options = ServiceOptions(UpscalerSpec(model=a.model, threads=a.threads))
        base = start_service(options, port=port, replicas=a.replicas)
        url = f"{base}/upscale?scale={a.scale}"
        with ThreadPoolExecutor(max_workers=a.replicas) as pool:  # warm-up: one per replica
            list(pool.map(lambda _: post(url, body), range(a.replicas)))
        for clients in a.concurrency:
            n = clients * a.requests_per_client
            start = time.perf_counter()
            with ThreadPoolExecutor(max_workers=clients) as pool:
                latencies = list(pool.map(lambda _: post(url, body), range(n)))
            elapsed = time.perf_counter() - start
            rows.append((clients, n, n / elapsed, statistics.median(latencies), percentile(latencies, 99)))
    finally:
        stop_service()
        ray.shutdown()
    print(f"{a.edge}x{a.edge} PNG (crop of {a.image.name}) x{a.scale}, model {a.model}, {a.replicas} replicas x "
          f"{a.threads} thread(s), clients on localhost\n")
    print("| concurrency | requests | requests/s | p50 latency (s) | p99 latency (s) |")
    print("|---|---|---|---|---|")
    for clients, n, rps, p50, p99 in rows:
        print(f"| {clients} | {n} | {rps:.2f} | {p50:.2f} | {p99:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
