"""The training loop: L1, Adam, cosine schedule, EMA, validation, checkpoints, exact resume.

A run directory holds ``state.pt`` (everything needed to continue: weights, EMA, optimiser,
schedule, iteration, history), ``best.pt`` / ``last.pt`` (EMA weights in asisr's checkpoint
format, loadable by ``asisr.models.load``, with the schedule done so far in ``asisr.card``),
``config.json`` and ``log.jsonl``.

The learning-rate schedule is a list of segments (``history["schedule"]``): the run's own
warm-up + cosine over ``[0, iters)``, then one segment per extension (a larger ``iters`` on a
later invocation), each ``cosine`` (from the peak ``lr`` to ``lr_min`` at the new end, no new
warm-up) or ``constant`` (the learning rate the schedule had reached). Extensions are appended
after the planned end, so extending a run stopped part-way gives exactly what extending it after
it finished gives.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
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
    # distillation (training/distill.py): the teacher's L1 has weight ``teacher_weight``, ground truth the rest
    teacher: str | None = None
    teacher_weight: float = 1.0
    freeze: str | None = None  # a submodule whose weights stay as initialised, e.g. "backbone.encoder"
    pool: int = 0  # > 0: train on this many samples cached once with their teacher targets and frozen outputs
    cache: str | None = None  # where the pool is kept; default OUT/cache

    @staticmethod
    def from_dict(d: dict) -> "TrainConfig":
        d = dict(d)
        d["sampling"] = SamplingConfig(**d.get("sampling", {}))
        d["val_scales"] = tuple(d.get("val_scales", (2.0, 3.0, 4.0)))
        return TrainConfig(**d)


# How a run is executed, not what it computes: a resumed run may change them.
RUNTIME_FIELDS = ("threads", "workers", "device", "cache")
# What a later invocation may raise: the run continues on an extension of its schedule.
EXTENSIBLE_FIELDS = ("iters",)
EXTEND_MODES = ("cosine", "constant")


def differing_fields(a: TrainConfig, b: TrainConfig) -> list[str]:
    """The fields in which ``b`` computes something else than ``a`` (``sampling.patch`` for nested ones),
    ignoring :data:`RUNTIME_FIELDS` and :data:`EXTENSIBLE_FIELDS`."""
    out = []
    for f in fields(TrainConfig):
        if f.name in RUNTIME_FIELDS or f.name in EXTENSIBLE_FIELDS:
            continue
        x, y = getattr(a, f.name), getattr(b, f.name)
        if f.name == "sampling":
            out += [f"sampling.{g.name}" for g in fields(SamplingConfig) if getattr(x, g.name) != getattr(y, g.name)]
        elif x != y:
            out.append(f.name)
    return out


def _field_value(cfg: TrainConfig, name: str):
    obj = cfg
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


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
            if p.requires_grad:
                e.mul_(d).add_(p.detach(), alpha=1 - d)
            else:  # frozen: kept bit-exact (an average of equal values rounds)
                e.copy_(p)
        for e, b in zip(self.model.buffers(), model.buffers()):
            e.copy_(b)


def _factor(segments: list[dict], cfg: TrainConfig, step: int) -> float:
    """Learning-rate factor (of ``cfg.lr``) for scheduler step ``step``: iteration ``step + 1`` uses it.

    The segment holding a step is the last one starting at or before it; past the last segment's end
    its final value holds. ``constant`` keeps the value the previous segment reached at its end.
    """
    k = max(i for i, seg in enumerate(segments) if seg["start"] <= step)
    seg = segments[k]
    if seg["kind"] == "constant":
        return _factor(segments[:k], cfg, segments[k - 1]["end"])
    s, w = step - seg["start"], seg["warmup"]
    if s < w:
        return (s + 1) / w
    t = (s - w) / max(1, seg["end"] - seg["start"] - w)
    return (cfg.lr_min + (cfg.lr - cfg.lr_min) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))) / cfg.lr


def _segment(cfg: TrainConfig, previous: list[dict], start: int, end: int, kind: str, warmup: int = 0) -> dict:
    """One schedule segment over iterations ``start + 1 .. end``. ``lr_start`` is the learning rate of
    its first iteration, ``lr_end`` the one it has reached after its last (what ``constant`` keeps)."""
    if kind not in EXTEND_MODES:
        raise UserError(f"unknown schedule extension {kind!r}: {' or '.join(EXTEND_MODES)}")
    seg: dict = {"start": start, "end": end, "kind": kind, "warmup": warmup}
    segments = [*previous, seg]
    seg["lr_start"] = cfg.lr * _factor(segments, cfg, start)
    seg["lr_end"] = cfg.lr * _factor(segments, cfg, end)
    if kind == "cosine":
        seg["lr_peak"] = cfg.lr
    return seg


def initial_schedule(cfg: TrainConfig) -> list[dict]:
    """A new run's schedule: linear warm-up, then cosine from ``lr`` to ``lr_min`` at ``iters``."""
    return [_segment(cfg, [], 0, cfg.iters, "cosine", cfg.warmup)]


