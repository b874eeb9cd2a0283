"""FP16 and INT8 exports of the LIIF-family models LTE and Meta-SR, on the small official-format
fixtures (random weights, ``shared/fixtures``): they run through ONNX Runtime within a measured
tolerance of the fp32 export, and LTE's phase math (``pi (freq . rel + phase)`` into Cos/Sin)
is float32 and unquantised in the exported graphs (docs/precision.md, "LTE and Meta-SR").

Tolerances, against the fp32 export's output on crops of the calibration photos (the parity
cases), from measurements on these fixtures (ORT 1.32 CPU, this file's settings):

* fp16, random and real inputs: worst 88.5 dB (LTE) and 71.1 dB (Meta-SR) PSNR from fp32.
  Bound 60 dB: above the 50 dB export goal, with headroom for other CPUs' rounding.
* int8, real crops only (the graphs are calibrated for photos): worst max abs 5.3e-2 (LTE)
  and 5.8e-3 (Meta-SR), worst PSNR 49.7 / 57.9 dB. Bound: the int8 parity tolerance (1e-1 max
  abs) and 40 dB.
* phases: fed the fp32 backbone's features, the fp16 and int8 upsamplers' Cos/Sin arguments
  equal the fp32 graph's (measured difference 0; bound 1e-5 rad). With the phase math left to
  the quantiser (``Policy(phase=False)``) they are off by up to 1.49 rad (phases up to 9.5 rad
  here); bound: at least 0.1 rad, so the exactness above is the rule's doing.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto

from asisr.calibration.graph import phase_nodes
from asisr.calibration.quantizer import prepare_graph
from asisr.calibration.samples import CalibrationSettings
from asisr.calibration.sensitivity import Policy
from asisr.evaluation.parity import TOLERANCES, build_cases
from asisr.export.fp16 import convert_onnx
from asisr.export.quantize import Int8Config, quantize_onnx
from asisr.runtime import contract
from asisr.runtime.manifest import read_manifest
from tests.shared_data import SHARED, need
from tests.test_calibration import make_photos

CHECKPOINTS = {"lte": SHARED / "fixtures" / "lte_official_small" / "epoch-last.pth",
               "metasr": SHARED / "fixtures" / "metasr_liif_small" / "epoch-last.pth"}
# Measured exclusions on small crops (a few seconds); the default 24 crops: with 8, fewer sub-pixel
# query positions are calibrated and LTE's ensemble weights saturate (max abs 0.13 instead of 0.05).
INT8 = Int8Config(settings=CalibrationSettings(n_samples=24, lr_size=24, max_out=32), policy=Policy(samples=4))
FP16_MIN_PSNR = 60.0
INT8_MAX_ABS = TOLERANCES["int8"]
INT8_MIN_PSNR = 40.0
PHASE_EXACT = 1e-5  # rad: float32 phase math against float32 phase math (measured 0)
PHASE_QUANTISED_MIN = 0.1  # rad: what quantising the phase math costs at least (measured 1.49)


class Exports:
    """Each fixture exported once for the module: fp32, fp16, int8 (and int8 with phases quantised)."""

    def __init__(self, root: Path, photos: Path):
        self.root, self.photos, self.dirs = root, photos, {}

    def get(self, arch: str, kind: str) -> Path:
        if (arch, kind) not in self.dirs:
            out = self.root / f"{arch}_{kind}"
            if kind == "fp32":
                from asisr.export.onnx import export_onnx
                from asisr.models import load

                self.dirs[arch, kind] = export_onnx(load(need(CHECKPOINTS[arch])), out)
            elif kind == "fp16":
                self.dirs[arch, kind] = convert_onnx(self.get(arch, "fp32"), out)
            elif kind == "int8":
                self.dirs[arch, kind] = quantize_onnx(self.get(arch, "fp32"), out, self.photos, INT8)
            elif kind == "int8_phase_quantised":  # the ablation: phase math left to the quantiser
                config = replace(INT8, policy=Policy(samples=4, measure=False, phase=False))
                self.dirs[arch, kind] = quantize_onnx(self.get(arch, "fp32"), out, self.photos, config)
        return self.dirs[arch, kind]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return make_photos(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="module")
def exports(tmp_path_factory, photos) -> Exports:
    need(SHARED / "fixtures")
    return Exports(tmp_path_factory.mktemp("family"), photos)


def _session(model: onnx.ModelProto | Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])


def _outputs(directory: Path, cases) -> list[np.ndarray]:
    backbone, upsampler = (_session(directory / f"{s}.onnx") for s in ("backbone", "upsampler"))
    outs = []
    for c in cases:
        features = backbone.run([contract.FEATURES], contract.backbone_feeds(c.lr, c.scale))[0]
        outs.append(upsampler.run([contract.RGB], contract.upsampler_feeds(features, c.scale, c.rows, c.cols))[0])
    return outs


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(-10 * np.log10(max(np.mean((a.astype(np.float64) - b) ** 2), 1e-30)))


def _phases(upsampler: Path, features: list[np.ndarray], cases) -> list[dict[str, np.ndarray]]:
    """The Cos/Sin arguments of an upsampler graph (by node name), run on the given features."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(upsampler)))
    info = {v.name: v for v in model.graph.value_info}
    args = {n.name: n.input[0] for n in model.graph.node if n.op_type in ("Sin", "Cos")}
    model.graph.output.extend(info[t] for t in sorted(set(args.values())))
    names = sorted(set(args.values()))
    sess = _session(model)
    out = []
    for f, c in zip(features, cases):
        values = dict(zip(names, sess.run(names, contract.upsampler_feeds(f, c.scale, c.rows, c.cols))))
        out.append({node: values[t] for node, t in args.items()})
    return out


