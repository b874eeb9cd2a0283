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


def test_profiled_sessions_write_per_node_kernel_times_with_shapes(tiny_liif_onnx, tmp_path, monkeypatch):
    """``profile_prefix`` (benchmarks/liif_roofline.py) profiles both stages, cached graphs included,
    and the profile records each node's shapes, which is what the benchmark counts FLOPs from."""
    import json

    monkeypatch.setenv("ASISR_CACHE", str(tmp_path / "cache"))
    _outputs(tiny_liif_onnx)  # fills the optimised-graph cache: the profiled run below loads from it
    lr = np.random.default_rng(0).random((1, 3, 19, 17), dtype=np.float32)
    scale, rows, cols = make_query(19, 17, 50, 40)
    pipeline = open_onnx_pipeline(tiny_liif_onnx, 1, profile_prefix=str(tmp_path / "p"))
    with pipeline:
        pipeline.upsample(pipeline.features(lr, scale), scale, rows, cols)
        files = [pipeline.backbone.session.end_profiling(), pipeline.upsampler.session.end_profiling()]
    loaded = {r.session_loader.loaded_from.parent.name for r in (pipeline.backbone, pipeline.upsampler)}
    assert loaded == {"ort-optimized"}
    names = [p.split("/")[-1] for p in files]
    assert names[0].startswith("p_backbone_") and names[1].startswith("p_upsampler_")
    events = json.loads(open(files[1]).read())
    gemms = [e["args"] for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")
             and e["args"]["op_name"] in ("Gemm", "FusedGemm")]
    # the MLP's products have one row per query; the per-image cell term is a single row
    assert {a["input_type_shape"][0]["float"][0] for a in gemms} == {1, 50 * 40}
    assert open_onnx_pipeline(tiny_liif_onnx, 1).upsampler.session_loader.profile_prefix is None  # off by default
