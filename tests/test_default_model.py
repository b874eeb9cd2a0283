"""The bundled models: each shipped export is its checkpoint and passes ONNX parity like every other
model, and every bundled model runs by name.

The default (chosen by measurement, README "The default model") is the official LIIF: its bundled
checkpoint holds the official weights (``test_models_registry.py``), its shipped graphs pass parity
against it (here), and the official checkpoint through ONNX Runtime reproduces the official PSNR on
Set5 and Set14 to 0.01 dB (``test_acceptance_liif.py``) and tiles exactly (``test_tiling.py``)."""

from __future__ import annotations

import pytest

from asisr.cli.parity import main as parity_main
from tests.cli_helpers import invoke

def _shipped() -> list[str]:
    from asisr.weights import BUNDLED_ONNX

    return sorted(BUNDLED_ONNX)


@pytest.mark.parametrize("name", _shipped())
def test_bundled_graphs_are_their_checkpoint_and_pass_parity(name, capsys, tmp_path):
    """What the torch-free install runs is the bundled checkpoint: same sha256 on record, same outputs.

    After changing a bundled checkpoint or its model code, re-export its graphs, e.g.
    ``asisr-export --checkpoint asisr/weights/liif_edsr_baseline.pt --out asisr/weights/liif_edsr_baseline_onnx
    --overwrite``.
    """
    from asisr.digest import sha256_file
    from asisr.runtime.manifest import read_manifest
    from asisr.weights import bundled_onnx_dir, bundled_path

    manifest = read_manifest(bundled_onnx_dir(name))
    assert manifest.data["model"]["checkpoint_sha256"] == sha256_file(bundled_path(name))
    assert manifest.precision == "fp32" and manifest.model == name
    code, out, err = invoke(parity_main, [bundled_onnx_dir(name), "--checkpoint", bundled_path(name),
                                          "--shapes", "17x23,30x26", "--json", tmp_path / "p.json"], capsys)
    assert code == 0, out + err
    assert "cases pass" in out and (tmp_path / "p.json").is_file()
    for f in (bundled_path(name), *bundled_onnx_dir(name).iterdir()):
        assert f.stat().st_size <= 10 * 1024 * 1024, f  # weights in the repository stay small


def test_default_model_is_the_official_liif_and_the_others_stay_available():
    from asisr.models import load
    from asisr.models.checkpoint import read_checkpoint
    from asisr.weights import BUNDLED, DEFAULT_MODEL, bundled_path, default_checkpoint

    assert DEFAULT_MODEL == "liif" and load(default_checkpoint()).name == "liif"
    assert {"liif", "eqsr_light"} <= set(BUNDLED)
    card = read_checkpoint(bundled_path("eqsr_light"))["asisr"]["card"]  # the previous default, by name
    assert "data/train" in card["data"] and card["recipe"]["iters"] > 0


def test_bundled_models_run_by_name(capsys, tmp_path):
    """``--model NAME`` is the bundled model of that name (its shipped graphs): the same image as its folder."""
    import numpy as np

    from asisr.cli.run import main as run_main
    from asisr.imageio import read_image, write_image
    from asisr.weights import bundled_onnx_dir
    from tests.cli_helpers import assert_user_error

    rng = np.random.default_rng(0)
    write_image(tmp_path / "in.png", (rng.random((20, 17, 3)) * 255).astype(np.uint8))
    for name, model in (("by_name", "eqsr_light"), ("by_path", str(bundled_onnx_dir("eqsr_light")))):
        code, out, err = invoke(run_main, [tmp_path / "in.png", "--scale", "2.5", "--model", model,
                                           "--out", tmp_path / f"{name}.png", "--threads", "1"], capsys)
        assert code == 0, err
    assert np.array_equal(read_image(tmp_path / "by_name.png"), read_image(tmp_path / "by_path.png"))
    code, _, err = invoke(run_main, [tmp_path / "in.png", "--scale", "2", "--model", "nosuch",
                                     "--out", tmp_path / "x.png"], capsys)
    assert_user_error(code, err, "model not found: nosuch (nor a bundled model: eqsr_light, liif")
    assert not (tmp_path / "x.png").exists()
