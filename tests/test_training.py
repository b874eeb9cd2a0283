"""Training: mixed-scale batches, a falling loss, exact resume after a kill, warm start."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from asisr.imageio import write_image
from asisr.training.data import MixedScaleDataset, SamplingConfig
from asisr.training.trainer import TrainConfig, Trainer

TINY_LIGHT = {"n_feats": 8, "n_groups": 1, "n_resblocks": 1, "upsampler_width": 8}


def smooth_image(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    f = rng.uniform(0.02, 0.12, (3, 2))
    img = np.stack([np.sin(x * f[c, 0] + y * f[c, 1] + c) for c in range(3)], -1) * 100 + 128
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    for i in range(5):
        write_image(d / f"img{i}.png", smooth_image(140, 150, i))
    return d


def tiny_config(folder, **kw) -> TrainConfig:
    base = dict(model="eqsr_light", model_kwargs=TINY_LIGHT, data=str(folder), iters=30, batch=4, lr=2e-3, warmup=2,
                val_every=10, ckpt_every=5, val_crop=64, val_scales=(2.0, 3.0), workers=0, threads=1,
                sampling=SamplingConfig(patch=16, scale_min=1.0, scale_max=4.0))
    base.update(kw)
    return TrainConfig(**base)


def test_samples_mix_scales_at_fixed_shapes(image_folder):
    from asisr.training.data import list_training_images, load_hr

    images = [load_hr(f) for f in list_training_images(image_folder)]
    ds = MixedScaleDataset(images, SamplingConfig(patch=16, asymmetric=True), seed=3)
    samples = [ds[i] for i in range(8)]
    assert {tuple(s["lr"].shape) for s in samples} == {(3, 16, 16)}
    assert {tuple(s["hr"].shape) for s in samples} == {(3, 16, 16)}
    scales = torch.stack([s["scale"] for s in samples])
    assert scales.min() >= 1.0 and scales.max() <= 4.0
    assert len({round(float(v), 3) for v in scales[:, 0]}) == 8  # every sample its own scale
    assert (scales[:, 0] != scales[:, 1]).any()  # asymmetric
    for s in samples:  # a contiguous window: coordinates step by 1 / scale
        assert torch.allclose(torch.diff(s["rows"]), 1 / s["scale"][0], atol=1e-4)
    # a pure function of (seed, index): a new dataset (as in a resumed run) draws the same, another seed not
    again = MixedScaleDataset(images, SamplingConfig(patch=16, asymmetric=True), seed=3)[5]
    assert all(torch.equal(again[k], samples[5][k]) for k in samples[5])
    assert not torch.equal(MixedScaleDataset(images, SamplingConfig(patch=16, asymmetric=True), seed=4)[5]["lr"],
                           samples[5]["lr"])


def _find_patch(images, patch: np.ndarray) -> list[tuple[int, int, int]]:
    """Every (image, y, x) where ``patch`` occurs exactly."""
    ph, pw = patch.shape[:2]
    found = []
    for n, im in enumerate(images):
        ys, xs = np.nonzero((im[:im.shape[0] - ph + 1, :im.shape[1] - pw + 1] == patch[0, 0]).all(-1))
        found += [(n, y, x) for y, x in zip(ys, xs) if np.array_equal(im[y:y + ph, x:x + pw], patch)]
    return found


@pytest.mark.parametrize("scale", [2.0, 2.5])
def test_window_targets_are_the_hr_pixels_at_the_coordinates(image_folder, scale):
    """Find each sample's targets in the source image; they must be the HR pixels whose centres lie at
    ``rows`` x ``cols`` of the LR patch, whose footprint is the HR crop it was downscaled from."""
    from PIL import Image

    from asisr.training.data import list_training_images, load_hr

    images = [load_hr(f) for f in list_training_images(image_folder)]
    p = 16
    ds = MixedScaleDataset(images, SamplingConfig(patch=p, augment=False, scale_min=scale, scale_max=scale), seed=0)
    for i in range(3):
        s = ds[i]
        to_u8 = lambda t: (t.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)  # noqa: E731
        hr, lr = to_u8(s["hr"]), to_u8(s["lr"])
        crop = round(p * scale)
        assert torch.allclose(s["scale"], torch.tensor([crop / p, crop / p]))
        matches = _find_patch(images, hr)
        assert len(matches) == 1, matches  # smooth random sinusoids: a 16 x 16 patch occurs once
        n, y_hr, x_hr = matches[0]
        # HR pixel k of the crop has its centre at LR coordinate (k + 0.5) * p / crop
        first = []
        for coords in (s["rows"], s["cols"]):
            k = coords.double().numpy() * crop / p - 0.5
            assert np.allclose(k, np.round(k), atol=1e-3) and np.array_equal(np.diff(np.round(k)), np.ones(p - 1))
            first.append(int(round(k[0])))
        y0, x0 = y_hr - first[0], x_hr - first[1]
        assert 0 <= y0 and 0 <= x0 and first[0] + p <= crop and first[1] + p <= crop
        source = images[n][y0:y0 + crop, x0:x0 + crop]
        assert source.shape == (crop, crop, 3)
        # the LR patch is that crop downscaled (bicubic), so the coordinates are in its pixel units
        assert np.array_equal(lr, np.asarray(Image.fromarray(source).resize((p, p), Image.BICUBIC)))


def test_tiny_training_reduces_the_loss(image_folder, tmp_path):
    history = Trainer(tiny_config(image_folder), tmp_path / "run").run(progress=False)
    losses = [v for _, v in history["loss"]]
    assert len(losses) == 30
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    assert len(history["val"]) == 3 and np.isfinite(history["best_val"])
    from asisr.models import load

    assert load(tmp_path / "run" / "best.pt").name == "eqsr_light"


def test_stop_and_resume_gives_the_same_curve(image_folder, tmp_path):
    cfg = tiny_config(image_folder, iters=12, val_every=6, ckpt_every=4)
    straight = Trainer(cfg, tmp_path / "a").run(progress=False)
    Trainer(cfg, tmp_path / "b").run(progress=False, stop_after=7)  # stops at 7 (checkpoints at 4 and 7)
    resumed = Trainer(cfg, tmp_path / "b").run(progress=False)
    assert resumed["loss"] == straight["loss"]
    assert resumed["val"] == straight["val"]


def test_killed_process_resumes_from_last_checkpoint(image_folder, tmp_path):
    """A real kill -9 between checkpoints: the restart redoes the lost iterations identically."""
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "asisr.cli.train", "--data", str(image_folder), "--out", str(out),
            "--model", "eqsr_light", "--iters", "16", "--batch", "4", "--patch", "16", "--lr", "0.002",
            "--val-every", "8", "--ckpt-every", "3", "--workers", "0", "--threads", "1"]
    for k, v in TINY_LIGHT.items():
        args += ["--model-arg", f"{k}={v}"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = out / "log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        if log.exists() and sum(1 for line in log.read_text().splitlines() if '"loss"' in line) >= 8:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(out / "state.pt", weights_only=False)["iteration"]
    assert 3 <= killed_at < 16
    assert subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).returncode == 0
    resumed = torch.load(out / "state.pt", weights_only=False)["history"]
    straight_dir = tmp_path / "straight"
    assert subprocess.run([a if a != str(out) else str(straight_dir) for a in args],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).returncode == 0
    straight = torch.load(straight_dir / "state.pt", weights_only=False)["history"]
    assert resumed["loss"] == straight["loss"] and len(straight["loss"]) == 16
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in lines if "loss" in r] == list(range(1, 17))


def test_changed_config_is_refused(image_folder, tmp_path):
    from asisr.errors import UserError

    Trainer(tiny_config(image_folder, iters=2), tmp_path / "r").run(progress=False)
    with pytest.raises(UserError, match=r"different configuration \(lr 0\.002 -> 0\.001\)"):
        Trainer(tiny_config(image_folder, iters=2, lr=1e-3), tmp_path / "r").run(progress=False)


def _final_state(run_dir) -> dict:
    st = torch.load(run_dir / "state.pt", weights_only=False)
    return {f"{part}.{k}": v for part in ("model", "ema") for k, v in st[part].items()}


def test_resume_may_change_threads_and_workers(image_folder, tmp_path):
    """How a run executes (threads, workers, device) is not part of what it computes: a run stopped
    half-way and resumed with other workers or threads ends where an uninterrupted run ends."""
    cfg = tiny_config(image_folder, iters=4, ckpt_every=2)  # threads=1, workers=0
    previous = torch.get_num_threads()
    try:
        straight = Trainer(cfg, tmp_path / "straight").run(progress=False)
        Trainer(cfg, tmp_path / "workers").run(progress=False, stop_after=2)
        shutil.copytree(tmp_path / "workers", tmp_path / "threads")
        # workers only change which process builds a sample, and a sample is a pure function of its index
        by_workers = Trainer(replace(cfg, workers=2), tmp_path / "workers").run(progress=False)
        by_threads = Trainer(replace(cfg, threads=2), tmp_path / "threads").run(progress=False)
    finally:
        torch.set_num_threads(previous)  # Trainer sets the process-wide thread count
    reference = _final_state(tmp_path / "straight")
    assert len(straight["loss"]) == 4 and straight["val"]
    assert by_workers["loss"] == straight["loss"] and by_workers["val"] == straight["val"]
    workers = _final_state(tmp_path / "workers")
    assert all(torch.equal(workers[k], v) for k, v in reference.items())
    # Threads do change the numbers: torch splits CPU reductions (conv weight gradients, sums) by
    # thread, so float32 sums are added in another order. Measured after 2 resumed iterations: weights
    # differ by 6e-8 (a few ulp), the loss history not at all, the validation PSNR by 2e-7 dB. The
    # tolerances below are ~100x that, and ~100x below what a real difference costs: one Adam step
    # moves every weight by about the learning rate (here 1e-3 to 2e-3), and a wrong batch or a
    # lost optimiser state changes the loss in the third digit.
    assert [i for i, _ in by_threads["loss"]] == [i for i, _ in straight["loss"]] == [1, 2, 3, 4]
    assert [v for _, v in by_threads["loss"]] == pytest.approx([v for _, v in straight["loss"]], rel=1e-5)
    assert [i for i, _ in by_threads["val"]] == [i for i, _ in straight["val"]]
    assert [v for _, v in by_threads["val"]] == pytest.approx([v for _, v in straight["val"]], abs=1e-4)
    threads = _final_state(tmp_path / "threads")
    diff = max(float((threads[k] - v).abs().max()) for k, v in reference.items())
    assert diff < 1e-5, diff


def test_warm_start_copies_the_encoder(tmp_path):
    from asisr.models import create, save
    from asisr.training.warm_start import init_backbone_from

    torch.manual_seed(0)
    liif = create("liif", n_resblocks=4, n_feats=8, hidden=[8])
    path = save(liif, tmp_path / "liif.pt")
    light = create("eqsr_light", n_feats=8, n_groups=2, n_resblocks=2, upsampler_width=8).eval()
    keys = init_backbone_from(light, path)
    assert len(keys) == 4 + 4 * 4
    lr = torch.rand(1, 3, 9, 10)
    with torch.no_grad():  # LayerScale starts at 0, so the backbone is the encoder
        assert torch.allclose(light.backbone(lr, torch.tensor([[2.0, 2.0]])), liif.backbone(lr, None), atol=1e-6)


def test_cli_bad_data_creates_nothing(tmp_path, capsys):
    from asisr.cli.train import main
    from tests.cli_helpers import assert_user_error, invoke

    code, _, err = invoke(main, ["--data", tmp_path / "nope", "--out", tmp_path / "run"], capsys)
    assert_user_error(code, err, "training data folder not found")
    assert not (tmp_path / "run").exists()


def test_init_weights_continues_from_a_checkpoint(image_folder, tmp_path):
    from asisr.errors import UserError
    from asisr.models import create, load, save

    Trainer(tiny_config(image_folder, iters=5), tmp_path / "first").run(progress=False)
    first = load(tmp_path / "first" / "last.pt")
    cfg = tiny_config(image_folder, iters=1, init_weights=str(tmp_path / "first" / "last.pt"), lr=1e-12, warmup=1)
    Trainer(cfg, tmp_path / "second").run(progress=False)
    second = load(tmp_path / "second" / "last.pt")
    for k, v in first.state_dict().items():
        assert torch.allclose(v, second.state_dict()[k], atol=1e-6), k
    other = save(create("eqsr_light", n_feats=8, n_groups=1, n_resblocks=2, upsampler_width=8), tmp_path / "o.pt")
    with pytest.raises(UserError, match="not this run's"):
        Trainer(tiny_config(image_folder, iters=1, init_weights=str(other)), tmp_path / "third").run(progress=False)


# Extending a run: a larger iters continues it on a new schedule segment.

def _extension_base(image_folder, tmp_path, **kw):
    """A finished 7-iteration run (its end not a validation multiple); returns (history, the learning rate its scheduler reached)."""
    cfg = tiny_config(image_folder, iters=7, val_every=4, ckpt_every=4, **kw)
    history = Trainer(cfg, tmp_path / "base").run(progress=False)
    reached = torch.load(tmp_path / "base" / "state.pt", weights_only=False)["optimizer"]["param_groups"][0]["lr"]
    return history, reached


def _card(path):
    return torch.load(path, weights_only=False)["asisr"]["card"]["training"]


def test_extending_a_finished_run_continues_its_curves(image_folder, tmp_path):
    base, reached = _extension_base(image_folder, tmp_path)
    cfg = tiny_config(image_folder, iters=11, val_every=4, ckpt_every=4)
    assert reached == pytest.approx(cfg.lr_min, rel=1e-9)  # the cosine has reached lr_min at the old end
    runs = {}
    for mode in ("constant", "cosine"):
        shutil.copytree(tmp_path / "base", tmp_path / mode)
        trainer = Trainer(cfg, tmp_path / mode)
        runs[mode] = trainer.run(progress=False, extend=mode)
        h = runs[mode]
        assert trainer.extension is not None and (trainer.extension["from"], trainer.extension["to"]) == (7, 11)
        # the old run is the start of the new one: losses, learning rates, validations unchanged
        assert h["loss"][:7] == base["loss"] and h["lr"][:7] == base["lr"] and h["val"][:2] == base["val"]
        assert [i for i, _ in h["loss"]] == list(range(1, 12)) and [i for i, _ in h["val"]] == [4, 7, 8, 11]
        assert [(s["start"], s["end"], s["kind"]) for s in h["schedule"]] == [(0, 7, "cosine"), (7, 11, mode)]
        card = _card(tmp_path / mode / "last.pt")
        assert card["iterations"] == 11 and card["schedule"] == h["schedule"]
        assert card["schedule_summary"].startswith("7 it cosine (warm-up 2, 0.002 -> 1e-06), then +4 it " + mode)
        log = [json.loads(line) for line in (tmp_path / mode / "log.jsonl").read_text().splitlines()]
        assert [[r["iteration"], r["lr"]] for r in log if "loss" in r] == h["lr"]
    constant = [v for _, v in runs["constant"]["lr"][7:]]
    assert constant == [reached] * 4  # exactly the learning rate the run had reached
    assert runs["constant"]["schedule"][1]["lr_start"] == runs["constant"]["schedule"][1]["lr_end"] == reached
    # cosine: from the peak lr (no new warm-up) down to lr_min, reached after the new end
    cosine = [v for _, v in runs["cosine"]["lr"][7:]]
    expected = [cfg.lr_min + (cfg.lr - cfg.lr_min) * 0.5 * (1 + np.cos(np.pi * k / 4)) for k in range(4)]
    assert cosine == pytest.approx(expected, rel=1e-12)
    assert all(a > b for a, b in zip(cosine, cosine[1:])) and cosine[-1] > cfg.lr_min
    final = torch.load(tmp_path / "cosine" / "state.pt", weights_only=False)["optimizer"]["param_groups"][0]["lr"]
    assert final == pytest.approx(cfg.lr_min, rel=1e-9)
    assert runs["cosine"]["schedule"][1]["lr_end"] == pytest.approx(cfg.lr_min, rel=1e-9)
    # a checkpoint saved part-way records the schedule up to its iteration (best.pt's card)
    from asisr.training.trainer import schedule_until

    cut = schedule_until(cfg, runs["cosine"]["schedule"], 9)
    assert [(s["start"], s["end"]) for s in cut] == [(0, 7), (7, 9)] and cut[0] == runs["cosine"]["schedule"][0]
    assert cut[1]["lr_end"] == runs["cosine"]["lr"][9][1]  # the rate iteration 10 went on with
    best = _card(tmp_path / "cosine" / "best.pt")
    assert best["schedule"] == schedule_until(cfg, runs["cosine"]["schedule"], best["iterations"])
    # the new iterations trained on: a higher learning rate moves the weights further
    assert runs["cosine"]["loss"][7:] != runs["constant"]["loss"][7:]


@pytest.mark.parametrize("mode", ["cosine", "constant"])
def test_extended_run_stopped_and_resumed_gives_the_same_curve(image_folder, tmp_path, mode):
    _extension_base(image_folder, tmp_path)
    cfg = tiny_config(image_folder, iters=14, val_every=4, ckpt_every=4)
    for name in ("straight", "stopped"):
        shutil.copytree(tmp_path / "base", tmp_path / name)
    straight = Trainer(cfg, tmp_path / "straight").run(progress=False, extend=mode)
    Trainer(cfg, tmp_path / "stopped").run(progress=False, extend=mode, stop_after=3)  # stops at 10
    assert torch.load(tmp_path / "stopped" / "state.pt", weights_only=False)["iteration"] == 10
    from asisr.errors import UserError

    other = "constant" if mode == "cosine" else "cosine"
    with pytest.raises(UserError, match=f"extended to 14 iterations with --extend {mode}, not {other}"):
        Trainer(cfg, tmp_path / "stopped").run(progress=False, extend=other)
    resumed = Trainer(cfg, tmp_path / "stopped").run(progress=False)  # no --extend: the recorded segment
    # the same run extended before it had finished (stopped at 5 of 7) ends on the same curve
    Trainer(tiny_config(image_folder, iters=7, val_every=4, ckpt_every=4), tmp_path / "early").run(
        progress=False, stop_after=5)
    early = Trainer(cfg, tmp_path / "early").run(progress=False, extend=mode)
    reference = _final_state(tmp_path / "straight")
    for h, run in ((resumed, "stopped"), (early, "early")):
        assert h["loss"] == straight["loss"] and h["lr"] == straight["lr"] and h["val"] == straight["val"], run
        assert h["schedule"] == straight["schedule"], run
        final = _final_state(tmp_path / run)
        assert all(torch.equal(final[k], v) for k, v in reference.items()), run


def test_extension_refuses_other_changes_and_fewer_iterations(image_folder, tmp_path):
    from asisr.errors import UserError

    _extension_base(image_folder, tmp_path)
    run = tmp_path / "base"
    with pytest.raises(UserError, match=r"different configuration \(batch 4 -> 8, sampling\.patch 16 -> 24\)"):
        Trainer(replace(tiny_config(image_folder, iters=12, val_every=4, ckpt_every=4, batch=8),
                        sampling=SamplingConfig(patch=24)), run).run(progress=False)
    with pytest.raises(UserError, match=r"different configuration \(seed 0 -> 1\)"):
        Trainer(tiny_config(image_folder, iters=12, val_every=4, ckpt_every=4, seed=1), run).run(progress=False)
    with pytest.raises(UserError, match="already has 7 iterations; --iters 6"):
        Trainer(tiny_config(image_folder, iters=6, val_every=4, ckpt_every=4), run).run(progress=False)
    # a run planned for 12 and stopped at 9 cannot be cut to 11 either
    Trainer(tiny_config(image_folder, iters=12, val_every=4, ckpt_every=4), run).run(progress=False, stop_after=2)
    with pytest.raises(UserError, match=r"a run of 12 iterations \(9 done\); --iters can only grow"):
        Trainer(tiny_config(image_folder, iters=11, val_every=4, ckpt_every=4), run).run(progress=False)
    assert torch.load(run / "state.pt", weights_only=False)["iteration"] == 9  # nothing was touched


def test_extending_a_run_saved_before_schedules_were_recorded(image_folder, tmp_path):
    """A state.pt without a schedule (older asisr) is its own cosine over the saved config's iters."""
    _extension_base(image_folder, tmp_path)
    shutil.copytree(tmp_path / "base", tmp_path / "old")
    st = torch.load(tmp_path / "old" / "state.pt", weights_only=False)
    del st["history"]["schedule"], st["history"]["lr"]
    torch.save(st, tmp_path / "old" / "state.pt")
    cfg = tiny_config(image_folder, iters=11, val_every=4, ckpt_every=4)
    new = Trainer(cfg, tmp_path / "base").run(progress=False, extend="constant")
    old = Trainer(cfg, tmp_path / "old").run(progress=False, extend="constant")
    assert old["loss"] == new["loss"] and old["val"] == new["val"] and old["schedule"] == new["schedule"]
    assert old["lr"] == new["lr"][7:]


