"""The training loop: L1, Adam, cosine schedule, EMA, validation, checkpoints, exact resume.

A run directory holds ``state.pt`` (everything needed to continue: weights, EMA, optimiser,
schedule, iteration, history), ``best.pt`` / ``last.pt`` (EMA weights in asisr's checkpoint
format, loadable by ``asisr.models.load``), ``config.json`` and ``log.jsonl``.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from asisr.atomic import atomic_path
from asisr.errors import UserError
from asisr.models import create, save
from asisr.runtime import contract
from asisr.training.data import HR, MixedScaleDataset, SamplingConfig, SequentialFrom, list_training_images, load_hr


@dataclass
class TrainConfig:
    model: str = "eqsr_light"
    model_kwargs: dict = field(default_factory=dict)
    init_backbone: str | None = None  # checkpoint whose EDSR-baseline encoder starts the backbone
    pretrained_lr_mult: float = 1.0  # learning-rate factor for the weights copied by init_backbone
    init_weights: str | None = None  # continue from a whole asisr checkpoint of the same model (a new schedule)
    data: str = ""
    val: str | None = None  # folder of validation HR images; None: hold out the last ``val_holdout`` images of data
    val_holdout: int = 2
    val_crop: int = 384
    val_scales: tuple[float, ...] = (2.0, 3.0, 4.0)
    iters: int = 1000
    batch: int = 16
    lr: float = 2e-4
    lr_min: float = 1e-6
    warmup: int = 50
    ema_decay: float = 0.999
    val_every: int = 100
    ckpt_every: int = 50
    seed: int = 0
    workers: int = 1
    threads: int | None = None
    device: str = "cpu"
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    @staticmethod
    def from_dict(d: dict) -> "TrainConfig":
        d = dict(d)
        d["sampling"] = SamplingConfig(**d.get("sampling", {}))
        d["val_scales"] = tuple(d.get("val_scales", (2.0, 3.0, 4.0)))
        return TrainConfig(**d)


# How a run is executed, not what it computes: a resumed run may change them.
RUNTIME_FIELDS = ("threads", "workers", "device")


def same_run(a: TrainConfig, b: TrainConfig) -> bool:
    """Whether ``b`` continues ``a``: equal in everything but :data:`RUNTIME_FIELDS`."""
    return replace(a, **{f: getattr(b, f) for f in RUNTIME_FIELDS}) == b


class EMA:
    """Exponential moving average of parameters (buffers copied), with a short warm-up."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.model = copy.deepcopy(model).eval()
        self.decay = decay
        self.updates = 0
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for e, p in zip(self.model.parameters(), model.parameters()):
            e.mul_(d).add_(p.detach(), alpha=1 - d)
        for e, b in zip(self.model.buffers(), model.buffers()):
            e.copy_(b)


def _schedule(cfg: TrainConfig):
    def factor(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        t = (step - cfg.warmup) / max(1, cfg.iters - cfg.warmup)
        return (cfg.lr_min + (cfg.lr - cfg.lr_min) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))) / cfg.lr
    return factor


