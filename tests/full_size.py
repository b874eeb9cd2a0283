"""Full-size official checkpoint layouts with random values (their weights cannot be downloaded), run on both backends.

The layouts come from ``shared/fixtures/official_key_manifests.json`` (the official classes instantiated
with their training configs); the values are drawn here, scaled so a deep body keeps its activations in
range (a weight's variance 1 / (3 fan_in), that of PyTorch's default init), so outputs vary over the image
and parity checks can fail.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from tests.shared_data import SHARED, need

MANIFESTS = SHARED / "fixtures" / "official_key_manifests.json"
EXPERT_POOLS = ("weight_pool", "weight_compress", "weight_expand")  # ArbSR: (experts, out, in, k, k)


def official_layout(name: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the full-size official checkpoint ``name`` (an entry of the manifests file)."""
    spec = json.loads(need(MANIFESTS).read_text())[name]
    return {k: tuple(shape) for k, shape in spec["state_dict"].items()}


def _random_tensor(key: str, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
        return torch.tensor(0)
    if leaf == "running_var" or (leaf == "weight" and len(shape) == 1):  # BatchNorm scales
        return 0.75 + 0.5 * torch.rand(shape, generator=gen)
    if len(shape) <= 1:  # biases, BatchNorm means
        return 0.1 * torch.randn(shape, generator=gen)
    fan_in = math.prod(shape[2:] if leaf in EXPERT_POOLS else shape[1:])
    return torch.randn(shape, generator=gen) / math.sqrt(3 * fan_in)


def write_random_official(name: str, path: Path, seed: int = 0) -> Path:
    """``torch.save`` of a bare state dict with exactly the keys and shapes of official layout ``name``."""
    gen = torch.Generator().manual_seed(seed)
    torch.save({k: _random_tensor(k, shape, gen) for k, shape in official_layout(name).items()}, path)
    return path


def stage_outputs(pipeline, lr: np.ndarray, query: tuple) -> tuple[np.ndarray, np.ndarray]:
    """(features, rgb) of ``pipeline`` for ``lr`` and ``query`` = (scale, rows, cols), unclipped."""
    scale, rows, cols = query
    features = pipeline.features(lr, scale)
    return features, pipeline.upsample(features, scale, rows, cols)


def assert_backends_agree(checkpoint: Path, lr: np.ndarray, queries: list[tuple], rgb_tol: float) -> None:
    """The checkpoint run on PyTorch and, exported through the real intake path (``asisr.sources``), on ONNX
    Runtime: features equal to float32 accumulation order (relative 1e-5), outputs to ``rgb_tol``, and the
    outputs vary, so a wrong graph could not pass."""
    from asisr.sources import open_pipeline

    pt, ort = open_pipeline(checkpoint, "torch", threads=1), open_pipeline(checkpoint, "onnxruntime", threads=1)
    with pt, ort:
        for query in queries:
            (feat_pt, rgb_pt), (feat_ort, rgb_ort) = stage_outputs(pt, lr, query), stage_outputs(ort, lr, query)
            assert rgb_pt.shape == (1, 3, query[1].shape[1], query[2].shape[1])
            assert np.abs(feat_ort - feat_pt).max() <= 1e-5 * np.abs(feat_pt).max()
            assert np.abs(rgb_ort - rgb_pt).max() <= rgb_tol
            assert rgb_pt.std() > 100 * rgb_tol
