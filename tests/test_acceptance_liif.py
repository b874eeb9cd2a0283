"""Acceptance: the official LIIF checkpoint, exported to ONNX and evaluated through ONNX Runtime,
reproduces ../shared/reference/liif_official.json within 0.01 dB (the protocol of ../shared/README.md).

Two tiers share one set of expectations. The full tier evaluates Set5 and Set14 whole, checks
each dataset's mean against the official reference, and checks every image against
``tests/data/liif_official_per_image.json`` (``ASISR_UPDATE_REFERENCES=1`` rewrites that file
from the run, once its means have matched the official ones). The fast tier evaluates a few
images at a few scales and holds each to its per-image reference; the per-image file itself is
held to the official means in both tiers, so the fast tier's expectations are the official numbers.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from asisr.cli.eval import main as eval_main
from tests.shared_data import SET5, SET14, SHARED, need

REFERENCE = SHARED / "reference" / "liif_official.json"
PER_IMAGE = Path(__file__).parent / "data" / "liif_official_per_image.json"
SCALES = {"Set5": "2,3,4,1.6,5.5,6,8", "Set14": "2,3,4,6"}
SUBSET = {"Set5": (("bird.png", "butterfly.png"), "2,4,5.5"), "Set14": (("face.png",), "3")}
MEAN_TOLERANCE_DB = 0.01  # the protocol's
IMAGE_TOLERANCE_DB = 0.01  # one image against its own earlier measurement (same graphs, same protocol)


def _folders() -> dict[str, Path]:
    return {"Set5": SET5, "Set14": SET14}


def _evaluate(onnx_dir: Path, folder: Path, scales: str, out: Path) -> dict[str, dict[str, float]]:
    """``{scale: {image: PSNR dB}}`` from ``asisr-eval`` on ``folder``."""
    # one thread: the suite runs a test per core (pytest-xdist), and two ONNX Runtime threads on a
    # shared core only spin against each other
    rc = eval_main([str(folder), "--model", str(onnx_dir), "--backend", "onnxruntime", "--threads", "1",
                    "--scales", scales, "--json", str(out)])
    assert rc == 0
    (result,) = json.loads(out.read_text())["results"]
    return {scale: {name: rec["psnr"] for name, rec in entry["per_image"].items()}
            for scale, entry in result["scales"].items()}


def _official() -> dict:
    return json.loads(need(REFERENCE).read_text())["psnr"]


def test_per_image_references_average_to_the_official_numbers():
    """The committed per-image file agrees with the official means (so the fast tier's checks do)."""
    official = _official()
    per_image = json.loads(PER_IMAGE.read_text())["psnr"]
    for dataset, scales in SCALES.items():
        images = sorted(p.name for p in need(_folders()[dataset]).iterdir())
        assert set(per_image[dataset]) == set(scales.split(","))
        for scale, by_image in per_image[dataset].items():
            assert sorted(by_image) == images, (dataset, scale)
            mean = float(np.mean(list(by_image.values())))
            assert abs(mean - official[dataset][scale]) <= MEAN_TOLERANCE_DB, (dataset, scale, mean)


@pytest.mark.parametrize("dataset", sorted(SUBSET))
def test_a_subset_reproduces_its_per_image_psnr(official_liif_onnx, dataset, tmp_path):
    names, scales = SUBSET[dataset]
    subset = tmp_path / dataset
    subset.mkdir()
    for name in names:
        shutil.copy2(need(_folders()[dataset] / name), subset / name)
    expected = json.loads(PER_IMAGE.read_text())["psnr"][dataset]
    measured = _evaluate(official_liif_onnx, subset, scales, tmp_path / "result.json")
    assert set(measured) == set(scales.split(","))
    for scale, by_image in measured.items():
        for name, value in by_image.items():
            assert abs(value - expected[scale][name]) <= IMAGE_TOLERANCE_DB, (dataset, scale, name, value)


# The default path (asisr-eval with no --model / --backend / --precision: the bundled official
# LIIF weights on OpenVINO, in bf16 where this CPU has the units) against the official code's
# per-image numbers: the subset's mean change within 0.03 dB at x2 and 0.02 dB at x4 (issue 26's
# bounds for a dataset's mean), and no image more than twice that (single images spread wider: zebra
# x4 measured -0.021 dB in bf16 on avx512_bf16).
DEFAULT_PATH_BOUNDS_DB = {"2": 0.03, "4": 0.02}


@pytest.mark.parametrize("dataset", ["Set5", "Set14"])
def test_the_default_path_stays_within_the_bounds_of_the_official_numbers(dataset, tmp_path):
    names = {"Set5": ("bird.png", "butterfly.png"), "Set14": ("face.png", "zebra.png")}[dataset]
    subset = tmp_path / dataset
    subset.mkdir()
    for name in names:
        shutil.copy2(need(_folders()[dataset] / name), subset / name)
    rc = eval_main([str(subset), "--threads", "1", "--scales", ",".join(DEFAULT_PATH_BOUNDS_DB),
                    "--json", str(tmp_path / "default.json")])
    assert rc == 0
    (result,) = json.loads((tmp_path / "default.json").read_text())["results"]
    expected = json.loads(PER_IMAGE.read_text())["psnr"][dataset]
    for scale, bound in DEFAULT_PATH_BOUNDS_DB.items():
        changes = {name: rec["psnr"] - expected[scale][name] for name, rec in result["scales"][scale]["per_image"].items()}
        print(f"default path {dataset} x{scale}: " + ", ".join(f"{n} {c:+.4f} dB" for n, c in changes.items()))
        assert sorted(changes) == sorted(names)
        assert abs(float(np.mean(list(changes.values())))) <= bound, (dataset, scale, changes)
        assert all(abs(c) <= 2 * bound for c in changes.values()), (dataset, scale, changes)


FULL = [(dataset, scale) for dataset, scales in SCALES.items() for scale in scales.split(",")]


@pytest.mark.slow
@pytest.mark.parametrize("dataset, scale", FULL, ids=[f"{d}-x{s}" for d, s in FULL])
def test_onnxruntime_reproduces_official_psnr(official_liif_onnx, dataset, scale, tmp_path):
    """One dataset at one scale (a test each, so the workers share the load evenly)."""
    from asisr.locks import claim_for

    folder = need(_folders()[dataset])
    reference = _official()[dataset][scale]
    (by_image,) = _evaluate(official_liif_onnx, folder, scale, tmp_path / "result.json").values()
    mean = float(np.mean(list(by_image.values())))
    assert abs(mean - reference) <= MEAN_TOLERANCE_DB, (dataset, scale, mean, reference)
    if os.environ.get("ASISR_UPDATE_REFERENCES") == "1":
        with claim_for(PER_IMAGE):  # other workers write their cells of the same file
            stored = json.loads(PER_IMAGE.read_text()) if PER_IMAGE.exists() else {"psnr": {}}
            stored["psnr"].setdefault(dataset, {})[scale] = {n: round(v, 4) for n, v in sorted(by_image.items())}
            stored["note"] = ("Y-PSNR (dB) of each image, the official LIIF checkpoint exported by asisr on ONNX "
                              "Runtime; written by tests/test_acceptance_liif.py with ASISR_UPDATE_REFERENCES=1 "
                              "(full tier)")
            PER_IMAGE.parent.mkdir(exist_ok=True)
            PER_IMAGE.write_text(json.dumps(stored, indent=1, sort_keys=True) + "\n")
    stored = json.loads(PER_IMAGE.read_text())["psnr"][dataset][scale]
    for name, value in by_image.items():
        assert abs(value - stored[name]) <= IMAGE_TOLERANCE_DB, (dataset, scale, name, value, stored[name])
