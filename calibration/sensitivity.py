"""Exclusion by measurement: how much each quantised node costs, and which ones stay in float.

A quantised variant is scored on a few calibration windows (:class:`Scorer`): its output's Y
PSNR against the fp32 output, pooled over the windows (``noise_db``), and the *expected drop*
that noise causes on an image whose fp32 PSNR is ``reference_psnr_db``. The loss against the
windows' ground truth (``drop_db``) is reported too but not used: it depends on how flat the
windows happen to be. A graph being measured runs with the other stage in fp32.

Policy (:func:`choose_exclusions`):

1. coordinate and encoding math is never quantised, nor is phase math (the arguments of a
   Sin/Cos of image data, :func:`asisr.calibration.graph.phase_nodes`; ``Policy.phase``);
2. every candidate node is quantised alone; a node whose expected drop exceeds
   ``threshold_db`` stays in float;
3. the rest are quantised together; if the joint expected drop exceeds ``budget_db``, the
   fewest most sensitive remaining nodes (by solo drop) that bring it within budget are moved
   to float (found by doubling then bisecting the count; the joint drop grows with the count).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from asisr.calibration.graph import DATA_INPUTS, coordinate_nodes, phase_nodes, quantizable_ops, quantization_candidates
from asisr.calibration.quantizer import Target, quantize_graph
from asisr.calibration.reader import session
from asisr.calibration.samples import CalibSample
from asisr.evaluation.metrics import Y_WEIGHTS
from asisr.runtime import contract
from asisr.runtime.contract import STAGE_NAMES

BACKBONE, UPSAMPLER = contract.BACKBONE.name, contract.UPSAMPLER.name


@dataclass(frozen=True)
class Policy:
    # Drops are expected drops on an image whose fp32 PSNR is reference_psnr_db: 38 dB is a
    # strong model's Set5 x2, the hardest of the standard cases (the same noise costs less at
    # lower PSNR).
    reference_psnr_db: float = 38.0
    threshold_db: float = 0.01  # a node costing more than this alone stays in float
    budget_db: float = 0.06  # the joint expected drop allowed
    samples: int = 16  # calibration samples used for measuring (two per default scale)
    # False: only coordinate math stays float, nothing is measured node by node (quick exports;
    # the joint score is still measured and recorded).
    measure: bool = True
    # True: phase math (LTE's cos/sin arguments) stays float like coordinate math. False only
    # for measuring what quantising it costs (its nodes are then candidates like any other).
    phase: bool = True

    def to_dict(self) -> dict:
        return {"reference_psnr_db": self.reference_psnr_db, "threshold_db": self.threshold_db,
                "budget_db": self.budget_db, "samples": self.samples, "measure": self.measure,
                "phase": self.phase}


class Scorer:
    """Runs fp32 / quantised graph pairs on a few samples and scores them against fp32."""

    def __init__(self, graphs: dict[str, Path], samples: list[CalibSample], reference_psnr_db: float,
                 threads: int = 1):
        self.samples = samples
        self.threads = threads
        self.fp32 = {stage: session(graphs[stage], threads) for stage in STAGE_NAMES}
        self.features = [self.fp32[BACKBONE].run([contract.FEATURES], s.backbone_feed())[0] for s in samples]
        self.reference = [self._upsample(self.fp32[UPSAMPLER], f, s) for f, s in zip(self.features, samples)]
        self.base_sse = sum(_y_sse(r, s.hr) for r, s in zip(self.reference, samples))
        self.pixels = sum(s.hr.shape[0] * s.hr.shape[1] for s in samples)
        self.reference_psnr = reference_psnr_db

    @staticmethod
    def _upsample(sess, feat: np.ndarray, s: CalibSample) -> np.ndarray:
        out = sess.run([contract.RGB], s.upsampler_feed(feat))[0]
        return out[0].transpose(1, 2, 0)

    def outputs(self, backbone: Path | None = None, upsampler: Path | None = None) -> list[np.ndarray]:
        """Outputs with the given quantised graphs (None: the fp32 one)."""
        b = session(backbone, self.threads) if backbone else None
        u = session(upsampler, self.threads) if upsampler else self.fp32[UPSAMPLER]
        outs = []
        for feat, s in zip(self.features, self.samples):
            if b is not None:
                feat = b.run([contract.FEATURES], s.backbone_feed())[0]
            outs.append(self._upsample(u, feat, s))
        return outs

    def score(self, backbone: Path | None = None, upsampler: Path | None = None) -> dict[str, float]:
        """How a variant's output differs from fp32 over all measuring windows (Y, pooled).

        ``noise_db``: PSNR of the output against the fp32 output, the quantisation noise;
        ``drop_db``: the PSNR loss against the ground truth on these windows;
        ``expected_drop_db``: the loss that noise causes on an image whose fp32 PSNR is the
        policy's reference (``10 log10(1 + 10^((ref - noise) / 10))``): unlike ``drop_db`` it
        does not depend on how flat or busy the calibration windows happen to be.
        """
        outs = self.outputs(backbone, upsampler)
        sse = sum(_y_sse(o, s.hr) for o, s in zip(outs, self.samples))
        noise = sum(_y_sse(o, None, r) for o, r in zip(outs, self.reference))
        noise_db = math.inf if noise == 0 else -10 * math.log10(noise / self.pixels)
        return {"noise_db": noise_db, "drop_db": 10 * math.log10(sse / self.base_sse),
                "expected_drop_db": expected_drop(noise_db, self.reference_psnr)}


def expected_drop(noise_db: float, reference_psnr_db: float) -> float:
    """PSNR loss of an image at ``reference_psnr_db`` from independent noise at ``noise_db``."""
    return 10 * math.log10(1 + 10 ** ((reference_psnr_db - noise_db) / 10))


def _y_sse(sr: np.ndarray, hr: np.ndarray | None, ref: np.ndarray | None = None) -> float:
    """Sum of squared Y differences of ``sr`` (clamped) from the uint8 ``hr`` or a float ``ref``."""
    other = hr.astype(np.float64) / 255.0 if hr is not None else np.clip(ref.astype(np.float64), 0, 1)
    d = (np.clip(sr.astype(np.float64), 0, 1) - other) @ (Y_WEIGHTS / 256.0)
    return float(np.sum(d * d))


@dataclass
class Exclusions:
    coordinate: dict[str, list[str]] = field(default_factory=dict)  # always float
    measured: dict[str, list[str]] = field(default_factory=dict)  # moved to float by the policy
    report: list[dict] = field(default_factory=list)  # one row per candidate node
    rounds: list[dict] = field(default_factory=list)  # joint drop after each policy round
    phase: dict[str, list[str]] = field(default_factory=dict)  # always float (Policy.phase)

    def excluded(self, stage: str) -> list[str]:
        return self.coordinate.get(stage, []) + self.phase.get(stage, []) + self.measured.get(stage, [])

    def to_dict(self) -> dict:
        return {"coordinate": self.coordinate, "phase": self.phase, "measured": self.measured,
                "report": self.report, "rounds": self.rounds}

    @classmethod
    def from_dict(cls, d: dict) -> "Exclusions":
        return cls(d["coordinate"], d["measured"], d["report"], d["rounds"], d.get("phase", {}))


def _rounded(score: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 5) for k, v in score.items()}


def _has_quantize(path: Path) -> bool:
    return any(n.op_type == "QuantizeLinear" for n in onnx.load(str(path)).graph.node)


def choose_exclusions(graphs: dict[str, Path], ranges: dict, target: Target, samples: list[CalibSample],
                      policy: Policy = Policy(), threads: int = 1,
                      progress: Callable[[str], None] | None = None) -> Exclusions:
    """Measure every candidate node alone, then apply the policy (see the module docstring)."""
    say = progress or (lambda _msg: None)
    scorer = Scorer(graphs, samples[: policy.samples], policy.reference_psnr_db, threads)
    ex = Exclusions()
    models = {stage: onnx.load(str(graphs[stage])) for stage in STAGE_NAMES}
    ops = {stage: {n.name: n.op_type for n in models[stage].graph.node} for stage in STAGE_NAMES}
    with tempfile.TemporaryDirectory(prefix="asisr-sens-") as tmp:
        tmp = Path(tmp)

        def variant(stage: str, name: str, **kw) -> Path:
            out = tmp / f"{stage}-{name}.onnx"
            quantize_graph(graphs[stage], out, ranges[stage], target, **kw)
            return out

        for stage in STAGE_NAMES:
            ex.coordinate[stage] = coordinate_nodes(models[stage], DATA_INPUTS[stage])
            ex.phase[stage] = phase_nodes(models[stage], DATA_INPUTS[stage]) if policy.phase else []
            candidates = [n for n in quantization_candidates(models[stage], DATA_INPUTS[stage], quantizable_ops())
                          if n not in set(ex.phase[stage])]
            say(f"{stage}: {len(candidates)} candidate nodes, {len(ex.coordinate[stage])} coordinate and "
                f"{len(ex.phase[stage])} phase nodes kept float")
            for name in candidates if policy.measure else []:
                path = variant(stage, "solo", nodes_to_quantize=[name])
                row = {"graph": stage, "node": name, "op": ops[stage][name]}
                if _has_quantize(path):
                    row.update(_rounded(scorer.score(**{stage: path})), quantized=True)
                else:  # e.g. an op ORT only quantises after a quantised producer
                    row.update(noise_db=None, drop_db=0.0, expected_drop_db=0.0, quantized=False)
                ex.report.append(row)
        ranked = sorted((r for r in ex.report if r["quantized"]), key=lambda r: -r["expected_drop_db"])
        measured = {stage: [] for stage in STAGE_NAMES}
        for r in ranked:
            if r["expected_drop_db"] > policy.threshold_db:
                measured[r["graph"]].append(r["node"])
        rest = [r for r in ranked if r["node"] not in measured[r["graph"]]]

        tried: dict[int, dict] = {}

        def within(k: int) -> bool:
            """Quantise all but the first ``k`` of ``rest`` (and the excluded): within budget?"""
            if k not in tried:
                excl = {stage: measured[stage] + [r["node"] for r in rest[:k] if r["graph"] == stage]
                        for stage in STAGE_NAMES}
                paths = {stage: variant(stage, f"joint{k}",
                                        nodes_to_exclude=ex.coordinate[stage] + ex.phase[stage] + excl[stage])
                         for stage in STAGE_NAMES}
                tried[k] = {"excluded": sum(map(len, excl.values())), **_rounded(scorer.score(**paths))}
                ex.rounds.append(tried[k])
                say(f"joint: {tried[k]}")
            return tried[k]["expected_drop_db"] <= policy.budget_db

        # The fewest extra exclusions (most sensitive first) that meet the budget: grow, then bisect
        # (all of them when even that is over budget).
        lo, hi = -1, 0
        while not within(hi) and hi < len(rest):
            lo, hi = hi, min(max(1, 2 * hi), len(rest))
        while hi - lo > 1 and within(hi):
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if within(mid) else (mid, hi)
        for r in rest[:hi]:
            measured[r["graph"]].append(r["node"])
        ex.rounds.append(dict(tried[hi], chosen=True))  # the report ends with what is exported
        ex.measured = measured
    for r in ex.report:
        r["excluded"] = r["node"] in measured[r["graph"]]
    return ex
