"""ArbRCAN (ArbSR) against tensors produced by the official code (``shared/fixtures/arbsr_official_small``).

The fixture ran the released ``ArbRCAN`` in a small size on three images: x2.5, x1.5 (down) x 3.5
(across) and x4. ``out`` is the official code as it runs on today's PyTorch (``grid_sample``
with ``align_corners=False``), ``out_ac_true`` the same weights sampling as they were trained
(PyTorch 1.1: True), asisr's default. Both are reproduced in PyTorch and through the ONNX
export, at sizes other than the export's; odd sizes, tiling and checkpoint intake are checked too.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from asisr.errors import UserError
from asisr.models import create, detect, load, save
from asisr.models.arbsr import cell_phase, double_bilinear, half_pool, lr_reach
from asisr.models.checkpoint import read_checkpoint
from asisr.imageio import read_image, write_image
from asisr.models.registry import Detection, apply_options, parse_options
from asisr.runtime import contract
from asisr.runtime.query import make_query
from asisr.scale import Scale, output_size
from tests.cli_helpers import invoke
from tests.shared_data import SET5, SHARED, need
from tests.onnx_ops import CNN_OPS, TENSORRT_OPS, assert_tensorrt_ops

FIXTURE = SHARED / "fixtures" / "arbsr_official_small"
MANIFESTS = SHARED / "fixtures" / "official_key_manifests.json"
CASES = ("sym_2.5", "asym_1.5x3.5", "x4")
# Max abs error on the official 0..255 scale (= 2e-6 on [0, 1]). Measured: <= 2.2e-4 (default, torch and
# ONNX Runtime), <= 2.7e-4 (off); the rest is the official float32 grid normalisation (docs/arbsr.md).
TOL_255 = 5e-4
TARGET = {"on": "out_ac_true", "off": "out"}  # grid_align_corners -> the fixture field it must reproduce
OPTIONS = {"on": None, "off": {"grid_align_corners": False}}
ALLOWED_OPS = TENSORRT_OPS | CNN_OPS  # the LIIF family's TensorRT-safe set plus RCAN's attention and ArbSR's mask


@pytest.fixture(scope="module")
def fixture():
    root = need(FIXTURE)
    return root / "model_1.pt", torch.load(root / "cases.pt")


@pytest.fixture(scope="module")
def models(fixture):
    return {mode: load(fixture[0], OPTIONS[mode]) for mode in OPTIONS}


def _query(case: dict):
    """(lr in [0, 1], scale, rows, cols) for a fixture case; the output size is the official one."""
    lr = case["lr"] / 255.0
    h, w = lr.shape[2:]
    out_h, out_w = case["out"].shape[2:]
    scale, rows, cols = (torch.from_numpy(a) for a in make_query(h, w, out_h, out_w))
    assert torch.allclose(scale.double(), torch.tensor([[case["scale_h"], case["scale_w"]]]))
    return lr, scale, rows, cols


@pytest.mark.parametrize("mode", list(OPTIONS))
@pytest.mark.parametrize("case", CASES)
def test_pytorch_reproduces_official(mode, case, fixture, models):
    c = fixture[1][case]
    model = models[mode]
    lr, scale, rows, cols = _query(c)
    with torch.no_grad():
        feat = model.backbone(lr, scale)
        assert (feat - c["feat_in"]).abs().max() <= TOL_255  # features are on the 0..255 scale, |f| <= 250
        out = model(lr, scale, rows, cols) * 255
    assert out.shape == c["out"].shape
    assert (out - c[TARGET[mode]]).abs().max() <= TOL_255, mode


def test_upsampler_stage_reproduces_official_intermediates(fixture, models):
    """The official code's own ``sa_upsample`` (align_corners off), from its own input features."""
    up = models["off"].upsampler.sa_upsample
    for case in CASES:
        c = fixture[1][case]
        _, scale, rows, cols = _query(c)
        with torch.no_grad():
            emb = up.embedding(1.0 / scale, cell_phase(rows), cell_phase(cols))
            offset = F.linear(emb, up.offset.weight[:, :, 0, 0], up.offset.bias).permute(0, 3, 1, 2)
            out = up(c["feat_in"], scale, rows, cols)
        assert (offset - c["sa_offset"]).abs().max() <= 1e-6
        # |sa_up_out| ~ 200; the official grid's float32 normalisation round trip moves its sampling
        # points by up to 4e-6 LR px, which is what remains (1e-3; 3e-5 with that round trip emulated)
        assert (out - c["sa_up_out"]).abs().max() <= 3e-3


