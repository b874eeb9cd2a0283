"""``benchmarks/liif_roofline.py`` counts the FLOPs it reports from the profiler's shapes: check them
against counts made here from the model's own layer widths."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "liif_roofline.py"


@pytest.fixture(scope="module")
def roofline():
    spec = importlib.util.spec_from_file_location("liif_roofline", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_node_flops_from_recorded_shapes(roofline):
    assert roofline.node_flops("FusedGemm", [[500, 64], [32, 64], [32]], [[500, 32]]) == 2 * 500 * 64 * 32
    nchw = roofline.node_flops("Conv", [[1, 16, 9, 7], [32, 16, 3, 3], [32]], [[1, 32, 9, 7]])
    assert nchw == 2 * 9 * 7 * 32 * 16 * 9
    blocked = roofline.node_flops("Conv", [[1, 1, 9, 7, 16], [32, 16, 3, 3], [32]], [[1, 2, 9, 7, 16]])
    assert blocked == nchw  # ONNX Runtime's NCHWc layout: same product
    assert roofline.node_flops("Add", [[4, 4], [4, 4]], [[4, 4]]) is None


def test_measured_run_counts_the_decoder_flops_of_the_model(roofline, tiny_liif_onnx, tmp_path):
    lr = tmp_path / "lr"
    lr.mkdir()
    rng = np.random.default_rng(0)
    for name, (h, w) in {"a.png": (20, 24), "b.png": (17, 13)}.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(lr / name)
    r = roofline.measure(lr, tiny_liif_onnx, 2.0, threads=1, repeats=1, tile=None, work=tmp_path / "w", peak_n=128)
    # the tiny LIIF (conftest): 16 features, unfolded 3x3 plus offset and cell = 148 in, hidden [32, 32], RGB out
    assert r.layers == [(148, 32), (32, 32), (32, 3)]
    assert r.out_px == 40 * 48 + 34 * 26
    # per output pixel, 4 ensemble queries; the graph folds the first layer into an LR conv, so its
    # products are the later layers (plus one 2 x 32 cell term per tile: a rounding error here)
    assert r.graph_flops_per_px == pytest.approx(4 * 2 * (32 * 32 + 32 * 3), rel=1e-3)
    assert r.official_flops_per_px == 4 * 2 * (148 * 32 + 32 * 32 + 32 * 3)
    assert "Conv" in r.stages["upsampler"][0] and r.stages["upsampler"][0]["Conv"]["flops"] > 0
    assert r.gemm_seconds > 0 and r.gemm_here_gflops > 0 and r.peak.gflops > 0
    text = roofline.report(r, "test")
    assert "| upsampler | FusedGemm |" in text and "MFLOP" in text
