"""The nine full-size LIIF-codebase checkpoint layouts, as files: load, export to ONNX, pass parity.

``tests/test_models_registry.py::test_official_layouts`` checks on the meta device that each
layout listed in ``shared/fixtures/official_key_manifests.json`` (LIIF, LTE, Meta-SR x
EDSR-baseline, RDN, SwinIR) maps onto a model of exactly its keys and shapes. Here each layout
becomes a real checkpoint file in the official ``train.py`` form, with random weights of every
listed shape and the buffers' dtypes (SwinIR's ``relative_position_index`` built as upstream
builds it, so it holds valid indices), and goes the whole way: ``asisr.models.load`` ->
``export_onnx`` -> ONNX Runtime parity against the PyTorch reference at the project's fp32
tolerance. The on-disk variants seen in the wild (no ``args``, a wrong ``name``, a bare state
dict) must load as the same architecture.

Random weights are scaled per tensor (``GAIN / sqrt(fan_in)``, small biases, LayerNorm weights
near 1) so the 22M-parameter RDN's activations stay finite and the outputs stay in a [0, 1]-like
range, where a 1e-4 max-abs tolerance means what it means for real images. Each layout is
exported once per module.
"""

from __future__ import annotations

import json
import math
import time

import pytest
import torch

from asisr.evaluation.parity import FP32_TOLERANCE, build_cases, check_parity
from asisr.models import load
from tests.shared_data import SHARED, need

MANIFESTS = SHARED / "fixtures" / "official_key_manifests.json"
ENTRIES = [f"{arch}_{enc}" for arch in ("liif", "lte", "metasr") for enc in ("edsr-baseline", "rdn", "swinir")]
# The full-size RDN and SwinIR layouts take 20-50 s each to export and check: the full tier's. The
# fast tier keeps each family's EDSR-baseline layout (encoders are checked against the official
# code in test_encoders_official.py).
PARAMS = [pytest.param(e, marks=pytest.mark.slow) if not e.endswith("edsr-baseline") else e for e in ENTRIES]
GAIN = 0.5  # encoder weight std = GAIN / sqrt(fan_in): activations shrink a little per layer, never blow up
# The query MLPs (``imnet``): He init where the MLP predicts RGB (LIIF), so the head sees O(1)
# activations; LTE's and Meta-SR's MLPs (Fourier amplitudes, generated conv weights) keep GAIN.
MLP_GAIN = {"liif": math.sqrt(2.0), "lte": GAIN, "metasr": GAIN}
SHAPES = ((12, 14),)  # one small LR (SwinIR pads it to 16 x 16: two windows per side)
SCALES = ("2", "3x1.7")  # one asymmetric
EXPORT_SECONDS: dict[str, float] = {}  # wall time of each export, printed by the parity test (pytest -s)


def _manifest() -> dict:
    return json.loads(need(MANIFESTS).read_text())


def _official_relative_position_index(ws: int) -> torch.Tensor:
    """SwinIR's ``WindowAttention.relative_position_index`` exactly as upstream computes it."""
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += ws - 1
    rel[:, :, 1] += ws - 1
    rel[:, :, 0] *= 2 * ws - 1
    return rel.sum(-1)


def _official_attn_mask(img_size: int, ws: int, shift: int) -> torch.Tensor:
    """SwinIR's ``SwinTransformerBlock.calculate_mask`` for an ``img_size`` square."""
    img_mask = torch.zeros((1, img_size, img_size, 1))
    cnt = 0
    for h in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for w in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            img_mask[:, h, w, :] = cnt
            cnt += 1
    n = img_size // ws
    windows = img_mask.view(1, n, ws, n, ws, 1).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws)
    mask = windows.unsqueeze(1) - windows.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


