"""ONNX -> TensorRT engines: strongly typed networks, one optimization profile, a timing cache.

Precision comes from the graph, never from builder flags: the network is created strongly
typed, so an fp32 graph gives an fp32 engine, an fp16 graph an fp16 engine and an explicit
Q/DQ graph an int8 one (TensorRT 11 removed the weak-typing flags; 10.x honours the flag).

Engines need TensorRT and a CUDA GPU. Without either, every entry point fails with one
``UserError`` line naming what is missing, before anything is written.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from asisr.atomic import atomic_path
from asisr.cache import cache_dir
from asisr.errors import UserError
from asisr.runtime import contract
from asisr.runtime.backends.trt.engine_cache import EngineCache, EngineKey, stale_reasons, write_engine
from asisr.runtime.backends.trt.environment import TrtEnvironment, require_tensorrt
from asisr.runtime.backends.trt.profiles import Profile
from asisr.runtime.contract import STAGE_NAMES
from asisr.runtime.manifest import read_manifest, write_manifest

@dataclass(frozen=True)
class BuildOptions:
    """Builder settings. ``workspace_mib`` and ``optimization_level`` change the engine, so they are in its key."""

    workspace_mib: int | None = None
    optimization_level: int | None = None  # TensorRT builder optimization level 0-5 (default 3)
    timing_cache: Path | None = None  # loaded when present, saved after each build
    tf32: bool = False  # TensorRT's default is on: fp32 convolutions/matmuls with 10-bit-mantissa inputs

    def key_fields(self) -> dict:
        return {"workspace_mib": self.workspace_mib, "optimization_level": self.optimization_level, "tf32": self.tf32}

    def __post_init__(self) -> None:
        if self.workspace_mib is not None and self.workspace_mib < 1:
            raise UserError(f"invalid --workspace {self.workspace_mib}: must be a positive number of MiB")
        if self.optimization_level is not None and not 0 <= self.optimization_level <= 5:
            raise UserError(f"invalid --builder-level {self.optimization_level}: must be 0-5")


def graph_precision(onnx_path: str | Path) -> str:
    """``int8`` for explicit Q/DQ graphs, ``fp16`` for graphs computing in half precision, else ``fp32``."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    graph = model.graph
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in graph.node):
        return "int8"
    half = onnx.TensorProto.FLOAT16
    typed = list(graph.input) + list(graph.output) + list(graph.value_info)
    if (any(t.data_type == half for t in graph.initializer)
            or any(v.type.tensor_type.elem_type == half for v in typed)
            or any(n.op_type == "Cast" and any(a.name == "to" and a.i == half for a in n.attribute)
                   for n in graph.node)):
        return "fp16"
    return "fp32"


def graph_channels(onnx_path: str | Path) -> int:
    """Feature channels of an upsampler graph (the fixed channel axis of its feature input)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    for value in model.graph.input:
        if value.name == contract.FEATURES:
            dim = value.type.tensor_type.shape.dim[1]
            if dim.HasField("dim_value"):
                return int(dim.dim_value)
    raise UserError(f"{onnx_path}: no {contract.FEATURES!r} input with a fixed channel count "
                    "(not an asisr upsampler graph?)")


def engine_key(onnx_sha256: str, env: TrtEnvironment, precision: str, profile: Profile, stage: str,
               options: BuildOptions) -> EngineKey:
    return EngineKey(onnx_sha256=onnx_sha256, tensorrt_version=env.tensorrt_version, gpu_name=env.gpu_name,
                     compute_capability=env.compute_capability, precision=precision, profile=profile.to_dict(),
                     stage=stage, builder=options.key_fields())


def default_timing_cache(env: TrtEnvironment) -> Path:
    """One timing cache per TensorRT version and GPU, in asisr's cache folder."""
    gpu = re.sub(r"[^A-Za-z0-9.]+", "-", env.gpu_name).strip("-") or "gpu"
    return cache_dir() / "tensorrt" / f"timing-trt{env.tensorrt_version}-{gpu}-sm{env.compute_capability}.cache"


def _logger(trt):
    return trt.Logger(trt.Logger.WARNING)


def _load_timing_cache(trt, config, path: Path | None):
    """Attach the timing cache at ``path`` (an empty one when absent, unreadable or for another GPU/TensorRT)."""
    data = path.read_bytes() if path is not None and path.is_file() else b""
    try:
        cache = config.create_timing_cache(data)
        attached = cache is not None and config.set_timing_cache(cache, ignore_mismatch=False)
    except Exception:  # a corrupt file raises inside TensorRT
        attached = False
    if not attached:
        warnings.warn(f"ignoring timing cache {path}: unreadable, or written for another TensorRT or GPU",
                      stacklevel=3)
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    return cache


