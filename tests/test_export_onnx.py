"""ONNX export: valid graphs, a truthful manifest, parity at shapes other than the export shape."""

from __future__ import annotations

import json

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
        # no op may hold the scale as a constant: the scale is a graph input of both stages
    inputs = {i.name for i in onnx.load(str(tiny_liif_onnx / "upsampler.onnx")).graph.input}
    assert inputs == {"features", "scale", "rows", "cols"}


def test_manifest_records_what_was_exported(tiny_liif_onnx, tiny_liif_ckpt):
    m = read_manifest(tiny_liif_onnx).data
    assert m["model"]["name"] == "liif"
    assert m["model"]["checkpoint_sha256"] == sha256_file(tiny_liif_ckpt)
    assert m["opset"] == 18
    assert m["graphs"]["upsampler"]["sha256"] == sha256_file(tiny_liif_onnx / "upsampler.onnx")
    assert m["graphs"]["upsampler"]["inputs"][2] == {"name": "rows", "dtype": "float32", "shape": ["batch", "out_height"]}
    assert m["scale_range"] == [1.0, 12.0]


def test_parity_passes_at_other_shapes(tiny_liif_onnx, tiny_liif_ckpt):
    report = check_parity(open_onnx_pipeline(tiny_liif_onnx, 2, None), load(tiny_liif_ckpt).reference(), build_cases())
    assert report.passed, report.table()
    assert len(report.results) >= 13
    assert max(r.stats.max_abs for r in report.results) < 1e-5


def test_queries_on_exact_lr_centres_stay_finite(tiny_liif_onnx, tiny_liif_ckpt):
    """Regression: x3 puts border queries exactly on LR centres, where all ensemble areas are 0.

    The exporter's optimizer once folded the ``+ 1e-9`` away and the graph returned 0/0 = NaN.
    """
    import numpy as np

    from asisr.runtime.query import make_query

    pipeline = open_onnx_pipeline(tiny_liif_onnx, 2, None)
    lr = np.random.default_rng(0).random((1, 3, 20, 24), dtype=np.float32)
    scale, rows, cols = make_query(20, 24, 60, 72)
    with pipeline:
        out = pipeline.upsample(pipeline.features(lr, scale), scale, rows, cols)
    with torch.no_grad():
        ref = load(tiny_liif_ckpt).reference()(*(torch.from_numpy(a) for a in (lr, scale, rows, cols))).numpy()
    assert np.isfinite(out).all()
    assert np.abs(out - ref).max() < 1e-5


def test_parity_catches_a_graph_with_a_baked_shape(tiny_liif_onnx, tiny_liif_ckpt, tmp_path, monkeypatch):
    """A hand-written export that turns a size into a Python int (legacy tracer) must fail parity."""
    import shutil

    import asisr.models.liif as liif

    broken = tmp_path / "broken"
    shutil.copytree(tiny_liif_onnx, broken)
    model = load(tiny_liif_ckpt)
    original = liif.cell_index
    monkeypatch.setattr(liif, "cell_index", lambda pos, size, eps=0.0: original(pos, int(size), eps))
    feat = torch.rand(1, 16, 19, 23)
    args = (feat, torch.tensor([[2.0, 2.0]]), torch.rand(1, 38) * 19, torch.rand(1, 46) * 23)
    torch.onnx.export(model.upsampler, args, str(broken / "upsampler.onnx"), dynamo=False, opset_version=17,
                      input_names=["features", "scale", "rows", "cols"], output_names=["rgb"],
                      dynamic_axes={"features": {0: "b", 2: "h", 3: "w"}, "scale": {0: "b"},
                                    "rows": {0: "b", 1: "H"}, "cols": {0: "b", 1: "W"}})
    monkeypatch.setattr(liif, "cell_index", original)
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["graphs"]["upsampler"]["sha256"] = sha256_file(broken / "upsampler.onnx")
    (broken / "manifest.json").write_text(json.dumps(manifest))
    report = check_parity(open_onnx_pipeline(broken, 2, None), model.reference(), build_cases())
    assert not report.passed
    assert sum(not r.passed for r in report.results) >= 8, report.table()


