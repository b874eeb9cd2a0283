"""LTE and Meta-SR (LIIF codebase) against tensors produced by the official code (``shared/fixtures``).

Each fixture case ran the official model on one input: whole images at x2.5, x2 x 3.5 and x6
(with the official test's cell clip) and a training-style mixed-scale batch of scattered
query points. asisr must reproduce ``out`` in PyTorch and through its ONNX export, and the
options that shape test-time behaviour (the cell clip) must be what made the difference.
"""

from __future__ import annotations

import collections

import cv2
import numpy as np
import onnx
import pytest
import torch

from asisr.models import load
from asisr.runtime.query import make_query
from tests.cli_helpers import invoke
from tests.conftest import exported_once
from tests.shared_data import SHARED, need
from tests.onnx_ops import TENSORRT_OPS

FIXTURES = {"lte": SHARED / "fixtures" / "lte_official_small", "metasr": SHARED / "fixtures" / "metasr_liif_small"}
CASES = ("sym_2.5", "asym_2x3.5", "x6_cellclip", "batch_mixed")
TOL = 1e-4  # max abs on [0, 1] outputs (the acceptance bar; measured: <= 3.4e-6)
OFFICIAL_CLIP = 4.0  # test.py --scale_max, with which x6_cellclip was made


def _fixture(arch: str):
    root = need(FIXTURES[arch])
    return root / "epoch-last.pth", torch.load(root / "cases.pt")


def _query(case: dict):
    """The case's query as (scale, rows, cols), and how to read the fixture's points from a grid output.

    Whole images are grids; the mixed batch holds scattered points, asked for as the grid of
    their rows x their cols, whose diagonal is the points themselves.
    """
    lr = case["lr"]
    b, _, h, w = lr.shape
    if "hr_size" in case:  # batch_mixed: square HR per sample, (y, x) normalised coordinates
        hr = case["hr_size"].double()
        scale = torch.stack([hr / h, hr / w], dim=1).float()
        rows = ((case["coord"][..., 0].double() + 1) / 2 * h).float()
        cols = ((case["coord"][..., 1].double() + 1) / 2 * w).float()
        return scale, rows, cols, lambda out: torch.diagonal(torch.as_tensor(out), dim1=2, dim2=3).permute(0, 2, 1)
    out_h, out_w = case["out"].shape[2:]
    scale, rows, cols = (torch.from_numpy(a) for a in make_query(h, w, out_h, out_w, batch=b))
    return scale, rows, cols, torch.as_tensor


@pytest.mark.parametrize("arch", list(FIXTURES))
@pytest.mark.parametrize("case", CASES)
def test_pytorch_reproduces_official(arch, case):
    ckpt, cases = _fixture(arch)
    c = cases[case]
    model = load(ckpt)  # the defaults are the official test's (LTE repository), with which the fixtures were made
    with torch.no_grad():
        assert (model.backbone.encoder((c["lr"] - 0.5) / 0.5) - c["feat"]).abs().max() <= TOL
        scale, rows, cols, points = _query(c)
        for variant in (model, model.reference()):  # the fast rewrite and the official computation
            out = points(variant(c["lr"], scale, rows, cols).clamp(0, 1))
            assert (out - c["out"]).abs().max() <= TOL, (variant.upsampler.fast, case)