def _validation_images(cfg: TrainConfig, train_files: list[Path]) -> tuple[list[Path], list[np.ndarray]]:
    """(training files, validation crops): a held-out split unless a folder is given."""
    if cfg.val:
        val_files = list_training_images(cfg.val)
    else:
        if len(train_files) <= cfg.val_holdout:
            raise UserError(f"need more than {cfg.val_holdout} training images to hold some out for validation")
        train_files, val_files = train_files[:-cfg.val_holdout], train_files[-cfg.val_holdout:]
    crops = []
    for f in val_files:
        im = load_hr(f)
        h, w = im.shape[:2]
        c = min(cfg.val_crop, h, w)
        crops.append(im[(h - c) // 2:(h - c) // 2 + c, (w - c) // 2:(w - c) // 2 + c])
    return train_files, crops


@torch.no_grad()
def validate(model: torch.nn.Module, crops: list[np.ndarray], scales, device: str) -> float:
    """Mean Y-PSNR over crops and scales, with the benchmark protocol."""
    from asisr.evaluation.metrics import psnr_y
    from asisr.evaluation.protocol import make_pair, shave_for

    values = []
    for hr_full in crops:
        for s in scales:
            hr, lr = make_pair(hr_full, s, s)
            x = torch.from_numpy(lr.transpose(2, 0, 1).astype(np.float32) / 255.0)[None].to(device)
            sr = model.upscale(x, hr.shape[:2])[0].permute(1, 2, 0).float().cpu().numpy()
            values.append(psnr_y(sr, hr, shave_for(s, s)))
    return float(np.mean(values))


def _atomic_torch_save(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


class Trainer:
    def __init__(self, cfg: TrainConfig, out_dir: str | Path):
        self.cfg = cfg
        self.out = Path(out_dir)

    def _build(self):
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        model = create(cfg.model, **cfg.model_kwargs)
        copied: set[str] = set()
        if cfg.init_backbone:
            from asisr.training.warm_start import init_backbone_from

            copied = set(init_backbone_from(model, cfg.init_backbone))
        if cfg.init_weights:
            from asisr.models import load
            from asisr.models.base import load_state_dict_strict

            source = load(cfg.init_weights)
            if source.name != model.name or source.config != model.config:
                raise UserError(f"--init-weights {cfg.init_weights} is a {source.name} {source.config}, "
                                f"not this run's {model.name} {model.config}")
            load_state_dict_strict(model, source.state_dict(), model.name)
        model = model.to(cfg.device).train()
        # Pretrained weights move slowly while the freshly initialised parts catch up.
        named = list(model.named_parameters())
        groups = [{"params": [p for n, p in named if n not in copied], "lr": cfg.lr},
                  {"params": [p for n, p in named if n in copied], "lr": cfg.lr * cfg.pretrained_lr_mult}]
        opt = torch.optim.Adam([g for g in groups if g["params"]], betas=(0.9, 0.99))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(cfg))
        return model, opt, sched, EMA(model, cfg.ema_decay)

    def run(self, resume: bool = True, stop_after: int | None = None, progress: bool = True) -> dict:
        """Train to ``cfg.iters`` (or ``stop_after`` more iterations); returns the history."""
        cfg = self.cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        train_files = list_training_images(cfg.data)  # fail on bad data before creating anything
        self.out.mkdir(parents=True, exist_ok=True)
        state_path = self.out / "state.pt"
        config_path = self.out / "config.json"
        config_json = json.dumps(asdict(cfg), indent=2, default=list)
        if state_path.exists() and resume:
            saved = json.loads(config_path.read_text()) if config_path.exists() else None
            if saved is not None and not same_run(TrainConfig.from_dict(saved), cfg):
                raise UserError(f"{self.out} holds a run with a different configuration; use another --out")
        elif state_path.exists():
            raise UserError(f"{self.out} already holds a run; resume it or use another --out")
        config_path.write_text(config_json)

        files, val_crops = _validation_images(cfg, train_files)
        images = [load_hr(f) for f in files]
        model, opt, sched, ema = self._build()
        history = {"loss": [], "val": [], "best_val": -math.inf, "seconds": 0.0}
        start = 0
        if state_path.exists():
            st = torch.load(state_path, map_location=cfg.device, weights_only=False)
            model.load_state_dict(st["model"])
            ema.model.load_state_dict(st["ema"])
            ema.updates = st["ema_updates"]
            opt.load_state_dict(st["optimizer"])
            sched.load_state_dict(st["scheduler"])
            history = st["history"]
            start = st["iteration"]
        end = cfg.iters if stop_after is None else min(cfg.iters, start + stop_after)
        self._rewrite_log(history)
        if start >= end:
            return history

        dataset = MixedScaleDataset(images, cfg.sampling, cfg.seed)
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=cfg.batch, sampler=SequentialFrom(start * cfg.batch, (end - start) * cfg.batch),
            num_workers=cfg.workers, persistent_workers=False, drop_last=True)
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=cfg.iters, initial=start, desc=f"train {cfg.model}", unit="it", dynamic_ncols=True)
        t0 = time.time()
        it = start
        for batch in loader:
            batch = {k: v.to(cfg.device) for k, v in batch.items()}
            pred = model(*(batch[name] for name in contract.MODEL_INPUTS))
            loss = torch.nn.functional.l1_loss(pred, batch[HR])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            ema.update(model)
            it += 1
            loss_value = float(loss.detach())
            history["loss"].append([it, loss_value])
            self._log({"iteration": it, "loss": loss_value, "lr": sched.get_last_lr()[0]})
            if it % cfg.val_every == 0 or it == cfg.iters:
                psnr = validate(ema.model, val_crops, cfg.val_scales, cfg.device)
                history["val"].append([it, psnr])
                self._log({"iteration": it, "val_psnr": psnr})
                if psnr > history["best_val"]:
                    history["best_val"] = psnr
                    save(ema.model, self.out / "best.pt")
            if bar is not None:
                last_val = history["val"][-1][1] if history["val"] else float("nan")
                bar.set_postfix(loss=f"{loss_value:.4f}", val=f"{last_val:.2f}dB")
                bar.update(1)
            if it % cfg.ckpt_every == 0 or it == end:
                history["seconds"] += time.time() - t0
                t0 = time.time()
                self._checkpoint(state_path, model, ema, opt, sched, history, it)
            if it >= end:
                break
        if bar is not None:
            bar.close()
        return history

    def _checkpoint(self, path, model, ema, opt, sched, history, it) -> None:
        _atomic_torch_save({"model": model.state_dict(), "ema": ema.model.state_dict(), "ema_updates": ema.updates,
                            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "history": history,
                            "iteration": it}, path)
        save(ema.model, self.out / "last.pt")

    def _log(self, record: dict) -> None:
        with open(self.out / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def _rewrite_log(self, history: dict) -> None:
        """Make log.jsonl agree with the checkpoint (drop lines written after it)."""
        lines = [json.dumps({"iteration": i, "loss": v}) for i, v in history["loss"]]
        lines += [json.dumps({"iteration": i, "val_psnr": v}) for i, v in history["val"]]
        (self.out / "log.jsonl").write_text("".join(line + "\n" for line in lines))
