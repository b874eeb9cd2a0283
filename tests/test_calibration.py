"""Calibration data: protocol LR crops at several scales, readers that feed both graphs, and the
graph analysis that keeps coordinate math in float."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from asisr.calibration.graph import (coordinate_nodes, data_nodes, quantizable_ops, quantization_candidates,
                                    unshare_constants)
from asisr.calibration.reader import BackboneReader, UpsamplerReader, session
from asisr.calibration.samples import CalibrationSettings, build_calibration_set
from asisr.errors import UserError

SETTINGS = CalibrationSettings(n_samples=8, lr_size=24, max_out=32)


def make_photos(folder: Path, n: int = 4, size: tuple[int, int] = (160, 192), seed: int = 0) -> Path:
    """Smooth colour waves with a hard edge: enough structure for realistic activations."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size[0], 0:size[1]] / size[0]
    for i in range(n):
        img = np.zeros((*size, 3))
        for c in range(3):
            for _ in range(4):
                fy, fx = rng.uniform(1, 12, 2)
                img[..., c] += np.sin(2 * np.pi * (fy * yy + fx * xx) + rng.uniform(0, 6.3)) * rng.uniform(0.05, 0.2)
        img += (xx > rng.uniform(0.2, 0.8))[..., None] * 0.3
        img = (img - img.min()) / (img.max() - img.min()) * 255
        Image.fromarray(img.astype(np.uint8)).save(folder / f"photo{i}.png")
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return make_photos(tmp_path_factory.mktemp("photos"))


def test_samples_are_protocol_crops_at_several_scales(photos):
    cset = build_calibration_set(photos, SETTINGS)
    assert len(cset.samples) == 8 and len(cset.digest) == 64
    scales = {tuple(np.round(s.scale[0], 2)) for s in cset.samples}
    assert len(scales) >= 6 and (2.0, 3.5) in scales  # spread, with an asymmetric one
    for s in cset.samples:
        assert s.lr.dtype == np.float32 and s.lr.shape[:2] == (1, 3) and s.lr.shape[2:] == (24, 24)
        # the LR is uint8 (the protocol's PIL bicubic output) scaled to [0, 1]
        assert np.allclose(s.lr * 255, np.round(s.lr * 255), atol=1e-4)
        assert s.rows.dtype == np.float32 and s.rows.shape == (1, s.hr.shape[0]) and s.cols.shape == (1, s.hr.shape[1])
        assert s.hr.dtype == np.uint8 and max(s.hr.shape[:2]) <= 32
        # rows are LR coordinates of output pixel centres: step 1/scale, inside the LR crop
        assert np.allclose(np.diff(s.rows[0]), 1 / s.scale[0, 0], atol=1e-4)
        assert 0 < s.rows.min() and s.rows.max() < 24


def test_same_seed_same_set_and_hash_covers_files_and_settings(photos, tmp_path):
    a, b = build_calibration_set(photos, SETTINGS), build_calibration_set(photos, SETTINGS)
    assert a.digest == b.digest
    assert all(np.array_equal(x.lr, y.lr) and np.array_equal(x.rows, y.rows) for x, y in zip(a.samples, b.samples))
    other_seed = build_calibration_set(photos, CalibrationSettings(n_samples=8, lr_size=24, max_out=32, seed=1))
    assert other_seed.digest != a.digest
    assert not all(np.array_equal(x.lr, y.lr) for x, y in zip(a.samples, other_seed.samples))
    changed = make_photos(tmp_path / "changed")
    (changed / "photo3.png").write_bytes((photos / "photo0.png").read_bytes())
    assert build_calibration_set(changed, SETTINGS).digest != a.digest


def test_scales_beyond_a_model_range_are_dropped():
    kept = SETTINGS.for_scale_range(4.0).scales
    assert kept and max(max(s) for s in kept) <= 4.0 and len(kept) < len(SETTINGS.scales)


def test_bad_folders_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="calibration folder not found"):
        build_calibration_set(tmp_path / "missing", SETTINGS)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images"):
        build_calibration_set(tmp_path / "empty", SETTINGS)