def build_engine(onnx_path: str | Path, stage: str, profile: Profile, options: BuildOptions = BuildOptions()) -> bytes:
    """Serialize a strongly typed engine for one stage graph with one optimization profile."""
    trt = require_tensorrt()
    onnx_path = Path(onnx_path)
    logger = _logger(trt)
    builder = trt.Builder(logger)
    flags = 0
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly_typed is not None:  # always on (and the flag ignored) in TensorRT 11
        flags |= 1 << int(strongly_typed)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)).strip() for i in range(parser.num_errors)]
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        raise UserError(f"TensorRT cannot parse {onnx_path.name}: "
                        f"{' '.join((errors or ['unknown error'])[0].split())}{more}")
    spec = contract.stage(stage)
    channels = graph_channels(onnx_path) if contract.FEATURES in spec.input_names else 0
    shapes = profile.shapes(stage, channels)
    inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    outputs = [network.get_output(i).name for i in range(network.num_outputs)]
    wrong = spec.check_names(inputs, outputs, onnx_path.name)
    if wrong:
        raise UserError(wrong)
    config = builder.create_builder_config()
    if options.workspace_mib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_mib) << 20)
    if options.optimization_level is not None:
        config.builder_optimization_level = int(options.optimization_level)
    if not options.tf32:  # an fp32 graph means fp32 arithmetic unless TF32 is asked for
        config.clear_flag(trt.BuilderFlag.TF32)
    opt_profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        opt_profile.set_shape(name, lo, opt, hi)
    if config.add_optimization_profile(opt_profile) < 0:
        raise UserError(f"TensorRT rejected the optimization profile {profile.spec()} for {onnx_path.name}")
    _load_timing_cache(trt, config, options.timing_cache)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UserError(f"TensorRT could not build an engine for {onnx_path.name} (see the TensorRT log above; "
                        "a smaller --profile or a larger --workspace may help)")
    if options.timing_cache is not None:
        options.timing_cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(options.timing_cache) as tmp:
            tmp.write_bytes(bytes(memoryview(config.get_timing_cache().serialize())))
    return bytes(memoryview(serialized))


def engine_filename(stage: str) -> str:
    return f"{stage}.engine"


def _env_record(env: TrtEnvironment) -> dict:
    return {"version": env.tensorrt_version, "gpu": env.gpu_name, "compute_capability": env.compute_capability}


def _stage_engine(manifest, stage: str, env: TrtEnvironment, profile: Profile, options: BuildOptions):
    """(graph path, precision read from the graph, engine cache key) for one stage of an exported directory."""
    graph = manifest.graph_path(stage)
    precision = graph_precision(graph)
    return graph, precision, engine_key(manifest.data["graphs"][stage]["sha256"], env, precision, profile, stage,
                                        options)


def add_engines(directory: Path, profile: Profile, options: BuildOptions, env: TrtEnvironment) -> dict:
    """Build ``{stage}.engine`` (+ record) beside the graphs of an exported directory; record them in its manifest."""
    manifest = read_manifest(directory)
    engines = {}
    for stage in STAGE_NAMES:
        graph, precision, key = _stage_engine(manifest, stage, env, profile, options)
        path = write_engine(directory / engine_filename(stage), build_engine(graph, stage, profile, options), key,
                            {"profile_spec": profile.spec()})
        engines[stage] = {"file": path.name, "record": path.name + ".json", "precision": precision,
                          "key_sha256": key.digest()}
    data = dict(manifest.data)
    data["tensorrt"] = {**_env_record(env), "profile": profile.to_dict(), "profile_spec": profile.spec(),
                        "builder": options.key_fields(), "engines": engines}
    write_manifest(directory, data)
    return data["tensorrt"]


def shipped_engines(directory: Path, manifest, env: TrtEnvironment) -> tuple[dict[str, Path] | None, str | None]:
    """The engines an exported directory ships, if every one is valid here; else (None, why not)."""
    info = manifest.data.get("tensorrt")
    if not info:
        return None, "it has no TensorRT engines"
    try:
        profile = Profile.from_dict(info["profile"])
        options = BuildOptions(**info.get("builder", {}))
        paths = {}
        for stage in STAGE_NAMES:
            entry = info["engines"][stage]
            key = engine_key(manifest.data["graphs"][stage]["sha256"], env, entry["precision"], profile, stage,
                             options)
            path = manifest.member(entry["file"], f"{stage} engine")
            reasons = stale_reasons(path, key)
            if reasons:
                return None, f"its {stage} engine is stale: {reasons[0]}"
            paths[stage] = path
    except (KeyError, TypeError, UserError) as e:
        return None, f"its TensorRT manifest entry is unreadable ({type(e).__name__}: {e})"
    return paths, None


def cached_engines(directory: Path, manifest, env: TrtEnvironment, profile: Profile, cache_root: Path,
                   options: BuildOptions | None = None) -> dict[str, Path]:
    """Engines for an exported directory's graphs from the engine cache, built there when missing or stale."""
    options = options or BuildOptions(timing_cache=default_timing_cache(env))
    cache = EngineCache(cache_root)
    paths = {}
    for stage in STAGE_NAMES:
        graph, _, key = _stage_engine(manifest, stage, env, profile, options)
        if cache.lookup(key) is None:
            warnings.warn(f"building the TensorRT {stage} engine for {manifest.model} on {env.gpu_name} "
                          f"(once; cached in {cache_root})", stacklevel=3)
        paths[stage] = cache.get_or_build(key, lambda g=graph, s=stage: build_engine(g, s, profile, options),
                                          {"profile_spec": profile.spec(), "graph": str(graph)})
    return paths
