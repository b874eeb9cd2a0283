"""Scale equivariance (EQ): the measure itself, sizes at fractional scales, asisr-eval --equivariance, the plot."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from asisr.cli.eval import app
from asisr.evaluation import (
    add_eq_to_report,
    bicubic_downscale_float,
    bicubic_upscale,
    cropped_hr_size,
    equivariance,
    equivariance_image,
    format_eq_table,
    lr_size,
    make_pair,
    make_report,
    evaluate,
    write_json,
)
from asisr.evaluation.metrics import Y_WEIGHTS


def smooth_image(h: int, w: int, seed: int, noise: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([np.sin(x / 6 + c) * np.cos(y / 8 - c) for c in range(3)], -1) * 80 + 128
    return np.clip(base + rng.normal(0, noise, base.shape), 0, 255).astype(np.uint8)


def shifted_bicubic(lr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bicubic, then the output moved one pixel right (edge column repeated): not scale-equivariant."""
    out = bicubic_upscale(lr, size)
    return np.concatenate([out[:, :1], out[:, :-1]], axis=1)


def noisy_bicubic(lr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    rng = np.random.default_rng(int(size[0]) * 1000 + int(size[1]))
    out = bicubic_upscale(lr, size)
    return np.clip(out + rng.normal(0, 0.03, out.shape).astype(np.float32), 0, 1)


def _runner() -> CliRunner:
    try:  # click < 8.2 mixes stderr into stdout unless told not to
        return CliRunner(mix_stderr=False)
    except TypeError:
        return CliRunner()


def invoke(*args):
    return _runner().invoke(app, [str(a) for a in args])


@pytest.fixture
def data(tmp_path):
    d = tmp_path / "Tiny"
    d.mkdir()
    Image.fromarray(smooth_image(40, 48, 1, noise=3)).save(d / "a.png")
    Image.fromarray(smooth_image(37, 31, 2, noise=3)).save(d / "b.png")
    return d


# ----------------------------------------------------------------------------- the measure


def test_float_downscale_is_the_protocol_bicubic_without_rounding():
    x, lr = make_pair(smooth_image(45, 52, 0, noise=5), 3)
    f = bicubic_downscale_float(x.astype(np.float64) / 255.0, lr.shape[:2])
    assert f.shape == lr.shape and f.dtype == np.float64
    # PIL's uint8 path rounds after each of its two separable passes: within one 8-bit step
    assert np.abs(f * 255.0 - lr).max() < 1.0
    assert np.abs(f * 255.0 - lr).mean() < 0.3


def test_constant_image_is_exactly_equivariant():
    hr = np.full((30, 33, 3), (200, 90, 17), dtype=np.uint8)
    rec = equivariance_image(hr, 3, 3, bicubic_upscale)
    assert rec["mse"] == 0.0
    assert rec["eq"] == -math.inf and rec["eq_psnr"] == math.inf


def test_constant_folder_reports_inf_and_json_null(tmp_path):
    d = tmp_path / "Flat"
    d.mkdir()
    Image.fromarray(np.full((24, 26, 3), 77, dtype=np.uint8)).save(d / "flat.png")
    res = equivariance(d, [2], bicubic_upscale, name="bicubic")
    assert res["scales"]["2"]["eq"] == -math.inf and res["scales"]["2"]["eq_psnr"] == math.inf
    assert "-inf" in format_eq_table([res])
    report = add_eq_to_report({"model": "bicubic"}, [res])
    path = write_json(tmp_path / "r.json", report)
    assert json.loads(path.read_text())["eq"] == {"Flat": {"2": None}}


@pytest.mark.parametrize("scale", [(2, 2), (2.5, 2.5), (1.6, 3.3)])
def test_matches_an_independent_computation(scale):
    """The measure, written out longhand: EQ = 10 log10 mean(d_Y^2) of the two sides, shaved."""
    sh, sw = scale
    hr = smooth_image(47, 53, 3, noise=4)
    rec = equivariance_image(hr, sh, sw, bicubic_upscale)

    H, W = cropped_hr_size(47, 53, sh, sw)
    x = hr[:H, :W]
    h, w = lr_size(47, 53, sh, sw)
    lr = np.asarray(Image.fromarray(x).resize((w, h), Image.Resampling.BICUBIC))
    left = np.asarray(Image.fromarray(lr).resize((W, H), Image.Resampling.BICUBIC), dtype=np.float32) / np.float32(255)
    bh, bw = round(H * sh), round(W * sw)
    big = np.asarray(Image.fromarray(x).resize((bw, bh), Image.Resampling.BICUBIC), dtype=np.float32) / np.float32(255)
    right = np.stack([np.asarray(Image.fromarray(big[:, :, c]).resize((W, H), Image.Resampling.BICUBIC)) for c in range(3)], -1)
    right = np.clip(right.astype(np.float64), 0, 1)
    s = math.ceil(max(sh, sw))
    d = ((left.astype(np.float64) - right) @ (Y_WEIGHTS / 256))[s:-s, s:-s]
    expected = 10 * math.log10(np.mean(d * d))
    assert rec["eq"] == pytest.approx(expected, abs=1e-9)
    assert rec["eq_psnr"] == pytest.approx(-expected, abs=1e-9)
    assert rec["hr_size"] == [H, W] and rec["lr_size"] == [h, w] and rec["up_size"] == [bh, bw]


def test_non_equivariant_operators_score_clearly_worse():
    hr = smooth_image(60, 66, 4, noise=1)
    for r in (2, 3):
        base = equivariance_image(hr, r, r, bicubic_upscale)["eq"]
        shifted = equivariance_image(hr, r, r, shifted_bicubic)["eq"]
        noisy = equivariance_image(hr, r, r, noisy_bicubic)["eq"]
        assert base < -45, base
        assert shifted > base + 8, (r, base, shifted)
        assert noisy > base + 8, (r, base, noisy)


@pytest.mark.parametrize("scale", [(1.6, 1.6), (2.5, 2.5), (3.3, 3.3), (2, 3.5), (1.7, 1.3), (4, 4)])
@pytest.mark.parametrize("hw", [(37, 53), (41, 29)])
def test_sizes_line_up(scale, hw):
    sh, sw = scale
    hr = smooth_image(*hw, 5, noise=2)
    calls = []

    def spy(img, size):
        calls.append((img.shape, img.dtype, tuple(size)))
        return bicubic_upscale(img, size)

    rec = equivariance_image(hr, sh, sw, spy)
    H, W = cropped_hr_size(*hw, sh, sw)
    h, w = lr_size(*hw, sh, sw)
    (lr_shape, lr_dtype, left_size), (x_shape, x_dtype, big_size) = calls
    assert lr_shape == (h, w, 3) and left_size == (H, W)          # left: protocol LR -> crop size
    assert x_shape == (H, W, 3) and big_size == (round(H * sh), round(W * sw))  # right: crop -> r x crop
    assert lr_dtype == x_dtype == np.uint8
    # each resize's factor is within half a pixel of the scale
    assert abs(big_size[0] / H - sh) <= 0.5 / H + 1e-12 and abs(big_size[1] / W - sw) <= 0.5 / W + 1e-12
    assert rec["hr_size"] == [H, W] and math.isfinite(rec["eq"])


def test_folder_result_layout(data):
    res = equivariance(data, [2, (2, 3.5)], bicubic_upscale, name="bicubic")
    assert res["name"] == "bicubic" and res["dataset"] == "Tiny" and res["images"] == ["a.png", "b.png"]
    assert set(res["scales"]) == {"2", "3.5x2"}  # (h, w) = (2, 3.5), keyed width x height
    e = res["scales"]["2"]
    assert e["shave"] == 2 and e["seconds"] >= 0
    per = [v["eq"] for v in e["per_image"].values()]
    assert e["eq"] == pytest.approx(np.mean(per)) and e["eq_psnr"] == pytest.approx(-e["eq"])
    table = format_eq_table([res], title="T")
    assert table.splitlines()[0] == "T" and "EQ dB" in table and "3.5x2" in table


def test_bad_model_output_is_a_user_error(data):
    from asisr.errors import UserError

    with pytest.raises(UserError, match="shape"):
        equivariance(data, [2], lambda lr, size: np.zeros((3, 3, 3), np.float32))
    with pytest.raises(UserError, match="dtype"):
        equivariance(data, [2], lambda lr, size: np.zeros((*size, 3), np.uint8))


# ----------------------------------------------------------------------------- asisr-eval


def test_cli_help_mentions_equivariance():
    r = invoke("--help")
    assert r.exit_code == 0
    assert "--equivariance" in r.stdout and "--eq-scales" in r.stdout


def test_cli_bicubic_equivariance_table_and_json(data, tmp_path):
    out = tmp_path / "r.json"
    r = invoke(data, "--bicubic", "--scales", "2,3", "--equivariance", "--json", out)
    assert r.exit_code == 0, r.stderr
    assert "PSNR dB" in r.stdout and "EQ dB" in r.stdout and "-EQ" in r.stdout
    eq_rows = r.stdout.split("scale equivariance")[1].splitlines()
    assert [ln.split()[0] for ln in eq_rows[4:]] == ["2", "3", "4", "6"]  # default EQ scales
    report = json.loads(out.read_text())
    assert set(report["psnr"]["Tiny"]) == {"2", "3"}
    eq = report["eq"]["Tiny"]
    assert set(eq) == {"2", "3", "4", "6"}
    assert all(-60 < v < -10 for v in eq.values())
    assert report["eq_psnr"]["Tiny"]["2"] == pytest.approx(-eq["2"])
    assert report["eq_results"][0]["scales"]["2"]["per_image"]["a.png"]["hr_size"] == [40, 48]
    # the same numbers as the library call
    assert eq["3"] == pytest.approx(equivariance(data, [3], bicubic_upscale)["scales"]["3"]["eq"])


def test_cli_eq_scales_alone_implies_equivariance(data):
    r = invoke(data, "--bicubic", "--scales", "2", "--eq-scales", "2.5,2x3")
    assert r.exit_code == 0, r.stderr
    assert "EQ dB" in r.stdout and "2x3" in r.stdout


def test_cli_without_equivariance_prints_no_eq_table(data, tmp_path):
    out = tmp_path / "r.json"
    r = invoke(data, "--bicubic", "--scales", "2", "--json", out)
    assert r.exit_code == 0 and "EQ dB" not in r.stdout
    assert "eq" not in json.loads(out.read_text())


@pytest.mark.parametrize("bad", ["0.5", "2,,3", "abc"])
def test_cli_bad_eq_scales(data, bad):
    r = invoke(data, "--bicubic", "--eq-scales", bad)
    assert r.exit_code == 2, r.stdout
    err = r.stderr.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and r.stdout.strip() == ""


def test_cli_eq_scale_too_big_for_the_images(data):
    r = invoke(data, "--bicubic", "--eq-scales", "40")
    assert r.exit_code == 2 and "too small" in r.stderr and r.stdout.strip() == ""


def test_cli_with_a_real_tiny_model(data, tiny_liif_ckpt, tmp_path, monkeypatch):
    monkeypatch.setenv("ASISR_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "m.json"
    r = invoke(data, "--model", tiny_liif_ckpt, "--backend", "torch", "--threads", "2", "--tile", "32",
               "--scales", "2", "--eq-scales", "2,3.5", "--json", out)
    assert r.exit_code == 0, r.stderr
    assert r.stdout.startswith("liif [torch]") and "scale equivariance" in r.stdout
    report = json.loads(out.read_text())
    assert report["model"] == "liif [torch]"
    eq = report["eq"]["Tiny"]
    assert set(eq) == {"2", "3.5"} and all(math.isfinite(v) and -80 < v < 0 for v in eq.values())


# ----------------------------------------------------------------------------- the plot


def _report(model: str, psnr: dict, eq: dict | None) -> dict:
    rep = {"model": model, "psnr": {"Set5": psnr}}
    if eq is not None:
        rep["eq"] = {"Set5": eq}
    return rep


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed (pip install \"asisr[plot]\")")
    from asisr.cli.plot import main

    a = tmp_path / "a.json"
    b = tmp_path / "b.json"
    a.write_text(json.dumps(_report("liif", {"2": 38.0, "3": 34.4, "2x3.5": 33.0}, {"2": -40.0, "3": None})))
    b.write_text(json.dumps(_report("bicubic", {"2": 33.7, "4": 28.4}, None)))
    fig = tmp_path / "fig.png"
    assert main([str(a), str(b), "--out", str(fig), "--title", "t"]) == 0
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(fig) as im:
        assert im.width > im.height > 100
    assert main([str(a), "--out", str(fig)]) == 2  # exists, no --overwrite
    assert main([str(a), "--out", str(fig), "--overwrite"]) == 0


def test_plot_from_a_real_eval_report(data, tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed (pip install \"asisr[plot]\")")
    from asisr.evaluation.plot import load_report, plot_reports, series

    res = evaluate(data, [2, 3], bicubic_upscale, name="bicubic", ssim=False)
    eq = equivariance(data, [2, 3], bicubic_upscale, name="bicubic")
    path = write_json(tmp_path / "r.json", add_eq_to_report(make_report([res]), [eq]))
    rep = load_report(path)
    assert [s for s, _ in series(rep, "eq")["Tiny"]] == [2.0, 3.0]
    assert plot_reports([rep], tmp_path / "f.svg").read_text().lstrip().startswith("<?xml")


def test_plot_errors(tmp_path, capsys, monkeypatch):
    from asisr.cli.plot import main

    assert main([str(tmp_path / "missing.json"), "--out", str(tmp_path / "f.png")]) == 2
    bad = tmp_path / "bad.json"
    bad.write_text("{\"nothing\": 1}")
    assert main([str(bad), "--out", str(tmp_path / "f.png")]) == 2
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_report("m", {"2": 30.0}, None)))
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # as if matplotlib were not installed
    assert main([str(good), "--out", str(tmp_path / "f.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err)
    assert "not found" in err[0] and "neither" in err[1] and 'pip install "asisr[plot]"' in err[2]
    assert not (tmp_path / "f.png").exists()
