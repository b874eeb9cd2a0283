"""INT8 and FP16 exports: QDQ graphs per target, the range cache, exclusion by measurement, fp16
graphs with float32 coordinate math, parity at precision tolerances, and the CLI around them."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from asisr.calibration.graph import coordinate_nodes
from asisr.calibration.quantizer import TARGETS, prepare_graph, quantize_graph
from asisr.calibration.samples import CalibrationSettings
from asisr.calibration.sensitivity import Policy
from asisr.errors import UserError
from asisr.evaluation.parity import TOLERANCES, build_cases, check_parity
from asisr.export.fp16 import convert_onnx
from asisr.runtime.manifest import read_manifest
from asisr.export.quantize import Int8Config, quantize_onnx
from asisr.digest import sha256_file
from asisr.models import load
from asisr.runtime.backends.onnxrt import OnnxrtRunner, SessionFromOnnx
from asisr.runtime.contract import BACKBONE, UPSAMPLER
from asisr.runtime.pipeline import Pipeline
from asisr.runtime.backends.onnxrt import open_onnx_pipeline
from tests.cli_helpers import assert_user_error, invoke
from tests.test_calibration import make_photos

SMALL = Int8Config(settings=CalibrationSettings(n_samples=8, lr_size=24, max_out=32), policy=Policy(samples=4))
QUICK = replace(SMALL, policy=Policy(samples=4, measure=False))


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return make_photos(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="module")
def int8_dir(tiny_liif_onnx, photos, tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("cache") / "calib.json"
    return quantize_onnx(tiny_liif_onnx, tmp_path_factory.mktemp("int8") / "ort", photos, SMALL, cache=cache)


@pytest.fixture(scope="module")
def fp16_dir(tiny_liif_onnx, tmp_path_factory) -> Path:
    return convert_onnx(tiny_liif_onnx, tmp_path_factory.mktemp("fp16") / "liif")


@pytest.fixture(scope="module")
def tiny_light_onnx(tmp_path_factory) -> Path:
    import torch

    from asisr.export.onnx import export_onnx
    from asisr.models import create

    torch.manual_seed(0)
    model = create("eqsr_light", n_feats=16, n_groups=1, n_resblocks=1, upsampler_width=16)
    return export_onnx(model, tmp_path_factory.mktemp("light") / "fp32")


def _nodes(path: Path) -> list[onnx.NodeProto]:
    return list(onnx.load(str(path)).graph.node)


def _inits(path: Path) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}


def _pipeline(backbone: Path, upsampler: Path, like: Path) -> Pipeline:
    p = open_onnx_pipeline(like, 1, None)
    return Pipeline(OnnxrtRunner(SessionFromOnnx(backbone, None, 1), BACKBONE),
                    OnnxrtRunner(SessionFromOnnx(upsampler, None, 1), UPSAMPLER), p.descriptor, p.model, p.source, p.manifest)


def _outputs(pipeline: Pipeline, cases) -> list[np.ndarray]:
    with pipeline:
        return [pipeline.upsample(pipeline.features(c.lr, c.scale), c.scale, c.rows, c.cols) for c in cases]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(-10 * np.log10(np.mean((a.astype(np.float64) - b) ** 2)))


# ------------------------------------------------------------------------------------------ INT8


def test_int8_onnxruntime_target_is_qdq_uint8_activations_per_channel_weights(int8_dir, tiny_liif_onnx):
    manifest = read_manifest(int8_dir).data
    q = manifest["quantization"]
    assert manifest["precision"] == "int8" and manifest["format_version"] == 1
    assert q["target"] == "onnxruntime" and q["format"] == "QDQ"
    assert q["calibration"]["method"] == "minmax" and len(q["calibration"]["set_sha256"]) == 64
    for stage in ("backbone", "upsampler"):
        nodes = _nodes(int8_dir / f"{stage}.onnx")
        inits = _inits(int8_dir / f"{stage}.onnx")
        ops = [n.op_type for n in nodes]
        assert "QuantizeLinear" in ops and "DequantizeLinear" in ops, stage
        for n in nodes:
            if n.op_type == "QuantizeLinear":  # activations: uint8, asymmetric
                assert inits[n.input[2]].dtype == np.uint8
    # Conv weights: int8, one scale per output channel, symmetric (zero point 0)
    nodes = _nodes(int8_dir / "backbone.onnx")
    inits = _inits(int8_dir / "backbone.onnx")
    dq = {n.output[0]: n for n in nodes if n.op_type == "DequantizeLinear"}
    convs = [n for n in nodes if n.op_type == "Conv" and n.input[1] in dq]
    assert convs
    for conv in convs:
        w = dq[conv.input[1]]
        weight, scale, zero = inits[w.input[0]], inits[w.input[1]], inits[w.input[2]]
        assert weight.dtype == np.int8 and scale.shape == (weight.shape[0],) and not zero.any()
        # 7-bit range: u8 * s8 pair sums fit int16 (255 * 64 * 2 <= 32767), where AVX2 CPUs without
        # VNNI would saturate with full-range weights
        assert np.abs(weight.astype(np.int32)).max() == 64


def _max_conv_weight(path: Path) -> int:
    nodes, inits = _nodes(path), _inits(path)
    dq = {n.output[0]: n for n in nodes if n.op_type == "DequantizeLinear"}
    return max(int(np.abs(inits[dq[n.input[1]].input[0]].astype(np.int32)).max())
               for n in nodes if n.op_type == "Conv" and n.input[1] in dq)


def test_int8_vnni_target_keeps_full_range_weights_and_its_own_cache_entry(tiny_liif_onnx, photos, tmp_path):
    cache = tmp_path / "calib.json"
    portable = quantize_onnx(tiny_liif_onnx, tmp_path / "ort", photos, QUICK, cache=cache)
    vnni = quantize_onnx(tiny_liif_onnx, tmp_path / "vnni", photos, replace(QUICK, target="onnxruntime-vnni"),
                         cache=cache)
    assert _max_conv_weight(portable / "backbone.onnx") == 64
    assert _max_conv_weight(vnni / "backbone.onnx") == 127
    q = read_manifest(vnni).data["quantization"]
    assert q["target"] == "onnxruntime-vnni" and "7-bit" not in q["weights"]
    assert "7-bit" in read_manifest(portable).data["quantization"]["weights"]
    assert len(json.loads(cache.read_text())["entries"]) == 2  # ranges measured for one never serve the other


def test_int8_tensorrt_target_is_symmetric_int8_with_float_bias(tiny_liif_onnx, photos, tmp_path):
    out = quantize_onnx(tiny_liif_onnx, tmp_path / "trt", photos, replace(QUICK, target="tensorrt"))
    assert read_manifest(out).data["quantization"]["target"] == "tensorrt"
    nodes = _nodes(out / "backbone.onnx")
    inits = _inits(out / "backbone.onnx")
    qs = [n for n in nodes if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qs
    for n in qs:  # every zero point: int8 and 0 (TensorRT's symmetric quantisation)
        zp = inits[n.input[2]]
        assert zp.dtype == np.int8 and not zp.any(), n.name
    dq = {n.output[0]: n for n in nodes if n.op_type == "DequantizeLinear"}
    for conv in (n for n in nodes if n.op_type == "Conv" and n.input[1] in dq):
        assert inits[dq[conv.input[1]].input[1]].shape == (inits[dq[conv.input[1]].input[0]].shape[0],)
        assert len(conv.input) < 3 or conv.input[2] in inits and inits[conv.input[2]].dtype == np.float32


def test_int8_passes_parity_at_the_int8_tolerance(int8_dir, tiny_liif_ckpt, photos):
    report = check_parity(open_onnx_pipeline(int8_dir, 1, None), load(tiny_liif_ckpt).reference(),
                          build_cases(images=photos, random_inputs=False), precision="int8")
    assert report.tolerance == TOLERANCES["int8"] and report.precision == "int8"
    assert report.passed, report.table()
    assert 30 < report.min_psnr < 120 and "worst PSNR vs fp32" in report.table()
    # the fp32 tolerance would reject it: quantisation is really there
    assert max(r.stats.max_abs for r in report.results) > TOLERANCES["fp32"]


def test_int8_export_runs_on_openvino_at_the_int8_tolerance(int8_dir, tiny_liif_ckpt, photos):
    """The same Q/DQ graphs on OpenVINO (its low-precision transformations take the Q/DQ pairs)."""
    pytest.importorskip("openvino", reason="needs OpenVINO (a base dependency: pip install openvino)")
    from asisr.sources import open_pipeline

    pipeline = open_pipeline(int8_dir, "openvino", 1)  # precision auto: the directory's own, int8
    assert (pipeline.backend, pipeline.precision) == ("openvino", "int8")
    report = check_parity(pipeline, load(tiny_liif_ckpt).reference(), build_cases(images=photos, random_inputs=False))
    assert report.tolerance == TOLERANCES["int8"] and report.passed, report.table()
    assert max(r.stats.max_abs for r in report.results) > TOLERANCES["fp32"]


def test_absurd_ranges_fail_parity(tiny_liif_onnx, tiny_liif_ckpt, int8_dir, photos, tmp_path):
    """Same graph and quantiser, ranges 1000x too narrow: activations saturate, parity must fail."""
    from onnxruntime.quantization.calibrate import TensorData

    from asisr.calibration.cache import RangeCache

    entry = next(iter(RangeCache(_cache_of(int8_dir)).entries))
    ranges = RangeCache(_cache_of(int8_dir)).get(entry)["ranges"]["upsampler"]
    for name, td in list(ranges.items()):
        lo, hi = td.range_value
        ranges[name] = TensorData(lowest=np.float32(lo) / 1000, highest=np.float32(hi) / 1000)
    pre = prepare_graph(tiny_liif_onnx / "upsampler.onnx", tmp_path / "up.pre.onnx", "features")
    broken = quantize_graph(pre, tmp_path / "broken.onnx", ranges, TARGETS["onnxruntime"],
                            nodes_to_exclude=coordinate_nodes(onnx.load(str(pre)), "features"))
    pipeline = _pipeline(tiny_liif_onnx / "backbone.onnx", broken, tiny_liif_onnx)
    cases = build_cases(images=photos, random_inputs=False)
    report = check_parity(pipeline, load(tiny_liif_ckpt).reference(), cases, precision="int8")
    assert not report.passed


def _cache_of(int8_dir: Path) -> Path:
    return next(int8_dir.parent.parent.glob("cache*/calib.json"))


def test_cache_reuse_is_byte_identical_without_reading_images(int8_dir, tiny_liif_onnx, tmp_path):
    cache = _cache_of(int8_dir)
    again = quantize_onnx(tiny_liif_onnx, tmp_path / "again", tmp_path / "no-such-folder", SMALL, cache=cache)
    for stage in ("backbone", "upsampler"):
        assert sha256_file(again / f"{stage}.onnx") == sha256_file(int8_dir / f"{stage}.onnx")
    first, second = (read_manifest(d).data["quantization"] for d in (int8_dir, again))
    assert not first["calibration"]["from_cache"] and second["calibration"]["from_cache"]
    assert first["calibration"]["set_sha256"] == second["calibration"]["set_sha256"]
    assert first["float_nodes"] == second["float_nodes"]
    # another method is another entry: without images it cannot be made, and nothing is written
    with pytest.raises(UserError, match="no entry"):
        quantize_onnx(tiny_liif_onnx, tmp_path / "other", None, replace(SMALL, method="entropy"), cache=cache)
    assert not (tmp_path / "other").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["again"]


def test_exclusions_are_measured_and_recorded(int8_dir):
    manifest = read_manifest(int8_dir).data["quantization"]
    report = json.loads((int8_dir / manifest["sensitivity_report"]).read_text())
    policy = Policy(**{k: v for k, v in manifest["policy"].items()})
    rows = report["report"]
    assert rows and {"graph", "node", "op", "noise_db", "expected_drop_db", "drop_db", "excluded"} <= set(rows[0])
    quantized_ops = {r["op"] for r in rows if r["quantized"]}
    assert "Conv" in quantized_ops and quantized_ops & {"MatMul", "Gemm"}
    measured = manifest["float_nodes"]["measured"]
    for r in rows:  # the policy: over the threshold alone -> float
        if r["expected_drop_db"] > policy.threshold_db:
            assert r["node"] in measured[r["graph"]] and r["excluded"]
    chosen = report["rounds"][-1]
    assert chosen["chosen"] and (chosen["expected_drop_db"] <= policy.budget_db
                                 or chosen["excluded"] == sum(r["quantized"] for r in rows))
    # coordinate math is float in the graph: no Q/DQ touches a coordinate node
    for stage in ("backbone", "upsampler"):
        coord = set(manifest["float_nodes"]["coordinate"][stage])
        graph = onnx.load(str(int8_dir / f"{stage}.onnx"))
        dq_out = {n.output[0] for n in graph.graph.node if n.op_type == "DequantizeLinear"}
        touched = [n for n in graph.graph.node if n.name in coord and set(n.input) & dq_out]
        assert all(n.op_type == "Shape" for n in touched), stage  # reading a shape is exact
    assert manifest["float_nodes"]["coordinate"]["upsampler"]


def test_eqsr_light_int8_and_fp16(tiny_light_onnx, photos, tmp_path):
    int8 = quantize_onnx(tiny_light_onnx, tmp_path / "int8", photos, QUICK)
    fp16 = convert_onnx(tiny_light_onnx, tmp_path / "fp16")
    real = build_cases(images=photos, random_inputs=False)
    q, ref = (_outputs(open_onnx_pipeline(d, 1, None), real) for d in (int8, tiny_light_onnx))
    assert max(np.abs(a - b).max() for a, b in zip(q, ref)) < TOLERANCES["int8"]
    cases = build_cases(images=photos)  # fp16 holds on random inputs too
    h, ref = (_outputs(open_onnx_pipeline(d, 1, None), cases) for d in (fp16, tiny_light_onnx))
    assert min(_psnr(a, b) for a, b in zip(h, ref)) >= 50
    # the scale code's sin/cos stays float32 in the fp16 backbone; its convolutions do not
    graph = onnx.shape_inference.infer_shapes(onnx.load(str(fp16 / "backbone.onnx")))
    types = _elem_types(graph)
    sincos = [n for n in graph.graph.node if n.op_type in ("Sin", "Cos")]
    assert sincos and all(types[n.input[0]] == TensorProto.FLOAT for n in sincos)
    assert any(types.get(n.input[1]) == TensorProto.FLOAT16 for n in graph.graph.node if n.op_type == "Conv")
    assert "QuantizeLinear" in {n.op_type for n in _nodes(int8 / "backbone.onnx")}


# ------------------------------------------------------------------------------------------ FP16


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    vis = list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)
    types = {v.name: v.type.tensor_type.elem_type for v in vis}
    types.update({i.name: i.data_type for i in model.graph.initializer})
    return types


def test_fp16_keeps_float32_io_and_coordinate_math(fp16_dir, tiny_liif_onnx):
    manifest = read_manifest(fp16_dir).data
    assert manifest["precision"] == "fp16" and manifest["graphs"]["upsampler"]["inputs"][2]["dtype"] == "float32"
    for stage in ("backbone", "upsampler"):
        model = onnx.shape_inference.infer_shapes(onnx.load(str(fp16_dir / f"{stage}.onnx")))
        assert all(v.type.tensor_type.elem_type == TensorProto.FLOAT
                   for v in list(model.graph.input) + list(model.graph.output))
        types = _elem_types(model)
        convs = [n for n in model.graph.node if n.op_type == "Conv"]
        assert convs and all(types[n.input[1]] == TensorProto.FLOAT16 for n in convs), stage
    up = onnx.shape_inference.infer_shapes(onnx.load(str(fp16_dir / "upsampler.onnx")))
    types = _elem_types(up)
    floors = [n for n in up.graph.node if n.op_type == "Floor"]
    assert floors and all(types[n.input[0]] == TensorProto.FLOAT for n in floors)
    assert set(manifest["fp16"]["float32_nodes"]["upsampler"]) >= {n.name for n in floors}
    # and nothing on the way from rows/cols to them passes through float16 (no lossy round trip)
    producer = {o: n for n in up.graph.node for o in n.output}
    seen, todo = set(), [t for n in floors for t in n.input]
    while todo:
        node = producer.get(todo.pop())
        if node is not None and node.name not in seen:
            seen.add(node.name)
            assert not (node.op_type == "Cast" and node.attribute[0].i == TensorProto.FLOAT16), node.name
            todo.extend(node.input)
    assert any(types[n.input[1]] == TensorProto.FLOAT16 for n in up.graph.node
               if n.op_type in ("MatMul", "Gemm") and n.input[1] in {i.name for i in up.graph.initializer})


def test_fp16_output_is_within_50_db_of_fp32_and_passes_parity(fp16_dir, tiny_liif_onnx, tiny_liif_ckpt, photos):
    cases = build_cases(images=photos)
    ref = _outputs(open_onnx_pipeline(tiny_liif_onnx, 1, None), cases)
    out = _outputs(open_onnx_pipeline(fp16_dir, 1, None), cases)
    assert all(o.dtype == np.float32 for o in out)
    assert min(_psnr(a, b) for a, b in zip(out, ref)) >= 50
    report = check_parity(open_onnx_pipeline(fp16_dir, 1, None), load(tiny_liif_ckpt).reference(), cases,
                          precision="fp16")
    assert report.passed and report.tolerance == TOLERANCES["fp16"], report.table()


def test_precision_exports_refuse_non_fp32_sources(fp16_dir, photos, tmp_path):
    with pytest.raises(UserError, match="fp32 export"):
        quantize_onnx(fp16_dir, tmp_path / "x", photos, QUICK)
    with pytest.raises(UserError, match="fp32 export"):
        convert_onnx(fp16_dir, tmp_path / "y")
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------ CLI


@pytest.mark.parametrize("args, fragment", [
    (["--int8"], "--int8 needs --calib"),
    (["--int8", "--calib", "{tmp}/missing"], "--calib folder not found"),
    (["--int8", "--fp16", "--calib", "{photos}"], "exclude each other"),
    (["--int8", "--calib", "{photos}", "--int8-target", "tpu"], "unknown INT8 target"),
    (["--int8", "--calib", "{photos}", "--calib-method", "guess"], "unknown calibration method"),
    (["--int8", "--calib", "{photos}", "--calib-samples", "0"], "--calib-samples must be >= 1"),
    (["--fp16", "--calib", "{photos}"], "only applies to --int8"),
])
def test_export_cli_bad_precision_arguments(args, fragment, tiny_liif_ckpt, photos, tmp_path, capsys):
    from asisr.cli.export import main

    out = tmp_path / "out"
    args = [a.format(tmp=tmp_path, photos=photos) for a in args]
    code, _, err = invoke(main, ["--checkpoint", tiny_liif_ckpt, "--out", out, *args], capsys)
    assert_user_error(code, err, fragment)
    assert not out.exists()


def test_eval_and_parity_clis_on_an_int8_directory(int8_dir, tiny_liif_ckpt, photos, tmp_path, capsys):
    from asisr.cli.eval import main as eval_main
    from asisr.cli.parity import main as parity_main

    code, out, err = invoke(eval_main, [photos, "--model", int8_dir, "--backend", "onnxruntime", "--scales", "2",
                                        "--threads", "1"], capsys)
    assert code == 0, err
    assert "liif int8 [onnxruntime]" in out
    report = tmp_path / "parity.json"
    code, out, err = invoke(parity_main, [int8_dir, "--checkpoint", tiny_liif_ckpt, "--images", photos,
                                          "--threads", "1", "--json", report], capsys)
    assert code == 0, out + err
    data = json.loads(report.read_text())
    assert data["precision"] == "int8" and data["tolerance"] == TOLERANCES["int8"] and data["passed"]
    assert isinstance(data["min_psnr_db"], float) and "precision int8" in out
    assert all("psnr" in c["stats"] for c in data["cases"])
    assert not any(c["case"].startswith("random") for c in data["cases"])
    code, _, err = invoke(parity_main, [int8_dir, "--checkpoint", tiny_liif_ckpt], capsys)
    assert_user_error(code, err, "give --images")
