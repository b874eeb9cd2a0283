"""TensorRT: optimization profiles, request checks, the engine cache, the export CLI, the backend.

Everything above the GPU section runs without TensorRT or a GPU (profiles, cache keys and
stale/foreign-engine rejection take versions and GPU names as plain values). The GPU section
builds and runs real engines; it skips, naming what is missing, where TensorRT or CUDA is absent.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from asisr.errors import UserError
from asisr.runtime.backends.trt.builder import BuildOptions, engine_key, graph_precision, shipped_engines
from asisr.runtime.backends.trt.engine_cache import (EngineCache, EngineKey, read_record, record_path, stale_reasons,
                                                     write_engine)
from asisr.runtime.backends.trt.environment import TrtEnvironment, _cuda_device, current_environment
from asisr.runtime.backends.trt.profiles import Profile, check_request, default_profile, parse_profile, request_error
from asisr.runtime.tiling import TileLimits, feature_window, lr_spans, query_spans
from tests.cli_helpers import assert_user_error, invoke

ENV_A = TrtEnvironment("10.9.0.34", "NVIDIA H100 80GB HBM3", "9.0")


def _have_trt_and_gpu() -> bool:
    try:
        current_environment()
    except UserError:
        return False
    return True


def _gpu_missing() -> str | None:
    """Why there is no usable GPU here (cuda-python missing, or no device), as the probe says it; None if there is one."""
    return _cuda_device()[1]


@pytest.fixture(scope="module")
def tiny_model(tiny_liif_ckpt):
    from asisr.models import load

    return load(tiny_liif_ckpt)


# ---------------------------------------------------------------- profiles: defaults and parsing

def test_default_profile_covers_the_tiles_it_is_derived_from(tiny_model):
    from asisr.runtime.backends.trt.profiles import DEFAULT_LR_TILE, DEFAULT_OUT_TILE

    d = tiny_model.descriptor
    p = default_profile(d)
    assert p.batch[0] == 1 and p.lr[0] == p.feat[0] == p.out[0] == (1, 1)  # edge tiles can be 1 px
    assert p.lr[2] == (DEFAULT_LR_TILE + 2 * d.backbone_halo,) * 2
    assert p.out[2] == (DEFAULT_OUT_TILE + 2 * d.upsampler_hr_reach,) * 2
    # Backbone tiles of DEFAULT_LR_TILE with their halo, on an image much larger than a tile.
    spans = lr_spans(3 * DEFAULT_LR_TILE + 7, DEFAULT_LR_TILE, d.backbone_halo)
    assert max(s.hi - s.lo for s in spans) == p.lr[2][0]
    # Upsampler windows at x1 (the most LR pixels per output tile among upscales) fit, tightly.
    widest = 0
    for lr_len in (257, 300, 1000, 1031):
        for out_len in (lr_len, math.ceil(lr_len * 1.3), lr_len * 4):
            spans = query_spans(lr_len, out_len, DEFAULT_OUT_TILE, d.upsampler_lr_reach, d.upsampler_hr_reach)
            widest = max(widest, *(s.lr_hi - s.lr_lo for s in spans))
    assert widest <= p.feat[2][0] <= widest + 1
    assert p.feat[0] <= p.feat[1] <= p.feat[2]


def test_profile_spec_round_trips_and_updates_only_named_ranges(tiny_model):
    base = default_profile(tiny_model.descriptor)
    assert parse_profile(base.spec(), Profile((1, 2, 3), ((1, 1),) * 3, ((1, 1),) * 3, ((1, 1),) * 3)) == base
    assert Profile.from_dict(json.loads(json.dumps(base.to_dict()))) == base
    p = parse_profile(" lr=16x24:256x200:448x448 , batch=1:2:2", base)
    assert p.lr == ((16, 24), (256, 200), (448, 448)) and p.batch == (1, 2, 2)
    assert (p.feat, p.out) == (base.feat, base.out)
    assert parse_profile(None, base) == base and parse_profile("", base) == base
    shapes = p.shapes("upsampler", 16)
    assert shapes["features"] == ((1, 16, *base.feat[0]), (2, 16, *base.feat[1]), (2, 16, *base.feat[2]))
    assert shapes["rows"][2] == (2, base.out[2][0]) and shapes["cols"][2] == (2, base.out[2][1])
    assert p.shapes("backbone", 16)["lr"] == ((1, 3, 16, 24), (2, 3, 256, 200), (2, 3, 448, 448))


@pytest.mark.parametrize("text, fragment", [
    ("lr=300:256:448", "need min <= opt <= max, got 300:256:448"),
    ("out=1x9:1x8:1x9", "out (width): need min <= opt <= max, got 9:8:9"),
    ("batch=1:4:2", "batch: need min <= opt <= max"),
    ("feat=0:8:16", "sizes must be positive"),
    ("lr=16:256", "expected MIN:OPT:MAX"),
    ("lr=16:abc:448", "invalid --profile lr size 'abc'"),
    ("batch=1x1:1:1", "expected three integers"),
    ("tile=1:2:3", "unknown name 'tile'"),
    ("lr", "expected NAME=MIN:OPT:MAX"),
    ("lr=1:2:3,lr=1:2:3", "lr is given twice"),
])
def test_profile_rejects_bad_text_with_one_line(tiny_model, text, fragment):
    with pytest.raises(UserError) as e:
        parse_profile(text, default_profile(tiny_model.descriptor))
    assert fragment in str(e.value) and "\n" not in str(e.value)


# ---------------------------------------------------------------- one request against a profile

def _feeds(b=1, c=16, fh=40, fw=30, oh=100, ow=80):
    return {"features": (b, c, fh, fw), "scale": (b, 2), "rows": (b, oh), "cols": (b, ow)}


def test_request_inside_the_profile_passes(tiny_model):
    ranges = default_profile(tiny_model.descriptor).shapes("upsampler", 16)
    assert request_error("upsampler", _feeds(), ranges) is None
    check_request("upsampler", _feeds(b=2, fh=261, fw=1, oh=256, ow=1), ranges)  # the corners are inside


@pytest.mark.parametrize("feeds, fragments", [
    (_feeds(fh=262), ["input 'features' axis 2 (lr_height) is 262", "range [1, 261]", "--profile feat="]),
    (_feeds(ow=257), ["input 'cols' axis 1 (out_width) is 257", "range [1, 256]", "--profile out="]),
    (_feeds(b=3), ["axis 0 (batch) is 3", "range [1, 2]", "--profile batch="]),
    (_feeds(c=15), ["input 'features' axis 1 (channels) is 15", "built for exactly 16"]),
    ({**_feeds(), "scale": (2, 2)}, ["inputs disagree on batch", "'features' has 1", "'scale' has 2"]),
    ({k: v for k, v in _feeds().items() if k != "rows"}, ["input 'rows' is missing"]),
    ({**_feeds(), "rows": (1, 3, 4)}, ["input 'rows' has 3 axes"]),
])
def test_request_outside_the_profile_names_input_axis_value_and_range(tiny_model, feeds, fragments):
    ranges = default_profile(tiny_model.descriptor).shapes("upsampler", 16)
    message = request_error("upsampler", feeds, ranges)
    assert message is not None and message.startswith("tensorrt upsampler: ")
    for f in fragments:
        assert f in message, message
    with pytest.raises(UserError, match="tensorrt upsampler"):
        check_request("upsampler", feeds, ranges)


def test_backbone_request_check_names_the_lr_range(tiny_model):
    ranges = parse_profile("lr=8:64:64", default_profile(tiny_model.descriptor)).shapes("backbone", 16)
    message = request_error("backbone", {"lr": (1, 3, 64, 65), "scale": (1, 2)}, ranges)
    assert "input 'lr' axis 3 (lr_width) is 65" in message and "[8, 64]" in message and "--profile lr=" in message
    assert "axis 2 (lr_height) is 7" in request_error("backbone", {"lr": (1, 3, 7, 9), "scale": (1, 2)}, ranges)


# ---------------------------------------------------------------- the Upscaler fits the profile

class _Recorder:
    """Delegates to a real runner and records every request's shapes."""

    def __init__(self, runner, log):
        self.runner, self.log = runner, log

    def __getattr__(self, name):  # stage, backend, tile costs, memory release: the real runner's
        return getattr(self.runner, name)

    def activate(self):
        self.runner.activate()

    def deactivate(self):
        self.runner.deactivate()

    def infer(self, feeds):
        self.log.append({k: tuple(np.shape(v)) for k, v in feeds.items()})
        return self.runner.infer(feeds)


