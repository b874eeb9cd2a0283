"""``asisr-run``: the main job, image kinds, and every bad input (message, exit code, no output)."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
import torch

from asisr.cli.export import main as export_main
from asisr.cli.run import main as run_main
from asisr.imageio import read_image, write_image
from tests.cli_helpers import assert_user_error, invoke


@pytest.fixture()
def rgb_png(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "in.png"
    write_image(path, rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))
    return path


def run(args, capsys):
    return invoke(run_main, args, capsys)


def test_upscale_rgb_symmetric_and_asymmetric(rgb_png, tiny_liif_ckpt, tmp_path, capsys):
    out = tmp_path / "out.png"
    code, _, err = run([rgb_png, "--scale", "3.5x2", "--out", out, "--model", tiny_liif_ckpt], capsys)  # 3.5 across, 2 down
    assert code == 0, err
    assert read_image(out).shape == (40, 84, 3)
    out2 = tmp_path / "out2.png"
    code, _, err = run([rgb_png, "--size", "50x30", "--out", out2, "--model", tiny_liif_ckpt], capsys)
    assert code == 0, err
    assert read_image(out2).shape == (30, 50, 3)


def test_backends_agree_on_a_file(rgb_png, tiny_liif_ckpt, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ASISR_CACHE", str(tmp_path / "cache"))
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    assert run([rgb_png, "-s", "2.5", "-o", a, "-m", tiny_liif_ckpt, "--backend", "torch"], capsys)[0] == 0
    assert run([rgb_png, "-s", "2.5", "-o", b, "-m", tiny_liif_ckpt, "--backend", "onnxruntime"], capsys)[0] == 0
    diff = np.abs(read_image(a).astype(int) - read_image(b).astype(int))
    assert diff.max() <= 1  # uint8 rounding of outputs equal to 1e-6


def test_exported_directory_runs_on_onnxruntime(rgb_png, tiny_liif_onnx, tmp_path, capsys):
    out = tmp_path / "o.png"
    code, _, err = run([rgb_png, "-s", "3", "-o", out, "-m", tiny_liif_onnx, "-b", "onnxruntime", "--tile", "16"], capsys)
    assert code == 0, err
    assert read_image(out).shape == (60, 72, 3)


@pytest.mark.parametrize("kind", ["grey", "rgba", "rgb16", "grey16"])
def test_image_kinds_are_handled(kind, tiny_liif_ckpt, tmp_path, capsys):
    rng = np.random.default_rng(1)
    shape, dtype = {"grey": ((16, 18), np.uint8), "rgba": ((16, 18, 4), np.uint8),
                    "rgb16": ((16, 18, 3), np.uint16), "grey16": ((16, 18), np.uint16)}[kind]
    image = rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype)
    if kind == "rgba":
        image[:8, :, 3] = 0
        image[8:, :, 3] = 255
    src, out = tmp_path / f"{kind}.png", tmp_path / f"{kind}_x2.png"
    write_image(src, image)
    code, _, err = run([src, "-s", "2", "-o", out, "-m", tiny_liif_ckpt], capsys)
    assert code == 0, err
    result = read_image(out)
    assert result.dtype == dtype and result.shape == (32, 36) + shape[2:]
    if kind == "rgba":  # alpha is resized on its own: transparent top stays transparent
        assert result[:12, :, 3].max() == 0 and result[-12:, :, 3].min() == 255


def _assert_no_output(path):
    assert not path.exists()
    assert not list(path.parent.glob(f".{path.name}.*"))


@pytest.mark.parametrize("case", ["missing", "zero-byte", "corrupt", "text"])
def test_bad_input_files(case, tiny_liif_ckpt, tmp_path, capsys):
    src = tmp_path / "bad.png"
    if case == "zero-byte":
        src.write_bytes(b"")
    elif case == "corrupt":
        good = tmp_path / "good.png"
        write_image(good, np.zeros((20, 20, 3), np.uint8))
        src.write_bytes(good.read_bytes()[:40])
    elif case == "text":
        src = tmp_path / "notes.png"
        src.write_text("this is not an image\n")
    out = tmp_path / "out.png"
    code, _, err = run([src, "-s", "2", "-o", out, "-m", tiny_liif_ckpt], capsys)
    expected = {"missing": "input not found", "zero-byte": "input is empty (0 bytes)",
                "corrupt": "cannot decode image", "text": "cannot decode image"}[case]
    assert_user_error(code, err, expected)
    _assert_no_output(out)


@pytest.mark.parametrize("scale, fragment", [("0", "greater than 0"), ("-2", "greater than 0"),
                                             ("nan", "finite"), ("inf", "finite"), ("abc", "invalid scale"),
                                             ("13", "exceeds the supported maximum x12"), ("2x0", "greater than 0")])
def test_bad_scales(scale, fragment, rgb_png, tiny_liif_ckpt, tmp_path, capsys):
    out = tmp_path / "out.png"
    code, _, err = run([rgb_png, "--scale", scale, "-o", out, "-m", tiny_liif_ckpt], capsys)
    assert_user_error(code, err, fragment)
    _assert_no_output(out)


def test_max_scale_is_configurable(rgb_png, tiny_liif_ckpt, tmp_path, capsys):
    out = tmp_path / "out.png"
    code, _, err = run([rgb_png, "-s", "3", "-o", out, "-m", tiny_liif_ckpt, "--max-scale", "2.5"], capsys)
    assert_user_error(code, err, "exceeds the supported maximum x2.5")
    _assert_no_output(out)


def test_existing_output_needs_overwrite(rgb_png, tiny_liif_ckpt, tmp_path, capsys):
    out = tmp_path / "out.png"
    out.write_bytes(b"precious")
    code, _, err = run([rgb_png, "-s", "2", "-o", out, "-m", tiny_liif_ckpt], capsys)
    assert_user_error(code, err, "output exists")
    assert out.read_bytes() == b"precious"
    code, _, err = run([rgb_png, "-s", "2", "-o", out, "-m", tiny_liif_ckpt, "--overwrite"], capsys)
    assert code == 0 and read_image(out).shape == (40, 48, 3)


def test_unknown_and_mismatched_checkpoints(rgb_png, tmp_path, capsys):
    unknown = tmp_path / "unknown.pth"
    torch.save({"conv_first.weight": torch.zeros(4, 3, 3, 3)}, unknown)
    out = tmp_path / "out.png"
    code, _, err = run([rgb_png, "-s", "2", "-o", out, "-m", unknown], capsys)
    assert_user_error(code, err, "unknown architecture")
    from asisr.models import create

    model = create("liif", n_resblocks=1, n_feats=8, hidden=[8])
    sd = model.state_dict()
    sd["backbone.encoder.head.0.weight"] = torch.zeros(9, 3, 3, 3)
    mismatched = tmp_path / "mismatched.pt"
    torch.save({"asisr": {"name": "liif", "config": model.config}, "state_dict": sd}, mismatched)
    code, _, err = run([rgb_png, "-s", "2", "-o", out, "-m", mismatched], capsys)
    assert_user_error(code, err, "shape-mismatched keys (1): backbone.encoder.head.0.weight")
    _assert_no_output(out)


def test_manifest_mismatch_is_refused(rgb_png, tiny_liif_onnx, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_liif_onnx, broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["graphs"]["upsampler"]["sha256"] = "0" * 64
    (broken / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "out.png"
    code, _, err = run([rgb_png, "-s", "2", "-o", out, "-m", broken, "-b", "onnxruntime"], capsys)
    assert_user_error(code, err, "manifest does not match its graphs: upsampler.onnx")
    _assert_no_output(out)


def test_bad_arguments(rgb_png, tiny_liif_ckpt, tmp_path, capsys):
    out = tmp_path / "out.png"
    for args, fragment in [(["-o", out], "exactly one of --scale or --size"),
                           (["-s", "2", "--size", "10x10", "-o", out], "exactly one of --scale or --size"),
                           (["--size", "10by10", "-o", out], "invalid size"),
                           (["-s", "2", "-o", tmp_path / "out.xyz"], "unsupported output format"),
                           (["-s", "2", "-o", out, "--backend", "tvm"], "unknown backend 'tvm'")]:
        code, _, err = run([rgb_png, *args, "-m", tiny_liif_ckpt], capsys)
        assert_user_error(code, err, fragment)
    _assert_no_output(out)


def test_folder_run_resumes_and_skips_finished(tiny_liif_ckpt, tmp_path, capsys):
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    rng = np.random.default_rng(2)
    for i in range(3):
        write_image(src / f"img{i}.png", rng.integers(0, 256, (12, 10, 3), dtype=np.uint8))
    (src / "readme.txt").write_text("not an image, ignored")
    dst.mkdir()
    cv2.imwrite(str(dst / "img1.png"), np.full((5, 5, 3), 7, np.uint8))  # "finished" earlier
    code, out, err = run([src, "-s", "2", "-o", dst, "-m", tiny_liif_ckpt], capsys)
    assert code == 0, err
    assert "wrote 2 images" in out
    assert read_image(dst / "img0.png").shape == (24, 20, 3)
    assert read_image(dst / "img1.png").shape == (5, 5, 3)  # skipped, not redone
    code, out, _ = run([src, "-s", "2", "-o", dst, "-m", tiny_liif_ckpt], capsys)
    assert code == 0 and "all outputs already existed" in out


def test_folder_with_a_bad_image_continues_and_fails_at_end(tiny_liif_ckpt, tmp_path, capsys):
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    write_image(src / "a.png", np.zeros((10, 10, 3), np.uint8))
    (src / "b.png").write_bytes(b"")
    code, _, err = run([src, "-s", "2", "-o", dst, "-m", tiny_liif_ckpt], capsys)
    assert code == 2 and "1 of 2 images failed" in err and "Traceback" not in err
    assert (dst / "a.png").exists() and not (dst / "b.png").exists()


def test_export_cli_and_errors(tiny_liif_ckpt, tmp_path, capsys):
    out = tmp_path / "exported"
    code, stdout, err = invoke(export_main, ["--checkpoint", tiny_liif_ckpt, "--out", out], capsys)
    assert code == 0, err
    assert (out / "manifest.json").is_file()
    code, _, err = invoke(export_main, ["--checkpoint", tiny_liif_ckpt, "--out", out], capsys)
    assert_user_error(code, err, "output exists")
    code, _, err = invoke(export_main, ["--checkpoint", tmp_path / "none.pth", "--out", tmp_path / "x"], capsys)
    assert_user_error(code, err, "checkpoint not found")
    assert not (tmp_path / "x").exists()


def test_default_model_needs_no_flag(rgb_png, tmp_path, capsys):
    out = tmp_path / "x3.png"
    code, stdout, err = run([rgb_png, "--scale", "3", "--out", out], capsys)
    assert code == 0, err
    assert read_image(out).shape == (60, 72, 3)


@pytest.mark.slow
def test_upstream_eqsr_checkpoint_runs_on_both_backends(upstream_eqsr, rgb_png, tmp_path, capsys):
    """The same upstream checkpoint and input through torch and through its ONNX export (the session's,
    shared with test_export_onnx.py): both give the requested size, and the same image (uint8
    rounding may differ by one level)."""
    ckpt, exported = upstream_eqsr
    outputs = {}
    for backend, model in (("torch", ckpt), ("onnxruntime", exported)):
        out = tmp_path / f"{backend}.png"
        code, _, err = run([rgb_png, "--scale", "3.5x2", "--out", out, "--model", model, "--backend", backend],
                           capsys)
        assert code == 0, (backend, err)
        outputs[backend] = read_image(out)
        assert outputs[backend].shape == (40, 84, 3) and outputs[backend].dtype == np.uint8, backend
    diff = np.abs(outputs["torch"].astype(np.int16) - outputs["onnxruntime"].astype(np.int16))
    assert diff.max() <= 1, f"torch and onnxruntime differ by up to {diff.max()} levels"
    assert outputs["torch"].std() > 1  # a real picture, not a constant both backends could agree on


def test_max_memory_reaches_the_tile_planner(rgb_png, tiny_liif_ckpt, tmp_path, capsys):
    out = tmp_path / "o.png"
    code, _, err = run([rgb_png, "-s", "2", "-o", out, "-m", tiny_liif_ckpt, "--max-memory", "1K"], capsys)
    assert_user_error(code, err, "memory budget 1 KiB is too small")
    assert not out.exists()
    code, _, err = run([rgb_png, "-s", "2", "-o", out, "-m", tiny_liif_ckpt, "--max-memory", "256M"], capsys)
    assert code == 0, err
    assert read_image(out).shape == (40, 48, 3)
