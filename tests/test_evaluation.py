"""Evaluation protocol, metrics, evaluate() and reports (fast; Set5/Set14 checks need ../shared)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from asisr.errors import UserError
from asisr.evaluation import (
    bicubic_upscale,
    cropped_hr_size,
    evaluate,
    format_table,
    list_images,
    load_image,
    lr_size,
    make_pair,
    make_report,
    psnr_y,
    shave_for,
    ssim_y,
    write_json,
)
from asisr.evaluation.metrics import rgb_to_y, ssim_map

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DATA = SHARED / "data"
BICUBIC_REF = SHARED / "reference" / "bicubic.json"
needs_shared = pytest.mark.skipif(
    not (DATA / "Set5").is_dir() or not BICUBIC_REF.is_file(),
    reason=f"shared data not found: needs {DATA / 'Set5'} and {BICUBIC_REF}",
)


def smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A deterministic, natural-ish uint8 RGB test image (smooth gradients plus texture)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    chans = []
    for c in range(3):
        f = rng.uniform(0.02, 0.15, size=2)
        chans.append(127 + 60 * np.sin(f[0] * x + c) * np.cos(f[1] * y) + 30 * (x / w) + rng.normal(0, 4, (h, w)))
    return np.clip(np.stack(chans, -1), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- protocol


@pytest.mark.parametrize(
    "H, W, sh, sw, lr_hw, crop_hw",
    [
        (100, 100, 2, 2, (50, 50), (100, 100)),
        (101, 99, 2, 2, (50, 49), (100, 98)),
        (100, 100, 3, 3, (33, 33), (99, 99)),
        (100, 120, 1.6, 1.6, (62, 75), (99, 120)),      # round(62 * 1.6) = round(99.2) = 99
        (101, 101, 2.5, 2.5, (40, 40), (100, 100)),
        (7, 7, 1.5, 1.5, (4, 4), (6, 6)),
        (33, 33, 1.1, 1.1, (30, 30), (33, 33)),          # 33 / 1.1 = 29.999999999999996: the 1e-9 matters
        (81, 40, 2.7, 2.7, (30, 14), (81, 38)),          # 81 / 2.7 = 29.999999999999996 as well
        (100, 100, 2, 3.5, (50, 28), (100, 98)),         # asymmetric: height x2, width x3.5
        (90, 100, 3.5, 2, (25, 50), (88, 100)),          # round(25 * 3.5) = round(87.5) = 88 (banker's)
        (37, 53, 1.7, 4.3, (21, 12), (36, 52)),
    ],
)
def test_crop_and_lr_sizes(H, W, sh, sw, lr_hw, crop_hw):
    assert lr_size(H, W, sh, sw) == lr_hw
    assert cropped_hr_size(H, W, sh, sw) == crop_hw
    hr = smooth_image(H, W)
    hr_c, lr = make_pair(hr, sh, sw)
    assert hr_c.shape == (*crop_hw, 3) and hr_c.dtype == np.uint8
    assert lr.shape == (*lr_hw, 3) and lr.dtype == np.uint8
    np.testing.assert_array_equal(hr_c, hr[: crop_hw[0], : crop_hw[1]])  # top-left crop


def test_lr_is_pil_bicubic_of_the_crop():
    hr = smooth_image(64, 80, seed=3)
    hr_c, lr = make_pair(hr, 3.3, 2.2)
    expected = np.asarray(Image.fromarray(hr_c).resize((lr.shape[1], lr.shape[0]), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(lr, expected)
    # the default for scale_w is scale_h
    a = make_pair(hr, 3)
    b = make_pair(hr, 3, 3)
    np.testing.assert_array_equal(a[1], b[1])


def test_shave_rule():
    assert shave_for(2, 2) == 2
    assert shave_for(1.6, 1.6) == 2
    assert shave_for(2, 3.5) == 4
    assert shave_for(4, 4) == 4
    assert shave_for(5.5, 1) == 6


def test_make_pair_rejects_bad_input():
    with pytest.raises(UserError, match="too small"):
        make_pair(smooth_image(3, 40), 4, 4)
    with pytest.raises(UserError, match="invalid scale"):
        make_pair(smooth_image(30, 40), 0, 2)
    with pytest.raises(ValueError):
        make_pair(smooth_image(30, 40).astype(np.float32), 2, 2)
    with pytest.raises(ValueError):
        make_pair(smooth_image(30, 40)[..., 0], 2, 2)


def test_list_images(tmp_path):
    for name in ["b.png", "a.JPG", "c.jpeg", "d.bmp", "e.tif", "f.webp", "notes.txt", ".hidden.png"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.png").mkdir()
    names = [p.name for p in list_images(tmp_path)]
    assert names == ["a.JPG", "b.png", "c.jpeg", "d.bmp", "e.tif", "f.webp"]


def test_list_images_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        list_images(tmp_path / "missing")
    with pytest.raises(UserError, match="no images"):
        list_images(tmp_path)
    f = tmp_path / "file.png"
    f.write_bytes(b"x")
    with pytest.raises(UserError, match="not a folder"):
        list_images(f)


def test_load_image_modes(tmp_path):
    rgb = smooth_image(20, 30)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(load_image(tmp_path / "rgb.png"), rgb)

    grey = rgb[..., 1]
    Image.fromarray(grey, "L").save(tmp_path / "grey.png")
    g = load_image(tmp_path / "grey.png")
    assert g.shape == (20, 30, 3) and g.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(g[..., c], grey)

    rgba = np.dstack([rgb, np.full((20, 30), 255, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(load_image(tmp_path / "rgba.png"), rgb)

    g16 = grey.astype(np.uint16) * 257  # 16-bit version of the same grey image
    Image.fromarray(g16).save(tmp_path / "g16.png")
    g2 = load_image(tmp_path / "g16.png")
    np.testing.assert_array_equal(g2[..., 0], grey)


def test_load_image_corrupt(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"this is not a png")
    with pytest.raises(UserError, match="bad.png"):
        load_image(bad)
    # valid header, truncated pixel data
    Image.fromarray(smooth_image(64, 64)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    trunc = tmp_path / "trunc.png"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="trunc.png"):
        load_image(trunc)


# ----------------------------------------------------------------------------- metrics


def test_psnr_identical_is_inf():
    hr = smooth_image(32, 32)
    assert psnr_y(hr.astype(np.float64) / 255, hr, 2) == math.inf
    assert psnr_y(hr.astype(np.float32) / 255, hr, 2) > 100  # float32 rounding only
    # differences only inside the shaved border are not seen
    sr = hr.astype(np.float64) / 255
    sr[0, :, :] = 0.0
    sr[:, -1, :] = 1.0
    assert psnr_y(sr, hr, 1) == math.inf
    assert psnr_y(sr, hr, 0) < 40


def test_psnr_known_values():
    hr = np.full((10, 12, 3), 100, np.uint8)
    # every channel +2.55/255 = +0.01: d = 0.01 * (65.738 + 129.057 + 25.064) / 256 = 0.0085882...
    sr = np.full((10, 12, 3), 102.55 / 255)
    d = 0.01 * 219.859 / 256
    assert psnr_y(sr, hr, 0) == pytest.approx(-20 * math.log10(d), abs=1e-9)
    assert psnr_y(sr, hr, 0) == pytest.approx(41.3220, abs=1e-3)
    # error in R only, on half of the pixels (left half): mse = 0.5 * (0.02 * 65.738 / 256)^2
    sr = np.full((10, 12, 3), 100 / 255)
    sr[:, :6, 0] += 0.02
    expected = -10 * math.log10(0.5 * (0.02 * 65.738 / 256) ** 2)
    assert psnr_y(sr, hr, 0) == pytest.approx(expected, abs=1e-9)
    assert psnr_y(sr, hr, 0) == pytest.approx(48.7982, abs=1e-3)


def test_psnr_clamps_sr():
    hr = np.zeros((8, 8, 3), np.uint8)
    hr[..., :] = 255
    over = np.full((8, 8, 3), 1.7, np.float32)  # clamped to 1.0 = identical
    assert psnr_y(over, hr, 0) == math.inf


def test_psnr_input_checks():
    hr = smooth_image(8, 8)
    with pytest.raises(ValueError):
        psnr_y(hr, hr, 0)  # uint8 sr
    with pytest.raises(ValueError):
        psnr_y(np.zeros((8, 9, 3)), hr, 0)
    with pytest.raises(ValueError):
        psnr_y(np.zeros((8, 8, 3)), hr, 4)  # nothing left


def test_rgb_to_y_range():
    assert rgb_to_y(np.zeros((1, 1, 3)))[0, 0] == pytest.approx(16.0)
    assert rgb_to_y(np.ones((1, 1, 3)))[0, 0] == pytest.approx(16 + 255 * 219.859 / 256)


def test_ssim_identical_is_one_and_decreases_with_noise():
    hr = smooth_image(64, 72, seed=5)
    base = hr.astype(np.float64) / 255
    assert ssim_y(base, hr, 2) == pytest.approx(1.0, abs=1e-12)
    rng = np.random.default_rng(0)
    values = []
    for sigma in (1, 3, 8, 20):
        sr = np.clip(base + rng.normal(0, sigma / 255, base.shape), 0, 1)
        values.append(ssim_y(sr, hr, 2))
    assert all(0 < v < 1 for v in values)
    assert values == sorted(values, reverse=True)


def test_ssim_matches_opencv_gaussian_filter():
    """Independent check of the window: cv2.filter2D with the 11x11 sigma 1.5 Gaussian, valid region."""
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 255, (40, 50))
    b = np.clip(a + rng.normal(0, 15, a.shape), 0, 255)
    k = cv2.getGaussianKernel(11, 1.5)
    win = k @ k.T

    def f(x):
        return cv2.filter2D(x, -1, win, borderType=cv2.BORDER_REFLECT)[5:-5, 5:-5]

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    m1, m2 = f(a), f(b)
    s1, s2, s12 = f(a * a) - m1 ** 2, f(b * b) - m2 ** 2, f(a * b) - m1 * m2
    ref = ((2 * m1 * m2 + c1) * (2 * s12 + c2)) / ((m1 ** 2 + m2 ** 2 + c1) * (s1 + s2 + c2))
    ours = ssim_map(a, b)
    assert ours.shape == (30, 40)
    np.testing.assert_allclose(ours, ref, atol=1e-10)


def test_ssim_too_small_is_nan():
    hr = smooth_image(14, 14)
    assert math.isnan(ssim_y(hr.astype(np.float64) / 255, hr, 2))  # 10x10 after shaving < 11


# ----------------------------------------------------------------------------- evaluate


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "Synth"
    d.mkdir()
    Image.fromarray(smooth_image(60, 70, seed=1)).save(d / "one.png")
    Image.fromarray(smooth_image(48, 50, seed=2)[..., 0], "L").save(d / "two_grey.png")
    Image.fromarray(smooth_image(53, 61, seed=3)).save(d / "three.bmp")
    return d


def test_evaluate_structure_and_sizes(folder):
    calls = []

    def fn(lr, size):
        calls.append((lr.shape, lr.dtype, tuple(size)))
        return bicubic_upscale(lr, size)

    res = evaluate(folder, [(2, 2), 3, (2, 3.5), (2, 2)], fn, name="bic")
    assert res["name"] == "bic" and res["dataset"] == "Synth"
    assert res["images"] == ["one.png", "three.bmp", "two_grey.png"]
    assert list(res["scales"]) == ["2", "3", "3.5x2"]  # the duplicate is dropped; keys are width x height
    assert len(calls) == 9
    for (lr_shape, dtype, size), (img, (sh, sw)) in zip(
        calls, [(i, s) for i in [(60, 70), (53, 61), (48, 50)] for s in [(2, 2), (3, 3), (2, 3.5)]]
    ):
        assert dtype == np.uint8 and lr_shape == (*lr_size(*img, sh, sw), 3)
        assert size == cropped_hr_size(*img, sh, sw)
    e = res["scales"]["3.5x2"]
    assert (e["scale_h"], e["scale_w"], e["shave"]) == (2.0, 3.5, 4)
    assert set(e["per_image"]) == set(res["images"])
    assert e["per_image"]["one.png"]["hr_size"] == [60, 70] and e["per_image"]["one.png"]["lr_size"] == [30, 20]
    for e in res["scales"].values():
        psnrs = [r["psnr"] for r in e["per_image"].values()]
        assert e["psnr"] == pytest.approx(np.mean(psnrs))
        assert 0 < e["ssim"] < 1 and e["seconds"] >= 0 and e["output_megapixels"] > 0
    assert res["scales"]["2"]["psnr"] > res["scales"]["3"]["psnr"]


def test_evaluate_clamps_and_checks_output(folder):
    def too_bright(lr, size):
        return np.full((*size, 3), 5.0, np.float32)

    def white(lr, size):
        return np.ones((*size, 3), np.float32)

    a = evaluate(folder, [2], too_bright, ssim=False)
    b = evaluate(folder, [2], white, ssim=False)
    assert a["scales"]["2"]["psnr"] == b["scales"]["2"]["psnr"]
    assert a["scales"]["2"]["ssim"] is None

    with pytest.raises(UserError, match="shape"):
        evaluate(folder, [2], lambda lr, size: np.zeros((size[0], size[1] + 1, 3), np.float32))
    with pytest.raises(UserError, match="dtype"):
        evaluate(folder, [2], lambda lr, size: np.zeros((*size, 3), np.uint8))


def test_evaluate_input_errors(folder, tmp_path):
    with pytest.raises(UserError, match=">= 1"):
        evaluate(folder, [0.5], bicubic_upscale)
    with pytest.raises(UserError, match="no scales"):
        evaluate(folder, [], bicubic_upscale)
    with pytest.raises(UserError, match="too small"):
        evaluate(folder, [64], bicubic_upscale)
    (folder / "zz_broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(UserError, match="zz_broken.png"):
        evaluate(folder, [2], bicubic_upscale)


def test_progress_callback(folder):
    seen = []
    evaluate(folder, [2, 3], bicubic_upscale, progress=lambda i, n, info: seen.append((i, n)), ssim=False)
    assert seen == [(i, 6) for i in range(1, 7)]


# ----------------------------------------------------------------------------- reports


def test_table_report_and_json(folder, tmp_path):
    r1 = evaluate(folder, [2, (2, 3.5)], bicubic_upscale, name="bicubic")
    r2 = evaluate(folder, [3], bicubic_upscale, name="bicubic", dataset="Other")
    ref = {"psnr": {"Synth": {"2": 30.0}}}
    table = format_table([r1, r2], reference=ref, title="T")
    lines = table.splitlines()
    assert lines[0] == "T"
    assert "Synth (3 images)" in lines[1] and "Other (3 images)" in lines[1]
    assert "dPSNR" in lines[2] and lines[2].count("dPSNR") == 1
    rows = {ln.split()[0]: ln for ln in lines[4:]}
    assert set(rows) == {"2", "3.5x2", "3"}
    assert f"{r1['scales']['2']['psnr']:.3f}" in rows["2"]
    assert f"{r1['scales']['2']['psnr'] - 30.0:+.3f}" in rows["2"]
    assert f"{r2['scales']['3']['psnr']:.3f}" in rows["3"]

    report = make_report([r1, r2])
    assert report["model"] == "bicubic"
    assert set(report["psnr"]) == {"Synth", "Other"}
    assert report["psnr"]["Synth"]["2"] == r1["scales"]["2"]["psnr"]
    assert report["ssim"]["Other"]["3"] == r2["scales"]["3"]["ssim"]

    out = tmp_path / "out.json"
    write_json(out, report)
    assert json.loads(out.read_text())["psnr"]["Synth"]["3.5x2"] == pytest.approx(r1["scales"]["3.5x2"]["psnr"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Synth", "out.json"]  # no temp file left
    with pytest.raises(UserError, match="exists"):
        write_json(out, {"a": 1})
    write_json(out, {"a": math.inf, "b": [math.nan, 1.5]}, overwrite=True)
    assert json.loads(out.read_text()) == {"a": None, "b": [None, 1.5]}
    with pytest.raises(UserError, match="does not exist"):
        write_json(tmp_path / "nope" / "x.json", {})


def test_same_dataset_name_is_disambiguated(tmp_path, folder):
    other = tmp_path / "b" / "Synth"
    other.mkdir(parents=True)
    Image.fromarray(smooth_image(40, 40)).save(other / "x.png")
    r1 = evaluate(folder, [2], bicubic_upscale, ssim=False)
    r2 = evaluate(other, [2], bicubic_upscale, ssim=False)
    report = make_report([r1, r2])
    assert len(report["psnr"]) == 2


# ----------------------------------------------------------------------------- reference numbers


@needs_shared
@pytest.mark.parametrize("dataset, scales", [("Set5", ["2", "4"]), ("Set5", ["1.6", "3", "5.5", "12"]), ("Set14", ["2", "3"])])
def test_bicubic_reproduces_reference(dataset, scales):
    if not (DATA / dataset).is_dir():
        pytest.skip(f"shared data not found: {DATA / dataset}")
    ref = json.loads(BICUBIC_REF.read_text())["psnr"][dataset]
    res = evaluate(DATA / dataset, [float(s) for s in scales], bicubic_upscale, name="bicubic", ssim=False)
    for s in scales:
        assert res["scales"][s]["psnr"] == pytest.approx(ref[s], abs=1e-3), (dataset, s)
    if dataset == "Set5" and "2" in scales:
        assert round(res["scales"]["2"]["psnr"], 3) == 33.673