def _types(model: onnx.ModelProto) -> dict[str, int]:
    vis = list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)
    types = {v.name: v.type.tensor_type.elem_type for v in vis}
    types.update({i.name: i.data_type for i in model.graph.initializer})
    return types


# ----------------------------------------------------------------------------------- accuracy


@pytest.mark.parametrize("arch", list(CHECKPOINTS))
def test_fp16_stays_within_tolerance_of_fp32(arch, exports, photos):
    cases = build_cases(images=photos)  # random and real inputs
    ref, out = (_outputs(exports.get(arch, k), cases) for k in ("fp32", "fp16"))
    assert all(o.dtype == np.float32 and o.shape == r.shape for o, r in zip(out, ref))
    worst = min(_psnr(o, r) for o, r in zip(out, ref))
    assert worst >= FP16_MIN_PSNR, f"{arch} fp16: {worst:.1f} dB from fp32"
    assert read_manifest(exports.get(arch, "fp16")).data["precision"] == "fp16"


@pytest.mark.parametrize("arch", list(CHECKPOINTS))
def test_int8_stays_within_tolerance_of_fp32(arch, exports, photos):
    cases = build_cases(images=photos, random_inputs=False)  # calibrated for photos
    ref, out = (_outputs(exports.get(arch, k), cases) for k in ("fp32", "int8"))
    worst_abs = max(float(np.abs(o - r).max()) for o, r in zip(out, ref))
    worst_psnr = min(_psnr(o, r) for o, r in zip(out, ref))
    assert worst_abs <= INT8_MAX_ABS and worst_psnr >= INT8_MIN_PSNR, (arch, worst_abs, worst_psnr)
    assert worst_abs > TOLERANCES["fp32"]  # it really is quantised
    manifest = read_manifest(exports.get(arch, "int8")).data
    assert manifest["precision"] == "int8"
    # the backbone runs in int8 (Meta-SR's upsampler may stay float by measurement: its projected
    # features and their dot product cost 0.4 / 0.27 dB alone on the trained model)
    ops = {n.op_type for n in onnx.load(str(exports.get(arch, "int8") / "backbone.onnx")).graph.node}
    assert "QuantizeLinear" in ops, arch


# ----------------------------------------------------------------------------------- the graphs


def _phase_set(directory: Path, kind: str) -> set[str]:
    data = read_manifest(directory).data
    return set(data["fp16"]["phase_nodes"]["upsampler"] if kind == "fp16"
               else data["quantization"]["float_nodes"]["phase"]["upsampler"])