def _recorded_upscale(onnx_dir, image, out_hw, limits):
    from asisr.sources import open_pipeline
    from asisr.runtime.upscaler import Upscaler

    pipeline = open_pipeline(onnx_dir, "onnxruntime", threads=1)
    log = {"backbone": [], "upsampler": []}
    pipeline.backbone = _Recorder(pipeline.backbone, log["backbone"])
    pipeline.upsampler = _Recorder(pipeline.upsampler, log["upsampler"])
    if limits is not None:
        for runner in (pipeline.backbone, pipeline.upsampler):
            runner.tile_limits = limits
    with Upscaler(pipeline, tile=256, lr_tile=1024) as up:
        out = up.upscale_to(image, out_hw)
    return out, log


@pytest.mark.parametrize("out_hw", [(175, 150), (42, 36)])  # x2.5 and a downscale (x0.6)
def test_upscaler_shrinks_its_tiles_to_the_profile(tiny_liif_onnx, tiny_model, out_hw):
    """A small profile on a real ONNX Runtime pipeline: every request fits, the image is unchanged."""
    image = np.random.default_rng(3).random((70, 60, 3), dtype=np.float32)
    profile = parse_profile("lr=1:30:30,feat=1:14:20,out=1:24:24", default_profile(tiny_model.descriptor))
    ranges = {s: profile.shapes(s, 16) for s in ("backbone", "upsampler")}
    out, log = _recorded_upscale(tiny_liif_onnx, image, out_hw, profile.limits())
    for stage, requests in log.items():
        assert requests
        for shapes in requests:
            assert request_error(stage, shapes, ranges[stage]) is None
    reference, unclamped = _recorded_upscale(tiny_liif_onnx, image, out_hw, None)
    assert any(request_error(s, shapes, ranges[s]) for s, reqs in unclamped.items() for shapes in reqs)
    assert np.abs(out - reference).max() <= 1e-5  # tiling is exact for LIIF


