"""asisr-eval: the --bicubic path, the model path (a real tiny model) and every bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from asisr.cli.eval import app, main, parse_scales
from asisr.errors import UserError

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SET5 = SHARED / "data" / "Set5"


def _runner() -> CliRunner:
    try:  # click < 8.2 mixes stderr into stdout unless told not to
        return CliRunner(mix_stderr=False)
    except TypeError:
        return CliRunner()


def invoke(*args: str):
    return _runner().invoke(app, [str(a) for a in args])


def image(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([np.sin(x / 5 + c) * np.cos(y / 7) for c in range(3)], -1) * 80 + 128
    return np.clip(base + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8)


@pytest.fixture
def data(tmp_path):
    d = tmp_path / "Tiny"
    d.mkdir()
    Image.fromarray(image(40, 48, 1)).save(d / "a.png")
    Image.fromarray(image(36, 30, 2)).save(d / "b.png")
    return d


def assert_one_line_error(result, *fragments: str):
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    err = result.stderr.strip()
    assert err.startswith("error: "), err
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in result.stdout + result.stderr
    for f in fragments:
        assert f in err, (f, err)
    assert result.stdout.strip() == ""  # refused before printing any result


def test_help_has_examples():
    r = invoke("--help")
    assert r.exit_code == 0
    for text in ("--scales", "--bicubic", "--model", "--backend", "--json", "--overwrite", "Examples", "3.5x2"):
        assert text in r.stdout


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_model_path_with_a_real_model(data, tiny_liif_ckpt, backend, tmp_path, monkeypatch):
    monkeypatch.setenv("ASISR_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "r.json"
    r = invoke(data, "--model", tiny_liif_ckpt, "--backend", backend, "--threads", "2", "--tile", "16",
               "--scales", "2,2x3.5", "--json", out)
    assert r.exit_code == 0, r.stderr
    assert r.stdout.startswith(f"liif [{backend}]")
    report = json.loads(out.read_text())
    psnr = report["psnr"]["Tiny"]
    assert set(psnr) == {"2", "2x3.5"} and all(5 < v < 60 for v in psnr.values())


def test_model_errors_are_one_line(data, tmp_path):
    assert_one_line_error(invoke(data, "--model", tmp_path / "x.pth", "--scales", "2"), "model not found")


# ----------------------------------------------------------------------------- bad inputs


def test_missing_data_dir(tmp_path):
    out = tmp_path / "o.json"
    assert_one_line_error(invoke(tmp_path / "nope", "--bicubic", "--json", out), "not found", "nope")
    assert not out.exists()


def test_empty_data_dir(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    out = tmp_path / "o.json"
    assert_one_line_error(invoke(empty, "--bicubic", "--json", out), "no images", "empty")
    assert not out.exists()


def test_corrupt_image(data, tmp_path):
    (data / "c_broken.png").write_bytes(b"not an image at all")
    out = tmp_path / "o.json"
    assert_one_line_error(invoke(data, "--bicubic", "--json", out), "c_broken.png")
    assert not out.exists()


def test_truncated_image(data, tmp_path):
    raw = (data / "a.png").read_bytes()
    (data / "a.png").write_bytes(raw[: len(raw) // 2])  # header fine, pixel data cut
    out = tmp_path / "o.json"
    assert_one_line_error(invoke(data, "--bicubic", "--json", out), "a.png")
    assert not out.exists()


@pytest.mark.parametrize("scales, fragment", [
    ("abc", "invalid scale"), ("0", "greater than 0"), ("-2", "greater than 0"), ("0.5", ">= 1"),
    ("2,,3", "empty entry"), ("", "no scales"), ("nan", "finite"), ("2x", "invalid scale"),
    ("2x3x4", "invalid scale"),
])
def test_bad_scales(data, tmp_path, scales, fragment):
    out = tmp_path / "o.json"
    assert_one_line_error(invoke(data, "--bicubic", "--scales", scales, "--json", out), fragment)
    assert not out.exists()


def test_scale_too_large_for_image(data):
    assert_one_line_error(invoke(data, "--bicubic", "--scales", "50"), "too small")


def test_existing_json_refused_before_work(data, tmp_path):
    out = tmp_path / "o.json"
    out.write_text('{"keep": true}')
    assert_one_line_error(invoke(data, "--bicubic", "--json", out), "already exists", "--overwrite")
    assert out.read_text() == '{"keep": true}'


def test_json_in_missing_folder(data, tmp_path):
    assert_one_line_error(invoke(data, "--bicubic", "--json", tmp_path / "no" / "o.json"), "does not exist")


@pytest.mark.parametrize("args, fragment", [
    (["--bicubic", "--model", "x.pth"], "exclude each other"),
    (["--backend", "cuda-magic"], "unknown --backend"),
    (["--threads", "0"], "--threads"),
    (["--tile", "-1"], "--tile"),
    (["--tile", "0"], "--tile"),
])
def test_bad_options(data, args, fragment, monkeypatch):
    import asisr.sources

    def open_upscaler(*a, **kw):
        raise AssertionError("the model must not be opened when an option is bad")

    monkeypatch.setattr(asisr.sources, "open_upscaler", open_upscaler)
    assert_one_line_error(invoke(data, *args), fragment)


def test_bad_reference(data, tmp_path):
    assert_one_line_error(invoke(data, "--bicubic", "--reference", tmp_path / "r.json"), "not found")
    (tmp_path / "r.json").write_text("{broken")
    assert_one_line_error(invoke(data, "--bicubic", "--reference", tmp_path / "r.json"), "cannot read")


def test_parse_scales():
    assert parse_scales("2, 3 ,3.5x2,2") == [(2.0, 2.0), (3.0, 3.0), (2.0, 3.5)]  # (h, w) from WIDTHxHEIGHT
    with pytest.raises(UserError):
        parse_scales("2;3")


# ----------------------------------------------------------------------------- entry point


def test_main_usage_errors_are_one_line(capsys, data):
    assert main(["--no-such-option", str(data)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "--no-such-option" in err
    assert main([str(data), "--bicubic", "--threads", "many"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1
    assert main(["--help"]) == 0
    assert "Examples" in capsys.readouterr().out
    assert main([str(data), "--bicubic", "--scales", "2"]) == 0
    assert "Tiny" in capsys.readouterr().out


def test_console_script_subprocess(data, tmp_path):
    """The real process: exit 2, one line on stderr, no traceback, no output file."""
    out = tmp_path / "o.json"
    p = subprocess.run([sys.executable, "-m", "asisr.cli.eval", str(tmp_path / "missing"), "--bicubic",
                        "--json", str(out)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip().startswith("error: ") and len(p.stderr.strip().splitlines()) == 1
    assert "Traceback" not in p.stderr and p.stdout == ""
    assert not out.exists()
    p = subprocess.run([sys.executable, "-m", "asisr.cli.eval", str(data), "--bicubic", "--scales", "2"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "Tiny (2 images)" in p.stdout