def test_tampered_graph_is_refused(tiny_liif_onnx, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_liif_onnx, copy)
    with open(copy / "backbone.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(UserError, match="manifest does not match its graphs: backbone.onnx"):
        read_manifest(copy)


def test_export_refuses_existing_output(tiny_liif_ckpt, tmp_path):
    from asisr.export.onnx import export_onnx

    (tmp_path / "out").mkdir()
    with pytest.raises(UserError, match="output exists"):
        export_onnx(load(tiny_liif_ckpt), tmp_path / "out")
    with pytest.raises(UserError, match="opset 20 is not supported"):
        export_onnx(load(tiny_liif_ckpt), tmp_path / "new", opset=20)


@pytest.mark.parametrize("name, kwargs", [
    ("eqsr_light", {"n_feats": 16, "n_groups": 2, "n_resblocks": 1, "upsampler_width": 16}),
    ("eqsr_hat", {"embed_dim": 24, "depths": (2, 2), "num_heads": (2, 2), "window_size": 8, "upsampler_width": 32}),
])
def test_eqsr_parity_with_the_foundation_checker(name, kwargs, tmp_path):
    """Both EQSR configurations through the same checker: 3 shapes x 4 scales (one asymmetric) + a mixed batch."""
    from asisr.export.onnx import export_onnx
    from asisr.models import create

    torch.manual_seed(0)
    model = create(name, **kwargs).eval()
    if name == "eqsr_light":
        with torch.no_grad():  # a trained model's modulation is non-zero; LayerScale starts at 0
            for group in model.backbone.groups:
                group.gamma.normal_(0.0, 0.5)
    directory = export_onnx(model, tmp_path / name)
    report = check_parity(open_onnx_pipeline(directory, 2, None), model.reference(), build_cases())
    assert report.passed, report.table()
    assert len(report.results) == 13


def test_upstream_eqsr_checkpoint_parity(tmp_path):
    from asisr.export.onnx import export_onnx
    from tests.conftest import SHARED, need

    ckpt = need(SHARED / "fixtures" / "eqsr_upstream_small" / "eqsr_upstream_small.pth")
    model = load(ckpt)
    report = check_parity(open_onnx_pipeline(export_onnx(model, tmp_path / "up"), 2, None), model.reference(),
                          build_cases())
    assert report.passed, report.table()


def test_export_is_byte_deterministic(tmp_path):
    """Caches keyed on graph sha256 (calibration ranges, TensorRT engines) need identical bytes for one model.

    The exporter's per-node trace notes embed Python object addresses, which differ between
    processes; they are stripped, and a second export in a fresh process gives the same bytes.
    """
    import subprocess
    import sys

    from asisr.export.onnx import export_onnx
    from asisr.models import create, save

    torch.manual_seed(0)
    model = create("eqsr_light", n_feats=8, n_groups=1, n_resblocks=1, upsampler_width=8)
    ckpt = save(model, tmp_path / "m.pt")
    export_onnx(load(ckpt), tmp_path / "a")
    for graph in ("backbone.onnx", "upsampler.onnx"):
        assert all(len(n.metadata_props) == 0 for n in onnx.load(str(tmp_path / "a" / graph)).graph.node)
    code = ("import sys; from asisr.models import load; from asisr.export.onnx import export_onnx; "
            "export_onnx(load(sys.argv[1]), sys.argv[2])")
    subprocess.run([sys.executable, "-c", code, str(ckpt), str(tmp_path / "b")], check=True)
    for graph in ("backbone.onnx", "upsampler.onnx"):
        assert sha256_file(tmp_path / "a" / graph) == sha256_file(tmp_path / "b" / graph), graph


def test_export_cache_is_keyed_on_the_model_code(tiny_liif_ckpt, tmp_path, monkeypatch):
    """An upgrade or local edit that changes how a model traces must not reuse an old graph."""
    from asisr import sources

    monkeypatch.setenv("ASISR_CACHE", str(tmp_path / "cache"))
    first = sources.export_cached(tiny_liif_ckpt)
    assert sources.export_cached(tiny_liif_ckpt) == first  # a hit
    monkeypatch.setattr(sources, "_graph_code_digest", lambda: "edited")
    second = sources.export_cached(tiny_liif_ckpt)
    assert second != first and (second / "manifest.json").is_file()
