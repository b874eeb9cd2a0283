"""The released ArbRCAN size (10 groups of 20 RCABs, 64 features, 16.9 M parameters) exported and run.

Its own file because the export is what takes the time (about 40 s of ``torch.export`` tracing and
decomposition of 5,000 operators on one core; the ONNX checker and shape inference take under 2 s):
``tests/test_arbsr.py`` proves faithfulness on the small official fixture, this one that the full
layout, read from an official-format file by the detector, exports and runs at sizes and scales
other than the export's.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from asisr.models import detect
from asisr.models.checkpoint import read_checkpoint
from asisr.runtime.query import make_query
from tests.full_size import assert_backends_agree, official_layout, write_random_official
from tests.onnx_ops import CNN_OPS, TENSORRT_OPS, assert_tensorrt_ops

LR_HW = (12, 10)
OUT_HW = {"x2.7": (32, 27), "x3.5 down, x2 across": (42, 20)}
RGB_TOL = 1e-5  # on [0, 1]; measured 9e-7 (outputs spread with std 0.17)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_random_official("arbrcan_official", tmp_path_factory.mktemp("arbrcan_full") / "model_150.pt")


@pytest.mark.slow
def test_file_has_the_official_layout_and_is_read_as_the_released_model(checkpoint):
    sd = torch.load(checkpoint)
    assert {k: tuple(v.shape) for k, v in sd.items()} == official_layout("arbrcan_official")
    found = detect(read_checkpoint(checkpoint))
    assert (found.name, found.kwargs) == ("arbrcan", {"n_resgroups": 10, "n_resblocks": 20, "n_feats": 64,
                                                      "reduction": 16})


@pytest.mark.slow
def test_exports_and_matches_pytorch_off_the_export_shape(checkpoint):
    """Exported at 19x23 with batch 2; run at 12x10, batch 1, at a non-integer and an asymmetric scale."""
    from asisr.sources import export_cached

    lr = np.random.default_rng(0).random((1, 3, *LR_HW), dtype=np.float32)
    queries = [make_query(*LR_HW, *out_hw) for out_hw in OUT_HW.values()]
    assert_backends_agree(checkpoint, lr, queries, RGB_TOL)
    exported = export_cached(checkpoint)  # the entry the ONNX Runtime run above made
    for stage in ("backbone", "upsampler"):
        assert_tensorrt_ops(exported / f"{stage}.onnx", TENSORRT_OPS | CNN_OPS)
