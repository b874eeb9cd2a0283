"""Stage-by-stage comparison of the exported graphs against PyTorch, and the Polygraphy flow, on CPU.

The per-stage check is asisr's own engine (``check_parity(per_stage=True)``). The test also runs the ``polygraphy run`` command documented in docs/tensorrt.md with ONNX Runtime
in place of TensorRT, so the data-loader script and the saved PyTorch outputs it relies on
are exercised here, not only on a GPU.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("polygraphy", reason="Polygraphy is not installed (pip install polygraphy, or asisr[test])")

from asisr.errors import UserError  # noqa: E402
from asisr.evaluation import polygraphy_data  # noqa: E402
from asisr.evaluation.parity import FP32_TOLERANCE, check_parity  # noqa: E402
from asisr.evaluation.polygraphy_data import save_reference  # noqa: E402
from asisr.runtime.backends.onnxrt import open_onnx_pipeline  # noqa: E402
from asisr.runtime.backends.pyt import torch_pipeline  # noqa: E402
from asisr.runtime.query import axis_coords  # noqa: E402


def compare_stages(model, onnx_dir, cases):
    return check_parity(open_onnx_pipeline(onnx_dir, 1), model.reference(), cases, per_stage=True)


def _worst(report, stage):
    return max(r.stats.max_abs for r in report.results if r.stage == stage)


@pytest.fixture(scope="module")
def tiny_model(tiny_liif_ckpt):
    from asisr.models import load

    return load(tiny_liif_ckpt)


@pytest.fixture(scope="module")
def perturbed_model(tiny_liif_ckpt):
    """The same model with one upsampler weight nudged: a graph exported from it is *not* this model."""
    from asisr.models import load

    model = load(tiny_liif_ckpt)
    with torch.no_grad():
        next(model.upsampler.parameters()).add_(1e-2)
    return model


def _few_cases():
    """Fewer than the default cases (time), still: non-export shapes, an asymmetric scale, a mixed batch."""
    from asisr.evaluation.parity import build_cases

    return build_cases(shapes=((17, 23), (32, 24)), scales=("3.7", "2x3.5"))


def test_exported_graphs_match_pytorch_under_polygraphy(tiny_model, tiny_liif_onnx):
    cases = _few_cases()
    report = compare_stages(tiny_model, tiny_liif_onnx, cases)
    assert report.passed, report.table()
    assert [r.stage for r in report.results] == ["backbone", "upsampler"] * len(cases)
    for stage in ("backbone", "upsampler"):
        assert _worst(report, stage) <= FP32_TOLERANCE
    print(report.table())


def test_polygraphy_comparison_fails_for_a_graph_of_another_model(perturbed_model, tiny_liif_onnx):
    report = compare_stages(perturbed_model, tiny_liif_onnx, _few_cases())
    assert all(r.passed for r in report.results if r.stage == "backbone")  # untouched
    upsampler = [r for r in report.results if r.stage == "upsampler"]
    assert not any(r.passed for r in upsampler) and _worst(report, "upsampler") > FP32_TOLERANCE
    assert all("max abs error" in r.error for r in upsampler)
    assert not report.passed and " NO" in report.table()


def test_data_loader_feeds_are_real_queries_and_backbone_features(tiny_liif_onnx, monkeypatch):
    monkeypatch.setenv(polygraphy_data.ENV_MODEL, str(tiny_liif_onnx))
    cases = polygraphy_data.default_cases()
    backbone = list(polygraphy_data.load_backbone_data())
    upsampler = list(polygraphy_data.load_upsampler_data())
    assert len(backbone) == len(upsampler) == len(cases)
    features = polygraphy_data.onnx_backbone(tiny_liif_onnx)
    for case, b, u in zip(cases, backbone, upsampler):
        assert list(b) == ["lr", "scale"] and list(u) == ["features", "scale", "rows", "cols"]
        np.testing.assert_array_equal(u["features"], features(case.lr, case.scale))
        assert u["features"].shape[:2] == (case.lr.shape[0], 16) and u["features"].shape[2:] == case.lr.shape[2:]
        if case.lr.shape[0] == 1:  # whole-image queries: the runtime's own coordinates
            h, w = case.lr.shape[2:]
            np.testing.assert_array_equal(u["rows"][0], axis_coords(h, u["rows"].shape[1]).astype(np.float32))
            np.testing.assert_array_equal(u["cols"][0], axis_coords(w, u["cols"].shape[1]).astype(np.float32))
    monkeypatch.setenv(polygraphy_data.ENV_STAGE, "backbone")
    assert len(list(polygraphy_data.load_data())) == len(cases)
    monkeypatch.setenv(polygraphy_data.ENV_STAGE, "middle")
    with pytest.raises(UserError, match="expected backbone or upsampler"):
        list(polygraphy_data.load_data())
    monkeypatch.delenv(polygraphy_data.ENV_MODEL)
    with pytest.raises(UserError, match=polygraphy_data.ENV_MODEL):
        list(polygraphy_data.load_upsampler_data())


def test_shape_flags_parse_as_polygraphy_reads_them(tiny_liif_onnx, tiny_model, capsys):
    from polygraphy.tools.args import util as args_util

    from asisr.runtime.backends.trt.profiles import default_profile

    assert polygraphy_data.main(["shapes", str(tiny_liif_onnx), "upsampler"]) == 0
    words = capsys.readouterr().out.split()
    flags = [i for i, w in enumerate(words) if w.startswith("--trt-")]
    assert [words[i] for i in flags] == ["--trt-min-shapes", "--trt-opt-shapes", "--trt-max-shapes"]
    expected = default_profile(tiny_model.descriptor).shapes("upsampler", 16)
    for k, (start, stop) in enumerate(zip(flags, flags[1:] + [len(words)])):
        meta = args_util.parse_meta(words[start + 1:stop], includes_dtype=False)
        assert {name: tuple(m.shape) for name, m in meta.items()} == {n: r[k] for n, r in expected.items()}
    assert polygraphy_data.main(["shapes", str(tiny_liif_onnx), "middle"]) == 2
    assert "unknown stage 'middle'" in capsys.readouterr().err


def _polygraphy(args: list[str], env: dict) -> subprocess.CompletedProcess:
    code = "import sys; from polygraphy.tools import main; sys.argv = ['polygraphy'] + sys.argv[1:]; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=120)


def test_polygraphy_run_compares_a_graph_with_saved_pytorch_outputs(tiny_model, perturbed_model, tiny_liif_onnx,
                                                                   tmp_path):
    """The documented ``polygraphy run ... --load-outputs torch_upsampler.json`` flow, ONNX Runtime for TensorRT."""
    good = save_reference(torch_pipeline(tiny_model), tiny_liif_onnx, tmp_path / "good", stages=["upsampler"])
    bad = save_reference(torch_pipeline(perturbed_model), tiny_liif_onnx, tmp_path / "bad", stages=["upsampler"])
    assert good["upsampler"].name == "torch_upsampler.json"
    env = {**os.environ, polygraphy_data.ENV_MODEL: str(tiny_liif_onnx), "OMP_NUM_THREADS": "1"}
    script = f"{polygraphy_data.__file__}:load_upsampler_data"
    common = [str(tiny_liif_onnx / "upsampler.onnx"), "--onnxrt", "--data-loader-script", script,
              "--atol", str(FP32_TOLERANCE), "--rtol", "0", "--check-error-stat", "max"]
    ok = _polygraphy(["run", *common, "--load-outputs", str(good["upsampler"])], env)
    assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr[-2000:]
    assert "PASSED" in ok.stdout
    failed = _polygraphy(["run", *common, "--load-outputs", str(bad["upsampler"])], env)
    assert failed.returncode != 0 and "FAILED" in failed.stdout + failed.stderr


def test_asisr_parity_per_stage_and_polygraphy_reference_from_the_command_line(tiny_liif_onnx, tiny_liif_ckpt,
                                                                              tmp_path, capsys):
    import json

    from asisr.cli.parity import main
    from tests.cli_helpers import invoke

    ref, report = tmp_path / "ref", tmp_path / "parity.json"
    code, out, err = invoke(main, [tiny_liif_onnx, "--checkpoint", tiny_liif_ckpt, "--per-stage", "--shapes",
                                   "17x23", "--scales", "2x3.5", "--json", report,
                                   "--save-polygraphy-reference", ref], capsys)
    assert code == 0, out + err
    cases = json.loads(report.read_text())["cases"]
    assert [c["stage"] for c in cases] == ["backbone", "upsampler"] * 2  # one case + the mixed batch
    assert all(c["passed"] for c in cases)
    assert sorted(p.name for p in ref.iterdir()) == ["torch_backbone.json", "torch_upsampler.json"]
