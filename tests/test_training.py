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
    with pytest.raises(UserError, match="different configuration"):
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
