"""The OpenVINO backend and the precision policy.

Parity: ``asisr-parity --backend openvino`` on the checkpoint of every model family (the bundled
LIIF, EQSR-light and lmf exports; the official-code fixtures of LTE, Meta-SR, ArbRCAN and
MetaRDN), at fp32 (the project's 1e-4) and at bf16 (``TOLERANCES["bf16"]``, derived in
``asisr.evaluation.parity``). On a CPU without bf16 units OpenVINO emulates bf16; the tolerance
is the same.

Policy: ``asisr.runtime.precision.choose`` with the CPU's flags given by the test, so an AMX host,
an avx512_bf16 host and a host with neither are all checked on whatever CPU runs the suite.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from asisr.errors import UserError
from asisr.runtime import precision as policy
from tests.cli_helpers import invoke
from tests.conftest import exported_once
from tests.shared_data import SHARED, need

pytest.importorskip("openvino", reason="needs OpenVINO (a base dependency: pip install openvino)")

AMX = frozenset({"avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile"})
ZEN4 = frozenset({"avx512f", "avx512_vnni", "avx512_bf16"})
AVX2 = frozenset({"avx2", "fma"})


def _drops(bf16_worst: float) -> dict:
    """A manifest record whose worst bf16 change is ``bf16_worst`` dB (and one gain, which is no loss)."""
    return {"drops": {"bf16": {"Set5": {"2": bf16_worst, "3": -0.001, "4": 0.004},
                               "Set14": {"2": -0.002, "3": -0.003, "4": -0.001}}}}


# ------------------------------------------------------------------------------ the policy

@pytest.mark.parametrize("flags, unit", [(AMX, "amx_bf16"), (ZEN4, "avx512_bf16")], ids=["amx", "avx512_bf16"])
def test_auto_takes_bf16_where_native_and_within_budget(flags, unit):
    choice = policy.choose("auto", "openvino", drops=_drops(-0.014), flags=flags)
    assert choice.precision == "bf16" and unit in choice.reason and "0.014" in choice.reason


def test_auto_stays_fp32_without_units_over_budget_or_unmeasured():
    no_units = policy.choose("auto", "openvino", drops=_drops(-0.001), flags=AVX2)
    assert no_units.precision == "fp32" and "no bf16 units" in no_units.reason
    over = policy.choose("auto", "openvino", drops=_drops(-0.021), flags=ZEN4)
    assert over.precision == "fp32" and "0.021 dB" in over.reason and "budget" in over.reason
    unmeasured = policy.choose("auto", "openvino", drops=None, flags=AMX)
    assert unmeasured.precision == "fp32" and "no measured bf16 drop" in unmeasured.reason
    at_budget = policy.choose("auto", "openvino", drops=_drops(-policy.BUDGET_DB), flags=ZEN4)
    assert at_budget.precision == "bf16"


def test_explicit_precisions_are_checked_against_backend_cpu_and_export():
    assert policy.choose("bf16", "openvino", flags=ZEN4).precision == "bf16"
    assert policy.choose("fp32", "openvino", flags=AMX).precision == "fp32"
    with pytest.raises(UserError, match="no bf16 units"):
        policy.choose("bf16", "openvino", flags=AVX2)
    with pytest.raises(UserError, match="needs the openvino backend"):
        policy.choose("bf16", "onnxruntime", flags=AMX)
    assert policy.choose("auto", "onnxruntime", drops=_drops(0.0), flags=AMX).precision == "fp32"
    with pytest.raises(UserError, match="INT8 export"):
        policy.choose("int8", "openvino", flags=AMX)
    assert policy.choose("auto", "openvino", stored="int8", flags=AVX2).precision == "int8"
    with pytest.raises(UserError, match="holds int8 graphs"):
        policy.choose("bf16", "openvino", stored="int8", flags=AMX)
    with pytest.raises(UserError, match="unknown precision"):
        policy.choose("fp8", "openvino", flags=AMX)


def test_backend_auto_is_openvino_where_installed():
    assert policy.resolve_backend("auto", True) == "openvino"
    assert policy.resolve_backend("auto", False) == "onnxruntime"
    assert policy.resolve_backend("onnxruntime", True) == "onnxruntime"


def test_bundled_manifests_record_measured_drops():
    """Each bundled export carries the record ``benchmarks/precision_drops.py --write`` makes: the fp32
    reference PSNRs, a change per measured precision on Set5 and Set14 at x2-x4, and the CPU it ran on."""
    from asisr.runtime.manifest import read_manifest
    from asisr.weights import BUNDLED_ONNX, bundled_onnx_dir

    for name in BUNDLED_ONNX:
        record = read_manifest(bundled_onnx_dir(name)).precision_drops
        assert record is not None, name
        assert record["reference"] == "onnxruntime fp32" and record["measured_on"]["cpu"]
        assert set(record["psnr_fp32"]) == {"Set5", "Set14"}
        assert record["drops"], f"{name}: no reduced precision measured"
        for precision, per_dataset in record["drops"].items():
            assert precision in policy.AUTO_ORDER
            for dataset in ("Set5", "Set14"):
                changes = per_dataset[dataset]
                assert sorted(changes) == ["2", "3", "4"], (name, precision, dataset)
                assert all(abs(v) < 1.0 for v in changes.values()), (name, precision, changes)


def test_the_default_path_follows_the_policy_on_this_cpu():
    from asisr.runtime.manifest import read_manifest
    from asisr.sources import open_upscaler
    from asisr.weights import default_onnx_dir

    expected = policy.choose("auto", "openvino", drops=read_manifest(default_onnx_dir()).precision_drops)
    pipeline = open_upscaler().pipeline
    assert (pipeline.backend, pipeline.precision) == ("openvino", expected.precision)
    assert pipeline.precision_reason == expected.reason
    exact = open_upscaler(backend="onnxruntime", precision="fp32").pipeline
    assert (exact.backend, exact.precision) == ("onnxruntime", "fp32")


# ------------------------------------------------------------------------------ parity, every family

FIXTURES = {
    "lte": ("lte_official_small", "epoch-last.pth"),
    "metasr": ("metasr_liif_small", "epoch-last.pth"),
    "arbrcan": ("arbsr_official_small", "model_1.pt"),
    "metardn": ("metardn_official_small", "model_small.pt"),
}
FAMILIES = ("liif", "eqsr_light", "lmf", *FIXTURES)


def _family(name: str, tmp_path_factory) -> tuple[Path, Path]:
    """(exported directory, checkpoint) of a family: the bundled export, or the official fixture exported once."""
    from asisr.weights import BUNDLED_ONNX, bundled_onnx_dir, bundled_path

    if name in BUNDLED_ONNX:
        return bundled_onnx_dir(name), bundled_path(name)
    folder, file = FIXTURES[name]
    ckpt = need(SHARED / "fixtures" / folder / file)
    return exported_once(tmp_path_factory, f"{folder}_onnx", ckpt), ckpt


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("family", FAMILIES)
def test_asisr_parity_passes_on_openvino(family, precision, tmp_path_factory, tmp_path, capsys):
    from asisr.cli.parity import main as parity_main
    from asisr.evaluation.parity import TOLERANCES

    exported, ckpt = _family(family, tmp_path_factory)
    report = tmp_path / "parity.json"
    code, out, err = invoke(parity_main, [exported, "--checkpoint", ckpt, "--backend", "openvino",
                                          "--precision", precision, "--shapes", "17x23", "--scales", "3.7,2x3.5",
                                          "--threads", "1", "--json", report], capsys)
    assert code == 0, out + err
    data = json.loads(report.read_text())
    assert data["passed"] and data["precision"] == precision and data["tolerance"] == TOLERANCES[precision]
    worst = max(case["stats"]["max_abs"] for case in data["cases"])
    print(f"{family} {precision}: worst max-abs {worst:.2e}, min PSNR {data['min_psnr_db']}")
    if precision == "bf16" and policy.native("bf16", policy.cpu_flags()):
        assert worst > 1e-5, "bf16 outputs identical to fp32: the precision hint did not reach OpenVINO"


def test_parity_fails_past_the_tolerance(tmp_path_factory, tmp_path, capsys):
    """The same comparison can fail: bf16 outputs judged at the fp32 tolerance."""
    from asisr.cli.parity import main as parity_main

    if not policy.native("bf16", policy.cpu_flags()):
        pytest.skip("this CPU has no bf16 units (avx512_bf16 or AMX): OpenVINO runs bf16 as fp32 here")
    exported, ckpt = _family("liif", tmp_path_factory)
    code, out, err = invoke(parity_main, [exported, "--checkpoint", ckpt, "--backend", "openvino", "--precision",
                                          "bf16", "--tolerance", "1e-4", "--shapes", "17x23", "--scales", "2"], capsys)
    assert code == 1 and "parity check failed" in err


# ------------------------------------------------------------------------------ the runner

def test_compiled_models_are_cached_across_processes(tmp_path, monkeypatch):
    """The second open reads OpenVINO's cache (asisr's cache folder, keyed by graph, version and CPU)."""
    from asisr.runtime.backends.openvino import open_openvino_pipeline
    from asisr.weights import default_onnx_dir

    monkeypatch.setenv("ASISR_CACHE", str(tmp_path / "cache"))
    with open_openvino_pipeline(default_onnx_dir(), 1, "bf16"):
        pass
    folders = sorted((tmp_path / "cache" / "openvino").iterdir())
    assert len(folders) == 2 and all(any(f.iterdir()) for f in folders)  # one per stage, each holding a blob
    assert all("-ov" in f.name for f in folders)


def test_runner_refuses_a_graph_of_another_stage(tmp_path):
    from asisr.runtime import contract
    from asisr.runtime.backends.openvino import CompiledFromOnnx, OpenvinoRunner
    from asisr.weights import default_onnx_dir

    wrong = OpenvinoRunner(CompiledFromOnnx(default_onnx_dir() / "upsampler.onnx"), contract.BACKBONE)
    with pytest.raises(UserError, match="the backbone stage has inputs"):
        wrong.activate()


def test_new_shapes_give_the_same_pixels_as_onnxruntime():
    """Dynamic shapes: several LR sizes through one compiled model, each equal to ONNX Runtime fp32."""
    from asisr.runtime.backends.onnxrt import open_onnx_pipeline
    from asisr.runtime.backends.openvino import open_openvino_pipeline
    from asisr.runtime.upscaler import Upscaler
    from asisr.weights import default_onnx_dir

    rng = np.random.default_rng(0)
    images = [rng.random((h, w, 3), dtype=np.float32) for h, w in ((12, 17), (20, 9), (15, 15))]
    with Upscaler(open_openvino_pipeline(default_onnx_dir(), 1, "fp32")) as ov, \
            Upscaler(open_onnx_pipeline(default_onnx_dir(), 1)) as ort:
        for image in images:
            np.testing.assert_allclose(ov.upscale(image, 2.5), ort.upscale(image, 2.5), atol=1e-4)


# ------------------------------------------------------------------------------ from the command line

@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """A real photo (a Set5 image, cropped small)."""
    from asisr.imageio import read_image, write_image
    from tests.shared_data import SET5

    path = tmp_path_factory.mktemp("photo") / "butterfly.png"
    write_image(path, read_image(need(SET5 / "butterfly.png"))[40:100, 60:140])
    return path


def test_asisr_run_says_what_it_chose_and_the_exact_path_stays_exact(photo, tmp_path, capsys):
    """The default run names its backend, precision and reason (--verbose); ``--backend onnxruntime
    --precision fp32`` gives exactly what ONNX Runtime gives outside the CLI."""
    from asisr.cli.run import main as run_main
    from asisr.imageio import read_image
    from asisr.runtime.backends.onnxrt import open_onnx_pipeline
    from asisr.runtime.manifest import read_manifest
    from asisr.runtime.upscaler import Upscaler, from_float, to_float
    from asisr.weights import default_onnx_dir

    expected = policy.choose("auto", "openvino", drops=read_manifest(default_onnx_dir()).precision_drops)
    code, _, err = invoke(run_main, [photo, "--scale", "2", "--out", tmp_path / "auto.png", "--verbose"], capsys)
    assert code == 0, err
    label = "liif [openvino]" if expected.precision == "fp32" else f"liif {expected.precision} [openvino]"
    assert f"running {label}: precision {expected.precision} ({expected.reason})" in err
    code, _, err = invoke(run_main, [photo, "--scale", "2", "--out", tmp_path / "exact.png", "--backend",
                                     "onnxruntime", "--precision", "fp32", "-v"], capsys)
    assert code == 0 and "running liif [onnxruntime]: precision fp32" in err
    with Upscaler(open_onnx_pipeline(default_onnx_dir())) as up:
        direct = from_float(up.upscale(to_float(read_image(photo)), 2), np.uint8)
    np.testing.assert_array_equal(read_image(tmp_path / "exact.png"), direct)
    auto = read_image(tmp_path / "auto.png").astype(int)
    assert auto.shape == direct.shape and np.abs(auto - direct).mean() < 0.5  # bf16: a few values off by one


@pytest.mark.parametrize("args, fragment", [
    (["--precision", "fp8"], "unknown precision 'fp8'"),
    (["--backend", "onnxruntime", "--precision", "bf16"], "needs the openvino backend"),
    (["--precision", "int8"], "INT8 export"),
])
def test_asisr_run_refuses_a_precision_it_cannot_honour(photo, tmp_path, capsys, args, fragment):
    from asisr.cli.run import main as run_main
    from tests.cli_helpers import assert_user_error

    code, _, err = invoke(run_main, [photo, "--scale", "2", "--out", tmp_path / "x.png", *args], capsys)
    assert_user_error(code, err, fragment)
    assert not (tmp_path / "x.png").exists()