@pytest.mark.parametrize("kind", ["fp16", "int8"])
def test_lte_phase_math_is_found_and_recorded(kind, exports, tmp_path):
    directory = exports.get("lte", kind)
    graph = onnx.load(str(directory / "upsampler.onnx"))
    phase = _phase_set(directory, kind)
    ops = {n.name: n.op_type for n in graph.graph.node}
    periodic = [n for n in graph.graph.node if n.op_type in ("Sin", "Cos")]
    assert len(periodic) == 8  # cos and sin for each of the 4 ensemble members
    assert {n.name for n in periodic} <= phase
    # the frequency product, the sums with the cell phase and the pi scaling: 4 x (Mul, Mul, Add, Add, Mul)
    arithmetic = [n for n in phase if ops[n] in ("Mul", "Add")]
    assert sorted(ops[n] for n in arithmetic) == ["Add"] * 8 + ["Mul"] * 12
    # Meta-SR has no phase math; neither has LIIF (its sin/cos are coordinate math)
    assert not _phase_set(exports.get("metasr", kind), kind)
    # what the export recorded is what the rule finds in the pre-processed fp32 graph
    pre = prepare_graph(exports.get("lte", "fp32") / "upsampler.onnx", tmp_path / "up.onnx", contract.FEATURES)
    assert set(phase_nodes(onnx.load(str(pre)), contract.FEATURES)) == phase


def test_lte_phase_math_is_float32_in_fp16(exports):
    directory = exports.get("lte", "fp16")
    graph = onnx.shape_inference.infer_shapes(onnx.load(str(directory / "upsampler.onnx")))
    types = _types(graph)
    phase = _phase_set(directory, "fp16")
    nodes = {n.name: n for n in graph.graph.node}
    for name in phase:
        for t in [t for t in nodes[name].input if t] + list(nodes[name].output):
            assert types[t] != TensorProto.FLOAT16, (name, t)  # float32 values (and int64 indices)
    # and the values reach it from the float32 features input without a float16 round trip
    producer = {o: n for n in graph.graph.node for o in n.output}
    todo, seen = [n.input[0] for n in graph.graph.node if n.op_type in ("Sin", "Cos")], set()
    while todo:
        node = producer.get(todo.pop())
        if node is not None and node.name not in seen:
            seen.add(node.name)
            assert not (node.op_type == "Cast" and node.attribute[0].i == TensorProto.FLOAT16), node.name
            todo.extend(node.input)
    assert contract.FEATURES in {t for n in seen for t in nodes[n].input}
    # while the MLP runs on float16 weights
    assert any(types[n.input[1]] == TensorProto.FLOAT16 for n in graph.graph.node if n.op_type == "Gemm")


@pytest.mark.parametrize("arch", list(CHECKPOINTS))
def test_float_math_never_reads_quantised_values(arch, exports):
    """No coordinate or phase node reads a dequantised tensor (ORT quantises a tensor for all
    its readers: LTE's bilinear weights and its features are shared with quantised image math)."""
    directory = exports.get(arch, "int8")
    q = read_manifest(directory).data["quantization"]["float_nodes"]
    for stage in ("backbone", "upsampler"):
        graph = onnx.load(str(directory / f"{stage}.onnx"))
        keep = set(q["coordinate"][stage]) | set(q["phase"][stage])
        dq = {n.output[0] for n in graph.graph.node if n.op_type == "DequantizeLinear"}
        touched = [n.name for n in graph.graph.node if n.name in keep and n.op_type != "Shape" and set(n.input) & dq]
        assert not touched, (arch, stage, touched)
        assert not keep & set(q["measured"][stage])
    if arch == "lte":
        graph = onnx.load(str(directory / "upsampler.onnx"))
        phase = set(q["phase"]["upsampler"])
        assert phase and all(n.op_type not in ("QuantizeLinear", "DequantizeLinear") for n in graph.graph.node
                             if n.name in phase)
        # the phase math reads the graph input itself, not a dequantised copy
        assert contract.FEATURES in {t for n in graph.graph.node if n.name in phase for t in n.input}


def test_lte_phases_equal_fp32_and_quantising_them_would_not(exports, photos):
    cases = build_cases(images=photos, random_inputs=False)
    fp32 = exports.get("lte", "fp32")
    backbone = _session(fp32 / "backbone.onnx")
    features = [backbone.run([contract.FEATURES], contract.backbone_feeds(c.lr, c.scale))[0] for c in cases]
    ref = _phases(fp32 / "upsampler.onnx", features, cases)

    def worst(kind: str) -> float:
        got = _phases(exports.get("lte", kind) / "upsampler.onnx", features, cases)
        assert all(g.keys() == r.keys() for g, r in zip(got, ref))
        return max(float(np.abs(g[k].astype(np.float64) - r[k]).max()) for g, r in zip(got, ref) for k in r)

    assert worst("fp16") <= PHASE_EXACT
    assert worst("int8") <= PHASE_EXACT
    assert worst("int8_phase_quantised") >= PHASE_QUANTISED_MIN  # the rule is what keeps them exact
