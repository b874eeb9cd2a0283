"""MetaRDN (official Meta-SR-Pytorch 0.4.0) against tensors produced by the official code (``shared/fixtures``).

The fixture ran the official model (small RDN table, random weights) at x2.5 and x1.7 on a
12x14 LR and at x2.3 on a 31x12 LR, whose HR row 69 lands in LR row 29 with offset ~1 through
float32 rounding. asisr must reproduce ``feat``, ``sr`` and the scored ``sr_quantized`` in
PyTorch, through its ONNX export, through the runtime (size rule ``int(s * h)``, tiles) and
from the command line.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from asisr.errors import UserError
from asisr.imageio import read_image, write_image
from asisr.models import create, detect, load
from asisr.models.metardn import MetaUpscale
from asisr.runtime.descriptor import ModelDescriptor
from asisr.runtime.query import floor_grid_coords, make_query
from asisr.scale import Scale, output_size, scale_for_size
from tests.cli_helpers import assert_user_error, invoke
from tests.shared_data import SET5, SHARED, need
from tests.full_size import assert_backends_agree, official_layout, write_random_official
from tests.onnx_ops import assert_tensorrt_ops

FIXTURE = SHARED / "fixtures" / "metardn_official_small"
CASES = ("x2.5", "x1.7", "x2.3_lr31x12")
TOL_255 = 0.01  # max abs on the official 0..255 scale (measured: <= 1.3e-3)
FULL_SIZE = {"G0": 64, "D": 16, "C": 8, "G": 64, "kernel_size": 3}


@pytest.fixture(scope="module")
def official():
    root = need(FIXTURE)
    return root / "model_small.pt", torch.load(root / "metardn_official_small_cases.pt")


@pytest.fixture(scope="module")
def model(official):
    return load(official[0])


def _query(case: dict):
    """The runtime's query for the case: its scale told to the model, rows / cols on the floor grid."""
    h, w = case["lr"].shape[2:]
    s = float(case["scale"])
    out_h, out_w = (int(v) for v in case["out_hw"])
    return tuple(torch.from_numpy(a) for a in make_query(h, w, out_h, out_w, grid_scale=(s, s)))


def _lr01(case: dict) -> torch.Tensor:
    return case["lr"] / 255.0  # the official input is 0..255 integers; asisr's is [0, 1]


def _assert_matches_sr(out01, case: dict) -> None:
    """``out01`` (1, 3, H, W) in [0, 1] against ``sr``, and its 8-bit image against the scored ``sr_quantized``.

    A quantised value may differ only where ``sr`` lies within the float tolerance of a rounding edge.
    """
    out = torch.as_tensor(out01) * 255.0
    assert out.shape == case["sr"].shape
    assert (out - case["sr"]).abs().max() <= TOL_255
    quantized = out.clamp(0, 255).round()
    differ = quantized != case["sr_quantized"]
    near_edge = ((case["sr"] - case["sr"].floor()) - 0.5).abs() < TOL_255
    assert not (differ & ~near_edge).any()


# ------------------------------------------------------------------ positions (the float32 convention)

