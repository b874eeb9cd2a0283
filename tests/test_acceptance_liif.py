"""Acceptance: the official LIIF checkpoint, exported to ONNX and evaluated through ONNX Runtime,
reproduces ../shared/reference/liif_official.json within 0.01 dB (the protocol of ../shared/README.md)."""

from __future__ import annotations

import json

import pytest

from asisr.cli.eval import main as eval_main
from tests.conftest import SET5, SET14, SHARED, need

REFERENCE = SHARED / "reference" / "liif_official.json"
SCALES = {"Set5": "2,3,4,1.6,5.5,6,8", "Set14": "2,3,4,6"}


@pytest.mark.parametrize("dataset", ["Set5", "Set14"])
def test_onnxruntime_reproduces_official_psnr(official_liif_onnx, dataset, tmp_path):
    folder = need(SET5 if dataset == "Set5" else SET14)
    reference = json.loads(need(REFERENCE).read_text())["psnr"][dataset]
    out = tmp_path / "result.json"
    rc = eval_main([str(folder), "--model", str(official_liif_onnx), "--backend", "onnxruntime", "--threads", "2",
                    "--scales", SCALES[dataset], "--json", str(out)])
    assert rc == 0
    measured = json.loads(out.read_text())["psnr"][dataset]
    assert set(measured) == set(SCALES[dataset].split(","))
    for scale, value in measured.items():
        assert abs(value - reference[scale]) <= 0.01, (dataset, scale, value, reference[scale])
