"""The latent-modulated decoder (models/lmf.py) deploys like every model: ONNX parity at shapes
other than the export's, TensorRT-buildable operators, tiled == untiled, and its cost split
(per-LR-pixel latent network, a few thousand MACs per output pixel)."""

from __future__ import annotations

import collections
import re

import numpy as np
import onnx
import pytest
import torch

from asisr.models import create, save
from tests.cli_helpers import invoke
from tests.onnx_ops import TENSORRT_OPS

TINY = {"n_resblocks": 2, "n_feats": 16, "latent_dim": 32, "width": 8, "depth": 3}


def tiny_student(seed: int = 0):
    """Random weights everywhere, the zero-initialised modulation layer included, so every path counts."""
    torch.manual_seed(seed)
    model = create("lmf", **TINY)
    with torch.no_grad():
        last = model.backbone.latent[-1]
        last.weight.normal_(0, 0.05)
        last.bias.normal_(0, 0.2)
    return model.eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save(tiny_student(), tmp_path_factory.mktemp("lmf") / "lmf.pt")


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    from asisr.export.onnx import export_onnx
    from asisr.models import load

    return export_onnx(load(checkpoint), tmp_path_factory.mktemp("lmf") / "onnx")


def test_parity_on_onnxruntime_at_other_shapes_and_asymmetric_scales(checkpoint, exported, capsys, tmp_path):
    from asisr.cli.parity import main as parity_main

    code, out, err = invoke(parity_main, [exported, "--checkpoint", checkpoint, "--shapes", "9x13,21x17",
                                          "--scales", "1.7,3,2.5x4,7.3", "--json", tmp_path / "p.json"], capsys)
    assert code == 0, out + err
    passed = re.search(r"(\d+)/(\d+) cases pass", out)
    assert passed and passed.group(1) == passed.group(2) and int(passed.group(2)) >= 8, out


def test_exported_graphs_use_only_tensorrt_operators(exported):
    for stage in ("backbone", "upsampler"):
        ops = collections.Counter(n.op_type for n in onnx.load(str(exported / f"{stage}.onnx")).graph.node)
        assert "GridSample" not in ops
        assert set(ops) <= TENSORRT_OPS, (stage, sorted(set(ops) - TENSORRT_OPS))
    assert ops["Gather"] > 0  # the ensemble members' modulations are plain gathers


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_tiled_equals_untiled(checkpoint, backend, tmp_path, monkeypatch):
    monkeypatch.setenv("ASISR_CACHE", str(tmp_path))
    from asisr.sources import open_upscaler

    rng = np.random.default_rng(0)
    lr = (rng.random((37, 29, 3)) * 255).astype(np.uint8)
    out = (131, 97)
    with open_upscaler(checkpoint, backend, threads=1, tile=10_000, lr_tile=10_000) as up:
        whole = up.upscale_to(lr, out)
    with open_upscaler(checkpoint, backend, threads=1, tile=24, lr_tile=12) as up:
        tiled = up.upscale_to(lr, out)
    assert whole.shape == (*out, 3)
    assert np.abs(whole.astype(np.float64) - tiled).max() <= 1e-5


def test_per_sample_scales_share_a_batch():
    """Mixed-scale training batches: each sample's output is the one it gets alone."""
    from asisr.runtime.query import make_query

    model = tiny_student(1)
    lr = torch.rand(2, 3, 11, 13)
    queries = [make_query(11, 13, 30, 41), make_query(11, 13, 25, 19)]
    with torch.no_grad():
        alone = [model(lr[i:i + 1], *(torch.from_numpy(a) for a in q)) for i, q in enumerate(queries)]
        # one batch with both scales: the query grids padded to a common size by repeating the last coordinate
        rows = torch.stack([torch.from_numpy(np.pad(q[1][0], (0, 30 - q[1].shape[1]), mode="edge")) for q in queries])
        cols = torch.stack([torch.from_numpy(np.pad(q[2][0], (0, 41 - q[2].shape[1]), mode="edge")) for q in queries])
        scale = torch.cat([torch.from_numpy(q[0]) for q in queries])
        both = model(lr, scale, rows, cols)
    assert torch.allclose(both[0:1], alone[0], atol=1e-6)
    assert torch.allclose(both[1:2, :, :25, :19], alone[1], atol=1e-6)


def test_checkpoint_round_trip_keeps_the_configuration(checkpoint):
    from asisr.models import load

    model = load(checkpoint)
    assert model.name == "lmf" and model.config["width"] == 8 and model.config["depth"] == 3
    assert model.descriptor.feature_channels == 2 * 3 * 8 + 3
