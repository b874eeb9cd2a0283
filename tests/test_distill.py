"""Distillation (asisr-train --teacher): a tiny student learns from a tiny teacher, the loss to the
teacher falls, a cached pool stands in for the teacher and the frozen encoder exactly, and
resume reproduces the loss curve."""

from __future__ import annotations

import pytest
import torch

from asisr.imageio import write_image
from asisr.models import create, save
from asisr.training.data import SamplingConfig
from asisr.training.trainer import TrainConfig, Trainer
from tests.cli_helpers import invoke
from tests.test_training import smooth_image

TINY_TEACHER = {"n_resblocks": 1, "n_feats": 8, "hidden_dim": 16, "hidden": [16]}  # an LTE: bilinear + texture
TINY_ENCODER = {"n_resblocks": 1, "n_feats": 8, "hidden": [16]}  # a LIIF whose encoder both start from
TINY_STUDENT = {"n_resblocks": 1, "n_feats": 8, "latent_dim": 16, "width": 8, "depth": 2}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    data = root / "photos"
    data.mkdir()
    for i in range(4):
        write_image(data / f"img{i}.png", smooth_image(96, 104, i))
    torch.manual_seed(1)
    encoder = create("liif", **TINY_ENCODER)
    save(encoder, root / "encoder.pt")
    teacher = create("lte", **TINY_TEACHER)
    teacher.backbone.encoder.load_state_dict(encoder.backbone.encoder.state_dict())
    with torch.no_grad():  # a texture of a tenth of the image's range on top of the bilinear skip
        teacher.upsampler.imnet.layers[-1].weight.mul_(0.2)
    save(teacher, root / "teacher.pt")
    return root, data


def config(root, data, **kw) -> TrainConfig:
    base = dict(model="lmf", model_kwargs=TINY_STUDENT, init_backbone=str(root / "encoder.pt"), data=str(data),
                teacher=str(root / "teacher.pt"), teacher_weight=0.8, freeze="backbone.encoder", iters=40, batch=4,
                lr=1e-2, warmup=2, val_every=1000, ckpt_every=4, val_crop=48, val_scales=(2.0,), workers=0, threads=1,
                sampling=SamplingConfig(patch=12, scale_min=1.0, scale_max=4.0, query="random"))
    base.update(kw)
    return TrainConfig(**base)


def _curve(history, name="loss_teacher"):
    return [v for _, v in history[name]]


def test_loss_to_the_teacher_falls_and_the_encoder_stays_frozen(setup, tmp_path):
    root, data = setup
    history = Trainer(config(root, data), tmp_path / "run").run(progress=False)
    curve = _curve(history)
    assert len(curve) == 40
    assert sum(curve[-8:]) / 8 < 0.5 * sum(curve[:8]) / 8, curve
    from asisr.models import load

    student, source = load(tmp_path / "run" / "last.pt"), load(root / "encoder.pt")
    enc_s = {k: v for k, v in student.state_dict().items() if k.startswith("backbone.encoder.")}
    enc_t = source.state_dict()
    assert enc_s and all(torch.equal(v, enc_t[k]) for k, v in enc_s.items())  # frozen: exactly the initial ones
    assert not torch.equal(student.state_dict()["backbone.latent.0.weight"],
                           create("lmf", **TINY_STUDENT).state_dict()["backbone.latent.0.weight"])