def test_cli_extends_a_finished_run(image_folder, tmp_path, capsys):
    from asisr.cli.train import main
    from tests.cli_helpers import assert_user_error, invoke

    out = tmp_path / "cli"
    args = ["--data", image_folder, "--out", out, "--batch", "4", "--patch", "16", "--lr", "0.002", "--warmup", "2",
            "--val-every", "4", "--ckpt-every", "4", "--workers", "0", "--threads", "1"]
    for k, v in TINY_LIGHT.items():
        args += ["--model-arg", f"{k}={v}"]
    code, stdout, err = invoke(main, [*args, "--iters", "6"], capsys)
    assert code == 0, err
    assert "done: 6 iterations; schedule: 6 it cosine (warm-up 2, 0.002 -> 1e-06);" in stdout
    code, _, err = invoke(main, [*args, "--iters", "9", "--extend", "sideways"], capsys)
    assert_user_error(code, err, "--extend must be cosine or constant")
    code, _, err = invoke(main, [*args, "--iters", "9", "--batch", "8"], capsys)
    assert_user_error(code, err, "different configuration (batch 4 -> 8)")
    code, stdout, err = invoke(main, [*args, "--iters", "9", "--extend", "constant"], capsys)
    assert code == 0, err
    assert f"extending {out} from 6 to 9 iterations (6 done)" in stdout
    summary = stdout.strip().splitlines()[-1]
    assert summary.startswith("done: 9 iterations, extended from 6 (+3 it constant); schedule: 6 it cosine "
                              "(warm-up 2, 0.002 -> 1e-06), then +3 it constant (1e-06); best validation PSNR"), summary
    st = torch.load(out / "state.pt", weights_only=False)
    assert st["iteration"] == 9 and [s["kind"] for s in st["history"]["schedule"]] == ["cosine", "constant"]
    assert json.loads((out / "config.json").read_text())["iters"] == 9
    code, _, err = invoke(main, [*args, "--iters", "7"], capsys)
    assert_user_error(code, err, "already has 9 iterations")


