"""asisr-eval: the --bicubic path, the model path (with a stand-in runtime) and every bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from asisr.cli.eval import app, main, parse_scales
from asisr.errors import UserError
from asisr.evaluation import bicubic_upscale

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


# ----------------------------------------------------------------------------- happy paths


def test_bicubic_table_and_json(data, tmp_path):
    out = tmp_path / "res.json"
    r = invoke(data, "--bicubic", "--scales", "2,3,2x3.5,2", "--json", out)
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("bicubic (PIL)")
    assert "Tiny (2 images)" in lines[1]
    assert [ln.split()[0] for ln in lines[4:]] == ["2", "3", "2x3.5"]
    rep = json.loads(out.read_text())
    assert rep["model"] == "bicubic (PIL)"
    assert set(rep["psnr"]["Tiny"]) == {"2", "3", "2x3.5"}
    assert f"{rep['psnr']['Tiny']['2']:.3f}" in lines[4]
    assert rep["results"][0]["scales"]["3"]["per_image"]["a.png"]["hr_size"] == [39, 48]
    # --overwrite replaces it
    r = invoke(data, "--bicubic", "--scales", "4", "--json", out, "--overwrite")
    assert r.exit_code == 0, r.stderr
    assert set(json.loads(out.read_text())["psnr"]["Tiny"]) == {"4"}


@pytest.mark.skipif(not SET5.is_dir(), reason=f"shared data not found: {SET5}")
def test_bicubic_set5_reference_number():
    r = invoke(SET5, "--bicubic", "--scales", "2")
    assert r.exit_code == 0, r.stderr
    assert "33.673" in r.stdout.splitlines()[4]


def test_help_has_examples():
    r = invoke("--help")
    assert r.exit_code == 0
    for text in ("--scales", "--bicubic", "--model", "--backend", "--json", "--overwrite", "Examples", "2x3.5"):
        assert text in r.stdout


def test_model_path_uses_open_upscaler(data, monkeypatch):
    """The CLI opens the model through asisr.runtime.open_upscaler (replaced here by a stand-in)."""
    opened = {}

    class FakeUpscaler:
        name = "fake-model"

        def upscale_to(self, lr, size):
            opened.setdefault("calls", 0)
            opened["calls"] += 1
            return bicubic_upscale(lr, size)

        def close(self):
            opened["closed"] = True

    def open_upscaler(model, backend=None, threads=None, tile=None):
        opened.update(model=model, backend=backend, threads=threads, tile=tile)
        return FakeUpscaler()

    fake = types.ModuleType("asisr.runtime")
    fake.open_upscaler = open_upscaler
    monkeypatch.setitem(sys.modules, "asisr.runtime", fake)

    r = invoke(data, "--model", "some.pth", "--backend", "onnxruntime", "--threads", "3", "--tile", "64",
               "--scales", "2")
    assert r.exit_code == 0, r.stderr
    assert opened == {"model": "some.pth", "backend": "onnxruntime", "threads": 3, "tile": 64,
                      "calls": 2, "closed": True}
    assert r.stdout.startswith("fake-model [onnxruntime]")

    opened.clear()
    r = invoke(data, "--scales", "2")  # no --model: the default model
    assert r.exit_code == 0, r.stderr
    assert opened["model"] is None and opened["backend"] is None

    # a runtime that guards the scale range is told to allow the requested scales (+ rounding margin)
    def open_with_guard(model, backend="torch", threads=None, tile=None, max_scale=None):
        opened.update(model=model, max_scale=max_scale)
        return FakeUpscaler()

    fake.open_upscaler = open_with_guard
    opened.clear()
    r = invoke(data, "--scales", "2,2x7.5", "--model", "m.pth")
    assert r.exit_code == 0, r.stderr
    assert opened["max_scale"] == 8.0

    def failing(model, **kw):
        raise UserError("no such model: x.pth")

    fake.open_upscaler = failing
    assert_one_line_error(invoke(data, "--model", "x.pth", "--scales", "2"), "no such model: x.pth")


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
    def open_upscaler(*a, **kw):
        raise AssertionError("the model must not be opened when an option is bad")

    fake = types.ModuleType("asisr.runtime")
    fake.open_upscaler = open_upscaler
    fake.BACKENDS = ("torch", "onnxruntime")
    monkeypatch.setitem(sys.modules, "asisr.runtime", fake)
    assert_one_line_error(invoke(data, *args), fragment)


def test_bad_reference(data, tmp_path):
    assert_one_line_error(invoke(data, "--bicubic", "--reference", tmp_path / "r.json"), "not found")
    (tmp_path / "r.json").write_text("{broken")
    assert_one_line_error(invoke(data, "--bicubic", "--reference", tmp_path / "r.json"), "cannot read")


def test_parse_scales():
    assert parse_scales("2, 3 ,2x3.5,2") == [(2.0, 2.0), (3.0, 3.0), (2.0, 3.5)]
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
