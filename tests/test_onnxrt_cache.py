"""ONNX Runtime's optimised graphs are cached per graph, ORT version and CPU, and give identical outputs."""

from __future__ import annotations

import numpy as np

from asisr.runtime.backends.onnxrt import SessionFromOnnx, cpu_fingerprint, open_onnx_pipeline
from asisr.runtime.manifest import read_manifest
from asisr.runtime.query import make_query


def _outputs(directory):
    lr = np.random.default_rng(0).random((1, 3, 19, 17), dtype=np.float32)
    scale, rows, cols = make_query(19, 17, 50, 40)
    pipeline = open_onnx_pipeline(directory, 1)
    with pipeline:
        out = pipeline.upsample(pipeline.features(lr, scale), scale, rows, cols)
    return out, [pipeline.backbone.session_loader.loaded_from, pipeline.upsampler.session_loader.loaded_from]


def test_second_session_loads_the_cached_optimised_graph_with_identical_outputs(tiny_liif_onnx, tmp_path,
                                                                                  monkeypatch):
    monkeypatch.setenv("ASISR_CACHE", str(tmp_path))
    first, sources = _outputs(tiny_liif_onnx)
    assert sources == [tiny_liif_onnx / "backbone.onnx", tiny_liif_onnx / "upsampler.onnx"]
    cached = sorted((tmp_path / "ort-optimized").glob("*.onnx"))
    assert len(cached) == 2 and all(cpu_fingerprint() in p.name for p in cached)
    second, sources = _outputs(tiny_liif_onnx)
    assert sorted(sources) == cached
    np.testing.assert_array_equal(first, second)


def test_a_damaged_entry_is_rebuilt_and_other_providers_are_not_cached(tiny_liif_onnx, tmp_path, monkeypatch):
    monkeypatch.setenv("ASISR_CACHE", str(tmp_path))
    sha = read_manifest(tiny_liif_onnx).data["graphs"]["upsampler"]["sha256"]
    loader = SessionFromOnnx(tiny_liif_onnx / "upsampler.onnx", threads=1, graph_sha256=sha)
    loader()
    entry = next((tmp_path / "ort-optimized").glob("*.onnx"))
    entry.write_bytes(b"truncated")
    loader()
    assert loader.loaded_from == tiny_liif_onnx / "upsampler.onnx" and entry.stat().st_size > 1000  # rebuilt
    loader()
    assert loader.loaded_from == entry
    plain = SessionFromOnnx(tiny_liif_onnx / "upsampler.onnx", threads=1, graph_sha256=sha, optimization="basic")
    plain()
    assert plain.loaded_from == tiny_liif_onnx / "upsampler.onnx"  # only the default full optimisation is cached