@pytest.mark.parametrize("arch", list(FIXTURES))
def test_cell_clip_is_what_x6_needs(arch):
    """Without the clip the x6 case is far off (the option is real); the default is the LTE repository's test."""
    ckpt, cases = _fixture(arch)
    c = cases["x6_cellclip"]
    scale, rows, cols, points = _query(c)
    with torch.no_grad():
        off = points(load(ckpt, {"cell_clip": None})(c["lr"], scale, rows, cols).clamp(0, 1))
    assert (off - c["out"]).abs().max() > 1e-3
    assert load(ckpt).config["cell_clip"] == OFFICIAL_CLIP


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Each fixture checkpoint exported with its default options (once per run: test_openvino shares them)."""
    return {arch: exported_once(tmp_path_factory, f"{FIXTURES[arch].name}_onnx", _fixture(arch)[0]) for arch in FIXTURES}


@pytest.mark.parametrize("arch", list(FIXTURES))
@pytest.mark.parametrize("case", CASES)
def test_onnxruntime_reproduces_official(arch, case, exported):
    from asisr.runtime.backends.onnxrt import open_onnx_pipeline

    _, cases = _fixture(arch)
    c = cases[case]
    scale, rows, cols, points = _query(c)
    with open_onnx_pipeline(exported[arch], 1, None) as pipe:
        s = scale.numpy()
        out = pipe.upsample(pipe.features(c["lr"].numpy(), s), s, rows.numpy(), cols.numpy())
    assert (points(np.clip(out, 0, 1)) - c["out"]).abs().max() <= TOL


@pytest.mark.parametrize("arch", list(FIXTURES))
def test_exported_graphs_use_only_tensorrt_operators(arch, exported):
    for stage in ("backbone", "upsampler"):
        ops = collections.Counter(n.op_type for n in onnx.load(str(exported[arch] / f"{stage}.onnx")).graph.node)
        assert "GridSample" not in ops
        assert set(ops) <= TENSORRT_OPS, (stage, sorted(set(ops) - TENSORRT_OPS))
        assert ops["Gather"] > 0 or stage == "backbone"  # the nearest / bilinear reads are plain gathers


def _write16(path, chw: torch.Tensor) -> None:
    rgb = np.round(chw.permute(1, 2, 0).numpy() * 65535).astype(np.uint16)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


@pytest.mark.parametrize("arch", list(FIXTURES))
@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_cli_export_and_run_match_the_fixture_image(arch, backend, tmp_path, capsys):
    """From the command line: asisr-export works on the official file, and asisr-run on it writes
    the fixture's x2.5 image (16-bit PNG in and out, so the comparison is not blurred by 8 bits)."""
    from asisr.cli.export import main as export_main
    from asisr.cli.run import main as run_main

    ckpt, cases = _fixture(arch)
    c = cases["sym_2.5"]
    code, out, err = invoke(export_main, ["--checkpoint", ckpt, "--out", tmp_path / "onnx"], capsys)
    assert code == 0, err
    assert f"exported {arch}" in out
    _write16(tmp_path / "lr.png", c["lr"][0])
    h, w = c["out"].shape[2:]
    code, _, err = invoke(run_main, [tmp_path / "lr.png", "--size", f"{w}x{h}", "--out", tmp_path / "sr.png",
                                     "--model", ckpt, "--backend", backend], capsys)
    assert code == 0, err
    sr = cv2.cvtColor(cv2.imread(str(tmp_path / "sr.png"), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)
    assert sr.dtype == np.uint16 and sr.shape == (h, w, 3)
    ref = c["out"][0].permute(1, 2, 0).numpy()
    # 16-bit input rounding (<= 7.6e-6) goes through the model; 1e-3 is ~65 output levels of 65535
    assert np.abs(sr / 65535.0 - ref).max() <= 1e-3


# ------------------------------------------------------------------ encoders inside the family

SMALL_ENCODERS = {
    "edsr-baseline": {"n_resblocks": 2, "n_feats": 16},
    "rdn": {"G0": 16, "D": 2, "C": 2, "G": 8},
    "swinir": {"embed_dim": 12, "depths": [2], "num_heads": [2], "window_size": 4, "img_size": 16},
}
SMALL_HEADS = {"liif": {"hidden": [32, 32]}, "lte": {"hidden_dim": 16, "hidden": [32, 32]}, "metasr": {}}


def _small(arch: str, encoder: str, **extra):
    from asisr.models import create

    torch.manual_seed(0)
    return create(arch, encoder=encoder, encoder_args=SMALL_ENCODERS[encoder], **SMALL_HEADS[arch], **extra).eval()


@pytest.mark.parametrize("arch", ["lte", "metasr"])
@pytest.mark.parametrize("encoder", ["edsr-baseline", "rdn"])
def test_tiled_equals_untiled(arch, encoder, tmp_path):
    """Finite receptive fields recorded as halos: a tiled run equals the whole-image run."""
    from asisr.models import save
    from asisr.sources import open_upscaler

    model = _small(arch, encoder)
    assert model.descriptor.tiles_exactly and model.descriptor.backbone_halo > 0
    save(model, tmp_path / "m.pt")
    lr = (np.random.default_rng(0).random((41, 37, 3)) * 255).astype(np.uint8)
    out = (127, 96)  # x3.1 x 2.6
    with open_upscaler(tmp_path / "m.pt", "torch", threads=1, tile=10_000, lr_tile=10_000) as up:
        whole = up.upscale_to(lr, out)
    with open_upscaler(tmp_path / "m.pt", "torch", threads=1, tile=24, lr_tile=12) as up:
        tiled = up.upscale_to(lr, out)
    assert np.abs(whole - tiled).max() <= 1e-5


@pytest.mark.parametrize("arch", ["liif", "lte", "metasr"])
def test_swinir_window_padding_matches_the_official_test_inside_the_image(arch):
    """The official test runs the upsampler on the padded features; asisr crops them to the LR size
    (the stage contract). Every output pixel whose reads stay inside the image is identical; only
    the last LR row / column can differ, where the official code reads padded features."""
    model = _small(arch, "swinir")
    assert model.descriptor.backbone_halo is None  # SwinIR: tiles approximately (the runtime warns)
    lr = torch.rand(1, 3, 10, 13)
    scale, rows, cols = (torch.from_numpy(a) for a in make_query(10, 13, 30, 39))
    with torch.no_grad():
        from asisr.models.swinir import window_test_pad

        inp = window_test_pad((lr - 0.5) / 0.5, 4)
        padded = model.backbone.head(inp, model.backbone.encoder(inp))  # the official test's features
        assert padded.shape[2:] == (12, 16)
        official = model.upsampler(padded, scale, rows, cols)
        ours = model(lr, scale, rows, cols)
    inside = slice(0, 3 * (10 - 2)), slice(0, 3 * (13 - 2))  # reads at most 2 LR px beyond a query's cell
    assert (ours - official)[..., inside[0], inside[1]].abs().max() <= 1e-6
    with torch.no_grad():
        unpadded = _small(arch, "swinir", window_pad=False)(lr, scale, rows, cols)
    assert (unpadded - ours).abs().max() > 1e-4  # the option changes the computation