def test_profile_too_small_for_the_halo_is_a_one_line_error(tiny_liif_onnx, tiny_model):
    halo = tiny_model.descriptor.backbone_halo
    profile = parse_profile(f"lr=1:{2 * halo}:{2 * halo}", default_profile(tiny_model.descriptor))
    with pytest.raises(UserError, match="too small for this model's 6 px halo"):
        _recorded_upscale(tiny_liif_onnx, np.zeros((40, 40, 3), np.float32), (80, 80), profile.limits())
    limits = TileLimits(lr_max=(64, 64), feat_max=(5, 5), out_max=(64, 64))
    with pytest.raises(UserError, match="feature windows of at most 5 LR px"):
        limits.out_tile(64, (40, 40), (80, 80), lr_reach=2, hr_reach=0)


def test_fitted_tiles_keep_every_span_inside_the_limits():
    rng = np.random.default_rng(0)
    fitted = 0
    for _ in range(300):
        lr = tuple(int(x) for x in rng.integers(2, 400, 2))
        out = tuple(max(1, round(n * float(s))) for n, s in zip(lr, rng.uniform(0.3, 8.0, 2)))
        reach, hr = int(rng.integers(1, 4)), int(rng.integers(0, 3))
        limits = TileLimits(lr_max=(64, 64), feat_max=tuple(int(x) for x in rng.integers(12, 300, 2)),
                            out_max=tuple(int(x) for x in rng.integers(8, 300, 2)))
        try:
            tile = limits.out_tile(256, lr, out, reach, hr)
        except UserError:
            continue
        fitted += 1
        for axis in (0, 1):
            for s in query_spans(lr[axis], out[axis], tile, reach, hr):
                assert s.lr_hi - s.lr_lo <= limits.feat_max[axis] and len(s.coords) <= limits.out_max[axis]
    assert fitted > 200
    roomy = TileLimits(lr_max=(4096, 4096), feat_max=(4096, 4096), out_max=(4096, 4096))
    assert roomy.out_tile(256, (300, 200), (900, 700), 2, 0) == 256 and roomy.lr_tile(1024, 34) == 1024


def test_feature_window_bound_matches_query_spans():
    for lr_len, out_len, tile, reach in [(100, 250, 64, 2), (333, 333, 256, 1), (90, 40, 32, 2), (17, 170, 50, 3)]:
        spans = query_spans(lr_len, out_len, tile, reach, 0)
        assert max(s.lr_hi - s.lr_lo for s in spans) <= feature_window(tile, out_len / lr_len, reach)


