"""ONNX Runtime calibration data readers for the two graphs.

The backbone reader feeds the LR crops and their scales; the upsampler reader feeds the
features the fp32 backbone computes from those crops (through ONNX Runtime, as deployed), with
the same scales and the query windows. Both support ``set_range`` so ranges can be collected in
chunks (bounded memory for the upsampler's large intermediate tensors).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from asisr.calibration.samples import CalibSample
from asisr.runtime import contract


class _ListReader(CalibrationDataReader):
    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self._feeds = feeds
        self._start, self._end = 0, len(feeds)
        self._pos = 0
        self.calls = 0  # how many feeds were handed out (tests check a cache hit reads none)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._start + self._pos >= self._end:
            return None
        feed = self._feeds[self._start + self._pos]
        self._pos += 1
        self.calls += 1
        return feed

    def __len__(self) -> int:
        return len(self._feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._start, self._end = start_index, min(end_index, len(self._feeds))
        self._pos = 0

    def rewind(self) -> None:
        self.set_range(0, len(self._feeds))


class BackboneReader(_ListReader):
    """Backbone feeds of the calibration samples."""

    def __init__(self, samples: list[CalibSample]):
        super().__init__([s.backbone_feed() for s in samples])


def session(path: str | Path, threads: int = 1):
    """A CPU session with one thread per call: calibration must not depend on the machine."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def backbone_features(backbone: str | Path, samples: list[CalibSample], threads: int = 1) -> list[np.ndarray]:
    """The fp32 backbone's features for every sample."""
    sess = session(backbone, threads)
    return [sess.run([contract.FEATURES], s.backbone_feed())[0] for s in samples]


class UpsamplerReader(_ListReader):
    """Upsampler feeds of the calibration samples, features from the fp32 backbone graph."""

    def __init__(self, samples: list[CalibSample], features: list[np.ndarray]):
        super().__init__([s.upsampler_feed(f) for s, f in zip(samples, features)])

    @classmethod
    def from_backbone(cls, backbone: str | Path, samples: list[CalibSample], threads: int = 1) -> "UpsamplerReader":
        return cls(samples, backbone_features(backbone, samples, threads))
