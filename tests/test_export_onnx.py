"""ONNX export: valid graphs, a truthful manifest, parity at shapes other than the export shape."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from asisr.errors import UserError
from asisr.evaluation.parity import build_cases, check_parity
from asisr.runtime.manifest import read_manifest
from asisr.digest import sha256_file
from asisr.models import load
from asisr.runtime.backends.onnxrt import open_onnx_pipeline


def test_graphs_are_valid_and_dynamic(tiny_liif_onnx):
    for stage in ("backbone", "upsampler"):
        model = onnx.load(str(tiny_liif_onnx / f"{stage}.onnx"))
        onnx.checker.check_model(model, full_check=True)
        assert model.opset_import[0].version == 18
        for value in model.graph.input:
            dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
            assert dims[0] == "batch"
    inputs = {i.name for i in onnx.load(str(tiny_liif_onnx / "upsampler.onnx")).graph.input}
    assert inputs == {"features", "scale", "rows", "cols"}


def _consumed(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name some node reads, subgraphs (If, Loop) included."""
    names = set()
    for node in graph.node:
        names.update(node.input)
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                names |= _consumed(sub)
    return names


def _run_stage(directory, stage: str, feeds: dict) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(directory / f"{stage}.onnx"), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


# Which stage reads the scale: LIIF's encoder is scale-agnostic and its MLP gets the cell size;
# EQSR's backbone is modulated by the scale, and the light upsampler's offsets come from the
# query positions alone (its "lr" offset mode).
READS_SCALE = {"liif": {"backbone": False, "upsampler": True}, "eqsr_light": {"backbone": True, "upsampler": False}}


@pytest.mark.parametrize("family", sorted(READS_SCALE))
def test_the_scale_is_data_in_every_stage_that_reads_it(family, tiny_liif_onnx, tiny_eqsr):
    """Both graphs take the manifest's inputs, scale included; a stage that reads the scale reads the
    input, never a constant: another scale at the same query changes its output, while the export
    was traced at x2, and a stage that does not read it is unchanged."""
    from asisr.runtime.query import make_query

    reads = READS_SCALE[family]
    directory = tiny_liif_onnx if family == "liif" else tiny_eqsr("light")[1]
    manifest = read_manifest(directory).data
    for stage in ("backbone", "upsampler"):
        graph = onnx.load(str(directory / f"{stage}.onnx")).graph
        declared = [i["name"] for i in manifest["graphs"][stage]["inputs"]]
        assert [i.name for i in graph.input] == declared, stage
        assert "scale" in declared, stage
        assert ("scale" in _consumed(graph)) == reads[stage], stage
    lr = np.random.default_rng(1).random((1, 3, 10, 12), dtype=np.float32)
    s2, rows, cols = make_query(10, 12, 20, 24)  # x2: the scale the export was traced at
    s3 = np.full_like(s2, 3.0)
    f2 = _run_stage(directory, "backbone", {"lr": lr, "scale": s2})
    f3 = _run_stage(directory, "backbone", {"lr": lr, "scale": s3})
    assert (np.abs(f2 - f3).max() > 1e-4) == reads["backbone"]
    up2 = _run_stage(directory, "upsampler", {"features": f2, "scale": s2, "rows": rows, "cols": cols})
    up3 = _run_stage(directory, "upsampler", {"features": f2, "scale": s3, "rows": rows, "cols": cols})
    assert np.isfinite(up2).all() and np.isfinite(up3).all()
    assert (np.abs(up2 - up3).max() > 1e-4) == reads["upsampler"]  # same features and query points


@pytest.mark.parametrize("which", ["light", "hat"])
def test_eqsr_parity_with_the_foundation_checker(which, tiny_eqsr):
    """Both EQSR configurations through the same checker: 3 shapes x 4 scales (one asymmetric) + a mixed batch."""
    model, directory = tiny_eqsr(which)
    report = check_parity(open_onnx_pipeline(directory, 2, None), model.reference(), build_cases())
    assert report.passed, report.table()
    assert len(report.results) == 13


@pytest.mark.slow
def test_upstream_eqsr_checkpoint_parity(upstream_eqsr):
    ckpt, directory = upstream_eqsr
    model = load(ckpt)
    report = check_parity(open_onnx_pipeline(directory, 2, None), model.reference(), build_cases())
    assert report.passed, report.table()


def test_export_is_byte_deterministic(tiny_liif_ckpt, tiny_liif_onnx, tmp_path):
    """Caches keyed on graph sha256 (calibration ranges, TensorRT engines) need identical bytes for one model.

    The exporter's per-node trace notes embed Python object addresses, which differ between
    processes; they are stripped, and a second export in a fresh process gives the same bytes
    as the session's export of the same checkpoint.
    """
    import subprocess
    import sys

    for graph in ("backbone.onnx", "upsampler.onnx"):
        assert all(len(n.metadata_props) == 0 for n in onnx.load(str(tiny_liif_onnx / graph)).graph.node)
    code = ("import sys; from asisr.models import load; from asisr.export.onnx import export_onnx; "
            "export_onnx(load(sys.argv[1]), sys.argv[2])")
    subprocess.run([sys.executable, "-c", code, str(tiny_liif_ckpt), str(tmp_path / "b")], check=True)
    for graph in ("backbone.onnx", "upsampler.onnx"):
        assert sha256_file(tiny_liif_onnx / graph) == sha256_file(tmp_path / "b" / graph), graph


def test_export_cache_is_keyed_on_the_model_code(tiny_liif_ckpt, tmp_path, monkeypatch):
    """An upgrade or local edit that changes how a model traces must not reuse an old graph."""
    from asisr import sources

    monkeypatch.setenv("ASISR_CACHE", str(tmp_path / "cache"))
    first = sources.export_cached(tiny_liif_ckpt)
    assert sources.export_cached(tiny_liif_ckpt) == first  # a hit
    monkeypatch.setattr(sources, "_graph_code_digest", lambda: "edited")
    second = sources.export_cached(tiny_liif_ckpt)
    assert second != first and (second / "manifest.json").is_file()