def test_align_corners_convention_is_what_separates_the_two_outputs(fixture, models):
    c = fixture[1]["sym_2.5"]
    lr, scale, rows, cols = _query(c)
    with torch.no_grad():
        on = models["on"](lr, scale, rows, cols) * 255
    assert (on - c["out"]).abs().max() > 10  # the fixture's two fields differ by up to 54
    assert models["on"].config["grid_align_corners"] is True and models["off"].config["grid_align_corners"] is False
    off, on = models["off"].descriptor, models["on"].descriptor
    assert not off.tiles_exactly and "grid_align_corners=off" in off.upsampler_untileable
    assert not off.upsampler_global_pool and not on.upsampler_untileable  # nothing pools; on tiles exactly


# ------------------------------------------------------------------------------ ONNX export

@pytest.fixture(scope="module")
def exported(fixture, models, tmp_path_factory):
    """The default through the intake path (``asisr-run --model model_1.pt -b onnxruntime`` reuses that export)."""
    from asisr.export.onnx import export_onnx
    from asisr.sources import export_cached

    return {"on": export_cached(fixture[0]), "off": export_onnx(models["off"], tmp_path_factory.mktemp("off") / "onnx")}


def _onnx_run(directory, lr: np.ndarray, scale, rows, cols) -> np.ndarray:
    from asisr.runtime.backends.onnxrt import open_onnx_pipeline

    with open_onnx_pipeline(directory, 1, None) as pipe:
        s = np.asarray(scale)
        return pipe.upsample(pipe.features(np.asarray(lr), s), s, np.asarray(rows), np.asarray(cols))


@pytest.mark.parametrize("mode", list(OPTIONS))
def test_onnxruntime_reproduces_official(mode, fixture, exported):
    """Exported at 19x23 -> 41x67 with batch 2; run at the fixture's sizes (24x24, 20x24, 16x16), batch 1."""
    for case in CASES:
        c = fixture[1][case]
        lr, scale, rows, cols = _query(c)
        out = _onnx_run(exported[mode], lr, scale, rows, cols) * 255
        assert np.abs(out - c[TARGET[mode]].numpy()).max() <= TOL_255, (mode, case)


@pytest.mark.parametrize("mode", list(OPTIONS))
def test_exported_graphs_are_tensorrt_buildable(mode, exported):
    """Only TensorRT-parser operators (no GridSample, no GatherND), every image axis dynamic, scale an input."""
    for stage in ("backbone", "upsampler"):
        ops = assert_tensorrt_ops(exported[mode] / f"{stage}.onnx", ALLOWED_OPS)
        graph = onnx.load(str(exported[mode] / f"{stage}.onnx")).graph
        spec = next(st for st in contract.STAGES if st.name == stage)
        dims = {i.name: [d.dim_param for d in i.type.tensor_type.shape.dim] for i in graph.input}
        assert contract.SCALE in dims
        for tensor in spec.inputs:
            assert all(dims[tensor.name][axis] == name for axis, name in tensor.dynamic_axes().items()), tensor.name
        if stage == "upsampler":
            assert ops["Gather"] >= 4  # the sampler's four taps are plain row gathers


# ------------------------------------------------------------------------------------- odd sizes