def test_readers_feed_both_graphs_what_they_declare(photos, tiny_liif_onnx):
    cset = build_calibration_set(photos, SETTINGS)
    backbone = tiny_liif_onnx / "backbone.onnx"
    upsampler = tiny_liif_onnx / "upsampler.onnx"
    for graph, reader in ((backbone, BackboneReader(cset.samples)),
                          (upsampler, UpsamplerReader.from_backbone(backbone, cset.samples))):
        declared = {i.name for i in session(graph).get_inputs()}
        feeds = list(reader)
        assert len(feeds) == len(cset.samples) == len(reader)
        for feed, s in zip(feeds, cset.samples):
            assert set(feed) == declared
            assert all(v.dtype == np.float32 for v in feed.values())
            assert np.array_equal(feed["scale"], s.scale)
        reader.set_range(2, 5)  # chunked collection
        assert len(list(reader)) == 3
    feats = UpsamplerReader.from_backbone(backbone, cset.samples[:1])._feeds[0]["features"]
    assert feats.shape == (1, 16, 24, 24)
    # the features are the fp32 backbone's, run on the sample's LR crop
    expected = session(backbone).run(None, cset.samples[0].backbone_feed())[0]
    assert np.array_equal(feats, expected)


def test_coordinate_math_is_found_by_what_it_computes(tiny_liif_onnx):
    up = onnx.load(str(tiny_liif_onnx / "upsampler.onnx"))
    ops = {n.name: n.op_type for n in up.graph.node}
    coord = set(coordinate_nodes(up, "features"))
    data = data_nodes(up, "features")
    assert coord and data and not coord & data
    # index math (Floor of rows/cols, clamped with the feature size through Shape) is coordinate math
    assert all(ops[n] not in ("Floor", "Abs", "Reciprocal") for n in data)
    assert {ops[n] for n in coord} >= {"Floor", "Cast"}
    # every image-path matrix product is a candidate, and only data nodes are
    assert set(quantization_candidates(up, "features", quantizable_ops())) <= data
    assert "Conv" in {ops[n] for n in data}


def test_shape_of_the_data_is_not_data():
    """Clamping a coordinate to the feature width is coordinate math; scaling features is not."""
    f = helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 2, 3, 4])
    r = helper.make_tensor_value_info("rows", TensorProto.FLOAT, [1, 5])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, None)
    nodes = [
        helper.make_node("Shape", ["features"], ["shape"], name="shape"),
        helper.make_node("Cast", ["shape"], ["shape_f"], to=TensorProto.FLOAT, name="cast"),
        helper.make_node("Min", ["rows", "shape_f"], ["clamped"], name="clamp"),
        helper.make_node("Sin", ["clamped"], ["enc"], name="sin"),
        helper.make_node("Mul", ["features", "enc"], ["out"], name="mix"),
    ]
    model = helper.make_model(helper.make_graph(nodes, "g", [f, r], [out]))
    assert coordinate_nodes(model, "features") == ["shape", "cast", "clamp", "sin"]
    assert data_nodes(model, "features") == {"mix"}


def test_constants_shared_with_image_math_are_copied_for_coordinate_math():
    f = helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 2])
    r = helper.make_tensor_value_info("rows", TensorProto.FLOAT, [1, 2])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("a", "b")]
    half = helper.make_tensor("half", TensorProto.FLOAT, [], [0.5])
    nodes = [helper.make_node("Mul", ["features", "half"], ["a"], name="scale_features"),
             helper.make_node("Add", ["rows", "half"], ["b"], name="shift_rows")]
    model = unshare_constants(helper.make_model(helper.make_graph(nodes, "g", [f, r], outs, [half])), "features")
    inputs = {n.name: list(n.input) for n in model.graph.node}
    assert inputs["scale_features"] == ["features", "half"]
    assert inputs["shift_rows"][1] != "half"
    copy = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}[inputs["shift_rows"][1]]
    assert copy == np.float32(0.5)
