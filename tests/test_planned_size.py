"""One planned output size (``asisr.scale.planned_size``) under the model's size rule, on every path.

MetaRDN's official test floors ``s * h`` (``size_rule == "floor"``); asisr's other models round.
At x2.3 a 24 x 32 input gives 55 x 73 under floor and 55 x 74 under round, so every path that
plans a size before the model runs (the image and folder free-space checks, the video encoder,
the Ray folder run, the server's pixel limit) must plan 55 x 73, the size the model writes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from asisr.cli.run import main as run_main
from asisr.imageio import read_image, write_image
from asisr.scale import Scale, output_size, planned_size
from asisr.sources import size_rule_of
from tests.cli_helpers import invoke
from tests.conftest import exported_once
from tests.shared_data import SHARED, need

LR = (24, 32)
SCALE = "2.3"
FLOOR = (55, 73)  # int(24 * 2.3), int(32 * 2.3)


@pytest.fixture(scope="module")
def metardn(tmp_path_factory) -> Path:
    ckpt = need(SHARED / "fixtures" / "metardn_official_small" / "model_small.pt")
    return exported_once(tmp_path_factory, "metardn_official_small_onnx", ckpt)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("lr")
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        write_image(folder / name, (rng.random((*LR, 3)) * 255).astype(np.uint8))
    return folder


def test_the_rules_differ_here_and_the_model_says_floor(metardn):
    assert output_size(*LR, Scale(2.3, 2.3), "round") != FLOOR
    assert planned_size(*LR, Scale(2.3, 2.3), None, "floor") == FLOOR
    assert size_rule_of(metardn) == "floor" and size_rule_of(None) == "round"
    with pytest.raises(ValueError, match="size rule"):
        output_size(*LR, Scale(2.0, 2.0), "flor")  # a typo no longer floors silently


def test_image_and_folder_paths_write_the_planned_size(metardn, inputs, tmp_path, capsys):
    code, _, err = invoke(run_main, [inputs / "a.png", "--scale", SCALE, "--model", metardn,
                                     "--out", tmp_path / "a.png"], capsys)
    assert code == 0, err
    assert read_image(tmp_path / "a.png").shape[:2] == FLOOR
    code, _, err = invoke(run_main, [inputs, "--scale", SCALE, "--model", metardn, "--out", tmp_path / "out"], capsys)
    assert code == 0, err
    assert [read_image(p).shape[:2] for p in sorted((tmp_path / "out").iterdir())] == [FLOOR, FLOOR]


def test_the_video_encoder_opens_at_the_planned_size(metardn, tmp_path, capsys):
    av = pytest.importorskip("av", reason="needs PyAV (pip install 'asisr[video]')")
    clip = tmp_path / "in.mp4"
    with av.open(str(clip), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = LR[1], LR[0], "yuv420p"
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(np.full((*LR, 3), 40 * i + 30, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    out = tmp_path / "out.mkv"
    code, _, err = invoke(run_main, [clip, "--scale", SCALE, "--model", metardn, "--out", out,
                                     "--pix-fmt", "yuv444p"], capsys)
    assert code == 0, err
    assert f"3 frames -> {FLOOR[1]}x{FLOOR[0]} " in err  # the plan announces what is written
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert (stream.height, stream.width) == FLOOR


def test_the_server_limits_pixels_of_the_planned_size():
    from asisr.distributed.batch import Render
    from asisr.distributed.serve import RequestError, check_pixels

    render = Render(Scale(2.3, 2.3), None)
    check_pixels(LR, render, "floor", FLOOR[0] * FLOOR[1])  # exactly the floor output fits
    with pytest.raises(RequestError):
        check_pixels(LR, render, "round", FLOOR[0] * FLOOR[1])  # the rounded one would not


def test_the_ray_folder_run_writes_the_planned_size(metardn, inputs, tmp_path, ray_cluster):
    from asisr.distributed.batch import upscale_folder_on_ray

    result = upscale_folder_on_ray(inputs, tmp_path / "ray", Scale(2.3, 2.3), model=metardn, workers=1,
                                   address=ray_cluster, progress=False)
    assert result.written == 2, result.summary()
    assert [read_image(p).shape[:2] for p in sorted((tmp_path / "ray").iterdir())] == [FLOOR, FLOOR]