def test_pooled_branch_of_odd_sizes_is_ceil_mode_pooling():
    """Replicating the last row / column before the pool is ``AvgPool2d(2, ceil_mode=True)``; even sizes are
    the official ``AvgPool2d(2)`` + ``Upsample(2, bilinear)`` unchanged; the upsampled map is its first h x w."""
    x = torch.randn(2, 16, 9, 14)
    assert (half_pool(x) - F.avg_pool2d(x, 2, ceil_mode=True)).abs().max() <= 1e-6
    assert half_pool(x).shape[2:] == (5, 7)
    even = torch.randn(2, 16, 10, 14)
    assert (half_pool(even) - F.avg_pool2d(even, 2)).abs().max() <= 1e-6
    small = torch.randn(2, 16, 5, 7)
    official = F.interpolate(small, scale_factor=2, mode="bilinear", align_corners=False)
    assert (double_bilinear(small, 10, 14) - official).abs().max() <= 1e-5
    assert (double_bilinear(small, 9, 13) - official[:, :, :9, :13]).abs().max() <= 1e-5


def test_odd_size_gives_the_requested_size_in_torch_and_onnx(models, exported):
    lr = torch.rand(1, 3, 17, 23)
    out_hw = (41, 60)  # x2.41 down, x2.61 across
    scale, rows, cols = (torch.from_numpy(a) for a in make_query(17, 23, *out_hw))
    with torch.no_grad():
        ours = models["on"](lr, scale, rows, cols)
        backbone = models["on"].backbone
        gate = backbone.sa_adapt[0].gate(backbone.head(backbone.sub_mean(lr * 255)))
    assert ours.shape[2:] == out_hw and gate.shape[2:] == (17, 23)
    assert models["on"].upscale(lr, out_hw).shape[2:] == out_hw
    assert np.abs(_onnx_run(exported["on"], lr, scale, rows, cols) - ours.numpy()).max() <= 1e-5


# ----------------------------------------------------------------------------------- command line

def _run_both_backends(image, args: list, checkpoint, tmp_path, capsys) -> dict[str, np.ndarray]:
    """``asisr-run`` on the fixture checkpoint with each backend; the 8-bit images it wrote."""
    from asisr.cli.run import main as run_main

    src = tmp_path / "in.png"
    write_image(src, image)
    written = {}
    for backend in ("torch", "onnxruntime"):
        out = tmp_path / f"{backend}.png"
        code, _, err = invoke(run_main, [src, *args, "--out", out, "--model", checkpoint, "--backend", backend], capsys)
        assert code == 0, err
        written[backend] = read_image(out).astype(np.int16)
    return written


def test_cli_writes_the_official_image_on_both_backends(fixture, exported, tmp_path, capsys):
    """``--scale 3.5x1.5`` (3.5 across, 1.5 down) on the fixture's asymmetric case: the official 8-bit image
    (``trainer.test``'s clamp and round of ``out_ac_true``) from the checkpoint, on PyTorch and ONNX Runtime."""
    c = fixture[1]["asym_1.5x3.5"]
    lr = c["lr"][0].permute(1, 2, 0).numpy().astype(np.uint8)
    written = _run_both_backends(lr, ["--scale", "3.5x1.5"], fixture[0], tmp_path, capsys)
    official = c["out_ac_true"][0].permute(1, 2, 0).clamp(0, 255).round().numpy()
    for backend, image in written.items():
        assert image.shape == (30, 84, 3)
        assert np.abs(image - official).max() <= 1, backend


def test_cli_odd_sized_photo_at_an_asymmetric_scale(fixture, exported, tmp_path, capsys):
    """A 31x23 crop of a Set5 photo (odd both ways) at 3.5 across, 2 down: 108x46, the backends agree."""
    photo = read_image(need(SET5 / "baby.png"))[200:223, 240:271]
    written = _run_both_backends(photo, ["--scale", "3.5x2"], fixture[0], tmp_path, capsys)
    assert written["torch"].shape == (46, 108, 3) and output_size(23, 31, Scale(h=2, w=3.5)) == (46, 108)
    assert np.abs(written["torch"] - written["onnxruntime"]).max() <= 1
    assert written["torch"].std() > 10  # a photo, not a flat image


# ---------------------------------------------------------------------------------------- scales

