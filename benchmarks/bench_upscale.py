#!/usr/bin/env python
"""Benchmark upscaling speed and memory of one model on several backends.

    python benchmarks/bench_upscale.py --model CKPT_OR_DIR --backends torch,onnxruntime \\
        --threads 2 --data ../shared/data/Set5 --scale 4

For each backend, one after another, a fresh Python subprocess opens the model with
``asisr.runtime.open_upscaler(model, backend=..., threads=..., tile=...)``, builds the LR inputs of
the folder with the evaluation protocol (PIL bicubic downscaling of the HR crop), runs
``--warmup`` untimed upscales and then ``--repeats`` timed passes over the whole folder.
A subprocess per backend keeps the peak-memory numbers clean: ``ru_maxrss`` is a per-process
high-water mark, so backends measured in one process would hide each other's peaks.

Printed as a Markdown table:
  * seconds per folder: median of the repeats (min-max);
  * output Mpx/s: output megapixels of one pass / median seconds;
  * peak RSS: the process's peak resident memory at the end (MiB);
  * RSS delta: peak minus the peak before the model was opened (what the backend added);
  * PSNR: mean Y-PSNR of the last pass (a sanity check that the backends agree).

The pseudo-backend ``bicubic`` (PIL, no model) gives a baseline row and needs no ``--model``.
Only the upscale calls are timed; image decoding and LR preparation are not.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

RESULT_TAG = "BENCH_RESULT "


def _maxrss_mib() -> float:
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Upscaling speed / memory of a model on several backends (Markdown table).",
        epilog="example: python benchmarks/bench_upscale.py --model liif.pth "
               "--backends torch,onnxruntime --threads 2 --data ../shared/data/Set5 --scale 4",
    )
    p.add_argument("--model", default=None,
                   help="checkpoint or exported model folder (default: the runtime's default model)")
    p.add_argument("--backends", default="torch,onnxruntime",
                   help="comma-separated backends, run in this order; 'bicubic' = PIL baseline "
                        "(default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads per backend")
    p.add_argument("--tile", type=int, default=None, help="tile size passed to the runtime")
    p.add_argument("--data", required=True, help="folder of HR images")
    p.add_argument("--scale", default="4", help="scale, e.g. 4, 2.5 or 2x3.5 (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="timed passes over the folder (default: 3)")
    p.add_argument("--warmup", type=int, default=1,
                   help="untimed upscales before timing, cycling over the images (default: 1)")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds allowed per backend subprocess (default: none)")
    p.add_argument("--_one-backend", dest="one_backend", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be >= 1")
    return args


# ------------------------------------------------------------------ child: one backend


def run_one_backend(args: argparse.Namespace) -> dict:
    """Measure one backend in this process; returns the row as a dict."""
    import numpy as np

    from asisr.evaluation import bicubic_upscale, list_images, load_image, make_pair, psnr_y, shave_for
    from asisr.scale import parse_scale

    backend = args.one_backend
    scale = parse_scale(args.scale)
    pairs = []
    for path in list_images(args.data):
        hr_c, lr = make_pair(load_image(path), scale.h, scale.w)
        pairs.append((path.name, hr_c, lr))
    out_mpx = sum(hr.shape[0] * hr.shape[1] for _, hr, _ in pairs) / 1e6

    rss_before = _maxrss_mib()
    t0 = time.perf_counter()
    if backend == "bicubic":
        up, upscale = None, bicubic_upscale
    else:
        import inspect

        from asisr.runtime import open_upscaler

        kwargs = {"backend": backend}
        if args.threads is not None:
            kwargs["threads"] = args.threads
        if args.tile is not None:
            kwargs["tile"] = args.tile
        if "max_scale" in inspect.signature(open_upscaler).parameters:
            kwargs["max_scale"] = scale.max + 0.5  # round(h * s) / h may exceed s by up to 0.5 / h
        up = open_upscaler(args.model, **kwargs)
        if hasattr(up, "__enter__"):
            up.__enter__()
        upscale = up.upscale_to
    open_s = time.perf_counter() - t0

    for i in range(args.warmup):
        _, hr, lr = pairs[i % len(pairs)]
        upscale(lr, hr.shape[:2])

    times = []
    outputs = []
    for r in range(args.repeats):
        last = r == args.repeats - 1
        t0 = time.perf_counter()
        for _, hr, lr in pairs:
            sr = upscale(lr, hr.shape[:2])
            if last:
                outputs.append(sr)
        times.append(time.perf_counter() - t0)
    shave = shave_for(scale.h, scale.w)
    psnr = float(np.mean([psnr_y(np.asarray(sr), hr, shave) for sr, (_, hr, _) in zip(outputs, pairs)]))
    if up is not None:
        if hasattr(up, "__exit__"):
            up.__exit__(None, None, None)
        if callable(getattr(up, "close", None)):
            up.close()
    peak = _maxrss_mib()
    med = statistics.median(times)
    return {
        "backend": backend,
        "ok": True,
        "images": len(pairs),
        "scale": str(scale),
        "threads": args.threads,
        "open_seconds": open_s,
        "seconds": times,
        "median_s": med,
        "min_s": min(times),
        "max_s": max(times),
        "output_mpx": out_mpx,
        "mpx_per_s": out_mpx / med if med > 0 else float("inf"),
        "peak_rss_mib": peak,
        "rss_before_mib": rss_before,
        "rss_delta_mib": peak - rss_before,
        "psnr": psnr,
    }


# ------------------------------------------------------------------ parent: all backends


def _child_argv(args: argparse.Namespace, backend: str) -> list[str]:
    argv = [sys.executable, os.path.abspath(__file__), "--_one-backend", backend,
            "--data", args.data, "--scale", args.scale,
            "--repeats", str(args.repeats), "--warmup", str(args.warmup)]
    if args.model is not None:
        argv += ["--model", args.model]
    if args.threads is not None:
        argv += ["--threads", str(args.threads)]
    if args.tile is not None:
        argv += ["--tile", str(args.tile)]
    return argv


def run_backend_subprocess(args: argparse.Namespace, backend: str) -> dict:
    try:
        proc = subprocess.run(_child_argv(args, backend), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"backend": backend, "ok": False, "error": f"timed out after {args.timeout:g} s"}
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    err_lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    if proc.stderr.strip():
        sys.stderr.write(f"--- {backend} (exit {proc.returncode}) stderr ---\n{proc.stderr}\n")
    return {"backend": backend, "ok": False,
            "error": err_lines[-1] if err_lines else f"exit status {proc.returncode}"}


def format_markdown(rows: list[dict]) -> str:
    head = ["backend", "s / folder (median)", "min-max s", "output Mpx/s", "peak RSS MiB",
            "RSS delta MiB", "PSNR dB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for r in rows:
        if not r.get("ok"):
            err = str(r.get("error", "failed")).replace("|", "\\|")
            cells = [r["backend"], f"failed: {err}"] + [""] * (len(head) - 2)
        else:
            cells = [r["backend"], f"{r['median_s']:.3f}", f"{r['min_s']:.3f}-{r['max_s']:.3f}",
                     f"{r['mpx_per_s']:.3f}", f"{r['peak_rss_mib']:.0f}", f"{r['rss_delta_mib']:.0f}",
                     f"{r['psnr']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.one_backend is not None:
        from asisr.errors import UserError

        try:
            row = run_one_backend(args)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(RESULT_TAG + json.dumps(row), flush=True)
        return 0

    backends = [b.strip().lower() for b in args.backends.split(",") if b.strip()]
    if not backends:
        print("error: --backends is empty", file=sys.stderr)
        return 2
    if not os.path.isdir(args.data):
        print(f"error: data folder not found: {args.data}", file=sys.stderr)
        return 2
    if args.json and os.path.exists(args.json):
        print(f"error: {args.json} already exists", file=sys.stderr)
        return 2
    rows = []
    for b in backends:
        print(f"running {b} ...", file=sys.stderr, flush=True)
        rows.append(run_backend_subprocess(args, b))
    first = next((r for r in rows if r.get("ok")), None)
    info = [f"model: {args.model or 'default'}", f"data: {args.data}",
            f"images: {first['images'] if first else '?'}", f"scale: x{args.scale}",
            f"threads: {args.threads if args.threads is not None else 'default'}",
            f"repeats: {args.repeats} (+{args.warmup} warm-up)",
            f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"]
    print("; ".join(info))
    print()
    print(format_markdown(rows))
    if args.json:
        from asisr.evaluation import write_json

        write_json(args.json, {"settings": {k: v for k, v in vars(args).items() if k != "one_backend"},
                               "rows": rows})
    return 0 if all(r.get("ok") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
