"""Distillation: a teacher model supervises a student at the student's own queries.

A strong teacher (e.g. the official LIIF) gives a target at every scale and on any photo, with
no ground truth needed beyond the LR crop. Two things make it cheap on a CPU:

* a frozen submodule (``--freeze backbone.encoder``) gets no gradients, so only the rest trains;
* a cached pool (``--pool N``): N samples drawn once, each stored with the teacher's output and
  the frozen submodule's output, so that an iteration runs neither the teacher nor the frozen
  part. The pool is keyed by everything that determines it (data, sampling, seed, teacher and
  frozen weights), so a changed input never reuses a stale cache, and it is written atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from asisr.atomic import atomic_path
from asisr.errors import UserError
from asisr.runtime import contract

TEACHER = "teacher"  # the teacher's output at the sample's queries, beside the model inputs
FROZEN = "frozen"  # the frozen submodule's output for the sample's LR crop


def load_teacher(spec: str, device: str) -> torch.nn.Module:
    """Any checkpoint asisr can load (asisr format or an official layout), in eval mode with no gradients."""
    from asisr.models import load

    if not Path(spec).is_file():
        raise UserError(f"--teacher {spec}: no such checkpoint file")
    teacher = load(spec).to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def submodule(model: torch.nn.Module, path: str) -> torch.nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n and n.count(".") < 2]
        raise UserError(f"--freeze {path!r}: {getattr(model, 'name', 'the model')} has no such submodule "
                        f"(e.g. {', '.join(names[:6])})") from None


def freeze(model: torch.nn.Module, path: str) -> list[str]:
    """Stop gradients into ``path``; returns the frozen parameter names."""
    module = submodule(model, path)
    for p in module.parameters():
        p.requires_grad_(False)
    return [f"{path}.{n}" for n, _ in module.named_parameters()]


@contextlib.contextmanager
def replay(model: torch.nn.Module, path: str, output: torch.Tensor):
    """Within the block, submodule ``path`` returns ``output`` instead of computing it."""
    module = submodule(model, path)
    module.forward = lambda *args, **kwargs: output  # instance attribute: nn.Module.__call__ uses it
    try:
        yield
    finally:
        del module.forward


def distillation_loss(pred: torch.Tensor, hr: torch.Tensor, teacher: torch.Tensor,
                      weight: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, teacher term, ground-truth term): ``weight`` on L1 to the teacher, the rest on L1 to HR."""
    to_teacher = torch.nn.functional.l1_loss(pred, teacher)
    to_truth = torch.nn.functional.l1_loss(pred, hr)
    return weight * to_teacher + (1.0 - weight) * to_truth, to_teacher, to_truth


@torch.no_grad()
def teacher_targets(teacher: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """What the teacher would deliver at the batch's queries (clamped, as its images are)."""
    return teacher(*(batch[name] for name in contract.MODEL_INPUTS)).clamp(0, 1)


@torch.no_grad()
def frozen_outputs(model: torch.nn.Module, path: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The frozen submodule's output when the model's backbone sees the batch (captured by a hook)."""
    captured: list[torch.Tensor] = []
    handle = submodule(model, path).register_forward_hook(lambda m, i, o: captured.append(o.detach()))
    try:
        model.backbone(batch[contract.LR], batch[contract.SCALE])
    finally:
        handle.remove()
    if len(captured) != 1:
        raise UserError(f"--freeze {path}: the backbone ran it {len(captured)} times, caching needs exactly one")
    return captured[0]


def _state_digest(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def pool_key(identity: dict, teacher: torch.nn.Module | None, frozen: torch.nn.Module | None) -> str:
    """A digest of everything a pool's content depends on."""
    parts = dict(identity, teacher=_state_digest(teacher) if teacher is not None else None,
                 frozen=_state_digest(frozen) if frozen is not None else None)
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


class Pool(torch.utils.data.Dataset):
    """A fixed set of samples with their teacher targets (and frozen features), in memory."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        self.tensors = tensors
        self.n = len(next(iter(tensors.values())))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {k: v[index].float() for k, v in self.tensors.items()}


def build_pool(dataset, n: int, model: torch.nn.Module, teacher: torch.nn.Module | None, frozen_path: str | None,
               chunk: int, device: str, cache_file: Path | None, progress: bool = True) -> Pool:
    """Samples ``0 .. n-1`` of ``dataset`` with their targets; loaded from ``cache_file`` when it exists."""
    if cache_file is not None and cache_file.is_file():
        return Pool(torch.load(cache_file, map_location="cpu", weights_only=True))
    parts: dict[str, list[torch.Tensor]] = {}
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=n, desc="caching teacher targets", unit="sample", dynamic_ncols=True)
    was_training = model.training
    model.eval()
    for start in range(0, n, chunk):
        samples = [dataset[i] for i in range(start, min(n, start + chunk))]
        batch = {k: torch.stack([s[k] for s in samples]).to(device) for k in samples[0]}
        if teacher is not None:
            batch[TEACHER] = teacher_targets(teacher, batch)
        if frozen_path is not None:
            batch[FROZEN] = frozen_outputs(model, frozen_path, batch).half()  # halves the pool's memory
        for k, v in batch.items():
            parts.setdefault(k, []).append(v.cpu())
        if bar is not None:
            bar.update(len(samples))
    if bar is not None:
        bar.close()
    model.train(was_training)
    tensors = {k: torch.cat(v) for k, v in parts.items()}
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache_file) as tmp:
            torch.save(tensors, tmp)
    return Pool(tensors)


class PoolOrder(torch.utils.data.Sampler):
    """Draws ``start .. start + count - 1`` map to pool indices by a seeded permutation per epoch:
    the order depends only on the draw number, so a resumed run sees what an uninterrupted one saw."""

    def __init__(self, start: int, count: int, n: int, seed: int):
        self.start, self.count, self.n, self.seed = start, count, n, seed

    def __iter__(self):
        cache: dict[int, np.ndarray] = {}
        for draw in range(self.start, self.start + self.count):
            epoch, k = divmod(draw, self.n)
            if epoch not in cache:
                cache.clear()
                cache[epoch] = np.random.default_rng((self.seed, 7, epoch)).permutation(self.n)
            yield int(cache[epoch][k])

    def __len__(self) -> int:
        return self.count
