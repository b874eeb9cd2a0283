"""A folder on Ray (``asisr-run --engine ray``) against the local run: wall time, same model, same threads in total.

Why: the Ray engine is for collections that outgrow one machine; on one machine it should cost
little more than the local run (cluster start-up, scheduling), and give the same bytes. Set14's
LR images at x4 (the protocol of shared/README.md: bicubic, HR cropped to a multiple of 4) are
upscaled by one bundled model (``--model``, default eqsr_light) three ways, alternating, ``--repeats`` times:

    asisr-run LR/ --scale 4 --out OUT/ --model M --threads T                              (local)
    asisr-run LR/ --scale 4 --out OUT/ --model M --engine ray --workers W --threads T/W   (starts a cluster)
    upscale_folder_on_ray(LR, OUT, 4, model=M, workers=W, threads_per_worker=T/W)         (cluster already up)

Run from the repository root:

    python benchmarks/ray_batch.py --repeats 1 --threads 2 --workers 2
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cli_vs_official import asisr_command, asisr_env, make_lr, run_timed  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def same_bytes(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir())
    return names == sorted(p.name for p in b.iterdir()) and all(
        (a / n).read_bytes() == (b / n).read_bytes() for n in names)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hr", type=Path, default=REPO.parent / "shared" / "data" / "Set14")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--model", default="eqsr_light", help="a bundled model's name, or an exported directory")
    p.add_argument("--threads", type=int, default=2, help="threads in total (local: all in one session)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--work", type=Path, default=Path("/tmp/asisr-ray-batch"))
    a = p.parse_args(argv)
    per_worker = max(1, a.threads // a.workers)
    lr = a.work / "lr"
    make_lr(a.hr, lr, a.scale)
    run_cmd, _ = asisr_command("asisr-run")
    env = asisr_env()
    common = [str(lr), "--scale", str(a.scale), "--model", a.model]
    times: dict[str, list[float]] = {"local": [], "ray CLI": [], "ray API": []}
    import ray

    from asisr.distributed.batch import upscale_folder_on_ray

    for _ in range(a.repeats):
        out = {k: a.work / k.replace(" ", "_") for k in times}
        for folder in out.values():
            shutil.rmtree(folder, ignore_errors=True)
        times["local"].append(run_timed([*run_cmd, *common, "--out", str(out["local"]), "--threads", str(a.threads)],
                                        env, REPO, "local run")[0])
        times["ray CLI"].append(run_timed([*run_cmd, *common, "--out", str(out["ray CLI"]), "--engine", "ray",
                                           "--workers", str(a.workers), "--threads", str(per_worker)],
                                          env, REPO, "ray run")[0])
        ray.init(num_cpus=a.threads, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        start = time.perf_counter()
        upscale_folder_on_ray(lr, out["ray API"], a.scale, model=a.model, workers=a.workers,
                              threads_per_worker=per_worker, progress=False).summary()
        times["ray API"].append(time.perf_counter() - start)
        ray.shutdown()
    images = len(list(lr.iterdir()))
    print(f"{a.hr.name} x{a.scale}: {images} LR images, model {a.model}, {a.threads} threads in total, "
          f"{a.repeats} run(s) each (min / median s)\n")
    print("| run | how | wall time (s) | outputs equal the local run's |")
    print("|---|---|---|---|")
    how = {"local": f"`asisr-run --threads {a.threads}`",
           "ray CLI": f"`--engine ray --workers {a.workers} --threads {per_worker}` (starts a local cluster)",
           "ray API": f"`upscale_folder_on_ray(workers={a.workers})` on a running cluster"}
    for name, values in times.items():
        equal = "(reference)" if name == "local" else \
            ("yes, byte for byte" if same_bytes(a.work / "local", a.work / name.replace(" ", "_")) else "NO")
        print(f"| {name} | {how[name]} | {min(values):.1f} / {statistics.median(values):.1f} | {equal} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