@pytest.mark.parametrize("arch,kwargs", [("lte", {"n_resblocks": 2, "n_feats": 8, "hidden_dim": 8, "hidden": [8]}),
                                         ("metasr", {"n_resblocks": 2, "n_feats": 8})])
def test_liif_family_trains_from_a_warm_encoder(image_folder, tmp_path, arch, kwargs):
    """``asisr-train --model lte|metasr --init-backbone liif.pt``: the encoder starts as LIIF's, the loss falls."""
    from asisr.models import create, load, save

    torch.manual_seed(0)
    liif = save(create("liif", n_resblocks=2, n_feats=8, hidden=[8]), tmp_path / "liif.pt")
    cfg = tiny_config(image_folder, model=arch, model_kwargs=kwargs, init_backbone=str(liif), iters=20,
                      sampling=SamplingConfig(patch=16, scale_min=1.0, scale_max=4.0, query="random"))
    from asisr.training.warm_start import init_backbone_from

    model = create(arch, **kwargs)
    copied = init_backbone_from(model, liif)
    source = load(liif).state_dict()
    assert copied == sorted(k for k in model.state_dict() if k.startswith("backbone.encoder."))
    assert all(torch.equal(model.state_dict()[k], source[k]) for k in copied)
    losses = [v for _, v in Trainer(cfg, tmp_path / "run").run(progress=False)["loss"]]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    assert load(tmp_path / "run" / "best.pt").name == arch