def test_per_sample_scales_share_a_batch(models):
    """The static-weight form keeps each sample's own routing: a mixed-scale batch equals single runs."""
    model = models["on"]
    lr = torch.rand(2, 3, 12, 10)
    scale = torch.tensor([[2.0, 3.5], [1.5, 1.2]])
    _, rows, cols = (torch.from_numpy(a) for a in make_query(12, 10, 30, 27, batch=2))
    with torch.no_grad():
        batched = model(lr, scale, rows, cols)
        single = torch.cat([model(lr[i:i + 1], scale[i:i + 1], rows[i:i + 1], cols[i:i + 1]) for i in range(2)])
        swapped = model(lr, scale.flip(1), rows, cols)
    assert (batched - single).abs().max() <= 1e-5
    assert (batched - swapped).abs().max() > 1e-3  # (s_h, s_w) order matters, so the test can tell


@pytest.mark.parametrize("align_corners", [True, False])
def test_sampler_is_grid_sample_with_zero_padding(align_corners, models):
    """The gather sampler against ``F.grid_sample`` on the official normalised grid, offsets up to 3 LR px
    (taps outside the map included)."""
    up = copy.deepcopy(models["on"].upsampler.sa_upsample)
    up.align_corners = align_corners
    feat = torch.randn(2, 8, 9, 11)
    _, rows, cols = (torch.from_numpy(a) for a in make_query(9, 11, 23, 31, batch=2))
    offset = (torch.rand(2, 23, 31, 2) - 0.5) * 6
    x = (cols[:, None, :] - 0.5 + offset[..., 0]) * 2 / (11 - 1) - 1
    y = (rows[:, :, None] - 0.5 + offset[..., 1]) * 2 / (9 - 1) - 1
    official = F.grid_sample(feat.double(), torch.stack([x, y], -1).double(), padding_mode="zeros",
                             align_corners=align_corners)
    ours = up.sample(feat, rows, cols, offset).permute(0, 3, 1, 2)
    assert (ours - official).abs().max() <= 1e-5


# ----------------------------------------------------------------------------------------- tiling

