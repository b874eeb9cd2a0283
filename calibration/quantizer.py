"""INT8 quantisation of one graph with ONNX Runtime's static QDQ quantiser.

Ranges are collected once per graph (:func:`collect_ranges`, ORT's own calibrators) and then
handed to ``quantize_static`` through its calibration cache file, so every quantised variant
(the final graph, the one-node graphs of the sensitivity report) uses the same ranges, and a
cached set of ranges reproduces a graph byte for byte without any calibration data.

Targets:

* ``onnxruntime``: activations QUInt8 asymmetric, weights QInt8 symmetric per channel with 7-bit
  range (``reduce_range``), int32 biases (ORT's CPU kernels fuse these QDQ groups into QLinear
  ops). The 7-bit weights keep the graph exact on every x86 CPU: without VNNI, ORT's U8S8
  kernels sum pairs of u8*s8 products in int16 (``vpmaddubsw``), and full-range weights
  overflow it (255 * 127 * 2 > 32767) - a silent, CPU-dependent accuracy loss.
* ``onnxruntime-vnni``: the same with full 8-bit weights, for deployments known to run only on
  CPUs with VNNI (or ARM): slightly more accurate there, wrong on older x86 CPUs.
* ``tensorrt``: activations and weights QInt8 symmetric (zero point 0), weights per output
  channel, float biases (TensorRT folds them itself): TensorRT's explicit-quantisation rules.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType
from onnxruntime.quantization.calibrate import TensorsData, create_calibrator, save_tensors_data

from asisr.calibration.graph import ensure_node_names, quantizable_ops, unshare_activations, unshare_constants
from asisr.errors import UserError

METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
           "percentile": CalibrationMethod.Percentile}


@dataclass(frozen=True)
class Target:
    name: str
    activation_type: QuantType
    weight_type: QuantType
    activation_symmetric: bool
    quantize_bias: bool
    per_channel: bool = True
    reduce_range: bool = False

    def describe(self) -> dict:
        return {"target": self.name, "format": "QDQ", "activations": f"{self.activation_type.name} "
                f"{'symmetric' if self.activation_symmetric else 'asymmetric'} per tensor",
                "weights": f"{self.weight_type.name} symmetric {'per channel' if self.per_channel else 'per tensor'}"
                           f"{', 7-bit range' if self.reduce_range else ''}",
                "bias": "int32" if self.quantize_bias else "float32"}


TARGETS = {
    "onnxruntime": Target("onnxruntime", QuantType.QUInt8, QuantType.QInt8, activation_symmetric=False,
                          quantize_bias=True, reduce_range=True),
    "onnxruntime-vnni": Target("onnxruntime-vnni", QuantType.QUInt8, QuantType.QInt8, activation_symmetric=False,
                               quantize_bias=True),
    "tensorrt": Target("tensorrt", QuantType.QInt8, QuantType.QInt8, activation_symmetric=True,
                       quantize_bias=False),
}


def method_of(name: str) -> CalibrationMethod:
    try:
        return METHODS[name]
    except KeyError:
        raise UserError(f"unknown calibration method {name!r}; choose one of: {', '.join(METHODS)}") from None


def target_of(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise UserError(f"unknown INT8 target {name!r}; choose one of: {', '.join(TARGETS)}") from None


def prepare_graph(src: str | Path, dst: str | Path, data_input: str) -> Path:
    """ORT's quantisation pre-processing (shape inference + basic optimisation), named nodes,
    constants and tensors unshared between the float math (coordinates, phases) and the rest of
    the image math (:func:`unshare_constants`, :func:`unshare_activations`).

    ORT's symbolic shape inference cannot follow the upsampler's index arithmetic; ONNX shape
    inference then does the job alone.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    dst = Path(dst)
    try:
        quant_pre_process(str(src), str(dst))
    except Exception:  # noqa: BLE001 - ORT raises plain exceptions from its symbolic shape helper
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    model = onnx.load(str(dst))
    onnx.save(unshare_activations(unshare_constants(ensure_node_names(model), data_input), data_input), str(dst))
    return dst


def collect_ranges(graph: str | Path, reader: CalibrationDataReader, method: CalibrationMethod,
                   chunk: int = 4) -> TensorsData:
    """Tensor ranges of ``graph`` over everything ``reader`` yields, ``chunk`` feeds at a time."""
    options = {"symmetric": False} if method != CalibrationMethod.MinMax else {}
    with tempfile.TemporaryDirectory(prefix="asisr-calib-") as tmp:
        calibrator = create_calibrator(Path(graph), sorted(quantizable_ops()),
                                       augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=method, providers=["CPUExecutionProvider"],
                                       extra_options=options)
        n = len(reader)
        for start in range(0, n, chunk):  # bounded memory: the calibrators keep whole tensors per feed
            reader.set_range(start, start + chunk)
            calibrator.collect_data(reader)
        return calibrator.compute_data()


def quantize_graph(graph: str | Path, out: str | Path, ranges: TensorsData, target: Target,
                   nodes_to_exclude: list[str] | None = None, nodes_to_quantize: list[str] | None = None) -> Path:
    """Quantise ``graph`` (pre-processed) to ``out`` with ``ranges``; no calibration data is read."""
    from onnxruntime.quantization import quantize_static

    extra = {"ActivationSymmetric": target.activation_symmetric, "WeightSymmetric": True,
             "QuantizeBias": target.quantize_bias}
    with tempfile.TemporaryDirectory(prefix="asisr-quant-") as tmp:
        cache = Path(tmp) / "ranges.json"
        save_tensors_data(ranges, cache)
        logger = logging.getLogger()
        level = logger.level
        logger.setLevel(logging.ERROR)  # ORT warns about pre-processing metadata it cannot see
        try:
            quantize_static(str(graph), str(out), calibration_data_reader=None, quant_format=QuantFormat.QDQ,
                            per_channel=target.per_channel, reduce_range=target.reduce_range,
                            activation_type=target.activation_type, weight_type=target.weight_type,
                            nodes_to_exclude=list(nodes_to_exclude or []),
                            nodes_to_quantize=list(nodes_to_quantize or []),
                            calibrate_method=ranges.calibration_method, extra_options=extra,
                            calibration_cache_path=str(cache))
        finally:
            logger.setLevel(level)
    return Path(out)