def extend_schedule(cfg: TrainConfig, segments: list[dict], iters: int, mode: str) -> list[dict]:
    """``segments`` continued to ``iters`` total iterations.

    ``cosine`` decays from the peak ``lr`` to ``lr_min`` at ``iters``, with no new warm-up: a run's
    cosine has reached ``lr_min`` at its end, so a tail from the learning rate it had reached would be
    flat (``constant`` at ``lr_min``); Adam's moment estimates are warm, which is what the warm-up
    protects at the start. ``constant`` keeps the learning rate reached at the old end.
    """
    end = segments[-1]["end"]
    if iters <= end:
        raise ValueError(f"extend_schedule: {iters} is not beyond the schedule's end {end}")
    return [*segments, _segment(cfg, segments, end, iters, mode)]


def schedule_until(cfg: TrainConfig, segments: list[dict], it: int) -> list[dict]:
    """The part of the schedule that iterations ``1 .. it`` followed (the last segment cut at ``it``)."""
    done = []
    for k, seg in enumerate(segments):
        if seg["start"] >= it:
            break
        if seg["end"] > it:
            seg = {**seg, "end": it, "lr_end": cfg.lr * _factor(segments[:k + 1], cfg, it)}
        done.append(seg)
    return done


def describe_schedule(segments: list[dict]) -> str:
    """E.g. ``2000 it cosine (warm-up 50, 0.001 -> 1e-06), then +1000 it constant (1e-06)``."""
    parts = []
    for k, seg in enumerate(segments):
        n = seg["end"] - seg["start"]
        head = f"{n} it" if k == 0 else f"+{n} it"
        if seg["kind"] == "constant":
            parts.append(f"{head} constant ({seg['lr_start']:.3g})")
        else:
            warm = f"warm-up {seg['warmup']}, " if seg["warmup"] else ""
            parts.append(f"{head} cosine ({warm}{seg['lr_peak']:.3g} -> {seg['lr_end']:.3g})")
    return ", then ".join(parts)


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


def _hardware(cfg: TrainConfig) -> str:
    """E.g. ``cpu (AMD EPYC 7B13, 2 threads)`` or ``cuda (NVIDIA H200)``: what the card's wall time was measured on."""
    if cfg.device.startswith("cuda"):
        return f"cuda ({torch.cuda.get_device_name()})"
    import platform

    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu ({name}, {cfg.threads or torch.get_num_threads()} threads)"


