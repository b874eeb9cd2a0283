"""The bundled default model: passes ONNX parity like every other model, and keeps its measured quality."""

from __future__ import annotations

from asisr.cli.parity import main as parity_main
from tests.cli_helpers import invoke
from tests.conftest import SHARED, need

# Issue 4's bar for the shipped default: >= 2 dB over bicubic at x2-x4 on Set5, above it everywhere.
SCALES_2DB = (2.0, 3.0, 4.0)
SCALES_ABOVE = (6.0, 8.0, 1.6, 5.5)


def test_bundled_graphs_are_the_default_checkpoint_and_pass_parity(capsys, tmp_path):
    """What the torch-free install runs is the bundled checkpoint: same sha256 on record, same outputs.

    After changing the default checkpoint or its model code, re-export the bundled graphs:
    ``asisr-export --checkpoint asisr/weights/eqsr_light_default.pt --out asisr/weights/eqsr_light_default_onnx
    --overwrite``.
    """
    from asisr.digest import sha256_file
    from asisr.runtime.manifest import read_manifest
    from asisr.weights import default_checkpoint, default_onnx_dir

    manifest = read_manifest(default_onnx_dir())
    assert manifest.data["model"]["checkpoint_sha256"] == sha256_file(default_checkpoint())
    assert manifest.precision == "fp32" and manifest.model == "eqsr_light"
    code, out, err = invoke(parity_main, [default_onnx_dir(), "--shapes", "17x23,30x26,41x19",
                                          "--json", tmp_path / "p.json"], capsys)
    assert code == 0, out + err
    assert "13/13 cases pass" in out
    assert (tmp_path / "p.json").is_file()


def test_default_model_is_the_trained_eqsr_light():
    from asisr.models import load
    from asisr.models.checkpoint import read_checkpoint
    from asisr.weights import default_checkpoint

    model = load(default_checkpoint())
    assert model.name == "eqsr_light"
    card = read_checkpoint(default_checkpoint())["asisr"]["card"]
    assert "data/train" in card["data"] and card["recipe"]["iters"] > 0
    assert default_checkpoint().stat().st_size <= 10 * 1024 * 1024


def test_default_model_beats_bicubic_on_set5():
    """Through ONNX Runtime, as users run it: the numbers in the README's model card."""
    from asisr.evaluation import bicubic_upscale, evaluate
    from asisr.sources import open_upscaler

    set5 = need(SHARED / "data" / "Set5")
    scales = SCALES_2DB + SCALES_ABOVE
    bicubic = evaluate(set5, scales, bicubic_upscale, "bicubic", ssim=False)
    with open_upscaler(None, "onnxruntime", threads=2) as up:
        ours = evaluate(set5, scales, up.upscale_to, "default", ssim=False)
    for key, entry in ours["scales"].items():
        gain = entry["psnr"] - bicubic["scales"][key]["psnr"]
        bar = 2.0 if entry["scale_h"] in SCALES_2DB else 0.0
        assert gain >= bar, f"x{key}: {entry['psnr']:.3f} dB is {gain:+.3f} dB over bicubic (needs >= {bar})"


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
