"""Tiled and untiled runs agree: halos cover the receptive field, coordinates are exact."""

from __future__ import annotations

import numpy as np
import pytest

from asisr.imageio import read_image
from asisr.runtime import open_upscaler
from asisr.runtime.tiling import lr_spans, query_spans
from tests.conftest import SET14, need


def test_spans_cover_each_pixel_once():
    spans = query_spans(37, 137, 20, 2, 1)
    covered = np.concatenate([np.arange(s.out.start, s.out.stop) for s in spans])
    assert covered.tolist() == list(range(137))
    for s in spans:
        assert 0 <= s.lr_lo < s.lr_hi <= 37
        assert s.coords.min() >= 0 and s.coords.max() <= s.lr_hi - s.lr_lo
    assert [(s.keep_lo, s.keep_hi) for s in lr_spans(50, 20, 5)] == [(0, 20), (20, 40), (40, 50)]


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
