"""asisr-run's conventions: WIDTHxHEIGHT for --scale and --size, --fit, the shipped sample, what it says on stderr."""

from __future__ import annotations

import numpy as np
import pytest

from asisr.cli.run import main
from asisr.imageio import read_image, write_image
from asisr.scale import fit_size, parse_scale, parse_size
from tests.cli_helpers import assert_user_error, invoke


def test_both_options_read_width_then_height():
    assert (parse_scale("3.5x2").w, parse_scale("3.5x2").h) == (3.5, 2.0)
    assert parse_size("1920x1080") == (1080, 1920)  # (height, width) internally, like array shapes
    assert str(parse_scale("3.5x2")) == "3.5x2" and str(parse_scale("3")) == "3"


@pytest.mark.parametrize("mode, inner, offset", [
    ("stretch", (1080, 1920), (0, 0)),
    ("contain", (1080, 1440), (0, 240)),   # 4:3 in 16:9: pillarbox
    ("cover", (1440, 1920), (-180, 0)),    # 4:3 over 16:9: top and bottom cropped
])
def test_fit_geometry(mode, inner, offset):
    f = fit_size(300, 400, (1080, 1920), mode)
    assert (f.inner, f.offset, f.box) == (inner, offset, (1080, 1920))


@pytest.fixture()
def photo(tmp_path):
    """A 4:3 image whose left and right halves differ, so placement is visible."""
    image = np.zeros((30, 40, 3), np.uint8)
    image[:, :20] = (200, 30, 30)
    image[:, 20:] = (30, 30, 200)
    path = tmp_path / "photo.png"
    write_image(path, image)
    return path


def test_fit_contain_pads_cover_crops_stretch_says_so(photo, tiny_liif_onnx, tmp_path, capsys):
    outs = {}
    for mode in ("stretch", "contain", "cover"):
        out = tmp_path / f"{mode}.png"
        code, _, err = invoke(main, [photo, "--size", "64x36", "--fit", mode, "--out", out,
                                     "--model", tiny_liif_onnx], capsys)
        assert code == 0, err
        assert ("note: stretching photo.png (40x30" in err) == (mode == "stretch")
        outs[mode] = read_image(out)
        assert outs[mode].shape == (36, 64, 3)
    contain = outs["contain"]
    assert contain[:, :8].max() == 0 and contain[:, -8:].max() == 0  # 48 px wide picture, 8 px black each side
    assert contain[:, 10:54].mean() > 20
    assert outs["cover"][:, :4].mean() > 20  # filled to the edges
    code, _, err = invoke(main, [photo, "--size", "80x60", "--out", tmp_path / "same.png",
                                 "--model", tiny_liif_onnx], capsys)
    assert code == 0 and "note:" not in err  # same aspect ratio: nothing to say


@pytest.mark.parametrize("args, fragment", [
    (["--scale", "2", "--fit", "cover"], "--fit applies to --size"),
    (["--size", "64x36", "--fit", "squash"], "invalid --fit 'squash'"),
    (["--size", "64"], "expected WIDTHxHEIGHT"),
    (["--scale", "2x3x4"], "WIDTHxHEIGHT factors"),
])
def test_bad_conventions_are_one_line(photo, tmp_path, capsys, args, fragment):
    code, _, err = invoke(main, [photo, *args, "--out", tmp_path / "o.png"], capsys)
    assert_user_error(code, err, fragment)
    assert not (tmp_path / "o.png").exists()


def test_the_shipped_sample_runs_with_the_default_model(tmp_path, capsys):
    out = tmp_path / "sample_x2.png"
    code, stdout, err = invoke(main, ["--sample", "--scale", "2", "--out", out], capsys)
    assert code == 0, err
    assert read_image(out).shape == (600, 902, 3) and f"wrote {out}" in stdout
    code, _, err = invoke(main, ["--out", tmp_path / "x.png", "--scale", "2"], capsys)
    assert_user_error(code, err, "missing INPUT")


def test_a_new_output_folder_is_announced(photo, tiny_liif_onnx, tmp_path, capsys):
    out = tmp_path / "new" / "deep" / "x.png"
    code, _, err = invoke(main, [photo, "--scale", "2", "--out", out, "--model", tiny_liif_onnx], capsys)
    assert code == 0 and out.is_file()
    assert f"creating output folder {tmp_path / 'new'} (and deep in it)" in err


@pytest.mark.parametrize("command", ["run", "export", "eval", "parity", "train", "bench", "serve"])
def test_help_fits_80_columns_so_no_example_wraps_mid_command(command, monkeypatch):
    import importlib
    import subprocess
    import sys

    monkeypatch.setenv("COLUMNS", "80")
    module = importlib.import_module(f"asisr.cli.{command}")
    text = subprocess.run([sys.executable, "-m", module.__name__, "--help"], capture_output=True, text=True,
                          timeout=120, env={**__import__("os").environ, "COLUMNS": "80"}).stdout
    assert "Usage:" in text
    too_long = [line for line in text.splitlines() if len(line) > 80]
    assert not too_long, too_long