# ---------------------------------------------------------------- engine cache: keys and staleness

def _key(**changes) -> EngineKey:
    fields = dict(onnx_sha256="a" * 64, tensorrt_version=ENV_A.tensorrt_version, gpu_name=ENV_A.gpu_name,
                  compute_capability=ENV_A.compute_capability, precision="fp32",
                  profile={"batch": [1, 1, 4], "lr": [[1, 1], [64, 64], [64, 64]]}, stage="upsampler",
                  builder={"workspace_mib": None, "optimization_level": None, "tf32": False})
    fields.update(changes)
    return EngineKey(**fields)


# The key written out by hand: keys sorted at every level, no spaces, JSON's null and false. A
# cache written by one asisr version or process is found by the next only while this text is
# what the digest hashes.
CANONICAL_KEY_TEXT = (
    '{"builder":{"optimization_level":null,"tf32":false,"workspace_mib":null},"compute_capability":"9.0",'
    '"gpu_name":"NVIDIA H100 80GB HBM3","onnx_sha256":"' + "a" * 64 + '","precision":"fp32",'
    '"profile":{"batch":[1,1,4],"lr":[[1,1],[64,64],[64,64]]},"stage":"upsampler","tensorrt_version":"10.9.0.34"}')


def test_engine_key_digest_is_the_sha256_of_the_canonical_text():
    """Compared with the text above, written independently of the code, and independent of dict order."""
    import hashlib

    assert _key().digest() == hashlib.sha256(CANONICAL_KEY_TEXT.encode()).hexdigest()
    reordered = _key(profile={"lr": [[1, 1], [64, 64], [64, 64]], "batch": [1, 1, 4]},
                     builder={"tf32": False, "optimization_level": None, "workspace_mib": None})
    assert reordered.digest() == _key().digest()


CHANGES = {
    "onnx_sha256": ("b" * 64, "ONNX graph sha256"),
    "tensorrt_version": ("10.12.0.36", "TensorRT version: engine built for '10.9.0.34', here '10.12.0.36'"),
    "gpu_name": ("NVIDIA A100-SXM4-80GB", "GPU: engine built for 'NVIDIA H100 80GB HBM3'"),
    "compute_capability": ("8.0", "compute capability"),
    "precision": ("fp16", "precision: engine built for 'fp32', here 'fp16'"),
    "profile": ({"batch": [1, 1, 8]}, "optimization profile differs"),
    "builder": ({"workspace_mib": 512, "optimization_level": None, "tf32": False}, "builder options differ"),
}


@pytest.mark.parametrize("field", sorted(CHANGES))
def test_engine_key_changes_with_every_field_and_foreign_engines_are_stale(tmp_path, field):
    value, reason = CHANGES[field]
    assert _key(**{field: value}).digest() != _key().digest()
    engine = write_engine(tmp_path / "upsampler.engine", b"engine bytes", _key())
    assert stale_reasons(engine, _key()) == []
    reasons = stale_reasons(engine, _key(**{field: value}))
    assert len(reasons) == 1 and reason in reasons[0], reasons


def test_damaged_engines_and_records_are_stale(tmp_path):
    engine = write_engine(tmp_path / "e.engine", b"0123456789", _key())
    record = read_record(engine)
    assert record["engine_bytes"] == 10 and record["key"] == _key().to_dict()
    assert record["key_sha256"] == _key().digest()
    engine.write_bytes(b"01234")
    assert "has 5 bytes, its record says 10" in stale_reasons(engine, _key())[0]
    engine.write_bytes(b"9876543210")
    assert "sha256 differs" in stale_reasons(engine, _key())[0]
    record_path(engine).write_text("{not json")
    assert "missing or corrupt" in stale_reasons(engine, _key())[0]
    record_path(engine).unlink()
    assert "missing or corrupt" in stale_reasons(engine, _key())[0]
    engine.unlink()
    assert "missing" in stale_reasons(engine, _key())[0]