def _official_cells(case: dict):
    """Per HR row / column: its LR cell and offset, read back from the official ``pos_mat`` and ``mask``."""
    s = float(case["scale"])
    r = int(np.ceil(s))
    h, w = case["lr"].shape[2:]
    grid = case["pos_mat"][0].view(r * h, r * w, 3)
    mask = case["mask"]
    valid_rows = mask.any(dim=1).nonzero()[:, 0]  # grid row = LR row * r + slot, in HR order
    valid_cols = mask.any(dim=0).nonzero()[:, 0]
    return (valid_rows // r, grid[valid_rows, 0, 1]), (valid_cols // r, grid[0, valid_cols, 2])


@pytest.mark.parametrize("case", CASES)
def test_floor_grid_gives_the_official_cells_under_any_tile_shift(official, case):
    """The host's rows, shifted by any integer LR offset as a tile does, give the graph the official
    float32 cell and offset of every HR row and column, the x2.3 glitch included."""
    c = official[1][case]
    s = float(c["scale"])
    h, w = c["lr"].shape[2:]
    (cell_y, off_y), (cell_x, off_x) = _official_cells(c)
    scale, rows, cols = _query(c)
    assert rows.shape[1] == len(cell_y) == int(s * h) and cols.shape[1] == len(cell_x) == int(s * w)
    for lo in (0, 1, 7, 10):
        shifted = torch.from_numpy((floor_grid_coords(h, s, 0, int(s * h)) - lo).astype(np.float32))[None]
        feat = torch.zeros(1, 1, h - lo, w)
        iy, ix, fy, fx, _ = MetaUpscale.corner_cells(feat, scale, shifted, cols)
        keep = cell_y >= lo
        assert torch.equal(iy[0][keep], cell_y[keep] - lo)
        assert (fy[0][keep] - off_y[keep]).abs().max() <= 1e-5
    assert torch.equal(ix[0], cell_x) and (fx[0] - off_x).abs().max() <= 1e-5
    if case == "x2.3_lr31x12":
        assert cell_y[69] == 29 and off_y[69] > 0.99  # float32: 69 * float32(1 / 2.3) = 29.999998


def test_effective_grid_is_not_the_official_one(model, official):
    """asisr's default query (told out / lr = 71 / 31, not 2.3) samples elsewhere: the size rule's
    grid is what reproduces the official output."""
    c = official[1]["x2.3_lr31x12"]
    h, w = c["lr"].shape[2:]
    scale, rows, cols = (torch.from_numpy(a) for a in make_query(h, w, *c["sr"].shape[2:]))
    with torch.no_grad():
        out = model(_lr01(c), scale, rows, cols) * 255
    assert (out - c["sr"]).abs().max() > 1.0


# ------------------------------------------------------------------ PyTorch

@pytest.mark.parametrize("case", CASES)
def test_backbone_features_match_official(model, official, case):
    c = official[1][case]
    with torch.no_grad():
        feat = model.backbone(_lr01(c), torch.full((1, 2), float(c["scale"])))
    assert (feat - c["feat"]).abs().max() <= 1e-3  # |feat| up to ~165; measured 1.5e-5


@pytest.mark.parametrize("case", CASES)
def test_pytorch_reproduces_official(model, official, case):
    c = official[1][case]
    scale, rows, cols = _query(c)
    with torch.no_grad():
        for variant in (model, model.reference()):  # the fast rewrite and the official per-pixel filters
            _assert_matches_sr(variant(_lr01(c), scale, rows, cols), c)


def test_mean_shifts_come_from_the_checkpoint(official, tmp_path):
    """The official MeanShift stays trainable, so its checkpoint values are the ones used."""
    sd = dict(torch.load(official[0]))
    c = official[1]["x2.5"]
    scale, rows, cols = _query(c)
    sd["add_mean.bias"] = sd["add_mean.bias"] + torch.tensor([10.0, 0.0, -10.0])
    torch.save(sd, tmp_path / "moved.pt")
    with torch.no_grad():
        base = load(official[0])(_lr01(c), scale, rows, cols)
        moved = load(tmp_path / "moved.pt")(_lr01(c), scale, rows, cols)
    delta = ((moved - base) * 255).flatten(2).mean(dim=2)[0]
    assert torch.allclose(delta, torch.tensor([10.0, 0.0, -10.0]), atol=1e-3)


# ------------------------------------------------------------------ ONNX

@pytest.fixture(scope="module")
def exported(official):
    """Through the intake path (``asisr-run --model model_small.pt -b onnxruntime`` reuses that export)."""
    from asisr.sources import export_cached

    return export_cached(official[0])


@pytest.mark.parametrize("case", CASES)
def test_onnxruntime_reproduces_official(exported, official, case):
    """Exported at 19x23 (batch 2); run at 12x14 and 31x12."""
    from asisr.runtime.backends.onnxrt import open_onnx_pipeline

    c = official[1][case]
    scale, rows, cols = (t.numpy() for t in _query(c))
    with open_onnx_pipeline(exported, 1, None) as pipe:
        out = pipe.upsample(pipe.features(_lr01(c).numpy(), scale), scale, rows, cols)
    _assert_matches_sr(out, c)


def test_exported_graphs_use_only_tensorrt_operators(exported):
    for stage in ("backbone", "upsampler"):
        ops = assert_tensorrt_ops(exported / f"{stage}.onnx")
    assert ops["Gather"] > 0 and ops["MatMul"] > 0  # the per-pixel read and contraction


def test_manifest_states_the_size_rule(exported):
    from asisr.runtime.manifest import read_manifest

    d = read_manifest(exported).model_descriptor()
    assert (d.arch, d.size_rule, d.symmetric_only) == ("metardn", "floor", True)


# ------------------------------------------------------------------ runtime: size rule, symmetry, tiles

def _image(case: dict) -> np.ndarray:
    return np.ascontiguousarray(_lr01(case)[0].permute(1, 2, 0).numpy())


def test_runtime_output_is_int_s_h_and_official(exported, official):
    """int(2.3 * 12) = 27 columns where round() would give 28; the pixels are the official ones."""
    from asisr.sources import open_upscaler

    c = official[1]["x2.3_lr31x12"]
    with open_upscaler(exported, "onnxruntime", threads=1) as up:
        sr = up.upscale(_image(c), scale=2.3)
    assert sr.shape == (71, 27, 3) and output_size(31, 12, Scale(2.3, 2.3)) == (71, 28)
    assert np.abs(sr - np.clip(c["sr"][0].permute(1, 2, 0).numpy() / 255, 0, 1)).max() <= TOL_255 / 255


def test_asymmetric_requests_are_refused_in_one_line(exported, official):
    from asisr.sources import open_upscaler

    image = _image(official[1]["x2.5"])  # 12x14
    with open_upscaler(exported, "onnxruntime", threads=1) as up:
        with pytest.raises(UserError) as e:
            up.upscale(image, scale=Scale(h=2.0, w=3.0))
        assert "\n" not in str(e.value) and "asymmetric" in str(e.value) and "metardn" in str(e.value)
        with pytest.raises(UserError) as e:
            up.upscale(image, size=(24, 42))  # x2 down, x3 across
        assert "\n" not in str(e.value) and "one scale" in str(e.value)
        assert up.upscale(image, size=(30, 35)).shape == (30, 35, 3)  # x2.5 both ways: accepted


def test_size_rule_unit():
    assert output_size(45, 50, Scale(1.4, 2.3), "floor") == (62, 114)
    assert output_size(45, 50, Scale(1.4, 2.3)) == (63, 115)
    s = scale_for_size(31, 12, 71, 27, "floor", symmetric_only=True)
    assert s.h == s.w and output_size(31, 12, s, "floor") == (71, 27)
    assert scale_for_size(31, 12, 71, 27) == Scale(71 / 31, 27 / 12)  # other models: out / lr per axis


def test_descriptor_round_trip_and_old_manifests(model):
    d = model.descriptor
    assert ModelDescriptor.from_dict(json.loads(json.dumps(d.to_dict()))) == d
    old = {k: v for k, v in d.to_dict().items() if k not in ("size_rule", "symmetric_only")}
    back = ModelDescriptor.from_dict(old)
    assert (back.size_rule, back.symmetric_only) == ("round", False)
    with pytest.raises(ValueError):
        ModelDescriptor(arch="x", feature_channels=1, size_rule="ceil")


def test_tiled_equals_untiled_and_official(official):
    """Output tiles shift rows by their LR offset; the glitch row 69 sits in a shifted tile."""
    from asisr.sources import open_upscaler

    ckpt, cases = official
    c = cases["x2.3_lr31x12"]
    assert load(ckpt).descriptor.tiles_exactly
    with open_upscaler(ckpt, "torch", threads=1, tile=10_000, lr_tile=10_000) as up:
        whole = up.upscale(_image(c), scale=2.3)
    with open_upscaler(ckpt, "torch", threads=1, tile=16, lr_tile=6) as up:
        tiled = up.upscale(_image(c), scale=2.3)
        assert up.last_plan.tile == 16
    assert np.abs(whole - tiled).max() <= 1e-5  # measured 6e-7 (conv sums over other tile extents)
    assert np.abs(tiled - np.clip(c["sr"][0].permute(1, 2, 0).numpy() / 255, 0, 1)).max() <= TOL_255 / 255


def _cli(args: list, capsys) -> tuple[int, str, str]:
    from asisr.cli.run import main as run_main

    return invoke(run_main, args, capsys)


def _run_both_backends(image: np.ndarray, scale: str, checkpoint, tmp_path, capsys) -> dict[str, np.ndarray]:
    """``asisr-run --scale SCALE`` on the fixture checkpoint with each backend; the 8-bit images it wrote."""
    write_image(tmp_path / "lr.png", image)
    written = {}
    for backend in ("torch", "onnxruntime"):
        out = tmp_path / f"{backend}.png"
        code, _, err = _cli([tmp_path / "lr.png", "--scale", scale, "--out", out, "--model", checkpoint,
                             "--backend", backend], capsys)
        assert code == 0, err
        written[backend] = read_image(out).astype(np.int16)
    return written


def test_cli_run_scale_writes_the_official_image(exported, official, tmp_path, capsys):
    """``asisr-run --scale 2.3`` on the checkpoint, both backends: int(2.3 * h) x int(2.3 * w), the scored image."""
    c = official[1]["x2.3_lr31x12"]
    lr = c["lr"][0].permute(1, 2, 0).numpy().astype(np.uint8)
    official_8bit = c["sr_quantized"][0].permute(1, 2, 0).numpy()
    for backend, sr in _run_both_backends(lr, "2.3", official[0], tmp_path, capsys).items():
        assert sr.shape == (71, 27, 3)
        assert np.abs(sr - official_8bit).max() <= 1, backend


def test_cli_odd_sized_photo_and_asymmetric_refusal(exported, official, tmp_path, capsys):
    """A 31x23 Set5 crop at x2.5 (77x57, int(s * size)) on both backends, which agree; 2x3 is one error line."""
    photo = read_image(need(SET5 / "baby.png"))[200:223, 240:271]
    written = _run_both_backends(photo, "2.5", official[0], tmp_path, capsys)
    assert written["torch"].shape == (57, 77, 3)
    assert np.abs(written["torch"] - written["onnxruntime"]).max() <= 1
    assert written["torch"].std() > 10  # a photo, not a flat image
    for backend in ("torch", "onnxruntime"):
        code, _, err = _cli([tmp_path / "lr.png", "--scale", "2x3", "--out", tmp_path / "bad.png",
                             "--model", official[0], "--backend", backend], capsys)
        assert_user_error(code, err, "asymmetric")
        assert not (tmp_path / "bad.png").exists()


def test_parity_cases_follow_the_floor_grid(model):
    """asisr-parity's cases for MetaRDN are the runtime's queries: int(s * h) pixels on the scale's own grid,
    told s, no asymmetric case; other models keep round(s * h) over the LR image."""
    from asisr.evaluation.parity import build_cases

    cases = {c.name: c for c in build_cases(descriptor=model.descriptor)}
    c = cases["random 17x23 x3.7"]
    assert c.rows.shape == (1, int(3.7 * 17)) and c.cols.shape == (1, int(3.7 * 23))
    assert np.array_equal(c.rows[0], floor_grid_coords(17, 3.7).astype(np.float32))
    assert np.allclose(c.scale, 3.7)
    assert not any("2x3.5" in name for name in cases)
    mixed = next(v for k, v in cases.items() if k.startswith("mixed batch"))
    assert np.allclose(mixed.scale, [[1.7, 1.7], [3.3, 3.3]])
    assert np.array_equal(mixed.rows[1], floor_grid_coords(17, 3.3, 3, 27).astype(np.float32))
    default = {c.name: c for c in build_cases()}["random 17x23 x3.7"]
    assert default.rows.shape == (1, round(3.7 * 17)) and not np.array_equal(default.rows[0, :62], c.rows[0])


def test_bench_flops_count_the_tiles_the_runtime_runs(model):
    """``asisr.bench.flops`` counts MetaRDN's upsampler on the LR windows its floor-grid tiles really read."""
    from asisr.bench.flops import TileFlopCounter
    from asisr.runtime.backends.pyt import torch_pipeline
    from asisr.runtime.upscaler import Upscaler

    pipeline = torch_pipeline(model)
    run_shapes, upsample = [], pipeline.upsample

    def recording(feat, scale, rows, cols):
        run_shapes.append((feat.shape[2], feat.shape[3], rows.shape[1], cols.shape[1]))
        return upsample(feat, scale, rows, cols)

    pipeline.upsample = recording  # the real upsampler, its calls recorded
    image = np.random.default_rng(0).random((31, 12, 3), dtype=np.float32)
    with Upscaler(pipeline, tile=16, lr_tile=10_000) as up:
        up.upscale_to(image, (71, 27))
        plan = up.last_plan
    counter = TileFlopCounter(model)
    counted = counter.image((31, 12), (71, 27), plan)
    assert counted.upsampler_tiles == len(run_shapes) == 5 * 2
    assert counted.upsampler == sum(counter.upsampler(*shape) for shape in run_shapes)


def test_cli_parity_passes_on_the_floor_grid(exported, official, capsys):
    from asisr.cli.parity import main as parity_main

    code, out, err = invoke(parity_main, [exported, "--checkpoint", official[0], "--threads", "1"], capsys)
    assert code == 0, out + err
    assert "x2x3.5" not in out and "x3.7" in out and "mixed batch x1.7 + x3.3 " in out


# ------------------------------------------------------------------ checkpoint intake

def test_detects_the_full_size_official_layout():
    """The 304 tensors of the official defaults (G0 64, RDNconfig B) map onto a model of that exact layout."""
    manifests = need(SHARED / "fixtures" / "official_key_manifests.json")
    spec = json.loads(manifests.read_text())["metardn_official"]
    sd = {k: torch.empty(shape, device="meta") for k, shape in spec["state_dict"].items()}
    found = detect(sd)
    assert found.name == "metardn" and found.kwargs == FULL_SIZE
    with torch.device("meta"):
        built = create("metardn", **found.kwargs)
    own = {k: tuple(v.shape) for k, v in built.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in found.state_dict.items()} == own
    assert len(own) == spec["n_state_dict_keys"] == 304
    assert sum(p.numel() for p in built.parameters()) == spec["n_params"]
    assert built.descriptor.backbone_halo == 3 + 16 * 8  # SFENet1, SFENet2, GFF.1 and the D x C dense 3x3 convs


@pytest.mark.slow
def test_full_size_layout_exports_and_matches_pytorch(tmp_path):
    """A file of the official full-size layout (random values), read by the detector, exported through the
    intake path (at 19x23, batch 2) and run at 12x10 on the floor grids of x2.7 and x3.3 (~12 s, the export)."""
    from asisr.sources import export_cached

    checkpoint = write_random_official("metardn_official", tmp_path / "model_1000.pt")
    assert {k: tuple(v.shape) for k, v in torch.load(checkpoint).items()} == official_layout("metardn_official")
    assert detect(torch.load(checkpoint)).kwargs == FULL_SIZE
    h, w = 12, 10
    queries = [make_query(h, w, int(s * h), int(s * w), grid_scale=(s, s)) for s in (2.7, 3.3)]
    lr = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
    assert_backends_agree(checkpoint, lr, queries, rgb_tol=1e-5)  # measured 8e-7, outputs' std 0.26
    for stage in ("backbone", "upsampler"):
        assert_tensorrt_ops(export_cached(checkpoint) / f"{stage}.onnx")


def test_detects_the_small_fixture(official):
    found = detect(torch.load(official[0]))
    assert found.name == "metardn" and found.kwargs == {"G0": 16, "D": 3, "C": 4, "G": 16, "kernel_size": 3}


def test_other_rdn_layouts_are_not_claimed(official):
    """A bare RDN encoder (the LIIF codebase's) is no MetaRDN; a MetaRDN with a foreign P2W is refused in one line."""
    rdn = need(SHARED / "fixtures" / "encoders_official_small" / "rdn.pth")
    with pytest.raises(UserError) as e:
        detect(torch.load(rdn))
    assert "unknown architecture" in str(e.value)
    sd = dict(torch.load(official[0]))
    sd["P2W.meta_block.2.weight"] = torch.zeros(27 * 8, 256)
    with pytest.raises(UserError) as e:
        detect(sd)
    assert "\n" not in str(e.value) and "MetaRDN" in str(e.value) and "P2W.meta_block.2.weight" in str(e.value)
