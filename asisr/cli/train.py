"""``asisr-train``: train a model with EQSR's mixed-scale batches; resumes automatically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from asisr.cli.common import make_app, run_app
from asisr.errors import UserError

HELP = (
    "Train an arbitrary-scale SR model on a folder of HR images. Every sample draws its own scale\n"
    "s ~ U(scale-min, scale-max), crops an HR patch of round(patch * s), bicubic-downsamples it to\n"
    "patch x patch and keeps a patch x patch window of HR pixels, so one batch mixes scales.\n"
    "L1 loss, Adam, cosine schedule, EMA weights; validation PSNR on held-out images; checkpoints\n"
    "in OUT. Running the same command again resumes from the last checkpoint; running it with a\n"
    "larger --iters extends the run (finished or not), its learning rate continuing as --extend says.\n\n"
    "Examples:\n\n"
    "\b\n"
    "  asisr-train --model eqsr_light --data DIV2K_train_HR/ --out runs/light \\\n"
    "      --iters 300000\n"
    "  asisr-train --model liif --data photos/ --out runs/liif --query random \\\n"
    "      --init-backbone liif.pth\n"
    "  asisr-train --model eqsr_light --data DIV2K_train_HR/ --out runs/light \\\n"
    "      --iters 400000 --extend cosine\n"
    "  asisr-train --model lmf --data photos/ --out runs/lmf --query random \\\n"
    "      --init-backbone liif.pth --freeze backbone.encoder \\\n"
    "      --teacher liif.pth --pool 4096\n\n"
    "The EMA weights with the best validation PSNR are OUT/best.pt (use with --model anywhere)."
)
app = make_app(HELP)


def _model_kwargs(items: list[str] | None) -> dict:
    kwargs = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"invalid --model-arg {item!r}: expected KEY=VALUE, e.g. n_feats=32")
        try:
            kwargs[key] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key] = value
    return kwargs


@app.command(help=HELP)
def train(
    data: Path = typer.Option(..., "--data", help="Folder of HR training images."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory (checkpoints, logs, best.pt)."),
    model: str = typer.Option("eqsr_light", "--model", "-m", help="Registered model name (eqsr_light, liif, eqsr_hat)."),
    model_arg: Optional[list[str]] = typer.Option(None, "--model-arg", help="Constructor argument KEY=VALUE (repeatable)."),
    init_backbone: Optional[Path] = typer.Option(None, "--init-backbone",
                                                 help="Start the backbone from this LIIF checkpoint's EDSR encoder."),
    init_weights: Optional[Path] = typer.Option(None, "--init-weights",
                                                help="Start from all weights of an asisr checkpoint of the same model."),
    pretrained_lr_mult: float = typer.Option(1.0, "--pretrained-lr-mult",
                                             help="Learning-rate factor for the --init-backbone weights."),
    iters: int = typer.Option(1000, "--iters", help="Total iterations; more than a run in OUT has extends it."),
    extend: Optional[str] = typer.Option(
        None, "--extend", help="How the learning rate continues when --iters extends a run: cosine (the default; "
        "from the peak --lr down to the minimum at the new end, no new warm-up) or constant (keep the rate reached)."),
    batch: int = typer.Option(16, "--batch", help="Samples per batch."),
    patch: int = typer.Option(48, "--patch", help="LR patch edge (= HR window edge)."),
    lr: float = typer.Option(2e-4, "--lr", help="Peak learning rate (cosine decay)."),
    warmup: int = typer.Option(50, "--warmup", help="Linear learning-rate warm-up iterations."),
    ema_decay: float = typer.Option(0.999, "--ema-decay",
                                    help="EMA decay; the EMA averages ~1/(1-decay) iterations, so short runs want less."),
    scale_min: float = typer.Option(1.0, "--scale-min"),
    scale_max: float = typer.Option(4.0, "--scale-max"),
    asymmetric: bool = typer.Option(False, "--asymmetric", help="Draw height and width scales independently."),
    query: str = typer.Option("window", "--query", help="window (contiguous HR pixels) or random (rows x cols)."),
    val: Optional[Path] = typer.Option(None, "--val", help="Validation HR folder; default: hold out 2 training images."),
    val_every: int = typer.Option(100, "--val-every"),
    ckpt_every: int = typer.Option(50, "--ckpt-every"),
    seed: int = typer.Option(0, "--seed"),
    workers: int = typer.Option(1, "--workers", help="DataLoader worker processes."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    teacher: Optional[Path] = typer.Option(None, "--teacher",
                                           help="Distil from this checkpoint (any model asisr loads, e.g. official LIIF)."),
    teacher_weight: float = typer.Option(1.0, "--teacher-weight",
                                         help="Weight of the L1 to the teacher's output; the ground truth gets the rest."),
    freeze: Optional[str] = typer.Option(None, "--freeze",
                                         help="Keep this submodule's weights as initialised, e.g. backbone.encoder."),
    pool: int = typer.Option(0, "--pool", help="Train on this many samples drawn once and cached with their teacher "
                                               "targets and --freeze outputs (fast upsampler-only phases); 0: fresh "
                                               "samples every iteration."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Folder for the --pool cache (default OUT/cache)."),
) -> None:
    from asisr.training.data import SamplingConfig
    from asisr.training.trainer import EXTEND_MODES, TrainConfig, Trainer, describe_schedule

    for name, value in (("--iters", iters), ("--batch", batch), ("--patch", patch), ("--val-every", val_every),
                        ("--ckpt-every", ckpt_every)):
        if value < 1:
            raise UserError(f"{name} must be positive")
    if extend is not None and extend not in EXTEND_MODES:
        raise UserError(f"--extend must be {' or '.join(EXTEND_MODES)}, not {extend!r}")
    if not (0.0 <= teacher_weight <= 1.0):
        raise UserError("--teacher-weight must be in [0, 1]")
    if teacher_weight != 1.0 and teacher is None:
        raise UserError("--teacher-weight needs --teacher")
    if teacher is not None and not teacher.is_file():  # before the data and the model are loaded
        raise UserError(f"--teacher {teacher}: no such checkpoint file")
    if pool < 0:
        raise UserError("--pool must be 0 or a positive number of samples")
    if cache is not None and not pool:
        raise UserError("--cache needs --pool")
    if not (0.0 <= ema_decay < 1.0):
        raise UserError("--ema-decay must be in [0, 1)")
    if not (1.0 <= scale_min <= scale_max):
        raise UserError("need 1 <= --scale-min <= --scale-max")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UserError("--device cuda asked for, but torch sees no CUDA device")
    cfg = TrainConfig(
        model=model, model_kwargs=_model_kwargs(model_arg), init_backbone=str(init_backbone) if init_backbone else None,
        pretrained_lr_mult=pretrained_lr_mult, init_weights=str(init_weights) if init_weights else None,
        data=str(data), val=str(val) if val else None, iters=iters, batch=batch, lr=lr, warmup=warmup, ema_decay=ema_decay, val_every=val_every,
        ckpt_every=ckpt_every, seed=seed, workers=workers, threads=threads, device=device,
        teacher=str(teacher) if teacher else None, teacher_weight=teacher_weight, freeze=freeze, pool=pool,
        cache=str(cache) if cache else None,
        sampling=SamplingConfig(patch=patch, scale_min=scale_min, scale_max=scale_max, asymmetric=asymmetric,
                                query=query))
    trainer = Trainer(cfg, out)
    history = trainer.run(extend=extend, notify=typer.echo)
    best = history["best_val"]
    extended = ""
    if trainer.extension is not None:
        seg = trainer.extension["segment"]
        extended = f", extended from {trainer.extension['from']} (+{seg['end'] - seg['start']} it {seg['kind']})"
    typer.echo(f"done: {len(history['loss'])} iterations{extended}; schedule: {describe_schedule(history['schedule'])}; "
               f"best validation PSNR {best:.3f} dB -> {out / 'best.pt'}")


def main(argv: list[str] | None = None) -> int:
    return run_app(app, "asisr-train", argv)


if __name__ == "__main__":
    main()