def random_state(spec: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors of exactly the entry's keys, shapes and buffer dtypes, at a scale that keeps outputs sane."""
    gen = torch.Generator().manual_seed(seed)
    buffers = spec.get("buffers", {})
    sd = {}
    for key, shape in spec["state_dict"].items():
        dtype = buffers.get(key, "torch.float32")
        if key.endswith("relative_position_index"):
            assert dtype == "torch.int64", key
            ws = math.isqrt(shape[0])
            assert [ws * ws, ws * ws] == shape, key
            sd[key] = _official_relative_position_index(ws)
        elif key.endswith("attn_mask"):
            assert dtype == "torch.float32", key
            ws = math.isqrt(shape[1])
            sd[key] = _official_attn_mask(math.isqrt(shape[0]) * ws, ws, ws // 2)
        elif key.endswith(("sub_mean.weight", "add_mean.weight")):  # EDSR's stored, never applied MeanShift
            sd[key] = torch.eye(3).view(3, 3, 1, 1)
        elif key.endswith("relative_position_bias_table"):
            sd[key] = torch.randn(shape, generator=gen) * 0.02
        elif len(shape) >= 2:
            fan_in = math.prod(shape[1:])
            gain = MLP_GAIN[spec["checkpoint_model_name"]] if key.startswith("imnet.") else GAIN
            sd[key] = torch.randn(shape, generator=gen) * (gain / math.sqrt(fan_in))
        elif "norm" in key and key.endswith(".weight"):  # LayerNorm scales
            sd[key] = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        else:  # biases (and the MeanShift biases)
            sd[key] = 0.01 * torch.randn(shape, generator=gen)
        assert str(sd[key].dtype) == dtype and list(sd[key].shape) == shape, key
    return sd


def train_py_format(spec: dict, sd: dict) -> dict:
    """What the LIIF codebase's ``train.py`` saves (``model_spec`` with ``sd``, optimizer spec, epoch)."""
    return {"model": {"name": spec["checkpoint_model_name"], "args": spec["checkpoint_model_args"], "sd": sd},
            "optimizer": {"name": "adam", "args": {"lr": 1e-4}, "sd": {"state": {}, "param_groups": []}},
            "epoch": 1}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """``get(entry) -> (path, spec, model)``: the entry's checkpoint file, written and loaded on first use."""
    manifest = _manifest()
    root = tmp_path_factory.mktemp("official_layouts")
    cache: dict = {}

    def get(entry: str):
        if entry not in cache:
            spec = manifest[entry]
            path = root / f"{entry}.pth"
            torch.save(train_py_format(spec, random_state(spec, seed=ENTRIES.index(entry))), path)
            cache[entry] = path, spec, load(path)
        return cache[entry]

    return get


@pytest.fixture(scope="module")
def exported(checkpoints, tmp_path_factory):
    """``get(entry) -> onnx_dir``: each layout exported once."""
    from asisr.export.onnx import export_onnx

    root = tmp_path_factory.mktemp("official_onnx")
    cache: dict = {}

    def get(entry: str):
        if entry not in cache:
            _, _, model = checkpoints(entry)
            start = time.perf_counter()
            directory = export_onnx(model, root / entry)
            EXPORT_SECONDS[entry] = time.perf_counter() - start
            cache[entry] = directory
        return cache[entry]

    return get


@pytest.mark.parametrize("entry", PARAMS)
def test_official_layout_file_exports_with_parity(entry, checkpoints, exported):
    from asisr.runtime.backends.onnxrt import open_onnx_pipeline

    _, spec, model = checkpoints(entry)
    arch, encoder = entry.split("_")
    directory = exported(entry)
    assert model.name == arch
    assert model.config.get("encoder", "edsr-baseline") == encoder
    assert sum(v.numel() for v in model.state_dict().values()) == (
        spec["n_state_dict_elements"] - (2 * (9 + 3) if encoder == "edsr-baseline" else 0))  # minus the MeanShifts
    cases = build_cases(shapes=SHAPES, scales=SCALES)
    reference = model.reference()
    with torch.no_grad():  # the random weights give outputs in an image-like range: the tolerance means something
        c = cases[0]
        out = reference(*(torch.from_numpy(a) for a in (c.lr, c.scale, c.rows, c.cols)))
    assert torch.isfinite(out).all()
    assert 0.02 < out.std() and out.abs().max() < 5, (float(out.std()), float(out.abs().max()))
    report = check_parity(open_onnx_pipeline(directory, 2, None), reference, cases)
    worst = max(r.stats.max_abs for r in report.results if r.stats is not None)
    print(f"\n{entry}: export {EXPORT_SECONDS.get(entry, float('nan')):.1f} s, parity max abs {worst:.2e}, "
          f"output std {float(out.std()):.3f}")
    assert report.tolerance == FP32_TOLERANCE
    assert report.passed, report.table()
    assert len(report.results) == len(SHAPES) * len(SCALES) + 1


# ------------------------------------------------------------------ on-disk variants of the format

VARIANTS = {
    "no args": lambda spec, sd: {"model": {"name": spec["checkpoint_model_name"], "sd": sd}, "epoch": 1},
    # LTE's train_swinir-liif.yaml (commit a8815d6a) names the model after its encoder
    "wrong name": lambda spec, sd: {"model": {"name": "swinir", "args": spec["checkpoint_model_args"], "sd": sd}},
    "bare sd": lambda spec, sd: sd,
}


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("entry", PARAMS)
def test_format_variants_load_as_the_same_model(entry, variant, checkpoints, tmp_path):
    path, spec, a = checkpoints(entry)
    sd = torch.load(path, map_location="cpu", weights_only=True)["model"]["sd"]
    variant_path = tmp_path / "variant.pth"
    torch.save(VARIANTS[variant](spec, sd), variant_path)
    b = load(variant_path)
    assert a.name == entry.split("_")[0]
    assert (b.name, b.config) == (a.name, a.config)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_buffers_are_built_as_upstream_builds_them():
    """The checkpoints above carry upstream's buffers; asisr's own constructions are the same tensors."""
    from asisr.models.hat import relative_position_index_sa, shifted_window_mask

    assert torch.equal(relative_position_index_sa(8), _official_relative_position_index(8))
    assert torch.equal(shifted_window_mask(48, 48, 8, 4, None), _official_attn_mask(48, 8, 4))
