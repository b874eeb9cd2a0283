"""The Python API (``asisr.Upscaler``): the command line's conventions, numpy and PIL, one-line errors,
and the README's Python block, run as written."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import asisr
from asisr.cli.run import main as run_main
from asisr.imageio import read_image, write_image
from tests.cli_helpers import invoke

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """A small RGB photo-like image (smooth colour ramps and an edge)."""
    y, x = np.mgrid[0:36, 0:52].astype(np.float32)
    rgb = np.stack([x / 51, y / 35, ((x > 25) ^ (y > 17)).astype(np.float32)], -1)
    path = tmp_path_factory.mktemp("api") / "photo.png"
    write_image(path, np.round(rgb * 255).astype(np.uint8))
    return path


@pytest.fixture(scope="module")
def up():
    with asisr.Upscaler(threads=1) as opened:
        yield opened


def test_the_api_gives_what_asisr_run_writes(up, photo, tmp_path, capsys):
    code, _, err = invoke(run_main, [photo, "--scale", "2.5", "--out", tmp_path / "cli.png", "--threads", "1"], capsys)
    assert code == 0, err
    np.testing.assert_array_equal(up.upscale(read_image(photo), 2.5), read_image(tmp_path / "cli.png"))
    assert (up.model, up.backend) == ("liif", "openvino") and up.precision in ("fp32", "bf16")
    assert up.precision_reason and repr(up).startswith("asisr.Upscaler('liif'")


def test_sizes_are_width_by_height_and_scales_take_every_form(up, photo):
    image = read_image(photo)  # 36 high, 52 wide
    assert up.upscale(image, size=(100, 60)).shape == (60, 100, 3)
    boxed = up.upscale(image, size=(100, 100), fit="contain")
    assert boxed.shape == (100, 100, 3) and not boxed[:10].any()  # padded with black above and below
    across_down = up.upscale(image, "3.5x2")
    assert across_down.shape == (72, 182, 3)
    np.testing.assert_array_equal(up.upscale(image, (3.5, 2)), across_down)
    np.testing.assert_array_equal(up.upscale(image, 2), up.upscale(image, "2"))


def test_pil_in_pil_out_with_the_same_pixels(up, photo):
    pil = Image.open(photo)
    out = up.upscale(pil, 2)
    assert isinstance(out, Image.Image) and out.size == (104, 72) and out.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(out), up.upscale(np.asarray(pil), 2))
    grey = up.upscale(pil.convert("L"), 2)
    assert grey.mode == "L" and grey.size == (104, 72)


@pytest.mark.parametrize("call, fragment", [
    (lambda up, im: up.upscale(im, "abc"), "invalid scale 'abc'"),
    (lambda up, im: up.upscale(im, 0), "greater than 0"),
    (lambda up, im: up.upscale(im, size=(0, 10)), "positive whole pixels"),
    (lambda up, im: up.upscale(im, size=(10.5, 10)), "positive whole pixels"),
    (lambda up, im: up.upscale(im), "exactly one of a scale or a size"),
    (lambda up, im: up.upscale(im, 2, size=(10, 10)), "exactly one of a scale or a size"),
    (lambda up, im: up.upscale("photo.png", 2), "give a numpy array (HWC) or a PIL image"),
    (lambda up, im: up.upscale(im, 99), "exceeds the supported maximum"),
])
def test_bad_input_is_one_user_error(up, photo, call, fragment):
    with pytest.raises(asisr.UserError) as caught:
        call(up, read_image(photo))
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


def test_upscale_file_never_overwrites_unless_told(up, photo, tmp_path):
    dst = tmp_path / "x2.png"
    assert up.upscale_file(photo, dst, 2) == dst and read_image(dst).shape == (72, 104, 3)
    dst.write_bytes(b"mine")
    with pytest.raises(asisr.UserError, match="output exists"):
        up.upscale_file(photo, dst, 2)
    assert dst.read_bytes() == b"mine"
    up.upscale_file(photo, dst, 2, overwrite=True)
    assert read_image(dst).shape == (72, 104, 3)


def test_a_closed_upscaler_says_so(photo):
    with asisr.Upscaler("lmf", backend="onnxruntime", precision="fp32", threads=1) as fast:
        assert (fast.model, fast.backend, fast.precision) == ("lmf", "onnxruntime", "fp32")
    with pytest.raises(asisr.UserError, match="closed"):
        fast.upscale(read_image(photo), 2)


def test_the_readme_python_block_runs_as_written(photo, tmp_path, monkeypatch, capsys):
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Python API"):]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    # a 160 x 120 photo: big enough for the block's sizes (x12 at most), small enough to be quick
    write_image(tmp_path / "photo.png", np.asarray(Image.open(photo).resize((160, 120), Image.BICUBIC)))
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md (Python API)", "exec"), {"__name__": "readme"})
    assert "asisr.Upscaler('liif'" in capsys.readouterr().out
    assert Image.open("photo_x3.png").size == (480, 360)
    assert read_image(tmp_path / "photo_x2.5.png").shape == (300, 400, 3)