def _shifted_offsets(model, dx: float, dy: float):
    """``model`` with its learned offsets moved by (dx, dy) LR px: a sampler reaching well past one pixel."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.upsampler.sa_upsample.offset.bias += torch.tensor([dx, dy])
    return model


def test_offset_bound_is_sound_and_sets_the_reach(models):
    model = _shifted_offsets(models["on"], 2.6, -1.9)
    up = model.upsampler.sa_upsample
    bound = up.offset_bound()
    inv = torch.tensor([[a, b] for a in (0.0, 0.13, 0.5, 1.0) for b in (0.0, 0.31, 1.0)])  # 1/s, s in [1, inf)
    phase = torch.linspace(-0.501, 0.5, 201)[None].expand(len(inv), -1)
    with torch.no_grad():
        offset = F.linear(up.embedding(inv, phase, phase), up.offset.weight[:, :, 0, 0], up.offset.bias)
    assert 2.4 < offset.abs().max() <= bound <= offset.abs().max() + 1.0  # sound, and not vacuous
    assert model.descriptor.upsampler_lr_reach == lr_reach(bound) >= 3
    assert models["on"].descriptor.upsampler_lr_reach == 1  # the fixture's offsets stay below 0.15 px


def test_upsampler_tiles_exactly_given_the_features(models):
    """Tiled on the output only (the backbone is global: RCAN's channel attention); the learned offsets reach
    past 2 LR px, so tiles with a one-pixel reach would read zeros where the image has features."""
    from asisr.runtime.backends.pyt import torch_pipeline
    from asisr.runtime.upscaler import Upscaler

    model = _shifted_offsets(models["on"], 2.6, -1.9)
    image = np.random.default_rng(0).random((21, 26, 3), dtype=np.float32)
    out_hw = (50, 61)

    def run(pipeline, tile):
        with Upscaler(pipeline, tile=tile, lr_tile=10_000) as up:
            return up.upscale_to(image, out_hw)

    pipeline = torch_pipeline(model)
    whole = run(pipeline, 10_000)
    assert np.abs(run(pipeline, 16) - whole).max() <= 1e-6
    too_short = replace(pipeline, descriptor=replace(pipeline.descriptor, upsampler_lr_reach=1))
    assert np.abs(run(too_short, 16) - whole).max() > 1e-3


def test_tiling_with_the_option_off_warns_and_says_why(models):
    """Off, the sampling stretches with the window a tile reads: tiled output really differs, and the warning
    names the cause; on, the same tiling is exact and the upsampler says nothing."""
    import warnings

    from asisr.runtime.backends.pyt import torch_pipeline
    from asisr.runtime.upscaler import Upscaler

    image = np.random.default_rng(1).random((21, 26, 3), dtype=np.float32)

    def run(mode: str, tile: int):
        with warnings.catch_warnings(record=True) as caught, Upscaler(torch_pipeline(models[mode]), tile=tile,
                                                                      lr_tile=10_000) as up:
            warnings.simplefilter("always")
            out = up.upscale_to(image, (50, 61))
        return out, [str(w.message) for w in caught]

    whole, quiet = run("off", 10_000)
    tiled, said = run("off", 16)
    assert not quiet and np.abs(tiled - whole).max() > 1e-3
    assert len(said) == 1 and "grid_align_corners=off samples" in said[0] and "tiles of 16 px" in said[0]
    assert run("on", 16)[1] == []


# ------------------------------------------------------------------------------- checkpoint intake

def test_detects_the_fixture_checkpoint_and_saves_in_asisr_format(fixture, models, tmp_path):
    found = detect(read_checkpoint(fixture[0]))
    assert found.name == "arbrcan"
    assert found.kwargs == {"n_resgroups": 2, "n_resblocks": 2, "n_feats": 32, "reduction": 16}
    model = models["off"]
    assert sum(p.numel() for p in model.parameters()) == 203_703
    assert len(model.state_dict()) == 122
    again = load(save(model, tmp_path / "arbrcan.pt"))  # the option travels in the config
    assert again.config == model.config and again.descriptor == model.descriptor
    lr, scale, rows, cols = _query(fixture[1]["x4"])
    with torch.no_grad():
        assert torch.equal(again(lr, scale, rows, cols), model(lr, scale, rows, cols))


def _full_size_layout() -> tuple[dict, dict]:
    spec = json.loads(need(MANIFESTS).read_text())["arbrcan_official"]
    return spec, {k: torch.empty(shape, device="meta") for k, shape in spec["state_dict"].items()}


def test_detects_the_full_size_official_layout():
    """The released checkpoint's layout (shapes only): every key and shape, the released sizes."""
    spec, sd = _full_size_layout()
    found = detect(sd)
    assert found.name == "arbrcan"
    assert found.kwargs == {"n_resgroups": 10, "n_resblocks": 20, "n_feats": 64, "reduction": 16}
    with torch.device("meta"):
        model = create(found.name, **found.kwargs)
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert own == {k: tuple(v.shape) for k, v in found.state_dict.items()}
    assert len(own) == spec["n_state_dict_keys"] == 1970
    assert sum(p.numel() for p in model.parameters()) == spec["n_params"]
    assert sum(v.numel() for v in model.state_dict().values()) == spec["n_state_dict_elements"]


def test_detector_refuses_a_layout_it_cannot_build():
    _, sd = _full_size_layout()
    without_last_adapt = {k: v for k, v in sd.items() if not k.startswith("sa_adapt.9.")}
    with pytest.raises(UserError) as e:
        detect(without_last_adapt)
    assert "not the ArbRCAN layout" in str(e.value) and "\n" not in str(e.value)


def test_bad_options_are_one_line_user_errors():
    with pytest.raises(UserError, match="expected on or off, not 'sideways'") as e:
        parse_options(["grid_align_corners=sideways"])
    assert "\n" not in str(e.value)
    assert parse_options(["grid_align_corners=off"]) == {"grid_align_corners": False}
    with pytest.raises(UserError, match="model 'lte' has no test-time option 'grid_align_corners'"):
        apply_options(Detection("lte", {}, {}), {"grid_align_corners": False})
    with pytest.raises(UserError, match="model 'arbrcan' has no test-time option 'cell_clip'"):
        apply_options(Detection("arbrcan", {}, {}), {"cell_clip": 4.0})