def test_engine_cache_builds_once_and_rebuilds_stale_or_foreign_entries(tmp_path):
    cache = EngineCache(tmp_path / "cache")
    builds = []

    def build(data=b"plan-1"):
        builds.append(data)
        return data

    path = cache.get_or_build(_key(), build)
    assert path.read_bytes() == b"plan-1" and cache.get_or_build(_key(), build) == path and len(builds) == 1
    other = cache.get_or_build(_key(tensorrt_version="10.12.0.36"), lambda: build(b"plan-2"))
    assert other != path and other.read_bytes() == b"plan-2" and len(builds) == 2
    path.write_bytes(b"plan-X")  # damaged in place: rebuilt, not loaded
    assert cache.lookup(_key()) is None
    assert cache.get_or_build(_key(), build).read_bytes() == b"plan-1" and len(builds) == 3

    def failing():
        raise UserError("build failed")

    with pytest.raises(UserError):
        cache.get_or_build(_key(precision="int8"), failing)
    assert sorted(p.name for p in cache.root.iterdir()) == sorted([path.name, path.name + ".json",
                                                                   other.name, other.name + ".json"])


def _fake_trt_dir(tmp_path, onnx_dir, env, profile):
    """An exported directory whose manifest lists engines recorded for ``env`` (their bytes are placeholders)."""
    import shutil

    from asisr.runtime.manifest import read_manifest, write_manifest

    directory = tmp_path / "model_trt"
    shutil.copytree(onnx_dir, directory)
    manifest = read_manifest(directory)
    options = BuildOptions()
    engines = {}
    for stage in ("backbone", "upsampler"):
        key = engine_key(manifest.data["graphs"][stage]["sha256"], env, "fp32", profile, stage, options)
        write_engine(directory / f"{stage}.engine", f"{stage} plan".encode(), key)
        engines[stage] = {"file": f"{stage}.engine", "precision": "fp32"}
    data = dict(manifest.data)
    data["tensorrt"] = {"profile": profile.to_dict(), "builder": options.key_fields(), "engines": engines}
    write_manifest(directory, data)
    return directory


def test_shipped_engines_are_used_only_for_their_own_tensorrt_gpu_and_graph(tmp_path, tiny_liif_onnx, tiny_model):
    from asisr.runtime.manifest import read_manifest

    profile = default_profile(tiny_model.descriptor)
    directory = _fake_trt_dir(tmp_path, tiny_liif_onnx, ENV_A, profile)
    engines, why = shipped_engines(directory, read_manifest(directory), ENV_A)
    assert why is None and engines == {s: directory / f"{s}.engine" for s in ("backbone", "upsampler")}
    for env, fragment in [(TrtEnvironment("10.12.0.36", ENV_A.gpu_name, "9.0"), "TensorRT version"),
                          (TrtEnvironment(ENV_A.tensorrt_version, "NVIDIA L4", "8.9"), "GPU")]:
        engines, why = shipped_engines(directory, read_manifest(directory), env)
        assert engines is None and "backbone engine is stale" in why and fragment in why
    assert shipped_engines(tiny_liif_onnx, read_manifest(tiny_liif_onnx), ENV_A) == (None, "it has no TensorRT engines")


# ---------------------------------------------------------------- precision read from the graph

def _tiny_graph(path, nodes, inits=(), in_type=TensorProto.FLOAT):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", in_type, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], list(inits))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def test_graph_precision(tmp_path, tiny_liif_onnx):
    assert graph_precision(tiny_liif_onnx / "upsampler.onnx") == "fp32"
    fp16 = _tiny_graph(tmp_path / "h.onnx", [helper.make_node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16),
                                             helper.make_node("Cast", ["h"], ["y"], to=TensorProto.FLOAT)])
    assert graph_precision(fp16) == "fp16"
    s = helper.make_tensor("s", TensorProto.FLOAT, [], [0.05])
    z = helper.make_tensor("z", TensorProto.INT8, [], [0])
    qdq = _tiny_graph(tmp_path / "q.onnx", [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
                                            helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])], [s, z])
    assert graph_precision(qdq) == "int8"


# ---------------------------------------------------------------- ONNX Runtime's TensorRT provider

def test_onnxruntime_tensorrt_provider_order_and_engine_cache(tmp_path, monkeypatch, tiny_liif_onnx):
    from asisr.runtime.backends.onnxrt import resolve_providers, tensorrt_ep_options

    gpu = {"TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"}
    assert resolve_providers(["tensorrt"], gpu) == ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                                                    "CPUExecutionProvider"]
    assert resolve_providers(["cuda", "CUDA"], gpu) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    with pytest.raises(UserError, match="'tensorrt' is not available here"):
        resolve_providers(["tensorrt"], {"CPUExecutionProvider"})
    monkeypatch.setenv("ASISR_CACHE", str(tmp_path / "cache"))
    a = tensorrt_ep_options(tiny_liif_onnx / "backbone.onnx")
    b = tensorrt_ep_options(tiny_liif_onnx / "upsampler.onnx")
    assert a["trt_engine_cache_enable"] and a["trt_timing_cache_enable"]
    assert a["trt_engine_cache_path"] != b["trt_engine_cache_path"]  # keyed by the graph's sha256
    assert a == tensorrt_ep_options(tiny_liif_onnx / "backbone.onnx")
    assert Path(a["trt_engine_cache_path"]).is_dir() and str(tmp_path / "cache") in a["trt_engine_cache_path"]


