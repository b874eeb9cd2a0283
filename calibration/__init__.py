"""Calibration and precision support for INT8 / FP16 exports.

* :mod:`~asisr.calibration.samples`: protocol LR crops of real photos at a spread of scales;
* :mod:`~asisr.calibration.reader`: ONNX Runtime ``CalibrationDataReader`` s for both graphs;
* :mod:`~asisr.calibration.graph`: which nodes are image math, coordinate math and phase math
  (what stays float), and the constants and tensors split between them;
* :mod:`~asisr.calibration.quantizer`: ranges and QDQ quantisation per target (ORT's API);
* :mod:`~asisr.calibration.sensitivity`: the per-node report and the exclusion policy;
* :mod:`~asisr.calibration.cache`: calibration results reused across exports.

The exports themselves are :func:`asisr.export.quantize.export_int8` and
:func:`asisr.export.fp16.export_fp16`.
"""

from asisr.calibration.reader import BackboneReader, UpsamplerReader
from asisr.calibration.samples import CalibrationSettings, CalibSample, build_calibration_set

__all__ = ["BackboneReader", "UpsamplerReader", "CalibrationSettings", "CalibSample", "build_calibration_set"]