def test_the_cached_pool_is_what_the_teacher_and_encoder_compute(setup, tmp_path):
    """Each pooled sample is the dataset's sample with the teacher's output and the frozen encoder's
    features, and the student's prediction from the cached features is the one from the image."""
    root, data = setup
    from asisr.models import load
    from asisr.runtime import contract
    from asisr.training.data import MixedScaleDataset, list_training_images, load_hr
    from asisr.training.distill import FROZEN, TEACHER, replay, teacher_targets

    cfg = config(root, data, pool=16, iters=4)
    Trainer(cfg, tmp_path / "pooled").run(progress=False)
    cache = list((tmp_path / "pooled" / "cache").glob("pool-*.pt"))
    assert len(cache) == 1
    pool = torch.load(cache[0], weights_only=True)
    assert pool[TEACHER].shape == (16, 3, 12, 12) and pool[FROZEN].shape == (16, 8, 12, 12)
    images = [load_hr(f) for f in list_training_images(data)[:-cfg.val_holdout]]
    dataset = MixedScaleDataset(images, cfg.sampling, cfg.seed)
    teacher, student = load(root / "teacher.pt").eval(), load(tmp_path / "pooled" / "last.pt").eval()
    for i in (0, 7, 15):
        sample = {k: v[None] for k, v in dataset[i].items()}
        for k, v in sample.items():
            assert torch.equal(pool[k][i:i + 1], v), k
        assert torch.allclose(pool[TEACHER][i:i + 1], teacher_targets(teacher, sample), atol=1e-6)
        with torch.no_grad():
            features = teacher.backbone.encoder((sample[contract.LR] - 0.5) / 0.5)
            assert torch.allclose(pool[FROZEN][i:i + 1].float(), features, atol=2e-3, rtol=2e-3)  # stored as fp16
            inputs = [sample[n] for n in contract.MODEL_INPUTS]
            with replay(student, "backbone.encoder", pool[FROZEN][i:i + 1].float()):
                cached = student(*inputs)
            assert torch.allclose(cached, student(*inputs), atol=1e-2)
    # a second run with the same inputs reuses the pool (no rebuild): the file is untouched
    before = cache[0].stat().st_mtime_ns
    Trainer(config(root, data, pool=16, iters=4, cache=str(tmp_path / "pooled" / "cache")),
            tmp_path / "second").run(progress=False)
    assert cache[0].stat().st_mtime_ns == before
    assert list((tmp_path / "pooled" / "cache").glob("pool-*.pt")) == cache


def test_resume_reproduces_the_loss_curve(setup, tmp_path):
    root, data = setup
    cfg = config(root, data, pool=16, iters=12)
    whole = Trainer(cfg, tmp_path / "whole").run(progress=False)
    Trainer(cfg, tmp_path / "split").run(progress=False, stop_after=5)
    resumed = Trainer(cfg, tmp_path / "split").run(progress=False)
    assert _curve(resumed) == _curve(whole)
    assert _curve(resumed, "loss") == _curve(whole, "loss")
    lines = (tmp_path / "split" / "log.jsonl").read_text().splitlines()
    assert sum('"loss_teacher"' in line for line in lines) == 12


def test_card_records_the_recipe(setup, tmp_path):
    root, data = setup
    Trainer(config(root, data, iters=4), tmp_path / "run").run(progress=False)
    from asisr.models.checkpoint import read_checkpoint

    card = read_checkpoint(tmp_path / "run" / "last.pt")["asisr"]["card"]["training"]
    assert card["distillation"] == {"teacher": str(root / "teacher.pt"), "teacher_weight": 0.8,
                                    "freeze": "backbone.encoder", "pool": 0}
    assert card["iterations"] == 4 and card["data"] == str(data) and "cpu" in card["hardware"]
    assert card["wall_seconds"] > 0


@pytest.mark.parametrize("args, fragment", [
    (["--teacher-weight", "0.5"], "--teacher-weight needs --teacher"),
    (["--teacher", "missing.pt"], "--teacher missing.pt: no such checkpoint file"),
    (["--teacher", "TEACHER", "--teacher-weight", "1.5"], "--teacher-weight must be in [0, 1]"),
    (["--teacher", "TEACHER", "--freeze", "backbone.nothing"], "--freeze 'backbone.nothing': lmf has no such submodule"),
    (["--cache", "somewhere"], "--cache needs --pool"),
])
def test_bad_distillation_options_are_one_line_errors(setup, tmp_path, capsys, args, fragment):
    from asisr.cli.train import main

    root, data = setup
    args = [str(root / "teacher.pt") if a == "TEACHER" else a for a in args]
    code, out, err = invoke(main, ["--model", "lmf", "--model-arg", "n_resblocks=1", "--data", data,
                                   "--out", tmp_path / "run", "--iters", "2", *args], capsys)
    assert code == 2 and fragment in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1
