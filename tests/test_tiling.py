"""Tiled and untiled runs agree: halos cover the receptive field, coordinates are exact."""

from __future__ import annotations

import numpy as np
import pytest

from asisr.imageio import read_image
from asisr.sources import open_upscaler
from asisr.runtime.tiling import lr_spans, query_spans
from tests.shared_data import SET14, need


def test_spans_cover_each_pixel_once():
    spans = query_spans(37, 137, 20, 2, 1)
    covered = np.concatenate([np.arange(s.out.start, s.out.stop) for s in spans])
    assert covered.tolist() == list(range(137))
    for s in spans:
        assert 0 <= s.lr_lo < s.lr_hi <= 37
        assert s.coords.min() >= 0 and s.coords.max() <= s.lr_hi - s.lr_lo
    assert [(s.keep_lo, s.keep_hi) for s in lr_spans(50, 20, 5)] == [(0, 20), (20, 40), (40, 50)]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_tiled_equals_untiled_on_set14_x3_7(liif_ckpt, backend, tmp_path, monkeypatch):
    monkeypatch.setenv("ASISR_CACHE", str(tmp_path))
    from asisr.evaluation.protocol import make_pair

    hr, lr = make_pair(read_image(need(SET14 / "comic.png")), 3.7, 3.7)  # the evaluation protocol's LR
    out = hr.shape[:2]
    with open_upscaler(liif_ckpt, backend, threads=2, tile=10_000, lr_tile=10_000) as up:
        whole = up.upscale_to(lr, out)
    with open_upscaler(liif_ckpt, backend, threads=2, tile=40, lr_tile=24) as up:
        tiled = up.upscale_to(lr, out)
    assert whole.shape == (*out, 3) and out[0] > 5 * 40 and out[1] > 5 * 40
    assert np.abs(whole - tiled).max() <= 1e-5


# ------------------------------------------------------------ memory-bounded tiles, streamed features

from asisr.errors import UserError  # noqa: E402
from asisr.runtime import upscaler as upscaler_module  # noqa: E402
from asisr.runtime.backends.onnxrt import OnnxrtRunner  # noqa: E402
from asisr.runtime.backends.pyt import TorchRunner  # noqa: E402
from asisr.runtime.tiling import TileGeometry, parse_memory, plan_tiles  # noqa: E402


def tile_costs(channels, backend, declared=None):
    """The planner's costs as the backend's runner declares them, with a model's declared numbers."""
    return {"torch": TorchRunner, "onnxruntime": OnnxrtRunner}[backend].tile_costs(channels).declared(declared)


FRAME_X2 = TileGeometry(1080, 1920, 2160, 3840, channels=64, halo=34, lr_reach=2)  # the default LIIF on 4K


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_budget_to_tiles_is_monotone_and_within_budget(backend):
    costs = tile_costs(64, backend)
    plans = [plan_tiles(parse_memory(b), FRAME_X2, costs) for b in ("256M", "384M", "512M", "1G", "2G", "8G")]
    for budget, plan in zip(("256M", "384M", "512M", "1G", "2G", "8G"), plans):
        assert plan.estimate <= parse_memory(budget)
    tiles, lr_tiles = [p.tile for p in plans], [p.lr_tile for p in plans]
    assert tiles == sorted(tiles) and lr_tiles == sorted(lr_tiles)
    assert tiles[0] < tiles[-1] and lr_tiles[0] < lr_tiles[-1]
    # the estimate no longer holds the whole LR feature map (64 x 1080 x 1920 float32 = 506 MiB)
    assert plans[1].estimate < 64 * 1080 * 1920 * 4


def test_budget_fixed_tile_kept_and_too_small_refused():
    costs = tile_costs(64, "onnxruntime")
    assert plan_tiles(parse_memory("1G"), FRAME_X2, costs, tile=40).tile == 40
    with pytest.raises(UserError, match="too small"):
        plan_tiles(parse_memory("20M"), FRAME_X2, costs)


@pytest.mark.parametrize("text, expected", [("512M", 512 << 20), ("2G", 2 << 30), ("1.5GiB", 3 << 29),
                                            ("64mb", 64 << 20), ("1000", 1000)])
def test_parse_memory(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["", "G", "2X", "-1G", "0", "inf", "nanM", "1..5G"])
def test_parse_memory_refuses(text):
    with pytest.raises(UserError):
        parse_memory(text)


class _CountingPipeline:
    """Delegates to a pipeline, counting backbone calls."""

    def __init__(self, pipeline):
        self.inner, self.backbone_calls = pipeline, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def features(self, lr, scale):
        self.backbone_calls += 1
        return self.inner.features(lr, scale)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_streamed_features_are_bit_identical(tiny_liif_ckpt, tiny_liif_onnx, backend, monkeypatch):
    from asisr.runtime.upscaler import Upscaler
    from asisr.sources import open_pipeline

    live = []
    original = upscaler_module._FeatureBands.window

    def window(self, *args):
        live.append(len(self.bands))
        return original(self, *args)

    monkeypatch.setattr(upscaler_module._FeatureBands, "window", window)
    model = tiny_liif_ckpt if backend == "torch" else tiny_liif_onnx
    lr = (np.random.default_rng(1).random((70, 45, 3)) * 255).astype(np.uint8)
    out = (231, 149)  # x3.3
    results = {}
    for stream in (True, False):
        pipeline = _CountingPipeline(open_pipeline(model, backend, threads=1))
        halo = pipeline.descriptor.backbone_halo
        with Upscaler(pipeline, tile=32, lr_tile=16, stream_features=stream) as up:
            results[stream] = up.upscale_to(lr, out)
        assert pipeline.backbone_calls == len(lr_spans(70, 16, halo)) * len(lr_spans(45, 16, halo))  # each once
    assert np.array_equal(results[True], results[False])
    n_bands = len(lr_spans(70, 16, halo))
    assert max(live[: len(live) // 2]) <= 2 < n_bands  # streaming: a couple of bands resident, not all
    assert max(live[len(live) // 2:]) == n_bands


def test_declared_tile_bytes_are_used():
    plain = plan_tiles(parse_memory("1G"), FRAME_X2, tile_costs(64, "onnxruntime"))
    wide = plan_tiles(parse_memory("1G"), FRAME_X2, tile_costs(64, "onnxruntime", {"upsampler_per_query": 4 * 8192}))
    assert wide.tile < plain.tile and wide.lr_tile == plain.lr_tile


def test_declared_scale_shrinks_every_tile():
    plain = plan_tiles(parse_memory("1G"), FRAME_X2, tile_costs(64, "onnxruntime"))
    heavy = plan_tiles(parse_memory("1G"), FRAME_X2, tile_costs(64, "onnxruntime", {"scale": 1.5}))
    assert heavy.tile < plain.tile and heavy.lr_tile < plain.lr_tile
    assert heavy.estimate <= parse_memory("1G")