# ---------------------------------------------------------------- CLIs without TensorRT or a GPU

needs_no_trt = pytest.mark.skipif(_have_trt_and_gpu(), reason="TensorRT and a CUDA GPU are both present here")


@needs_no_trt
@pytest.mark.parametrize("extra", [[], ["--profile", "lr=8:64:64"]])
def test_export_tensorrt_without_tensorrt_or_gpu_is_one_line_and_writes_nothing(tmp_path, capsys, extra):
    from asisr.cli.export import main

    out = tmp_path / "model_trt"
    code, _, err = invoke(main, ["--format", "tensorrt", "--out", out, *extra], capsys)
    missing = "TensorRT is not installed" if not _importable("tensorrt") else _gpu_missing()
    assert_user_error(code, err, missing)
    assert "TensorRT engines cannot be built or run here" in err
    if _gpu_missing():  # both reasons are named, not only the first
        assert _gpu_missing() in err
    assert list(tmp_path.iterdir()) == []  # no output, no staging directory left behind


@needs_no_trt
def test_export_tensorrt_from_onnx_dir_without_gpu(tmp_path, capsys, tiny_liif_onnx):
    from asisr.cli.export import main

    out = tmp_path / "trt"
    code, _, err = invoke(main, ["--format", "tensorrt", "--onnx-dir", tiny_liif_onnx, "--out", out], capsys)
    assert_user_error(code, err, "TensorRT engines cannot be built or run here")
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == []


@needs_no_trt
def test_run_with_tensorrt_backend_without_gpu_is_one_line(tmp_path, capsys, tiny_liif_onnx):
    from asisr.cli.run import main
    from asisr.imageio import write_image

    image = tmp_path / "in.png"
    write_image(image, (np.random.default_rng(0).random((12, 10, 3)) * 255).astype(np.uint8))
    out = tmp_path / "out.png"
    code, _, err = invoke(main, [image, "--scale", "2", "--out", out, "--model", tiny_liif_onnx,
                                 "--backend", "tensorrt"], capsys)
    assert_user_error(code, err, "TensorRT engines cannot be built or run here")
    assert not out.exists()


@pytest.mark.parametrize("args, fragment", [
    (["--profile", "lr=64:8:8"], "need min <= opt <= max"),
    (["--builder-level", "7"], "--builder-level 7: must be 0-5"),
    (["--workspace", "0"], "--workspace 0"),
    (["--onnx-dir", "x", "--checkpoint", "y"], "either --checkpoint or --onnx-dir"),
])
def test_export_tensorrt_rejects_bad_options_first(tmp_path, capsys, args, fragment):
    from asisr.cli.export import main

    code, _, err = invoke(main, ["--format", "tensorrt", "--out", tmp_path / "o", *args], capsys)
    assert_user_error(code, err, fragment)
    assert not (tmp_path / "o").exists()


def test_tensorrt_only_options_are_refused_for_onnx(tmp_path, capsys):
    from asisr.cli.export import main

    code, _, err = invoke(main, ["--out", tmp_path / "o", "--profile", "lr=1:2:3", "--tf32"], capsys)
    assert_user_error(code, err, "--profile, --tf32 only apply to --format tensorrt")
    code, _, err = invoke(main, ["--out", tmp_path / "o", "--format", "engine"], capsys)
    assert_user_error(code, err, "unknown --format 'engine' (available: onnx, tensorrt)")


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except Exception:
        return False
    return True


# ---------------------------------------------------------------- GPU: real engines

@pytest.fixture(scope="module")
def trt_gpu():
    try:
        current_environment()
    except UserError as e:
        pytest.skip(str(e))
    return pytest.importorskip("tensorrt")