def _atomic_torch_save(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


class Trainer:
    def __init__(self, cfg: TrainConfig, out_dir: str | Path):
        self.cfg = cfg
        self.out = Path(out_dir)
        # set by run() when it extends the run: {"from", "to", "done", "segment"}
        self.extension: dict | None = None

    def _build(self, segments: list[dict]):
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
        if cfg.freeze:
            from asisr.training.distill import freeze

            freeze(model, cfg.freeze)
        model = model.to(cfg.device).train()
        # Pretrained weights move slowly while the freshly initialised parts catch up.
        named = list(model.named_parameters())
        groups = [{"params": [p for n, p in named if n not in copied], "lr": cfg.lr},
                  {"params": [p for n, p in named if n in copied], "lr": cfg.lr * cfg.pretrained_lr_mult}]
        opt = torch.optim.Adam([g for g in groups if g["params"]], betas=(0.9, 0.99))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: _factor(segments, cfg, step))
        return model, opt, sched, EMA(model, cfg.ema_decay)

    def run(self, resume: bool = True, stop_after: int | None = None, progress: bool = True,
            extend: str | None = None, notify=None) -> dict:
        """Train to ``cfg.iters`` (or ``stop_after`` more iterations); returns the history.

        A run directory whose schedule ends before ``cfg.iters`` is extended: ``extend`` (``cosine``
        when None) says how the learning rate continues, see :func:`extend_schedule`. ``notify``
        (a callable taking one line) hears about an extension before training starts.
        """
        cfg = self.cfg
        if extend is not None and extend not in EXTEND_MODES:
            raise UserError(f"unknown --extend {extend!r}: {' or '.join(EXTEND_MODES)}")
        previous = torch.get_num_threads()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        try:
            return self._run(resume, stop_after, progress, extend, notify)
        finally:
            torch.set_num_threads(previous)  # the caller's thread count, whatever happened

    def _run(self, resume: bool, stop_after: int | None, progress: bool, extend: str | None, notify) -> dict:
        cfg = self.cfg
        train_files = list_training_images(cfg.data)  # fail on bad data before creating anything
        self.out.mkdir(parents=True, exist_ok=True)
        state_path = self.out / "state.pt"
        config_path = self.out / "config.json"
        config_json = json.dumps(asdict(cfg), indent=2, default=list)
        self.extension = None
        st = None
        if state_path.exists() and resume:
            saved = TrainConfig.from_dict(json.loads(config_path.read_text())) if config_path.exists() else None
            if saved is not None and (diff := differing_fields(saved, cfg)):
                changes = ", ".join(f"{f} {_field_value(saved, f)!r} -> {_field_value(cfg, f)!r}" for f in diff)
                raise UserError(f"{self.out} holds a run with a different configuration ({changes}); only --iters "
                                f"may change (to extend it); use another --out for a new run")
            st = torch.load(state_path, map_location=cfg.device, weights_only=False)
            if "schedule" not in st["history"]:  # written before schedules had segments: its own cosine
                st["history"]["schedule"] = initial_schedule(saved if saved is not None else cfg)
                st["history"].setdefault("lr", [])
                _atomic_torch_save(st, state_path)  # before config.json says another iters
            segments = self._plan(st["history"]["schedule"], st["iteration"], extend, notify)
        elif state_path.exists():
            raise UserError(f"{self.out} already holds a run; resume it or use another --out")
        else:
            segments = initial_schedule(cfg)
        config_path.write_text(config_json)

        files, val_crops = _validation_images(cfg, train_files)
        images = [load_hr(f) for f in files]
        model, opt, sched, ema = self._build(segments)
        history = {"loss": [], "lr": [], "val": [], "best_val": -math.inf, "seconds": 0.0, "schedule": segments}
        start = 0
        if st is not None:
            model.load_state_dict(st["model"])
            ema.model.load_state_dict(st["ema"])
            ema.updates = st["ema_updates"]
            opt.load_state_dict(st["optimizer"])
            sched.load_state_dict(st["scheduler"])
            history = st["history"]
            history["schedule"] = segments
            start = st["iteration"]
            # The saved optimiser holds the learning rate of the plan it was saved under; an extension
            # changes the plan from the old end on, so set the current one from this plan.
            for group, base_lr in zip(opt.param_groups, sched.base_lrs):
                group["lr"] = base_lr * _factor(segments, cfg, sched.last_epoch)
            del st
        end = cfg.iters if stop_after is None else min(cfg.iters, start + stop_after)
        self._rewrite_log(history)
        if start >= end:
            return history

        segment_ends = {seg["end"] for seg in segments}
        dataset = MixedScaleDataset(images, cfg.sampling, cfg.seed)
        teacher = None
        if cfg.teacher:
            from asisr.training.distill import load_teacher

            teacher = load_teacher(cfg.teacher, cfg.device)
        sampler = SequentialFrom(start * cfg.batch, (end - start) * cfg.batch)
        if cfg.pool:
            dataset = self._pool(dataset, model, teacher, files, progress)
            from asisr.training.distill import PoolOrder

            sampler = PoolOrder(start * cfg.batch, (end - start) * cfg.batch, len(dataset), cfg.seed)
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=cfg.batch, sampler=sampler,
            num_workers=cfg.workers if not cfg.pool else 0, persistent_workers=False, drop_last=True)
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=cfg.iters, initial=start, desc=f"train {cfg.model}", unit="it", dynamic_ncols=True)
        t0 = time.time()
        it = start
        for batch in loader:
            batch = {k: v.to(cfg.device) for k, v in batch.items()}
            lr_used = float(opt.param_groups[0]["lr"])
            pred = self._predict(model, batch)
            terms = {}
            if teacher is not None:
                from asisr.training.distill import TEACHER, distillation_loss, teacher_targets

                target = batch[TEACHER] if TEACHER in batch else teacher_targets(teacher, batch)
                loss, to_teacher, to_truth = distillation_loss(pred, batch[HR], target, cfg.teacher_weight)
                terms = {"loss_teacher": float(to_teacher.detach()), "loss_truth": float(to_truth.detach())}
            else:
                loss = torch.nn.functional.l1_loss(pred, batch[HR])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            ema.update(model)
            it += 1
            loss_value = float(loss.detach())
            history["loss"].append([it, loss_value])
            history["lr"].append([it, lr_used])
            for name, value in terms.items():
                history.setdefault(name, []).append([it, value])
            self._log({"iteration": it, "loss": loss_value, "lr": lr_used, **terms})
            # validate at every segment end too, so the history does not depend on when a run was extended
            if it % cfg.val_every == 0 or it in segment_ends:
                psnr = validate(ema.model, val_crops, cfg.val_scales, cfg.device)
                history["val"].append([it, psnr])
                self._log({"iteration": it, "val_psnr": psnr})
                if psnr > history["best_val"]:
                    history["best_val"] = psnr
                    save(ema.model, self.out / "best.pt",
                         card=self._card(segments, it, history["seconds"] + time.time() - t0))
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

    def _predict(self, model, batch: dict) -> torch.Tensor:
        inputs = [batch[name] for name in contract.MODEL_INPUTS]
        from asisr.training.distill import FROZEN, replay

        if FROZEN in batch:  # the cached output of the frozen submodule stands in for running it
            assert self.cfg.freeze is not None
            with replay(model, self.cfg.freeze, batch[FROZEN]):
                return model(*inputs)
        return model(*inputs)

    def _pool(self, dataset, model, teacher, files: list[Path], progress: bool):
        """The cached pool of this run's samples (built once, shared by every run with the same inputs)."""
        from asisr.training.distill import build_pool, pool_key, submodule

        cfg = self.cfg
        frozen = submodule(model, cfg.freeze) if cfg.freeze else None
        identity = {"files": [[f.name, f.stat().st_size] for f in files], "sampling": asdict(cfg.sampling),
                    "seed": cfg.seed, "n": cfg.pool, "freeze": cfg.freeze, "model": cfg.model,
                    "model_kwargs": cfg.model_kwargs}
        folder = Path(cfg.cache) if cfg.cache else self.out / "cache"
        key = pool_key(identity, teacher, frozen)
        return build_pool(dataset, cfg.pool, model, teacher, cfg.freeze, cfg.batch, cfg.device,
                          folder / f"pool-{key}.pt", progress)

    def _plan(self, segments: list[dict], done: int, extend: str | None, notify) -> list[dict]:
        """The schedule for this invocation: the saved one, extended to ``cfg.iters`` if that is beyond it."""
        cfg = self.cfg
        planned = segments[-1]["end"]
        if cfg.iters < done:
            raise UserError(f"{self.out} already has {done} iterations; --iters {cfg.iters} would undo some "
                            f"(use --iters {planned} to resume it, or more to extend it)")
        if cfg.iters < planned:
            raise UserError(f"{self.out} is a run of {planned} iterations ({done} done); --iters can only grow: "
                            f"use --iters {planned} to resume it, or more to extend it")
        if cfg.iters == planned:
            last = segments[-1]
            if extend is not None and len(segments) > 1 and last["kind"] != extend:
                raise UserError(f"{self.out} was extended to {planned} iterations with --extend {last['kind']}, "
                                f"not {extend}; re-run with --extend {last['kind']} (or without --extend)")
            return segments
        segments = extend_schedule(cfg, segments, cfg.iters, extend or "cosine")
        self.extension = {"from": planned, "to": cfg.iters, "done": done, "segment": segments[-1]}
        if notify is not None:
            notify(f"extending {self.out} from {planned} to {cfg.iters} iterations ({done} done): "
                   f"{describe_schedule(segments)}")
        return segments

    def _card(self, segments: list[dict], it: int, seconds: float | None = None) -> dict:
        cfg = self.cfg
        done = schedule_until(cfg, segments, it)
        card = {"iterations": it, "schedule": done, "schedule_summary": describe_schedule(done),
                "data": cfg.data, "batch": cfg.batch, "sampling": asdict(cfg.sampling),
                "init_backbone": cfg.init_backbone, "hardware": _hardware(cfg)}
        if seconds is not None:
            card["wall_seconds"] = round(seconds, 3)
        if cfg.teacher:
            card["distillation"] = {"teacher": cfg.teacher, "teacher_weight": cfg.teacher_weight,
                                    "freeze": cfg.freeze, "pool": cfg.pool}
        return {"training": card}

    def _checkpoint(self, path, model, ema, opt, sched, history, it) -> None:
        _atomic_torch_save({"model": model.state_dict(), "ema": ema.model.state_dict(), "ema_updates": ema.updates,
                            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "history": history,
                            "iteration": it}, path)
        save(ema.model, self.out / "last.pt", card=self._card(history["schedule"], it, history["seconds"]))

    def _log(self, record: dict) -> None:
        with open(self.out / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def _rewrite_log(self, history: dict) -> None:
        """Make log.jsonl agree with the checkpoint (drop lines written after it)."""
        lrs = dict(history.get("lr", []))
        terms = {name: dict(history.get(name, [])) for name in ("loss_teacher", "loss_truth")}
        lines = [json.dumps({"iteration": i, "loss": v, **({"lr": lrs[i]} if i in lrs else {}),
                             **{name: t[i] for name, t in terms.items() if i in t}})
                 for i, v in history["loss"]]
        lines += [json.dumps({"iteration": i, "val_psnr": v}) for i, v in history["val"]]
        (self.out / "log.jsonl").write_text("".join(line + "\n" for line in lines))