@pytest.fixture(scope="module")
def tiny_engines(trt_gpu, tiny_liif_onnx, tmp_path_factory):
    from asisr.export.tensorrt import export_tensorrt

    root = tmp_path_factory.mktemp("trt")
    return export_tensorrt(root / "tiny_trt", onnx_dir=tiny_liif_onnx,
                           options=BuildOptions(timing_cache=root / "timing.cache"))


def test_gpu_export_records_engines_profile_and_environment(trt_gpu, tiny_engines, tiny_model):
    from asisr.runtime.manifest import read_manifest

    manifest = read_manifest(tiny_engines)
    info = manifest.data["tensorrt"]
    env = current_environment()
    assert (info["version"], info["gpu"], info["compute_capability"]) == (
        env.tensorrt_version, env.gpu_name, env.compute_capability)
    assert Profile.from_dict(info["profile"]) == default_profile(tiny_model.descriptor)
    engines, why = shipped_engines(tiny_engines, manifest, env)
    assert why is None and all(p.stat().st_size > 0 for p in engines.values())
    assert (tiny_engines.parent / "timing.cache").stat().st_size > 0


def test_gpu_engine_parity_with_pytorch(trt_gpu, tiny_engines, tiny_model):
    from asisr.evaluation.parity import FP32_TOLERANCE, build_cases, check_parity
    from asisr.sources import open_pipeline

    report = check_parity(open_pipeline(tiny_engines, "tensorrt"), tiny_model.reference(), build_cases())
    assert report.passed, report.table()
    assert max(r.stats.max_abs for r in report.results) <= FP32_TOLERANCE


def test_gpu_engine_refuses_a_request_outside_its_profile(trt_gpu, tiny_engines):
    from asisr.sources import open_pipeline

    with open_pipeline(tiny_engines, "tensorrt") as pipeline:
        limit = pipeline.upsampler.profile_ranges()["features"][2][2]
        feats = np.zeros((1, 16, limit + 1, 8), np.float32)
        rows, cols = np.full((1, 4), 0.5, np.float32), np.full((1, 4), 0.5, np.float32)
        with pytest.raises(UserError, match=rf"axis 2 \(lr_height\) is {limit + 1}, outside .*\[1, {limit}\]"):
            pipeline.upsample(feats, np.ones((1, 2), np.float32), rows, cols)


def test_gpu_upscaler_fits_a_small_profile_and_matches_torch(trt_gpu, tiny_liif_onnx, tiny_liif_ckpt, tmp_path):
    from asisr.export.tensorrt import export_tensorrt
    from asisr.sources import open_pipeline
    from asisr.runtime.upscaler import Upscaler

    small = export_tensorrt(tmp_path / "small", onnx_dir=tiny_liif_onnx,
                            profile_text="batch=1:1:1,lr=1:40:40,feat=1:20:24,out=1:32:32",
                            options=BuildOptions(timing_cache=tmp_path / "t.cache"))
    image = np.random.default_rng(1).random((90, 70, 3), dtype=np.float32)
    with Upscaler(open_pipeline(small, "tensorrt"), tile=256, lr_tile=1024) as up:
        got = up.upscale_to(image, (225, 175))
    with Upscaler(open_pipeline(tiny_liif_ckpt, "torch"), tile=256, lr_tile=1024) as up:
        want = up.upscale_to(image, (225, 175))
    assert np.abs(got - want).max() <= 1e-4


def test_gpu_stale_engines_are_rebuilt_in_the_cache(trt_gpu, tiny_engines, tmp_path, monkeypatch):
    import shutil

    from asisr.sources import open_pipeline

    monkeypatch.setenv("ASISR_CACHE", str(tmp_path / "cache"))
    moved = tmp_path / "moved"
    shutil.copytree(tiny_engines, moved)
    record = json.loads(record_path(moved / "upsampler.engine").read_text())
    record["key"]["tensorrt_version"] = "0.0.0"
    record_path(moved / "upsampler.engine").write_text(json.dumps(record))
    with pytest.warns(UserWarning, match="upsampler engine is stale: TensorRT version"):
        pipeline = open_pipeline(moved, "tensorrt")
    assert all(Path(p).parent == tmp_path / "cache" / "tensorrt" for p in pipeline.files.values())
    with pipeline:
        assert pipeline.features(np.zeros((1, 3, 8, 8), np.float32), np.ones((1, 2), np.float32)).shape == (1, 16, 8, 8)
